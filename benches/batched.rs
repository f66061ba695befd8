//! Benchmarks of what is built on the batched VJP (`cargo bench --bench batched`).
//!
//! - W4: an MLP, B=64, D=128, H=256, C=10: `h = tanh(X·W1 + b1)`,
//!   `z = h·W2 + b2`, per-example cross-entropy `l ∈ R^B` (W3's model,
//!   `common::Mlp`). Each iteration
//!   runs the forward and then one of: `per_example_grads(l, params)`,
//!   `per_example_grad_norms(l, params)`, one summed backward
//!   (`l.backward_with(ones)`), or a loop of B single-example VJPs
//!   (`vjp(l, e_b)` with one-hot cotangents uploaded beforehand), then
//!   waits for the GPU.
//! - W5: the Jacobian of `y = tanh(W·x)`, n = m = 512 (W a constant):
//!   `jacobian(y, x)` (and with the forward included, as a peer that
//!   batches x would run it), against a loop of 512 single VJPs with
//!   one-hot cotangents queued with one wait at the end; `vjp_batched`
//!   with K = 1, 8, 64, 512 identity rows; and a plain `[512,512]·[512,512]`
//!   matmul, the GEMM of the same FLOPs as K = 512. Peak bytes of the
//!   Jacobian with no budget and with a budget of a quarter of its bytes.
//!
//! The summary after criterion's output gives the ratios measured in this run.

mod common;

use std::time::Duration;

use common::workloads::{W4, W4_DIMS, W5, W5_N as N5};
use common::{RunFacts, measured, median_secs};
use criterion::{Criterion, SamplingMode};
use pullback::Device;

const W4_IDS: [(&str, &str); 4] = [
    ("W4", "per_example_grads"),
    ("W4", "per_example_grad_norms"),
    ("W4", "summed_backward"),
    ("W4", "loop_of_B_vjps"),
];
const W5_IDS: [(&str, &str); 4] = [
    ("W5", "jacobian"),
    ("W5", "forward_and_jacobian"),
    ("W5", "vjp_batched_K512"),
    ("W5", "matmul_512"),
];

fn main() {
    let facts = RunFacts::capture();
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let w4 = W4::new(&dev);
    let w5 = W5::new(&dev);
    dev.synchronize().unwrap();
    let w4_runs: [&dyn Fn(); 4] = [&|| w4.grads(), &|| w4.norms(), &|| w4.summed(), &|| {
        w4.looped()
    }];
    let w5_runs: [&dyn Fn(); 4] = [
        &|| w5.jacobian(),
        &|| w5.forward_and_jacobian(),
        &|| w5.batched(N5),
        &|| w5.gemm(),
    ];
    for (id, f) in W4_IDS.iter().zip(w4_runs).chain(W5_IDS.iter().zip(w5_runs)) {
        let mut g = c.benchmark_group(id.0);
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function(id.1, |b| b.iter(f));
        g.finish();
    }
    c.final_summary();
    if !measured() {
        return;
    }

    let ms = |id: (&str, &str), f: &dyn Fn()| facts.seconds(id, 3, f).0 * 1e3;
    let w4_ms: Vec<f64> = W4_IDS
        .iter()
        .zip(w4_runs)
        .map(|(id, f)| ms(*id, f))
        .collect();
    let w5_ms: Vec<f64> = W5_IDS
        .iter()
        .zip(w5_runs)
        .map(|(id, f)| ms(*id, f))
        .collect();
    let w5_loop = median_secs(2, &|| w5.looped()) * 1e3;
    let ks: Vec<(usize, f64)> = [1, 8, 64]
        .iter()
        .map(|&k| (k, median_secs(5, &|| w5.batched(k)) * 1e3))
        .collect();
    let (peak_free, passes_free) = w5.peak();
    let jacobian_bytes = (N5 * N5 * 4) as u64;
    dev.set_memory_budget(jacobian_bytes / 4);
    let (peak_budget, passes_budget) = w5.peak();
    let budget_ms = median_secs(5, &|| w5.jacobian()) * 1e3;
    dev.clear_memory_budget();

    println!();
    println!("== pullback batched summary (this run) ==");
    facts.print(&dev);
    let [grads, norms, summed, looped] = [w4_ms[0], w4_ms[1], w4_ms[2], w4_ms[3]];
    let (b, d, h, c) = W4_DIMS;
    println!("W4 MLP B={b} D={d} H={h} C={c}, forward included in each:");
    println!(
        "  per_example_grads       {grads:9.2} ms  = {:5.2}x summed backward, {:6.1}x faster than the loop",
        grads / summed,
        looped / grads
    );
    println!(
        "  per_example_grad_norms  {norms:9.2} ms  = {:5.2}x summed backward, {:6.1}x faster than the loop",
        norms / summed,
        looped / norms
    );
    println!("  summed backward         {summed:9.2} ms");
    println!("  loop of {b} vjp          {looped:9.2} ms");
    let [jac, fwd_jac, k512, gemm] = [w5_ms[0], w5_ms[1], w5_ms[2], w5_ms[3]];
    println!("W5 Jacobian of tanh(W·x), n = m = {N5}:");
    println!(
        "  jacobian                {jac:9.2} ms  ({:6.1}x faster than the loop)",
        w5_loop / jac
    );
    println!("  forward + jacobian      {fwd_jac:9.2} ms");
    println!("  loop of {N5} vjp         {w5_loop:9.2} ms  (median of 2, one wait at the end)");
    for (k, t) in &ks {
        println!("  vjp_batched K={k:<4}      {t:9.2} ms");
    }
    println!(
        "  vjp_batched K=512       {k512:9.2} ms  = {:5.2}x a plain 512^3 matmul",
        k512 / gemm
    );
    println!(
        "  matmul 512^3            {gemm:9.2} ms  ({:6.2} GFLOP/s)",
        2.0 * (N5 as f64).powi(3) / gemm / 1e6
    );
    println!("  peak bytes, no budget:  {peak_free} ({passes_free} pass)");
    println!(
        "  peak bytes, budget {} B: {peak_budget} ({passes_budget} passes, {budget_ms:.2} ms)",
        jacobian_bytes / 4
    );
}
