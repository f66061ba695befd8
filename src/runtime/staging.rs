//! Mappable buffers between host and device, pooled per device by size
//! class, so a loop that reads or uploads the same sizes every step creates
//! them once: one pool for readbacks (`MAP_READ`), one for uploads
//! (`MAP_WRITE`).
//!
//! A transfer past [`CHUNK`] bytes goes through several staging buffers of
//! that size ([`Chunks`]), not one of its own size. Staging memory is then
//! fungible: a transfer larger than any before takes the idle chunks and
//! creates only the ones it lacks. With a buffer per transfer size, each
//! new largest size (W10's list has three) created a whole new buffer in
//! each pool, and on a CPU adapter every page of it is a fresh page fault
//! (about 1.8 µs for 4 KiB here) and, for uploads, a zero fill by wgpu.
//!
//! An upload buffer is reused mapped: once its copy is submitted, it is
//! mapped again for writing ([`StagingPool::remap_submitted`]), and it is
//! ready when wgpu has run the copy and the mapping (on any later poll or
//! submit). A new buffer is created mapped, and wgpu zeroes its memory
//! first; a reused one skips both the driver's allocation and that fill
//! (on lavapipe an upload of 16 MB took 3.3 ms with a new buffer each
//! time, see `upload.rs`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::lock::Recover;
use crate::runtime::idle::IdleBuffers;
use crate::runtime::pool::{Pool, size_class};

/// Idle staging buffers by size; at most `KEEP_PER_SIZE` of each size and
/// the pool's idle cap in all are kept (a loop reads and uploads a handful
/// of sizes), the least recently returned making room for a new one.
#[derive(Default)]
pub(crate) struct StagingPool {
    idle: Mutex<IdleBuffers>,
    /// Uploads: buffers handed out to be filled, whose copy is not yet
    /// submitted.
    filled: Mutex<Vec<wgpu::Buffer>>,
    /// Uploads: buffers being mapped again after their copy, each with
    /// its mapping's state (set by the map callback).
    mapping: Mutex<Vec<(wgpu::Buffer, Arc<AtomicU8>)>>,
    /// Upload buffers (`MAP_WRITE`, idle ones mapped) rather than readback
    /// ones (`MAP_READ`, idle ones unmapped).
    uploads: bool,
}

const KEEP_PER_SIZE: usize = 2;

/// Bytes of one staging chunk: transfers up to it take one buffer of their
/// size class, larger ones as many chunks as they need (the last one
/// partly used). Large enough that a copy or a mapping per chunk costs
/// nothing measurable, small enough that the waste of the last chunk and
/// the growth of a transfer larger than any before stay small.
const CHUNK: u64 = 4 << 20;

/// [`CHUNK`], or less where the adapter's largest buffer is smaller.
fn chunk_bytes(pool: &Pool) -> u64 {
    CHUNK.min(pool.max_buffer / 16 * 16)
}

/// The staging buffers of one transfer: its bytes lie in order over
/// `buffers`, `span` bytes in each (the last one may hold fewer).
pub(crate) struct Chunks {
    pub buffers: Vec<wgpu::Buffer>,
    span: u64,
    bytes: u64,
}

/// One piece of a byte range of a transfer, within one chunk.
pub(crate) struct Piece {
    /// Which chunk.
    pub chunk: usize,
    /// Offset in that chunk.
    pub at: u64,
    /// Offset from the start of the range.
    pub from: u64,
    pub len: u64,
}

impl Chunks {
    /// Bytes of the transfer that chunk `i` holds.
    pub fn used(&self, i: usize) -> u64 {
        (self.bytes - i as u64 * self.span).min(self.span)
    }

    /// Splits bytes `start..start + len` of the transfer at chunk ends.
    pub fn pieces(&self, start: u64, len: u64) -> impl Iterator<Item = Piece> + '_ {
        let mut from = 0;
        std::iter::from_fn(move || {
            if from >= len {
                return None;
            }
            let pos = start + from;
            let (chunk, at) = ((pos / self.span) as usize, pos % self.span);
            let piece_len = (self.span - at).min(len - from);
            let piece = Piece {
                chunk,
                at,
                from,
                len: piece_len,
            };
            from += piece_len;
            Some(piece)
        })
    }
}

/// Idle bytes each staging pool (readbacks, uploads) may keep: half the
/// pool's idle cap, so that all idle buffers stay within twice it. (With
/// the whole cap each, W10's K sweep ended at 549 MB resident, against
/// 431 MB before uploads were pooled. A shared cap that either pool could
/// fill starved the other: a loop reading back what it uploaded created
/// its readback buffers anew.)
fn cap(pool: &Pool) -> u64 {
    pool.idle_cap() / 2
}

/// States of an upload buffer's mapping.
const PENDING: u8 = 0;
const MAPPED: u8 = 1;
const FAILED: u8 = 2;

impl StagingPool {
    /// The pool of upload buffers.
    pub fn for_uploads() -> StagingPool {
        StagingPool {
            uploads: true,
            ..StagingPool::default()
        }
    }

    #[cfg(test)]
    pub fn poison_locks(&self) {
        crate::lock::poison(&self.idle);
        crate::lock::poison(&self.filled);
        crate::lock::poison(&self.mapping);
    }

    /// A buffer of at least `bytes`, at most the adapter's largest (an
    /// upload buffer mapped for writing); a new one is counted in the
    /// pool's counters. Created under the pool's out-of-memory handling
    /// (`relieve`, then once more): a staging buffer that does not fit is
    /// [`crate::Error::OutOfMemory`], not a lost device.
    fn take(
        &self,
        device: &wgpu::Device,
        pool: &Pool,
        bytes: u64,
        relieve: &dyn Fn(),
    ) -> Result<wgpu::Buffer> {
        let class = size_class(bytes).min(pool.max_buffer);
        if self.uploads {
            self.collect_mapped(pool);
        }
        if let Some((_, buffer)) = self.idle.locked().pop_nearest(class, pool.max_buffer) {
            return Ok(buffer);
        }
        use wgpu::BufferUsages as U;
        let (label, usage) = match self.uploads {
            true => ("pullback upload", U::MAP_WRITE | U::COPY_SRC),
            false => ("pullback readback", U::MAP_READ | U::COPY_DST),
        };
        let descriptor = wgpu::BufferDescriptor {
            label: Some(label),
            size: class,
            usage,
            mapped_at_creation: self.uploads,
        };
        let buffer = pool.retrying(class, relieve, || device.create_buffer(&descriptor))?;
        let counters = &pool.counters;
        match self.uploads {
            true => &counters.upload_allocations,
            false => &counters.staging_allocations,
        }
        .fetch_add(1, Ordering::Relaxed);
        Ok(buffer)
    }

    /// Staging buffers for a transfer of `bytes`: one up to [`CHUNK`]
    /// bytes, else whole chunks (each from [`StagingPool::take`], so idle
    /// ones first). On failure the chunks taken so far go back to the pool.
    pub fn take_chunks(
        &self,
        device: &wgpu::Device,
        pool: &Pool,
        bytes: u64,
        relieve: &dyn Fn(),
    ) -> Result<Chunks> {
        let span = bytes.clamp(16, chunk_bytes(pool));
        let mut chunks = Chunks {
            buffers: Vec::with_capacity(bytes.div_ceil(span) as usize),
            span,
            bytes,
        };
        for _ in 0..bytes.div_ceil(span) {
            match self.take(device, pool, span, relieve) {
                Ok(buffer) => chunks.buffers.push(buffer),
                Err(e) => {
                    self.give_back_all(chunks.buffers, pool);
                    return Err(e);
                }
            }
        }
        Ok(chunks)
    }

    /// Keeps `buffer` for reuse (readback buffers unmapped, upload buffers
    /// mapped), the least recently returned idle ones released to fit
    /// [`cap`]. Chunk-sized buffers are kept as many as fit: a large
    /// transfer needs them all at once.
    pub fn give_back(&self, buffer: wgpu::Buffer, pool: &Pool) {
        let size = buffer.size();
        let per_size = if size >= chunk_bytes(pool) {
            usize::MAX
        } else {
            KEEP_PER_SIZE
        };
        (self.idle.locked()).keep(buffer, size, cap(pool), per_size);
    }

    /// [`StagingPool::give_back`] for each buffer.
    pub fn give_back_all(&self, buffers: Vec<wgpu::Buffer>, pool: &Pool) {
        for buffer in buffers {
            self.give_back(buffer, pool);
        }
    }

    /// Uploads: `buffer` was filled and unmapped, and its copy recorded in
    /// the pending encoder. Call with the pending encoder's lock held, so
    /// that the submit that takes the copy also remaps the buffer.
    pub fn filled(&self, buffer: wgpu::Buffer) {
        self.filled.locked().push(buffer);
    }

    /// Uploads: after a submit of the pending encoder (under its lock),
    /// starts mapping every filled buffer again; wgpu maps each once its
    /// copy has run. Past [`cap`] bytes in flight the rest are released.
    pub fn remap_submitted(&self, pool: &Pool) {
        let cap = cap(pool);
        let filled = std::mem::take(&mut *self.filled.locked());
        if filled.is_empty() {
            return;
        }
        let mut mapping = self.mapping.locked();
        let mut held: u64 = mapping.iter().map(|(b, _)| b.size()).sum();
        for buffer in filled {
            if held + buffer.size() > cap {
                continue; // dropped: wgpu frees it once the copy has run
            }
            held += buffer.size();
            let state = Arc::new(AtomicU8::new(PENDING));
            let set = state.clone();
            buffer.slice(..).map_async(wgpu::MapMode::Write, move |r| {
                set.store(if r.is_ok() { MAPPED } else { FAILED }, Ordering::Release);
            });
            mapping.push((buffer, state));
        }
    }

    /// Uploads: moves the buffers whose mapping has completed into the idle
    /// ones; those whose mapping failed (a lost device) are released.
    fn collect_mapped(&self, pool: &Pool) {
        let done: Vec<(wgpu::Buffer, Arc<AtomicU8>)> = {
            let mut mapping = self.mapping.locked();
            let (pending, done): (Vec<_>, Vec<_>) = std::mem::take(&mut *mapping)
                .into_iter()
                .partition(|(_, state)| state.load(Ordering::Acquire) == PENDING);
            *mapping = pending;
            done
        };
        for (buffer, state) in done {
            if state.load(Ordering::Acquire) == MAPPED {
                self.give_back(buffer, pool);
            }
        }
    }

    /// Drops every idle staging buffer (and those being remapped).
    pub fn trim(&self) {
        self.idle.locked().clear();
        self.mapping.locked().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Chunks;

    /// Pieces cover the range in order, each within one chunk, split
    /// exactly at chunk ends.
    #[test]
    fn pieces_split_a_range_at_chunk_ends() {
        let chunks = Chunks {
            buffers: Vec::new(),
            span: 16,
            bytes: 100,
        };
        let got: Vec<_> = (chunks.pieces(8, 40))
            .map(|p| (p.chunk, p.at, p.from, p.len))
            .collect();
        assert_eq!(got, [(0, 8, 0, 8), (1, 0, 8, 16), (2, 0, 24, 16)]);
        let got: Vec<_> = (chunks.pieces(32, 4))
            .map(|p| (p.chunk, p.at, p.from, p.len))
            .collect();
        assert_eq!(got, [(2, 0, 0, 4)]);
        assert_eq!(chunks.pieces(40, 0).count(), 0);
        assert_eq!((chunks.used(0), chunks.used(6)), (16, 4));
    }
}
