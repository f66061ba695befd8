//! Elementwise unary ops (`shaders/unary.wgsl`). Derivatives, from the
//! saved input x or output y: neg -1; exp y; log 1/x; sin cos x; cos -sin x;
//! tanh 1-y²; sigmoid y(1-y); relu [y>0]; sqrt 1/(2y); square 2x; abs sign x;
//! powf p·x^(p-1); add_scalar 1; mul_scalar s; gelu Φ(x) + xφ(x);
//! gelu_tanh ½(1+t) + ½x(1−t²)u'; silu σ(1 + x(1−σ)); softplus σ(x);
//! log1p 1/(1+x); expm1 y+1; rsqrt −y³/2; leaky_relu 1 or slope; elu 1 or
//! αeˣ; clamp 1 inside the bounds (bounds included), 0 outside. The tangent
//! is the same kernel on tangent rows (ẏ = f'·ẋ); second derivatives for
//! the curvature term are listed at `unary_d2` in the WGSL.

use std::sync::Arc;

use crate::error::Result;
use crate::ops::elementwise::{Elementwise, chain};
use crate::ops::shaders::UNARY;
use crate::ops::{Contributions, CurvatureCtx, JvpCtx, Op, Saved, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, RowKernel, flag, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::numel;
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;

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
    Gelu = 14,
    GeluTanh = 15,
    Silu = 16,
    Softplus = 17,
    Log1p = 18,
    Expm1 = 19,
    Rsqrt = 20,
    LeakyRelu = 21,
    Elu = 22,
    ClampMin = 23,
    ClampMax = 24,
}

impl UnaryOp {
    /// Every unary op (tests of composed kernels cover each).
    #[cfg(test)]
    pub const ALL: [UnaryOp; 25] = {
        use UnaryOp::*;
        [
            Neg, Exp, Log, Sin, Cos, Tanh, Sigmoid, Relu, Sqrt, Square, Abs, Powf, AddScalar,
            MulScalar, Gelu, GeluTanh, Silu, Softplus, Log1p, Expm1, Rsqrt, LeakyRelu, Elu,
            ClampMin, ClampMax,
        ]
    };
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
const SECOND: RowKernel = RowKernel::new(
    &UNARY,
    "unary_second",
    "unary_second_synced",
    &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
        (5, Access::Read),
    ],
);
const CURVATURE: RowKernel = RowKernel::new(
    &UNARY,
    "unary_curvature",
    "unary_curvature_synced",
    &[
        (1, Access::Read),
        (2, Access::Write),
        (3, Access::Read),
        (4, Access::Read),
    ],
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
            Gelu => "gelu",
            GeluTanh => "gelu_tanh",
            Silu => "silu",
            Softplus => "softplus",
            Log1p => "log1p",
            Expm1 => "expm1",
            Rsqrt => "rsqrt",
            LeakyRelu => "leaky_relu",
            Elu => "elu",
            ClampMin | ClampMax => "clamp",
        }
    }
}

pub(crate) fn saves(op: UnaryOp) -> &'static [Saved] {
    use UnaryOp::*;
    match op {
        Neg | AddScalar | MulScalar => &[],
        Exp | Tanh | Sigmoid | Relu | Sqrt | Expm1 | Rsqrt => &[Saved::Output],
        Log | Sin | Cos | Square | Abs | Powf | Gelu | GeluTanh | Silu | Softplus | Log1p
        | LeakyRelu | Elu | ClampMin | ClampMax => &[Saved::Input(0)],
    }
}

fn apply(x: &Tensor, op: UnaryOp, p: f32) -> Result<Tensor> {
    check_operands(x, &[])?;
    let dev = x.device();
    let out = Arc::new(dev.alloc("unary output", x.numel())?);
    let operands = [(&x.inner.data, x.shape())];
    if !chain::defer(dev, Elementwise::Unary(op), p, &operands, &out, x.shape()) {
        forward_kernel(dev, op, p, &x.inner.data, &out, x.numel());
    }
    record(dev, Op::Unary(op, p), &[x], out, x.shape().to_vec())
}

/// The kernel and constants `forward_kernel` runs for `op` (forward
/// fusion asks whether they are compiled).
pub(crate) fn forward_variant(op: UnaryOp) -> (&'static Kernel<'static>, [(&'static str, f64); 1]) {
    (&FORWARD, [("UNARY_OP", op as u32 as f64)])
}

/// Records `out = f(x)` over n values: the op's own kernel.
pub(crate) fn forward_kernel(
    dev: &Device,
    op: UnaryOp,
    p: f32,
    x: &Storage,
    out: &Storage,
    n: usize,
) {
    let (kernel, constants) = forward_variant(op);
    let params = Params::new(n, 1).scalar(p);
    dev.dispatch(
        kernel,
        &constants,
        &params,
        &[x, out],
        groups_for(n.div_ceil(4) as u64),
    );
}

/// `out[k] = rows[k] · f'(saved)` over K rows of n values, one dispatch:
/// the adjoint of K cotangents, or the tangent of K directions.
fn scale_rows(
    dev: &Device,
    (op, p): (UnaryOp, f32),
    k: usize,
    rows: &Arc<Storage>,
    saved: &[Arc<Storage>],
    n: usize,
) -> Result<Arc<Storage>> {
    if op == UnaryOp::AddScalar {
        return Ok(rows.clone());
    }
    let out = dev.alloc("unary rows", k * n)?;
    let saved = saved.first().unwrap_or(rows);
    let constants = [
        ("UNARY_OP", op as u32 as f64),
        ("ALIGNED", flag(n.is_multiple_of(4))),
    ];
    let params = Params::new(n, k).scalar(p);
    let groups = groups_for(n.div_ceil(4) as u64);
    let buffers = [&**rows, &out, saved];
    dev.dispatch_rows(&ADJOINT, k, &constants, &params, &buffers, groups);
    Ok(Arc::new(out))
}

/// out[k] = g[k] · f'(saved), all K cotangents in one dispatch.
pub(crate) fn vjp(cx: &VjpCtx, op: UnaryOp, p: f32) -> Result<Contributions> {
    let n = numel(cx.out_shape);
    Ok(vec![Some(scale_rows(
        cx.dev,
        (op, p),
        cx.k,
        cx.g,
        cx.saved,
        n,
    )?)])
}

/// ẏ[k] = f'(saved) · ẋ[k], all K directions in one dispatch.
pub(crate) fn jvp(cx: &JvpCtx, op: UnaryOp, p: f32) -> Result<Arc<Storage>> {
    let n = numel(cx.out_shape);
    scale_rows(cx.dev, (op, p), cx.k, cx.only()?, cx.saved, n)
}

/// Whether f'' is not 0 (the others are piecewise linear).
fn has_curvature(op: UnaryOp) -> bool {
    use UnaryOp::*;
    match op {
        Exp | Log | Sin | Cos | Tanh | Sigmoid | Sqrt | Square | Powf | Gelu | GeluTanh | Silu
        | Softplus | Log1p | Expm1 | Rsqrt | Elu => true,
        Neg | Relu | Abs | AddScalar | MulScalar | LeakyRelu | ClampMin | ClampMax => false,
    }
}

/// The curvature term `ȳ·f''(saved)·ẋ[k]`, all K directions in one dispatch.
pub(crate) fn curvature(cx: &CurvatureCtx, op: UnaryOp, p: f32) -> Result<Contributions> {
    let (Some(t), true, true) = (&cx.tangents[0], cx.needs[0], has_curvature(op)) else {
        return Ok(vec![None]);
    };
    let n = numel(cx.out_shape);
    let out = cx.dev.alloc("unary curvature", cx.k * n)?;
    let saved = cx.saved.first().unwrap_or(t);
    let constants = [
        ("UNARY_OP", op as u32 as f64),
        ("ALIGNED", flag(n.is_multiple_of(4))),
    ];
    let params = Params::new(n, cx.k).scalar(p);
    let groups = groups_for(n.div_ceil(4) as u64);
    let buffers = [&**t, &out, saved, cx.ybar];
    cx.dev
        .dispatch_rows(&CURVATURE, cx.k, &constants, &params, &buffers, groups);
    Ok(vec![Some(Arc::new(out))])
}

/// The adjoint's tangent of K directions in one dispatch:
/// `ẏ̄[k]·f'(s) + ẋ[k]·ȳ·f''(s)`, where the op has a second derivative and
/// its input a tangent; None otherwise (then the plain adjoint is all).
pub(crate) fn adjoint_tangent(
    dot: &Arc<Storage>,
    cx: &CurvatureCtx,
    op: UnaryOp,
    p: f32,
) -> Result<Option<Contributions>> {
    let (Some(t), true, true) = (&cx.tangents[0], cx.needs[0], has_curvature(op)) else {
        return Ok(None);
    };
    let n = numel(cx.out_shape);
    let out = cx.dev.alloc("unary adjoint tangent", cx.k * n)?;
    let saved = cx.saved.first().unwrap_or(t);
    let constants = [
        ("UNARY_OP", op as u32 as f64),
        ("ALIGNED", flag(n.is_multiple_of(4))),
    ];
    let params = Params::new(n, cx.k).scalar(p);
    let groups = groups_for(n.div_ceil(4) as u64);
    let buffers = [&**dot, &out, saved, cx.ybar, t];
    cx.dev
        .dispatch_rows(&SECOND, cx.k, &constants, &params, &buffers, groups);
    Ok(Some(vec![Some(Arc::new(out))]))
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
    /// sin x (radians); derivative cos x.
    pub fn sin(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Sin, 0.0)
    }
    /// cos x (radians); derivative −sin x.
    pub fn cos(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Cos, 0.0)
    }
    /// tanh x; derivative 1 − tanh² x, computed from the saved output.
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
    /// √x; derivative 1 / (2√x), from the saved output (inf at 0).
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

    /// x·Φ(x), Φ the standard normal CDF (the erf form of GELU, PyTorch's
    /// default). Φ is evaluated through erfc with relative error < 1.2e-7,
    /// so the negative tail stays accurate.
    pub fn gelu(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Gelu, 0.0)
    }
    /// The tanh approximation of GELU: x/2·(1 + tanh(√(2/π)(x + 0.044715x³)))
    /// (PyTorch's `approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        apply(self, UnaryOp::GeluTanh, 0.0)
    }
    /// x·σ(x) (SiLU, swish).
    pub fn silu(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Silu, 0.0)
    }
    /// log(1 + eˣ), computed as max(x, 0) + log1p(e^−|x|): no overflow.
    pub fn softplus(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Softplus, 0.0)
    }
    /// log(1 + x), accurate for small |x|.
    pub fn log1p(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Log1p, 0.0)
    }
    /// eˣ − 1, accurate for small |x|.
    pub fn expm1(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Expm1, 0.0)
    }
    /// 1/√x; derivative −x^(−3/2)/2, from the saved output.
    pub fn rsqrt(&self) -> Result<Tensor> {
        apply(self, UnaryOp::Rsqrt, 0.0)
    }
    /// x for x > 0, slope·x otherwise; the derivative at 0 is the slope
    /// (PyTorch's choice).
    pub fn leaky_relu(&self, slope: f32) -> Result<Tensor> {
        apply(self, UnaryOp::LeakyRelu, slope)
    }
    /// x for x > 0, α(eˣ − 1) otherwise; the derivative at 0 is α (from
    /// the left, as PyTorch computes it).
    pub fn elu(&self, alpha: f32) -> Result<Tensor> {
        apply(self, UnaryOp::Elu, alpha)
    }
    /// min(max(x, min), max). The derivative is 1 where min ≤ x ≤ max, the
    /// bounds included (PyTorch's convention), 0 outside, NaN at NaN.
    /// Bounds that are NaN or with min > max are refused.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(crate::error::invalid(
                "clamp",
                format!("bounds [{min}, {max}] are not an interval; give min <= max"),
            ));
        }
        apply(
            &apply(self, UnaryOp::ClampMin, min)?,
            UnaryOp::ClampMax,
            max,
        )
    }
}
