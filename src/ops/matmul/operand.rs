//! A GEMM operand as a strided view (a transpose is swapped strides, a
//! batch entry an offset), and what its layout lets the kernels read as
//! vec4s.

use crate::runtime::pool::Storage;

/// One GEMM operand: element (i, p) of batch entry z at
/// `off + Σ batch_index_d · batch_strides_d + i·rs + p·cs`.
#[derive(Clone)]
pub(super) struct Operand<'a> {
    pub(super) buf: &'a Storage,
    pub(super) rs: usize,
    pub(super) cs: usize,
    pub(super) batch_strides: Vec<usize>,
    pub(super) off: usize,
}

impl<'a> Operand<'a> {
    /// A row-major `rows × cols` matrix per batch entry.
    pub(super) fn plain(buf: &'a Storage, cols: usize, batch_strides: Vec<usize>) -> Self {
        Operand {
            buf,
            rs: cols,
            cs: 1,
            batch_strides,
            off: 0,
        }
    }

    /// The same values read transposed: element (i, p) is this one's (p, i).
    pub(super) fn t(&self) -> Self {
        Operand {
            rs: self.cs,
            cs: self.rs,
            ..self.clone()
        }
    }

    /// The transpose of a row-major `rows × cols` matrix per batch entry:
    /// element (i, p) is the matrix's (p, i).
    pub(super) fn transposed(buf: &'a Storage, cols: usize, batch_strides: Vec<usize>) -> Self {
        Operand {
            buf,
            rs: 1,
            cs: cols,
            batch_strides,
            off: 0,
        }
    }
}

/// Whether `matmul_quads` can read B (`n` columns per batch entry) four
/// columns at a time: `Some(true)` as vec4s along its contiguous columns,
/// `Some(false)` along its contiguous rows, `None` where neither is aligned.
pub(super) fn b_quads(b: &Operand, n: usize) -> Option<bool> {
    let aligned = |contiguous: bool, stride: usize| {
        contiguous
            && [stride, b.off, n]
                .iter()
                .chain(&b.batch_strides)
                .all(|s| s.is_multiple_of(4))
    };
    if aligned(b.rs == 1, b.cs) {
        Some(true)
    } else if aligned(b.cs == 1, b.rs) {
        Some(false)
    } else {
        None
    }
}
