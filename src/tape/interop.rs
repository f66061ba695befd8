//! Zero-copy interop with the caller's own wgpu work: a tensor that wraps a
//! buffer the caller made, and pullback's buffer lent to the caller's
//! passes. Both rest on queue order: a command buffer sees the effects of
//! every one submitted before it, and pullback records its work into an
//! encoder that it submits later (at a readback, a backward pass, or
//! [`Tensor::wgpu_buffer`]).

use std::sync::Arc;

use crate::error::{Result, invalid};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::{check_rank, numel};
use crate::tape::tensor::Tensor;

impl Tensor {
    /// Wraps the caller's buffer as a tensor of `shape`, without copying.
    /// The buffer must have been created on `dev.wgpu_device()` with
    /// `STORAGE` and `COPY_SRC` usage (kernels bind it; reading back copies
    /// from it), and hold at least `numel · 4` bytes rounded up to 16
    /// (kernels read whole 4-float vectors). The values are the buffer's
    /// first `numel` f32s, row-major.
    ///
    /// Ordering: submit the work that writes the buffer before calling
    /// this, and do not write the buffer again while the tensor, or a graph
    /// that saved it, is alive: pullback's work that reads it may be
    /// submitted later. The tensor is a leaf; call
    /// [`Tensor::requires_grad`] to differentiate with respect to it.
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// use pullback::wgpu::{self, util::DeviceExt};
    /// let dev = pullback::Device::new()?;
    /// // The caller's own buffer, written by the caller's own upload.
    /// let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_ne_bytes()).collect();
    /// let buffer = dev.wgpu_device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
    ///     label: Some("mine"),
    ///     contents: &bytes,
    ///     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    /// });
    /// let x = pullback::Tensor::from_wgpu_buffer(&dev, buffer, &[2, 2])?.requires_grad();
    /// let y = x.mul(&x)?.sum_all()?;
    /// y.backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec()?, vec![2.0, 4.0, 6.0, 8.0]);
    /// # Ok(()) }
    /// ```
    pub fn from_wgpu_buffer(dev: &Device, buffer: wgpu::Buffer, shape: &[usize]) -> Result<Tensor> {
        check_rank("from_wgpu_buffer", shape)?;
        dev.check_alive()?;
        let usage = buffer.usage();
        let missing: Vec<&str> = [
            (wgpu::BufferUsages::STORAGE, "STORAGE"),
            (wgpu::BufferUsages::COPY_SRC, "COPY_SRC"),
        ]
        .iter()
        .filter(|(flag, _)| !usage.contains(*flag))
        .map(|(_, name)| *name)
        .collect();
        if !missing.is_empty() {
            return Err(invalid(
                "from_wgpu_buffer",
                format!(
                    "the buffer's usage {usage:?} lacks {}; create it with \
                     BufferUsages::STORAGE | BufferUsages::COPY_SRC",
                    missing.join(" and ")
                ),
            ));
        }
        let needed = (numel(shape) as u64 * 4).next_multiple_of(16).max(16);
        if buffer.size() < needed {
            return Err(invalid(
                "from_wgpu_buffer",
                format!(
                    "a tensor of shape {shape:?} needs a buffer of at least {needed} bytes \
                     (4 per element, rounded up to 16: kernels read whole 4-float vectors); \
                     this one has {}",
                    buffer.size()
                ),
            ));
        }
        if buffer.size() > dev.max_binding() {
            return Err(crate::error::Error::TooLarge {
                what: format!("a wrapped buffer for shape {shape:?}"),
                bytes: buffer.size(),
                limit: dev.max_binding(),
            });
        }
        let storage = Arc::new(Storage::from_user(buffer));
        Ok(Tensor::from_storage(dev, storage, shape.to_vec()))
    }

    /// Lends the tensor's buffer to the caller's own passes. Submits
    /// pullback's pending work first, so that any command buffer the
    /// caller submits afterwards sees the tensor's values; the borrow keeps
    /// the buffer from returning to pullback's pool while it is lent.
    ///
    /// The values are the first `numel` f32s ([`Tensor::wgpu_binding`]
    /// gives exactly that range): a pooled buffer can be larger. Read it
    /// only: tensors are immutable, and graphs may have saved this one. Do
    /// not keep a clone of the `wgpu::Buffer` past the tensor: once the
    /// tensor is dropped its buffer goes back to the pool and is reused.
    pub fn wgpu_buffer(&self) -> Result<&wgpu::Buffer> {
        self.device().flush()?;
        Ok(self.inner.data.buffer())
    }

    /// [`Tensor::wgpu_buffer`] as a binding of exactly the tensor's bytes
    /// (for `BindGroupEntry::resource`), after the same flush.
    pub fn wgpu_binding(&self) -> Result<wgpu::BufferBinding<'_>> {
        let buffer = self.wgpu_buffer()?;
        Ok(wgpu::BufferBinding {
            buffer,
            offset: 0,
            size: wgpu::BufferSize::new(self.numel() as u64 * 4),
        })
    }
}
