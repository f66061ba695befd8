//! The workloads of forward mode and second order, exactly as issue 18
//! defines them, shared by `benches/modes.rs` and `examples/bench_report/`:
//!
//! - W7: Hessian-vector products of W4's MLP (B=64, D=128, H=256, C=10,
//!   mean cross-entropy) along K = 16 directions, against one gradient
//!   (`vjp` of the loss): one `hvp`, one `hvp_batched` over all 16, and 16
//!   `hvp` calls queued with one wait.
//! - W8: `jvp_batched` of W2's `sin(x)·exp(x)` (n = 2^16) with K = 64
//!   tangents, against 64 `jvp` calls queued with one wait.
//! - The tall Jacobian: `tanh(W·x)` with W `[4096, 16]` a constant, x
//!   `[16, 1]`: `JacobianMode::Auto` (forward: 16 tangent rows) against
//!   `Reverse` (4096 cotangent rows).
//!
//! Each graph is recorded once, as W2's and W5's are: a rep is the
//! derivative alone and a wait, so the ratios compare sweeps, not forwards.

use std::hint::black_box;

use pullback::{Device, JacobianMode, JacobianOptions, Tensor};

use super::workloads::{W2_N, W4_DIMS};
use super::{Mlp, values};

/// W7: K = 16 directions.
pub const W7_K: usize = 16;
/// W8: K = 64 tangents.
pub const W8_K: usize = 64;
/// The tall Jacobian: W is `[TALL_M, TALL_N]`.
pub const TALL_M: usize = 4096;
pub const TALL_N: usize = 16;

/// W7's inputs: the mean loss recorded once, its parameters, the K
/// directions per parameter as `[K, *shape]` and as K single tensors.
pub struct W7 {
    dev: Device,
    loss: Tensor,
    params: Vec<Tensor>,
    one: Tensor,
    batched: Vec<Tensor>,
    rows: Vec<Vec<Tensor>>,
}

impl W7 {
    pub fn new(dev: &Device) -> W7 {
        W7::with_k(dev, W7_K)
    }

    /// The same loss with `k` directions (the report's K sweep).
    pub fn with_k(dev: &Device, k: usize) -> W7 {
        let (b, d, h, c) = W4_DIMS;
        let mlp = Mlp::new(dev, b, d, h, c);
        let loss = mlp.loss().mean(&[0], false).unwrap();
        let (mut batched, mut rows) = (Vec::new(), vec![Vec::new(); k]);
        for (i, p) in mlp.params.iter().enumerate() {
            let n = p.numel();
            let data: Vec<Vec<f32>> = (0..k).map(|j| values(n, 40 + 8 * i + j)).collect();
            let mut shape = vec![k];
            shape.extend_from_slice(p.shape());
            batched.push(dev.tensor(&data.concat(), &shape).unwrap());
            for (j, row) in data.iter().enumerate() {
                rows[j].push(dev.tensor(row, p.shape()).unwrap());
            }
        }
        let one = dev.tensor(&[1.0], loss.shape()).unwrap();
        dev.synchronize().unwrap();
        W7 {
            dev: dev.clone(),
            loss,
            params: mlp.params,
            one,
            batched,
            rows,
        }
    }

    fn params(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }

    /// One gradient: `vjp` of the loss into the four parameters.
    pub fn gradient(&self) {
        let g = pullback::vjp(&[&self.loss], &[&self.one], &self.params()).unwrap();
        self.dev.synchronize().unwrap();
        black_box(g);
    }

    /// One `hvp` along the first direction.
    pub fn hvp(&self) {
        let v: Vec<&Tensor> = self.rows[0].iter().collect();
        let hv = pullback::hvp(&self.loss, &self.params(), &v).unwrap();
        self.dev.synchronize().unwrap();
        black_box(hv);
    }

    /// One `hvp_batched` over all K directions.
    pub fn batched(&self) {
        let v: Vec<&Tensor> = self.batched.iter().collect();
        let hv = pullback::hvp_batched(&self.loss, &self.params(), &v).unwrap();
        self.dev.synchronize().unwrap();
        black_box(hv);
    }

    /// K `hvp` calls queued, one wait at the end.
    pub fn looped(&self) {
        let params = self.params();
        let hvs: Vec<_> = self
            .rows
            .iter()
            .map(|row| {
                let v: Vec<&Tensor> = row.iter().collect();
                pullback::hvp(&self.loss, &params, &v).unwrap()
            })
            .collect();
        self.dev.synchronize().unwrap();
        black_box(hvs);
    }
}

/// W8's inputs: x (tracked), y = sin(x)·exp(x), the K tangents as one
/// `[K, n]` tensor and as K tensors of `[n]`.
pub struct W8 {
    dev: Device,
    x: Tensor,
    y: Tensor,
    t_batched: Tensor,
    t_rows: Vec<Tensor>,
}

impl W8 {
    pub fn new(dev: &Device) -> W8 {
        W8::with_k(dev, W8_K)
    }

    /// The same graph with `k` tangents (the report's K sweep).
    pub fn with_k(dev: &Device, k: usize) -> W8 {
        let x = dev
            .tensor(&values(W2_N, 4), &[W2_N])
            .unwrap()
            .requires_grad();
        let y = x.sin().unwrap().mul(&x.exp().unwrap()).unwrap();
        let rows: Vec<Vec<f32>> = (0..k).map(|i| values(W2_N, 70 + i)).collect();
        let t_batched = dev.tensor(&rows.concat(), &[k, W2_N]).unwrap();
        let t_rows = rows
            .iter()
            .map(|r| dev.tensor(r, &[W2_N]).unwrap())
            .collect();
        dev.synchronize().unwrap();
        W8 {
            dev: dev.clone(),
            x,
            y,
            t_batched,
            t_rows,
        }
    }

    /// One `jvp_batched` over all K tangents.
    pub fn batched(&self) {
        let t = pullback::jvp_batched(&[&self.y], &[&self.x], &[&self.t_batched]).unwrap();
        self.dev.synchronize().unwrap();
        black_box(t);
    }

    /// K `jvp` calls queued, one wait at the end.
    pub fn looped(&self) {
        let ts: Vec<_> = self
            .t_rows
            .iter()
            .map(|t| pullback::jvp(&[&self.y], &[&self.x], &[t]).unwrap())
            .collect();
        self.dev.synchronize().unwrap();
        black_box(ts);
    }
}

/// The tall Jacobian's inputs: W `[m, n]` (constant, scaled by 0.1), x
/// `[n, 1]` tracked, y = tanh(W·x) `[m, 1]`.
pub struct Tall {
    dev: Device,
    x: Tensor,
    y: Tensor,
}

impl Tall {
    pub fn new(dev: &Device) -> Tall {
        Tall::with_m(dev, TALL_M)
    }

    /// `m` outputs of the same 16 inputs (the report's sweep).
    pub fn with_m(dev: &Device, m: usize) -> Tall {
        let scaled: Vec<f32> = values(m * TALL_N, 21).iter().map(|v| v * 0.1).collect();
        let w = dev.tensor(&scaled, &[m, TALL_N]).unwrap();
        let x = dev
            .tensor(&values(TALL_N, 22), &[TALL_N, 1])
            .unwrap()
            .requires_grad();
        let y = w.matmul(&x).unwrap().tanh().unwrap();
        dev.synchronize().unwrap();
        Tall {
            dev: dev.clone(),
            x,
            y,
        }
    }

    /// `jacobian_with` in `mode`: `[m, 1, 16, 1]` either way.
    pub fn jacobian(&self, mode: JacobianMode) {
        let options = JacobianOptions {
            mode,
            ..Default::default()
        };
        let j = pullback::jacobian_with(&self.y, &self.x, options).unwrap();
        self.dev.synchronize().unwrap();
        black_box(j);
    }
}
