//! Reductions (`sum`, `mean`, `max`, `sum_all`) and the ops that only move
//! values (`reshape`, `permute`, `transpose`, `broadcast_to`, `narrow`,
//! `concat`, `index_select`) against f64 references, through the
//! `common::VjpCheck` harness (forward, reference VJP vs finite differences,
//! `vjp`, `vjp_batched` for K = 1, 3, 64); then `max`'s tie rule with exact
//! expected values, and the errors of every op here.
//!
//! Tolerances:
//! - Ops that only move values copy f32 words: forward and adjoint exact
//!   (0, 0), except where the adjoint sums (repeated `index_select`
//!   indices, `broadcast_to`), see [`sum_of_cotangents`].
//! - `max` picks an element: exact both ways.
//! - `sum` uses compensated (Kahan) sums per invocation, and for long sums
//!   over few outputs a 256-wide tree over the per-invocation partials: see
//!   [`sum_tol`].

mod common;

use common::*;
use pullback::{Error, Tensor};
use rand::RngExt;

const EXACT: Tol = Tol::new(0.0, 0.0);
/// The unit roundoff of f32, 2⁻²⁴ (half of `f32::EPSILON`).
const U: f64 = f32::EPSILON as f64 / 2.0;

// ---------------------------------------------------------------------------
// Reference helpers
// ---------------------------------------------------------------------------

/// Strides of a row-major shape.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// The reduced axes of `axes` as a mask.
fn mask(rank: usize, axes: &[usize]) -> Vec<bool> {
    (0..rank).map(|d| axes.contains(&d)).collect()
}

/// `shape` with the masked axes set to 1 (keepdim) or removed.
fn reduced_shape(shape: &[usize], mask: &[bool], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(mask)
        .filter_map(|(&d, &r)| match (r, keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// For each input element, the flat index of the output element it reduces
/// into (the same with or without keepdim: size-1 axes do not move it).
fn reduce_map(shape: &[usize], mask: &[bool]) -> Vec<usize> {
    let kept = reduced_shape(shape, mask, true);
    (0..numel(shape))
        .map(|i| {
            let idx: Vec<usize> = unravel(i, shape)
                .iter()
                .zip(mask)
                .map(|(&i, &r)| if r { 0 } else { i })
                .collect();
            ravel(&idx, &kept)
        })
        .collect()
}

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
// sum, mean, sum_all
// ---------------------------------------------------------------------------

/// Tolerance of a GPU sum of values whose absolute values sum to at most
/// `abs_sum` (per output). Kahan summation in each invocation errs by at
/// most ~2u·Σ|x|; `sum_group` then adds the 256 partials of a workgroup in
/// a tree of log2(256) = 8 levels, each level one rounding of at most
/// u·Σ|partials| <= u·Σ|x|. So |err| <= 10u·Σ|x| on every path; a missed or
/// doubled element would be off by ~Σ|x|/R, far more for the R here.
fn sum_tol(abs_sum: f64) -> Tol {
    Tol::new(0.0, 10.0 * U * abs_sum)
}

/// The largest Σ|x| over the outputs of a reduction.
fn max_abs_sum(x: &[f32], map: &[usize], outputs: usize) -> f64 {
    let mut s = vec![0.0; outputs];
    for (i, &o) in map.iter().enumerate() {
        s[o] += (x[i] as f64).abs();
    }
    s.into_iter().fold(0.0, f64::max)
}

/// Checks `sum` or `mean` of `shape` over `axes` with inputs from `dist`.
fn check_sum(shape: &[usize], axes: &[usize], keepdim: bool, mean: bool, dist: Dist) -> Report {
    let op = if mean { "mean" } else { "sum" };
    let name = format!("{op} {shape:?} axes {axes:?} keepdim {keepdim}");
    let x = sample(&mut rng(seed_of(&name)), numel(shape), dist);
    let m = mask(shape.len(), axes);
    let map = reduce_map(shape, &m);
    let out_shape = reduced_shape(shape, &m, keepdim);
    let outputs = numel(&out_shape);
    let count = (numel(shape) / outputs.max(1)) as f64;
    let scale = if mean { 1.0 / count } else { 1.0 };
    // mean: the sum's error times scale, plus the roundings of 1/count to
    // f32 and of the product (2u relative, within rtol = 4u).
    let forward_tol = Tol::new(
        if mean { 4.0 * U } else { 0.0 },
        sum_tol(max_abs_sum(&x, &map, outputs)).atol * scale,
    );
    // The adjoint broadcasts g (sum: a copy, exact) times scale (mean: the
    // same two roundings as above).
    let vjp_tol = if mean { Tol::new(4.0 * U, 0.0) } else { EXACT };
    let axes_ = axes.to_vec();
    let (map_f, map_v) = (map.clone(), map);
    VjpCheck::new(&name)
        .input_data(shape, x)
        .output(&out_shape)
        .forward_tol(forward_tol)
        .vjp_tol(vjp_tol)
        .fd_max_per_input(64)
        .run(
            move |x| {
                if mean {
                    x[0].mean(&axes_, keepdim)
                } else {
                    x[0].sum(&axes_, keepdim)
                }
            },
            move |x| {
                let mut out = vec![0.0; outputs];
                for (i, &o) in map_f.iter().enumerate() {
                    out[o] += x[0][i];
                }
                out.iter().map(|s| s * scale).collect()
            },
            move |_, g| vec![map_v.iter().map(|&o| g[o] * scale).collect()],
        )
}

const AXES_345: &[&[usize]] = &[
    &[],
    &[0],
    &[1],
    &[2],
    &[0, 2],
    &[2, 0],
    &[1, 2],
    &[0, 1],
    &[0, 1, 2],
];

#[test]
fn sum_over_axes() {
    let mut family = Report::default();
    for keepdim in [false, true] {
        for axes in AXES_345 {
            family = family.merge(check_sum(
                &[3, 4, 5],
                axes,
                keepdim,
                false,
                Dist::Uniform(-1.0, 1.0),
            ));
        }
        family = family.merge(check_sum(
            &[7],
            &[0],
            keepdim,
            false,
            Dist::Uniform(-1.0, 1.0),
        ));
        family = family.merge(check_sum(
            &[2, 1, 3, 1, 2],
            &[1, 3, 4],
            keepdim,
            false,
            Dist::Uniform(-1.0, 1.0),
        ));
    }
    family = family.merge(check_sum(&[], &[], false, false, Dist::Uniform(-1.0, 1.0)));
    family.print("family sum");
}

#[test]
fn mean_over_axes() {
    let mut family = Report::default();
    for keepdim in [false, true] {
        for axes in AXES_345 {
            family = family.merge(check_sum(
                &[3, 4, 5],
                axes,
                keepdim,
                true,
                Dist::Uniform(-1.0, 1.0),
            ));
        }
        family = family.merge(check_sum(
            &[6, 7],
            &[0],
            keepdim,
            true,
            Dist::Uniform(-1.0, 1.0),
        ));
    }
    family.print("family mean");
}

#[test]
fn sum_all_to_a_scalar() {
    let mut family = Report::default();
    for shape in [&[3usize, 4, 5][..], &[1], &[], &[2, 1, 3, 1, 2, 2]] {
        let name = format!("sum_all {shape:?}");
        let n = numel(shape);
        let r = VjpCheck::new(&name)
            .input(shape, Dist::Uniform(0.5, 1.5))
            .output(&[])
            // Positive inputs: Σ|x| = Σx, so sum_tol is relative.
            .forward_tol(Tol::new(10.0 * U, 0.0))
            .vjp_tol(EXACT)
            .run(
                |x| x[0].sum_all(),
                |x| vec![x[0].iter().sum()],
                move |_, g| vec![vec![g[0]; n]],
            );
        family = family.merge(r);
    }
    family.print("family sum_all");
}

/// 2^16 elements summed to one (`sum_group`: 256 Kahan sums of 256 values,
/// then a tree). On positive inputs (well conditioned) the bound of
/// [`sum_tol`] is 10u relative, 6e-7; a naive sequential f32 sum of 2^16
/// values in [0.5, 1.5] would err by ~u·2^16·… up to 4e-3 relative (and
/// ~1e-5 typically), so this also checks that the sum is compensated. With
/// signed inputs the tolerance is 10u·Σ|x|.
///
/// Stage (b) differentiates a reference whose value is ~6.5e4: the f64
/// rounding of each evaluation, ~1e-16·|f|, divided by the FD step 1e-4,
/// leaves ~1e-7 of noise in the FD derivatives (of size ~1), so the FD
/// check gets atol 1e-6 here instead of `Tol::FD`'s 1e-9.
const LONG_FD: Tol = Tol::new(1e-7, 1e-6);

#[test]
fn long_sums() {
    let n = 1 << 16;
    let mut family = Report::default();
    for (dist, tol) in [
        (Dist::Uniform(0.5, 1.5), Tol::new(10.0 * U, 0.0)),
        (Dist::Uniform(-1.0, 1.0), sum_tol(n as f64)),
    ] {
        let r = VjpCheck::new(format!("long sum 2^16 {dist:?}"))
            .input(&[n], dist)
            .output(&[])
            .forward_tol(tol)
            .vjp_tol(EXACT)
            .fd_tol(LONG_FD)
            .fd_max_per_input(8)
            .batch_sizes(&[1, 3, 16])
            .run(
                |x| x[0].sum(&[0], false),
                |x| vec![x[0].iter().sum()],
                move |_, g| vec![vec![g[0]; n]],
            );
        family = family.merge(r);
    }
    // A long strided sum over a middle axis: 12 outputs of 4096 terms each.
    let shape = [4, 4096, 3];
    let m = mask(3, &[1]);
    let map = reduce_map(&shape, &m);
    let map_v = map.clone();
    let r = VjpCheck::new("long sum [4, 4096, 3] axis 1")
        .input(&shape, Dist::Uniform(0.5, 1.5))
        .output(&[4, 3])
        .forward_tol(Tol::new(10.0 * U, 0.0))
        .vjp_tol(EXACT)
        .fd_tol(LONG_FD)
        .fd_max_per_input(8)
        .batch_sizes(&[1, 3, 16])
        .run(
            |x| x[0].sum(&[1], false),
            move |x| {
                let mut out = vec![0.0; 12];
                for (i, &o) in map.iter().enumerate() {
                    out[o] += x[0][i];
                }
                out
            },
            move |_, g| vec![map_v.iter().map(|&o| g[o]).collect()],
        );
    family = family.merge(r);
    family.print("family long sums");
}

/// Compensation, deterministically: 1 followed by R - 1 values of 2⁻²⁵ (a
/// quarter ULP of 1). A plain f32 sum rounds every 1 + 2⁻²⁵ back to 1 and
/// loses all of them (an error of (R - 1)·2⁻²⁵, 64 ULP of 1 for R = 256,
/// far beyond [`sum_tol`]'s 10u·Σ|x|); a compensated sum keeps them. Both
/// kernels: `sum_each` (8200 outputs of 256 terms: more outputs than
/// `sum_group` takes) and `sum_group` (one output of 2^16 terms, whose
/// first invocation sums 1 and 255 small values).
#[test]
fn long_sums_are_compensated() {
    let tiny = (2.0f64).powi(-25);
    let (r, cols) = (256, 8200);
    let mut x = vec![tiny as f32; r * cols];
    x[..cols].fill(1.0);
    let t = tensor(&x, &[r, cols]);
    let want = vec![1.0 + (r - 1) as f64 * tiny; cols];
    let s = assert_close_f32(
        "sum_each of 1 + 255 quarter-ULPs",
        &read(&ok(t.sum(&[0], false))),
        &want,
        &[cols],
        sum_tol(want[0]),
    );
    eprintln!("[sum] compensated sum_each: {s}");
    let n = 1 << 16;
    let mut x = vec![tiny as f32; n];
    x[0] = 1.0;
    let t = tensor(&x, &[n]);
    let want = [1.0 + (n - 1) as f64 * tiny];
    let s = assert_close_f32(
        "sum_group of 1 + 65535 quarter-ULPs",
        &read(&ok(t.sum_all())),
        &want,
        &[],
        sum_tol(want[0]),
    );
    eprintln!("[sum] compensated sum_group: {s}");
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

// ---------------------------------------------------------------------------
// Ops that move values: out[o] = input[which][src(o)]
// ---------------------------------------------------------------------------

/// The largest number of output elements that read one input element.
fn max_repeats(src: &[(usize, usize)]) -> usize {
    let mut counts = std::collections::HashMap::new();
    for s in src {
        *counts.entry(*s).or_insert(0usize) += 1;
    }
    counts.values().copied().max().unwrap_or(0)
}

/// Tolerance of an adjoint that sums up to `r` cotangent values (|g| <= 1)
/// into one element: exact when r = 1; otherwise the f32 sum of r terms
/// errs by at most (r - 1)·u·Σ|g| <= r²·u sequentially, and `sum_to`'s
/// compensated sums by less (see [`sum_tol`], 10u·r).
fn sum_of_cotangents(r: usize) -> Tol {
    if r <= 1 {
        EXACT
    } else {
        let r = r as f64;
        Tol::new(0.0, (r * r).max(10.0 * r) * U)
    }
}

/// Checks an op that copies values: output element o is element `src[o].1`
/// of input `src[o].0`. Forward exact; adjoint a scatter-add.
///
/// Stage (d) needs a `[K, *out_shape]` cotangent tensor, and tensors have
/// rank <= 6, so outputs of rank 6 are checked by stages (a) to (c) only
/// (vjp_batched cannot take them; see the report).
fn check_move(
    name: &str,
    inputs: &[&[usize]],
    out_shape: &[usize],
    src: Vec<(usize, usize)>,
    gpu: impl Fn(&[Tensor]) -> pullback::Result<Tensor>,
) -> Report {
    assert_eq!(src.len(), numel(out_shape), "test bug: {name}");
    let tol = sum_of_cotangents(max_repeats(&src));
    let lens: Vec<usize> = inputs.iter().map(|s| numel(s)).collect();
    let mut check = VjpCheck::new(name)
        .output(out_shape)
        .forward_tol(EXACT)
        .vjp_tol(tol)
        // The single vjp and every K use the same kernels, except sums over
        // broadcast axes whose strategy depends on K (see `broadcast_to`).
        .loop_tol(tol)
        .fd_max_per_input(64);
    if out_shape.len() == 6 {
        check = check.batch_sizes(&[]);
    }
    for s in inputs {
        check = check.input(s, Dist::Uniform(-2.0, 2.0));
    }
    let src_v = src.clone();
    check.run(
        gpu,
        move |x| src.iter().map(|&(i, j)| x[i][j]).collect(),
        move |_, g| {
            let mut gx: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; n]).collect();
            for (o, &(i, j)) in src_v.iter().enumerate() {
                gx[i][j] += g[o];
            }
            gx
        },
    )
}

fn check_move1(
    name: &str,
    shape: &[usize],
    out_shape: &[usize],
    src: impl Fn(&[usize]) -> Vec<usize>,
    gpu: impl Fn(&Tensor) -> pullback::Result<Tensor>,
) -> Report {
    let src: Vec<(usize, usize)> = (0..numel(out_shape))
        .map(|o| (0, ravel(&src(&unravel(o, out_shape)), shape)))
        .collect();
    check_move(name, &[shape], out_shape, src, |x| gpu(&x[0]))
}

#[test]
fn reshape() {
    let mut family = Report::default();
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[6, 4]),
        (&[2, 3, 4], &[24]),
        (&[2, 3, 4], &[4, 1, 6]),
        (&[24], &[2, 1, 3, 1, 4, 1]),
        (&[], &[1]),
        (&[1, 1], &[]),
        (&[257], &[257, 1]),
    ];
    for &(from, to) in cases {
        let name = format!("reshape {from:?} -> {to:?}");
        let src = (0..numel(to)).map(|o| (0, o)).collect();
        family = family.merge(check_move(&name, &[from], to, src, |x| x[0].reshape(to)));
    }
    family.print("family reshape");
}

#[test]
fn permute_and_transpose() {
    let mut family = Report::default();
    let perms: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[0, 1, 2]),
        (&[2, 3, 4], &[0, 2, 1]),
        (&[2, 3, 4], &[1, 0, 2]),
        (&[2, 3, 4], &[1, 2, 0]),
        (&[2, 3, 4], &[2, 0, 1]),
        (&[2, 3, 4], &[2, 1, 0]),
        (&[2, 3, 4, 5], &[3, 1, 0, 2]),
        (&[2, 1, 3, 1, 2, 2], &[5, 2, 0, 4, 1, 3]),
        (&[7], &[0]),
        (&[], &[]),
    ];
    for &(shape, perm) in perms {
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let name = format!("permute {shape:?} by {perm:?}");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = vec![0; shape.len()];
                for (d, &p) in perm.iter().enumerate() {
                    i[p] = o[d];
                }
                i
            },
            |x| x.permute(perm),
        );
        family = family.merge(r);
    }
    let swaps: &[(&[usize], usize, usize)] = &[
        (&[3, 4], 0, 1),
        (&[2, 3, 4], 0, 2),
        (&[2, 3, 4], 2, 1),
        (&[2, 3, 4], 1, 1),
        (&[65, 3], 1, 0),
    ];
    for &(shape, a, b) in swaps {
        let mut out = shape.to_vec();
        out.swap(a, b);
        let name = format!("transpose {shape:?} ({a}, {b})");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = o.to_vec();
                i.swap(a, b);
                i
            },
            |x| x.transpose(a, b),
        );
        family = family.merge(r);
    }
    family.print("family permute/transpose");
}

/// broadcast_to copies; its adjoint sums over the broadcast axes.
/// `[1, 200] -> [100, 200]` sums 100 values into each of 200 outputs: with
/// K = 1 and K = 3 those are few enough outputs for one workgroup each (tree
/// sum), with K = 64 (12800 outputs) one invocation each (sequential
/// compensated sum), so vjp_batched rows may differ from single vjp calls
/// by the rounding of those sums (the loop tolerance is the same bound).
#[test]
fn broadcast_to() {
    let mut family = Report::default();
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 1], &[2, 3, 4]),
        (&[], &[2, 3]),
        (&[4], &[3, 4]),
        (&[1], &[5]),
        (&[2, 1, 3], &[2, 4, 3]),
        (&[2, 3], &[2, 3]),
        (&[1, 1], &[1, 1]),
        (&[1, 5], &[300, 5]),
        (&[1, 200], &[100, 200]),
    ];
    for &(from, to) in cases {
        let name = format!("broadcast_to {from:?} -> {to:?}");
        let pad = to.len() - from.len();
        let r = check_move1(
            &name,
            from,
            to,
            |o| {
                o[pad..]
                    .iter()
                    .zip(from)
                    .map(|(&i, &d)| if d == 1 { 0 } else { i })
                    .collect()
            },
            |x| x.broadcast_to(to),
        );
        family = family.merge(r);
    }
    family.print("family broadcast_to");
}

#[test]
fn narrow() {
    let mut family = Report::default();
    let cases: &[(&[usize], usize, usize, usize)] = &[
        (&[5, 6], 0, 1, 3),
        (&[5, 6], 1, 0, 6),
        (&[5, 6], 1, 5, 1),
        (&[2, 3, 4], 1, 1, 2),
        (&[2, 3, 4], 2, 3, 1),
        (&[2, 3, 4], 0, 1, 1),
        (&[300], 0, 17, 260),
    ];
    for &(shape, axis, start, len) in cases {
        let mut out = shape.to_vec();
        out[axis] = len;
        let name = format!("narrow {shape:?} axis {axis} {start}..+{len}");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = o.to_vec();
                i[axis] += start;
                i
            },
            |x| x.narrow(axis, start, len),
        );
        family = family.merge(r);
    }
    family.print("family narrow");
}

/// Where output index `o` of a concat along `axis` reads from.
fn concat_src(shapes: &[&[usize]], axis: usize) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut out = shapes[0].to_vec();
    out[axis] = shapes.iter().map(|s| s[axis]).sum();
    let src = (0..numel(&out))
        .map(|o| {
            let mut i = unravel(o, &out);
            let mut which = 0;
            while i[axis] >= shapes[which][axis] {
                i[axis] -= shapes[which][axis];
                which += 1;
            }
            (which, ravel(&i, shapes[which]))
        })
        .collect();
    (out, src)
}

#[test]
fn concat() {
    let mut family = Report::default();
    let cases: &[(&[&[usize]], usize)] = &[
        (&[&[2, 3], &[4, 3], &[1, 3]], 0),
        (&[&[2, 3], &[2, 1], &[2, 5]], 1),
        (&[&[2, 3, 4], &[2, 2, 4]], 1),
        (&[&[2, 3, 4], &[2, 3, 1]], 2),
        (&[&[3], &[300]], 0),
        (&[&[2, 2]], 1),
    ];
    for &(shapes, axis) in cases {
        let (out, src) = concat_src(shapes, axis);
        let name = format!("concat {shapes:?} axis {axis}");
        let r = check_move(&name, shapes, &out, src, |x| {
            let refs: Vec<&Tensor> = x.iter().collect();
            pullback::concat(&refs, axis)
        });
        family = family.merge(r);
    }
    // The same tensor twice (its gradient adds two cotangent slices), via
    // the associated function.
    let (out, src) = concat_src(&[&[2, 3], &[2, 3]], 1);
    let src = src.into_iter().map(|(_, j)| (0, j)).collect();
    let r = check_move("concat [x, x] axis 1", &[&[2, 3]], &out, src, |x| {
        Tensor::concat(&[&x[0], &x[0]], 1)
    });
    family = family.merge(r);
    family.print("family concat");
}

#[test]
fn index_select() {
    let mut family = Report::default();
    let cases: &[(&[usize], usize, &[u32])] = &[
        (&[5, 3], 0, &[4, 0, 2]),
        (&[5, 3], 0, &[1, 1]),
        // Middle axes of rank-3 and rank-4 inputs, with repeats.
        (&[3, 4, 5], 1, &[2, 0, 2, 2, 1]),
        (&[3, 4, 5], 2, &[4, 4, 0]),
        (&[2, 3, 4, 5], 2, &[3, 0, 3]),
        (&[2, 3, 4, 5], 1, &[2, 2, 2, 2, 2, 2, 2]),
        (&[6], 0, &[5, 4, 3, 2, 1, 0, 0]),
    ];
    for &(shape, axis, indices) in cases {
        let mut out = shape.to_vec();
        out[axis] = indices.len();
        let name = format!("index_select {shape:?} axis {axis} {indices:?}");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = o.to_vec();
                i[axis] = indices[o[axis]] as usize;
                i
            },
            |x| x.index_select(axis, indices),
        );
        family = family.merge(r);
    }
    family.print("family index_select");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// After an error the device still computes: a small sum.
#[track_caller]
fn assert_device_usable() {
    let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).requires_grad();
    let y = ok(x.sum(&[1], false));
    assert_eq!(read(&y), vec![3.0, 7.0]);
    let g = ok(pullback::vjp(&[&y], &[&tensor(&[1.0, 2.0], &[2])], &[&x]));
    assert_eq!(read(&g[0]), vec![1.0, 1.0, 2.0, 2.0]);
}

/// Asserts `r` is `InvalidArgument` of `op` whose reason contains `needle`.
#[track_caller]
fn expect_invalid(r: pullback::Result<Tensor>, op: &str, needle: &str) {
    match r {
        Err(Error::InvalidArgument { op: got, reason }) => {
            assert_eq!(got, op, "{reason}");
            assert!(
                reason.contains(needle),
                "{op}: reason {reason:?} should mention {needle:?}"
            );
            let msg = Error::InvalidArgument { op: got, reason }.to_string();
            assert!(msg.starts_with(op), "{msg}");
        }
        Err(e) => panic!("{op}: expected InvalidArgument, got {e:?}"),
        Ok(t) => panic!(
            "{op}: expected an error, got a tensor of shape {:?}",
            t.shape()
        ),
    }
    assert_device_usable();
}

#[track_caller]
fn expect_mismatch(r: pullback::Result<Tensor>, op: &str, lhs: &[usize], rhs: &[usize]) {
    match r {
        Err(e @ Error::ShapeMismatch { .. }) => {
            assert_eq!(
                e,
                Error::ShapeMismatch {
                    op: match op {
                        "concat" => "concat",
                        "broadcast_to" => "broadcast_to",
                        _ => unreachable!(),
                    },
                    lhs: lhs.to_vec(),
                    rhs: rhs.to_vec()
                }
            );
            let msg = e.to_string();
            assert!(
                msg.contains(op) && msg.contains(&format!("{rhs:?}")),
                "{msg}"
            );
        }
        Err(e) => panic!("{op}: expected ShapeMismatch, got {e:?}"),
        Ok(t) => panic!(
            "{op}: expected an error, got a tensor of shape {:?}",
            t.shape()
        ),
    }
    assert_device_usable();
}

fn x234() -> Tensor {
    ok(dev().zeros(&[2, 3, 4])).requires_grad()
}

#[test]
fn reduction_axis_errors() {
    let x = x234();
    expect_invalid(x.sum(&[3], false), "sum", "axis 3 is out of range");
    expect_invalid(x.sum(&[0, 7], true), "sum", "axis 7 is out of range");
    expect_invalid(x.sum(&[1, 1], false), "sum", "listed twice");
    expect_invalid(x.mean(&[3], false), "mean", "axis 3 is out of range");
    expect_invalid(x.max(3, false), "max", "axis 3 is out of range");
    let s = ok(dev().scalar(1.0));
    expect_invalid(s.max(0, false), "max", "axis 0 is out of range");
    expect_invalid(s.sum(&[0], false), "sum", "axis 0 is out of range");
}

#[test]
fn layout_errors() {
    let x = x234();
    expect_invalid(x.narrow(3, 0, 1), "narrow", "axis 3 is out of range");
    expect_invalid(x.narrow(1, 2, 2), "narrow", "exceeds axis 1 of size 3");
    expect_invalid(x.narrow(1, usize::MAX, 2), "narrow", "exceeds");
    expect_invalid(x.permute(&[0, 1, 3]), "permute", "not a permutation");
    expect_invalid(x.permute(&[0, 1, 1]), "permute", "not a permutation");
    expect_invalid(x.permute(&[0, 1]), "permute", "not a permutation");
    expect_invalid(x.permute(&[0, 1, 2, 3]), "permute", "not a permutation");
    expect_invalid(x.transpose(0, 3), "transpose", "axis 3 is out of range");
    expect_invalid(x.reshape(&[5, 5]), "reshape", "24 elements");
    expect_invalid(x.reshape(&[]), "reshape", "cannot reshape");
    expect_invalid(
        x.index_select(3, &[0]),
        "index_select",
        "axis 3 is out of range",
    );
    expect_invalid(
        x.index_select(1, &[0, 3, 1]),
        "index_select",
        "index 3 is out of range for axis 1 of size 3",
    );
    expect_mismatch(
        x.broadcast_to(&[2, 3, 5]),
        "broadcast_to",
        &[2, 3, 4],
        &[2, 3, 5],
    );
    expect_mismatch(x.broadcast_to(&[3, 4]), "broadcast_to", &[2, 3, 4], &[3, 4]);
    expect_mismatch(
        x.broadcast_to(&[4, 2, 2, 4]),
        "broadcast_to",
        &[2, 3, 4],
        &[4, 2, 2, 4],
    );
}

#[test]
fn concat_errors() {
    let x = x234();
    let y = ok(dev().zeros(&[2, 5, 4]));
    let z = ok(dev().zeros(&[2, 3]));
    expect_invalid(
        pullback::concat(&[&x, &y], 3),
        "concat",
        "axis 3 is out of range",
    );
    expect_mismatch(
        pullback::concat(&[&x, &y], 0),
        "concat",
        &[2, 3, 4],
        &[2, 5, 4],
    );
    expect_mismatch(
        pullback::concat(&[&x, &y], 2),
        "concat",
        &[2, 3, 4],
        &[2, 5, 4],
    );
    expect_mismatch(Tensor::concat(&[&x, &z], 1), "concat", &[2, 3, 4], &[2, 3]);
    expect_invalid(pullback::concat(&[], 0), "concat", "at least one");
}
