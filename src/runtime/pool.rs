//! Per-device buffer pool and the `Storage` handle that returns its buffer to
//! the pool when the last reference goes away.
//!
//! Reusing a buffer as soon as its last reader has been *encoded* (not
//! executed) is safe: every dispatch goes through one queue in submission
//! order, and wgpu inserts a barrier between dispatches that touch the same
//! storage buffer. Host uploads never write into pooled buffers (they use a
//! fresh mapped-at-creation buffer, or `queue.write_buffer` into an idle
//! buffer freed before the last submit: see `Pool::take_settled`), so the
//! write cannot clobber a buffer that a pending dispatch still reads.

use crate::lock::Recover;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Counters of the work a device did; see [`crate::Device::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Command buffers submitted to the queue.
    pub submits: u64,
    /// Compute dispatches encoded.
    pub dispatches: u64,
    /// Bytes in buffers currently held by tensors, saved values and cotangents.
    pub live_bytes: u64,
    /// The most `live_bytes` ever reached (see [`crate::Device::reset_peak`]).
    pub peak_bytes: u64,
    /// Bytes in idle buffers kept by the pool for reuse.
    pub pooled_bytes: u64,
    /// Buffers created with the GPU (pool misses).
    pub allocations: u64,
    /// Readbacks to the host (each one submit and one map, however many
    /// tensors it reads: [`crate::read_all`]).
    pub readbacks: u64,
    /// Mappable staging buffers created for readbacks (they are pooled).
    pub staging_allocations: u64,
}

/// Live and peak bytes plus event counts. A device has one; a dry run
/// (see [`crate::Device::dry_run`]) tallies its virtual buffers in another.
#[derive(Default)]
pub(crate) struct Counters {
    pub submits: AtomicU64,
    pub dispatches: AtomicU64,
    live: AtomicU64,
    peak: AtomicU64,
    pooled: AtomicU64,
    allocations: AtomicU64,
    pub readbacks: AtomicU64,
    pub staging_allocations: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            submits: self.submits.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            live_bytes: self.live.load(Ordering::Relaxed),
            peak_bytes: self.peak.load(Ordering::Relaxed),
            pooled_bytes: self.pooled.load(Ordering::Relaxed),
            allocations: self.allocations.load(Ordering::Relaxed),
            readbacks: self.readbacks.load(Ordering::Relaxed),
            staging_allocations: self.staging_allocations.load(Ordering::Relaxed),
        }
    }

    pub fn reset_peak(&self) {
        self.peak
            .store(self.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn add_live(&self, bytes: u64) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub_live(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The most live bytes reached (the peak of a dry run's tally).
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Buffers usable by every kernel: storage plus both copy directions.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Rounds a request up to a size class: multiples of 16 bytes (so every buffer
/// can be read as `array<vec4<f32>>`), and above 4 KiB four classes per octave,
/// which bounds the waste at 25% while letting similar sizes share buffers.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16).next_multiple_of(16);
    if bytes <= 4096 {
        return bytes;
    }
    let step = 1u64 << (63 - bytes.leading_zeros() - 2);
    bytes.next_multiple_of(step)
}

pub(crate) struct Pool {
    device: wgpu::Device,
    /// Idle buffers by size class, each with the submit count when it was
    /// freed (see [`Pool::take_settled`]).
    free: Mutex<HashMap<u64, Vec<(wgpu::Buffer, u64)>>>,
    pub counters: Counters,
    /// Largest buffer the adapter lets us bind as storage (kernel operands).
    pub max_binding: u64,
    /// Largest buffer the adapter lets us create (tensors that are only
    /// copied: results assembled from chunks, uploads, readbacks).
    pub max_buffer: u64,
    /// Idle bytes kept for reuse at most; buffers past it are released.
    idle_limit: AtomicU64,
}

/// Default for [`Pool::set_idle_limit`]: enough to keep a training step's
/// working set, small enough not to hoard memory when sizes keep changing.
pub(crate) const DEFAULT_IDLE_LIMIT: u64 = 1 << 30;

impl Pool {
    #[cfg(test)]
    pub fn poison_locks(&self) {
        crate::lock::poison(&self.free);
    }

    pub fn new(device: wgpu::Device, limits: &wgpu::Limits) -> Self {
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Pool {
            device,
            free: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            max_binding,
            max_buffer: limits.max_buffer_size,
            idle_limit: AtomicU64::new(DEFAULT_IDLE_LIMIT),
        }
    }

    /// `bytes` must fit a buffer a kernel can bind (`bindable`), or one that
    /// is only copied.
    pub fn check_size(&self, what: &str, bytes: u64, bindable: bool) -> Result<()> {
        let limit = if bindable {
            self.max_binding
        } else {
            self.max_buffer
        };
        // `bytes` first: size_class would overflow near u64::MAX.
        if bytes > limit || size_class(bytes) > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// A buffer of at least `bytes` bytes, from the pool when one is idle;
    /// `bindable`: small enough for a kernel to bind. Its contents are
    /// unspecified: every kernel writes all of its output.
    pub fn take(self: &Arc<Self>, what: &str, bytes: u64, bindable: bool) -> Result<Storage> {
        self.check_size(what, bytes, bindable)?;
        let class = size_class(bytes);
        // Pop and uncount under one lock, as give_back counts and pushes.
        let reused = {
            let mut free = self.free.locked();
            let b = free.get_mut(&class).and_then(Vec::pop);
            if b.is_some() {
                self.counters.pooled.fetch_sub(class, Ordering::Relaxed);
            }
            b.map(|(buffer, _)| buffer)
        };
        let buffer = match reused {
            Some(b) => b,
            None => self.create(class, false)?,
        };
        self.counters.add_live(class);
        Ok(Storage {
            buffer: Some(buffer),
            class,
            home: Home::Pool(self.clone()),
        })
    }

    /// An idle buffer of at least `bytes` that no unsubmitted command can
    /// still read: it was freed before the last submit, so everything that
    /// used it has been submitted. `queue.write_buffer` into it (which lands
    /// at the start of the next submit) is then ordered after those uses.
    /// None when there is no such buffer.
    pub fn take_settled(self: &Arc<Self>, bytes: u64) -> Option<Storage> {
        let class = size_class(bytes);
        let submits = self.counters.submits.load(Ordering::Relaxed);
        let buffer = {
            let mut free = self.free.locked();
            let list = free.get_mut(&class)?;
            let i = list.iter().position(|(_, freed_at)| *freed_at < submits)?;
            self.counters.pooled.fetch_sub(class, Ordering::Relaxed);
            list.swap_remove(i).0
        };
        self.counters.add_live(class);
        Some(Storage {
            buffer: Some(buffer),
            class,
            home: Home::Pool(self.clone()),
        })
    }

    /// A fresh buffer holding `data` (mapped at creation, so the upload is
    /// ordered before any later dispatch without touching the queue). It
    /// may exceed the binding limit: ops then refuse it, readback works.
    pub fn upload(self: &Arc<Self>, what: &str, data: &[u8]) -> Result<Storage> {
        self.check_size(what, data.len() as u64, false)?;
        let class = size_class(data.len() as u64);
        let buffer = self.create(class, true)?;
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| Error::Gpu(format!("mapping an upload buffer failed: {e}")))?;
            view.slice(..data.len()).copy_from_slice(data);
        }
        buffer.unmap();
        self.counters.add_live(class);
        Ok(Storage {
            buffer: Some(buffer),
            class,
            home: Home::Pool(self.clone()),
        })
    }

    /// A buffer-less stand-in for [`Pool::take`] in a dry run: the same
    /// size checks and size class, counted in `tally` instead of the
    /// device's counters.
    pub fn take_virtual(
        &self,
        tally: &Arc<Counters>,
        what: &str,
        bytes: u64,
        bindable: bool,
    ) -> Result<Storage> {
        self.check_size(what, bytes, bindable)?;
        let class = size_class(bytes);
        tally.add_live(class);
        Ok(Storage {
            buffer: None,
            class,
            home: Home::Tally(tally.clone()),
        })
    }

    fn create(&self, class: u64, mapped: bool) -> Result<wgpu::Buffer> {
        // An error scope turns an out-of-memory into an Err instead of the
        // device's uncaptured-error handler (which by default panics).
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pullback"),
            size: class,
            usage: STORAGE_USAGE,
            mapped_at_creation: mapped,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("allocating {class} bytes: {err}")));
        }
        self.counters.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(buffer)
    }

    /// Drops every idle buffer (memory goes back to the driver).
    pub fn trim(&self) {
        let mut free = self.free.locked();
        free.clear();
        self.counters.pooled.store(0, Ordering::Relaxed);
    }

    pub fn set_idle_limit(&self, bytes: u64) {
        self.idle_limit.store(bytes, Ordering::Relaxed);
    }

    fn give_back(&self, buffer: wgpu::Buffer, class: u64) {
        self.counters.sub_live(class);
        let mut free = self.free.locked();
        let pooled = self.counters.pooled.load(Ordering::Relaxed);
        if pooled + class > self.idle_limit.load(Ordering::Relaxed) {
            return; // dropping `buffer` releases it
        }
        self.counters.pooled.fetch_add(class, Ordering::Relaxed);
        let freed_at = self.counters.submits.load(Ordering::Relaxed);
        free.entry(class).or_default().push((buffer, freed_at));
    }
}

/// A GPU buffer holding f32 data, owned by the pool. Shared through `Arc`;
/// contents are never modified once a kernel wrote them, except by the
/// scheduler accumulating into a cotangent it holds the only reference to.
/// In a dry run it has no buffer and only counts its bytes.
pub(crate) struct Storage {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    home: Home,
}

/// Where a storage's bytes go back to when it is dropped.
enum Home {
    Pool(Arc<Pool>),
    Tally(Arc<Counters>),
    /// The caller's own buffer (`Tensor::from_wgpu_buffer`): dropped, not pooled.
    User,
}

impl Storage {
    /// Wraps a buffer the caller made; it is neither pooled nor counted.
    pub fn from_user(buffer: wgpu::Buffer) -> Storage {
        Storage {
            class: buffer.size(),
            buffer: Some(buffer),
            home: Home::User,
        }
    }

    /// The buffer. Only real storages are bound or copied: a dry-run device
    /// records no dispatch or copy, so it never asks a virtual one.
    pub fn buffer(&self) -> &wgpu::Buffer {
        match &self.buffer {
            Some(buffer) => buffer,
            None => unreachable!("only real storages are bound (dry runs record nothing)"),
        }
    }

    /// Bytes reserved (the size class).
    pub fn bytes(&self) -> u64 {
        self.class
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        match &self.home {
            Home::Pool(pool) => {
                if let Some(buffer) = self.buffer.take() {
                    pool.give_back(buffer, self.class);
                }
            }
            Home::Tally(tally) => tally.sub_live(self.class),
            Home::User => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_with_bounded_waste() {
        assert_eq!(size_class(0), 16);
        assert_eq!(size_class(4), 16);
        assert_eq!(size_class(17), 32);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 5120);
        for bytes in [5000u64, 1 << 20, (1 << 20) + 1, 3_000_000, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes && c.is_multiple_of(16));
            assert!((c - bytes) * 4 <= bytes, "{bytes} -> {c}");
        }
    }
}
