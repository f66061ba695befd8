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
//! The roles are assigned from the loss down (`roles.rs`); an op that
//! would mix rows of the example axis, or a value used both per example
//! and across examples, is refused with an error naming the op.

mod roles;

use std::sync::Arc;

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::plan::Plan;
use crate::autodiff::request::{Args, Request, Wrt};
use crate::error::{Result, invalid};
use crate::runtime::pool::Storage;
use crate::tape::tensor::Tensor;

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
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// // Two examples of a linear model, loss_b = (x_b·w − t_b)²:
/// // ∂loss_b/∂w = 2·(x_b·w − t_b)·x_b, residuals 1 and 2 here.
/// let x = dev.tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
/// let t = dev.tensor(&[2.0, 5.0], &[2, 1])?;
/// let w = dev.tensor(&[1.0, 1.0], &[2, 1])?.requires_grad();
/// let loss = x.matmul(&w)?.sub(&t)?.square()?.sum(&[1], false)?; // [2]
/// let g = pullback::per_example_grads(&loss, &[&w])?;
/// assert_eq!(g[0].shape(), &[2, 2, 1]);
/// assert_eq!(g[0].to_vec()?, vec![2.0, 4.0, 12.0, 16.0]);
/// # Ok(()) }
/// ```
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
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// // The model of [`per_example_grads`]'s example plus a bias: example b's
/// // gradient is 2·r_b·(x_b, 1), its norm 2·|r_b|·‖(x_b, 1)‖.
/// let x = dev.tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
/// let t = dev.tensor(&[2.5, 6.0], &[2, 1])?;
/// let w = dev.tensor(&[1.0, 1.0], &[2, 1])?.requires_grad();
/// let bias = dev.tensor(&[0.5], &[1])?.requires_grad();
/// let z = x.matmul(&w)?.add(&bias)?;
/// let loss = z.sub(&t)?.square()?.sum(&[1], false)?;
/// let norms = pullback::per_example_grad_norms(&loss, &[&w, &bias])?.to_vec()?;
/// let want = [2.0 * 1.0 * 6f32.sqrt(), 2.0 * 1.5 * 26f32.sqrt()];
/// for (got, want) in norms.iter().zip(want) {
///     assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
/// }
/// # Ok(()) }
/// ```
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
    fn new(loss: &'a Tensor, params: &'a [&'a Tensor], norms: bool) -> Result<Option<Run<'a>>> {
        let b = examples(loss)?;
        let Some(req) = Request::new(Args {
            outputs: std::slice::from_ref(&loss),
            cotangents: None,
            wrt: Wrt::Tensors {
                tensors: params,
                role: "parameter",
                call: "per_example_grads",
            },
            tangents: None,
        })?
        else {
            return Ok(None);
        };
        let mut plan = req.plan;
        let Some(root) = plan.roots.first().cloned() else {
            return Ok(None);
        };
        // One example: its gradient is the plain one, `[1, *shape]` as laid out.
        let norms = if b == 1 {
            vec![false; params.len()]
        } else {
            roles::assign_roles(&mut plan, &root, b, norms)?
        };
        Ok(Some(Run {
            loss,
            b,
            plan,
            norms,
        }))
    }

    /// One pass seeded with ones; per parameter `[B, *shape]` (or `[B]`).
    fn grads(&self) -> Result<Vec<Arc<Storage>>> {
        let dev = self.loss.device();
        let grads = Pass::new(dev, &self.plan).whole(dev, 1, Seeds::Ones)?;
        dev.flush()?;
        Ok(grads)
    }
}
