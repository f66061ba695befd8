//! Every elementwise op against an f64 reference: forward, the reference
//! VJP against finite differences, `vjp` and `vjp_batched` (K = 1, 3, 64;
//! see `common::VjpCheck`), over sizes that do not fill a workgroup, sizes
//! not divisible by 4, multi-dimensional shapes and NumPy broadcasting; then
//! compositions: inputs used several times, inputs the output does not
//! reach, gradients with respect to intermediates, several outputs.

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
/// results cross 0. Measured: abs 9.4e-8 (under one ULP of 1), rel 1.6e-7.
const TRIG: Tol = Tol::new(1e-6, 5e-7);

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

/// Compositions of exp, sin, tanh with arithmetic: each term carries the
/// errors above (rel ~4e-7) at magnitudes up to ~10, and sums of terms
/// cancel. Measured: forward abs 7.2e-7 (rel 2.5e-6), gradients abs 8.6e-7
/// (rel 3.3e-5 on a gradient of 0.02).
const CHAIN: Tol = Tol::new(1e-5, 1e-6);

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
    let mut family = Report::default();
    for shape in SHAPES {
        let r = VjpCheck::new(format!("{name} {shape:?}"))
            .input(shape, dist)
            .output(shape)
            .forward_tol(forward_tol)
            .vjp_tol(vjp_tol)
            .run(
                |x| gpu(&x[0]),
                |x| x[0].iter().map(|&a| f(a)).collect(),
                |x, v| vec![x[0].iter().zip(v).map(|(&a, &g)| g * df(a)).collect()],
            );
        family = family.merge(r);
    }
    family.print(&format!("family {name}"));
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

// ---------------------------------------------------------------------------
// Binary ops
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Binary {
    name: &'static str,
    gpu: fn(&Tensor, &Tensor) -> Result<Tensor>,
    f: fn(f64, f64) -> f64,
    da: fn(f64, f64) -> f64,
    db: fn(f64, f64) -> f64,
    /// Values of the right operand (divisors stay away from 0).
    rhs: Dist,
    /// Bound on |f'| over the inputs, for [`broadcast_tol`].
    term: f64,
}

const ADD: Binary = Binary {
    name: "add",
    gpu: Tensor::add,
    f: |a, b| a + b,
    da: |_, _| 1.0,
    db: |_, _| 1.0,
    rhs: Dist::Uniform(-2.0, 2.0),
    term: 1.0,
};
const SUB: Binary = Binary {
    name: "sub",
    gpu: Tensor::sub,
    f: |a, b| a - b,
    da: |_, _| 1.0,
    db: |_, _| -1.0,
    rhs: Dist::Uniform(-2.0, 2.0),
    term: 1.0,
};
const MUL: Binary = Binary {
    name: "mul",
    gpu: Tensor::mul,
    f: |a, b| a * b,
    da: |_, b| b,
    db: |a, _| a,
    rhs: Dist::Uniform(-2.0, 2.0),
    term: 2.0,
};
const DIV: Binary = Binary {
    name: "div",
    gpu: Tensor::div,
    f: |a, b| a / b,
    da: |_, b| 1.0 / b,
    db: |a, b| -a / (b * b),
    rhs: Dist::Signed(0.5, 2.0),
    term: 8.0,
};

/// Shape pairs with broadcasting: the cases, both operand orders,
/// ranks 5 and 6 with broadcasting on alternate axes, and long sums (a
/// [1000] against a scalar, [300, 4] against [4]) that take the
/// workgroup-per-output reduction.
const BROADCAST: &[(&[usize], &[usize])] = &[
    (&[3, 1], &[4]),
    (&[4], &[3, 1]),
    (&[2, 3, 4], &[3, 1]),
    (&[3, 1], &[2, 3, 4]),
    (&[], &[5]),
    (&[5], &[]),
    (&[5], &[2, 5]),
    (&[2, 5], &[5]),
    (&[1], &[7]),
    (&[2, 1, 3, 1, 2], &[1, 4, 1, 3, 1]),
    (&[2, 1, 3, 1, 2, 1], &[1, 4, 1, 3, 1, 2]),
    (&[1000], &[]),
    (&[300, 4], &[4]),
];

/// Broadcast gradients are sums of up to `m` = numel(out)/numel(input)
/// products g·f', each rounded once (relative 2^-24); the GPU sums them
/// with compensation (workgroup sums add a tree of partial sums). The error
/// of a sum is about 2^-24·Σ|terms| <= 6e-8·m·max|term|, which exceeds
/// ARITH's relative bound when the terms cancel: atol is that bound, with
/// max|term| <= |g|·max|f'| = `term` (1 for add/sub, 2 for mul with
/// |a|, |b| <= 2, 8 for div's a/b² with |a| <= 2, |b| >= 0.5).
/// Measured worst (mostly K = 64 rows, whose workgroup sums end in an
/// uncompensated tree of partial sums): abs 4.0e-6 (add/sub), 6.8e-6
/// (mul), 6.9e-6 (div); at most 0.33 of this tolerance.
fn broadcast_tol(out: &[usize], a: &[usize], b: &[usize], term: f64) -> Tol {
    let m = (numel(out) / numel(a)).max(numel(out) / numel(b)) as f64;
    Tol::new(ARITH.rtol, 6e-8 * term * m)
}

fn check_binary(op: Binary, sa: &[usize], sb: &[usize], tol: Tol) -> Report {
    let out = broadcast_shape(sa, sb);
    let (sa_, sb_, out_) = (sa.to_vec(), sb.to_vec(), out.clone());
    // A batched cotangent of a rank-6 output would have rank 7, more than a
    // tensor can have: rank-6 outputs are checked with single vjp only.
    let ks: &[usize] = if out.len() < 6 { &[1, 3, 64] } else { &[] };
    VjpCheck::new(format!("{} {sa:?} x {sb:?}", op.name))
        .input(sa, Dist::Uniform(-2.0, 2.0))
        .input(sb, op.rhs)
        .output(&out)
        .forward_tol(ARITH)
        .vjp_tol(tol)
        .batch_sizes(ks)
        .run(
            |x| (op.gpu)(&x[0], &x[1]),
            |x| broadcast_map(&x[0], &sa_, &x[1], &sb_, op.f),
            |x, v| {
                let (a, b) = (&x[0], &x[1]);
                let part = |d: fn(f64, f64) -> f64| -> Vec<f64> {
                    (0..numel(&out_))
                        .map(|o| {
                            let ai = a[broadcast_index(o, &out_, &sa_)];
                            let bi = b[broadcast_index(o, &out_, &sb_)];
                            v[o] * d(ai, bi)
                        })
                        .collect()
                };
                vec![
                    sum_to(&part(op.da), &out_, &sa_),
                    sum_to(&part(op.db), &out_, &sb_),
                ]
            },
        )
}

fn check_binary_all(op: Binary) {
    let mut same = Report::default();
    for shape in SHAPES {
        same = same.merge(check_binary(op, shape, shape, ARITH));
    }
    same.print(&format!("family {} (same shapes)", op.name));
    let mut bcast = Report::default();
    for (sa, sb) in BROADCAST {
        let out = broadcast_shape(sa, sb);
        bcast = bcast.merge(check_binary(
            op,
            sa,
            sb,
            broadcast_tol(&out, sa, sb, op.term),
        ));
    }
    bcast.print(&format!("family {} (broadcasting)", op.name));
}

#[test]
fn add() {
    check_binary_all(ADD);
}

#[test]
fn sub() {
    check_binary_all(SUB);
}

#[test]
fn mul() {
    check_binary_all(MUL);
}

#[test]
fn div() {
    check_binary_all(DIV);
}

#[test]
fn broadcast_sum_strategy_changes_with_k() {
    // b [130, 1] against a [130, 64]: b's gradient sums 64 values per output.
    // With K = 1 there are 130 outputs (one workgroup each, tree sum); with
    // K = 64 there are 8320 (one invocation each, sequential compensated
    // sum). Both are accurate, but not bitwise equal: rows may differ by
    // the rounding of a 64-term sum, ~2^-24·Σ|terms| <= 6e-8·64·2 = 7.7e-6.
    // Measured: 1.9e-6 between them, 1.5e-6 against the reference.
    let (sa, sb) = ([130, 64], [130, 1]);
    let out = broadcast_shape(&sa, &sb);
    let tol = broadcast_tol(&out, &sa, &sb, 2.0);
    let (sa_, sb_, out_) = (sa.to_vec(), sb.to_vec(), out.clone());
    VjpCheck::new("mul [130, 64] x [130, 1]")
        .input(&sa, Dist::Uniform(-2.0, 2.0))
        .input(&sb, Dist::Uniform(-2.0, 2.0))
        .output(&out)
        .vjp_tol(tol)
        .loop_tol(tol)
        .fd_max_per_input(16)
        .run(
            |x| x[0].mul(&x[1]),
            |x| broadcast_map(&x[0], &sa_, &x[1], &sb_, |a, b| a * b),
            |x, v| {
                let ga: Vec<f64> = (0..v.len())
                    .map(|o| v[o] * x[1][broadcast_index(o, &out_, &sb_)])
                    .collect();
                let gb: Vec<f64> = (0..v.len())
                    .map(|o| v[o] * x[0][broadcast_index(o, &out_, &sa_)])
                    .collect();
                vec![ga, sum_to(&gb, &out_, &sb_)]
            },
        );
}

#[test]
fn broadcast_gradient_sums_are_compensated() {
    // The gradient of a broadcast operand is a sum over the broadcast axis.
    // With cotangent rows [1, 1e-8, 1e-8, ...], a plain f32 sum returns
    // exactly 1 (each 1e-8 is below half an ULP of 1); a compensated sum
    // keeps them: 1 + (r - 1)·1e-8, within one rounding. Both reduction
    // strategies: r = 63 (an invocation per output) and r = 10000 (a
    // workgroup per output). A plain sum misses by 6.2e-7 and 4.5e-7.
    for (rows, r) in [(130usize, 63usize), (1, 10000)] {
        let a = tensor(&vec![0.5; rows * r], &[rows, r]).requires_grad();
        let b = tensor(&vec![0.5; rows], &[rows, 1]).requires_grad();
        let y = ok(a.add(&b));
        let mut v = vec![1e-8f32; rows * r];
        for row in 0..rows {
            v[row * r] = 1.0;
        }
        let g = ok(pullback::vjp(&[&y], &[&tensor(&v, &[rows, r])], &[&b]));
        let exact = 1.0 + (r - 1) as f64 * 1e-8f32 as f64;
        // One ULP of 1.0 (1.2e-7): a rounding of the result plus the tree
        // of partial sums' few roundings of values far below it.
        let got = to_f64(&read(&g[0]));
        assert_close(
            &format!("sum of [1, 1e-8 x {}] over {rows} rows", r - 1),
            &got,
            &vec![exact; rows],
            &[rows, 1],
            Tol::new(0.0, 1.2e-7),
        );
    }
}

#[test]
fn incompatible_shapes_are_errors() {
    let a = tensor(&[1.0, 2.0, 3.0], &[3]);
    let b = tensor(&[1.0, 2.0, 3.0, 4.0], &[4]);
    for op in [ADD, SUB, MUL, DIV] {
        match (op.gpu)(&a, &b) {
            Err(pullback::Error::ShapeMismatch { lhs, rhs, .. }) => {
                assert_eq!((lhs, rhs), (vec![3], vec![4]), "{}", op.name);
            }
            other => panic!("{}: expected ShapeMismatch, got {other:?}", op.name),
        }
    }
}

// ---------------------------------------------------------------------------
// Compositions
// ---------------------------------------------------------------------------

#[test]
fn chain_with_inputs_used_several_times() {
    // f(x, y) = sin(x)·exp(x) + x/y: x reaches the output along three paths,
    // so its cotangent accumulates three contributions. Same shapes, then y
    // broadcast along x's rows (its gradient is also a sum over rows).
    for (sx, sy) in [(&[3usize, 5][..], &[3usize, 5][..]), (&[4, 7], &[7])] {
        let out = broadcast_shape(sx, sy);
        let (sx_, sy_, out_) = (sx.to_vec(), sy.to_vec(), out.clone());
        VjpCheck::new(format!("sin(x)*exp(x) + x/y {sx:?} x {sy:?}"))
            .input(sx, Dist::Uniform(-2.0, 2.0))
            .input(sy, Dist::Signed(0.5, 2.0))
            .output(&out)
            .forward_tol(CHAIN)
            .vjp_tol(CHAIN)
            .run(
                |x| {
                    let (x, y) = (&x[0], &x[1]);
                    ok(x.sin()).mul(&ok(x.exp()))?.add(&x.div(y)?)
                },
                |x| {
                    let g = x[0].iter().map(|&a| a.sin() * a.exp()).collect::<Vec<_>>();
                    let q = broadcast_map(&x[0], &sx_, &x[1], &sy_, |a, b| a / b);
                    g.iter().zip(q).map(|(g, q)| g + q).collect()
                },
                |x, v| {
                    let (xs, ys) = (&x[0], &x[1]);
                    let gx = (0..v.len())
                        .map(|o| {
                            let a = xs[o];
                            let b = ys[broadcast_index(o, &out_, &sy_)];
                            v[o] * (a.exp() * (a.cos() + a.sin()) + 1.0 / b)
                        })
                        .collect();
                    let gy: Vec<f64> = (0..v.len())
                        .map(|o| {
                            let b = ys[broadcast_index(o, &out_, &sy_)];
                            -v[o] * xs[o] / (b * b)
                        })
                        .collect();
                    vec![gx, sum_to(&gy, &out_, &sy_)]
                },
            );
    }
}

#[test]
fn chain_with_a_reused_intermediate() {
    // f(x, y) = tanh(x·y - y)·y + (x·y)²: y is used four times and the
    // intermediate x·y twice (once through `square`, once through `mul`).
    let shape = [257];
    VjpCheck::new("tanh(x*y - y)*y + (x*y)^2")
        .input(&shape, Dist::Uniform(-1.5, 1.5))
        .input(&shape, Dist::Uniform(-1.5, 1.5))
        .output(&shape)
        .forward_tol(CHAIN)
        .vjp_tol(CHAIN)
        .run(
            |x| {
                let (x, y) = (&x[0], &x[1]);
                let xy = x.mul(y)?;
                let t = xy.sub(y)?.tanh()?;
                t.mul(y)?.add(&xy.mul(&xy)?)
            },
            |x| {
                (0..x[0].len())
                    .map(|i| {
                        let (a, b) = (x[0][i], x[1][i]);
                        (a * b - b).tanh() * b + (a * b).powi(2)
                    })
                    .collect()
            },
            |x, v| {
                let n = x[0].len();
                let (mut gx, mut gy) = (vec![0.0; n], vec![0.0; n]);
                for i in 0..n {
                    let (a, b) = (x[0][i], x[1][i]);
                    let t = (a * b - b).tanh();
                    let dt = 1.0 - t * t;
                    gx[i] = v[i] * (dt * b * b + 2.0 * a * b * b);
                    gy[i] = v[i] * (dt * (a - 1.0) * b + t + 2.0 * a * a * b);
                }
                vec![gx, gy]
            },
        );
}

#[test]
fn input_not_reached_by_the_output_gets_zeros() {
    // z is tracked and even used (in w, which is not an output), but the
    // output does not depend on it: its gradient is zeros (JAX's
    // convention), for vjp and for every row of vjp_batched.
    VjpCheck::new("exp(x) with an unreached z")
        .input(&[7], Dist::Uniform(-1.0, 1.0))
        .input(&[2, 3], Dist::Uniform(-1.0, 1.0))
        .output(&[7])
        .forward_tol(EXP)
        .vjp_tol(EXP)
        .run(
            |x| {
                let _w = x[1].sin()?;
                x[0].exp()
            },
            |x| x[0].iter().map(|a| a.exp()).collect(),
            |x, v| {
                vec![
                    x[0].iter().zip(v).map(|(a, g)| g * a.exp()).collect(),
                    vec![0.0; 6],
                ]
            },
        );
    // The same for a leaf and a tracked intermediate that share no graph at
    // all with the output, next to an input that the output does reach.
    let x = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let z = tensor(&[3.0, 4.0, 5.0], &[3]).requires_grad();
    let zi = ok(z.exp());
    let y = ok(x.mul_scalar(2.0));
    let v = tensor(&[1.0, 1.0], &[2]);
    let g = ok(pullback::vjp(&[&y], &[&v], &[&z, &zi, &x]));
    assert_eq!(read(&g[0]), vec![0.0; 3]);
    assert_eq!(read(&g[1]), vec![0.0; 3]);
    assert_eq!(read(&g[2]), vec![2.0, 2.0]);
    let vb = tensor(&[1.0, 1.0, 0.5, 0.5, -1.0, 3.0], &[3, 2]);
    let g = ok(pullback::vjp_batched(&[&y], &[&vb], &[&z, &x]));
    assert_eq!(g[0].shape(), &[3, 3]);
    assert_eq!(read(&g[0]), vec![0.0; 9]);
    assert_eq!(read(&g[1]), vec![2.0, 2.0, 1.0, 1.0, -2.0, 6.0]);
}

#[test]
fn gradient_with_respect_to_an_intermediate() {
    // h = sin(x) is tracked but not a leaf; y = h·exp(h) + x·h.
    // dy/dh (x held fixed) = exp(h)(1 + h) + x; dy/dx = dy/dh·cos(x) + h.
    let n = 257;
    let mut r = rng(seed_of("intermediate"));
    let xv = sample(&mut r, n, Dist::Uniform(-2.0, 2.0));
    let x = tensor(&xv, &[n]).requires_grad();
    let h = ok(x.sin());
    assert!(h.is_tracked() && !h.is_leaf());
    let y = ok(ok(h.mul(&ok(h.exp()))).add(&ok(x.mul(&h))));
    let want = |v: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let mut gh = vec![0.0; n];
        let mut gx = vec![0.0; n];
        for i in 0..n {
            let a = xv[i] as f64;
            let s = a.sin();
            let dh = s.exp() * (1.0 + s) + a;
            gh[i] = v[i] * dh;
            gx[i] = v[i] * (dh * a.cos() + s);
        }
        (gh, gx)
    };
    let k = 3;
    let vv = sample(&mut r, k * n, COTANGENT);
    // vjp with respect to h alone, then h and x together.
    let v0 = tensor(&vv[..n], &[n]);
    let (gh, gx) = want(&to_f64(&vv[..n]));
    let only_h = ok(pullback::vjp(&[&y], &[&v0], &[&h]));
    assert_close_f32("d/dh", &read(&only_h[0]), &gh, &[n], CHAIN);
    let both = ok(pullback::vjp(&[&y], &[&v0], &[&h, &x]));
    assert_close_f32("d/dh (with x)", &read(&both[0]), &gh, &[n], CHAIN);
    assert_close_f32("d/dx (with h)", &read(&both[1]), &gx, &[n], CHAIN);
    // Batched, K = 3.
    let vb = tensor(&vv, &[k, n]);
    let b = ok(pullback::vjp_batched(&[&y], &[&vb], &[&h, &x]));
    let (bh, bx) = (read(&b[0]), read(&b[1]));
    for row in 0..k {
        let (gh, gx) = want(&to_f64(&vv[row * n..(row + 1) * n]));
        let r = row * n..(row + 1) * n;
        assert_close_f32(
            &format!("batched d/dh row {row}"),
            &bh[r.clone()],
            &gh,
            &[n],
            CHAIN,
        );
        assert_close_f32(&format!("batched d/dx row {row}"), &bx[r], &gx, &[n], CHAIN);
    }
    // The intermediate has no .grad; backward fills the leaf's.
    ok(y.backward_with(&v0));
    assert!(h.grad().is_none());
    assert_close_f32(
        "backward x.grad",
        &read(&x.grad().unwrap()),
        &gx,
        &[n],
        CHAIN,
    );
}

#[test]
fn several_outputs_sum_their_contributions() {
    // vjp([y1, y2], [v1, v2]) = v1ᵀJ1 + v2ᵀJ2, with y1 = x² and y2 = x·c for
    // a constant (untracked) c of another shape (broadcast).
    let x = tensor(&[1.0, -2.0, 3.0], &[3]).requires_grad();
    let c = tensor(&[0.5, 1.0, 2.0, -1.0, 3.0, 0.25], &[2, 3]);
    let y1 = ok(x.square());
    let y2 = ok(x.mul(&c));
    let v1 = tensor(&[1.0, 1.0, 1.0], &[3]);
    let v2 = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let g = ok(pullback::vjp(&[&y1, &y2], &[&v1, &v2], &[&x]));
    // 2x + Σ_rows v2·c = [2 + 0.5 - 4, -4 + 2 + 15, 6 + 6 + 1.5]
    assert_eq!(read(&g[0]), vec![-1.5, 13.0, 13.5]);
    // Batched: K = 2, the second row doubles both cotangents.
    let v1b = tensor(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], &[2, 3]);
    let v2b = tensor(
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        &[2, 2, 3],
    );
    let g = ok(pullback::vjp_batched(&[&y1, &y2], &[&v1b, &v2b], &[&x]));
    assert_eq!(g[0].shape(), &[2, 3]);
    assert_eq!(read(&g[0]), vec![-1.5, 13.0, 13.5, -3.0, 26.0, 27.0]);
}

#[test]
fn backward_accumulates_every_path_into_leaves() {
    // backward_with on the three-path chain: x.grad and y.grad equal the
    // vjp of the same cotangent, and a second call doubles them.
    let mut r = rng(seed_of("backward chain"));
    let (xv, yv) = (
        sample(&mut r, 7, Dist::Uniform(-2.0, 2.0)),
        sample(&mut r, 7, Dist::Signed(0.5, 2.0)),
    );
    let x = tensor(&xv, &[7]).requires_grad();
    let y = tensor(&yv, &[7]).requires_grad();
    let f = ok(ok(ok(x.sin()).mul(&ok(x.exp()))).add(&ok(x.div(&y))));
    let v = tensor(&sample(&mut r, 7, COTANGENT), &[7]);
    let g = ok(pullback::vjp(&[&f], &[&v], &[&x, &y]));
    ok(f.backward_with(&v));
    assert_eq!(read(&x.grad().unwrap()), read(&g[0]));
    assert_eq!(read(&y.grad().unwrap()), read(&g[1]));
    ok(f.backward_with(&v));
    let twice: Vec<f32> = read(&g[0]).iter().map(|v| v * 2.0).collect();
    assert_eq!(read(&x.grad().unwrap()), twice);
}
