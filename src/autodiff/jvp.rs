//! Forward mode's functional API: `jvp` and `jvp_batched`. Each checks its
//! arguments (`request.rs`), then runs a forward sweep of the graph already
//! recorded between the inputs and the outputs (the tape holds the point it
//! is linearized at; nothing is recomputed), whole or in chunks of tangent
//! rows (`chunk.rs`), as `vjp` and `vjp_batched` run reverse mode.

use std::sync::Arc;

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::plan::Sweep;
use crate::autodiff::request::{Args, Expected, Request, Wrt};
use crate::error::Result;
use crate::ops::fill::fill;
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::tensor::Tensor;

/// Jacobian-vector products: for tangents `tangents[i]` of `inputs[i]`
/// (each of its input's shape), the tangent of each output,
/// `Σᵢ ∂outputs[j]/∂inputs[i] · tangents[i]`, of its output's shape. It
/// walks the graph already recorded between the inputs and the outputs,
/// like [`crate::vjp`] (and is its transpose: ⟨u, J·t⟩ = ⟨Jᵀ·u, t⟩).
/// Inputs must be tracked; an output no input reaches gets zeros.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let x = dev.tensor(&[2.0, 3.0], &[2])?.requires_grad();
/// let y = x.mul(&x)?; // J = diag(2x)
/// let t = dev.tensor(&[1.0, 10.0], &[2])?;
/// let ty = pullback::jvp(&[&y], &[&x], &[&t])?;
/// assert_eq!(ty[0].to_vec()?, vec![4.0, 60.0]);
/// # Ok(()) }
/// ```
pub fn jvp(outputs: &[&Tensor], inputs: &[&Tensor], tangents: &[&Tensor]) -> Result<Vec<Tensor>> {
    let expected = |x: &Tensor| x.shape().to_vec();
    let Some(req) = request(outputs, inputs, (tangents, &expected))? else {
        return Ok(Vec::new());
    };
    let results = run(&req, 1)?;
    tensors(&req, outputs, results, 1, false)
}

/// K directions at once: tangent i of shape `[K, *inputs[i].shape]` (the
/// same K for all); returns, for each output, `[K, *output.shape]` whose
/// row k is `Σᵢ ∂output/∂inputs[i] · tangents[i][k]`. One forward sweep
/// for all K (every tangent rule handles the K rows in its dispatch) and
/// one submit, unless the pass would exceed the device's memory budget or
/// the adapter's buffer limits: then K is split into chunks of rows, each
/// its own sweep and submit, with the same result bit for bit.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let x = dev.tensor(&[1.0, 2.0], &[2])?.requires_grad();
/// let y = x.mul(&x)?.sum(&[0], false)?; // ∂y/∂x = 2xᵀ
/// // K = 3 directions: e₀, e₁ and (1, 1).
/// let t = dev.tensor(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
/// let ty = pullback::jvp_batched(&[&y], &[&x], &[&t])?;
/// assert_eq!(ty[0].shape(), &[3]);
/// assert_eq!(ty[0].to_vec()?, vec![2.0, 4.0, 6.0]);
/// # Ok(()) }
/// ```
pub fn jvp_batched(
    outputs: &[&Tensor],
    inputs: &[&Tensor],
    tangents: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let k = match tangents.first() {
        Some(t) if t.rank() > 0 => t.shape()[0],
        _ => 0,
    };
    let expected = |x: &Tensor| [&[k][..], x.shape()].concat();
    let Some(req) = request(outputs, inputs, (tangents, &expected))? else {
        return Ok(Vec::new());
    };
    let results = run(&req, k)?;
    tensors(&req, outputs, results, k, true)
}

/// The checked request of a JVP (errors name "input i of jvp").
fn request<'a>(
    outputs: &'a [&'a Tensor],
    inputs: &'a [&'a Tensor],
    tangents: (&'a [&'a Tensor], Expected<'a>),
) -> Result<Option<Request<'a>>> {
    Request::new(Args {
        outputs,
        cotangents: None,
        wrt: Wrt::Tensors {
            tensors: inputs,
            role: "input",
            call: "jvp",
        },
        tangents: Some(tangents),
    })
}

/// The forward sweep over `k` rows, whole or chunked; one tangent per
/// tracked output.
fn run(req: &Request, k: usize) -> Result<Vec<Arc<Storage>>> {
    let pass = Pass::sweeping(req.dev, &req.plan, Sweep::Forward);
    let bindable = req.seeds.iter().all(|s| s.bytes() <= req.dev.max_binding());
    if bindable && pass.fits_whole(k, Seeds::Rows(&req.seeds, 0)) {
        let results = pass.whole(req.dev, k, Seeds::Given(&req.seeds))?;
        req.dev.flush()?;
        return Ok(results);
    }
    pass.chunked(k, None, |start| Seeds::Rows(&req.seeds, start))
}

/// The outputs' tangents as tensors, `[K, *shape]` when `batched`: the
/// tracked outputs' from the sweep (in order), zeros for the others.
fn tensors(
    req: &Request,
    outputs: &[&Tensor],
    results: Vec<Arc<Storage>>,
    k: usize,
    batched: bool,
) -> Result<Vec<Tensor>> {
    let mut results = results.into_iter();
    let mut tangents = Vec::with_capacity(outputs.len());
    for y in outputs {
        let shape = match batched {
            true => [&[k][..], y.shape()].concat(),
            false => y.shape().to_vec(),
        };
        let data = match y.is_tracked().then(|| results.next()).flatten() {
            Some(t) => t,
            None => Arc::new(fill(req.dev, numel(&shape), 0.0)?),
        };
        tangents.push(Tensor::from_storage(req.dev, data, shape));
    }
    Ok(tangents)
}
