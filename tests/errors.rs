//! Every error variant of the public API, with text that says what to do,
//! each followed by a computation that shows the device still works; that
//! the variants are distinct; and device loss as an error, not a panic.

mod common;

use common::*;
use pullback::{Error, Tensor};

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
    // (the example).
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
    // A request just past this adapter's largest buffer, with every
    // dimension small: TooLarge before anything is allocated, naming the
    // adapter's limit. (Tensors between the binding limit and this one
    // exist for chunked results and uploads: see tests/chunking.rs.)
    let limit = d.wgpu_device().limits().max_buffer_size;
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
    assert!(d.is_lost());
    // Other devices are unaffected.
    assert_usable(dev());
}

#[test]
fn a_device_lost_in_the_middle_of_recorded_work_is_lost_for_good() {
    let d = fresh_device();
    let x = ok(d.tensor(&[0.5, -1.0, 2.0], &[3])).requires_grad();
    let v = ok(d.tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
    // A forward pass recorded, not submitted; then the device goes.
    let y = ok(ok(x.exp()).mul(&x));
    assert!(!d.is_lost());
    d.wgpu_device().destroy();
    match pullback::vjp_batched(&[&y], &[&v], &[&x]) {
        Err(Error::DeviceLost(msg)) => assert!(!msg.is_empty()),
        other => panic!("vjp_batched: expected DeviceLost, got {other:?}"),
    }
    assert!(d.is_lost());
    // Every later call says so, and what to do.
    for r in [
        y.to_vec().map(drop),
        d.synchronize(),
        d.zeros(&[2]).map(drop),
    ] {
        match r {
            Err(e @ Error::DeviceLost(_)) => {
                assert!(e.to_string().contains("create a new Device"), "{e}")
            }
            other => panic!("expected DeviceLost, got {other:?}"),
        }
    }
    assert_usable(&fresh_device());
}

#[test]
fn rank_seven_batched_gradients_can_be_read_and_reshaped_but_not_computed_with() {
    // vjp_batched of a rank-6 input returns [K, *6 dims]: rank 7.
    let d = dev();
    let shape = [2, 1, 2, 1, 2, 1];
    let x = ok(d.tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &shape)).requires_grad();
    let y = ok(x.sum_all());
    let v = ok(d.tensor(&[1.0, 2.0], &[2]));
    let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x])).remove(0);
    assert_eq!(g.shape(), &[2, 2, 1, 2, 1, 2, 1]);
    let e = expect_err(g.add(&g), &["rank"]);
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    expect_err(g.exp(), &["rank"]);
    let flat = ok(g.reshape(&[2, 8]));
    assert_eq!(read(&ok(flat.sum(&[1], false))), vec![8.0, 16.0]);
    assert_usable(d);
}

#[test]
fn a_wgpu_error_on_the_device_surfaces_once_as_gpu_and_the_device_goes_on() {
    // The caller's own use of the wgpu device breaks a rule: a buffer
    // mapped at creation must have a size that is a multiple of 4. wgpu
    // reports it as an uncaptured error; pullback's next call returns it
    // as Error::Gpu (the device is not lost), then carries on.
    let d = fresh_device();
    let x = ok(d.tensor(&[0.5, -1.0, 2.0], &[3]));
    let _bad = d
        .wgpu_device()
        .create_buffer(&pullback::wgpu::BufferDescriptor {
            label: Some("not a multiple of 4"),
            size: 3,
            usage: pullback::wgpu::BufferUsages::MAP_WRITE | pullback::wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
    match d.tensor(&[1.0, 2.0], &[2]) {
        Err(Error::Gpu(msg)) => assert!(msg.contains("not a multiple of 4"), "{msg}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
    assert!(!d.is_lost());
    let y = ok(ok(x.mul(&x)).sum_all());
    assert_eq!(read(&y), vec![0.25 + 1.0 + 4.0]);
    assert_usable(&d);
}
