//! Cumulative sum along an axis (`shaders/scan.wgsl`). It is linear: its
//! adjoint is the reversed cumulative sum of the cotangent along the same
//! axis, its tangent the cumulative sum of the tangent, one dispatch for all
//! K rows (K folds into the lines). Nothing saved.

use std::sync::Arc;

use crate::error::Result;
use crate::ops::layout::check_axis;
use crate::ops::shaders::SCAN;
use crate::ops::{Contributions, JvpCtx, Op, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, LOOP_PIECE, Params, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;

const BINDINGS: &[(u32, Access)] = &[(1, Access::Read), (2, Access::Write), (3, Access::Write)];
const BLOCKS: Kernel = Kernel {
    module: &SCAN,
    entry: "scan_blocks",
    bindings: BINDINGS,
};
const TOTALS: Kernel = Kernel {
    module: &SCAN,
    entry: "scan_totals",
    bindings: BINDINGS,
};
const OFFSETS: Kernel = Kernel {
    module: &SCAN,
    entry: "scan_offsets",
    bindings: BINDINGS,
};

/// Elements one invocation scans (see `LOOP_PIECE`). Lines up to this
/// long take one dispatch; longer ones three.
const BLOCK: usize = LOOP_PIECE;

/// Runs the scan over `rows` copies of `shape` (K cotangent rows or 1).
fn scan(
    dev: &Device,
    src: &Storage,
    shape: &[usize],
    axis: usize,
    rows: usize,
    reverse: bool,
) -> Result<Storage> {
    let (outer, d, inner) = (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    );
    let out = dev.alloc("cumsum", rows * numel(shape))?;
    let lines = rows * outer * inner;
    if lines == 0 || d == 0 {
        return Ok(out);
    }
    let blocks = d.div_ceil(BLOCK);
    let totals = dev.alloc("cumsum block totals", lines * blocks)?;
    let params = Params::new(lines, 1)
        .extra(0, d)
        .extra(1, inner)
        .extra(2, 1f32.to_bits() as usize)
        .extra(3, BLOCK);
    let constants = [("REVERSE", flag(reverse))];
    let buffers = [src, &out, &totals];
    dev.dispatch(
        &BLOCKS,
        &constants,
        &params,
        &buffers,
        groups_for((lines * blocks) as u64),
    );
    if blocks > 1 {
        dev.dispatch(
            &TOTALS,
            &constants,
            &params,
            &buffers,
            groups_for(lines as u64),
        );
        dev.dispatch(
            &OFFSETS,
            &constants,
            &params,
            &buffers,
            groups_for((lines * d) as u64),
        );
    }
    Ok(out)
}

pub(crate) fn vjp(cx: &VjpCtx, axis: usize) -> Result<Contributions> {
    let out = scan(cx.dev, cx.g, cx.out_shape, axis, cx.k, true)?;
    Ok(vec![Some(Arc::new(out))])
}

/// The cumulative sum of each of the K tangent rows.
pub(crate) fn jvp(cx: &JvpCtx, axis: usize) -> Result<Arc<Storage>> {
    let out = scan(cx.dev, cx.only()?, cx.out_shape, axis, cx.k, false)?;
    Ok(Arc::new(out))
}

impl Tensor {
    /// Inclusive cumulative sum along `axis`: y[…, d, …] = Σ_{e ≤ d} x[…, e, …]
    /// (compensated, so the error does not grow with the axis' length).
    /// Its adjoint is the reversed cumulative sum of the cotangent.
    pub fn cumsum(&self, axis: usize) -> Result<Tensor> {
        check_operands(self, &[])?;
        check_axis("cumsum", axis, self.rank())?;
        let dev = self.device();
        let out = scan(dev, &self.inner.data, self.shape(), axis, 1, false)?;
        record(
            dev,
            Op::Cumsum { axis },
            &[self],
            out,
            self.shape().to_vec(),
        )
    }
}
