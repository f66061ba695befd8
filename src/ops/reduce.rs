//! Summation over axes (`shaders/reduce.wgsl`), batched over K rows: `sum`,
//! `mean`, `sum_all`, and the adjoint of broadcasting (a contribution at a
//! broadcast output's shape is summed back to its input's shape). The
//! adjoint of a sum is a broadcast (d sum/dx = 1, d mean/dx = 1/count); its
//! tangent is the same sum of the tangent rows.

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::ops::layout::{self, View};
use crate::ops::shaders::REDUCE;
use crate::ops::{Contributions, JvpCtx, Op, PerExample, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::{contiguous_strides, left_pad, numel};
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;

const SUM_EACH: Kernel = Kernel {
    module: &REDUCE,
    entry: "sum_each",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};
const SUM_LEADING: Kernel = Kernel {
    module: &REDUCE,
    entry: "sum_leading",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};
const SUM_GROUP: Kernel = Kernel {
    module: &REDUCE,
    entry: "sum_group",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};

/// Sums `[K, *from]` down to `[K, *to]`, `to` broadcastable to `from`.
pub(crate) fn sum_to(
    dev: &Device,
    src: &Arc<Storage>,
    k: usize,
    from: &[usize],
    to: &[usize],
) -> Result<Arc<Storage>> {
    if from == to {
        return Ok(src.clone());
    }
    let to = left_pad(to, from.len());
    let reduced: Vec<bool> = from
        .iter()
        .zip(&to)
        .map(|(&f, &t)| t == 1 && f != 1)
        .collect();
    Ok(Arc::new(sum_masked(dev, src, k, from, &reduced, 1.0)?))
}

/// Input `i`'s contribution from `full`, its `[K, *from]` values at the
/// output's shape (`from`): summed over the axes the input was broadcast
/// along. In a per-example pass the output's axis 0 is the example axis
/// and K = 1; an input shared by the examples then keeps that axis:
/// `[B, *input_shape]`, each example's contribution apart.
pub(crate) fn sum_to_input(
    cx: &VjpCtx,
    i: usize,
    full: &Arc<Storage>,
    from: &[usize],
) -> Result<Arc<Storage>> {
    let to = &cx.inputs[i].shape;
    if cx.per_example(i) == PerExample::No {
        return sum_to(cx.dev, full, cx.k, from, to);
    }
    // [1, B, *rest] is [B, *rest]: B rows of the per-example contributions.
    let padded = left_pad(to, from.len());
    sum_to(cx.dev, full, cx.k * from[0], &from[1..], &padded[1..])
}

/// `scale ·` the sum of `[K, *shape]` over the axes where `reduced` is
/// true; the result is row-major over the kept axes.
pub(crate) fn sum_masked(
    dev: &Device,
    src: &Storage,
    k: usize,
    shape: &[usize],
    reduced: &[bool],
    scale: f32,
) -> Result<Storage> {
    let strides = contiguous_strides(shape);
    let pick = |keep: bool| -> (Vec<usize>, Vec<usize>) {
        shape
            .iter()
            .zip(&strides)
            .zip(reduced)
            .map(|((&d, &s), &r)| if r != keep { (d, s) } else { (1, 0) })
            .unzip()
    };
    let (kept_shape, kept_strides) = pick(true);
    let (red_shape, red_strides) = pick(false);
    let (n, r) = (numel(&kept_shape), numel(&red_shape));
    let out = dev.alloc("sum output", k * n)?;
    // The kernel is chosen from the row's shape alone, never from K, so a
    // row sums the same way in any batch: chunked and per-row results
    // match the whole batch bit for bit.
    let params = Params::new(n, k)
        .rank(shape.len())
        .scalar(scale)
        .extra(0, r)
        .extra(1, numel(shape))
        // 1.0 for the shader's Kahan compensation (see `opaque_one`).
        .extra(2, 1.0f32.to_bits() as usize)
        .slot(0, &kept_shape)
        .slot(1, &kept_strides)
        .slot(2, &red_shape)
        .slot(3, &red_strides);
    let outputs = (n * k) as u64;
    let long = if dev.loop_limit().is_some() { 2048 } else { 64 };
    // The leading axes of each row summed, the rest kept whole (the
    // adjoint of repeating a bias row): four contiguous outputs a thread.
    let leading = reduced.iter().position(|&r| !r).unwrap_or(reduced.len());
    if r < long && n.is_multiple_of(4) && reduced[leading..].iter().all(|&r| !r) {
        let groups = groups_for(outputs.div_ceil(4));
        dev.dispatch(&SUM_LEADING, &[], &params, &[src, &out], groups);
        return Ok(out);
    }
    // Long sums over few outputs per row: a workgroup each; otherwise a
    // thread each. On CPU adapters (lavapipe) a workgroup's barriers cost
    // more than a short sum: there only sums too long for one
    // invocation's loops take a workgroup (on lavapipe the bias gradient
    // of W4's MLP for K = 16, `[16, 64, 256]` summed over its 64 rows, took
    // a 71 ms pass by workgroups and takes 6.6 ms by threads).
    if r >= long && n <= 8192 {
        dev.dispatch(&SUM_GROUP, &[], &params, &[src, &out], outputs);
    } else {
        dev.dispatch(&SUM_EACH, &[], &params, &[src, &out], groups_for(outputs));
    }
    Ok(out)
}

/// Adjoint of `sum`/`mean`: `scale ·` g broadcast back over the reduced axes.
pub(crate) fn vjp_sum(cx: &VjpCtx, reduced: &[bool], scale: f32) -> Result<Contributions> {
    let in_shape = &cx.inputs[0].shape;
    // g is laid out as the keepdim shape: reduced axes of size 1, stride 0.
    let kept: Vec<usize> = in_shape
        .iter()
        .zip(reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let strides: Vec<usize> = contiguous_strides(&kept)
        .into_iter()
        .zip(reduced)
        .map(|(s, &r)| if r { 0 } else { s })
        .collect();
    let view = View {
        shape: in_shape,
        strides: &strides,
        offset: 0,
        row: numel(&kept),
    };
    Ok(vec![Some(Arc::new(layout::gather(
        cx.dev, cx.g, cx.k, &view, scale,
    )?))])
}

/// Tangent of `sum`/`mean`: the same sum of each of the K tangent rows.
pub(crate) fn jvp_sum(cx: &JvpCtx, reduced: &[bool], scale: f32) -> Result<Arc<Storage>> {
    let in_shape = &cx.inputs[0].shape;
    let t = cx.only()?;
    Ok(Arc::new(sum_masked(
        cx.dev, t, cx.k, in_shape, reduced, scale,
    )?))
}

/// Which axes `axes` names, checked: in range, each once.
fn reduced_mask(op: &'static str, rank: usize, axes: &[usize]) -> Result<Vec<bool>> {
    let mut mask = vec![false; rank];
    for &a in axes {
        layout::check_axis(op, a, rank)?;
        if std::mem::replace(&mut mask[a], true) {
            return Err(invalid(op, format!("axis {a} is listed twice in {axes:?}")));
        }
    }
    Ok(mask)
}

fn reduce(
    x: &Tensor,
    op: &'static str,
    axes: &[usize],
    keepdim: bool,
    mean: bool,
) -> Result<Tensor> {
    check_operands(x, &[])?;
    let reduced = reduced_mask(op, x.rank(), axes)?;
    let count: usize = x
        .shape()
        .iter()
        .zip(&reduced)
        .filter(|(_, r)| **r)
        .map(|(d, _)| d)
        .product();
    let scale = if mean { 1.0 / count as f32 } else { 1.0 };
    let out = sum_masked(x.device(), &x.inner.data, 1, x.shape(), &reduced, scale)?;
    let shape = reduced_shape(x.shape(), &reduced, keepdim);
    record(x.device(), Op::Sum { reduced, scale }, &[x], out, shape)
}

/// `shape` with the reduced axes set to 1 (keepdim) or removed.
pub(crate) fn reduced_shape(shape: &[usize], reduced: &[bool], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(reduced)
        .filter_map(|(&d, &r)| match (r, keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

impl Tensor {
    /// Sum over `axes` (each listed once; none listed: a copy), keeping them
    /// as size-1 axes when `keepdim`.
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        reduce(self, "sum", axes, keepdim, false)
    }

    /// Mean over `axes`, as [`Tensor::sum`] divided by the count.
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        reduce(self, "mean", axes, keepdim, true)
    }

    /// Sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        reduce(self, "sum_all", &axes, false, false)
    }
}
