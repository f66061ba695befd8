//! NaN and ±inf through every elementwise op and its adjoint, the sum, max
//! and softmax: IEEE propagation, no masking to 0, except the conventions
//! the README's "Special values" table lists (relu' = 0 at NaN and at 0,
//! abs' = 0 at ±0, max's gradient to the element argmax picks, softmax of a
//! row holding +inf is NaN: the shift computes inf − inf). Each row of that
//! table is one check here: the expected values are the op's formula
//! evaluated in f32 on the host.

mod common;

use common::*;
use pullback::Tensor;

const X: [f32; 6] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.5];

/// Same IEEE class and, when finite, equal to within f32 rounding; `at`
/// names element i in a failure.
#[track_caller]
fn same_at(what: &str, got: &[f32], want: &[f32], at: impl Fn(usize) -> String) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= 2e-6 * w.abs().max(1.0)
        };
        assert!(ok, "{what}: {}: got {g}, want {w}", at(i));
    }
}

/// [`same_at`] over the inputs `X`.
#[track_caller]
fn same(what: &str, got: &[f32], want: &[f32]) {
    same_at(what, got, want, |i| format!("at x = {}", X[i]));
}

/// [`same_at`] over rows (or windows).
#[track_caller]
fn same5(what: &str, got: &[f32], want: &[f32]) {
    same_at(what, got, want, |i| format!("row {i}"));
}

type Unary = (
    &'static str,
    fn(&Tensor) -> pullback::Result<Tensor>,
    fn(f32) -> f32,
    fn(f32, f32) -> f32,
);

/// Each op: forward, and its derivative as a function of (x, y).
const UNARY: &[Unary] = &[
    ("neg", |t| t.neg(), |x| -x, |_, _| -1.0),
    ("exp", |t| t.exp(), f32::exp, |_, y| y),
    ("log", |t| t.log(), f32::ln, |x, _| 1.0 / x),
    ("sin", |t| t.sin(), f32::sin, |x, _| x.cos()),
    ("cos", |t| t.cos(), f32::cos, |x, _| -x.sin()),
    ("tanh", |t| t.tanh(), f32::tanh, |_, y| 1.0 - y * y),
    (
        "sigmoid",
        |t| t.sigmoid(),
        |x| 1.0 / (1.0 + (-x).exp()),
        |_, y| y * (1.0 - y),
    ),
    // Conventions: relu(NaN) = NaN, relu' = [x > 0] (0 at 0 and at NaN).
    (
        "relu",
        |t| t.relu(),
        |x| if x.is_nan() { x } else { x.max(0.0) },
        |x, _| f32::from(u8::from(x > 0.0)),
    ),
    ("sqrt", |t| t.sqrt(), f32::sqrt, |_, y| 0.5 / y),
    ("square", |t| t.square(), |x| x * x, |x, _| 2.0 * x),
    // Convention: abs' = sign, 0 at ±0, NaN at NaN.
    (
        "abs",
        |t| t.abs(),
        f32::abs,
        |x, _| {
            if x.is_nan() {
                x
            } else if x == 0.0 {
                0.0
            } else {
                x.signum()
            }
        },
    ),
    // The activations: IEEE on their formulas (x·Φ(x), x·σ(x),
    // max(x, 0) + log1p(e^−|x|), …), so gelu and silu are NaN at −inf
    // (−inf·0) and so are their derivatives at +inf (1 + inf·0).
    ("gelu", |t| t.gelu(), gelu, |x, _| gelu_d(x)),
    ("silu", |t| t.silu(), |x| x * sigmoid(x), |x, _| silu_d(x)),
    ("softplus", |t| t.softplus(), softplus, |x, _| sigmoid(x)),
    ("log1p", |t| t.log1p(), f32::ln_1p, |x, _| 1.0 / (1.0 + x)),
    ("expm1", |t| t.expm1(), f32::exp_m1, |x, _| x.exp()),
    (
        "rsqrt",
        |t| t.rsqrt(),
        |x| 1.0 / x.sqrt(),
        |_, y| -0.5 * y * y * y, // −½·x^(−3/2), as −½·y³
    ),
    // powf: NaN stays NaN, 0^p = 0 for p > 0, an odd integer p keeps −inf.
    (
        "powf(3)",
        |t| t.powf(3.0),
        |x| x.powi(3),
        |x, _| 3.0 * x * x,
    ),
    (
        "powf(2.5)",
        |t| t.powf(2.5),
        |x| if x < 0.0 { f32::NAN } else { x.powf(2.5) },
        |x, _| if x < 0.0 { f32::NAN } else { 2.5 * x.powf(1.5) },
    ),
    ("add_scalar", |t| t.add_scalar(2.0), |x| x + 2.0, |_, _| 1.0),
    ("mul_scalar", |t| t.mul_scalar(3.0), |x| x * 3.0, |_, _| 3.0),
];

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// x·Φ(x) and Φ(x) + x·φ(x), in f32 (IEEE at ±inf: −inf·0 is NaN).
fn gelu(x: f32) -> f32 {
    x * phi(x)
}
fn gelu_d(x: f32) -> f32 {
    phi(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt()
}
fn phi(x: f32) -> f32 {
    // Φ(x) = erfc(−x/√2)/2, through f64's erfc-free identity for the
    // values used here (NaN, ±inf, ±0, 1.5).
    match x {
        x if x.is_nan() => x,
        x if x == f32::INFINITY => 1.0,
        x if x == f32::NEG_INFINITY => 0.0,
        0.0 => 0.5,       // ±0
        _ => 0.933_192_8, // Φ(1.5)
    }
}
fn silu_d(x: f32) -> f32 {
    let s = sigmoid(x);
    s + x * s * (1.0 - s)
}
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[test]
fn unary_ops_and_their_adjoints() {
    let x = tensor(&X, &[6]).requires_grad();
    let g = tensor(&[1.0; 6], &[6]);
    for (name, op, f, df) in UNARY {
        let y = ok(op(&x));
        let want_y: Vec<f32> = X.iter().map(|&v| f(v)).collect();
        same(&format!("{name}(x)"), &read(&y), &want_y);
        let dx = ok(pullback::vjp(&[&y], &[&g], &[&x]));
        let want_dx: Vec<f32> = X.iter().zip(&want_y).map(|(&v, &w)| df(v, w)).collect();
        same(&format!("d {name}"), &read(&dx[0]), &want_dx);
    }
}

#[test]
fn binary_ops_and_their_adjoints() {
    let b_vals = [1.0, f32::NAN, f32::INFINITY, 0.0, -2.0, f32::NEG_INFINITY];
    let a = tensor(&X, &[6]).requires_grad();
    let b = tensor(&b_vals, &[6]).requires_grad();
    let g = tensor(&[1.0; 6], &[6]);
    type Binary = (
        &'static str,
        fn(&Tensor, &Tensor) -> pullback::Result<Tensor>,
        fn(f32, f32) -> [f32; 3],
    );
    // (y, dy/da, dy/db) from the formulas; div's db is −(a/b)/b.
    let ops: [Binary; 4] = [
        ("add", |a, b| a.add(b), |a, b| [a + b, 1.0, 1.0]),
        ("sub", |a, b| a.sub(b), |a, b| [a - b, 1.0, -1.0]),
        ("mul", |a, b| a.mul(b), |a, b| [a * b, b, a]),
        (
            "div",
            |a, b| a.div(b),
            |a, b| [a / b, 1.0 / b, -(a / b) / b],
        ),
    ];
    for (name, op, f) in ops {
        let y = ok(op(&a, &b));
        let want: Vec<[f32; 3]> = X.iter().zip(&b_vals).map(|(&x, &y)| f(x, y)).collect();
        same(
            &format!("a {name} b"),
            &read(&y),
            &want.iter().map(|w| w[0]).collect::<Vec<_>>(),
        );
        let d = ok(pullback::vjp(&[&y], &[&g], &[&a, &b]));
        same(
            &format!("d(a {name} b)/da"),
            &read(&d[0]),
            &want.iter().map(|w| w[1]).collect::<Vec<_>>(),
        );
        same(
            &format!("d(a {name} b)/db"),
            &read(&d[1]),
            &want.iter().map(|w| w[2]).collect::<Vec<_>>(),
        );
    }
}

#[test]
fn reductions_and_softmax() {
    let inf = f32::INFINITY;
    let rows = tensor(&[f32::NAN, 1.0, inf, 0.0, inf, -inf, 2.0, 3.0], &[4, 2]).requires_grad();
    // sum: NaN stays NaN, inf + 0 = inf, inf − inf = NaN.
    same(
        "sum",
        &read(&ok(rows.sum(&[1], false))),
        &[f32::NAN, inf, f32::NAN, 5.0],
    );
    // max: NaN wins (the row's max is NaN) and takes the gradient.
    let m = ok(rows.max(1, false));
    same("max", &read(&m), &[f32::NAN, inf, inf, 3.0]);
    let dm = ok(pullback::vjp(&[&m], &[&tensor(&[1.0; 4], &[4])], &[&rows]));
    same(
        "d max",
        &read(&dm[0]),
        &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
    );
    // softmax: a row holding +inf or NaN is NaN throughout (the shift by the
    // row's max computes inf − inf); others are unaffected.
    let s = ok(rows.softmax(1));
    let e = (-1.0f32).exp();
    let want = [
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        e / (1.0 + e),
        1.0 / (1.0 + e),
    ];
    same("softmax", &read(&s), &want);
}

#[test]
fn mean_min_logsumexp_log_softmax_and_cross_entropy() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    // Rows: NaN, +inf with a finite, +inf with −inf, finite, −inf with a
    // finite (a masked class).
    let rows = tensor(
        &[nan, 1.0, inf, 0.0, inf, -inf, 2.0, 3.0, -inf, 1.0],
        &[5, 2],
    )
    .requires_grad();
    let ones = tensor(&[1.0; 5], &[5]);
    let m = ok(rows.mean(&[1], false));
    same5("mean", &read(&m), &[nan, inf, nan, 2.5, -inf]);
    let dm = ok(pullback::vjp(&[&m], &[&ones], &[&rows]));
    assert_eq!(read(&dm[0]), vec![0.5; 10], "d mean: the cotangent / 2");
    // min: NaN counts as the extreme; the gradient to the first minimal.
    let mn = ok(rows.min(1, false));
    same5("min", &read(&mn), &[nan, 0.0, -inf, 2.0, -inf]);
    let dmn = ok(pullback::vjp(&[&mn], &[&ones], &[&rows]));
    let want = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
    assert_eq!(read(&dmn[0]), want, "d min");
    // logsumexp: NaN for rows holding NaN or +inf (the shift computes
    // inf − inf); a −inf entry is an e^−inf = 0 term.
    let lse = ok(rows.logsumexp(1, false));
    let l3 = 3.0 + (1.0 + (-1.0f32).exp()).ln();
    same5("logsumexp", &read(&lse), &[nan, nan, nan, l3, 1.0]);
    let dl = read(&ok(pullback::vjp(&[&lse], &[&ones], &[&rows]))[0]);
    assert!(dl[..6].iter().all(|v| v.is_nan()), "d logsumexp: {dl:?}");
    assert_eq!(dl[8..], [0.0, 1.0], "d logsumexp of [−inf, 1]");
    let ls = read(&ok(rows.log_softmax(1)));
    assert!(ls[..6].iter().all(|v| v.is_nan()), "log_softmax: {ls:?}");
    assert_eq!(ls[8..], [-inf, 0.0], "log_softmax of [−inf, 1]");
    // cross_entropy picks the label's log-probability: a masked (−inf)
    // logit of another class gives a finite loss and gradient.
    let ce = ok(rows.cross_entropy(&[1, 0, 1, 0, 1]));
    let got = read(&ce);
    assert!(
        got[..3].iter().all(|v| v.is_nan()),
        "cross_entropy: {got:?}"
    );
    assert_eq!(got[4], 0.0, "cross_entropy of [−inf, 1] at label 1");
    let dce = read(&ok(pullback::vjp(&[&ce], &[&ones], &[&rows]))[0]);
    assert_eq!(dce[8..], [0.0, 0.0], "d cross_entropy of [−inf, 1]");
}

#[test]
fn max_pool2d_and_a_negative_base() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    // Three 2×2 windows: a NaN, a +inf, and four ties.
    let img = tensor(
        &[nan, 1.0, 2.0, 3.0, inf, 1.0, 1.0, -inf, 0.5, 0.5, 0.5, 0.5],
        &[3, 1, 2, 2],
    )
    .requires_grad();
    let p = ok(img.max_pool2d(2, 2));
    same5("max_pool2d", &read(&p), &[nan, inf, 0.5]);
    let d = ok(pullback::vjp(
        &[&p],
        &[&tensor(&[1.0; 3], &[3, 1, 1, 1])],
        &[&img],
    ));
    let want = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    assert_eq!(
        read(&d[0]),
        want,
        "d max_pool2d: to the first maximal (NaN counts)"
    );
    // A negative base: an integer p keeps the sign rule, a fractional one
    // is NaN, at −inf too (C's pow gives +inf there).
    let neg = tensor(&[-2.0, -inf, -0.5], &[3]);
    same5("(−x)^2.5", &read(&ok(neg.powf(2.5))), &[nan, nan, nan]);
    same5("(−x)^2", &read(&ok(neg.powf(2.0))), &[4.0, inf, 0.25]);
    same5("(−x)^3", &read(&ok(neg.powf(3.0))), &[-8.0, -inf, -0.125]);
}
