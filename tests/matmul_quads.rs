//! The CPU adapters' four-columns-per-invocation GEMM (`matmul_quads` in
//! `shaders/matmul_lanes.wgsl`: batched products whose columns fill 256 or
//! more, B's rows or columns read as vec4s), through both ways it reads B:
//! rows (with A's rows as vec4s, a short contraction, few rows) and
//! columns (a narrow product computed transposed, dA = G·Bᵀ of a
//! classifier head). Inputs are small integers,
//! so every product and partial sum is exact and each result must equal
//! the reference to the bit, whatever the order of the sums. Other
//! adapters run the same products on their own schedule: the test holds
//! there too.

mod common;

use common::*;

/// Integers in [-3, 3], varied by `salt`.
fn ints(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 5 + i / 7 + salt) % 7) as f32 - 3.0)
        .collect()
}

/// C[z] = A[z]·B[z] for A `[za, m, p]` and B `[zb, p, n]`, a batch of 1
/// broadcast; exact (|partial sums| ≤ 9·p, far below 2²⁴).
fn reference(
    a: &[f32],
    b: &[f32],
    (za, zb): (usize, usize),
    (m, p, n): (usize, usize, usize),
) -> Vec<f32> {
    let z = za.max(zb);
    let mut c = vec![0.0; z * m * n];
    for zi in 0..z {
        let (ao, bo) = ((zi % za) * m * p, (zi % zb) * p * n);
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..p)
                    .map(|q| f64::from(a[ao + i * p + q]) * f64::from(b[bo + q * n + j]))
                    .sum();
                c[(zi * m + i) * n + j] = s as f32;
            }
        }
    }
    c
}

fn shape(z: usize, rows: usize, cols: usize) -> Vec<usize> {
    if z == 1 {
        vec![rows, cols]
    } else {
        vec![z, rows, cols]
    }
}

#[test]
fn batched_products_equal_the_exact_reference() {
    // (A's batch, B's batch, m, p, n): one A for three B with vec4 rows of
    // both (6.3 M multiply-adds, past the vec4 threshold); a contraction
    // of 10; 10 rows; a stack of A times one narrow B (computed as Cᵀ,
    // reading the stack's columns as vec4s).
    for (za, zb, m, p, n) in [
        (1, 3, 64, 128, 256),
        (1, 2, 64, 10, 256),
        (1, 2, 10, 70, 256),
        (4, 1, 64, 256, 10),
    ] {
        let (a, b) = (ints(za * m * p, 1), ints(zb * p * n, 2));
        let at = tensor(&a, &shape(za, m, p));
        let bt = tensor(&b, &shape(zb, p, n));
        let c = read(&ok(at.matmul(&bt)));
        assert_eq!(
            c,
            reference(&a, &b, (za, zb), (m, p, n)),
            "[{za}, {m}, {p}]·[{zb}, {p}, {n}]"
        );
    }
    assert_usable(dev());
}

#[test]
fn a_classifier_head_s_batched_input_gradient_equals_the_exact_reference() {
    // y = x·W, W [256, C]: dx[k] = G[k]·Wᵀ, one product of K·64 rows with
    // a contraction of C, whose B (Wᵀ) has its columns C floats apart.
    let (k, rows, d) = (4, 64, 256);
    for c in [8, 12] {
        let x = tensor(&ints(rows * d, 3), &[rows, d]).requires_grad();
        let w_data = ints(d * c, 4);
        let w = tensor(&w_data, &[d, c]);
        let y = ok(x.matmul(&w));
        let g_data = ints(k * rows * c, 5);
        let g = tensor(&g_data, &[k, rows, c]);
        let dx = read(&ok(pullback::vjp_batched(&[&y], &[&g], &[&x]))[0]);
        // Wᵀ as a [c, d] matrix.
        let wt: Vec<f32> = (0..c * d).map(|i| w_data[(i % d) * c + i / d]).collect();
        assert_eq!(dx, reference(&g_data, &wt, (k, 1), (rows, c, d)), "C = {c}");
    }
    assert_usable(dev());
}
