//! Memory of a device: pooled and virtual buffers, copies and clears that
//! need no kernel, the working-memory budget of a pass, and dry runs (a
//! handle on which a pass only sizes its buffers).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::lock::Recover;
use crate::runtime::device::{Device, Role};
use crate::runtime::pool::{Counters, Storage};

impl Device {
    /// Bounds the working memory of one VJP pass (its cotangents, scratch
    /// and per-chunk results; not the final result the caller asked for).
    /// `vjp_batched`, `jacobian` and what is built on them split the K
    /// cotangents into chunks, each its own pass, so that every chunk stays
    /// within it. [`crate::plan_peak_bytes`] says what one pass needs.
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// let dev = pullback::Device::new()?;
    /// let x = dev.tensor(&vec![0.25; 1024], &[1024])?.requires_grad();
    /// let y = x.sin()?.mul(&x)?;
    /// let v = dev.tensor(&vec![1.0; 64 * 1024], &[64, 1024])?; // K = 64
    /// let whole = pullback::vjp_batched(&[&y], &[&v], &[&x])?[0].to_vec()?;
    ///
    /// // A quarter of what the whole pass needs: K goes in chunks.
    /// let peak = pullback::plan_peak_bytes(&[&y], &[&x], 64)?;
    /// dev.set_memory_budget(peak / 4);
    /// let submits = dev.stats().submits;
    /// let chunked = pullback::vjp_batched(&[&y], &[&v], &[&x])?;
    /// assert!(dev.stats().submits - submits > 1);
    /// assert_eq!(chunked[0].to_vec()?, whole); // bit for bit
    /// dev.clear_memory_budget();
    /// # Ok(()) }
    /// ```
    pub fn set_memory_budget(&self, bytes: u64) {
        self.shared.budget.store(bytes, Ordering::Relaxed);
    }

    /// The bound set by [`Device::set_memory_budget`]; `None` (the default):
    /// passes are bounded only by the adapter's buffer limits.
    pub fn memory_budget(&self) -> Option<u64> {
        match self.shared.budget.load(Ordering::Relaxed) {
            u64::MAX => None,
            bytes => Some(bytes),
        }
    }

    /// Removes the bound set by [`Device::set_memory_budget`].
    pub fn clear_memory_budget(&self) {
        self.set_memory_budget(u64::MAX);
    }

    /// Caps the bytes pullback holds on the device: its tensors, saved
    /// values, cotangents and scratch (live), plus the idle buffers its pool
    /// keeps for reuse. A new buffer past the cap releases the idle ones
    /// first, then fails with [`crate::Error::OutOfMemory`] without asking
    /// the driver; nothing made before is lost. Passes plan their chunks of
    /// cotangent rows to stay under it as under [`Device::set_memory_budget`]
    /// (the budget bounds one pass's working memory; the limit, everything).
    /// Not counted: staging buffers (readbacks, uploads) and wgpu's own
    /// allocations.
    /// Default: none (wgpu reports no adapter memory size to cap by).
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// let dev = pullback::Device::new()?;
    /// dev.set_memory_limit(8 << 20); // 8 MiB
    /// let a = dev.zeros(&[1 << 20])?; // 4 MiB
    /// match dev.zeros(&[2 << 20]) {
    ///     Err(pullback::Error::OutOfMemory { requested, .. }) => assert_eq!(requested, 8 << 20),
    ///     other => panic!("expected OutOfMemory, got {other:?}"),
    /// }
    /// assert_eq!(a.to_vec()?.len(), 1 << 20); // `a` is intact
    /// dev.clear_memory_limit();
    /// # Ok(()) }
    /// ```
    pub fn set_memory_limit(&self, bytes: u64) {
        self.shared.pool.set_limit(bytes);
    }

    /// The cap set by [`Device::set_memory_limit`]; `None`: no cap.
    pub fn memory_limit(&self) -> Option<u64> {
        match self.shared.pool.limit() {
            u64::MAX => None,
            bytes => Some(bytes),
        }
    }

    /// Removes the cap set by [`Device::set_memory_limit`].
    pub fn clear_memory_limit(&self) {
        self.shared.pool.set_limit(u64::MAX);
    }

    /// Makes room after the driver ran out of memory: the pool's and the
    /// staging pools' idle buffers are released, and the pending work
    /// is submitted and waited for, since wgpu frees a dropped buffer only
    /// once no recorded command uses it (a pass that failed half-way leaves
    /// its freed scratch in the pending encoder). The deferred forward chain
    /// is not run: its work is recorded later, after this, in order.
    pub(crate) fn relieve(&self) {
        self.trim_pool();
        let shared = &*self.shared;
        let mut pending = shared.pending.locked();
        if let Some(encoder) = pending.take() {
            self.submit(encoder);
        }
        drop(pending);
        let _ = shared.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// Under a memory limit, the bytes it leaves beside the live buffers
    /// (idle ones are released when needed); `None` without a limit.
    pub(crate) fn memory_room(&self) -> Option<u64> {
        self.memory_limit()
            .map(|limit| limit.saturating_sub(self.shared.pool.counters.live()))
    }

    /// A handle on which the same code runs without touching the GPU:
    /// buffers are virtual (sized and checked against the limits like real
    /// ones) and tallied in the returned counters; dispatches, copies and
    /// submits are not recorded. The memory estimates of a pass come from
    /// running it on one, so they cannot drift from what a pass does.
    pub(crate) fn dry_run(&self) -> (Device, Arc<Counters>) {
        let tally = Arc::new(Counters::default());
        let dev = Device {
            shared: self.shared.clone(),
            role: Role::Dry(tally.clone()),
        };
        (dev, tally)
    }

    /// True on a dry-run handle ([`Device::dry_run`]): nothing is recorded.
    pub(crate) fn is_dry_run(&self) -> bool {
        matches!(self.role, Role::Dry(_))
    }

    /// Largest buffer a kernel can bind, in bytes.
    pub(crate) fn max_binding(&self) -> u64 {
        self.shared.pool.max_binding
    }

    /// A pooled buffer for `len` f32 values that kernels can bind.
    pub(crate) fn alloc(&self, what: &str, len: usize) -> Result<Storage> {
        self.take(what, len, true)
    }

    /// A pooled buffer for `len` f32 values that is only copied into and
    /// out of (it may exceed the binding limit, up to the largest buffer).
    pub(crate) fn alloc_large(&self, what: &str, len: usize) -> Result<Storage> {
        self.take(what, len, false)
    }

    pub(super) fn take(&self, what: &str, len: usize, bindable: bool) -> Result<Storage> {
        self.check_alive()?;
        let bytes = (len as u64).saturating_mul(4);
        match &self.role {
            Role::Dry(tally) => self.shared.pool.take_virtual(tally, what, bytes, bindable),
            Role::Live | Role::Deferred => self
                .shared
                .pool
                .take(what, bytes, bindable, &|| self.relieve()),
        }
    }

    /// Fails unless a kernel can bind a buffer of `len` f32 values.
    pub(crate) fn check_bindable(&self, what: &str, len: usize) -> Result<()> {
        self.shared
            .pool
            .check_size(what, (len as u64).saturating_mul(4), true)
    }

    /// Records a copy of `len` values from `src[src_at..]` to `dst[dst_at..]`
    /// (offsets in f32 elements) into the pending encoder: no kernel, so
    /// neither buffer needs to be bindable.
    pub(crate) fn copy(
        &self,
        src: &Storage,
        src_at: usize,
        dst: &Storage,
        dst_at: usize,
        len: usize,
    ) {
        if len == 0 {
            return;
        }
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(
                src.buffer(),
                src_at as u64 * 4,
                dst.buffer(),
                dst_at as u64 * 4,
                len as u64 * 4,
            )
        });
    }

    /// Records zeroing the whole of `dst` (no kernel: any size).
    pub(crate) fn clear(&self, dst: &Storage) {
        self.record(|encoder| encoder.clear_buffer(dst.buffer(), 0, None));
    }
}
