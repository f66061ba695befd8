//! The roles values play in a per-example pass, assigned from the loss
//! down: an input carries the examples along axis 0 (row b of the output
//! reads row b of it only) or is shared by every example. Each op's roles
//! are read off its kind and shapes ([`example_roles`]); an op that would
//! mix rows of the example axis, or a value used both per example and
//! across examples, is refused with an error naming the op.

use std::collections::HashMap;
use std::sync::Arc;

use crate::autodiff::plan::Plan;
use crate::error::{Error, Result, invalid};
use crate::ops::{Op, PerExample, matmul};
use crate::tape::graph::{Input, Node, NodeKind};

/// In a per-example pass, the part an input plays in an op whose output
/// carries the examples along axis 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The input carries the same examples along its axis 0: row b of the
    /// output depends on row b of the input only.
    Example,
    /// The input is shared by every example (broadcast along axis 0, or the
    /// right operand of a matmul): it gets per-example contributions.
    Shared,
}

/// The roles of the inputs when the output's axis 0 is the example axis
/// (size `b` > 1), or why this op mixes examples.
fn example_roles(
    op: &Op,
    inputs: &[Input],
    out: &[usize],
    b: usize,
) -> std::result::Result<Vec<Role>, String> {
    // An operand broadcast to the output along axis 0 is shared.
    let along_axis_0 = |shape: &[usize]| {
        if shape.len() == out.len() && shape[0] == b {
            Role::Example
        } else {
            Role::Shared
        }
    };
    let same = || vec![Role::Example; inputs.len()];
    let refuse_axis_0 = |axis: usize, what: &str| {
        if axis == 0 {
            Err(format!("it {what} along axis 0, the example axis"))
        } else {
            Ok(same())
        }
    };
    match op {
        Op::Unary(..) => Ok(same()),
        Op::Binary(_) | Op::BroadcastTo => {
            Ok(inputs.iter().map(|i| along_axis_0(&i.shape)).collect())
        }
        Op::Matmul if out.len() == 2 => Ok(vec![Role::Example, Role::Shared]),
        Op::Matmul => Ok(inputs.iter().map(|i| along_axis_0(&i.shape)).collect()),
        Op::Sum { reduced, .. } if reduced[0] => {
            Err("it sums along axis 0, the example axis".to_string())
        }
        Op::Sum { .. } => Ok(same()),
        Op::Max { axis } => refuse_axis_0(*axis, "takes the maximum"),
        Op::Reshape => {
            let from = &inputs[0].shape;
            if from.first() == Some(&b) {
                Ok(same())
            } else {
                Err(format!(
                    "it reshapes {from:?} to {out:?}, merging or splitting axis 0, the example axis"
                ))
            }
        }
        Op::Permute(perm) if perm[0] == 0 => Ok(same()),
        Op::Permute(perm) => Err(format!(
            "it moves axis {} to axis 0, the example axis (permutation {perm:?})",
            perm[0]
        )),
        Op::Narrow { axis, .. } => refuse_axis_0(*axis, "selects a range of examples"),
        Op::Concat { axis } => refuse_axis_0(*axis, "joins tensors"),
        Op::IndexSelect { axis, .. } => refuse_axis_0(*axis, "selects examples"),
        Op::Cumsum { axis } => refuse_axis_0(*axis, "sums cumulatively"),
        Op::Unfold(_) => Ok(same()),
        Op::Custom(def, _) if def.rowwise => {
            match inputs.iter().find(|i| i.shape.first() != Some(&b)) {
                None => Ok(same()),
                Some(i) => Err(format!(
                    "`{}` keeps rows apart, but its input of shape {:?} does not carry \
                     the {b} examples along axis 0 (shared values must enter through \
                     built-in ops)",
                    def.name, i.shape
                )),
            }
        }
        Op::Custom(def, _) => Err(format!(
            "`{}` is a custom op, and pullback cannot tell whether its kernels keep \
             the examples apart (declare it with CustomOpBuilder::keeps_rows_apart)",
            def.name
        )),
    }
}

/// Whether input `i`'s per-example contribution can come as squared
/// norms only ([`PerExample::SquaredNorms`]).
fn offers_squared_norms(op: &Op, out_shape: &[usize], i: usize) -> bool {
    match op {
        Op::Matmul => matmul::offers_squared_norms(out_shape, i),
        _ => false,
    }
}

/// Assigns each step its role from the loss down: per-example steps carry
/// one cotangent row, shared ones B, and per-example ops mark their
/// shared inputs [`PerExample::Grads`] (or `SquaredNorms` where `norms`
/// and the rule can). Returns, per wanted parameter, whether its result
/// will be squared norms.
pub(super) fn assign_roles(
    plan: &mut Plan,
    root: &Arc<Node>,
    b: usize,
    norms: bool,
) -> Result<Vec<bool>> {
    let mut roles: HashMap<usize, (Role, &'static str)> = HashMap::new();
    roles.insert(root.key(), (Role::Example, "the loss"));
    let computed_from_params = params_only(plan);
    for step in &mut plan.steps {
        let node = step.node.clone();
        let Some(&(role, _)) = roles.get(&node.key()) else {
            continue; // not reached from the loss
        };
        let NodeKind::Op { op, inputs, .. } = &node.kind else {
            if role == Role::Example {
                return Err(invalid(
                    "per_example_grads",
                    format!(
                        "a parameter of shape {:?} is used per example (its axis 0 lines up with \
                         the examples of the loss); per-example gradients are for parameters \
                         shared by all examples",
                        node.shape
                    ),
                ));
            }
            continue;
        };
        let input_roles = match role {
            Role::Shared => vec![Role::Shared; inputs.len()],
            Role::Example => example_roles(op, inputs, &node.shape, b).map_err(|reason| {
                Error::MixesExamples {
                    op: op.name(),
                    reason,
                }
            })?,
        };
        for ((input, &need), &r) in inputs.iter().zip(&step.needs).zip(&input_roles) {
            let Some(m) = input.node.as_ref().filter(|_| need) else {
                continue;
            };
            if r == Role::Shared
                && m.shape.first() == Some(&b)
                && !computed_from_params.get(&m.key()).copied().unwrap_or(false)
            {
                return Err(Error::MixesExamples {
                    op: op.name(),
                    reason: format!(
                        "it combines the examples of a value of shape {:?} (from `{}`), \
                         whose axis 0 is the example axis",
                        m.shape,
                        producer(m)
                    ),
                });
            }
            match roles.get(&m.key()) {
                Some(&(seen, by)) if seen != r => {
                    return Err(Error::MixesExamples {
                        op: op.name(),
                        reason: format!(
                            "a value of shape {:?} (from `{}`) is used both per example and \
                             across examples (by `{by}` and `{}`)",
                            m.shape,
                            producer(m),
                            op.name()
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    roles.insert(m.key(), (r, op.name()));
                }
            }
        }
        if role == Role::Example {
            step.per_example = input_roles
                .iter()
                .map(|r| match r {
                    Role::Example => PerExample::No,
                    Role::Shared => PerExample::Grads,
                })
                .collect();
        }
    }
    for (key, (role, _)) in &roles {
        plan.fixed_rows
            .insert(*key, if *role == Role::Example { 1 } else { b });
    }
    for node in &plan.wanted {
        plan.fixed_rows.insert(node.key(), b);
    }
    Ok(if norms {
        squared_norms_where_possible(plan)
    } else {
        vec![false; plan.wanted.len()]
    })
}

/// Where a wanted parameter gets exactly one contribution and its rule can
/// give it as squared norms, asks for those instead of `[B, …]` gradients.
fn squared_norms_where_possible(plan: &mut Plan) -> Vec<bool> {
    let mut uses: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for (s, step) in plan.steps.iter().enumerate() {
        for (i, input) in step.node.inputs().iter().enumerate() {
            if let (true, Some(m)) = (step.needs[i], &input.node) {
                uses.entry(m.key()).or_default().push((s, i));
            }
        }
    }
    let mut result = Vec::with_capacity(plan.wanted.len());
    for node in &plan.wanted {
        let only = match uses.get(&node.key()).map(Vec::as_slice) {
            Some(&[(s, i)]) => {
                let step = &plan.steps[s];
                let offered = match &step.node.kind {
                    NodeKind::Op { op, .. } => offers_squared_norms(op, &step.node.shape, i),
                    NodeKind::Leaf { .. } => false,
                };
                (offered && step.per_example.get(i) == Some(&PerExample::Grads)).then_some((s, i))
            }
            _ => None,
        };
        // A parameter listed twice keeps its gradients (both results share one).
        let listed_once = plan.wanted.iter().filter(|n| Arc::ptr_eq(n, node)).count() == 1;
        match only.filter(|_| listed_once) {
            Some((s, i)) => {
                plan.steps[s].per_example[i] = PerExample::SquaredNorms;
                result.push(true);
            }
            None => result.push(false),
        }
    }
    result
}

/// Per useful node: whether it is computed from parameters alone (every
/// input tracked, on a path to a parameter, and itself such a node).
fn params_only(plan: &Plan) -> HashMap<usize, bool> {
    let mut only = HashMap::new();
    for step in plan.steps.iter().rev() {
        let node = &step.node;
        let value = node.inputs().iter().all(|i| {
            i.node
                .as_ref()
                .is_some_and(|m| only.get(&m.key()).copied().unwrap_or(false))
        });
        only.insert(node.key(), value);
    }
    only
}

fn producer(node: &Node) -> &'static str {
    match &node.kind {
        NodeKind::Op { op, .. } => op.name(),
        NodeKind::Leaf { .. } => "a leaf",
    }
}
