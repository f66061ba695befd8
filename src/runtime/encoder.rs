//! Recording and submitting: dispatches go into the device's one pending
//! encoder, deferred work first (the hook a layer above registered,
//! [`Deferred`]), and the encoder is submitted when something needs the
//! results (a readback, the end of a pass, a synchronize) or when forward
//! work has piled up. One submit per pass.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::lock::Recover;
use crate::runtime::device::{Deferred, Device, Role};
use crate::runtime::kernels::{Kernel, Params, RowKernel, grid};
use crate::runtime::pool::Storage;

impl Device {
    /// The device's deferred hook, registered by `make` the first time;
    /// None when a hook of another type was registered first (a device has
    /// one).
    pub(crate) fn deferred<T: Deferred>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        let hook: &Arc<dyn Deferred> = self.shared.deferred.get_or_init(|| Arc::new(make()));
        let any: &dyn Any = &**hook;
        any.downcast_ref()
    }

    /// Runs the deferred work, if any, before something is recorded,
    /// submitted or read; nothing on a dry run or on the hook's own handle.
    pub(crate) fn run_deferred(&self) {
        if matches!(self.role, Role::Live)
            && let Some(hook) = self.shared.deferred.get()
        {
            hook.run(&self.deferred_runner());
        }
    }

    /// A handle whose records do not run deferred work: for the hook's
    /// owner, which records its waiting work under its own lock.
    pub(crate) fn deferred_runner(&self) -> Device {
        Device {
            shared: self.shared.clone(),
            role: Role::Deferred,
        }
    }

    /// Records one dispatch of `workgroups` linear workgroups (spread over x
    /// and y past the 65535-per-dimension limit) into the pending encoder.
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &Params,
        buffers: &[&Storage],
        workgroups: u64,
    ) {
        let (x, y) = grid(workgroups);
        self.dispatch_grid(kernel, constants, params, buffers, (x, y, 1));
    }

    /// Records one dispatch of a kernel that loops over `k` cotangent rows,
    /// choosing its variant and setting its `SYNC_ROWS` constant. On CPU
    /// adapters (lavapipe) an invocation runs its whole K loop before the
    /// next one starts, touching K rows n floats apart that evict each other
    /// from cache; a barrier every 8 rows makes the workgroup stream rows
    /// contiguously (a two-output adjoint at K=64, n=2^16: 15.5 ms -> 6.4
    /// ms). For K = 1 the plain variant is faster (no masked loop), and GPUs
    /// need no barrier at all.
    pub(crate) fn dispatch_rows(
        &self,
        kernel: &RowKernel,
        k: usize,
        constants: &[(&'static str, f64)],
        params: &Params,
        buffers: &[&Storage],
        workgroups: u64,
    ) {
        let sync = self.sync_rows(k);
        let variant = if sync > 0.0 {
            &kernel.synced
        } else {
            &kernel.plain
        };
        let mut constants = constants.to_vec();
        constants.push(("SYNC_ROWS", sync));
        self.dispatch(variant, &constants, params, buffers, workgroups);
    }

    /// Rows between barriers in a K loop: 8 on CPU adapters for K > 1, else 0.
    fn sync_rows(&self, k: usize) -> f64 {
        let cpu = self.shared.info.device_type == wgpu::DeviceType::Cpu;
        if cpu && k > 1 { 8.0 } else { 0.0 }
    }

    /// Compiles `kernel` now (no constants) under error scopes: Err with
    /// wgpu's message when the driver refuses it, and nothing is cached.
    pub(crate) fn compile_checked(&self, kernel: &Kernel) -> std::result::Result<(), String> {
        let shared = &*self.shared;
        let internal = shared.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = shared
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        shared.kernels.pipeline(&shared.device, kernel, &[]);
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(internal.pop()),
        ];
        match errors.into_iter().flatten().next() {
            Some(e) => {
                shared.kernels.forget(kernel.module.name);
                Err(e.to_string())
            }
            None => Ok(()),
        }
    }

    /// Records one dispatch of an explicit (x, y, z) grid of workgroups.
    pub(crate) fn dispatch_grid(
        &self,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &Params,
        buffers: &[&Storage],
        grid: (u32, u32, u32),
    ) {
        let shared = &*self.shared;
        self.record(|encoder| {
            let buffers: Vec<&wgpu::Buffer> = buffers.iter().map(|s| s.buffer()).collect();
            shared.kernels.encode(
                &shared.device,
                encoder,
                kernel,
                constants,
                params,
                &buffers,
                grid,
            );
            shared.pending_dispatches.fetch_add(1, Ordering::Relaxed);
            shared
                .pool
                .counters
                .dispatches
                .fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Runs `f` on the pending encoder (created if there is none); on a
    /// dry-run handle records nothing.
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        if matches!(self.role, Role::Dry(_)) {
            return;
        }
        self.run_deferred();
        let shared = &*self.shared;
        let mut pending = shared.pending.locked();
        f(pending.get_or_insert_with(|| new_encoder(&shared.device)));
    }

    /// Submits the pending encoder, if any work was recorded: one submit.
    pub(crate) fn flush(&self) -> Result<()> {
        self.check_alive()?;
        if matches!(self.role, Role::Dry(_)) {
            return Ok(());
        }
        self.run_deferred();
        // Submit while holding the lock: once the encoder is taken, another
        // thread must not record and submit work that depends on it (say, a
        // pooled buffer its dispatches still read) ahead of it.
        let mut pending = self.shared.pending.locked();
        if let Some(encoder) = pending.take() {
            self.submit(encoder);
        }
        drop(pending);
        self.check_alive()
    }

    /// Forward work that is never read back would otherwise pile up in one
    /// ever-growing encoder; a forward result recorded past this many
    /// pending dispatches submits them (`tape/record.rs`). Backward passes
    /// record no forward result, so they never split.
    const FORWARD_FLUSH_DISPATCHES: u64 = 1024;

    /// Called after a forward op is recorded.
    pub(crate) fn flush_if_long(&self) -> Result<()> {
        let pending = self.shared.pending_dispatches.load(Ordering::Relaxed);
        if pending >= Self::FORWARD_FLUSH_DISPATCHES {
            self.flush()?;
        }
        Ok(())
    }

    /// Submits `encoder`; call with the `pending` lock held, so that no
    /// other thread submits work recorded after it ahead of it.
    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.shared.pending_dispatches.store(0, Ordering::Relaxed);
        self.shared.kernels.submit_warm(&self.shared.device);
        self.shared.queue.submit([encoder.finish()]);
        // The uploads' staging buffers whose copies this submit carries.
        (self.shared.uploads).remap_submitted(&self.shared.pool);
        self.shared
            .pool
            .counters
            .submits
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wait(&self) -> Result<()> {
        self.shared
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.check_alive()
    }
}

pub(crate) fn new_encoder(device: &wgpu::Device) -> wgpu::CommandEncoder {
    device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("pullback"),
    })
}
