//! Reading tensors back to the host: copies into one mappable staging
//! buffer, submitted together with all pending work (one submit), then one
//! map. Staging buffers are pooled per device by size class, so a training
//! loop that reads the same sizes every step creates them once.

use crate::lock::Recover;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::device::{Device, new_encoder};
use crate::error::{Error, Result};
use crate::pool::{Storage, size_class};
use crate::tensor::Tensor;

/// Idle staging buffers by size; at most `KEEP_PER_SIZE` of each size and
/// `KEEP_BYTES` in all are kept (readbacks are usually a handful of sizes).
#[derive(Default)]
pub(crate) struct StagingPool {
    idle: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

const KEEP_PER_SIZE: usize = 2;
const KEEP_BYTES: u64 = 512 << 20;

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

/// A staging buffer being mapped for one readback.
struct Read {
    staging: wgpu::Buffer,
    offsets: Vec<u64>,
    bytes: u64,
}

/// Completed by the map callback.
type Mapped = futures::channel::oneshot::Receiver<Result<()>>;

impl StagingPool {
    #[cfg(test)]
    pub fn poison_locks(&self) {
        crate::lock::poison(&self.idle);
    }

    /// A buffer of at least `bytes` (at most the adapter's largest).
    fn take(&self, dev: &Device, bytes: u64) -> wgpu::Buffer {
        let class = size_class(bytes).min(dev.shared.pool.max_buffer);
        if let Some(buffer) = self.idle.locked().get_mut(&class).and_then(Vec::pop) {
            return buffer;
        }
        let counters = &dev.shared.pool.counters;
        counters.staging_allocations.fetch_add(1, Ordering::Relaxed);
        dev.shared.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pullback readback"),
            size: class,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn give_back(&self, buffer: wgpu::Buffer) {
        let mut idle = self.idle.locked();
        let held: u64 = idle.values().flatten().map(wgpu::Buffer::size).sum();
        let same = idle.entry(buffer.size()).or_default();
        if same.len() < KEEP_PER_SIZE && held + buffer.size() <= KEEP_BYTES {
            same.push(buffer);
        }
    }

    /// Drops every idle staging buffer.
    pub fn trim(&self) {
        self.idle.locked().clear();
    }
}

impl Device {
    /// Copies the first `len` values of each storage into one staging
    /// buffer, submitting the pending work with the copies (one submit),
    /// and starts mapping it.
    fn start_read(&self, items: &[(&Storage, usize)]) -> Result<(Read, Mapped)> {
        self.check_alive()?;
        self.run_chain();
        let lens: Vec<usize> = items.iter().map(|(_, len)| *len).collect();
        let (offsets, bytes) = layout(&lens);
        let staging = self.shared.staging.take(self, bytes);
        // As in `flush`: take, record the copies and submit under one lock.
        let mut pending = self.shared.pending.locked();
        let mut encoder = pending
            .take()
            .unwrap_or_else(|| new_encoder(&self.shared.device));
        for ((storage, len), offset) in items.iter().zip(&offsets) {
            if *len > 0 {
                encoder.copy_buffer_to_buffer(
                    storage.buffer(),
                    0,
                    &staging,
                    *offset,
                    *len as u64 * 4,
                );
            }
        }
        self.submit(encoder);
        drop(pending);
        let counters = &self.shared.pool.counters;
        counters.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, mapped) = futures::channel::oneshot::channel();
        staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r.map_err(|e| Error::Gpu(format!("reading back a tensor: {e}"))));
            });
        Ok((
            Read {
                staging,
                offsets,
                bytes,
            },
            mapped,
        ))
    }

    /// The values of a mapped readback; the staging buffer goes back to the pool.
    fn finish_read(&self, read: Read, lens: &[usize]) -> Result<Vec<Vec<f32>>> {
        let values = {
            let view = read
                .staging
                .slice(..read.bytes)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading back a tensor: {e}")))?;
            let all = bytemuck::cast_slice::<u8, f32>(&view);
            read.offsets
                .iter()
                .zip(lens)
                .map(|(&offset, &len)| all[offset as usize / 4..][..len].to_vec())
                .collect()
        };
        read.staging.unmap();
        self.shared.staging.give_back(read.staging);
        Ok(values)
    }

    /// Blocking read of `len` f32 values of each storage: one submit, one map.
    /// Past the largest buffer the adapter allows, one staging buffer per
    /// storage (each of which fits).
    pub(crate) fn read_many(&self, items: &[(&Storage, usize)]) -> Result<Vec<Vec<f32>>> {
        let lens: Vec<usize> = items.iter().map(|(_, len)| *len).collect();
        if items.len() > 1 && layout(&lens).1 > self.shared.pool.max_buffer {
            return items
                .iter()
                .map(|&item| self.read(item.0, item.1))
                .collect();
        }
        let (read, mut mapped) = self.start_read(items)?;
        self.wait()?;
        // The copy is done once `wait` returns, but the map callback runs on
        // whichever thread polled the device: when another thread's poll
        // collected it, it may still be on its way here. wgpu always calls a
        // map callback (with an error if the device is lost), so wait for it,
        // polling, with a deadline as a safety net.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
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
        match mapped.await {
            Ok(result) => result?,
            Err(_) => return Err(self.lost_or("the readback was cancelled")),
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

/// Reads several tensors back with one submit and one map (each
/// [`Tensor::to_vec`] is a submit and a map of its own). All must live on
/// the same device.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// let dev = pullback::Device::new()?;
/// let a = dev.tensor(&[1.0, 2.0], &[2])?;
/// let b = a.mul_scalar(3.0)?;
/// let values = pullback::read_all(&[&a, &b])?;
/// assert_eq!(values, vec![vec![1.0, 2.0], vec![3.0, 6.0]]);
/// # Ok(())
/// # }
/// ```
pub fn read_all(tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let dev = first.device();
    for t in tensors {
        if !t.device().same(dev) {
            return Err(Error::DeviceMismatch);
        }
    }
    let items: Vec<(&Storage, usize)> = tensors
        .iter()
        .map(|t| (&*t.inner.data, t.numel()))
        .collect();
    dev.read_many(&items)
}
