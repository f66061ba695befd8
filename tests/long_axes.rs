//! Axes longer than one invocation may loop over on lavapipe (llvmpipe
//! stops an invocation's loops after 65535 iterations in all, silently):
//! matrix products with a long contraction (forward and both adjoints),
//! max/argmax and cumsum along a 100,000-element axis. Every one of these
//! returned wrong values before the kernels split such loops.

mod common;

use common::*;

const N: usize = 100_000;

#[test]
fn matmul_with_a_long_contraction_and_its_adjoints() {
    let d = dev();
    let mut r = rng(seed_of("long contraction"));
    let (m, n) = (3, 5);
    let a = sample(&mut r, m * N, Dist::Uniform(-1.0, 1.0));
    let b = sample(&mut r, N * n, Dist::Uniform(-1.0, 1.0));
    let ta = ok(d.tensor(&a, &[m, N])).requires_grad();
    let tb = ok(d.tensor(&b, &[N, n])).requires_grad();
    let c = ok(ta.matmul(&tb));
    let want: Vec<f64> = (0..m * n)
        .map(|e| {
            (0..N)
                .map(|q| a[(e / n) * N + q] as f64 * b[q * n + e % n] as f64)
                .sum()
        })
        .collect();
    // A sum of 1e5 products: f32 accumulation errs by about √N·ε·Σ|terms|.
    let scale: f64 = 0.25 * N as f64;
    for (g, w) in read(&c).iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-5 * scale, "{g} vs {w}");
    }
    // With G = ones: dA[i, q] = Σ_j B[q, j], dB[q, j] = Σ_i A[i, q].
    let v = ok(d.full(&[m, n], 1.0));
    let g = ok(pullback::vjp(&[&c], &[&v], &[&ta, &tb]));
    let (ga, gb) = (read(&g[0]), read(&g[1]));
    for i in [0, 1, N - 1, N + 7] {
        let (row, q) = (i / N, i % N);
        let want: f64 = (0..n).map(|j| b[q * n + j] as f64).sum();
        assert!((ga[row * N + q] as f64 - want).abs() < 1e-5, "dA {i}");
    }
    for i in [0, 4, (N - 1) * n + 4] {
        let q = i / n;
        let want: f64 = (0..m).map(|row| a[row * N + q] as f64).sum();
        assert!((gb[i] as f64 - want).abs() < 1e-5, "dB {i}");
    }
    // A transposed operand (A's columns contiguous) over the long axis:
    // z = Xᵀ·Y with X, Y [N, 2].
    let x = ok(d.tensor(&a[..2 * N], &[N, 2])).requires_grad();
    let y = ok(d.tensor(&b[..2 * N], &[N, 2]));
    let z = ok(ok(x.transpose(0, 1)).matmul(&y));
    let want: f64 = (0..N).map(|q| a[q * 2] as f64 * b[q * 2] as f64).sum();
    assert!((read(&z)[0] as f64 - want).abs() < 1e-5 * 0.25 * N as f64);
}

#[test]
fn max_argmax_and_cumsum_along_a_long_axis() {
    let d = dev();
    let mut v = vec![0.5f32; N];
    v[N - 1] = 3.0;
    v[40_000] = 3.0; // a tie across blocks: the first one wins
    let t = ok(d.tensor(&v, &[N])).requires_grad();
    assert_eq!(read(&ok(t.max(0, false))), vec![3.0]);
    assert_eq!(ok(t.argmax(0)), vec![40_000]);
    v[70_000] = f32::NAN;
    let nan = ok(d.tensor(&v, &[N]));
    assert_eq!(ok(nan.argmax(0)), vec![70_000]);
    // The gradient of the max goes to the first maximal element.
    let g = read(
        &ok(pullback::vjp(
            &[&ok(t.max(0, false))],
            &[&ok(d.tensor(&[1.0], &[]))],
            &[&t],
        ))[0],
    );
    assert_eq!(g.iter().position(|&x| x == 1.0), Some(40_000));
    assert_eq!(g.iter().sum::<f32>(), 1.0);
    // cumsum and its reversed adjoint, against f64.
    let mut r = rng(seed_of("long cumsum"));
    let x = sample(&mut r, 2 * N, Dist::Uniform(-1.0, 1.0));
    let tx = ok(d.tensor(&x, &[N, 2])).requires_grad();
    let c = read(&ok(tx.cumsum(0)));
    let (mut s, mut worst) = (0.0f64, 0.0f64);
    for q in 0..N {
        s += x[q * 2 + 1] as f64;
        worst = worst.max((c[q * 2 + 1] as f64 - s).abs());
    }
    assert!(worst < 1e-4, "cumsum error {worst}");
    let ones = ok(d.full(&[N, 2], 1.0));
    let g = read(&ok(pullback::vjp(&[&ok(tx.cumsum(0))], &[&ones], &[&tx]))[0]);
    // Σ_{e >= q} 1 = N − q.
    for q in [0, 1, 65_535, 65_536, N - 1] {
        assert_eq!(g[q * 2], (N - q) as f32, "row {q}");
    }
}

/// K = 70,000 cotangent rows: the elementwise adjoints loop over the rows,
/// so on lavapipe a pass takes at most 8192 of them (`vjp_batched` splits
/// K into chunks there); every row must be right, aligned or not.
#[test]
fn seventy_thousand_cotangent_rows() {
    let d = dev();
    for n in [1usize, 7, 8] {
        let x = ok(d.full(&[n], 2.0)).requires_grad();
        let y = ok(ok(x.sin()).mul(&x));
        let k = 70_000;
        let v = ok(d.full(&[k, n], 1.0));
        let g = read(&ok(pullback::vjp_batched(&[&y], &[&v], &[&x]))[0]);
        // d(x sin x)/dx at 2 = sin 2 + 2 cos 2.
        let want = 2f32.sin() + 2.0 * 2f32.cos();
        assert_eq!(g.len(), k * n);
        let bad = g.iter().filter(|&&e| (e - want).abs() > 1e-5).count();
        assert_eq!(bad, 0, "n = {n}: {bad} of {} rows wrong", k * n);
    }
}
