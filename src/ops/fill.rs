//! Buffers written without inputs: one value everywhere (the `full`,
//! `zeros` and `ones` constructors, seeds, zero gradients) and rows of the
//! identity (Jacobian cotangents).

use std::sync::Arc;

use crate::error::Result;
use crate::ops::shaders::FILL;
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::{check_rank, numel};
use crate::tape::tensor::Tensor;

const FILL_KERNEL: Kernel = Kernel {
    module: &FILL,
    entry: "fill",
    bindings: &[(1, Access::Write)],
};
const IDENTITY_ROWS: Kernel = Kernel {
    module: &FILL,
    entry: "identity_rows",
    bindings: &[(1, Access::Write)],
};

/// `len` copies of `value`. Past the binding limit (a tensor that only
/// copies and readback can use) zeros are a clear and other values are
/// copied from a filled piece, so no kernel binds the whole buffer.
pub(crate) fn fill(dev: &Device, len: usize, value: f32) -> Result<Storage> {
    if dev.check_bindable("filled tensor", len).is_err() {
        return fill_large(dev, len, value);
    }
    let out = dev.alloc("filled tensor", len)?;
    fill_into(dev, &out, len, value);
    Ok(out)
}

fn fill_into(dev: &Device, out: &Storage, len: usize, value: f32) {
    dev.dispatch(
        &FILL_KERNEL,
        &[],
        &Params::new(len, 1).scalar(value),
        &[out],
        groups_for(len.div_ceil(4) as u64),
    );
}

fn fill_large(dev: &Device, len: usize, value: f32) -> Result<Storage> {
    let out = dev.alloc_large("filled tensor", len)?;
    if value.to_bits() == 0 {
        dev.clear(&out);
        return Ok(out);
    }
    const PIECE: usize = 1 << 22; // 16 MiB: far under any binding limit
    let piece = dev.alloc("fill pattern", PIECE)?;
    fill_into(dev, &piece, PIECE, value);
    for start in (0..len).step_by(PIECE) {
        dev.copy(&piece, 0, &out, start, PIECE.min(len - start));
    }
    Ok(out)
}

/// Rows `start..start + k` of the `n`×`n` identity, `[k, n]`.
pub(crate) fn identity_rows(dev: &Device, k: usize, n: usize, start: usize) -> Result<Storage> {
    let out = dev.alloc("identity rows", k * n)?;
    dev.dispatch(
        &IDENTITY_ROWS,
        &[],
        &Params::new(n, k).extra(0, start),
        &[&out],
        groups_for((k * n).div_ceil(4) as u64),
    );
    Ok(out)
}

impl Device {
    /// A tensor of `shape` filled with `value`.
    pub fn full(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        check_rank("full", shape)?;
        let storage = fill(self, numel(shape), value)?;
        Ok(Tensor::from_storage(
            self,
            Arc::new(storage),
            shape.to_vec(),
        ))
    }

    /// A tensor of `shape` filled with 0.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.full(shape, 0.0)
    }

    /// A tensor of `shape` filled with 1.
    pub fn ones(&self, shape: &[usize]) -> Result<Tensor> {
        self.full(shape, 1.0)
    }
}
