//! Reading buffers back to the host: copies into mappable staging buffers
//! (one, or 4 MiB chunks past that: `staging.rs` pools them), submitted
//! together with all pending work (one submit), then one map of each. It
//! reads storages, not tensors (`tape/tensor.rs` reads tensors through it).

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::lock::Recover;
use crate::runtime::device::Device;
use crate::runtime::encoder::new_encoder;
use crate::runtime::pool::Storage;
use crate::runtime::staging::Chunks;

/// Where each tensor's values lie in a staging buffer: copies start at
/// multiples of 16 bytes (wgpu needs 4 for copies, 8 for map offsets).
fn layout(lens: &[usize]) -> (Vec<u64>, u64) {
    let mut offsets = Vec::with_capacity(lens.len());
    let mut end = 0u64;
    for &len in lens {
        offsets.push(end);
        end += (len as u64 * 4).next_multiple_of(16);
    }
    (offsets, end.max(16))
}

/// Staging buffers being mapped for one readback, and the vectors their
/// values go into.
struct Read {
    staging: Chunks,
    offsets: Vec<u64>,
    out: Vec<Vec<f32>>,
}

/// An empty vector with room for `len` values, each page of which has been
/// written once. Called while the device works: a large vector's memory is
/// usually fresh from the OS, and its first touches are page faults
/// (about 1.8 µs per 4 KiB on the CPU adapter here, 15 ms for 32 MiB)
/// that then overlap the device's work instead of following it. Memory
/// the allocator reuses costs one write per page.
fn touched(len: usize) -> Vec<f32> {
    const PAGE: usize = 4096 / 4;
    let mut values = Vec::with_capacity(len);
    let room = values.spare_capacity_mut();
    for value in room.iter_mut().step_by(PAGE) {
        value.write(0.0);
    }
    if let Some(last) = room.last_mut() {
        last.write(0.0);
    }
    values
}

/// Completed by the map callback.
type Mapped = futures::channel::oneshot::Receiver<Result<()>>;

impl Device {
    /// Copies the first `len` values of each storage into staging buffers,
    /// submitting the pending work with the copies (one submit), and
    /// starts mapping them: one receiver per staging buffer.
    fn start_read(&self, items: &[(&Storage, usize)]) -> Result<(Read, Vec<Mapped>)> {
        self.check_alive()?;
        self.run_deferred();
        let lens: Vec<usize> = items.iter().map(|(_, len)| *len).collect();
        let (offsets, bytes) = layout(&lens);
        let shared = &*self.shared;
        let relieve = || self.relieve();
        let staging =
            (shared.staging).take_chunks(&shared.device, &shared.pool, bytes, &relieve)?;
        // As in `flush`: take, record the copies and submit under one lock.
        let mut pending = self.shared.pending.locked();
        let mut encoder = pending
            .take()
            .unwrap_or_else(|| new_encoder(&self.shared.device));
        for ((storage, len), &offset) in items.iter().zip(&offsets) {
            for piece in staging.pieces(offset, *len as u64 * 4) {
                let chunk = &staging.buffers[piece.chunk];
                let source = storage.buffer();
                encoder.copy_buffer_to_buffer(source, piece.from, chunk, piece.at, piece.len);
            }
        }
        self.submit(encoder);
        drop(pending);
        let counters = &self.shared.pool.counters;
        counters.readbacks.fetch_add(1, Ordering::Relaxed);
        let mapped = (staging.buffers.iter().enumerate())
            .map(|(i, chunk)| {
                let (tx, mapped) = futures::channel::oneshot::channel();
                chunk
                    .slice(..staging.used(i))
                    .map_async(wgpu::MapMode::Read, move |r| {
                        let r = r.map_err(|e| Error::Gpu(format!("reading back a tensor: {e}")));
                        let _ = tx.send(r);
                    });
                mapped
            })
            .collect();
        let out = lens.iter().map(|&len| touched(len)).collect();
        let read = Read {
            staging,
            offsets,
            out,
        };
        Ok((read, mapped))
    }

    /// The values of a mapped readback; the staging buffers go back to the
    /// pool.
    fn finish_read(&self, read: Read, lens: &[usize]) -> Result<Vec<Vec<f32>>> {
        let Read {
            staging,
            offsets,
            mut out,
        } = read;
        {
            let views = (staging.buffers.iter().enumerate())
                .map(|(i, chunk)| chunk.slice(..staging.used(i)).get_mapped_range())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Gpu(format!("reading back a tensor: {e}")))?;
            for ((&offset, &len), values) in offsets.iter().zip(lens).zip(&mut out) {
                for piece in staging.pieces(offset, len as u64 * 4) {
                    let bytes = &views[piece.chunk][piece.at as usize..][..piece.len as usize];
                    values.extend_from_slice(bytemuck::cast_slice::<u8, f32>(bytes));
                }
            }
        }
        for chunk in &staging.buffers {
            chunk.unmap();
        }
        (self.shared.staging).give_back_all(staging.buffers, &self.shared.pool);
        Ok(out)
    }

    /// Blocking read of `len` f32 values of each storage: one submit, one
    /// map per staging buffer.
    pub(crate) fn read_many(&self, items: &[(&Storage, usize)]) -> Result<Vec<Vec<f32>>> {
        let lens: Vec<usize> = items.iter().map(|(_, len)| *len).collect();
        let (read, mut mapped) = self.start_read(items)?;
        self.wait()?;
        // The copies are done once `wait` returns, but a map callback runs
        // on whichever thread polled the device: when another thread's poll
        // collected it, it may still be on its way here. wgpu always calls a
        // map callback (with an error if the device is lost), so wait for
        // each, polling, with a deadline as a safety net.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for mapped in &mut mapped {
            loop {
                match mapped.try_recv() {
                    Ok(Some(result)) => break result?,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        self.shared
                            .device
                            .poll(wgpu::PollType::Poll)
                            .map_err(|e| Error::DeviceLost(e.to_string()))?;
                        self.check_alive()?;
                        std::thread::yield_now();
                    }
                    _ => return Err(self.lost_or("the readback did not complete")),
                }
            }
        }
        self.finish_read(read, &lens)
    }

    /// Blocking read of `len` f32 values.
    pub(crate) fn read(&self, storage: &Storage, len: usize) -> Result<Vec<f32>> {
        Ok(self.read_many(&[(storage, len)])?.remove(0))
    }

    /// Non-blocking read. The task sleeps until the map callback completes
    /// the readback: a helper thread blocks in the driver until the copy is
    /// done (wgpu then runs the callback, which wakes the task), so nothing
    /// spins while the GPU works.
    pub(crate) async fn read_async(&self, storage: &Storage, len: usize) -> Result<Vec<f32>> {
        let (read, mapped) = self.start_read(&[(storage, len)])?;
        let device = self.shared.device.clone();
        std::thread::spawn(move || {
            // An error here means the device is lost; the map callback then
            // reports it.
            let _ = device.poll(wgpu::PollType::wait_indefinitely());
        });
        for mapped in mapped {
            match mapped.await {
                Ok(result) => result?,
                Err(_) => return Err(self.lost_or("the readback was cancelled")),
            }
        }
        Ok(self.finish_read(read, &[len])?.remove(0))
    }

    fn lost_or(&self, msg: &str) -> Error {
        match self.check_alive() {
            Err(e) => e,
            Ok(()) => Error::Gpu(msg.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::touched;

    /// Room for every value, and nothing in it yet (the readback appends).
    #[test]
    fn touched_vectors_are_empty_with_room_for_every_value() {
        for len in [0, 1, 1023, 1024, 1025, 3 << 20] {
            let values = touched(len);
            assert!(values.is_empty() && values.capacity() >= len, "{len}");
        }
    }
}
