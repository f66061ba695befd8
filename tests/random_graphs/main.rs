//! Random graphs against a float64 reference. proptest draws a program:
//! 10–40 steps, each an op over earlier values (so subexpressions are shared
//! and diamonds form), over a region of shape [r, c] with r, c in
//! {1, 3, 7, 33, 257}, with operands broadcast from [c], [r, 1] and [].
//! Some inputs are never used. K is random in 1..=9. The program runs on
//! the device (forward, then one `vjp_batched`, one `jvp_batched` and one
//! `hvp_batched`, each with K rows); `tape.rs` holds the same ops in f64,
//! forward and reverse, `tangent.rs` their tangents and `second.rs` the
//! second-order sweep (`modes.rs` compares them), written here for the
//! test and never used by the engine. A failure shrinks to a minimal
//! program and prints it.
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
//! `CustomOp`); and (`ops_more.rs`) unsqueeze, flatten and squeeze,
//! transpose, stack, pad (with 0 or 0.5) then narrow, reductions that drop
//! their axis, `pow` of a positive base with a tensor exponent,
//! max_pool2d and avg_pool2d (kernel up to 3, stride 1 or 2), conv1d over
//! the rows as channels (stride, dilation, padding; dense, 11 groups of 3
//! or depthwise) and conv2d with stride and dilation. Ties at a max follow pullback's convention: the first
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
//! transcendental derivative may also err by 2.4e-6·(1 + |x|) absolutely
//! (exact ones — neg, square, scalings, relu, abs, leaky_relu, clamp — are
//! held to the relative bound alone, and so are their values) (WGSL's sin, tanh…
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
mod modes;
mod ops;
mod ops_more;
mod reverse;
mod second;
mod tangent;
mod tape;
mod taps;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pullback::Tensor;
use rand::rngs::StdRng;
use tape::{Bin, H, Node, Tape};

const SIZES: [usize; 5] = [1, 3, 7, 33, 257];
/// Forward values, relative to |v| + terms (see the module docs).
const FTOL: f64 = 1e-5;
/// WGSL's transcendental functions, absolutely (see the module docs).
const FABS: f64 = 5e-6;
/// Gradients, relative to |g| + Σ|terms| (see the module docs). 3e-5:
/// with the absolute floor kept to transcendental derivatives, the worst
/// of 500 programs was 0.031 of 1e-4 (tangents 0.030, H·v 0.040), so a
/// third of that still leaves a margin of about 10.
const GTOL: f64 = 3e-5;
/// Largest magnitude a region value keeps (larger go through tanh).
const BOUND: f64 = 1e3;
/// sin and cos take arguments up to this size (larger go through tanh).
const TRIG_RANGE: f64 = 100.0;
/// Op codes drawn per step.
const OPS: u8 = ops_more::FIRST + ops_more::COUNT;

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
pub(crate) struct Program {
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

/// The device values and the tape, index for index; `exact` holds the
/// f64 program's values.
pub(crate) struct Both {
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
        self.push(t, Node::Unary(x, f, df, tape::Deriv::Transcendental))
    }

    /// A unary op whose derivative the device computes exactly.
    fn exact_unary(
        &mut self,
        t: pullback::Result<Tensor>,
        x: usize,
        f: fn(f64) -> f64,
        df: fn(f64, f64) -> f64,
    ) -> usize {
        self.push(t, Node::Unary(x, f, df, tape::Deriv::Exact))
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
            Bin::Pow => ta.pow(tb),
        };
        self.push(t, Node::Binary(a, b, op))
    }

    /// σ(x) + ½: a positive value of x's shape.
    fn positive(&mut self, x: usize) -> usize {
        let s = self.unary(self.t(x).sigmoid(), x, ops::sig, |_, y| y * (1.0 - y));
        self.unary(self.t(s).add_scalar(0.5), s, |e| e + 0.5, |_, _| 1.0)
    }

    /// a · reduced, the reduced value broadcast back into the region.
    fn times(&mut self, a: usize, reduced: usize) -> usize {
        self.binary(a, reduced, Bin::Mul)
    }
}

/// The worst errors of one program, as fractions of their tolerances.
#[derive(Clone, Copy, Default)]
struct Worst {
    forward: f64,
    gradient: f64,
    tangent: f64,
    hvp: f64,
    /// Device output against the exact f64 program (not asserted).
    end_to_end: f64,
}

/// Err(what) when `got` differs from `want` by more than `tol(e)`; else
/// the worst error as a fraction of its tolerance.
pub(crate) fn compare(
    got: &[f64],
    want: &[f64],
    tol: impl Fn(usize) -> f64,
) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} values where {} were expected",
            got.len(),
            want.len()
        ));
    }
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
/// The program's values on the device and in f64: its inputs (leaves),
/// every value, the ops' names, and the generator as it is after them.
fn build(p: &Program) -> (Both, Vec<usize>, Vec<&'static str>, StdRng) {
    let dev = common::dev();
    let (r, c) = (p.r, p.c);
    let mut rs = rng(p.seed);
    let mut g = Both {
        tape: Tape { nodes: vec![] },
        exact: vec![],
        dv: vec![],
    };
    // Inputs: two of the region's shape, one of each broadcast shape
    // ([c], [r, 1], []), a [c, c] matrix, a 3×3 conv2d weight and a conv1d
    // weight (`ops_more.rs`). Some may never be used.
    let mut leaves = vec![];
    for s in [
        vec![r, c],
        vec![r, c],
        vec![c],
        vec![r, 1],
        vec![],
        vec![c, c],
        vec![3, 3],
        vec![r, ops_more::in_per_group(r), 3],
    ] {
        let data = sample(&mut rs, s.iter().product(), Dist::Uniform(-1.0, 1.0));
        let t = ok(dev.tensor(&data, &s)).requires_grad();
        leaves.push(g.leaf(t, to_f64(&data)));
    }
    let mut region: Vec<usize> = vec![leaves[0], leaves[1]];
    let mut ops: Vec<&str> = vec![];
    for st in &p.steps {
        let (mut i, name) = ops::step(&mut g, st, &region, &leaves, &mut rs);
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
    (g, leaves, ops, rs)
}

fn check(p: &Program) -> Result<Worst, String> {
    let dev = common::dev();
    let (r, c) = (p.r, p.c);
    // Forward fusion composes a chain of elementwise ops into one kernel
    // from the second time the chain is seen. Every fourth program runs
    // its forward once before the one checked, so that the checked values
    // come from fused kernels; the others check the ops' own kernels.
    if p.seed.is_multiple_of(4) {
        let first = build(p);
        ok(dev.synchronize());
        drop(first);
    }
    let (g, leaves, ops, mut rs) = build(p);
    let out = g.exact.len() - 1;
    let n = r * c;
    let vrows = sample(&mut rs, p.k * n, Dist::Uniform(-1.0, 1.0));
    let v = ok(dev.tensor(&vrows, &[p.k, r, c]));
    let inputs: Vec<&Tensor> = leaves.iter().map(|&l| g.t(l)).collect();
    let grads = ok(pullback::vjp_batched(&[g.t(out)], &[&v], &inputs));
    // One gradient per input, each [K, *input].
    assert_eq!(
        grads.len(),
        inputs.len(),
        "gradients for {} inputs",
        inputs.len()
    );
    for (gr, x) in grads.iter().zip(&inputs) {
        assert_eq!(
            gr.shape(),
            [&[p.k][..], x.shape()].concat(),
            "gradient shape"
        );
    }
    // Every value and gradient, read back with one submit; each of the
    // length its shape says.
    let all: Vec<&Tensor> = g.dv.iter().chain(&grads).collect();
    let values = ok(pullback::read_all(&all));
    assert_eq!(values.len(), all.len(), "read_all returned too few tensors");
    for (v, t) in values.iter().zip(&all) {
        assert_eq!(
            v.len(),
            t.numel(),
            "read back {} of {:?}",
            v.len(),
            t.shape()
        );
    }
    let mut back = values.into_iter().map(|v| to_f64(&v));
    let device: Vec<H> = g
        .exact
        .iter()
        .map(|h| H {
            shape: h.shape.clone(),
            v: back.next().expect("one read-back per value"),
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
        // FABS is for transcendental functions: an exact unary op's value
        // is a rounding or two of its input.
        let fabs = match node {
            Node::Unary(.., tape::Deriv::Exact) => 0.0,
            _ => FABS,
        };
        let w = compare(&device[i].v, &want.v, |e| {
            FTOL * (want.v[e].abs() + terms[e]) + fabs
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
        let want = g.tape.vjp(&device, &cot, &leaves);
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
    let (tangent, hvp) = modes::check(p, &g, &leaves, &device, &ops, &mut rs)?;
    worst.tangent = tangent;
    worst.hvp = hvp;
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
    let want = g.tape.vjp(device, cot, &all);
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
            tangent: o.tangent.max(w.tangent),
            hvp: o.hvp.max(w.hvp),
            end_to_end: o.end_to_end.max(w.end_to_end),
        });
        Ok(())
    });
    let w = worst.get();
    eprintln!(
        "{cases} programs; worst error as a fraction of its tolerance: forward {:.3}, gradients {:.3}, \
         tangents {:.3}, H·v {:.3}; end-to-end gap (not asserted) {:.1}",
        w.forward, w.gradient, w.tangent, w.hvp, w.end_to_end
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
