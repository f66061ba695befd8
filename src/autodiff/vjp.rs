//! The functional API: `vjp`, `vjp_batched` and `plan_peak_bytes`. Each
//! checks its arguments (`request.rs`) and runs the pass whole or in chunks
//! of cotangent rows (`chunk.rs`).

use std::sync::Arc;

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::plan::Plan;
use crate::autodiff::request::{Args, Expected, Request, Wrt};
use crate::error::Result;
use crate::runtime::pool::{Storage, size_class};
use crate::shape::numel;
use crate::tape::tensor::Tensor;

/// K cotangents at once. `cotangents[i]` has shape `[K, *outputs[i].shape]`
/// (the same K for all); returns, for each input, `[K, *input.shape]`:
/// row k is `Σᵢ vᵢ[k]ᵀ · ∂outputs[i]/∂input`. One pass over the graph and
/// one submit, whatever K is, unless the pass would exceed the device's
/// memory budget ([`crate::Device::set_memory_budget`]) or the adapter's buffer
/// limits: then K is split into chunks of rows, each its own pass and
/// submit, with the same result bit for bit. Does not touch `.grad`.
///
/// Inputs must be tracked (`requires_grad()` leaves or results computed
/// from them); an input no output depends on gets zeros. A cotangent or
/// gradient may exceed the adapter's storage-binding limit (up to its
/// largest buffer): it is then processed in chunks, and such a result can
/// be read back but not passed to ops.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let x = dev.tensor(&[1.0, 2.0, 3.0], &[3])?.requires_grad();
/// let y = x.mul(&x)?.sum(&[0], false)?; // y = Σ x², ∂y/∂x = 2x
/// // K = 2 cotangents of the scalar y, [2]: one pass gives 1·2x and 10·2x.
/// let v = dev.tensor(&[1.0, 10.0], &[2])?;
/// let g = pullback::vjp_batched(&[&y], &[&v], &[&x])?;
/// assert_eq!(g[0].shape(), &[2, 3]);
/// assert_eq!(g[0].to_vec()?, vec![2.0, 4.0, 6.0, 20.0, 40.0, 60.0]);
/// # Ok(()) }
/// ```
pub fn vjp_batched(
    outputs: &[&Tensor],
    cotangents: &[&Tensor],
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let k = match cotangents.first() {
        Some(v) if v.rank() > 0 => v.shape()[0],
        _ => 0,
    };
    let expected = |y: &Tensor| [&[k][..], y.shape()].concat();
    let Some(req) = request(outputs, Some((cotangents, &expected)), inputs)? else {
        return Ok(Vec::new());
    };
    let grads = run(&req, k)?;
    Ok(tensors(&req, grads, |x| [&[k][..], x].concat()))
}

/// One cotangent per output, each of its output's shape; returns one
/// gradient per input, of its shape. Does not touch `.grad`.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let a = dev.tensor(&[2.0, 3.0], &[2])?.requires_grad();
/// let b = dev.tensor(&[5.0, 7.0], &[2])?.requires_grad();
/// let y = a.mul(&b)?; // ∂y/∂a = diag(b), ∂y/∂b = diag(a)
/// let v = dev.tensor(&[1.0, -1.0], &[2])?;
/// let g = pullback::vjp(&[&y], &[&v], &[&a, &b])?;
/// assert_eq!(g[0].to_vec()?, vec![5.0, -7.0]);
/// assert_eq!(g[1].to_vec()?, vec![2.0, -3.0]);
/// assert!(a.grad().is_none()); // .grad is left alone
/// # Ok(()) }
/// ```
pub fn vjp(outputs: &[&Tensor], cotangents: &[&Tensor], inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let expected = |y: &Tensor| y.shape().to_vec();
    let Some(req) = request(outputs, Some((cotangents, &expected)), inputs)? else {
        return Ok(Vec::new());
    };
    let grads = run(&req, 1)?;
    Ok(tensors(&req, grads, |x| x.to_vec()))
}

/// The bytes a K-batched pass of [`vjp_batched`] over these outputs and
/// inputs would allocate at its peak: cotangents, scratch and results (the
/// caller's cotangents are not counted: they exist before the pass). Where
/// the pass would be split into chunks (the memory budget, or buffer
/// limits), the peak of the chunked run: the full results plus the largest
/// chunk's working memory. Nothing runs on the device: the pass is executed
/// on a dry run that sizes its buffers, so the figure is what the pass does
/// on fresh buffers (one the pool serves from a larger idle buffer counts
/// that buffer's size in `live_bytes`: memory already held, not new).
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let x = dev.tensor(&vec![0.5; 4096], &[4096])?.requires_grad();
/// let y = x.sin()?.mul(&x)?;
/// let (small, large) = (
///     pullback::plan_peak_bytes(&[&y], &[&x], 1)?,
///     pullback::plan_peak_bytes(&[&y], &[&x], 64)?,
/// );
/// // At least the [64, 4096] f32 result, and growing with K.
/// assert!(large >= 64 * 4096 * 4 && large > small);
/// # Ok(()) }
/// ```
pub fn plan_peak_bytes(outputs: &[&Tensor], inputs: &[&Tensor], k: usize) -> Result<u64> {
    let Some(req) = request(outputs, None, inputs)? else {
        return Ok(0);
    };
    // Stand-ins for the caller's cotangents: sized like them, never counted.
    let (seed_dev, _) = req.dev.dry_run();
    let mut seeds = Vec::new();
    for node in &req.plan.roots {
        seeds.push(Arc::new(
            seed_dev.alloc_large("cotangent", k * numel(&node.shape))?,
        ));
    }
    let pass = Pass::new(req.dev, &req.plan);
    if whole(&pass, k, &seeds) {
        return Plan::working_bytes(req.dev, |dry| pass.whole(dry, k, Seeds::Given(&seeds)));
    }
    let c = pass.chunk_rows(k, Seeds::Rows(&seeds, 0))?;
    let results: u64 = req
        .plan
        .wanted
        .iter()
        .map(|n| size_class(4 * (k * numel(&n.shape)) as u64))
        .sum();
    Ok(results + pass.chunk_bytes(c, Seeds::Rows(&seeds, 0))?)
}

/// The checked request of a VJP over `inputs` (errors name "input i of vjp").
fn request<'a>(
    outputs: &'a [&'a Tensor],
    cotangents: Option<(&'a [&'a Tensor], Expected<'a>)>,
    inputs: &'a [&'a Tensor],
) -> Result<Option<Request<'a>>> {
    Request::new(Args {
        outputs,
        cotangents,
        wrt: Wrt::Tensors {
            tensors: inputs,
            role: "input",
            call: "vjp",
        },
        tangents: None,
    })
}

/// Whether all K rows go in one pass with the caller's cotangents bound as
/// they are: they are bindable, and all K rows fit one pass.
fn whole(pass: &Pass, k: usize, seeds: &[Arc<Storage>]) -> bool {
    let bindable = seeds.iter().all(|s| s.bytes() <= pass.dev.max_binding());
    bindable && pass.fits_whole(k, Seeds::Rows(seeds, 0))
}

/// Runs the pass over `k` rows, whole or chunked; one gradient per input.
fn run(req: &Request, k: usize) -> Result<Vec<Arc<Storage>>> {
    let pass = Pass::new(req.dev, &req.plan);
    if whole(&pass, k, &req.seeds) {
        let grads = pass.whole(req.dev, k, Seeds::Given(&req.seeds))?;
        req.dev.flush()?;
        return Ok(grads);
    }
    pass.chunked(k, None, |start| Seeds::Rows(&req.seeds, start))
}

/// The gradients as tensors, each of `shape(input's shape)`.
fn tensors(
    req: &Request,
    grads: Vec<Arc<Storage>>,
    shape: impl Fn(&[usize]) -> Vec<usize>,
) -> Vec<Tensor> {
    grads
        .into_iter()
        .zip(&req.plan.wanted)
        .map(|(g, node)| Tensor::from_storage(req.dev, g, shape(&node.shape)))
        .collect()
}
