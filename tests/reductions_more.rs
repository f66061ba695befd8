//! min, argmax/argmin, var, cumsum and layer_norm against f64 references:
//! forward, the reference VJP against finite differences, `vjp` and
//! `vjp_batched` (`common::VjpCheck`); then ties, NaN and bad axes.

mod common;

use common::*;

/// Sums of up to 33 terms, each rounded once: a few ULP of Σ|terms|.
const SUMS: Tol = Tol::new(1e-6, 1e-6);

/// (shape, axis) cases: first, middle and last axes; odd lengths.
const CASES: &[(&[usize], usize)] = &[(&[7], 0), (&[3, 5], 0), (&[3, 5], 1), (&[2, 33, 3], 1)];

/// Row-major lines of `shape` along `axis`: each a list of flat indices.
fn lines(shape: &[usize], axis: usize) -> Vec<Vec<usize>> {
    let (outer, d, inner) = (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    );
    (0..outer * inner)
        .map(|l| {
            let base = (l / inner) * d * inner + l % inner;
            (0..d).map(|e| base + e * inner).collect()
        })
        .collect()
}

#[test]
fn min_routes_the_gradient_to_the_first_minimum() {
    for &(shape, axis) in CASES {
        let out: Vec<usize> = (0..shape.len())
            .filter(|&d| d != axis)
            .map(|d| shape[d])
            .collect();
        let ls = lines(shape, axis);
        let ls2 = ls.clone();
        VjpCheck::new(format!("min {shape:?} axis {axis}"))
            .input(shape, Dist::Uniform(-2.0, 2.0))
            .output(&out)
            .forward_tol(Tol::ARITH)
            .vjp_tol(Tol::ARITH)
            .run(
                |x| x[0].min(axis, false),
                |x| {
                    ls.iter()
                        .map(|l| l.iter().map(|&i| x[0][i]).fold(f64::MAX, f64::min))
                        .collect()
                },
                |x, v| {
                    let mut g = vec![0.0; x[0].len()];
                    for (o, l) in ls2.iter().enumerate() {
                        let m = l.iter().map(|&i| x[0][i]).fold(f64::MAX, f64::min);
                        let first = l.iter().find(|&&i| x[0][i] == m).unwrap();
                        g[*first] += v[o];
                    }
                    vec![g]
                },
            );
    }
}

#[test]
fn cumsum_and_its_reversed_adjoint() {
    for &(shape, axis) in CASES {
        let ls = lines(shape, axis);
        let ls2 = ls.clone();
        VjpCheck::new(format!("cumsum {shape:?} axis {axis}"))
            .input(shape, Dist::Uniform(-2.0, 2.0))
            .output(shape)
            .forward_tol(SUMS)
            .vjp_tol(SUMS)
            .run(
                |x| x[0].cumsum(axis),
                |x| {
                    let mut y = vec![0.0; x[0].len()];
                    for l in &ls {
                        let mut s = 0.0;
                        for &i in l {
                            s += x[0][i];
                            y[i] = s;
                        }
                    }
                    y
                },
                |x, v| {
                    let mut g = vec![0.0; x[0].len()];
                    for l in &ls2 {
                        let mut s = 0.0;
                        for &i in l.iter().rev() {
                            s += v[i];
                            g[i] = s;
                        }
                    }
                    vec![g]
                },
            );
    }
}

#[test]
fn var_over_axes() {
    for (shape, axes) in [(&[7][..], &[0][..]), (&[3, 5], &[1]), (&[4, 3, 5], &[0, 2])] {
        let keep: Vec<bool> = (0..shape.len()).map(|d| axes.contains(&d)).collect();
        let out: Vec<usize> = (0..shape.len())
            .filter(|d| !keep[*d])
            .map(|d| shape[d])
            .collect();
        // Groups: flat indices sharing the kept coordinates.
        let groups = {
            let mut g: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
            for i in 0..numel(shape) {
                let idx = unravel(i, shape);
                let key: Vec<usize> = idx
                    .iter()
                    .enumerate()
                    .filter(|(d, _)| !keep[*d])
                    .map(|(_, &v)| v)
                    .collect();
                g.entry(key).or_default().push(i);
            }
            g.into_values().collect::<Vec<_>>()
        };
        let g2 = groups.clone();
        VjpCheck::new(format!("var {shape:?} over {axes:?}"))
            .input(shape, Dist::Uniform(-2.0, 2.0))
            .output(&out)
            .forward_tol(SUMS)
            .vjp_tol(SUMS)
            .run(
                |x| x[0].var(axes, false),
                |x| {
                    groups
                        .iter()
                        .map(|g| {
                            let m = g.iter().map(|&i| x[0][i]).sum::<f64>() / g.len() as f64;
                            g.iter().map(|&i| (x[0][i] - m).powi(2)).sum::<f64>() / g.len() as f64
                        })
                        .collect()
                },
                |x, v| {
                    let mut grad = vec![0.0; x[0].len()];
                    for (o, g) in g2.iter().enumerate() {
                        let n = g.len() as f64;
                        let m = g.iter().map(|&i| x[0][i]).sum::<f64>() / n;
                        for &i in g {
                            grad[i] = v[o] * 2.0 * (x[0][i] - m) / n;
                        }
                    }
                    vec![grad]
                },
            );
    }
}

#[test]
fn layer_norm_over_the_last_axis() {
    let eps = 1e-5;
    for shape in [&[7][..], &[3, 33], &[2, 3, 8]] {
        let c = *shape.last().unwrap();
        VjpCheck::new(format!("layer_norm {shape:?}"))
            .input(shape, Dist::Uniform(-2.0, 2.0))
            .output(shape)
            .forward_tol(Tol::new(2e-6, 2e-6))
            .vjp_tol(Tol::new(2e-5, 2e-5))
            .run(
                |x| x[0].layer_norm(eps as f32),
                |x| {
                    x[0].chunks(c)
                        .flat_map(|row| {
                            let m = row.iter().sum::<f64>() / c as f64;
                            let var = row.iter().map(|e| (e - m).powi(2)).sum::<f64>() / c as f64;
                            row.iter().map(move |e| (e - m) / (var + eps).sqrt())
                        })
                        .collect()
                },
                |x, v| {
                    // dx = (v − mean v − y·mean(v·y)) / σ
                    let mut g = vec![];
                    for (row, vr) in x[0].chunks(c).zip(v.chunks(c)) {
                        let n = c as f64;
                        let m = row.iter().sum::<f64>() / n;
                        let s = (row.iter().map(|e| (e - m).powi(2)).sum::<f64>() / n + eps).sqrt();
                        let y: Vec<f64> = row.iter().map(|e| (e - m) / s).collect();
                        let mv = vr.iter().sum::<f64>() / n;
                        let mvy = vr.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() / n;
                        g.extend(vr.iter().zip(&y).map(|(vi, yi)| (vi - mv - yi * mvy) / s));
                    }
                    vec![g]
                },
            );
    }
}

#[test]
fn argmax_argmin_ties_nan_and_errors() {
    let d = dev();
    let x = ok(d.tensor(&[1.0, 3.0, 3.0, -1.0, 0.0, -1.0], &[2, 3]));
    assert_eq!(ok(x.argmax(1)), vec![1, 1]);
    assert_eq!(ok(x.argmin(1)), vec![0, 0]);
    assert_eq!(ok(x.argmax(0)), vec![0, 0, 0]);
    assert_eq!(ok(x.argmin(0)), vec![1, 1, 1]);
    let n = ok(d.tensor(&[1.0, f32::NAN, 5.0], &[3]));
    assert_eq!(ok(n.argmax(0)), vec![1]);
    assert_eq!(ok(n.argmin(0)), vec![1]);
    // min ties: the first minimal element takes the whole gradient.
    let t = ok(d.tensor(&[2.0, 1.0, 1.0], &[3])).requires_grad();
    let g = ok(pullback::vjp(
        &[&ok(t.min(0, false))],
        &[&ok(d.tensor(&[1.0], &[]))],
        &[&t],
    ));
    assert_eq!(read(&g[0]), vec![0.0, 1.0, 0.0]);
    expect_invalid(x.argmax(2), "argmax", &["axis 2"]);
    expect_invalid(x.cumsum(2), "cumsum", &["axis 2"]);
    expect_invalid(ok(d.tensor(&[], &[0, 3])).argmax(0), "argmax", &["empty"]);
    expect_invalid(
        ok(d.tensor(&[1.0], &[])).layer_norm(1e-5),
        "layer_norm",
        &["rank"],
    );
    // A long cumulative sum stays accurate (compensated): 1e5 × 0.1.
    let long = ok(d.full(&[100_000], 0.1));
    let last = *read(&ok(long.cumsum(0))).last().unwrap();
    assert!((last as f64 - 1e5 * 0.1f32 as f64).abs() < 1e-2, "{last}");
}
