//! Matrix products (`shaders/matmul.wgsl`): `[.., m, p] · [.., p, n]` with
//! broadcast batch axes. d(A·B) = dA·B + A·dB, so the adjoints are
//! `dA = G·Bᵀ` and `dB = Aᵀ·G`, each one GEMM dispatch for all K
//! cotangents: K is one more batch axis, folded into the rows of G when B is
//! a plain matrix (into the contraction for dB when A is not broadcast), and
//! the result is summed over the batch axes an operand was broadcast along.

use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result, invalid};
use crate::kernels::{Access, Kernel, MATMUL, MAX_RANK, Params};
use crate::ops::{Contributions, Op, Saved, VjpCtx, check_operands, record, reduce};
use crate::pool::Storage;
use crate::shape::{broadcast_shapes, broadcast_strides, check_rank, contiguous_strides, numel};
use crate::tensor::Tensor;

const GEMM: Kernel = Kernel {
    module: &MATMUL,
    entry: "matmul",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
const TILE: usize = 64;
const MAX_GRID: usize = 65535;

pub(crate) const SAVES: &[Saved] = &[Saved::Input(0), Saved::Input(1)];

/// One GEMM operand: element (i, p) of batch entry z at
/// `Σ batch_index_d · batch_strides_d + i·rs + p·cs`.
struct Operand<'a> {
    buf: &'a Storage,
    rs: usize,
    cs: usize,
    batch_strides: Vec<usize>,
}

impl<'a> Operand<'a> {
    /// A row-major `rows × cols` matrix per batch entry.
    fn plain(buf: &'a Storage, cols: usize, batch_strides: Vec<usize>) -> Self {
        Operand {
            buf,
            rs: cols,
            cs: 1,
            batch_strides,
        }
    }

    /// The transpose of a row-major `rows × cols` matrix per batch entry:
    /// element (i, p) is the matrix's (p, i).
    fn transposed(buf: &'a Storage, cols: usize, batch_strides: Vec<usize>) -> Self {
        Operand {
            buf,
            rs: 1,
            cs: cols,
            batch_strides,
        }
    }
}

/// C[z] = A[z]·B[z] for every z of `batch`; C is `[*batch, m, n]`, contiguous.
fn gemm(
    dev: &Device,
    batch: &[usize],
    (m, n, p): (usize, usize, usize),
    a: &Operand,
    b: &Operand,
) -> Result<Storage> {
    let z = numel(batch);
    let (row_tiles, col_tiles) = (m.div_ceil(TILE), n.div_ceil(TILE));
    if batch.len() > MAX_RANK || col_tiles > MAX_GRID {
        return Err(invalid(
            "matmul",
            format!("a product of {z} matrices of {m}×{n} exceeds the dispatch limits"),
        ));
    }
    let out = dev.alloc("matmul output", z * m * n)?;
    let params = Params::new(0, 1)
        .rank(batch.len())
        .slot(0, &[m, n, p, a.rs, a.cs, b.rs])
        .slot(1, &[b.cs])
        .slot(2, batch)
        .slot(3, &a.batch_strides)
        .slot(4, &b.batch_strides);
    // One dispatch, unless the batch or the row tiles pass the 65535 limit
    // of a grid dimension: then one per chunk, each told where it starts.
    for z0 in (0..z.max(1)).step_by(MAX_GRID) {
        for r0 in (0..row_tiles.max(1)).step_by(MAX_GRID) {
            let grid = (
                col_tiles as u32,
                (row_tiles - r0).min(MAX_GRID) as u32,
                (z - z0).min(MAX_GRID) as u32,
            );
            let params = params.extra(0, z0).extra(1, r0);
            dev.dispatch_grid(&GEMM, &[], &params, &[a.buf, &out, b.buf], grid);
        }
    }
    Ok(out)
}

/// Batch strides (in elements) of an operand whose batch axes are
/// `own` broadcast to `batch`, each matrix `matrix` elements.
fn batch_strides(own: &[usize], batch: &[usize], matrix: usize) -> Vec<usize> {
    broadcast_strides(own, batch)
        .into_iter()
        .map(|s| s * matrix)
        .collect()
}

fn split(shape: &[usize]) -> (&[usize], usize, usize) {
    let r = shape.len();
    (&shape[..r - 2], shape[r - 2], shape[r - 1])
}

pub(crate) fn vjp(cx: &VjpCtx) -> Result<Contributions> {
    let (dev, k) = (cx.dev, cx.k);
    let (a_shape, b_shape) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
    let (batch, m, n) = split(cx.out_shape);
    let (a_batch, _, p) = split(a_shape);
    let (b_batch, _, _) = split(b_shape);
    let (sa, sb) = (&cx.saved[0], &cx.saved[1]);
    let kb = [&[k][..], batch].concat();
    let g_strides: Vec<usize> = contiguous_strides(&kb)
        .into_iter()
        .map(|s| s * m * n)
        .collect();
    let g = |batch_strides: Vec<usize>| Operand::plain(cx.g, n, batch_strides);
    let mut contributions = vec![None, None];
    if cx.needs[0] {
        // dA = G·Bᵀ; Bᵀ's (row, col) = B's (col, row).
        let full = if b_batch.is_empty() {
            // B is a plain matrix: every batch entry of every cotangent
            // multiplies the same Bᵀ, so all K·|batch|·m rows of G are one
            // row-major matrix and this is a single GEMM.
            let rows = k * numel(batch) * m;
            let bt = Operand::transposed(sb, n, vec![]);
            gemm(dev, &[], (rows, p, n), &g(vec![]), &bt)?
        } else {
            let strides = [vec![0], batch_strides(b_batch, batch, p * n)].concat();
            let bt = Operand::transposed(sb, n, strides);
            gemm(dev, &kb, (m, p, n), &g(g_strides.clone()), &bt)?
        };
        // Sum over the batch axes A was broadcast along (none: no copy).
        let da = reduce::sum_to(dev, &Arc::new(full), k, &[batch, &[m, p]].concat(), a_shape)?;
        contributions[0] = Some(da);
    }
    if cx.needs[1] {
        // dB = Aᵀ·G; Aᵀ's (row, col) = A's (col, row).
        let db = if b_batch.is_empty() && a_batch == batch {
            // B is a plain matrix and A is not broadcast: contract over the
            // batch axes and m at once (A as rows·m × p, G[k] as rows·m × n).
            let rows = numel(batch) * m;
            let at = Operand::transposed(sa, p, vec![0]);
            Arc::new(gemm(dev, &[k], (p, n, rows), &at, &g(vec![rows * n]))?)
        } else {
            let strides = [vec![0], batch_strides(a_batch, batch, m * p)].concat();
            let at = Operand::transposed(sa, p, strides);
            let full = gemm(dev, &kb, (p, n, m), &at, &g(g_strides))?;
            reduce::sum_to(dev, &Arc::new(full), k, &[batch, &[p, n]].concat(), b_shape)?
        };
        contributions[1] = Some(db);
    }
    Ok(contributions)
}

impl Tensor {
    /// Matrix product over the last two axes, `[.., m, p] · [.., p, n]`,
    /// broadcasting the leading (batch) axes.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        check_operands(self, &[other])?;
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
        Ok(record(
            self.device(),
            Op::Matmul,
            &[self, other],
            out,
            shape,
        ))
    }
}
