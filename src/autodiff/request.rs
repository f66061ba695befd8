//! The one argument check of every pass (`backward`, `vjp`, `vjp_batched`,
//! `jacobian`, `plan_peak_bytes`, per-example gradients, `jvp`,
//! `jvp_batched`, `hvp`, `hvp_batched`): one device, still alive; one
//! cotangent per output or one tangent per input, each of the shape it
//! needs; tracked tensors where derivatives are asked for. Then the plan.

use std::sync::Arc;

use crate::autodiff::plan::{Plan, Wanted};
use crate::error::{Error, Result};
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::tape::tensor::Tensor;

/// The shape an output's cotangent must have.
pub(crate) type Expected<'a> = &'a dyn Fn(&Tensor) -> Vec<usize>;

/// What gradients are asked for.
pub(crate) enum Wrt<'a> {
    /// Every leaf the outputs reach (`backward`); the outputs must be
    /// tracked.
    Leaves,
    /// These tensors, each tracked; errors name one as `role` `index` of
    /// `call` ("input 0 of vjp").
    Tensors {
        tensors: &'a [&'a Tensor],
        role: &'static str,
        call: &'static str,
    },
}

/// A pass's arguments, as the caller gave them.
pub(crate) struct Args<'a> {
    pub outputs: &'a [&'a Tensor],
    /// The cotangents, one per output, and the shape each must have; None
    /// where the pass makes its own seeds (Jacobians, per-example passes).
    pub cotangents: Option<(&'a [&'a Tensor], Expected<'a>)>,
    pub wrt: Wrt<'a>,
    /// The tangents (directions), one per tensor of `wrt`, and the shape
    /// each must have: forward mode and second order.
    pub tangents: Option<(&'a [&'a Tensor], Expected<'a>)>,
}

/// A checked pass: its device, its plan (rooted at the tracked outputs),
/// and the caller's seeds: cotangents of those outputs, or tangents of
/// the `wrt` tensors.
pub(crate) struct Request<'a> {
    pub dev: &'a Device,
    pub plan: Plan,
    pub seeds: Vec<Arc<Storage>>,
}

impl<'a> Request<'a> {
    /// Checks `args` and plans the pass; None when there is nothing at all
    /// (no outputs and no tensors asked for).
    pub fn new(args: Args<'a>) -> Result<Option<Request<'a>>> {
        let Args {
            outputs,
            cotangents,
            wrt,
            tangents,
        } = args;
        if let Some((v, _)) = cotangents
            && v.len() != outputs.len()
        {
            return Err(Error::CotangentCount {
                outputs: outputs.len(),
                cotangents: v.len(),
            });
        }
        let asked: &[&Tensor] = match &wrt {
            Wrt::Leaves => &[],
            Wrt::Tensors { tensors, .. } => tensors,
        };
        if let Some((t, _)) = tangents
            && t.len() != asked.len()
        {
            return Err(Error::TangentCount {
                inputs: asked.len(),
                tangents: t.len(),
            });
        }
        let Some(first) = outputs.first().or(asked.first()) else {
            return Ok(None);
        };
        let dev = first.device();
        let given = cotangents.map_or(&[][..], |(v, _)| v);
        let directions = tangents.map_or(&[][..], |(t, _)| t);
        for t in outputs.iter().chain(given).chain(asked).chain(directions) {
            dev.check_same(t.device())?;
        }
        dev.check_alive()?;
        let mut roots = Vec::new();
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
                if y.is_tracked() {
                    seeds.push(v[index].inner.data.clone());
                }
            }
            if let Some(node) = &y.inner.node {
                roots.push(node.clone());
            }
        }
        let wanted = match wrt {
            Wrt::Leaves => {
                if roots.len() != outputs.len() {
                    return Err(Error::NotTracked {
                        what: "the tensor backward() started from".into(),
                    });
                }
                Wanted::Leaves
            }
            Wrt::Tensors {
                tensors,
                role,
                call,
            } => {
                let mut wanted = Vec::with_capacity(tensors.len());
                for (index, x) in tensors.iter().enumerate() {
                    match &x.inner.node {
                        Some(node) => wanted.push(node.clone()),
                        None => {
                            return Err(Error::NotTracked {
                                what: format!("{role} {index} of {call}"),
                            });
                        }
                    }
                }
                Wanted::Nodes(wanted)
            }
        };
        if let Some((t, expected_shape)) = tangents {
            for (index, (x, t)) in asked.iter().zip(t).enumerate() {
                let expected = expected_shape(x);
                if t.shape() != expected.as_slice() {
                    return Err(Error::TangentShape {
                        index,
                        expected,
                        got: t.shape().to_vec(),
                    });
                }
                seeds.push(t.inner.data.clone());
            }
        }
        Ok(Some(Request {
            dev,
            plan: Plan::new(&roots, wanted),
            seeds,
        }))
    }
}
