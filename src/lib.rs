//! pullback: batched vector-Jacobian products on the GPU, through wgpu.
//!
//! For `y = f(x)` with Jacobian `J = ∂y/∂x`, a vector-Jacobian product
//! (VJP) is `vᵀJ` for a cotangent `v` of `y`'s shape: what reverse-mode
//! differentiation computes, without ever forming `J`. Every forward op is
//! a WGSL compute kernel; every op's adjoint kernel takes a batch of K
//! cotangents in one dispatch. A backward pass prunes the graph to what the
//! requested inputs need, frees each cotangent after its last use and
//! submits once.
//!
//! The seed example: `y = x·x` at `x = [2, 3]`, so `J = diag(2x)` and with
//! `v = [1, 1]` the gradient is `vᵀJ = [4, 6]`.
//!
//! ```
//! use pullback::Device;
//! # fn main() -> pullback::Result<()> {
//! let dev = Device::new()?; // the best adapter; PULLBACK_ADAPTER overrides
//! let x = dev.tensor(&[2.0, 3.0], &[2])?.requires_grad();
//! let y = x.mul(&x)?;
//! y.backward_with(&dev.tensor(&[1.0, 1.0], &[2])?)?; // accumulates into x.grad
//! let grad = x.grad().expect("x is a leaf that y depends on");
//! assert_eq!(grad.to_vec()?, vec![4.0, 6.0]);
//! # Ok(()) }
//! ```
//!
//! Batched: [`vjp_batched`] takes K cotangents stacked on a leading axis,
//! `v` of shape `[K, *y.shape]`, and returns `[K, *x.shape]` whose row k is
//! `v[k]ᵀJ`, in one pass over the graph and one submit, whatever K is. For
//! `y = W·x` the Jacobian is `W`, so the rows of the identity give W's rows:
//!
//! ```
//! use pullback::{Device, vjp_batched};
//! # fn main() -> pullback::Result<()> {
//! let dev = Device::new()?;
//! let w = dev.tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?; // a constant
//! let x = dev.tensor(&[0.5, -1.0], &[2, 1])?.requires_grad();
//! let y = w.matmul(&x)?; // [2, 1]
//!
//! // K = 3 cotangents [3, 2, 1]: e₀, e₁ and e₀ + e₁.
//! let v = dev.tensor(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2, 1])?;
//! let before = dev.stats().submits;
//! let g = vjp_batched(&[&y], &[&v], &[&x])?;
//! assert_eq!(dev.stats().submits - before, 1); // one pass for all K rows
//! assert_eq!(g[0].shape(), &[3, 2, 1]);
//! assert_eq!(g[0].to_vec()?, vec![1.0, 2.0, 3.0, 4.0, 4.0, 6.0]);
//! # Ok(()) }
//! ```
//!
//! Gradients of inputs that an output does not depend on are zeros (JAX's
//! convention), not errors. [`gradcheck`] checks the gradients of any graph
//! against finite differences of the function that builds it; its docs say
//! how to choose the step and tolerance in f32.

// Library code never unwraps; a poisoned lock is recovered (lock.rs).
// Tests, benches and examples are separate crates and may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_docs)]

// The layers, each importing only from those listed before it (the tape
// and the ops share one circle: a node records its op, an op records a
// node). `tests/layers.rs` keeps the walls.
mod error;
mod lock;
mod shape;

mod runtime;

mod ops;
mod tape;

mod autodiff;

pub use autodiff::gauss_newton::{Curvature, gnvp_batched};
pub use autodiff::gradcheck::{GradcheckEntry, GradcheckOptions, GradcheckReport, gradcheck};
pub use autodiff::hessian::{hvp, hvp_batched};
pub use autodiff::jacobian::{JacobianMode, JacobianOptions, jacobian, jacobian_with};
pub use autodiff::jvp::{jvp, jvp_batched};
pub use autodiff::per_example::{per_example_grad_norms, per_example_grads};
pub use autodiff::vjp::{plan_peak_bytes, vjp, vjp_batched};
pub use error::{Error, Result};
pub use ops::concat::concat;
pub use ops::conv::ConvOptions;
pub use ops::custom::{
    CustomOp, CustomOpBuilder, CustomSave, MAX_CUSTOM_INPUTS, MAX_CUSTOM_SCALARS,
};
pub use ops::matmul::tune::{GemmProbe, GemmTuning};
pub use ops::reshaping::stack;
pub use runtime::adapter::{DeviceOptions, GemmKernel};
pub use runtime::device::Device;
pub use runtime::pool::Stats;
pub use tape::tensor::{Tensor, read_all};
pub use wgpu;
