//! The forward-mode and second-order rules of matrix products (`mod.rs`
//! has the forward and the adjoint). Tangent: Ċ = Ȧ·B + A·Ḃ, one GEMM per
//! term for all K directions: K is a batch axis of the tangent operand and
//! the saved operand is shared by every row, which the GEMM folds into its
//! rows or columns. Curvature, the cross terms of a product: Ā = Ȳ·Bᵀ
//! gains Ȳ·Ḃᵀ in its tangent and B̄ = Aᵀ·Ȳ gains Ȧᵀ·Ȳ, each summed over
//! the batch axes its operand was broadcast along.

use std::sync::Arc;

use super::gemm::{batch_strides, gemm};
use super::operand::Operand;
use super::split;
use crate::error::Result;
use crate::ops::accumulate::add_into;
use crate::ops::reduce::sum_to;
use crate::ops::{Contributions, CurvatureCtx, JvpCtx};
use crate::runtime::pool::Storage;
use crate::shape::{contiguous_strides, numel};
use crate::tape::graph::Input;

/// The batch strides of an operand, K rows of it first: `row` apart (0:
/// the same matrix for every row), then its own batch axes broadcast.
fn strides(row: usize, own: &[usize], batch: &[usize], matrix: usize) -> Vec<usize> {
    [vec![row], batch_strides(own, batch, matrix)].concat()
}

/// The shapes a product's rules need.
struct Dims<'a> {
    /// The output's batch axes.
    batch: &'a [usize],
    m: usize,
    n: usize,
    p: usize,
    /// Each operand's batch axes.
    a_batch: &'a [usize],
    b_batch: &'a [usize],
}

impl<'a> Dims<'a> {
    fn of(out: &'a [usize], inputs: &'a [Input]) -> Dims<'a> {
        let (batch, m, n) = split(out);
        let (a_batch, _, p) = split(&inputs[0].shape);
        let (b_batch, _, _) = split(&inputs[1].shape);
        Dims {
            batch,
            m,
            n,
            p,
            a_batch,
            b_batch,
        }
    }
}

/// Ċ[k] = Ȧ[k]·B + A·Ḃ[k].
pub(crate) fn jvp(cx: &JvpCtx) -> Result<Arc<Storage>> {
    let (dev, k) = (cx.dev, cx.k);
    let Dims {
        batch,
        m,
        n,
        p,
        a_batch,
        b_batch,
    } = Dims::of(cx.out_shape, cx.inputs);
    let kb = [&[k][..], batch].concat();
    let (a_len, b_len) = (numel(&cx.inputs[0].shape), numel(&cx.inputs[1].shape));
    let (sa, sb) = (&cx.saved[0], &cx.saved[1]);
    let mut total: Option<Storage> = None;
    let mut add = |term: Storage| match total.take() {
        None => total = Some(term),
        Some(sum) => {
            add_into(dev, &sum, &term, k * numel(cx.out_shape));
            total = Some(sum);
        }
    };
    if let Some(ta) = &cx.tangents[0] {
        let a = Operand::plain(ta, p, strides(a_len, a_batch, batch, m * p));
        let b = Operand::plain(sb, n, strides(0, b_batch, batch, p * n));
        add(gemm(dev, &kb, (m, n, p), &a, &b)?);
    }
    if let Some(tb) = &cx.tangents[1] {
        let a = Operand::plain(sa, p, strides(0, a_batch, batch, m * p));
        let b = Operand::plain(tb, n, strides(b_len, b_batch, batch, p * n));
        add(gemm(dev, &kb, (m, n, p), &a, &b)?);
    }
    match total {
        Some(t) => Ok(Arc::new(t)),
        None => Ok(cx.only()?.clone()),
    }
}

/// Ā's tangent gains Ȳ·Ḃᵀ[k], B̄'s gains Ȧᵀ[k]·Ȳ.
pub(crate) fn curvature(cx: &CurvatureCtx) -> Result<Contributions> {
    let (dev, k) = (cx.dev, cx.k);
    let Dims {
        batch,
        m,
        n,
        p,
        a_batch,
        b_batch,
    } = Dims::of(cx.out_shape, cx.inputs);
    let kb = [&[k][..], batch].concat();
    let (a_shape, b_shape) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
    // Ȳ, one row: the same for every direction.
    let y_batch: Vec<usize> = contiguous_strides(batch)
        .into_iter()
        .map(|s| s * m * n)
        .collect();
    let ybar = Operand::plain(cx.ybar, n, [vec![0], y_batch].concat());
    let mut terms = vec![None, None];
    if let (true, Some(tb)) = (cx.needs[0], &cx.tangents[1]) {
        let bt = Operand::transposed(tb, n, strides(numel(b_shape), b_batch, batch, p * n));
        let full = Arc::new(gemm(dev, &kb, (m, p, n), &ybar, &bt)?);
        let from = [batch, &[m, p]].concat();
        terms[0] = Some(sum_to(dev, &full, k, &from, a_shape)?);
    }
    if let (true, Some(ta)) = (cx.needs[1], &cx.tangents[0]) {
        let at = Operand::transposed(ta, p, strides(numel(a_shape), a_batch, batch, m * p));
        let full = Arc::new(gemm(dev, &kb, (p, n, m), &at, &ybar)?);
        let from = [batch, &[p, n]].concat();
        terms[1] = Some(sum_to(dev, &full, k, &from, b_shape)?);
    }
    Ok(terms)
}
