//! Differentially private SGD (Abadi et al., 2016) on a small classifier:
//! each example's gradient clipped to norm C, Gaussian noise of standard
//! deviation σ·C added to their sum, then the step. Trained side by side
//! with plain SGD; accuracy on held-out data printed for both.
//!
//! The clipped sum never forms a per-example gradient. With scales
//! `s_b = min(1, C/‖g_b‖)` held constant, `Σ_b s_b·g_b` is the gradient of
//! `Σ_b s_b·loss_b`: one `vjp` of the per-example losses with cotangent s.
//! The norms come from `per_example_grad_norms`, which takes a product
//! `x·W`'s per-example norm as `‖x_b‖·‖ḡ_b‖` (Opacus calls the two passes
//! "ghost clipping"). The step is checked against the same step computed by
//! forming `per_example_grads`, and against B single backward passes, and
//! the three are timed.
//!
//! Not a privacy audit: the noise comes from a small non-cryptographic
//! generator, batches are fixed-size shuffles while the accountant below
//! assumes Poisson sampling (the usual approximation), and ε is the RDP
//! bound of the subsampled Gaussian mechanism (Mironov et al., 2019) over
//! integer orders.
use std::time::Instant;

use pullback::{Device, Result, Tensor, per_example_grad_norms, per_example_grads, vjp};

// W4's classifier: B = 64 examples, 128 features, 256 hidden units, 10 classes.
const B: usize = 64;
const D: usize = 128;
const H: usize = 256;
const C: usize = 10;
const N_TRAIN: usize = 2048;
const N_TEST: usize = 1024;
const STEPS: usize = 320; // 10 epochs
const LR_PLAIN: f32 = 0.2;
const LR_PRIVATE: f32 = 0.25;
const SPREAD: f32 = 0.3; // class centres: N(0, SPREAD²) per feature
const CLIP: f32 = 1.0; // C: the bound on each example's gradient norm
const SIGMA: f32 = 1.0; // noise multiplier: noise std is σ·C
const DELTA: f64 = 1e-5;

/// A small deterministic generator (xorshift), so the example needs no crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// Gaussian blobs: class c is centred on a random point, with unit noise;
/// train and test share the centres.
struct Data {
    x: Vec<f32>,
    labels: Vec<u32>,
}

fn blobs(rng: &mut Rng, centres: &[f32], n: usize) -> Data {
    let mut x = Vec::with_capacity(n * D);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = (rng.next() % C as u64) as usize;
        labels.push(c as u32);
        x.extend((0..D).map(|d| centres[c * D + d] + rng.normal()));
    }
    Data { x, labels }
}

/// W1 [D, H], b1 [H], W2 [H, C], b2 [C].
fn init(dev: &Device, rng: &mut Rng) -> Result<Vec<Tensor>> {
    Ok(vec![
        dev.tensor(&rng.normals(D * H, (1.0 / D as f32).sqrt()), &[D, H])?
            .requires_grad(),
        dev.zeros(&[H])?.requires_grad(),
        dev.tensor(&rng.normals(H * C, (1.0 / H as f32).sqrt()), &[H, C])?
            .requires_grad(),
        dev.zeros(&[C])?.requires_grad(),
    ])
}

fn logits(p: &[Tensor], x: &Tensor) -> Result<Tensor> {
    let h = x.matmul(&p[0])?.add(&p[1])?.tanh()?;
    h.matmul(&p[2])?.add(&p[3])
}

/// A batch: its inputs on the device and labels.
fn batch(dev: &Device, data: &Data, order: &[usize]) -> Result<(Tensor, Vec<u32>)> {
    let x: Vec<f32> = order
        .iter()
        .flat_map(|&i| data.x[i * D..(i + 1) * D].iter().copied())
        .collect();
    let labels = order.iter().map(|&i| data.labels[i]).collect();
    Ok((dev.tensor(&x, &[order.len(), D])?, labels))
}

fn refs(p: &[Tensor]) -> Vec<&Tensor> {
    p.iter().collect()
}

/// s_b = min(1, C/‖g_b‖) = C / max(‖g_b‖, C), a constant of the step
/// (detached: no graph behind it).
fn scales(norms: &Tensor) -> Result<Tensor> {
    let floor = norms.detach().clamp(CLIP, f32::INFINITY)?;
    norms.device().full(norms.shape(), CLIP)?.div(&floor)
}

/// Σ_b min(1, C/‖g_b‖)·g_b by ghost clipping: the norms, then one VJP of
/// the per-example losses with the scales as cotangent.
fn clipped_ghost(p: &[Tensor], loss: &Tensor) -> Result<Vec<Tensor>> {
    let norms = per_example_grad_norms(loss, &refs(p))?;
    let s = scales(&norms)?;
    vjp(&[loss], &[&s], &refs(p))
}

/// The same sum from the formed per-example gradients `[B, *p]`.
fn clipped_formed(p: &[Tensor], loss: &Tensor) -> Result<Vec<Tensor>> {
    let grads = per_example_grads(loss, &refs(p))?;
    let mut squared = loss.device().zeros(&[B])?;
    for g in &grads {
        squared = squared.add(&g.reshape(&[B, g.numel() / B])?.square()?.sum(&[1], false)?)?;
    }
    let s = scales(&squared.sqrt()?)?;
    grads
        .iter()
        .map(|g| {
            let mut shape = vec![1; g.rank()];
            shape[0] = B;
            g.mul(&s.reshape(&shape)?)?.sum(&[0], false)
        })
        .collect()
}

/// The same sum from B single backward passes (one-hot cotangents), each
/// example's gradient clipped on the device as it comes.
fn clipped_looped(p: &[Tensor], loss: &Tensor, onehots: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut sums: Option<Vec<Tensor>> = None;
    for e in onehots {
        let g = vjp(&[loss], &[e], &refs(p))?;
        let mut squared = loss.device().zeros(&[1])?;
        for gi in &g {
            squared = squared.add(&gi.square()?.sum_all()?.reshape(&[1])?)?;
        }
        let s = scales(&squared.sqrt()?)?;
        let scaled: Vec<Tensor> = g
            .iter()
            .map(|gi| gi.mul(&s.reshape(&vec![1; gi.rank()])?))
            .collect::<Result<_>>()?;
        sums = Some(match sums {
            None => scaled,
            Some(s) => s
                .iter()
                .zip(&scaled)
                .map(|(a, b)| a.add(b))
                .collect::<Result<_>>()?,
        });
    }
    Ok(sums.unwrap_or_default())
}

/// ε after `steps` steps of the subsampled Gaussian mechanism (sampling
/// rate q, noise multiplier σ) at δ, from its Rényi DP at integer orders α:
/// `A_α = Σ_k C(α,k)·(1−q)^(α−k)·q^k·exp((k²−k)/(2σ²))`, RDP `ln A_α/(α−1)`
/// per step, and `ε = min_α steps·ln A_α/(α−1) + ln(1/δ)/(α−1)`.
fn epsilon(q: f64, sigma: f64, steps: usize, delta: f64) -> f64 {
    let rdp = |alpha: u32| {
        let a = alpha as f64;
        let mut ln_binom = 0.0;
        let terms: Vec<f64> = (0..=alpha)
            .map(|k| {
                let k = k as f64;
                if k > 0.0 {
                    ln_binom += ((a - k + 1.0) / k).ln();
                }
                ln_binom
                    + (a - k) * (1.0 - q).ln()
                    + k * q.ln()
                    + (k * k - k) / (2.0 * sigma * sigma)
            })
            .collect();
        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln()) / (a - 1.0)
    };
    (2..=128)
        .map(|alpha| steps as f64 * rdp(alpha) + (1.0 / delta).ln() / (alpha as f64 - 1.0))
        .fold(f64::INFINITY, f64::min)
}

fn accuracy(p: &[Tensor], x: &Tensor, labels: &[u32]) -> Result<f32> {
    let predicted = logits(p, x)?.argmax(1)?;
    let right = predicted.iter().zip(labels).filter(|(a, b)| a == b).count();
    Ok(right as f32 / labels.len() as f32)
}

/// `p − lr·g`, tracked again for the next step.
fn update(p: &[Tensor], g: &[Tensor], lr: f32) -> Result<Vec<Tensor>> {
    p.iter()
        .zip(g)
        .map(|(p, g)| Ok(p.detach().sub(&g.mul_scalar(lr)?)?.requires_grad()))
        .collect()
}

/// The best of `reps` wall times of `f`, in ms (each run read back).
fn best_ms(reps: usize, mut f: impl FnMut() -> Result<Vec<Tensor>>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let start = Instant::now();
        let out = f()?;
        pullback::read_all(&refs(&out))?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

/// One step's clipped sum three ways: the same values, and their cost
/// (forward included, noise and update not).
fn compare_steps(dev: &Device, train: &Data) -> Result<()> {
    let p = init(dev, &mut Rng(11))?;
    let (x, labels) = batch(dev, train, &(0..B).collect::<Vec<_>>())?;
    let loss_of = |p: &[Tensor]| logits(p, &x)?.cross_entropy(&labels);
    let onehots: Vec<Tensor> = (0..B)
        .map(|b| {
            let mut e = vec![0.0; B];
            e[b] = 1.0;
            dev.tensor(&e, &[B])
        })
        .collect::<Result<_>>()?;
    let loss = loss_of(&p)?;
    let ghost = pullback::read_all(&refs(&clipped_ghost(&p, &loss)?))?;
    let formed = pullback::read_all(&refs(&clipped_formed(&p, &loss)?))?;
    let looped = pullback::read_all(&refs(&clipped_looped(&p, &loss, &onehots)?))?;
    // f32 sums of 64 clipped gradients, the norms computed in different
    // orders (‖x‖·‖ḡ‖ against Σ g²): agreement to ~1e-6 of the largest
    // entry; 1e-4 leaves room and still catches a wrong scale or a lost term.
    let worst = |other: &[Vec<f32>]| {
        ghost.iter().zip(other).fold(0f32, |worst, (a, b)| {
            assert_eq!(a.len(), b.len());
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter()
                .zip(b)
                .fold(worst, |w, (u, v)| w.max((u - v).abs() / scale))
        })
    };
    let (vs_formed, vs_looped) = (worst(&formed), worst(&looped));
    println!(
        "clipped sum, ghost against formed: {vs_formed:.1e}, against {B} backward passes: {vs_looped:.1e} (of the largest entry)"
    );
    assert!(
        vs_formed < 1e-4 && vs_looped < 1e-4,
        "the three clipped sums disagree"
    );

    let ghost_ms = best_ms(7, || clipped_ghost(&p, &loss_of(&p)?))?;
    let formed_ms = best_ms(7, || clipped_formed(&p, &loss_of(&p)?))?;
    let looped_ms = best_ms(3, || clipped_looped(&p, &loss_of(&p)?, &onehots))?;
    println!(
        "time per clipped step (best of 7; B = {B}, {D}×{H}×{C}): norms + one backward {ghost_ms:.2} ms, \
         formed per-example gradients {formed_ms:.2} ms ({:.1}×), {B} backward passes {looped_ms:.1} ms ({:.1}×)",
        formed_ms / ghost_ms,
        looped_ms / ghost_ms
    );
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let centres = rng.normals(C * D, SPREAD);
    let train = blobs(&mut rng, &centres, N_TRAIN);
    let test = blobs(&mut rng, &centres, N_TEST);
    let (test_x, test_labels) = batch(&dev, &test, &(0..N_TEST).collect::<Vec<_>>())?;

    compare_steps(&dev, &train)?;

    // The same initial weights and batches for both runs.
    let (mut private, mut plain) = (init(&dev, &mut Rng(7))?, init(&dev, &mut Rng(7))?);
    let mean = dev.full(&[B], 1.0 / B as f32)?;
    let mut order: Vec<usize> = (0..N_TRAIN).collect();
    let per_epoch = N_TRAIN / B;
    let start = Instant::now();
    println!("step   accuracy: private   plain");
    for step in 0..STEPS {
        if step % per_epoch == 0 {
            for i in (1..N_TRAIN).rev() {
                order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
        }
        let at = (step % per_epoch) * B;
        let (x, labels) = batch(&dev, &train, &order[at..at + B])?;

        let loss = logits(&private, &x)?.cross_entropy(&labels)?;
        let noisy: Vec<Tensor> = clipped_ghost(&private, &loss)?
            .iter()
            .map(|g| g.add(&dev.tensor(&rng.normals(g.numel(), SIGMA * CLIP), g.shape())?))
            .collect::<Result<_>>()?;
        private = update(&private, &noisy, LR_PRIVATE / B as f32)?;

        let loss = logits(&plain, &x)?.cross_entropy(&labels)?;
        plain = update(&plain, &vjp(&[&loss], &[&mean], &refs(&plain))?, LR_PLAIN)?;

        if (step + 1) % (2 * per_epoch) == 0 {
            println!(
                "{:4}   {:17.3}   {:5.3}",
                step + 1,
                accuracy(&private, &test_x, &test_labels)?,
                accuracy(&plain, &test_x, &test_labels)?
            );
        }
    }
    let (acc_private, acc_plain) = (
        accuracy(&private, &test_x, &test_labels)?,
        accuracy(&plain, &test_x, &test_labels)?,
    );
    let eps = epsilon(B as f64 / N_TRAIN as f64, SIGMA as f64, STEPS, DELTA);
    println!(
        "after {STEPS} steps ({:.1} s for both runs): test accuracy {acc_private:.3} private \
         (C = {CLIP}, σ = {SIGMA}: ε = {eps:.2} at δ = {DELTA:e}), {acc_plain:.3} plain",
        start.elapsed().as_secs_f64()
    );
    assert!(acc_plain >= 0.9, "plain SGD should learn the blobs");
    assert!(acc_private >= 0.8, "private SGD should learn the blobs too");
    Ok(())
}
