//! A small 2-layer MLP end to end: `h = tanh(X·W1 + b1)`, `z = h·W2 + b2`,
//! `l = cross_entropy(z, labels) ∈ R^B`. Gradients of W1, b1, W2, b2 from
//! `vjp` against an f64 reference of the whole network and against finite
//! differences of it; `backward_with` accumulating the same gradients into
//! `.grad()`; `vjp_batched` against a loop; and the dispatch count of a
//! batched VJP, which must not depend on K.
//!
//! # Tolerance
//!
//! Every GPU value passes through a handful of f32 stages, each with a
//! relative error of a few ULP: two GEMMs with contractions D = 5 and H = 7
//! (√P·u·Σ|ab|, under 1e-6 here), tanh, exp and log (a few ULP each on
//! lavapipe; see tests/losses.rs), the log-softmax cancellation lse - z
//! (u·|z|, |z| <= ~3 here), and the same again in the adjoints. The loss
//! and its derivatives are O(1) and the network's sensitivities to its
//! intermediates are O(1) at these sizes and scales, so about ten such
//! terms add up to a few times 1e-6; we allow `rtol = atol = 1e-5`.

mod common;

use common::*;
use pullback::{Device, Result, Tensor};

const B: usize = 6;
const D: usize = 5;
const H: usize = 7;
const C: usize = 3;
const LABELS: [u32; B] = [0, 2, 1, 1, 0, 2];
const MLP_TOL: Tol = Tol::new(1e-5, 1e-5);

/// Inputs X [B, D] and initial parameters W1 [D, H], b1 [H], W2 [H, C], b2
/// [C], at the scales of a typical initialisation (W ~ 1/√fan_in).
fn data() -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut r = rng(seed_of("mlp data"));
    let x = sample(&mut r, B * D, Dist::Uniform(-1.5, 1.5));
    let s1 = 1.0 / (D as f32).sqrt();
    let s2 = 1.0 / (H as f32).sqrt();
    let params = vec![
        sample(&mut r, D * H, Dist::Uniform(-1.5 * s1, 1.5 * s1)),
        sample(&mut r, H, Dist::Uniform(-0.3, 0.3)),
        sample(&mut r, H * C, Dist::Uniform(-2.0 * s2, 2.0 * s2)),
        sample(&mut r, C, Dist::Uniform(-0.3, 0.3)),
    ];
    (x, params)
}

const SHAPES: [&[usize]; 4] = [&[D, H], &[H], &[H, C], &[C]];

/// The network on the GPU.
fn gpu_mlp(x: &Tensor, p: &[Tensor]) -> Result<Tensor> {
    let h = x.matmul(&p[0])?.add(&p[1])?.tanh()?;
    h.matmul(&p[2])?.add(&p[3])?.cross_entropy(&LABELS)
}

/// Intermediates of the f64 reference: (h [B, H], z [B, C]).
fn ref_layers(x: &[f64], p: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let (w1, b1, w2, b2) = (&p[0], &p[1], &p[2], &p[3]);
    let mut h = vec![0.0; B * H];
    for b in 0..B {
        for j in 0..H {
            let pre: f64 = (0..D).map(|d| x[b * D + d] * w1[d * H + j]).sum::<f64>() + b1[j];
            h[b * H + j] = pre.tanh();
        }
    }
    let mut z = vec![0.0; B * C];
    for b in 0..B {
        for c in 0..C {
            z[b * C + c] = (0..H).map(|j| h[b * H + j] * w2[j * C + c]).sum::<f64>() + b2[c];
        }
    }
    (h, z)
}

fn softmax_row(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The per-example losses in f64.
fn ref_forward(x: &[f64], p: &[Vec<f64>]) -> Vec<f64> {
    let (_, z) = ref_layers(x, p);
    (0..B)
        .map(|b| {
            let row = &z[b * C..(b + 1) * C];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lse - row[LABELS[b] as usize]
        })
        .collect()
}

/// The analytic VJP in f64: gradients of Σ_b g_b·l_b w.r.t. W1, b1, W2, b2.
fn ref_vjp(x: &[f64], p: &[Vec<f64>], g: &[f64]) -> Vec<Vec<f64>> {
    let (w2, (h, z)) = (&p[2], ref_layers(x, p));
    // dz = g_b·(softmax(z_b) - onehot(label_b))
    let mut dz = [0.0; B * C];
    for b in 0..B {
        let s = softmax_row(&z[b * C..(b + 1) * C]);
        for c in 0..C {
            let hot = if c == LABELS[b] as usize { 1.0 } else { 0.0 };
            dz[b * C + c] = g[b] * (s[c] - hot);
        }
    }
    let mut dw2 = vec![0.0; H * C];
    let mut db2 = vec![0.0; C];
    let mut dpre = vec![0.0; B * H];
    for b in 0..B {
        for c in 0..C {
            db2[c] += dz[b * C + c];
            for j in 0..H {
                dw2[j * C + c] += h[b * H + j] * dz[b * C + c];
            }
        }
        for j in 0..H {
            let dh: f64 = (0..C).map(|c| dz[b * C + c] * w2[j * C + c]).sum();
            dpre[b * H + j] = dh * (1.0 - h[b * H + j] * h[b * H + j]);
        }
    }
    let mut dw1 = vec![0.0; D * H];
    let mut db1 = vec![0.0; H];
    for b in 0..B {
        for j in 0..H {
            db1[j] += dpre[b * H + j];
            for d in 0..D {
                dw1[d * H + j] += x[b * D + d] * dpre[b * H + j];
            }
        }
    }
    vec![dw1, db1, dw2, db2]
}

fn leaves(dev: &Device, params: &[Vec<f32>]) -> Vec<Tensor> {
    params
        .iter()
        .zip(SHAPES)
        .map(|(v, s)| ok(dev.tensor(v, s)).requires_grad())
        .collect()
}

/// The harness: forward, reference VJP vs FD, vjp and vjp_batched
/// (K = 1, 4, 64) for random cotangents.
#[test]
fn mlp_gradients_match_the_reference() {
    let (x, params) = data();
    let xt = tensor(&x, &[B, D]);
    let x64 = to_f64(&x);
    let (xf, xv) = (x64.clone(), x64);
    let mut check = VjpCheck::new("mlp")
        .output(&[B])
        .forward_tol(MLP_TOL)
        .vjp_tol(MLP_TOL)
        .batch_sizes(&[1, 4, 64]);
    for (v, s) in params.into_iter().zip(SHAPES) {
        check = check.input_data(s, v);
    }
    check.run(
        |p| gpu_mlp(&xt, p),
        |p| ref_forward(&xf, p),
        |p, g| ref_vjp(&xv, p, g),
    );
}

/// The mean loss's gradient (cotangent ones/B) from `vjp`, directly against
/// central finite differences of the f64 network. The FD values themselves
/// are accurate to ~1e-10 (see `Tol::FD`); the tolerance is the GPU's.
#[test]
fn mean_loss_gradient_matches_finite_differences() {
    let (x, params) = data();
    let dev = dev();
    let xt = tensor(&x, &[B, D]);
    let p = leaves(dev, &params);
    let l = ok(gpu_mlp(&xt, &p));
    let seed = ok(dev.full(&[B], 1.0 / B as f32));
    let refs: Vec<&Tensor> = p.iter().collect();
    let grads = ok(pullback::vjp(&[&l], &[&seed], &refs));
    let x64 = to_f64(&x);
    let p64: Vec<Vec<f64>> = params.iter().map(|v| to_f64(v)).collect();
    let v = vec![(1.0 / B as f32) as f64; B];
    let fd = finite_difference_vjp(&|p| ref_forward(&x64, p), &p64, &v, usize::MAX);
    let names = ["W1", "b1", "W2", "b2"];
    let mut worst = ErrStats::default();
    for (i, (indices, values)) in fd.iter().enumerate() {
        assert_eq!(indices.len(), p64[i].len());
        let s = assert_close_f32(
            &format!("mean loss gradient of {} vs finite differences", names[i]),
            &read(&grads[i]),
            values,
            SHAPES[i],
            MLP_TOL,
        );
        worst = worst.merge(s);
    }
    eprintln!("[mlp] mean-loss gradient vs FD: {worst}");
}

/// `backward_with(ones)` puts into `.grad()` exactly what `vjp` with the
/// same cotangent returns (same graph, same kernels), and a second call
/// accumulates: the gradients double (x + x is exact in f32).
#[test]
fn backward_with_accumulates_the_vjp() {
    let (x, params) = data();
    let dev = dev();
    let xt = tensor(&x, &[B, D]);
    let p = leaves(dev, &params);
    let l = ok(gpu_mlp(&xt, &p));
    let ones = ok(dev.ones(&[B]));
    let refs: Vec<&Tensor> = p.iter().collect();
    let want: Vec<Vec<f32>> = ok(pullback::vjp(&[&l], &[&ones], &refs))
        .iter()
        .map(read)
        .collect();
    for t in &p {
        assert!(t.grad().is_none());
    }
    ok(l.backward_with(&ones));
    for (i, t) in p.iter().enumerate() {
        let g = t.grad().expect("every parameter gets a gradient");
        assert_eq!(g.shape(), SHAPES[i]);
        assert_eq!(read(&g), want[i], "parameter {i} after one backward_with");
    }
    ok(l.backward_with(&ones));
    for (i, t) in p.iter().enumerate() {
        let twice: Vec<f32> = want[i].iter().map(|v| v * 2.0).collect();
        assert_eq!(read(&t.grad().unwrap()), twice, "parameter {i} after two");
    }
    // And the values are the right ones: against the f64 reference.
    let p64: Vec<Vec<f64>> = params.iter().map(|v| to_f64(v)).collect();
    let r = ref_vjp(&to_f64(&x), &p64, &[1.0; B]);
    for (i, t) in p.iter().enumerate() {
        let half: Vec<f32> = read(&t.grad().unwrap()).iter().map(|v| v / 2.0).collect();
        assert_close_f32("backward_with(ones)", &half, &r[i], SHAPES[i], MLP_TOL);
    }
    for t in &p {
        t.zero_grad();
        assert!(t.grad().is_none());
    }
}

/// `vjp_batched` with K = 4 equals four single `vjp` calls, bit for bit.
#[test]
fn vjp_batched_k4_equals_a_loop() {
    let (x, params) = data();
    let dev = dev();
    let xt = tensor(&x, &[B, D]);
    let p = leaves(dev, &params);
    let l = ok(gpu_mlp(&xt, &p));
    let refs: Vec<&Tensor> = p.iter().collect();
    let k = 4;
    let rows = sample(&mut rng(seed_of("mlp K=4")), k * B, COTANGENT);
    let batched = ok(pullback::vjp_batched(
        &[&l],
        &[&tensor(&rows, &[k, B])],
        &refs,
    ));
    for (i, g) in batched.iter().enumerate() {
        assert_eq!(g.shape(), [&[k][..], SHAPES[i]].concat().as_slice());
    }
    let batched: Vec<Vec<f32>> = batched.iter().map(read).collect();
    for r in 0..k {
        let v = tensor(&rows[r * B..(r + 1) * B], &[B]);
        let single = ok(pullback::vjp(&[&l], &[&v], &refs));
        for (i, g) in single.iter().enumerate() {
            let m = numel(SHAPES[i]);
            assert_eq!(
                &batched[i][r * m..(r + 1) * m],
                read(g).as_slice(),
                "row {r} of parameter {i}"
            );
        }
    }
}

/// A batched VJP through matmul + tanh + cross_entropy issues the same
/// dispatches for K = 64 as for K = 1 (every adjoint takes all K
/// cotangents in one dispatch), in one submit.
#[test]
fn dispatch_count_does_not_depend_on_k() {
    let (x, params) = data();
    let dev = fresh_device();
    let xt = ok(dev.tensor(&x, &[B, D]));
    let p = leaves(&dev, &params);
    let l = ok(gpu_mlp(&xt, &p));
    let refs: Vec<&Tensor> = p.iter().collect();
    let mut counts = Vec::new();
    for k in [1, 64, 1, 64] {
        let rows = sample(&mut rng(seed_of(&format!("count {k}"))), k * B, COTANGENT);
        let v = ok(dev.tensor(&rows, &[k, B]));
        ok(dev.synchronize());
        let before = dev.stats();
        let grads = ok(pullback::vjp_batched(&[&l], &[&v], &refs));
        let after = dev.stats();
        let dispatches = after.dispatches - before.dispatches;
        let submits = after.submits - before.submits;
        eprintln!("[mlp] K = {k}: {dispatches} dispatches, {submits} submits");
        counts.push((dispatches, submits));
        assert_eq!(grads[0].shape(), &[k, D, H]);
        assert!(read(&grads[0]).iter().all(|v| v.is_finite()));
    }
    assert!(counts[0].0 > 0);
    assert_eq!(counts[0].1, 1, "one submit per vjp_batched");
    for c in &counts[1..] {
        assert_eq!(*c, counts[0], "dispatches and submits for K = 1, 64, 1, 64");
    }
}
