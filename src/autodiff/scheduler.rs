//! Executes a [`Plan`]: one sweep over its steps for K cotangents at once.
//! A node's cotangent is complete once all its consumers are done (the
//! plan orders every consumer first). Its rule returns one contribution per
//! input the plan asks for; only this module accumulates them (in place
//! when it holds the only reference, otherwise into a new buffer). A
//! cotangent buffer goes back to the pool right after its rule has been
//! encoded.
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

use crate::autodiff::fusion::Regions;
use crate::autodiff::fusion::launch::{self, Launch};
use crate::autodiff::plan::Plan;
use crate::error::Result;
use crate::ops::{VjpCtx, accumulate};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::tape::graph::{Node, NodeKind};

/// Runs `plan` from `seeds` (output node, its `[rows, *shape]` cotangent),
/// with the plan's fused `regions`, and returns, for each of the plan's
/// wanted nodes, its cotangent, or None where no cotangent reaches it.
pub(crate) fn execute(
    dev: &Device,
    plan: &Plan,
    regions: &Regions,
    k: usize,
    seeds: Vec<(Arc<Node>, Arc<Storage>)>,
) -> Result<Vec<Option<Arc<Storage>>>> {
    let mut cotangents: HashMap<usize, Arc<Storage>> = HashMap::new();
    let len = |node: &Arc<Node>| plan.cotangent_len(node, k);
    for (node, v) in seeds {
        accumulate(dev, &mut cotangents, node.key(), v, len(&node))?;
    }
    let mut reached: HashMap<usize, Arc<Storage>> = HashMap::new();
    for step in &plan.steps {
        let node = &step.node;
        let Some(g) = cotangents.remove(&node.key()) else {
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
                    in_place.then(|| take_unique(&mut cotangents, e.key()))?
                })
                .collect::<Vec<_>>();
            let handed: Vec<bool> = accumulators.iter().map(Option::is_some).collect();
            let launch = Launch {
                dev,
                recipe: &region.recipe,
                k: plan.rows(node, k),
                shape: &node.shape,
                g: &g,
                saved: &region.saved,
                scalars: &region.scalars,
                out_shapes: &region.external_shapes,
            };
            let outs = launch::run(&launch, accumulators)?;
            for ((e, out), in_place) in region.externals.iter().zip(outs).zip(handed) {
                if in_place {
                    cotangents.insert(e.key(), out);
                } else {
                    accumulate(dev, &mut cotangents, e.key(), out, len(e))?;
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
                accumulate(dev, &mut cotangents, m.key(), c, len(m))?;
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

/// The cotangent of node `key` so far, when only this sweep holds it (so a
/// kernel may add to it in place); otherwise it stays where it is.
fn take_unique(cotangents: &mut HashMap<usize, Arc<Storage>>, key: usize) -> Option<Arc<Storage>> {
    let mut acc = cotangents.remove(&key)?;
    if Arc::get_mut(&mut acc).is_some() {
        return Some(acc);
    }
    cotangents.insert(key, acc);
    None
}

/// Adds contribution `c` (`len` values) to the cotangent of node `key`.
fn accumulate(
    dev: &Device,
    cotangents: &mut HashMap<usize, Arc<Storage>>,
    key: usize,
    c: Arc<Storage>,
    len: usize,
) -> Result<()> {
    let sum = match cotangents.remove(&key) {
        None => c,
        Some(mut acc) => {
            if Arc::get_mut(&mut acc).is_some() {
                accumulate::add_into(dev, &acc, &c, len);
                acc
            } else {
                Arc::new(accumulate::add(dev, &acc, &c, len)?)
            }
        }
    };
    cotangents.insert(key, sum);
    Ok(())
}
