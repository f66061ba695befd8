//! Runs a fused region (`kernel.rs` writes its kernels). The adjoint:
//! allocates or takes over the outputs, records one dispatch for all K
//! rows, then sums each output over the axes its input was broadcast along
//! (the adjoint of broadcasting), as an unfused binary op does. The tangent
//! (forward mode): the root's K tangent rows from the tangents of the
//! inputs leaving the region, one dispatch, a broadcast input's rows
//! expanded to the region's shape first.

use std::sync::Arc;

use crate::autodiff::fusion::grow::Region;
use crate::autodiff::fusion::kernel::RegionRecipe;
use crate::autodiff::fusion::rows::Rows;
use crate::error::Result;
use crate::ops::elementwise::codegen::Composed;
use crate::ops::layout::broadcast_rows;
use crate::ops::reduce::sum_to;
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::numel;

/// Rows per workgroup block on CPU adapters (see `record`).
const ROW_BLOCK: usize = 8;

/// What one run of a region's kernel binds.
pub(crate) struct Launch<'a> {
    pub dev: &'a Device,
    pub recipe: &'a RegionRecipe,
    /// Rows (cotangents, or tangents).
    pub k: usize,
    /// The region's shape (every member's output).
    pub shape: &'a [usize],
    /// The recipe's saved values, with their shapes.
    pub saved: &'a [(Arc<Storage>, Vec<usize>)],
    /// Each member's scalar parameter.
    pub scalars: &'a [f32],
    /// The shape of each input leaving the region.
    pub out_shapes: &'a [Vec<usize>],
}

impl<'a> Launch<'a> {
    /// A run of `region`, rooted at a node of `shape`, over `k` rows.
    pub fn of(dev: &'a Device, region: &'a Region, k: usize, shape: &'a [usize]) -> Launch<'a> {
        Launch {
            dev,
            recipe: &region.recipe,
            k,
            shape,
            saved: &region.saved,
            scalars: &region.scalars,
            out_shapes: &region.external_shapes,
        }
    }
}

/// Runs a region's adjoint. `accumulators[o]`: output o's cotangent so
/// far, where the scheduler hands it over (only for inputs of the region's
/// shape); it is added to in place. Returns each output's contribution at
/// its input's shape (the accumulator, where one was given).
/// `g` is the root's cotangent, `[k, *shape]`.
pub(crate) fn run(
    launch: &Launch,
    g: &Storage,
    accumulators: Vec<Option<Arc<Storage>>>,
) -> Result<Vec<Arc<Storage>>> {
    let Launch { dev, k, shape, .. } = *launch;
    let n = numel(shape);
    let accumulate: Vec<bool> = accumulators.iter().map(Option::is_some).collect();
    let aliases = launch.recipe.aliases();
    let mut outs: Vec<Arc<Storage>> = Vec::with_capacity(aliases.len());
    for (a, alias) in accumulators.into_iter().zip(aliases) {
        outs.push(match (a, alias) {
            (_, Some(q)) => outs[*q].clone(),
            (Some(a), None) => a,
            (None, None) => Arc::new(dev.alloc("fused cotangent", k * n)?),
        });
    }
    if !dev.is_dry_run() {
        let primaries: Vec<&Storage> = outs
            .iter()
            .zip(aliases)
            .filter(|(_, a)| a.is_none())
            .map(|(o, _)| &**o)
            .collect();
        dispatch(launch, g, n, &accumulate, &primaries);
    }
    outs.into_iter()
        .zip(launch.out_shapes)
        .map(|(out, to)| sum_to(dev, &out, k, shape, to))
        .collect()
}

fn dispatch(launch: &Launch, g: &Storage, n: usize, accumulate: &[bool], outs: &[&Storage]) {
    let recipe = launch.recipe;
    let buffers: Vec<&Storage> = std::iter::once(g)
        .chain(launch.saved.iter().map(|(s, _)| &**s))
        .chain(outs.iter().copied())
        .collect();
    let kernel = Variants {
        entry: "fused_adjoint",
        reads: 1 + launch.saved.len(),
        writes: outs.len(),
        name: &|rows| recipe.signature(accumulate, rows),
        source: &|rows| recipe.entry_source(accumulate, rows),
    };
    record(launch, &kernel, &buffers, n);
}

/// The root's K tangent rows, `Σ_o factor_o ⊙ ṫ_o[k]`, from the tangents of
/// the inputs leaving the region (`tangents[o]`, None: zero; of each
/// input's shape, `launch.out_shapes[o]`).
pub(crate) fn tangent(launch: &Launch, tangents: &[Option<Arc<Storage>>]) -> Result<Arc<Storage>> {
    let Launch { dev, k, shape, .. } = *launch;
    let n = numel(shape);
    let result = dev.alloc("fused tangent", k * n)?;
    let present: Vec<bool> = tangents.iter().map(Option::is_some).collect();
    let mut rows = Vec::with_capacity(tangents.len());
    for (t, from) in tangents.iter().zip(launch.out_shapes) {
        let Some(t) = t else { continue };
        rows.push(match from.as_slice() == shape {
            true => t.clone(),
            false => Arc::new(broadcast_rows(dev, t, k, from, shape)?),
        });
    }
    if !dev.is_dry_run() {
        let recipe = launch.recipe;
        let buffers: Vec<&Storage> = (launch.saved.iter().map(|(s, _)| &**s))
            .chain(rows.iter().map(|r| &**r))
            .chain(std::iter::once(&result))
            .collect();
        let kernel = Variants {
            entry: "fused_tangent",
            reads: launch.saved.len() + rows.len(),
            writes: 1,
            name: &|r| recipe.tangent_signature(&present, r),
            source: &|r| recipe.tangent_source(&present, r),
        };
        record(launch, &kernel, &buffers, n);
    }
    Ok(Arc::new(result))
}

/// A region's kernel in both of its sources (`Rows`).
struct Variants<'a> {
    entry: &'static str,
    reads: usize,
    writes: usize,
    name: &'a dyn Fn(Rows) -> String,
    source: &'a dyn Fn(Rows) -> String,
}

impl Variants<'_> {
    /// The kernel named `name` whose source `source` writes.
    fn composed<'a>(&self, name: &'a str, source: &'a dyn Fn() -> String) -> Composed<'a> {
        Composed {
            name,
            entry: self.entry,
            reads: self.reads,
            writes: self.writes,
            entry_source: source,
        }
    }
}

/// Records one dispatch of a region's kernel over `n` elements and K rows.
/// Rows of n % 4 != 0 need the source for any n. Aligned rows run the
/// aligned source, unless the other is compiled and it is not: a device
/// that met an unaligned n first runs every n with the one kernel (W10's
/// list on lavapipe, 27 of its 30 steps unaligned: one compile fewer, its
/// first pass 0.655 → 0.637 s, medians of 14), about 4% slower on aligned
/// rows than the aligned source (30 steps, n = 60,000, K = 100: 0.60–0.63
/// against 0.58–0.60 s). The choice depends only on what is compiled, so
/// it never moves a compile to a later step.
fn record(launch: &Launch, variants: &Variants, buffers: &[&Storage], n: usize) {
    let dev = launch.dev;
    let shapes: Vec<&[usize]> = launch.saved.iter().map(|(_, s)| s.as_slice()).collect();
    let params = (launch.recipe.layout()).params(launch.shape, launch.k, &shapes, launch.scalars);
    let (constants, blocks) = row_loop(dev, launch.k);
    let any_name = (variants.name)(Rows::Any);
    let any_source = || (variants.source)(Rows::Any);
    let any = variants.composed(&any_name, &any_source);
    let aligned_name = n.is_multiple_of(4).then(|| (variants.name)(Rows::Aligned));
    let aligned_source = || (variants.source)(Rows::Aligned);
    let aligned = (aligned_name.as_deref()).map(|name| variants.composed(name, &aligned_source));
    let kernel = match aligned {
        Some(a) if a.is_compiled(dev, &constants) || !any.is_compiled(dev, &constants) => a,
        _ => any,
    };
    kernel.dispatch(dev, &constants, &params, buffers, (n, blocks));
}

/// The row loop's override constants on `dev` for `k` rows, and the
/// workgroups along z.
fn row_loop(dev: &Device, k: usize) -> ([(&'static str, f64); 2], u32) {
    // On CPU adapters (lavapipe) an invocation runs all its rows before
    // the next invocation starts, so K rows n floats apart would evict each
    // other from cache; blocks of ROW_BLOCK rows, one per workgroup along
    // the grid's z, stream the rows contiguously with no barrier (a barrier
    // turns every invocation into a coroutine on llvmpipe). The factors are
    // recomputed per block, a few ops against 8 rows of loads and stores.
    // A single row keeps a constant trip count (ROWS_K = 1). W2's adjoint
    // (n = 2^16) on lavapipe: K = 64 in 4.1 ms against 3.7 with the kernel
    // specialized to n and K, and 4.5 with one loop over K and a barrier
    // every 8 rows; K = 7 in 0.72 ms against 0.68 and 1.5; K = 1 0.32 ms
    // (0.53 as a block). The specialized kernels compiled once per n and K,
    // up to 740 ms each (LLVM unrolls the K loop); these compile at most
    // four times per region (aligned or any n, one row or more), whatever n
    // and K (issue 22). GPUs loop over all K rows in each invocation.
    let cpu = dev.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let (blocks, row_block, rows_k) = match (cpu, k) {
        (false, _) => (1, 0.0, 0.0),
        (true, 1) => (1, 0.0, 1.0),
        (true, k) => (k.div_ceil(ROW_BLOCK), ROW_BLOCK as f64, 0.0),
    };
    let constants = [("ROW_BLOCK", row_block), ("ROWS_K", rows_k)];
    (constants, blocks as u32)
}
