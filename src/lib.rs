//! pullback: batched vector-Jacobian products on the GPU, through wgpu.
//!
//! Every forward op is a WGSL compute kernel; every op's adjoint kernel
//! takes a batch of K cotangents in one dispatch. A backward pass prunes the
//! graph to what the requested inputs need, frees each cotangent after its
//! last use and submits once.
//!
//! ```no_run
//! use pullback::{Device, Tensor};
//! # fn main() -> pullback::Result<()> {
//! let dev = Device::new()?;
//! let x = dev.tensor(&[2.0, 3.0], &[2])?.requires_grad();
//! let y = x.mul(&x)?;
//! y.backward_with(&dev.tensor(&[1.0, 1.0], &[2])?)?;
//! assert_eq!(x.grad().unwrap().to_vec()?, vec![4.0, 6.0]);
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

mod adapter;
mod batch;
mod device;
mod error;
mod fusion;
mod gradcheck;
mod graph;
mod kernels;
mod lock;
mod memory;
mod ops;
mod per_example;
mod plan;
mod pool;
mod readback;
mod scheduler;
mod settings;
mod shape;
mod tensor;
mod vjp;

pub use adapter::{DeviceOptions, GemmKernel};
pub use device::Device;
pub use error::{Error, Result};
pub use gradcheck::{GradcheckEntry, GradcheckOptions, GradcheckReport, gradcheck};
pub use ops::layout::concat;
pub use per_example::{per_example_grad_norms, per_example_grads};
pub use pool::Stats;
pub use readback::read_all;
pub use tensor::Tensor;
pub use vjp::{JacobianOptions, jacobian, jacobian_with, plan_peak_bytes, vjp, vjp_batched};
pub use wgpu;
