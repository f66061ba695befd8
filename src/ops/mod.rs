//! The ops. Each family module holds its shape rule, forward dispatch, VJP
//! rule and what the rule saves; this file holds the one exhaustive match
//! over op kinds, so an op without an adjoint does not compile.

pub(crate) mod accumulate;
pub(crate) mod binary;
mod composite;
pub(crate) mod fill;
mod index;
pub(crate) mod layout;
mod matmul;
mod max;
pub(crate) mod reduce;
pub(crate) mod unary;

use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::graph::{Input, Node, NodeKind};
use crate::kernels::MAX_RANK;
use crate::pool::Storage;
use crate::tensor::Tensor;

pub(crate) use binary::BinaryOp;
pub(crate) use unary::UnaryOp;

/// A recorded operation.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Elementwise unary op with its scalar parameter (powf exponent, scalar operand).
    Unary(UnaryOp, f32),
    /// Elementwise binary op with broadcasting.
    Binary(BinaryOp),
    /// Matrix product over the last two axes, batch axes broadcast.
    Matmul,
    /// Sum over the axes marked `reduced`, times `scale` (1/count for mean).
    Sum {
        reduced: Vec<bool>,
        scale: f32,
    },
    /// Maximum along `axis`; saves the argmax.
    Max {
        axis: usize,
    },
    Reshape,
    /// Output axis d is input axis `perm[d]`.
    Permute(Vec<usize>),
    BroadcastTo,
    Narrow {
        axis: usize,
        start: usize,
    },
    Concat {
        axis: usize,
    },
    IndexSelect {
        axis: usize,
        indices: Arc<[u32]>,
    },
}

/// A value a rule keeps from the forward pass for its adjoint.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Saved {
    Input(usize),
    Output,
    /// The i-th side value of the forward kernel (e.g. argmax indices).
    Aux(usize),
}

/// What a VJP rule gets: the batch of K cotangents of the op's output
/// (`[K, *out_shape]`), its inputs' shapes, what it saved, and which
/// inputs need a contribution.
pub(crate) struct VjpCtx<'a> {
    pub dev: &'a Device,
    pub k: usize,
    pub g: &'a Arc<Storage>,
    pub out_shape: &'a [usize],
    pub inputs: &'a [Input],
    pub saved: &'a [Arc<Storage>],
    pub needs: &'a [bool],
}

/// One contribution per input (`[K, *input_shape]`), None where not needed.
pub(crate) type Contributions = Vec<Option<Arc<Storage>>>;

impl Op {
    pub fn saves(&self) -> &'static [Saved] {
        match self {
            Op::Unary(op, _) => unary::saves(*op),
            Op::Binary(op) => binary::saves(*op),
            Op::Matmul => matmul::SAVES,
            Op::Max { .. } => max::SAVES,
            Op::Sum { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Narrow { .. }
            | Op::Concat { .. }
            | Op::IndexSelect { .. } => &[],
        }
    }

    pub fn vjp(&self, cx: &VjpCtx) -> Result<Contributions> {
        match self {
            Op::Unary(op, p) => unary::vjp(cx, *op, *p),
            Op::Binary(op) => binary::vjp(cx, *op),
            Op::Matmul => matmul::vjp(cx),
            Op::Sum { reduced, scale } => reduce::vjp_sum(cx, reduced, *scale),
            Op::Max { axis } => max::vjp(cx, *axis),
            Op::Reshape => layout::vjp_reshape(cx),
            Op::Permute(perm) => layout::vjp_permute(cx, perm),
            Op::BroadcastTo => layout::vjp_broadcast(cx),
            Op::Narrow { axis, start } => layout::vjp_narrow(cx, *axis, *start),
            Op::Concat { axis } => layout::vjp_concat(cx, *axis),
            Op::IndexSelect { axis, indices } => index::vjp(cx, *axis, indices),
        }
    }
}

/// Wraps a forward result. When any input is tracked the result gets a
/// node that links the inputs and keeps exactly what the rule saves.
pub(crate) fn record(
    dev: &Device,
    op: Op,
    inputs: &[&Tensor],
    out: impl Into<Arc<Storage>>,
    shape: Vec<usize>,
) -> Tensor {
    record_with_aux(dev, op, inputs, out, shape, Vec::new())
}

/// [`record`] for rules that also save values their forward kernel
/// computed on the side (`Saved::Aux`, e.g. the argmax of `max`).
pub(crate) fn record_with_aux(
    dev: &Device,
    op: Op,
    inputs: &[&Tensor],
    out: impl Into<Arc<Storage>>,
    shape: Vec<usize>,
    aux: Vec<Storage>,
) -> Tensor {
    let data = out.into();
    if !inputs.iter().any(|t| t.is_tracked()) {
        return Tensor::from_storage(dev, data, shape);
    }
    let mut aux: Vec<Option<Storage>> = aux.into_iter().map(Some).collect();
    let saved = op
        .saves()
        .iter()
        .map(|s| match s {
            Saved::Input(i) => inputs[*i].inner.data.clone(),
            Saved::Output => data.clone(),
            Saved::Aux(i) => Arc::new(aux[*i].take().expect("each aux value saved once")),
        })
        .collect();
    let inputs = inputs
        .iter()
        .map(|t| Input {
            node: t.inner.node.clone(),
            shape: t.shape().to_vec(),
        })
        .collect();
    let node = Node {
        shape: shape.clone(),
        kind: NodeKind::Op { op, inputs, saved },
    };
    Tensor::with_node(dev, data, shape, Some(Arc::new(node)))
}

/// Operands must have a rank the kernels can index (rank 7 exists only as
/// a `vjp_batched` gradient of a rank-6 input) and live on one device that
/// is still alive. Called by every forward op before it records anything.
pub(crate) fn check_operands(a: &Tensor, others: &[&Tensor]) -> Result<()> {
    if let Some(t) = std::iter::once(a)
        .chain(others.iter().copied())
        .find(|t| t.rank() > MAX_RANK)
    {
        return Err(crate::error::invalid(
            "tensor op",
            format!(
                "an operand has shape {:?}, rank {}; ops take rank <= {MAX_RANK} (reshape it or read it back)",
                t.shape(),
                t.rank()
            ),
        ));
    }
    check_device(a, others)
}

/// The device part of [`check_operands`], for ops that take any rank.
pub(crate) fn check_device(a: &Tensor, others: &[&Tensor]) -> Result<()> {
    for t in others {
        a.device().check_same(t.device())?;
    }
    a.device().check_alive()?;
    a.device().flush_if_long()
}

/// Override constant value for a bool.
pub(crate) fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}
