//! Elementwise VJP benchmarks (`cargo bench --bench elementwise`).
//!
//! - W1: `y = x*x`, n = 2^20, one cotangent (`pullback::vjp`), counted as
//!   12 bytes per element (read x, read v, write the gradient), against
//! - copy: a plain WGSL vec4 copy kernel on the same device over the same
//!   2^20 f32 values, counted as 8 bytes per element (read + write): the
//!   bandwidth an elementwise kernel can hope for on this adapter.
//! - W2: `y = sin(x)*exp(x)`, n = 2^16, K = 64 cotangents: one
//!   `vjp_batched` against a loop of 64 `vjp` calls.
//! - W9: 96 elementwise ops on n = 256 (`sin`, `mul` by x, `add_scalar`
//!   in turn), forward, one `vjp` and a readback: the host cost of a small
//!   graph (recording, planning, fusion, encoding, one submit, one map).
//! - readback: `to_vec` of a `[64, 2^16]` tensor (16 MiB), against the copy
//!   kernel over the same 2^22 values: copy time / readback time is the
//!   fraction of the device's copy rate a readback delivers the same values
//!   at (the readback copies on the device, then the host copies out of the
//!   mapped buffer).
//!
//! Every timed iteration ends with the GPU idle (`dev.synchronize()`, or a
//! blocking poll for the copy kernel), so GPU time is included. After
//! criterion finishes, a summary of this run is printed: criterion's mean
//! from `<criterion dir>/<group>/<id>/new/estimates.json` when this run wrote
//! it, otherwise (filtered runs) a short median timing loop.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::small_graph::{W9, W9_OPS};
use common::workloads::{W1, W1_N, W2, W2_K, W2_N, copy_kernel};
use common::{RunFacts, measured, values};
use criterion::{Criterion, SamplingMode, Throughput};
use pullback::Device;

// Criterion ids: "<group>/<function>"; plain names so the result
// directories are exactly these.
const ID_W1: (&str, &str) = ("W1", "vjp_x_mul_x_n1048576");
const ID_COPY: (&str, &str) = ("copy", "wgsl_vec4_n1048576");
const ID_W2_BATCHED: (&str, &str) = ("W2", "vjp_batched_K64_n65536");
const ID_W2_LOOPED: (&str, &str) = ("W2", "vjp_loop_K64_n65536");
const ID_W9: (&str, &str) = ("W9", "fwd_vjp_readback_96ops_n256");
const ID_READBACK: (&str, &str) = ("readback", "to_vec_64x65536");
const ID_COPY_RB: (&str, &str) = ("readback", "copy_wgsl_vec4_n4194304");
const RB_N: usize = W2_K * W2_N;

fn main() {
    let facts = RunFacts::capture();
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();

    let w1 = W1::new(&dev);
    let copy = copy_kernel(&dev, W1_N);
    let w2 = W2::new(&dev);
    let w9 = W9::new(&dev);
    let copy_rb = copy_kernel(&dev, RB_N);
    let rb = dev.tensor(&values(RB_N, 5), &[W2_K, W2_N]).unwrap();
    let readback = || {
        black_box(rb.to_vec().unwrap());
    };

    {
        let mut g = c.benchmark_group(ID_W1.0);
        g.throughput(Throughput::Bytes(12 * W1_N as u64));
        g.bench_function(ID_W1.1, |b| b.iter(|| w1.run()));
        g.finish();
    }
    {
        let mut g = c.benchmark_group(ID_COPY.0);
        g.throughput(Throughput::Bytes(8 * W1_N as u64));
        g.bench_function(ID_COPY.1, |b| b.iter(|| copy.run()));
        g.finish();
    }
    {
        let mut g = c.benchmark_group(ID_W2_BATCHED.0);
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .measurement_time(Duration::from_secs(8));
        g.bench_function(ID_W2_BATCHED.1, |b| b.iter(|| w2.batched()));
        g.bench_function(ID_W2_LOOPED.1, |b| b.iter(|| w2.looped()));
        g.finish();
    }
    {
        let mut g = c.benchmark_group(ID_W9.0);
        g.bench_function(ID_W9.1, |b| b.iter(|| w9.run()));
        g.finish();
    }
    {
        let mut g = c.benchmark_group(ID_READBACK.0);
        g.throughput(Throughput::Bytes(4 * RB_N as u64));
        g.bench_function(ID_READBACK.1, |b| b.iter(readback));
        g.bench_function(ID_COPY_RB.1, |b| b.iter(|| copy_rb.run()));
        g.finish();
    }
    c.final_summary();
    if !measured() {
        return;
    }

    let (w1_s, w1_src) = facts.seconds(ID_W1, 15, &|| w1.run());
    let (copy_s, copy_src) = facts.seconds(ID_COPY, 15, &|| copy.run());
    let (bat_s, bat_src) = facts.seconds(ID_W2_BATCHED, 7, &|| w2.batched());
    let (loop_s, loop_src) = facts.seconds(ID_W2_LOOPED, 5, &|| w2.looped());
    let (w9_s, w9_src) = facts.seconds(ID_W9, 15, &|| w9.run());
    let (rb_s, rb_src) = facts.seconds(ID_READBACK, 15, &readback);
    let (copy_rb_s, copy_rb_src) = facts.seconds(ID_COPY_RB, 15, &|| copy_rb.run());
    let w1_gbs = 12.0 * W1_N as f64 / w1_s / 1e9;
    let copy_gbs = 8.0 * W1_N as f64 / copy_s / 1e9;

    println!();
    println!("== pullback elementwise summary (this run; GB/s = 1e9 bytes/s) ==");
    facts.print(&dev);
    println!(
        "W1 vjp y=x*x, n=2^20:    {:8.3} ms  {:6.2} GB/s (12 B/elem)  [{w1_src}]",
        w1_s * 1e3,
        w1_gbs
    );
    println!(
        "copy WGSL vec4, n=2^20:  {:8.3} ms  {:6.2} GB/s (8 B/elem)   [{copy_src}]",
        copy_s * 1e3,
        copy_gbs
    );
    println!("W1 / copy bandwidth:     {:8.2}", w1_gbs / copy_gbs);
    println!(
        "W2 sin(x)*exp(x), n=2^16, K=64: batched {:.3} ms [{bat_src}], looped {:.3} ms [{loop_src}]",
        bat_s * 1e3,
        loop_s * 1e3
    );
    println!("W2 looped / batched:     {:8.2}", loop_s / bat_s);
    println!(
        "W9 {W9_OPS} ops, n=256, fwd + vjp + readback: {:.3} ms, {:.1} µs an op [{w9_src}]",
        w9_s * 1e3,
        w9_s * 1e6 / W9_OPS as f64
    );
    println!(
        "readback [64, 2^16] to_vec: {:.3} ms, {:.2} GB/s delivered [{rb_src}]; \
         copy kernel, same 2^22 values: {:.3} ms [{copy_rb_src}]",
        rb_s * 1e3,
        4.0 * RB_N as f64 / rb_s / 1e9,
        copy_rb_s * 1e3
    );
    println!("readback / copy rate:    {:8.2}", copy_rb_s / rb_s);
}
