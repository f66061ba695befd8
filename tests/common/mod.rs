//! Helpers shared by the integration tests: one device per test binary,
//! deterministic random inputs, f64 reference helpers (broadcasting, sums
//! over broadcast axes) and the VJP check harness [`VjpCheck`].
//!
//! The harness checks one op (or any composition of ops) against an f64
//! reference, in four stages:
//!
//! - (a) the GPU forward against the f64 reference forward;
//! - (b) the analytic f64 reference VJP against a central finite-difference
//!   VJP of the f64 reference forward (this validates the reference itself);
//! - (c) `pullback::vjp` on the GPU against the reference VJP;
//! - (d) `pullback::vjp_batched` with K cotangents against a loop of K single
//!   `vjp` calls, and row by row against the reference, for K in {1, 3, 64}.
//!
//! The reference sees exactly the f32 inputs and cotangents the GPU sees
//! (converted to f64), so every difference is the GPU's rounding.
//!
//! Tolerances are `|got - want| <= atol + rtol * |want|` per element; each
//! test states its tolerances and why. On failure the message names the op,
//! the stage, the worst element's index, the values and the tolerance.

#![allow(dead_code)]

use std::sync::OnceLock;

use pullback::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

// ---------------------------------------------------------------------------
// Device
// ---------------------------------------------------------------------------

/// The device shared by every test of this binary. Panics (never skips)
/// when no adapter is available: the error text says how to get one
/// (install Mesa's lavapipe, or set `PULLBACK_ADAPTER`).
pub fn dev() -> &'static Device {
    static DEV: OnceLock<Device> = OnceLock::new();
    DEV.get_or_init(|| match Device::new() {
        Ok(d) => d,
        Err(e) => panic!("pullback tests need a GPU or software adapter: {e}"),
    })
}

/// A dedicated device, for tests that count dispatches, destroy the device
/// or otherwise must not share it. Panics like [`dev`] without an adapter.
pub fn fresh_device() -> Device {
    Device::new().unwrap_or_else(|e| panic!("pullback tests need a GPU or software adapter: {e}"))
}

/// Unwraps a pullback result, panicking with the error's Display text
/// (which is what a user would read) rather than its Debug form.
#[track_caller]
pub fn ok<T>(r: pullback::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected pullback error: {e}\n({e:?})"))
}

/// Uploads `data` with `shape` to the shared device.
#[track_caller]
pub fn tensor(data: &[f32], shape: &[usize]) -> Tensor {
    ok(dev().tensor(data, shape))
}

/// Reads a tensor back to the host.
#[track_caller]
pub fn read(t: &Tensor) -> Vec<f32> {
    ok(t.to_vec())
}

// ---------------------------------------------------------------------------
// Deterministic random inputs
// ---------------------------------------------------------------------------

/// How input values are drawn.
#[derive(Clone, Copy, Debug)]
pub enum Dist {
    /// Uniform in `[lo, hi]`. With `lo > 0` the values stay away from zero
    /// (log, sqrt, pow with a real exponent, divisors).
    Uniform(f32, f32),
    /// Magnitude uniform in `[lo, hi]` (`lo > 0`), random sign: both signs,
    /// but never within `lo` of zero (kinks of relu/abs, poles of 1/x).
    Signed(f32, f32),
}

/// A stable 64-bit hash (FNV-1a) of a test name, to derive seeds that do not
/// depend on the Rust version or on the order tests run in.
pub fn seed_of(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A seeded generator: the same seed gives the same values on every run.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values from `dist`. Never all zeros: the distributions above cannot
/// produce an all-zero vector in practice, and this asserts it.
pub fn sample(rng: &mut StdRng, n: usize, dist: Dist) -> Vec<f32> {
    let values: Vec<f32> = (0..n)
        .map(|_| match dist {
            Dist::Uniform(lo, hi) => rng.random_range(lo..=hi),
            Dist::Signed(lo, hi) => {
                assert!(lo > 0.0, "Dist::Signed needs lo > 0");
                let m: f32 = rng.random_range(lo..=hi);
                if rng.random_bool(0.5) { m } else { -m }
            }
        })
        .collect();
    assert!(
        n == 0 || values.iter().any(|&v| v != 0.0),
        "test inputs must not be all zeros"
    );
    values
}

/// Cotangent values: magnitudes in [0.25, 1] with random signs, so no
/// cotangent is zero (a zero would hide a wrong derivative at that element).
pub const COTANGENT: Dist = Dist::Signed(0.25, 1.0);

// ---------------------------------------------------------------------------
// Shapes and f64 reference helpers
// ---------------------------------------------------------------------------

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major multi-index of flat index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// NumPy broadcast of two shapes (panics when incompatible: test bug).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(a), pad(b));
    pa.iter()
        .zip(&pb)
        .map(|(&x, &y)| match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!("test bug: {a:?} and {b:?} do not broadcast"),
        })
        .collect()
}

/// The flat index into an operand of shape `input` read by flat output
/// index `o` of the broadcast shape `out` (NumPy rules).
pub fn broadcast_index(o: usize, out: &[usize], input: &[usize]) -> usize {
    let offset = out.len() - input.len();
    let (mut rem, mut flat, mut stride) = (o, 0, 1);
    for d in (0..out.len()).rev() {
        let i = rem % out[d];
        rem /= out[d];
        if d >= offset {
            let size = input[d - offset];
            if size != 1 {
                flat += i * stride;
            }
            stride *= size;
        }
    }
    flat
}

/// Sums values at the broadcast shape `out` back to an operand's shape
/// `input` (the adjoint of broadcasting), in f64.
pub fn sum_to(g: &[f64], out: &[usize], input: &[usize]) -> Vec<f64> {
    let mut r = vec![0.0; numel(input)];
    for (o, &v) in g.iter().enumerate() {
        r[broadcast_index(o, out, input)] += v;
    }
    r
}

/// Elementwise `f(a, b)` with broadcasting, in f64.
pub fn broadcast_map(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let out = broadcast_shape(sa, sb);
    (0..numel(&out))
        .map(|o| {
            f(
                a[broadcast_index(o, &out, sa)],
                b[broadcast_index(o, &out, sb)],
            )
        })
        .collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

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

// ---------------------------------------------------------------------------
// The VJP check harness
// ---------------------------------------------------------------------------

/// Everything a [`VjpCheck::run`] measured, stage by stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// (a) GPU forward vs f64 reference.
    pub forward: ErrStats,
    /// (b) analytic reference VJP vs finite differences (f64 only).
    pub fd: ErrStats,
    /// (c) GPU `vjp` vs reference VJP.
    pub vjp: ErrStats,
    /// (d) GPU `vjp_batched` rows vs reference VJP, all K.
    pub batched: ErrStats,
    /// (d) `vjp_batched` vs a loop of single `vjp` calls, all K.
    pub batched_vs_loop: ErrStats,
}

impl Report {
    /// The worse of two reports, stage by stage (for a family of checks).
    pub fn merge(self, o: Report) -> Report {
        Report {
            forward: self.forward.merge(o.forward),
            fd: self.fd.merge(o.fd),
            vjp: self.vjp.merge(o.vjp),
            batched: self.batched.merge(o.batched),
            batched_vs_loop: self.batched_vs_loop.merge(o.batched_vs_loop),
        }
    }

    /// Prints the report (shown by `cargo test -- --nocapture`, or on failure).
    pub fn print(&self, name: &str) {
        eprintln!(
            "[vjp-check] {name}\n  (a) forward: {}\n  (b) fd: {}\n  (c) vjp: {}\n  \
             (d) batched: {}\n  (d) batched vs loop: {}",
            self.forward, self.fd, self.vjp, self.batched, self.batched_vs_loop
        );
    }
}

/// A check of one op (or composition) against its f64 reference; see the
/// module documentation for the stages. Build with [`VjpCheck::new`], add
/// inputs and the output shape, set tolerances, then [`VjpCheck::run`].
pub struct VjpCheck {
    name: String,
    rng: StdRng,
    inputs: Vec<(Vec<usize>, Vec<f32>)>,
    out_shape: Option<Vec<usize>>,
    forward_tol: Tol,
    vjp_tol: Tol,
    loop_tol: Tol,
    fd_tol: Tol,
    fd_max_per_input: usize,
    batch_sizes: Vec<usize>,
}

impl VjpCheck {
    /// A check named `name` (used in messages and to seed its random values).
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        VjpCheck {
            rng: rng(seed_of(&name)),
            name,
            inputs: Vec::new(),
            out_shape: None,
            forward_tol: Tol::ARITH,
            vjp_tol: Tol::ARITH,
            loop_tol: Tol::new(0.0, 0.0),
            fd_tol: Tol::FD,
            fd_max_per_input: 256,
            batch_sizes: vec![1, 3, 64],
        }
    }

    /// An input of `shape` with values drawn from `dist` (seeded by the name).
    pub fn input(mut self, shape: &[usize], dist: Dist) -> Self {
        let data = sample(&mut self.rng, numel(shape), dist);
        self.inputs.push((shape.to_vec(), data));
        self
    }

    /// An input with given values.
    pub fn input_data(mut self, shape: &[usize], data: Vec<f32>) -> Self {
        assert_eq!(numel(shape), data.len(), "test bug: data for {shape:?}");
        self.inputs.push((shape.to_vec(), data));
        self
    }

    /// The output's shape (required).
    pub fn output(mut self, shape: &[usize]) -> Self {
        self.out_shape = Some(shape.to_vec());
        self
    }

    /// Tolerance of the GPU forward against the reference.
    pub fn forward_tol(mut self, tol: Tol) -> Self {
        self.forward_tol = tol;
        self
    }

    /// Tolerance of GPU gradients (single and batched) against the reference.
    pub fn vjp_tol(mut self, tol: Tol) -> Self {
        self.vjp_tol = tol;
        self
    }

    /// Tolerance of `vjp_batched` rows against single `vjp` calls. Default:
    /// exact (0, 0): a batched adjoint kernel does per row what the single
    /// one does. Ops whose adjoint picks a different reduction strategy for
    /// different K may need a few ULP here; say why where you set it.
    pub fn loop_tol(mut self, tol: Tol) -> Self {
        self.loop_tol = tol;
        self
    }

    /// Tolerance of the reference VJP against finite differences.
    pub fn fd_tol(mut self, tol: Tol) -> Self {
        self.fd_tol = tol;
        self
    }

    /// At most this many finite-difference elements per input (default 256).
    pub fn fd_max_per_input(mut self, n: usize) -> Self {
        self.fd_max_per_input = n;
        self
    }

    /// The K values of stage (d) (default 1, 3, 64).
    pub fn batch_sizes(mut self, ks: &[usize]) -> Self {
        self.batch_sizes = ks.to_vec();
        self
    }

    /// Runs stages (a) to (d); panics with the worst error on failure and
    /// returns the measurements.
    ///
    /// `gpu` computes the output from tracked leaves of the inputs' shapes;
    /// `forward` is the f64 reference of the same function (flat row-major
    /// inputs, flat output); `vjp` is the analytic f64 VJP: given the inputs
    /// and one cotangent of the output's shape, one gradient per input.
    #[track_caller]
    pub fn run(
        mut self,
        gpu: impl Fn(&[Tensor]) -> pullback::Result<Tensor>,
        forward: impl Fn(&[Vec<f64>]) -> Vec<f64>,
        vjp: impl Fn(&[Vec<f64>], &[f64]) -> Vec<Vec<f64>>,
    ) -> Report {
        let name = self.name.clone();
        let out_shape = self
            .out_shape
            .clone()
            .unwrap_or_else(|| panic!("{name}: test bug: no .output(shape)"));
        let n_out = numel(&out_shape);
        let d = dev();
        let mut report = Report::default();

        let xs: Vec<Tensor> = self
            .inputs
            .iter()
            .map(|(shape, data)| ok(d.tensor(data, shape)).requires_grad())
            .collect();
        let x64: Vec<Vec<f64>> = self.inputs.iter().map(|(_, v)| to_f64(v)).collect();
        let x_refs: Vec<&Tensor> = xs.iter().collect();

        // (a) forward.
        let y = gpu(&xs).unwrap_or_else(|e| panic!("{name}: GPU forward failed: {e}"));
        assert_eq!(y.shape(), out_shape.as_slice(), "{name}: output shape");
        let want_y = forward(&x64);
        assert_eq!(want_y.len(), n_out, "{name}: test bug: reference length");
        report.forward = assert_close_f32(
            &format!("{name}: (a) forward"),
            &read(&y),
            &want_y,
            &out_shape,
            self.forward_tol,
        );

        // (b) reference VJP vs finite differences, with one cotangent.
        let v = sample(&mut self.rng, n_out, COTANGENT);
        let v64 = to_f64(&v);
        let want_g = vjp(&x64, &v64);
        assert_eq!(want_g.len(), xs.len(), "{name}: test bug: reference vjp");
        let fd = finite_difference_vjp(&forward, &x64, &v64, self.fd_max_per_input);
        for (i, (indices, fd_values)) in fd.iter().enumerate() {
            assert_eq!(want_g[i].len(), x64[i].len(), "{name}: test bug: grad {i}");
            let analytic: Vec<f64> = indices.iter().map(|&j| want_g[i][j]).collect();
            let s = assert_close(
                &format!(
                    "{name}: (b) reference VJP of input {i} vs finite differences \
                     (index = position among the {} checked elements)",
                    indices.len()
                ),
                &analytic,
                fd_values,
                &[indices.len()],
                self.fd_tol,
            );
            report.fd = report.fd.merge(s);
        }

        // (c) GPU vjp vs reference.
        let vt = ok(d.tensor(&v, &out_shape));
        let grads = pullback::vjp(&[&y], &[&vt], &x_refs)
            .unwrap_or_else(|e| panic!("{name}: vjp failed: {e}"));
        assert_eq!(grads.len(), xs.len(), "{name}: vjp result count");
        for (i, g) in grads.iter().enumerate() {
            let shape = &self.inputs[i].0;
            assert_eq!(g.shape(), shape.as_slice(), "{name}: vjp grad {i} shape");
            let s = assert_close_f32(
                &format!("{name}: (c) vjp, gradient of input {i}"),
                &read(g),
                &want_g[i],
                shape,
                self.vjp_tol,
            );
            report.vjp = report.vjp.merge(s);
        }

        // (d) vjp_batched for each K vs a loop of single vjp calls and vs the
        // reference, row by row. The rows of smaller K are the first rows of
        // the largest K's cotangents, so one loop of single calls serves all.
        let k_max = self.batch_sizes.iter().copied().max().unwrap_or(0);
        let rows: Vec<Vec<f32>> = (0..k_max)
            .map(|_| sample(&mut self.rng, n_out, COTANGENT))
            .collect();
        let singles: Vec<Vec<Vec<f32>>> = rows
            .iter()
            .map(|row| {
                let vt = ok(d.tensor(row, &out_shape));
                let gs = pullback::vjp(&[&y], &[&vt], &x_refs)
                    .unwrap_or_else(|e| panic!("{name}: vjp failed: {e}"));
                gs.iter().map(read).collect()
            })
            .collect();
        let want_rows: Vec<Vec<Vec<f64>>> = rows.iter().map(|r| vjp(&x64, &to_f64(r))).collect();
        for &k in &self.batch_sizes {
            let stacked: Vec<f32> = rows[..k].concat();
            let batch_shape = [&[k][..], &out_shape].concat();
            let vt = ok(d.tensor(&stacked, &batch_shape));
            let grads = pullback::vjp_batched(&[&y], &[&vt], &x_refs)
                .unwrap_or_else(|e| panic!("{name}: vjp_batched (K={k}) failed: {e}"));
            assert_eq!(grads.len(), xs.len(), "{name}: vjp_batched result count");
            for (i, g) in grads.iter().enumerate() {
                let shape = &self.inputs[i].0;
                let m = numel(shape);
                let want_shape = [&[k][..], shape].concat();
                assert_eq!(g.shape(), want_shape.as_slice(), "{name}: K={k} grad {i}");
                let got = read(g);
                for (r, single) in singles.iter().enumerate().take(k) {
                    let row = &got[r * m..(r + 1) * m];
                    let s = assert_close_f32(
                        &format!(
                            "{name}: (d) vjp_batched K={k} row {r} of input {i} vs single vjp"
                        ),
                        row,
                        &to_f64(&single[i]),
                        shape,
                        self.loop_tol,
                    );
                    report.batched_vs_loop = report.batched_vs_loop.merge(s);
                    let s = assert_close_f32(
                        &format!("{name}: (d) vjp_batched K={k} row {r} of input {i}"),
                        row,
                        &want_rows[r][i],
                        shape,
                        self.vjp_tol,
                    );
                    report.batched = report.batched.merge(s);
                }
            }
        }
        report.print(&name);
        report
    }
}
