//! The forward-mode and second-order rules of the binary ops (`binary.rs`
//! has their forward and adjoint; `shaders/binary.wgsl` the kernels).
//! Tangent: ẏ = ∂f/∂a·ȧ + ∂f/∂b·ḃ for all K directions in one dispatch,
//! the tangent rows of an operand broadcast to the output expanded first.
//! Curvature: ȳ·(f_aa·ȧ + f_ab·ḃ) for a and ȳ·(f_ab·ȧ + f_bb·ḃ) for b at
//! the output's shape, then summed over the axes each input was broadcast
//! along (the adjoint of broadcasting); only mul, div and pow have second
//! derivatives.

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::ops::elementwise::ReadMode;
use crate::ops::elementwise::binary::{BinaryOp, broadcast_params, read_constants};
use crate::ops::fill::fill;
use crate::ops::layout::broadcast_rows;
use crate::ops::reduce::sum_to;
use crate::ops::shaders::BINARY;
use crate::ops::{Contributions, CurvatureCtx, JvpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, RowKernel, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::graph::Input;

const TANGENT: RowKernel = RowKernel::new(
    &BINARY,
    "binary_tangent",
    "binary_tangent_synced",
    &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
        (6, Access::Read),
    ],
);
const CURVATURE: RowKernel = RowKernel::new(
    &BINARY,
    "binary_curvature",
    "binary_curvature_synced",
    &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
        (5, Access::Write),
        (6, Access::Read),
        (7, Access::Read),
    ],
);

/// Whether the kernels read a broadcast operand's tangent rows at its own
/// shape (`TANGENT_OWN`): aligned, and each operand read by a mode the
/// row loop can index (a bias row, a column) rather than by strides.
/// Saves expanding the rows (W7's bias: 0.9 ms of 24 on lavapipe).
fn rows_own(inputs: &[Input], out: &[usize]) -> bool {
    numel(out).is_multiple_of(4)
        && (inputs.iter()).all(|i| ReadMode::of(&i.shape, out).0 != ReadMode::Strided)
}

/// The K tangent rows of each operand that carries one (where_cond's mask
/// carries none), at the output's shape unless the kernel reads them at
/// their own ([`rows_own`]).
fn rows_at_output(
    dev: &Device,
    op: BinaryOp,
    k: usize,
    tangents: &[Option<Arc<Storage>>],
    inputs: &[Input],
    out: &[usize],
) -> Result<[Option<Arc<Storage>>; 2]> {
    let own = rows_own(inputs, out);
    let mut rows = [None, None];
    for (i, row) in rows.iter_mut().enumerate() {
        if let Some(t) = tangents[i].as_ref().filter(|_| !op.no_gradient(i)) {
            let shape = &inputs[i].shape;
            *row = Some(if own || shape.as_slice() == out {
                t.clone()
            } else {
                Arc::new(broadcast_rows(dev, t, k, shape, out)?)
            });
        }
    }
    Ok(rows)
}

/// The constants of a tangent or curvature dispatch.
fn constants(
    op: BinaryOp,
    inputs: &[Input],
    out: &[usize],
    tangents: [bool; 2],
    needs: [bool; 2],
) -> Vec<(&'static str, f64)> {
    let mut constants = read_constants(op, &inputs[0].shape, &inputs[1].shape, out).to_vec();
    constants.extend([
        ("ALIGNED", flag(numel(out).is_multiple_of(4))),
        ("TANGENT_A", flag(tangents[0])),
        ("TANGENT_B", flag(tangents[1])),
        ("NEED_A", flag(needs[0])),
        ("NEED_B", flag(needs[1])),
        ("TANGENT_OWN", flag(rows_own(inputs, out))),
    ]);
    constants
}

/// ẏ[k] = ∂f/∂a·ȧ[k] + ∂f/∂b·ḃ[k], all K directions in one dispatch.
pub(crate) fn jvp(cx: &JvpCtx, op: BinaryOp) -> Result<Arc<Storage>> {
    let (dev, k, out) = (cx.dev, cx.k, cx.out_shape);
    let n = numel(out);
    let [ta, tb] = rows_at_output(dev, op, k, cx.tangents, cx.inputs, out)?;
    // A sum, or a difference's first operand, alone passes its tangent on.
    let first = match (&ta, &tb) {
        (Some(t), None) if op.passes_through(0) => return Ok(t.clone()),
        (None, Some(t)) if op == BinaryOp::Add => return Ok(t.clone()),
        (None, None) => return Ok(Arc::new(fill(dev, k * n, 0.0)?)),
        (Some(t), _) | (None, Some(t)) => t.clone(),
    };
    let result = dev.alloc("binary tangent", k * n)?;
    // add/sub read no operand values; bind a tangent in their place.
    let (sa, sb) = match cx.saved {
        [sa, sb] => (sa, sb),
        _ => (&first, &first),
    };
    let present = [ta.is_some(), tb.is_some()];
    let constants = constants(op, cx.inputs, out, present, [true, false]);
    let (a, b) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
    let params = broadcast_params(out, a, b, k);
    let ta = ta.as_ref().unwrap_or(&first);
    let tb = tb.as_ref().unwrap_or(&first);
    let buffers = [&**ta, &result, &**sa, &**sb, &**tb];
    let groups = groups_for(n.div_ceil(4) as u64);
    dev.dispatch_rows(&TANGENT, k, &constants, &params, &buffers, groups);
    Ok(Arc::new(result))
}

/// Whether a op b has second derivatives (the others are linear or
/// piecewise linear in each operand).
fn has_curvature(op: BinaryOp) -> bool {
    matches!(op, BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow)
}

/// The curvature terms of both operands, all K directions in one dispatch.
pub(crate) fn curvature(cx: &CurvatureCtx, op: BinaryOp) -> Result<Contributions> {
    let (dev, k, out) = (cx.dev, cx.k, cx.out_shape);
    let needs = [0, 1].map(|i| cx.needs[i] && !op.no_gradient(i));
    if !has_curvature(op) || needs == [false, false] {
        return Ok(vec![None, None]);
    }
    let [ta, tb] = rows_at_output(dev, op, k, cx.tangents, cx.inputs, out)?;
    let Some(first) = ta.clone().or(tb.clone()) else {
        return Ok(vec![None, None]);
    };
    let [sa, sb] = cx.saved else {
        return Err(invalid("hvp", "a binary op's rule saved no operands"));
    };
    let n = numel(out);
    let terms: Vec<Storage> = needs
        .iter()
        .map(|&need| dev.alloc("binary curvature", if need { k * n } else { 1 }))
        .collect::<Result<_>>()?;
    let present = [ta.is_some(), tb.is_some()];
    let constants = constants(op, cx.inputs, out, present, needs);
    let (a, b) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
    let params = broadcast_params(out, a, b, k);
    let ta = ta.as_ref().unwrap_or(&first);
    let tb = tb.as_ref().unwrap_or(&first);
    let buffers = [&**ta, &terms[0], &**sa, &**sb, &terms[1], &**tb, &**cx.ybar];
    let groups = groups_for(n.div_ceil(4) as u64);
    dev.dispatch_rows(&CURVATURE, k, &constants, &params, &buffers, groups);
    let mut contributions = Vec::with_capacity(2);
    for (i, term) in terms.into_iter().enumerate() {
        contributions.push(match needs[i] {
            true => Some(sum_to(dev, &Arc::new(term), k, out, &cx.inputs[i].shape)?),
            false => None,
        });
    }
    Ok(contributions)
}
