//! Elementwise unary ops (`shaders/unary.wgsl`). Derivatives, from the
//! saved input x or output y: neg -1; exp y; log 1/x; sin cos x; cos -sin x;
//! tanh 1-y²; sigmoid y(1-y); relu [y>0]; sqrt 1/(2y); square 2x; abs sign x;
//! powf p·x^(p-1); add_scalar 1; mul_scalar s.

use std::sync::Arc;

use crate::error::Result;
use crate::kernels::{Access, Kernel, Params, RowKernel, UNARY, groups_for};
use crate::ops::{Contributions, Op, Saved, VjpCtx, check_operands, flag, record};
use crate::shape::numel;
use crate::tensor::Tensor;

/// The unary ops; the discriminant is `OP` in `shaders/unary.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    Neg = 0,
    Exp = 1,
    Log = 2,
    Sin = 3,
    Cos = 4,
    Tanh = 5,
    Sigmoid = 6,
    Relu = 7,
    Sqrt = 8,
    Square = 9,
    Abs = 10,
    Powf = 11,
    AddScalar = 12,
    MulScalar = 13,
}

const FORWARD: Kernel = Kernel {
    module: &UNARY,
    entry: "unary_forward",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};
const ADJOINT: RowKernel = RowKernel::new(
    &UNARY,
    "unary_adjoint",
    "unary_adjoint_synced",
    &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
);

impl UnaryOp {
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Exp => "exp",
            Log => "log",
            Sin => "sin",
            Cos => "cos",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            Relu => "relu",
            Sqrt => "sqrt",
            Square => "square",
            Abs => "abs",
            Powf => "powf",
            AddScalar => "add_scalar",
            MulScalar => "mul_scalar",
        }
    }
}

pub(crate) fn saves(op: UnaryOp) -> &'static [Saved] {
    use UnaryOp::*;
    match op {
        Neg | AddScalar | MulScalar => &[],
        Exp | Tanh | Sigmoid | Relu | Sqrt => &[Saved::Output],
        Log | Sin | Cos | Square | Abs | Powf => &[Saved::Input(0)],
    }
}

fn apply(x: &Tensor, op: UnaryOp, p: f32) -> Result<Tensor> {
    check_operands(x, &[])?;
    let dev = x.device();
    let n = x.numel();
    let out = dev.alloc("unary output", n)?;
    let params = Params::new(n, 1).scalar(p);
    dev.dispatch(
        &FORWARD,
        &[("UNARY_OP", op as u32 as f64)],
        &params,
        &[&x.inner.data, &out],
        groups_for(n.div_ceil(4) as u64),
    );
    Ok(record(dev, Op::Unary(op, p), &[x], out, x.shape().to_vec()))
}

/// out[k] = g[k] · f'(saved), all K cotangents in one dispatch.
pub(crate) fn vjp(cx: &VjpCtx, op: UnaryOp, p: f32) -> Result<Contributions> {
    if op == UnaryOp::AddScalar {
        return Ok(vec![Some(cx.g.clone())]);
    }
    let n = numel(cx.out_shape);
    let out = cx.dev.alloc("unary cotangent", cx.k * n)?;
    let saved = cx.saved.first().unwrap_or(cx.g);
    let constants = [
        ("UNARY_OP", op as u32 as f64),
        ("ALIGNED", flag(n.is_multiple_of(4))),
    ];
    let params = Params::new(n, cx.k).scalar(p);
    cx.dev.dispatch_rows(
        &ADJOINT,
        cx.k,
        &constants,
        &params,
        &[cx.g, &out, saved],
        groups_for(n.div_ceil(4) as u64),
    );
    Ok(vec![Some(Arc::new(out))])
}

impl Tensor {
    /// -x
    pub fn neg(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Neg, 0.0)
    }
    /// eˣ
    pub fn exp(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Exp, 0.0)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Log, 0.0)
    }
    pub fn sin(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Sin, 0.0)
    }
    pub fn cos(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Cos, 0.0)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Tanh, 0.0)
    }
    /// 1 / (1 + e⁻ˣ)
    pub fn sigmoid(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Sigmoid, 0.0)
    }
    /// max(x, 0); its derivative at 0 is 0.
    pub fn relu(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Relu, 0.0)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Sqrt, 0.0)
    }
    /// x²
    pub fn square(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Square, 0.0)
    }
    /// |x|; its derivative at 0 is 0.
    pub fn abs(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Abs, 0.0)
    }
    /// xᵖ. Negative x needs an integer p (otherwise NaN, as in PyTorch).
    pub fn powf(&self, p: f32) -> Result<Tensor> {
        apply(self, UnaryOp::Powf, p)
    }
    /// x + s
    pub fn add_scalar(&self, s: f32) -> Result<Tensor> {
        apply(self, UnaryOp::AddScalar, s)
    }
    /// x · s
    pub fn mul_scalar(&self, s: f32) -> Result<Tensor> {
        apply(self, UnaryOp::MulScalar, s)
    }
}
