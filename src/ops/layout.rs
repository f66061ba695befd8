//! Ops that only move values (`shaders/layout.wgsl`), each the adjoint of
//! another: reshape ↔ reshape (no copy at all), permute ↔ inverse permute,
//! broadcast_to ↔ sum, narrow ↔ pad with zeros (concat ↔ narrow:
//! `concat.rs`). Being linear, each one's tangent is itself applied to the
//! K tangent rows. The strided views every one of them copies through.

use std::sync::Arc;

use crate::error::{Error, Result, invalid};
use crate::ops::elementwise::ReadMode;
use crate::ops::shaders::LAYOUT;
use crate::ops::{Contributions, JvpCtx, Op, VjpCtx, fill, reduce};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Params, RowKernel, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::{broadcast_shapes, broadcast_strides, check_rank, contiguous_strides, numel};
use crate::tape::record::{check_device, check_operands, record};
use crate::tape::tensor::Tensor;

const REPEAT: RowKernel = RowKernel::new(
    &LAYOUT,
    "repeat",
    "repeat_synced",
    &[(1, Access::Read), (2, Access::Write)],
);
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

/// `[K, *to]`: K rows of `[*from]` values broadcast to `to`. A row
/// repeated along trailing or leading axes (a bias, a column) goes four
/// outputs an invocation, without walking strides.
pub(crate) fn broadcast_rows(
    dev: &Device,
    src: &Storage,
    k: usize,
    from: &[usize],
    to: &[usize],
) -> Result<Storage> {
    let n = numel(to);
    let repeat = match ReadMode::of(from, to) {
        (ReadMode::Suffix, len) => Some((1.0, len)),
        (ReadMode::Prefix, per) => Some((2.0, per)),
        (ReadMode::Same | ReadMode::Strided, _) => None,
    };
    if let (Some((mode, size)), true) = (repeat, n.is_multiple_of(4)) {
        let out = dev.alloc("repeated rows", k * n)?;
        let params = Params::new(n, k).extra(0, numel(from)).extra(2, size);
        let groups = groups_for(n.div_ceil(4) as u64);
        let constants = [("REPEAT", mode)];
        dev.dispatch_rows(&REPEAT, k, &constants, &params, &[src, &out], groups);
        return Ok(out);
    }
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
        let out = broadcast_rows(self.device(), &self.inner.data, 1, self.shape(), shape)?;
        record(self.device(), Op::BroadcastTo, &[self], out, shape.to_vec())
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
}
