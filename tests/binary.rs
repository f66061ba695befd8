//! The binary elementwise ops (`add`, `sub`, `mul`, `div`) against an f64
//! reference: forward, the reference VJP against finite differences, `vjp`
//! and `vjp_batched` (K = 1, 3, 64; see `common::VjpCheck`), on equal shapes
//! and with NumPy broadcasting; then how broadcast gradients are summed,
//! and incompatible shapes.

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
    // The vectorized read modes of binary.wgsl: a bias row (SUFFIX, with
    // and without leading 1s, over two axes), a column or a scalar (PREFIX,
    // over one or two axes), and both at once.
    (&[3, 8], &[8]),
    (&[5, 12], &[1, 12]),
    (&[2, 3, 8], &[3, 8]),
    (&[8, 4], &[8, 1]),
    (&[4, 8], &[]),
    (&[2, 4, 4], &[2, 1, 1]),
    (&[4, 1], &[1, 8]),
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
