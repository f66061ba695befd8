//! The workloads W1–W5 exactly as the issues define them, and the
//! adapter's ceilings (a vec4 copy kernel, an FMA kernel), shared by the
//! criterion benches and `examples/bench_report/` so that figures compare
//! over time. Every run method ends with the GPU idle.

use std::hint::black_box;

use pullback::{Device, Tensor};

use super::{Mlp, RawKernel, values};

/// W1: `y = x*x`, n = 2^20, one cotangent.
pub const W1_N: usize = 1 << 20;
/// W2: `y = sin(x)*exp(x)`, n = 2^16, K = 64 cotangents.
pub const W2_N: usize = 1 << 16;
pub const W2_K: usize = 64;
/// W3: the MLP, B=256, D=512, H=1024, C=10.
pub const W3_DIMS: (usize, usize, usize, usize) = (256, 512, 1024, 10);
/// W4: the MLP, B=64, D=128, H=256, C=10.
pub const W4_DIMS: (usize, usize, usize, usize) = (64, 128, 256, 10);
/// W5: the Jacobian of tanh(W·x), n = m = 512.
pub const W5_N: usize = 512;
/// The FMA kernel's smallest grid: 256·256 invocations, each 1024
/// iterations of 8 vec4 FMAs (64 FLOP per iteration, as `fma.wgsl` says).
pub const FMA_THREADS: usize = 256 * 256;
const FMA_FLOP_PER_THREAD: u64 = 1024 * 64;

/// W3's FLOP: the five GEMMs, 2BDH + 2BHC forward, 2DBH (dW1) + 2BCH (dh)
/// + 2HBC (dW2) backward.
pub fn w3_flop() -> u64 {
    let (b, d, h, c) = W3_DIMS;
    (2 * b * d * h + 2 * b * h * c + 2 * d * b * h + 2 * b * c * h + 2 * h * b * c) as u64
}

/// W1's inputs: x (tracked), y = x*x and the cotangent v, all of length 2^20.
pub struct W1 {
    dev: Device,
    x: Tensor,
    y: Tensor,
    v: Tensor,
}

impl W1 {
    /// W1 as defined: n = 2^20.
    pub fn new(dev: &Device) -> W1 {
        W1::with_n(dev, W1_N)
    }

    /// The same graph on n values (the report's GPU target: 2^26).
    pub fn with_n(dev: &Device, n: usize) -> W1 {
        let x = dev.tensor(&values(n, 1), &[n]).unwrap().requires_grad();
        let y = x.mul(&x).unwrap();
        let v = dev.tensor(&values(n, 2), &[n]).unwrap();
        dev.synchronize().unwrap();
        W1 {
            dev: dev.clone(),
            x,
            y,
            v,
        }
    }

    pub fn run(&self) {
        let g = pullback::vjp(&[&self.y], &[&self.v], &[&self.x]).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }
}

/// Checks the copy and FMA baselines once against what they must compute:
/// the copy returns its input exactly; each FMA invocation's sum of eight
/// accumulators matches the same recurrence in f64 (fma or multiply-add:
/// 1024 steps of a contraction, within 1e-5 relative).
pub fn check_baselines(dev: &Device, copy: &RawKernel, n: usize, fma: &RawKernel) {
    assert!(
        copy.output(dev, n) == values(n, 3),
        "the copy kernel does not copy"
    );
    let got = fma.output(dev, 4 * 1024);
    for gid in [0usize, 1, 517, 1023] {
        let seed = (gid as f32 * 1e-7) as f64;
        for lane in 0..4 {
            let want: f64 = (0..8)
                .map(|k| {
                    let mut a = seed + 1e-3 * lane as f64 + 0.1 * k as f64;
                    for _ in 0..1024 {
                        a = a * 0.999999 + 1e-6;
                    }
                    a
                })
                .sum();
            let g = got[gid * 4 + lane] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * want.abs(),
                "fma.wgsl: {g} vs {want}"
            );
        }
    }
}

/// The copy baseline: a plain WGSL vec4 copy over `n` values (a multiple of 4).
pub fn copy_kernel(dev: &Device, n: usize) -> RawKernel {
    let src = RawKernel::buffer(dev, 0, Some(&values(n, 3)));
    let dst = RawKernel::buffer(dev, (n * 4) as u64, None);
    let workgroups = (n / 4).div_ceil(256) as u32;
    RawKernel::new(
        dev,
        include_str!("../copy.wgsl"),
        "copy_vec4",
        &[(&src, true), (&dst, false)],
        workgroups,
    )
}

/// The arithmetic ceiling: a WGSL kernel of independent vec4 FMAs, and the
/// FLOP of one run. The grid starts at [`FMA_THREADS`] invocations (4.3
/// GFLOP: ~50 ms on lavapipe) and grows 4× at a time, up to 2^22
/// invocations (the 65535-workgroup limit of one dimension), until a run
/// takes 20 ms: a large GPU runs the smallest grid in well under 0.1 ms,
/// where submit and wait, tens of µs, would count as a large part.
pub fn fma_kernel(dev: &Device) -> (RawKernel, u64) {
    let mut threads = FMA_THREADS;
    loop {
        let out = RawKernel::buffer(dev, (threads * 16) as u64, None);
        let kernel = RawKernel::new(
            dev,
            include_str!("../fma.wgsl"),
            "fma_peak",
            &[(&out, false)],
            (threads / 256) as u32,
        );
        let flop = threads as u64 * FMA_FLOP_PER_THREAD;
        if threads * 4 / 256 > 65535 || super::median_secs(1, &|| kernel.run()) >= 0.02 {
            return (kernel, flop);
        }
        threads *= 4;
    }
}

/// W2's inputs: x (tracked), y = sin(x)*exp(x), the K cotangents as one
/// [K, n] tensor and as K tensors of [n].
pub struct W2 {
    dev: Device,
    x: Tensor,
    /// x's values, not tracked.
    x_plain: Tensor,
    y: Tensor,
    v_batched: Tensor,
    v_rows: Vec<Tensor>,
}

impl W2 {
    /// W2 as defined: K = 64.
    pub fn new(dev: &Device) -> W2 {
        W2::with_k(dev, W2_K)
    }

    /// The same graph with `k` cotangents (the report's K sweep).
    pub fn with_k(dev: &Device, k: usize) -> W2 {
        let x = dev
            .tensor(&values(W2_N, 4), &[W2_N])
            .unwrap()
            .requires_grad();
        let x_plain = dev.tensor(&values(W2_N, 4), &[W2_N]).unwrap();
        let y = x.sin().unwrap().mul(&x.exp().unwrap()).unwrap();
        let rows: Vec<Vec<f32>> = (0..k).map(|i| values(W2_N, 10 + i)).collect();
        let v_batched = dev.tensor(&rows.concat(), &[k, W2_N]).unwrap();
        let v_rows = rows
            .iter()
            .map(|r| dev.tensor(r, &[W2_N]).unwrap())
            .collect();
        dev.synchronize().unwrap();
        W2 {
            dev: dev.clone(),
            x,
            x_plain,
            y,
            v_batched,
            v_rows,
        }
    }

    /// The forward alone, `y` held until the wait. Tracked, the graph
    /// saves sin x and exp x, so they are written too; untracked, only y.
    pub fn forward(&self, tracked: bool) {
        let x = if tracked { &self.x } else { &self.x_plain };
        let y = x.sin().unwrap().mul(&x.exp().unwrap()).unwrap();
        self.dev.synchronize().unwrap();
        black_box(y);
    }

    /// One `vjp_batched` over all K cotangents.
    pub fn batched(&self) {
        let g = pullback::vjp_batched(&[&self.y], &[&self.v_batched], &[&self.x]).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    /// K `vjp` calls queued, one wait at the end.
    pub fn looped(&self) {
        let gs: Vec<_> = self
            .v_rows
            .iter()
            .map(|v| pullback::vjp(&[&self.y], &[v], &[&self.x]).unwrap())
            .collect();
        self.dev.synchronize().unwrap();
        black_box(gs);
    }
}

/// W3: forward + `l.backward_with(ones)` into the four parameters.
pub struct W3 {
    dev: Device,
    mlp: Mlp,
    seed: Tensor,
}

impl W3 {
    pub fn new(dev: &Device) -> W3 {
        let (b, d, h, c) = W3_DIMS;
        W3 {
            dev: dev.clone(),
            mlp: Mlp::new(dev, b, d, h, c),
            seed: dev.ones(&[b]).unwrap(),
        }
    }

    pub fn run(&self) {
        self.mlp.loss().backward_with(&self.seed).unwrap();
        self.dev.synchronize().unwrap();
        for p in &self.mlp.params {
            black_box(p.grad());
            p.zero_grad();
        }
    }
}

/// A plain `[n, n]·[n, n]` matmul.
pub struct Matmul {
    dev: Device,
    a: Tensor,
    b: Tensor,
}

impl Matmul {
    pub fn new(dev: &Device, n: usize, seed: usize) -> Matmul {
        Matmul {
            dev: dev.clone(),
            a: dev.tensor(&values(n * n, seed), &[n, n]).unwrap(),
            b: dev.tensor(&values(n * n, seed + 1), &[n, n]).unwrap(),
        }
    }

    pub fn run(&self) {
        let c = self.a.matmul(&self.b).unwrap();
        self.dev.synchronize().unwrap();
        black_box(c);
    }
}

/// W4: the forward, then per-example gradients, their norms, one summed
/// backward, or a loop of B single-example VJPs (one-hot cotangents).
pub struct W4 {
    dev: Device,
    mlp: Mlp,
    ones: Tensor,
    onehots: Vec<Tensor>,
}

impl W4 {
    pub fn new(dev: &Device) -> W4 {
        let (b, d, h, c) = W4_DIMS;
        let onehots = (0..b)
            .map(|i| {
                let mut e = vec![0.0; b];
                e[i] = 1.0;
                dev.tensor(&e, &[b]).unwrap()
            })
            .collect();
        W4 {
            dev: dev.clone(),
            mlp: Mlp::new(dev, b, d, h, c),
            ones: dev.ones(&[b]).unwrap(),
            onehots,
        }
    }

    fn refs(&self) -> Vec<&Tensor> {
        self.mlp.params.iter().collect()
    }

    pub fn grads(&self) {
        let g = pullback::per_example_grads(&self.mlp.loss(), &self.refs()).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    pub fn norms(&self) {
        let n = pullback::per_example_grad_norms(&self.mlp.loss(), &self.refs()).unwrap();
        self.dev.synchronize().unwrap();
        black_box(n);
    }

    pub fn summed(&self) {
        self.mlp.loss().backward_with(&self.ones).unwrap();
        self.dev.synchronize().unwrap();
        for p in &self.mlp.params {
            black_box(p.grad());
            p.zero_grad();
        }
    }

    pub fn looped(&self) {
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

/// W5: the Jacobian of `y = tanh(W·x)`, n = m (512 as defined; other sizes
/// for the report's sweep), W a constant.
pub struct W5 {
    dev: Device,
    pub n: usize,
    w: Tensor,
    x: Tensor,
    y: Tensor,
    identity: Vec<(usize, Tensor)>,
    onehots: Vec<Tensor>,
    gemm: Matmul,
}

impl W5 {
    pub fn new(dev: &Device) -> W5 {
        W5::with_n(dev, W5_N, W5_N)
    }

    /// The graph at size `n`, with `loop_rows` one-hot cotangents for the
    /// loop (all n as defined; fewer in the sweep, timed per row).
    pub fn with_n(dev: &Device, n: usize, loop_rows: usize) -> W5 {
        let scaled: Vec<f32> = values(n * n, 11).iter().map(|v| v * 0.1).collect();
        let w = dev.tensor(&scaled, &[n, n]).unwrap();
        let x = dev.tensor(&values(n, 12), &[n, 1]).unwrap().requires_grad();
        let y = w.matmul(&x).unwrap().tanh().unwrap();
        let identity = [1, 8, 64, n]
            .iter()
            .filter(|&&k| k <= n)
            .map(|&k| {
                let mut e = vec![0.0; k * n];
                (0..k).for_each(|i| e[i * n + i] = 1.0);
                (k, dev.tensor(&e, &[k, n, 1]).unwrap())
            })
            .collect();
        let onehots = (0..loop_rows)
            .map(|i| {
                let mut e = vec![0.0; n];
                e[i] = 1.0;
                dev.tensor(&e, &[n, 1]).unwrap()
            })
            .collect();
        W5 {
            dev: dev.clone(),
            n,
            gemm: Matmul::new(dev, n, 13),
            w,
            x,
            y,
            identity,
            onehots,
        }
    }

    pub fn jacobian(&self) {
        let j = pullback::jacobian(&self.y, &self.x).unwrap();
        self.dev.synchronize().unwrap();
        black_box(j);
    }

    pub fn forward_and_jacobian(&self) {
        let y = self.w.matmul(&self.x).unwrap().tanh().unwrap();
        let j = pullback::jacobian(&y, &self.x).unwrap();
        self.dev.synchronize().unwrap();
        black_box(j);
    }

    /// `vjp_batched` with `k` identity rows (k in 1, 8, 64, n).
    pub fn batched(&self, k: usize) {
        let v = &self.identity.iter().find(|(kk, _)| *kk == k).unwrap().1;
        let g = pullback::vjp_batched(&[&self.y], &[v], &[&self.x]).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    /// The loop of single VJPs over the one-hot rows, one wait at the end.
    pub fn looped(&self) {
        let g: Vec<_> = self
            .onehots
            .iter()
            .map(|e| pullback::vjp(&[&self.y], &[e], &[&self.x]).unwrap())
            .collect();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    /// A plain `[n, n]·[n, n]` matmul: the GEMM of K = n's FLOPs.
    pub fn gemm(&self) {
        self.gemm.run();
    }

    /// Bytes the Jacobian adds at its peak, and its passes.
    pub fn peak(&self) -> (u64, u64) {
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
