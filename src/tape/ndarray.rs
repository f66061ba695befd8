//! Conversions between [`Tensor`] and `ndarray` arrays (feature `ndarray`).
//!
//! A tensor is row-major and contiguous; an ndarray array may have any
//! strides (a transpose, a permutation, a stepped slice). Conversion goes
//! by logical index, so `t.to_ndarray()?[[i, j]] == a[[i, j]]` whatever the
//! array's memory layout.

use std::borrow::Cow;

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::error::{Result, invalid};
use crate::runtime::device::Device;
use crate::tape::tensor::Tensor;

impl Device {
    /// A tensor with `a`'s shape and values. Element `[i₀, …, iₙ]` of the
    /// tensor is `a[[i₀, …, iₙ]]`: an array in standard (row-major,
    /// contiguous) layout is uploaded from its memory as it is; any other
    /// layout (`a.t()`, `permuted_axes`, stepped slices, views) is first
    /// gathered on the host in logical order. Ranks 0 to 6, as for
    /// [`Device::tensor`].
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// let dev = pullback::Device::new()?;
    /// let a = ndarray::arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]).reversed_axes(); // [3, 2]
    /// let t = dev.from_ndarray(&a)?;
    /// assert_eq!(t.shape(), &[3, 2]);
    /// assert_eq!(t.to_vec()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// assert_eq!(t.to_ndarray()?, a.into_dyn());
    /// # Ok(()) }
    /// ```
    pub fn from_ndarray<S, D>(&self, a: &ArrayBase<S, D>) -> Result<Tensor>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        // `as_slice` is Some exactly for the standard layout, whose memory
        // order is the logical order; `iter` walks any layout logically.
        let data: Cow<'_, [f32]> = match a.as_slice() {
            Some(values) => Cow::Borrowed(values),
            None => Cow::Owned(a.iter().copied().collect()),
        };
        self.tensor(&data, a.shape())
    }
}

impl Tensor {
    /// The values as an `ndarray::ArrayD<f32>` of the tensor's shape, in
    /// standard layout (submits pending work and waits, like
    /// [`Tensor::to_vec`]). Works for every tensor that can be read back,
    /// including rank-7 gradients of rank-6 inputs from
    /// [`crate::vjp_batched`].
    pub fn to_ndarray(&self) -> Result<ArrayD<f32>> {
        let values = self.to_vec()?;
        // The lengths agree by construction (to_vec reads numel values);
        // ndarray's check is reported, not unwrapped.
        ArrayD::from_shape_vec(IxDyn(self.shape()), values)
            .map_err(|e| invalid("to_ndarray", e.to_string()))
    }
}
