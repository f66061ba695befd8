//! A small CNN trained on the GPU: conv2d → gelu → max_pool2d → flatten →
//! matmul → cross_entropy, on synthetic 10×10 images of a short bar that
//! is horizontal, vertical or diagonal, placed anywhere, with noise. The
//! position varies, so a linear model of the pixels does poorly; the
//! convolution finds the orientation wherever it is and the pooling keeps
//! it. Prints loss and accuracy on held-out images, then per-example
//! gradients from `per_example_grads`, checked against the batch gradient.
use pullback::{ConvOptions, Device, Result, Tensor};

const SIDE: usize = 10;
const TRAIN: usize = 300;
const TEST: usize = 120;
const CLASSES: usize = 3;
const FILTERS: usize = 8;
/// 5×5 pooling windows: a feature anywhere in a quadrant counts the same.
const POOL: usize = 5;
const STEPS: usize = 150;
const LR: f32 = 0.5;

/// A small deterministic generator (xorshift), so the example needs no crates.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f32) as usize).min(n - 1)
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// `n` images `[n, 1, SIDE, SIDE]`: a bar of 4 pixels (class 0 horizontal,
/// 1 vertical, 2 diagonal) at a random place, plus noise of σ = 0.3.
fn images(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = vec![0.0; n * SIDE * SIDE];
    let mut labels = Vec::with_capacity(n);
    for b in 0..n {
        let class = b % CLASSES;
        let (r0, c0) = (rng.below(SIDE - 3), rng.below(SIDE - 3));
        for t in 0..4 {
            let (r, c) = match class {
                0 => (r0, c0 + t),
                1 => (r0 + t, c0),
                _ => (r0 + t, c0 + t),
            };
            x[b * SIDE * SIDE + r * SIDE + c] = 1.0;
        }
        for v in &mut x[b * SIDE * SIDE..(b + 1) * SIDE * SIDE] {
            *v += 0.3 * rng.normal();
        }
        labels.push(class as u32);
    }
    (x, labels)
}

/// Per-example losses `[n]` of the model on images `x`.
fn losses(params: &[Tensor], x: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let logits = logits(params, x)?;
    logits.cross_entropy(labels)
}

fn logits(params: &[Tensor], x: &Tensor) -> Result<Tensor> {
    let opts = ConvOptions {
        padding: 1,
        ..ConvOptions::default()
    };
    let features = x
        .conv2d(&params[0], opts)?
        .gelu()?
        .max_pool2d(POOL, POOL)?
        .flatten(1, 3)?;
    features.matmul(&params[1])?.add(&params[2])
}

fn accuracy(params: &[Tensor], x: &Tensor, labels: &[u32]) -> Result<f32> {
    let predicted = logits(params, x)?.argmax(1)?;
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(right as f32 / labels.len() as f32)
}

fn main() -> Result<()> {
    let dev = Device::new()?;
    println!("adapter: {}", dev.adapter_info().name);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (xs, train_labels) = images(&mut rng, TRAIN);
    let (xt, test_labels) = images(&mut rng, TEST);
    let x = dev.tensor(&xs, &[TRAIN, 1, SIDE, SIDE])?;
    let x_test = dev.tensor(&xt, &[TEST, 1, SIDE, SIDE])?;
    let features = FILTERS * (SIDE / POOL) * (SIDE / POOL);
    let init = |rng: &mut Rng, n: usize, scale: f32| -> Vec<f32> {
        (0..n).map(|_| rng.normal() * scale).collect()
    };
    let mut params = vec![
        dev.tensor(&init(&mut rng, FILTERS * 9, 0.5), &[FILTERS, 1, 3, 3])?
            .requires_grad(),
        dev.tensor(
            &init(&mut rng, features * CLASSES, 0.1),
            &[features, CLASSES],
        )?
        .requires_grad(),
        dev.zeros(&[CLASSES])?.requires_grad(),
    ];
    let start = std::time::Instant::now();
    for step in 0..=STEPS {
        let loss = losses(&params, &x, &train_labels)?.mean(&[0], false)?;
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = pullback::vjp(&[&loss], &[&dev.tensor(&[1.0], &[])?], &refs)?;
        if step % 30 == 0 {
            println!(
                "step {step:3}: loss {:.4}, test accuracy {:.3}",
                loss.to_vec()?[0],
                accuracy(&params, &x_test, &test_labels)?
            );
        }
        params = params
            .iter()
            .zip(&grads)
            .map(|(p, g)| Ok(p.detach().sub(&g.mul_scalar(LR)?)?.requires_grad()))
            .collect::<Result<_>>()?;
    }
    println!(
        "{STEPS} steps in {:.2} s; train accuracy {:.3}",
        start.elapsed().as_secs_f64(),
        accuracy(&params, &x, &train_labels)?
    );

    // Per-example gradients of the 300 losses in one pass; their mean is
    // the gradient of the mean loss.
    let per_example = losses(&params, &x, &train_labels)?;
    let refs: Vec<&Tensor> = params.iter().collect();
    let each = pullback::per_example_grads(&per_example, &refs)?;
    let mean = per_example.mean(&[0], false)?;
    let batch = pullback::vjp(&[&mean], &[&dev.tensor(&[1.0], &[])?], &refs)?;
    for ((e, b), name) in each.iter().zip(&batch).zip(["conv", "dense", "bias"]) {
        let averaged = e.mean(&[0], false)?.to_vec()?;
        let want = b.to_vec()?;
        let diff = averaged
            .iter()
            .zip(&want)
            .map(|(a, w)| (a - w).abs())
            .fold(0.0f32, f32::max);
        let norms: Vec<f32> = e
            .to_vec()?
            .chunks(b.numel())
            .take(4)
            .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        println!(
            "{name}: per-example gradients {:?}; first norms {norms:.4?}; \
             mean vs batch gradient, largest difference {diff:.2e}",
            e.shape()
        );
        // The mean of 300 f32 rows against one reduction: rounding of the
        // sums, a few ULP of the gradient's scale.
        let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
        assert!(diff <= 1e-5 * scale + 1e-7, "{name}: {diff} of {scale}");
    }
    Ok(())
}
