//! Elementwise ops: unary (`unary.rs`), binary with NumPy broadcasting
//! (`binary.rs`, its forward-mode and second-order rules in
//! `binary_tangent.rs`), and forward fusion, which runs a chain of them as one
//! kernel (`chain.rs`, its kernel in `chain_kernel.rs`). `codegen.rs` is
//! the one WGSL emitter of both fusions (forward chains here, adjoint
//! regions in `autodiff/fusion/`).

pub(crate) mod binary;
pub(crate) mod binary_tangent;
pub(crate) mod chain;
mod chain_kernel;
pub(crate) mod codegen;
pub(crate) mod unary;

use crate::shape::{left_pad, numel};

pub(crate) use binary::BinaryOp;
pub(crate) use unary::UnaryOp;

/// An elementwise op as a composed kernel calls it: `unary_*` or
/// `binary_*` functions of `shaders/unary.wgsl` and `binary.wgsl`, with the
/// op's code as a literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elementwise {
    Unary(UnaryOp),
    Binary(BinaryOp),
}

/// How a kernel reads an operand of shape `x` broadcast to an output of
/// shape `out` (`A_MODE`/`B_MODE` in `binary.wgsl`; the reads of composed
/// kernels, `codegen.rs`): the output's shape; its trailing axes with a
/// length that is a multiple of 4 (a bias row, read as vec4s at
/// `i % len`); its leading axes, the rest broadcast over a multiple of 4
/// elements (a column, one value per four outputs); otherwise through
/// strides, element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadMode {
    Same = 0,
    Suffix = 1,
    Prefix = 2,
    Strided = 3,
}

impl ReadMode {
    /// The mode for `x` read at every index of `out`, and the length that
    /// mode needs (Suffix: `x`'s; Prefix: the run each value covers).
    pub fn of(x: &[usize], out: &[usize]) -> (ReadMode, usize) {
        let padded = left_pad(x, out.len());
        if padded == out {
            return (ReadMode::Same, 0);
        }
        let len = numel(x);
        // Leading axes of size 1, then exactly the output's trailing axes.
        let first = padded.iter().position(|&d| d != 1).unwrap_or(out.len());
        if padded[first..] == out[first..] && len.is_multiple_of(4) && len > 0 {
            return (ReadMode::Suffix, len);
        }
        // The output's leading axes, then axes of size 1.
        let last = padded.iter().rposition(|&d| d != 1).map_or(0, |p| p + 1);
        let per: usize = out[last..].iter().product();
        if padded[..last] == out[..last] && per.is_multiple_of(4) && per > 0 {
            return (ReadMode::Prefix, per);
        }
        (ReadMode::Strided, 0)
    }

    /// The value of the override constant that selects it.
    pub fn constant(self) -> f64 {
        self as u32 as f64
    }
}
