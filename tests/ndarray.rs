//! The `ndarray` feature: `Device::from_ndarray` and `Tensor::to_ndarray`
//! keep logical indices whatever the array's memory layout, and gradients
//! come back as arrays of the input's shape.
//! Run with `cargo test --features ndarray --test ndarray`.
#![cfg(feature = "ndarray")]

use ndarray::{Array, ArrayD, IxDyn, s};
use pullback::{Device, Result};

/// [0, 1, …, n−1] in the shape given, standard layout.
fn iota(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

#[test]
fn round_trip_of_a_transposed_array() -> Result<()> {
    let dev = Device::new()?;
    // [2, 3] reversed to [3, 2]: the same memory read column-major.
    let a = iota(&[2, 3]).reversed_axes();
    assert!(!a.is_standard_layout());
    let t = dev.from_ndarray(&a)?;
    assert_eq!(t.shape(), &[3, 2]);
    // Row-major order of the logical [3, 2] array: aᵀ[i][j] = a[j][i] = 3j + i.
    assert_eq!(t.to_vec()?, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let back = t.to_ndarray()?;
    assert!(back.is_standard_layout());
    assert_eq!(back, a);
    Ok(())
}

#[test]
fn permuted_and_sliced_arrays_match_the_tensor_ops() -> Result<()> {
    let dev = Device::new()?;
    let a = iota(&[2, 3, 4]);
    // Permuting on the host then converting equals converting then permuting
    // on the device.
    let host = dev.from_ndarray(&a.clone().permuted_axes(IxDyn(&[2, 0, 1])))?;
    let device = dev.from_ndarray(&a)?.permute(&[2, 0, 1])?;
    assert_eq!(host.shape(), &[4, 2, 3]);
    assert_eq!(host.to_vec()?, device.to_vec()?);

    // A stepped slice (not contiguous at all) and a view of it.
    let stepped = a.slice(s![.., 1.., ..;2]);
    assert_eq!(stepped.shape(), &[2, 2, 2]);
    let t = dev.from_ndarray(&stepped)?;
    assert_eq!(t.to_ndarray()?, stepped.to_owned().into_dyn());
    assert_eq!(
        t.to_vec()?,
        vec![4.0, 6.0, 8.0, 10.0, 16.0, 18.0, 20.0, 22.0]
    );
    Ok(())
}

#[test]
fn rank_zero_and_empty_arrays() -> Result<()> {
    let dev = Device::new()?;
    let scalar = ArrayD::from_elem(IxDyn(&[]), 2.5f32);
    let t = dev.from_ndarray(&scalar)?;
    assert_eq!(t.rank(), 0);
    assert_eq!(t.to_ndarray()?, scalar);

    let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
    assert_eq!(dev.from_ndarray(&empty)?.to_ndarray()?, empty);
    Ok(())
}

#[test]
fn gradient_of_a_transposed_input() -> Result<()> {
    let dev = Device::new()?;
    // y = x ⊙ x ⊙ c, so ∂⟨v, y⟩/∂x = 2 x ⊙ c ⊙ v, computed here with ndarray.
    let x_host = iota(&[3, 2]).reversed_axes().mapv(|e| e - 2.0); // [2, 3]
    let c_host = Array::from_shape_fn((2, 3), |(i, j)| (i + 2 * j) as f32 * 0.5).into_dyn();
    let v_host = iota(&[3, 2]).reversed_axes().mapv(|e| 1.0 + e * 0.25);
    let x = dev.from_ndarray(&x_host)?.requires_grad();
    let c = dev.from_ndarray(&c_host)?;
    let y = x.mul(&x)?.mul(&c)?;
    y.backward_with(&dev.from_ndarray(&v_host)?)?;
    let grad = x
        .grad()
        .expect("x is a leaf that y depends on")
        .to_ndarray()?;
    let expected = &x_host * 2.0 * &c_host * &v_host;
    assert_eq!(grad.shape(), &[2, 3]);
    for (g, e) in grad.iter().zip(expected.iter()) {
        assert!(
            (g - e).abs() <= 1e-6 * e.abs().max(1.0),
            "{grad} vs {expected}"
        );
    }

    // Batched: K = 2 cotangent rows stacked on axis 0, built by ndarray.
    let vs = ndarray::stack(
        ndarray::Axis(0),
        &[v_host.view(), v_host.mapv(|e| -e).view()],
    )
    .unwrap();
    let g = pullback::vjp_batched(&[&y], &[&dev.from_ndarray(&vs)?], &[&x])?[0].to_ndarray()?;
    assert_eq!(g.shape(), &[2, 2, 3]);
    for (row, sign) in [(0, 1.0f32), (1, -1.0)] {
        let want = expected.mapv(|e| sign * e);
        for (g, e) in g.index_axis(ndarray::Axis(0), row).iter().zip(want.iter()) {
            assert!((g - e).abs() <= 1e-6 * e.abs().max(1.0));
        }
    }
    Ok(())
}
