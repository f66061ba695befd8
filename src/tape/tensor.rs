//! The `Tensor` handle: shape, GPU buffer, graph node; the constructor
//! that uploads host data; readback; leaves and their gradient slots.
//! Ops add methods in `ops/`, differentiation in `autodiff/`.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::lock::Recover;
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::{check_rank, numel};
use crate::tape::graph::{Node, NodeKind};

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
                shape,
            }) => {
                let data = grad.locked().clone()?;
                Some(Tensor::from_storage(self.device(), data, shape.clone()))
            }
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
}

/// Reads several tensors back with one submit and one map (each
/// [`Tensor::to_vec`] is a submit and a map of its own; past 4 MiB in all,
/// one map per 4 MiB staging chunk). All must live on the same device.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let a = dev.tensor(&[1.0, 2.0], &[2])?;
/// let b = a.mul_scalar(3.0)?;
/// let values = pullback::read_all(&[&a, &b])?;
/// assert_eq!(values, vec![vec![1.0, 2.0], vec![3.0, 6.0]]);
/// # Ok(())
/// # }
/// ```
pub fn read_all(tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let dev = first.device();
    for t in tensors {
        if !t.device().same(dev) {
            return Err(Error::DeviceMismatch);
        }
    }
    let items: Vec<(&Storage, usize)> = tensors
        .iter()
        .map(|t| (&*t.inner.data, t.numel()))
        .collect();
    dev.read_many(&items)
}
