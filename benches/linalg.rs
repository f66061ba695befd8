//! Linear-algebra benchmarks (`cargo bench --bench linalg`).
//!
//! - W3: a 2-layer MLP, B=256, D=512, H=1024, C=10:
//!   `h = tanh(X·W1 + b1)`, `z = h·W2 + b2`, per-example cross-entropy
//!   `l ∈ R^B`; forward + `l.backward_with(ones)` into W1, b1, W2, b2 (X is a
//!   constant, so dX is pruned). GFLOP/s counts the five GEMMs:
//!   2BDH + 2BHC forward, 2DBH (dW1) + 2BCH (dh) + 2HBC (dW2) backward.
//! - matmul 1024³: one `a.matmul(&b)`, 2·1024³ FLOP.
//! - FMA peak: a WGSL kernel of independent vec4 FMAs, the adapter's
//!   attainable arithmetic rate, next to which the GEMM's rate is read.
//!
//! Every timed iteration ends with the GPU idle (`dev.synchronize()`).

mod common;

use std::time::Duration;

use common::workloads::{Matmul, W3, fma_kernel, w3_flop};
use common::{RunFacts, measured};
use criterion::{Criterion, SamplingMode, Throughput};
use pullback::Device;

const MM_N: usize = 1024;
const MM_FLOP: u64 = 2 * (MM_N * MM_N * MM_N) as u64;

const ID_W3: (&str, &str) = ("W3", "mlp_B256_D512_H1024_C10_fwd_bwd");
const ID_MM: (&str, &str) = ("matmul", "n1024");
const ID_FMA: (&str, &str) = ("fma_peak", "wgsl_vec4_fma");

fn main() {
    let facts = RunFacts::capture();
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();

    let w3 = W3::new(&dev);
    let mm = Matmul::new(&dev, MM_N, 6);
    let (fma, fma_flop) = fma_kernel(&dev);
    dev.synchronize().unwrap();

    for (id, flop, f) in [
        (ID_W3, w3_flop(), &(|| w3.run()) as &dyn Fn()),
        (ID_MM, MM_FLOP, &|| mm.run()),
        (ID_FMA, fma_flop, &|| fma.run()),
    ] {
        let mut g = c.benchmark_group(id.0);
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(flop));
        g.bench_function(id.1, |b| b.iter(f));
        g.finish();
    }
    c.final_summary();
    if !measured() {
        return;
    }

    let (w3_s, w3_src) = facts.seconds(ID_W3, 3, &|| w3.run());
    let (mm_s, mm_src) = facts.seconds(ID_MM, 3, &|| mm.run());
    let (fma_s, fma_src) = facts.seconds(ID_FMA, 9, &|| fma.run());
    let gflops = |flop: u64, s: f64| flop as f64 / s / 1e9;
    println!();
    println!(
        "== pullback linalg summary (this run; GFLOP/s = 1e9 FLOP/s; Throughput above counts FLOP as elements) =="
    );
    facts.print(&dev);
    println!(
        "W3 MLP fwd+bwd (B=256 D=512 H=1024 C=10): {:9.2} ms  {:7.2} GFLOP/s  [{w3_src}]",
        w3_s * 1e3,
        gflops(w3_flop(), w3_s)
    );
    println!(
        "matmul 1024^3:                            {:9.2} ms  {:7.2} GFLOP/s  [{mm_src}]",
        mm_s * 1e3,
        gflops(MM_FLOP, mm_s)
    );
    println!(
        "FMA peak (WGSL vec4 FMAs):                {:9.2} ms  {:7.2} GFLOP/s  [{fma_src}]",
        fma_s * 1e3,
        gflops(fma_flop, fma_s)
    );
    println!(
        "matmul / FMA peak:                        {:9.3}",
        gflops(MM_FLOP, mm_s) / gflops(fma_flop, fma_s)
    );
    println!(
        "W3 / matmul 1024^3 rate:                  {:9.3}",
        gflops(w3_flop(), w3_s) / gflops(MM_FLOP, mm_s)
    );
}
