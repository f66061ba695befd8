//! Stage (e) of the VJP harness: forward mode, for every op a [`VjpCheck`]
//! covers, against the same f64 reference.
//!
//! - (e1) `pullback::jvp` against the reference J·t, computed exactly from
//!   the analytic f64 VJP (row o of J is the VJP of the o-th unit
//!   cotangent), at up to 256 output elements;
//! - (e2) `pullback::jvp_batched` with K tangents against a loop of K
//!   single `jvp` calls (exact by default: a tangent kernel does per row
//!   what the single one does);
//! - (e3) the dot-product test against the GPU's own VJP:
//!   ⟨u, J·t⟩ = ⟨Jᵀ·u, t⟩.

use pullback::Tensor;
use rand::rngs::StdRng;

use super::*;

/// The unit roundoff of f32, 2⁻²⁴.
const U32: f64 = 5.960464477539063e-8;

/// An analytic f64 reference VJP: inputs and a cotangent → per-input gradient.
pub type RefVjp<'a> = &'a dyn Fn(&[Vec<f64>], &[f64]) -> Vec<Vec<f64>>;

/// What stage (e) measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct TangentReport {
    /// (e1) GPU `jvp` vs the reference J·t.
    pub jvp: ErrStats,
    /// (e2) `jvp_batched` rows vs single `jvp` calls, all K.
    pub batched_vs_loop: ErrStats,
    /// (e3) ⟨u, J·t⟩ vs ⟨Jᵀ·u, t⟩: the worst |difference| / allowed.
    pub dot_ratio: f64,
}

/// The shapes and values a stage (e) check works on.
pub struct TangentCase<'a> {
    pub name: &'a str,
    pub y: &'a Tensor,
    pub xs: &'a [Tensor],
    pub shapes: Vec<Vec<usize>>,
    pub x64: &'a [Vec<f64>],
    pub out_shape: &'a [usize],
}

/// Runs (e1) to (e3); `vjp` is the analytic f64 reference VJP, `tol` the
/// tolerance of GPU derivatives against it, `loop_tol` that of batched rows
/// against single calls.
#[track_caller]
pub fn check_tangents(
    case: &TangentCase,
    rng: &mut StdRng,
    vjp: RefVjp,
    tol: Tol,
    loop_tol: Tol,
    batch_sizes: &[usize],
) -> TangentReport {
    let (name, d) = (case.name, dev());
    let n_out = numel(case.out_shape);
    let x_refs: Vec<&Tensor> = case.xs.iter().collect();
    let mut report = TangentReport::default();
    let tangent = |rng: &mut StdRng| -> Vec<Vec<f32>> {
        (case.shapes.iter())
            .map(|s| sample(rng, numel(s), COTANGENT))
            .collect()
    };
    let upload = |t: &[Vec<f32>]| -> Vec<Tensor> {
        (t.iter().zip(&case.shapes))
            .map(|(v, s)| ok(d.tensor(v, s)))
            .collect()
    };

    // (e1) jvp against the reference, at up to 256 output elements.
    let t = tangent(rng);
    let t_tensors = upload(&t);
    let t_refs: Vec<&Tensor> = t_tensors.iter().collect();
    let jt = pullback::jvp(&[case.y], &x_refs, &t_refs)
        .unwrap_or_else(|e| panic!("{name}: jvp failed: {e}"));
    assert_eq!(jt.len(), 1, "{name}: jvp result count");
    assert_eq!(jt[0].shape(), case.out_shape, "{name}: jvp shape");
    let jt_values = read(&jt[0]);
    let checked: Vec<usize> = if n_out <= 256 {
        (0..n_out).collect()
    } else {
        let mut idx: Vec<usize> = (0..256).map(|m| m * (n_out - 1) / 255).collect();
        idx.dedup();
        idx
    };
    // Per checked output o: (J·t)_o, Σⱼ|J_oj·t_j| and the count of terms.
    let rows_of_j: Vec<(f64, f64, usize)> = (checked.iter())
        .map(|&o| {
            let mut unit = vec![0.0; n_out];
            unit[o] = 1.0;
            let row = vjp(case.x64, &unit);
            let terms = (row.iter().zip(&t))
                .flat_map(|(r, ti)| r.iter().zip(ti).map(|(a, &b)| a * b as f64));
            terms.fold((0.0, 0.0, 0), |(sum, mag, n), x| {
                (sum + x, mag + x.abs(), n + usize::from(x != 0.0))
            })
        })
        .collect();
    // A linear combination of n terms in f32: each term within the op's
    // derivative tolerance (at least 8 ULP), and the sum's rounding at most
    // n ULP of the terms' magnitudes (GEMM contractions and reductions add
    // what `vjp` broadcasts or copies, so their relative error is read
    // against the terms, not the result).
    let rtol = tol.rtol.max(8.0 * U32);
    let allowed = |mag: f64, n: usize| tol.atol + (rtol + n as f64 * U32) * mag;
    let mut worst = ErrStats::default();
    for (c, (&o, &(want, mag, n))) in checked.iter().zip(&rows_of_j).enumerate() {
        let err = (jt_values[o] as f64 - want).abs();
        let ratio = err / allowed(mag, n).max(1e-300);
        assert!(
            err <= allowed(mag, n),
            "{name}: (e1) jvp vs reference J·t at output {o}: got {:e}, want {want:e}, \
             |err| {err:e} > {:e} (terms' magnitude {mag:e}, {n} terms)",
            jt_values[o],
            allowed(mag, n)
        );
        if ratio > worst.worst_ratio {
            worst = ErrStats {
                max_abs: worst.max_abs.max(err),
                max_rel: worst.max_rel,
                worst_ratio: ratio,
                worst_index: c,
            };
        }
    }
    report.jvp = worst;

    // (e2) jvp_batched vs single jvp calls. A rank-6 input's tangents
    // would be rank 7, which no tensor can have: (e2) does not apply there.
    let rank6 = case.shapes.iter().any(|s| s.len() >= 6);
    if rank6 {
        eprintln!("{name}: (e2) not run: a rank-6 input's [K, …] tangents would have rank 7");
    }
    let batch_sizes = if rank6 { &[][..] } else { batch_sizes };
    let k_max = batch_sizes.iter().copied().max().unwrap_or(0);
    let rows: Vec<Vec<Vec<f32>>> = (0..k_max).map(|_| tangent(rng)).collect();
    let singles: Vec<Vec<f32>> = (rows.iter())
        .map(|r| {
            let ts = upload(r);
            let refs: Vec<&Tensor> = ts.iter().collect();
            let jt = pullback::jvp(&[case.y], &x_refs, &refs)
                .unwrap_or_else(|e| panic!("{name}: jvp failed: {e}"));
            read(&jt[0])
        })
        .collect();
    for &k in batch_sizes {
        let stacked: Vec<Tensor> = (0..case.shapes.len())
            .map(|i| {
                let data: Vec<f32> = rows[..k].iter().flat_map(|r| r[i].clone()).collect();
                ok(d.tensor(&data, &[&[k][..], &case.shapes[i]].concat()))
            })
            .collect();
        let refs: Vec<&Tensor> = stacked.iter().collect();
        let jt = pullback::jvp_batched(&[case.y], &x_refs, &refs)
            .unwrap_or_else(|e| panic!("{name}: jvp_batched (K={k}) failed: {e}"));
        let want_shape = [&[k][..], case.out_shape].concat();
        assert_eq!(jt[0].shape(), want_shape.as_slice(), "{name}: K={k} shape");
        let got = read(&jt[0]);
        for (r, single) in singles.iter().enumerate().take(k) {
            let s = assert_close_f32(
                &format!("{name}: (e2) jvp_batched K={k} row {r} vs single jvp"),
                &got[r * n_out..(r + 1) * n_out],
                &to_f64(single),
                case.out_shape,
                loop_tol,
            );
            report.batched_vs_loop = report.batched_vs_loop.merge(s);
        }
    }

    // (e3) ⟨u, J·t⟩ = ⟨Jᵀ·u, t⟩, both sides from the GPU, summed in f64:
    // each GPU value is within `tol` of its exact value, so the two sums
    // may differ by `tol` of the terms' magnitudes.
    let u = sample(rng, n_out, COTANGENT);
    let ut = ok(d.tensor(&u, case.out_shape));
    let jtu = pullback::vjp(&[case.y], &[&ut], &x_refs)
        .unwrap_or_else(|e| panic!("{name}: vjp failed: {e}"));
    let (mut left, mut left_mag) = (0.0, 0.0);
    for (&a, &b) in jt_values.iter().zip(&u) {
        left += a as f64 * b as f64;
        left_mag += (a as f64 * b as f64).abs();
    }
    let (mut right, mut right_mag) = (0.0, 0.0);
    for (g, ti) in jtu.iter().zip(&t) {
        for (&a, &b) in read(g).iter().zip(ti) {
            right += a as f64 * b as f64;
            right_mag += (a as f64 * b as f64).abs();
        }
    }
    // Both sums' rounding is bounded by S = Σ_o Σ_j |u_o·J_oj·t_j|, read
    // off the checked rows (scaled up to all outputs where some were not).
    let checked_s: f64 = (checked.iter().zip(&rows_of_j))
        .map(|(&o, &(_, mag, _))| (u[o] as f64).abs() * mag)
        .sum();
    let s_all = checked_s * n_out as f64 / checked.len().max(1) as f64;
    let terms = rows_of_j.iter().map(|r| r.2).max().unwrap_or(0);
    let allowed = 2.0 * (rtol + terms as f64 * U32) * s_all
        + 2.0 * U32 * (left_mag + right_mag)
        + tol.atol * n_out as f64
        + 1e-30;
    report.dot_ratio = (left - right).abs() / allowed;
    assert!(
        report.dot_ratio <= 1.0,
        "{name}: (e3) <u, J·t> = {left:e} but <J^T·u, t> = {right:e} (allowed difference {allowed:e})"
    );
    report
}
