//! Shape rules shared by every layer: the rank bound, validation, NumPy
//! broadcasting, strides. Pure functions of shapes; they know no device.

use crate::error::{Error, Result, invalid};

/// The highest rank a tensor may have: kernels read shapes and strides
/// from parameter slots of this many words (`Params` in
/// `runtime/kernels.rs`).
pub(crate) const MAX_RANK: usize = 6;

/// Element count; saturates at `usize::MAX` (no such tensor fits in a
/// buffer: the size check reports it as `TooLarge`).
pub(crate) fn numel(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX)
}

pub(crate) fn check_rank(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(invalid(
            op,
            format!(
                "shape {shape:?} has rank {}; at most {MAX_RANK} is supported",
                shape.len()
            ),
        ));
    }
    // A nonempty tensor with a dimension this large cannot fit in any
    // buffer, and the size check says so (TooLarge); an empty one allocates
    // nothing, but its dimensions still have to fit the kernels' u32s.
    if numel(shape) == 0 && shape.iter().any(|&d| d > u32::MAX as usize / 4) {
        return Err(invalid(
            op,
            format!("shape {shape:?} has a dimension too large for 32-bit indexing"),
        ));
    }
    Ok(())
}

/// Row-major (C-order) strides.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// NumPy broadcasting: align on the right; each pair of dims equal or one is 1.
pub(crate) fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                });
            }
        };
    }
    Ok(out)
}

/// `shape` padded with leading 1s to `rank`.
pub(crate) fn left_pad(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut padded = vec![1; rank - shape.len()];
    padded.extend_from_slice(shape);
    padded
}

/// Strides that read an operand of `shape` at every index of `out` (its
/// broadcast), with 0 on the axes it is repeated along.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let padded = left_pad(shape, out.len());
    let strides = contiguous_strides(&padded);
    padded
        .iter()
        .zip(out)
        .zip(strides)
        .map(|((&d, &o), s)| if d == o { s } else { 0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes("t", &[], &[2, 3]).unwrap(), vec![2, 3]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
