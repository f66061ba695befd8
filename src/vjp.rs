//! The functional API: `vjp`, `vjp_batched`, `jacobian` and
//! `plan_peak_bytes`. Each checks its arguments, plans the pass, and runs
//! it whole or in chunks of cotangent rows (see `batch.rs`).

use std::sync::Arc;

use crate::batch::{Pass, Seeds};
use crate::device::Device;
use crate::error::{Error, Result, invalid};
use crate::graph::Node;
use crate::kernels::MAX_RANK;
use crate::plan::{Plan, Wanted};
use crate::pool::Storage;
use crate::shape::numel;
use crate::tensor::Tensor;

/// K cotangents at once. `cotangents[i]` has shape `[K, *outputs[i].shape]`
/// (the same K for all); returns, for each input, `[K, *input.shape]`:
/// row k is `Σᵢ vᵢ[k]ᵀ · ∂outputs[i]/∂input`. One pass over the graph and
/// one submit, whatever K is, unless the pass would exceed the device's
/// memory budget ([`Device::set_memory_budget`]) or the adapter's buffer
/// limits: then K is split into chunks of rows, each its own pass and
/// submit, with the same result bit for bit. Does not touch `.grad`.
///
/// Inputs must be tracked (`requires_grad()` leaves or results computed
/// from them); an input no output depends on gets zeros. A cotangent or
/// gradient may exceed the adapter's storage-binding limit (up to its
/// largest buffer): it is then processed in chunks, and such a result can
/// be read back but not passed to ops.
pub fn vjp_batched(
    outputs: &[&Tensor],
    cotangents: &[&Tensor],
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let k = match cotangents.first() {
        Some(v) if v.rank() > 0 => v.shape()[0],
        _ => 0,
    };
    let expected = |y: &Tensor| [&[k][..], y.shape()].concat();
    let Some(req) = Request::new(outputs, Some((cotangents, &expected)), inputs)? else {
        return Ok(Vec::new());
    };
    let grads = req.run(k)?;
    Ok(req.tensors(grads, |x| [&[k][..], x].concat()))
}

/// One cotangent per output, each of its output's shape; returns one
/// gradient per input, of its shape. Does not touch `.grad`.
pub fn vjp(outputs: &[&Tensor], cotangents: &[&Tensor], inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let expected = |y: &Tensor| y.shape().to_vec();
    let Some(req) = Request::new(outputs, Some((cotangents, &expected)), inputs)? else {
        return Ok(Vec::new());
    };
    let grads = req.run(1)?;
    Ok(req.tensors(grads, |x| x.to_vec()))
}

/// The bytes a K-batched pass of [`vjp_batched`] over these outputs and
/// inputs would allocate at its peak: cotangents, scratch and results (the
/// caller's cotangents are not counted: they exist before the pass). Where
/// the pass would be split into chunks (the memory budget, or buffer
/// limits), the peak of the chunked run: the full results plus the largest
/// chunk's working memory. Nothing runs on the device: the pass is executed
/// on a dry run that sizes its buffers, so the figure is what the pass does.
pub fn plan_peak_bytes(outputs: &[&Tensor], inputs: &[&Tensor], k: usize) -> Result<u64> {
    let Some(req) = Request::new(outputs, None, inputs)? else {
        return Ok(0);
    };
    // Stand-ins for the caller's cotangents: sized like them, never counted.
    let (seed_dev, _) = req.dev.dry_run();
    let mut seeds = Vec::new();
    for node in &req.pass_roots {
        seeds.push(Arc::new(
            seed_dev.alloc_large("cotangent", k * numel(&node.shape))?,
        ));
    }
    let pass = req.pass();
    if req.whole(&pass, k, &seeds) {
        return Plan::working_bytes(req.dev, |dry| pass.whole(dry, k, Seeds::Given(&seeds)));
    }
    let c = pass.chunk_rows(k, Seeds::Rows(&seeds, 0))?;
    let results: u64 = req
        .plan
        .wanted
        .iter()
        .map(|n| crate::pool::size_class(4 * (k * numel(&n.shape)) as u64))
        .sum();
    Ok(results + pass.chunk_bytes(c, Seeds::Rows(&seeds, 0))?)
}

/// Options for [`jacobian_with`].
#[derive(Clone, Debug, Default)]
pub struct JacobianOptions {
    /// Cotangent rows per pass. `None` (the default): as many as fit the
    /// device's memory budget and the adapter's buffer limits.
    pub chunk_rows: Option<usize>,
}

/// The Jacobian of `y` with respect to `x`, shape `[*y.shape, *x.shape]`:
/// `∂y[i]/∂x[j]` at `[i, j]`. Computed as a batched VJP of the identity
/// cotangents (reverse mode, one row per element of `y`), chunked to the
/// memory budget; the identity rows of each chunk are written on the device.
pub fn jacobian(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    jacobian_with(y, x, JacobianOptions::default())
}

/// [`jacobian`] with explicit options.
pub fn jacobian_with(y: &Tensor, x: &Tensor, options: JacobianOptions) -> Result<Tensor> {
    let shape = [y.shape(), x.shape()].concat();
    if shape.len() > MAX_RANK + 1 {
        return Err(invalid(
            "jacobian",
            format!(
                "the Jacobian of {:?} by {:?} would have rank {}; at most {} is supported \
                 (reshape y or x to fewer axes)",
                y.shape(),
                x.shape(),
                shape.len(),
                MAX_RANK + 1
            ),
        ));
    }
    if options.chunk_rows == Some(0) {
        return Err(invalid("jacobian", "chunk_rows must be at least 1"));
    }
    let Some(req) = Request::new(&[y], None, &[x])? else {
        return Err(invalid("jacobian", "there is nothing to differentiate"));
    };
    let m = y.numel();
    let pass = req.pass();
    // A y that depends on nothing tracked gets all zeros from one pass.
    let whole = req.pass_roots.is_empty()
        || match options.chunk_rows {
            Some(c) => c >= m,
            None => pass.chunk_fits(m, Seeds::Identity(0)),
        };
    let grads = if whole {
        let g = pass.whole(req.dev, m, Seeds::Identity(0))?;
        req.dev.flush()?;
        g
    } else {
        pass.chunked(m, options.chunk_rows, Seeds::Identity)?
    };
    let Some(data) = grads.into_iter().next() else {
        return Err(invalid("jacobian", "the pass returned no gradient"));
    };
    Ok(Tensor::from_storage(req.dev, data, shape))
}

/// A checked VJP request: device, plan, tracked outputs and their seeds.
struct Request<'a> {
    dev: &'a Device,
    plan: Plan,
    /// Tracked outputs, each with the caller's cotangent when given.
    pass_roots: Vec<Arc<Node>>,
    seeds: Vec<Arc<Storage>>,
}

type Expected<'a> = &'a dyn Fn(&Tensor) -> Vec<usize>;

impl<'a> Request<'a> {
    /// Checks devices, cotangent count and shapes (when given) and that the
    /// inputs are tracked, and plans the pass. None: nothing to do.
    fn new(
        outputs: &[&'a Tensor],
        cotangents: Option<(&[&Tensor], Expected)>,
        inputs: &[&'a Tensor],
    ) -> Result<Option<Request<'a>>> {
        if let Some((v, _)) = cotangents
            && v.len() != outputs.len()
        {
            return Err(Error::CotangentCount {
                outputs: outputs.len(),
                cotangents: v.len(),
            });
        }
        let Some(first) = outputs.first().or(inputs.first()) else {
            return Ok(None);
        };
        let dev = first.device();
        let given = cotangents.map_or(&[][..], |(v, _)| v);
        for t in outputs.iter().chain(given).chain(inputs) {
            dev.check_same(t.device())?;
        }
        dev.check_alive()?;
        let mut pass_roots = Vec::new();
        let mut seeds = Vec::new();
        for (index, y) in outputs.iter().enumerate() {
            if let Some((v, expected_shape)) = cotangents {
                let expected = expected_shape(y);
                if v[index].shape() != expected.as_slice() {
                    return Err(Error::CotangentShape {
                        index,
                        expected,
                        got: v[index].shape().to_vec(),
                    });
                }
                if y.inner.node.is_some() {
                    seeds.push(v[index].inner.data.clone());
                }
            }
            if let Some(node) = &y.inner.node {
                pass_roots.push(node.clone());
            }
        }
        let mut wanted = Vec::new();
        for (index, x) in inputs.iter().enumerate() {
            match &x.inner.node {
                Some(node) => wanted.push(node.clone()),
                None => {
                    return Err(Error::NotTracked {
                        what: format!("input {index} of vjp"),
                    });
                }
            }
        }
        let plan = Plan::new(&pass_roots, Wanted::Nodes(wanted));
        Ok(Some(Request {
            dev,
            plan,
            pass_roots,
            seeds,
        }))
    }

    fn pass(&self) -> Pass<'_> {
        Pass {
            dev: self.dev,
            plan: &self.plan,
            roots: self.pass_roots.clone(),
        }
    }

    /// Whether all K rows go in one pass with the caller's cotangents bound
    /// as they are: they are bindable, and a chunk of all K rows would fit
    /// (with one row there is nothing to split, so only a budget is checked).
    fn whole(&self, pass: &Pass, k: usize, seeds: &[Arc<Storage>]) -> bool {
        let bindable = seeds.iter().all(|s| s.bytes() <= self.dev.max_binding());
        let simple = k <= 1 && self.dev.memory_budget().is_none();
        bindable && (simple || pass.chunk_fits(k, Seeds::Rows(seeds, 0)))
    }

    /// Runs the pass over `k` rows, whole or chunked; one gradient per input.
    fn run(&self, k: usize) -> Result<Vec<Arc<Storage>>> {
        let pass = self.pass();
        if self.whole(&pass, k, &self.seeds) {
            let grads = pass.whole(self.dev, k, Seeds::Given(&self.seeds))?;
            self.dev.flush()?;
            return Ok(grads);
        }
        pass.chunked(k, None, |start| Seeds::Rows(&self.seeds, start))
    }

    fn tensors(
        &self,
        grads: Vec<Arc<Storage>>,
        shape: impl Fn(&[usize]) -> Vec<usize>,
    ) -> Vec<Tensor> {
        grads
            .into_iter()
            .zip(&self.plan.wanted)
            .map(|(g, node)| Tensor::from_storage(self.dev, g, shape(&node.shape)))
            .collect()
    }
}
