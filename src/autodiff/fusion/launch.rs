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
use crate::error::Result;
use crate::ops::elementwise::codegen::Composed;
use crate::ops::layout::broadcast_rows;
use crate::ops::reduce::sum_to;
use crate::runtime::device::Device;
use crate::runtime::kernels::flag;
use crate::runtime::pool::Storage;
use crate::shape::numel;

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
    let name = recipe.signature(accumulate);
    let kernel = Composed {
        name: &name,
        entry: "fused_adjoint",
        reads: 1 + launch.saved.len(),
        writes: outs.len(),
        entry_source: &|| recipe.entry_source(accumulate),
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
        let name = recipe.tangent_signature(&present);
        let kernel = Composed {
            name: &name,
            entry: "fused_tangent",
            reads: launch.saved.len() + rows.len(),
            writes: 1,
            entry_source: &|| recipe.tangent_source(&present),
        };
        record(launch, &kernel, &buffers, n);
    }
    Ok(Arc::new(result))
}

/// Records one dispatch of a region's kernel over `n` elements and K rows.
fn record(launch: &Launch, kernel: &Composed, buffers: &[&Storage], n: usize) {
    let dev = launch.dev;
    let shapes: Vec<&[usize]> = launch.saved.iter().map(|(_, s)| s.as_slice()).collect();
    let params = (launch.recipe.layout()).params(launch.shape, launch.k, &shapes, launch.scalars);
    // On CPU adapters the kernel is specialized to the row length and the
    // number of rows: with the stride and the trip count constants, LLVM
    // unrolls the row loop and lavapipe streams the rows faster (W2's
    // adjoint: 5.9 ms with neither, 5.9 with the stride alone, 4.1 with
    // both). One pipeline per region, row length and K; a training loop has
    // few of each. GPUs need no such thing and compile one per region.
    let aligned = n.is_multiple_of(4);
    let specialize = aligned && dev.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let row_vec4s = if specialize { (n / 4) as f64 } else { 0.0 };
    let rows_k = if specialize { launch.k as f64 } else { 0.0 };
    let constants = [
        ("ALIGNED", flag(aligned)),
        ("ROW_VEC4S", row_vec4s),
        ("ROWS_K", rows_k),
    ];
    kernel.dispatch(dev, Some(launch.k), &constants, &params, buffers, n);
}
