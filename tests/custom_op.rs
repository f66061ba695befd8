//! Custom ops (`pullback::CustomOp`): the diffusion stencil of
//! `examples/custom_op.rs` against a float64 reference, through
//! `gradcheck`, batched == loop, Jacobian, chunking and dispatch counts; a
//! two-input op with saved inputs and scalars; a dispatch grid past 65535
//! workgroups; and every kind of bad definition giving an `Error`.

mod common;

use common::*;
use pullback::{CustomOp, CustomSave, Error, GradcheckOptions, Tensor};

const FORWARD: &str = include_str!("../examples/custom_op/diffusion_forward.wgsl");
const ADJOINT: &str = include_str!("../examples/custom_op/diffusion_adjoint.wgsl");
const ALPHA: f64 = 0.2;
const BETA: f64 = 0.3;

fn diffusion(dev: &pullback::Device) -> CustomOp {
    ok(CustomOp::builder("diffusion_step")
        .forward(FORWARD)
        .adjoint(ADJOINT)
        .build(dev))
}

fn run(op: &CustomOp, u: &Tensor, steps: usize) -> pullback::Result<Tensor> {
    let mut u = u.clone();
    for _ in 0..steps {
        u = op.apply(&[&u], &[ALPHA as f32, BETA as f32])?;
    }
    Ok(u)
}

/// One step in f64 along the last axis (rows of n), zero outside; with
/// `transposed`, the adjoint stencil (drift sign flipped).
fn step_f64(u: &[f64], n: usize, transposed: bool) -> Vec<f64> {
    let b = if transposed { -BETA } else { BETA };
    (0..u.len())
        .map(|t| {
            let (row, i) = (t / n, t % n);
            let at = |j: isize| {
                if j < 0 || j >= n as isize {
                    0.0
                } else {
                    u[row * n + j as usize]
                }
            };
            let (l, c, r) = (at(i as isize - 1), at(i as isize), at(i as isize + 1));
            c + ALPHA * (l - 2.0 * c + r) - 0.5 * b * (r - l)
        })
        .collect()
}

/// f32 over 40 steps of a contraction: each step rounds at ~1e-7 relative
/// to values of order 1, and errors do not grow (|A| ≤ 1).
const TOL: Tol = Tol::new(1e-5, 1e-5);

#[test]
fn forward_and_batched_vjp_match_float64_and_the_loop() {
    let dev = dev();
    let op = diffusion(dev);
    let (rows, n, steps, k) = (3, 37, 40, 5);
    let mut r = rng(seed_of("diffusion"));
    let u0 = sample(&mut r, rows * n, Dist::Uniform(-1.0, 1.0));
    let x = tensor(&u0, &[rows, n]).requires_grad();
    let y = ok(run(&op, &x, steps));
    let mut want = to_f64(&u0);
    for _ in 0..steps {
        want = step_f64(&want, n, false);
    }
    assert_close("forward", &to_f64(&read(&y)), &want, &[rows, n], TOL);
    // Batched VJP: the adjoint applied `steps` times to each cotangent row.
    let v = sample(&mut r, k * rows * n, COTANGENT);
    let g = ok(pullback::vjp_batched(
        &[&y],
        &[&tensor(&v, &[k, rows, n])],
        &[&x],
    ));
    let got = read(&g[0]);
    let mut want = to_f64(&v);
    for _ in 0..steps {
        want = step_f64(&want, n, true);
    }
    assert_close("batched vjp", &to_f64(&got), &want, &[k, rows, n], TOL);
    for row in 0..k {
        let one = &v[row * rows * n..(row + 1) * rows * n];
        let single = ok(pullback::vjp(&[&y], &[&tensor(one, &[rows, n])], &[&x]));
        let single = read(&single[0]);
        assert_eq!(
            single,
            got[row * rows * n..(row + 1) * rows * n],
            "row {row}"
        );
    }
}

#[test]
fn gradcheck_passes_through_the_custom_op() {
    let dev = dev();
    let op = diffusion(dev);
    let mut r = rng(seed_of("diffusion gradcheck"));
    let x = tensor(&sample(&mut r, 16, Dist::Uniform(-1.0, 1.0)), &[16]);
    let w = tensor(&sample(&mut r, 16, Dist::Uniform(-1.0, 1.0)), &[16]);
    // A nonlinear loss of 20 steps, so the check is not of a linear map only.
    let report = ok(pullback::gradcheck(
        |t| run(&op, &t[0], 20)?.mul(&t[1])?.tanh()?.sum_all(),
        &[&x, &w],
        GradcheckOptions::default(),
    ));
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
}

#[test]
fn one_adjoint_dispatch_per_step_and_one_submit_whatever_k() {
    let dev = fresh_device();
    let op = diffusion(&dev);
    let x = ok(dev.tensor(&[0.5; 64], &[64])).requires_grad();
    let y = ok(run(&op, &x, 10));
    ok(dev.synchronize());
    for k in [1, 16] {
        let v = ok(dev.full(&[k, 64], 1.0));
        let before = dev.stats();
        let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
        ok(dev.synchronize());
        let after = dev.stats();
        assert_eq!(after.dispatches - before.dispatches, 10, "K = {k}");
        assert_eq!(after.submits - before.submits, 1, "K = {k}");
        drop(g);
    }
}

#[test]
fn jacobian_and_chunked_passes_use_the_custom_adjoint() {
    let dev = fresh_device();
    let op = diffusion(&dev);
    let n = 8;
    let x = ok(dev.tensor(&[0.25; 8], &[8])).requires_grad();
    let y = ok(op.apply(&[&x], &[ALPHA as f32, BETA as f32]));
    // J[i][j] = ∂y_i/∂x_j: the stencil matrix A.
    let j = read(&ok(pullback::jacobian(&y, &x)));
    for i in 0..n {
        for c in 0..n {
            let want = match c as isize - i as isize {
                0 => 1.0 - 2.0 * ALPHA,
                -1 => ALPHA + BETA / 2.0,
                1 => ALPHA - BETA / 2.0,
                _ => 0.0,
            };
            assert!((j[i * n + c] as f64 - want).abs() < 1e-6, "J[{i}][{c}]");
        }
    }
    // Under a budget that fits a few cotangent rows, K = 64 runs in chunks
    // and gives the same rows.
    let y = ok(run(&op, &x, 5));
    let v = tensor_on(&dev, 64 * n);
    let whole = read(&ok(pullback::vjp_batched(&[&y], &[&v], &[&x]))[0]);
    dev.set_memory_budget(4 * n as u64 * 4 * 4);
    let chunked = read(&ok(pullback::vjp_batched(&[&y], &[&v], &[&x]))[0]);
    assert_eq!(whole, chunked);
}

fn tensor_on(dev: &pullback::Device, len: usize) -> Tensor {
    let mut r = rng(seed_of("chunked"));
    ok(dev.tensor(&sample(&mut r, len, COTANGENT), &[64, len / 64]))
}

/// p = s·a·b, saving both inputs; its adjoints read them at bindings 3, 4.
const PRODUCT_FORWARD: &str = "
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<f32>;

@compute @workgroup_size(1)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    p[t] = pb_scalar(0u) * a[t] * b[t];
}
";
const PRODUCT_ADJOINT: &str = "
@group(0) @binding(1) var<storage, read> cot: array<f32>;
@group(0) @binding(2) var<storage, read_write> res: array<f32>;
@group(0) @binding(3) var<storage, read> a: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;

// d(s·a·b)/da = s·b, d/db = s·a; row t / n_in of the K cotangents.
@compute @workgroup_size(64)
fn adjoint_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    res[t] = pb_scalar(0u) * cot[t] * b[t % pb.n_in];
}

@compute @workgroup_size(64)
fn adjoint_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    res[t] = pb_scalar(0u) * cot[t] * a[t % pb.n_in];
}
";

fn product(dev: &pullback::Device) -> CustomOp {
    ok(CustomOp::builder("scaled_product")
        .inputs(2)
        .saves(&[CustomSave::Input(0), CustomSave::Input(1)])
        .shape(|s, _| {
            if s[0] == s[1] {
                Ok(s[0].to_vec())
            } else {
                Err(format!(
                    "operands must have one shape, got {:?} and {:?}",
                    s[0], s[1]
                ))
            }
        })
        .forward(PRODUCT_FORWARD)
        .adjoint(PRODUCT_ADJOINT)
        .build(dev))
}

/// 70,000 elements at one invocation per workgroup: the grid is spread over
/// x and y (65535 at most per axis), which `pb_thread` undoes. Two inputs,
/// saved inputs, a scalar, and the contribution of only the input asked for.
#[test]
fn two_inputs_saved_values_scalars_and_a_two_dimensional_grid() {
    let dev = fresh_device();
    let op = product(&dev);
    let n = 70_000;
    let mut r = rng(seed_of("product"));
    let (a, b) = (
        sample(&mut r, n, Dist::Uniform(-1.0, 1.0)),
        sample(&mut r, n, Dist::Uniform(-1.0, 1.0)),
    );
    let ta = ok(dev.tensor(&a, &[n])).requires_grad();
    let tb = ok(dev.tensor(&b, &[n])).requires_grad();
    let p = ok(op.apply(&[&ta, &tb], &[1.5]));
    let want: Vec<f64> = (0..n).map(|i| 1.5 * a[i] as f64 * b[i] as f64).collect();
    assert_close("forward", &to_f64(&read(&p)), &want, &[n], Tol::ARITH);
    let k = 3;
    let v = sample(&mut r, k * n, COTANGENT);
    let tv = ok(dev.tensor(&v, &[k, n]));
    let g = ok(pullback::vjp_batched(&[&p], &[&tv], &[&ta, &tb]));
    let (ga, gb) = (read(&g[0]), read(&g[1]));
    for e in 0..k * n {
        let i = e % n;
        assert!(
            (ga[e] as f64 - 1.5 * v[e] as f64 * b[i] as f64).abs() < 1e-6,
            "da {e}"
        );
        assert!(
            (gb[e] as f64 - 1.5 * v[e] as f64 * a[i] as f64).abs() < 1e-6,
            "db {e}"
        );
    }
    // Only b's contribution is asked for: one adjoint dispatch.
    ok(dev.synchronize());
    let before = dev.stats().dispatches;
    let g = ok(pullback::vjp_batched(&[&p], &[&tv], &[&tb]));
    assert_eq!(read(&g[0]), gb);
    assert_eq!(dev.stats().dispatches - before, 1);
    // The shape rule's refusal reaches the caller.
    let short = ok(dev.tensor(&[1.0, 2.0], &[2]));
    expect_err(
        op.apply(&[&ta, &short], &[1.0]),
        &["scaled_product", "one shape"],
    );
    expect_err(op.apply(&[&ta], &[1.0]), &["takes 2 inputs"]);
    expect_err(op.apply(&[&ta, &tb], &[0.0; 17]), &["at most 16"]);
    // Per-example passes refuse custom ops, naming them.
    let loss = ok(op.apply(&[&ta, &tb], &[1.0]));
    expect_err(
        pullback::per_example_grads(&loss, &[&tb]),
        &["scaled_product", "custom op"],
    );
    assert_usable(&dev);
}

/// Builds an op from `forward` and the diffusion adjoint, or `adjoint`.
fn define(forward: &str, adjoint: &str) -> pullback::Result<CustomOp> {
    CustomOp::builder("broken")
        .forward(forward)
        .adjoint(adjoint)
        .build(dev())
}

#[track_caller]
fn wgsl_error(r: pullback::Result<CustomOp>, words: &[&str]) {
    let e = expect_err(r, words);
    eprintln!("{e}\n");
    assert!(matches!(e, Error::Wgsl { .. }), "{e:?}");
}

#[test]
fn bad_wgsl_is_an_error_with_naga_message_and_line() {
    // A syntax error on line 3 of the user's source: naga's message names
    // the line (the prelude comes after the source, so lines are the user's).
    let broken = FORWARD.replace("out[t] = c", "out[t] = c +* 2.0");
    let line = broken.lines().position(|l| l.contains("+*")).unwrap() + 1;
    wgsl_error(
        define(&broken, ADJOINT),
        &["broken", "forward source", &format!(":{line}:")],
    );
    // Validation (a type error), not parsing.
    let typed = FORWARD.replace("out[t] = c", "out[t] = true; let zz = c");
    wgsl_error(define(&typed, ADJOINT), &["forward source"]);
    // No entry point of the required name.
    wgsl_error(
        define(&FORWARD.replace("fn forward(", "fn forwards("), ADJOINT),
        &["no entry point `forward`"],
    );
    wgsl_error(
        define(
            FORWARD,
            &ADJOINT.replace("fn adjoint_0(", "fn adjoint_zero("),
        ),
        &["adjoint source", "adjoint_0"],
    );
    // The result declared read-only; an input declared read_write.
    wgsl_error(
        define(
            &FORWARD
                .replace("var<storage, read_write> out", "var<storage, read> out")
                .replace("out[t] = ", "let unused = out[t] + "),
            ADJOINT,
        ),
        &["read_write"],
    );
    wgsl_error(
        define(
            &FORWARD.replace("var<storage, read> u", "var<storage, read_write> u"),
            ADJOINT,
        ),
        &["binding 1", "var<storage, read>"],
    );
    // A binding pullback does not bind, and another group.
    wgsl_error(
        define(&FORWARD.replace("@binding(2)", "@binding(5)"), ADJOINT),
        &["binding 5", "does not bind"],
    );
    wgsl_error(
        define(
            &FORWARD.replace("@group(0) @binding(1)", "@group(1) @binding(1)"),
            ADJOINT,
        ),
        &["group 1"],
    );
    // A workgroup size from an override.
    let wg = format!(
        "override WGS: u32 = 64u;\n{}",
        FORWARD.replace("@workgroup_size(64)", "@workgroup_size(WGS)")
    );
    wgsl_error(define(&wg, ADJOINT), &["literal workgroup size"]);
    // Missing sources and bad counts.
    wgsl_error(
        CustomOp::builder("broken").forward(FORWARD).build(dev()),
        &["no adjoint source"],
    );
    expect_err(
        CustomOp::builder("broken")
            .inputs(5)
            .forward(FORWARD)
            .adjoint(ADJOINT)
            .build(dev()),
        &["5 inputs"],
    );
    expect_err(
        CustomOp::builder("broken")
            .saves(&[CustomSave::Input(1)])
            .forward(FORWARD)
            .adjoint(ADJOINT)
            .build(dev()),
        &["saves input 1"],
    );
    // The device is still usable, and a good op still builds.
    assert_usable(dev());
    diffusion(dev());
}

/// A custom op declared to keep rows apart joins per-example passes: the
/// diffusion stencil runs along each example's row of `[B, n]` data, and a
/// shared weight multiplies the result. Per-example gradients of the
/// weight equal B single VJPs; without the declaration the pass refuses.
#[test]
fn a_custom_op_that_keeps_rows_apart_joins_per_example_passes() {
    let dev = dev();
    let rowwise = ok(CustomOp::builder("diffusion_rows")
        .forward(FORWARD)
        .adjoint(ADJOINT)
        .keeps_rows_apart()
        .build(dev));
    let (b, n) = (4, 9);
    let mut r = rng(seed_of("rowwise"));
    let data = tensor(&sample(&mut r, b * n, Dist::Uniform(-1.0, 1.0)), &[b, n]);
    let w = tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), &[n]).requires_grad();
    let loss = |x: &Tensor| -> pullback::Result<Tensor> {
        let u = rowwise.apply(&[&x.mul(&w)?], &[ALPHA as f32, BETA as f32])?;
        u.square()?.sum(&[1], false)
    };
    let l = ok(loss(&data));
    let each = read(&ok(pullback::per_example_grads(&l, &[&w]))[0]);
    for e in 0..b {
        let mut onehot = vec![0.0; b];
        onehot[e] = 1.0;
        let single = ok(pullback::vjp(&[&l], &[&tensor(&onehot, &[b])], &[&w]));
        let single = read(&single[0]);
        for (a, s) in each[e * n..(e + 1) * n].iter().zip(&single) {
            assert!(
                (a - s).abs() <= 1e-6 * s.abs().max(1.0),
                "example {e}: {a} vs {s}"
            );
        }
    }
    // The same op without the declaration is refused, naming it.
    let plain = diffusion(dev);
    let l2 = ok(ok(ok(plain.apply(&[&ok(data.mul(&w))], &[0.1, 0.0])).square()).sum(&[1], false));
    expect_err(
        pullback::per_example_grads(&l2, &[&w]),
        &["diffusion_step", "keeps_rows_apart"],
    );
}
