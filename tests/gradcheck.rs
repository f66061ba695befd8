//! `pullback::gradcheck`: passes on smooth graphs over every op family
//! (elementwise with broadcasting, matmul, reductions, max without ties,
//! layout ops, the composites), fails, naming the element, at a kink where
//! the two sides of a difference see different slopes, and refuses calls
//! it cannot make.

mod common;

use common::*;
use pullback::{Error, GradcheckOptions, Tensor, gradcheck};

fn input(name: &str, shape: &[usize], dist: Dist) -> Tensor {
    let mut r = rng(seed_of(name));
    tensor(&sample(&mut r, numel(shape), dist), shape)
}

#[track_caller]
fn passes(what: &str, f: impl Fn(&[Tensor]) -> pullback::Result<Tensor>, inputs: &[&Tensor]) {
    let report = ok(gradcheck(f, inputs, GradcheckOptions::default()));
    eprintln!("{what}: {report}");
    assert!(report.is_ok(), "{what}: {report}");
    assert!(report.checked > 0);
}

#[test]
fn smooth_graphs_pass() {
    let u = |n: &str, s: &[usize]| input(n, s, Dist::Uniform(-1.0, 1.0));
    let pos = |n: &str, s: &[usize]| input(n, s, Dist::Uniform(0.5, 2.0));
    let (x, w, b) = (u("x", &[3, 4]), u("w", &[4, 2]), u("b", &[2]));
    passes(
        "tanh(x·w + b), summed",
        |t| t[0].matmul(&t[1])?.add(&t[2])?.tanh()?.sum_all(),
        &[&x, &w, &b],
    );
    passes(
        "cross_entropy(x·w + b)",
        |t| t[0].matmul(&t[1])?.add(&t[2])?.cross_entropy(&[0, 1, 1]),
        &[&x, &w, &b],
    );
    let p = pos("p", &[2, 3]);
    passes(
        "log, sqrt, div, powf with broadcasting",
        |t| {
            t[0].log()?
                .add(&t[0].sqrt()?)?
                .div(&t[1].sigmoid()?.add_scalar(0.5)?)?
                .powf(1.5)
        },
        &[&p, &u("q", &[3])],
    );
    passes(
        "softmax, logsumexp",
        |t| t[0].softmax(1)?.mul(&t[0].logsumexp(1, true)?),
        &[&x],
    );
    passes(
        "mean and sum over axes",
        |t| t[0].exp()?.mean(&[0], false)?.mul(&t[1].sum(&[1], false)?),
        &[&x, &u("r", &[4, 5])],
    );
    // Distinct values: no ties at the maximum.
    let distinct = tensor(&[0.1, 0.9, -0.4, 0.3, 0.7, -0.8], &[2, 3]);
    passes(
        "max along an axis",
        |t| t[0].max(1, false)?.square(),
        &[&distinct],
    );
    passes(
        "permute, reshape, narrow, concat, index_select",
        |t| {
            let a = t[0].permute(&[1, 0])?.reshape(&[2, 6])?.narrow(1, 1, 4)?;
            let c = pullback::concat(&[&a, &a.sin()?], 0)?;
            c.index_select(0, &[3, 0, 2])
        },
        &[&x],
    );
    // The output need not be a scalar: projections and the Jacobian cover it.
    passes(
        "a vector output",
        |t| t[0].mul(&t[1])?.cos(),
        &[&u("a", &[5]), &u("c", &[5])],
    );
}

/// The ops of issue 10 through `gradcheck` (finite differences of the
/// functions themselves), with inputs away from kinks and ties.
#[test]
fn activations_selection_scans_convolution_and_normalization_pass() {
    let u = |n: &str, s: &[usize]| input(n, s, Dist::Uniform(-1.0, 1.0));
    let pos = |n: &str, s: &[usize]| input(n, s, Dist::Uniform(0.5, 2.0));
    let x = u("x10", &[3, 4]);
    passes(
        "gelu, gelu_tanh, silu, softplus, elu, leaky_relu",
        |t| {
            let a = t[0].gelu()?.add(&t[0].gelu_tanh()?)?.mul(&t[0].silu()?)?;
            a.add(&t[0].softplus()?)?
                .add(&t[0].elu(0.7)?)?
                .mul(&t[0].leaky_relu(0.1)?)
        },
        &[&x],
    );
    passes(
        "log1p, expm1, rsqrt, pow",
        |t| {
            let a = t[0].log1p()?.add(&t[0].expm1()?)?.mul(&t[0].rsqrt()?)?;
            a.add(&t[0].pow(&t[1])?)
        },
        &[&pos("p10", &[2, 3]), &u("q10", &[3])],
    );
    passes(
        "maximum, minimum, where_cond, clamp inside its bounds",
        |t| {
            let m = t[0].maximum(&t[1])?.mul(&t[0].minimum(&t[1])?)?;
            let w = t[0].gt(&t[1])?.where_cond(&t[0].sin()?, &t[1].cos()?)?;
            m.add(&w)?.add(&t[0].clamp(-5.0, 5.0)?)
        },
        &[&x, &u("y10", &[4])],
    );
    passes(
        "cumsum, var, min, layer_norm, flip, pad, stack",
        |t| {
            let a = t[0].cumsum(1)?.mul(&t[0].var(&[1], true)?)?;
            let b = a.add(&t[0].min(0, true)?)?.add(&t[0].layer_norm(1e-5)?)?;
            let c = b.flip(&[0, 1])?.pad(&[(1, 0), (0, 2)], 0.5)?;
            pullback::stack(&[&c, &c.tanh()?], 1)
        },
        &[&x],
    );
    passes(
        "conv2d (stride 2, padding 1, groups 2), gelu, max_pool2d, avg_pool2d, conv1d",
        |t| {
            let o = pullback::ConvOptions {
                stride: 2,
                padding: 1,
                dilation: 1,
                groups: 2,
            };
            let y = t[0].conv2d(&t[1], o)?.gelu()?;
            let p = y.max_pool2d(2, 1)?.add(&y.avg_pool2d(2, 1)?)?;
            let z = t[0]
                .reshape(&[1, 4, 25])?
                .conv1d(&t[2], pullback::ConvOptions::default())?;
            p.sum_all()?.add(&z.square()?.sum_all()?)
        },
        &[
            &u("img", &[1, 4, 5, 5]),
            &u("w2", &[4, 2, 3, 3]),
            &u("w1", &[2, 4, 3]),
        ],
    );
}

#[test]
fn a_kink_fails_and_names_the_element() {
    // relu at exactly 0: the difference sees slope 0 on one side and 1 on
    // the other (0.5), the VJP takes the convention (0).
    let x = tensor(&[0.5, 0.0, -0.25], &[3]);
    let report = ok(gradcheck(
        |t| t[0].relu()?.sum_all(),
        &[&x],
        GradcheckOptions::default(),
    ));
    assert!(!report.is_ok(), "{report}");
    let worst = report.worst.clone().expect("a worst comparison");
    let text = report.to_string();
    assert!(
        text.contains("FAILED") && text.contains("analytic") && text.contains("tolerance"),
        "{text}"
    );
    eprintln!("{text}");
    // The Jacobian pins it to element 1 (the kink).
    let jac = ok(gradcheck(
        |t| t[0].relu(),
        &[&x],
        GradcheckOptions {
            projections: 0,
            batch: 0,
            ..Default::default()
        },
    ));
    let w = jac.worst.expect("a worst comparison");
    assert!(w.what.contains("element 1"), "{w:?}");
    assert!((w.numeric - 0.5).abs() < 0.05 && w.analytic == 0.0, "{w:?}");
    assert!(worst.ratio() > 1.0);
}

#[test]
fn calls_it_cannot_make_are_errors() {
    expect_invalid(
        gradcheck(|t| t[0].sum_all(), &[], GradcheckOptions::default()),
        "gradcheck",
        &["at least one input"],
    );
    let (d1, d2) = (fresh_device(), fresh_device());
    let a = ok(d1.tensor(&[1.0], &[1]));
    let b = ok(d2.tensor(&[2.0], &[1]));
    let e = expect_err(
        gradcheck(|t| t[0].add(&t[1]), &[&a, &b], GradcheckOptions::default()),
        &["device"],
    );
    assert_eq!(e, Error::DeviceMismatch);
}
