//! `max` along an axis against an f64 reference, through the
//! `common::VjpCheck` harness (forward, reference VJP vs finite
//! differences, `vjp`, `vjp_batched` for K = 1, 3, 64); then its tie rule
//! and NaN handling with exact expected values.
//!
//! Tolerance: `max` picks an element: exact both ways.

mod common;

use common::*;
use rand::RngExt;

const EXACT: Tol = Tol::new(0.0, 0.0);

/// A distinct-valued input: a random permutation of 0..n, times `spacing`,
/// centred on 0. Distinct values keep `max`'s argmax unique, and a
/// `spacing` far above the FD step (<= 4e-4·max(1, |x|)) keeps finite
/// differences from crossing a tie.
fn distinct(name: &str, n: usize, spacing: f32) -> Vec<f32> {
    let mut r = rng(seed_of(name));
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = r.random_range(0..=i);
        v.swap(i, j);
    }
    v.iter()
        .map(|&i| (i as f32 - n as f32 / 2.0) * spacing)
        .collect()
}

// ---------------------------------------------------------------------------
// max
// ---------------------------------------------------------------------------

/// Reference max along `axis` with the first-maximal-element rule: for each
/// output, the flat input index it takes.
fn argmax_ref(x: &[f64], shape: &[usize], axis: usize) -> Vec<usize> {
    let outer: usize = shape[..axis].iter().product();
    let d = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut arg = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for r in 0..inner {
            let at = |j: usize| (o * d + j) * inner + r;
            let mut best = at(0);
            for j in 1..d {
                if x[at(j)] > x[best] {
                    best = at(j);
                }
            }
            arg.push(best);
        }
    }
    arg
}

fn check_max(shape: &[usize], axis: usize, keepdim: bool) -> Report {
    let name = format!("max {shape:?} axis {axis} keepdim {keepdim}");
    let n = numel(shape);
    let x = distinct(&name, n, 0.05);
    let out_shape = reduced_shape(shape, &mask(shape.len(), &[axis]), keepdim);
    let s = shape.to_vec();
    let s2 = s.clone();
    VjpCheck::new(&name)
        .input_data(shape, x)
        .output(&out_shape)
        .forward_tol(EXACT)
        .vjp_tol(EXACT)
        .run(
            move |x| x[0].max(axis, keepdim),
            move |x| {
                argmax_ref(&x[0], &s, axis)
                    .iter()
                    .map(|&i| x[0][i])
                    .collect()
            },
            move |x, g| {
                let mut gx = vec![0.0; n];
                for (o, &i) in argmax_ref(&x[0], &s2, axis).iter().enumerate() {
                    gx[i] = g[o];
                }
                vec![gx]
            },
        )
}

#[test]
fn max_along_each_axis() {
    let mut family = Report::default();
    for keepdim in [false, true] {
        for axis in 0..3 {
            family = family.merge(check_max(&[4, 5, 6], axis, keepdim));
        }
        family = family.merge(check_max(&[7], 0, keepdim));
        family = family.merge(check_max(&[1], 0, keepdim));
        family = family.merge(check_max(&[3, 1, 4], 1, keepdim));
        family = family.merge(check_max(&[300, 2], 0, keepdim));
    }
    family.print("family max");
}

/// Ties: the gradient goes to the first maximal element only (PyTorch's
/// `max(dim)`), for every cotangent of a batch. Exact expected values.
#[test]
fn max_ties_route_the_gradient_to_the_first_maximum() {
    let inf = f32::INFINITY;
    // Along axis 1: [1, 3, 3, 2] -> index 1; all equal -> index 0;
    // [-1, -2, -1, -3] -> index 0; all -inf -> index 0; 7 at the end twice.
    let x = tensor(
        &[
            1.0, 3.0, 3.0, 2.0, //
            5.0, 5.0, 5.0, 5.0, //
            -1.0, -2.0, -1.0, -3.0, //
            -inf, -inf, -inf, -inf, //
            0.0, 1.0, 7.0, 7.0,
        ],
        &[5, 4],
    )
    .requires_grad();
    let y = ok(x.max(1, false));
    assert_eq!(read(&y), vec![3.0, 5.0, -1.0, -inf, 7.0]);
    let g = tensor(&[10.0, 20.0, 30.0, 40.0, 50.0], &[5]);
    let gx = ok(pullback::vjp(&[&y], &[&g], &[&x]));
    #[rustfmt::skip]
    let want = vec![
        0.0, 10.0, 0.0, 0.0,
        20.0, 0.0, 0.0, 0.0,
        30.0, 0.0, 0.0, 0.0,
        40.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 50.0, 0.0,
    ];
    assert_eq!(read(&gx[0]), want);

    // Along axis 0 of a [3, 3] with ties down the columns, keepdim, K = 2.
    let x = tensor(&[2.0, 7.0, 1.0, 2.0, 7.0, 4.0, 0.0, 7.0, 4.0], &[3, 3]).requires_grad();
    let y = ok(x.max(0, true));
    assert_eq!(y.shape(), &[1, 3]);
    assert_eq!(read(&y), vec![2.0, 7.0, 4.0]);
    let g = tensor(&[1.0, 2.0, 3.0, -4.0, -5.0, -6.0], &[2, 1, 3]);
    let gx = ok(pullback::vjp_batched(&[&y], &[&g], &[&x]));
    assert_eq!(gx[0].shape(), &[2, 3, 3]);
    #[rustfmt::skip]
    let want = vec![
        1.0, 2.0, 0.0,   0.0, 0.0, 3.0,   0.0, 0.0, 0.0,
        -4.0, -5.0, 0.0, 0.0, 0.0, -6.0,  0.0, 0.0, 0.0,
    ];
    assert_eq!(read(&gx[0]), want);

    // The middle axis of a rank-3 tensor, all entries tied: index 0 each.
    let x = ok(dev().full(&[2, 3, 2], 1.5)).requires_grad();
    let y = ok(x.max(1, false));
    assert_eq!(read(&y), vec![1.5; 4]);
    let g = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    ok(y.backward_with(&g));
    #[rustfmt::skip]
    let want = vec![
        1.0, 2.0, 0.0, 0.0, 0.0, 0.0,
        3.0, 4.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(read(&x.grad().unwrap()), want);
}

/// NaN counts as maximal (PyTorch): the max is NaN and the gradient goes to
/// the first NaN.
#[test]
fn max_propagates_nan_to_the_first_nan() {
    let nan = f32::NAN;
    let x = tensor(&[1.0, nan, 3.0, nan, 2.0, 1.0, 0.0, -1.0], &[2, 4]).requires_grad();
    let y = ok(x.max(1, false));
    let v = read(&y);
    assert!(v[0].is_nan(), "{v:?}");
    assert_eq!(v[1], 2.0);
    let gx = ok(pullback::vjp(&[&y], &[&tensor(&[1.0, 1.0], &[2])], &[&x]));
    assert_eq!(read(&gx[0]), vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
}
