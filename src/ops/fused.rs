//! The fused adjoint of an elementwise region (`src/fusion.rs` says which
//! nodes form one): one kernel composed of `shaders/unary.wgsl`,
//! `shaders/binary.wgsl` and an entry point (`adjoint_recipe.rs`) that calls their
//! derivative functions with literal op codes. Per element it reads each
//! saved value once, sums the products of local derivatives along every
//! path into one factor per input leaving the region, then for each of the
//! K cotangent rows writes `g[k] ⊙ factor` (or adds it to the input's
//! cotangent in place, when the scheduler hands over the accumulator).
//! Operands broadcast to the region's shape are read through their strides;
//! an input broadcast that way gets its contribution at the region's shape
//! and summed over the broadcast axes after the kernel (the adjoint of
//! broadcasting), as an unfused binary op does.
//! The composed module is named by its recipe, so the pipeline cache
//! compiles each shape of region once.

use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::kernels::{Access, Kernel, Module, Params, groups_for};
use crate::ops::adjoint_recipe::FIRST_BINDING;
pub(crate) use crate::ops::adjoint_recipe::{
    Elementwise, MAX_BROADCAST, PRELUDE, Recipe, Step, Target,
};
use crate::ops::flag;
use crate::pool::Storage;
use crate::shape::broadcast_strides;

/// What one run of a region's kernel binds.
pub(crate) struct Launch<'a> {
    pub dev: &'a Device,
    pub recipe: &'a Recipe,
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
    let n = crate::shape::numel(shape);
    let accumulate: Vec<bool> = accumulators.iter().map(Option::is_some).collect();
    let aliases = launch.recipe.aliases();
    let mut outs: Vec<Arc<Storage>> = Vec::with_capacity(aliases.len());
    for (a, alias) in accumulators.into_iter().zip(&aliases) {
        outs.push(match (a, alias) {
            (_, Some(q)) => outs[*q].clone(),
            (Some(a), None) => a,
            (None, None) => Arc::new(dev.alloc("fused cotangent", k * n)?),
        });
    }
    if !dev.is_dry_run() {
        let primaries: Vec<&Arc<Storage>> = outs
            .iter()
            .zip(&aliases)
            .filter(|(_, a)| a.is_none())
            .map(|(o, _)| o)
            .collect();
        dispatch(launch, n, &accumulate, &primaries);
    }
    // The adjoint of broadcasting: sum over the axes an input was
    // broadcast along.
    outs.into_iter()
        .zip(launch.out_shapes)
        .map(|(out, to)| crate::ops::reduce::sum_to(dev, &out, k, shape, to))
        .collect()
}

fn dispatch(launch: &Launch, n: usize, accumulate: &[bool], outs: &[&Arc<Storage>]) {
    let (dev, recipe) = (launch.dev, launch.recipe);
    let name = recipe.signature(accumulate);
    let source = recipe.module_source(accumulate);
    let module = Module {
        name: &name,
        source: &source,
    };
    let mut bindings = vec![(FIRST_BINDING, Access::Read)];
    let mut binding = FIRST_BINDING;
    for _ in 0..recipe.saved {
        binding += 1;
        bindings.push((binding, Access::Read));
    }
    for _ in outs {
        binding += 1;
        bindings.push((binding, Access::Write));
    }
    let kernel = Kernel {
        module: &module,
        entry: "fused_adjoint",
        bindings: &bindings,
    };
    let mut params = Params::new(n, launch.k)
        .rank(launch.shape.len())
        .slot(0, launch.shape);
    let mut slot = 1;
    for (j, (_, saved_shape)) in launch.saved.iter().enumerate() {
        if recipe.is_broadcast(j) {
            params = params.slot(slot, &broadcast_strides(saved_shape, launch.shape));
            slot += 1;
        }
    }
    for (i, s) in launch.scalars.iter().enumerate() {
        params = params.slot_word(6 * slot + i, s.to_bits());
    }
    let buffers: Vec<&Storage> = std::iter::once(launch.g)
        .chain(launch.saved.iter().map(|(s, _)| &**s))
        .chain(outs.iter().map(|o| &***o))
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
    let groups = groups_for(n.div_ceil(4) as u64);
    dev.dispatch_rows_with(&kernel, launch.k, &constants, &params, &buffers, groups);
}
