//! Joining tensors along an axis (PyTorch's `cat`): each input is
//! scattered into its place (`layout.rs`'s views). Linear: its adjoint
//! gives each input its slice of the cotangent (a narrow), its tangent
//! scatters each input's K tangent rows into the output's.

use std::sync::Arc;

use crate::error::{Error, Result, invalid};
use crate::ops::layout::{View, check_axis, gather, scatter};
use crate::ops::{Contributions, JvpCtx, Op, VjpCtx, fill};
use crate::runtime::pool::Storage;
use crate::shape::{contiguous_strides, numel};
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;

pub(crate) fn vjp(cx: &VjpCtx, axis: usize) -> Result<Contributions> {
    let strides = contiguous_strides(cx.out_shape);
    let mut start = 0;
    let mut contributions = Vec::with_capacity(cx.inputs.len());
    for (input, &need) in cx.inputs.iter().zip(cx.needs) {
        let view = View {
            shape: &input.shape,
            strides: &strides,
            offset: start * strides[axis],
            row: numel(cx.out_shape),
        };
        start += input.shape[axis];
        contributions.push(if need {
            Some(Arc::new(gather(cx.dev, cx.g, cx.k, &view, 1.0)?))
        } else {
            None
        });
    }
    Ok(contributions)
}

/// Each input's K tangent rows into their place along `axis`; zeros where
/// an input has none.
pub(crate) fn jvp(cx: &JvpCtx, axis: usize) -> Result<Arc<Storage>> {
    let len = cx.k * numel(cx.out_shape);
    let out = match cx.tangents.iter().all(Option::is_some) {
        true => cx.dev.alloc("concat tangent", len)?,
        false => fill::fill(cx.dev, len, 0.0)?,
    };
    let strides = contiguous_strides(cx.out_shape);
    let mut start = 0;
    for (input, t) in cx.inputs.iter().zip(cx.tangents) {
        if let Some(t) = t {
            let view = View {
                shape: &input.shape,
                strides: &strides,
                offset: start * strides[axis],
                row: numel(cx.out_shape),
            };
            scatter(cx.dev, t, cx.k, &out, &view);
        }
        start += input.shape[axis];
    }
    Ok(Arc::new(out))
}

/// Joins tensors of equal shape except along `axis` (PyTorch's `cat`).
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let a = dev.tensor(&[1.0, 2.0], &[1, 2])?.requires_grad();
/// let b = dev.tensor(&[3.0, 4.0, 5.0, 6.0], &[2, 2])?;
/// let c = pullback::concat(&[&a, &b], 0)?; // [3, 2]
/// assert_eq!(c.to_vec()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// // Its adjoint slices the cotangent back: a gets row 0.
/// let v = dev.tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])?;
/// assert_eq!(pullback::vjp(&[&c], &[&v], &[&a])?[0].to_vec()?, vec![1.0, 2.0]);
/// # Ok(()) }
/// ```
pub fn concat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = tensors.first() else {
        return Err(invalid("concat", "needs at least one tensor"));
    };
    check_operands(first, &tensors[1..])?;
    check_axis("concat", axis, first.rank())?;
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for t in tensors {
        let same_rank = t.rank() == first.rank();
        if !same_rank || (0..t.rank()).any(|d| d != axis && t.shape()[d] != first.shape()[d]) {
            return Err(Error::ShapeMismatch {
                op: "concat",
                lhs: first.shape().to_vec(),
                rhs: t.shape().to_vec(),
            });
        }
        shape[axis] += t.shape()[axis];
    }
    let dev = first.device();
    let out = dev.alloc("concat output", numel(&shape))?;
    let strides = contiguous_strides(&shape);
    let mut start = 0;
    for t in tensors {
        let view = View {
            shape: t.shape(),
            strides: &strides,
            offset: start * strides[axis],
            row: numel(&shape),
        };
        scatter(dev, &t.inner.data, 1, &out, &view);
        start += t.shape()[axis];
    }
    record(dev, Op::Concat { axis }, tensors, out, shape)
}

impl Tensor {
    /// Joins tensors along `axis`; see [`concat()`].
    pub fn concat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        concat(tensors, axis)
    }
}
