//! Per-example gradients: a mode of the plan, not a second scheduler.
//!
//! The loss `[B]` carries example b in row b; a value whose axis 0 carries
//! the examples the same way is *per example* and its cotangent is a
//! single `[*shape]` buffer, as in a summed backward pass (K = 1): row b
//! holds example b's part, since row b of the value reaches only loss b.
//! A value shared by every example (a parameter, or what is computed from
//! parameters alone) carries one cotangent row per example, `[B, *shape]`.
//! Where a per-example op takes a shared operand (a bias broadcast along
//! axis 0, the weight of `x·W`), its rule leaves the sum over the examples
//! out ([`PerExample::Grads`]) — the only places per-example work is done.
//!
//! The roles are assigned from the loss down ([`Op::example_roles`]);
//! an op that would mix rows of the example axis, or a value used both per
//! example and across examples, is refused with an error naming the op.

use std::collections::HashMap;
use std::sync::Arc;

use crate::batch::{Pass, Seeds};
use crate::error::{Error, Result, invalid};
use crate::graph::{Node, NodeKind};
use crate::ops::{PerExample, Role};
use crate::plan::{Plan, Wanted};
use crate::tensor::Tensor;

/// Per-example gradients of `loss` (shape `[B]`, loss of example b at b)
/// with respect to each parameter: result i has shape `[B, *params[i].shape]`
/// and row b is `∂loss[b]/∂params[i]`. Example b must touch only row b of
/// the data along axis 0 (every value between data and loss keeps the
/// examples on axis 0); a graph that mixes examples is refused with an
/// error naming the op.
///
/// Cost: about one backward pass, plus the per-example products where a
/// parameter meets the batch (for `x·W` one outer product per example, for
/// a broadcast bias the cotangent rows left unsummed). Never B passes and
/// never a `[B, B, …]` cotangent. Summing the result over axis 0 gives the
/// gradient of `loss.sum()`. The pass is not chunked: the memory budget does
/// not apply to it.
pub fn per_example_grads(loss: &Tensor, params: &[&Tensor]) -> Result<Vec<Tensor>> {
    let Some(run) = Run::new(loss, params, false)? else {
        return zeros(loss, params);
    };
    let grads = run.grads()?;
    Ok(grads
        .into_iter()
        .zip(params)
        .map(|(g, p)| Tensor::from_storage(loss.device(), g, [&[run.b][..], p.shape()].concat()))
        .collect())
}

/// The L2 norm of each example's whole gradient over all parameters,
/// `[B]`: `sqrt(Σᵢ ‖∂loss[b]/∂params[i]‖²)`, what differentially private
/// training clips by. Where a parameter's only use is as the weight of a
/// plain product `x·W` (`[B, p]·[p, n]`), its per-example gradient is the
/// outer product `x_b ⊗ g_b` and its norm is taken as `‖x_b‖·‖g_b‖`
/// without forming the `[B, p, n]` gradients; other parameters' per-example
/// gradients are formed and reduced. Same requirements as
/// [`per_example_grads`].
pub fn per_example_grad_norms(loss: &Tensor, params: &[&Tensor]) -> Result<Tensor> {
    let dev = loss.device();
    let b = examples(loss)?;
    let Some(run) = Run::new(loss, params, true)? else {
        return dev.zeros(&[b]);
    };
    let grads = run.grads()?;
    let mut total = dev.zeros(&[b])?;
    for ((g, p), norms) in grads.into_iter().zip(params).zip(&run.norms) {
        let squared = if *norms {
            Tensor::from_storage(dev, g, vec![b])
        } else {
            Tensor::from_storage(dev, g, vec![b, p.numel()])
                .square()?
                .sum(&[1], false)?
        };
        total = total.add(&squared)?;
    }
    total.sqrt()
}

/// B, from a loss of shape `[B]`.
fn examples(loss: &Tensor) -> Result<usize> {
    match *loss.shape() {
        [b] => Ok(b),
        _ => Err(invalid(
            "per_example_grads",
            format!(
                "the loss must have shape [B], one value per example; got {:?}",
                loss.shape()
            ),
        )),
    }
}

/// All-zero per-example gradients (a loss that depends on nothing tracked).
fn zeros(loss: &Tensor, params: &[&Tensor]) -> Result<Vec<Tensor>> {
    let b = examples(loss)?;
    params
        .iter()
        .map(|p| loss.device().zeros(&[&[b][..], p.shape()].concat()))
        .collect()
}

/// A planned per-example pass.
struct Run<'a> {
    loss: &'a Tensor,
    b: usize,
    plan: Plan,
    /// Per parameter: its result is squared norms `[B]`, not gradients.
    norms: Vec<bool>,
}

impl<'a> Run<'a> {
    /// Checks the arguments and plans; None when the loss is untracked.
    fn new(loss: &'a Tensor, params: &[&Tensor], norms: bool) -> Result<Option<Run<'a>>> {
        let b = examples(loss)?;
        let dev = loss.device();
        let mut wanted = Vec::new();
        for (index, p) in params.iter().enumerate() {
            dev.check_same(p.device())?;
            match &p.inner.node {
                Some(node) => wanted.push(node.clone()),
                None => {
                    return Err(Error::NotTracked {
                        what: format!("parameter {index} of per_example_grads"),
                    });
                }
            }
        }
        dev.check_alive()?;
        let Some(root) = &loss.inner.node else {
            return Ok(None);
        };
        let mut plan = Plan::new(std::slice::from_ref(root), Wanted::Nodes(wanted));
        // One example: its gradient is the plain one, `[1, *shape]` as laid out.
        let norms = if b == 1 {
            vec![false; params.len()]
        } else {
            assign_roles(&mut plan, root, b, norms)?
        };
        Ok(Some(Run {
            loss,
            b,
            plan,
            norms,
        }))
    }

    /// One pass seeded with ones; per parameter `[B, *shape]` (or `[B]`).
    fn grads(&self) -> Result<Vec<Arc<crate::pool::Storage>>> {
        let dev = self.loss.device();
        let Some(root) = self.loss.inner.node.clone() else {
            return Err(crate::error::invalid(
                "per_example_grads",
                "the loss is not tracked: no parameter reaches it",
            ));
        };
        let pass = Pass {
            dev,
            plan: &self.plan,
            roots: vec![root],
        };
        let grads = pass.whole(dev, 1, Seeds::Ones)?;
        dev.flush()?;
        Ok(grads)
    }
}

/// Assigns each step its role from the loss down: per-example steps carry
/// one cotangent row, shared ones B, and per-example ops mark their
/// shared inputs [`PerExample::Grads`] (or `SquaredNorms` where `norms`
/// and the rule can). Returns, per wanted parameter, whether its result
/// will be squared norms.
fn assign_roles(plan: &mut Plan, root: &Arc<Node>, b: usize, norms: bool) -> Result<Vec<bool>> {
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
            Role::Example => {
                op.example_roles(inputs, &node.shape, b)
                    .map_err(|reason| Error::MixesExamples {
                        op: op.name(),
                        reason,
                    })?
            }
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
                    NodeKind::Op { op, .. } => op.offers_squared_norms(&step.node.shape, i),
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
