//! The numerically stable composites (`softmax`, `log_softmax`,
//! `logsumexp`, `cross_entropy`) against f64 references through the
//! `common::VjpCheck` harness: moderate inputs along every axis, then inputs
//! around +100 and -100 and rows mixing 1000 with 0 and -1000, where a naive
//! exp would overflow or underflow; exact values at saturation; the errors.
//!
//! # Tolerances
//!
//! The GPU computes m = max(x) (exact), x - m (one rounding: |δ| <= u·|x-m|,
//! u = 2⁻²⁴), e = exp(x - m), S = Σe (compensated), lse = m + log S, then
//! x - lse, e / S, ... An error δ in the argument of exp is a relative error
//! δ in its result, so every quantity carries a relative error of about
//! u·R, R = max|x - m| the spread of a row, on top of a few ULP of exp/log
//! and of the roundings of the arithmetic. Additive results (lse, x - lse)
//! also carry the rounding of m + log S: u·|lse| <= u·max|x|. Hence
//!
//! - relative: `rtol = TRANSCENDENTAL + 2u·R` for softmax-like values;
//! - absolute: `atol = TRANSCENDENTAL + 4u·(max|x| + R)` for log-domain
//!   values (lse, log_softmax, cross-entropy), whose size can be far below
//!   max|x| after cancellation;
//! - gradients (softmax-shaped: s ⊙ (g - <g, s>), g - s·Σg, g·(s - onehot))
//!   carry the relative error of s but no log-domain rounding, and are O(1):
//!   `rtol = atol = TRANSCENDENTAL + 2u·R`.
//!
//! TRANSCENDENTAL = 2e-6 (~32 ULP) covers exp and log on lavapipe (measured
//! worst: see the printed reports; Vulkan's own bounds are 3 + 2|x| ULP for
//! exp and 2⁻²¹ absolute for log near 1) plus the handful of roundings of
//! each formula and of its adjoint (the adjoints multiply by at most one
//! more softmax-sized factor, so the same bound applies with |g| <= 1).

mod common;

use common::*;
use pullback::{Error, Tensor};

const U: f64 = f32::EPSILON as f64 / 2.0;
const TRANSCENDENTAL: f64 = 2e-6;

/// (outer, D, inner) around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// For each slice along `axis` (in output order), the flat indices of its
/// D elements.
fn slices(shape: &[usize], axis: usize) -> Vec<Vec<usize>> {
    let (outer, d, inner) = split(shape, axis);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for r in 0..inner {
            out.push((0..d).map(|j| (o * d + j) * inner + r).collect());
        }
    }
    out
}

fn lse_of(x: &[f64], idx: &[usize]) -> f64 {
    let m = idx.iter().map(|&i| x[i]).fold(f64::NEG_INFINITY, f64::max);
    m + idx.iter().map(|&i| (x[i] - m).exp()).sum::<f64>().ln()
}

fn softmax_ref(x: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for idx in slices(shape, axis) {
        let l = lse_of(x, &idx);
        for &i in &idx {
            y[i] = (x[i] - l).exp();
        }
    }
    y
}

/// Tolerances for inputs `x` reduced along `axis` (see the module docs):
/// (relative, absolute, gradient).
fn tols(x: &[f32], shape: &[usize], axis: usize) -> (Tol, Tol, Tol) {
    let x = to_f64(x);
    let xmax = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let spread = slices(shape, axis)
        .iter()
        .map(|idx| {
            let (lo, hi) = idx
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
                    (lo.min(x[i]), hi.max(x[i]))
                });
            hi - lo
        })
        .fold(0.0, f64::max);
    let relative = Tol::new(TRANSCENDENTAL + 2.0 * U * spread, 1e-30);
    let absolute = Tol::new(TRANSCENDENTAL, TRANSCENDENTAL + 4.0 * U * (xmax + spread));
    let g = TRANSCENDENTAL + 2.0 * U * spread;
    (relative, absolute, Tol::new(g, g))
}

/// The FD check of the f64 reference uses the step h = 1e-4·max(1, |x|):
/// its truncation error h⁴·|f⁽⁵⁾|/30 is negligible for |x| <= 10, but
/// for |x| ~ 1000 (h = 0.1) it reaches ~1e-6 (the derivatives of softmax
/// are O(1)), so the FD tolerance grows as h⁴.
fn fd_tol(x: &[f32]) -> Tol {
    let xmax = x.iter().fold(0.0f64, |a, v| a.max(v.abs() as f64));
    let h = 1e-4 * xmax.max(1.0);
    Tol::new(Tol::FD.rtol, Tol::FD.atol + h.powi(4))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Softmax,
    LogSoftmax,
    LogSumExp { keepdim: bool },
}

fn check_stable(name: &str, shape: &[usize], axis: usize, x: Vec<f32>, which: Which) -> Report {
    let (relative, absolute, gradient) = tols(&x, shape, axis);
    let fd = fd_tol(&x);
    let sh = shape.to_vec();
    let (sh_f, sh_v) = (sh.clone(), sh.clone());
    let out_shape = match which {
        Which::LogSumExp { keepdim: true } => {
            let mut s = sh.clone();
            s[axis] = 1;
            s
        }
        Which::LogSumExp { keepdim: false } => {
            let mut s = sh.clone();
            s.remove(axis);
            s
        }
        _ => sh.clone(),
    };
    let forward_tol = match which {
        Which::Softmax => relative,
        Which::LogSoftmax | Which::LogSumExp { .. } => absolute,
    };
    let name = format!("{name}: {which:?} {shape:?} axis {axis}");
    VjpCheck::new(&name)
        .input_data(shape, x)
        .output(&out_shape)
        .forward_tol(forward_tol)
        .vjp_tol(gradient)
        .fd_tol(fd)
        .run(
            move |x| match which {
                Which::Softmax => x[0].softmax(axis),
                Which::LogSoftmax => x[0].log_softmax(axis),
                Which::LogSumExp { keepdim } => x[0].logsumexp(axis, keepdim),
            },
            move |x| {
                let x = &x[0];
                match which {
                    Which::Softmax => softmax_ref(x, &sh_f, axis),
                    Which::LogSoftmax => {
                        let mut y = vec![0.0; x.len()];
                        for idx in slices(&sh_f, axis) {
                            let l = lse_of(x, &idx);
                            for &i in &idx {
                                y[i] = x[i] - l;
                            }
                        }
                        y
                    }
                    Which::LogSumExp { .. } => slices(&sh_f, axis)
                        .iter()
                        .map(|idx| lse_of(x, idx))
                        .collect(),
                }
            },
            move |x, g| {
                let x = &x[0];
                let s = softmax_ref(x, &sh_v, axis);
                let mut gx = vec![0.0; x.len()];
                for (o, idx) in slices(&sh_v, axis).iter().enumerate() {
                    match which {
                        // s ⊙ (g - <g, s>)
                        Which::Softmax => {
                            let dot: f64 = idx.iter().map(|&i| g[i] * s[i]).sum();
                            for &i in idx {
                                gx[i] = s[i] * (g[i] - dot);
                            }
                        }
                        // g - s·Σg
                        Which::LogSoftmax => {
                            let total: f64 = idx.iter().map(|&i| g[i]).sum();
                            for &i in idx {
                                gx[i] = g[i] - s[i] * total;
                            }
                        }
                        // g_o·s
                        Which::LogSumExp { .. } => {
                            for &i in idx {
                                gx[i] = g[o] * s[i];
                            }
                        }
                    }
                }
                vec![gx]
            },
        )
}

const ALL: [Which; 4] = [
    Which::Softmax,
    Which::LogSoftmax,
    Which::LogSumExp { keepdim: false },
    Which::LogSumExp { keepdim: true },
];

#[test]
fn stable_composites_on_moderate_inputs() {
    let cases: &[(&[usize], usize)] = &[
        (&[4, 7], 1),
        (&[4, 7], 0),
        (&[2, 3, 5], 1),
        (&[3, 4, 2], 2),
        (&[6], 0),
        (&[5, 1], 1),
        (&[3, 300], 1),
    ];
    for which in ALL {
        let mut family = Report::default();
        for &(shape, axis) in cases {
            let name = format!("moderate {shape:?} {axis}");
            let x = sample(
                &mut rng(seed_of(&name)),
                numel(shape),
                Dist::Uniform(-3.0, 3.0),
            );
            family = family.merge(check_stable("moderate", shape, axis, x, which));
        }
        family.print(&format!("family {which:?} moderate"));
    }
}

/// Inputs around +100 (exp overflows f32 beyond 88.7) and around -100 (exp
/// underflows below -103), and rows mixing 1000 with 0 and -1000: the
/// results stay finite and match the f64 reference.
#[test]
fn stable_composites_on_large_magnitudes() {
    let mut r = rng(seed_of("large magnitudes"));
    let around = |r: &mut _, c: f32| sample(r, 4 * 5, Dist::Uniform(c - 1.0, c + 1.0));
    let plus = around(&mut r, 100.0);
    let minus = around(&mut r, -100.0);
    #[rustfmt::skip]
    let mixed: Vec<f32> = vec![
        1000.0, 0.0, -1000.0,
        0.0, 1000.0, 0.0,
        1000.0, 999.0, 0.0,
        -1000.0, -1000.0, -999.5,
        -1000.0, 1000.0, -3.0,
    ];
    let mut widths = sample(&mut r, 2 * 6, Dist::Uniform(-1.0, 1.0));
    for (i, v) in widths.iter_mut().enumerate() {
        // Spread 100 within each row: exp(x - m) spans e^-100..1.
        *v += 50.0 * (i % 6) as f32 - 120.0;
    }
    for which in ALL {
        let mut family = Report::default();
        for (name, shape, axis, x) in [
            ("around +100", &[4usize, 5][..], 1, plus.clone()),
            ("around +100", &[4, 5], 0, plus.clone()),
            ("around -100", &[4, 5], 1, minus.clone()),
            ("mixed 1000", &[5, 3], 1, mixed.clone()),
            ("spread 250", &[2, 6], 1, widths.clone()),
        ] {
            family = family.merge(check_stable(name, shape, axis, x, which));
        }
        family.print(&format!("family {which:?} large"));
    }
}

/// Exact values where the exponentials saturate.
#[test]
fn saturated_values_are_exact() {
    let x = tensor(&[1000.0, 0.0, -1000.0, -1000.0, 88.0, 89.0], &[3, 2]).requires_grad();
    let lse = read(&ok(x.logsumexp(1, false)));
    assert_eq!(lse[0], 1000.0);
    assert!(
        (lse[1] as f64 - (-1000.0 + 2f64.ln())).abs() <= 6e-5,
        "{lse:?}"
    );
    assert!((lse[2] as f64 - (89.0 + (1.0 + (-1f64).exp()).ln())).abs() <= 1e-5);
    assert_eq!(read(&ok(x.softmax(1)))[..2], [1.0, 0.0]);
    assert_eq!(read(&ok(x.log_softmax(1)))[..2], [0.0, -1000.0]);
    let l = ok(x.cross_entropy(&[1, 0, 1]));
    let lv = read(&l);
    assert_eq!(lv[0], 1000.0);
    // lse = -1000 + ln 2 is rounded at the scale of 1000 (half an ULP,
    // 3.1e-5) before x = -1000 is subtracted: that rounding stays.
    assert!((lv[1] as f64 - 2f64.ln()).abs() <= 4e-5, "{lv:?}");
    assert!(
        (lv[2] as f64 - (1.0 + (-1f64).exp()).ln()).abs() <= 1e-5,
        "{lv:?}"
    );
    // d l / d logits = softmax - onehot: [1, -1] for the first row.
    let g = ok(pullback::vjp(&[&l], &[&tensor(&[1.0; 3], &[3])], &[&x]));
    let g = read(&g[0]);
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert_eq!(g[..2], [1.0, -1.0]);
    assert!(
        (g[2] + 0.5).abs() <= 1e-6 && (g[3] - 0.5).abs() <= 1e-6,
        "{g:?}"
    );
}

// ---------------------------------------------------------------------------
// cross_entropy
// ---------------------------------------------------------------------------

fn check_cross_entropy(name: &str, b: usize, c: usize, x: Vec<f32>, labels: &[u32]) -> Report {
    let (_, absolute, gradient) = tols(&x, &[b, c], 1);
    let fd = fd_tol(&x);
    let labels = labels.to_vec();
    let (lf, lv) = (labels.clone(), labels.clone());
    let shape = [b, c];
    VjpCheck::new(format!("cross_entropy {name} [{b}, {c}] {labels:?}"))
        .input_data(&shape, x)
        .output(&[b])
        .forward_tol(absolute)
        .vjp_tol(gradient)
        .fd_tol(fd)
        .run(
            move |x| x[0].cross_entropy(&labels),
            move |x| {
                slices(&shape, 1)
                    .iter()
                    .zip(&lf)
                    .map(|(idx, &l)| lse_of(&x[0], idx) - x[0][idx[l as usize]])
                    .collect()
            },
            move |x, g| {
                // g_b·(softmax(x_b) - onehot(label_b))
                let s = softmax_ref(&x[0], &shape, 1);
                let mut gx = vec![0.0; x[0].len()];
                for (row, idx) in slices(&shape, 1).iter().enumerate() {
                    for (j, &i) in idx.iter().enumerate() {
                        let hot = if j == lv[row] as usize { 1.0 } else { 0.0 };
                        gx[i] = g[row] * (s[i] - hot);
                    }
                }
                vec![gx]
            },
        )
}

#[test]
fn cross_entropy_per_example() {
    let mut family = Report::default();
    let mut r = rng(seed_of("cross_entropy"));
    let x = sample(&mut r, 6 * 4, Dist::Uniform(-3.0, 3.0));
    family = family.merge(check_cross_entropy(
        "moderate",
        6,
        4,
        x,
        &[0, 3, 1, 1, 2, 3],
    ));
    let x = sample(&mut r, 7, Dist::Uniform(-3.0, 3.0));
    family = family.merge(check_cross_entropy("one example", 1, 7, x, &[6]));
    let x = sample(&mut r, 5, Dist::Uniform(-3.0, 3.0));
    family = family.merge(check_cross_entropy("one class", 5, 1, x, &[0; 5]));
    let x = sample(&mut r, 300 * 3, Dist::Uniform(-3.0, 3.0));
    let labels: Vec<u32> = (0..300).map(|i| (i * 7 % 3) as u32).collect();
    family = family.merge(check_cross_entropy("B = 300", 300, 3, x, &labels));
    family.print("family cross_entropy moderate");

    let mut family = Report::default();
    let x = sample(&mut r, 4 * 5, Dist::Uniform(99.0, 101.0));
    family = family.merge(check_cross_entropy("around +100", 4, 5, x, &[0, 1, 2, 4]));
    let x = sample(&mut r, 4 * 5, Dist::Uniform(-101.0, -99.0));
    family = family.merge(check_cross_entropy("around -100", 4, 5, x, &[4, 3, 2, 0]));
    #[rustfmt::skip]
    let x = vec![
        1000.0, 0.0, -1000.0,
        1000.0, 0.0, -1000.0,
        0.0, 1000.0, 0.0,
        -1000.0, -1000.0, -999.5,
    ];
    // The label on the largest, a small and the smallest logit: losses 0,
    // 1000 and 2000, all finite.
    family = family.merge(check_cross_entropy("mixed 1000", 4, 3, x, &[0, 1, 2, 0]));
    family.print("family cross_entropy large");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_device_usable() {
    let x = tensor(&[0.0, 0.0], &[1, 2]).requires_grad();
    let l = ok(x.cross_entropy(&[1]));
    assert!((read(&l)[0] as f64 - 2f64.ln()).abs() <= 1e-6);
    let g = ok(pullback::vjp(&[&l], &[&tensor(&[1.0], &[1])], &[&x]));
    assert_eq!(read(&g[0]), vec![0.5, -0.5]);
}

#[track_caller]
fn expect_invalid(r: pullback::Result<Tensor>, op: Option<&str>, needle: &str) {
    match r {
        Err(e @ Error::InvalidArgument { .. }) => {
            let Error::InvalidArgument { op: got, reason } = &e else {
                unreachable!()
            };
            if let Some(op) = op {
                assert_eq!(*got, op, "{e}");
            }
            assert!(reason.contains(needle), "{e}: should mention {needle:?}");
        }
        Err(e) => panic!("expected InvalidArgument, got {e:?}"),
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.shape()),
    }
    assert_device_usable();
}

#[test]
fn cross_entropy_errors() {
    let x = ok(dev().zeros(&[3, 4])).requires_grad();
    let ce = Some("cross_entropy");
    expect_invalid(
        x.cross_entropy(&[0, 4, 1]),
        ce,
        "label 4 is out of range for 4 classes",
    );
    expect_invalid(x.cross_entropy(&[0, 1, 99]), ce, "label 99 is out of range");
    expect_invalid(x.cross_entropy(&[0, 1]), ce, "2 labels for a batch of 3");
    expect_invalid(
        x.cross_entropy(&[0, 1, 2, 3]),
        ce,
        "4 labels for a batch of 3",
    );
    let v = ok(dev().zeros(&[4]));
    expect_invalid(v.cross_entropy(&[0]), ce, "logits must be [B, C]");
    let t = ok(dev().zeros(&[2, 3, 4]));
    expect_invalid(t.cross_entropy(&[0, 0]), ce, "logits must be [B, C]");
}

/// An axis out of range is an error for every composite (reported by the
/// `max` it starts with).
#[test]
fn composite_axis_errors() {
    let x = ok(dev().zeros(&[3, 4])).requires_grad();
    expect_invalid(x.softmax(2), None, "axis 2 is out of range");
    expect_invalid(x.log_softmax(5), None, "axis 5 is out of range");
    expect_invalid(x.logsumexp(2, true), None, "axis 2 is out of range");
    expect_invalid(x.logsumexp(2, false), None, "axis 2 is out of range");
}
