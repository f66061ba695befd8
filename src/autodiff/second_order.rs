//! Second order, forward over reverse: H·v along K directions v at once.
//! First the tangents of every node along the K directions (`forward.rs`,
//! all kept). Then one reverse sweep carries, for each node, its adjoint ȳ
//! (one row, as in a gradient) and the adjoint's tangent ẏ̄ (K rows): each
//! rule maps ȳ to its inputs' adjoints (`Op::vjp` with K = 1), the same
//! rule maps ẏ̄ to the linear part of theirs (it is linear in the
//! cotangent), and the op's curvature rule adds the terms of ȳ times its
//! second derivatives times its inputs' tangents (`Op::curvature`; none
//! for linear ops). At a wanted node, ẏ̄ is H·v. One tangent sweep and one
//! reverse sweep, whatever K is; never a `[K, K, …]` buffer. Nothing is
//! fused: the curvature terms need every member's ȳ and tangent.

use std::collections::HashMap;
use std::sync::Arc;

use crate::autodiff::forward;
use crate::autodiff::fusion::Regions;
use crate::autodiff::plan::Plan;
use crate::autodiff::sums::Sums;
use crate::error::Result;
use crate::ops::fill::fill;
use crate::ops::{CurvatureCtx, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::graph::{Node, NodeKind};

/// H·v at each wanted node (None where no direction reaches it) for the
/// K `directions` seeded at the wanted nodes; the roots (one element in
/// all: a loss) are seeded with ȳ = 1.
pub(crate) fn sweep(
    dev: &Device,
    plan: &Plan,
    k: usize,
    directions: Vec<(Arc<Node>, Arc<Storage>)>,
) -> Result<Vec<Option<Arc<Storage>>>> {
    let tangents = forward::sweep(dev, plan, &Regions::default(), k, directions, true)?;
    let mut adjoints = Sums::default();
    let mut dots = Sums::default();
    for root in &plan.roots {
        let n = numel(&root.shape);
        adjoints.add(dev, root.key(), Arc::new(fill(dev, n, 1.0)?), n)?;
    }
    let mut reached: HashMap<usize, Arc<Storage>> = HashMap::new();
    for step in &plan.steps {
        let node = &step.node;
        let (ybar, dot) = (adjoints.take(node.key()), dots.take(node.key()));
        if let (true, Some(dot)) = (step.wanted, &dot) {
            reached.insert(node.key(), dot.clone());
        }
        let NodeKind::Op { op, inputs, saved } = &node.kind else {
            continue;
        };
        if !step.needs.contains(&true) {
            continue;
        }
        // ȳ is read only by the curvature rules of ops: a leaf's (a
        // parameter's gradient) is never formed.
        let primal_needs: Vec<bool> = (inputs.iter().zip(&step.needs))
            .map(|(i, &need)| {
                need && i
                    .node
                    .as_ref()
                    .is_some_and(|m| matches!(m.kind, NodeKind::Op { .. }))
            })
            .collect();
        let vjp = |k: usize, g: &Arc<Storage>, needs: &[bool]| {
            op.vjp(&VjpCtx {
                dev,
                k,
                g,
                out_shape: &node.shape,
                inputs,
                saved,
                needs,
                per_example: &[],
            })
        };
        let add = |sums: &mut Sums, rows: usize, contributions: Vec<Option<Arc<Storage>>>| {
            for ((input, &need), c) in inputs.iter().zip(&step.needs).zip(contributions) {
                if let (true, Some(m), Some(c)) = (need, &input.node, c) {
                    sums.add(dev, m.key(), c, rows * numel(&m.shape))?;
                }
            }
            Result::Ok(())
        };
        let mut dot = dot;
        if let Some(ybar) = &ybar {
            if primal_needs.contains(&true) {
                add(&mut adjoints, 1, vjp(1, ybar, &primal_needs)?)?;
            }
            let given: Vec<Option<Arc<Storage>>> = (inputs.iter())
                .map(|i| i.node.as_ref().and_then(|m| tangents.get(m.key()).cloned()))
                .collect();
            let cx = CurvatureCtx {
                dev,
                k,
                ybar,
                tangents: &given,
                out_shape: &node.shape,
                inputs,
                saved,
                needs: &step.needs,
            };
            // Both halves of the adjoint's tangent in one pass, where the
            // op has a kernel for it; else its curvature terms here and the
            // adjoint of `dot` below.
            let fused = match &dot {
                Some(d) => op.adjoint_tangent(d, &cx)?,
                None => None,
            };
            match fused {
                Some(both) => {
                    add(&mut dots, k, both)?;
                    dot = None;
                }
                None => add(&mut dots, k, op.curvature(&cx)?)?,
            }
        }
        if let Some(dot) = &dot {
            add(&mut dots, k, vjp(k, dot, &step.needs)?)?;
        }
    }
    Ok(plan
        .wanted
        .iter()
        .map(|n| reached.get(&n.key()).cloned())
        .collect())
}
