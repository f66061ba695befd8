//! Helpers shared by the integration tests: one device per test binary,
//! helpers for error tests, deterministic random inputs, and f64 reference
//! helpers (broadcasting, sums over broadcast axes, reductions).
//!
//! The tolerances, comparisons and finite differences live in
//! `compare.rs`, the VJP check harness [`VjpCheck`] in `harness.rs` (its
//! forward-mode stage in `tangents.rs`); all are re-exported here, so
//! `use common::*` brings in everything.

#![allow(dead_code)]

mod compare;
mod harness;
mod tangents;

// Not every test binary uses both.
#[allow(unused_imports)]
pub use compare::*;
#[allow(unused_imports)]
pub use harness::*;
#[allow(unused_imports)]
pub use tangents::*;

use std::sync::OnceLock;

use pullback::{Device, Error, Tensor};
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
    let v = ok(t.to_vec());
    assert_eq!(
        v.len(),
        t.numel(),
        "read back {} values of {:?}",
        v.len(),
        t.shape()
    );
    v
}

/// A small computation with a known result, forward and backward, to show
/// that `dev` still works after an error.
#[track_caller]
pub fn assert_usable(dev: &Device) {
    let x = ok(dev.tensor(&[1.0, -2.0, 3.0], &[3])).requires_grad();
    let y = ok(ok(x.mul(&x)).add_scalar(1.0));
    assert_eq!(ok(y.to_vec()), vec![2.0, 5.0, 10.0]);
    let v = ok(dev.tensor(&[1.0, 1.0, 0.5], &[3]));
    let g = ok(pullback::vjp(&[&y], &[&v], &[&x]));
    assert_eq!(ok(g[0].to_vec()), vec![2.0, -4.0, 3.0]);
}

/// Asserts that `r` failed and its Display text contains every one of
/// `words` (case-insensitive); returns the error for matching its variant.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: pullback::Result<T>, words: &[&str]) -> Error {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
    };
    let text = e.to_string().to_lowercase();
    for w in words {
        assert!(
            text.contains(&w.to_lowercase()),
            "the message of {e:?} should mention {w:?}: {e}"
        );
    }
    e
}

/// Asserts that `r` failed with `Error::InvalidArgument` from `op`, whose
/// reason contains every one of `words` (case-insensitive): the variant,
/// the op and why, not only a name somewhere in the text.
#[track_caller]
pub fn expect_invalid<T: std::fmt::Debug>(r: pullback::Result<T>, op: &str, words: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op: got, reason }) => {
            assert_eq!(got, op, "refused by {got}, not {op}: {reason}");
            let lower = reason.to_lowercase();
            for w in words {
                assert!(
                    lower.contains(&w.to_lowercase()),
                    "{op}'s reason should mention {w:?}: {reason}"
                );
            }
        }
        other => panic!("expected InvalidArgument from {op}, got {other:?}"),
    }
}

/// Asserts that `r` failed with `Error::ShapeMismatch` from `op` with
/// these operand shapes.
#[track_caller]
pub fn expect_shape_mismatch<T: std::fmt::Debug>(
    r: pullback::Result<T>,
    op: &str,
    lhs: &[usize],
    rhs: &[usize],
) {
    match r {
        Err(Error::ShapeMismatch {
            op: got,
            lhs: l,
            rhs: r,
        }) => {
            assert_eq!((got, &l[..], &r[..]), (op, lhs, rhs));
        }
        other => panic!("expected ShapeMismatch from {op}, got {other:?}"),
    }
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
    /// Uniform in `[lo, hi]` but never within `gap` of one of `kinks` (the
    /// bounds of clamp: both sides and between, away from each bound).
    Away(f32, f32, &'static [f32], f32),
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
            Dist::Away(lo, hi, kinks, gap) => loop {
                let v: f32 = rng.random_range(lo..=hi);
                if kinks.iter().all(|k| (v - k).abs() >= gap) {
                    break v;
                }
            },
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

/// Strides of a row-major shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// The reduced axes of `axes` as a mask.
pub fn mask(rank: usize, axes: &[usize]) -> Vec<bool> {
    (0..rank).map(|d| axes.contains(&d)).collect()
}

/// `shape` with the masked axes set to 1 (keepdim) or removed.
pub fn reduced_shape(shape: &[usize], mask: &[bool], keepdim: bool) -> Vec<usize> {
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
pub fn reduce_map(shape: &[usize], mask: &[bool]) -> Vec<usize> {
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
