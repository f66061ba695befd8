//! Shapes that change (issue 22): a loop over new K and n compiles a
//! bounded number of kernel variants, a region's kernel for any row length
//! serves aligned rows too, the rows of every K are right
//! whatever block of rows computes them, a Jacobian's tail chunk compiles
//! nothing, the pipeline cache evicts past its limit, the pool reuses
//! nearby sizes instead of holding one buffer per size, and a loop over
//! sizes past the idle cap keeps its largest buffers.

mod common;

use common::*;
use pullback::{Device, JacobianOptions, Tensor};

/// Compositions of sin, exp and tanh (see `tests/chains.rs`): each term
/// carries Vulkan's few-ULP errors (rel ~4e-7). The derivative sums
/// cos x·eˣ and sin x·eˣ, terms up to e^1.5 ≈ 4.5 that cancel near
/// x = −π/4, so its error is absolute: 4.5 · 4e-7 ≈ 1.8e-6 per term.
/// Measured: abs 1.14e-6 where the derivative is 4e-3.
const CHAIN: Tol = Tol::new(1e-5, 3e-6);

/// A unary op of `Tensor`.
type UnaryOp = fn(&Tensor) -> pullback::Result<Tensor>;
/// Its f64 reference.
type Reference = fn(f64) -> f64;

/// `y = tanh(sin(x)·exp(x))`, the graph of issue 22's W10.
fn graph(x: &Tensor) -> Tensor {
    ok(ok(ok(x.sin()).mul(&ok(x.exp()))).tanh())
}

/// dy/dx of [`graph`] in f64: (1 − tanh²(u))·(cos x + sin x)·eˣ, u = sin x·eˣ.
fn derivative(x: f64) -> f64 {
    let u = x.sin() * x.exp();
    (1.0 - u.tanh().powi(2)) * (x.cos() + x.sin()) * x.exp()
}

/// One step: the VJP of K cotangents through the graph at x (n values),
/// checked against f64 on every element; returns pipelines it created.
fn checked_step(dev: &Device, n: usize, k: usize, seed: u64) -> u64 {
    checked_product(dev, n, k, seed, Product::Vjp)
}

/// Which K products a step takes: cotangents pulled back (`vjp_batched`)
/// or tangents pushed forward (`jvp_batched`, the fused tangent kernel).
#[derive(Clone, Copy, Debug)]
enum Product {
    Vjp,
    Jvp,
}

/// One step of `product` with K rows `[k, n]` at x (n values), checked
/// against f64 on every element: the graph's Jacobian is diagonal, so
/// either product is each row times dy/dx. Returns pipelines it created.
fn checked_product(dev: &Device, n: usize, k: usize, seed: u64, product: Product) -> u64 {
    let mut r = rng(seed);
    let xv = sample(&mut r, n, Dist::Uniform(-1.5, 1.5));
    let vv = sample(&mut r, k * n, COTANGENT);
    let before = dev.stats().pipelines;
    let x = ok(dev.tensor(&xv, &[n])).requires_grad();
    let y = graph(&x);
    let v = ok(dev.tensor(&vv, &[k, n]));
    let g = match product {
        Product::Vjp => ok(pullback::vjp_batched(&[&y], &[&v], &[&x])),
        Product::Jvp => ok(pullback::jvp_batched(&[&y], &[&x], &[&v])),
    };
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].shape(), &[k, n]);
    let want: Vec<f64> = (0..k * n)
        .map(|i| vv[i] as f64 * derivative(xv[i % n] as f64))
        .collect();
    let what = format!("{product:?} n={n} K={k}");
    assert_close(&what, &to_f64(&read(&g[0])), &want, &[k, n], CHAIN);
    dev.stats().pipelines - before
}

#[test]
fn sixty_four_steps_with_k_one_to_sixty_four_compile_at_most_sixteen_pipelines() {
    let dev = fresh_device();
    let mut created = 0;
    for k in 1..=64 {
        created += checked_step(&dev, 3000, k, seed_of("k sweep") + k as u64);
    }
    // The forward's kernels (its ops alone the first time, then fused)
    // and the fused adjoint: one variant for one row, one for more.
    assert!(created <= 16, "64 steps compiled {created} pipelines");
    assert_eq!(dev.stats().pipelines, created);
}

#[test]
fn new_row_lengths_compile_nothing_once_both_alignments_were_seen() {
    let dev = fresh_device();
    // Aligned (n % 4 == 0) and not, one row and more: every variant.
    for (i, (n, k)) in [(4000, 1), (4000, 3), (4001, 1), (4001, 3)]
        .into_iter()
        .enumerate()
    {
        checked_step(&dev, n, k, seed_of("warm") + i as u64);
    }
    let mut created = 0;
    for (i, n) in (5000..5040).step_by(3).enumerate() {
        let k = 1 + (i * 7) % 20;
        created += checked_step(&dev, n, k, seed_of("lengths") + i as u64);
    }
    assert_eq!(created, 0, "new n and K compiled {created} pipelines");
}

#[test]
fn rows_of_any_length_seen_first_serve_aligned_rows_without_a_compile() {
    // A region's kernel for any n, compiled for an unaligned n first, runs
    // aligned rows too (n % 4 == 0; one row and more, adjoint and
    // tangent), right, and nothing more is compiled for them. Fusion on
    // whatever PULLBACK_FUSION says: without it each op runs its own
    // kernels, which have aligned variants of their own.
    let dev = fresh_device();
    dev.set_fused_adjoints(true);
    dev.set_fused_forward(true);
    for (i, k) in [3, 1, 3, 1].into_iter().enumerate() {
        let seed = seed_of("any n") + i as u64;
        for product in [Product::Vjp, Product::Jvp] {
            checked_product(&dev, 4001, k, seed, product);
        }
    }
    let mut created = 0;
    for (i, (n, k)) in [(4000, 3), (4000, 1), (4096, 9), (8, 2)]
        .into_iter()
        .enumerate()
    {
        let seed = seed_of("aligned after any n") + i as u64;
        for product in [Product::Vjp, Product::Jvp] {
            created += checked_product(&dev, n, k, seed, product);
        }
    }
    assert_eq!(created, 0, "aligned rows compiled {created} pipelines");
}

#[test]
fn every_k_is_right_around_the_blocks_of_rows() {
    // CPU adapters compute K rows in blocks of 8 workgroups along z: K
    // below, at and past a block, aligned rows and not.
    let dev = dev();
    for n in [4096, 4099, 5] {
        for k in [1, 2, 7, 8, 9, 16, 17, 33] {
            checked_step(dev, n, k, seed_of("blocks") + (n * 100 + k) as u64);
        }
    }
}

#[test]
fn a_jacobians_tail_chunk_compiles_nothing() {
    let dev = fresh_device();
    let mut r = rng(seed_of("tail"));
    let xv = sample(&mut r, 12, Dist::Uniform(-1.5, 1.5));
    let x = ok(dev.tensor(&xv, &[12])).requires_grad();
    let y = graph(&x);
    let jacobian = |rows: usize| {
        let options = JacobianOptions {
            chunk_rows: Some(rows),
            ..Default::default()
        };
        read(&ok(pullback::jacobian_with(&y, &x, options)))
    };
    // Chunks of 4, 4, 4 compile what a Jacobian needs; 5, 5, 2 (a tail)
    // and 3, 3, 3, 3 then compile nothing.
    let whole = jacobian(4);
    let before = dev.stats().pipelines;
    for rows in [5, 3] {
        assert_eq!(jacobian(rows), whole, "chunks of {rows}");
    }
    assert_eq!(dev.stats().pipelines - before, 0);
    // The Jacobian is diagonal: dy_i/dx_i.
    for i in 0..12 {
        for j in 0..12 {
            let want = if i == j {
                derivative(xv[i] as f64)
            } else {
                0.0
            };
            let got = whole[i * 12 + j] as f64;
            assert!(
                (got - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                "J[{i},{j}] = {got}, want {want}"
            );
        }
    }
}

#[test]
fn the_pipeline_cache_evicts_the_least_recently_used_past_its_limit() {
    let dev = fresh_device();
    dev.set_fused_forward(false); // one pipeline per op, so the count is known
    dev.set_pipeline_limit(2);
    let x = ok(dev.tensor(&[0.25, -0.5, 1.0], &[3]));
    let ops: [(UnaryOp, Reference); 4] = [
        (Tensor::sin, f64::sin),
        (Tensor::exp, f64::exp),
        (Tensor::tanh, f64::tanh),
        (Tensor::cos, f64::cos),
    ];
    let run = |i: usize| {
        let (op, f) = ops[i];
        let got = read(&ok(op(&x)));
        for (g, v) in got.iter().zip([0.25, -0.5, 1.0]) {
            assert!(
                (*g as f64 - f(v)).abs() <= 2e-6 * f(v).abs().max(1.0),
                "op {i}"
            );
        }
        assert!(
            dev.cached_pipelines() <= 2,
            "{} cached",
            dev.cached_pipelines()
        );
    };
    for i in 0..4 {
        run(i);
    }
    let compiled = dev.stats().pipelines;
    assert!(compiled >= 4, "{compiled}");
    // cos was used last: still cached. sin was evicted: compiled again.
    run(3);
    assert_eq!(dev.stats().pipelines, compiled);
    run(0);
    assert_eq!(dev.stats().pipelines, compiled + 1);
    // Lowering the limit evicts at once, the least recently used first.
    dev.set_pipeline_limit(1);
    assert_eq!(dev.cached_pipelines(), 1);
    run(0);
    assert_eq!(
        dev.stats().pipelines,
        compiled + 1,
        "sin was the most recent"
    );
}

#[test]
fn the_pool_reuses_nearby_sizes_instead_of_one_buffer_per_size() {
    let dev = fresh_device();
    let mut r = rng(seed_of("pool sizes"));
    // Sizes shrinking 3% a step: each step's buffers can serve the next
    // (a buffer serves requests down to half its size class).
    let mut allocations_after_first = None;
    let mut n = 400_000usize;
    for step in 0..20 {
        let xv = sample(&mut r, n, Dist::Uniform(-1.0, 1.0));
        let x = ok(dev.tensor(&xv, &[n]));
        let y = ok(ok(x.mul(&x)).add(&x));
        let got = read(&y);
        assert_eq!(got.len(), n);
        for i in [0, n / 2, n - 1] {
            let want = xv[i] as f64 * xv[i] as f64 + xv[i] as f64;
            assert!(
                (got[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "step {step} [{i}]"
            );
        }
        drop((x, y));
        let stats = dev.stats();
        assert!(
            stats.pooled_bytes <= stats.peak_bytes.max(64 << 20),
            "idle {} past the peak {}",
            stats.pooled_bytes,
            stats.peak_bytes
        );
        allocations_after_first.get_or_insert(stats.allocations);
        n = n * 97 / 100;
    }
    assert_eq!(
        dev.stats().allocations,
        allocations_after_first.unwrap(),
        "smaller sizes reuse the first step's buffers"
    );
}

/// A loop over three sizes whose buffers do not all fit the idle cap
/// (64 MiB here: 16 + 24 + 32 MiB) keeps its largest: a returned buffer
/// releases the least recently returned ones no larger than it, so after
/// the first round nothing is created again: storage, upload staging or
/// readback staging.
/// (Refusing the returned buffer instead kept the first two sizes and
/// created the 32 MiB ones anew every round.) Uploads reuse their staging
/// buffers, mapped again once their copies ran.
#[test]
fn a_loop_over_sizes_past_the_idle_cap_keeps_its_largest_buffers() {
    let dev = fresh_device();
    let mut r = rng(seed_of("idle lru"));
    let mut after_first_round = None;
    for round in 0..3 {
        for n in [4usize << 20, 6 << 20, 8 << 20] {
            let xv = sample(&mut r, n, Dist::Uniform(-1.0, 1.0));
            let x = ok(dev.tensor(&xv, &[n]));
            let got = read(&x);
            for i in [0, n / 3, n - 1] {
                assert_eq!(got[i], xv[i], "round {round}, n {n} [{i}]");
            }
        }
        let s = dev.stats();
        let created = (s.allocations, s.upload_allocations, s.staging_allocations);
        let first = *after_first_round.get_or_insert(created);
        assert_eq!(created, first, "round {round} created buffers again: {s:?}");
        assert!(s.pooled_bytes <= s.peak_bytes.max(64 << 20), "{s:?}");
    }
    assert!(
        after_first_round.unwrap().1 >= 1,
        "uploads go through staging"
    );
}

/// Many small sizes after a large one do not push the large buffers out:
/// a returned buffer releases only idle ones no larger than it (a large
/// one serves more requests and costs more to create again), so the large
/// size comes back without creating anything.
#[test]
fn small_sizes_do_not_push_out_a_larger_idle_buffer() {
    let dev = fresh_device();
    let mut r = rng(seed_of("idle large kept"));
    let mut round_trip = |n: usize| {
        let xv = sample(&mut r, n, Dist::Uniform(-1.0, 1.0));
        let got = read(&ok(dev.tensor(&xv, &[n])));
        assert_eq!((got[0], got[n - 1]), (xv[0], xv[n - 1]), "n {n}");
    };
    let large = 8 << 20; // 32 MiB, half the idle cap
    round_trip(large);
    // 24 sizes of 3 to 4 MiB: 84 MiB in all, more than the cap.
    for i in 0..24 {
        round_trip((3 << 18) + i * 10_007);
    }
    let s = dev.stats();
    let before = (s.allocations, s.upload_allocations, s.staging_allocations);
    round_trip(large);
    let s = dev.stats();
    let after = (s.allocations, s.upload_allocations, s.staging_allocations);
    assert_eq!(after, before, "the large buffers were released: {s:?}");
}
