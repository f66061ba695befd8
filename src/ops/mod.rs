//! The ops. Each family module holds its shape rule, forward dispatch, VJP
//! rule and what the rule saves; this file holds the one exhaustive match
//! over op kinds, so an op without an adjoint does not compile.

pub(crate) mod accumulate;
pub(crate) mod adjoint_recipe;
pub(crate) mod binary;
mod composite;
pub(crate) mod conv;
pub(crate) mod custom;
mod custom_wgsl;
pub(crate) mod fill;
mod forward_recipe;
pub(crate) mod fused;
pub(crate) mod fused_forward;
pub(crate) mod gemm;
mod index;
pub(crate) mod layout;
mod matmul;
mod max;
pub(crate) mod reduce;
pub(crate) mod reshaping;
mod scan;
pub(crate) mod unary;
pub(crate) mod unfold;

use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::graph::{Input, Node, NodeKind};
use crate::kernels::MAX_RANK;
use crate::pool::Storage;
use crate::tensor::Tensor;

pub(crate) use binary::BinaryOp;
pub(crate) use unary::UnaryOp;

/// A recorded operation.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Elementwise unary op with its scalar parameter (powf exponent, scalar operand).
    Unary(UnaryOp, f32),
    /// Elementwise binary op with broadcasting.
    Binary(BinaryOp),
    /// Matrix product over the last two axes, batch axes broadcast.
    Matmul,
    /// Sum over the axes marked `reduced`, times `scale` (1/count for mean).
    Sum {
        reduced: Vec<bool>,
        scale: f32,
    },
    /// Maximum along `axis`; saves the argmax.
    Max {
        axis: usize,
    },
    Reshape,
    /// Output axis d is input axis `perm[d]`.
    Permute(Vec<usize>),
    BroadcastTo,
    Narrow {
        axis: usize,
        start: usize,
    },
    Concat {
        axis: usize,
    },
    IndexSelect {
        axis: usize,
        indices: Arc<[u32]>,
    },
    /// Inclusive cumulative sum along `axis`.
    Cumsum {
        axis: usize,
    },
    /// Sliding windows of `[N, C, H, W]` images (im2col).
    Unfold(unfold::Window),
    /// The caller's own kernels (`ops/custom.rs`), with its scalars.
    Custom(Arc<custom::CustomDef>, Arc<[f32]>),
}

/// A value a rule keeps from the forward pass for its adjoint.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Saved {
    Input(usize),
    Output,
    /// The i-th side value of the forward kernel (e.g. argmax indices).
    Aux(usize),
}

/// What a VJP rule gets: the batch of K cotangents of the op's output
/// (`[K, *out_shape]`), its inputs' shapes, what it saved, and which
/// inputs need a contribution (and in per-example passes, which of them
/// must keep the examples apart).
pub(crate) struct VjpCtx<'a> {
    pub dev: &'a Device,
    pub k: usize,
    pub g: &'a Arc<Storage>,
    pub out_shape: &'a [usize],
    pub inputs: &'a [Input],
    pub saved: &'a [Arc<Storage>],
    pub needs: &'a [bool],
    /// Per input (empty: all [`PerExample::No`]).
    pub per_example: &'a [PerExample],
}

impl VjpCtx<'_> {
    /// How input `i`'s contribution is wanted.
    pub fn per_example(&self, i: usize) -> PerExample {
        self.per_example.get(i).copied().unwrap_or(PerExample::No)
    }
}

/// How a rule hands an input its contribution in a per-example pass,
/// where the output's axis 0 is the example axis (size B), K = 1, and the
/// input is shared by every example (a parameter broadcast along axis 0,
/// or a matmul operand that rows are multiplied by).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PerExample {
    /// As in any pass: one contribution, summed over the examples.
    No,
    /// One contribution per example, `[B, *input_shape]`: the sum over the
    /// examples is left out.
    Grads,
    /// Only each example's squared L2 norm of that contribution, `[B]`
    /// (offered only where the rule computes it without the `[B, …]` form).
    SquaredNorms,
}

/// One contribution per input (`[K, *input_shape]`), None where not needed.
pub(crate) type Contributions = Vec<Option<Arc<Storage>>>;

/// In a per-example pass, the part an input plays in an op whose output
/// carries the examples along axis 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The input carries the same examples along its axis 0: row b of the
    /// output depends on row b of the input only.
    Example,
    /// The input is shared by every example (broadcast along axis 0, or the
    /// right operand of a matmul): it gets per-example contributions.
    Shared,
}

impl Op {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(op, _) => op.name(),
            Op::Binary(op) => op.name(),
            Op::Matmul => "matmul",
            Op::Sum { .. } => "sum",
            Op::Max { .. } => "max",
            Op::Reshape => "reshape",
            Op::Permute(_) => "permute",
            Op::BroadcastTo => "broadcast_to",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::IndexSelect { .. } => "index_select",
            Op::Cumsum { .. } => "cumsum",
            Op::Unfold(_) => "unfold (convolution or pooling)",
            Op::Custom(..) => "custom op",
        }
    }

    /// The roles of the inputs when the output's axis 0 is the example axis
    /// (size `b` > 1), or why this op mixes examples.
    pub fn example_roles(
        &self,
        inputs: &[Input],
        out: &[usize],
        b: usize,
    ) -> std::result::Result<Vec<Role>, String> {
        // An operand broadcast to the output along axis 0 is shared.
        let along_axis_0 = |shape: &[usize]| {
            if shape.len() == out.len() && shape[0] == b {
                Role::Example
            } else {
                Role::Shared
            }
        };
        let same = || vec![Role::Example; inputs.len()];
        let refuse_axis_0 = |axis: usize, what: &str| {
            if axis == 0 {
                Err(format!("it {what} along axis 0, the example axis"))
            } else {
                Ok(same())
            }
        };
        match self {
            Op::Unary(..) => Ok(same()),
            Op::Binary(_) | Op::BroadcastTo => {
                Ok(inputs.iter().map(|i| along_axis_0(&i.shape)).collect())
            }
            Op::Matmul if out.len() == 2 => Ok(vec![Role::Example, Role::Shared]),
            Op::Matmul => Ok(inputs.iter().map(|i| along_axis_0(&i.shape)).collect()),
            Op::Sum { reduced, .. } if reduced[0] => {
                Err("it sums along axis 0, the example axis".to_string())
            }
            Op::Sum { .. } => Ok(same()),
            Op::Max { axis } => refuse_axis_0(*axis, "takes the maximum"),
            Op::Reshape => {
                let from = &inputs[0].shape;
                if from.first() == Some(&b) {
                    Ok(same())
                } else {
                    Err(format!(
                        "it reshapes {from:?} to {out:?}, merging or splitting axis 0, the example axis"
                    ))
                }
            }
            Op::Permute(perm) if perm[0] == 0 => Ok(same()),
            Op::Permute(perm) => Err(format!(
                "it moves axis {} to axis 0, the example axis (permutation {perm:?})",
                perm[0]
            )),
            Op::Narrow { axis, .. } => refuse_axis_0(*axis, "selects a range of examples"),
            Op::Concat { axis } => refuse_axis_0(*axis, "joins tensors"),
            Op::IndexSelect { axis, .. } => refuse_axis_0(*axis, "selects examples"),
            Op::Cumsum { axis } => refuse_axis_0(*axis, "sums cumulatively"),
            Op::Unfold(_) => Ok(same()),
            Op::Custom(def, _) if def.rowwise => {
                match inputs.iter().find(|i| i.shape.first() != Some(&b)) {
                    None => Ok(same()),
                    Some(i) => Err(format!(
                        "`{}` keeps rows apart, but its input of shape {:?} does not carry \
                         the {b} examples along axis 0 (shared values must enter through \
                         built-in ops)",
                        def.name, i.shape
                    )),
                }
            }
            Op::Custom(def, _) => Err(format!(
                "`{}` is a custom op, and pullback cannot tell whether its kernels keep \
                 the examples apart (declare it with CustomOpBuilder::keeps_rows_apart)",
                def.name
            )),
        }
    }

    /// Whether input `i`'s per-example contribution can come as squared
    /// norms only ([`PerExample::SquaredNorms`]).
    pub fn offers_squared_norms(&self, out_shape: &[usize], i: usize) -> bool {
        match self {
            Op::Matmul => matmul::offers_squared_norms(out_shape, i),
            _ => false,
        }
    }

    pub fn saves(&self) -> &[Saved] {
        match self {
            Op::Custom(def, _) => &def.saves,
            Op::Unary(op, _) => unary::saves(*op),
            Op::Binary(op) => binary::saves(*op),
            Op::Matmul => matmul::SAVES,
            Op::Max { .. } => max::SAVES,
            Op::Sum { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Narrow { .. }
            | Op::Concat { .. }
            | Op::IndexSelect { .. }
            | Op::Cumsum { .. }
            | Op::Unfold(_) => &[],
        }
    }

    pub fn vjp(&self, cx: &VjpCtx) -> Result<Contributions> {
        match self {
            Op::Unary(op, p) => unary::vjp(cx, *op, *p),
            Op::Binary(op) => binary::vjp(cx, *op),
            Op::Matmul => matmul::vjp(cx),
            Op::Sum { reduced, scale } => reduce::vjp_sum(cx, reduced, *scale),
            Op::Max { axis } => max::vjp(cx, *axis),
            Op::Reshape => layout::vjp_reshape(cx),
            Op::Permute(perm) => layout::vjp_permute(cx, perm),
            Op::BroadcastTo => layout::vjp_broadcast(cx),
            Op::Narrow { axis, start } => layout::vjp_narrow(cx, *axis, *start),
            Op::Concat { axis } => layout::vjp_concat(cx, *axis),
            Op::IndexSelect { axis, indices } => index::vjp(cx, *axis, indices),
            Op::Cumsum { axis } => scan::vjp(cx, *axis),
            Op::Unfold(win) => unfold::vjp(cx, *win),
            Op::Custom(def, scalars) => custom::vjp(cx, def, scalars),
        }
    }
}

/// Wraps a forward result. When any input is tracked the result gets a
/// node that links the inputs and keeps exactly what the rule saves.
pub(crate) fn record(
    dev: &Device,
    op: Op,
    inputs: &[&Tensor],
    out: impl Into<Arc<Storage>>,
    shape: Vec<usize>,
) -> Tensor {
    record_with_aux(dev, op, inputs, out, shape, Vec::new())
}

/// [`record`] for rules that also save values their forward kernel
/// computed on the side (`Saved::Aux`, e.g. the argmax of `max`).
pub(crate) fn record_with_aux(
    dev: &Device,
    op: Op,
    inputs: &[&Tensor],
    out: impl Into<Arc<Storage>>,
    shape: Vec<usize>,
    aux: Vec<Storage>,
) -> Tensor {
    let data = out.into();
    if !inputs.iter().any(|t| t.is_tracked()) {
        return Tensor::from_storage(dev, data, shape);
    }
    let aux: Vec<Arc<Storage>> = aux.into_iter().map(Arc::new).collect();
    let saved = op
        .saves()
        .iter()
        .map(|s| match s {
            Saved::Input(i) => inputs[*i].inner.data.clone(),
            Saved::Output => data.clone(),
            Saved::Aux(i) => aux[*i].clone(),
        })
        .collect();
    let inputs = inputs
        .iter()
        .map(|t| Input {
            node: t.inner.node.clone(),
            shape: t.shape().to_vec(),
        })
        .collect();
    let node = Node {
        shape: shape.clone(),
        kind: NodeKind::Op { op, inputs, saved },
    };
    Tensor::with_node(dev, data, shape, Some(Arc::new(node)))
}

/// Operands must have a rank the kernels can index (rank 7 exists only as
/// a `vjp_batched` gradient of a rank-6 input) and live on one device that
/// is still alive. Called by every forward op before it records anything.
pub(crate) fn check_operands(a: &Tensor, others: &[&Tensor]) -> Result<()> {
    if let Some(t) = std::iter::once(a)
        .chain(others.iter().copied())
        .find(|t| t.rank() > MAX_RANK)
    {
        return Err(crate::error::invalid(
            "tensor op",
            format!(
                "an operand has shape {:?}, rank {}; ops take rank <= {MAX_RANK} (reshape it or read it back)",
                t.shape(),
                t.rank()
            ),
        ));
    }
    // Kernels bind whole buffers: a tensor past the binding limit (made by
    // an upload, or a chunked vjp_batched) can only be read back.
    let limit = a.device().max_binding();
    if let Some(t) = std::iter::once(a)
        .chain(others.iter().copied())
        .find(|t| t.inner.data.bytes() > limit)
    {
        return Err(crate::error::Error::TooLarge {
            what: format!(
                "an operand of shape {:?} (kernels bind whole buffers; read it back with to_vec)",
                t.shape()
            ),
            bytes: t.numel() as u64 * 4,
            limit,
        });
    }
    check_device(a, others)
}

/// The device part of [`check_operands`], for ops that take any rank.
pub(crate) fn check_device(a: &Tensor, others: &[&Tensor]) -> Result<()> {
    for t in others {
        a.device().check_same(t.device())?;
    }
    a.device().check_alive()?;
    a.device().flush_if_long()
}

/// Override constant value for a bool.
pub(crate) fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}
