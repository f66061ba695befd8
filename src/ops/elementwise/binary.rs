//! Elementwise binary ops with NumPy broadcasting (`shaders/binary.wgsl`).
//! Derivatives: add (1, 1); sub (1, -1); mul (b, a); div (1/b, -a/b²);
//! maximum/minimum (1, 0) to the winner, (½, ½) at a tie; pow (b·a^(b−1),
//! a^b·ln a); where_cond's halves (the mask, 0). Comparisons have none.
//! Contributions are computed at the output's shape and summed over the
//! axes each input was broadcast along.

use std::sync::Arc;

use crate::error::Result;
use crate::ops::elementwise::{Elementwise, ReadMode, chain};
use crate::ops::shaders::BINARY;
use crate::ops::{Contributions, Op, Saved, VjpCtx, reduce};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, RowKernel, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::{broadcast_shapes, broadcast_strides, numel};
use crate::tape::record::{check_operands, record, untracked};
use crate::tape::tensor::Tensor;

/// The binary ops; the discriminant is `OP` in `shaders/binary.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Maximum = 4,
    Minimum = 5,
    Pow = 6,
    Gt = 7,
    Lt = 8,
    Ge = 9,
    Le = 10,
    Eq = 11,
    /// a where b != 0, else 0 (half of `where_cond`; b gets no gradient).
    KeepWhere = 12,
    /// a where b == 0, else 0.
    DropWhere = 13,
}

impl BinaryOp {
    /// Every binary op (tests of composed kernels cover each).
    #[cfg(test)]
    pub const ALL: [BinaryOp; 14] = {
        use BinaryOp::*;
        [
            Add, Sub, Mul, Div, Maximum, Minimum, Pow, Gt, Lt, Ge, Le, Eq, KeepWhere, DropWhere,
        ]
    };
}

const FORWARD: Kernel = Kernel {
    module: &BINARY,
    entry: "binary_forward",
    bindings: &[(2, Access::Write), (3, Access::Read), (4, Access::Read)],
};
const ADJOINT: RowKernel = RowKernel::new(
    &BINARY,
    "binary_adjoint",
    "binary_adjoint_synced",
    &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
        (5, Access::Write),
    ],
);

pub(crate) fn saves(op: BinaryOp) -> &'static [Saved] {
    use BinaryOp::*;
    match op {
        // Comparisons are never recorded (no gradient).
        Add | Sub | Gt | Lt | Ge | Le | Eq => &[],
        Mul | Div | Maximum | Minimum | Pow | KeepWhere | DropWhere => {
            &[Saved::Input(0), Saved::Input(1)]
        }
    }
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Maximum => "maximum",
            Minimum => "minimum",
            Pow => "pow",
            Gt => "gt",
            Lt => "lt",
            Ge => "ge",
            Le => "le",
            Eq => "eq",
            KeepWhere | DropWhere => "where_cond",
        }
    }

    /// Comparisons: a 0/1 mask with no gradient, never recorded.
    pub(crate) fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Gt | Lt | Ge | Le | Eq)
    }

    /// Whether input i receives no gradient at all (the mask operand of
    /// where_cond's halves).
    pub(super) fn no_gradient(self, i: usize) -> bool {
        self.is_comparison()
            || (matches!(self, BinaryOp::KeepWhere | BinaryOp::DropWhere) && i == 1)
    }

    /// Whether d(a op b)/d(input i) is exactly 1, so the contribution is g itself.
    pub(super) fn passes_through(self, i: usize) -> bool {
        matches!((self, i), (BinaryOp::Add, _) | (BinaryOp::Sub, 0))
    }
}

/// The override constants that choose the op and how each operand is read
/// at the output's shape (`BCAST`, `A_MODE`, `B_MODE`).
pub(super) fn read_constants(
    op: BinaryOp,
    a: &[usize],
    b: &[usize],
    out: &[usize],
) -> [(&'static str, f64); 4] {
    [
        ("BINARY_OP", op as u32 as f64),
        ("BCAST", flag(a != out || b != out)),
        ("A_MODE", ReadMode::of(a, out).0.constant()),
        ("B_MODE", ReadMode::of(b, out).0.constant()),
    ]
}

/// Parameters for indexing both operands at every output element.
pub(super) fn broadcast_params(out: &[usize], a: &[usize], b: &[usize], k: usize) -> Params {
    let (_, size_a) = ReadMode::of(a, out);
    let (_, size_b) = ReadMode::of(b, out);
    Params::new(numel(out), k)
        .rank(out.len())
        .slot(0, out)
        .slot(1, &broadcast_strides(a, out))
        .slot(2, &broadcast_strides(b, out))
        .slot(3, &[size_a, size_b])
}

fn apply(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    check_operands(a, &[b])?;
    // x·x is recorded as square(x): same value, and its adjoint reads x once.
    if op == BinaryOp::Mul && Arc::ptr_eq(&a.inner, &b.inner) {
        return a.square();
    }
    let out_shape = broadcast_shapes(op.name(), a.shape(), b.shape())?;
    let dev = a.device();
    let out = Arc::new(dev.alloc("binary output", numel(&out_shape))?);
    let operands = [(&a.inner.data, a.shape()), (&b.inner.data, b.shape())];
    if !chain::defer(
        dev,
        Elementwise::Binary(op),
        0.0,
        &operands,
        &out,
        &out_shape,
    ) {
        let (a, b) = ((&*a.inner.data, a.shape()), (&*b.inner.data, b.shape()));
        forward_kernel(dev, op, a, b, &out, &out_shape);
    }
    if op.is_comparison() {
        return untracked(dev, out, out_shape);
    }
    record(dev, Op::Binary(op), &[a, b], out, out_shape)
}

/// The kernel and constants `forward_kernel` runs for `op` on these
/// shapes (forward fusion asks whether they are compiled).
pub(crate) fn forward_variant(
    op: BinaryOp,
    a: &[usize],
    b: &[usize],
    out: &[usize],
) -> (&'static Kernel<'static>, [(&'static str, f64); 4]) {
    (&FORWARD, read_constants(op, a, b, out))
}

/// Records `out = a op b` (operands with their shapes, broadcast to
/// `out_shape`): the op's own kernel.
pub(crate) fn forward_kernel(
    dev: &Device,
    op: BinaryOp,
    (a, a_shape): (&Storage, &[usize]),
    (b, b_shape): (&Storage, &[usize]),
    out: &Storage,
    out_shape: &[usize],
) {
    let (kernel, constants) = forward_variant(op, a_shape, b_shape, out_shape);
    let params = broadcast_params(out_shape, a_shape, b_shape, 1);
    let n = numel(out_shape);
    dev.dispatch(
        kernel,
        &constants,
        &params,
        &[out, a, b],
        groups_for(n.div_ceil(4) as u64),
    );
}

/// a op b for two buffers of `len` values (no broadcasting, no graph).
pub(crate) fn same_shape(
    dev: &Device,
    op: BinaryOp,
    a: &Storage,
    b: &Storage,
    len: usize,
) -> Result<Storage> {
    let out = dev.alloc("sum of contributions", len)?;
    let params = Params::new(len, 1);
    let constants = [("BINARY_OP", op as u32 as f64), ("BCAST", 0.0)];
    dev.dispatch(
        &FORWARD,
        &constants,
        &params,
        &[&out, a, b],
        groups_for(len.div_ceil(4) as u64),
    );
    Ok(out)
}

/// Both contributions from one dispatch over all K cotangents, then a sum
/// over broadcast axes where an input is smaller than the output.
pub(crate) fn vjp(cx: &VjpCtx, op: BinaryOp) -> Result<Contributions> {
    let (dev, k, out) = (cx.dev, cx.k, cx.out_shape);
    let n = numel(out);
    let needs: Vec<bool> = (0..2).map(|i| cx.needs[i] && !op.no_gradient(i)).collect();
    let computed: Vec<bool> = (0..2).map(|i| needs[i] && !op.passes_through(i)).collect();
    let mut at_out: Vec<Option<Arc<Storage>>> = vec![None, None];
    if computed.contains(&true) {
        let buffers: Vec<Storage> = computed
            .iter()
            .map(|&c| dev.alloc("binary cotangent", if c { k * n } else { 1 }))
            .collect::<Result<_>>()?;
        let (a, b) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
        // add/sub read no operand values; bind g in their place.
        let (sa, sb) = match cx.saved {
            [sa, sb] => (sa, sb),
            _ => (cx.g, cx.g),
        };
        let mut constants = read_constants(op, a, b, out).to_vec();
        constants.extend([
            ("ALIGNED", flag(n.is_multiple_of(4))),
            ("NEED_A", flag(computed[0])),
            ("NEED_B", flag(computed[1])),
        ]);
        let params = broadcast_params(out, a, b, k);
        let bound = [&**cx.g, &buffers[0], &**sa, &**sb, &buffers[1]];
        dev.dispatch_rows(
            &ADJOINT,
            k,
            &constants,
            &params,
            &bound,
            groups_for(n.div_ceil(4) as u64),
        );
        for (slot, (buffer, c)) in at_out.iter_mut().zip(buffers.into_iter().zip(&computed)) {
            if *c {
                *slot = Some(Arc::new(buffer));
            }
        }
    }
    let mut contributions = Vec::with_capacity(2);
    for (i, slot) in at_out.into_iter().enumerate() {
        let c = match (needs[i], slot) {
            (false, _) => None,
            (true, Some(c)) => Some(reduce::sum_to_input(cx, i, &c, out)?),
            (true, None) => Some(reduce::sum_to_input(cx, i, cx.g, out)?),
        };
        contributions.push(c);
    }
    Ok(contributions)
}

impl Tensor {
    /// a + b, with broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Add)
    }
    /// a - b, with broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Sub)
    }
    /// a · b elementwise, with broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Mul)
    }
    /// a / b elementwise, with broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Div)
    }
    /// max(a, b) elementwise, with broadcasting; NaN if either is NaN. At
    /// a tie each operand gets half the gradient (PyTorch's convention).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Maximum)
    }
    /// min(a, b) elementwise, with broadcasting; NaN if either is NaN. At
    /// a tie each operand gets half the gradient.
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Minimum)
    }
    /// aᵇ elementwise, with broadcasting (a negative base needs an integer
    /// exponent, else NaN). ∂/∂b = aᵇ·ln a, taken as 0 where a = 0 and
    /// b ≥ 0 (PyTorch's choice).
    pub fn pow(&self, exponent: &Tensor) -> Result<Tensor> {
        apply(self, exponent, BinaryOp::Pow)
    }
    /// 1 where a > b, else 0 (NaN compares false); no gradient.
    pub fn gt(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Gt)
    }
    /// 1 where a < b, else 0; no gradient.
    pub fn lt(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Lt)
    }
    /// 1 where a ≥ b, else 0; no gradient.
    pub fn ge(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Ge)
    }
    /// 1 where a ≤ b, else 0; no gradient.
    pub fn le(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Le)
    }
    /// 1 where a = b, else 0; no gradient.
    pub fn eq(&self, other: &Tensor) -> Result<Tensor> {
        apply(self, other, BinaryOp::Eq)
    }
    /// `on_true` where `self` (the condition) is nonzero, `on_false`
    /// elsewhere, all three broadcast together. Selects: a NaN or inf on
    /// the side not taken does not leak. The gradient goes to the side
    /// taken; the condition gets none.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let kept = apply(on_true, self, BinaryOp::KeepWhere)?;
        let dropped = apply(on_false, self, BinaryOp::DropWhere)?;
        kept.add(&dropped)
    }
}

impl Tensor {
    /// `self` where `cond` is nonzero, 0 elsewhere; a NaN or inf of `self`
    /// where `cond` is 0 does not leak (cross-entropy's pick of the label's
    /// log-probability, where another class's logit may be −inf).
    pub(crate) fn keep_where(&self, cond: &Tensor) -> Result<Tensor> {
        apply(self, cond, BinaryOp::KeepWhere)
    }
}

macro_rules! operator_sugar {
    ($trait:ident, $method:ident) => {
        /// Operator sugar for the method of the same name. Panics where the
        /// method returns an error (shape mismatch, two devices, ...); use the
        /// method to handle errors.
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                match Tensor::$method(self, rhs) {
                    Ok(t) => t,
                    Err(e) => panic!("{}: {e}", stringify!($method)),
                }
            }
        }
    };
}

operator_sugar!(Add, add);
operator_sugar!(Sub, sub);
operator_sugar!(Mul, mul);
operator_sugar!(Div, div);

/// `-&x`: sugar for [`Tensor::neg`]; panics where it returns an error.
impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        match Tensor::neg(self) {
            Ok(t) => t,
            Err(e) => panic!("neg: {e}"),
        }
    }
}
