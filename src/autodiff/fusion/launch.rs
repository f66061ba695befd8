//! Runs a fused adjoint region (`kernel.rs` writes its kernel): allocates
//! or takes over the outputs, records one dispatch for all K rows, then
//! sums each output over the axes its input was broadcast along (the
//! adjoint of broadcasting), as an unfused binary op does.

use std::sync::Arc;

use crate::autodiff::fusion::kernel::RegionRecipe;
use crate::error::Result;
use crate::ops::elementwise::codegen::Composed;
use crate::ops::reduce::sum_to;
use crate::runtime::device::Device;
use crate::runtime::kernels::flag;
use crate::runtime::pool::Storage;
use crate::shape::numel;

/// What one run of a region's kernel binds.
pub(crate) struct Launch<'a> {
    pub dev: &'a Device,
    pub recipe: &'a RegionRecipe,
    /// Cotangent rows.
    pub k: usize,
    /// The region's shape (every member's output).
    pub shape: &'a [usize],
    /// The root's cotangent, `[k, *shape]`.
    pub g: &'a Storage,
    /// The recipe's saved values, with their shapes.
    pub saved: &'a [(Arc<Storage>, Vec<usize>)],
    /// Each member's scalar parameter.
    pub scalars: &'a [f32],
    /// The shape of each input leaving the region.
    pub out_shapes: &'a [Vec<usize>],
}

/// Runs a region's adjoint. `accumulators[o]`: output o's cotangent so
/// far, where the scheduler hands it over (only for inputs of the region's
/// shape); it is added to in place. Returns each output's contribution at
/// its input's shape (the accumulator, where one was given).
pub(crate) fn run(
    launch: &Launch,
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
        dispatch(launch, n, &accumulate, &primaries);
    }
    outs.into_iter()
        .zip(launch.out_shapes)
        .map(|(out, to)| sum_to(dev, &out, k, shape, to))
        .collect()
}

fn dispatch(launch: &Launch, n: usize, accumulate: &[bool], outs: &[&Storage]) {
    let (dev, recipe) = (launch.dev, launch.recipe);
    let shapes: Vec<&[usize]> = launch.saved.iter().map(|(_, s)| s.as_slice()).collect();
    let params = (recipe.layout()).params(launch.shape, launch.k, &shapes, launch.scalars);
    let buffers: Vec<&Storage> = std::iter::once(launch.g)
        .chain(launch.saved.iter().map(|(s, _)| &**s))
        .chain(outs.iter().copied())
        .collect();
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
    let name = recipe.signature(accumulate);
    let kernel = Composed {
        name: &name,
        entry: "fused_adjoint",
        reads: 1 + launch.saved.len(),
        writes: outs.len(),
        entry_source: &|| recipe.entry_source(accumulate),
    };
    kernel.dispatch(dev, Some(launch.k), &constants, &params, &buffers, n);
}
