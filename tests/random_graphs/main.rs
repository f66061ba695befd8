//! Random graphs against a float64 reference. proptest draws a program:
//! 10–40 steps, each an op over earlier values (so subexpressions are shared
//! and diamonds form), over a region of shape [r, c] with r, c in
//! {1, 3, 7, 33, 257}, with operands broadcast from [c], [r, 1] and [].
//! Some inputs are never used. K is random in 1..=9. The program runs on
//! the device (forward, then one `vjp_batched`); `tape.rs` holds the same
//! ops in f64, forward and reverse, written here for the test and never
//! used by the engine. A failure shrinks to a minimal program and prints it.
//!
//! Ops: every unary op (log, sqrt, powf 1.5, log1p and rsqrt of a positive
//! value σ(x) + ½; exp and expm1 of tanh(x); sin and cos of values up to
//! 100, of tanh(x) beyond); add, sub, mul, div (by σ(x) + ½), maximum and
//! minimum with broadcasting; where_cond(a > b, a, b); matmul by a [c, c]
//! input; sum / mean / max / min / var over an axis and sum / mean over
//! both (multiplied back into the region); softmax, log_softmax,
//! logsumexp and cross_entropy over axis 1; cumsum; layer_norm; a 3×3
//! conv2d; narrow + concat; permute + reshape; broadcast_to; index_select
//! with repeated indices; flip; a custom op (the WGSL of x·tanh x, through
//! `CustomOp`). Ties at a max follow pullback's convention: the first
//! maximal element takes the gradient. A value larger than 1e3 in
//! magnitude is passed through tanh before later steps use it, so that no
//! program overflows f32.
//!
//! What is compared, and why op by op. Each device value is compared with
//! its op evaluated in f64 on the device's own inputs (read back), and the
//! device's gradients with the f64 reverse pass taken at the device's
//! forward values. A wrong forward rule or adjoint errs by O(1) at its own
//! node, so this catches every bug the end-to-end comparison would; but it
//! does not let a correct engine fail on the program's conditioning (a
//! chain of 40 ops can amplify one rounding by 1e4, e.g. x − logsumexp(x)
//! of a nearly constant row), and the kinks (relu, abs, max) decide the
//! same side in both. The end-to-end gap (device against the exact f64
//! program) is printed as a measure of that conditioning, not asserted.
//!
//! Tolerances. A forward value v may differ by FTOL·(|v| + terms) + FABS,
//! terms being Σ|terms| of a sum, |x·f'(x)| of a unary op (one rounding of
//! x, carried through f), the row's exponent range for softmax-like ops;
//! FABS covers WGSL's transcendental functions, accurate to about 2.4e-6
//! absolutely. A gradient element g may differ by GTOL·(|g| + Σ|terms|),
//! Σ|terms| being the same reverse pass over absolute values, so
//! cancellation to ~0 is held to the size of what cancelled; each
//! derivative may also err by 2.4e-6·(1 + |x|) absolutely (WGSL's sin, tanh…
//! computed in f32, whose argument reduction loses |x|·ε: sin and cos of a
//! value near 1e8 are noise in f32, and are let pass). FTOL and GTOL are a few times f32's
//! ε times the depth of a reduction (257) or a reverse pass (40 ops): the
//! worst seen over 20,000 programs sits below a third of them; a wrong
//! rule errs by O(1).
//!
//! `PULLBACK_FUZZ_CASES` sets the number of programs (default 500) and
//! `PULLBACK_FUZZ_SEED` the seed they are drawn from (fixed by default, so
//! CI runs the same 500).

#[path = "../common/mod.rs"]
mod common;
mod reverse;
mod tape;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pullback::Tensor;
use rand::RngExt;
use tape::{Bin, H, Node, Red, Tape};

const SIZES: [usize; 5] = [1, 3, 7, 33, 257];
/// Forward values, relative to |v| + terms (see the module docs).
const FTOL: f64 = 1e-5;
/// WGSL's transcendental functions, absolutely (see the module docs).
const FABS: f64 = 5e-6;
/// Gradients, relative to |g| + Σ|terms| (see the module docs).
const GTOL: f64 = 1e-4;
/// Largest magnitude a region value keeps (larger go through tanh).
const BOUND: f64 = 1e3;
/// sin and cos take arguments up to this size (larger go through tanh).
const TRIG_RANGE: f64 = 100.0;
/// Op codes drawn per step.
const OPS: u8 = 47;

/// One step of a program: an op and operand picks (taken modulo the
/// number of values so far, so any shrunk program is valid).
#[derive(Clone, Debug)]
struct Step {
    op: u8,
    a: usize,
    b: usize,
    k: usize,
}

#[derive(Clone, Debug)]
struct Program {
    r: usize,
    c: usize,
    k: usize,
    steps: Vec<Step>,
    seed: u64,
}

fn program() -> impl Strategy<Value = Program> {
    let step = (0u8..OPS, any::<usize>(), any::<usize>(), 0usize..4)
        .prop_map(|(op, a, b, k)| Step { op, a, b, k });
    (
        0usize..5,
        0usize..5,
        1usize..=9,
        prop::collection::vec(step, 10..=40),
        any::<u64>(),
    )
        .prop_map(|(r, c, k, steps, seed)| Program {
            r: SIZES[r],
            c: SIZES[c],
            k,
            steps,
            seed,
        })
}

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
        ok(pullback::CustomOp::builder("x_tanh_x")
            .forward(forward)
            .adjoint(adjoint)
            .saves(&[pullback::CustomSave::Input(0)])
            .build(common::dev()))
    })
}

fn sig(x: f64) -> f64 {
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

/// The device values and the tape, index for index; `exact` holds the
/// f64 program's values.
struct Both {
    tape: Tape,
    exact: Vec<H>,
    dv: Vec<Tensor>,
}

impl Both {
    /// Records device result `t` as `node`; its shape must be the tape's.
    fn push(&mut self, t: pullback::Result<Tensor>, node: Node) -> usize {
        let t = ok(t);
        self.tape.nodes.push(node);
        let i = self.exact.len();
        let h = self.tape.eval(i, &self.exact);
        assert_eq!(t.shape(), &h.shape[..], "shape of {:?}", self.tape.nodes[i]);
        self.exact.push(h);
        self.dv.push(t);
        i
    }

    fn leaf(&mut self, t: Tensor, v: Vec<f64>) -> usize {
        self.tape.nodes.push(Node::Leaf);
        self.exact.push(H {
            shape: t.shape().to_vec(),
            v,
        });
        self.dv.push(t);
        self.exact.len() - 1
    }

    fn t(&self, i: usize) -> &Tensor {
        &self.dv[i]
    }

    /// A unary op on value x: device result `t`, host f and f'.
    fn unary(
        &mut self,
        t: pullback::Result<Tensor>,
        x: usize,
        f: fn(f64) -> f64,
        df: fn(f64, f64) -> f64,
    ) -> usize {
        self.push(t, Node::Unary(x, f, df))
    }

    /// a op b, b broadcast to a's shape [r, c].
    fn binary(&mut self, a: usize, b: usize, op: Bin) -> usize {
        let (ta, tb) = (self.t(a), self.t(b));
        let t = match op {
            Bin::Add => ta.add(tb),
            Bin::Sub => ta.sub(tb),
            Bin::Mul => ta.mul(tb),
            Bin::Div => ta.div(tb),
            Bin::Max => ta.maximum(tb),
            Bin::Min => ta.minimum(tb),
        };
        self.push(t, Node::Binary(a, b, op))
    }

    /// σ(x) + ½: a positive value of x's shape.
    fn positive(&mut self, x: usize) -> usize {
        let s = self.unary(self.t(x).sigmoid(), x, sig, |_, y| y * (1.0 - y));
        self.unary(self.t(s).add_scalar(0.5), s, |e| e + 0.5, |_, _| 1.0)
    }

    /// a · reduced, the reduced value broadcast back into the region.
    fn times(&mut self, a: usize, reduced: usize) -> usize {
        self.binary(a, reduced, Bin::Mul)
    }
}

/// Appends one step's op to the graph; returns its value and name.
fn step(
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
        4 => (unary(g, ta.square(), |x| x * x, |x, _| 2.0 * x), "square"),
        5 => (unary(g, ta.neg(), |x| -x, |_, _| -1.0), "neg"),
        6 => (
            unary(g, ta.mul_scalar(0.75), |x| 0.75 * x, |_, _| 0.75),
            "mul_scalar",
        ),
        7 => (
            unary(g, ta.add_scalar(-0.25), |x| x - 0.25, |_, _| 1.0),
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
            let t = match kind {
                Red::Sum => ta.sum(&[axis], true),
                Red::Mean => ta.mean(&[axis], true),
                Red::Max => ta.max(axis, true),
                Red::Min => ta.min(axis, true),
                Red::Var => ta.var(&[axis], true),
            };
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
            unary(
                g,
                ta.relu(),
                |x| x.max(0.0),
                |x, _| f64::from(u8::from(x > 0.0)),
            ),
            "relu",
        ),
        21 => (
            unary(g, ta.abs(), f64::abs, |x, _| {
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
        30 => (unary(g, ta.gelu(), gelu, gelu_d), "gelu"),
        31 => (
            unary(g, ta.gelu_tanh(), gelu_tanh, gelu_tanh_d),
            "gelu_tanh",
        ),
        32 => (unary(g, ta.silu(), |x| x * sig(x), silu_d), "silu"),
        33 => (unary(g, ta.softplus(), softplus, |x, _| sig(x)), "softplus"),
        34 => (unary(g, ta.elu(0.7), elu, elu_d), "elu"),
        35 => (unary(g, ta.leaky_relu(0.1), leaky, leaky_d), "leaky_relu"),
        36 => (
            unary(g, ta.clamp(-0.5, 0.8), |x| x.clamp(-0.5, 0.8), clamp_d),
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
            let cond = g.push(ta.gt(g.t(b)), Node::Gt(a, b));
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

/// The worst errors of one program, as fractions of their tolerances.
#[derive(Clone, Copy, Default)]
struct Worst {
    forward: f64,
    gradient: f64,
    /// Device output against the exact f64 program (not asserted).
    end_to_end: f64,
}

/// Err(what) when `got` differs from `want` by more than `tol(e)`; else
/// the worst error as a fraction of its tolerance.
fn compare(got: &[f64], want: &[f64], tol: impl Fn(usize) -> f64) -> Result<f64, String> {
    let mut worst = 0.0f64;
    for (e, (&gv, &w)) in got.iter().zip(want).enumerate() {
        let t = tol(e) + 1e-30;
        let err = (gv - w).abs() / t;
        // NaN fails too.
        if err.is_nan() || err > 1.0 {
            return Err(format!("element {e}: got {gv}, want {w} (tolerance {t:e})"));
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

/// Runs `p` on the device and on the tape; Err names what differs.
fn check(p: &Program) -> Result<Worst, String> {
    let dev = common::dev();
    let (r, c) = (p.r, p.c);
    let mut rs = rng(p.seed);
    let mut g = Both {
        tape: Tape { nodes: vec![] },
        exact: vec![],
        dv: vec![],
    };
    // Inputs: two of the region's shape, one of each broadcast shape
    // ([c], [r, 1], []), and a [c, c] matrix. Some may never be used.
    let mut leaves = vec![];
    for s in [
        vec![r, c],
        vec![r, c],
        vec![c],
        vec![r, 1],
        vec![],
        vec![c, c],
        vec![3, 3],
    ] {
        let data = sample(&mut rs, s.iter().product(), Dist::Uniform(-1.0, 1.0));
        let t = ok(dev.tensor(&data, &s)).requires_grad();
        leaves.push(g.leaf(t, to_f64(&data)));
    }
    let mut region: Vec<usize> = vec![leaves[0], leaves[1]];
    let mut ops: Vec<&str> = vec![];
    for st in &p.steps {
        let (mut i, name) = step(&mut g, st, &region, &leaves, &mut rs);
        ops.push(name);
        // Products of reductions, squares and cubes can grow past f32's
        // range in 40 steps; values past BOUND are squashed by tanh.
        if g.exact[i].v.iter().any(|x| x.abs() > BOUND) {
            let t = g.t(i).tanh();
            i = g.unary(t, i, f64::tanh, |_, y| 1.0 - y * y);
            ops.push("tanh (bound)");
        }
        region.push(i);
    }
    let out = g.exact.len() - 1;
    let n = r * c;
    let vrows = sample(&mut rs, p.k * n, Dist::Uniform(-1.0, 1.0));
    let v = ok(dev.tensor(&vrows, &[p.k, r, c]));
    let inputs: Vec<&Tensor> = leaves.iter().map(|&l| g.t(l)).collect();
    let grads = ok(pullback::vjp_batched(&[g.t(out)], &[&v], &inputs));
    // Every value and gradient, read back with one submit.
    let all: Vec<&Tensor> = g.dv.iter().chain(&grads).collect();
    let mut back = ok(pullback::read_all(&all)).into_iter().map(|v| to_f64(&v));
    let device: Vec<H> = g
        .exact
        .iter()
        .map(|h| H {
            shape: h.shape.clone(),
            v: back.next().unwrap_or_default(),
        })
        .collect();
    let what = |w: String| format!("{w}; [{r}, {c}], K = {}, ops {ops:?}", p.k);
    let mut worst = Worst::default();
    // Each op against f64 on the device's own inputs.
    for (i, node) in g.tape.nodes.iter().enumerate() {
        if matches!(node, Node::Leaf) {
            continue;
        }
        let want = g.tape.eval(i, &device);
        let terms = g.tape.terms(i, &device, &want);
        let w = compare(&device[i].v, &want.v, |e| {
            FTOL * (want.v[e].abs() + terms[e]) + FABS
        })
        .map_err(|e| what(format!("forward of value {i} ({node:?}), {e}")))?;
        worst.forward = worst.forward.max(w);
    }
    // The end-to-end gap, relative to the output's scale.
    let exact = &g.exact[out].v;
    let scale = exact.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (d, x) in device[out].v.iter().zip(exact) {
        let gap = (d - x).abs() / (FTOL * (x.abs() + scale) + FABS);
        worst.end_to_end = worst
            .end_to_end
            .max(if gap.is_nan() { f64::INFINITY } else { gap });
    }
    // Gradients against the f64 reverse pass at the device's values.
    let grads: Vec<Vec<f64>> = back.collect();
    for row in 0..p.k {
        let cot = to_f64(&vrows[row * n..(row + 1) * n]);
        let want = g.tape.vjp(&device, &cot, &leaves, false);
        let terms = g.tape.vjp_scaled(&device, &cot, &leaves, Some(1.0 / GTOL));
        for (li, gr) in grads.iter().enumerate() {
            let m = gr.len() / p.k;
            let (want, terms) = (&want[li], &terms[li]);
            let w = compare(&gr[row * m..(row + 1) * m], want, |e| {
                GTOL * (want[e].abs() + terms[e])
            })
            .map_err(|e| {
                let at = locate(&g, &device, &cot, out);
                what(format!("gradient row {row} of input {li}, {e}; {at}"))
            })?;
            worst.gradient = worst.gradient.max(w);
        }
    }
    Ok(worst)
}

/// After a gradient mismatch: the cotangent of every value, on the device
/// and in f64, from the output back; names the first value whose cotangent
/// is off (its op's adjoint, or what reads it, is the suspect).
fn locate(g: &Both, device: &[H], cot: &[f64], out: usize) -> String {
    let dev = common::dev();
    let all: Vec<usize> = (0..=out).collect();
    let tensors: Vec<&Tensor> = all.iter().map(|&i| g.t(i)).collect();
    let v = ok(dev.tensor(
        &cot.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        g.t(out).shape(),
    ));
    let Ok(got) = pullback::vjp(&[g.t(out)], &[&v], &tensors) else {
        return "(cotangents of intermediate values unavailable)".into();
    };
    let want = g.tape.vjp(device, cot, &all, false);
    let terms = g.tape.vjp_scaled(device, cot, &all, Some(1.0 / GTOL));
    for i in all.into_iter().rev() {
        let gi = to_f64(&read(&got[i]));
        if let Err(e) = compare(&gi, &want[i], |e| GTOL * (want[i][e].abs() + terms[i][e])) {
            return format!(
                "first wrong cotangent from the output: value {i} ({:?}), {e}",
                g.tape.nodes[i]
            );
        }
    }
    "every intermediate cotangent matches".into()
}

#[test]
fn random_graphs_match_float64() {
    let cases = std::env::var("PULLBACK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // A fixed seed by default, so CI runs the same programs every time;
    // PULLBACK_FUZZ_SEED picks others.
    let seed = std::env::var("PULLBACK_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_u64);
    eprintln!(
        "random graphs: {cases} programs from seed {seed} (PULLBACK_FUZZ_CASES, PULLBACK_FUZZ_SEED)"
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..Config::default()
    });
    let worst = std::cell::Cell::new(Worst::default());
    let result = runner.run(&program(), |p| {
        let w = check(&p).map_err(TestCaseError::fail)?;
        let o = worst.get();
        worst.set(Worst {
            forward: o.forward.max(w.forward),
            gradient: o.gradient.max(w.gradient),
            end_to_end: o.end_to_end.max(w.end_to_end),
        });
        Ok(())
    });
    let w = worst.get();
    eprintln!(
        "{cases} programs; worst error as a fraction of its tolerance: forward {:.3}, gradients {:.3}; \
         end-to-end gap (not asserted) {:.1}",
        w.forward, w.gradient, w.end_to_end
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
