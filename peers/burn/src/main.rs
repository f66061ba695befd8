//! Burn 0.22.1's side of pullback's peer comparison (`examples/peers.rs` is
//! pullback's; `peers/compare.sh` runs both and joins them): the same rows,
//! inputs and rules, on Burn's wgpu backend with autodiff, fusion and
//! autotune on as Burn ships them: `Device::wgpu(DefaultDevice).autodiff()`,
//! the 0.22 spelling of `Autodiff<Wgpu>` (tensors carry no backend type; the
//! device routes them through burn-tensor's `Dispatch` to burn-autodiff over
//! `Fusion<CubeBackend>` on cubecl's wgpu runtime, SPIR-V on Vulkan here).
//! Every timed rep is forward + gradient (`backward()` of a scalar, with the
//! cotangent folded in as `(y * v).sum()`) + reading the gradient(s) back to
//! the host (one `Transaction` when there are several); inputs are created
//! once before timing. Each row runs once untimed for its check (autotune
//! runs there), is warmed up with 3 reps (2 when a rep takes over 1.5 s;
//! `PEERS_WARMUP=n` sets the 3), then timed over N reps (15 when a rep is
//! under 50 ms, else as many as fit in about 14 s, at least 3); median and
//! minimum are reported. Burn has no batched VJP, per-example
//! gradients or Jacobian: where a row needs one, the candidate spellings are
//! each checked and timed, and the faster is the row (`NOTE <key> ...` says
//! which; the others are printed as `ALT <key> <spelling> <median> <min>`).
//!
//! Every row's result is checked once, outside the timing, against a float64
//! reference computed on the host; a failed check prints `FAIL` and the
//! program exits nonzero (after the remaining rows ran).
//!
//! ```sh
//! cd peers/burn && ../../scripts/with-adapter cargo run --release
//! PEERS_ROWS=w1,w5 cargo run --release          # a subset of rows
//! cargo run --release -- --try-retain           # does Burn reuse a graph?
//! ```

use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData, Transaction};

// Inputs, timing and float64 checks: the same file on both sides.
#[path = "../../shared.rs"]
mod shared;
use shared::*;

// ---------------------------------------------------------------------------
// Burn's side.
// ---------------------------------------------------------------------------

/// A float tensor on `dev` from host values.
fn tensor<const D: usize>(dev: &Device, data: &[f32], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), dev)
}

/// A leaf that keeps its gradient.
fn leaf<const D: usize>(dev: &Device, data: &[f32], shape: [usize; D]) -> Tensor<D> {
    tensor(dev, data, shape).require_grad()
}

fn host(data: TensorData) -> Vec<f32> {
    data.try_into_vec_as::<f32>().expect("f32 data")
}

/// One tensor read back.
fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    host(t.into_data())
}

/// Several tensors read back in one transaction.
fn read_all<const D: usize>(ts: impl IntoIterator<Item = Tensor<D>>) -> Vec<Vec<f32>> {
    let tx = ts
        .into_iter()
        .fold(Transaction::default(), |tx, t| tx.register(t));
    tx.execute().into_iter().map(host).collect()
}

/// Picks the faster of checked, timed spellings: prints `ALT` lines for
/// every candidate and a `NOTE` naming the one that is the row.
fn fastest(key: &'static str, rows: &mut Vec<Row>, candidates: Vec<(&'static str, Timing)>) {
    for (name, t) in &candidates {
        println!("ALT {key} {name} {:.3} {:.3}", t.median_ms, t.min_ms);
    }
    let others: Vec<String> = candidates
        .iter()
        .map(|(n, t)| format!("{n} {:.1} ms", t.median_ms))
        .collect();
    let (name, timing) = candidates
        .into_iter()
        .min_by(|a, b| a.1.median_ms.total_cmp(&b.1.median_ms))
        .expect("a candidate");
    println!("NOTE {key} used {name} (candidates: {})", others.join(", "));
    report(rows, key, timing, name.to_string());
}

/// The MLP on the device: X [B, D], labels [B, 1], four leaves.
struct Mlp {
    x: Tensor<2>,
    labels: Tensor<2, Int>,
    w1: Tensor<2>,
    b1: Tensor<1>,
    w2: Tensor<2>,
    b2: Tensor<1>,
}

/// Per-example cross-entropy [B, 1] of logits [B, C] against labels [B, 1].
fn cross_entropy(z: Tensor<2>, labels: Tensor<2, Int>) -> Tensor<2> {
    log_softmax(z, 1).gather(1, labels).neg()
}

fn int_labels(dev: &Device, labels: &[usize]) -> Tensor<2, Int> {
    let l: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(l, [labels.len(), 1]), dev)
}

impl Mlp {
    fn new(dev: &Device, h: &MlpHost) -> Mlp {
        let p = &h.params;
        Mlp {
            x: tensor(dev, &h.x, [h.b, h.d]),
            labels: int_labels(dev, &h.labels),
            w1: leaf(dev, &p[0], [h.d, h.h]),
            b1: leaf(dev, &p[1], [h.h]),
            w2: leaf(dev, &p[2], [h.h, h.c]),
            b2: leaf(dev, &p[3], [h.c]),
        }
    }

    /// Per-example losses [B, 1] of the rows `x` [B', D] with `labels`.
    fn loss(&self, x: Tensor<2>, labels: Tensor<2, Int>) -> Tensor<2> {
        let h = x
            .matmul(self.w1.clone())
            .add(self.b1.clone().unsqueeze())
            .tanh();
        let z = h.matmul(self.w2.clone()).add(self.b2.clone().unsqueeze());
        cross_entropy(z, labels)
    }

    /// Forward, backward of the summed loss, the four gradients read back.
    fn summed(&self) -> Vec<Vec<f32>> {
        let grads = self
            .loss(self.x.clone(), self.labels.clone())
            .sum()
            .backward();
        let mut tx = Transaction::default();
        tx = tx.register(self.w1.grad(&grads).unwrap());
        tx = tx.register(self.b1.grad(&grads).unwrap());
        tx = tx.register(self.w2.grad(&grads).unwrap());
        tx = tx.register(self.b2.grad(&grads).unwrap());
        tx.execute().into_iter().map(host).collect()
    }
}

/// The MLP with every parameter replicated per example as [B, ...] leaves
/// (X as [B, 1, D], batched matmuls): one backward gives per-example grads.
struct MlpReplicated {
    x: Tensor<3>,
    labels: Tensor<2, Int>,
    w1: Tensor<3>,
    b1: Tensor<3>,
    w2: Tensor<3>,
    b2: Tensor<3>,
}

impl MlpReplicated {
    fn new(dev: &Device, h: &MlpHost) -> MlpReplicated {
        let rep = |p: &[f32]| p.repeat(h.b);
        let p = &h.params;
        MlpReplicated {
            x: tensor(dev, &h.x, [h.b, 1, h.d]),
            labels: int_labels(dev, &h.labels),
            w1: leaf(dev, &rep(&p[0]), [h.b, h.d, h.h]),
            b1: leaf(dev, &rep(&p[1]), [h.b, 1, h.h]),
            w2: leaf(dev, &rep(&p[2]), [h.b, h.h, h.c]),
            b2: leaf(dev, &rep(&p[3]), [h.b, 1, h.c]),
        }
    }

    fn per_example(&self) -> Vec<Vec<f32>> {
        let h = self
            .x
            .clone()
            .matmul(self.w1.clone())
            .add(self.b1.clone())
            .tanh();
        let z = h.matmul(self.w2.clone()).add(self.b2.clone());
        let [b, _, c] = z.dims();
        let grads = cross_entropy(z.reshape([b, c]), self.labels.clone())
            .sum()
            .backward();
        read_all([&self.w1, &self.b1, &self.w2, &self.b2].map(|p| p.grad(&grads).unwrap()))
    }
}

/// Does Burn let two backward passes share one forward graph (per-example
/// slices of one batched loss)? Prints what happened.
fn try_retain(dev: &Device) {
    let host = MlpHost::new(4, 8, 16, 3);
    let mlp = Mlp::new(dev, &host);
    let loss = mlp.loss(mlp.x.clone(), mlp.labels.clone());
    let first = loss.clone().slice([0..1, 0..1]).sum().backward();
    println!(
        "first backward: dW1 present = {}",
        mlp.w1.grad(&first).is_some()
    );
    let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let g = loss.clone().slice([1..2, 0..1]).sum().backward();
        mlp.w1.grad(&g).map(read)
    }));
    match second {
        Ok(g) => println!(
            "second backward on the same graph: ran, dW1 = {:?}",
            g.map(|g| g[..4].to_vec())
        ),
        Err(_) => println!("second backward on the same graph: panicked (graph consumed)"),
    }
}

fn main() {
    let started = Instant::now();
    let dev = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    if std::env::args().any(|a| a == "--try-retain") {
        try_retain(&dev);
        return;
    }
    let identity = dev.identity();
    let name = identity
        .as_ref()
        .map_or("unknown".to_string(), |i| i.name.clone());
    println!("ADAPTER {name}");
    println!("NOTE adapter {identity:?}");
    let mut rows: Vec<Row> = Vec::new();
    let mut ok = true;

    if wanted("w1") {
        let x = leaf(&dev, &values(W1_N, 1), [W1_N]);
        let v = tensor(&dev, &values(W1_N, 2), [W1_N]);
        let rep = || {
            let y = x.clone().mul(x.clone());
            let grads = y.mul(v.clone()).sum().backward();
            read(x.grad(&grads).unwrap())
        };
        ok &= check_w1(&rep());
        report(&mut rows, "w1", bench(rep), "(y*v).sum().backward()".into());
    }

    if wanted("w2") {
        let xh = values(W2_N, 4);
        let vh: Vec<f32> = (0..W2_K).flat_map(|k| values(W2_N, 10 + k)).collect();
        // (a) x repeated K times as one [K, n] leaf, one backward.
        let xk = leaf(&dev, &xh.repeat(W2_K), [W2_K, W2_N]);
        let vk = tensor(&dev, &vh, [W2_K, W2_N]);
        let repeated = || {
            let y = xk.clone().sin().mul(xk.clone().exp());
            let grads = y.mul(vk.clone()).sum().backward();
            read(xk.grad(&grads).unwrap())
        };
        let g = repeated();
        ok &= check_w2(|k, i| g[k * W2_N + i]);
        let a = bench(repeated);
        // (b) K backward passes, each on its own forward (Burn frees the
        // graph in backward), the K gradients read in one transaction.
        let x = leaf(&dev, &xh, [W2_N]);
        let vs: Vec<Tensor<1>> = (0..W2_K)
            .map(|k| tensor(&dev, &vh[k * W2_N..(k + 1) * W2_N], [W2_N]))
            .collect();
        let looped = || {
            read_all(vs.iter().map(|v| {
                let y = x.clone().sin().mul(x.clone().exp());
                let grads = y.mul(v.clone()).sum().backward();
                x.grad(&grads).unwrap()
            }))
        };
        let g = looped();
        ok &= check_w2(|k, i| g[k][i]);
        let b = bench(looped);
        fastest(
            "w2",
            &mut rows,
            vec![
                ("repeated [64,n] leaf, 1 backward", a),
                ("loop of 64 backward", b),
            ],
        );
    }

    if wanted("w3") {
        let host_mlp = MlpHost::new(256, 512, 1024, 10);
        let mlp = Mlp::new(&dev, &host_mlp);
        let g = mlp.summed();
        let all: Vec<usize> = (0..host_mlp.b).collect();
        ok &= check_mlp("w3", &host_mlp, &all, |p, i| g[p][i]);
        report(
            &mut rows,
            "w3",
            bench(|| mlp.summed()),
            "loss.sum().backward()".into(),
        );
    }

    if wanted("w4_per_example") || wanted("w4_summed") {
        let host_mlp = MlpHost::new(64, 128, 256, 10);
        let mlp = Mlp::new(&dev, &host_mlp);
        let b = host_mlp.b;
        let sizes = host_mlp.params.clone().map(|p| p.len());
        let examples = [0, 1, b - 1];
        if wanted("w4_per_example") {
            // (a) B single-example forwards + backwards (batch of 1).
            let xs: Vec<Tensor<2>> = (0..b)
                .map(|i| {
                    tensor(
                        &dev,
                        &host_mlp.x[i * host_mlp.d..(i + 1) * host_mlp.d],
                        [1, host_mlp.d],
                    )
                })
                .collect();
            let ls: Vec<Tensor<2, Int>> = (0..b)
                .map(|i| int_labels(&dev, &host_mlp.labels[i..i + 1]))
                .collect();
            let looped = || {
                let mut tx = Transaction::default();
                for (x, l) in xs.iter().zip(&ls) {
                    let grads = mlp.loss(x.clone(), l.clone()).sum().backward();
                    tx = tx
                        .register(mlp.w1.grad(&grads).unwrap())
                        .register(mlp.b1.grad(&grads).unwrap())
                        .register(mlp.w2.grad(&grads).unwrap())
                        .register(mlp.b2.grad(&grads).unwrap());
                }
                tx.execute().into_iter().map(host).collect::<Vec<_>>()
            };
            let g = looped();
            for &e in &examples {
                let name = format!("w4_per_example loop example {e}");
                ok &= check_mlp(&name, &host_mlp, &[e], |p, i| g[e * 4 + p][i]);
            }
            let a = bench(looped);
            // (b) per-example slices of one batched forward: Burn frees the
            // graph in backward (no retain_graph), so this spelling does not
            // exist; `--try-retain` shows it.
            // (c) parameters replicated per example, one backward.
            let rmlp = MlpReplicated::new(&dev, &host_mlp);
            let g = rmlp.per_example();
            for &e in &examples {
                let name = format!("w4_per_example replicated example {e}");
                ok &= check_mlp(&name, &host_mlp, &[e], |p, i| g[p][e * sizes[p] + i]);
            }
            let c = bench(|| rmlp.per_example());
            println!(
                "NOTE w4_per_example per-example slices of one batched forward: not possible, Burn 0.22 frees the graph in backward (no retain_graph)"
            );
            fastest(
                "w4_per_example",
                &mut rows,
                vec![
                    ("loop of 64 batch-1 forward+backward", a),
                    ("params replicated per example, 1 backward", c),
                ],
            );
        }
        if wanted("w4_summed") {
            let g = mlp.summed();
            let all: Vec<usize> = (0..b).collect();
            ok &= check_mlp("w4_summed", &host_mlp, &all, |p, i| g[p][i]);
            report(
                &mut rows,
                "w4_summed",
                bench(|| mlp.summed()),
                "loss.sum().backward()".into(),
            );
        }
    }

    if wanted("w5") {
        let n = W5_N;
        let wh: Vec<f32> = values(n * n, 11).iter().map(|v| v * 0.1).collect();
        let w = tensor(&dev, &wh, [n, n]);
        let xh = values(n, 12);
        // (a) x repeated n times as the rows of one [n, n] leaf X:
        // Y = tanh(X·Wᵀ), (Y * I).sum().backward() leaves J in X's grad.
        let xr = leaf(&dev, &xh.repeat(n), [n, n]);
        let eye = Tensor::<2>::eye(n, &dev);
        let repeated = || {
            let y = xr.clone().matmul(w.clone().transpose()).tanh();
            let grads = y.mul(eye.clone()).sum().backward();
            read(xr.grad(&grads).unwrap())
        };
        let j = repeated();
        ok &= check_w5(|k, i| j[k * n + i]);
        let a = bench(repeated);
        // (b) n backward passes of y[k], each on its own forward.
        let x = leaf(&dev, &xh, [n, 1]);
        let looped = || {
            read_all((0..n).map(|k| {
                let y = w.clone().matmul(x.clone()).tanh();
                let grads = y.slice([k..k + 1, 0..1]).sum().backward();
                x.grad(&grads).unwrap()
            }))
        };
        let j = looped();
        ok &= check_w5(|k, i| j[k][i]);
        let b = bench(looped);
        fastest(
            "w5",
            &mut rows,
            vec![
                ("repeated [512,512] leaf, (Y*I).sum().backward()", a),
                ("loop of 512 backward", b),
            ],
        );
    }

    if wanted("w6") || wanted("w6_k16") {
        let xh = values(CN * CC * CS * CS, 1);
        let wh = values(CO * CC * 9, 2);
        let x = leaf(&dev, &xh, [CN, CC, CS, CS]);
        let w = leaf(&dev, &wh, [CO, CC, 3, 3]);
        let opts = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let out = CN * CO * CS * CS;
        let at = |n: usize, c: usize, i: usize, j: usize| ((n * CC + c) * CS + i) * CS + j;
        let wat = |o: usize, c: usize, p: usize, q: usize| ((o * CC + c) * 3 + p) * 3 + q;
        // One forward + backward with cotangent v, dX and dW read back.
        let one = |v: &Tensor<4>| {
            let y = conv2d(x.clone(), w.clone(), None, opts());
            let grads = y.mul(v.clone()).sum().backward();
            [x.grad(&grads).unwrap(), w.grad(&grads).unwrap()]
        };
        if wanted("w6") {
            let v1h = values(out, 3);
            let v1 = tensor(&dev, &v1h, [CN, CO, CS, CS]);
            let rep = || read_all(one(&v1));
            let g = rep();
            ok &= check_conv(
                "w6",
                &v1h,
                (256, 64),
                |n, c, i, j| g[0][at(n, c, i, j)],
                |o, c, p, q| g[1][wat(o, c, p, q)],
            );
            report(&mut rows, "w6", bench(rep), "(y*v).sum().backward()".into());
        }
        if wanted("w6_k16") {
            let v16h = values(CK * out, 4);
            // (a) 16 forward + backward passes, all 32 gradients in one read.
            let vs: Vec<Tensor<4>> = (0..CK)
                .map(|k| tensor(&dev, &v16h[k * out..(k + 1) * out], [CN, CO, CS, CS]))
                .collect();
            let looped = || read_all(vs.iter().flat_map(&one));
            let g = looped();
            for k in [0, CK - 1] {
                ok &= check_conv(
                    &format!("w6_k16 loop k={k}"),
                    &v16h[k * out..(k + 1) * out],
                    (128, 32),
                    |n, c, i, j| g[2 * k][at(n, c, i, j)],
                    |o, c, p, q| g[2 * k + 1][wat(o, c, p, q)],
                );
            }
            let a = bench(looped);
            // (b) the K copies as channel groups (what vmap over conv does):
            // X' [N, K·C, S, S] with X'[n, k·C + c] = x[n, c], W' [K·O, C, 3, 3]
            // with W'[k·O + o] = w[o], groups = K, and the cotangents laid out
            // as V' [N, K·O, S, S]: dX' holds dX_k, dW' holds dW_k.
            let mut xg = Vec::with_capacity(CK * xh.len());
            for n in 0..CN {
                let img = &xh[n * CC * CS * CS..(n + 1) * CC * CS * CS];
                for _ in 0..CK {
                    xg.extend_from_slice(img);
                }
            }
            let xg = leaf(&dev, &xg, [CN, CK * CC, CS, CS]);
            let wg = leaf(&dev, &wh.repeat(CK), [CK * CO, CC, 3, 3]);
            let plane = CS * CS;
            let mut vg = Vec::with_capacity(CK * out);
            for n in 0..CN {
                for k in 0..CK {
                    let s = k * out + n * CO * plane;
                    vg.extend_from_slice(&v16h[s..s + CO * plane]);
                }
            }
            let vg = tensor(&dev, &vg, [CN, CK * CO, CS, CS]);
            let grouped = || {
                let y = conv2d(
                    xg.clone(),
                    wg.clone(),
                    None,
                    ConvOptions::new([1, 1], [1, 1], [1, 1], CK),
                );
                let grads = y.mul(vg.clone()).sum().backward();
                read_all([xg.grad(&grads).unwrap(), wg.grad(&grads).unwrap()])
            };
            let g = grouped();
            for k in [0, CK - 1] {
                ok &= check_conv(
                    &format!("w6_k16 grouped k={k}"),
                    &v16h[k * out..(k + 1) * out],
                    (128, 32),
                    |n, c, i, j| g[0][at(n, k * CC + c, i, j) + n * (CK - 1) * CC * plane],
                    |o, c, p, q| g[1][wat(k * CO + o, c, p, q)],
                );
            }
            let b = bench(grouped);
            fastest(
                "w6_k16",
                &mut rows,
                vec![
                    ("loop of 16 forward+backward", a),
                    ("16 copies as channel groups, 1 backward", b),
                ],
            );
        }
    }

    if wanted("w9") {
        let x = leaf(&dev, &values(W9_N, 9), [W9_N]);
        let v = tensor(&dev, &values(W9_N, 19), [W9_N]);
        let rep = || {
            let mut y = x.clone();
            for i in 0..W9_OPS {
                y = match i % 3 {
                    0 => y.sin(),
                    1 => y.mul(x.clone()),
                    _ => y.add_scalar(0.5),
                };
            }
            let grads = y.mul(v.clone()).sum().backward();
            read(x.grad(&grads).unwrap())
        };
        ok &= check_w9(&rep());
        report(
            &mut rows,
            "w9",
            bench(rep),
            "(y*v).sum().backward(), graph recorded per rep".into(),
        );
    }

    if wanted("matmul1024") {
        let n = MM_N;
        let a = tensor(&dev, &values(n * n, 13), [n, n]);
        let b = tensor(&dev, &values(n * n, 14), [n, n]);
        let rep = || read(a.clone().matmul(b.clone()));
        ok &= check_matmul(&rep());
        let timing = bench(rep);
        let gflops = 2.0 * (n * n * n) as f64 / (timing.median_ms * 1e-3) / 1e9;
        let note = format!("{gflops:.1} GFLOP/s (median), synchronized by reading C back");
        report(&mut rows, "matmul1024", timing, note);
    }

    println!();
    println!("Burn 0.22.1 (wgpu, autodiff, fusion, autotune) on {name}");
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
    if !ok {
        println!("FAIL: at least one check failed (FAIL lines above)");
        std::process::exit(1);
    }
}
