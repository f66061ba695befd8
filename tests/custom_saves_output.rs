//! A custom op whose adjoint reads its own output (`CustomSave::Output`):
//! the logistic sigmoid, σ' = σ·(1 − σ). Forward and K-batched adjoint
//! against float64, batched == a loop of single VJPs, and `gradcheck` with
//! its default tolerance passing the op and failing the same op with its
//! adjoint scaled by 1.02 (so the default catches a 2 % error).

mod common;

use common::*;
use pullback::{CustomOp, CustomSave, GradcheckOptions, Tensor};

const FORWARD: &str = "
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    out[t] = 1.0 / (1.0 + exp(-a[t]));
}
";

/// ā = ȳ·s·(1 − s), s the saved output (binding 3), K rows in one
/// dispatch; `SCALE` is 1, or 1.02 for the op gradcheck must reject.
fn adjoint(scale: &str) -> String {
    format!(
        "
@group(0) @binding(1) var<storage, read> cot: array<f32>;
@group(0) @binding(2) var<storage, read_write> res: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;

@compute @workgroup_size(64)
fn adjoint_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {{
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) {{ return; }}
    let y = s[t % pb.n_in];
    res[t] = {scale} * cot[t] * y * (1.0 - y);
}}
"
    )
}

fn sigmoid_op(scale: &str) -> CustomOp {
    ok(CustomOp::builder(&format!("sigmoid×{scale}"))
        .forward(FORWARD)
        .adjoint(&adjoint(scale))
        .saves(&[CustomSave::Output])
        .build(dev()))
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// f32 exp and a division: a few ULP of σ ∈ (0, 1), relative 1e-6;
/// the adjoint multiplies three such values: 1e-5 of |ȳ|·σ(1 − σ).
const TOL: Tol = Tol::new(1e-5, 1e-7);

#[test]
fn forward_and_batched_adjoint_read_the_saved_output() {
    let op = sigmoid_op("1.0");
    let (n, k) = (133, 5);
    let mut r = rng(seed_of("custom sigmoid"));
    let xs = sample(&mut r, n, Dist::Uniform(-6.0, 6.0));
    let x = tensor(&xs, &[n]).requires_grad();
    let y = ok(op.apply(&[&x], &[]));
    let s64: Vec<f64> = xs.iter().map(|&v| sigmoid64(v as f64)).collect();
    assert_close("sigmoid forward", &to_f64(&read(&y)), &s64, &[n], TOL);

    let vs = sample(&mut r, k * n, Dist::Uniform(-1.0, 1.0));
    let v = tensor(&vs, &[k, n]);
    let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
    assert_eq!(g[0].shape(), &[k, n]);
    let want: Vec<f64> = (0..k * n)
        .map(|t| vs[t] as f64 * s64[t % n] * (1.0 - s64[t % n]))
        .collect();
    let batched = read(&g[0]);
    assert_close(
        "sigmoid adjoint, K rows",
        &to_f64(&batched),
        &want,
        &[k, n],
        TOL,
    );
    // Row by row, the same kernel on the same values: equal bit for bit.
    for row in 0..k {
        let vr = tensor(&vs[row * n..(row + 1) * n], &[n]);
        let single = read(&ok(pullback::vjp(&[&y], &[&vr], &[&x]))[0]);
        assert_eq!(single, batched[row * n..(row + 1) * n], "row {row}");
    }
}

fn check(op: &CustomOp, x: &Tensor) -> pullback::GradcheckReport {
    ok(pullback::gradcheck(
        |t| op.apply(&[&t[0]], &[])?.sum_all(),
        &[x],
        GradcheckOptions::default(),
    ))
}

#[test]
fn gradcheck_with_its_defaults_catches_a_two_percent_error() {
    let mut r = rng(seed_of("gradcheck 2%"));
    let x = tensor(&sample(&mut r, 24, Dist::Uniform(-3.0, 3.0)), &[24]);
    let right = check(&sigmoid_op("1.0"), &x);
    assert!(right.is_ok(), "the correct op fails: {right}");
    let wrong = check(&sigmoid_op("1.02"), &x);
    assert!(!wrong.is_ok(), "a 2% error in the adjoint passes: {wrong}");
    // The default rtol (1e-2) sits between the two: f32 differences of a
    // smooth function agree to ~1e-5 (the correct op's worst ratio is far
    // below 1), while 2 % is twice the tolerance.
    let ratio = |r: &pullback::GradcheckReport| r.worst.as_ref().map_or(0.0, |w| w.ratio());
    assert!(ratio(&right) < 0.1, "{right}");
    assert!(ratio(&wrong) > 1.5, "{wrong}");
}
