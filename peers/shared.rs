//! Inputs, timing and float64 checks shared by both sides of the peer
//! comparison: `examples/peers.rs` (pullback) and `peers/burn/src/main.rs`
//! (Burn 0.22.1) include this file with `#[path]`, so the two programs use
//! the same values, timing rules and tolerances by construction.
//! `peers/compare.sh` runs both and joins their `ROW` lines.

#![allow(dead_code)]

use std::hint::black_box;
use std::time::Instant;

/// Deterministic values in [-0.5, 0.5) (benches/common/mod.rs).
pub fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(7919).wrapping_add(seed * 104_729)) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Tolerance of elementwise results: |got − want| ≤ 1e-5 · Σ|terms| (f32
/// rounding of a few elementwise ops, GPU sin/exp/tanh included).
pub const TOL_ELEMENTWISE: f64 = 1e-5;
/// Tolerance of reductions, GEMMs, convolutions and long op chains:
/// |got − want| ≤ 1e-4 · Σ|terms| (the sum of the magnitudes of the terms
/// the f64 reference adds, or the magnitude propagated through the chain).
pub const TOL_REDUCTION: f64 = 1e-4;

/// Whether this run includes `key` (`PEERS_ROWS=w1,w5`; all by default).
pub fn wanted(key: &str) -> bool {
    match std::env::var("PEERS_ROWS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|k| k.trim() == key),
        _ => true,
    }
}

/// Median and minimum wall time of a row, and the reps they came from.
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub reps: usize,
}

/// 3 warm-up reps (2 when a rep takes over 1.5 s; `PEERS_WARMUP=n` sets
/// the 3), then N timed reps: 15 when a rep is under 50 ms, else as many as
/// fit in ~14 s (3 to 15).
pub fn bench<T>(mut rep: impl FnMut() -> T) -> Timing {
    let warmup = std::env::var("PEERS_WARMUP")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or(3)
        .max(1);
    let mut last = 0.0;
    for i in 0..warmup {
        let t = Instant::now();
        black_box(rep());
        last = t.elapsed().as_secs_f64();
        if i >= 1 && last > 1.5 {
            break;
        }
    }
    let reps = if last < 0.05 {
        15
    } else {
        ((14.0 / last) as usize).clamp(3, 15)
    };
    let mut ms: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(rep());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Timing {
        median_ms: ms[reps / 2],
        min_ms: ms[0],
        reps,
    }
}

/// Compares `(got, want, scale)` triples: passes when every
/// |got − want| ≤ tol · scale + 1e-12; prints `CHECK` or `FAIL`.
pub fn verdict(name: &str, tol: f64, items: impl IntoIterator<Item = (f32, f64, f64)>) -> bool {
    let (mut count, mut worst) = (0usize, 0.0f64);
    for (i, (got, want, scale)) in items.into_iter().enumerate() {
        count += 1;
        let err = (got as f64 - want).abs();
        if err.is_nan() || err > tol * scale + 1e-12 {
            println!(
                "FAIL {name}: item {i}: got {got}, want {want} (scale {scale:.3e}, tol {tol:e})"
            );
            return false;
        }
        if scale > 0.0 {
            worst = worst.max(err / scale);
        }
    }
    println!("CHECK {name} ok: {count} values, worst |err|/scale {worst:.2e} (bound {tol:e})");
    true
}

/// `count` indices spread over 0..len (deterministic).
pub fn sample(len: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| (i * 7919 + 13) % len).collect()
}

/// w1: vᵀ∂(x·x)/∂x = 2·x·v.
pub fn check_w1(g: &[f32]) -> bool {
    let (x, v) = (values(W1_N, 1), values(W1_N, 2));
    verdict(
        "w1",
        TOL_ELEMENTWISE,
        (0..W1_N).map(|i| {
            let want = 2.0 * x[i] as f64 * v[i] as f64;
            (g[i], want, want.abs())
        }),
    )
}

/// w2 rows 0, 1, 63: v_k · e^x (sin x + cos x).
pub fn check_w2(get: impl Fn(usize, usize) -> f32) -> bool {
    let x = values(W2_N, 4);
    [0, 1, W2_K - 1].iter().all(|&k| {
        let v = values(W2_N, 10 + k);
        verdict(
            &format!("w2 row {k}"),
            TOL_ELEMENTWISE,
            (0..W2_N).map(|i| {
                let (xi, vi) = (x[i] as f64, v[i] as f64);
                let want = vi * xi.exp() * (xi.sin() + xi.cos());
                let scale = vi.abs() * xi.exp() * (xi.sin().abs() + xi.cos().abs());
                (get(k, i), want, scale)
            }),
        )
    })
}

/// The MLP's inputs on the host (benches/common/mod.rs `Mlp`).
pub struct MlpHost {
    pub b: usize,
    pub d: usize,
    pub h: usize,
    pub c: usize,
    pub x: Vec<f32>,
    pub labels: Vec<usize>,
    /// W1 [D, H], b1 [H], W2 [H, C], b2 [C].
    pub params: [Vec<f32>; 4],
}

impl MlpHost {
    pub fn new(b: usize, d: usize, h: usize, c: usize) -> MlpHost {
        let p = |n, seed| {
            values(n, seed)
                .iter()
                .map(|v| v * 0.1)
                .collect::<Vec<f32>>()
        };
        MlpHost {
            b,
            d,
            h,
            c,
            x: values(b * d, 1),
            labels: (0..b).map(|i| i * 7 % c).collect(),
            params: [p(d * h, 2), p(h, 3), p(h * c, 4), p(c, 5)],
        }
    }

    /// The f64 gradient of Σ_{b in rows} loss_b for W1, b1, W2, b2, each
    /// with its scale: the backward pass run on magnitudes, with the
    /// forward's rounding folded in (h's error is relative to
    /// Σ|x·W1| + |b1|, the softmax's to the largest Σ|h·W2| + |b2|).
    pub fn grads(&self, rows: &[usize]) -> [(Vec<f64>, Vec<f64>); 4] {
        let (d, hn, c) = (self.d, self.h, self.c);
        let [w1, b1, w2, b2] = &self.params;
        let mut out: [(Vec<f64>, Vec<f64>); 4] =
            [d * hn, hn, hn * c, c].map(|n| (vec![0.0; n], vec![0.0; n]));
        for &r in rows {
            let xr = &self.x[r * d..(r + 1) * d];
            let (mut h, mut ha) = (vec![0.0f64; hn], vec![0.0f64; hn]);
            for j in 0..hn {
                let terms = (0..d).map(|k| xr[k] as f64 * w1[k * hn + j] as f64);
                let (pre, pre_abs) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                h[j] = (pre + b1[j] as f64).tanh();
                ha[j] = pre_abs + (b1[j] as f64).abs();
            }
            let mut z = vec![0.0f64; c];
            let mut z_abs = 0.0f64;
            for (m, zm) in z.iter_mut().enumerate() {
                let terms = (0..hn).map(|j| h[j] * w2[j * c + m] as f64);
                let (s, a) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                *zm = s + b2[m] as f64;
                z_abs = z_abs.max(a + (b2[m] as f64).abs());
            }
            let zmax = z.iter().cloned().fold(f64::MIN, f64::max);
            let total: f64 = z.iter().map(|v| (v - zmax).exp()).sum();
            let p: Vec<f64> = z.iter().map(|v| (v - zmax).exp() / total).collect();
            let onehot = |m: usize| if m == self.labels[r] { 1.0 } else { 0.0 };
            let dz: Vec<f64> = (0..c).map(|m| p[m] - onehot(m)).collect();
            let dza: Vec<f64> = (0..c).map(|m| (p[m] + onehot(m)) * (1.0 + z_abs)).collect();
            for m in 0..c {
                out[3].0[m] += dz[m];
                out[3].1[m] += dza[m];
            }
            for j in 0..hn {
                for m in 0..c {
                    out[2].0[j * c + m] += h[j] * dz[m];
                    out[2].1[j * c + m] += ha[j].max(h[j].abs()) * dza[m];
                }
            }
            let mut dpre = vec![0.0f64; hn];
            let mut dprea = vec![0.0f64; hn];
            for j in 0..hn {
                let dh: f64 = (0..c).map(|m| dz[m] * w2[j * c + m] as f64).sum();
                let dha: f64 = (0..c).map(|m| dza[m] * (w2[j * c + m] as f64).abs()).sum();
                let s = 1.0 - h[j] * h[j];
                dpre[j] = dh * s;
                dprea[j] = dha * (s + 2.0 * h[j].abs() * ha[j]);
                out[1].0[j] += dpre[j];
                out[1].1[j] += dprea[j];
            }
            for (k, &xk) in xr.iter().enumerate() {
                let xk = xk as f64;
                let (g, s) = (
                    &mut out[0].0[k * hn..(k + 1) * hn],
                    &mut out[0].1[k * hn..(k + 1) * hn],
                );
                for j in 0..hn {
                    g[j] += xk * dpre[j];
                    s[j] += xk.abs() * dprea[j];
                }
            }
        }
        out
    }
}

/// All four gradients of Σ_{b in rows} loss_b; `get(param, index)`.
pub fn check_mlp(
    name: &str,
    m: &MlpHost,
    rows: &[usize],
    get: impl Fn(usize, usize) -> f32,
) -> bool {
    let refs = m.grads(rows);
    let names = ["W1", "b1", "W2", "b2"];
    refs.iter().enumerate().all(|(p, (want, scale))| {
        verdict(
            &format!("{name} d{}", names[p]),
            TOL_REDUCTION,
            (0..want.len()).map(|i| (get(p, i), want[i], scale[i])),
        )
    })
}

/// w5's Jacobian rows 0, 1, 255, 511: J[k, j] = (1 − y_k²)·W[k, j].
pub fn check_w5(get: impl Fn(usize, usize) -> f32) -> bool {
    let n = W5_N;
    let w: Vec<f32> = values(n * n, 11).iter().map(|v| v * 0.1).collect();
    let x = values(n, 12);
    [0, 1, n / 2 - 1, n - 1].iter().all(|&k| {
        let row = &w[k * n..(k + 1) * n];
        let pre: f64 = (0..n).map(|j| row[j] as f64 * x[j] as f64).sum();
        let pre_abs: f64 = (0..n).map(|j| (row[j] as f64 * x[j] as f64).abs()).sum();
        let y = pre.tanh();
        verdict(
            &format!("w5 row {k}"),
            TOL_REDUCTION,
            (0..n).map(|j| {
                let wkj = row[j] as f64;
                (
                    get(k, j),
                    (1.0 - y * y) * wkj,
                    wkj.abs() * (1.0 + 2.0 * pre_abs),
                )
            }),
        )
    })
}

/// Conv sizes: x [N, C, S, S], w [O, C, 3, 3], padding 1, stride 1.
pub const CN: usize = 32;
pub const CC: usize = 16;
pub const CO: usize = 32;
pub const CS: usize = 32;
/// w6_k16's cotangents.
pub const CK: usize = 16;

/// Sampled dX and dW entries of one cotangent `v` [N, O, S, S], in f64:
/// dX[n,c,i,j] = Σ_{o,p,q} v[n,o,i+1−p,j+1−q]·w[o,c,p,q],
/// dW[o,c,p,q] = Σ_{n,i,j} v[n,o,i,j]·x[n,c,i+p−1,j+q−1].
pub fn check_conv(
    name: &str,
    v: &[f32],
    samples: (usize, usize),
    dx: impl Fn(usize, usize, usize, usize) -> f32,
    dw: impl Fn(usize, usize, usize, usize) -> f32,
) -> bool {
    let x = values(CN * CC * CS * CS, 1);
    let w = values(CO * CC * 9, 2);
    let vi = |n: usize, o: usize, i: usize, j: usize| v[((n * CO + o) * CS + i) * CS + j] as f64;
    let xi = |n: usize, c: usize, i: usize, j: usize| x[((n * CC + c) * CS + i) * CS + j] as f64;
    let wi = |o: usize, c: usize, p: usize, q: usize| w[((o * CC + c) * 3 + p) * 3 + q] as f64;
    let dx_items = sample(CN * CC * CS * CS, samples.0).into_iter().map(|idx| {
        let (n, c, i, j) = (
            idx / (CC * CS * CS),
            idx / (CS * CS) % CC,
            idx / CS % CS,
            idx % CS,
        );
        let (mut want, mut scale) = (0.0, 0.0);
        for o in 0..CO {
            for p in 0..3 {
                for q in 0..3 {
                    let (oi, oj) = (i as isize + 1 - p as isize, j as isize + 1 - q as isize);
                    if (0..CS as isize).contains(&oi) && (0..CS as isize).contains(&oj) {
                        let t = vi(n, o, oi as usize, oj as usize) * wi(o, c, p, q);
                        want += t;
                        scale += t.abs();
                    }
                }
            }
        }
        (dx(n, c, i, j), want, scale)
    });
    let ok_dx = verdict(
        &format!("{name} dX"),
        TOL_REDUCTION,
        dx_items.collect::<Vec<_>>(),
    );
    let dw_items = sample(CO * CC * 9, samples.1).into_iter().map(|idx| {
        let (o, c, p, q) = (idx / (CC * 9), idx / 9 % CC, idx / 3 % 3, idx % 3);
        let (mut want, mut scale) = (0.0, 0.0);
        for n in 0..CN {
            for i in 0..CS {
                for j in 0..CS {
                    let (xi_, xj) = (i as isize + p as isize - 1, j as isize + q as isize - 1);
                    if (0..CS as isize).contains(&xi_) && (0..CS as isize).contains(&xj) {
                        let t = vi(n, o, i, j) * xi(n, c, xi_ as usize, xj as usize);
                        want += t;
                        scale += t.abs();
                    }
                }
            }
        }
        (dw(o, c, p, q), want, scale)
    });
    let ok_dw = verdict(
        &format!("{name} dW"),
        TOL_REDUCTION,
        dw_items.collect::<Vec<_>>(),
    );
    ok_dx && ok_dw
}

/// w9: the 96 ops run forward-mode in f64 (value, derivative, and the
/// derivative's magnitude bound); g = v·dy/dx.
pub fn check_w9(g: &[f32]) -> bool {
    let (x, v) = (values(W9_N, 9), values(W9_N, 19));
    verdict(
        "w9",
        TOL_REDUCTION,
        (0..W9_N).map(|e| {
            let xe = x[e] as f64;
            let (mut y, mut dy, mut ady) = (xe, 1.0f64, 1.0f64);
            for i in 0..W9_OPS {
                match i % 3 {
                    0 => {
                        dy *= y.cos();
                        ady *= y.cos().abs();
                        y = y.sin();
                    }
                    1 => {
                        dy = dy * xe + y;
                        ady = ady * xe.abs() + y.abs();
                        y *= xe;
                    }
                    _ => y += 0.5,
                }
            }
            let ve = v[e] as f64;
            (g[e], ve * dy, ve.abs() * ady)
        }),
    )
}

/// matmul1024: 64 sampled entries of a·b.
pub fn check_matmul(c: &[f32]) -> bool {
    let n = MM_N;
    let (a, b) = (values(n * n, 13), values(n * n, 14));
    verdict(
        "matmul1024",
        TOL_REDUCTION,
        sample(n * n, 64)
            .into_iter()
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                let terms = (0..n).map(|k| a[i * n + k] as f64 * b[k * n + j] as f64);
                let (want, scale) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                (c[idx], want, scale)
            })
            .collect::<Vec<_>>(),
    )
}

pub const W1_N: usize = 1 << 20;
pub const W2_N: usize = 1 << 16;
pub const W2_K: usize = 64;
pub const W5_N: usize = 512;
pub const W9_N: usize = 256;
pub const W9_OPS: usize = 96;
pub const MM_N: usize = 1024;

/// One finished row: its key, timing and what the human table says about it.
pub struct Row {
    pub key: &'static str,
    pub timing: Timing,
    pub note: String,
}

pub fn report(rows: &mut Vec<Row>, key: &'static str, timing: Timing, note: String) {
    println!("ROW {key} {:.3} {:.3}", timing.median_ms, timing.min_ms);
    rows.push(Row { key, timing, note });
}
