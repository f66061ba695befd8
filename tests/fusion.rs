//! Fused adjoints: a region of elementwise ops runs its whole backward
//! pass as one dispatch, and gives the unfused pass's gradients to within a
//! few ULP of each element (the fused kernel multiplies the local
//! derivatives along each path before multiplying by the cotangent, the
//! unfused pass after: the same terms, grouped differently). Checked on
//! W2, chains, diamonds, an input used twice, and random regions with
//! random K and row lengths that are and are not multiples of 4.

mod common;

use common::*;
use pullback::{Device, Tensor};
use rand::RngExt;

/// The gradients' values and the dispatches a backward pass made.
type Pass = (Vec<Vec<f32>>, u64);

/// The gradients of `y` for the cotangents `v` with fusion on and off,
/// and the dispatches each backward pass made.
fn fused_and_unfused(dev: &Device, y: &Tensor, v: &Tensor, inputs: &[&Tensor]) -> (Pass, Pass) {
    let run = |fused: bool| {
        dev.set_fused_adjoints(fused);
        ok(dev.synchronize());
        let before = dev.stats().dispatches;
        let grads = ok(pullback::vjp_batched(&[y], &[v], inputs));
        let dispatches = dev.stats().dispatches - before;
        (grads.iter().map(read).collect::<Vec<_>>(), dispatches)
    };
    let unfused = run(false);
    let fused = run(true);
    (fused, unfused)
}

/// Per element: |fused − unfused| ≤ 1e-5 · max(|fused|, |unfused|) (f32
/// rounding of a handful of products and sums, grouped two ways: a few
/// ULP of the element) + 1e-7 · (the gradient's largest magnitude), a
/// floor for elements where paths of opposite signs cancel (an input
/// used twice), whose rounding is that of the terms, not of the result.
/// The same number of gradients, each of the same length.
#[track_caller]
fn assert_agree(what: &str, fused: &[Vec<f32>], unfused: &[Vec<f32>]) {
    assert_eq!(fused.len(), unfused.len(), "{what}: gradient count");
    for (i, (f, u)) in fused.iter().zip(unfused).enumerate() {
        assert_eq!(f.len(), u.len(), "{what}: gradient {i}'s length");
        let scale = u.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
        for (e, (a, b)) in f.iter().zip(u).enumerate() {
            let tol = 1e-5 * a.abs().max(b.abs()) + 1e-7 * scale;
            assert!(
                (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
                "{what}: gradient {i}, element {e}: fused {a} vs unfused {b} (tolerance {tol})"
            );
        }
    }
}

fn leaf(dev: &Device, name: &str, n: usize) -> Tensor {
    leaf2(dev, name, &[n])
}

fn rows(dev: &Device, name: &str, k: usize, n: usize) -> Tensor {
    let mut r = rng(seed_of(name));
    ok(dev.tensor(&sample(&mut r, k * n, Dist::Uniform(-1.0, 1.0)), &[k, n]))
}

#[test]
fn w2_backward_is_one_dispatch() {
    let dev = fresh_device();
    let n = 1 << 16;
    let x = leaf(&dev, "w2 x", n);
    let y = ok(ok(x.sin()).mul(&ok(x.exp())));
    let v = rows(&dev, "w2 v", 64, n);
    let ((f, fd), (u, ud)) = fused_and_unfused(&dev, &y, &v, &[&x]);
    assert_agree("W2", &f, &u);
    // Unfused: mul's adjoint, sin's, exp's and the accumulation of x's two
    // contributions.
    assert_eq!((fd, ud), (1, 4), "dispatches fused, unfused");
}

#[test]
fn chains_diamonds_and_an_input_used_twice() {
    let dev = fresh_device();
    for n in [1usize, 3, 7, 33, 1024] {
        let x = leaf(&dev, &format!("x {n}"), n);
        let w = leaf(&dev, &format!("w {n}"), n);
        let s = ok(x.sin());
        let cases: Vec<(&str, Tensor, Vec<&Tensor>)> = vec![
            (
                "chain",
                ok(ok(ok(x.tanh()).mul_scalar(1.5)).sigmoid()),
                vec![&x],
            ),
            ("diamond", ok(ok(s.cos()).mul(&ok(s.exp()))), vec![&x]),
            ("x + x", ok(ok(x.add(&x)).sin()), vec![&x]),
            (
                "x / w",
                ok(ok(x.div(&ok(ok(w.sigmoid()).add_scalar(0.5)))).tanh()),
                vec![&x, &w],
            ),
            (
                "powf, sub",
                ok(ok(ok(x.powf(3.0)).sub(&w)).square()),
                vec![&x, &w],
            ),
        ];
        for (name, y, inputs) in &cases {
            for k in [1, 5] {
                let v = rows(&dev, &format!("{name} v {n} {k}"), k, n);
                let ((f, fd), (u, _)) = fused_and_unfused(&dev, y, &v, inputs);
                assert_agree(&format!("{name}, n = {n}, K = {k}"), &f, &u);
                assert_eq!(fd, 1, "{name}, n = {n}: one dispatch");
            }
        }
    }
}

/// An input that also reaches the output outside the region: when the
/// other rule runs first, the fused kernel adds into x's cotangent in
/// place (no accumulation dispatch); when it runs after, the scheduler
/// accumulates as usual. Both operand orders, so both happen.
#[test]
fn a_region_next_to_other_ops_of_the_same_input() {
    let dev = fresh_device();
    let n = 64;
    let x = leaf(&dev, "acc x", n);
    let w = ok(dev.tensor(&vec![0.5; n * 3], &[n, 3]));
    // x reaches the output through a matmul (not fused) and through a
    // region; the matmul's rule runs first, so x has a cotangent already.
    let region = ok(ok(x.sin()).mul(&ok(x.cos())));
    let through_matmul = ok(ok(x.reshape(&[1, n])).matmul(&w));
    let a = ok(region.sum(&[0], false));
    let b = ok(through_matmul.sum(&[0, 1], false));
    let v = ok(rows(&dev, "acc v", 3, 1).reshape(&[3]));
    let mut fused_dispatches = Vec::new();
    for y in [ok(a.add(&b)), ok(b.add(&a))] {
        let ((f, fd), (u, ud)) = fused_and_unfused(&dev, &y, &v, &[&x]);
        assert_agree("region + matmul", &f, &u);
        // The region's three adjoints and their accumulation become one.
        assert!(fd + 3 <= ud, "fused {fd} dispatches, unfused {ud}");
        fused_dispatches.push(fd);
    }
    eprintln!("fused dispatches, both orders: {fused_dispatches:?}");
}

/// Operands broadcast into a region: a row of weights times a matrix
/// (read through strides; its contribution summed over the rows after the
/// kernel), a bias added before an activation, a column scaling.
#[test]
fn broadcast_operands_inside_a_region() {
    let dev = fresh_device();
    for (m, n) in [(1usize, 1usize), (3, 7), (5, 33), (64, 256)] {
        let x = leaf2(&dev, &format!("bx {m} {n}"), &[m, n]);
        let w = leaf2(&dev, &format!("bw {m} {n}"), &[n]);
        let c = leaf2(&dev, &format!("bc {m} {n}"), &[m, 1]);
        let cases: Vec<(&str, Tensor)> = vec![
            ("sin(x·w)", ok(ok(x.mul(&w)).sin())),
            ("tanh(x + w)", ok(ok(x.add(&w)).tanh())),
            (
                "(x / (σ(c)+½))·w − c",
                ok(ok(ok(x.div(&ok(ok(c.sigmoid()).add_scalar(0.5)))).mul(&w)).sub(&c)),
            ),
        ];
        for (name, y) in &cases {
            for k in [1, 4] {
                let v =
                    ok(rows(&dev, &format!("{name} {m} {n} {k}"), k, m * n).reshape(&[k, m, n]));
                let ((f, fd), (u, ud)) = fused_and_unfused(&dev, y, &v, &[&x, &w, &c]);
                assert_agree(&format!("{name}, [{m}, {n}], K = {k}"), &f, &u);
                // tanh(x + w) stays unfused: add passes g on, so there is
                // one adjoint kernel either way.
                assert!(fd <= ud, "{name}: fused {fd} dispatches, unfused {ud}");
                if name.starts_with("sin") {
                    assert!(fd < ud, "{name}: fused {fd} dispatches, unfused {ud}");
                }
            }
        }
    }
}

fn leaf2(dev: &Device, name: &str, shape: &[usize]) -> Tensor {
    let mut r = rng(seed_of(name));
    let n = shape.iter().product();
    ok(dev.tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), shape)).requires_grad()
}

/// Random regions: 2–12 elementwise ops over up to three inputs, operands
/// drawn from everything computed so far (so values are shared and
/// diamonds form), random K in 1..=9 and n in {1, 3, 7, 33, 257}. The
/// whole graph is one region unless its saved values and outputs pass the
/// 16 storage bindings of one kernel; then it is split.
#[test]
fn random_regions_agree_with_the_unfused_pass() {
    let dev = fresh_device();
    let mut r = rng(seed_of("random regions"));
    let (mut all_fused, mut all_unfused) = (0, 0);
    for case in 0..80 {
        let n = [1usize, 3, 7, 33, 257][r.random_range(0..5)];
        let k = r.random_range(1..=9);
        // From case 40 on, the region is [m, n] and inputs may be [n] or
        // [m, 1], broadcast to it.
        let m = if case < 40 { 1 } else { r.random_range(2..=5) };
        let shapes: [&[usize]; 3] = [&[m, n], &[n], &[m, 1]];
        let leaves: Vec<Tensor> = (0..r.random_range(1..=3))
            .map(|i| {
                let shape = if case < 40 {
                    &[n][..]
                } else {
                    shapes[r.random_range(0..3)]
                };
                leaf2(&dev, &format!("case {case} leaf {i}"), shape)
            })
            .collect();
        let mut values: Vec<Tensor> = leaves.clone();
        let mut ops = Vec::new();
        let mut shapes_seen = Vec::new();
        for _ in 0..r.random_range(2..=12) {
            let (ia, ib) = (
                r.random_range(0..values.len()),
                r.random_range(0..values.len()),
            );
            let (a, b) = (values[ia].clone(), values[ib].clone());
            shapes_seen.push(format!("{ia},{ib} {:?},{:?}", a.shape(), b.shape()));
            let (name, t) = match r.random_range(0..12) {
                0 => ("sin", a.sin()),
                1 => ("cos", a.cos()),
                2 => ("tanh", a.tanh()),
                3 => ("sigmoid", a.sigmoid()),
                4 => ("exp", ok(a.tanh()).exp()),
                5 => ("square", a.square()),
                6 => ("mul_scalar", a.mul_scalar(-0.7)),
                7 => ("add_scalar", a.add_scalar(0.25)),
                8 => ("add", a.add(&b)),
                9 => ("sub", a.sub(&b)),
                10 => ("mul", a.mul(&b)),
                _ => ("div", a.div(&ok(ok(b.sigmoid()).add_scalar(0.5)))),
            };
            ops.push(name);
            values.push(ok(t));
        }
        // Every input reaches the output (an unreached one costs a fill
        // dispatch either way).
        let mut y = values.last().unwrap().clone();
        for l in &leaves {
            y = ok(y.add(l));
        }
        let v_shape = [&[k][..], y.shape()].concat();
        let v = ok(rows(&dev, &format!("case {case} v"), k, y.numel()).reshape(&v_shape));
        let inputs: Vec<&Tensor> = leaves.iter().collect();
        let ((f, fd), (u, ud)) = fused_and_unfused(&dev, &y, &v, &inputs);
        let what = format!("case {case}: n = {n}, K = {k}, ops {ops:?}");
        assert_agree(&what, &f, &u);
        let leaf_shapes: Vec<_> = leaves.iter().map(|l| l.shape().to_vec()).collect();
        assert!(
            fd <= ud,
            "{what}: fused {fd} dispatches, unfused {ud}; operands {shapes_seen:?}, leaves {leaf_shapes:?}"
        );
        all_fused += fd;
        all_unfused += ud;
    }
    eprintln!("random regions: {all_fused} dispatches fused, {all_unfused} unfused");
    assert!(all_fused * 2 < all_unfused, "{all_fused} vs {all_unfused}");
}
