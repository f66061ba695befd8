//! A 2-layer MLP (tanh hidden layer, per-example cross-entropy) trained by
//! SGD on a synthetic classification set, entirely on the GPU:
//! `loss_vec.backward_with(ones / B)` gives the mean loss's gradient.
use pullback::{Device, Result, Tensor};

const B: usize = 256; // examples
const D: usize = 8; // features
const H: usize = 32; // hidden units
const C: usize = 4; // classes
const STEPS: usize = 300;
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
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// Gaussian blobs: class c is centred on a random point, with unit noise.
fn dataset(rng: &mut Rng) -> (Vec<f32>, Vec<u32>) {
    let centres = rng.normals(C * D, 1.5);
    let mut x = Vec::with_capacity(B * D);
    let mut labels = Vec::with_capacity(B);
    for b in 0..B {
        let c = b % C;
        labels.push(c as u32);
        x.extend((0..D).map(|d| centres[c * D + d] + rng.normal()));
    }
    (x, labels)
}

fn step(params: &[Tensor], grads: &[Tensor]) -> Result<Vec<Tensor>> {
    params
        .iter()
        .zip(grads)
        .map(|(p, g)| Ok(p.detach().sub(&g.mul_scalar(LR)?)?.requires_grad()))
        .collect()
}

fn main() -> Result<()> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let (x, labels) = dataset(&mut rng);
    let x = dev.tensor(&x, &[B, D])?;
    let mut params = vec![
        dev.tensor(&rng.normals(D * H, (1.0 / D as f32).sqrt()), &[D, H])?
            .requires_grad(),
        dev.zeros(&[H])?.requires_grad(),
        dev.tensor(&rng.normals(H * C, (1.0 / H as f32).sqrt()), &[H, C])?
            .requires_grad(),
        dev.zeros(&[C])?.requires_grad(),
    ];
    let seed = dev.full(&[B], 1.0 / B as f32)?;
    let forward = |p: &[Tensor]| -> Result<Tensor> {
        let h = x.matmul(&p[0])?.add(&p[1])?.tanh()?;
        h.matmul(&p[2])?.add(&p[3])
    };
    for step_index in 0..=STEPS {
        let loss_vec = forward(&params)?.cross_entropy(&labels)?;
        loss_vec.backward_with(&seed)?;
        if step_index % 50 == 0 {
            let mean = loss_vec.to_vec()?.iter().sum::<f32>() / B as f32;
            println!("step {step_index:4}: mean loss {mean:.4}");
        }
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad().expect("every parameter gets a gradient"))
            .collect();
        params = step(&params, &grads)?;
    }
    let logits = forward(&params)?.to_vec()?;
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(b, l)| {
            let row = &logits[b * C..(b + 1) * C];
            let best = (0..C)
                .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                .unwrap_or(0);
            best == **l as usize
        })
        .count();
    println!(
        "final accuracy: {:.1}% ({correct}/{B})",
        100.0 * correct as f32 / B as f32
    );
    // The blobs are separable enough that training must fit them.
    assert!(
        correct * 10 >= B * 9,
        "the MLP did not learn: {correct}/{B}"
    );
    Ok(())
}
