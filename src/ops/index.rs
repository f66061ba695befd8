//! `index_select` (`shaders/index.wgsl`): picks slices along an axis. Its
//! adjoint is a scatter-add, done without atomics as a gather over the
//! inverse index (built on the host), so repeated indices sum exactly and
//! deterministically. Its tangent is the same selection of the tangent
//! rows.

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::ops::layout::check_axis;
use crate::ops::shaders::INDEX;
use crate::ops::{Contributions, JvpCtx, Op, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;

const FORWARD: Kernel = Kernel {
    module: &INDEX,
    entry: "forward",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
const ADJOINT: Kernel = Kernel {
    module: &INDEX,
    entry: "adjoint",
    bindings: &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
    ],
};

/// outer, D, inner around `axis`, and L, as the kernels' x0..x3 words.
fn params(shape: &[usize], axis: usize, len: usize, n: usize, k: usize) -> Params {
    let (outer, d, inner) = (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    );
    Params::new(n, k)
        .extra(0, d)
        .extra(1, inner)
        .extra(2, len)
        .extra(3, outer)
}

/// For each d in 0..D, the positions j with indices[j] == d, as CSR
/// (starts has D + 1 entries).
fn inverse(indices: &[u32], d_len: usize) -> (Vec<u32>, Vec<u32>) {
    let mut starts = vec![0u32; d_len + 1];
    for &i in indices {
        starts[i as usize + 1] += 1;
    }
    for d in 0..d_len {
        starts[d + 1] += starts[d];
    }
    let mut next = starts.clone();
    let mut list = vec![0u32; indices.len().max(1)];
    for (j, &i) in indices.iter().enumerate() {
        list[next[i as usize] as usize] = j as u32;
        next[i as usize] += 1;
    }
    (starts, list)
}

pub(crate) fn vjp(cx: &VjpCtx, axis: usize, indices: &[u32]) -> Result<Contributions> {
    let in_shape = &cx.inputs[0].shape;
    let (starts, list) = inverse(indices, in_shape[axis]);
    let starts = cx.dev.upload("index_select inverse", &starts)?;
    let list = cx.dev.upload("index_select inverse", &list)?;
    let total = numel(in_shape);
    let out = cx.dev.alloc("index_select cotangent", cx.k * total)?;
    let params = params(in_shape, axis, indices.len(), total, cx.k);
    cx.dev.dispatch(
        &ADJOINT,
        &[],
        &params,
        &[cx.g, &out, &starts, &list],
        groups_for(total as u64),
    );
    Ok(vec![Some(Arc::new(out))])
}

/// The slices `indices[j]` along `axis` of each of `rows` rows of
/// `[*shape]` values (the rows are one more outer axis to the kernel).
fn select(
    dev: &Device,
    src: &Storage,
    rows: usize,
    shape: &[usize],
    axis: usize,
    indices: &[u32],
) -> Result<Storage> {
    let with_rows = [&[rows][..], shape].concat();
    let mut out_shape = shape.to_vec();
    out_shape[axis] = indices.len();
    let n = rows * numel(&out_shape);
    let idx = dev.upload(
        "index_select indices",
        if indices.is_empty() { &[0] } else { indices },
    )?;
    let out = dev.alloc("index_select output", n)?;
    let params = params(&with_rows, axis + 1, indices.len(), n, 1);
    dev.dispatch(
        &FORWARD,
        &[],
        &params,
        &[src, &out, &idx],
        groups_for(n as u64),
    );
    Ok(out)
}

/// The same slices of each of the K tangent rows.
pub(crate) fn jvp(cx: &JvpCtx, axis: usize, indices: &[u32]) -> Result<Arc<Storage>> {
    let in_shape = &cx.inputs[0].shape;
    let out = select(cx.dev, cx.only()?, cx.k, in_shape, axis, indices)?;
    Ok(Arc::new(out))
}

impl Tensor {
    /// The slices `indices[j]` along `axis`, in that order (repeats allowed).
    pub fn index_select(&self, axis: usize, indices: &[u32]) -> Result<Tensor> {
        check_operands(self, &[])?;
        check_axis("index_select", axis, self.rank())?;
        let d_len = self.shape()[axis];
        if let Some(bad) = indices.iter().find(|&&i| i as usize >= d_len) {
            return Err(invalid(
                "index_select",
                format!("index {bad} is out of range for axis {axis} of size {d_len}"),
            ));
        }
        let dev = self.device();
        let mut shape = self.shape().to_vec();
        shape[axis] = indices.len();
        let out = select(dev, &self.inner.data, 1, self.shape(), axis, indices)?;
        let op = Op::IndexSelect {
            axis,
            indices: indices.into(),
        };
        record(dev, op, &[self], out, shape)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inverse_lists_every_position_once() {
        let (starts, list) = super::inverse(&[2, 0, 2, 1, 2], 4);
        assert_eq!(starts, vec![0, 1, 2, 5, 5]);
        assert_eq!(list, vec![1, 3, 0, 2, 4]);
    }
}
