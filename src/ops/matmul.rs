//! Matrix products (`shaders/matmul.wgsl`): `[.., m, p] · [.., p, n]` with
//! broadcast batch axes. d(A·B) = dA·B + A·dB, so the adjoints are
//! `dA = G·Bᵀ` and `dB = Aᵀ·G`, each one GEMM dispatch for all K
//! cotangents: K is one more batch axis, folded into the rows of G when B is
//! a plain matrix (into the contraction for dB when A is not broadcast), and
//! the result is summed over the batch axes an operand was broadcast along.

use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result, invalid};
use crate::kernels::{Access, Kernel, MATMUL, MATMUL_LANES, MAX_RANK, Params};
use crate::ops::{
    Contributions, Op, PerExample, Saved, VjpCtx, check_operands, flag, record, reduce,
};
use crate::pool::Storage;
use crate::shape::{broadcast_shapes, broadcast_strides, check_rank, contiguous_strides, numel};
use crate::tensor::Tensor;

const GEMM: Kernel = Kernel {
    module: &MATMUL,
    entry: "matmul",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
/// The CPU-adapter schedule of the same product (`Device::lane_gemm`);
/// bindings 4 and 5 are A and B again, read as vec4s where their layout allows.
const GEMM_LANES: Kernel = Kernel {
    module: &MATMUL_LANES,
    entry: "matmul_lanes",
    bindings: &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
        (5, Access::Read),
    ],
};
const OUTER: Kernel = Kernel {
    module: &MATMUL,
    entry: "outer",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
const TILE: usize = 64;
/// Rows of C per workgroup of the lanes kernel (its columns: TILE). 64
/// measured 12% faster at 1024³ on lavapipe, but lavapipe compiles a
/// pipeline at its first dispatch and 64 rows took 290 ms against 126, for
/// each of the kernel's variants: 32 keeps a new model's first step short.
const LANE_ROWS: usize = 32;
/// Multiply-adds from which the lanes kernel's vec4 variants are used.
const VEC4_MIN_MACS: usize = 1 << 22;
const MAX_GRID: usize = 65535;

pub(crate) const SAVES: &[Saved] = &[Saved::Input(0), Saved::Input(1)];

/// One GEMM operand: element (i, p) of batch entry z at
/// `off + Σ batch_index_d · batch_strides_d + i·rs + p·cs`.
#[derive(Clone)]
struct Operand<'a> {
    buf: &'a Storage,
    rs: usize,
    cs: usize,
    batch_strides: Vec<usize>,
    off: usize,
}

impl<'a> Operand<'a> {
    /// A row-major `rows × cols` matrix per batch entry.
    fn plain(buf: &'a Storage, cols: usize, batch_strides: Vec<usize>) -> Self {
        Operand {
            buf,
            rs: cols,
            cs: 1,
            batch_strides,
            off: 0,
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
            off: 0,
        }
    }
}

/// C[z] = A[z]·B[z] for every z of `batch`; C is `[*batch, m, n]`, contiguous.
/// Narrow products waste most of a 64×64 tile, so batches are folded into
/// the free dimensions where the layouts allow, without copies: into the
/// columns when A is the same matrix in every entry (a matrix times K
/// vectors is one GEMM with N·K columns), into the rows when B is and A is
/// a row-major stack. Every element is computed by the same loop either
/// way, so folding changes no result.
fn gemm(
    dev: &Device,
    batch: &[usize],
    (m, n, p): (usize, usize, usize),
    a: &Operand,
    b: &Operand,
) -> Result<Storage> {
    let z = numel(batch);
    // Narrow: few columns would leave most SIMD lanes of the lanes kernel
    // idle, and most columns of a 64×64 tile empty, so compute Cᵀ = Bᵀ·Aᵀ
    // (transposes are swapped strides) and store it transposed. Both
    // schedules do.
    if z == 1 && n <= NARROW && m >= 4 * n {
        let bt = Operand {
            buf: b.buf,
            rs: b.cs,
            cs: b.rs,
            batch_strides: vec![],
            off: b.off,
        };
        let at = Operand {
            buf: a.buf,
            rs: a.cs,
            cs: a.rs,
            batch_strides: vec![],
            off: a.off,
        };
        return gemm_launch(dev, &[], (n, m, p), &bt, &at, Layout::Transposed);
    }
    let invariant = |o: &Operand| o.batch_strides.iter().all(|&s| s == 0);
    if z > 1 && invariant(a) && (z * n).div_ceil(TILE) <= MAX_GRID {
        return gemm_launch(dev, batch, (m, n, p), a, b, Layout::Folded);
    }
    let stacked = a.cs == 1
        && a.rs == p
        && batch_strides(batch, batch, m * p)
            .iter()
            .zip(&a.batch_strides)
            .zip(batch)
            .all(|((want, got), &d)| d == 1 || want == got);
    if z > 1 && invariant(b) && stacked {
        let rows = Operand::plain(a.buf, p, vec![]);
        let b = Operand {
            batch_strides: vec![],
            ..*b
        };
        return gemm_launch(dev, &[], (z * m, n, p), &rows, &b, Layout::Plain);
    }
    gemm_launch(dev, batch, (m, n, p), a, b, Layout::Plain)
}

/// How a launch lays out C: `[*batch, m, n]`, with the batch folded into
/// the columns (A's batch strides are all 0), or stored transposed (no
/// batch: the product computed is Cᵀ, `[m, n]` here, stored as `[n, m]`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Plain,
    Folded,
    Transposed,
}

/// At most this many columns make a product narrow (classifier heads, the
/// K-batched cotangent of a vector output).
const NARROW: usize = 16;

/// One GEMM launch (split past the grid limits), C laid out as `layout`
/// says. Where the driver bounds an invocation's loops (lavapipe), a long
/// contraction is split into pieces whose products are added: each
/// invocation walks the whole contraction.
fn gemm_launch(
    dev: &Device,
    batch: &[usize],
    (m, n, p): (usize, usize, usize),
    a: &Operand,
    b: &Operand,
    layout: Layout,
) -> Result<Storage> {
    let z = numel(batch);
    if let Some(limit) = dev.loop_limit().filter(|&l| p > l) {
        let mut total: Option<Storage> = None;
        for p0 in (0..p).step_by(limit) {
            let a_piece = Operand {
                off: a.off + p0 * a.cs,
                ..a.clone()
            };
            let b_piece = Operand {
                off: b.off + p0 * b.rs,
                ..b.clone()
            };
            let len = limit.min(p - p0);
            let part = gemm_launch(dev, batch, (m, n, len), &a_piece, &b_piece, layout)?;
            total = Some(match total {
                None => part,
                Some(sum) => {
                    crate::ops::accumulate::add_into(dev, &sum, &part, z * m * n);
                    sum
                }
            });
        }
        if let Some(sum) = total {
            return Ok(sum);
        }
    }
    let (cols, grid_z) = if layout == Layout::Folded {
        (z * n, 1)
    } else {
        (n, z)
    };
    let rows_per_tile = if dev.lane_gemm() { LANE_ROWS } else { TILE };
    let (row_tiles, col_tiles) = (m.div_ceil(rows_per_tile), cols.div_ceil(TILE));
    if batch.len() > MAX_RANK || col_tiles > MAX_GRID {
        return Err(invalid(
            "matmul",
            format!("a product of {z} matrices of {m}×{n} exceeds the dispatch limits"),
        ));
    }
    let out = dev.alloc("matmul output", z * m * n)?;
    let params = Params::new(0, 1)
        .rank(batch.len())
        .slot(0, &[m, cols, p, a.rs, a.cs, b.rs])
        .slot(1, &[b.cs, n, a.off, b.off])
        .slot(2, batch)
        .slot(3, &a.batch_strides)
        .slot(4, &b.batch_strides);
    // Both kernels cover 64×64 tiles of C with the same parameters. A's
    // rows can be read as vec4s when each starts at a multiple of 4 floats
    // and is contiguous.
    let lanes = dev.lane_gemm();
    // The vec4 variants are compiled only for products large enough to
    // repay lavapipe's compile at first dispatch (~125 ms per variant):
    // smaller ones share the generic variant, so a model's first step
    // compiles fewer pipelines.
    let big = z * m * n * p >= VEC4_MIN_MACS;
    let vec4 = |o: &Operand, contiguous: bool, stride: usize| {
        big && contiguous
            && stride.is_multiple_of(4)
            && o.batch_strides.iter().all(|s| s.is_multiple_of(4))
    };
    let aligned = vec4(a, a.cs == 1, a.rs);
    let b_aligned = vec4(b, b.rs == 1, b.cs);
    // A transposed (its columns contiguous): four rows per vec4 instead.
    let a_rows4 = !aligned && vec4(a, a.rs == 1, a.cs);
    let lane_constants = [
        ("A_VEC4", flag(aligned)),
        ("B_VEC4", flag(b_aligned)),
        ("A_ROWS4", flag(a_rows4)),
    ];
    // One dispatch, unless the batch or the row tiles pass the 65535 limit
    // of a grid dimension: then one per chunk, each told where it starts.
    for z0 in (0..grid_z.max(1)).step_by(MAX_GRID) {
        for r0 in (0..row_tiles.max(1)).step_by(MAX_GRID) {
            let grid = (
                col_tiles as u32,
                (row_tiles - r0).min(MAX_GRID) as u32,
                (grid_z - z0).min(MAX_GRID) as u32,
            );
            let transposed = usize::from(layout == Layout::Transposed);
            let params = params.extra(0, z0).extra(1, r0).extra(2, transposed);
            if lanes {
                let buffers = [a.buf, &out, b.buf, a.buf, b.buf];
                dev.dispatch_grid(&GEMM_LANES, &lane_constants, &params, &buffers, grid);
            } else {
                dev.dispatch_grid(&GEMM, &[], &params, &[a.buf, &out, b.buf], grid);
            }
        }
    }
    Ok(out)
}

/// `[lead, p, n]`: the outer products `a[l] ⊗ g[l]` of the rows of `a`
/// (`[lead, p]`) and `g` (`[lead, n]`).
fn outer(
    dev: &Device,
    a: &Storage,
    g: &Storage,
    lead: usize,
    p: usize,
    n: usize,
) -> Result<Storage> {
    let out = dev.alloc("per-example outer products", lead * p * n)?;
    let rows = lead * p;
    let grid = (
        n.div_ceil(64) as u32,
        rows.min(MAX_GRID) as u32,
        rows.div_ceil(MAX_GRID) as u32,
    );
    let params = Params::new(rows, 1).slot(0, &[p, n]);
    dev.dispatch_grid(&OUTER, &[], &params, &[a, &out, g], grid);
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
                let rows = |s: &Arc<Storage>, w: usize| -> Result<Tensor> {
                    Tensor::from_storage(dev, s.clone(), vec![lead, w])
                        .square()?
                        .sum(&[1], false)
                };
                rows(sa, p)?.mul(&rows(cx.g, n)?)?.inner.data.clone()
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
