//! Jacobians, in either mode: reverse, a batched VJP of the identity rows
//! (one per element of the output), or forward, a batched JVP of the
//! identity tangents (one per element of the input), the identity written
//! on the device and chunked to the memory budget (`chunk.rs`). `Auto`
//! takes the mode with fewer rows.

use std::sync::Arc;

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::plan::Sweep;
use crate::autodiff::request::{Args, Request, Wrt};
use crate::error::{Result, invalid};
use crate::ops::layout::{View, gather};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::MAX_RANK;
use crate::tape::tensor::Tensor;

/// How [`jacobian_with`] takes the Jacobian of y by x.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JacobianMode {
    /// Forward mode when x has fewer elements than y (a tall Jacobian),
    /// reverse mode otherwise.
    #[default]
    Auto,
    /// A row per element of y: a batched VJP of the identity cotangents.
    Reverse,
    /// A column per element of x: a batched JVP of the identity tangents.
    Forward,
}

/// Options for [`jacobian_with`].
#[derive(Clone, Debug, Default)]
pub struct JacobianOptions {
    /// Identity rows per pass (cotangents in reverse mode, tangents in
    /// forward mode). `None` (the default): as many as fit the device's
    /// memory budget and the adapter's buffer limits.
    pub chunk_rows: Option<usize>,
    /// Reverse or forward mode (default: the one with fewer rows).
    pub mode: JacobianMode,
}

/// The Jacobian of `y` with respect to `x`, shape `[*y.shape, *x.shape]`:
/// `∂y[i]/∂x[j]` at `[i, j]`. Computed by identity rows in the mode that
/// needs fewer of them ([`JacobianMode::Auto`]): cotangents through a
/// batched VJP (one per element of y), or tangents through a batched JVP
/// (one per element of x), chunked to the memory budget; the identity rows
/// of each chunk are written on the device.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let w = dev.tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])?;
/// let x = dev.tensor(&[0.5, -1.0], &[2, 1])?.requires_grad();
/// let y = w.matmul(&x)?; // [3, 1]; ∂y[i]/∂x[j] = W[i, j]
/// let j = pullback::jacobian(&y, &x)?;
/// assert_eq!(j.shape(), &[3, 1, 2, 1]);
/// assert_eq!(j.to_vec()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// # Ok(()) }
/// ```
pub fn jacobian(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    jacobian_with(y, x, JacobianOptions::default())
}

/// [`jacobian`] with explicit options.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// use pullback::{JacobianMode, JacobianOptions, jacobian_with};
/// let dev = pullback::Device::new()?;
/// let x = dev.tensor(&[0.1, 0.2, 0.3], &[3])?.requires_grad();
/// let y = x.exp()?; // diagonal Jacobian: exp(x)
/// let by = |mode, chunk_rows| {
///     jacobian_with(&y, &x, JacobianOptions { mode, chunk_rows })?.to_vec()
/// };
/// let forward = by(JacobianMode::Forward, Some(2))?; // 2 tangent rows per pass
/// let reverse = by(JacobianMode::Reverse, None)?;
/// for (i, (f, r)) in forward.iter().zip(&reverse).enumerate() {
///     let want = if i % 4 == 0 { (0.1 * (1 + i / 4) as f32).exp() } else { 0.0 };
///     assert!((f - want).abs() <= 1e-6 && (r - want).abs() <= 1e-6);
/// }
/// # Ok(()) }
/// ```
pub fn jacobian_with(y: &Tensor, x: &Tensor, options: JacobianOptions) -> Result<Tensor> {
    let shape = [y.shape(), x.shape()].concat();
    if shape.len() > MAX_RANK + 1 {
        return Err(invalid(
            "jacobian",
            format!(
                "the Jacobian of {:?} by {:?} would have rank {}; at most {} is supported \
                 (reshape y or x to fewer axes)",
                y.shape(),
                x.shape(),
                shape.len(),
                MAX_RANK + 1
            ),
        ));
    }
    if options.chunk_rows == Some(0) {
        return Err(invalid("jacobian", "chunk_rows must be at least 1"));
    }
    let (outputs, inputs) = ([y], [x]);
    let Some(req) = Request::new(Args {
        outputs: &outputs,
        cotangents: None,
        wrt: Wrt::Tensors {
            tensors: &inputs,
            role: "input",
            call: "vjp",
        },
        tangents: None,
    })?
    else {
        return Err(invalid("jacobian", "there is nothing to differentiate"));
    };
    let (m, n) = (y.numel(), x.numel());
    let forward = match options.mode {
        JacobianMode::Auto => n < m,
        JacobianMode::Reverse => false,
        JacobianMode::Forward => true,
    };
    let (sweep, rows) = match forward {
        true => (Sweep::Forward, n),
        false => (Sweep::Reverse, m),
    };
    let pass = Pass::sweeping(req.dev, &req.plan, sweep);
    // A y that depends on nothing tracked gets all zeros from one pass.
    let whole = req.plan.roots.is_empty()
        || match options.chunk_rows {
            Some(c) => c >= rows,
            None => pass.fits_whole(rows, Seeds::Identity(0)),
        };
    let results = if whole {
        let r = pass.whole(req.dev, rows, Seeds::Identity(0))?;
        req.dev.flush()?;
        r
    } else {
        pass.chunked(rows, options.chunk_rows, Seeds::Identity)?
    };
    let Some(data) = results.into_iter().next() else {
        return Err(invalid("jacobian", "the pass returned no derivative"));
    };
    // Forward mode made the columns, [n, m]: the Jacobian is its transpose.
    let data = match forward {
        true => Arc::new(transpose(req.dev, &data, n, m)?),
        false => data,
    };
    Ok(Tensor::from_storage(req.dev, data, shape))
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix.
fn transpose(dev: &Device, src: &Storage, rows: usize, cols: usize) -> Result<Storage> {
    let view = View {
        shape: &[cols, rows],
        strides: &[1, cols],
        offset: 0,
        row: rows * cols,
    };
    gather(dev, src, 1, &view, 1.0)
}
