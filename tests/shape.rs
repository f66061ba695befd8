//! The ops that only move values (`reshape`, `permute`, `transpose`,
//! `broadcast_to`, `narrow`, `concat`, `index_select`) against f64
//! references, through the `common::VjpCheck` harness (forward, reference
//! VJP vs finite differences, `vjp`, `vjp_batched` for K = 1, 3, 64).
//!
//! Tolerances: these ops copy f32 words: forward and adjoint exact (0, 0),
//! except where the adjoint sums (repeated `index_select` indices,
//! `broadcast_to`), see [`sum_of_cotangents`].

mod common;

use common::*;
use pullback::Tensor;

const EXACT: Tol = Tol::new(0.0, 0.0);
/// The unit roundoff of f32, 2⁻²⁴ (half of `f32::EPSILON`).
const U: f64 = f32::EPSILON as f64 / 2.0;

// ---------------------------------------------------------------------------
// Ops that move values: out[o] = input[which][src(o)]
// ---------------------------------------------------------------------------

/// The largest number of output elements that read one input element.
fn max_repeats(src: &[(usize, usize)]) -> usize {
    let mut counts = std::collections::HashMap::new();
    for s in src {
        *counts.entry(*s).or_insert(0usize) += 1;
    }
    counts.values().copied().max().unwrap_or(0)
}

/// Tolerance of an adjoint that sums up to `r` cotangent values (|g| <= 1)
/// into one element: exact when r = 1; otherwise the f32 sum of r terms
/// errs by at most (r - 1)·u·Σ|g| <= r²·u sequentially, and `sum_to`'s
/// compensated sums by less (see `sum_tol` in tests/reduce.rs, 10u·r).
fn sum_of_cotangents(r: usize) -> Tol {
    if r <= 1 {
        EXACT
    } else {
        let r = r as f64;
        Tol::new(0.0, (r * r).max(10.0 * r) * U)
    }
}

/// Checks an op that copies values: output element o is element `src[o].1`
/// of input `src[o].0`. Forward exact; adjoint a scatter-add.
///
/// Stage (d) needs a `[K, *out_shape]` cotangent tensor, and tensors have
/// rank <= 6, so outputs of rank 6 are checked by stages (a) to (c) only
/// (vjp_batched cannot take them; see the report).
fn check_move(
    name: &str,
    inputs: &[&[usize]],
    out_shape: &[usize],
    src: Vec<(usize, usize)>,
    gpu: impl Fn(&[Tensor]) -> pullback::Result<Tensor>,
) -> Report {
    assert_eq!(src.len(), numel(out_shape), "test bug: {name}");
    let tol = sum_of_cotangents(max_repeats(&src));
    let lens: Vec<usize> = inputs.iter().map(|s| numel(s)).collect();
    let mut check = VjpCheck::new(name)
        .output(out_shape)
        .forward_tol(EXACT)
        .vjp_tol(tol)
        // The single vjp and every K use the same kernels, except sums over
        // broadcast axes whose strategy depends on K (see `broadcast_to`).
        .loop_tol(tol)
        .fd_max_per_input(64);
    if out_shape.len() == 6 {
        check = check.batch_sizes(&[]);
    }
    for s in inputs {
        check = check.input(s, Dist::Uniform(-2.0, 2.0));
    }
    let src_v = src.clone();
    check.run(
        gpu,
        move |x| src.iter().map(|&(i, j)| x[i][j]).collect(),
        move |_, g| {
            let mut gx: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; n]).collect();
            for (o, &(i, j)) in src_v.iter().enumerate() {
                gx[i][j] += g[o];
            }
            gx
        },
    )
}

fn check_move1(
    name: &str,
    shape: &[usize],
    out_shape: &[usize],
    src: impl Fn(&[usize]) -> Vec<usize>,
    gpu: impl Fn(&Tensor) -> pullback::Result<Tensor>,
) -> Report {
    let src: Vec<(usize, usize)> = (0..numel(out_shape))
        .map(|o| (0, ravel(&src(&unravel(o, out_shape)), shape)))
        .collect();
    check_move(name, &[shape], out_shape, src, |x| gpu(&x[0]))
}

#[test]
fn reshape() {
    let mut family = Report::default();
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[6, 4]),
        (&[2, 3, 4], &[24]),
        (&[2, 3, 4], &[4, 1, 6]),
        (&[24], &[2, 1, 3, 1, 4, 1]),
        (&[], &[1]),
        (&[1, 1], &[]),
        (&[257], &[257, 1]),
    ];
    for &(from, to) in cases {
        let name = format!("reshape {from:?} -> {to:?}");
        let src = (0..numel(to)).map(|o| (0, o)).collect();
        family = family.merge(check_move(&name, &[from], to, src, |x| x[0].reshape(to)));
    }
    family.print("family reshape");
}

#[test]
fn permute_and_transpose() {
    let mut family = Report::default();
    let perms: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[0, 1, 2]),
        (&[2, 3, 4], &[0, 2, 1]),
        (&[2, 3, 4], &[1, 0, 2]),
        (&[2, 3, 4], &[1, 2, 0]),
        (&[2, 3, 4], &[2, 0, 1]),
        (&[2, 3, 4], &[2, 1, 0]),
        (&[2, 3, 4, 5], &[3, 1, 0, 2]),
        (&[2, 1, 3, 1, 2, 2], &[5, 2, 0, 4, 1, 3]),
        (&[7], &[0]),
        (&[], &[]),
    ];
    for &(shape, perm) in perms {
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let name = format!("permute {shape:?} by {perm:?}");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = vec![0; shape.len()];
                for (d, &p) in perm.iter().enumerate() {
                    i[p] = o[d];
                }
                i
            },
            |x| x.permute(perm),
        );
        family = family.merge(r);
    }
    let swaps: &[(&[usize], usize, usize)] = &[
        (&[3, 4], 0, 1),
        (&[2, 3, 4], 0, 2),
        (&[2, 3, 4], 2, 1),
        (&[2, 3, 4], 1, 1),
        (&[65, 3], 1, 0),
    ];
    for &(shape, a, b) in swaps {
        let mut out = shape.to_vec();
        out.swap(a, b);
        let name = format!("transpose {shape:?} ({a}, {b})");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = o.to_vec();
                i.swap(a, b);
                i
            },
            |x| x.transpose(a, b),
        );
        family = family.merge(r);
    }
    family.print("family permute/transpose");
}

/// broadcast_to copies; its adjoint sums over the broadcast axes.
/// `[1, 200] -> [100, 200]` sums 100 values into each of 200 outputs: with
/// K = 1 and K = 3 those are few enough outputs for one workgroup each (tree
/// sum), with K = 64 (12800 outputs) one invocation each (sequential
/// compensated sum), so vjp_batched rows may differ from single vjp calls
/// by the rounding of those sums (the loop tolerance is the same bound).
#[test]
fn broadcast_to() {
    let mut family = Report::default();
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 1], &[2, 3, 4]),
        (&[], &[2, 3]),
        (&[4], &[3, 4]),
        (&[1], &[5]),
        (&[2, 1, 3], &[2, 4, 3]),
        (&[2, 3], &[2, 3]),
        (&[1, 1], &[1, 1]),
        (&[1, 5], &[300, 5]),
        (&[1, 200], &[100, 200]),
    ];
    for &(from, to) in cases {
        let name = format!("broadcast_to {from:?} -> {to:?}");
        let pad = to.len() - from.len();
        let r = check_move1(
            &name,
            from,
            to,
            |o| {
                o[pad..]
                    .iter()
                    .zip(from)
                    .map(|(&i, &d)| if d == 1 { 0 } else { i })
                    .collect()
            },
            |x| x.broadcast_to(to),
        );
        family = family.merge(r);
    }
    family.print("family broadcast_to");
}

#[test]
fn narrow() {
    let mut family = Report::default();
    let cases: &[(&[usize], usize, usize, usize)] = &[
        (&[5, 6], 0, 1, 3),
        (&[5, 6], 1, 0, 6),
        (&[5, 6], 1, 5, 1),
        (&[2, 3, 4], 1, 1, 2),
        (&[2, 3, 4], 2, 3, 1),
        (&[2, 3, 4], 0, 1, 1),
        (&[300], 0, 17, 260),
    ];
    for &(shape, axis, start, len) in cases {
        let mut out = shape.to_vec();
        out[axis] = len;
        let name = format!("narrow {shape:?} axis {axis} {start}..+{len}");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = o.to_vec();
                i[axis] += start;
                i
            },
            |x| x.narrow(axis, start, len),
        );
        family = family.merge(r);
    }
    family.print("family narrow");
}

/// Where output index `o` of a concat along `axis` reads from.
fn concat_src(shapes: &[&[usize]], axis: usize) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut out = shapes[0].to_vec();
    out[axis] = shapes.iter().map(|s| s[axis]).sum();
    let src = (0..numel(&out))
        .map(|o| {
            let mut i = unravel(o, &out);
            let mut which = 0;
            while i[axis] >= shapes[which][axis] {
                i[axis] -= shapes[which][axis];
                which += 1;
            }
            (which, ravel(&i, shapes[which]))
        })
        .collect();
    (out, src)
}

#[test]
fn concat() {
    let mut family = Report::default();
    let cases: &[(&[&[usize]], usize)] = &[
        (&[&[2, 3], &[4, 3], &[1, 3]], 0),
        (&[&[2, 3], &[2, 1], &[2, 5]], 1),
        (&[&[2, 3, 4], &[2, 2, 4]], 1),
        (&[&[2, 3, 4], &[2, 3, 1]], 2),
        (&[&[3], &[300]], 0),
        (&[&[2, 2]], 1),
    ];
    for &(shapes, axis) in cases {
        let (out, src) = concat_src(shapes, axis);
        let name = format!("concat {shapes:?} axis {axis}");
        let r = check_move(&name, shapes, &out, src, |x| {
            let refs: Vec<&Tensor> = x.iter().collect();
            pullback::concat(&refs, axis)
        });
        family = family.merge(r);
    }
    // The same tensor twice (its gradient adds two cotangent slices), via
    // the associated function.
    let (out, src) = concat_src(&[&[2, 3], &[2, 3]], 1);
    let src = src.into_iter().map(|(_, j)| (0, j)).collect();
    let r = check_move("concat [x, x] axis 1", &[&[2, 3]], &out, src, |x| {
        Tensor::concat(&[&x[0], &x[0]], 1)
    });
    family = family.merge(r);
    family.print("family concat");
}

#[test]
fn index_select() {
    let mut family = Report::default();
    let cases: &[(&[usize], usize, &[u32])] = &[
        (&[5, 3], 0, &[4, 0, 2]),
        (&[5, 3], 0, &[1, 1]),
        // Middle axes of rank-3 and rank-4 inputs, with repeats.
        (&[3, 4, 5], 1, &[2, 0, 2, 2, 1]),
        (&[3, 4, 5], 2, &[4, 4, 0]),
        (&[2, 3, 4, 5], 2, &[3, 0, 3]),
        (&[2, 3, 4, 5], 1, &[2, 2, 2, 2, 2, 2, 2]),
        (&[6], 0, &[5, 4, 3, 2, 1, 0, 0]),
    ];
    for &(shape, axis, indices) in cases {
        let mut out = shape.to_vec();
        out[axis] = indices.len();
        let name = format!("index_select {shape:?} axis {axis} {indices:?}");
        let r = check_move1(
            &name,
            shape,
            &out,
            |o| {
                let mut i = o.to_vec();
                i[axis] = indices[o[axis]] as usize;
                i
            },
            |x| x.index_select(axis, indices),
        );
        family = family.merge(r);
    }
    family.print("family index_select");
}
