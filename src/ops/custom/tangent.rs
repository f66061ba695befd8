//! Forward mode and second order through a custom op. The tangent is the
//! user's `tangent` entry point (all K rows in one dispatch), or, for an op
//! declared `linear()`, its forward applied to each tangent row; a linear
//! op adds no curvature to Hessian-vector products. Without the rule a
//! computation needs, it is an error that names the op and the builder
//! call that provides it.

use std::sync::Arc;

use super::{CustomDef, params};
use crate::error::{Error, Result};
use crate::ops::fill::fill;
use crate::ops::{Contributions, CurvatureCtx, JvpCtx};
use crate::runtime::pool::Storage;
use crate::shape::numel;

/// The output's K tangent rows.
pub(crate) fn jvp(cx: &JvpCtx, def: &CustomDef, scalars: &[f32]) -> Result<Arc<Storage>> {
    let (dev, k) = (cx.dev, cx.k);
    let shapes: Vec<&[usize]> = cx.inputs.iter().map(|i| &i.shape[..]).collect();
    let n_out = numel(cx.out_shape);
    let out = dev.alloc("custom op tangent", k * n_out)?;
    if k * n_out == 0 {
        return Ok(Arc::new(out));
    }
    // An input without a tangent reads zeros.
    let rows = (cx.tangents.iter().zip(&shapes))
        .map(|(t, s)| match t {
            Some(t) => Ok(t.clone()),
            None => Ok(Arc::new(fill(dev, k * numel(s), 0.0)?)),
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(tangent) = &def.tangent {
        let params = params(k * n_out, k, 0, cx.out_shape, &shapes, scalars);
        let mut buffers: Vec<&Storage> = rows.iter().map(|r| &**r).collect();
        buffers.push(&out);
        buffers.extend(cx.saved.iter().map(|s| &**s));
        tangent.dispatch(dev, k * n_out, params, &buffers);
        return Ok(Arc::new(out));
    }
    if !def.linear {
        return Err(missing(
            def,
            "jvp (forward mode)",
            "tangent(wgsl) or ::linear()",
        ));
    }
    // Linear: the forward of each row, through one-row buffers (kernels
    // bind whole buffers).
    let params = params(n_out, 1, 0, cx.out_shape, &shapes, scalars);
    let row_out = dev.alloc("custom op tangent row", n_out)?;
    for r in 0..k {
        let mut row_in = Vec::with_capacity(rows.len());
        for (t, s) in rows.iter().zip(&shapes) {
            let n = numel(s);
            let row = dev.alloc("custom op tangent row", n)?;
            dev.copy(t, r * n, &row, 0, n);
            row_in.push(row);
        }
        let mut buffers: Vec<&Storage> = row_in.iter().collect();
        buffers.push(&row_out);
        def.forward.dispatch(dev, n_out, params, &buffers);
        dev.copy(&row_out, 0, &out, r * n_out, n_out);
    }
    Ok(Arc::new(out))
}

/// A linear op has none; the second derivatives of others are not known.
pub(crate) fn curvature(cx: &CurvatureCtx, def: &CustomDef) -> Result<Contributions> {
    if def.linear {
        return Ok(vec![None; cx.inputs.len()]);
    }
    Err(missing(def, "hvp (second order)", "linear()"))
}

fn missing(def: &CustomDef, needed_by: &'static str, builder: &'static str) -> Error {
    Error::MissingRule {
        op: def.name.clone(),
        needed_by,
        builder,
    }
}
