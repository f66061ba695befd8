//! One report of pullback's performance on the adapter at hand:
//!
//! ```text
//! cargo run --release --example bench_report [-- --json report.json] [--svg k_sweep.svg]
//! ```
//!
//! It prints the adapter and its ceilings (copy GB/s, FMA GFLOP/s, the cost
//! of a dispatch and of a submit), the start-up cost (a fresh process with
//! Mesa's shader cache disabled: `Device::new()` and the first W3 step,
//! pipelines included), then W1–W5, W9 (a small graph's host cost),
//! matmul and readback with ms, GB/s or GFLOP/s, the fraction of the ceiling, batched/looped ratios and peak
//! bytes; forward mode and second order (W7 Hessian-vector products, W8
//! `jvp_batched`, the tall Jacobian in both modes: `modes.rs`); W10, shapes
//! that change, each workload in a fresh process (`shapes.rs`); and a K
//! sweep (W2 at K = 1…256, the W5 Jacobian at 64…1024 rows, W7 at K =
//! 1…64, W8 at K = 1…256) as ms per cotangent, tangent or direction next
//! to the looped cost, also drawn as an SVG chart.
//! `--json` writes every figure to a file so runs can be compared. The
//! workloads are the benches' own (`benches/common/workloads.rs`); the
//! criterion benches give the detailed statistics, this the overview, each
//! figure a median of a few runs.

#[path = "../../benches/common/mod.rs"]
mod common;
mod gpu;
mod modes;
mod report;
mod shapes;

use std::time::Instant;

use common::small_graph::{W9, W9_OPS};
use common::workloads::*;
use common::{interleaved_median_secs, median_secs, values};
use pullback::Device;
use report::{Report, Sweep, draw};

pub fn ms(reps: usize, f: &dyn Fn()) -> f64 {
    median_secs(reps, f) * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--startup-child") {
        startup_child();
        return;
    }
    if shapes::child(&args) {
        return;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let json_path = flag("--json");
    let svg_path = flag("--svg").unwrap_or_else(|| "k_sweep.svg".to_string());

    let startup = startup_in_fresh_process();
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    let info = dev.adapter_info();
    let adapter = format!(
        "{} ({:?}, {:?}; driver: {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    println!("== pullback bench_report ==");
    println!("adapter: {adapter}");
    println!(
        "gemm: {:?}, fused adjoints: {}, host load: {}",
        dev.gemm_kernel(),
        dev.fused_adjoints(),
        common::load_average()
    );
    let mut r = Report::default();

    r.section("Ceilings");
    let copy_small = copy_kernel(&dev, W1_N);
    let copy_large = copy_kernel(&dev, W2_K * W2_N);
    let copy_gbs = r.add(
        "ceilings",
        "copy GB/s (WGSL vec4, 2^22 f32, read+write)",
        8.0 * (W2_K * W2_N) as f64 / ms(9, &|| copy_large.run()) / 1e6,
        "GB/s",
    );
    let copy_small_gbs = 8.0 * W1_N as f64 / ms(9, &|| copy_small.run()) / 1e6;
    r.add(
        "ceilings",
        "copy GB/s (2^20 f32, W1's size)",
        copy_small_gbs,
        "GB/s",
    );
    let (fma, fma_flop) = fma_kernel(&dev);
    check_baselines(&dev, &copy_small, W1_N, &fma);
    let fma_gflops = r.add(
        "ceilings",
        "FMA GFLOP/s (WGSL vec4 FMAs)",
        fma_flop as f64 / ms(5, &|| fma.run()) / 1e6,
        "GFLOP/s",
    );
    let (dispatch_us, submit_us) = dispatch_and_submit_cost(&dev);
    r.add(
        "ceilings",
        "per dispatch (pullback op, encoded)",
        dispatch_us,
        "µs",
    );
    r.add(
        "ceilings",
        "per submit + wait (one tiny op)",
        submit_us,
        "µs",
    );

    r.section("Start-up (fresh process, MESA_SHADER_CACHE_DISABLE=true)");
    match startup {
        Some((new_ms, first_ms)) => {
            r.add("startup", "Device::new()", new_ms, "ms");
            r.add(
                "startup",
                "first W3 step (pipelines included)",
                first_ms,
                "ms",
            );
            r.add("startup", "together", new_ms + first_ms, "ms");
        }
        None => println!("  (the child process failed; see its output above)"),
    }

    r.section("W1: y = x*x, n = 2^20, one cotangent");
    let w1 = W1::new(&dev);
    // W1 and the copy kernel in turn (see `interleaved_median_secs`).
    let [w1_s, copy_s] = interleaved_median_secs(15, [&|| w1.run(), &|| copy_small.run()]);
    let w1_ms = r.add("W1", "vjp + wait", w1_s * 1e3, "ms");
    let w1_gbs = r.add(
        "W1",
        "GB/s (12 B/element)",
        12.0 * W1_N as f64 / w1_ms / 1e6,
        "GB/s",
    );
    let copy_beside = 8.0 * W1_N as f64 / copy_s / 1e9;
    r.add(
        "W1",
        "copy GB/s (2^20), run in turn with W1",
        copy_beside,
        "GB/s",
    );
    r.add(
        "W1",
        "fraction of the copy kernel (2^20)",
        w1_gbs / copy_beside,
        "",
    );

    r.section("W2: y = sin(x)*exp(x), n = 2^16, K = 64");
    let w2 = W2::new(&dev);
    let [batched_s, looped_s] = interleaved_median_secs(9, [&|| w2.batched(), &|| w2.looped()]);
    let batched = r.add("W2", "vjp_batched + wait", batched_s * 1e3, "ms");
    let looped = r.add("W2", "64 vjp queued + wait", looped_s * 1e3, "ms");
    r.add("W2", "looped / batched", looped / batched, "x");
    // The least a batched adjoint can move: read v and x, write the gradient.
    let min_bytes = ((2 * W2_K + 1) * W2_N * 4) as f64;
    let w2_gbs = r.add(
        "W2",
        "GB/s of the minimum bytes",
        min_bytes / batched / 1e6,
        "GB/s",
    );
    r.add("W2", "fraction of the copy kernel", w2_gbs / copy_gbs, "");
    // Forward fusion: one composed kernel against one kernel per op (the
    // chain is composed from its second sighting: `ms` runs once first).
    for (tracked, what) in [
        (false, "forward, x untracked"),
        (true, "forward, x tracked"),
    ] {
        let fused = r.add(
            "W2",
            &format!("{what}: fused"),
            ms(9, &|| w2.forward(tracked)),
            "ms",
        );
        dev.set_fused_forward(false);
        let each = ms(9, &|| w2.forward(tracked));
        dev.set_fused_forward(true);
        r.add("W2", &format!("{what}: kernel per op"), each, "ms");
        r.add("W2", &format!("{what}: per op / fused"), each / fused, "x");
    }

    r.section("W9: 96 elementwise ops, n = 256: forward + vjp + readback");
    let w9 = W9::new(&dev);
    let w9_ms = r.add("W9", "fwd + vjp + readback", ms(15, &|| w9.run()), "ms");
    r.add("W9", "per op", w9_ms * 1e3 / W9_OPS as f64, "µs");

    r.section("W3: MLP B=256 D=512 H=1024 C=10, forward + backward");
    let w3 = W3::new(&dev);
    let w3_ms = r.add("W3", "fwd + bwd + wait", ms(5, &|| w3.run()), "ms");
    let w3_gflops = r.add(
        "W3",
        "GFLOP/s (five GEMMs)",
        w3_flop() as f64 / w3_ms / 1e6,
        "GFLOP/s",
    );
    r.add(
        "W3",
        "fraction of the FMA kernel",
        w3_gflops / fma_gflops,
        "",
    );
    let mm = Matmul::new(&dev, 1024, 6);
    let mm_ms = r.add("matmul", "matmul 1024^3", ms(5, &|| mm.run()), "ms");
    let mm_gflops = r.add(
        "matmul",
        "GFLOP/s",
        2.0 * 1024f64.powi(3) / mm_ms / 1e6,
        "GFLOP/s",
    );
    r.add(
        "matmul",
        "fraction of the FMA kernel",
        mm_gflops / fma_gflops,
        "",
    );

    if info.device_type != wgpu::DeviceType::Cpu || args.iter().any(|a| a == "--large") {
        gpu::targets(&dev, &mut r, fma_gflops);
        gpu::gemm_schedules(&dev, &mut r, fma_gflops);
    }

    r.section("W4: MLP B=64 D=128 H=256 C=10, forward included");
    let w4 = W4::new(&dev);
    let grads = r.add("W4", "per_example_grads", ms(7, &|| w4.grads()), "ms");
    let norms = r.add("W4", "per_example_grad_norms", ms(7, &|| w4.norms()), "ms");
    let summed = r.add("W4", "summed backward", ms(7, &|| w4.summed()), "ms");
    let loop4 = r.add("W4", "loop of 64 vjp", ms(3, &|| w4.looped()), "ms");
    r.add("W4", "grads / summed", grads / summed, "x");
    r.add("W4", "norms / summed", norms / summed, "x");
    r.add("W4", "loop / grads", loop4 / grads, "x");
    r.add("W4", "loop / norms", loop4 / norms, "x");

    r.section("W5: Jacobian of tanh(W·x), n = m = 512");
    let w5 = W5::new(&dev);
    let jac = r.add("W5", "jacobian", ms(7, &|| w5.jacobian()), "ms");
    let loop5 = r.add("W5", "loop of 512 vjp", ms(2, &|| w5.looped()), "ms");
    r.add("W5", "loop / jacobian", loop5 / jac, "x");
    let k512 = r.add("W5", "vjp_batched K=512", ms(7, &|| w5.batched(W5_N)), "ms");
    let gemm = r.add("W5", "matmul 512^3", ms(7, &|| w5.gemm()), "ms");
    r.add("W5", "K=512 / matmul", k512 / gemm, "x");
    let (peak, _) = w5.peak();
    r.add("W5", "peak bytes, no budget", peak as f64, "B");
    dev.set_memory_budget((W5_N * W5_N) as u64);
    let (peak_budget, passes) = w5.peak();
    dev.clear_memory_budget();
    r.add(
        "W5",
        "peak bytes, budget = 1/4 of the Jacobian",
        peak_budget as f64,
        "B",
    );
    r.add("W5", "passes under that budget", passes as f64, "");

    modes::sections(&dev, &mut r);
    shapes::section(&mut r);

    r.section("Readback: to_vec of [64, 2^16]");
    let rb = dev.tensor(&values(W2_K * W2_N, 5), &[W2_K, W2_N]).unwrap();
    let rb_ms = r.add(
        "readback",
        "to_vec",
        ms(9, &|| drop(rb.to_vec().unwrap())),
        "ms",
    );
    let rb_gbs = r.add(
        "readback",
        "GB/s delivered",
        (W2_K * W2_N * 4) as f64 / rb_ms / 1e6,
        "GB/s",
    );
    r.add(
        "readback",
        "copy kernel time / readback time (same values)",
        rb_gbs * 2.0 / copy_gbs,
        "",
    );

    r.section("K sweep (ms per cotangent)");
    let mut sweep = k_sweep(&dev, &mut r);
    sweep.series.extend(modes::k_sweep(&dev, &mut r));
    if let Err(e) = draw(&sweep, &svg_path, &info.name) {
        println!("  (chart not drawn: {e})");
    } else {
        println!("  chart: {svg_path}");
    }
    if let Some(path) = json_path {
        std::fs::write(&path, r.json(&adapter, &sweep)).expect("writing the JSON report");
        println!("\nJSON: {path}");
    }
}

/// The cost of one recorded op (200 tiny ops, one submit) and of one
/// submit + wait, in µs. Forward fusion is off here: fused, the 200 ops
/// would be a few kernels, and a result nobody holds would not run at all.
fn dispatch_and_submit_cost(dev: &Device) -> (f64, f64) {
    dev.set_fused_forward(false);
    let x = dev.tensor(&[1.0; 4], &[4]).unwrap();
    let chain = || {
        let mut y = x.add_scalar(1.0).unwrap();
        for _ in 1..200 {
            y = y.add_scalar(1.0).unwrap();
        }
        dev.synchronize().unwrap();
    };
    let one = || {
        drop(x.add_scalar(1.0).unwrap());
        dev.synchronize().unwrap();
    };
    let per_dispatch = median_secs(5, &chain) / 200.0 * 1e6;
    let per_submit = median_secs(21, &one) * 1e6;
    dev.set_fused_forward(true);
    (per_dispatch, per_submit)
}

/// Runs this program again with `--startup-child` and the shader cache off.
fn startup_in_fresh_process() -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .arg("--startup-child")
        .env("MESA_SHADER_CACHE_DISABLE", "true")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("startup "))?;
    let mut nums = line.split_whitespace().skip(1).map(|v| v.parse::<f64>());
    Some((nums.next()?.ok()?, nums.next()?.ok()?))
}

fn startup_child() {
    let t = Instant::now();
    let dev = Device::new().unwrap();
    let new_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let w3 = W3::new(&dev);
    w3.run();
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("startup {new_ms} {first_ms}");
}

/// W2 at K = 1, 4, 16, 64, 256 and the W5 Jacobian at 64 … 1024 rows,
/// batched against looped (the loop timed over at most 16 rows).
fn k_sweep(dev: &Device, r: &mut Report) -> Sweep {
    let mut sweep = Sweep::default();
    let (mut w2b, mut w2l) = (Vec::new(), Vec::new());
    for k in [1usize, 4, 16, 64, 256] {
        let w = W2::with_k(dev, k);
        let b = ms(5, &|| w.batched()) / k as f64;
        let small = W2::with_k(dev, k.min(16));
        let per = ms(3, &|| small.looped()) / k.min(16) as f64;
        r.add(
            "sweep",
            &format!("W2 K={k}: batched, per cotangent"),
            b,
            "ms",
        );
        r.add(
            "sweep",
            &format!("W2 K={k}: looped, per cotangent"),
            per,
            "ms",
        );
        w2b.push((k, b));
        w2l.push((k, per));
    }
    let (mut w5b, mut w5l) = (Vec::new(), Vec::new());
    for n in [64usize, 128, 256, 512, 1024] {
        let w = W5::with_n(dev, n, 16);
        let b = ms(5, &|| w.jacobian()) / n as f64;
        let per = ms(3, &|| w.looped()) / 16.0;
        r.add("sweep", &format!("W5 n={n}: jacobian, per row"), b, "ms");
        r.add("sweep", &format!("W5 n={n}: looped, per row"), per, "ms");
        w5b.push((n, b));
        w5l.push((n, per));
    }
    sweep.series = vec![
        ("W2 batched".into(), w2b),
        ("W2 looped".into(), w2l),
        ("W5 jacobian".into(), w5b),
        ("W5 looped".into(), w5l),
    ];
    sweep
}
