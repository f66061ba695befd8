//! Reductions that add (`sum`, `mean`, `sum_all`) against f64 references,
//! through the `common::VjpCheck` harness (forward, reference VJP vs finite
//! differences, `vjp`, `vjp_batched` for K = 1, 3, 64); then long sums, and
//! that they are compensated.
//!
//! Tolerances:
//! - `sum` uses compensated (Kahan) sums per invocation, and for long sums
//!   over few outputs a 256-wide tree over the per-invocation partials: see
//!   [`sum_tol`].

mod common;

use common::*;

const EXACT: Tol = Tol::new(0.0, 0.0);
/// The unit roundoff of f32, 2⁻²⁴ (half of `f32::EPSILON`).
const U: f64 = f32::EPSILON as f64 / 2.0;

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
