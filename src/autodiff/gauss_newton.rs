//! Generalized Gauss-Newton products: `Jᵀ·H_out·J·v`, J the Jacobian of a
//! model's outputs with respect to its parameters and H_out the Hessian of
//! the loss with respect to the outputs, in closed form. Built from one
//! `jvp_batched` (J·v), H_out applied on the device, and one
//! `vjp_batched` (Jᵀ·…): no second-order machinery, and positive
//! semi-definite whatever the model (H_out is), which is what K-FAC,
//! Laplace approximations and Levenberg-Marquardt rely on.

use crate::autodiff::jvp::jvp_batched;
use crate::autodiff::vjp::vjp_batched;
use crate::error::{Result, invalid};
use crate::tape::tensor::Tensor;

/// The loss whose Hessian with respect to the outputs [`gnvp_batched`]
/// uses (H_out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Curvature {
    /// ½·Σ(z − t)² over every output: H_out is the identity (the targets t
    /// do not enter it).
    SquaredError,
    /// `Σ_b cross_entropy(z_b, labels[b])` of logits `[B, C]`: per row b,
    /// `diag(p) − p·pᵀ` with `p = softmax(z_b)` (the labels do not enter
    /// it; they are checked against the logits' shape).
    SoftmaxCrossEntropy(Vec<u32>),
}

/// Generalized Gauss-Newton products for K directions: direction i has
/// shape `[K, *params[i].shape]`; result i, `[K, *params[i].shape]`, is
/// `Jᵀ·H_out·J·v` split by parameter, J the Jacobian of `outputs` (the
/// model's predictions, or logits `[B, C]`) with respect to the parameters
/// and H_out the Hessian `curvature` names. Two passes for all K: a
/// forward sweep and a reverse one.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// use pullback::{Curvature, gnvp_batched};
/// let dev = pullback::Device::new()?;
/// // A linear model z = X·w under squared error: J = X, so G = XᵀX.
/// let x = dev.tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
/// let w = dev.tensor(&[0.3, -0.7], &[2, 1])?.requires_grad();
/// let z = x.matmul(&w)?;
/// let eye = dev.tensor(&[1.0, 0.0, 0.0, 1.0], &[2, 2, 1])?;
/// let g = gnvp_batched(&z, &[&w], Curvature::SquaredError, &[&eye])?;
/// assert_eq!(g[0].to_vec()?, vec![10.0, 14.0, 14.0, 20.0]); // XᵀX
/// # Ok(()) }
/// ```
pub fn gnvp_batched(
    outputs: &Tensor,
    params: &[&Tensor],
    curvature: Curvature,
    directions: &[&Tensor],
) -> Result<Vec<Tensor>> {
    if let Curvature::SoftmaxCrossEntropy(labels) = &curvature {
        check_labels(outputs, labels)?;
    }
    let Some(jv) = jvp_batched(&[outputs], params, directions)?
        .into_iter()
        .next()
    else {
        return Ok(Vec::new());
    };
    let h_jv = match curvature {
        Curvature::SquaredError => jv,
        Curvature::SoftmaxCrossEntropy(_) => {
            // (diag(p) − p·pᵀ)·u = p⊙u − p·(pᵀu), row by row.
            let p = outputs.detach().softmax(1)?;
            let pu = jv.mul(&p)?;
            pu.sub(&pu.sum(&[2], true)?.mul(&p)?)?
        }
    };
    vjp_batched(&[outputs], &[&h_jv], params)
}

/// Logits `[B, C]` and B labels, each below C.
fn check_labels(logits: &Tensor, labels: &[u32]) -> Result<()> {
    let [b, c] = *logits.shape() else {
        return Err(invalid(
            "gnvp_batched",
            format!(
                "SoftmaxCrossEntropy needs logits of shape [B, C]; the outputs have shape {:?}",
                logits.shape()
            ),
        ));
    };
    if labels.len() != b {
        return Err(invalid(
            "gnvp_batched",
            format!(
                "{} labels for a batch of {b}; give one label per row",
                labels.len()
            ),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= c) {
        return Err(invalid(
            "gnvp_batched",
            format!("label {bad} is out of range for {c} classes"),
        ));
    }
    Ok(())
}
