//! The ops a program step draws: one arm per op code, each building the
//! device value and its tape node together, and the f64 functions and
//! derivatives the unary arms use (test-only references).

use common::*;
use pullback::Tensor;
use rand::RngExt;

use crate::tape::{self, Bin, Cmp, Node, Red};
use crate::{Both, Step, TRIG_RANGE, common};

/// A custom op (the user's WGSL) in the programs: y = x·tanh x, saving x.
fn x_tanh_x() -> &'static pullback::CustomOp {
    static OP: std::sync::OnceLock<pullback::CustomOp> = std::sync::OnceLock::new();
    OP.get_or_init(|| {
        let forward = "
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    // tanh through exp overflows past |x| ≈ 44 on some drivers: clamp.
    if (t < pb.threads) { y[t] = x[t] * tanh(clamp(x[t], -15.0, 15.0)); }
}";
        let adjoint = "
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@compute @workgroup_size(64)
fn adjoint_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    let v = x[t % pb.n_in];
    let th = tanh(clamp(v, -15.0, 15.0));
    c[t] = g[t] * (th + v * (1.0 - th * th));
}";
        // Forward mode: ẏ = (tanh x + x(1 − tanh² x))·ẋ, K rows.
        let tangent = "
@group(0) @binding(1) var<storage, read> tx: array<f32>;
@group(0) @binding(2) var<storage, read_write> ty: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@compute @workgroup_size(64)
fn tangent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    let v = x[t % pb.n_out];
    let th = tanh(clamp(v, -15.0, 15.0));
    ty[t] = tx[t] * (th + v * (1.0 - th * th));
}";
        ok(pullback::CustomOp::builder("x_tanh_x")
            .forward(forward)
            .adjoint(adjoint)
            .tangent(tangent)
            .saves(&[pullback::CustomSave::Input(0)])
            .build(common::dev()))
    })
}

pub(crate) fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gelu(x: f64) -> f64 {
    x * 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}
fn gelu_d(x: f64, _: f64) -> f64 {
    let phi = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2) + x * phi
}
const K0: f64 = 0.797_884_560_802_865_4; // √(2/π)
fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (K0 * (x + 0.044715 * x.powi(3))).tanh())
}
fn gelu_tanh_d(x: f64, _: f64) -> f64 {
    let t = (K0 * (x + 0.044715 * x.powi(3))).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K0 * (1.0 + 3.0 * 0.044715 * x * x)
}
/// log(1 + eˣ) without overflow: max(x, 0) + log1p(e^−|x|).
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}
fn silu_d(x: f64, _: f64) -> f64 {
    sig(x) * (1.0 + x * (1.0 - sig(x)))
}
fn elu(x: f64) -> f64 {
    if x > 0.0 { x } else { 0.7 * x.exp_m1() }
}
fn elu_d(x: f64, _: f64) -> f64 {
    if x > 0.0 { 1.0 } else { 0.7 * x.exp() }
}
fn leaky(x: f64) -> f64 {
    if x > 0.0 { x } else { 0.1 * x }
}
fn leaky_d(x: f64, _: f64) -> f64 {
    if x > 0.0 { 1.0 } else { 0.1 }
}
fn clamp_d(x: f64, _: f64) -> f64 {
    f64::from(u8::from((-0.5..=0.8).contains(&x)))
}

/// Appends one step's op to the graph; returns its value and name.
pub(crate) fn step(
    g: &mut Both,
    st: &Step,
    region: &[usize],
    leaves: &[usize],
    rs: &mut rand::rngs::StdRng,
) -> (usize, &'static str) {
    let a = region[st.a % region.len()];
    let b = region[st.b % region.len()];
    let (r, c) = (g.exact[a].shape[0], g.exact[a].shape[1]);
    // A binary operand: a region value, or a [c], [r, 1] or [] input.
    let b_any = [b, leaves[2], leaves[3], leaves[4]][st.k];
    let ta = g.t(a).clone();
    let unary = |g: &mut Both,
                 t: pullback::Result<Tensor>,
                 f: fn(f64) -> f64,
                 df: fn(f64, f64) -> f64| g.unary(t, a, f, df);
    let exact = |g: &mut Both,
                 t: pullback::Result<Tensor>,
                 f: fn(f64) -> f64,
                 df: fn(f64, f64) -> f64| g.exact_unary(t, a, f, df);
    if st.op >= crate::ops_more::FIRST {
        return crate::ops_more::step(g, st, region, leaves);
    }
    match st.op {
        0 | 1 => {
            // sin and cos of f32 arguments past ~1e2 are not accurate on
            // every device (lavapipe's cos(3e4) gave 1 for −1: its argument
            // reduction is f32), so large values go through tanh first.
            let big = g.exact[a].v.iter().any(|x| x.abs() > TRIG_RANGE);
            let x = if big {
                g.unary(ta.tanh(), a, f64::tanh, |_, y| 1.0 - y * y)
            } else {
                a
            };
            let tx = g.t(x).clone();
            let i = if st.op == 0 {
                g.unary(tx.sin(), x, f64::sin, |x, _| x.cos())
            } else {
                g.unary(tx.cos(), x, f64::cos, |x, _| -x.sin())
            };
            (i, ["sin", "cos"][usize::from(st.op)])
        }
        2 => (unary(g, ta.tanh(), f64::tanh, |_, y| 1.0 - y * y), "tanh"),
        3 => (unary(g, ta.sigmoid(), sig, |_, y| y * (1.0 - y)), "sigmoid"),
        4 => (exact(g, ta.square(), |x| x * x, |x, _| 2.0 * x), "square"),
        5 => (exact(g, ta.neg(), |x| -x, |_, _| -1.0), "neg"),
        6 => (
            exact(g, ta.mul_scalar(0.75), |x| 0.75 * x, |_, _| 0.75),
            "mul_scalar",
        ),
        7 => (
            exact(g, ta.add_scalar(-0.25), |x| x - 0.25, |_, _| 1.0),
            "add_scalar",
        ),
        8..=11 => {
            let op = [Bin::Add, Bin::Sub, Bin::Mul, Bin::Div][usize::from(st.op - 8)];
            let b = if op == Bin::Div {
                g.positive(b_any)
            } else {
                b_any
            };
            (
                g.binary(a, b, op),
                ["add", "sub", "mul", "div"][usize::from(st.op - 8)],
            )
        }
        12 => {
            let w = leaves[5];
            (g.push(ta.matmul(g.t(w)), Node::Matmul(a, w)), "matmul")
        }
        13..=15 => {
            // Over one axis (kept), then multiplied back into the region.
            let kind = [Red::Sum, Red::Mean, Red::Max][usize::from(st.op - 13)];
            let axis = st.k % 2;
            let t = reduce(&ta, kind, axis, true);
            let red = g.push(t, Node::Reduce(a, Some(axis), kind));
            (
                g.times(a, red),
                ["sum", "mean", "max"][usize::from(st.op - 13)],
            )
        }
        16 => (g.push(ta.softmax(1), Node::Softmax(a)), "softmax"),
        17 => {
            // x − logsumexp(x) over axis 1 (kept).
            let l = g.push(ta.logsumexp(1, true), Node::LogSumExp(a));
            (g.binary(a, l, Bin::Sub), "logsumexp")
        }
        18 if c > 1 => {
            // concat(narrow(a, 1, 0, k), narrow(b, 1, k, c − k)).
            let k = 1 + st.b % (c - 1);
            let left = ok(ta.narrow(1, 0, k));
            let right = ok(g.t(b).narrow(1, k, c - k));
            let t = pullback::concat(&[&left, &right], 1);
            (g.push(t, Node::Concat(a, b, k)), "narrow+concat")
        }
        19 => {
            let p = g.positive(a);
            let tp = g.t(p).clone();
            match st.k {
                0 | 1 => (g.unary(tp.log(), p, f64::ln, |x, _| 1.0 / x), "log"),
                2 => (g.unary(tp.sqrt(), p, f64::sqrt, |_, y| 0.5 / y), "sqrt"),
                _ => (
                    g.unary(tp.powf(1.5), p, |x| x.powf(1.5), |x, _| 1.5 * x.sqrt()),
                    "powf 1.5",
                ),
            }
        }
        20 => (
            exact(
                g,
                ta.relu(),
                |x| x.max(0.0),
                |x, _| f64::from(u8::from(x > 0.0)),
            ),
            "relu",
        ),
        21 => (
            exact(g, ta.abs(), f64::abs, |x, _| {
                x.signum() * f64::from(u8::from(x != 0.0))
            }),
            "abs",
        ),
        22 => (
            unary(g, ta.powf(3.0), |x| x.powi(3), |x, _| 3.0 * x * x),
            "powf 3",
        ),
        23 => {
            let t = g.unary(ta.tanh(), a, f64::tanh, |_, y| 1.0 - y * y);
            (g.unary(g.t(t).exp(), t, f64::exp, |_, y| y), "exp∘tanh")
        }
        24 => {
            // [r, c] → permute → [c, r] → reshape → [r, c].
            let p = g.push(ta.permute(&[1, 0]), Node::Transpose(a));
            let t = g.t(p).reshape(&[r, c]);
            (g.push(t, Node::Reshape(p, vec![r, c])), "permute+reshape")
        }
        25 => {
            let src = [leaves[2], leaves[3], leaves[4], b][st.k];
            let t = g.t(src).broadcast_to(&[r, c]);
            (g.push(t, Node::Broadcast(src, vec![r, c])), "broadcast_to")
        }
        26 => {
            let axis = st.k % 2;
            let n = [r, c][axis];
            let idx: Vec<usize> = (0..n).map(|_| rs.random_range(0..n)).collect();
            let as_u32: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            let t = ta.index_select(axis, &as_u32);
            (g.push(t, Node::Index(a, axis, idx)), "index_select")
        }
        27 => {
            let labels: Vec<usize> = (0..r).map(|_| rs.random_range(0..c)).collect();
            let as_u32: Vec<u32> = labels.iter().map(|&i| i as u32).collect();
            let ce = g.push(ta.cross_entropy(&as_u32), Node::CrossEntropy(a, labels));
            let col = g.push(g.t(ce).reshape(&[r, 1]), Node::Reshape(ce, vec![r, 1]));
            (g.times(a, col), "cross_entropy")
        }
        28 => {
            let (t, kind) = if st.k.is_multiple_of(2) {
                (ta.sum_all(), Red::Sum)
            } else {
                (ta.mean(&[0, 1], false), Red::Mean)
            };
            let all = g.push(t, Node::Reduce(a, None, kind));
            (g.times(a, all), ["sum_all", "mean_all"][st.k % 2])
        }
        29 => {
            // A mask (no gradient) that later ops use as a value.
            let (cmp, t, name) = match st.k {
                0 => (Cmp::Lt, ta.lt(g.t(b)), "a < b"),
                1 => (Cmp::Ge, ta.ge(g.t(b)), "a >= b"),
                2 => (Cmp::Le, ta.le(g.t(b)), "a <= b"),
                _ => (Cmp::Eq, ta.eq(g.t(a)), "a == a"),
            };
            let other = if cmp == Cmp::Eq { a } else { b };
            (g.push(t, Node::Cmp(a, other, cmp)), name)
        }
        30 => (unary(g, ta.gelu(), gelu, gelu_d), "gelu"),
        31 => (
            unary(g, ta.gelu_tanh(), gelu_tanh, gelu_tanh_d),
            "gelu_tanh",
        ),
        32 => (unary(g, ta.silu(), |x| x * sig(x), silu_d), "silu"),
        33 => (unary(g, ta.softplus(), softplus, |x, _| sig(x)), "softplus"),
        34 => (unary(g, ta.elu(0.7), elu, elu_d), "elu"),
        35 => (exact(g, ta.leaky_relu(0.1), leaky, leaky_d), "leaky_relu"),
        36 => (
            exact(g, ta.clamp(-0.5, 0.8), |x| x.clamp(-0.5, 0.8), clamp_d),
            "clamp",
        ),
        37 => match st.k % 3 {
            0 => {
                let p = g.positive(a);
                (
                    g.unary(g.t(p).log1p(), p, f64::ln_1p, |x, _| 1.0 / (1.0 + x)),
                    "log1p",
                )
            }
            1 => {
                let t = g.unary(ta.tanh(), a, f64::tanh, |_, y| 1.0 - y * y);
                (
                    g.unary(g.t(t).expm1(), t, f64::exp_m1, |x, _| x.exp()),
                    "expm1",
                )
            }
            _ => {
                let p = g.positive(a);
                let f = |x: f64| 1.0 / x.sqrt();
                (
                    g.unary(g.t(p).rsqrt(), p, f, |x, _| -0.5 * x.powf(-1.5)),
                    "rsqrt",
                )
            }
        },
        38 => {
            let op = [Bin::Max, Bin::Min][st.k % 2];
            (g.binary(a, b_any, op), ["maximum", "minimum"][st.k % 2])
        }
        39 => {
            let cond = g.push(ta.gt(g.t(b)), Node::Cmp(a, b, Cmp::Gt));
            let t = g.t(cond).where_cond(&ta, g.t(b));
            (g.push(t, Node::Where(cond, a, b)), "where_cond(a > b)")
        }
        40 => (
            g.push(ta.cumsum(st.k % 2), Node::Cumsum(a, st.k % 2)),
            "cumsum",
        ),
        41 => {
            let w = leaves[6];
            let opts = pullback::ConvOptions {
                padding: 1,
                ..Default::default()
            };
            let t = ta
                .reshape(&[1, 1, r, c])
                .and_then(|x| x.conv2d(&g.t(w).reshape(&[1, 1, 3, 3])?, opts))
                .and_then(|y| y.reshape(&[r, c]));
            (g.push(t, Node::Conv(a, w)), "conv2d 3x3")
        }
        42 => (
            g.push(ta.layer_norm(tape::LN_EPS as f32), Node::LayerNorm(a)),
            "layer_norm",
        ),
        43 | 44 => {
            // var or min over an axis (kept), multiplied back into the region.
            let axis = st.k % 2;
            let (t, kind) = if st.op == 43 {
                (ta.var(&[axis], true), Red::Var)
            } else {
                (ta.min(axis, true), Red::Min)
            };
            let red = g.push(t, Node::Reduce(a, Some(axis), kind));
            (g.times(a, red), ["var", "min"][usize::from(st.op - 43)])
        }
        45 => {
            let axis = st.k % 2;
            let n = [r, c][axis];
            let idx: Vec<usize> = (0..n).rev().collect();
            (g.push(ta.flip(&[axis]), Node::Index(a, axis, idx)), "flip")
        }
        46 => (
            unary(
                g,
                x_tanh_x().apply(&[&ta], &[]),
                |x| x * x.tanh(),
                |x, _| {
                    let t = x.tanh();
                    t + x * (1.0 - t * t)
                },
            ),
            "custom x·tanh x",
        ),
        _ => (
            g.push(ta.log_softmax(1), Node::LogSoftmax(a)),
            "log_softmax",
        ),
    }
}

/// pullback's reduction `kind` of `t` over `axis`, the axis kept or dropped.
pub fn reduce(t: &Tensor, kind: Red, axis: usize, keep: bool) -> pullback::Result<Tensor> {
    match kind {
        Red::Sum => t.sum(&[axis], keep),
        Red::Mean => t.mean(&[axis], keep),
        Red::Max => t.max(axis, keep),
        Red::Min => t.min(axis, keep),
        Red::Var => t.var(&[axis], keep),
    }
}
