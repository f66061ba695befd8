//! The device: adapter, queue, buffer pool, pipeline cache, the pending
//! command encoder, the knobs (`settings.rs`) and the counters. It knows no
//! ops: it owns GPU resources, records dispatches (`encoder.rs`) and counts
//! what was done. Work that a layer above defers runs through a hook the
//! device calls ([`Deferred`]), not through an import.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::lock::Recover;
use crate::runtime::adapter::{self, DeviceOptions, GemmKernel};
use crate::runtime::kernels::KernelCache;
use crate::runtime::pool::{Counters, Pool, Stats};
use crate::runtime::staging::StagingPool;
use crate::runtime::warm::Warmer;

/// A GPU (or software) device with everything pullback keeps per device.
/// Cheap to clone; clones share the same device.
#[derive(Clone)]
pub struct Device {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Role,
}

/// What a handle does with the work recorded through it.
#[derive(Clone)]
pub(crate) enum Role {
    /// Records into the device's pending encoder, after running deferred
    /// work (every handle a caller holds).
    Live,
    /// Records nothing: buffers are virtual, sized and checked like real
    /// ones, and tallied here ([`Device::dry_run`]).
    Dry(Arc<Counters>),
    /// The deferred hook's own handle: records, without running the hook.
    Deferred,
}

/// Work that waits until something needs the device. A layer above
/// registers one hook per device (forward fusion's chain of elementwise
/// ops, `ops/elementwise/chain.rs`), and the device runs it before it
/// records, submits or reads anything else, since that may read what the
/// hook has yet to write (`encoder.rs`). The runtime does not know what
/// the work is.
pub(crate) trait Deferred: Any + Send + Sync {
    /// Records the waiting work through `runner`, a handle whose records do
    /// not run deferred work again. The hook serializes itself: while it
    /// records, another thread's `run` waits for it, so no thread records
    /// work that reads the hook's results ahead of them.
    fn run(&self, runner: &Device);
}

pub(crate) struct Shared {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub pool: Arc<Pool>,
    /// Mappable buffers for readbacks, by size.
    pub staging: StagingPool,
    /// Mappable buffers for uploads, by size.
    pub uploads: StagingPool,
    pub kernels: KernelCache,
    /// Dispatches wait here until something needs their results.
    pub pending: Mutex<Option<wgpu::CommandEncoder>>,
    /// Dispatches recorded in `pending` since its last submit.
    pub pending_dispatches: AtomicU64,
    /// Set by the device-lost callback (devices pullback created itself).
    pub lost: Arc<Mutex<Option<String>>>,
    /// Errors wgpu reported outside an error scope (devices pullback created).
    pub uncaptured: Arc<Mutex<Option<String>>>,
    /// Work a layer above defers until the device is needed ([`Deferred`]).
    pub deferred: OnceLock<Arc<dyn Deferred>>,
    /// Working-memory bound of one VJP pass in bytes; `u64::MAX`: none.
    pub budget: AtomicU64,
    /// The GEMM schedule, a resolved [`GemmKernel`] (`settings.rs`).
    pub gemm: AtomicU8,
    /// Where `GemmKernel::Auto` switches to large tiles (`ops/matmul/tune.rs`).
    pub large_min_tiles: AtomicUsize,
    /// `PULLBACK_GEMM=tune`: the GEMM autotune runs before the first product.
    pub tune_asked: AtomicBool,
    /// Elementwise regions of a backward pass run as one fused kernel.
    pub fuse: AtomicBool,
    /// Elementwise forward ops wait and run as one kernel.
    pub fuse_forward: AtomicBool,
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
        s.uploads.poison_locks();
        crate::lock::poison(&s.pending);
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
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// use pullback::{Device, DeviceOptions};
    /// // What PULLBACK_ADAPTER and WGPU_BACKEND say, else the best adapter.
    /// let dev = pollster::block_on(Device::with_options(DeviceOptions::from_env()))?;
    /// assert!(!dev.adapter_info().name.is_empty());
    /// assert_eq!(dev.scalar(2.5)?.to_vec()?, vec![2.5]);
    /// # Ok(()) }
    /// ```
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
                memory_hints: adapter::memory_hints(&adapter.get_info()),
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
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// use pullback::wgpu;
    /// let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    /// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
    ///     .expect("an adapter (install mesa-vulkan-drivers for lavapipe)");
    /// let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))
    ///     .expect("a device");
    /// let dev = pullback::Device::from_wgpu(device.clone(), queue);
    /// let x = dev.tensor(&[1.5, -2.0], &[2])?;
    /// assert_eq!(x.mul_scalar(2.0)?.to_vec()?, vec![3.0, -4.0]);
    /// assert!(dev.wgpu_device() == &device); // the caller's own device
    /// # Ok(()) }
    /// ```
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
            role: Role::Live,
            shared: Arc::new(Shared {
                device,
                queue,
                info,
                pool,
                staging: StagingPool::default(),
                uploads: StagingPool::for_uploads(),
                kernels: KernelCache::new(warmer),
                pending: Mutex::new(None),
                pending_dispatches: AtomicU64::new(0),
                lost,
                uncaptured,
                deferred: OnceLock::new(),
                budget: AtomicU64::new(u64::MAX),
                gemm: AtomicU8::new(gemm.to_u8()),
                large_min_tiles: AtomicUsize::new(large_min_tiles),
                tune_asked: AtomicBool::new(false),
                fuse: AtomicBool::new(true),
                fuse_forward: AtomicBool::new(true),
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
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// let dev = pullback::Device::new()?;
    /// let x = dev.tensor(&[0.5; 1000], &[1000])?.requires_grad();
    /// let loss = x.sin()?.exp()?.mul(&x)?.sum_all()?;
    /// let before = dev.stats();
    /// loss.backward()?;
    /// let after = dev.stats();
    /// assert_eq!(after.submits - before.submits, 1); // the whole pass, one submit
    /// assert!(after.dispatches > before.dispatches);
    /// assert!(after.live_bytes >= 4000); // x.grad, at least
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Stats {
        Stats {
            pipelines: self.shared.kernels.created(),
            ..self.shared.pool.counters.snapshot()
        }
    }

    /// Restarts `peak_bytes` from the current `live_bytes`.
    pub fn reset_peak(&self) {
        self.shared.pool.counters.reset_peak();
    }

    /// Releases the idle buffers the pool keeps for reuse (readback and
    /// upload staging buffers included).
    pub fn trim_pool(&self) {
        self.shared.pool.trim();
        self.shared.staging.trim();
        self.shared.uploads.trim();
    }

    /// Caps the bytes of idle buffers kept for reuse (default 1 GiB); a
    /// buffer freed past the cap goes back to the driver. The pool also
    /// keeps no more idle bytes than the most ever live at once (at least
    /// 64 MiB), and serves a request from an idle buffer up to twice its
    /// size, so that sizes that change from step to step share buffers. A
    /// freed buffer makes room by releasing the least recently freed idle
    /// ones no larger than itself (else it is released). The readback and
    /// upload staging buffers are kept likewise, within half that cap each.
    pub fn set_pool_limit(&self, bytes: u64) {
        self.shared.pool.set_idle_limit(bytes);
    }

    /// Submits all recorded work and waits until the GPU has finished it.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    /// Whether the GPU device was lost (a driver reset, the device
    /// destroyed, unplugged): then every call on this device returns
    /// [`Error::DeviceLost`] and a new [`Device`] is needed. Out of memory
    /// does not lose it ([`Error::OutOfMemory`]). On a device from
    /// [`Device::from_wgpu`] pullback sees a loss only through its own calls
    /// failing, since the device-lost callback stays the caller's.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.locked().is_some()
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
            // A destroyed device's buffers are invalid at once, but wgpu
            // runs the device-lost callback only in a waiting poll: an error
            // that stems from the loss is reported as the loss.
            let _ = self.shared.device.poll(wgpu::PollType::wait_indefinitely());
            if let Some(lost) = self.shared.lost.locked().clone() {
                return Err(Error::DeviceLost(lost));
            }
            return Err(Error::Gpu(msg));
        }
        Ok(())
    }
}
