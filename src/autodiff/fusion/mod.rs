//! Fused adjoints: which parts of a plan run as one composed kernel
//! (`kernel.rs` writes it, `launch.rs` runs it).
//!
//! A region is a set of elementwise nodes of one shape (unary ops, binary
//! ops, whose operands may be broadcast to it) whose cotangents are needed only
//! inside the region: every consumer of a member other than the region's
//! root is a member, and no member but the root is a seed or a wanted node.
//! Its Jacobian is then diagonal, so the contribution to each input leaving
//! the region is `g ⊙ D`, D the sum over paths of the product of the local
//! derivatives: a factor per element, independent of the cotangent. One
//! kernel computes every D once per element from the saved values and
//! writes `g[k] ⊙ D` for all K rows; the members' own cotangents never
//! exist.
//!
//! Regions are found on the plan's order (consumers first): from each
//! unassigned elementwise node, taken as a root, inputs are added while
//! their consumers are all members, in plan order, so that by the time a
//! node is examined every consumer it has has been decided.

pub(crate) mod grow;
pub(crate) mod kernel;
pub(crate) mod launch;
mod rows;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::autodiff::plan::Plan;
use crate::ops::{BinaryOp, Op, UnaryOp};
use crate::tape::graph::{Node, NodeKind};
use grow::{Growing, Region};

/// At most this many members (each has a scalar word in the parameter block).
const MAX_MEMBERS: usize = 32;

/// The regions of a plan: by root node key, and the members run by them.
#[derive(Default)]
pub(crate) struct Regions {
    by_root: HashMap<usize, Region>,
    interior: HashSet<usize>,
}

impl Regions {
    /// The region `key` is the root of, if any.
    pub fn rooted_at(&self, key: usize) -> Option<&Region> {
        self.by_root.get(&key)
    }

    /// Whether node `key` is a member run by some region's root.
    pub fn is_interior(&self, key: usize) -> bool {
        self.interior.contains(&key)
    }
}

/// An elementwise node (operands of its shape or broadcast to it).
fn fusible(node: &Node) -> bool {
    matches!(
        &node.kind,
        NodeKind::Op {
            op: Op::Unary(..) | Op::Binary(_),
            ..
        }
    )
}

/// `a + b` and `x + s`: the unfused adjoint hands g on without a kernel.
fn passes_through(node: &Node) -> bool {
    matches!(
        &node.kind,
        NodeKind::Op {
            op: Op::Binary(BinaryOp::Add) | Op::Unary(UnaryOp::AddScalar, _),
            ..
        }
    )
}

/// Finds the regions of `plan` (seeds: the keys of nodes given a cotangent
/// from outside). `max_bindings`: storage buffers one kernel may bind.
pub(crate) fn find(plan: &Plan, seeds: &HashSet<usize>, max_bindings: usize) -> Regions {
    let mut regions = Regions::default();
    let per_example =
        !plan.fixed_rows.is_empty() || plan.steps.iter().any(|s| !s.per_example.is_empty());
    if per_example {
        return regions;
    }
    let index: HashMap<usize, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.node.key(), i))
        .collect();
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    for step in &plan.steps {
        for (input, &need) in step.node.inputs().iter().zip(&step.needs) {
            if let (true, Some(m)) = (need, &input.node) {
                consumers.entry(m.key()).or_default().push(step.node.key());
            }
        }
    }
    let mut assigned: HashSet<usize> = HashSet::new();
    for (root_index, root) in plan.steps.iter().enumerate() {
        let key = root.node.key();
        if assigned.contains(&key) || !fusible(&root.node) {
            continue;
        }
        let Some(mut region) = Growing::new(plan, root_index, max_bindings) else {
            continue; // the root alone passes the limits: it runs unfused
        };
        let mut frontier: BTreeMap<usize, ()> = BTreeMap::new();
        let push_inputs = |i: usize, frontier: &mut BTreeMap<usize, ()>| {
            let step = &plan.steps[i];
            for (input, &need) in step.node.inputs().iter().zip(&step.needs) {
                if let (true, Some(m)) = (need, &input.node)
                    && let Some(&j) = index.get(&m.key())
                {
                    frontier.insert(j, ());
                }
            }
        };
        push_inputs(root_index, &mut frontier);
        while let Some((j, ())) = frontier.pop_first() {
            let step = &plan.steps[j];
            let m = step.node.key();
            let joins = !region.in_region.contains(&m)
                && !assigned.contains(&m)
                && fusible(&step.node)
                && step.node.shape == root.node.shape
                && !step.wanted
                && !seeds.contains(&m)
                && region.members.len() < MAX_MEMBERS
                && consumers
                    .get(&m)
                    .is_some_and(|c| c.iter().all(|k| region.in_region.contains(k)));
            if joins && region.try_add(j, max_bindings) {
                push_inputs(j, &mut frontier);
            }
        }
        // Fusing pays where the unfused pass would run at least two
        // kernels: members' adjoints (add and add_scalar pass g on without
        // one) and accumulations where contributions meet.
        let adjoints = (region.members.iter())
            .filter(|&&i| !passes_through(&plan.steps[i].node))
            .count();
        let kept = region.region();
        if adjoints + kept.recipe.meetings() < 2 {
            continue;
        }
        for &i in &region.members[1..] {
            regions.interior.insert(plan.steps[i].node.key());
        }
        assigned.extend(region.in_region);
        regions.by_root.insert(key, kept);
    }
    regions
}
