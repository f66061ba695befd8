//! Summation over axes (`shaders/reduce.wgsl`), batched over K rows. It is
//! the adjoint of broadcasting: a contribution at a broadcast output's shape
//! is summed back to its input's shape.

use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::kernels::{Access, Kernel, Params, REDUCE, groups_for};
use crate::pool::Storage;
use crate::shape::{contiguous_strides, left_pad, numel};

const SUM_EACH: Kernel = Kernel {
    module: &REDUCE,
    entry: "sum_each",
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
    let params = Params::new(n, k)
        .rank(shape.len())
        .scalar(scale)
        .extra(0, r)
        .extra(1, numel(shape))
        .slot(0, &kept_shape)
        .slot(1, &kept_strides)
        .slot(2, &red_shape)
        .slot(3, &red_strides);
    let outputs = (n * k) as u64;
    // Long sums over few outputs: a workgroup each; otherwise a thread each.
    if r >= 64 && outputs <= 8192 {
        dev.dispatch(&SUM_GROUP, &[], &params, &[src, &out], outputs);
    } else {
        dev.dispatch(&SUM_EACH, &[], &params, &[src, &out], groups_for(outputs));
    }
    Ok(out)
}
