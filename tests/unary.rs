//! Every unary elementwise op against an f64 reference: forward, the
//! reference VJP against finite differences, `vjp` and `vjp_batched` (K = 1,
//! 3, 64; see `common::VjpCheck`), over sizes that do not fill a workgroup,
//! sizes not divisible by 4 and multi-dimensional shapes; then the
//! saturating tails of `tanh` and `sigmoid`.

mod common;

use common::*;
use pullback::{Result, Tensor};

/// Shapes every op runs on: rank 0; 1 element; sizes that do not fill a
/// 256-wide workgroup nor a vec4 (7, 257, 105 = 3·5·7); sizes that are
/// multiples of 4 (1000, 24), which take the vec4-aligned adjoint path.
const SHAPES: &[&[usize]] = &[&[], &[1], &[7], &[257], &[1000], &[3, 5, 7], &[2, 3, 4]];

// ---------------------------------------------------------------------------
// Tolerances. Each states the error bound it rests on and the worst error
// measured on Mesa lavapipe (Mesa 22.3.6, llvmpipe LLVM 15.0.6, x86-64) over every shape of
// its test, forward and gradients (single and batched); "rel" is over
// elements with |want| >= 1e-3, "abs" over all. Gradients carry the error of
// the value the rule saved plus one rounding of g·f'. Vulkan's precision
// rules allow far more for the transcendentals (sin/cos: 2^-11 absolute),
// so a real GPU may need more; raise them only with a measurement.
// ---------------------------------------------------------------------------

/// neg, square, abs, relu, add/mul_scalar, add/sub/mul/div, sqrt and the
/// f' of log (1/x): correctly rounded IEEE operations, see `Tol::ARITH`.
/// Measured: 0 for neg/abs/relu/add/sub/add_scalar (exact); rel 6.0e-8
/// (half an ULP) for mul/square/div/sqrt/mul_scalar forward; rel 1.5e-7
/// for the gradients of div and sqrt (two roundings).
const ARITH: Tol = Tol::ARITH;

/// exp: Vulkan allows 3 + 2|x| ULP (9 ULP ≈ 1.1e-6 for |x| <= 3).
/// Measured: rel 3.3e-7 forward, 3.9e-7 gradient (y·g).
const EXP: Tol = Tol::new(2e-6, 1e-30);

/// log on [0.1, 10]: near x = 1 the result is near 0, so the bound is
/// absolute there (Vulkan: 2^-21 ≈ 4.8e-7 on [0.5, 2]; 3 ULP elsewhere).
/// Measured: abs 2.0e-7, rel 2.9e-6 (an element with log x ≈ 0.07).
const LOG: Tol = Tol::new(1e-6, 5e-7);

/// sin, cos on [-10, 10] (range reduction included): bounded absolutely,
/// results cross 0 (Vulkan allows 2^-11 absolute on [-π, π]). Measured on
/// lavapipe: abs 9.4e-8 (under one ULP of 1), rel 1.6e-7. NVIDIA's Vulkan
/// driver (H200, 580.159.04) uses a faster approximation: abs 1.2e-6
/// forward, 1.1e-6 gradients; 4e-6 (≈ 2^-18) leaves margin and still
/// catches a wrong function.
const TRIG: Tol = Tol::new(1e-6, 4e-6);

/// tanh on [-4, 4]: lavapipe computes it through exp, with an absolute
/// error near ulp(1) = 1.2e-7 (rel 5.3e-6 measured near 0); the gradient
/// 1 - y² cancels as |y| -> 1, turning y's error into ~2·ulp(1) absolute.
/// Measured: forward abs 1.3e-7, gradient abs 2.7e-7 (rel 1.1e-4 where
/// 1 - y² ≈ 1e-3). atol 1e-6 ≈ 8·ulp(1).
const TANH: Tol = Tol::new(1e-6, 1e-6);

/// sigmoid on [-6, 6] = 1/(1 + e^-x): exp's error, one add, one divide;
/// its gradient y(1 - y) cancels as y -> 1 like tanh's. Measured: forward
/// abs 9.7e-8, rel 4.2e-7; gradient abs 9.0e-8 (rel 2.7e-5 where y ≈ 1).
const SIGMOID: Tol = Tol::new(2e-6, 5e-7);

/// sqrt: correctly rounded on lavapipe (Vulkan allows more: it derives
/// sqrt from inversesqrt). Measured: rel 5.7e-8 forward, 1.4e-7 gradient.
const SQRT: Tol = Tol::ARITH;

/// powf = exp2(p·log2|x|): log2's relative error is amplified by
/// |p·log2 x| <= 4 here, then exp2's adds. Measured: rel 6.4e-7 forward
/// (p = 3), 4.5e-7 gradient.
const POW: Tol = Tol::new(4e-6, 1e-30);

// ---------------------------------------------------------------------------
// Unary ops
// ---------------------------------------------------------------------------

/// Checks a unary op over [`SHAPES`] with inputs from `dist`, against the f64
/// function `f` and its derivative `df`.
fn check_unary(
    name: &str,
    dist: Dist,
    forward_tol: Tol,
    vjp_tol: Tol,
    gpu: impl Fn(&Tensor) -> Result<Tensor>,
    f: impl Fn(f64) -> f64,
    df: impl Fn(f64) -> f64,
) {
    check_unary_family(name, SHAPES, dist, forward_tol, vjp_tol, gpu, f, df);
}

#[test]
fn neg() {
    check_unary(
        "neg",
        Dist::Uniform(-3.0, 3.0),
        ARITH,
        ARITH,
        |x| x.neg(),
        |a| -a,
        |_| -1.0,
    );
}

#[test]
fn exp() {
    check_unary(
        "exp",
        Dist::Uniform(-3.0, 3.0),
        EXP,
        EXP,
        |x| x.exp(),
        f64::exp,
        f64::exp,
    );
}

#[test]
fn log() {
    check_unary(
        "log",
        Dist::Uniform(0.1, 10.0),
        LOG,
        ARITH,
        |x| x.log(),
        f64::ln,
        |a| 1.0 / a,
    );
}

#[test]
fn sin() {
    check_unary(
        "sin",
        Dist::Uniform(-10.0, 10.0),
        TRIG,
        TRIG,
        |x| x.sin(),
        f64::sin,
        f64::cos,
    );
}

#[test]
fn cos() {
    check_unary(
        "cos",
        Dist::Uniform(-10.0, 10.0),
        TRIG,
        TRIG,
        |x| x.cos(),
        f64::cos,
        |a| -a.sin(),
    );
}

#[test]
fn tanh() {
    check_unary(
        "tanh",
        Dist::Uniform(-4.0, 4.0),
        TANH,
        TANH,
        |x| x.tanh(),
        f64::tanh,
        |a| 1.0 - a.tanh().powi(2),
    );
}

#[test]
fn sigmoid() {
    let s = |a: f64| 1.0 / (1.0 + (-a).exp());
    check_unary(
        "sigmoid",
        Dist::Uniform(-6.0, 6.0),
        SIGMOID,
        SIGMOID,
        |x| x.sigmoid(),
        s,
        |a| s(a) * (1.0 - s(a)),
    );
}

#[test]
fn relu() {
    // Inputs at least 0.05 from the kink at 0 (the FD step is <= 4e-4).
    check_unary(
        "relu",
        Dist::Signed(0.05, 3.0),
        ARITH,
        ARITH,
        |x| x.relu(),
        |a| a.max(0.0),
        |a| if a > 0.0 { 1.0 } else { 0.0 },
    );
}

#[test]
fn sqrt() {
    check_unary(
        "sqrt",
        Dist::Uniform(0.1, 10.0),
        SQRT,
        SQRT,
        |x| x.sqrt(),
        f64::sqrt,
        |a| 0.5 / a.sqrt(),
    );
}

#[test]
fn square() {
    check_unary(
        "square",
        Dist::Uniform(-3.0, 3.0),
        ARITH,
        ARITH,
        |x| x.square(),
        |a| a * a,
        |a| 2.0 * a,
    );
}

#[test]
fn abs() {
    check_unary(
        "abs",
        Dist::Signed(0.05, 3.0),
        ARITH,
        ARITH,
        |x| x.abs(),
        f64::abs,
        f64::signum,
    );
}

#[test]
fn powf_real_exponent_on_positive_inputs() {
    check_unary(
        "powf(2.5)",
        Dist::Uniform(0.1, 3.0),
        POW,
        POW,
        |x| x.powf(2.5),
        |a| a.powf(2.5),
        |a| 2.5 * a.powf(1.5),
    );
}

#[test]
fn powf_integer_exponents_on_negative_inputs() {
    check_unary(
        "powf(3.0)",
        Dist::Signed(0.1, 2.0),
        POW,
        POW,
        |x| x.powf(3.0),
        |a| a.powi(3),
        |a| 3.0 * a * a,
    );
    check_unary(
        "powf(2.0)",
        Dist::Signed(0.1, 2.0),
        POW,
        POW,
        |x| x.powf(2.0),
        |a| a * a,
        |a| 2.0 * a,
    );
}

#[test]
fn powf_exact_points() {
    // x = 0 and negative integers with integer exponents: exact values.
    let x = tensor(&[0.0, -2.0, 2.0, -1.0, 1.0], &[5]).requires_grad();
    let y3 = ok(x.powf(3.0));
    assert_eq!(read(&y3), vec![0.0, -8.0, 8.0, -1.0, 1.0]);
    let g = ok(pullback::vjp(&[&y3], &[&ok(dev().ones(&[5]))], &[&x]));
    assert_eq!(read(&g[0]), vec![0.0, 12.0, 12.0, 3.0, 3.0]);
    let y2 = ok(x.powf(2.0));
    assert_eq!(read(&y2), vec![0.0, 4.0, 4.0, 1.0, 1.0]);
    let g = ok(pullback::vjp(&[&y2], &[&ok(dev().ones(&[5]))], &[&x]));
    assert_eq!(read(&g[0]), vec![0.0, -4.0, 4.0, -2.0, 2.0]);
}

#[test]
fn add_scalar() {
    check_unary(
        "add_scalar(0.75)",
        Dist::Uniform(-3.0, 3.0),
        ARITH,
        ARITH,
        |x| x.add_scalar(0.75),
        |a| a + 0.75,
        |_| 1.0,
    );
}

#[test]
fn mul_scalar() {
    check_unary(
        "mul_scalar(-1.5)",
        Dist::Uniform(-3.0, 3.0),
        ARITH,
        ARITH,
        |x| x.mul_scalar(-1.5),
        |a| a * -1.5,
        |_| -1.5,
    );
}

#[test]
fn saturating_ops_stay_finite() {
    // tanh and sigmoid far in their tails: exact limits, no NaN, and zero
    // derivative (1 - y² = 0, y(1 - y) = 0) where the f32 output saturates.
    let x = tensor(&[-100.0, -20.0, 20.0, 100.0], &[4]).requires_grad();
    let ones = ok(dev().ones(&[4]));
    let t = ok(x.tanh());
    assert_eq!(read(&t), vec![-1.0, -1.0, 1.0, 1.0]);
    let g = ok(pullback::vjp(&[&t], &[&ones], &[&x]));
    assert_eq!(read(&g[0]), vec![0.0; 4]);
    let s = ok(x.sigmoid());
    let sv = read(&s);
    assert_eq!(sv[0], 0.0);
    assert_eq!(&sv[2..], &[1.0, 1.0]);
    assert!(sv[1] >= 0.0 && sv[1] < 1e-8, "sigmoid(-20) = {}", sv[1]);
    let g = read(&ok(pullback::vjp(&[&s], &[&ones], &[&x]))[0]);
    assert!(
        g.iter().all(|v| v.is_finite() && *v >= 0.0 && *v < 1e-8),
        "{g:?}"
    );
}
