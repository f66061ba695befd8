//! Shape ops built from the layout primitives (reshape, concat,
//! index_select): squeeze, unsqueeze, flatten, stack, pad and flip. Their
//! adjoints are those of the primitives (reshape ↔ reshape, concat ↔
//! narrow, index_select ↔ scatter-add), so nothing here has a rule.

use crate::error::{Result, invalid};
use crate::ops::concat::concat;
use crate::ops::layout::check_axis;
use crate::tape::tensor::Tensor;

impl Tensor {
    /// Removes axis `axis`, which must have length 1 (as JAX; PyTorch
    /// leaves other axes alone, which hides mistakes).
    pub fn squeeze(&self, axis: usize) -> Result<Tensor> {
        check_axis("squeeze", axis, self.rank())?;
        if self.shape()[axis] != 1 {
            return Err(invalid(
                "squeeze",
                format!(
                    "axis {axis} of {:?} has length {}, not 1",
                    self.shape(),
                    self.shape()[axis]
                ),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        self.reshape(&shape)
    }

    /// Inserts an axis of length 1 before axis `axis` (`axis == rank`
    /// appends it).
    pub fn unsqueeze(&self, axis: usize) -> Result<Tensor> {
        if axis > self.rank() {
            return Err(invalid(
                "unsqueeze",
                format!(
                    "axis {axis} is out of range for rank {} (at most the rank)",
                    self.rank()
                ),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Merges axes `start..=end` into one (a rank-0 tensor flattens to
    /// `[1]` with `flatten(0, 0)`).
    pub fn flatten(&self, start: usize, end: usize) -> Result<Tensor> {
        if self.rank() == 0 && start == 0 && end == 0 {
            return self.reshape(&[1]);
        }
        if start > end || end >= self.rank() {
            return Err(invalid(
                "flatten",
                format!(
                    "axes {start}..={end} are not a range of the axes of {:?}",
                    self.shape()
                ),
            ));
        }
        let s = self.shape();
        let merged: usize = s[start..=end].iter().product();
        let shape = [&s[..start], &[merged], &s[end + 1..]].concat();
        self.reshape(&shape)
    }

    /// Pads each axis with `pads[d] = (before, after)` elements of `value`
    /// (one pair per axis). The gradient of the padding is dropped.
    pub fn pad(&self, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
        if pads.len() != self.rank() {
            return Err(invalid(
                "pad",
                format!(
                    "{} (before, after) pairs for a tensor of rank {}; give one per axis",
                    pads.len(),
                    self.rank()
                ),
            ));
        }
        let mut out = self.clone();
        for (axis, &(before, after)) in pads.iter().enumerate() {
            if before == 0 && after == 0 {
                continue;
            }
            let side = |len: usize| -> Result<Tensor> {
                let mut shape = out.shape().to_vec();
                shape[axis] = len;
                out.device().full(&shape, value)
            };
            let mut parts = Vec::new();
            let (b, a) = (side(before)?, side(after)?);
            if before > 0 {
                parts.push(&b);
            }
            parts.push(&out);
            if after > 0 {
                parts.push(&a);
            }
            out = concat(&parts, axis)?;
        }
        Ok(out)
    }

    /// Reverses the order of the elements along each of `axes`.
    pub fn flip(&self, axes: &[usize]) -> Result<Tensor> {
        let mut out = self.clone();
        for (i, &axis) in axes.iter().enumerate() {
            check_axis("flip", axis, self.rank())?;
            if axes[..i].contains(&axis) {
                return Err(invalid("flip", format!("axis {axis} is given twice")));
            }
            let n = self.shape()[axis] as u32;
            let reversed: Vec<u32> = (0..n).rev().collect();
            out = out.index_select(axis, &reversed)?;
        }
        Ok(out)
    }
}

/// Joins tensors of one shape along a new axis `axis` (`axis <= rank`).
pub fn stack(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = tensors.first() else {
        return Err(invalid("stack", "needs at least one tensor"));
    };
    if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
        return Err(crate::error::Error::ShapeMismatch {
            op: "stack",
            lhs: first.shape().to_vec(),
            rhs: t.shape().to_vec(),
        });
    }
    let parts = tensors
        .iter()
        .map(|t| t.unsqueeze(axis))
        .collect::<Result<Vec<_>>>()?;
    concat(&parts.iter().collect::<Vec<_>>(), axis)
}
