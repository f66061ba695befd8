//! Benchmarks of forward mode and second order (`cargo bench --bench modes`),
//! the workloads of `common::modes`:
//!
//! - W7: Hessian-vector products of W4's MLP (64×128×256×10, mean
//!   cross-entropy): one gradient (`vjp` of the loss), one `hvp`,
//!   `hvp_batched` over K = 16 directions, and 16 `hvp` calls queued.
//! - W8: `jvp_batched` of `sin(x)·exp(x)`, n = 2^16, K = 64 tangents,
//!   against 64 `jvp` calls queued.
//! - The tall Jacobian of `tanh(W·x)`, W `[4096, 16]`: `JacobianMode::Auto`
//!   (forward, 16 tangent rows) against `Reverse` (4096 cotangent rows).
//!
//! The summary after criterion's output gives the ratios measured in this run.

mod common;

use std::time::Duration;

use common::RunFacts;
use common::modes::{TALL_M, TALL_N, Tall, W7, W7_K, W8, W8_K};
use criterion::{Criterion, SamplingMode};
use pullback::{Device, JacobianMode};

const IDS: [(&str, &str); 8] = [
    ("W7", "gradient"),
    ("W7", "hvp"),
    ("W7", "hvp_batched_K16"),
    ("W7", "loop_of_16_hvp"),
    ("W8", "jvp_batched_K64"),
    ("W8", "loop_of_64_jvp"),
    ("tall_jacobian", "auto"),
    ("tall_jacobian", "reverse"),
];

fn main() {
    let facts = RunFacts::capture();
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let (w7, w8, tall) = (W7::new(&dev), W8::new(&dev), Tall::new(&dev));
    let runs: [&dyn Fn(); 8] = [
        &|| w7.gradient(),
        &|| w7.hvp(),
        &|| w7.batched(),
        &|| w7.looped(),
        &|| w8.batched(),
        &|| w8.looped(),
        &|| tall.jacobian(JacobianMode::Auto),
        &|| tall.jacobian(JacobianMode::Reverse),
    ];
    for (id, f) in IDS.iter().zip(runs) {
        let mut g = c.benchmark_group(id.0);
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function(id.1, |b| b.iter(f));
        g.finish();
    }
    c.final_summary();
    if !common::measured() {
        return;
    }

    let ms: Vec<f64> = IDS
        .iter()
        .zip(runs)
        .map(|(id, f)| facts.seconds(*id, 3, f).0 * 1e3)
        .collect();
    let [grad, hvp, batched, looped, jvp_b, jvp_l, auto, reverse] = ms[..] else {
        unreachable!()
    };
    println!();
    println!("== pullback forward mode and second order summary (this run) ==");
    facts.print(&dev);
    println!("W7 Hessian-vector products of W4's MLP, mean cross-entropy, K = {W7_K}:");
    println!("  gradient (vjp)          {grad:9.2} ms");
    println!(
        "  hvp                     {hvp:9.2} ms  = {:5.2}x a gradient (target <= 4)",
        hvp / grad
    );
    println!(
        "  hvp_batched K={W7_K}        {batched:9.2} ms  = {:5.2}x a gradient",
        batched / grad
    );
    println!(
        "  loop of {W7_K} hvp          {looped:9.2} ms  = {:5.2}x hvp_batched (target >= 4)",
        looped / batched
    );
    println!("W8 jvp of sin(x)·exp(x), n = 2^16, K = {W8_K}:");
    println!("  jvp_batched K={W8_K}        {jvp_b:9.2} ms");
    println!(
        "  loop of {W8_K} jvp          {jvp_l:9.2} ms  = {:5.2}x jvp_batched (target >= 4)",
        jvp_l / jvp_b
    );
    println!("Tall Jacobian of tanh(W·x), W [{TALL_M}, {TALL_N}]:");
    println!("  Auto (forward)          {auto:9.2} ms");
    println!(
        "  Reverse                 {reverse:9.2} ms  = {:5.2}x Auto (target >= 4)",
        reverse / auto
    );
}
