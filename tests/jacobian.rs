//! `jacobian` and `jacobian_with` against f64 references: the W5 graph
//! `tanh(W·x)` (512 → 512) whole and under a memory budget of a quarter of
//! the Jacobian's bytes (at least 4 passes, the same result bit for bit,
//! working memory within the budget), explicit chunk sizes, shapes and the
//! zero and error cases.

mod common;

use common::*;
use pullback::{Device, JacobianOptions, Tensor};

const EPS: f64 = f32::EPSILON as f64;

/// W5: y = tanh(W·x), W `[n, n]` (a constant), x `[n, 1]` tracked.
struct W5 {
    w: Vec<f32>,
    x: Vec<f32>,
    n: usize,
}

impl W5 {
    fn new(n: usize) -> W5 {
        let mut r = rng(seed_of("jacobian W5"));
        let scale = 1.0 / (n as f32).sqrt();
        let w = sample(&mut r, n * n, Dist::Uniform(-1.0, 1.0))
            .iter()
            .map(|v| v * scale)
            .collect();
        let x = sample(&mut r, n, Dist::Uniform(-1.0, 1.0));
        W5 { w, x, n }
    }

    fn graph(&self, d: &Device) -> (Tensor, Tensor) {
        let w = ok(d.tensor(&self.w, &[self.n, self.n]));
        let x = ok(d.tensor(&self.x, &[self.n, 1])).requires_grad();
        let y = ok(ok(w.matmul(&x)).tanh());
        (y, x)
    }

    /// J[i, j] = (1 − tanh²(s_i))·W[i, j], s = W·x, in f64; and the
    /// tolerance: s carries the GEMM's error 2·√n·EPS·Σ|W x| (see
    /// tests/linalg.rs), which moves J by at most |W_ij|·|d sech²/ds| ≤
    /// 0.77·|W_ij| times that, plus a few roundings of the products.
    fn reference(&self) -> (Vec<f64>, Tol) {
        let n = self.n;
        let (mut j, mut s_abs) = (vec![0.0; n * n], 0.0f64);
        for i in 0..n {
            let row = &self.w[i * n..(i + 1) * n];
            let s: f64 = row
                .iter()
                .zip(&self.x)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let mag: f64 = row
                .iter()
                .zip(&self.x)
                .map(|(&a, &b)| (a * b).abs() as f64)
                .sum();
            s_abs = s_abs.max(mag);
            let d = 1.0 - s.tanh().powi(2);
            for c in 0..n {
                j[i * n + c] = d * row[c] as f64;
            }
        }
        let w_max = self.w.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        let atol = 0.77 * w_max * 2.0 * (n as f64).sqrt() * EPS * s_abs;
        (j, Tol::new(4.0 * EPS, atol))
    }
}

#[test]
fn w5_jacobian_matches_the_reference_whole_and_under_a_budget() {
    let d = fresh_device();
    let w5 = W5::new(512);
    let (y, x) = w5.graph(&d);
    let (want, tol) = w5.reference();
    let whole = ok(pullback::jacobian(&y, &x));
    assert_eq!(whole.shape(), &[512, 1, 512, 1]);
    let whole = read(&whole);
    assert_close_f32("W5 Jacobian", &whole, &want, &[512, 512], tol);

    // A quarter of the Jacobian's bytes: at least four passes, each within
    // the budget, and the same values bit for bit.
    let jacobian_bytes = (512 * 512 * 4) as u64;
    let budget = jacobian_bytes / 4;
    d.set_memory_budget(budget);
    assert_eq!(d.memory_budget(), Some(budget));
    ok(d.synchronize());
    d.reset_peak();
    let before = d.stats();
    let chunked = ok(pullback::jacobian(&y, &x));
    let after = d.stats();
    let passes = after.submits - before.submits;
    assert!(passes >= 4, "{passes} passes under a budget of a quarter");
    let working = after.peak_bytes - before.live_bytes;
    assert!(
        working <= budget + jacobian_bytes,
        "peak {working} bytes > budget {budget} + result {jacobian_bytes}"
    );
    assert_eq!(
        read(&chunked),
        whole,
        "chunked Jacobian differs from the whole one"
    );
    eprintln!("W5 Jacobian under a budget of {budget} B: {passes} passes, peak {working} B");
    d.clear_memory_budget();
    assert_eq!(d.memory_budget(), None);
}

#[test]
fn explicit_chunks_give_the_same_jacobian() {
    let d = fresh_device();
    let w5 = W5::new(96);
    let (y, x) = w5.graph(&d);
    let whole = read(&ok(pullback::jacobian(&y, &x)));
    for rows in [1, 7, 32, 96, 500] {
        let before = d.stats().submits;
        let opts = JacobianOptions {
            chunk_rows: Some(rows),
            ..Default::default()
        };
        let j = ok(pullback::jacobian_with(&y, &x, opts));
        let passes = d.stats().submits - before;
        assert_eq!(passes as usize, 96usize.div_ceil(rows), "chunk_rows {rows}");
        assert_eq!(read(&j), whole, "chunk_rows {rows}");
    }
    let e = expect_err(
        pullback::jacobian_with(
            &y,
            &x,
            JacobianOptions {
                chunk_rows: Some(0),
                ..Default::default()
            },
        ),
        &["chunk_rows"],
    );
    assert!(matches!(e, pullback::Error::InvalidArgument { .. }));
}

/// Shapes `[*y.shape, *x.shape]`, a diagonal Jacobian (elementwise op), a
/// y that does not depend on x (zeros) and an untracked x (an error).
#[test]
fn shapes_zeros_and_errors() {
    let d = dev();
    let mut r = rng(seed_of("jacobian shapes"));
    let xv = sample(&mut r, 6, Dist::Uniform(0.5, 1.5));
    let x = ok(d.tensor(&xv, &[2, 3])).requires_grad();
    let y = ok(ok(x.log()).mul_scalar(3.0));
    let j = ok(pullback::jacobian(&y, &x));
    assert_eq!(j.shape(), &[2, 3, 2, 3]);
    let want: Vec<f64> = (0..36)
        .map(|i| {
            if i / 6 == i % 6 {
                3.0 / xv[i % 6] as f64
            } else {
                0.0
            }
        })
        .collect();
    assert_close_f32(
        "diag Jacobian",
        &read(&j),
        &want,
        &[6, 6],
        Tol::new(4.0 * EPS, 0.0),
    );
    // Rows of a reduction: d sum/dx = ones.
    let s = ok(x.sum(&[1], false));
    let j = ok(pullback::jacobian(&s, &x));
    assert_eq!(j.shape(), &[2, 2, 3]);
    assert_eq!(
        read(&j),
        vec![1., 1., 1., 0., 0., 0., 0., 0., 0., 1., 1., 1.]
    );
    // y without x: zeros.
    let other = ok(d.tensor(&[1.0, 2.0], &[2])).requires_grad();
    let j = ok(pullback::jacobian(&ok(other.exp()), &x));
    assert_eq!(j.shape(), &[2, 2, 3]);
    assert!(read(&j).iter().all(|&v| v == 0.0));
    let untracked = ok(d.tensor(&xv, &[2, 3]));
    expect_err(pullback::jacobian(&y, &untracked), &["requires_grad"]);
    assert_usable(d);
}
