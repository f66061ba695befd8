//! The knobs of a device: choices between equivalent ways of computing
//! (which GEMM schedule matrix products use, whether forward ops and
//! backward regions fuse) and the adapter's bounds that kernels obey. The
//! choices can come from the environment (`Device::new`) and be changed at
//! any time; results agree either way (to rounding).

use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::runtime::adapter::GemmKernel;
use crate::runtime::device::Device;
use crate::runtime::kernels::{LOOP_PIECE, PipelineKey};

impl Device {
    /// Applies `PULLBACK_GEMM` (`auto`, `tiles`, `large`, `lanes`, or `tune`:
    /// `auto`, with [`Device::tune_gemm`] run before the first matrix
    /// product) and `PULLBACK_FUSION` (`off` or `0` turns fusion off).
    /// Creating a device runs no kernel.
    pub(crate) fn apply_env(&self) -> Result<()> {
        self.set_gemm_kernel(GemmKernel::from_env())?;
        if std::env::var("PULLBACK_GEMM").is_ok_and(|v| v.trim().eq_ignore_ascii_case("tune")) {
            self.shared.tune_asked.store(true, Ordering::Relaxed);
        }
        if let Ok(v) = std::env::var("PULLBACK_FUSION") {
            let off = matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            );
            self.set_fused_adjoints(!off);
            self.set_fused_forward(!off);
        }
        Ok(())
    }

    /// The most loop iterations one invocation may run, where the driver
    /// bounds it: llvmpipe (lavapipe) silently stops an invocation's loops
    /// after 65535 iterations in all. Kernels that walk a long axis in one
    /// invocation split it below this (`LOOP_PIECE` in `runtime/kernels.rs`).
    /// Other CPU drivers are treated alike, at the cost of a split.
    pub(crate) fn loop_limit(&self) -> Option<usize> {
        (self.adapter_info().device_type == wgpu::DeviceType::Cpu).then_some(LOOP_PIECE)
    }

    /// Chooses the GEMM schedule matrix products use from now on (default
    /// [`GemmKernel::Auto`]; `Device::new` takes it from `PULLBACK_GEMM`).
    /// All compute the same products; this is for measuring one against
    /// another and for testing each on one adapter. `Lanes` on a device that
    /// cannot run it is an error that says why, and changes nothing.
    pub fn set_gemm_kernel(&self, choice: GemmKernel) -> Result<()> {
        let resolved = choice.resolve(self.adapter_info(), self.wgpu_device())?;
        self.shared.gemm.store(resolved.to_u8(), Ordering::Relaxed);
        Ok(())
    }

    /// The schedule matrix products use now: `Lanes`, `Tiles` or
    /// `LargeTiles`, or `Auto` where the tiles are chosen per product (GPUs,
    /// and CPUs without subgroups; see [`GemmKernel::Auto`]). pullback asks
    /// for subgroups where the adapter has them; a shared device has what
    /// its owner requested.
    pub fn gemm_kernel(&self) -> GemmKernel {
        GemmKernel::from_u8(self.shared.gemm.load(Ordering::Relaxed))
    }

    /// Turns fused adjoints on (the default) or off. On, a backward pass
    /// runs each region of elementwise ops whose intermediate cotangents
    /// stay inside it (unary ops, binary ops on operands of one shape) as
    /// one kernel that reads each saved value once and writes each
    /// cotangent leaving the region once; off, every op's adjoint runs on
    /// its own, with an accumulation kernel where two contributions meet.
    /// The results agree to a few ULP (products of derivatives are grouped
    /// differently). `Device::new` turns it off when `PULLBACK_FUSION=off`.
    pub fn set_fused_adjoints(&self, on: bool) {
        self.shared.fuse.store(on, Ordering::Relaxed);
    }

    /// Whether backward passes fuse elementwise regions.
    pub fn fused_adjoints(&self) -> bool {
        self.shared.fuse.load(Ordering::Relaxed)
    }

    /// Turns forward fusion on (the default) or off. On, elementwise ops
    /// (unary, binary with broadcasting, scalar ops) wait until something
    /// else needs the device, then a run of them of one output shape goes
    /// as one kernel that reads each input once and writes only the
    /// results still referenced (tensors the caller holds, values the
    /// graph saved); off, each op is dispatched when called. The values
    /// agree to a few ULP. Turning it off runs what is waiting.
    /// `Device::new` turns it off when `PULLBACK_FUSION=off`.
    pub fn set_fused_forward(&self, on: bool) {
        if !on {
            self.run_deferred();
        }
        self.shared.fuse_forward.store(on, Ordering::Relaxed);
    }

    /// Whether elementwise forward ops are fused.
    pub fn fused_forward(&self) -> bool {
        self.shared.fuse_forward.load(Ordering::Relaxed)
    }

    /// Keeps at most `count` compiled pipelines (kernel variants; at least
    /// one), evicting the least recently used past it (default 512). An
    /// evicted kernel is compiled again when next needed;
    /// [`Stats::pipelines`](crate::Stats::pipelines) counts every compile.
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// let dev = pullback::Device::new()?;
    /// dev.set_pipeline_limit(2);
    /// let x = dev.tensor(&[0.5, 1.0], &[2])?;
    /// let y = x.sin()?.add(&x.exp()?)?.mul(&x)?.relu()?;
    /// assert!((y.to_vec()?[0] - (0.5f32.sin() + 0.5f32.exp()) * 0.5).abs() < 1e-6);
    /// assert!(dev.cached_pipelines() <= 2);
    /// # Ok(()) }
    /// ```
    pub fn set_pipeline_limit(&self, count: usize) {
        self.shared.kernels.set_limit(count);
    }

    /// Compiled pipelines cached now (at most the pipeline limit).
    pub fn cached_pipelines(&self) -> usize {
        self.shared.kernels.cached()
    }

    /// Whether the pipeline of `key` is compiled (cached) on this device.
    pub(crate) fn is_compiled(&self, key: &PipelineKey) -> bool {
        self.shared.kernels.contains(key)
    }

    /// Storage buffers one kernel may bind on this device (at most 16:
    /// a fused region binds its saved values and outputs).
    pub(crate) fn max_storage_bindings(&self) -> usize {
        let limit = self
            .wgpu_device()
            .limits()
            .max_storage_buffers_per_shader_stage;
        (limit as usize).min(16)
    }
}
