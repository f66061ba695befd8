//! Sliding windows of images (`shaders/unfold.wgsl`, im2col): the one
//! primitive under convolution and pooling. `[N, C, H, W]` becomes
//! `[N, C, kh, kw, OH, OW]`; it is linear, and its adjoint is the fold
//! (col2im) done as a gather (no atomics): one dispatch for all K
//! cotangent rows, which are more images to it; its tangent is the unfold
//! of the K tangent rows, more images too. Nothing saved.

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::ops::shaders::UNFOLD;
use crate::ops::{Contributions, JvpCtx, Op, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;

const UNFOLD_KERNEL: Kernel = Kernel {
    module: &UNFOLD,
    entry: "unfold",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};
const FOLD: Kernel = Kernel {
    module: &UNFOLD,
    entry: "fold",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};

/// Positions one unfold or fold invocation writes (`RUN` in unfold.wgsl).
const RUN: usize = 32;

/// Window geometry per spatial axis (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Window {
    /// Output positions along axis `a` of an input of length `len`, or
    /// None when the dilated kernel does not fit the padded input.
    pub fn out_len(&self, a: usize, len: usize) -> Option<usize> {
        let span = self.dilation[a] * (self.kernel[a] - 1) + 1;
        let padded = len + 2 * self.padding[a];
        (padded >= span).then(|| (padded - span) / self.stride[a] + 1)
    }

    fn params(&self, n: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Params {
        Params::new(n, 1)
            .slot(0, &[h, w, oh, ow, self.kernel[0], self.kernel[1]])
            .slot(
                1,
                &[
                    self.stride[0],
                    self.stride[1],
                    self.padding[0],
                    self.padding[1],
                    self.dilation[0],
                    self.dilation[1],
                ],
            )
    }
}

/// The windows of `images` images `[C, H, W]` (N images, or K·N tangent
/// rows of them): `[images, C, kh, kw, OH, OW]`.
fn windows(
    dev: &Device,
    src: &Storage,
    images: usize,
    (c, h, w): (usize, usize, usize),
    win: Window,
    (oh, ow): (usize, usize),
) -> Result<Storage> {
    let total = images * c * win.kernel[0] * win.kernel[1] * oh * ow;
    let out = dev.alloc("unfold output", total)?;
    if total > 0 {
        // One invocation per run of RUN (unfold.wgsl) positions of a row.
        let runs = (total / ow) * ow.div_ceil(RUN);
        dev.dispatch(
            &UNFOLD_KERNEL,
            &[],
            &win.params(runs, (h, w), (oh, ow)),
            &[src, &out],
            groups_for(runs as u64),
        );
    }
    Ok(out)
}

/// `[N, C, H, W]` → `[N, C, kh, kw, OH, OW]`.
pub(crate) fn unfold(x: &Tensor, win: Window, op: &'static str) -> Result<Tensor> {
    check_operands(x, &[])?;
    let [n, c, h, w] = *x.shape() else {
        return Err(invalid(
            op,
            format!("input must be [N, C, H, W], got {:?}", x.shape()),
        ));
    };
    if win.kernel.contains(&0) || win.stride.contains(&0) || win.dilation.contains(&0) {
        return Err(invalid(
            op,
            "kernel size, stride and dilation must be at least 1",
        ));
    }
    let (Some(oh), Some(ow)) = (win.out_len(0, h), win.out_len(1, w)) else {
        return Err(invalid(
            op,
            format!(
                "a {}×{} kernel (dilation {:?}) does not fit the {h}×{w} input padded by {:?}",
                win.kernel[0], win.kernel[1], win.dilation, win.padding
            ),
        ));
    };
    let shape = vec![n, c, win.kernel[0], win.kernel[1], oh, ow];
    let dev = x.device();
    let out = windows(dev, &x.inner.data, n, (c, h, w), win, (oh, ow))?;
    record(dev, Op::Unfold(win), &[x], out, shape)
}

/// The fold of all K cotangent rows `[K, N, C, kh, kw, OH, OW]` into
/// `[K, N, C, H, W]`.
pub(crate) fn vjp(cx: &VjpCtx, win: Window) -> Result<Contributions> {
    let in_shape = &cx.inputs[0].shape;
    let (h, w) = (in_shape[2], in_shape[3]);
    let (oh, ow) = (cx.out_shape[4], cx.out_shape[5]);
    let total = cx.k * numel(in_shape);
    let out = cx.dev.alloc("fold output", total)?;
    if total > 0 {
        // One invocation per run of RUN positions of an input row.
        let runs = (total / w) * w.div_ceil(RUN);
        let unit = win.stride == [1, 1];
        cx.dev.dispatch(
            &FOLD,
            &[("UNIT_STRIDE", flag(unit))],
            &win.params(runs, (h, w), (oh, ow)),
            &[cx.g, &out],
            groups_for(runs as u64),
        );
    }
    Ok(vec![Some(Arc::new(out))])
}

/// The windows of all K tangent rows, more images to the kernel.
pub(crate) fn jvp(cx: &JvpCtx, win: Window) -> Result<Arc<Storage>> {
    let [n, c, h, w] = *cx.inputs[0].shape else {
        return Err(invalid("jvp", "unfold's input is not [N, C, H, W]"));
    };
    let (oh, ow) = (cx.out_shape[4], cx.out_shape[5]);
    let out = windows(cx.dev, cx.only()?, cx.k * n, (c, h, w), win, (oh, ow))?;
    Ok(Arc::new(out))
}
