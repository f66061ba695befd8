//! Maximum along an axis (`shaders/max.wgsl`). d max/dx is 1 at the first
//! maximal element and 0 elsewhere (PyTorch's `max(dim)`); the forward saves
//! those indices, which route the adjoint and pick the tangent.

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::ops::layout::check_axis;
use crate::ops::reduce::reduced_shape;
use crate::ops::shaders::MAX;
use crate::ops::{Contributions, JvpCtx, Op, Saved, VjpCtx};
use crate::runtime::kernels::{Access, Kernel, LOOP_PIECE, Params, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::record::{check_operands, record_with_aux};
use crate::tape::tensor::Tensor;

const FORWARD: Kernel = Kernel {
    module: &MAX,
    entry: "forward",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Write)],
};
const FORWARD_BLOCKS: Kernel = Kernel {
    module: &MAX,
    entry: "forward_blocks",
    bindings: &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Write),
        (4, Access::Read),
    ],
};
/// Elements one invocation compares (see `LOOP_PIECE`).
const BLOCK: usize = LOOP_PIECE;
const ADJOINT: Kernel = Kernel {
    module: &MAX,
    entry: "adjoint",
    bindings: &[(1, Access::Read), (2, Access::Write), (4, Access::Read)],
};

const TANGENT: Kernel = Kernel {
    module: &MAX,
    entry: "tangent",
    bindings: &[(1, Access::Read), (2, Access::Write), (4, Access::Read)],
};

pub(crate) const SAVES: &[Saved] = &[Saved::Aux(0)];

/// (outer, D, inner) of `shape` around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

fn params(shape: &[usize], axis: usize, k: usize) -> (Params, usize) {
    let (outer, d, inner) = split(shape, axis);
    (
        Params::new(outer * inner, k).extra(0, d).extra(1, inner),
        outer * inner,
    )
}

pub(crate) fn vjp(cx: &VjpCtx, axis: usize) -> Result<Contributions> {
    let in_shape = &cx.inputs[0].shape;
    let total = numel(in_shape);
    let out = cx.dev.alloc("max cotangent", cx.k * total)?;
    let (params, _) = params(in_shape, axis, cx.k);
    cx.dev.dispatch(
        &ADJOINT,
        &[],
        &params,
        &[cx.g, &out, &cx.saved[0]],
        groups_for(total as u64),
    );
    Ok(vec![Some(Arc::new(out))])
}

/// Each maximum takes its maximal element's tangent, for K rows at once.
pub(crate) fn jvp(cx: &JvpCtx, axis: usize) -> Result<Arc<Storage>> {
    let (params, n) = params(&cx.inputs[0].shape, axis, cx.k);
    let out = cx.dev.alloc("max tangent", cx.k * n)?;
    let buffers = [&**cx.only()?, &out, &cx.saved[0]];
    cx.dev
        .dispatch(&TANGENT, &[], &params, &buffers, groups_for(n as u64));
    Ok(Arc::new(out))
}

/// Runs the forward kernel: the maxima and the index of each one's first
/// maximal element (NaN counts as maximal), `n` of each.
fn forward(x: &Tensor, what: &'static str, axis: usize) -> Result<(Storage, Storage)> {
    check_operands(x, &[])?;
    check_axis(what, axis, x.rank())?;
    if x.shape()[axis] == 0 {
        return Err(invalid(
            what,
            format!(
                "axis {axis} of {:?} is empty; {what} needs an element",
                x.shape()
            ),
        ));
    }
    let dev = x.device();
    let (params, n) = params(x.shape(), axis, 1);
    let d = x.shape()[axis];
    let blocks = d.div_ceil(BLOCK);
    let out = dev.alloc("max output", n)?;
    let arg = dev.alloc("max indices", n)?;
    let whole = params.extra(2, d).extra(3, 1);
    if blocks == 1 {
        dev.dispatch(
            &FORWARD,
            &[],
            &whole,
            &[&x.inner.data, &out, &arg],
            groups_for(n as u64),
        );
        return Ok((out, arg));
    }
    // Each block's maximum, then the first maximum over the blocks.
    let block_max = dev.alloc("max of blocks", n * blocks)?;
    let block_arg = dev.alloc("argmax of blocks", n * blocks)?;
    dev.dispatch(
        &FORWARD,
        &[],
        &params.extra(2, BLOCK).extra(3, blocks),
        &[&x.inner.data, &block_max, &block_arg],
        groups_for((n * blocks) as u64),
    );
    dev.dispatch(
        &FORWARD_BLOCKS,
        &[],
        &whole.extra(3, blocks),
        &[&block_max, &out, &arg, &block_arg],
        groups_for(n as u64),
    );
    Ok((out, arg))
}

impl Tensor {
    /// Maximum along `axis`; the gradient goes to the first maximal element.
    pub fn max(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        let (out, arg) = forward(self, "max", axis)?;
        let reduced: Vec<bool> = (0..self.rank()).map(|d| d == axis).collect();
        let shape = reduced_shape(self.shape(), &reduced, keepdim);
        record_with_aux(
            self.device(),
            Op::Max { axis },
            &[self],
            out,
            shape,
            vec![arg],
        )
    }

    /// The index along `axis` of each first maximal element (NaN counts as
    /// maximal, as in PyTorch), row-major over the other axes.
    pub fn argmax(&self, axis: usize) -> Result<Vec<u32>> {
        let (_, arg) = forward(self, "argmax", axis)?;
        let n = numel(self.shape()) / self.shape()[axis];
        let indices = Tensor::from_storage(self.device(), Arc::new(arg), vec![n]);
        Ok(indices.to_vec()?.into_iter().map(f32::to_bits).collect())
    }
}
