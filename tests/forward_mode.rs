//! Forward mode's API beyond the per-op checks (every op's tangent rule is
//! checked against float64 by the VJP harness's stage (e)): `jvp` and
//! `jvp_batched` on graphs with several inputs and outputs, inputs that
//! depend on each other, untracked and unreached outputs, chunking under a
//! memory budget, Jacobians in both modes, fused against unfused tangents,
//! Gauss-Newton products, custom ops' tangent rules, and the errors.

mod common;

use common::*;
use pullback::{Curvature, CustomOp, Error, JacobianMode, JacobianOptions, Tensor};

/// Σ a·b over two flat vectors, and the sum of |a·b| (its rounding scale).
fn dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let t = x as f64 * y as f64;
        (s + t, m + t.abs())
    })
}

/// ⟨u, J·t⟩ from `jvp` against ⟨Jᵀ·u, t⟩ from `vjp`, both on the GPU, for
/// a graph with two inputs and two outputs sharing subexpressions; within
/// 1e-5 of the terms' magnitude (f32 values of a few ops).
#[test]
fn jvp_is_the_transpose_of_vjp_on_a_shared_graph() {
    let mut r = rng(seed_of("transpose"));
    let x = tensor(&sample(&mut r, 12, Dist::Uniform(-1.0, 1.0)), &[3, 4]).requires_grad();
    let w = tensor(&sample(&mut r, 20, Dist::Uniform(-1.0, 1.0)), &[4, 5]).requires_grad();
    let h = ok(ok(x.matmul(&w)).tanh());
    let y1 = ok(ok(h.mul(&h)).sum(&[1], false));
    let y2 = ok(ok(h.softmax(1)).add(&ok(x.sum(&[1], true))));
    let tx = sample(&mut r, 12, COTANGENT);
    let tw = sample(&mut r, 20, COTANGENT);
    let jt = ok(pullback::jvp(
        &[&y1, &y2],
        &[&x, &w],
        &[&tensor(&tx, &[3, 4]), &tensor(&tw, &[4, 5])],
    ));
    assert_eq!(jt[0].shape(), &[3]);
    assert_eq!(jt[1].shape(), &[3, 5]);
    let u1 = sample(&mut r, 3, COTANGENT);
    let u2 = sample(&mut r, 15, COTANGENT);
    let g = ok(pullback::vjp(
        &[&y1, &y2],
        &[&tensor(&u1, &[3]), &tensor(&u2, &[3, 5])],
        &[&x, &w],
    ));
    let (l1, m1) = dot(&u1, &read(&jt[0]));
    let (l2, m2) = dot(&u2, &read(&jt[1]));
    let (r1, m3) = dot(&read(&g[0]), &tx);
    let (r2, m4) = dot(&read(&g[1]), &tw);
    let (left, right) = (l1 + l2, r1 + r2);
    assert!(
        (left - right).abs() <= 1e-5 * (m1 + m2 + m3 + m4),
        "<u, J·t> = {left} but <J^T·u, t> = {right}"
    );
}

/// An input computed from another input gets its seed added to what flows
/// into it, as `vjp` sums both paths: the transpose holds there too.
#[test]
fn an_input_computed_from_another_gets_both_paths() {
    let x = tensor(&[0.3, -0.7, 1.1], &[3]).requires_grad();
    let s = ok(x.sin());
    let z = ok(s.mul(&x));
    let (tx, ts) = ([0.5f32, -1.0, 0.25], [1.0f32, 0.5, -0.75]);
    let jt = ok(pullback::jvp(
        &[&z],
        &[&x, &s],
        &[&tensor(&tx, &[3]), &tensor(&ts, &[3])],
    ));
    // dz = (s + x·cos x)·ṫx via both paths through x, plus x·ṫs through s.
    let xs = [0.3f64, -0.7, 1.1];
    for (i, &got) in read(&jt[0]).iter().enumerate() {
        let (xi, t, u) = (xs[i], tx[i] as f64, ts[i] as f64);
        let want = (xi.sin() + xi * xi.cos()) * t + xi * u;
        assert!(
            (got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "{i}: {got} vs {want}"
        );
    }
}

/// An output no input reaches, and an untracked output, get zeros; an
/// output that is itself an input passes its tangent through.
#[test]
fn unreached_and_untracked_outputs_get_zeros() {
    let x = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let other = tensor(&[3.0, 4.0], &[2]).requires_grad();
    let y = ok(other.exp());
    let plain = tensor(&[5.0, 6.0], &[2]);
    let t = tensor(&[1.0, -1.0], &[2]);
    let jt = ok(pullback::jvp(&[&y, &plain, &x], &[&x], &[&t]));
    assert_eq!(read(&jt[0]), vec![0.0, 0.0]);
    assert_eq!(read(&jt[1]), vec![0.0, 0.0]);
    assert_eq!(read(&jt[2]), vec![1.0, -1.0]);
    let tb = tensor(&[1.0, -1.0, 2.0, 0.5], &[2, 2]);
    let jb = ok(pullback::jvp_batched(&[&plain, &x], &[&x], &[&tb]));
    assert_eq!(jb[0].shape(), &[2, 2]);
    assert_eq!(read(&jb[0]), vec![0.0; 4]);
    assert_eq!(read(&jb[1]), vec![1.0, -1.0, 2.0, 0.5]);
}

/// A small memory budget splits K into chunks, each its own pass, with the
/// same results bit for bit: `jvp_batched`, `hvp_batched` and a forward
/// Jacobian.
#[test]
fn chunked_equals_whole() {
    let d = fresh_device();
    let mut r = rng(seed_of("chunked forward"));
    let n = 256;
    let x = ok(d.tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), &[n])).requires_grad();
    let w = ok(d.tensor(
        &sample(&mut r, 2 * n * n, Dist::Uniform(-0.1, 0.1)),
        &[2 * n, n],
    ));
    let y = ok(ok(w.matmul(&ok(x.reshape(&[n, 1])))).tanh());
    let loss = ok(ok(y.square()).sum_all());
    let k = 40;
    let t = ok(d.tensor(&sample(&mut r, k * n, COTANGENT), &[k, n]));
    let whole = read(&ok(pullback::jvp_batched(&[&y], &[&x], &[&t]))[0]);
    let hv_whole = read(&ok(pullback::hvp_batched(&loss, &[&x], &[&t]))[0]);
    let jac_whole = read(&ok(pullback::jacobian_with(
        &y,
        &x,
        JacobianOptions {
            mode: JacobianMode::Forward,
            ..Default::default()
        },
    )));
    d.set_memory_budget(64 * 1024);
    let before = d.stats().submits;
    let chunked = read(&ok(pullback::jvp_batched(&[&y], &[&x], &[&t]))[0]);
    assert!(
        d.stats().submits - before > 1,
        "the budget split the tangents"
    );
    assert_eq!(chunked, whole, "jvp_batched");
    assert_eq!(
        read(&ok(pullback::hvp_batched(&loss, &[&x], &[&t]))[0]),
        hv_whole,
        "hvp_batched"
    );
    let jac = read(&ok(pullback::jacobian_with(
        &y,
        &x,
        JacobianOptions {
            mode: JacobianMode::Forward,
            ..Default::default()
        },
    )));
    assert_eq!(jac, jac_whole, "forward Jacobian");
    d.clear_memory_budget();
}

/// Both modes give the same Jacobian, `[*y.shape, *x.shape]`; `Auto`
/// takes the one with fewer rows: a pass per row with `chunk_rows` = 1.
#[test]
fn jacobians_agree_in_both_modes_and_auto_takes_the_shorter() {
    let d = fresh_device();
    let mut r = rng(seed_of("jacobian modes"));
    let (m, n) = (24, 3);
    let w = ok(d.tensor(&sample(&mut r, m * n, Dist::Uniform(-1.0, 1.0)), &[m, n]));
    let x = ok(d.tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), &[n, 1])).requires_grad();
    let tall = ok(ok(w.matmul(&x)).sin());
    let wide = ok(ok(ok(x.reshape(&[1, n])).matmul(&ok(w.transpose(0, 1)))).sin());
    for (y, rows_auto) in [(&tall, n), (&wide, n)] {
        let opts = |mode, chunk_rows| JacobianOptions { mode, chunk_rows };
        let fwd = read(&ok(pullback::jacobian_with(
            y,
            &x,
            opts(JacobianMode::Forward, None),
        )));
        let rev = read(&ok(pullback::jacobian_with(
            y,
            &x,
            opts(JacobianMode::Reverse, None),
        )));
        for (a, b) in fwd.iter().zip(&rev) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert_eq!(
            ok(pullback::jacobian(y, &x)).shape(),
            &[y.shape(), x.shape()].concat()[..]
        );
        let before = d.stats().submits;
        ok(pullback::jacobian_with(
            y,
            &x,
            opts(JacobianMode::Auto, Some(1)),
        ));
        let passes = (d.stats().submits - before) as usize;
        // tall: x has 3 elements, y 24 (forward); wide: y has 24, x 3 (forward again).
        assert_eq!(passes, rows_auto, "Auto for y of shape {:?}", y.shape());
    }
    // y with fewer elements than x: reverse mode, one pass per row of y.
    let short = ok(ok(x.sum_all()).reshape(&[1]));
    let before = d.stats().submits;
    ok(pullback::jacobian_with(
        &short,
        &x,
        JacobianOptions {
            mode: JacobianMode::Auto,
            chunk_rows: Some(1),
        },
    ));
    assert_eq!(d.stats().submits - before, 1);
}

/// Fused and unfused tangent sweeps agree (the fused one applies the same
/// factors, grouped differently: a few ULP).
#[test]
fn fused_and_unfused_tangents_agree() {
    let d = fresh_device();
    let mut r = rng(seed_of("fused tangents"));
    let n = 1000;
    let x = ok(d.tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), &[n])).requires_grad();
    let b = ok(d.tensor(&sample(&mut r, n, Dist::Uniform(0.5, 1.5)), &[n])).requires_grad();
    let y = ok(ok(ok(ok(x.sin()).mul(&ok(x.exp()))).div(&b)).tanh());
    let k = 5;
    let tx = ok(d.tensor(&sample(&mut r, k * n, COTANGENT), &[k, n]));
    let tb = ok(d.tensor(&sample(&mut r, k * n, COTANGENT), &[k, n]));
    d.set_fused_adjoints(true);
    ok(d.synchronize()); // the forward ops run first
    let before = d.stats().dispatches;
    let fused = read(&ok(pullback::jvp_batched(&[&y], &[&x, &b], &[&tx, &tb]))[0]);
    let fused_dispatches = d.stats().dispatches - before;
    d.set_fused_adjoints(false);
    let before = d.stats().dispatches;
    let plain = read(&ok(pullback::jvp_batched(&[&y], &[&x, &b], &[&tx, &tb]))[0]);
    let plain_dispatches = d.stats().dispatches - before;
    assert!(
        plain_dispatches > fused_dispatches,
        "fusion saved no kernel: {fused_dispatches} fused, {plain_dispatches} not"
    );
    for (a, p) in fused.iter().zip(&plain) {
        assert!((a - p).abs() <= 1e-5 * (1.0 + p.abs()), "{a} vs {p}");
    }
}

/// Gauss-Newton products: equal to the HVP for a linear model with squared
/// error (its Hessian is JᵀJ), and vᵀGv ≥ 0 for softmax cross-entropy.
#[test]
fn gauss_newton_products() {
    let mut r = rng(seed_of("ggn"));
    let (b, d, c) = (6, 4, 3);
    let x = tensor(&sample(&mut r, b * d, Dist::Uniform(-1.0, 1.0)), &[b, d]);
    let w = tensor(&sample(&mut r, d * c, Dist::Uniform(-1.0, 1.0)), &[d, c]).requires_grad();
    let target = tensor(&sample(&mut r, b * c, Dist::Uniform(-1.0, 1.0)), &[b, c]);
    let z = ok(x.matmul(&w));
    let loss = ok(ok(ok(ok(z.sub(&target)).square()).sum_all()).mul_scalar(0.5));
    let k = 4;
    let v = tensor(&sample(&mut r, k * d * c, COTANGENT), &[k, d, c]);
    let g = read(
        &ok(pullback::gnvp_batched(
            &z,
            &[&w],
            Curvature::SquaredError,
            &[&v],
        ))[0],
    );
    let h = read(&ok(pullback::hvp_batched(&loss, &[&w], &[&v]))[0]);
    for (a, e) in g.iter().zip(&h) {
        assert!(
            (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "GGN {a} vs HVP {e}"
        );
    }
    // Cross-entropy: G = Jᵀ(diag p − ppᵀ)J is positive semi-definite.
    let labels: Vec<u32> = (0..b).map(|i| (i % c) as u32).collect();
    let ce = Curvature::SoftmaxCrossEntropy(labels.clone());
    let gv = read(&ok(pullback::gnvp_batched(&z, &[&w], ce, &[&v]))[0]);
    let vs = read(&v);
    for row in 0..k {
        let span = row * d * c..(row + 1) * d * c;
        let (q, mag) = dot(&vs[span.clone()], &gv[span]);
        assert!(q >= -1e-6 * mag, "vᵀGv = {q} < 0 for direction {row}");
    }
    let e = expect_err(
        pullback::gnvp_batched(
            &z,
            &[&w],
            Curvature::SoftmaxCrossEntropy(vec![0; b - 1]),
            &[&v],
        ),
        &["labels"],
    );
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
}

/// Custom ops in forward mode and second order: a tangent entry point (all
/// K rows in one dispatch), a linear op (its forward on each row), and the
/// error that names the op and the builder call when the rule is missing.
#[test]
fn custom_ops_tangents_and_missing_rules() {
    let d = dev();
    // y = x·tanh(x), y' = tanh x + x(1 − tanh² x).
    let forward = r#"
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = pb_thread(wid, nwg, li);
    if (i >= pb.threads) { return; }
    y[i] = x[i] * tanh(x[i]);
}"#;
    let adjoint = r#"
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@compute @workgroup_size(64)
fn adjoint_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = pb_thread(wid, nwg, li);
    if (i >= pb.threads) { return; }
    let v = x[i % pb.n_in];
    let t = tanh(v);
    dx[i] = g[i] * (t + v * (1.0 - t * t));
}"#;
    let tangent = r#"
@group(0) @binding(1) var<storage, read> tx: array<f32>;
@group(0) @binding(2) var<storage, read_write> ty: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@compute @workgroup_size(64)
fn tangent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = pb_thread(wid, nwg, li);
    if (i >= pb.threads) { return; }
    let v = x[i % pb.n_out];
    let t = tanh(v);
    ty[i] = tx[i] * (t + v * (1.0 - t * t));
}"#;
    let build = |name: &str, tangent_src: Option<&str>| {
        let mut b = CustomOp::builder(name)
            .forward(forward)
            .adjoint(adjoint)
            .saves(&[pullback::CustomSave::Input(0)]);
        if let Some(t) = tangent_src {
            b = b.tangent(t);
        }
        ok(b.build(d))
    };
    let with = build("x tanh x", Some(tangent));
    let without = build("x tanh x (no tangent)", None);
    let xs = [0.3f32, -1.2, 0.8, 2.0, -0.1];
    let x = tensor(&xs, &[5]).requires_grad();
    let k = 3;
    let mut r = rng(seed_of("custom tangent"));
    let t = sample(&mut r, k * 5, COTANGENT);
    let y = ok(with.apply(&[&x], &[]));
    let jt = read(&ok(pullback::jvp_batched(&[&y], &[&x], &[&tensor(&t, &[k, 5])]))[0]);
    for (i, &got) in jt.iter().enumerate() {
        let v = xs[i % 5] as f64;
        let want = t[i] as f64 * (v.tanh() + v * (1.0 - v.tanh().powi(2)));
        assert!(
            (got as f64 - want).abs() <= 2e-6 * (1.0 + want.abs()),
            "{i}: {got} vs {want}"
        );
    }
    let y2 = ok(without.apply(&[&x], &[]));
    let e = expect_err(
        pullback::jvp(&[&y2], &[&x], &[&tensor(&xs, &[5])]),
        &["x tanh x (no tangent)", "tangent(wgsl)", "linear()"],
    );
    assert!(matches!(e, Error::MissingRule { .. }), "{e:?}");
    let loss = ok(y.sum_all());
    let e = expect_err(
        pullback::hvp(&loss, &[&x], &[&tensor(&xs, &[5])]),
        &["linear()", "hvp"],
    );
    assert!(matches!(e, Error::MissingRule { .. }), "{e:?}");

    // A linear op (y = 3x), declared linear(): its tangent is its forward
    // on each row; it adds no curvature, so H·v of Σ sin(3x) is
    // −9 sin(3x)·v.
    let scale3 = ok(CustomOp::builder("times three")
        .forward(&forward.replace("x[i] * tanh(x[i])", "3.0 * x[i]"))
        .adjoint(&adjoint.replace("(t + v * (1.0 - t * t))", "3.0 + 0.0 * t"))
        .saves(&[pullback::CustomSave::Input(0)])
        .linear()
        .build(d));
    let y3 = ok(scale3.apply(&[&x], &[]));
    let jt = read(
        &ok(pullback::jvp_batched(
            &[&y3],
            &[&x],
            &[&tensor(&t, &[k, 5])],
        ))[0],
    );
    for (got, &ti) in jt.iter().zip(&t) {
        assert!(
            (got - 3.0 * ti).abs() <= 1e-6 * (1.0 + ti.abs() * 3.0),
            "{got} vs {}",
            3.0 * ti
        );
    }
    let loss3 = ok(ok(y3.sin()).sum_all());
    let v = tensor(&t[..5], &[5]);
    let hv = read(&ok(pullback::hvp(&loss3, &[&x], &[&v]))[0]);
    for (i, &got) in hv.iter().enumerate() {
        let want = -9.0 * (3.0 * xs[i] as f64).sin() * t[i] as f64;
        assert!(
            (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{i}: {got} vs {want}"
        );
    }
}

/// The errors of forward mode say what to do.
#[test]
fn errors() {
    let x = tensor(&[1.0, 2.0, 3.0], &[3]).requires_grad();
    let y = ok(x.exp());
    let t = tensor(&[1.0, 1.0], &[2]);
    let e = expect_err(
        pullback::jvp(&[&y], &[&x], &[&t]),
        &["tangent 0", "[2]", "[3]"],
    );
    assert!(matches!(e, Error::TangentShape { index: 0, .. }), "{e:?}");
    let t3 = tensor(&[1.0, 1.0, 1.0], &[3]);
    let e = expect_err(
        pullback::jvp(&[&y], &[&x], &[&t3, &t3]),
        &["2 tangents", "1 input"],
    );
    assert!(matches!(e, Error::TangentCount { .. }), "{e:?}");
    let e = expect_err(
        pullback::jvp_batched(&[&y], &[&x], &[&t3]),
        &["[K, *input.shape]"],
    );
    assert!(matches!(e, Error::TangentShape { .. }), "{e:?}");
    let plain = tensor(&[1.0, 2.0, 3.0], &[3]);
    let e = expect_err(pullback::jvp(&[&y], &[&plain], &[&t3]), &["input 0 of jvp"]);
    assert!(matches!(e, Error::NotTracked { .. }), "{e:?}");
    let other = fresh_device();
    let to = ok(other.tensor(&[1.0, 1.0, 1.0], &[3]));
    let e = expect_err(pullback::jvp(&[&y], &[&x], &[&to]), &["device"]);
    assert!(matches!(e, Error::DeviceMismatch), "{e:?}");
    assert_usable(dev());
    let jt: Vec<Tensor> = ok(pullback::jvp(&[&y], &[&x], &[&t3]));
    let want: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    for (g, w) in read(&jt[0]).iter().zip(want) {
        assert!((g - w).abs() <= 1e-6 * w);
    }
}
