//! Planning and chunking of batched VJPs: `plan_peak_bytes` against the
//! measured peak for the MLP, W2 and W5 graphs at K = 1, 7, 64; chunked
//! passes under a memory budget equal to the whole pass bit for bit; a
//! cotangent past the adapter's binding limit split into chunks instead of
//! refused; the error when not even one row fits. Each test that sets a
//! budget or reads the counters has a device of its own.

mod common;

use common::*;
use pullback::{Device, Error, Tensor};

/// A graph: output, the inputs whose gradients are asked for.
struct Graph {
    y: Tensor,
    inputs: Vec<Tensor>,
}

fn uniform(d: &Device, name: &str, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let mut r = rng(seed_of(name));
    ok(d.tensor(&sample(&mut r, numel(shape), Dist::Uniform(lo, hi)), shape))
}

/// W2: sin(x)·exp(x), n = 2^16.
fn w2(d: &Device) -> Graph {
    let x = uniform(d, "w2", &[1 << 16], -1.0, 1.0).requires_grad();
    let y = ok(ok(x.sin()).mul(&ok(x.exp())));
    Graph { y, inputs: vec![x] }
}

/// W5: tanh(W·x), 512 → 512.
fn w5(d: &Device) -> Graph {
    let w = uniform(d, "w5 W", &[512, 512], -0.05, 0.05);
    let x = uniform(d, "w5 x", &[512, 1], -1.0, 1.0).requires_grad();
    let y = ok(ok(w.matmul(&x)).tanh());
    Graph { y, inputs: vec![x] }
}

/// The MLP of `examples/mlp.rs` (B = 32, D = 8, H = 32, C = 4): per-example
/// losses `[B]` against all four parameters.
fn mlp(d: &Device) -> Graph {
    let (b, dd, h, c) = (32, 8, 32, 4);
    let x = uniform(d, "mlp x", &[b, dd], -1.0, 1.0);
    let labels: Vec<u32> = (0..b).map(|i| (i % c) as u32).collect();
    let p: Vec<Tensor> = [&[dd, h][..], &[h], &[h, c], &[c]]
        .iter()
        .enumerate()
        .map(|(i, s)| uniform(d, &format!("mlp p{i}"), s, -0.3, 0.3).requires_grad())
        .collect();
    let hid = ok(ok(ok(x.matmul(&p[0])).add(&p[1])).tanh());
    let y = ok(ok(ok(hid.matmul(&p[2])).add(&p[3])).cross_entropy(&labels));
    Graph { y, inputs: p }
}

fn cotangents(d: &Device, g: &Graph, k: usize) -> Tensor {
    let shape = [&[k][..], g.y.shape()].concat();
    uniform(d, &format!("v {k}"), &shape, -1.0, 1.0)
}

/// Runs vjp_batched; returns the gradients' values, the bytes the pass
/// added at its peak and the submits it made.
fn measured(d: &Device, g: &Graph, v: &Tensor) -> (Vec<Vec<f32>>, u64, u64) {
    ok(d.synchronize());
    d.reset_peak();
    let before = d.stats();
    let refs: Vec<&Tensor> = g.inputs.iter().collect();
    let grads = ok(pullback::vjp_batched(&[&g.y], &[v], &refs));
    let after = d.stats();
    let values = grads.iter().map(read).collect();
    (
        values,
        after.peak_bytes - before.live_bytes,
        after.submits - before.submits,
    )
}

#[test]
fn plan_peak_bytes_matches_the_measured_peak() {
    for (name, make) in [("MLP", mlp as fn(&Device) -> Graph), ("W2", w2), ("W5", w5)] {
        let d = fresh_device();
        let g = make(&d);
        let refs: Vec<&Tensor> = g.inputs.iter().collect();
        for k in [1, 7, 64] {
            let v = cotangents(&d, &g, k);
            let planned = ok(pullback::plan_peak_bytes(&[&g.y], &refs, k));
            let (_, peak, submits) = measured(&d, &g, &v);
            assert_eq!(submits, 1, "{name} K={k}: one pass");
            let off = (planned as f64 - peak as f64).abs() / peak as f64;
            eprintln!(
                "{name} K={k}: planned {planned} B, measured {peak} B ({:.2}% off)",
                off * 100.0
            );
            assert!(
                off <= 0.10,
                "{name} K={k}: planned {planned} B vs measured {peak} B"
            );
        }
    }
}

#[test]
fn a_budget_splits_k_into_chunks_with_identical_results() {
    for (name, make) in [("MLP", mlp as fn(&Device) -> Graph), ("W2", w2), ("W5", w5)] {
        let d = fresh_device();
        let g = make(&d);
        let refs: Vec<&Tensor> = g.inputs.iter().collect();
        let k = 64;
        let v = cotangents(&d, &g, k);
        let (whole, whole_peak, _) = measured(&d, &g, &v);
        let results: u64 = g.inputs.iter().map(|x| (4 * k * x.numel()) as u64).sum();
        // A budget of a quarter of the whole pass's working memory. A fused
        // pass (W2: one kernel writes the gradient rows straight into the
        // result) has none beyond the result; chunked, its per-chunk
        // results are working memory, so a quarter of those.
        let working = whole_peak - results;
        let budget = if working > 0 {
            working / 4
        } else {
            results / 4
        };
        d.set_memory_budget(budget);
        let planned = ok(pullback::plan_peak_bytes(&[&g.y], &refs, k));
        let (chunked, peak, submits) = measured(&d, &g, &v);
        eprintln!(
            "{name} K={k}: whole {whole_peak} B; budget {budget} B: {submits} passes, \
             peak {peak} B (planned {planned} B)"
        );
        assert!(
            submits >= 4,
            "{name}: {submits} passes under a quarter budget"
        );
        assert_eq!(chunked, whole, "{name}: chunked result differs");
        let off = (planned as f64 - peak as f64).abs() / peak as f64;
        assert!(
            off <= 0.10,
            "{name}: planned {planned} B vs measured {peak} B"
        );
        // Working memory (the peak less the results) within the budget,
        // up to the size classes' rounding of the results.
        assert!(peak <= budget + results * 5 / 4, "{name}: peak {peak} B");
    }
}

#[test]
fn budget_too_small_for_one_row() {
    let d = fresh_device();
    let g = w2(&d);
    let v = cotangents(&d, &g, 4);
    d.set_memory_budget(1000);
    let e = expect_err(
        pullback::vjp_batched(&[&g.y], &[&v], &[&g.inputs[0]]),
        &["bytes", "budget", "1000"],
    );
    match e {
        Error::MemoryBudget { row_bytes, budget } => {
            assert_eq!(budget, 1000);
            // At least a row of the chunk's result and, unfused, the
            // intermediate cotangents (fused: none).
            assert!(row_bytes >= 4 * (1u64 << 16), "{row_bytes}");
        }
        other => panic!("expected MemoryBudget, got {other:?}"),
    }
    expect_err(
        pullback::plan_peak_bytes(&[&g.y], &[&g.inputs[0]], 4),
        &["budget"],
    );
    d.clear_memory_budget();
    assert_usable(&d);
}

/// The case: a `[64, 2^20]` cotangent (256 MiB) is past lavapipe's
/// 128 MiB binding limit. It is split into chunks instead of refused; the
/// gradient, as large, is read back (ops refuse it: kernels bind whole
/// buffers). Rows are checked against f64.
#[test]
fn a_cotangent_past_the_binding_limit_is_chunked() {
    let d = fresh_device();
    let (k, n) = (64usize, 1usize << 20);
    let limit = d.wgpu_device().limits().max_storage_buffer_binding_size as usize;
    let xv: Vec<f32> = (0..n).map(|i| ((i % 1999) as f32 / 1999.0) - 0.5).collect();
    let x = ok(d.tensor(&xv, &[n])).requires_grad();
    let y = ok(ok(x.sin()).mul(&ok(x.exp())));
    let vv: Vec<f32> = (0..k * n)
        .map(|i| 1.0 - ((i % 997) as f32 / 997.0))
        .collect();
    let v = ok(d.tensor(&vv, &[k, n]));
    let before = d.stats().submits;
    let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
    let passes = d.stats().submits - before;
    if 4 * k * n > limit {
        assert!(passes >= 2, "{passes} passes for {} bytes", 4 * k * n);
        let e = expect_err(g[0].exp(), &["bytes", "to_vec"]);
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    }
    let got = read(&g[0]);
    // d/dx sin(x)e^x = (cos x + sin x) e^x; f32 kernels: a few roundings.
    for row in [0, 1, k / 2, k - 1] {
        for i in (0..n).step_by(4099) {
            let xi = xv[i] as f64;
            let want = vv[row * n + i] as f64 * (xi.cos() + xi.sin()) * xi.exp();
            let err = (got[row * n + i] as f64 - want).abs();
            assert!(
                err <= 1e-6 * want.abs().max(1.0),
                "row {row} [{i}]: {} vs {want}",
                got[row * n + i]
            );
        }
    }
    assert_usable(&d);
}

#[test]
fn the_budget_is_per_device_and_off_by_default() {
    let d = fresh_device();
    assert_eq!(d.memory_budget(), None);
    d.set_memory_budget(1 << 20);
    assert_eq!(d.memory_budget(), Some(1 << 20));
    assert_eq!(fresh_device().memory_budget(), None);
    d.clear_memory_budget();
    assert_eq!(d.memory_budget(), None);
}
