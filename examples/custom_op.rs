//! A custom op from the caller's own WGSL: one explicit step of 1-D
//! advection-diffusion, u ← u + α·Δu − β·∂u (a three-point stencil), whose
//! adjoint kernel is the transposed stencil. 100 steps from an initial
//! field, then:
//! - the gradient of a loss on the final field with respect to the initial
//!   field (`backward`), and a few steps of gradient descent on it;
//! - K = 8 sensitivities of the final field at once (`vjp_batched`: one
//!   adjoint dispatch per step for all 8), checked against 8 single VJPs;
//! - the step is linear in u, declared with `linear()`: forward mode then
//!   runs it on tangent rows, so the response of the final field to a
//!   perturbation of the initial one is one `jvp` (checked against the
//!   VJPs: ⟨u, J·t⟩ = ⟨Jᵀ·u, t⟩).
//!
//! `tests/custom_op.rs` checks the same op with `gradcheck`.

use pullback::{CustomOp, Device, Result, Tensor};

const FORWARD: &str = include_str!("custom_op/diffusion_forward.wgsl");
const ADJOINT: &str = include_str!("custom_op/diffusion_adjoint.wgsl");

const N: usize = 256;
const STEPS: usize = 100;
/// Diffusion and drift per step; α ≤ 1/2 keeps the explicit step stable.
const ALPHA: f32 = 0.2;
const BETA: f32 = 0.1;

fn simulate(step: &CustomOp, u0: &Tensor) -> Result<Tensor> {
    let mut u = u0.clone();
    for _ in 0..STEPS {
        u = step.apply(&[&u], &[ALPHA, BETA])?;
    }
    Ok(u)
}

fn main() -> Result<()> {
    let dev = Device::new()?;
    println!("adapter: {}", dev.adapter_info().name);
    let step = CustomOp::builder("diffusion_step")
        .forward(FORWARD)
        .adjoint(ADJOINT)
        .linear()
        .build(&dev)?;

    // A bump at a quarter of the domain; the target is a wider bump at the
    // middle: which initial field diffuses and drifts into the target?
    let bump = |centre: f32, width: f32| -> Vec<f32> {
        (0..N)
            .map(|i| (-((i as f32 - centre) / width).powi(2)).exp())
            .collect()
    };
    let target = dev.tensor(&bump(N as f32 / 2.0, 12.0), &[N])?;
    let mut u0_values = bump(N as f32 / 4.0, 6.0);
    let lr = 20.0;
    for it in 0..=5 {
        let u0 = dev.tensor(&u0_values, &[N])?.requires_grad();
        let loss = simulate(&step, &u0)?
            .sub(&target)?
            .square()?
            .mean(&[0], false)?;
        loss.backward()?;
        let grad = u0
            .grad()
            .expect("u0 is a leaf the loss depends on")
            .to_vec()?;
        let norm = grad.iter().map(|g| g * g).sum::<f32>().sqrt();
        println!(
            "iteration {it}: loss {:.6}, |∂loss/∂u0| {norm:.3e}",
            loss.to_vec()?[0]
        );
        for (u, g) in u0_values.iter_mut().zip(&grad) {
            *u -= lr * g;
        }
    }

    // K = 8 sensitivities: ∂u_T[p]/∂u0 for 8 probe points p, as the rows of
    // one batched VJP, against a loop of single VJPs.
    let u0 = dev.tensor(&u0_values, &[N])?.requires_grad();
    let u_t = simulate(&step, &u0)?;
    let probes: Vec<usize> = (0..8).map(|j| 16 + 32 * j).collect();
    let mut rows = vec![0.0f32; probes.len() * N];
    for (k, &p) in probes.iter().enumerate() {
        rows[k * N + p] = 1.0;
    }
    let v = dev.tensor(&rows, &[probes.len(), N])?;
    let t = std::time::Instant::now();
    let batched = pullback::vjp_batched(&[&u_t], &[&v], &[&u0])?[0].to_vec()?;
    let t_batched = t.elapsed();
    let t = std::time::Instant::now();
    let mut worst = 0.0f32;
    for (k, &p) in probes.iter().enumerate() {
        let mut one = vec![0.0f32; N];
        one[p] = 1.0;
        let single = pullback::vjp(&[&u_t], &[&dev.tensor(&one, &[N])?], &[&u0])?[0].to_vec()?;
        for (a, b) in single.iter().zip(&batched[k * N..(k + 1) * N]) {
            worst = worst.max((a - b).abs());
        }
    }
    let t_loop = t.elapsed();
    let reach: Vec<usize> = (0..probes.len())
        .map(|k| {
            batched[k * N..(k + 1) * N]
                .iter()
                .filter(|s| s.abs() > 1e-6)
                .count()
        })
        .collect();
    println!(
        "8 sensitivities in one vjp_batched: {:.2} ms; 8 single vjps: {:.2} ms; \
         largest difference {worst:.2e}",
        t_batched.as_secs_f64() * 1e3,
        t_loop.as_secs_f64() * 1e3
    );
    println!("initial points each probe depends on (|∂u_T[p]/∂u0| > 1e-6): {reach:?}");
    // The same kernel on the same values, one row or eight.
    assert_eq!(worst, 0.0, "vjp_batched differs from the single vjps");

    // Forward mode: how the final field responds to a perturbation t of the
    // initial one, J·t, in one jvp through the 100 linear steps.
    let t_pert: Vec<f32> = bump(N as f32 / 3.0, 4.0);
    let jt = pullback::jvp(&[&u_t], &[&u0], &[&dev.tensor(&t_pert, &[N])?])?[0].to_vec()?;
    // ⟨e_p, J·t⟩ = ⟨Jᵀ·e_p, t⟩ for each probe p (the VJP rows above).
    let mut transpose_gap = 0.0f32;
    for (k, &p) in probes.iter().enumerate() {
        let row = &batched[k * N..(k + 1) * N];
        let back: f32 = row.iter().zip(&t_pert).map(|(a, b)| a * b).sum();
        transpose_gap = transpose_gap.max((jt[p] - back).abs());
    }
    let peak = jt
        .iter()
        .enumerate()
        .fold((0, 0.0f32), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
    println!(
        "jvp: the perturbation at {} arrives at {} with height {:.3}; \
         |<e_p, J·t> − <J^T·e_p, t>| at most {transpose_gap:.2e}",
        N / 3,
        peak.0,
        peak.1
    );
    // Two f32 dot products of N terms of the same operator, summed in
    // different orders: a few ULP of the field's scale (order 1).
    assert!(transpose_gap <= 1e-4, "J and J^T disagree: {transpose_gap}");
    Ok(())
}
