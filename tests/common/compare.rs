//! Tolerances and the comparisons that report the worst element, and the
//! central finite-difference VJP that stage (b) of the harness uses.
//!
//! Tolerances are `|got - want| <= atol + rtol * |want|` per element; each
//! test states its tolerances and why. On failure the message names the op,
//! the stage, the worst element's index, the values and the tolerance.

use super::{numel, to_f64, unravel};

// ---------------------------------------------------------------------------
// Tolerances and comparison
// ---------------------------------------------------------------------------

/// Per-element tolerance: `|got - want| <= atol + rtol * |want|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

impl Tol {
    pub const fn new(rtol: f64, atol: f64) -> Tol {
        Tol { rtol, atol }
    }

    /// Correctly rounded f32 arithmetic (+, -, *, /, sqrt per IEEE 754;
    /// Vulkan allows 2.5 ULP for division): each GPU value is within a few
    /// roundings of the exact result of its f32 inputs, i.e. a relative
    /// error of a few times 2^-24 ≈ 6e-8. 1e-6 leaves a margin of ~16 ULP for
    /// the up to three roundings of a product chain; atol only guards
    /// results that are exactly 0.
    pub const ARITH: Tol = Tol::new(1e-6, 1e-30);

    /// The finite-difference check (b), all in f64: a fourth-order central
    /// difference with step 1e-4·max(1,|x|) has truncation error ~h⁴·f⁽⁵⁾
    /// (~1e-16) and rounding error ~1e-16·|f|/h (~1e-12·|f|), so 1e-7 is
    /// still orders of magnitude above the method's error and far below
    /// any real mistake in a derivative.
    pub const FD: Tol = Tol::new(1e-7, 1e-9);
}

/// What a comparison measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrStats {
    /// Largest |got - want|.
    pub max_abs: f64,
    /// Largest |got - want| / |want| over elements with |want| >= 1e-3
    /// (below that, only the absolute error is meaningful).
    pub max_rel: f64,
    /// Largest error / allowed error (<= 1 passes).
    pub worst_ratio: f64,
    /// Flat index of the element with the largest ratio.
    pub worst_index: usize,
}

impl ErrStats {
    pub fn merge(self, other: ErrStats) -> ErrStats {
        let worse = if other.worst_ratio > self.worst_ratio {
            other
        } else {
            self
        };
        ErrStats {
            max_abs: self.max_abs.max(other.max_abs),
            max_rel: self.max_rel.max(other.max_rel),
            ..worse
        }
    }
}

impl std::fmt::Display for ErrStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max abs err {:.3e}, max rel err {:.3e}, worst at index {} ({:.3} of tolerance)",
            self.max_abs, self.max_rel, self.worst_index, self.worst_ratio
        )
    }
}

/// |got - want| / (atol + rtol·|want|): at most 1 passes. Equal values
/// (infinities, or NaN against NaN) give 0; NaN or an infinity against
/// anything else gives infinity.
pub fn error_ratio(g: f64, w: f64, tol: Tol) -> f64 {
    if g == w || (g.is_nan() && w.is_nan()) {
        0.0
    } else if g.is_nan() || w.is_nan() || g.is_infinite() || w.is_infinite() {
        f64::INFINITY
    } else {
        (g - w).abs() / (tol.atol + tol.rtol * w.abs())
    }
}

/// Measures `got` against `want` without asserting.
pub fn measure(got: &[f64], want: &[f64], tol: Tol) -> ErrStats {
    let mut s = ErrStats::default();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let ratio = error_ratio(g, w, tol);
        if err.is_finite() {
            s.max_abs = s.max_abs.max(err);
            if w.abs() >= 1e-3 {
                s.max_rel = s.max_rel.max(err / w.abs());
            }
        }
        if ratio > s.worst_ratio {
            s.worst_ratio = ratio;
            s.worst_index = i;
        }
    }
    s
}

/// Asserts `|got - want| <= atol + rtol·|want|` everywhere; on failure the
/// message has the worst element's index (flat and in `shape`), its values,
/// the tolerance and how many elements are out of tolerance.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], shape: &[usize], tol: Tol) -> ErrStats {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: got {} values, want {} (shape {shape:?})",
        got.len(),
        want.len()
    );
    let s = measure(got, want, tol);
    let pass = s.worst_ratio <= 1.0;
    if !pass {
        let i = s.worst_index;
        let (g, w) = (got[i], want[i]);
        let failing = got
            .iter()
            .zip(want)
            .filter(|&(&g, &w)| error_ratio(g, w, tol) > 1.0)
            .count();
        let index = if numel(shape) == got.len() {
            format!("{:?}", unravel(i, shape))
        } else {
            "?".into()
        };
        panic!(
            "{what}: worst error at flat index {i} (index {index} of shape {shape:?}): \
             got {g:e}, want {w:e}, |err| = {:.3e} > atol {:e} + rtol {:e}·|want| = {:.3e}; \
             {failing} of {} elements out of tolerance; {s}",
            (g - w).abs(),
            tol.atol,
            tol.rtol,
            tol.atol + tol.rtol * w.abs(),
            got.len(),
        );
    }
    s
}

/// [`assert_close`] for f32 GPU values.
#[track_caller]
pub fn assert_close_f32(
    what: &str,
    got: &[f32],
    want: &[f64],
    shape: &[usize],
    tol: Tol,
) -> ErrStats {
    assert_close(what, &to_f64(got), want, shape, tol)
}

// ---------------------------------------------------------------------------
// Finite differences
// ---------------------------------------------------------------------------

/// Central finite-difference VJP of `forward` at `x` with cotangent `v`:
/// for each input i and element j (up to `max_per_input` evenly spread
/// elements, the first and last always included), `d(v·f)/dx_ij` by the
/// fourth-order stencil (-f(x+2h) + 8f(x+h) - 8f(x-h) + f(x-2h)) / 12h with
/// h = 1e-4·max(1, |x_ij|). The differences f(x+h) - f(x-h) are taken per
/// output element before the dot product with v, so outputs that do not
/// depend on x_ij contribute exactly 0 and do not add rounding noise.
/// Inputs must stay 4h away from kinks and singularities.
///
/// Returns, per input, the checked flat indices and their FD values.
pub fn finite_difference_vjp(
    forward: &dyn Fn(&[Vec<f64>]) -> Vec<f64>,
    x: &[Vec<f64>],
    v: &[f64],
    max_per_input: usize,
) -> Vec<(Vec<usize>, Vec<f64>)> {
    let mut result = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let n = x[i].len();
        let indices: Vec<usize> = if n <= max_per_input {
            (0..n).collect()
        } else {
            let mut idx: Vec<usize> = (0..max_per_input)
                .map(|m| m * (n - 1) / (max_per_input - 1))
                .collect();
            idx.dedup();
            idx
        };
        let mut values = Vec::with_capacity(indices.len());
        let mut xs = x.to_vec();
        for &j in &indices {
            let x0 = x[i][j];
            let h = 1e-4 * x0.abs().max(1.0);
            let mut at = |dx: f64| {
                xs[i][j] = x0 + dx;
                let y = forward(&xs);
                xs[i][j] = x0;
                y
            };
            let (p2, p1, m1, m2) = (at(2.0 * h), at(h), at(-h), at(-2.0 * h));
            let d: f64 = (0..v.len())
                .map(|o| {
                    let diff = -(p2[o] - m2[o]) + 8.0 * (p1[o] - m1[o]);
                    v[o] * diff
                })
                .sum();
            values.push(d / (12.0 * h));
        }
        result.push((indices, values));
    }
    result
}
