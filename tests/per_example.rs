//! `per_example_grads` and `per_example_grad_norms`: against loops of
//! single-example backward passes (one-hot cotangents: example b's
//! gradient alone), their sum against `backward_with(ones)`, the norms
//! against the gradients, and every way a graph can mix examples refused.
//!
//! Tolerances: a per-example pass computes each example's gradient from
//! the same f32 values as a single-example pass (row b of every cotangent
//! depends on example b only), but the summed kernels may add the zero
//! rows of the other examples in another order or fold products into
//! sums differently, so values agree to a few f32 roundings of the
//! terms: rtol 1e-5 with atol 1e-6·max|gradient|. Sums over B examples
//! are compared with rtol 1e-5 and atol 1e-5·Σ|terms|.

mod common;

use common::*;
use pullback::{Device, Error, Tensor};

/// A model: forward from the parameters to a `[B]` loss.
type Model<'a> = &'a dyn Fn(&[Tensor]) -> pullback::Result<Tensor>;

fn params(d: &Device, name: &str, shapes: &[&[usize]]) -> Vec<Tensor> {
    let mut r = rng(seed_of(name));
    shapes
        .iter()
        .map(|s| {
            let v = sample(&mut r, numel(s), Dist::Signed(0.05, 0.5));
            ok(d.tensor(&v, s)).requires_grad()
        })
        .collect()
}

/// Example b's gradient by a backward pass seeded with the one-hot e_b.
fn loop_of_single_examples(d: &Device, model: Model, ps: &[Tensor], b: usize) -> Vec<Vec<f32>> {
    let mut per_param = vec![Vec::new(); ps.len()];
    for e in 0..b {
        let mut onehot = vec![0.0; b];
        onehot[e] = 1.0;
        let loss = ok(model(ps));
        ok(loss.backward_with(&ok(d.tensor(&onehot, &[b]))));
        for (acc, p) in per_param.iter_mut().zip(ps) {
            let g = p.grad().map(|g| read(&g)).unwrap_or(vec![0.0; p.numel()]);
            acc.extend(g);
            p.zero_grad();
        }
    }
    per_param
}

fn close(what: &str, got: &[f32], want: &[f32], shape: &[usize]) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    assert_close(
        what,
        &to_f64(got),
        &to_f64(want),
        shape,
        Tol::new(1e-5, 1e-6 * scale),
    );
}

/// per_example_grads equals the loop; its sum over B equals
/// backward_with(ones); the norms equal the gradients' norms.
fn check_model(name: &str, model: Model, ps: &[Tensor], b: usize) {
    let d = dev();
    let refs: Vec<&Tensor> = ps.iter().collect();
    let loss = ok(model(ps));
    assert_eq!(loss.shape(), &[b], "{name}: test bug: loss shape");
    let grads = ok(pullback::per_example_grads(&loss, &refs));
    let looped = loop_of_single_examples(d, model, ps, b);
    ok(loss.backward_with(&ok(d.ones(&[b]))));
    let summed: Vec<Vec<f32>> = ps
        .iter()
        .map(|p| p.grad().map(|g| read(&g)).unwrap_or(vec![0.0; p.numel()]))
        .collect();
    ps.iter().for_each(Tensor::zero_grad);
    let mut norms2 = vec![0.0f64; b];
    for (i, ((g, want), p)) in grads.iter().zip(&looped).zip(ps).enumerate() {
        let shape = [&[b][..], p.shape()].concat();
        assert_eq!(g.shape(), shape.as_slice(), "{name}: param {i} shape");
        let got = read(g);
        close(&format!("{name}: param {i} vs loop"), &got, want, &shape);
        for (e, row) in got.chunks(p.numel()).enumerate() {
            norms2[e] += row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        }
        // Σ_b per-example = the summed gradient.
        let n = p.numel();
        let (mut total, mut mag) = (vec![0.0f64; n], vec![0.0f64; n]);
        for row in got.chunks(n) {
            for j in 0..n {
                total[j] += row[j] as f64;
                mag[j] += (row[j] as f64).abs();
            }
        }
        let atol = 1e-5 * mag.iter().cloned().fold(0.0, f64::max);
        assert_close(
            &format!("{name}: param {i} summed over B vs backward_with(ones)"),
            &to_f64(&summed[i]),
            &total,
            p.shape(),
            Tol::new(1e-5, atol),
        );
    }
    let norms = read(&ok(pullback::per_example_grad_norms(&loss, &refs)));
    let want: Vec<f64> = norms2.iter().map(|v| v.sqrt()).collect();
    assert_close(
        &format!("{name}: norms"),
        &to_f64(&norms),
        &want,
        &[b],
        Tol::new(1e-5, 1e-7),
    );
}

fn data(d: &Device, name: &str, shape: &[usize]) -> Tensor {
    let mut r = rng(seed_of(name));
    ok(d.tensor(
        &sample(&mut r, numel(shape), Dist::Uniform(-1.0, 1.0)),
        shape,
    ))
}

/// The MLP of `examples/mlp.rs`: tanh hidden layer, per-example cross-entropy.
#[test]
fn mlp_matches_a_loop_of_single_example_passes() {
    let (b, dd, h, c) = (8, 5, 7, 3);
    let d = dev();
    let x = data(d, "mlp x", &[b, dd]);
    let labels: Vec<u32> = (0..b).map(|i| (i % c) as u32).collect();
    let ps = params(d, "mlp params", &[&[dd, h], &[h], &[h, c], &[c]]);
    let model = |p: &[Tensor]| {
        let hidden = x.matmul(&p[0])?.add(&p[1])?.tanh()?;
        hidden.matmul(&p[2])?.add(&p[3])?.cross_entropy(&labels)
    };
    check_model("mlp", &model, &ps, b);
}

/// A small CNN (`examples/cnn.rs`'s shape of model): conv2d (2 input
/// channels, 3 filters 3×3, padding 1), relu, 2×2 max pooling, a dense
/// layer and per-example cross-entropy; the images' axis 0 carries the
/// examples through the unfold, the GEMMs and the pooling.
#[test]
fn a_conv_and_max_pool_model_matches_a_loop_of_single_example_passes() {
    let (b, c, hw, f, classes) = (5, 2, 6, 3, 4);
    let d = dev();
    let x = data(d, "cnn x", &[b, c, hw, hw]);
    let labels: Vec<u32> = (0..b).map(|i| (i * 3 % classes) as u32).collect();
    let flat = f * (hw / 2) * (hw / 2);
    let ps = params(
        d,
        "cnn params",
        &[&[f, c, 3, 3], &[flat, classes], &[classes]],
    );
    let options = pullback::ConvOptions {
        padding: 1,
        ..Default::default()
    };
    let model = |p: &[Tensor]| {
        let maps = x.conv2d(&p[0], options)?.relu()?.max_pool2d(2, 2)?;
        let z = maps.reshape(&[b, flat])?.matmul(&p[1])?.add(&p[2])?;
        z.cross_entropy(&labels)
    };
    check_model("conv + max_pool2d", &model, &ps, b);
}

/// One weight used twice (`tanh(x·W)·W`): its per-example gradient is the
/// sum of both uses' outer products, and its norm is not ‖x‖·‖g‖ of either.
#[test]
fn shared_parameter_used_twice() {
    let (b, n) = (6, 4);
    let d = dev();
    let x = data(d, "shared x", &[b, n]);
    let ps = params(d, "shared params", &[&[n, n], &[n]]);
    let model = |p: &[Tensor]| {
        let h = x.matmul(&p[0])?.tanh()?;
        h.matmul(&p[0])?.mul(&p[1])?.square()?.sum(&[1], false)
    };
    check_model("shared", &model, &ps, b);
}

/// Sequences `[B, T, D]·[D, H]`: each example's weight gradient contracts
/// over its T rows (one GEMM per example); a bias of shape `[1, 1, H]`, a
/// scale `[H]` broadcast along two axes, and parameter-only values (a
/// transposed weight, a parameter times 2) feeding the batch.
#[test]
fn sequences_broadcast_parameters_and_parameter_only_values() {
    let (b, t, dd, h) = (5, 3, 4, 6);
    let d = dev();
    let x = data(d, "seq x", &[b, t, dd]);
    let ps = params(d, "seq params", &[&[h, dd], &[1, 1, h], &[h]]);
    let model = |p: &[Tensor]| {
        let w = p[0].transpose(0, 1)?.mul_scalar(2.0)?;
        let y = x.matmul(&w)?.add(&p[1])?.sigmoid()?.mul(&p[2])?;
        y.sum(&[2], false)?.square()?.sum(&[1], false)
    };
    check_model("sequences", &model, &ps, b);
}

/// A batched matmul whose both operands carry the examples, and a
/// parameter reached by no path (zeros).
#[test]
fn example_by_example_products_and_unreached_parameters() {
    let (b, m, p, n) = (4, 3, 5, 2);
    let d = dev();
    let x = data(d, "bmm x", &[b, m, p]);
    let ps = params(d, "bmm params", &[&[p, n], &[3]]);
    let model = |q: &[Tensor]| {
        let u = x.matmul(&q[0])?.tanh()?; // [b, m, n]
        let v = u.transpose(1, 2)?.matmul(&u)?; // [b, n, n], per example
        v.sum(&[1, 2], false)
    };
    check_model("bmm", &model, &ps, b);
    let g = ok(pullback::per_example_grads(&ok(model(&ps)), &[&ps[1]]));
    assert_eq!(g[0].shape(), &[b, 3]);
    assert!(read(&g[0]).iter().all(|&v| v == 0.0));
}

/// One example: the plain gradient as `[1, *shape]`.
#[test]
fn a_single_example() {
    let d = dev();
    let x = data(d, "one x", &[1, 3]);
    let ps = params(d, "one params", &[&[3, 2], &[2]]);
    let model = |p: &[Tensor]| x.matmul(&p[0])?.add(&p[1])?.exp()?.sum(&[1], false);
    check_model("one example", &model, &ps, 1);
}

/// One pass: one submit, and about the dispatches of a summed backward
/// (the per-example products replace the sums over examples).
#[test]
fn one_pass_not_b_passes() {
    let d = fresh_device();
    let (b, dd, h, c) = (16, 5, 7, 3);
    let x = ok(d.tensor(&vec![0.5; b * dd], &[b, dd]));
    let labels: Vec<u32> = (0..b).map(|i| (i % c) as u32).collect();
    let ps = params(&d, "one pass", &[&[dd, h], &[h], &[h, c], &[c]]);
    let refs: Vec<&Tensor> = ps.iter().collect();
    let loss = ok(ok(ok(ok(ok(x.matmul(&ps[0])).add(&ps[1])).tanh()).matmul(&ps[2])).add(&ps[3]));
    let loss = ok(loss.cross_entropy(&labels));
    ok(d.synchronize());
    let before = d.stats();
    ok(loss.backward_with(&ok(d.ones(&[b]))));
    let summed = d.stats().dispatches - before.dispatches;
    let before = d.stats();
    let g = ok(pullback::per_example_grads(&loss, &refs));
    let after = d.stats();
    assert_eq!(after.submits - before.submits, 1, "one submit");
    let dispatches = after.dispatches - before.dispatches;
    assert!(
        dispatches <= summed + 2,
        "{dispatches} dispatches vs {summed} for backward"
    );
    drop(g);
}

#[test]
fn graphs_that_mix_examples_are_refused() {
    let d = dev();
    let (b, dd, h) = (6, 4, 5);
    let x = data(d, "mix x", &[b, dd]);
    let ps = params(d, "mix params", &[&[dd, h]]);
    let w = &ps[0];
    let hid = ok(x.matmul(w));
    let refuse = |loss: pullback::Result<Tensor>, words: &[&str]| {
        let loss = ok(loss);
        let e = expect_err(pullback::per_example_grads(&loss, &[w]), words);
        assert!(matches!(e, Error::MixesExamples { .. }), "{e:?}");
        let e = expect_err(pullback::per_example_grad_norms(&loss, &[w]), words);
        assert!(matches!(e, Error::MixesExamples { .. }), "{e:?}");
        assert_usable(d);
    };
    // A reduction over axis 0 (batch normalisation's mean).
    refuse(
        (|| hid.sub(&hid.mean(&[0], true)?)?.square()?.sum(&[1], false))(),
        &["sum", "examples"],
    );
    // A softmax across axis 0.
    refuse((|| hid.softmax(0)?.sum(&[1], false))(), &["examples"]);
    // A matmul across axis 0 (hᵀ·h, a Gram matrix over the examples).
    refuse(
        (|| {
            hid.matmul(&hid.transpose(0, 1)?.matmul(&hid)?)?
                .sum(&[1], false)
        })(),
        &["matmul", "examples"],
    );
    // A product whose columns are other examples (h·hᵀ).
    refuse(
        (|| hid.matmul(&hid.transpose(0, 1)?)?.sum(&[1], false))(),
        &["examples"],
    );
    // A reshape that merges axis 0.
    refuse(
        (|| hid.reshape(&[b * h])?.reshape(&[b, h])?.sum(&[1], false))(),
        &["reshape", "axis 0"],
    );
    // A value reduced over the examples only, broadcast back to [B].
    refuse((|| hid.sum_all()?.broadcast_to(&[b]))(), &["examples"]);
    // Selecting examples.
    refuse(
        (|| hid.index_select(0, &[1, 0, 2, 3, 5, 4])?.sum(&[1], false))(),
        &["index_select"],
    );
}

#[test]
fn bad_arguments() {
    let d = dev();
    let w = ok(d.tensor(&[1.0, 2.0], &[2])).requires_grad();
    let loss = ok(ok(w.mul_scalar(3.0)).reshape(&[2, 1]));
    let e = expect_err(pullback::per_example_grads(&loss, &[&w]), &["[B]"]);
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    // A parameter whose axis 0 is the example axis: not shared.
    let loss = ok(w.mul_scalar(3.0));
    expect_err(pullback::per_example_grads(&loss, &[&w]), &["shared"]);
    let c = ok(d.tensor(&[1.0, 2.0], &[2]));
    let e = expect_err(
        pullback::per_example_grads(&loss, &[&c]),
        &["requires_grad"],
    );
    assert!(matches!(e, Error::NotTracked { .. }), "{e:?}");
    // An untracked loss: zeros.
    let g = ok(pullback::per_example_grads(&c, &[&w]));
    assert_eq!(read(&g[0]), vec![0.0; 4]);
    assert_usable(d);
}
