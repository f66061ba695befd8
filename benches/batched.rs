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

use std::hint::black_box;
use std::time::Duration;

use common::{Mlp, RunFacts, measured, median_secs, values};
use criterion::{Criterion, SamplingMode};
use pullback::{Device, Tensor};

const B: usize = 64;
const D: usize = 128;
const H: usize = 256;
const C: usize = 10;
const N5: usize = 512;

struct W4 {
    dev: Device,
    mlp: Mlp,
    ones: Tensor,
    onehots: Vec<Tensor>,
}

impl W4 {
    fn new(dev: &Device) -> W4 {
        let onehots = (0..B)
            .map(|b| {
                let mut e = vec![0.0; B];
                e[b] = 1.0;
                dev.tensor(&e, &[B]).unwrap()
            })
            .collect();
        W4 {
            dev: dev.clone(),
            mlp: Mlp::new(dev, B, D, H, C),
            ones: dev.ones(&[B]).unwrap(),
            onehots,
        }
    }

    fn refs(&self) -> Vec<&Tensor> {
        self.mlp.params.iter().collect()
    }

    fn grads(&self) {
        let g = pullback::per_example_grads(&self.mlp.loss(), &self.refs()).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    fn norms(&self) {
        let n = pullback::per_example_grad_norms(&self.mlp.loss(), &self.refs()).unwrap();
        self.dev.synchronize().unwrap();
        black_box(n);
    }

    fn summed(&self) {
        self.mlp.loss().backward_with(&self.ones).unwrap();
        self.dev.synchronize().unwrap();
        for p in &self.mlp.params {
            black_box(p.grad());
            p.zero_grad();
        }
    }

    fn looped(&self) {
        let loss = self.mlp.loss();
        let refs = self.refs();
        let g: Vec<_> = self
            .onehots
            .iter()
            .map(|e| pullback::vjp(&[&loss], &[e], &refs).unwrap())
            .collect();
        self.dev.synchronize().unwrap();
        black_box(g);
    }
}

struct W5 {
    dev: Device,
    w: Tensor,
    x: Tensor,
    y: Tensor,
    identity: Vec<(usize, Tensor)>,
    onehots: Vec<Tensor>,
    a: Tensor,
    b: Tensor,
}

impl W5 {
    fn new(dev: &Device) -> W5 {
        let scaled: Vec<f32> = values(N5 * N5, 11).iter().map(|v| v * 0.1).collect();
        let w = dev.tensor(&scaled, &[N5, N5]).unwrap();
        let x = dev
            .tensor(&values(N5, 12), &[N5, 1])
            .unwrap()
            .requires_grad();
        let y = w.matmul(&x).unwrap().tanh().unwrap();
        let identity = [1, 8, 64, N5]
            .iter()
            .map(|&k| {
                let mut e = vec![0.0; k * N5];
                (0..k).for_each(|i| e[i * N5 + i] = 1.0);
                (k, dev.tensor(&e, &[k, N5, 1]).unwrap())
            })
            .collect();
        let onehots = (0..N5)
            .map(|i| {
                let mut e = vec![0.0; N5];
                e[i] = 1.0;
                dev.tensor(&e, &[N5, 1]).unwrap()
            })
            .collect();
        W5 {
            dev: dev.clone(),
            a: dev.tensor(&values(N5 * N5, 13), &[N5, N5]).unwrap(),
            b: dev.tensor(&values(N5 * N5, 14), &[N5, N5]).unwrap(),
            w,
            x,
            y,
            identity,
            onehots,
        }
    }

    fn jacobian(&self) {
        let j = pullback::jacobian(&self.y, &self.x).unwrap();
        self.dev.synchronize().unwrap();
        black_box(j);
    }

    fn forward_and_jacobian(&self) {
        let y = self.w.matmul(&self.x).unwrap().tanh().unwrap();
        let j = pullback::jacobian(&y, &self.x).unwrap();
        self.dev.synchronize().unwrap();
        black_box(j);
    }

    fn batched(&self, k: usize) {
        let v = &self.identity.iter().find(|(kk, _)| *kk == k).unwrap().1;
        let g = pullback::vjp_batched(&[&self.y], &[v], &[&self.x]).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    fn looped(&self) {
        let g: Vec<_> = self
            .onehots
            .iter()
            .map(|e| pullback::vjp(&[&self.y], &[e], &[&self.x]).unwrap())
            .collect();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    fn gemm(&self) {
        let c = self.a.matmul(&self.b).unwrap();
        self.dev.synchronize().unwrap();
        black_box(c);
    }

    /// Bytes the Jacobian adds at its peak, and its passes.
    fn peak(&self) -> (u64, u64) {
        self.dev.synchronize().unwrap();
        self.dev.reset_peak();
        let before = self.dev.stats();
        let j = pullback::jacobian(&self.y, &self.x).unwrap();
        let after = self.dev.stats();
        drop(j);
        (
            after.peak_bytes - before.live_bytes,
            after.submits - before.submits,
        )
    }
}

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
    println!("W4 MLP B={B} D={D} H={H} C={C}, forward included in each:");
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
    println!("  loop of {B} vjp          {looped:9.2} ms");
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
