//! Convolution and pooling, composed from `unfold` (im2col,
//! `ops/unfold.rs`), the GEMM and reductions, so every adjoint is one of
//! theirs and takes all K cotangents at once: dX is the GEMM `Wᵀ·G` over
//! all K·N images followed by one fold; dW is one GEMM `G·colsᵀ` with K as
//! a batch axis, summed over the images; max-pooling routes each cotangent
//! through the saved argmax and folds it back (no atomics anywhere).

use crate::error::{Result, invalid};
use crate::ops::unfold::{Window, unfold};
use crate::tape::tensor::Tensor;

/// Convolution geometry, the same for every spatial axis: stride, zero
/// padding on each side, dilation of the kernel, and channel groups
/// (input and output channels split into `groups` independent groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Step between windows (≥ 1).
    pub stride: usize,
    /// Zeros added before and after each spatial axis.
    pub padding: usize,
    /// Spacing between kernel taps (≥ 1; 1 is a dense kernel).
    pub dilation: usize,
    /// Channel groups (≥ 1; C and O must be multiples of it).
    pub groups: usize,
}

impl Default for ConvOptions {
    /// stride 1, padding 0, dilation 1, groups 1.
    fn default() -> Self {
        ConvOptions {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// y = W ⋆ x for x `[N, C, H, W]`, weight `[O, C/g, kh, kw]`, `win`'s
/// geometry: windows `[N, g, C/g·kh·kw, L]` times the weights
/// `[g, O/g, C/g·kh·kw]`, one batched GEMM, reshaped to `[N, O, OH, OW]`.
fn conv(
    x: &Tensor,
    weight: &Tensor,
    win: Window,
    groups: usize,
    op: &'static str,
) -> Result<Tensor> {
    let (&[n, c, _, _], &[o, cg, kh, kw]) = (x.shape(), weight.shape()) else {
        return Err(shape_error(op, x, weight));
    };
    if groups == 0 || c % groups != 0 || o % groups != 0 || cg * groups != c {
        return Err(invalid(
            op,
            format!(
                "{c} input and {o} output channels in {groups} groups need a weight of \
                 [{o}, {}, …]; got {:?}",
                c / groups.max(1),
                weight.shape()
            ),
        ));
    }
    if [kh, kw] != win.kernel {
        return Err(shape_error(op, x, weight));
    }
    let cols = unfold(x, win, op)?;
    let (oh, ow) = (cols.shape()[4], cols.shape()[5]);
    let (l, ck) = (oh * ow, cg * kh * kw);
    let y = if groups == 1 {
        // One matrix for every image: the GEMM folds the N images into its
        // columns (see matmul's `gemm`).
        let w = weight.reshape(&[o, ck])?;
        w.matmul(&cols.reshape(&[n, ck, l])?)?
    } else {
        let w = weight.reshape(&[groups, o / groups, ck])?;
        w.matmul(&cols.reshape(&[n, groups, ck, l])?)?
    };
    y.reshape(&[n, o, oh, ow])
}

fn shape_error(op: &'static str, x: &Tensor, weight: &Tensor) -> crate::error::Error {
    invalid(
        op,
        format!(
            "input {:?} and weight {:?}: conv2d takes [N, C, H, W] and [O, C/groups, kh, kw], \
             conv1d [N, C, W] and [O, C/groups, k]",
            x.shape(),
            weight.shape()
        ),
    )
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`, no
    /// bias) of `[N, C, H, W]` with `weight` `[O, C/groups, kh, kw]`:
    /// `[N, O, OH, OW]`, OH = (H + 2·padding − dilation·(kh − 1) − 1) / stride + 1.
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// use pullback::ConvOptions;
    /// let dev = pullback::Device::new()?;
    /// // One 3×3 image, one 2×2 kernel that sums its window.
    /// let x = dev.tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &[1, 1, 3, 3])?;
    /// let w = dev.tensor(&[1.0; 4], &[1, 1, 2, 2])?.requires_grad();
    /// let y = x.conv2d(&w, ConvOptions::default())?;
    /// assert_eq!(y.shape(), &[1, 1, 2, 2]);
    /// assert_eq!(y.to_vec()?, vec![12.0, 16.0, 24.0, 28.0]);
    /// // ∂Σy/∂w[i, j]: the sum of the inputs under tap (i, j) over the windows.
    /// y.sum_all()?.backward()?;
    /// assert_eq!(w.grad().unwrap().to_vec()?, vec![12.0, 16.0, 24.0, 28.0]);
    /// # Ok(()) }
    /// ```
    pub fn conv2d(&self, weight: &Tensor, options: ConvOptions) -> Result<Tensor> {
        let kernel = match weight.shape() {
            [_, _, kh, kw] => [*kh, *kw],
            _ => return Err(shape_error("conv2d", self, weight)),
        };
        let win = Window {
            kernel,
            stride: [options.stride; 2],
            padding: [options.padding; 2],
            dilation: [options.dilation; 2],
        };
        conv(self, weight, win, options.groups, "conv2d")
    }

    /// 1-D convolution of `[N, C, W]` with `weight` `[O, C/groups, k]`:
    /// `[N, O, OW]` (conv2d over a height of 1).
    pub fn conv1d(&self, weight: &Tensor, options: ConvOptions) -> Result<Tensor> {
        let (3, [_, _, k]) = (self.rank(), weight.shape()) else {
            return Err(shape_error("conv1d", self, weight));
        };
        let win = Window {
            kernel: [1, *k],
            stride: [1, options.stride],
            padding: [0, options.padding],
            dilation: [1, options.dilation],
        };
        let y = conv(
            &self.unsqueeze(2)?,
            &weight.unsqueeze(2)?,
            win,
            options.groups,
            "conv1d",
        )?;
        y.squeeze(2)
    }

    /// Max pooling of `[N, C, H, W]` over `kernel`×`kernel` windows every
    /// `stride` (no padding). The gradient goes to the first maximal element
    /// of each window, in row-major order within the window (ties: the
    /// top-left-most); NaN counts as maximal.
    pub fn max_pool2d(&self, kernel: usize, stride: usize) -> Result<Tensor> {
        pool(self, kernel, stride, "max_pool2d")?.max(2, false)
    }

    /// Average pooling of `[N, C, H, W]` over `kernel`×`kernel` windows
    /// every `stride` (no padding); each window's gradient is spread evenly.
    pub fn avg_pool2d(&self, kernel: usize, stride: usize) -> Result<Tensor> {
        pool(self, kernel, stride, "avg_pool2d")?.mean(&[2], false)
    }
}

/// The windows of a pooling op, `[N, C, k·k, OH, OW]`.
fn pool(x: &Tensor, kernel: usize, stride: usize, op: &'static str) -> Result<Tensor> {
    let win = Window {
        kernel: [kernel; 2],
        stride: [stride; 2],
        padding: [0; 2],
        dilation: [1; 2],
    };
    let cols = unfold(x, win, op)?;
    let s = cols.shape();
    cols.reshape(&[s[0], s[1], kernel * kernel, s[4], s[5]])
}
