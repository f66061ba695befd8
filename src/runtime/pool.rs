//! Per-device buffer pool and the `Storage` handle that returns its buffer to
//! the pool when the last reference goes away.
//!
//! Reusing a buffer as soon as its last reader has been *encoded* (not
//! executed) is safe: every dispatch goes through one queue in submission
//! order, and wgpu inserts a barrier between dispatches that touch the same
//! storage buffer. Host uploads are copies recorded in the same order
//! (`upload.rs`), so they cannot clobber a buffer a pending dispatch reads.
//!
//! Out of memory: every buffer is created under an error scope, so the
//! driver's out-of-memory is an error, not a lost device. The pool then
//! releases its idle buffers and tries once more before failing with
//! [`Error::OutOfMemory`]; a memory limit ([`Pool::set_limit`]) fails the
//! same way before the driver is asked.

use crate::lock::Recover;
use crate::runtime::idle::IdleBuffers;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
pub(crate) use crate::runtime::counters::Counters;
pub use crate::runtime::counters::Stats;

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
    /// Idle buffers by size class.
    free: Mutex<IdleBuffers>,
    pub counters: Counters,
    /// Largest buffer the adapter lets us bind as storage (kernel operands).
    pub max_binding: u64,
    /// Largest buffer the adapter lets us create (tensors that are only
    /// copied: results assembled from chunks, uploads, readbacks).
    pub max_buffer: u64,
    /// Idle bytes kept for reuse at most; buffers past it are released.
    idle_limit: AtomicU64,
    /// Bytes held in buffers (live plus pooled) at most; `u64::MAX`: no cap.
    limit: AtomicU64,
}

/// Idle bytes always allowed (up to the idle limit), however small the
/// peak of live bytes.
const IDLE_FLOOR: u64 = 64 << 20;

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
            free: Mutex::new(IdleBuffers::default()),
            counters: Counters::default(),
            max_binding,
            max_buffer: limits.max_buffer_size,
            idle_limit: AtomicU64::new(DEFAULT_IDLE_LIMIT),
            limit: AtomicU64::new(u64::MAX),
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
    /// On the driver's out-of-memory, `relieve` (the device's: idle
    /// buffers released, pending work submitted and waited for) runs before
    /// the one retry.
    pub fn take(
        self: &Arc<Self>,
        what: &str,
        bytes: u64,
        bindable: bool,
        relieve: &dyn Fn(),
    ) -> Result<Storage> {
        self.check_size(what, bytes, bindable)?;
        let class = size_class(bytes);
        // Pop and uncount under one lock, as give_back counts and pushes.
        let largest = if bindable {
            self.max_binding
        } else {
            self.max_buffer
        };
        let reused = {
            let mut free = self.free.locked();
            let found = free.pop_nearest(class, largest);
            self.counters.pooled.store(free.bytes(), Ordering::Relaxed);
            found
        };
        let (class, buffer) = match reused {
            Some(found) => found,
            None => (class, self.create(class, relieve)?),
        };
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

    fn create(&self, class: u64, relieve: &dyn Fn()) -> Result<wgpu::Buffer> {
        self.make_room(class)?;
        let descriptor = wgpu::BufferDescriptor {
            label: Some("pullback"),
            size: class,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        };
        let buffer = self.retrying(class, relieve, || self.device.create_buffer(&descriptor))?;
        self.counters.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(buffer)
    }

    /// Checks a new buffer of `class` bytes against the memory limit (live
    /// plus pooled): idle buffers are released first when they are what
    /// stands in the way.
    pub fn make_room(&self, class: u64) -> Result<()> {
        let limit = self.limit.load(Ordering::Relaxed);
        let held = |c: &Counters| c.live() + c.pooled.load(Ordering::Relaxed);
        if held(&self.counters).saturating_add(class) <= limit {
            return Ok(());
        }
        self.trim();
        let live = self.counters.live();
        if live.saturating_add(class) > limit {
            return Err(Error::OutOfMemory {
                requested: class,
                live,
            });
        }
        Ok(())
    }

    /// Runs `make` (a buffer creation) under an out-of-memory error scope;
    /// on out-of-memory runs `relieve` and `make` once more. wgpu reports a
    /// driver's out-of-memory in `create_buffer` without losing the device
    /// (unlike its internal staging buffers: `upload.rs`).
    pub fn retrying<T>(&self, class: u64, relieve: &dyn Fn(), make: impl Fn() -> T) -> Result<T> {
        for attempt in 0..2 {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let made = make();
            if pollster::block_on(scope.pop()).is_none() {
                return Ok(made);
            }
            if attempt == 0 {
                relieve();
            }
        }
        Err(Error::OutOfMemory {
            requested: class,
            live: self.counters.live(),
        })
    }

    /// Caps the bytes held in buffers (live plus pooled); `u64::MAX`: none.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// The cap set by [`Pool::set_limit`].
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Drops every idle buffer (memory goes back to the driver).
    pub fn trim(&self) {
        let mut free = self.free.locked();
        free.clear();
        self.counters.pooled.store(free.bytes(), Ordering::Relaxed);
    }

    pub fn set_idle_limit(&self, bytes: u64) {
        self.idle_limit.store(bytes, Ordering::Relaxed);
    }

    /// Idle bytes kept at most: the idle limit, and no more than the most
    /// bytes ever live at once (or a floor). Idle bytes past that peak would
    /// only serve sizes that came and went: a loop whose sizes change keeps
    /// its working set, not a buffer for every size it saw. The staging
    /// pools (readbacks, uploads) keep as much again, half each.
    pub fn idle_cap(&self) -> u64 {
        let limit = self.idle_limit.load(Ordering::Relaxed);
        self.counters.peak().max(IDLE_FLOOR).min(limit)
    }

    fn give_back(&self, buffer: wgpu::Buffer, class: u64) {
        self.counters.sub_live(class);
        let mut free = self.free.locked();
        free.keep(buffer, class, self.idle_cap(), usize::MAX);
        self.counters.pooled.store(free.bytes(), Ordering::Relaxed);
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
