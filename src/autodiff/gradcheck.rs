//! Gradient checking ([`gradcheck`]): pullback's VJPs against central
//! finite differences of the function itself.

use crate::autodiff::jacobian::jacobian;
use crate::autodiff::vjp::{vjp, vjp_batched};
use crate::error::Result;
use crate::tape::tensor::Tensor;

/// How [`gradcheck`] checks (its docs say how to choose them).
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step, relative to `max(1, |x|∞)` over all inputs.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Random projections `⟨v, J·u⟩` against `⟨Jᵀv, u⟩`.
    pub projections: usize,
    /// The full Jacobian is compared, column by column, when the inputs
    /// have at most this many elements in all (and so does the output).
    pub full_jacobian_max: usize,
    /// Cotangent rows of the batched-VJP-against-loop check (0: skip it).
    pub batch: usize,
    /// Seed of the random directions and cotangents.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 3e-3,
            atol: 1e-5,
            rtol: 1e-2,
            projections: 4,
            full_jacobian_max: 32,
            batch: 3,
            seed: 0x5eed,
        }
    }
}

/// One comparison of an analytic value with its reference.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckEntry {
    /// What was compared, e.g. `projection 2`, `jacobian of input 0: [1, 3]`,
    /// `batched row 1 of input 0, element 4`.
    pub what: String,
    /// pullback's value (from the VJP).
    pub analytic: f64,
    /// The reference: the finite difference, or the single VJP.
    pub numeric: f64,
    /// The tolerance this comparison was held to.
    pub tolerance: f64,
}

impl GradcheckEntry {
    /// |analytic − numeric| / tolerance: above 1 fails.
    pub fn ratio(&self) -> f64 {
        let diff = (self.analytic - self.numeric).abs();
        if diff.is_nan() || (self.analytic.is_nan() != self.numeric.is_nan()) {
            return f64::INFINITY;
        }
        diff / self.tolerance
    }
}

/// What [`gradcheck`] found: how many comparisons it made and the worst one.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckReport {
    /// Comparisons made.
    pub checked: usize,
    /// Comparisons past their tolerance.
    pub failed: usize,
    /// The comparison with the largest error relative to its tolerance.
    pub worst: Option<GradcheckEntry>,
}

impl GradcheckReport {
    /// True when every comparison was within its tolerance.
    pub fn is_ok(&self) -> bool {
        self.failed == 0
    }

    fn record(&mut self, entry: GradcheckEntry) {
        self.checked += 1;
        let ratio = entry.ratio();
        if ratio > 1.0 {
            self.failed += 1;
        }
        if self.worst.as_ref().is_none_or(|w| ratio > w.ratio()) {
            self.worst = Some(entry);
        }
    }
}

impl std::fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.is_ok() { "ok" } else { "FAILED" };
        write!(
            f,
            "gradcheck {verdict}: {} of {} comparisons failed",
            self.failed, self.checked
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                "; worst: {}: analytic {:e}, numeric {:e}, |difference| {:e} against tolerance {:e}",
                w.what,
                w.analytic,
                w.numeric,
                (w.analytic - w.numeric).abs(),
                w.tolerance
            )?;
        }
        Ok(())
    }
}

/// A small seeded generator (splitmix64): directions and cotangents in
/// [-1, 1], the same for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn dot(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x * y as f64).sum()
}

/// Σ|a·b|: the size of the terms a dot product adds (for its rounding).
fn abs_dot(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x * y as f64).abs()).sum()
}

/// Checks the gradients of the graph `f` builds from `inputs`: pullback's
/// VJPs (f32, on the device) against central finite differences of `f`
/// itself (evaluated on the device in f32, differenced and compared in f64
/// on the host), so it checks any graph `f` builds. It compares random projections `⟨v, J·u⟩` (finite differences of f)
/// against `⟨Jᵀv, u⟩` (pullback's VJP), the full Jacobian column by column
/// for small inputs, and `vjp_batched` against a loop of single `vjp`s.
/// `f` receives tracked copies of the inputs, and is called again on
/// perturbed copies for the differences. It must build the same function
/// each time. An error from `f` or from a VJP is returned as is; a
/// mismatch is in the report, not an error.
///
/// # Choosing the step and the tolerance in f32
///
/// A central difference `(f(x + εu) − f(x − εu)) / 2ε` has two errors:
/// truncation, about `ε²·|f'''|/6`, and rounding, about `u_f32·|f| / ε`
/// (`u_f32 = 2⁻²⁴ ≈ 6e-8`; the function's own f32 evaluation adds a few
/// ULP more). Their sum is smallest near `ε ≈ (3·u_f32)^(1/3) ≈ 5e-3`
/// times the scale of x, where both are about `1e-5` relative: the default
/// `eps` is 3e-3 times `max(1, |x|∞)` over all inputs. The tolerance of a comparison is
/// `atol + rtol·max(|analytic|, |numeric|) + noise`, where `noise` is the
/// rounding error of that difference estimated from the values it
/// subtracted (`16·u_f32·Σ|v·f| / 2ε`), so large or badly conditioned
/// sums are not failed for rounding alone. Defaults: `rtol = 1e-2`,
/// `atol = 1e-5`. Tighten `rtol` for smooth, well-scaled functions. Loosen
/// `eps` where f has large third derivatives. Inputs near a kink (relu, abs, max
/// at ties) fail by design: the two sides of the difference see different
/// slopes.
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// use pullback::{gradcheck, Device, GradcheckOptions};
/// let dev = Device::new()?;
/// let x = dev.tensor(&[0.3, -1.2, 2.0], &[3])?;
/// let w = dev.tensor(&[0.5, 0.25, -1.0], &[3])?;
/// // f(x, w) = sum(sin(x) · w + x²)
/// let report = gradcheck(
///     |t| t[0].sin()?.mul(&t[1])?.add(&t[0].square()?)?.sum_all(),
///     &[&x, &w],
///     GradcheckOptions::default(),
/// )?;
/// assert!(report.is_ok(), "{report}");
/// # Ok(())
/// # }
/// ```
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[&Tensor],
    options: GradcheckOptions,
) -> Result<GradcheckReport> {
    let Some(first) = inputs.first() else {
        return Err(crate::error::invalid(
            "gradcheck",
            "it needs at least one input".to_string(),
        ));
    };
    let dev = first.device().clone();
    for x in inputs {
        dev.check_same(x.device())?;
    }
    let values: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| Ok(x.to_vec()?.iter().map(|&v| v as f64).collect()))
        .collect::<Result<_>>()?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|x| x.shape().to_vec()).collect();
    // One step for every input: eps times the largest input's scale.
    let scale = values.iter().flatten().fold(1.0f64, |m, x| m.max(x.abs()));
    let h = options.eps * scale;
    // f at given input values: tracked leaves, so the same graph as the VJP's.
    let leaves = |vals: &[Vec<f64>]| -> Result<Vec<Tensor>> {
        vals.iter()
            .zip(&shapes)
            .map(|(v, s)| Ok(dev.tensor(&f32s(v), s)?.requires_grad()))
            .collect()
    };
    let xs = leaves(&values)?;
    let y = f(&xs)?;
    let refs: Vec<&Tensor> = xs.iter().collect();
    let mut rng = Rng(options.seed);
    let mut report = GradcheckReport {
        checked: 0,
        failed: 0,
        worst: None,
    };
    // f at x ± h·u (u: a direction per input), both read back.
    let both_sides = |u: &[Vec<f64>]| -> Result<(Vec<f32>, Vec<f32>)> {
        let shifted = |sign: f64| -> Result<Vec<f32>> {
            let vals: Vec<Vec<f64>> = values
                .iter()
                .zip(u)
                .map(|(x, d)| x.iter().zip(d).map(|(a, b)| a + sign * h * b).collect())
                .collect();
            f(&leaves(&vals)?)?.to_vec()
        };
        Ok((shifted(1.0)?, shifted(-1.0)?))
    };
    // The central difference of ⟨v, f⟩ and its rounding noise (16 ULP of
    // the terms each side added, over 2h).
    let difference = |v: &[f64], plus: &[f32], minus: &[f32]| -> (f64, f64) {
        let numeric = (dot(v, plus) - dot(v, minus)) / (2.0 * h);
        let terms = abs_dot(v, plus) + abs_dot(v, minus);
        (
            numeric,
            16.0 * f32::EPSILON as f64 / 2.0 * terms / (2.0 * h),
        )
    };
    let tolerance =
        |a: f64, n: f64, noise: f64| options.atol + options.rtol * a.abs().max(n.abs()) + noise;

    // Random projections: ⟨v, J·u⟩ by differences against ⟨Jᵀv, u⟩.
    for p in 0..options.projections {
        let v = rng.vec(y.numel());
        let u: Vec<Vec<f64>> = values.iter().map(|x| rng.vec(x.len())).collect();
        let g = vjp(&[&y], &[&dev.tensor(&f32s(&v), y.shape())?], &refs)?;
        let mut analytic = 0.0;
        for (gi, ui) in g.iter().zip(&u) {
            analytic += dot(ui, &gi.to_vec()?);
        }
        let (plus, minus) = both_sides(&u)?;
        let (numeric, noise) = difference(&v, &plus, &minus);
        report.record(GradcheckEntry {
            what: format!("projection {p}: <v, J·u> against <J^T v, u>"),
            analytic,
            numeric,
            tolerance: tolerance(analytic, numeric, noise),
        });
    }

    // The full Jacobian, one input element (two evaluations of f) at a time.
    let total: usize = values.iter().map(Vec::len).sum();
    if total <= options.full_jacobian_max && y.numel() <= options.full_jacobian_max {
        for (i, x) in xs.iter().enumerate() {
            let jac = jacobian(&y, x)?.to_vec()?; // [y.numel, x.numel]
            let cols = values[i].len();
            for j in 0..cols {
                let mut u: Vec<Vec<f64>> = values.iter().map(|v| vec![0.0; v.len()]).collect();
                u[i][j] = 1.0;
                let (plus, minus) = both_sides(&u)?;
                for r in 0..y.numel() {
                    let mut v = vec![0.0; y.numel()];
                    v[r] = 1.0;
                    let (numeric, noise) = difference(&v, &plus, &minus);
                    let analytic = jac[r * cols + j] as f64;
                    report.record(GradcheckEntry {
                        what: format!("jacobian of input {i}: [output {r}, element {j}]"),
                        analytic,
                        numeric,
                        tolerance: tolerance(analytic, numeric, noise),
                    });
                }
            }
        }
    }

    // Batched VJP against the loop of single VJPs (both f32 on the device:
    // the same math, so a tight tolerance).
    if options.batch > 0 {
        let k = options.batch;
        let rows: Vec<Vec<f64>> = (0..k).map(|_| rng.vec(y.numel())).collect();
        let batched_shape = [&[k][..], y.shape()].concat();
        let vb = dev.tensor(&f32s(&rows.concat()), &batched_shape)?;
        let batched = vjp_batched(&[&y], &[&vb], &refs)?;
        for (row, v) in rows.iter().enumerate() {
            let single = vjp(&[&y], &[&dev.tensor(&f32s(v), y.shape())?], &refs)?;
            for (i, (b, s)) in batched.iter().zip(&single).enumerate() {
                let n = values[i].len();
                let b = b.to_vec()?;
                let s = s.to_vec()?;
                let scale = s.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
                for e in 0..n {
                    let (analytic, numeric) = (b[row * n + e] as f64, s[e] as f64);
                    report.record(GradcheckEntry {
                        what: format!("batched row {row} of input {i}, element {e}"),
                        analytic,
                        numeric,
                        tolerance: 1e-6 + 1e-5 * scale,
                    });
                }
            }
        }
    }
    Ok(report)
}
