//! pullback's side of the peer comparison with Burn 0.22.1 (`peers/burn/`,
//! joined by `peers/compare.sh`): the same rows, the same inputs (from
//! `values(n, seed)` of `benches/common/mod.rs`) and the same rules on both
//! sides. Every timed rep is forward + VJP/gradient + reading the result(s)
//! back to the host; inputs (data, parameters, cotangents) are created once
//! before timing. Each row runs once untimed for its check, is warmed up
//! with 3 reps (2 when a rep takes over 1.5 s; `PEERS_WARMUP=n` sets the 3),
//! then timed over N reps (15 when a rep is under 50 ms, else as many as fit
//! in about 14 s, at least 3); the median and the minimum are reported.
//!
//! Rows: `w1` (y = x·x, n = 2^20, one cotangent), `w2` (sin x·exp x,
//! n = 2^16, K = 64 cotangents), `w3` (MLP 256×512×1024×10, summed loss),
//! `w4_per_example` / `w4_summed` (MLP 64×128×256×10), `w5` (Jacobian of
//! tanh(W·x), 512×512), `w6` / `w6_k16` (conv2d [32,16,32,32] * [32,16,3,3],
//! padding 1, K = 1 and 16 cotangents), `w9` (96 elementwise ops on 256
//! values, graph recorded anew every rep), `matmul1024` (read back).
//!
//! Every row's result is checked once, outside the timing, against a float64
//! reference computed on the host; a failed check prints `FAIL` and the
//! program exits nonzero (after the remaining rows ran).
//!
//! Output: `ADAPTER <name>`, `ROW <key> <median_ms> <min_ms>` per row,
//! `NOTE <key> <text>`, `CHECK`/`FAIL` lines, then a human table.
//!
//! ```sh
//! scripts/with-adapter cargo run --release --example peers
//! PEERS_ROWS=w1,w5 cargo run --release --example peers   # a subset of rows
//! peers/compare.sh                                       # both sides, joined
//! ```

use std::time::Instant;

use pullback::{ConvOptions, Device, Result, Tensor};

// Inputs, timing and float64 checks: the same file on both sides.
#[path = "../peers/shared.rs"]
mod shared;
use shared::*;

// ---------------------------------------------------------------------------
// pullback's side.
// ---------------------------------------------------------------------------

/// The MLP on the device: X [B, D], labels, and the four tracked parameters.
struct Mlp {
    x: Tensor,
    labels: Vec<u32>,
    params: Vec<Tensor>,
    ones: Tensor,
}

impl Mlp {
    fn new(dev: &Device, host: &MlpHost) -> Result<Mlp> {
        let shapes = [
            vec![host.d, host.h],
            vec![host.h],
            vec![host.h, host.c],
            vec![host.c],
        ];
        Ok(Mlp {
            x: dev.tensor(&host.x, &[host.b, host.d])?,
            labels: host.labels.iter().map(|&l| l as u32).collect(),
            params: host
                .params
                .iter()
                .zip(&shapes)
                .map(|(p, s)| Ok(dev.tensor(p, s)?.requires_grad()))
                .collect::<Result<_>>()?,
            ones: dev.tensor(&vec![1.0; host.b], &[host.b])?,
        })
    }

    /// Per-example cross-entropy `[B]` of tanh(X·W1 + b1)·W2 + b2.
    fn loss(&self) -> Result<Tensor> {
        let p = &self.params;
        let h = self.x.matmul(&p[0])?.add(&p[1])?.tanh()?;
        h.matmul(&p[2])?.add(&p[3])?.cross_entropy(&self.labels)
    }

    fn refs(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }

    /// Forward, the summed loss's gradient (cotangent ones), all four read back.
    fn summed(&self) -> Result<Vec<Vec<f32>>> {
        let g = pullback::vjp(&[&self.loss()?], &[&self.ones], &self.refs())?;
        pullback::read_all(&g.iter().collect::<Vec<_>>())
    }
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => {
            println!("FAIL: at least one check failed (FAIL lines above)");
            std::process::exit(1);
        }
        Err(e) => {
            println!("FAIL: pullback error: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool> {
    let started = Instant::now();
    let dev = Device::new()?;
    let info = dev.adapter_info().clone();
    println!("ADAPTER {}", info.name);
    println!(
        "NOTE adapter {} ({:?}, {:?}; driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut ok = true;

    if wanted("w1") {
        let x = dev.tensor(&values(W1_N, 1), &[W1_N])?.requires_grad();
        let v = dev.tensor(&values(W1_N, 2), &[W1_N])?;
        let rep = || -> Result<Vec<f32>> {
            let y = x.mul(&x)?;
            pullback::vjp(&[&y], &[&v], &[&x])?[0].to_vec()
        };
        ok &= check_w1(&rep()?);
        report(&mut rows, "w1", bench(|| rep().unwrap()), "vjp".into());
    }

    if wanted("w2") {
        let x = dev.tensor(&values(W2_N, 4), &[W2_N])?.requires_grad();
        let vs: Vec<f32> = (0..W2_K).flat_map(|k| values(W2_N, 10 + k)).collect();
        let v = dev.tensor(&vs, &[W2_K, W2_N])?;
        let rep = || -> Result<Vec<f32>> {
            let y = x.sin()?.mul(&x.exp()?)?;
            pullback::vjp_batched(&[&y], &[&v], &[&x])?[0].to_vec()
        };
        let g = rep()?;
        ok &= check_w2(|k, i| g[k * W2_N + i]);
        report(
            &mut rows,
            "w2",
            bench(|| rep().unwrap()),
            "vjp_batched, K=64".into(),
        );
    }

    if wanted("w3") {
        let host = MlpHost::new(256, 512, 1024, 10);
        let mlp = Mlp::new(&dev, &host)?;
        let g = mlp.summed()?;
        let all: Vec<usize> = (0..host.b).collect();
        ok &= check_mlp("w3", &host, &all, |p, i| g[p][i]);
        report(
            &mut rows,
            "w3",
            bench(|| mlp.summed().unwrap()),
            "vjp, cotangent ones".into(),
        );
    }

    if wanted("w4_per_example") || wanted("w4_summed") {
        let host = MlpHost::new(64, 128, 256, 10);
        let mlp = Mlp::new(&dev, &host)?;
        if wanted("w4_per_example") {
            let rep = || -> Result<Vec<Vec<f32>>> {
                let g = pullback::per_example_grads(&mlp.loss()?, &mlp.refs())?;
                pullback::read_all(&g.iter().collect::<Vec<_>>())
            };
            let g = rep()?;
            let sizes = host.params.clone().map(|p| p.len());
            for b in [0, 1, host.b - 1] {
                let name = format!("w4_per_example example {b}");
                ok &= check_mlp(&name, &host, &[b], |p, i| g[p][b * sizes[p] + i]);
            }
            report(
                &mut rows,
                "w4_per_example",
                bench(|| rep().unwrap()),
                "per_example_grads".into(),
            );
        }
        if wanted("w4_summed") {
            let g = mlp.summed()?;
            let all: Vec<usize> = (0..host.b).collect();
            ok &= check_mlp("w4_summed", &host, &all, |p, i| g[p][i]);
            report(
                &mut rows,
                "w4_summed",
                bench(|| mlp.summed().unwrap()),
                "vjp, cotangent ones".into(),
            );
        }
    }

    if wanted("w5") {
        let n = W5_N;
        let w: Vec<f32> = values(n * n, 11).iter().map(|v| v * 0.1).collect();
        let w = dev.tensor(&w, &[n, n])?;
        let x = dev.tensor(&values(n, 12), &[n, 1])?.requires_grad();
        let rep = || -> Result<Vec<f32>> {
            let y = w.matmul(&x)?.tanh()?;
            pullback::jacobian(&y, &x)?.to_vec()
        };
        let j = rep()?;
        ok &= check_w5(|k, i| j[k * n + i]);
        report(&mut rows, "w5", bench(|| rep().unwrap()), "jacobian".into());
    }

    if wanted("w6") || wanted("w6_k16") {
        let x = dev
            .tensor(&values(CN * CC * CS * CS, 1), &[CN, CC, CS, CS])?
            .requires_grad();
        let w = dev
            .tensor(&values(CO * CC * 9, 2), &[CO, CC, 3, 3])?
            .requires_grad();
        let opts = ConvOptions {
            padding: 1,
            ..ConvOptions::default()
        };
        let out = CN * CO * CS * CS;
        let (xn, wn) = (CN * CC * CS * CS, CO * CC * 9);
        let at = |n: usize, c: usize, i: usize, j: usize| ((n * CC + c) * CS + i) * CS + j;
        let wat = |o: usize, c: usize, p: usize, q: usize| ((o * CC + c) * 3 + p) * 3 + q;
        if wanted("w6") {
            let v1h = values(out, 3);
            let v1 = dev.tensor(&v1h, &[CN, CO, CS, CS])?;
            let rep = || -> Result<Vec<Vec<f32>>> {
                let y = x.conv2d(&w, opts)?;
                let g = pullback::vjp(&[&y], &[&v1], &[&x, &w])?;
                pullback::read_all(&[&g[0], &g[1]])
            };
            let g = rep()?;
            ok &= check_conv(
                "w6",
                &v1h,
                (256, 64),
                |n, c, i, j| g[0][at(n, c, i, j)],
                |o, c, p, q| g[1][wat(o, c, p, q)],
            );
            report(&mut rows, "w6", bench(|| rep().unwrap()), "vjp".into());
        }
        if wanted("w6_k16") {
            let v16h = values(CK * out, 4);
            let v16 = dev.tensor(&v16h, &[CK, CN, CO, CS, CS])?;
            let rep = || -> Result<Vec<Vec<f32>>> {
                let y = x.conv2d(&w, opts)?;
                let g = pullback::vjp_batched(&[&y], &[&v16], &[&x, &w])?;
                pullback::read_all(&[&g[0], &g[1]])
            };
            let g = rep()?;
            for k in [0, CK - 1] {
                ok &= check_conv(
                    &format!("w6_k16 k={k}"),
                    &v16h[k * out..(k + 1) * out],
                    (128, 32),
                    |n, c, i, j| g[0][k * xn + at(n, c, i, j)],
                    |o, c, p, q| g[1][k * wn + wat(o, c, p, q)],
                );
            }
            report(
                &mut rows,
                "w6_k16",
                bench(|| rep().unwrap()),
                "vjp_batched, K=16".into(),
            );
        }
    }

    if wanted("w9") {
        let x = dev.tensor(&values(W9_N, 9), &[W9_N])?.requires_grad();
        let v = dev.tensor(&values(W9_N, 19), &[W9_N])?;
        let rep = || -> Result<Vec<f32>> {
            let mut y = x.clone();
            for i in 0..W9_OPS {
                y = match i % 3 {
                    0 => y.sin(),
                    1 => y.mul(&x),
                    _ => y.add_scalar(0.5),
                }?;
            }
            pullback::vjp(&[&y], &[&v], &[&x])?[0].to_vec()
        };
        ok &= check_w9(&rep()?);
        report(
            &mut rows,
            "w9",
            bench(|| rep().unwrap()),
            "vjp, graph recorded per rep".into(),
        );
    }

    if wanted("matmul1024") {
        let n = MM_N;
        let a = dev.tensor(&values(n * n, 13), &[n, n])?;
        let b = dev.tensor(&values(n * n, 14), &[n, n])?;
        let rep = || a.matmul(&b)?.to_vec();
        ok &= check_matmul(&rep()?);
        let timing = bench(|| rep().unwrap());
        let gflops = 2.0 * (n * n * n) as f64 / (timing.median_ms * 1e-3) / 1e9;
        let note = format!("{gflops:.1} GFLOP/s (median), synchronized by reading C back");
        report(&mut rows, "matmul1024", timing, note);
    }

    println!();
    println!("pullback on {} ({:?})", info.name, info.backend);
    println!(
        "{:<16} {:>11} {:>11} {:>5}  how",
        "row", "median ms", "min ms", "reps"
    );
    for r in &rows {
        println!(
            "{:<16} {:>11.3} {:>11.3} {:>5}  {}",
            r.key, r.timing.median_ms, r.timing.min_ms, r.timing.reps, r.note
        );
    }
    println!("total run {:.1} s", started.elapsed().as_secs_f64());
    Ok(ok)
}
