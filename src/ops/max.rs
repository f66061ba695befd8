//! Maximum along an axis (`shaders/max.wgsl`). d max/dx is 1 at the first
//! maximal element and 0 elsewhere (PyTorch's `max(dim)`); the forward saves
//! those indices.

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::kernels::{Access, Kernel, MAX, Params, groups_for};
use crate::ops::layout::check_axis;
use crate::ops::reduce::reduced_shape;
use crate::ops::{Contributions, Op, Saved, VjpCtx, check_operands, record_with_aux};
use crate::shape::numel;
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel {
    module: &MAX,
    entry: "forward",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Write)],
};
const ADJOINT: Kernel = Kernel {
    module: &MAX,
    entry: "adjoint",
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

impl Tensor {
    /// Maximum along `axis`; the gradient goes to the first maximal element.
    pub fn max(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        check_operands(self, &[])?;
        check_axis("max", axis, self.rank())?;
        if self.shape()[axis] == 0 {
            return Err(invalid(
                "max",
                format!(
                    "axis {axis} of {:?} is empty; max needs an element",
                    self.shape()
                ),
            ));
        }
        let dev = self.device();
        let (params, n) = params(self.shape(), axis, 1);
        let out = dev.alloc("max output", n)?;
        let arg = dev.alloc("max indices", n)?;
        dev.dispatch(
            &FORWARD,
            &[],
            &params,
            &[&self.inner.data, &out, &arg],
            groups_for(n as u64),
        );
        let reduced: Vec<bool> = (0..self.rank()).map(|d| d == axis).collect();
        let shape = reduced_shape(self.shape(), &reduced, keepdim);
        Ok(record_with_aux(
            dev,
            Op::Max { axis },
            &[self],
            out,
            shape,
            vec![arg],
        ))
    }
}
