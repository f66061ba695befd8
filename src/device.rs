//! The device: adapter, queue, buffer pool, pipeline cache, the pending
//! command encoder and the counters. It knows no ops: it owns GPU resources,
//! records dispatches and counts what was done. It holds the forward-fusion
//! chain (`ops/fused_forward.rs`) as data, and runs it before recording or
//! submitting anything else, since that may read the chain's results.

use crate::lock::Recover;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex};

use crate::adapter::{self, DeviceOptions, GemmKernel};
use crate::error::{Error, Result};
use crate::kernels::{Kernel, KernelCache, Params, RowKernel};
use crate::ops::fused_forward::Chains;
use crate::pool::{Counters, Pool, Stats, Storage};
use crate::readback::StagingPool;
use crate::warm::Warmer;

/// A GPU (or software) device with everything pullback keeps per device.
/// Cheap to clone; clones share the same device.
#[derive(Clone)]
pub struct Device {
    pub(crate) shared: Arc<Shared>,
    /// Set on a dry-run handle ([`Device::dry_run`]): buffers are virtual
    /// and counted here, and nothing is recorded or submitted.
    pub(crate) dry: Option<Arc<Counters>>,
    /// Set on the handle that runs the forward-fusion chain: its
    /// dispatches are the chain's own and must not run the chain again.
    pub(crate) in_chain: bool,
}

pub(crate) struct Shared {
    pub device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub pool: Arc<Pool>,
    /// Mappable buffers for readbacks, by size.
    pub staging: StagingPool,
    kernels: KernelCache,
    /// Forward dispatches wait here until something needs their results.
    pub pending: Mutex<Option<wgpu::CommandEncoder>>,
    /// Dispatches recorded in `pending` since its last submit.
    pending_dispatches: std::sync::atomic::AtomicU64,
    /// Set by the device-lost callback (devices pullback created itself).
    lost: Arc<Mutex<Option<String>>>,
    /// Errors wgpu reported outside an error scope (devices pullback created).
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Working-memory bound of one VJP pass in bytes; `u64::MAX`: none.
    pub budget: std::sync::atomic::AtomicU64,
    /// The GEMM schedule, a resolved [`GemmKernel`] (`src/settings.rs`).
    pub gemm: AtomicU8,
    /// Where `GemmKernel::Auto` switches to large tiles (`src/tune.rs`).
    pub large_min_tiles: AtomicUsize,
    /// Elementwise regions of a backward pass run as one fused kernel.
    pub fuse: AtomicBool,
    /// Elementwise forward ops wait in `chain` and run as one kernel.
    pub fuse_forward: AtomicBool,
    /// Elementwise forward ops not dispatched yet (`src/ops/fused_forward.rs`).
    /// Locked before `pending` wherever both are.
    pub chain: Mutex<Chains>,
}

/// Serializes instance, adapter and device creation in the process.
/// NVIDIA's Vulkan driver is not thread-safe there (wgpu issues 5930:
/// `Instance::new` on several threads races, and 10234: concurrent device
/// and pipeline creation crashes), and on an H200 test binaries whose
/// threads created six devices at once hung in two runs of four. It guards
/// no data: a second creator only waits for the first (tens of ms). An
/// async lock, so that `with_options`'s future stays `Send`.
static CREATION: futures::lock::Mutex<()> = futures::lock::Mutex::new(());

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("adapter", &self.shared.info.name)
            .finish()
    }
}

impl Device {
    /// Poisons every lock the device holds (tests of lock recovery).
    #[cfg(test)]
    pub(crate) fn poison_every_lock(&self) {
        let s = &self.shared;
        s.kernels.poison_locks();
        s.pool.poison_locks();
        s.staging.poison_locks();
        crate::lock::poison(&s.pending);
        crate::lock::poison(&s.chain);
        crate::lock::poison(&s.lost);
        crate::lock::poison(&s.uncaptured);
    }

    /// Picks the best adapter (discrete > integrated > software; override
    /// with `PULLBACK_ADAPTER`) and creates a device on it, with the
    /// settings the environment names (`PULLBACK_GEMM`, `PULLBACK_FUSION`:
    /// see [`Device::set_gemm_kernel`], [`Device::set_fused_adjoints`]). Blocks.
    pub fn new() -> Result<Device> {
        pollster::block_on(Self::new_async())
    }

    /// [`Device::new`] for async callers.
    pub async fn new_async() -> Result<Device> {
        let dev = Self::with_options(DeviceOptions::from_env()).await?;
        dev.apply_env()?;
        Ok(dev)
    }

    /// Creates a device on the adapter `options` select. One creation
    /// runs at a time in the process (others wait for it): some drivers,
    /// NVIDIA's Vulkan driver among them, are not thread-safe there.
    pub async fn with_options(options: DeviceOptions) -> Result<Device> {
        // Held until the instance is dropped (locals drop in reverse order).
        let _one_at_a_time = CREATION.lock().await;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: options.backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = adapter::choose(&instance, &options).await?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("pullback"),
                // Subgroups serve the CPU-adapter GEMM (`GemmKernel::Lanes`).
                required_features: adapter.features() & wgpu::Features::SUBGROUP,
                // The defaults cap storage bindings at 128 MiB; take what the adapter has.
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let lost = Arc::new(Mutex::new(None));
        let uncaptured = Arc::new(Mutex::new(None));
        let lost_slot = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *lost_slot.locked() = Some(format!("{reason:?}: {msg}"));
        });
        let error_slot = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            error_slot.locked().get_or_insert_with(|| e.to_string());
        }));
        Ok(Self::build(
            device,
            queue,
            adapter.get_info(),
            lost,
            uncaptured,
        ))
    }

    /// Shares a device the caller already has. pullback installs no error or
    /// device-lost handler on it (those stay the caller's); its limits are
    /// whatever the caller requested.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Device {
        let info = device.adapter_info();
        Self::build(device, queue, info, Arc::default(), Arc::default())
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        lost: Arc<Mutex<Option<String>>>,
        uncaptured: Arc<Mutex<Option<String>>>,
    ) -> Device {
        let gemm = GemmKernel::Auto
            .resolve(&info, &device)
            .unwrap_or(GemmKernel::Tiles);
        let large_min_tiles = if info.device_type == wgpu::DeviceType::Cpu {
            GemmKernel::CPU_LARGE_TILE_MIN_TILES
        } else {
            GemmKernel::LARGE_TILE_MIN_TILES
        };
        let pool = Arc::new(Pool::new(device.clone(), &device.limits()));
        let warmer = Warmer::for_adapter(&info, &queue);
        Device {
            dry: None,
            in_chain: false,
            shared: Arc::new(Shared {
                device,
                queue,
                info,
                pool,
                staging: StagingPool::default(),
                kernels: KernelCache::new(warmer),
                pending: Mutex::new(None),
                pending_dispatches: Default::default(),
                lost,
                uncaptured,
                budget: std::sync::atomic::AtomicU64::new(u64::MAX),
                gemm: AtomicU8::new(gemm.to_u8()),
                large_min_tiles: AtomicUsize::new(large_min_tiles),
                fuse: AtomicBool::new(true),
                fuse_forward: AtomicBool::new(true),
                chain: Mutex::default(),
            }),
        }
    }

    /// The adapter in use (name, backend, device type, driver).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.shared.info
    }

    /// The underlying wgpu device, for callers that mix in their own kernels.
    pub fn wgpu_device(&self) -> &wgpu::Device {
        &self.shared.device
    }

    /// The underlying wgpu queue.
    pub fn wgpu_queue(&self) -> &wgpu::Queue {
        &self.shared.queue
    }

    /// Counters of submits, dispatches and memory since the device was made.
    pub fn stats(&self) -> Stats {
        self.shared.pool.counters.snapshot()
    }

    /// Restarts `peak_bytes` from the current `live_bytes`.
    pub fn reset_peak(&self) {
        self.shared.pool.counters.reset_peak();
    }

    /// Releases the idle buffers the pool keeps for reuse (readback staging
    /// buffers included).
    pub fn trim_pool(&self) {
        self.shared.pool.trim();
        self.shared.staging.trim();
    }

    /// Caps the bytes of idle buffers kept for reuse (default 1 GiB); a
    /// buffer freed past the cap goes back to the driver.
    pub fn set_pool_limit(&self, bytes: u64) {
        self.shared.pool.set_idle_limit(bytes);
    }

    /// Submits all recorded work and waits until the GPU has finished it.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    /// True when both handles refer to the same device.
    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn check_same(&self, other: &Device) -> Result<()> {
        if self.same(other) {
            Ok(())
        } else {
            Err(Error::DeviceMismatch)
        }
    }

    /// Fails once the device is lost or wgpu reported an error, so no work
    /// is recorded on a device that can no longer run it.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if let Some(msg) = self.shared.lost.locked().clone() {
            return Err(Error::DeviceLost(msg));
        }
        if let Some(msg) = self.shared.uncaptured.locked().take() {
            return Err(Error::Gpu(msg));
        }
        Ok(())
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
        let (x, y) = crate::kernels::grid(workgroups);
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
        let synced = self.sync_rows(k) > 0.0;
        let variant = if synced {
            &kernel.synced
        } else {
            &kernel.plain
        };
        self.dispatch_rows_with(variant, k, constants, params, buffers, workgroups);
    }

    /// [`Device::dispatch_rows`] for a kernel with one entry point that
    /// calls `row_sync` itself: only `SYNC_ROWS` is set.
    pub(crate) fn dispatch_rows_with(
        &self,
        kernel: &Kernel,
        k: usize,
        constants: &[(&'static str, f64)],
        params: &Params,
        buffers: &[&Storage],
        workgroups: u64,
    ) {
        let mut constants = constants.to_vec();
        constants.push(("SYNC_ROWS", self.sync_rows(k)));
        self.dispatch(kernel, &constants, params, buffers, workgroups);
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
            shared
                .pending_dispatches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared
                .pool
                .counters
                .dispatches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// Runs `f` on the pending encoder (created if there is none); on a
    /// dry-run handle records nothing.
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        if self.dry.is_some() {
            return;
        }
        self.run_chain();
        let shared = &*self.shared;
        let mut pending = shared.pending.locked();
        f(pending.get_or_insert_with(|| new_encoder(&shared.device)));
    }

    /// Submits the pending encoder, if any work was recorded: one submit.
    pub(crate) fn flush(&self) -> Result<()> {
        self.check_alive()?;
        if self.dry.is_some() {
            return Ok(());
        }
        self.run_chain();
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
    /// ever-growing encoder; past this many dispatches the next forward op
    /// submits what is pending first. Backward passes never split.
    const FORWARD_FLUSH_DISPATCHES: u64 = 1024;

    /// Called before recording a forward op.
    pub(crate) fn flush_if_long(&self) -> Result<()> {
        let pending = self
            .shared
            .pending_dispatches
            .load(std::sync::atomic::Ordering::Relaxed);
        if pending >= Self::FORWARD_FLUSH_DISPATCHES {
            self.flush()?;
        }
        Ok(())
    }

    /// Submits `encoder`; call with the `pending` lock held, so that no
    /// other thread submits work recorded after it ahead of it.
    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.shared
            .pending_dispatches
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.shared.kernels.submit_warm(&self.shared.device);
        self.shared.queue.submit([encoder.finish()]);
        self.shared
            .pool
            .counters
            .submits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
