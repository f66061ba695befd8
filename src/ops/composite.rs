//! Numerically stable composites built from primitives, so their adjoints
//! (batched like every other) come from the primitives' rules. The max that
//! is subtracted for stability is detached: softmax and logsumexp are
//! invariant to that shift, so no gradient flows through it (as in JAX).

use crate::error::{Result, invalid};
use crate::ops::layout::check_axis;
use crate::tape::tensor::Tensor;

impl Tensor {
    /// log Σ exp(x) along `axis`, computed as m + log Σ exp(x − m) with
    /// m = max(x), so it stays finite for large inputs. Its gradient is
    /// softmax(x).
    pub fn logsumexp(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        check_axis("logsumexp", axis, self.rank())?;
        let m = self.max(axis, true)?.detach();
        let lse = self.sub(&m)?.exp()?.sum(&[axis], true)?.log()?.add(&m)?;
        if keepdim {
            Ok(lse)
        } else {
            let mut shape = self.shape().to_vec();
            shape.remove(axis);
            lse.reshape(&shape)
        }
    }

    /// exp(x) / Σ exp(x) along `axis`.
    pub fn softmax(&self, axis: usize) -> Result<Tensor> {
        check_axis("softmax", axis, self.rank())?;
        let m = self.max(axis, true)?.detach();
        let e = self.sub(&m)?.exp()?;
        let total = e.sum(&[axis], true)?;
        e.div(&total)
    }

    /// x − logsumexp(x) along `axis`.
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor> {
        check_axis("log_softmax", axis, self.rank())?;
        self.sub(&self.logsumexp(axis, true)?)
    }

    /// Per-example cross-entropy of logits `[B, C]` against class labels
    /// (`labels.len() == B`, each `< C`): `l[b] = −log_softmax(x)[b, labels[b]]`,
    /// a vector of shape `[B]` (sum or mean it for a scalar loss).
    pub fn cross_entropy(&self, labels: &[u32]) -> Result<Tensor> {
        let [batch, classes] = *self.shape() else {
            return Err(invalid(
                "cross_entropy",
                format!("logits must be [B, C], got {:?}", self.shape()),
            ));
        };
        if labels.len() != batch {
            return Err(invalid(
                "cross_entropy",
                format!("{} labels for a batch of {batch}", labels.len()),
            ));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(invalid(
                "cross_entropy",
                format!("label {bad} is out of range for {classes} classes"),
            ));
        }
        let mut one_hot = vec![0.0; batch * classes];
        for (b, &l) in labels.iter().enumerate() {
            one_hot[b * classes + l as usize] = 1.0;
        }
        let one_hot = self.device().tensor(&one_hot, &[batch, classes])?;
        // The label's log-probability picked, not multiplied by a one-hot: a
        // −inf logit (a masked class) has log-probability −inf, and −inf·0
        // would make the loss NaN.
        self.log_softmax(1)?
            .keep_where(&one_hot)?
            .sum(&[1], false)?
            .neg()
    }

    /// Minimum along `axis`, as −max(−x): the gradient goes to the first
    /// minimal element.
    pub fn min(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        self.neg()?.max(axis, keepdim)?.neg()
    }

    /// The index along `axis` of each first minimal element (NaN counts as
    /// minimal, as in PyTorch), row-major over the other axes.
    pub fn argmin(&self, axis: usize) -> Result<Vec<u32>> {
        self.neg()?.argmax(axis)
    }

    /// Population variance over `axes` (ddof = 0): mean((x − mean x)²),
    /// built from primitives, so its gradient is 2(x − mean x)/n.
    pub fn var(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        self.centred(axes)?.square()?.mean(axes, keepdim)
    }

    /// x − mean(x) over `axes` (var and layer_norm).
    fn centred(&self, axes: &[usize]) -> Result<Tensor> {
        self.sub(&self.mean(axes, true)?)
    }

    /// Normalizes over the last axis: (x − mean) / √(var + eps), with the
    /// population variance and no affine parameters (multiply and add your
    /// own). Built from primitives; its backward fuses where the pass
    /// allows.
    pub fn layer_norm(&self, eps: f32) -> Result<Tensor> {
        let Some(last) = self.rank().checked_sub(1) else {
            return Err(invalid("layer_norm", "a rank-0 tensor has no last axis"));
        };
        let centred = self.centred(&[last])?;
        let var = centred.square()?.mean(&[last], true)?;
        centred.mul(&var.add_scalar(eps)?.rsqrt()?)
    }
}
