//! Adapter choice: the best adapter by type (discrete > integrated > virtual >
//! CPU), native APIs before GL, unless `PULLBACK_ADAPTER` asks for one.

use crate::error::{Error, Result};

/// How [`crate::Device::with_options`] picks its adapter.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// A case-insensitive substring of the adapter name, or `software` for a
    /// CPU adapter (lavapipe, llvmpipe, WARP). `None`: the best adapter.
    pub adapter: Option<String>,
    /// Which wgpu backends to consider.
    pub backends: wgpu::Backends,
}

/// The GEMM schedules pullback has (all compute the same products, each
/// element summed in the same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmKernel {
    /// [`GemmKernel::Lanes`] on CPU adapters where it can run. Elsewhere
    /// chosen per product: [`GemmKernel::LargeTiles`] for products that
    /// fill at least [`GemmKernel::LARGE_TILE_MIN_TILES`] of its tiles on
    /// GPUs (below that, the smaller tiles' four times as many workgroups
    /// keep a GPU's compute units busy), at least
    /// [`GemmKernel::CPU_LARGE_TILE_MIN_TILES`] on CPUs without subgroups;
    /// [`GemmKernel::Tiles`] otherwise.
    #[default]
    Auto,
    /// 64×64 tiles staged in workgroup memory, a 4×4 block per invocation
    /// (`shaders/matmul.wgsl`, `matmul`).
    Tiles,
    /// 128×128 tiles, an 8×8 block per invocation (`matmul_large` in
    /// `shaders/matmul.wgsl`): half the workgroup-memory reads per
    /// multiply-add of [`GemmKernel::Tiles`], a quarter of the workgroups.
    LargeTiles,
    /// One column per invocation, rows shared by subgroup broadcasts
    /// (`shaders/matmul_lanes.wgsl`): the schedule for SIMD CPUs (lavapipe:
    /// 4× the tiles' GFLOP/s). Needs subgroups of at least 8 invocations.
    Lanes,
}

impl GemmKernel {
    /// The number of 128×128 tiles from which [`GemmKernel::Auto`] uses
    /// [`GemmKernel::LargeTiles`] on GPUs: 256, a 2048×2048 product, about
    /// two workgroups per compute unit on the largest GPUs (132 on an
    /// H100 or H200). Below it, 64×64 tiles make four times the workgroups.
    pub const LARGE_TILE_MIN_TILES: usize = 256;

    /// The same on CPU adapters that cannot run [`GemmKernel::Lanes`]
    /// (OpenGL llvmpipe): 2, one per core of a small machine. There the
    /// large tiles ran 1.8–2× the small ones' GFLOP/s from 256³ up, on
    /// W3's 256×512·512×1024 and on 1000×64·64×200 too; a single tile
    /// (128³) ran 5% slower.
    pub const CPU_LARGE_TILE_MIN_TILES: usize = 2;

    /// `auto`, `tiles`, `large` (or `largetiles`) or `lanes` (any case).
    pub fn parse(name: &str) -> Option<GemmKernel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(GemmKernel::Auto),
            "tiles" => Some(GemmKernel::Tiles),
            "large" | "largetiles" | "large_tiles" | "large-tiles" => Some(GemmKernel::LargeTiles),
            "lanes" => Some(GemmKernel::Lanes),
            _ => None,
        }
    }

    /// The choice `PULLBACK_GEMM` names (`Auto` when unset or unknown).
    pub(crate) fn from_env() -> GemmKernel {
        std::env::var("PULLBACK_GEMM")
            .ok()
            .and_then(|s| GemmKernel::parse(&s))
            .unwrap_or_default()
    }

    /// What this choice runs on `device`: `Lanes`, `Tiles` or `LargeTiles`,
    /// or `Auto` where the tiles are chosen per product (GPUs, and CPUs
    /// without subgroups). `Err` names
    /// what is missing when [`GemmKernel::Lanes`] was asked for and cannot run.
    pub(crate) fn resolve(
        self,
        info: &wgpu::AdapterInfo,
        device: &wgpu::Device,
    ) -> Result<GemmKernel> {
        let has_subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        let runnable = has_subgroups && info.subgroup_min_size >= 8;
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        match self {
            GemmKernel::Auto if cpu && runnable => Ok(GemmKernel::Lanes),
            GemmKernel::Auto | GemmKernel::Tiles | GemmKernel::LargeTiles => Ok(self),
            GemmKernel::Lanes if runnable => Ok(GemmKernel::Lanes),
            GemmKernel::Lanes => Err(Error::RequestDevice(format!(
                "the lanes GEMM needs subgroups of at least 8 invocations; this device has \
                 subgroups {}, minimum size {}: use GemmKernel::Auto, Tiles or LargeTiles \
                 (PULLBACK_GEMM=auto, tiles or large)",
                if has_subgroups { "enabled" } else { "disabled" },
                info.subgroup_min_size
            ))),
        }
    }

    /// The stored form of a resolved choice (`Shared::gemm`).
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> GemmKernel {
        [
            GemmKernel::Auto,
            GemmKernel::Tiles,
            GemmKernel::LargeTiles,
            GemmKernel::Lanes,
        ][usize::from(v).min(3)]
    }
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            adapter: None,
            backends: wgpu::Backends::all(),
        }
    }
}

impl DeviceOptions {
    /// The defaults, with `adapter` taken from the `PULLBACK_ADAPTER`
    /// environment variable when it is set and not empty, and `backends`
    /// from wgpu's `WGPU_BACKEND` (e.g. `vulkan`, `gl`, `metal,dx12`) when set.
    pub fn from_env() -> Self {
        let adapter = std::env::var("PULLBACK_ADAPTER")
            .ok()
            .filter(|s| !s.trim().is_empty());
        DeviceOptions {
            adapter,
            backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()),
        }
    }
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

fn matches(wanted: &str, info: &wgpu::AdapterInfo) -> bool {
    let wanted = wanted.trim().to_lowercase();
    if wanted == "software" || wanted == "cpu" {
        return info.device_type == wgpu::DeviceType::Cpu;
    }
    info.name.to_lowercase().contains(&wanted)
}

/// Picks an adapter that can run compute shaders, per `options`.
pub(crate) async fn choose(
    instance: &wgpu::Instance,
    options: &DeviceOptions,
) -> Result<wgpu::Adapter> {
    let mut adapters: Vec<wgpu::Adapter> = instance
        .enumerate_adapters(options.backends)
        .await
        .into_iter()
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect();
    if adapters.is_empty() {
        return Err(Error::NoAdapter);
    }
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (type_rank(info.device_type), backend_rank(info.backend))
    });
    match &options.adapter {
        None => Ok(adapters.swap_remove(0)),
        Some(wanted) => match adapters.iter().position(|a| matches(wanted, &a.get_info())) {
            Some(i) => Ok(adapters.swap_remove(i)),
            None => Err(Error::AdapterNotFound {
                wanted: wanted.clone(),
                available: adapters.iter().map(|a| describe(&a.get_info())).collect(),
            }),
        },
    }
}

/// wgpu's memory hints for a device on this adapter. On a CPU adapter
/// device memory is this process's memory, and the allocator's blocks are
/// what stays resident: a freed buffer's touched pages stay resident for
/// as long as anything else lives in its block. Smaller blocks
/// (`MemoryUsage`: 4–32 MiB where `Performance` takes 64–128 MiB) free
/// whole blocks sooner. W10's list on lavapipe (`bench_report`) ended at
/// 352 MB resident instead of 420 (184 against 213 MB once the pools were
/// trimmed), its passes no slower. GPUs keep wgpu's default, `Performance`.
pub(crate) fn memory_hints(info: &wgpu::AdapterInfo) -> wgpu::MemoryHints {
    match info.device_type {
        wgpu::DeviceType::Cpu => wgpu::MemoryHints::MemoryUsage,
        _ => wgpu::MemoryHints::Performance,
    }
}
