//! What a VJP pass will do, before it runs: the roots it is seeded at, the
//! pruned order of the sweep, which inputs each rule is asked for, and how
//! many cotangent rows each node carries. A plan is data, independent of
//! K; the scheduler executes it for a given K. Every traversal (backward,
//! vjp, Jacobians, per-example passes) is a mode of this one plan.
//!
//! Whether K rows fit the adapter's binding limit is read off the plan
//! ([`Plan::widest_row`]). The working memory a budget bounds is read off
//! by executing the plan on a dry-run device ([`Plan::working_bytes`]):
//! the same code as the real pass, with virtual buffers that are sized,
//! limit-checked and tallied, so the figure is exact by construction (size
//! classes, in-place accumulation, the moment each buffer is freed) and
//! cannot drift from the rules.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::Result;
use crate::ops::PerExample;
use crate::runtime::device::Device;
use crate::shape::numel;
use crate::tape::graph::{Node, NodeKind};

/// How a pass traverses its plan: every traversal is a mode of the one
/// plan, whose steps run between the roots (outputs) and the wanted nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Reverse mode: cotangents from the roots down; results at the wanted
    /// nodes (`vjp`, `backward`, Jacobians by rows).
    Reverse,
    /// Forward mode: tangents from the wanted nodes up; results at the
    /// roots (`jvp`, Jacobians by columns).
    Forward,
    /// Second order, forward over reverse: tangents up, then each node's
    /// adjoint and the adjoint's tangent down; results (H·v) at the wanted
    /// nodes (`hvp`).
    SecondOrder,
}

/// Which nodes' cotangents a pass returns.
pub(crate) enum Wanted {
    /// Every leaf reached (`backward`).
    Leaves,
    /// These nodes (`vjp`, `vjp_batched`, ...), in this order.
    Nodes(Vec<Arc<Node>>),
}

/// One node of the sweep.
pub(crate) struct Step {
    pub node: Arc<Node>,
    /// Which of the node's inputs get a contribution: tracked and on a
    /// path to a wanted node.
    pub needs: Vec<bool>,
    /// Per input, whether its contribution is kept per example (empty
    /// outside per-example plans).
    pub per_example: Vec<PerExample>,
    /// Whether the pass returns this node's cotangent.
    pub wanted: bool,
}

pub(crate) struct Plan {
    /// The tracked outputs the pass is seeded at, one per seed.
    pub roots: Vec<Arc<Node>>,
    /// Useful nodes, every consumer before its inputs.
    pub steps: Vec<Step>,
    /// The nodes whose cotangents the pass returns.
    pub wanted: Vec<Arc<Node>>,
    /// Cotangent rows of nodes whose row count does not follow the pass's
    /// K (per-example plans); the rest carry K rows.
    pub fixed_rows: HashMap<usize, usize>,
}

impl Plan {
    /// Orders and prunes the graph under `roots` (the outputs) to the
    /// nodes from which a wanted node can be reached.
    pub fn new(roots: &[Arc<Node>], wanted: Wanted) -> Plan {
        let order = topological_order(roots.to_vec());
        let wanted: Vec<Arc<Node>> = match wanted {
            Wanted::Leaves => order
                .iter()
                .filter(|n| matches!(n.kind, NodeKind::Leaf { .. }))
                .cloned()
                .collect(),
            Wanted::Nodes(nodes) => nodes,
        };
        let wanted_keys: HashSet<usize> = wanted.iter().map(|n| n.key()).collect();
        let useful = prune(&order, &wanted_keys);
        let steps = order
            .iter()
            .rev()
            .filter(|n| useful.contains(&n.key()))
            .map(|node| Step {
                node: node.clone(),
                needs: node
                    .inputs()
                    .iter()
                    .map(|i| i.node.as_ref().is_some_and(|m| useful.contains(&m.key())))
                    .collect(),
                per_example: Vec::new(),
                wanted: wanted_keys.contains(&node.key()),
            })
            .collect();
        Plan {
            roots: roots.to_vec(),
            steps,
            wanted,
            fixed_rows: HashMap::new(),
        }
    }

    /// Cotangent rows of `node` in a pass over K cotangents.
    pub fn rows(&self, node: &Node, k: usize) -> usize {
        self.fixed_rows.get(&node.key()).copied().unwrap_or(k)
    }

    /// Values in `node`'s cotangent (or tangent), `[rows, *shape]`, in a
    /// pass over K.
    pub fn cotangent_len(&self, node: &Node, k: usize) -> usize {
        self.rows(node, k) * numel(&node.shape)
    }

    /// The most values per cotangent row that any one buffer of a pass
    /// over this plan holds, an upper bound read off the plan: the
    /// cotangents of its nodes (seeds and results among them) and what
    /// each rule allocates ([`crate::ops::Op::widest_buffer`]). A pass over
    /// K rows whose K times this fits a binding fits every binding.
    /// (Per-example plans, whose rows are fixed, are never split.)
    pub fn widest_row(&self) -> usize {
        let widest = |step: &Step| {
            let node = &step.node;
            let own = numel(&node.shape);
            match &node.kind {
                NodeKind::Op { op, inputs, .. } => {
                    op.widest_buffer(&node.shape, inputs, &step.needs).max(own)
                }
                NodeKind::Leaf { .. } => own,
            }
        };
        self.steps.iter().map(widest).max().unwrap_or(0)
    }

    /// The most bytes `pass` holds at once when run on a dry-run handle of
    /// `dev`: every buffer it allocates counts from its allocation until
    /// its last reference is dropped. Fails as the real pass would where a
    /// buffer exceeds the adapter's limits.
    pub fn working_bytes<T>(dev: &Device, pass: impl FnOnce(&Device) -> Result<T>) -> Result<u64> {
        let (dry, tally) = dev.dry_run();
        let out = pass(&dry)?;
        drop(out);
        Ok(tally.peak())
    }
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
