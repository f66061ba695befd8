//! matmul past the 65535-per-dimension dispatch limit: more batch matrices
//! than one grid dimension holds, forward and both adjoints, exact on small
//! integer inputs (every product and sum is exactly representable).

mod common;

use common::*;

#[test]
fn more_batch_matrices_than_one_dispatch_dimension_holds() {
    let d = dev();
    let batch = 70_000;
    let a_data: Vec<f32> = (0..batch * 2).map(|i| (i % 7) as f32 - 3.0).collect();
    let b_data: Vec<f32> = (0..batch * 2).map(|i| (i % 5) as f32 - 2.0).collect();
    let a = ok(d.tensor(&a_data, &[batch, 1, 2])).requires_grad();
    let b = ok(d.tensor(&b_data, &[batch, 2, 1])).requires_grad();
    let c = ok(a.matmul(&b));
    assert_eq!(c.shape(), &[batch, 1, 1]);
    let want: Vec<f32> = (0..batch)
        .map(|z| a_data[2 * z] * b_data[2 * z] + a_data[2 * z + 1] * b_data[2 * z + 1])
        .collect();
    assert_eq!(read(&c), want);

    // With g = 1 everywhere: dA[z] = B[z]ᵀ, dB[z] = A[z]ᵀ (same flat order).
    let v = ok(d.ones(&[batch, 1, 1]));
    let g = ok(pullback::vjp(&[&c], &[&v], &[&a, &b]));
    assert_eq!(read(&g[0]), b_data);
    assert_eq!(read(&g[1]), a_data);
    assert_usable(d);
}
