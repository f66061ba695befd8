//! The public API of the core engine: the issue's seed example, gradient
//! accumulation, `backward` seeding, every error variant (each followed by
//! a computation that shows the device still works), device loss, the
//! dispatch/submit counters, adapter selection, `from_wgpu`, async
//! readback, constructors, and use from several threads.

mod common;

use common::*;
use pullback::{Device, DeviceOptions, Error, Tensor};

/// A small computation with a known result, forward and backward, to show
/// that `dev` still works after an error.
#[track_caller]
fn assert_usable(dev: &Device) {
    let x = ok(dev.tensor(&[1.0, -2.0, 3.0], &[3])).requires_grad();
    let y = ok(ok(x.mul(&x)).add_scalar(1.0));
    assert_eq!(ok(y.to_vec()), vec![2.0, 5.0, 10.0]);
    let v = ok(dev.tensor(&[1.0, 1.0, 0.5], &[3]));
    let g = ok(pullback::vjp(&[&y], &[&v], &[&x]));
    assert_eq!(ok(g[0].to_vec()), vec![2.0, -4.0, 3.0]);
}

/// Asserts that `r` failed and its Display text contains every one of
/// `words` (case-insensitive); returns the error for matching its variant.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: pullback::Result<T>, words: &[&str]) -> Error {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
    };
    let text = e.to_string().to_lowercase();
    for w in words {
        assert!(
            text.contains(&w.to_lowercase()),
            "the message of {e:?} should mention {w:?}: {e}"
        );
    }
    e
}

// ---------------------------------------------------------------------------
// The seed example, accumulation, seeding
// ---------------------------------------------------------------------------

/// The issue's example, as written there (plus the values it implies).
#[test]
fn seed_example_from_the_issue() -> pullback::Result<()> {
    let dev = Device::new()?;
    let x = dev.tensor(&[2.0, 3.0], &[2])?.requires_grad();
    let y = x.mul(&x)?;
    assert_eq!(y.to_vec()?, vec![4.0, 9.0]);
    assert_eq!((&x * &x).to_vec()?, vec![4.0, 9.0]);
    assert!(y.backward().is_err());
    y.backward_with(&dev.tensor(&[1.0, 1.0], &[2])?)?;
    assert_eq!(x.grad().unwrap().to_vec()?, vec![4.0, 6.0]);
    y.backward_with(&dev.tensor(&[1.0, 1.0], &[2])?)?;
    assert_eq!(x.grad().unwrap().to_vec()?, vec![8.0, 12.0]);
    x.zero_grad();
    assert!(x.grad().is_none());

    // K = 3 cotangents stacked on a leading axis: v is [K, *y.shape].
    let v = dev.tensor(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
    let grads = pullback::vjp_batched(&[&y], &[&v], &[&x])?;
    assert_eq!(grads.len(), 1);
    assert_eq!(grads[0].shape(), &[3, 2]);
    assert_eq!(grads[0].to_vec()?, vec![4.0, 0.0, 0.0, 6.0, 4.0, 6.0]);
    let v1 = dev.tensor(&[1.0, 1.0], &[2])?;
    let grads = pullback::vjp(&[&y], &[&v1], &[&x])?;
    assert_eq!(grads[0].shape(), &[2]);
    assert_eq!(grads[0].to_vec()?, vec![4.0, 6.0]);
    // vjp and vjp_batched do not touch .grad.
    assert!(x.grad().is_none());
    Ok(())
}

#[test]
fn gradients_accumulate_until_zero_grad() {
    let d = dev();
    let x = tensor(&[2.0, 3.0], &[2]).requires_grad();
    let y = ok(x.mul(&x));
    let ones = ok(d.ones(&[2]));
    ok(y.backward_with(&ones));
    ok(y.backward_with(&ones));
    assert_eq!(read(&x.grad().unwrap()), vec![8.0, 12.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    // After zero_grad accumulation starts over, from another cotangent.
    ok(y.backward_with(&tensor(&[0.5, -1.0], &[2])));
    assert_eq!(read(&x.grad().unwrap()), vec![2.0, -6.0]);
    // A different graph over the same leaf adds to the same slot.
    let z = ok(x.mul_scalar(3.0));
    ok(z.backward_with(&ones));
    assert_eq!(read(&x.grad().unwrap()), vec![5.0, -3.0]);
    // zero_grad on a non-leaf or untracked tensor is a no-op.
    y.zero_grad();
    tensor(&[1.0], &[1]).zero_grad();
    assert!(y.grad().is_none());
}

#[test]
fn backward_on_a_non_scalar_output_is_an_error_that_mentions_scalar() {
    let x = tensor(&[2.0, 3.0], &[2]).requires_grad();
    let y = ok(x.mul(&x));
    let e = expect_err(y.backward(), &["scalar", "backward_with"]);
    assert_eq!(e, Error::NonScalarBackward { shape: vec![2] });
    assert!(x.grad().is_none(), "a failed backward must not touch grads");
    assert_usable(dev());
}

#[test]
fn one_element_outputs_seed_one() {
    // Rank 0, [1], [1, 1, 1]: backward() seeds 1.
    for shape in [&[][..], &[1], &[1, 1, 1]] {
        let x = tensor(&[3.0], shape).requires_grad();
        let y = ok(ok(x.mul(&x)).mul_scalar(0.5));
        assert_eq!(y.shape(), shape);
        ok(y.backward());
        assert_eq!(read(&x.grad().unwrap()), vec![3.0], "shape {shape:?}");
    }
    // A one-element output of a broadcast: d(x·c)/dx = Σc.
    let x = tensor(&[2.0], &[]).requires_grad();
    let c = tensor(&[1.0, 2.0], &[2]);
    let y = ok(x.mul(&c));
    expect_err(y.backward(), &["scalar"]);
    ok(y.backward_with(&tensor(&[1.0, 1.0], &[2])));
    assert_eq!(read(&x.grad().unwrap()), vec![3.0]);
    // backward() from the leaf itself: d x / d x = 1.
    let x = tensor(&[5.0], &[1]).requires_grad();
    ok(x.backward());
    assert_eq!(read(&x.grad().unwrap()), vec![1.0]);
}

// ---------------------------------------------------------------------------
// Errors: distinct variants, helpful text, device usable afterwards
// ---------------------------------------------------------------------------

#[test]
fn shape_mismatch() {
    let a = tensor(&[1.0, 2.0, 3.0], &[3]).requires_grad();
    let b = tensor(&[1.0, 2.0, 3.0, 4.0], &[4]);
    let e = expect_err(a.add(&b), &["[3]", "[4]", "broadcast"]);
    assert_eq!(
        e,
        Error::ShapeMismatch {
            op: "add",
            lhs: vec![3],
            rhs: vec![4]
        }
    );
    let e = expect_err(
        tensor(&[0.0; 6], &[2, 3]).mul(&tensor(&[0.0; 6], &[3, 2])),
        &["[2, 3]", "[3, 2]"],
    );
    assert!(matches!(e, Error::ShapeMismatch { op: "mul", .. }), "{e:?}");
    assert_usable(dev());
}

#[test]
fn wrong_cotangent_shape() {
    let x = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let y = ok(x.exp());
    // backward_with
    let e = expect_err(y.backward_with(&tensor(&[1.0; 3], &[3])), &["[3]", "[2]"]);
    assert_eq!(
        e,
        Error::CotangentShape {
            index: 0,
            expected: vec![2],
            got: vec![3]
        }
    );
    assert!(x.grad().is_none());
    // vjp: same number of elements, wrong shape.
    let e = expect_err(
        pullback::vjp(&[&y], &[&tensor(&[1.0; 2], &[2, 1])], &[&x]),
        &["cotangent 0", "[2, 1]"],
    );
    assert!(matches!(e, Error::CotangentShape { index: 0, .. }), "{e:?}");
    // vjp_batched without the leading K axis: K is read as 2, so [2, 2] is
    // expected; the message explains the [K, *output.shape] layout.
    let e = expect_err(
        pullback::vjp_batched(&[&y], &[&tensor(&[1.0; 2], &[2])], &[&x]),
        &["[K, *output.shape]"],
    );
    assert_eq!(
        e,
        Error::CotangentShape {
            index: 0,
            expected: vec![2, 2],
            got: vec![2]
        }
    );
    // vjp_batched with two outputs whose cotangents disagree on K.
    let z = ok(x.sin());
    let e = expect_err(
        pullback::vjp_batched(
            &[&y, &z],
            &[&tensor(&[1.0; 6], &[3, 2]), &tensor(&[1.0; 4], &[2, 2])],
            &[&x],
        ),
        &["cotangent 1"],
    );
    assert_eq!(
        e,
        Error::CotangentShape {
            index: 1,
            expected: vec![3, 2],
            got: vec![2, 2]
        }
    );
    assert_usable(dev());
}

#[test]
fn cotangent_count_differs_from_output_count() {
    let x = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let y = ok(x.exp());
    let v = tensor(&[1.0, 1.0], &[2]);
    let e = expect_err(
        pullback::vjp(&[&y], &[], &[&x]),
        &["0 cotangents", "1 outputs"],
    );
    assert_eq!(
        e,
        Error::CotangentCount {
            outputs: 1,
            cotangents: 0
        }
    );
    let vb = tensor(&[1.0, 1.0], &[1, 2]);
    let e = expect_err(
        pullback::vjp_batched(&[&y], &[&vb, &vb], &[&x]),
        &["one per output"],
    );
    assert_eq!(
        e,
        Error::CotangentCount {
            outputs: 1,
            cotangents: 2
        }
    );
    assert_eq!(
        pullback::vjp(&[&y], &[&v, &v], &[&x]).unwrap_err(),
        Error::CotangentCount {
            outputs: 1,
            cotangents: 2
        }
    );
    assert_usable(dev());
}

#[test]
fn tensors_from_two_devices() {
    let other = fresh_device();
    assert!(!other.same(dev()));
    let a = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let b = ok(other.tensor(&[3.0, 4.0], &[2]));
    let e = expect_err(a.add(&b), &["same Device"]);
    assert_eq!(e, Error::DeviceMismatch);
    assert_eq!(expect_err(b.mul(&a), &[]), Error::DeviceMismatch);
    // A cotangent from the other device, in every entry point.
    let y = ok(a.exp());
    assert_eq!(
        expect_err(y.backward_with(&ok(other.ones(&[2]))), &[]),
        Error::DeviceMismatch
    );
    assert_eq!(
        expect_err(pullback::vjp(&[&y], &[&ok(other.ones(&[2]))], &[&a]), &[]),
        Error::DeviceMismatch
    );
    assert_eq!(
        expect_err(
            pullback::vjp_batched(&[&y], &[&ok(other.ones(&[1, 2]))], &[&a]),
            &[]
        ),
        Error::DeviceMismatch
    );
    // An input from the other device.
    let c = ok(other.tensor(&[3.0, 4.0], &[2])).requires_grad();
    assert_eq!(
        expect_err(pullback::vjp(&[&y], &[&ok(dev().ones(&[2]))], &[&c]), &[]),
        Error::DeviceMismatch
    );
    assert_usable(dev());
    assert_usable(&other);
}

#[test]
fn data_length_mismatch() {
    let e = expect_err(
        dev().tensor(&[1.0, 2.0, 3.0], &[2]),
        &["3 elements", "needs 2"],
    );
    assert_eq!(
        e,
        Error::DataLength {
            expected: 2,
            got: 3
        }
    );
    let e = expect_err(dev().tensor(&[1.0, 2.0], &[]), &[]);
    assert_eq!(
        e,
        Error::DataLength {
            expected: 1,
            got: 2
        }
    );
    assert_usable(dev());
}

#[test]
fn rank_above_six() {
    let shape7 = [1usize, 2, 1, 1, 1, 1, 1];
    let e = expect_err(dev().tensor(&[1.0, 2.0], &shape7), &["rank 7", "at most 6"]);
    assert!(
        matches!(e, Error::InvalidArgument { op: "tensor", .. }),
        "{e:?}"
    );
    let e = expect_err(dev().zeros(&shape7), &["rank 7"]);
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    // Rank 6 works, including broadcasting and gradients.
    let x = tensor(&[1.0, 2.0], &[1, 1, 2, 1, 1, 1]).requires_grad();
    let y = ok(x.mul(&tensor(&[3.0, 4.0], &[2])));
    assert_eq!(y.shape(), &[1, 1, 2, 1, 1, 2]);
    let g = ok(pullback::vjp(&[&y], &[&ok(dev().ones(y.shape()))], &[&x]));
    assert_eq!(read(&g[0]), vec![7.0, 7.0]);
    assert_usable(dev());
}

#[test]
fn size_past_the_adapter_limits() {
    let d = dev();
    // 2^32 values = 16 GiB, beyond any adapter's per-buffer binding limit
    // (the issue's example).
    let e = expect_err(d.zeros(&[1 << 30, 4]), &["bytes", "at most"]);
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    assert_usable(d);
}

#[test]
fn element_count_overflow_is_too_large_not_a_panic() {
    // 2^80 elements: the element count overflows usize.
    let d = dev();
    let e = expect_err(d.zeros(&[1 << 20; 4]), &[]);
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    let e = expect_err(d.tensor(&[1.0], &[1 << 20; 4]), &[]);
    assert!(
        matches!(e, Error::DataLength { .. } | Error::TooLarge { .. }),
        "{e:?}"
    );
    // Empty tensors with large dimensions are fine.
    assert_eq!(ok(d.tensor(&[], &[0, 1 << 20, 1 << 20])).numel(), 0);
    assert_usable(d);
}

#[test]
fn size_past_this_adapters_limit_with_small_dimensions() {
    let d = dev();
    // A request just past this adapter's own limit, with every dimension
    // small: also TooLarge, and the limit it names is the adapter's.
    let limit = {
        let l = d.wgpu_device().limits();
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    };
    let elements = limit / 4 + 1024;
    let e = expect_err(d.zeros(&[(elements / 1024) as usize, 1024]), &[]);
    match e {
        Error::TooLarge {
            limit: l, bytes, ..
        } => {
            assert_eq!(l, limit);
            assert!(bytes > limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A batched gradient too large for one buffer ([K, *x.shape] with a
    // small cotangent [K]): TooLarge from vjp_batched, before any work.
    let n = 1 << 20;
    let x = ok(d.zeros(&[n])).requires_grad();
    let y = ok(x.sum_all());
    let k = (limit / 4 / n as u64 + 1) as usize;
    let v = ok(d.ones(&[k]));
    let e = expect_err(pullback::vjp_batched(&[&y], &[&v], &[&x]), &["gradient"]);
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    assert_usable(d);
}

#[test]
fn untracked_inputs_and_outputs() {
    let x = tensor(&[1.0, 2.0], &[2]);
    let y = ok(x.exp());
    assert!(!y.is_tracked());
    let e = expect_err(
        y.backward_with(&tensor(&[1.0, 1.0], &[2])),
        &["requires_grad"],
    );
    assert!(matches!(e, Error::NotTracked { .. }), "{e:?}");
    let t = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let z = ok(t.exp());
    let e = expect_err(
        pullback::vjp(&[&z], &[&tensor(&[1.0, 1.0], &[2])], &[&x]),
        &["requires_grad"],
    );
    assert!(matches!(e, Error::NotTracked { .. }), "{e:?}");
    assert_usable(dev());
}

#[test]
fn errors_are_distinct_variants() {
    let d = dev();
    let x = tensor(&[1.0, 2.0], &[2]).requires_grad();
    let y = ok(x.exp());
    let errors = [
        x.add(&tensor(&[1.0; 3], &[3])).unwrap_err(),
        y.backward_with(&tensor(&[1.0; 3], &[3])).unwrap_err(),
        pullback::vjp(&[&y], &[], &[&x]).unwrap_err(),
        d.tensor(&[1.0], &[2]).unwrap_err(),
        d.zeros(&[1; 7]).unwrap_err(),
        d.zeros(&[1 << 16, 1 << 16]).unwrap_err(),
        y.backward().unwrap_err(),
    ];
    let kinds: Vec<_> = errors.iter().map(std::mem::discriminant).collect();
    for i in 0..kinds.len() {
        for j in 0..i {
            assert_ne!(kinds[i], kinds[j], "{:?} vs {:?}", errors[i], errors[j]);
        }
    }
    // Every message says what to do, not just what went wrong.
    for e in &errors {
        assert!(e.to_string().len() > 40, "terse message: {e}");
    }
    assert_usable(d);
}

#[test]
fn device_lost_is_an_error_not_a_panic() {
    let d = fresh_device();
    let x = ok(d.tensor(&[1.0, 2.0, 3.0], &[3])).requires_grad();
    let y = ok(x.exp());
    let v = ok(d.ones(&[3]));
    ok(d.synchronize());
    d.wgpu_device().destroy();
    let lost = |r: pullback::Result<Tensor>, what: &str| match r {
        Err(Error::DeviceLost(_)) => {}
        other => panic!("{what}: expected DeviceLost, got {other:?}"),
    };
    match y.to_vec() {
        Err(Error::DeviceLost(msg)) => assert!(!msg.is_empty()),
        other => panic!("to_vec: expected DeviceLost, got {other:?}"),
    }
    lost(x.mul(&x), "mul");
    lost(x.exp(), "exp");
    lost(d.tensor(&[1.0], &[1]), "tensor");
    lost(d.zeros(&[4]), "zeros");
    match pullback::vjp(&[&y], &[&v], &[&x]) {
        Err(Error::DeviceLost(_)) => {}
        other => panic!("vjp: expected DeviceLost, got {other:?}"),
    }
    match y.backward_with(&v) {
        Err(Error::DeviceLost(_)) => {}
        other => panic!("backward_with: expected DeviceLost, got {other:?}"),
    }
    match pollster::block_on(y.to_vec_async()) {
        Err(Error::DeviceLost(_)) => {}
        other => panic!("to_vec_async: expected DeviceLost, got {other:?}"),
    }
    match d.synchronize() {
        Err(Error::DeviceLost(_)) => {}
        other => panic!("synchronize: expected DeviceLost, got {other:?}"),
    }
    let text = y.to_vec().unwrap_err().to_string();
    assert!(text.contains("create a new Device"), "{text}");
    // Other devices are unaffected.
    assert_usable(dev());
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[test]
fn batched_vjp_costs_the_same_dispatches_and_submits_for_every_k() {
    // A dedicated device, so no other test's work is counted.
    let d = fresh_device();
    let mut r = rng(seed_of("stats"));
    let xv = sample(&mut r, 6 * 5, Dist::Uniform(-1.0, 1.0));
    let yv = sample(&mut r, 5, Dist::Signed(0.5, 2.0));
    let x = ok(d.tensor(&xv, &[6, 5])).requires_grad();
    let y = ok(d.tensor(&yv, &[5])).requires_grad();
    // A chain with reuse, broadcasting and an input used three times.
    let f = ok(ok(ok(x.sin()).mul(&ok(x.exp()))).add(&ok(x.div(&y))));
    let out = ok(ok(f.tanh()).mul(&y));
    let unused = ok(d.tensor(&[1.0, 2.0], &[2])).requires_grad();
    let mut cost = Vec::new();
    for k in [1usize, 64] {
        let v = ok(d.tensor(&sample(&mut r, k * 30, COTANGENT), &[k, 6, 5]));
        ok(d.synchronize()); // nothing pending before the pass
        let before = d.stats();
        let g = ok(pullback::vjp_batched(&[&out], &[&v], &[&x, &y, &unused]));
        let after = d.stats();
        assert_eq!(g[0].shape(), &[k, 6, 5]);
        assert_eq!(g[1].shape(), &[k, 5]);
        assert_eq!(g[2].shape(), &[k, 2]);
        assert_eq!(
            after.submits - before.submits,
            1,
            "K={k}: one submit per pass"
        );
        cost.push((
            after.dispatches - before.dispatches,
            after.submits - before.submits,
        ));
        // Reading results back is one more submit per tensor, no dispatch.
        let before = d.stats();
        assert!(read(&g[2]).iter().all(|&v| v == 0.0));
        let after = d.stats();
        assert_eq!(after.submits - before.submits, 1);
        assert_eq!(after.dispatches, before.dispatches);
    }
    assert_eq!(cost[0], cost[1], "(dispatches, submits) for K=1 vs K=64");
    assert!(cost[0].0 > 0);
    // backward_with: also one submit.
    ok(d.synchronize());
    let before = d.stats();
    ok(out.backward_with(&ok(d.tensor(&sample(&mut r, 30, COTANGENT), &[6, 5]))));
    assert_eq!(d.stats().submits - before.submits, 1);
}

#[test]
fn memory_counters_track_live_tensors() {
    let d = fresh_device();
    let s0 = d.stats();
    let t = ok(d.zeros(&[1000]));
    let s1 = d.stats();
    assert!(s1.live_bytes >= s0.live_bytes + 4000, "{s0:?} -> {s1:?}");
    assert!(s1.peak_bytes >= s1.live_bytes);
    drop(t);
    let s2 = d.stats();
    assert_eq!(s2.live_bytes, s0.live_bytes, "dropping a tensor frees it");
    assert_eq!(s2.peak_bytes, s1.peak_bytes, "peak stays");
    d.reset_peak();
    assert_eq!(d.stats().peak_bytes, s2.live_bytes);
}

// ---------------------------------------------------------------------------
// Adapter selection and device creation
// ---------------------------------------------------------------------------

#[test]
fn pool_keeps_idle_buffers_up_to_its_limit() {
    let dev = fresh_device();
    let t = ok(dev.ones(&[1000]));
    drop(t);
    assert!(
        dev.stats().pooled_bytes >= 4000,
        "a freed buffer is kept for reuse"
    );
    dev.trim_pool();
    assert_eq!(dev.stats().pooled_bytes, 0);
    dev.set_pool_limit(0);
    let t = ok(dev.ones(&[1000]));
    drop(t);
    assert_eq!(
        dev.stats().pooled_bytes,
        0,
        "past the limit a freed buffer is released"
    );
    assert_eq!(read(&ok(dev.full(&[3], 2.0))), vec![2.0; 3]);
}

#[test]
fn long_forward_chains_are_submitted_in_pieces() {
    // Forward work that is never read back must not grow one encoder forever.
    let dev = fresh_device();
    let mut x = ok(dev.ones(&[16]));
    let before = dev.stats().submits;
    for _ in 0..3000 {
        x = ok(x.add_scalar(1.0));
    }
    assert!(dev.stats().submits - before >= 2, "{:?}", dev.stats());
    assert_eq!(read(&x), vec![3001.0; 16]);
}

#[test]
fn no_backend_means_no_adapter_and_the_text_says_how_to_install_one() {
    let r = pollster::block_on(Device::with_options(DeviceOptions {
        adapter: None,
        backends: pullback::wgpu::Backends::empty(),
    }));
    let e = expect_err(r, &["mesa-vulkan-drivers"]);
    assert_eq!(e, Error::NoAdapter);
}

#[test]
fn unknown_adapter_name_is_adapter_not_found() {
    let r = pollster::block_on(Device::with_options(DeviceOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    }));
    let e = expect_err(r, &["no-such-adapter-xyz", "PULLBACK_ADAPTER"]);
    match e {
        Error::AdapterNotFound { wanted, available } => {
            assert_eq!(wanted, "no-such-adapter-xyz");
            assert!(!available.is_empty(), "it lists the adapters there are");
        }
        other => panic!("expected AdapterNotFound, got {other:?}"),
    }
}

#[test]
fn device_new_async() {
    let d = pollster::block_on(Device::new_async())
        .unwrap_or_else(|e| panic!("pullback tests need an adapter: {e}"));
    assert!(!d.adapter_info().name.is_empty());
    assert_usable(&d);
}

#[test]
fn from_wgpu_with_a_device_the_caller_made() {
    // A wgpu device requested from a fresh instance, with default limits.
    let instance = pullback::wgpu::Instance::new(
        pullback::wgpu::InstanceDescriptor::new_without_display_handle(),
    );
    let adapter = pollster::block_on(
        instance.request_adapter(&pullback::wgpu::RequestAdapterOptions::default()),
    )
    .unwrap_or_else(|e| panic!("no adapter for from_wgpu: {e}"));
    let (device, queue) =
        pollster::block_on(adapter.request_device(&pullback::wgpu::DeviceDescriptor::default()))
            .unwrap_or_else(|e| panic!("request_device: {e}"));
    let d = Device::from_wgpu(device, queue);
    assert_usable(&d);
    // The same wgpu device shared by a second pullback Device: independent
    // pullback devices (tensors do not mix), both working.
    let shared = Device::from_wgpu(dev().wgpu_device().clone(), dev().wgpu_queue().clone());
    assert!(!shared.same(dev()));
    assert_usable(&shared);
    let a = ok(shared.tensor(&[1.0], &[1]));
    assert_eq!(
        expect_err(a.add(&tensor(&[1.0], &[1])), &[]),
        Error::DeviceMismatch
    );
}

// ---------------------------------------------------------------------------
// Readback, constructors, threads
// ---------------------------------------------------------------------------

#[test]
fn to_vec_async_reads_back() {
    let x = tensor(&[1.0, 2.0, 3.0], &[3]).requires_grad();
    let y = ok(x.mul_scalar(2.0));
    assert_eq!(
        ok(pollster::block_on(y.to_vec_async())),
        vec![2.0, 4.0, 6.0]
    );
    let g = ok(pullback::vjp(&[&y], &[&ok(dev().ones(&[3]))], &[&x]));
    assert_eq!(ok(pollster::block_on(g[0].to_vec_async())), vec![2.0; 3]);
    // Empty tensors read back as empty.
    let e = tensor(&[], &[0, 3]);
    assert_eq!(ok(pollster::block_on(e.to_vec_async())), Vec::<f32>::new());
    assert_eq!(read(&e), Vec::<f32>::new());
}

#[test]
fn constructors() {
    let d = dev();
    let z = ok(d.zeros(&[2, 3]));
    assert_eq!((z.shape(), z.rank(), z.numel()), (&[2, 3][..], 2, 6));
    assert_eq!(read(&z), vec![0.0; 6]);
    assert_eq!(read(&ok(d.ones(&[7]))), vec![1.0; 7]);
    assert_eq!(read(&ok(d.full(&[3, 1], -2.5))), vec![-2.5; 3]);
    let s = ok(d.scalar(4.25));
    assert_eq!((s.shape(), s.rank(), s.numel()), (&[][..], 0, 1));
    assert_eq!(read(&s), vec![4.25]);
    // Sizes that do not fill a workgroup or a vec4, and one past 256·4.
    for n in [1usize, 3, 257, 1025] {
        assert_eq!(read(&ok(d.full(&[n], 0.5))), vec![0.5; n], "n = {n}");
    }
    let t = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    assert_eq!(read(&t), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Constructors are untracked; requires_grad makes a leaf; detach cuts.
    assert!(!t.is_tracked());
    let l = t.clone().requires_grad();
    assert!(l.is_tracked() && l.is_leaf());
    assert!(!ok(l.exp()).is_leaf());
    assert!(!l.detach().is_tracked());
    assert!(l.device().same(d));
}

#[test]
fn tensors_are_send_and_sync_and_work_from_other_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tensor>();
    assert_send_sync::<Device>();
    assert_send_sync::<Error>();

    let x = tensor(&[1.0, 2.0, 3.0], &[3]).requires_grad();
    let y = ok(x.mul(&x));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (x, y) = (x.clone(), y.clone());
            std::thread::spawn(move || {
                let s = i as f32;
                let v = ok(x.device().tensor(&[s, 1.0, 0.0], &[3]));
                let g = ok(pullback::vjp(&[&y], &[&v], &[&x]));
                let z = ok(y.add_scalar(s));
                (read(&g[0]), read(&z))
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (g, z) = h.join().unwrap();
        let s = i as f32;
        assert_eq!(g, vec![2.0 * s, 4.0, 0.0]);
        assert_eq!(z, vec![1.0 + s, 4.0 + s, 9.0 + s]);
    }
    // backward from another thread accumulates into the leaf seen here.
    let y2 = y.clone();
    std::thread::spawn(move || ok(y2.backward_with(&ok(y2.device().ones(&[3])))))
        .join()
        .unwrap();
    assert_eq!(read(&x.grad().unwrap()), vec![2.0, 4.0, 6.0]);
}

#[test]
fn one_device_shared_by_many_threads_gives_exact_results() {
    // Several threads record, submit and read back on one device at once,
    // so buffers freed by one thread are reused by another while work is in
    // flight. Values are small integers, so every result is exact in f32
    // and any interleaving bug shows as a wrong value or a failed readback.
    let d = fresh_device();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut r = rng(seed_of("threads") + t);
                for i in 0..40 {
                    let n = [1usize, 7, 64, 257][i % 4];
                    let xv: Vec<f32> = (0..n).map(|_| rng_int(&mut r)).collect();
                    let x = ok(d.tensor(&xv, &[n])).requires_grad();
                    let c = ok(d.scalar(2.0));
                    // y = x·x + 2x, dy/dx = 2x + 2.
                    let y = ok(ok(x.mul(&x)).add(&ok(x.mul(&c))));
                    let want_y: Vec<f32> = xv.iter().map(|a| a * a + 2.0 * a).collect();
                    assert_eq!(read(&y), want_y, "thread {t} iteration {i}: forward");
                    let k = 3;
                    let vv: Vec<f32> = (0..k * n).map(|_| rng_int(&mut r)).collect();
                    let v = ok(d.tensor(&vv, &[k, n]));
                    let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
                    let want: Vec<f32> = (0..k * n)
                        .map(|j| vv[j] * (2.0 * xv[j % n] + 2.0))
                        .collect();
                    assert_eq!(read(&g[0]), want, "thread {t} iteration {i}: vjp_batched");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// A small integer in [-8, 8].
fn rng_int(r: &mut rand::rngs::StdRng) -> f32 {
    sample(r, 1, Dist::Uniform(-8.0, 8.0))[0].round()
}
