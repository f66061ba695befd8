//! Second order's functional API: `hvp` and `hvp_batched`, products of the
//! Hessian of a one-element loss with directions, by forward over reverse
//! (`second_order.rs`): one tangent sweep and one reverse sweep for all K
//! directions, chunked like `vjp_batched` (`chunk.rs`).

use std::sync::Arc;

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::plan::Sweep;
use crate::autodiff::request::{Args, Request, Wrt};
use crate::error::{Result, invalid};
use crate::runtime::pool::Storage;
use crate::tape::tensor::Tensor;

/// Hessian-vector products: for directions `directions[i]` of `params[i]`
/// (each of its parameter's shape), `H·v` split by parameter: result i is
/// `Σⱼ ∂²loss/∂params[i]∂params[j] · directions[j]`, of `params[i]`'s
/// shape. `loss` must have one element. It walks the graph already
/// recorded (forward over reverse: the tangents of every value along v,
/// then the gradient's sweep and its tangent together), so it costs a few
/// gradients, not a Hessian. Parameters must be tracked; a parameter the
/// loss does not depend on gets zeros.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let x = dev.tensor(&[1.0, 2.0], &[2])?.requires_grad();
/// // loss = Σ x³: H = diag(6x).
/// let loss = x.powf(3.0)?.sum_all()?;
/// let v = dev.tensor(&[1.0, 1.0], &[2])?;
/// let hv = pullback::hvp(&loss, &[&x], &[&v])?;
/// assert_eq!(hv[0].to_vec()?, vec![6.0, 12.0]);
/// # Ok(()) }
/// ```
pub fn hvp(loss: &Tensor, params: &[&Tensor], directions: &[&Tensor]) -> Result<Vec<Tensor>> {
    run(loss, params, directions, None)
}

/// K directions at once: direction i of shape `[K, *params[i].shape]` (the
/// same K for all); result i is `[K, *params[i].shape]`, row k the
/// Hessian times direction k. One tangent sweep and one reverse sweep for
/// all K (each rule handles the K rows in its dispatch), never K passes
/// and never a `[K, K, …]` tensor; split into chunks of rows only where
/// the memory budget or the adapter's buffer limits require it, with the
/// same result bit for bit.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// // loss = ½·xᵀAx with A = [[2, 1], [1, 3]]: H = A, so the identity
/// // directions give A's columns, one pass for both.
/// let a = dev.tensor(&[2.0, 1.0, 1.0, 3.0], &[2, 2])?;
/// let x = dev.tensor(&[0.5, -2.0], &[2, 1])?.requires_grad();
/// let loss = x.mul(&a.matmul(&x)?)?.sum_all()?.mul_scalar(0.5)?;
/// let eye = dev.tensor(&[1.0, 0.0, 0.0, 1.0], &[2, 2, 1])?;
/// let h = pullback::hvp_batched(&loss, &[&x], &[&eye])?;
/// assert_eq!(h[0].shape(), &[2, 2, 1]);
/// assert_eq!(h[0].to_vec()?, vec![2.0, 1.0, 1.0, 3.0]);
/// # Ok(()) }
/// ```
pub fn hvp_batched(
    loss: &Tensor,
    params: &[&Tensor],
    directions: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let k = match directions.first() {
        Some(v) if v.rank() > 0 => v.shape()[0],
        _ => 0,
    };
    run(loss, params, directions, Some(k))
}

/// Both: `k` None for one direction per parameter of its shape.
fn run(
    loss: &Tensor,
    params: &[&Tensor],
    directions: &[&Tensor],
    k: Option<usize>,
) -> Result<Vec<Tensor>> {
    if loss.numel() != 1 {
        return Err(invalid(
            "hvp",
            format!(
                "the loss has shape {:?}; Hessian-vector products need a one-element loss: \
                 sum or mean it first (for a vector output y and a cotangent u, take the \
                 hvp of (y·u).sum_all())",
                loss.shape()
            ),
        ));
    }
    let lead: Vec<usize> = k.into_iter().collect();
    let expected = |p: &Tensor| [&lead[..], p.shape()].concat();
    let outputs = [loss];
    let Some(req) = Request::new(Args {
        outputs: &outputs,
        cotangents: None,
        wrt: Wrt::Tensors {
            tensors: params,
            role: "parameter",
            call: "hvp",
        },
        tangents: Some((directions, &expected)),
    })?
    else {
        return Ok(Vec::new());
    };
    let rows = k.unwrap_or(1);
    let pass = Pass::sweeping(req.dev, &req.plan, Sweep::SecondOrder);
    let bindable = req.seeds.iter().all(|s| s.bytes() <= req.dev.max_binding());
    let products: Vec<Arc<Storage>> =
        if bindable && pass.fits_whole(rows, Seeds::Rows(&req.seeds, 0)) {
            let products = pass.whole(req.dev, rows, Seeds::Given(&req.seeds))?;
            req.dev.flush()?;
            products
        } else {
            pass.chunked(rows, None, |start| Seeds::Rows(&req.seeds, start))?
        };
    Ok(products
        .into_iter()
        .zip(params)
        .map(|(hv, p)| Tensor::from_storage(req.dev, hv, expected(p)))
        .collect())
}
