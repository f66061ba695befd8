//! Random graphs against a float64 reference. proptest draws a program:
//! 10–40 steps, each an op over earlier values (so subexpressions are shared
//! and diamonds form), over a region of shape [r, c] with r, c in
//! {1, 3, 7, 33, 257}, with operands broadcast from [c], [r, 1] and [].
//! Some inputs are never used. K is random in 1..=9. The program runs on
//! the device (forward, then one `vjp_batched`) and in f64 on the host: a
//! small tape of the same ops, forward and reverse, written here for the
//! test and never used by the engine. A failure shrinks to a minimal
//! program and prints it.
//!
//! Ops: sin, cos, tanh, sigmoid, exp∘tanh, square, neg, scalar add and
//! multiply, log and sqrt of a positive value (σ(x) + ½); add, sub, mul and
//! div (by σ(x) + ½) with broadcasting; matmul by a [c, c] input;
//! sum / mean / max over an axis (kept, then broadcast back by a binary
//! op); softmax and logsumexp over axis 1; narrow + concat. Kinks (relu,
//! abs) stay out: there, finite precision legitimately picks a side. Ties
//! at a max (equal rows arise, e.g. from a softmax over one column) follow
//! pullback's convention: the first maximal element takes the gradient.
//!
//! Tolerance: a gradient element g may differ from the reference by
//! 2e-3·(|g| + Σ|terms|), Σ|terms| being the same reverse pass over
//! absolute values (so cancellation to ~0, as softmax's gradients sum to,
//! is held to the size of what cancelled; each unary derivative adds
//! 2.4e-6 / 2e-3 to it there: WGSL's tanh, sin, … are accurate to about
//! 2.4e-6 absolutely, and a derivative computed from such a value, as
//! 1 − y² of a saturated tanh, inherits that); a forward value v by
//! 2e-3·(|v| + the largest |value| of the output). 2e-3 is loose next to
//! one op's 1e-5 because rounding grows with the depth (up to 40 ops) and
//! forward cancellation (a mean of 257 mixed-sign terms) feeds into the
//! derivatives; a wrong rule errs by O(1). The test prints the worst error
//! as a fraction of its tolerance.
//! `PULLBACK_FUZZ_CASES` sets the number of programs (default 500) and
//! `PULLBACK_FUZZ_SEED` the seed they are drawn from (fixed by default, so
//! CI runs the same 500).

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pullback::Tensor;

const SIZES: [usize; 5] = [1, 3, 7, 33, 257];
/// See the module docs: f32 rounding over up to 40 ops, sums of up to 257
/// terms and cancellation in the forward values the derivatives use.
const RTOL: f64 = 2e-3;
/// A derivative's own error when computed from an f32 value: WGSL's
/// tanh, sigmoid, sin… are accurate to about 2.4e-6 absolutely (the
/// spec's bounds, not correctly rounded), and a derivative such as 1 − y²
/// of a saturated tanh inherits that error; over RTOL, as the bound scales.
const DERIV_FLOOR: f64 = 2.4e-6 / RTOL;

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
    let step = (0u8..20, any::<usize>(), any::<usize>(), 0usize..4)
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

/// A host tensor in f64: row-major [r, c] (or broadcastable shapes).
#[derive(Clone, Debug)]
struct H {
    shape: Vec<usize>,
    v: Vec<f64>,
}

/// The f64 tape: values and, per value, how it was made.
enum Node {
    Leaf,
    Unary(usize, fn(f64, f64) -> f64), // x, f'(x, y)
    Binary(usize, usize, u8),          // a, b, op (0 add 1 sub 2 mul 3 div)
    Matmul(usize, usize),
    Reduce(usize, usize, u8), // x, axis, 0 sum 1 mean 2 max
    Softmax(usize),
    LogSumExp(usize),
    Concat(usize, usize, usize), // a (first k columns of a), b (rest of b), k
}

/// Index of element i of `shape` (row-major over `out`) broadcast.
fn bidx(shape: &[usize], out: &[usize], i: usize) -> usize {
    let (r, c) = (out[0], out[1]);
    let (row, col) = (i / c, i % c);
    let _ = r;
    match shape {
        [] => 0,
        [n] => {
            if *n == 1 {
                0
            } else {
                col
            }
        }
        [a, b] => (if *a == 1 { 0 } else { row }) * b + if *b == 1 { 0 } else { col },
        _ => unreachable!(),
    }
}

struct Tape {
    vals: Vec<H>,
    nodes: Vec<Node>,
}

impl Tape {
    fn push(&mut self, h: H, n: Node) -> usize {
        self.vals.push(h);
        self.nodes.push(n);
        self.vals.len() - 1
    }

    /// Reverse mode over the tape for one cotangent of the last value;
    /// returns the cotangents of the leaves `leaves`.
    /// With `abs`, every product and sum is of absolute values: the result
    /// bounds Σ|terms| of each gradient element (the scale its f32 rounding
    /// error grows with, also where the terms cancel to 0).
    fn vjp(&self, g_out: &[f64], leaves: &[usize], abs: bool) -> Vec<Vec<f64>> {
        let a = |x: f64| if abs { x.abs() } else { x };
        let mut g: Vec<Vec<f64>> = self.vals.iter().map(|h| vec![0.0; h.v.len()]).collect();
        if let Some(last) = g.last_mut() {
            *last = g_out.iter().map(|&x| a(x)).collect();
        }
        for i in (0..self.vals.len()).rev() {
            let gi = g[i].clone();
            let out = &self.vals[i];
            match &self.nodes[i] {
                Node::Leaf => {}
                Node::Unary(x, df) => {
                    for e in 0..gi.len() {
                        // In f32 a derivative computed from a rounded
                        // value (1 − y² of a saturated tanh) is off by
                        // about 2⁻²³ absolutely: DERIV_FLOOR covers that.
                        let d = df(self.vals[*x].v[e], out.v[e]);
                        g[*x][e] += gi[e] * if abs { d.abs() + DERIV_FLOOR } else { d };
                    }
                }
                Node::Binary(pa, pb, op) => {
                    let (pa, pb) = (*pa, *pb);
                    let (ha, hb) = (&self.vals[pa], &self.vals[pb]);
                    for (e, &ge) in gi.iter().enumerate() {
                        let (ia, ib) = (
                            bidx(&ha.shape, &out.shape, e),
                            bidx(&hb.shape, &out.shape, e),
                        );
                        let (x, y) = (ha.v[ia], hb.v[ib]);
                        let (da, db) = match op {
                            0 => (1.0, 1.0),
                            1 => (1.0, -1.0),
                            2 => (y, x),
                            _ => (1.0 / y, -x / (y * y)),
                        };
                        g[pa][ia] += ge * a(da);
                        g[pb][ib] += ge * a(db);
                    }
                }
                Node::Matmul(x, w) => {
                    let (x, w) = (*x, *w);
                    let (r, c) = (out.shape[0], out.shape[1]);
                    let p = self.vals[x].shape[1];
                    for i2 in 0..r {
                        for j in 0..c {
                            let gv = gi[i2 * c + j];
                            for q in 0..p {
                                g[x][i2 * p + q] += gv * a(self.vals[w].v[q * c + j]);
                                g[w][q * c + j] += gv * a(self.vals[x].v[i2 * p + q]);
                            }
                        }
                    }
                }
                Node::Reduce(x, axis, kind) => {
                    let hx = &self.vals[*x];
                    let (r, c) = (hx.shape[0], hx.shape[1]);
                    for (e, slot) in g[*x].iter_mut().enumerate() {
                        let (row, col) = (e / c, e % c);
                        let o = if *axis == 0 { col } else { row };
                        let n = if *axis == 0 { r } else { c };
                        let w = match kind {
                            0 => 1.0,
                            1 => 1.0 / n as f64,
                            // max: all of it to the first maximal element
                            // (pullback's convention at ties, which equal
                            // rows, e.g. after a softmax over one column,
                            // produce).
                            _ => {
                                let first = (0..n)
                                    .map(|t| if *axis == 0 { t * c + col } else { row * c + t })
                                    .find(|&i| hx.v[i] == out.v[o]);
                                f64::from(u8::from(first == Some(e)))
                            }
                        };
                        *slot += gi[o] * w;
                    }
                }
                Node::Softmax(x) => {
                    let c = out.shape[1];
                    for row in 0..out.shape[0] {
                        let s = &out.v[row * c..row * c + c];
                        let dot: f64 = (0..c).map(|j| gi[row * c + j] * s[j]).sum();
                        for j in 0..c {
                            g[*x][row * c + j] += if abs {
                                s[j] * (gi[row * c + j] + dot)
                            } else {
                                s[j] * (gi[row * c + j] - dot)
                            };
                        }
                    }
                }
                Node::LogSumExp(x) => {
                    let hx = &self.vals[*x];
                    let c = hx.shape[1];
                    for row in 0..hx.shape[0] {
                        for j in 0..c {
                            g[*x][row * c + j] += gi[row] * (hx.v[row * c + j] - out.v[row]).exp();
                        }
                    }
                }
                Node::Concat(a, b, k) => {
                    let (r, c) = (out.shape[0], out.shape[1]);
                    for row in 0..r {
                        for j in 0..c {
                            let src = if j < *k { *a } else { *b };
                            g[src][row * c + j] += gi[row * c + j];
                        }
                    }
                }
            }
        }
        leaves.iter().map(|&l| g[l].clone()).collect()
    }
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The device values and the tape, index for index.
struct Both {
    tape: Tape,
    dv: Vec<Tensor>,
}

impl Both {
    fn push(&mut self, t: Tensor, shape: Vec<usize>, v: Vec<f64>, n: Node) -> usize {
        self.dv.push(t);
        self.tape.push(H { shape, v }, n)
    }

    /// A unary op on value x: device result `t`, host f and f'.
    fn unary(&mut self, t: Tensor, x: usize, f: fn(f64) -> f64, df: fn(f64, f64) -> f64) -> usize {
        let h = &self.tape.vals[x];
        let (shape, v) = (h.shape.clone(), h.v.iter().map(|&e| f(e)).collect());
        self.push(t, shape, v, Node::Unary(x, df))
    }

    /// a op b with b broadcast to a's shape [r, c].
    fn binary(&mut self, a: usize, b: usize, op: u8) -> usize {
        let (ta, tb) = (&self.dv[a], &self.dv[b]);
        let t = ok(match op {
            0 => ta.add(tb),
            1 => ta.sub(tb),
            2 => ta.mul(tb),
            _ => ta.div(tb),
        });
        let (ha, hb) = (&self.tape.vals[a], &self.tape.vals[b]);
        let out = ha.shape.clone();
        let v = (0..ha.v.len())
            .map(|e| {
                let (x, z) = (ha.v[e], hb.v[bidx(&hb.shape, &out, e)]);
                match op {
                    0 => x + z,
                    1 => x - z,
                    2 => x * z,
                    _ => x / z,
                }
            })
            .collect();
        self.push(t, out, v, Node::Binary(a, b, op))
    }

    /// σ(x) + ½: a positive value of x's shape.
    fn positive(&mut self, x: usize) -> usize {
        let s = ok(self.dv[x].sigmoid());
        let s = self.unary(s, x, sig, |_, y| y * (1.0 - y));
        let p = ok(self.dv[s].add_scalar(0.5));
        self.unary(p, s, |e| e + 0.5, |_, _| 1.0)
    }
}

/// Runs `p` on the device and on the tape; Err names what differs.
fn check(p: &Program) -> Result<f64, String> {
    let dev = common::dev();
    let (r, c) = (p.r, p.c);
    let mut rs = rng(p.seed);
    let mut g = Both {
        tape: Tape {
            vals: vec![],
            nodes: vec![],
        },
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
    ] {
        let data = sample(&mut rs, s.iter().product(), Dist::Uniform(-1.0, 1.0));
        let t = ok(dev.tensor(&data, &s)).requires_grad();
        leaves.push(g.push(t, s, data.iter().map(|&x| x as f64).collect(), Node::Leaf));
    }
    // Values of the region's shape, usable as operands.
    let mut region: Vec<usize> = vec![leaves[0], leaves[1]];
    let mut ops: Vec<&str> = vec![];
    for st in &p.steps {
        let a = region[st.a % region.len()];
        let b_any = [region[st.b % region.len()], leaves[2], leaves[3], leaves[4]][st.k];
        let ta = g.dv[a].clone();
        let (i, name) = match st.op {
            0 => (g.unary(ok(ta.sin()), a, f64::sin, |x, _| x.cos()), "sin"),
            1 => (g.unary(ok(ta.cos()), a, f64::cos, |x, _| -x.sin()), "cos"),
            2 => (
                g.unary(ok(ta.tanh()), a, f64::tanh, |_, y| 1.0 - y * y),
                "tanh",
            ),
            3 => (
                g.unary(ok(ta.sigmoid()), a, sig, |_, y| y * (1.0 - y)),
                "sigmoid",
            ),
            4 => (
                g.unary(ok(ta.square()), a, |x| x * x, |x, _| 2.0 * x),
                "square",
            ),
            5 => (g.unary(ok(ta.neg()), a, |x| -x, |_, _| -1.0), "neg"),
            6 => (
                g.unary(ok(ta.mul_scalar(0.75)), a, |x| 0.75 * x, |_, _| 0.75),
                "mul_scalar",
            ),
            7 => (
                g.unary(ok(ta.add_scalar(-0.25)), a, |x| x - 0.25, |_, _| 1.0),
                "add_scalar",
            ),
            8..=11 => {
                let op = st.op - 8;
                let b = if op == 3 { g.positive(b_any) } else { b_any };
                (
                    g.binary(a, b, op),
                    ["add", "sub", "mul", "div"][op as usize],
                )
            }
            12 => {
                let w = leaves[5];
                let t = ok(ta.matmul(&g.dv[w]));
                let (ha, hw) = (&g.tape.vals[a], &g.tape.vals[w]);
                let v = (0..r * c)
                    .map(|e| {
                        (0..c)
                            .map(|q| ha.v[(e / c) * c + q] * hw.v[q * c + e % c])
                            .sum()
                    })
                    .collect();
                (g.push(t, vec![r, c], v, Node::Matmul(a, w)), "matmul")
            }
            13..=15 => {
                // Reduce over an axis (kept), then multiply back into the region.
                let kind = st.op - 13;
                let axis = st.k % 2;
                let t = ok(match kind {
                    0 => ta.sum(&[axis], true),
                    1 => ta.mean(&[axis], true),
                    _ => ta.max(axis, true),
                });
                let hx = &g.tape.vals[a];
                let shape = if axis == 0 { vec![1, c] } else { vec![r, 1] };
                let n = if axis == 0 { r } else { c };
                let v: Vec<f64> = (0..shape[0] * shape[1])
                    .map(|o| {
                        let it = (0..n).map(|t| {
                            if axis == 0 {
                                hx.v[t * c + o]
                            } else {
                                hx.v[o * c + t]
                            }
                        });
                        match kind {
                            0 => it.sum(),
                            1 => it.sum::<f64>() / n as f64,
                            _ => it.fold(f64::MIN, f64::max),
                        }
                    })
                    .collect();
                let red = g.push(t, shape, v, Node::Reduce(a, axis, kind));
                (g.binary(a, red, 2), ["sum", "mean", "max"][kind as usize])
            }
            16 => {
                let t = ok(ta.softmax(1));
                let hx = &g.tape.vals[a];
                let mut v = vec![0.0; r * c];
                for row in 0..r {
                    let m = (0..c).map(|j| hx.v[row * c + j]).fold(f64::MIN, f64::max);
                    let z: f64 = (0..c).map(|j| (hx.v[row * c + j] - m).exp()).sum();
                    for j in 0..c {
                        v[row * c + j] = (hx.v[row * c + j] - m).exp() / z;
                    }
                }
                (g.push(t, vec![r, c], v, Node::Softmax(a)), "softmax")
            }
            17 => {
                // x − logsumexp(x) over axis 1 (kept).
                let t = ok(ta.logsumexp(1, true));
                let hx = &g.tape.vals[a];
                let v: Vec<f64> = (0..r)
                    .map(|row| {
                        let m = (0..c).map(|j| hx.v[row * c + j]).fold(f64::MIN, f64::max);
                        m + (0..c)
                            .map(|j| (hx.v[row * c + j] - m).exp())
                            .sum::<f64>()
                            .ln()
                    })
                    .collect();
                let l = g.push(t, vec![r, 1], v, Node::LogSumExp(a));
                (g.binary(a, l, 1), "logsumexp")
            }
            18 if c > 1 => {
                // concat(narrow(a, 1, 0, k), narrow(b, 1, k, c − k)).
                let b = region[st.b % region.len()];
                let k = 1 + st.b % (c - 1);
                let left = ok(ta.narrow(1, 0, k));
                let right = ok(g.dv[b].narrow(1, k, c - k));
                let t = ok(pullback::concat(&[&left, &right], 1));
                let (ha, hb) = (&g.tape.vals[a], &g.tape.vals[b]);
                let v = (0..r * c)
                    .map(|e| if e % c < k { ha.v[e] } else { hb.v[e] })
                    .collect();
                (
                    g.push(t, vec![r, c], v, Node::Concat(a, b, k)),
                    "narrow+concat",
                )
            }
            _ => {
                // log or sqrt of σ(a) + ½.
                let pa = g.positive(a);
                let tp = g.dv[pa].clone();
                if st.k % 2 == 0 {
                    (g.unary(ok(tp.log()), pa, f64::ln, |x, _| 1.0 / x), "log")
                } else {
                    (
                        g.unary(ok(tp.sqrt()), pa, f64::sqrt, |_, y| 0.5 / y),
                        "sqrt",
                    )
                }
            }
        };
        ops.push(name);
        region.push(i);
    }
    let out = *region.last().unwrap_or(&leaves[0]);
    let n = r * c;
    let vrows = sample(&mut rs, p.k * n, Dist::Uniform(-1.0, 1.0));
    let v = ok(dev.tensor(&vrows, &[p.k, r, c]));
    let inputs: Vec<&Tensor> = leaves.iter().map(|&l| &g.dv[l]).collect();
    let grads = ok(pullback::vjp_batched(&[&g.dv[out]], &[&v], &inputs));
    let mut worst = 0.0f64;
    // `terms`: per element, the size its rounding error scales with.
    let mut cmp = |what: String, got: &[f32], want: &[f64], terms: &[f64]| -> Result<(), String> {
        for (e, (&gv, &w)) in got.iter().zip(want).enumerate() {
            let tol = RTOL * (w.abs() + terms[e]) + 1e-30;
            let err = (gv as f64 - w).abs() / tol;
            worst = worst.max(err);
            // NaN fails too.
            if err.is_nan() || err > 1.0 {
                return Err(format!(
                    "{what}, element {e}: got {gv}, want {w} (tolerance {tol:e}); [{r}, {c}], K = {}, ops {ops:?}",
                    p.k
                ));
            }
        }
        Ok(())
    };
    let fwd = g.tape.vals[out].v.clone();
    let scale = fwd.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    cmp(
        "forward".into(),
        &read(&g.dv[out]),
        &fwd,
        &vec![scale; fwd.len()],
    )?;
    for row in 0..p.k {
        let cot: Vec<f64> = vrows[row * n..(row + 1) * n]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let want = g.tape.vjp(&cot, &leaves, false);
        let terms = g.tape.vjp(&cot, &leaves, true);
        for (li, ((gr, w), t)) in grads.iter().zip(&want).zip(&terms).enumerate() {
            let m = w.len();
            let got = read(gr);
            cmp(
                format!("gradient row {row} of input {li}"),
                &got[row * m..(row + 1) * m],
                w,
                t,
            )?;
        }
    }
    Ok(worst)
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
    let worst = std::cell::Cell::new(0.0f64);
    let result = runner.run(&program(), |p| {
        let w = check(&p).map_err(TestCaseError::fail)?;
        worst.set(worst.get().max(w));
        Ok(())
    });
    eprintln!(
        "{cases} programs; worst error {:.3} of its tolerance",
        worst.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
