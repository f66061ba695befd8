//! Idle buffers kept for reuse, by size: the pool's storage buffers and
//! the staging pools' mappable ones alike. A request takes the smallest
//! idle buffer from its size class up to twice it; a returned buffer
//! makes room for itself by releasing the least recently returned ones
//! no larger than it.
//!
//! Refusing a returned buffer when the idle ones are at their cap (what
//! the pools did before) keeps whatever came first: a loop whose sizes
//! change, W10's list among them, then kept its small early sizes and
//! created its largest buffers anew at every one of its largest steps.

use std::collections::BTreeMap;

/// An idle buffer serves a request up to this many times its size class
/// (the waste is bounded as the classes' is, by the ratio).
const REUSE_SPAN: u64 = 2;

#[derive(Default)]
pub(crate) struct IdleBuffers {
    /// By size: each buffer with the tick it was returned at.
    by_size: BTreeMap<u64, Vec<(u64, wgpu::Buffer)>>,
    /// Counts returns: the buffers' ages.
    tick: u64,
    /// Bytes held.
    bytes: u64,
}

impl IdleBuffers {
    /// Bytes held in idle buffers.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Pops the smallest idle buffer of size `class` up to REUSE_SPAN times
    /// it (and at most `largest`), with its size: shapes that change from
    /// step to step reuse what earlier steps freed instead of holding a
    /// buffer per size.
    pub fn pop_nearest(&mut self, class: u64, largest: u64) -> Option<(u64, wgpu::Buffer)> {
        let most = class.saturating_mul(REUSE_SPAN).min(largest).max(class);
        let (size, list) = (self.by_size.range_mut(class..=most)).find(|(_, l)| !l.is_empty())?;
        let (size, (_, buffer)) = (*size, list.pop()?);
        if list.is_empty() {
            self.by_size.remove(&size);
        }
        self.bytes -= size;
        Some((size, buffer))
    }

    /// Keeps `buffer` of `size` bytes, releasing the least recently
    /// returned idle buffers no larger than it until all fit in `cap` bytes
    /// and at most `per_size` of its size. When the smaller ones cannot
    /// make room, `buffer` itself is released: a larger idle buffer serves
    /// more requests (down to half its size) and costs more to create
    /// again. A buffer larger than `cap` is released itself.
    pub fn keep(&mut self, buffer: wgpu::Buffer, size: u64, cap: u64, per_size: usize) {
        let smaller: u64 = self
            .by_size
            .range(..=size)
            .map(|(s, l)| s * l.len() as u64)
            .sum();
        if size > cap || self.bytes - smaller + size > cap {
            return;
        }
        loop {
            let full = self.by_size.get(&size).is_some_and(|l| l.len() >= per_size);
            if !full && self.bytes + size <= cap {
                break;
            }
            let oldest = (self.by_size.range(..=size))
                .filter(|(s, _)| !full || **s == size)
                .filter_map(|(s, l)| l.first().map(|(t, _)| (*t, *s)))
                .min();
            let Some((_, s)) = oldest else { break };
            if let Some(list) = self.by_size.get_mut(&s) {
                list.remove(0);
                if list.is_empty() {
                    self.by_size.remove(&s);
                }
            }
            self.bytes -= s;
        }
        self.tick += 1;
        self.bytes += size;
        self.by_size
            .entry(size)
            .or_default()
            .push((self.tick, buffer));
    }

    /// Releases every idle buffer.
    pub fn clear(&mut self) {
        self.by_size.clear();
        self.bytes = 0;
    }
}
