//! Second order on the GPU: Newton-CG against gradient descent on an
//! ill-conditioned logistic regression, then a Hutchinson estimate of the
//! Hessian's trace from 64 random probes in one `hvp_batched`.
//!
//! - Newton-CG: each step solves H·p = −g by conjugate gradient, where
//!   every product H·v is one `pullback::hvp` on the graph recorded for the
//!   step (nothing is recomputed, and H is never formed), then a
//!   backtracking line search. Gradient descent takes steps of 1/L, L the
//!   Hessian's largest eigenvalue at the start, found by power iteration
//!   (HVPs again): the best fixed step for a convex problem.
//! - Hutchinson: tr(H) = E[zᵀHz] for z with independent ±1 entries; 64
//!   probes are one `hvp_batched` (one forward-over-reverse sweep for all
//!   64), the estimate is their mean, its standard error their standard
//!   deviation over √64. The exact trace comes from the identity's rows,
//!   again in one `hvp_batched`.
//!
//! ```text
//! cargo run --release --example second_order
//! ```

use std::time::Instant;

use pullback::{Device, Result, Tensor};

const N: usize = 512; // examples
const D: usize = 32; // features
const LAMBDA: f32 = 1e-3; // L2 regularization: a unique minimum, H ≻ 0
const NEWTON_STEPS: usize = 10;
const GD_CHECKPOINTS: [usize; 5] = [1, 10, 100, 1000, 3000];
const PROBES: usize = 64;

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
    fn sign(&mut self) -> f32 {
        if self.uniform() < 0.5 { -1.0 } else { 1.0 }
    }
}

/// The data: feature j scaled by 10^(2j/(D−1) − 1), from 0.1 to 10, so the
/// Hessian's eigenvalues spread over about four decades (what slows
/// gradient descent and not Newton); labels ±1 drawn from a logistic model.
struct Problem {
    x: Tensor,
    y: Tensor,
}

impl Problem {
    fn new(dev: &Device, rng: &mut Rng) -> Result<Problem> {
        let truth: Vec<f32> = (0..D).map(|_| rng.normal()).collect();
        let mut x = Vec::with_capacity(N * D);
        let mut y = Vec::with_capacity(N);
        for _ in 0..N {
            let row: Vec<f32> = (0..D)
                .map(|j| rng.normal() * 10f32.powf(2.0 * j as f32 / (D - 1) as f32 - 1.0))
                .collect();
            let margin: f32 = row.iter().zip(&truth).map(|(a, b)| a * b).sum::<f32>() * 0.3;
            let p = 1.0 / (1.0 + (-margin).exp());
            y.push(if rng.uniform() < p { 1.0 } else { -1.0 });
            x.extend(row);
        }
        Ok(Problem {
            x: dev.tensor(&x, &[N, D])?,
            y: dev.tensor(&y, &[N, 1])?,
        })
    }

    /// mean_i softplus(−y_i·(x_i·w + b)) + λ/2·|w|², on the graph of `w`, `b`.
    fn loss(&self, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let margins = self.x.matmul(w)?.add(b)?.mul(&self.y)?;
        let data = margins
            .neg()?
            .softplus()?
            .sum_all()?
            .mul_scalar(1.0 / N as f32)?;
        data.add(&w.square()?.sum_all()?.mul_scalar(LAMBDA / 2.0)?)
    }
}

/// The parameters w `[D, 1]` and b `[1]` as one flat vector of D + 1 values.
struct Point {
    theta: Vec<f32>,
}

impl Point {
    fn tensors(&self, dev: &Device) -> Result<(Tensor, Tensor)> {
        let w = dev.tensor(&self.theta[..D], &[D, 1])?.requires_grad();
        let b = dev.tensor(&self.theta[D..], &[1])?.requires_grad();
        Ok((w, b))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(alpha: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(a, b)| alpha * a + b).collect()
}

/// The graph at one point: its loss, gradient and Hessian-vector products.
struct Local<'a> {
    dev: &'a Device,
    w: Tensor,
    b: Tensor,
    loss: Tensor,
}

impl<'a> Local<'a> {
    fn at(dev: &'a Device, problem: &Problem, point: &Point) -> Result<Local<'a>> {
        let (w, b) = point.tensors(dev)?;
        let loss = problem.loss(&w, &b)?;
        Ok(Local { dev, w, b, loss })
    }

    fn value(&self) -> Result<f32> {
        Ok(self.loss.to_vec()?[0])
    }

    fn gradient(&self) -> Result<Vec<f32>> {
        let one = self.dev.tensor(&[1.0], &[])?;
        let g = pullback::vjp(&[&self.loss], &[&one], &[&self.w, &self.b])?;
        Ok([g[0].to_vec()?, g[1].to_vec()?].concat())
    }

    /// H·v: one forward-over-reverse sweep of the recorded graph.
    fn hvp(&self, v: &[f32]) -> Result<Vec<f32>> {
        let vw = self.dev.tensor(&v[..D], &[D, 1])?;
        let vb = self.dev.tensor(&v[D..], &[1])?;
        let hv = pullback::hvp(&self.loss, &[&self.w, &self.b], &[&vw, &vb])?;
        Ok([hv[0].to_vec()?, hv[1].to_vec()?].concat())
    }

    /// H·v for K directions given as K flat rows, in one `hvp_batched`.
    fn hvp_rows(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let k = rows.len();
        let vw: Vec<f32> = rows.iter().flat_map(|r| r[..D].to_vec()).collect();
        let vb: Vec<f32> = rows.iter().map(|r| r[D]).collect();
        let vw = self.dev.tensor(&vw, &[k, D, 1])?;
        let vb = self.dev.tensor(&vb, &[k, 1])?;
        let hv = pullback::hvp_batched(&self.loss, &[&self.w, &self.b], &[&vw, &vb])?;
        let (hw, hb) = (hv[0].to_vec()?, hv[1].to_vec()?);
        Ok((0..k)
            .map(|i| [&hw[i * D..(i + 1) * D], &hb[i..i + 1]].concat())
            .collect())
    }
}

/// Conjugate gradient on H·p = −g, stopped at ‖r‖ ≤ min(0.5, √‖g‖)·‖g‖
/// (truncated Newton: loose far from the minimum, tight near it).
/// Returns p and the number of HVPs.
fn newton_direction(local: &Local, g: &[f32]) -> Result<(Vec<f32>, usize)> {
    let norm_g = dot(g, g).sqrt();
    let tol = norm_g * norm_g.sqrt().min(0.5);
    let mut p = vec![0.0; g.len()];
    let mut r: Vec<f32> = g.iter().map(|v| -v).collect();
    let mut d = r.clone();
    let mut rr = dot(&r, &r);
    for i in 0..2 * g.len() {
        let hd = local.hvp(&d)?;
        let alpha = rr / dot(&d, &hd);
        p = axpy(alpha, &d, &p);
        r = axpy(-alpha, &hd, &r);
        let next = dot(&r, &r);
        if next.sqrt() <= tol {
            return Ok((p, i + 1));
        }
        d = axpy(next / rr, &d, &r);
        rr = next;
    }
    Ok((p, 2 * g.len()))
}

/// The largest eigenvalue of H by power iteration (30 HVPs).
fn largest_eigenvalue(local: &Local) -> Result<f32> {
    let mut v = vec![1.0 / ((D + 1) as f32).sqrt(); D + 1];
    let mut lambda = 0.0;
    for _ in 0..30 {
        let hv = local.hvp(&v)?;
        lambda = dot(&v, &hv);
        let norm = dot(&hv, &hv).sqrt();
        v = hv.iter().map(|x| x / norm).collect();
    }
    Ok(lambda)
}

fn main() -> Result<()> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let problem = Problem::new(&dev, &mut rng)?;
    let start = Point {
        theta: vec![0.0; D + 1],
    };
    println!("logistic regression, {N} examples, {D} features scaled from 0.1 to 10, λ = {LAMBDA}");

    // Gradient descent with step 1/L.
    let l = largest_eigenvalue(&Local::at(&dev, &problem, &start)?)?;
    let mut gd = Point {
        theta: start.theta.clone(),
    };
    let mut gd_losses = Vec::new();
    let t = Instant::now();
    for it in 1..=*GD_CHECKPOINTS.last().unwrap() {
        let g = Local::at(&dev, &problem, &gd)?.gradient()?;
        gd.theta = axpy(-1.0 / l, &g, &gd.theta);
        if GD_CHECKPOINTS.contains(&it) {
            gd_losses.push((it, Local::at(&dev, &problem, &gd)?.value()?));
        }
    }
    let gd_ms = t.elapsed().as_secs_f64() * 1e3;

    // Newton-CG with a backtracking (Armijo) line search.
    let mut newton = Point {
        theta: start.theta.clone(),
    };
    let mut rows = Vec::new();
    let (mut hvps, mut grads) = (0, 0);
    let t = Instant::now();
    for it in 1..=NEWTON_STEPS {
        let local = Local::at(&dev, &problem, &newton)?;
        let (f, g) = (local.value()?, local.gradient()?);
        grads += 1;
        let (p, used) = newton_direction(&local, &g)?;
        hvps += used;
        let slope = dot(&g, &p);
        let mut step = 1.0;
        let next = loop {
            let trial = Point {
                theta: axpy(step, &p, &newton.theta),
            };
            let (w, b) = trial.tensors(&dev)?;
            let value = problem.loss(&w.detach(), &b.detach())?.to_vec()?[0];
            if value <= f + 1e-4 * step * slope || step < 1e-4 {
                break (trial, value);
            }
            step *= 0.5;
        };
        newton = next.0;
        rows.push((it, next.1, used, step, dot(&g, &g).sqrt()));
    }
    let newton_ms = t.elapsed().as_secs_f64() * 1e3;

    println!(
        "\n  iteration | gradient descent (step 1/L, L = {l:.3}) | Newton-CG: loss, CG steps (HVPs), line-search step, |g| before"
    );
    let gd_at = |it: usize| gd_losses.iter().find(|(i, _)| *i == it).map(|(_, v)| *v);
    for (it, loss, used, step, gnorm) in &rows {
        let gd = gd_at(*it).map_or(String::from("-"), |v| format!("{v:.7}"));
        println!("  {it:>9} | {gd:>39} | {loss:.7}, {used:>2} HVPs, step {step}, |g| {gnorm:.2e}");
    }
    for (it, v) in gd_losses.iter().filter(|(i, _)| *i > NEWTON_STEPS) {
        println!("  {it:>9} | {v:>39.7} |");
    }
    println!(
        "  Newton-CG: {grads} gradients and {hvps} HVPs in {newton_ms:.0} ms; gradient descent: {} gradients in {gd_ms:.0} ms",
        GD_CHECKPOINTS.last().unwrap()
    );

    // Hutchinson's estimate of tr(H) at Newton's minimum, against the exact trace.
    let local = Local::at(&dev, &problem, &newton)?;
    let probes: Vec<Vec<f32>> = (0..PROBES)
        .map(|_| (0..=D).map(|_| rng.sign()).collect())
        .collect();
    let hz = local.hvp_rows(&probes)?;
    // Timed again: the first call compiled the pipelines for 64 rows.
    let t = Instant::now();
    local.hvp_rows(&probes)?;
    let batched_ms = t.elapsed().as_secs_f64() * 1e3;
    let q: Vec<f64> = (probes.iter().zip(&hz))
        .map(|(z, h)| f64::from(dot(z, h)))
        .collect();
    let mean = q.iter().sum::<f64>() / PROBES as f64;
    let var = q.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (PROBES - 1) as f64;
    let se = (var / PROBES as f64).sqrt();
    let identity: Vec<Vec<f32>> = (0..=D)
        .map(|i| (0..=D).map(|j| f32::from(u8::from(i == j))).collect())
        .collect();
    let exact: f64 = (local.hvp_rows(&identity)?.iter().enumerate())
        .map(|(i, row)| f64::from(row[i]))
        .sum();
    let t = Instant::now();
    for z in &probes {
        local.hvp(z)?;
    }
    let looped_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("\nHutchinson's estimate of tr(H) at the minimum, {PROBES} Rademacher probes:");
    println!(
        "  estimate {mean:.4} ± {se:.4} (standard error); exact {exact:.4} (the identity's {} rows, one hvp_batched)",
        D + 1
    );
    println!(
        "  |estimate − exact| = {:.2} standard errors",
        (mean - exact).abs() / se
    );
    println!(
        "  {PROBES} probes in one hvp_batched: {batched_ms:.1} ms; in {PROBES} hvp calls: {looped_ms:.1} ms"
    );
    Ok(())
}
