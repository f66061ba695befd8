//! Host data onto the device through pullback's own staging buffers (in
//! chunks past 4 MiB, `staging.rs`).
//!
//! wgpu stages an upload itself when a buffer that is not mappable is
//! created mapped, or written with `Queue::write_buffer`; its staging
//! allocation treats the driver's out-of-memory as fatal and loses the
//! device (wgpu 30: `StagingBuffer::new` → `handle_hal_error`), taking every
//! tensor with it. A buffer created `MAP_WRITE | COPY_SRC` and mapped at
//! creation needs no staging of wgpu's, and its creation reports
//! out-of-memory as an error (`Pool::retrying`). So an upload is: such a
//! buffer (one the upload staging pool kept mapped, or a new one), filled
//! on the host, and a copy into a pooled storage buffer recorded in the
//! pending encoder — in order with every dispatch recorded before it, so
//! the pooled buffer may be one whose last reader is still pending (the
//! copy lands after that read). The submit that carries the copy maps the
//! staging buffer again for the next upload (`staging.rs`). On lavapipe a
//! 16 MB upload took 3.3 ms with a new staging buffer each time (the
//! driver's allocation, wgpu zeroing the new mapping, the host copy, the
//! device copy) and 2.8 ms with a reused one.

use crate::error::{Error, Result};
use crate::lock::Recover;
use crate::runtime::device::Device;
use crate::runtime::encoder::new_encoder;
use crate::runtime::pool::Storage;

impl Device {
    /// A buffer holding `data` (f32 values, or u32 indices). It may exceed
    /// the binding limit (up to the largest buffer): ops then refuse it,
    /// readback works.
    pub(crate) fn upload<T: bytemuck::Pod>(&self, what: &str, data: &[T]) -> Result<Storage> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let len = bytes.len().div_ceil(4);
        if self.is_dry_run() {
            return self.take(what, len, false);
        }
        self.check_alive()?;
        let bindable = bytes.len() as u64 <= self.max_binding();
        let dst = self.take(what, len, bindable)?;
        if bytes.is_empty() {
            return Ok(dst);
        }
        let size = (bytes.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let shared = &*self.shared;
        let relieve = || self.relieve();
        let chunks = (shared.uploads).take_chunks(&shared.device, &shared.pool, size, &relieve)?;
        for piece in chunks.pieces(0, size) {
            let staging = &chunks.buffers[piece.chunk];
            let mut view = staging
                .slice(..piece.len)
                .get_mapped_range_mut()
                .map_err(|e| Error::Gpu(format!("mapping an upload buffer failed: {e}")))?;
            let from = piece.from as usize;
            let data = &bytes[from.min(bytes.len())..(from + piece.len as usize).min(bytes.len())];
            view.slice(..data.len()).copy_from_slice(data);
        }
        for staging in &chunks.buffers {
            staging.unmap();
        }
        // Into the pending encoder without running the deferred forward
        // chain: the copy's destination is no operand of it (the chain holds
        // its operands), so the chain may still grow past this upload.
        let mut pending = shared.pending.locked();
        let encoder = pending.get_or_insert_with(|| new_encoder(&shared.device));
        for piece in chunks.pieces(0, size) {
            let staging = &chunks.buffers[piece.chunk];
            encoder.copy_buffer_to_buffer(staging, 0, dst.buffer(), piece.from, piece.len);
        }
        // Mapped again for the next upload by the submit that runs the copy.
        for staging in chunks.buffers {
            shared.uploads.filled(staging);
        }
        Ok(dst)
    }
}
