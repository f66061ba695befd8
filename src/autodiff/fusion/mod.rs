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

pub(crate) mod kernel;
pub(crate) mod launch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::autodiff::plan::Plan;
use crate::ops::elementwise::{Elementwise, ReadMode};
use crate::ops::{BinaryOp, Op, Saved, UnaryOp};
use crate::runtime::pool::Storage;
use crate::shape::MAX_RANK;
use crate::tape::graph::{Node, NodeKind};
use kernel::{Member, RegionRecipe, Target};

/// At most this many members (each has a scalar word in the parameter block).
const MAX_MEMBERS: usize = 32;

/// One region: its kernel's recipe and what to bind to it.
pub(crate) struct Region {
    pub recipe: RegionRecipe,
    /// Every member's output shape.
    pub shape: Vec<usize>,
    /// The scalar parameter of each member (powf exponent, scalar operand).
    pub scalars: Vec<f32>,
    /// Saved values and their shapes, by `Member::saved` index.
    pub saved: Vec<(Arc<Storage>, Vec<usize>)>,
    /// The nodes that get a contribution, by `Target::Out` index.
    pub externals: Vec<Arc<Node>>,
    /// Their shapes (the region's, or one broadcast to it).
    pub external_shapes: Vec<Vec<usize>>,
}

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
        let mut members = vec![root_index];
        let mut in_region: HashSet<usize> = HashSet::from([key]);
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
            let joins = !in_region.contains(&m)
                && !assigned.contains(&m)
                && fusible(&step.node)
                && step.node.shape == root.node.shape
                && !step.wanted
                && !seeds.contains(&m)
                && members.len() < MAX_MEMBERS
                && consumers
                    .get(&m)
                    .is_some_and(|c| c.iter().all(|k| in_region.contains(k)));
            if !joins {
                continue;
            }
            members.push(j);
            in_region.insert(m);
            if !build(plan, &members).fits(max_bindings) {
                members.pop();
                in_region.remove(&m);
                continue;
            }
            push_inputs(j, &mut frontier);
        }
        let region = build(plan, &members);
        // Fusing pays where the unfused pass would run at least two
        // kernels: members' adjoints (add and add_scalar pass g on without
        // one) and accumulations where contributions meet.
        let adjoints = members
            .iter()
            .filter(|&&i| !passes_through(&plan.steps[i].node))
            .count();
        if adjoints + region.recipe.meetings() < 2 {
            continue;
        }
        if !region.fits(max_bindings) {
            continue; // the root alone passes the limits: it runs unfused
        }
        for &i in &members[1..] {
            regions.interior.insert(plan.steps[i].node.key());
        }
        assigned.extend(in_region);
        regions.by_root.insert(key, region);
    }
    regions
}

/// The recipe of the members `members` (plan step indices, root first,
/// in plan order): where each input's contribution goes and which saved
/// values each derivative reads.
fn build(plan: &Plan, members: &[usize]) -> Region {
    let mut order: Vec<usize> = members.to_vec();
    order.sort_unstable();
    let position: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(p, &i)| (plan.steps[i].node.key(), p))
        .collect();
    let shape = plan.steps[order[0]].node.shape.clone();
    let mut parts = Parts::default();
    let mut region_members = Vec::with_capacity(order.len());
    for &i in &order {
        let step = &plan.steps[i];
        let NodeKind::Op { op, inputs, saved } = &step.node.kind else {
            unreachable!("regions hold op nodes only");
        };
        let targets = inputs
            .iter()
            .zip(&step.needs)
            .map(|(input, &need)| match (&input.node, need) {
                (Some(m), true) => match position.get(&m.key()) {
                    Some(&p) => Target::Member(p),
                    None => Target::Out(parts.external(m, &input.shape)),
                },
                _ => Target::Nothing,
            })
            .collect();
        let saved = op
            .saves()
            .iter()
            .zip(saved)
            .map(|(which, s)| {
                let value_shape = match which {
                    Saved::Input(i) => &inputs[*i].shape,
                    _ => &step.node.shape,
                };
                parts.saved(s, value_shape)
            })
            .collect();
        let (kind, scalar) = match op {
            Op::Unary(u, p) => (Elementwise::Unary(*u), *p),
            Op::Binary(b) => (Elementwise::Binary(*b), 0.0),
            _ => unreachable!("regions hold elementwise ops only"),
        };
        debug_assert!(
            op.saves()
                .iter()
                .all(|s| matches!(s, Saved::Input(_) | Saved::Output))
        );
        region_members.push(Member {
            op: kind,
            targets,
            saved,
        });
        parts.scalars.push(scalar);
    }
    let modes: Vec<ReadMode> = (parts.saved.iter())
        .map(|(_, s)| ReadMode::of(s, &shape).0)
        .collect();
    Region {
        recipe: RegionRecipe::new(region_members, &modes, parts.externals.len()),
        shape,
        scalars: parts.scalars,
        saved: parts.saved,
        externals: parts.externals,
        external_shapes: parts.external_shapes,
    }
}

/// What a region binds, gathered while its members are read.
#[derive(Default)]
struct Parts {
    scalars: Vec<f32>,
    saved: Vec<(Arc<Storage>, Vec<usize>)>,
    externals: Vec<Arc<Node>>,
    external_shapes: Vec<Vec<usize>>,
}

impl Parts {
    /// The output slot of the input node `node` (of `shape`), added once.
    fn external(&mut self, node: &Arc<Node>, shape: &[usize]) -> usize {
        match self.externals.iter().position(|e| e.key() == node.key()) {
            Some(p) => p,
            None => {
                self.externals.push(node.clone());
                self.external_shapes.push(shape.to_vec());
                self.externals.len() - 1
            }
        }
    }

    /// The saved-value slot of `value` (of `shape`), added once.
    fn saved(&mut self, value: &Arc<Storage>, shape: &[usize]) -> usize {
        match self.saved.iter().position(|(s, _)| Arc::ptr_eq(s, value)) {
            Some(p) => p,
            None => {
                self.saved.push((value.clone(), shape.to_vec()));
                self.saved.len() - 1
            }
        }
    }
}

impl Region {
    /// Whether the kernel stays within `max_bindings` storage buffers and
    /// its parameter block (reads of broadcast values, members' scalars).
    fn fits(&self, max_bindings: usize) -> bool {
        1 + self.saved.len() + self.externals.len() <= max_bindings
            && self.recipe.fits_params()
            && self.shape.len() <= MAX_RANK
    }
}
