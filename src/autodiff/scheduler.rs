//! Executes a [`Plan`]: one sweep over its steps for K rows at once, in
//! the direction the pass asks for ([`Sweep`]): reverse mode here,
//! forward mode in `forward.rs`, second order in `second_order.rs`.
//!
//! In reverse mode a node's cotangent is complete once all its consumers
//! are done (the plan orders every consumer first). Its rule returns one
//! contribution per input the plan asks for; only the sweep adds them up
//! (`sums.rs`: in place when it holds the only reference, otherwise into a
//! new buffer). A cotangent buffer goes back to the pool right after its
//! rule has been encoded.
//!
//! Every dispatch lands in the device's pending encoder; the caller submits
//! once at the end of the pass. Cotangents are `[rows, *shape]` throughout
//! (rows = K, or per the plan), so a pass issues the same number of
//! dispatches for K = 1 and K = 64. On a dry-run device the same sweep only
//! sizes its buffers (see `Plan::working_bytes`).
//!
//! Regions of elementwise ops (`fusion/`) run as one fused kernel when the
//! sweep reaches their root; their other members then have no cotangent
//! and are passed over. The fused kernel adds into an input's cotangent in
//! place when this module holds the only reference to it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::autodiff::forward;
use crate::autodiff::fusion::Regions;
use crate::autodiff::fusion::launch::{self, Launch};
use crate::autodiff::plan::{Plan, Sweep};
use crate::autodiff::second_order;
use crate::autodiff::sums::Sums;
use crate::error::Result;
use crate::ops::VjpCtx;
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::tape::graph::{Node, NodeKind};

/// Runs `plan` as `sweep` over `k` rows from `seeds` (a node and its
/// `[rows, *shape]` seed: cotangents of the roots in reverse mode, tangents
/// of the wanted nodes otherwise), with the plan's fused `regions`, and
/// returns per result node (the wanted nodes, or the roots in forward
/// mode) what reached it, or None where nothing does.
pub(crate) fn execute(
    dev: &Device,
    plan: &Plan,
    regions: &Regions,
    sweep: Sweep,
    k: usize,
    seeds: Vec<(Arc<Node>, Arc<Storage>)>,
) -> Result<Vec<Option<Arc<Storage>>>> {
    match sweep {
        Sweep::Reverse => reverse(dev, plan, regions, k, seeds),
        Sweep::Forward => forward::roots(dev, plan, regions, k, seeds),
        Sweep::SecondOrder => second_order::sweep(dev, plan, k, seeds),
    }
}

/// Reverse mode: cotangents from the roots down to the wanted nodes.
/// Runs `plan` from `seeds` (output node, its `[rows, *shape]` cotangent),
/// with the plan's fused `regions`, and returns, for each of the plan's
/// wanted nodes, its cotangent, or None where no cotangent reaches it.
fn reverse(
    dev: &Device,
    plan: &Plan,
    regions: &Regions,
    k: usize,
    seeds: Vec<(Arc<Node>, Arc<Storage>)>,
) -> Result<Vec<Option<Arc<Storage>>>> {
    let mut cotangents = Sums::default();
    let len = |node: &Arc<Node>| plan.cotangent_len(node, k);
    for (node, v) in seeds {
        cotangents.add(dev, node.key(), v, len(&node))?;
    }
    let mut reached: HashMap<usize, Arc<Storage>> = HashMap::new();
    for step in &plan.steps {
        let node = &step.node;
        let Some(g) = cotangents.take(node.key()) else {
            continue;
        };
        if step.wanted {
            reached.insert(node.key(), g.clone());
        }
        let NodeKind::Op { op, inputs, saved } = &node.kind else {
            continue;
        };
        if !step.needs.contains(&true) {
            continue;
        }
        if let Some(region) = regions.rooted_at(node.key()) {
            // Inputs of the region's shape can be added to in place, unless
            // their contribution shares a buffer with another input's.
            let accumulators = (region.externals.iter().zip(&region.external_shapes))
                .enumerate()
                .map(|(o, (e, s))| {
                    let in_place = *s == node.shape && region.recipe.may_accumulate(o);
                    in_place.then(|| cotangents.take_unique(e.key()))?
                })
                .collect::<Vec<_>>();
            let handed: Vec<bool> = accumulators.iter().map(Option::is_some).collect();
            let launch = Launch::of(dev, region, plan.rows(node, k), &node.shape);
            let outs = launch::run(&launch, &g, accumulators)?;
            for ((e, out), in_place) in region.externals.iter().zip(outs).zip(handed) {
                if in_place {
                    cotangents.put(e.key(), out);
                } else {
                    cotangents.add(dev, e.key(), out, len(e))?;
                }
            }
            continue;
        }
        debug_assert!(
            !regions.is_interior(node.key()),
            "members of a region get no cotangent"
        );
        let cx = VjpCtx {
            dev,
            k: plan.rows(node, k),
            g: &g,
            out_shape: &node.shape,
            inputs,
            saved,
            needs: &step.needs,
            per_example: &step.per_example,
        };
        let contributions = op.vjp(&cx)?;
        for ((input, need), contribution) in inputs.iter().zip(&step.needs).zip(contributions) {
            if let (true, Some(m), Some(c)) = (*need, &input.node, contribution) {
                cotangents.add(dev, m.key(), c, len(m))?;
            }
        }
        // `g` drops here: its buffer returns to the pool unless a result or
        // an aliasing contribution still holds it.
    }
    Ok(plan
        .wanted
        .iter()
        .map(|n| reached.get(&n.key()).cloned())
        .collect())
}
