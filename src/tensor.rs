//! The `Tensor` handle: shape, GPU buffer, graph node; constructors on
//! `Device`; readback; gradient slots and `backward`.

use crate::lock::Recover;
use std::sync::{Arc, Mutex};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Node, NodeKind};
use crate::ops;
use crate::plan::{Plan, Wanted};
use crate::pool::Storage;
use crate::scheduler;
use crate::shape::{check_rank, numel};

/// An f32 tensor on a [`Device`], row-major, rank 0 to 6. Cheap to clone:
/// clones share the buffer and the graph node. Values are immutable.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) inner: Arc<TensorInner>,
}

pub(crate) struct TensorInner {
    pub device: Device,
    pub shape: Vec<usize>,
    pub data: Arc<Storage>,
    /// Present when the tensor takes part in differentiation.
    pub node: Option<Arc<Node>>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.inner.shape)
            .field("requires_grad", &self.is_tracked())
            .finish()
    }
}

impl Device {
    /// A tensor holding `data` (row-major) with `shape`.
    pub fn tensor(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_rank("tensor", shape)?;
        if data.len() != numel(shape) {
            return Err(Error::DataLength {
                expected: numel(shape),
                got: data.len(),
            });
        }
        let storage = self.upload("tensor", data)?;
        Ok(Tensor::from_storage(
            self,
            Arc::new(storage),
            shape.to_vec(),
        ))
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        check_rank("full", shape)?;
        let storage = ops::fill::fill(self, numel(shape), value)?;
        Ok(Tensor::from_storage(
            self,
            Arc::new(storage),
            shape.to_vec(),
        ))
    }

    /// A tensor of `shape` filled with 0.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.full(shape, 0.0)
    }

    /// A tensor of `shape` filled with 1.
    pub fn ones(&self, shape: &[usize]) -> Result<Tensor> {
        self.full(shape, 1.0)
    }

    /// A rank-0 tensor.
    pub fn scalar(&self, value: f32) -> Result<Tensor> {
        self.tensor(&[value], &[])
    }
}

impl Tensor {
    pub(crate) fn from_storage(device: &Device, data: Arc<Storage>, shape: Vec<usize>) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                device: device.clone(),
                shape,
                data,
                node: None,
            }),
        }
    }

    pub(crate) fn with_node(
        device: &Device,
        data: Arc<Storage>,
        shape: Vec<usize>,
        node: Option<Arc<Node>>,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                device: device.clone(),
                shape,
                data,
                node,
            }),
        }
    }

    /// Dimensions, outermost first (row-major); empty for a scalar.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// Number of dimensions (0 to 6).
    pub fn rank(&self) -> usize {
        self.inner.shape.len()
    }

    /// Number of elements (1 for rank 0).
    pub fn numel(&self) -> usize {
        numel(&self.inner.shape)
    }

    /// The device holding the values; ops combine tensors of one device only.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Copies the values to the host (submits pending work and waits).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.numel() == 0 {
            return Ok(Vec::new());
        }
        self.inner.device.read(&self.inner.data, self.numel())
    }

    /// [`Tensor::to_vec`] without blocking the executor.
    pub async fn to_vec_async(&self) -> Result<Vec<f32>> {
        if self.numel() == 0 {
            return Ok(Vec::new());
        }
        self.inner
            .device
            .read_async(&self.inner.data, self.numel())
            .await
    }

    /// Returns this tensor as a leaf that records operations for
    /// differentiation (PyTorch's `requires_grad_()`). A tensor that is
    /// already tracked is returned unchanged.
    pub fn requires_grad(self) -> Tensor {
        if self.inner.node.is_some() {
            return self;
        }
        let node = Arc::new(Node {
            shape: self.inner.shape.clone(),
            kind: NodeKind::Leaf {
                grad: Mutex::new(None),
            },
        });
        Tensor::with_node(
            &self.inner.device,
            self.inner.data.clone(),
            self.inner.shape.clone(),
            Some(node),
        )
    }

    /// True when operations on this tensor are recorded for differentiation.
    pub fn is_tracked(&self) -> bool {
        self.inner.node.is_some()
    }

    /// True for tensors made by `requires_grad()` (gradients accumulate here).
    pub fn is_leaf(&self) -> bool {
        matches!(
            self.inner.node.as_deref(),
            Some(Node {
                kind: NodeKind::Leaf { .. },
                ..
            })
        )
    }

    /// The same values, cut off from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::from_storage(
            &self.inner.device,
            self.inner.data.clone(),
            self.inner.shape.clone(),
        )
    }

    /// The gradient accumulated by `backward`/`backward_with` (leaves only).
    pub fn grad(&self) -> Option<Tensor> {
        match self.inner.node.as_deref() {
            Some(Node {
                kind: NodeKind::Leaf { grad },
                ..
            }) => grad.locked().clone(),
            _ => None,
        }
    }

    /// Clears the accumulated gradient (sets it to none, like PyTorch's default).
    pub fn zero_grad(&self) {
        if let Some(Node {
            kind: NodeKind::Leaf { grad },
            ..
        }) = self.inner.node.as_deref()
        {
            *grad.locked() = None;
        }
    }

    /// Backpropagates from a one-element output (rank 0 or `[1]`, any rank
    /// of size 1), seeding it with 1, and accumulates into every leaf's `grad`.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::NonScalarBackward {
                shape: self.shape().to_vec(),
            });
        }
        let seed = self.inner.device.ones(self.shape())?;
        self.backward_with(&seed)
    }

    /// Backpropagates the cotangent `v` (same shape as `self`): every leaf's
    /// `grad` gets `vᵀ·∂self/∂leaf` added, as PyTorch's `backward(gradient=v)`.
    /// The graph is kept, so calling it again accumulates again.
    pub fn backward_with(&self, v: &Tensor) -> Result<()> {
        let dev = &self.inner.device;
        dev.check_same(v.device())?;
        dev.check_alive()?;
        if v.shape() != self.shape() {
            return Err(Error::CotangentShape {
                index: 0,
                expected: self.shape().to_vec(),
                got: v.shape().to_vec(),
            });
        }
        let Some(node) = self.inner.node.clone() else {
            return Err(Error::NotTracked {
                what: "the tensor backward() started from".into(),
            });
        };
        let plan = Plan::new(std::slice::from_ref(&node), Wanted::Leaves);
        let reached = scheduler::execute(dev, &plan, 1, vec![(node, v.inner.data.clone())])?;
        for (leaf, contribution) in plan.wanted.iter().zip(reached) {
            let Some(contribution) = contribution else {
                continue;
            };
            let NodeKind::Leaf { grad } = &leaf.kind else {
                continue;
            };
            let mut slot = grad.locked();
            let sum = match slot.as_ref() {
                None => contribution,
                Some(old) => Arc::new(ops::accumulate::add(
                    dev,
                    &old.inner.data,
                    &contribution,
                    old.numel(),
                )?),
            };
            *slot = Some(Tensor::from_storage(dev, sum, leaf.shape.clone()));
        }
        dev.flush()
    }
}
