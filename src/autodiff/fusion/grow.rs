//! A region as it grows (`mod.rs` decides who may join): members join in
//! plan order, root first, and what the region's kernel binds is counted
//! as they do, so whether one more member fits is known without drafting
//! the kernel. The recipe is written once, for a region that is kept.
//!
//! Members join in plan order (consumers first), so a new member's inputs
//! are not members yet: they are outside the region until they join, and
//! the new member stops being outside when it joins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::autodiff::fusion::kernel::{Member, RegionRecipe, Target};
use crate::autodiff::plan::Plan;
use crate::ops::elementwise::codegen::Layout;
use crate::ops::elementwise::{Elementwise, ReadMode};
use crate::ops::{Op, Saved};
use crate::runtime::pool::Storage;
use crate::shape::MAX_RANK;
use crate::tape::graph::{Node, NodeKind};

/// One region: its kernel's recipe and what to bind to it.
pub(crate) struct Region {
    pub recipe: RegionRecipe,
    /// The scalar parameter of each member (powf exponent, scalar operand).
    pub scalars: Vec<f32>,
    /// Saved values and their shapes, by `Member::saved` index.
    pub saved: Vec<(Arc<Storage>, Vec<usize>)>,
    /// The nodes that get a contribution, by `Target::Out` index.
    pub externals: Vec<Arc<Node>>,
    /// Their shapes (the region's, or one broadcast to it).
    pub external_shapes: Vec<Vec<usize>>,
}

/// A region being grown.
pub(super) struct Growing<'p> {
    plan: &'p Plan,
    shape: Vec<usize>,
    /// Plan step indices, root first, in plan order.
    pub members: Vec<usize>,
    /// The members' node keys.
    pub in_region: HashSet<usize>,
    /// Distinct saved values, with their shapes and how each is read.
    saved: Vec<(Arc<Storage>, Vec<usize>)>,
    modes: Vec<ReadMode>,
    /// The nodes outside the region that get a contribution, with shapes.
    externals: Vec<(Arc<Node>, Vec<usize>)>,
}

impl<'p> Growing<'p> {
    /// The region of the root `root` alone; None where even that exceeds
    /// `max_bindings` storage buffers or the parameter block.
    pub fn new(plan: &'p Plan, root: usize, max_bindings: usize) -> Option<Growing<'p>> {
        let mut region = Growing {
            plan,
            shape: plan.steps[root].node.shape.clone(),
            members: Vec::new(),
            in_region: HashSet::new(),
            saved: Vec::new(),
            modes: Vec::new(),
            externals: Vec::new(),
        };
        region.try_add(root, max_bindings).then_some(region)
    }

    /// Adds step `j`, an elementwise node all of whose consumers are
    /// members, where the kernel then still fits `max_bindings` storage
    /// buffers and its parameter block; false, changing nothing, where not.
    pub fn try_add(&mut self, j: usize, max_bindings: usize) -> bool {
        let step = &self.plan.steps[j];
        let NodeKind::Op { op, inputs, saved } = &step.node.kind else {
            return false;
        };
        debug_assert!(
            op.saves()
                .iter()
                .all(|s| matches!(s, Saved::Input(_) | Saved::Output))
        );
        let key = step.node.key();
        let mut new_saved: Vec<(&Arc<Storage>, &[usize])> = Vec::new();
        for (which, value) in op.saves().iter().zip(saved) {
            let seen = |s: &Arc<Storage>| Arc::ptr_eq(s, value);
            if !self.saved.iter().any(|(s, _)| seen(s)) && !new_saved.iter().any(|(s, _)| seen(s)) {
                let shape = match which {
                    Saved::Input(i) => &inputs[*i].shape,
                    _ => &step.node.shape,
                };
                new_saved.push((value, shape));
            }
        }
        let mut new_externals: Vec<(&Arc<Node>, &[usize])> = Vec::new();
        for (input, &need) in inputs.iter().zip(&step.needs) {
            if let (true, Some(m)) = (need, &input.node) {
                let seen = |e: &Arc<Node>| e.key() == m.key();
                if !self.externals.iter().any(|(e, _)| seen(e))
                    && !new_externals.iter().any(|(e, _)| seen(e))
                {
                    new_externals.push((m, &input.shape));
                }
            }
        }
        let leaving = self
            .externals
            .iter()
            .filter(|(e, _)| e.key() == key)
            .count();
        let externals = self.externals.len() - leaving + new_externals.len();
        let mut modes = self.modes.clone();
        modes.extend(
            new_saved
                .iter()
                .map(|(_, s)| ReadMode::of(s, &self.shape).0),
        );
        let fits = 1 + self.saved.len() + new_saved.len() + externals <= max_bindings
            && Layout::new(&modes).fits(self.members.len() + 1)
            && self.shape.len() <= MAX_RANK;
        if !fits {
            return false;
        }
        self.members.push(j);
        self.in_region.insert(key);
        self.modes = modes;
        (self.saved).extend(
            new_saved
                .into_iter()
                .map(|(s, sh)| (s.clone(), sh.to_vec())),
        );
        self.externals.retain(|(e, _)| e.key() != key);
        (self.externals).extend(
            new_externals
                .into_iter()
                .map(|(e, sh)| (e.clone(), sh.to_vec())),
        );
        true
    }

    /// The region's recipe and what to bind to it: where each member's
    /// contributions go and which saved values each derivative reads.
    pub fn region(&self) -> Region {
        let position: HashMap<usize, usize> = (self.members.iter().enumerate())
            .map(|(p, &i)| (self.plan.steps[i].node.key(), p))
            .collect();
        let mut members = Vec::with_capacity(self.members.len());
        let mut scalars = Vec::with_capacity(self.members.len());
        for &i in &self.members {
            let step = &self.plan.steps[i];
            let NodeKind::Op { op, inputs, saved } = &step.node.kind else {
                unreachable!("regions hold op nodes only");
            };
            let out = |m: &Arc<Node>| self.externals.iter().position(|(e, _)| e.key() == m.key());
            let targets = (inputs.iter().zip(&step.needs))
                .map(|(input, &need)| match (&input.node, need) {
                    (Some(m), true) => match position.get(&m.key()) {
                        Some(&p) => Target::Member(p),
                        None => out(m).map_or(Target::Nothing, Target::Out),
                    },
                    _ => Target::Nothing,
                })
                .collect();
            let saved = (saved.iter())
                .filter_map(|v| self.saved.iter().position(|(s, _)| Arc::ptr_eq(s, v)))
                .collect();
            let (op, scalar) = match op {
                Op::Unary(u, p) => (Elementwise::Unary(*u), *p),
                Op::Binary(b) => (Elementwise::Binary(*b), 0.0),
                _ => unreachable!("regions hold elementwise ops only"),
            };
            members.push(Member { op, targets, saved });
            scalars.push(scalar);
        }
        let (externals, external_shapes) = self.externals.iter().cloned().unzip();
        Region {
            recipe: RegionRecipe::new(members, &self.modes, self.externals.len()),
            scalars,
            saved: self.saved.clone(),
            externals,
            external_shapes,
        }
    }
}
