//! maximum, minimum, pow (tensor exponent), the comparisons and
//! where_cond: forward and batched VJPs against f64 references with
//! broadcasting (`common::VjpCheck`), then the conventions: ties split the
//! gradient, NaN propagates, masks carry no gradient, where_cond selects
//! without leaking the other side's inf/NaN, and pow's ∂/∂b at a = 0.

mod common;

use common::*;
use pullback::Tensor;

/// Broadcast pairs, both orders, odd sizes and a vec4-aligned one.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[7], &[7]),
    (&[257], &[]),
    (&[3, 1], &[4]),
    (&[4], &[3, 1]),
    (&[2, 3, 8], &[3, 8]),
    (&[5, 12], &[5, 1]),
];

type F = fn(f64, f64) -> f64;
type Op = fn(&Tensor, &Tensor) -> pullback::Result<Tensor>;

#[allow(clippy::too_many_arguments)]
fn check(
    name: &str,
    gpu: fn(&Tensor, &Tensor) -> pullback::Result<Tensor>,
    f: F,
    da: F,
    db: F,
    lhs: Dist,
    rhs: Dist,
    tol: Tol,
) {
    let mut family = Report::default();
    for (sa, sb) in PAIRS {
        let out = broadcast_shape(sa, sb);
        let (sa_, sb_, out_) = (sa.to_vec(), sb.to_vec(), out.clone());
        // Sums over broadcast axes add up to 257 terms: 6e-8 each.
        let m = (numel(&out) / numel(sa)).max(numel(&out) / numel(sb)) as f64;
        let r = VjpCheck::new(format!("{name} {sa:?} x {sb:?}"))
            .input(sa, lhs)
            .input(sb, rhs)
            .output(&out)
            .forward_tol(tol)
            .vjp_tol(Tol::new(tol.rtol, tol.atol + 6e-8 * 4.0 * m))
            .run(
                |x| gpu(&x[0], &x[1]),
                |x| broadcast_map(&x[0], &sa_, &x[1], &sb_, f),
                |x, v| {
                    let part = |d: F| -> Vec<f64> {
                        (0..numel(&out_))
                            .map(|o| {
                                let a = x[0][broadcast_index(o, &out_, &sa_)];
                                let b = x[1][broadcast_index(o, &out_, &sb_)];
                                v[o] * d(a, b)
                            })
                            .collect()
                    };
                    vec![
                        sum_to(&part(da), &out_, &sa_),
                        sum_to(&part(db), &out_, &sb_),
                    ]
                },
            );
        family = family.merge(r);
    }
    family.print(&format!("family {name}"));
}

fn step(c: bool) -> f64 {
    f64::from(u8::from(c))
}

#[test]
fn maximum_and_minimum() {
    let d = Dist::Uniform(-2.0, 2.0);
    check(
        "maximum",
        Tensor::maximum,
        f64::max,
        |a, b| step(a > b),
        |a, b| step(b > a),
        d,
        d,
        Tol::ARITH,
    );
    check(
        "minimum",
        Tensor::minimum,
        f64::min,
        |a, b| step(a < b),
        |a, b| step(b < a),
        d,
        d,
        Tol::ARITH,
    );
}

/// pow = exp2(b·log2 a): log2's relative error amplified by |b·log2 a|
/// (≤ 4 here), then exp2's; ∂/∂b adds ln a's.
#[test]
fn pow_with_a_tensor_exponent() {
    check(
        "pow",
        Tensor::pow,
        f64::powf,
        |a, b| b * a.powf(b - 1.0),
        |a, b| a.powf(b) * a.ln(),
        Dist::Uniform(0.3, 3.0),
        Dist::Uniform(-2.0, 2.0),
        Tol::new(4e-6, 1e-7),
    );
}

#[test]
fn conventions_ties_nan_masks_and_selection() {
    let d = dev();
    let a = ok(d.tensor(&[1.0, 2.0, f32::NAN, 3.0], &[4])).requires_grad();
    let b = ok(d.tensor(&[1.0, 5.0, 0.0, f32::NAN], &[4])).requires_grad();
    let ones = ok(d.full(&[4], 1.0));
    let grads = |y: &Tensor| {
        let g = ok(pullback::vjp(&[y], &[&ones], &[&a, &b]));
        (read(&g[0]), read(&g[1]))
    };
    // maximum: a tie splits the gradient; NaN in either operand gives NaN
    // and both operands the whole gradient (PyTorch's behaviour).
    let m = ok(a.maximum(&b));
    let v = read(&m);
    assert_eq!(v[..2], [1.0, 5.0]);
    assert!(v[2].is_nan() && v[3].is_nan());
    let (ga, gb) = grads(&m);
    assert_eq!(
        (ga, gb),
        (vec![0.5, 0.0, 1.0, 1.0], vec![0.5, 1.0, 1.0, 1.0])
    );
    let (ga, gb) = grads(&ok(a.minimum(&b)));
    assert_eq!(
        (ga, gb),
        (vec![0.5, 1.0, 1.0, 1.0], vec![0.5, 0.0, 1.0, 1.0])
    );
    // Comparisons: 0/1, NaN compares false, untracked.
    let x = ok(d.tensor(&[1.0, 2.0, 3.0, f32::NAN], &[4])).requires_grad();
    let y = ok(d.tensor(&[2.0], &[1]));
    let cases: [(&str, Op, [f32; 4]); 5] = [
        ("gt", Tensor::gt, [0.0, 0.0, 1.0, 0.0]),
        ("lt", Tensor::lt, [1.0, 0.0, 0.0, 0.0]),
        ("ge", Tensor::ge, [0.0, 1.0, 1.0, 0.0]),
        ("le", Tensor::le, [1.0, 1.0, 0.0, 0.0]),
        ("eq", Tensor::eq, [0.0, 1.0, 0.0, 0.0]),
    ];
    for (name, op, want) in cases {
        let r = ok(op(&x, &y));
        assert_eq!(read(&r), want, "{name}");
        assert!(!r.is_tracked(), "{name} carries no gradient");
    }
    // where_cond: broadcasting all three; the side not taken may be inf or
    // NaN without leaking; the gradient goes to the side taken only.
    let cond = ok(d.tensor(&[1.0, 0.0, -2.0], &[3, 1]));
    let t = ok(d.tensor(&[10.0, f32::INFINITY], &[2])).requires_grad();
    let f = ok(d.tensor(&[f32::NAN], &[1])).requires_grad();
    let w = ok(cond.where_cond(&t, &f));
    assert_eq!(w.shape(), &[3, 2]);
    let v = read(&w);
    assert_eq!(v[..2], [10.0, f32::INFINITY]);
    assert!(v[2].is_nan() && v[3].is_nan());
    assert_eq!(v[4..], [10.0, f32::INFINITY]);
    let g = ok(pullback::vjp(
        &[&w],
        &[&ok(d.full(&[3, 2], 1.0))],
        &[&t, &f],
    ));
    assert_eq!(read(&g[0]), vec![2.0, 2.0]);
    assert_eq!(read(&g[1]), vec![2.0]);
    // A tracked condition gets a zero gradient.
    let c2 = ok(d.tensor(&[1.0, 0.0], &[2])).requires_grad();
    let w2 = ok(c2.where_cond(&t, &ok(d.tensor(&[7.0, 8.0], &[2]))));
    let g = ok(pullback::vjp(&[&w2], &[&ok(d.full(&[2], 1.0))], &[&c2]));
    assert_eq!(read(&g[0]), vec![0.0, 0.0]);
    // pow: ∂/∂b is 0 at a = 0 for b >= 0 (PyTorch), 0^0 = 1.
    let base = ok(d.tensor(&[0.0, 0.0, 2.0], &[3])).requires_grad();
    let e = ok(d.tensor(&[0.0, 2.0, 3.0], &[3])).requires_grad();
    let p = ok(base.pow(&e));
    assert_eq!(read(&p), vec![1.0, 0.0, 8.0]);
    let g = ok(pullback::vjp(
        &[&p],
        &[&ok(d.full(&[3], 1.0))],
        &[&base, &e],
    ));
    assert_eq!(read(&g[1])[..2], [0.0, 0.0]);
    assert!((read(&g[1])[2] - 8.0 * 2f32.ln()).abs() < 1e-5);
    // Shapes that do not broadcast are refused.
    expect_err(
        ok(d.tensor(&[1.0; 3], &[3])).maximum(&ok(d.tensor(&[1.0; 2], &[2]))),
        &["maximum"],
    );
}
