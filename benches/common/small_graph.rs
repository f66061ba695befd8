//! W9: a small graph whose cost is host work, not GPU work. 96 elementwise
//! ops on n = 256 values (`sin`, `mul` by x, `add_scalar(0.5)` in turn),
//! forward, one `vjp` and a readback of the gradient: every rep records the
//! graph anew, so it measures what a step of a small model costs the host
//! (recording, planning, fusion, encoding, one submit, one map).

use std::hint::black_box;

use pullback::Device;

use super::values;

/// W9: n = 256 values.
pub const W9_N: usize = 256;
/// W9: 96 ops, a third each of sin, mul by x and add_scalar(0.5).
pub const W9_OPS: usize = 96;

/// W9's inputs: x and the cotangent v, both `[256]`.
pub struct W9 {
    x: pullback::Tensor,
    v: pullback::Tensor,
}

impl W9 {
    pub fn new(dev: &Device) -> W9 {
        let x = dev.tensor(&values(W9_N, 9), &[W9_N]).unwrap();
        let v = dev.tensor(&values(W9_N, 19), &[W9_N]).unwrap();
        dev.synchronize().unwrap();
        W9 { x, v }
    }

    /// One rep: x tracked, the 96 ops, `vjp` to x, the gradient read back.
    pub fn run(&self) {
        let x = self.x.clone().requires_grad();
        let mut y = x.clone();
        for i in 0..W9_OPS {
            y = match i % 3 {
                0 => y.sin(),
                1 => y.mul(&x),
                _ => y.add_scalar(0.5),
            }
            .unwrap();
        }
        let g = pullback::vjp(&[&y], &[&self.v], &[&x]).unwrap();
        black_box(g[0].to_vec().unwrap());
    }
}
