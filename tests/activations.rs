//! The activations and scalar-parameter ops of issue 10 (gelu, gelu_tanh,
//! silu, softplus, log1p, expm1, rsqrt, leaky_relu, elu, clamp) against
//! f64 references: forward, the reference VJP against finite differences,
//! `vjp` and `vjp_batched` (K = 1, 3, 64; `common::VjpCheck`), over odd and
//! vec4-aligned shapes; then the conventions at the non-differentiable
//! points, the accuracy of the tails, special values and fused adjoints.

mod common;

use common::*;
use pullback::{Result, Tensor};

const SHAPES: &[&[usize]] = &[&[], &[7], &[257], &[1000], &[3, 5, 7]];

/// exp-based functions (silu, softplus, elu's negative side, gelu's
/// erfc): exp's 3 + 2|x| ULP on |x| <= 4 and a few roundings, plus the
/// erfc fit's 1.2e-7 for gelu. Measured on lavapipe: see the test output
/// (`family …` lines); the worst is below 1e-6 relative.
const EXPLIKE: Tol = Tol::new(4e-6, 1e-7);
/// log1p/expm1 near 0: the series keep the relative error to a few ULP.
const TRICK: Tol = Tol::new(2e-6, 1e-30);
/// gelu_tanh: computed from e^(−2|u|) without cancellation (see
/// shaders/unary.wgsl); exp's error grows with |u| ≤ 12 here.
const GELU_TANH: Tol = EXPLIKE;

fn check(
    name: &str,
    dist: Dist,
    tol: Tol,
    gpu: impl Fn(&Tensor) -> Result<Tensor>,
    f: impl Fn(f64) -> f64,
    df: impl Fn(f64) -> f64,
) {
    check_unary_family(name, SHAPES, dist, tol, tol, gpu, f, df);
}

fn phi(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}
fn big_phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}
fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
const K0: f64 = 0.797_884_560_802_865_4; // √(2/π)
fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (K0 * (x + 0.044715 * x.powi(3))).tanh())
}
fn gelu_tanh_d(x: f64) -> f64 {
    let t = (K0 * (x + 0.044715 * x.powi(3))).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K0 * (1.0 + 3.0 * 0.044715 * x * x)
}

#[test]
fn gelu() {
    check(
        "gelu",
        Dist::Uniform(-4.0, 4.0),
        EXPLIKE,
        |x| x.gelu(),
        |x| x * big_phi(x),
        |x| big_phi(x) + x * phi(x),
    );
}

#[test]
fn gelu_tanh_form() {
    check(
        "gelu_tanh",
        Dist::Uniform(-4.0, 4.0),
        GELU_TANH,
        |x| x.gelu_tanh(),
        gelu_tanh,
        gelu_tanh_d,
    );
}

#[test]
fn silu() {
    check(
        "silu",
        Dist::Uniform(-6.0, 6.0),
        EXPLIKE,
        |x| x.silu(),
        |x| x * sig(x),
        |x| sig(x) * (1.0 + x * (1.0 - sig(x))),
    );
}

#[test]
fn softplus() {
    check(
        "softplus",
        Dist::Uniform(-8.0, 8.0),
        EXPLIKE,
        |x| x.softplus(),
        |x| x.exp().ln_1p(),
        sig,
    );
}

#[test]
fn log1p_and_expm1_near_zero_and_beyond() {
    for (lo, hi) in [(-1e-3f32, 1e-3f32), (-0.9, 3.0)] {
        check(
            &format!("log1p [{lo}, {hi}]"),
            Dist::Uniform(lo, hi),
            TRICK,
            |x| x.log1p(),
            f64::ln_1p,
            |x| 1.0 / (1.0 + x),
        );
        check(
            &format!("expm1 [{lo}, {hi}]"),
            Dist::Uniform(lo, hi),
            TRICK,
            |x| x.expm1(),
            f64::exp_m1,
            f64::exp,
        );
    }
}

#[test]
fn rsqrt() {
    check(
        "rsqrt",
        Dist::Uniform(0.1, 10.0),
        Tol::new(1e-6, 1e-30),
        |x| x.rsqrt(),
        |x| 1.0 / x.sqrt(),
        |x| -0.5 * x.powf(-1.5),
    );
}

#[test]
fn leaky_relu_elu_clamp_away_from_their_kinks() {
    // Inputs at least 0.05 from the kinks (the FD step is <= 4e-4).
    check(
        "leaky_relu",
        Dist::Signed(0.05, 3.0),
        Tol::ARITH,
        |x| x.leaky_relu(0.1),
        |x| if x > 0.0 { x } else { 0.1 * x },
        |x| if x > 0.0 { 1.0 } else { 0.1 },
    );
    check(
        "elu",
        Dist::Signed(0.05, 3.0),
        EXPLIKE,
        |x| x.elu(1.5),
        |x| if x > 0.0 { x } else { 1.5 * x.exp_m1() },
        |x| if x > 0.0 { 1.0 } else { 1.5 * x.exp() },
    );
    // Below, between and above the bounds, each input at least 0.05 from
    // them; the derivative is 1 between and 0 outside.
    check(
        "clamp",
        Dist::Away(-3.0, 3.0, &[-0.5, 1.0], 0.05),
        Tol::ARITH,
        |x| x.clamp(-0.5, 1.0),
        |x| x.clamp(-0.5, 1.0),
        |x| if (-0.5..=1.0).contains(&x) { 1.0 } else { 0.0 },
    );
}

/// The documented conventions at the non-differentiable points, and
/// special values through forward and adjoint.
#[test]
fn conventions_at_kinks_and_special_values() {
    let d = dev();
    let x = ok(d.tensor(&[0.0, -1.0, 1.0, 2.0, f32::NAN], &[5])).requires_grad();
    let grad = |y: Tensor| {
        let g = ok(pullback::vjp(&[&y], &[&ok(d.full(&[5], 1.0))], &[&x]));
        (read(&y), read(&g[0]))
    };
    // leaky_relu at 0: the slope; elu at 0: α.
    let (_, g) = grad(ok(x.leaky_relu(0.1)));
    assert_eq!(g[..4], [0.1, 0.1, 1.0, 1.0]);
    assert!(g[4].is_nan());
    let (y, g) = grad(ok(x.elu(1.5)));
    assert_eq!(y[0], 0.0);
    assert_eq!(g[0], 1.5);
    assert!(y[4].is_nan() && g[4].is_nan());
    // clamp at its bounds passes the gradient (bounds included).
    let (y, g) = grad(ok(x.clamp(-1.0, 1.0)));
    assert_eq!(y[..4], [0.0, -1.0, 1.0, 1.0]);
    assert_eq!(g[..4], [1.0, 1.0, 1.0, 0.0]);
    assert!(y[4].is_nan() && g[4].is_nan(), "NaN stays NaN: {y:?} {g:?}");
    expect_invalid(x.clamp(1.0, -1.0), "clamp", &["min <= max"]);
    expect_invalid(x.clamp(f32::NAN, 1.0), "clamp", &["nan"]);
    // Tails: gelu(−10) is −10·Φ(−10) ≈ −7.6e-23, not 0 or NaN; softplus
    // and silu neither overflow nor lose the linear part.
    let t = ok(d.tensor(&[-10.0, -100.0, 100.0, 1e-6, -1e-7], &[5]));
    let gelu = read(&ok(t.gelu()));
    let want = -10.0 * big_phi(-10.0);
    assert!(((gelu[0] as f64 - want) / want).abs() < 1e-4, "{gelu:?}");
    assert_eq!(gelu[1], -0.0);
    assert_eq!(gelu[2], 100.0);
    let sp = read(&ok(t.softplus()));
    assert_eq!(sp[2], 100.0);
    // e^-100 ≈ 3.7e-44 is subnormal in f32: 0 where the device flushes those.
    assert!(sp[1] >= 0.0 && sp[1] < 1e-40, "{sp:?}");
    let silu = read(&ok(t.silu()));
    assert_eq!(silu[2], 100.0);
    let near = |got: f32, want: f64| ((got as f64 - want) / want).abs() < 2e-7;
    assert!(near(read(&ok(t.log1p()))[3], (1e-6f32 as f64).ln_1p()));
    assert!(near(read(&ok(t.expm1()))[4], (-1e-7f32 as f64).exp_m1()));
}

/// A chain of the new ops is one fused adjoint region: one adjoint
/// dispatch, and the same gradients as unfused.
#[test]
fn chains_of_new_ops_fuse() {
    let d = fresh_device();
    d.set_fused_adjoints(true); // whatever PULLBACK_FUSION says
    let mut r = rng(seed_of("activation chain"));
    let xs = sample(&mut r, 1000, Dist::Uniform(-2.0, 2.0));
    let x = ok(d.tensor(&xs, &[1000])).requires_grad();
    let y = ok(ok(ok(ok(ok(x.gelu()).silu()).softplus()).elu(0.7)).clamp(-0.2, 3.0));
    let v = ok(d.tensor(&sample(&mut r, 4000, COTANGENT), &[4, 1000]));
    ok(d.synchronize());
    let before = d.stats().dispatches;
    let fused = read(&ok(pullback::vjp_batched(&[&y], &[&v], &[&x]))[0]);
    assert_eq!(d.stats().dispatches - before, 1, "one fused adjoint");
    d.set_fused_adjoints(false);
    let plain = read(&ok(pullback::vjp_batched(&[&y], &[&v], &[&x]))[0]);
    for (a, b) in fused.iter().zip(&plain) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
    }
}
