//! squeeze, unsqueeze, flatten, stack, pad and flip: forward values and
//! batched VJPs against index-mapping references (they move values
//! exactly, so the comparison is exact), finite differences through
//! `common::VjpCheck`, and their errors.

mod common;

use common::*;
use pullback::Tensor;

/// `out[o] = x[map(o)]` (None: a constant): the reference forward, and
/// its adjoint, the scatter-add of the cotangent through `map`.
fn check_map(
    name: &str,
    shape: &[usize],
    out: &[usize],
    gpu: impl Fn(&Tensor) -> pullback::Result<Tensor>,
    map: impl Fn(usize) -> Option<usize> + Clone,
    constant: f64,
) {
    let m2 = map.clone();
    let n_in = numel(shape);
    VjpCheck::new(name.to_string())
        .input(shape, Dist::Uniform(-1.0, 1.0))
        .output(out)
        .forward_tol(Tol::ARITH)
        .vjp_tol(Tol::ARITH)
        .run(
            |x| gpu(&x[0]),
            |x| {
                (0..numel(out))
                    .map(|o| map(o).map_or(constant, |i| x[0][i]))
                    .collect()
            },
            |_, v| {
                let mut g = vec![0.0; n_in];
                for (o, &vo) in v.iter().enumerate() {
                    if let Some(i) = m2(o) {
                        g[i] += vo;
                    }
                }
                vec![g]
            },
        );
}

#[test]
fn squeeze_unsqueeze_flatten_are_reshapes() {
    check_map("squeeze", &[3, 1, 4], &[3, 4], |x| x.squeeze(1), Some, 0.0);
    check_map(
        "unsqueeze",
        &[3, 4],
        &[3, 1, 4],
        |x| x.unsqueeze(1),
        Some,
        0.0,
    );
    check_map(
        "unsqueeze last",
        &[3, 4],
        &[3, 4, 1],
        |x| x.unsqueeze(2),
        Some,
        0.0,
    );
    check_map(
        "flatten",
        &[2, 3, 4, 5],
        &[2, 12, 5],
        |x| x.flatten(1, 2),
        Some,
        0.0,
    );
    let d = dev();
    let x = ok(d.tensor(&[1.0; 12], &[3, 4]));
    expect_invalid(x.squeeze(0), "squeeze", &["length 3"]);
    expect_invalid(x.unsqueeze(3), "unsqueeze", &["out of range"]);
    expect_invalid(x.flatten(1, 0), "flatten", &["1", "0"]);
    expect_invalid(x.flatten(0, 2), "flatten", &["2"]);
    assert_eq!(ok(ok(d.tensor(&[5.0], &[])).flatten(0, 0)).shape(), &[1]);
}

#[test]
fn pad_with_a_constant() {
    // [2, 3] padded (1, 0) on axis 0 and (2, 1) on axis 1 → [3, 6].
    let map = |o: usize| {
        let (r, c) = (o / 6, o % 6);
        (r >= 1 && (2..5).contains(&c)).then(|| (r - 1) * 3 + (c - 2))
    };
    check_map(
        "pad",
        &[2, 3],
        &[3, 6],
        |x| x.pad(&[(1, 0), (2, 1)], 0.5),
        map,
        0.5,
    );
    let x = ok(dev().tensor(&[1.0; 6], &[2, 3]));
    expect_invalid(x.pad(&[(1, 1)], 0.0), "pad", &["one per axis"]);
    assert_eq!(read(&ok(x.pad(&[(0, 0), (0, 0)], 9.0))), vec![1.0; 6]);
}

#[test]
fn flip_along_axes() {
    let map = |o: usize| {
        let (a, b, c) = (o / 12, (o / 4) % 3, o % 4);
        Some((1 - a) * 12 + b * 4 + (3 - c))
    };
    check_map(
        "flip",
        &[2, 3, 4],
        &[2, 3, 4],
        |x| x.flip(&[0, 2]),
        map,
        0.0,
    );
    let x = ok(dev().tensor(&[1.0; 6], &[2, 3]));
    expect_invalid(x.flip(&[1, 1]), "flip", &["twice"]);
    expect_invalid(x.flip(&[2]), "flip", &["axis 2"]);
}

/// Output index → (which input, index in it).
type StackMap = dyn Fn(usize) -> (usize, usize);

#[test]
fn stack_along_a_new_axis() {
    for axis in 0..=2 {
        let (out, map): (Vec<usize>, Box<StackMap>) = match axis {
            // out[t, i, j] = x_t[i, j]
            0 => (vec![2, 3, 4], Box::new(|o| (o / 12, o % 12))),
            // out[i, t, j]
            1 => (
                vec![3, 2, 4],
                Box::new(|o| ((o / 4) % 2, (o / 8) * 4 + o % 4)),
            ),
            // out[i, j, t]
            _ => (vec![3, 4, 2], Box::new(|o| (o % 2, o / 2))),
        };
        let map = std::rc::Rc::new(map);
        let m2 = map.clone();
        VjpCheck::new(format!("stack axis {axis}"))
            .input(&[3, 4], Dist::Uniform(-1.0, 1.0))
            .input(&[3, 4], Dist::Uniform(-1.0, 1.0))
            .output(&out)
            .forward_tol(Tol::ARITH)
            .vjp_tol(Tol::ARITH)
            .run(
                |x| pullback::stack(&[&x[0], &x[1]], axis),
                |x| {
                    (0..24)
                        .map(|o| {
                            let (t, i) = map(o);
                            x[t][i]
                        })
                        .collect()
                },
                |_, v| {
                    let mut g = vec![vec![0.0; 12], vec![0.0; 12]];
                    for (o, &vo) in v.iter().enumerate() {
                        let (t, i) = m2(o);
                        g[t][i] += vo;
                    }
                    g
                },
            );
    }
    let d = dev();
    let a = ok(d.tensor(&[1.0; 6], &[2, 3]));
    let b = ok(d.tensor(&[1.0; 6], &[3, 2]));
    expect_shape_mismatch(pullback::stack(&[&a, &b], 0), "stack", &[2, 3], &[3, 2]);
    expect_invalid(pullback::stack(&[], 0), "stack", &["at least one"]);
}
