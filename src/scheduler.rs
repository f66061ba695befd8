//! One backward/VJP pass over the recorded graph, for K cotangents at once.
//!
//! 1. Order: iterative depth-first search from the outputs gives a
//!    topological order (every node after its inputs).
//! 2. Prune: keep the nodes from which a wanted node (a requested input, or
//!    any leaf for `backward`) can be reached; nothing else is visited.
//! 3. Sweep in reverse order: a node's cotangent is complete once all its
//!    consumers are done. Its rule returns one contribution per input it is
//!    asked for; only this module accumulates them (in place when it holds
//!    the only reference, otherwise into a new buffer). A cotangent buffer
//!    goes back to the pool right after its rule has been encoded.
//!
//! Every dispatch lands in the device's pending encoder; the caller submits
//! once at the end of the pass. Cotangents are `[K, *shape]` throughout, so
//! a pass issues the same number of dispatches for K = 1 and K = 64.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::graph::{Node, NodeKind};
use crate::ops::{self, VjpCtx};
use crate::pool::Storage;
use crate::shape::numel;

/// Which nodes' cotangents a pass returns.
pub(crate) enum Wanted {
    /// Every leaf reached (`backward`).
    Leaves,
    /// These nodes (`vjp`, `vjp_batched`).
    Nodes(Vec<Arc<Node>>),
}

/// Runs the pass from `seeds` (output node, its `[K, *shape]` cotangent) and
/// returns each wanted node that a cotangent reached, with that cotangent.
/// Wanted nodes the outputs do not depend on are absent.
pub(crate) fn run(
    dev: &Device,
    k: usize,
    seeds: Vec<(Arc<Node>, Arc<Storage>)>,
    wanted: &Wanted,
) -> Result<Vec<(Arc<Node>, Arc<Storage>)>> {
    let order = topological_order(seeds.iter().map(|(n, _)| n.clone()).collect());
    let wanted_keys: HashSet<usize> = match wanted {
        Wanted::Leaves => order
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Leaf { .. }))
            .map(|n| n.key())
            .collect(),
        Wanted::Nodes(nodes) => nodes.iter().map(|n| n.key()).collect(),
    };
    let useful = prune(&order, &wanted_keys);

    let mut cotangents: HashMap<usize, Arc<Storage>> = HashMap::new();
    for (node, v) in seeds {
        let len = k * numel(&node.shape);
        accumulate(dev, &mut cotangents, node.key(), v, len)?;
    }
    let mut reached = Vec::new();
    for node in order.iter().rev() {
        let key = node.key();
        if !useful.contains(&key) {
            continue;
        }
        let Some(g) = cotangents.remove(&key) else {
            continue;
        };
        if wanted_keys.contains(&key) {
            reached.push((node.clone(), g.clone()));
        }
        let NodeKind::Op { op, inputs, saved } = &node.kind else {
            continue;
        };
        let needs: Vec<bool> = inputs
            .iter()
            .map(|i| i.node.as_ref().is_some_and(|m| useful.contains(&m.key())))
            .collect();
        if !needs.contains(&true) {
            continue;
        }
        let cx = VjpCtx {
            dev,
            k,
            g: &g,
            out_shape: &node.shape,
            inputs,
            saved,
            needs: &needs,
        };
        let contributions = op.vjp(&cx)?;
        for ((input, need), contribution) in inputs.iter().zip(&needs).zip(contributions) {
            if let (true, Some(m), Some(c)) = (*need, &input.node, contribution) {
                accumulate(dev, &mut cotangents, m.key(), c, k * numel(&m.shape))?;
            }
        }
        // `g` drops here: its buffer returns to the pool unless a result or
        // an aliasing contribution still holds it.
    }
    Ok(reached)
}

/// Inputs before consumers; each node once.
fn topological_order(roots: Vec<Arc<Node>>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack: Vec<(Arc<Node>, bool)> = roots.into_iter().map(|n| (n, false)).collect();
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.key()) {
            continue;
        }
        stack.push((node.clone(), true));
        for input in node.inputs() {
            if let Some(m) = &input.node
                && !visited.contains(&m.key())
            {
                stack.push((m.clone(), false));
            }
        }
    }
    order
}

/// The nodes on some path to a wanted node (wanted nodes included).
fn prune(order: &[Arc<Node>], wanted: &HashSet<usize>) -> HashSet<usize> {
    let mut useful = HashSet::new();
    for node in order {
        let on_path = wanted.contains(&node.key())
            || node
                .inputs()
                .iter()
                .any(|i| i.node.as_ref().is_some_and(|m| useful.contains(&m.key())));
        if on_path {
            useful.insert(node.key());
        }
    }
    useful
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
                ops::accumulate::add_into(dev, &acc, &c, len);
                acc
            } else {
                Arc::new(ops::accumulate::add(dev, &acc, &c, len)?)
            }
        }
    };
    cotangents.insert(key, sum);
    Ok(())
}
