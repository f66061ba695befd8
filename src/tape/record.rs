//! Recording forward results on the tape: every op's front-end checks its
//! operands here, computes, and hands its result to [`record`], which links
//! a node to the tracked inputs and keeps exactly what the op's rule saves.
//! Forward work never read back would pile up in one encoder: recording a
//! result submits what is pending past a bound (`Device::flush_if_long`).

use std::sync::Arc;

use crate::error::{Error, Result, invalid};
use crate::ops::{Op, Saved};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::MAX_RANK;
use crate::tape::graph::{Input, Node, NodeKind};
use crate::tape::tensor::Tensor;

/// Wraps a forward result. When any input is tracked the result gets a
/// node that links the inputs and keeps exactly what the rule saves.
pub(crate) fn record(
    dev: &Device,
    op: Op,
    inputs: &[&Tensor],
    out: impl Into<Arc<Storage>>,
    shape: Vec<usize>,
) -> Result<Tensor> {
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
) -> Result<Tensor> {
    let data = out.into();
    if !inputs.iter().any(|t| t.is_tracked()) {
        return untracked(dev, data, shape);
    }
    let aux: Vec<Arc<Storage>> = aux.into_iter().map(Arc::new).collect();
    let saved = op
        .saves()
        .iter()
        .map(|s| match s {
            Saved::Input(i) => inputs[*i].inner.data.clone(),
            Saved::Output => data.clone(),
            Saved::Aux(i) => aux[*i].clone(),
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
    dev.flush_if_long()?;
    Ok(Tensor::with_node(dev, data, shape, Some(Arc::new(node))))
}

/// A forward result that takes no part in differentiation (untracked
/// inputs, or a comparison's mask).
pub(crate) fn untracked(dev: &Device, data: Arc<Storage>, shape: Vec<usize>) -> Result<Tensor> {
    dev.flush_if_long()?;
    Ok(Tensor::from_storage(dev, data, shape))
}

/// Operands must have a rank the kernels can index (rank 7 exists only as
/// a `vjp_batched` gradient of a rank-6 input), fit a binding, and live on
/// one device that is still alive. Every forward op checks this before it
/// computes anything; it records and submits nothing.
pub(crate) fn check_operands(a: &Tensor, others: &[&Tensor]) -> Result<()> {
    if let Some(t) = std::iter::once(a)
        .chain(others.iter().copied())
        .find(|t| t.rank() > MAX_RANK)
    {
        return Err(invalid(
            "tensor op",
            format!(
                "an operand has shape {:?}, rank {}; ops take rank <= {MAX_RANK} (reshape it or read it back)",
                t.shape(),
                t.rank()
            ),
        ));
    }
    // Kernels bind whole buffers: a tensor past the binding limit (made by
    // an upload, or a chunked vjp_batched) can only be read back.
    let limit = a.device().max_binding();
    if let Some(t) = std::iter::once(a)
        .chain(others.iter().copied())
        .find(|t| t.inner.data.bytes() > limit)
    {
        return Err(Error::TooLarge {
            what: format!(
                "an operand of shape {:?} (kernels bind whole buffers; read it back with to_vec)",
                t.shape()
            ),
            bytes: t.numel() as u64 * 4,
            limit,
        });
    }
    check_device(a, others)
}

/// The device part of [`check_operands`], for ops that take any rank.
pub(crate) fn check_device(a: &Tensor, others: &[&Tensor]) -> Result<()> {
    for t in others {
        a.device().check_same(t.device())?;
    }
    a.device().check_alive()
}
