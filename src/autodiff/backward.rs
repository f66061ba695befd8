//! `Tensor::backward` and `backward_with`: PyTorch's accumulation into the
//! leaves' `grad`. One pass of the plan with every leaf reached wanted and
//! K = 1, through the same check and the same entry as `vjp`; then each
//! leaf's slot gets the sum of what it had and what reached it.

use std::sync::Arc;

use crate::autodiff::chunk::{Pass, Seeds};
use crate::autodiff::request::{Args, Request, Wrt};
use crate::error::{Error, Result};
use crate::lock::Recover;
use crate::ops::accumulate;
use crate::shape::numel;
use crate::tape::graph::NodeKind;
use crate::tape::tensor::Tensor;

impl Tensor {
    /// Backpropagates from a one-element output (rank 0 or `[1]`, any rank
    /// of size 1), seeding it with 1, and accumulates into every leaf's `grad`.
    ///
    /// ```
    /// # fn main() -> pullback::Result<()> {
    /// let dev = pullback::Device::new()?;
    /// let x = dev.tensor(&[1.0, -2.0, 3.0], &[3])?.requires_grad();
    /// let loss = x.square()?.sum_all()?; // ∂loss/∂x = 2x
    /// loss.backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec()?, vec![2.0, -4.0, 6.0]);
    /// loss.backward()?; // accumulates, as PyTorch does
    /// assert_eq!(x.grad().unwrap().to_vec()?, vec![4.0, -8.0, 12.0]);
    /// x.zero_grad();
    /// assert!(x.grad().is_none());
    /// # Ok(()) }
    /// ```
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::NonScalarBackward {
                shape: self.shape().to_vec(),
            });
        }
        let seed = self.device().ones(self.shape())?;
        self.backward_with(&seed)
    }

    /// Backpropagates the cotangent `v` (same shape as `self`): every leaf's
    /// `grad` gets `vᵀ·∂self/∂leaf` added, as PyTorch's `backward(gradient=v)`.
    /// The graph is kept, so calling it again accumulates again.
    pub fn backward_with(&self, v: &Tensor) -> Result<()> {
        let expected = |y: &Tensor| y.shape().to_vec();
        let (outputs, cotangents) = ([self], [v]);
        let Some(req) = Request::new(Args {
            outputs: &outputs,
            cotangents: Some((&cotangents, &expected)),
            wrt: Wrt::Leaves,
            tangents: None,
        })?
        else {
            return Ok(());
        };
        let dev = req.dev;
        let reached = Pass::new(dev, &req.plan).run(dev, 1, Seeds::Given(&req.seeds))?;
        for (leaf, contribution) in req.plan.wanted.iter().zip(reached) {
            let (Some(contribution), NodeKind::Leaf { grad }) = (contribution, &leaf.kind) else {
                continue;
            };
            let mut slot = grad.locked();
            let sum = match slot.as_ref() {
                None => contribution,
                Some(old) => Arc::new(accumulate::add(
                    dev,
                    old,
                    &contribution,
                    numel(&leaf.shape),
                )?),
            };
            *slot = Some(sum);
        }
        dev.flush()
    }
}
