//! The GEMM launches behind matrix products and their adjoints
//! (`shaders/matmul.wgsl`, `shaders/matmul_lanes.wgsl`): operands as
//! strided views (a transpose is swapped strides), batches folded into the
//! free dimensions where layouts allow, and the schedule chosen per device
//! and product ([`GemmKernel`]).

use crate::error::{Result, invalid};
use crate::ops::accumulate::add_into;
use crate::ops::shaders::{MATMUL, MATMUL_LANES};
use crate::runtime::adapter::GemmKernel;
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, flag};
use crate::runtime::pool::Storage;
use crate::shape::{MAX_RANK, broadcast_strides, numel};

use super::operand::{Operand, b_quads};

const GEMM: Kernel = Kernel {
    module: &MATMUL,
    entry: "matmul",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
/// The CPU-adapter schedule of the same product ([`GemmKernel::Lanes`]);
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
/// The CPU-adapter schedule with four columns of C per invocation
/// (`matmul_quads`): bindings 1–5 as in [`GEMM_LANES`], 6 is C as vec4s.
const GEMM_QUADS: Kernel = Kernel {
    module: &MATMUL_LANES,
    entry: "matmul_quads",
    bindings: &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
        (5, Access::Read),
        (6, Access::Write),
    ],
};
/// 128×128 tiles, an 8×8 block per invocation ([`GemmKernel::LargeTiles`]).
const GEMM_LARGE: Kernel = Kernel {
    module: &MATMUL,
    entry: "matmul_large",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
const OUTER: Kernel = Kernel {
    module: &MATMUL,
    entry: "outer",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};
const TILE: usize = 64;
/// The side of [`GEMM_LARGE`]'s tiles (`L_TILE` in `shaders/matmul.wgsl`).
const LARGE_TILE: usize = 128;
/// Rows of C per workgroup of the lanes kernel (its columns: TILE). 64
/// measured 12% faster at 1024³ on lavapipe, but lavapipe compiles a
/// pipeline at its first dispatch and 64 rows took 290 ms against 126, for
/// each of the kernel's variants: 32 keeps a new model's first step short.
const LANE_ROWS: usize = 32;
/// Multiply-adds from which the lanes kernel's vec4 variants are used.
const VEC4_MIN_MACS: usize = 1 << 22;
const MAX_GRID: usize = 65535;

/// C[z] = A[z]·B[z] for every z of `batch`; C is `[*batch, m, n]`, contiguous.
/// Narrow products waste most of a 64×64 tile, so batches are folded into
/// the free dimensions where the layouts allow, without copies: into the
/// columns when A is the same matrix in every entry (a matrix times K
/// vectors is one GEMM with N·K columns), into the rows when B is and A is
/// a row-major stack. Every element is computed by the same loop either
/// way, so folding changes no result.
pub(super) fn gemm(
    dev: &Device,
    batch: &[usize],
    dims: (usize, usize, usize),
    a: &Operand,
    b: &Operand,
) -> Result<Storage> {
    gemm_of(dev, batch, dims, a, b, numel(batch) > 1)
}

/// [`gemm`], told whether the product is a batch (`batched`), which it
/// stays when folded into one matrix's rows.
fn gemm_of(
    dev: &Device,
    batch: &[usize],
    (m, n, p): (usize, usize, usize),
    a: &Operand,
    b: &Operand,
    batched: bool,
) -> Result<Storage> {
    let z = numel(batch);
    let launch = |batch: &[usize], dims, a: &Operand, b: &Operand, layout| {
        gemm_launch(dev, batch, dims, a, b, layout, batched)
    };
    // Narrow: few columns would leave most SIMD lanes of the lanes kernel
    // idle, and most columns of a 64×64 tile empty, so compute Cᵀ = Bᵀ·Aᵀ
    // (transposes are swapped strides) and store it transposed. Both
    // schedules do.
    let narrow = n <= NARROW && m >= 4 * n;
    if z == 1 && narrow {
        return launch(&[], (n, m, p), &b.t(), &a.t(), Layout::Transposed);
    }
    let invariant = |o: &Operand| o.batch_strides.iter().all(|&s| s == 0);
    if z > 1 && invariant(a) && (z * n).div_ceil(TILE) <= MAX_GRID {
        return launch(batch, (m, n, p), a, b, Layout::Folded);
    }
    let stacked = a.cs == 1
        && a.rs == p
        && batch_strides(batch, batch, m * p)
            .iter()
            .zip(&a.batch_strides)
            .zip(batch)
            .all(|((want, got), &d)| d == 1 || want == got);
    if z > 1 && invariant(b) && stacked {
        // One product of z·m rows, itself narrow or not.
        let rows = Operand {
            batch_strides: vec![],
            ..a.clone()
        };
        let b = Operand {
            batch_strides: vec![],
            ..b.clone()
        };
        return gemm_of(dev, &[], (z * m, n, p), &rows, &b, batched);
    }
    if z > 1 && narrow && invariant(b) && (z * m).div_ceil(TILE) <= MAX_GRID {
        // Narrow, B shared and A no row-major stack (Ḣᵀ[k]·Z̄, the
        // curvature of a classifier head): Cᵀ[z] = Bᵀ·Aᵀ[z] has Bᵀ in
        // every entry, so the batch folds into its columns, and each
        // entry's Cᵀ is stored transposed. W7 (16 entries of 256×10, p =
        // 64) on lavapipe: 2.8 → 1.35 ms, where the plain launch filled 10
        // of each tile's 64 columns.
        return launch(batch, (n, m, p), &b.t(), &a.t(), Layout::FoldedTransposed);
    }
    launch(batch, (m, n, p), a, b, Layout::Plain)
}

/// How a launch lays out C: `[*batch, m, n]`, with the batch folded into
/// the columns (A's batch strides are all 0), or stored transposed (the
/// product computed is Cᵀ, `[m, n]` here, stored as `[n, m]`): without a
/// batch, or per entry of a batch folded into the columns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Plain,
    Folded,
    Transposed,
    FoldedTransposed,
}

impl Layout {
    fn folded(self) -> bool {
        matches!(self, Layout::Folded | Layout::FoldedTransposed)
    }

    fn transposed(self) -> bool {
        matches!(self, Layout::Transposed | Layout::FoldedTransposed)
    }
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
    batched: bool,
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
            let part = gemm_launch(dev, batch, (m, n, len), &a_piece, &b_piece, layout, batched)?;
            total = Some(match total {
                None => part,
                Some(sum) => {
                    add_into(dev, &sum, &part, z * m * n);
                    sum
                }
            });
        }
        if let Some(sum) = total {
            return Ok(sum);
        }
    }
    let (cols, grid_z) = if layout.folded() { (z * n, 1) } else { (n, z) };
    let schedule = match dev.gemm_kernel() {
        GemmKernel::Auto => auto_tiles(m, cols, grid_z, dev.large_tile_min_tiles()),
        chosen => chosen,
    };
    // The kernels take the same parameters. The lanes kernel's A rows can
    // be read as vec4s when each starts at a multiple of 4 floats and is
    // contiguous.
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
    // Four columns of C per invocation (`matmul_quads`), where B's rows or
    // columns are vec4s and a workgroup's 256 columns are filled: for
    // short contractions and few rows, whose lane-varying stores and loads
    // it cuts 4x, and for large products of vec4 rows of A and B. Measured
    // against matmul_lanes on lavapipe: 256³ 22.6 against 19.3 GFLOP/s,
    // 1024×256×256 24.9 against 17.9; W7's m = 10 products 1.09 -> 0.62
    // and 1.32 -> 0.66 ms. Narrower products keep the lanes kernel: 64
    // columns would leave 3/4 of its lanes idle (4096×64×64: 5.8 against
    // 3.7 ms). Only batches take it (the K rows of a batched pass, folded
    // into one product or not): lavapipe compiles each variant for ~100 ms
    // at its first dispatch, and W3's first step, whose plain products
    // would add two variants to the lanes kernel's, took 1.09 s against
    // 0.82.
    let quads = match b_quads(b, n) {
        Some(cols4)
            if schedule == GemmKernel::Lanes
                && batched
                && cols >= 4 * TILE
                && (p <= NARROW || m <= NARROW || (aligned && !cols4)) =>
        {
            Some(cols4)
        }
        _ => None,
    };
    let (tile_rows, tile_cols) = match schedule {
        _ if quads.is_some() => (8, 4 * TILE),
        GemmKernel::Lanes => (LANE_ROWS, TILE),
        GemmKernel::LargeTiles => (LARGE_TILE, LARGE_TILE),
        GemmKernel::Auto | GemmKernel::Tiles => (TILE, TILE),
    };
    let (row_tiles, col_tiles) = (m.div_ceil(tile_rows), cols.div_ceil(tile_cols));
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
    // One dispatch, unless the batch or the row tiles pass the 65535 limit
    // of a grid dimension: then one per chunk, each told where it starts.
    for z0 in (0..grid_z.max(1)).step_by(MAX_GRID) {
        for r0 in (0..row_tiles.max(1)).step_by(MAX_GRID) {
            let grid = (
                col_tiles as u32,
                (row_tiles - r0).min(MAX_GRID) as u32,
                (grid_z - z0).min(MAX_GRID) as u32,
            );
            let transposed = usize::from(layout.transposed());
            let params = params.extra(0, z0).extra(1, r0).extra(2, transposed);
            let buffers = [a.buf, &out, b.buf];
            match schedule {
                GemmKernel::Lanes if let Some(cols4) = quads => {
                    let buffers = [a.buf, &out, b.buf, a.buf, b.buf, &out];
                    let constants = [lane_constants[0], ("B_COLS4", flag(cols4))];
                    dev.dispatch_grid(&GEMM_QUADS, &constants, &params, &buffers, grid);
                }
                GemmKernel::Lanes => {
                    let buffers = [a.buf, &out, b.buf, a.buf, b.buf];
                    dev.dispatch_grid(&GEMM_LANES, &lane_constants, &params, &buffers, grid);
                }
                GemmKernel::LargeTiles => {
                    dev.dispatch_grid(&GEMM_LARGE, &[], &params, &buffers, grid)
                }
                GemmKernel::Auto | GemmKernel::Tiles => {
                    dev.dispatch_grid(&GEMM, &[], &params, &buffers, grid)
                }
            }
        }
    }
    Ok(out)
}

/// `[lead, p, n]`: the outer products `a[l] ⊗ g[l]` of the rows of `a`
/// (`[lead, p]`) and `g` (`[lead, n]`).
pub(super) fn outer(
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
pub(super) fn batch_strides(own: &[usize], batch: &[usize], matrix: usize) -> Vec<usize> {
    broadcast_strides(own, batch)
        .into_iter()
        .map(|s| s * matrix)
        .collect()
}

/// [`GemmKernel::Auto`]'s choice of tiles for a launch of `grid_z`
/// products of `m` rows and `cols` columns: 128×128 once they fill
/// `min_tiles` workgroups (a tile's rows and columns not mostly empty),
/// 64×64 below (four times the workgroups).
fn auto_tiles(m: usize, cols: usize, grid_z: usize, min_tiles: usize) -> GemmKernel {
    if m >= LARGE_TILE && cols >= LARGE_TILE && large_tiles(m, cols) * grid_z >= min_tiles {
        GemmKernel::LargeTiles
    } else {
        GemmKernel::Tiles
    }
}

/// The 128×128 tiles an `m`×`cols` product fills.
pub(crate) fn large_tiles(m: usize, cols: usize) -> usize {
    m.div_ceil(LARGE_TILE) * cols.div_ceil(LARGE_TILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_use_large_tiles_for_large_products_only() {
        let gpu = |m, cols, z| auto_tiles(m, cols, z, GemmKernel::LARGE_TILE_MIN_TILES);
        assert_eq!(gpu(4096, 4096, 1), GemmKernel::LargeTiles);
        assert_eq!(gpu(2048, 2048, 1), GemmKernel::LargeTiles);
        // 64 large tiles would leave most compute units of a big GPU idle.
        assert_eq!(gpu(1024, 1024, 1), GemmKernel::Tiles);
        // A batch of 4 such products fills 256.
        assert_eq!(gpu(1024, 1024, 4), GemmKernel::LargeTiles);
        // Too few rows or columns to fill a 128-tile: mostly empty tiles.
        assert_eq!(gpu(64, 1 << 20, 1), GemmKernel::Tiles);
        assert_eq!(gpu(1 << 20, 100, 1), GemmKernel::Tiles);
    }

    #[test]
    fn cpus_without_subgroups_use_large_tiles_from_two_of_them() {
        let cpu = |m, cols| auto_tiles(m, cols, 1, GemmKernel::CPU_LARGE_TILE_MIN_TILES);
        assert_eq!(cpu(256, 1024), GemmKernel::LargeTiles);
        assert_eq!(cpu(1000, 200), GemmKernel::LargeTiles);
        assert_eq!(cpu(128, 128), GemmKernel::Tiles);
        assert_eq!(cpu(64, 512), GemmKernel::Tiles);
    }
}
