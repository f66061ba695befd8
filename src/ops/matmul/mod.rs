//! Matrix products (GEMMs launched by `gemm.rs`): `[.., m, p] · [.., p, n]` with
//! broadcast batch axes. d(A·B) = dA·B + A·dB, so the adjoints are
//! `dA = G·Bᵀ` and `dB = Aᵀ·G`, each one GEMM dispatch for all K
//! cotangents: K is one more batch axis, folded into the rows of G when B is
//! a plain matrix (into the contraction for dB when A is not broadcast), and
//! the result is summed over the batch axes an operand was broadcast along.
//! Forward mode and second order: `tangent.rs`.

pub(crate) mod gemm;
mod operand;
mod tangent;
pub(crate) mod tune;

use std::sync::Arc;

use crate::error::{Error, Result, invalid};
use crate::ops::elementwise::{BinaryOp, UnaryOp, binary, unary};
use crate::ops::{Contributions, Op, PerExample, Saved, VjpCtx, reduce};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::{broadcast_shapes, check_rank, contiguous_strides, numel};
use crate::tape::graph::Input;
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;
use gemm::{batch_strides, gemm, outer};
use operand::Operand;
pub(crate) use tangent::{curvature, jvp};

pub(crate) const SAVES: &[Saved] = &[Saved::Input(0), Saved::Input(1)];

fn split(shape: &[usize]) -> (&[usize], usize, usize) {
    let r = shape.len();
    (&shape[..r - 2], shape[r - 2], shape[r - 1])
}

pub(crate) fn vjp(cx: &VjpCtx) -> Result<Contributions> {
    let (dev, k) = (cx.dev, cx.k);
    let a_shape = &cx.inputs[0].shape;
    let (batch, m, n) = split(cx.out_shape);
    let (a_batch, _, p) = split(a_shape);
    let (b_batch, _, _) = split(&cx.inputs[1].shape);
    let (sa, sb) = (&cx.saved[0], &cx.saved[1]);
    let kb = [&[k][..], batch].concat();
    let g_strides: Vec<usize> = contiguous_strides(&kb)
        .into_iter()
        .map(|s| s * m * n)
        .collect();
    let g = |batch_strides: Vec<usize>| Operand::plain(cx.g, n, batch_strides);
    let mut contributions = vec![None, None];
    if cx.needs[0] {
        // dA = G·Bᵀ; Bᵀ's (row, col) = B's (col, row). With B a plain
        // matrix, all K·|batch|·m rows of G fold into one GEMM (see gemm).
        let strides = [vec![0], batch_strides(b_batch, batch, p * n)].concat();
        let bt = Operand::transposed(sb, n, strides);
        let full = gemm(dev, &kb, (m, p, n), &g(g_strides.clone()), &bt)?;
        // Sum over the batch axes A was broadcast along (none: no copy).
        let from = [batch, &[m, p]].concat();
        contributions[0] = Some(reduce::sum_to_input(cx, 0, &Arc::new(full), &from)?);
    }
    if cx.needs[1] {
        // dB = Aᵀ·G; Aᵀ's (row, col) = A's (col, row).
        let per_example = cx.per_example(1);
        let db = if b_batch.is_empty() && a_batch == batch {
            // B is a plain matrix and A is not broadcast: one GEMM per lead
            // row contracts over everything else (A as rest × p, G as
            // rest × n). The lead is the cotangent, or in a per-example
            // pass the example (axis 0, or the rows of a plain product).
            let (lead, rest) = match (per_example, batch.first()) {
                (PerExample::No, _) => (k, numel(batch) * m),
                (_, Some(&examples)) => (examples, numel(&batch[1..]) * m),
                (_, None) => (m, 1),
            };
            if per_example == PerExample::SquaredNorms {
                // ‖a_bᵀ g_b‖² = ‖a_b‖²·‖g_b‖²: no [B, p, n] outer products.
                let a2 = squared_row_norms(dev, sa, lead, p)?;
                let g2 = squared_row_norms(dev, cx.g, lead, n)?;
                Arc::new(binary::same_shape(dev, BinaryOp::Mul, &a2, &g2, lead)?)
            } else if rest == 1 && per_example == PerExample::Grads {
                Arc::new(outer(dev, sa, cx.g, lead, p, n)?)
            } else {
                // Cotangents share A; examples each read their own rows.
                let a_lead = if per_example == PerExample::No {
                    0
                } else {
                    rest * p
                };
                let at = Operand::transposed(sa, p, vec![a_lead]);
                Arc::new(gemm(dev, &[lead], (p, n, rest), &at, &g(vec![rest * n]))?)
            }
        } else {
            let strides = [vec![0], batch_strides(a_batch, batch, m * p)].concat();
            let at = Operand::transposed(sa, p, strides);
            let full = gemm(dev, &kb, (p, n, m), &at, &g(g_strides))?;
            let from = [batch, &[p, n]].concat();
            reduce::sum_to_input(cx, 1, &Arc::new(full), &from)?
        };
        contributions[1] = Some(db);
    }
    Ok(contributions)
}

/// ‖x_r‖² for each of the `rows` rows of `x` (`[rows, width]`): `[rows]`.
fn squared_row_norms(dev: &Device, x: &Storage, rows: usize, width: usize) -> Result<Storage> {
    let squares = dev.alloc("squared rows", rows * width)?;
    unary::forward_kernel(dev, UnaryOp::Square, 0.0, x, &squares, rows * width);
    reduce::sum_masked(dev, &squares, 1, &[rows, width], &[false, true], 1.0)
}

/// The most values per cotangent row of a contribution formed at the
/// output's full batch: `[*batch, m, p]` (dA), `[*batch, p, n]` (dB), for
/// the operands `needs` asks for.
pub(crate) fn widest_contribution(out: &[usize], inputs: &[Input], needs: &[bool]) -> usize {
    let (batch, m, n) = split(out);
    let (_, _, p) = split(&inputs[0].shape);
    let da = if needs[0] { m * p } else { 0 };
    let db = if needs[1] { p * n } else { 0 };
    numel(batch) * da.max(db)
}

/// Whether the rule can hand input `i` only the per-example squared norms
/// of its contribution: B, the right operand of a plain `[B, p]·[p, n]`,
/// whose per-example contributions are outer products.
pub(crate) fn offers_squared_norms(out_shape: &[usize], i: usize) -> bool {
    out_shape.len() == 2 && i == 1
}

impl Tensor {
    /// Matrix product over the last two axes, `[.., m, p] · [.., p, n]`,
    /// broadcasting the leading (batch) axes.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        check_operands(self, &[other])?;
        tune::tune_if_asked(self.device())?;
        if self.rank() < 2 || other.rank() < 2 {
            return Err(invalid(
                "matmul",
                format!(
                    "operands need rank >= 2, got {:?} and {:?}; reshape a vector to [1, n] or [n, 1]",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        let mismatch = || Error::ShapeMismatch {
            op: "matmul",
            lhs: self.shape().to_vec(),
            rhs: other.shape().to_vec(),
        };
        let (a_batch, m, p) = split(self.shape());
        let (b_batch, p2, n) = split(other.shape());
        if p != p2 {
            return Err(mismatch());
        }
        let batch = broadcast_shapes("matmul", a_batch, b_batch).map_err(|_| mismatch())?;
        let shape = [&batch[..], &[m, n]].concat();
        check_rank("matmul", &shape)?;
        let a = Operand::plain(&self.inner.data, p, batch_strides(a_batch, &batch, m * p));
        let b = Operand::plain(&other.inner.data, n, batch_strides(b_batch, &batch, p * n));
        let out = gemm(self.device(), &batch, (m, n, p), &a, &b)?;
        record(self.device(), Op::Matmul, &[self, other], out, shape)
    }
}
