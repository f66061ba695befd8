//! The report's GPU sections: issue 7's targets at GPU sizes, and the GEMM
//! schedules measured against each other on the adapter at hand. Run on
//! GPUs, or anywhere with `--large`.

use pullback::{Device, GemmKernel};

use crate::common::workloads::{Matmul, W1, copy_kernel};
use crate::ms;
use crate::report::Report;

/// Issue 7's GPU targets: W1 at n = 2^26 against the copy kernel at the
/// same size (target ≥ 0.7), and matmul 4096³ against the FMA kernel
/// (target ≥ 0.5). Run on GPUs, or anywhere with `--large`; where the
/// adapter cannot bind 2^26 floats (lavapipe: 128 MiB), the largest power
/// of two it can.
pub fn targets(dev: &Device, r: &mut Report, fma_gflops: f64) {
    let limit = dev.wgpu_device().limits().max_storage_buffer_binding_size / 4;
    let n = (1usize << 26).min(1 << limit.max(1).ilog2());
    r.section(&format!(
        "GPU targets: W1 at n = 2^{} (2^26 asked), matmul 4096^3",
        n.ilog2()
    ));
    let copy = copy_kernel(dev, n);
    let copy_gbs = r.add(
        "gpu",
        "copy GB/s (W1's size)",
        8.0 * n as f64 / ms(9, &|| copy.run()) / 1e6,
        "GB/s",
    );
    drop(copy);
    let w1 = W1::with_n(dev, n);
    let w1_ms = r.add("gpu", "W1: vjp + wait", ms(9, &|| w1.run()), "ms");
    let w1_gbs = r.add(
        "gpu",
        "W1 GB/s (12 B/element)",
        12.0 * n as f64 / w1_ms / 1e6,
        "GB/s",
    );
    r.add(
        "gpu",
        "W1 fraction of copy (target 0.7)",
        w1_gbs / copy_gbs,
        "",
    );
    drop(w1);
    let mm = Matmul::new(dev, 4096, 7);
    let mm_ms = r.add("gpu", "matmul 4096^3", ms(5, &|| mm.run()), "ms");
    let gflops = r.add(
        "gpu",
        "GFLOP/s",
        2.0 * 4096f64.powi(3) / mm_ms / 1e6,
        "GFLOP/s",
    );
    r.add(
        "gpu",
        "fraction of the FMA kernel (target 0.5)",
        gflops / fma_gflops,
        "",
    );
}

/// Each GEMM schedule this device can run at 1024³, and on GPUs at 4096³
/// too (on lavapipe the tiles need ~30 s a run there), in GFLOP/s and as
/// a fraction of the FMA kernel: the measurements behind
/// `GemmKernel::Auto`'s choice. The device's choice is restored after.
/// Then `Device::tune_gemm` on a fresh device: its timings, the switch it
/// sets and what it cost.
pub fn gemm_schedules(dev: &Device, r: &mut Report, fma_gflops: f64) {
    r.section("GEMM schedules (GemmKernel), GFLOP/s and fraction of the FMA kernel");
    let before = dev.gemm_kernel();
    let cpu = dev.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let sizes: &[usize] = if cpu { &[1024] } else { &[1024, 4096] };
    for &n in sizes {
        let mm = Matmul::new(dev, n, 8);
        for kernel in [GemmKernel::Tiles, GemmKernel::LargeTiles, GemmKernel::Lanes] {
            if dev.set_gemm_kernel(kernel).is_err() {
                continue;
            }
            let gflops = 2.0 * (n as f64).powi(3) / ms(5, &|| mm.run()) / 1e6;
            r.add(
                "gemm",
                &format!("matmul {n}^3, {kernel:?}: GFLOP/s"),
                gflops,
                "GFLOP/s",
            );
            r.add(
                "gemm",
                &format!("matmul {n}^3, {kernel:?}: of FMA"),
                gflops / fma_gflops,
                "",
            );
        }
    }
    dev.set_gemm_kernel(before)
        .expect("the schedule the device had runs on it");
    // The autotune on a device of its own, so that its cost includes the
    // pipelines' compiles and the report's device keeps its defaults.
    let fresh = Device::new().expect("a second device on the same adapter");
    let tuning = fresh.tune_gemm().expect("the GEMM autotune");
    for p in &tuning.probes {
        r.add(
            "gemm",
            &format!("tune_gemm: {}^3 {:?}", p.n, p.kernel),
            p.ms,
            "ms",
        );
    }
    r.add(
        "gemm",
        "tune_gemm: LargeTiles from this many tiles",
        tuning.large_tile_min_tiles as f64,
        "",
    );
    r.add(
        "gemm",
        "tune_gemm: cost on a fresh device (issue 7: < 100 ms)",
        tuning.took.as_secs_f64() * 1e3,
        "ms",
    );
}
