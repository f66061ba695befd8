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

/// Same IEEE class and, when finite, equal to within f32 rounding.
#[track_caller]
fn same(what: &str, got: &[f32], want: &[f32]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= 2e-6 * w.abs().max(1.0)
        };
        assert!(ok, "{what}: at x = {}: got {g}, want {w}", X[i]);
    }
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
    ("add_scalar", |t| t.add_scalar(2.0), |x| x + 2.0, |_, _| 1.0),
    ("mul_scalar", |t| t.mul_scalar(3.0), |x| x * 3.0, |_, _| 3.0),
];

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
