//! The public API of the core engine: the issue's seed example, gradient
//! accumulation, `backward` seeding, async readback, constructors, and use
//! from several threads.

mod common;

use common::*;
use pullback::{Device, Error, Tensor};

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
