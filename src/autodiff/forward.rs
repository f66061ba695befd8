//! Forward mode: the tangents of K directions from the wanted nodes (the
//! inputs, seeded by the caller) up to the roots (the outputs), over the
//! plan reverse mode uses, its steps taken backwards (inputs before
//! consumers). A node's tangent is its rule applied to its inputs'
//! (`Op::jvp`, all K rows in one dispatch), plus its seed where it is
//! wanted: an input computed from another input gets both, as `vjp` sums
//! both paths. A region of elementwise ops (`fusion/`) runs as one kernel
//! at its root, from the tangents of the inputs leaving it: the factors
//! its adjoint uses, applied the other way. A tangent is freed after its
//! last consumer has used it, unless it is a root's, or the sweep keeps
//! them all (second order, which fuses nothing).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::autodiff::fusion::Regions;
use crate::autodiff::fusion::launch::{self, Launch};
use crate::autodiff::plan::Plan;
use crate::autodiff::sums::Sums;
use crate::error::Result;
use crate::ops::JvpCtx;
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::tape::graph::{Node, NodeKind};

/// The roots' tangents (None where no direction reaches a root).
pub(crate) fn roots(
    dev: &Device,
    plan: &Plan,
    regions: &Regions,
    k: usize,
    seeds: Vec<(Arc<Node>, Arc<Storage>)>,
) -> Result<Vec<Option<Arc<Storage>>>> {
    let tangents = sweep(dev, plan, regions, k, seeds, false)?;
    Ok(plan
        .roots
        .iter()
        .map(|r| tangents.get(r.key()).cloned())
        .collect())
}

/// The tangents of the plan's nodes along `k` directions seeded at
/// `seeds`: the roots', or with `keep_all` every node's. A region of
/// `regions` computes its root's tangent in one kernel from the tangents of
/// the inputs leaving it; its members get none.
pub(crate) fn sweep(
    dev: &Device,
    plan: &Plan,
    regions: &Regions,
    k: usize,
    seeds: Vec<(Arc<Node>, Arc<Storage>)>,
    keep_all: bool,
) -> Result<Sums> {
    let len = |node: &Node| plan.cotangent_len(node, k);
    let mut seeded = Sums::default();
    for (node, t) in seeds {
        seeded.add(dev, node.key(), t, len(&node))?;
    }
    // How many consumers read each node's tangent.
    let mut readers: HashMap<usize, usize> = HashMap::new();
    for step in &plan.steps {
        for (input, &need) in step.node.inputs().iter().zip(&step.needs) {
            if let (true, Some(m)) = (need, &input.node) {
                *readers.entry(m.key()).or_default() += 1;
            }
        }
    }
    let roots: HashSet<usize> = plan.roots.iter().map(|r| r.key()).collect();
    let mut tangents = Sums::default();
    for step in plan.steps.iter().rev() {
        let node = &step.node;
        if let NodeKind::Op { op, inputs, saved } = &node.kind {
            let given: Vec<Option<Arc<Storage>>> = (inputs.iter().zip(&step.needs))
                .map(|(input, &need)| match (need, &input.node) {
                    (true, Some(m)) => tangents.get(m.key()).cloned(),
                    _ => None,
                })
                .collect();
            if let Some(region) = regions.rooted_at(node.key()) {
                let outside: Vec<Option<Arc<Storage>>> = (region.externals.iter())
                    .map(|e| tangents.get(e.key()).cloned())
                    .collect();
                if outside.iter().any(Option::is_some) {
                    let launch = Launch::of(dev, region, k, &node.shape);
                    let t = launch::tangent(&launch, &outside)?;
                    tangents.add(dev, node.key(), t, len(node))?;
                }
            } else if given.iter().any(Option::is_some) && !regions.is_interior(node.key()) {
                let cx = JvpCtx {
                    dev,
                    k,
                    tangents: &given,
                    out_shape: &node.shape,
                    inputs,
                    saved,
                };
                let t = op.jvp(&cx)?;
                tangents.add(dev, node.key(), t, len(node))?;
            }
            drop(given);
            // A region's members read nothing themselves: what they read
            // is kept until the pass ends.
            if !keep_all && !regions.is_interior(node.key()) {
                for (input, &need) in inputs.iter().zip(&step.needs) {
                    let Some(m) = input.node.as_ref().filter(|_| need) else {
                        continue;
                    };
                    let left = readers.entry(m.key()).or_default();
                    *left = left.saturating_sub(1);
                    if *left == 0 && !roots.contains(&m.key()) {
                        tangents.take(m.key());
                    }
                }
            }
        }
        if let Some(seed) = seeded.take(node.key()) {
            tangents.add(dev, node.key(), seed, len(node))?;
        }
    }
    Ok(tangents)
}
