//! Ops that only move values (`shaders/layout.wgsl`), each the adjoint of
//! another: reshape ↔ reshape (no copy at all), permute ↔ inverse permute,
//! broadcast_to ↔ sum, narrow ↔ pad with zeros, concat ↔ narrow. Being
//! linear, each one's tangent is itself applied to the K tangent rows.

use std::sync::Arc;

use crate::error::{Error, Result, invalid};
use crate::ops::shaders::LAYOUT;
use crate::ops::{Contributions, JvpCtx, Op, VjpCtx, fill, reduce};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Params, RowKernel, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::{broadcast_shapes, broadcast_strides, check_rank, contiguous_strides, numel};
use crate::tape::record::{check_device, check_operands, record};
use crate::tape::tensor::Tensor;

const COPY: RowKernel = RowKernel::new(
    &LAYOUT,
    "copy",
    "copy_synced",
    &[(1, Access::Read), (2, Access::Write)],
);

/// A strided view of a `[K, ...]` buffer: `shape` walked row-major, element
/// `i` at `k * row + offset + Σ index_d · strides_d`.
pub(crate) struct View<'a> {
    pub shape: &'a [usize],
    pub strides: &'a [usize],
    pub offset: usize,
    pub row: usize,
}

impl View<'_> {
    fn params(&self, k: usize, scale: f32) -> Params {
        Params::new(numel(self.shape), k)
            .rank(self.shape.len())
            .scalar(scale)
            .extra(0, self.row)
            .extra(1, self.offset)
            .slot(0, self.shape)
            .slot(1, self.strides)
    }
}

/// A new contiguous `[K, *view.shape]` buffer: `scale ·` the view of `src`.
pub(crate) fn gather(
    dev: &Device,
    src: &Storage,
    k: usize,
    view: &View,
    scale: f32,
) -> Result<Storage> {
    let out = dev.alloc("copied view", k * numel(view.shape))?;
    copy(dev, src, &out, k, view, scale, false);
    Ok(out)
}

/// Writes the contiguous `[K, *view.shape]` buffer `src` into the view of `dst`.
pub(crate) fn scatter(dev: &Device, src: &Storage, k: usize, dst: &Storage, view: &View) {
    copy(dev, src, dst, k, view, 1.0, true);
}

/// One dispatch of `shaders/layout.wgsl`: gather (view of `src` -> `dst`) or scatter.
fn copy(
    dev: &Device,
    src: &Storage,
    dst: &Storage,
    k: usize,
    view: &View,
    scale: f32,
    scatter: bool,
) {
    let constants = [("SCATTER", flag(scatter))];
    let groups = groups_for(numel(view.shape) as u64);
    dev.dispatch_rows(
        &COPY,
        k,
        &constants,
        &view.params(k, scale),
        &[src, dst],
        groups,
    );
}

/// `axis` must name an axis of a rank-`rank` tensor.
pub(crate) fn check_axis(op: &'static str, axis: usize, rank: usize) -> Result<()> {
    if axis >= rank {
        return Err(invalid(
            op,
            format!("axis {axis} is out of range for a tensor of rank {rank}"),
        ));
    }
    Ok(())
}

/// Adjoints of the layout ops; `Op::Reshape` etc. dispatch here.
pub(crate) fn vjp_reshape(cx: &VjpCtx) -> Result<Contributions> {
    // Same row-major order: the cotangent buffer is already the answer.
    Ok(vec![Some(cx.g.clone())])
}

pub(crate) fn vjp_permute(cx: &VjpCtx, perm: &[usize]) -> Result<Contributions> {
    let in_shape = &cx.inputs[0].shape;
    let g_strides = contiguous_strides(cx.out_shape);
    let mut strides = vec![0; perm.len()];
    for (d, &p) in perm.iter().enumerate() {
        strides[p] = g_strides[d];
    }
    let view = View {
        shape: in_shape,
        strides: &strides,
        offset: 0,
        row: numel(cx.out_shape),
    };
    Ok(vec![Some(Arc::new(gather(
        cx.dev, cx.g, cx.k, &view, 1.0,
    )?))])
}

pub(crate) fn vjp_broadcast(cx: &VjpCtx) -> Result<Contributions> {
    Ok(vec![Some(reduce::sum_to_input(cx, 0, cx.g, cx.out_shape)?)])
}

pub(crate) fn vjp_narrow(cx: &VjpCtx, axis: usize, start: usize) -> Result<Contributions> {
    let in_shape = &cx.inputs[0].shape;
    let out = fill::fill(cx.dev, cx.k * numel(in_shape), 0.0)?;
    let strides = contiguous_strides(in_shape);
    let view = View {
        shape: cx.out_shape,
        strides: &strides,
        offset: start * strides[axis],
        row: numel(in_shape),
    };
    scatter(cx.dev, cx.g, cx.k, &out, &view);
    Ok(vec![Some(Arc::new(out))])
}

pub(crate) fn vjp_concat(cx: &VjpCtx, axis: usize) -> Result<Contributions> {
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

/// `[K, *to]`: K rows of `[*from]` values broadcast to `to`.
pub(crate) fn broadcast_rows(
    dev: &Device,
    src: &Storage,
    k: usize,
    from: &[usize],
    to: &[usize],
) -> Result<Storage> {
    let strides = broadcast_strides(from, to);
    let view = View {
        shape: to,
        strides: &strides,
        offset: 0,
        row: numel(from),
    };
    gather(dev, src, k, &view, 1.0)
}

/// The shape and strides of a permutation's view of `shape`.
fn permuted(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let strides = contiguous_strides(shape);
    perm.iter().map(|&p| (shape[p], strides[p])).unzip()
}

/// Tangents of the layout ops: the op itself on each of the K rows.
pub(crate) fn jvp_permute(cx: &JvpCtx, perm: &[usize]) -> Result<Arc<Storage>> {
    let in_shape = &cx.inputs[0].shape;
    let (shape, strides) = permuted(in_shape, perm);
    let view = View {
        shape: &shape,
        strides: &strides,
        offset: 0,
        row: numel(in_shape),
    };
    Ok(Arc::new(gather(cx.dev, cx.only()?, cx.k, &view, 1.0)?))
}

pub(crate) fn jvp_broadcast(cx: &JvpCtx) -> Result<Arc<Storage>> {
    let from = &cx.inputs[0].shape;
    let rows = broadcast_rows(cx.dev, cx.only()?, cx.k, from, cx.out_shape)?;
    Ok(Arc::new(rows))
}

pub(crate) fn jvp_narrow(cx: &JvpCtx, axis: usize, start: usize) -> Result<Arc<Storage>> {
    let in_shape = &cx.inputs[0].shape;
    let strides = contiguous_strides(in_shape);
    let view = View {
        shape: cx.out_shape,
        strides: &strides,
        offset: start * strides[axis],
        row: numel(in_shape),
    };
    Ok(Arc::new(gather(cx.dev, cx.only()?, cx.k, &view, 1.0)?))
}

/// Each input's K tangent rows into their place along `axis`; zeros where
/// an input has none.
pub(crate) fn jvp_concat(cx: &JvpCtx, axis: usize) -> Result<Arc<Storage>> {
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
    /// A new tensor holding the view (`shape`, `strides`, `offset`) of this
    /// one's values, recorded as `op`.
    fn copy_view(
        &self,
        op: Op,
        shape: Vec<usize>,
        strides: &[usize],
        offset: usize,
    ) -> Result<Tensor> {
        let view = View {
            shape: &shape,
            strides,
            offset,
            row: self.numel(),
        };
        let out = gather(self.device(), &self.inner.data, 1, &view, 1.0)?;
        record(self.device(), op, &[self], out, shape)
    }
    /// The same values in a new shape with the same element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        check_device(self, &[])?;
        check_rank("reshape", shape)?;
        if numel(shape) != self.numel() {
            return Err(invalid(
                "reshape",
                format!(
                    "cannot reshape {:?} ({} elements) to {shape:?} ({} elements)",
                    self.shape(),
                    self.numel(),
                    numel(shape)
                ),
            ));
        }
        record(
            self.device(),
            Op::Reshape,
            &[self],
            self.inner.data.clone(),
            shape.to_vec(),
        )
    }

    /// Reorders the axes: output axis d is input axis `perm[d]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        check_operands(self, &[])?;
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} axes of {:?}",
                    self.shape()
                ),
            ));
        }
        let (shape, strides) = permuted(self.shape(), perm);
        self.copy_view(Op::Permute(perm.to_vec()), shape, &strides, 0)
    }

    /// Swaps axes `a` and `b`.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        check_axis("transpose", a.max(b), self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Repeats the tensor along axes of size 1 (and new leading axes) to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        check_operands(self, &[])?;
        check_rank("broadcast_to", shape)?;
        if self.rank() > shape.len()
            || broadcast_shapes("broadcast_to", self.shape(), shape)? != shape
        {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        let strides = broadcast_strides(self.shape(), shape);
        self.copy_view(Op::BroadcastTo, shape.to_vec(), &strides, 0)
    }

    /// Elements `start..start + len` along `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        check_operands(self, &[])?;
        check_axis("narrow", axis, self.rank())?;
        let size = self.shape()[axis];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(invalid(
                "narrow",
                format!("range {start}..{start}+{len} exceeds axis {axis} of size {size}"),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape[axis] = len;
        let strides = contiguous_strides(self.shape());
        self.copy_view(
            Op::Narrow { axis, start },
            shape,
            &strides,
            start * strides[axis],
        )
    }

    /// Joins tensors along `axis`; see [`concat()`].
    pub fn concat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        concat(tensors, axis)
    }
}
