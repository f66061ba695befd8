//! Convolution benchmarks (`cargo bench --bench conv`): conv2d of
//! x `[32, 16, 32, 32]` with w `[32, 16, 3, 3]`, padding 1 (output
//! `[32, 32, 32, 32]`): 2·N·O·OH·OW·C·9 = 302 MFLOP per convolution.
//! - forward: `x.conv2d(&w)` (untracked);
//! - batched VJP at K = 1 and K = 16: `vjp_batched` into x and w, 2·K
//!   convolutions' worth of FLOP (dX and dW);
//! - the same convolution as explicit im2col from public ops (pad, narrow,
//!   stack, reshape) + matmul, forward and K = 16, next to `conv2d`'s
//!   unfold kernel + GEMM;
//! - a direct convolution kernel (`benches/conv_direct.wgsl`, one
//!   invocation per output, 144 products each), forward only: what
//!   unfold + GEMM is measured against;
//! - the FMA kernel, the adapter's attainable rate, for the fractions.
//!
//! Every timed iteration ends with the GPU idle (`dev.synchronize()`).

mod common;

use std::time::Duration;

use common::workloads::fma_kernel;
use common::{RawKernel, RunFacts, measured, values};
use criterion::{Criterion, SamplingMode, Throughput};
use pullback::{ConvOptions, Device, Tensor};

const N: usize = 32;
const C: usize = 16;
const O: usize = 32;
const S: usize = 32;
const FLOP: u64 = 2 * (N * O * S * S * C * 9) as u64;

struct Conv {
    dev: Device,
    x: Tensor,
    w: Tensor,
    v1: Tensor,
    v16: Tensor,
}

fn opts() -> ConvOptions {
    ConvOptions {
        padding: 1,
        ..ConvOptions::default()
    }
}

/// im2col from public ops: the 9 shifted views of the padded input,
/// stacked as `[N, C, 9, S, S]`, then one matmul with w as `[O, C·9]`.
fn explicit(x: &Tensor, w: &Tensor) -> pullback::Result<Tensor> {
    let xp = x.pad(&[(0, 0), (0, 0), (1, 1), (1, 1)], 0.0)?;
    let mut views = Vec::with_capacity(9);
    for i in 0..3 {
        for j in 0..3 {
            views.push(xp.narrow(2, i, S)?.narrow(3, j, S)?);
        }
    }
    let refs: Vec<&Tensor> = views.iter().collect();
    let cols = pullback::stack(&refs, 2)?.reshape(&[N, C * 9, S * S])?;
    w.reshape(&[O, C * 9])?
        .matmul(&cols)?
        .reshape(&[N, O, S, S])
}

impl Conv {
    fn new(dev: &Device) -> Conv {
        let t = |shape: &[usize], seed| {
            let n = shape.iter().product();
            dev.tensor(&values(n, seed), shape).unwrap()
        };
        Conv {
            dev: dev.clone(),
            x: t(&[N, C, S, S], 1).requires_grad(),
            w: t(&[O, C, 3, 3], 2).requires_grad(),
            v1: t(&[1, N, O, S, S], 3),
            v16: t(&[16, N, O, S, S], 4),
        }
    }

    fn forward(&self, explicit_im2col: bool) {
        let (x, w) = (self.x.detach(), self.w.detach());
        let y = if explicit_im2col {
            explicit(&x, &w)
        } else {
            x.conv2d(&w, opts())
        };
        drop(y.unwrap());
        self.dev.synchronize().unwrap();
    }

    fn vjp(&self, k16: bool, explicit_im2col: bool) {
        let y = if explicit_im2col {
            explicit(&self.x, &self.w)
        } else {
            self.x.conv2d(&self.w, opts())
        }
        .unwrap();
        let v = if k16 { &self.v16 } else { &self.v1 };
        let g = pullback::vjp_batched(&[&y], &[v], &[&self.x, &self.w]).unwrap();
        drop(g);
        self.dev.synchronize().unwrap();
    }
}

fn main() {
    let facts = RunFacts::capture();
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let conv = Conv::new(&dev);
    let direct = {
        let x = RawKernel::buffer(&dev, 0, Some(&values(N * C * S * S, 1)));
        let w = RawKernel::buffer(&dev, 0, Some(&values(O * C * 9, 2)));
        let y = RawKernel::buffer(&dev, (N * O * S * S * 4) as u64, None);
        let groups = (N * O * S * S).div_ceil(256) as u32;
        let src = include_str!("conv_direct.wgsl");
        RawKernel::new(
            &dev,
            src,
            "conv_direct",
            &[(&x, true), (&w, true), (&y, false)],
            groups,
        )
    };
    // The direct kernel computes what conv2d does, before it is timed: the
    // same inputs, each output a sum of C·9 = 144 products in another
    // order (1e-5 of the sum of their magnitudes, about 1e-4 of a value).
    let want = conv.x.detach().conv2d(&conv.w.detach(), opts()).unwrap();
    let (want, got) = (want.to_vec().unwrap(), direct.output(&dev, N * O * S * S));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        worst <= 1e-5 * scale,
        "conv_direct.wgsl differs from conv2d: {worst} of {scale}"
    );
    let (fma, fma_flop) = fma_kernel(&dev);
    dev.synchronize().unwrap();
    type Case<'a> = ((&'static str, &'static str), u64, Box<dyn Fn() + 'a>);
    let cases: Vec<Case> = vec![
        (
            ("conv2d", "forward"),
            FLOP,
            Box::new(|| conv.forward(false)),
        ),
        (
            ("conv2d", "vjp_batched_k1"),
            2 * FLOP,
            Box::new(|| conv.vjp(false, false)),
        ),
        (
            ("conv2d", "vjp_batched_k16"),
            32 * FLOP,
            Box::new(|| conv.vjp(true, false)),
        ),
        (
            ("conv2d_explicit_im2col", "forward"),
            FLOP,
            Box::new(|| conv.forward(true)),
        ),
        (
            ("conv2d_explicit_im2col", "vjp_batched_k16"),
            32 * FLOP,
            Box::new(|| conv.vjp(true, true)),
        ),
        (
            ("conv2d_direct_kernel", "forward"),
            FLOP,
            Box::new(|| direct.run()),
        ),
        (
            ("fma_peak", "wgsl_vec4_fma"),
            fma_flop,
            Box::new(|| fma.run()),
        ),
    ];
    for (id, flop, f) in &cases {
        let mut g = c.benchmark_group(id.0);
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(*flop));
        g.bench_function(id.1, |b| b.iter(f));
        g.finish();
    }
    c.final_summary();
    if !measured() {
        return;
    }
    println!();
    println!("== pullback conv summary (N=32 C=16 O=32 32x32 3x3 pad 1; this run) ==");
    facts.print(&dev);
    let rate = |id, flop: u64, f: &dyn Fn()| {
        let (s, src) = facts.seconds(id, 3, f);
        (s, flop as f64 / s / 1e9, src)
    };
    let (_, fma_rate, _) = rate(("fma_peak", "wgsl_vec4_fma"), fma_flop, &|| fma.run());
    for (id, flop, f) in &cases[..6] {
        let (s, gf, src) = rate(*id, *flop, f.as_ref());
        println!(
            "{:<24} {:<16} {:9.2} ms {:8.2} GFLOP/s  {:.3} of FMA ({fma_rate:.1})  [{src}]",
            id.0,
            id.1,
            s * 1e3,
            gf,
            gf / fma_rate
        );
    }
}
