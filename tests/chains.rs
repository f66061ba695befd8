//! Compositions of elementwise ops against f64 references: inputs used
//! several times, inputs the output does not reach, gradients with respect
//! to intermediates, several outputs, and `backward` accumulating every
//! path into the leaves.

mod common;

use common::*;

// ---------------------------------------------------------------------------
// Tolerances. Each states the error bound it rests on and the worst error
// measured on Mesa lavapipe (Mesa 22.3.6, llvmpipe LLVM 15.0.6, x86-64) over every shape of
// its test, forward and gradients (single and batched); "rel" is over
// elements with |want| >= 1e-3, "abs" over all. Gradients carry the error of
// the value the rule saved plus one rounding of g·f'. Vulkan's precision
// rules allow far more for the transcendentals (sin/cos: 2^-11 absolute),
// so a real GPU may need more; raise them only with a measurement.
// ---------------------------------------------------------------------------

/// exp: Vulkan allows 3 + 2|x| ULP (9 ULP ≈ 1.1e-6 for |x| <= 3).
/// Measured: rel 3.3e-7 forward, 3.9e-7 gradient (y·g).
const EXP: Tol = Tol::new(2e-6, 1e-30);

/// Compositions of exp, sin, tanh with arithmetic: each term carries the
/// errors above (rel ~4e-7) at magnitudes up to ~10, and sums of terms
/// cancel. Measured: forward abs 7.2e-7 (rel 2.5e-6), gradients abs 8.6e-7
/// (rel 3.3e-5 on a gradient of 0.02).
const CHAIN: Tol = Tol::new(1e-5, 1e-6);

// ---------------------------------------------------------------------------
// Compositions
// ---------------------------------------------------------------------------

#[test]
fn chain_with_inputs_used_several_times() {
    // f(x, y) = sin(x)·exp(x) + x/y: x reaches the output along three paths,
    // so its cotangent accumulates three contributions. Same shapes, then y
    // broadcast along x's rows (its gradient is also a sum over rows).
    for (sx, sy) in [(&[3usize, 5][..], &[3usize, 5][..]), (&[4, 7], &[7])] {
        let out = broadcast_shape(sx, sy);
        let (sx_, sy_, out_) = (sx.to_vec(), sy.to_vec(), out.clone());
        VjpCheck::new(format!("sin(x)*exp(x) + x/y {sx:?} x {sy:?}"))
            .input(sx, Dist::Uniform(-2.0, 2.0))
            .input(sy, Dist::Signed(0.5, 2.0))
            .output(&out)
            .forward_tol(CHAIN)
            .vjp_tol(CHAIN)
            .run(
                |x| {
                    let (x, y) = (&x[0], &x[1]);
                    ok(x.sin()).mul(&ok(x.exp()))?.add(&x.div(y)?)
                },
                |x| {
                    let g = x[0].iter().map(|&a| a.sin() * a.exp()).collect::<Vec<_>>();
                    let q = broadcast_map(&x[0], &sx_, &x[1], &sy_, |a, b| a / b);
                    g.iter().zip(q).map(|(g, q)| g + q).collect()
                },
                |x, v| {
                    let (xs, ys) = (&x[0], &x[1]);
                    let gx = (0..v.len())
                        .map(|o| {
                            let a = xs[o];
                            let b = ys[broadcast_index(o, &out_, &sy_)];
                            v[o] * (a.exp() * (a.cos() + a.sin()) + 1.0 / b)
                        })
                        .collect();
                    let gy: Vec<f64> = (0..v.len())
                        .map(|o| {
                            let b = ys[broadcast_index(o, &out_, &sy_)];
                            -v[o] * xs[o] / (b * b)
                        })
                        .collect();
                    vec![gx, sum_to(&gy, &out_, &sy_)]
                },
            );
    }
}

#[test]
fn chain_with_a_reused_intermediate() {
    // f(x, y) = tanh(x·y - y)·y + (x·y)²: y is used four times and the
    // intermediate x·y twice (once through `square`, once through `mul`).
    let shape = [257];
    VjpCheck::new("tanh(x*y - y)*y + (x*y)^2")
        .input(&shape, Dist::Uniform(-1.5, 1.5))
        .input(&shape, Dist::Uniform(-1.5, 1.5))
        .output(&shape)
        .forward_tol(CHAIN)
        .vjp_tol(CHAIN)
        .run(
            |x| {
                let (x, y) = (&x[0], &x[1]);
                let xy = x.mul(y)?;
                let t = xy.sub(y)?.tanh()?;
                t.mul(y)?.add(&xy.mul(&xy)?)
            },
            |x| {
                (0..x[0].len())
                    .map(|i| {
                        let (a, b) = (x[0][i], x[1][i]);
                        (a * b - b).tanh() * b + (a * b).powi(2)
                    })
                    .collect()
            },
            |x, v| {
                let n = x[0].len();
                let (mut gx, mut gy) = (vec![0.0; n], vec![0.0; n]);
                for i in 0..n {
                    let (a, b) = (x[0][i], x[1][i]);
                    let t = (a * b - b).tanh();
                    let dt = 1.0 - t * t;
                    gx[i] = v[i] * (dt * b * b + 2.0 * a * b * b);
                    gy[i] = v[i] * (dt * (a - 1.0) * b + t + 2.0 * a * a * b);
                }
                vec![gx, gy]
            },
        );
}

#[test]
fn input_not_reached_by_the_output_gets_zeros() {
    // z is tracked and even used (in w, which is not an output), but the
    // output does not depend on it: its gradient is zeros (JAX's
    // convention), for vjp and for every row of vjp_batched.
    VjpCheck::new("exp(x) with an unreached z")
        .input(&[7], Dist::Uniform(-1.0, 1.0))
        .input(&[2, 3], Dist::Uniform(-1.0, 1.0))
        .output(&[7])
        .forward_tol(EXP)
        .vjp_tol(EXP)
        .run(
            |x| {
                let _w = x[1].sin()?;
                x[0].exp()
            },
            |x| x[0].iter().map(|a| a.exp()).collect(),
            |x, v| {
                vec![
                    x[0].iter().zip(v).map(|(a, g)| g * a.exp()).collect(),
                    vec![0.0; 6],
                ]
            },
        );
    // The same for a leaf and a tracked intermediate that share no graph at
    // all with the output, next to an input that the output does reach.
    let x = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let z = tensor(&[3.0, 4.0, 5.0], &[3]).requires_grad();
    let zi = ok(z.exp());
    let y = ok(x.mul_scalar(2.0));
    let v = tensor(&[1.0, 1.0], &[2]);
    let g = ok(pullback::vjp(&[&y], &[&v], &[&z, &zi, &x]));
    assert_eq!(read(&g[0]), vec![0.0; 3]);
    assert_eq!(read(&g[1]), vec![0.0; 3]);
    assert_eq!(read(&g[2]), vec![2.0, 2.0]);
    let vb = tensor(&[1.0, 1.0, 0.5, 0.5, -1.0, 3.0], &[3, 2]);
    let g = ok(pullback::vjp_batched(&[&y], &[&vb], &[&z, &x]));
    assert_eq!(g[0].shape(), &[3, 3]);
    assert_eq!(read(&g[0]), vec![0.0; 9]);
    assert_eq!(read(&g[1]), vec![2.0, 2.0, 1.0, 1.0, -2.0, 6.0]);
}

#[test]
fn gradient_with_respect_to_an_intermediate() {
    // h = sin(x) is tracked but not a leaf; y = h·exp(h) + x·h.
    // dy/dh (x held fixed) = exp(h)(1 + h) + x; dy/dx = dy/dh·cos(x) + h.
    let n = 257;
    let mut r = rng(seed_of("intermediate"));
    let xv = sample(&mut r, n, Dist::Uniform(-2.0, 2.0));
    let x = tensor(&xv, &[n]).requires_grad();
    let h = ok(x.sin());
    assert!(h.is_tracked() && !h.is_leaf());
    let y = ok(ok(h.mul(&ok(h.exp()))).add(&ok(x.mul(&h))));
    let want = |v: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let mut gh = vec![0.0; n];
        let mut gx = vec![0.0; n];
        for i in 0..n {
            let a = xv[i] as f64;
            let s = a.sin();
            let dh = s.exp() * (1.0 + s) + a;
            gh[i] = v[i] * dh;
            gx[i] = v[i] * (dh * a.cos() + s);
        }
        (gh, gx)
    };
    let k = 3;
    let vv = sample(&mut r, k * n, COTANGENT);
    // vjp with respect to h alone, then h and x together.
    let v0 = tensor(&vv[..n], &[n]);
    let (gh, gx) = want(&to_f64(&vv[..n]));
    let only_h = ok(pullback::vjp(&[&y], &[&v0], &[&h]));
    assert_close_f32("d/dh", &read(&only_h[0]), &gh, &[n], CHAIN);
    let both = ok(pullback::vjp(&[&y], &[&v0], &[&h, &x]));
    assert_close_f32("d/dh (with x)", &read(&both[0]), &gh, &[n], CHAIN);
    assert_close_f32("d/dx (with h)", &read(&both[1]), &gx, &[n], CHAIN);
    // Batched, K = 3.
    let vb = tensor(&vv, &[k, n]);
    let b = ok(pullback::vjp_batched(&[&y], &[&vb], &[&h, &x]));
    let (bh, bx) = (read(&b[0]), read(&b[1]));
    for row in 0..k {
        let (gh, gx) = want(&to_f64(&vv[row * n..(row + 1) * n]));
        let r = row * n..(row + 1) * n;
        assert_close_f32(
            &format!("batched d/dh row {row}"),
            &bh[r.clone()],
            &gh,
            &[n],
            CHAIN,
        );
        assert_close_f32(&format!("batched d/dx row {row}"), &bx[r], &gx, &[n], CHAIN);
    }
    // The intermediate has no .grad; backward fills the leaf's.
    ok(y.backward_with(&v0));
    assert!(h.grad().is_none());
    assert_close_f32(
        "backward x.grad",
        &read(&x.grad().unwrap()),
        &gx,
        &[n],
        CHAIN,
    );
}

#[test]
fn several_outputs_sum_their_contributions() {
    // vjp([y1, y2], [v1, v2]) = v1ᵀJ1 + v2ᵀJ2, with y1 = x² and y2 = x·c for
    // a constant (untracked) c of another shape (broadcast).
    let x = tensor(&[1.0, -2.0, 3.0], &[3]).requires_grad();
    let c = tensor(&[0.5, 1.0, 2.0, -1.0, 3.0, 0.25], &[2, 3]);
    let y1 = ok(x.square());
    let y2 = ok(x.mul(&c));
    let v1 = tensor(&[1.0, 1.0, 1.0], &[3]);
    let v2 = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let g = ok(pullback::vjp(&[&y1, &y2], &[&v1, &v2], &[&x]));
    // 2x + Σ_rows v2·c = [2 + 0.5 - 4, -4 + 2 + 15, 6 + 6 + 1.5]
    assert_eq!(read(&g[0]), vec![-1.5, 13.0, 13.5]);
    // Batched: K = 2, the second row doubles both cotangents.
    let v1b = tensor(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], &[2, 3]);
    let v2b = tensor(
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        &[2, 2, 3],
    );
    let g = ok(pullback::vjp_batched(&[&y1, &y2], &[&v1b, &v2b], &[&x]));
    assert_eq!(g[0].shape(), &[2, 3]);
    assert_eq!(read(&g[0]), vec![-1.5, 13.0, 13.5, -3.0, 26.0, 27.0]);
}

#[test]
fn backward_accumulates_every_path_into_leaves() {
    // backward_with on the three-path chain: x.grad and y.grad equal the
    // vjp of the same cotangent, and a second call doubles them.
    let mut r = rng(seed_of("backward chain"));
    let (xv, yv) = (
        sample(&mut r, 7, Dist::Uniform(-2.0, 2.0)),
        sample(&mut r, 7, Dist::Signed(0.5, 2.0)),
    );
    let x = tensor(&xv, &[7]).requires_grad();
    let y = tensor(&yv, &[7]).requires_grad();
    let f = ok(ok(ok(x.sin()).mul(&ok(x.exp()))).add(&ok(x.div(&y))));
    let v = tensor(&sample(&mut r, 7, COTANGENT), &[7]);
    let g = ok(pullback::vjp(&[&f], &[&v], &[&x, &y]));
    ok(f.backward_with(&v));
    assert_eq!(read(&x.grad().unwrap()), read(&g[0]));
    assert_eq!(read(&y.grad().unwrap()), read(&g[1]));
    ok(f.backward_with(&v));
    let twice: Vec<f32> = read(&g[0]).iter().map(|v| v * 2.0).collect();
    assert_eq!(read(&x.grad().unwrap()), twice);
}
