//! The ops. Each op's module holds its math, shape rule, forward dispatch,
//! VJP rule and what the rule saves (`unfold.rs` is the model: math,
//! constants, forward, vjp, front-end, in that order); this file holds the
//! op kinds and the one exhaustive match over them, so an op without an
//! adjoint does not compile. Rules get buffers and launch kernels directly;
//! they return contributions and never accumulate (`autodiff/scheduler.rs`
//! does). Front-ends check and record through `tape/record.rs`.

pub(crate) mod accumulate;
mod composite;
pub(crate) mod concat;
pub(crate) mod conv;
pub(crate) mod custom;
pub(crate) mod elementwise;
pub(crate) mod fill;
mod index;
pub(crate) mod layout;
pub(crate) mod matmul;
mod max;
pub(crate) mod reduce;
pub(crate) mod reshaping;
mod scan;
pub(crate) mod shaders;
pub(crate) mod unfold;

use std::sync::Arc;

use crate::error::Result;
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::graph::Input;

pub(crate) use elementwise::{BinaryOp, UnaryOp};

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

/// What a tangent rule gets (forward mode): the K tangent rows of each
/// input (`[K, *input_shape]`; None where it is zero, at least one given),
/// the inputs' shapes and what the op saved: the tape holds the point the
/// op is linearized at.
pub(crate) struct JvpCtx<'a> {
    pub dev: &'a Device,
    pub k: usize,
    pub tangents: &'a [Option<Arc<Storage>>],
    pub out_shape: &'a [usize],
    pub inputs: &'a [Input],
    pub saved: &'a [Arc<Storage>],
}

impl JvpCtx<'_> {
    /// The one input's tangent of a one-input op.
    pub fn only(&self) -> Result<&Arc<Storage>> {
        self.tangents
            .first()
            .and_then(Option::as_ref)
            .ok_or_else(|| crate::error::invalid("jvp", "a tangent rule was given no tangent"))
    }
}

/// What a curvature rule gets (second order, forward over reverse): ȳ,
/// the output's adjoint (one row, `[*out_shape]`), the inputs' tangents
/// along K directions (None: zero), and which inputs need the term.
pub(crate) struct CurvatureCtx<'a> {
    pub dev: &'a Device,
    pub k: usize,
    pub ybar: &'a Arc<Storage>,
    pub tangents: &'a [Option<Arc<Storage>>],
    pub out_shape: &'a [usize],
    pub inputs: &'a [Input],
    pub saved: &'a [Arc<Storage>],
    pub needs: &'a [bool],
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

    /// What the rule keeps from the forward pass (the scheduler frees each
    /// after the rule's last use).
    pub fn saves(&self) -> &[Saved] {
        match self {
            Op::Custom(def, _) => &def.saves,
            Op::Unary(op, _) => elementwise::unary::saves(*op),
            Op::Binary(op) => elementwise::binary::saves(*op),
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

    /// The rule: one contribution per needed input, for all K rows at once.
    pub fn vjp(&self, cx: &VjpCtx) -> Result<Contributions> {
        match self {
            Op::Unary(op, p) => elementwise::unary::vjp(cx, *op, *p),
            Op::Binary(op) => elementwise::binary::vjp(cx, *op),
            Op::Matmul => matmul::vjp(cx),
            Op::Sum { reduced, scale } => reduce::vjp_sum(cx, reduced, *scale),
            Op::Max { axis } => max::vjp(cx, *axis),
            Op::Reshape => layout::vjp_reshape(cx),
            Op::Permute(perm) => layout::vjp_permute(cx, perm),
            Op::BroadcastTo => layout::vjp_broadcast(cx),
            Op::Narrow { axis, start } => layout::vjp_narrow(cx, *axis, *start),
            Op::Concat { axis } => concat::vjp(cx, *axis),
            Op::IndexSelect { axis, indices } => index::vjp(cx, *axis, indices),
            Op::Cumsum { axis } => scan::vjp(cx, *axis),
            Op::Unfold(win) => unfold::vjp(cx, *win),
            Op::Custom(def, scalars) => custom::vjp(cx, def, scalars),
        }
    }

    /// The tangent rule: the output's K tangent rows `[K, *out_shape]`
    /// from the inputs' (`ẏ = Σᵢ ∂f/∂xᵢ·ẋᵢ`). Linear ops apply themselves to
    /// the rows; the others scale them by the derivatives their adjoint
    /// uses, from the same saved values.
    pub fn jvp(&self, cx: &JvpCtx) -> Result<Arc<Storage>> {
        match self {
            Op::Unary(op, p) => elementwise::unary::jvp(cx, *op, *p),
            Op::Binary(op) => elementwise::binary_tangent::jvp(cx, *op),
            Op::Matmul => matmul::jvp(cx),
            Op::Sum { reduced, scale } => reduce::jvp_sum(cx, reduced, *scale),
            Op::Max { axis } => max::jvp(cx, *axis),
            Op::Reshape => Ok(cx.only()?.clone()),
            Op::Permute(perm) => layout::jvp_permute(cx, perm),
            Op::BroadcastTo => layout::jvp_broadcast(cx),
            Op::Narrow { axis, start } => layout::jvp_narrow(cx, *axis, *start),
            Op::Concat { axis } => concat::jvp(cx, *axis),
            Op::IndexSelect { axis, indices } => index::jvp(cx, *axis, indices),
            Op::Cumsum { axis } => scan::jvp(cx, *axis),
            Op::Unfold(win) => unfold::jvp(cx, *win),
            Op::Custom(def, scalars) => custom::jvp(cx, def, scalars),
        }
    }

    /// The curvature rule of second order: per needed input, the terms
    /// `Σⱼ ȳ·∂²f/∂xᵢ∂xⱼ·ẋⱼ` of its adjoint's tangent (`[K, *input_shape]`);
    /// None where they are zero, as for every input of a linear op (the
    /// adjoint's tangent is then the adjoint applied to the output's).
    pub fn curvature(&self, cx: &CurvatureCtx) -> Result<Contributions> {
        let none = || Ok(vec![None; cx.inputs.len()]);
        match self {
            Op::Unary(op, p) => elementwise::unary::curvature(cx, *op, *p),
            Op::Binary(op) => elementwise::binary_tangent::curvature(cx, *op),
            Op::Matmul => matmul::curvature(cx),
            Op::Custom(def, _) => custom::curvature(cx, def),
            // Linear, or piecewise linear (max: the argmax is fixed).
            Op::Sum { .. }
            | Op::Max { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Narrow { .. }
            | Op::Concat { .. }
            | Op::IndexSelect { .. }
            | Op::Cumsum { .. }
            | Op::Unfold(_) => none(),
        }
    }

    /// The adjoint's tangent in one step, where the op has a kernel for
    /// it (second order): per needed input, what `vjp` on the output
    /// adjoint's K tangent rows `dot` and `curvature` would return, added,
    /// in one pass over the rows. None where the op has no such kernel (or
    /// nothing to fuse): the sweep then runs both rules and adds them.
    pub fn adjoint_tangent(
        &self,
        dot: &Arc<Storage>,
        cx: &CurvatureCtx,
    ) -> Result<Option<Contributions>> {
        match self {
            Op::Unary(op, p) => elementwise::unary::adjoint_tangent(dot, cx, *op, *p),
            Op::Binary(_)
            | Op::Matmul
            | Op::Sum { .. }
            | Op::Max { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Narrow { .. }
            | Op::Concat { .. }
            | Op::IndexSelect { .. }
            | Op::Cumsum { .. }
            | Op::Unfold(_)
            | Op::Custom(..) => Ok(None),
        }
    }

    /// The most values per cotangent row that one buffer of this op's
    /// adjoint holds (contributions, scratch), for an output of shape
    /// `out` and the inputs `needs` asks contributions for: the largest of
    /// the output and those inputs, except where a matrix product
    /// broadcasts an operand over batch axes and forms its contribution at
    /// the full batch before the sum over them. What a pass needs of the
    /// binding limit is read off this without running it.
    pub fn widest_buffer(&self, out: &[usize], inputs: &[Input], needs: &[bool]) -> usize {
        let plain = (inputs.iter().zip(needs))
            .filter(|(_, need)| **need)
            .map(|(i, _)| numel(&i.shape))
            .fold(numel(out), usize::max);
        match self {
            Op::Matmul => matmul::widest_contribution(out, inputs, needs).max(plain),
            Op::Unary(..)
            | Op::Binary(_)
            | Op::Sum { .. }
            | Op::Max { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Narrow { .. }
            | Op::Concat { .. }
            | Op::IndexSelect { .. }
            | Op::Cumsum { .. }
            | Op::Unfold(_)
            | Op::Custom(..) => plain,
        }
    }
}
