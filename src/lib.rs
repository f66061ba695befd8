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
//! convention), not errors.

mod adapter;
mod device;
mod error;
mod graph;
mod kernels;
mod ops;
mod pool;
mod readback;
mod scheduler;
mod shape;
mod tensor;

use std::sync::Arc;

pub use adapter::DeviceOptions;
pub use device::Device;
pub use error::{Error, Result};
pub use ops::layout::concat;
pub use pool::Stats;
pub use tensor::Tensor;
pub use wgpu;

use crate::scheduler::Wanted;
use crate::shape::numel;

/// K cotangents at once. `cotangents[i]` has shape `[K, *outputs[i].shape]`
/// (the same K for all); returns, for each input, `[K, *input.shape]`:
/// row k is `Σᵢ vᵢ[k]ᵀ · ∂outputs[i]/∂input`. One pass over the graph and
/// one submit, whatever K is. Does not touch `.grad`.
///
/// Inputs must be tracked (`requires_grad()` leaves or results computed
/// from them); an input no output depends on gets zeros.
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
    run_vjp(outputs, cotangents, inputs, k, expected, true)
}

/// One cotangent per output, each of its output's shape; returns one
/// gradient per input, of its shape. Does not touch `.grad`.
pub fn vjp(outputs: &[&Tensor], cotangents: &[&Tensor], inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    run_vjp(
        outputs,
        cotangents,
        inputs,
        1,
        |y: &Tensor| y.shape().to_vec(),
        false,
    )
}

fn run_vjp(
    outputs: &[&Tensor],
    cotangents: &[&Tensor],
    inputs: &[&Tensor],
    k: usize,
    expected_shape: impl Fn(&Tensor) -> Vec<usize>,
    batched: bool,
) -> Result<Vec<Tensor>> {
    if outputs.len() != cotangents.len() {
        return Err(Error::CotangentCount {
            outputs: outputs.len(),
            cotangents: cotangents.len(),
        });
    }
    let Some(first) = outputs.first().or(inputs.first()) else {
        return Ok(Vec::new());
    };
    let dev = first.device();
    for t in outputs.iter().chain(cotangents).chain(inputs) {
        dev.check_same(t.device())?;
    }
    dev.check_alive()?;
    let mut seeds = Vec::new();
    for (index, (y, v)) in outputs.iter().zip(cotangents).enumerate() {
        let expected = expected_shape(y);
        if v.shape() != expected.as_slice() {
            return Err(Error::CotangentShape {
                index,
                expected,
                got: v.shape().to_vec(),
            });
        }
        if let Some(node) = &y.inner.node {
            seeds.push((node.clone(), v.inner.data.clone()));
        }
    }
    let mut wanted = Vec::new();
    for (index, x) in inputs.iter().enumerate() {
        match &x.inner.node {
            Some(node) => wanted.push(node.clone()),
            None => {
                return Err(Error::NotTracked {
                    what: format!("input {index} of vjp"),
                });
            }
        }
        dev.check_size("a gradient", k * x.numel())?;
    }
    let reached = scheduler::run(dev, k, seeds, &Wanted::Nodes(wanted.clone()))?;
    let mut grads = Vec::with_capacity(inputs.len());
    for node in &wanted {
        let shape = if batched {
            [&[k][..], &node.shape].concat()
        } else {
            node.shape.clone()
        };
        let data = match reached.iter().find(|(n, _)| Arc::ptr_eq(n, node)) {
            Some((_, g)) => g.clone(),
            None => Arc::new(ops::fill::fill(dev, numel(&shape), 0.0)?),
        };
        grads.push(Tensor::from_storage(dev, data, shape));
    }
    dev.flush()?;
    Ok(grads)
}
