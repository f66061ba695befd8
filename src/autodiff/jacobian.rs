//! Jacobians in reverse mode: `jacobian` and `jacobian_with`, a batched
//! VJP of the identity rows (one per element of the output), written on the
//! device and chunked to the memory budget (`chunk.rs`).

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::request::{Args, Request, Wrt};
use crate::error::{Result, invalid};
use crate::shape::MAX_RANK;
use crate::tape::tensor::Tensor;

/// Options for [`jacobian_with`].
#[derive(Clone, Debug, Default)]
pub struct JacobianOptions {
    /// Cotangent rows per pass. `None` (the default): as many as fit the
    /// device's memory budget and the adapter's buffer limits.
    pub chunk_rows: Option<usize>,
}

/// The Jacobian of `y` with respect to `x`, shape `[*y.shape, *x.shape]`:
/// `∂y[i]/∂x[j]` at `[i, j]`. Computed as a batched VJP of the identity
/// cotangents (reverse mode, one row per element of `y`), chunked to the
/// memory budget; the identity rows of each chunk are written on the device.
pub fn jacobian(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    jacobian_with(y, x, JacobianOptions::default())
}

/// [`jacobian`] with explicit options.
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
    })?
    else {
        return Err(invalid("jacobian", "there is nothing to differentiate"));
    };
    let m = y.numel();
    let pass = Pass::new(req.dev, &req.plan);
    // A y that depends on nothing tracked gets all zeros from one pass.
    let whole = req.plan.roots.is_empty()
        || match options.chunk_rows {
            Some(c) => c >= m,
            None => pass.fits_whole(m, Seeds::Identity(0)),
        };
    let grads = if whole {
        let g = pass.whole(req.dev, m, Seeds::Identity(0))?;
        req.dev.flush()?;
        g
    } else {
        pass.chunked(m, options.chunk_rows, Seeds::Identity)?
    };
    let Some(data) = grads.into_iter().next() else {
        return Err(invalid("jacobian", "the pass returned no gradient"));
    };
    Ok(Tensor::from_storage(req.dev, data, shape))
}
