//! Soak: many training steps of the MLP example's model, and of a small CNN
//! (forward, backward, readback of the loss, an SGD step). Live bytes return
//! to the same value after every step, the pool stops creating buffers after
//! the first steps, and so do readback staging buffers. CI runs 500 steps; the 10,000-step
//! run with the process's resident memory is `--ignored`
//! (`cargo test --release --test soak -- --ignored`).

mod common;

use common::*;
use pullback::{Device, Tensor};

const B: usize = 256;
const D: usize = 8;
const H: usize = 32;
const C: usize = 4;

struct Model {
    x: Tensor,
    labels: Vec<u32>,
    params: Vec<Tensor>,
    seed: Tensor,
}

impl Model {
    fn new(dev: &Device) -> Model {
        let mut r = rng(seed_of("soak"));
        let mut u = |shape: &[usize], s: f32| {
            ok(dev.tensor(&sample(&mut r, numel(shape), Dist::Uniform(-s, s)), shape))
        };
        let x = u(&[B, D], 1.0);
        let params = vec![
            u(&[D, H], 0.3).requires_grad(),
            u(&[H], 0.1).requires_grad(),
            u(&[H, C], 0.3).requires_grad(),
            u(&[C], 0.1).requires_grad(),
        ];
        Model {
            x,
            labels: (0..B).map(|b| (b % C) as u32).collect(),
            params,
            seed: ok(dev.full(&[B], 1.0 / B as f32)),
        }
    }
}

/// One training step: forward, backward, readback of the loss, SGD.
trait Step {
    fn step(&mut self) -> f32;
}

/// SGD on tracked parameters from their `.grad()`.
fn sgd(params: &[Tensor], lr: f32) -> Vec<Tensor> {
    params
        .iter()
        .map(|p| {
            let g = p.grad().expect("every parameter has a gradient");
            ok(p.detach().sub(&ok(g.mul_scalar(lr)))).requires_grad()
        })
        .collect()
}

impl Step for Model {
    /// One step; returns the mean loss (read back every step).
    fn step(&mut self) -> f32 {
        let p = &self.params;
        let h = ok(ok(ok(self.x.matmul(&p[0])).add(&p[1])).tanh());
        let loss = ok(ok(ok(h.matmul(&p[2])).add(&p[3])).cross_entropy(&self.labels));
        ok(loss.backward_with(&self.seed));
        let mean = read(&loss).iter().sum::<f32>() / B as f32;
        self.params = sgd(&self.params, 0.5);
        mean
    }
}

/// A small CNN: conv2d (padding 1) → gelu → max_pool2d → flatten →
/// matmul → cross_entropy, on 16 random 8×8 images.
struct Cnn {
    x: Tensor,
    labels: Vec<u32>,
    params: Vec<Tensor>,
    seed: Tensor,
}

impl Cnn {
    fn new(dev: &Device) -> Cnn {
        let mut r = rng(seed_of("soak cnn"));
        let mut u = |shape: &[usize], s: f32| {
            ok(dev.tensor(&sample(&mut r, numel(shape), Dist::Uniform(-s, s)), shape))
        };
        Cnn {
            x: u(&[16, 1, 8, 8], 1.0),
            labels: (0..16).map(|b| (b % 3) as u32).collect(),
            params: vec![
                u(&[4, 1, 3, 3], 0.5).requires_grad(),
                u(&[64, 3], 0.2).requires_grad(),
            ],
            seed: ok(dev.full(&[16], 1.0 / 16.0)),
        }
    }
}

impl Step for Cnn {
    fn step(&mut self) -> f32 {
        let p = &self.params;
        let opts = pullback::ConvOptions {
            padding: 1,
            ..Default::default()
        };
        let f = ok(ok(ok(self.x.conv2d(&p[0], opts)).gelu()).max_pool2d(2, 2));
        let loss = ok(ok(ok(f.flatten(1, 3)).matmul(&p[1])).cross_entropy(&self.labels));
        ok(loss.backward_with(&self.seed));
        let mean = read(&loss).iter().sum::<f32>() / 16.0;
        self.params = sgd(&self.params, 0.2);
        mean
    }
}

/// Runs `steps` steps; after `warm` of them, live bytes, buffer creations and
/// staging creations must not change. Returns the first and last loss.
fn soak(steps: usize, warm: usize, rss_check: bool) -> (f32, f32) {
    let dev = fresh_device();
    let model = Model::new(&dev);
    soak_model(&dev, model, steps, warm, rss_check)
}

fn soak_model(
    dev: &Device,
    mut model: impl Step,
    steps: usize,
    warm: usize,
    rss_check: bool,
) -> (f32, f32) {
    let first = model.step();
    let mut last = first;
    let mut settled = None;
    let mut rss_after_warm = 0;
    for i in 1..steps {
        last = model.step();
        ok(dev.synchronize());
        let s = dev.stats();
        let now = (s.live_bytes, s.allocations, s.staging_allocations);
        if i == warm {
            settled = Some(now);
            rss_after_warm = resident_kib();
        } else if let Some(before) = settled {
            assert_eq!(
                now, before,
                "step {i}: (live bytes, buffers created, staging created) changed"
            );
        }
    }
    if rss_check && rss_after_warm > 0 {
        let rss = resident_kib();
        let grown = rss as f64 / rss_after_warm as f64 - 1.0;
        eprintln!(
            "resident: {rss_after_warm} KiB after warm-up, {rss} KiB at the end ({:+.1}%)",
            grown * 100.0
        );
        assert!(grown < 0.05, "resident memory grew {:.1}%", grown * 100.0);
    }
    (first, last)
}

/// The process's resident set in KiB (Linux; 0 elsewhere).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn five_hundred_steps_hold_memory_flat() {
    let (first, last) = soak(500, 20, false);
    assert!(last < first, "training lowers the loss: {first} -> {last}");
}

/// The convolution path (unfold, fold, GEMM, max through its argmax,
/// gelu's fused adjoint) holds memory flat too.
#[test]
fn a_cnn_holds_memory_flat() {
    let dev = fresh_device();
    let model = Cnn::new(&dev);
    let (first, last) = soak_model(&dev, model, 200, 20, false);
    assert!(last < first, "training lowers the loss: {first} -> {last}");
}

#[test]
#[ignore = "10,000 steps: cargo test --release --test soak -- --ignored"]
fn ten_thousand_steps_hold_memory_flat() {
    let (first, last) = soak(10_000, 100, true);
    assert!(last < first, "training lowers the loss: {first} -> {last}");
}
