//! Zero-size tensors: every op and pass gives the right (empty or zero)
//! result without running a kernel on stale pooled memory. A dimension of
//! 0 makes an empty tensor; a sum over an empty axis is 0 (the empty sum),
//! a product with an empty contraction is zeros; a `vjp_batched` with
//! K = 0 cotangents returns `[0, *x]`, and one whose output is empty
//! returns zero gradients. Each case first fills the pool with buffers of
//! nonzero values, so a skipped write would show old data.
mod common;

use common::*;

/// Leaves idle pooled buffers holding 7s in the small size classes.
fn dirty_pool() {
    for n in [1usize, 2, 3, 4, 6, 8, 12, 16] {
        let t = ok(ok(dev().full(&[n], 3.5)).mul_scalar(2.0));
        assert!(read(&t).iter().all(|&v| v == 7.0));
    }
}

#[test]
fn elementwise_ops_on_empty_tensors_are_empty() {
    dirty_pool();
    let x = tensor(&[], &[0, 3]).requires_grad();
    let y = ok(ok(x.exp()).mul(&x));
    assert_eq!(y.shape(), &[0, 3]);
    assert_eq!(read(&y), Vec::<f32>::new());
    // Broadcasting an empty axis against a full one.
    let b = tensor(&[1.0, 2.0, 3.0], &[3]);
    let z = ok(x.add(&b));
    assert_eq!(z.shape(), &[0, 3]);
    assert!(read(&z).is_empty());
    let g = ok(pullback::vjp(&[&z], &[&tensor(&[], &[0, 3])], &[&x]));
    assert_eq!(g[0].shape(), &[0, 3]);
    assert!(read(&g[0]).is_empty());
}

#[test]
fn a_sum_over_an_empty_axis_is_zero() {
    dirty_pool();
    let x = tensor(&[], &[0, 4]).requires_grad();
    let s = ok(x.sum(&[0], false));
    assert_eq!(s.shape(), &[4]);
    assert_eq!(read(&s), vec![0.0; 4]);
    assert_eq!(read(&ok(x.sum_all())), vec![0.0]);
    let empty_rows = ok(x.sum(&[1], false));
    assert_eq!(empty_rows.shape(), &[0]);
    assert!(read(&empty_rows).is_empty());
    // Its gradient: as empty as x.
    let g = ok(pullback::vjp(&[&s], &[&tensor(&[1.0; 4], &[4])], &[&x]));
    assert_eq!(g[0].shape(), &[0, 4]);
}

#[test]
fn a_product_with_an_empty_contraction_is_zeros() {
    dirty_pool();
    let a = tensor(&[], &[3, 0]).requires_grad();
    let b = tensor(&[], &[0, 2]).requires_grad();
    let c = ok(a.matmul(&b));
    assert_eq!(c.shape(), &[3, 2]);
    assert_eq!(read(&c), vec![0.0; 6]);
    let v = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let g = ok(pullback::vjp(&[&c], &[&v], &[&a, &b]));
    assert_eq!((g[0].shape(), g[1].shape()), (&[3, 0][..], &[0, 2][..]));
    // And empty outer dimensions: an empty product.
    let e = ok(tensor(&[], &[0, 5]).matmul(&tensor(&[1.0; 10], &[5, 2])));
    assert_eq!(e.shape(), &[0, 2]);
    assert!(read(&e).is_empty());
}

#[test]
fn vjp_batched_with_no_rows_or_an_empty_output() {
    dirty_pool();
    let x = tensor(&[0.5, -1.0, 2.0], &[3]).requires_grad();
    let y = ok(ok(x.sin()).mul(&x));
    // K = 0 cotangents: [0, 3] gradients.
    let g = ok(pullback::vjp_batched(
        &[&y],
        &[&tensor(&[], &[0, 3])],
        &[&x],
    ));
    assert_eq!(g[0].shape(), &[0, 3]);
    assert!(read(&g[0]).is_empty());
    // An empty output (the first 0 elements of y): zero gradients.
    let none = ok(y.narrow(0, 0, 0));
    let g = ok(pullback::vjp_batched(
        &[&none],
        &[&tensor(&[], &[2, 0])],
        &[&x],
    ));
    assert_eq!(g[0].shape(), &[2, 3]);
    assert_eq!(read(&g[0]), vec![0.0; 6]);
}
