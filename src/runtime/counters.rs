//! What a device counts: submits, dispatches, and the bytes its buffers
//! hold (live, at their peak, idle in the pool), read by `Device::stats`
//! and by the pool's memory limit.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// tensors it reads: [`crate::read_all`]; past 4 MiB, one map per
    /// 4 MiB staging chunk).
    pub readbacks: u64,
    /// Mappable staging buffers created for readbacks (they are pooled;
    /// past 4 MiB a readback takes 4 MiB chunks, idle ones first).
    pub staging_allocations: u64,
    /// Mappable staging buffers created for uploads (pooled too: a loop
    /// that uploads the same sizes every step creates them once).
    pub upload_allocations: u64,
    /// Compute pipelines created (kernel variants compiled), evicted ones
    /// included: a loop whose shapes change can assert it compiles few.
    pub pipelines: u64,
}

/// Live and peak bytes plus event counts. A device has one; a dry run
/// (see [`crate::Device::dry_run`]) tallies its virtual buffers in another.
#[derive(Default)]
pub(crate) struct Counters {
    pub submits: AtomicU64,
    pub dispatches: AtomicU64,
    live: AtomicU64,
    peak: AtomicU64,
    pub pooled: AtomicU64,
    pub allocations: AtomicU64,
    pub readbacks: AtomicU64,
    pub staging_allocations: AtomicU64,
    pub upload_allocations: AtomicU64,
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
            upload_allocations: self.upload_allocations.load(Ordering::Relaxed),
            pipelines: 0,
        }
    }

    pub fn reset_peak(&self) {
        self.peak
            .store(self.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn add_live(&self, bytes: u64) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn sub_live(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held by live buffers now.
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// The most live bytes reached (the peak of a dry run's tally).
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}
