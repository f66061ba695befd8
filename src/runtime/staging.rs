//! Mappable buffers for readbacks, pooled per device by size class, so a
//! training loop that reads the same sizes every step creates them once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::lock::Recover;
use crate::runtime::pool::{Pool, pop_nearest, size_class};

/// Idle staging buffers by size; at most `KEEP_PER_SIZE` of each size and
/// the pool's idle cap in all are kept (readbacks are usually a handful of
/// sizes).
#[derive(Default)]
pub(crate) struct StagingPool {
    idle: Mutex<BTreeMap<u64, Vec<wgpu::Buffer>>>,
}

const KEEP_PER_SIZE: usize = 2;

impl StagingPool {
    #[cfg(test)]
    pub fn poison_locks(&self) {
        crate::lock::poison(&self.idle);
    }

    /// A buffer of at least `bytes`, at most the adapter's largest; a new
    /// one is counted in the pool's counters. Created under the pool's
    /// out-of-memory handling (`relieve`, then once more): a readback that
    /// does not fit is [`crate::Error::OutOfMemory`], not a lost device.
    pub fn take(
        &self,
        device: &wgpu::Device,
        pool: &Pool,
        bytes: u64,
        relieve: &dyn Fn(),
    ) -> Result<wgpu::Buffer> {
        let class = size_class(bytes).min(pool.max_buffer);
        if let Some((_, buffer)) = pop_nearest(&mut self.idle.locked(), class, pool.max_buffer) {
            return Ok(buffer);
        }
        let descriptor = wgpu::BufferDescriptor {
            label: Some("pullback readback"),
            size: class,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        };
        let buffer = pool.retrying(class, relieve, || device.create_buffer(&descriptor))?;
        let counters = &pool.counters;
        counters.staging_allocations.fetch_add(1, Ordering::Relaxed);
        Ok(buffer)
    }

    pub fn give_back(&self, buffer: wgpu::Buffer, cap: u64) {
        let mut idle = self.idle.locked();
        let held: u64 = idle.values().flatten().map(wgpu::Buffer::size).sum();
        let same = idle.entry(buffer.size()).or_default();
        if same.len() < KEEP_PER_SIZE && held + buffer.size() <= cap {
            same.push(buffer);
        }
    }

    /// Drops every idle staging buffer.
    pub fn trim(&self) {
        self.idle.locked().clear();
    }
}
