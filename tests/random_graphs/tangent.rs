//! Forward mode on the float64 tape (`tape.rs`): the tangent of every node
//! along one tangent of the leaves, exact or over absolute values (the
//! scale of each tangent element's f32 rounding error), by each op's own
//! tangent rule. Test-only code, written apart from the engine's rules.

use crate::reverse::DERIV_ERROR;
use crate::tape::{
    H, Node, Red, Tape, bidx, bin_floor, bin_partials, conv_taps, lse, moments, rows,
};

impl Tape {
    /// The tangents of all nodes at the values `vals`, given the leaves'
    /// tangents (`leaf_tangents[j]` for leaf node `leaves[j]`; other leaves
    /// zero). With `Some(scale)`: the same sweep over absolute values, each
    /// unary derivative's own error counted as DERIV_ERROR·(1 + |x|)·scale
    /// (as in [`Tape::vjp_scaled`]).
    pub fn jvp_scaled(
        &self,
        vals: &[H],
        leaves: &[usize],
        leaf_tangents: &[Vec<f64>],
        abs_scale: Option<f64>,
    ) -> Vec<Vec<f64>> {
        let abs = abs_scale.is_some();
        let a = |x: f64| if abs { x.abs() } else { x };
        let mut t: Vec<Vec<f64>> = Vec::with_capacity(vals.len());
        for (i, out) in vals.iter().enumerate() {
            let n = out.v.len();
            // `node` (its operands renumbered 0, 1, …) on the tangents of `of`.
            let linear = |node: Node, of: &[usize]| {
                let at: Vec<H> = (of.iter())
                    .map(|&j| H {
                        shape: vals[j].shape.clone(),
                        v: t[j].clone(),
                    })
                    .collect();
                self.eval_with(node, &at).v
            };
            let tv = match &self.nodes[i] {
                Node::Leaf => match leaves.iter().position(|&l| l == i) {
                    Some(j) => leaf_tangents[j].iter().map(|&x| a(x)).collect(),
                    None => vec![0.0; n],
                },
                Node::Unary(x, _, df, deriv) => (0..n)
                    .map(|e| {
                        let xe = vals[*x].v[e];
                        let d = df(xe, out.v[e]);
                        let floor = deriv.floor()
                            * DERIV_ERROR
                            * (1.0 + xe.abs())
                            * abs_scale.unwrap_or(0.0);
                        t[*x][e] * if abs { d.abs() + floor } else { d }
                    })
                    .collect(),
                Node::Binary(pa, pb, op) => {
                    let (ha, hb) = (&vals[*pa], &vals[*pb]);
                    (0..n)
                        .map(|e| {
                            let ib = bidx(&hb.shape, &out.shape, e);
                            let (x, y) = (ha.v[e], hb.v[ib]);
                            let (da, db) = bin_partials(*op, x, y);
                            let floor = bin_floor(*op, x, y) * abs_scale.unwrap_or(0.0);
                            a(da) * t[*pa][e] + (a(db) + floor) * t[*pb][ib]
                        })
                        .collect()
                }
                Node::Matmul(x, w) => {
                    // Ẋ·W + X·Ẇ.
                    let (c, p) = (out.shape[1], vals[*x].shape[1]);
                    let (hx, hw) = (&vals[*x].v, &vals[*w].v);
                    (0..n)
                        .map(|e| {
                            let (i2, j) = (e / c, e % c);
                            (0..p)
                                .map(|q| {
                                    t[*x][i2 * p + q] * a(hw[q * c + j])
                                        + a(hx[i2 * p + q]) * t[*w][q * c + j]
                                })
                                .sum()
                        })
                        .collect()
                }
                Node::Reduce(x, axis, kind) => reduce(&vals[*x], &t[*x], out, *axis, *kind, abs),
                Node::Softmax(x) => {
                    // ṡ = s ⊙ (ẋ − Σ s·ẋ).
                    let c = out.shape[1];
                    let mut v = Vec::with_capacity(n);
                    for (row, s) in rows(out).enumerate() {
                        let tx = &t[*x][row * c..(row + 1) * c];
                        let dot: f64 = s.iter().zip(tx).map(|(s, t)| s * t).sum();
                        v.extend((0..c).map(|j| s[j] * (tx[j] + if abs { dot } else { -dot })));
                    }
                    v
                }
                Node::LogSoftmax(x) | Node::LogSumExp(x) | Node::CrossEntropy(x, _) => {
                    // With s = softmax(x): log_softmax ẋ − Σ s·ẋ, logsumexp
                    // Σ s·ẋ, cross-entropy Σ s·ẋ − ẋ[label].
                    let hx = &vals[*x];
                    let c = hx.shape[1];
                    let mut v = Vec::with_capacity(n);
                    for (row, xr) in rows(hx).enumerate() {
                        let l = lse(xr);
                        let tx = &t[*x][row * c..(row + 1) * c];
                        let dot: f64 = (xr.iter().zip(tx)).map(|(e, t)| (e - l).exp() * t).sum();
                        match &self.nodes[i] {
                            Node::LogSoftmax(_) => {
                                v.extend(tx.iter().map(|t| if abs { t + dot } else { t - dot }))
                            }
                            Node::LogSumExp(_) => v.push(dot),
                            Node::CrossEntropy(_, labels) => v.push(if abs {
                                dot + tx[labels[row]]
                            } else {
                                dot - tx[labels[row]]
                            }),
                            _ => unreachable!(),
                        }
                    }
                    v
                }
                // Linear in their inputs: the op applied to the tangents.
                Node::Concat(pa, pb, k) => linear(Node::Concat(0, 1, *k), &[*pa, *pb]),
                Node::Transpose(x) => linear(Node::Transpose(0), &[*x]),
                Node::Reshape(x, shape) => linear(Node::Reshape(0, shape.clone()), &[*x]),
                Node::Broadcast(x, shape) => linear(Node::Broadcast(0, shape.clone()), &[*x]),
                Node::Index(x, axis, idx) => linear(Node::Index(0, *axis, idx.clone()), &[*x]),
                Node::Cmp(..) => vec![0.0; n],
                Node::Where(cond, pt, pf) => (0..n)
                    .map(|e| t[if vals[*cond].v[e] != 0.0 { *pt } else { *pf }][e])
                    .collect(),
                Node::Cumsum(x, axis) => linear(Node::Cumsum(0, *axis), &[*x]),
                node @ (Node::Gather(..) | Node::Pool(..) | Node::Taps(..)) => {
                    crate::taps::tangent(node, vals, &t, &a)
                }
                Node::Conv(x, w) => {
                    let (r, c) = (out.shape[0], out.shape[1]);
                    let (hx, hw) = (&vals[*x].v, &vals[*w].v);
                    (0..n)
                        .map(|e| {
                            conv_taps(r, c, e)
                                .map(|(xi, k)| t[*x][xi] * a(hw[k]) + a(hx[xi]) * t[*w][k])
                                .sum()
                        })
                        .collect()
                }
                Node::LayerNorm(x) => {
                    // ẏ = (ẋ − mean ẋ − y·mean(ẋ·y))/σ.
                    let c = out.shape[1];
                    let mut v = Vec::with_capacity(n);
                    for (row, xr) in rows(&vals[*x]).enumerate() {
                        let (m, s) = moments(xr);
                        let y: Vec<f64> = xr.iter().map(|e| (e - m) / s).collect();
                        let tx = &t[*x][row * c..(row + 1) * c];
                        let mt = tx.iter().sum::<f64>() / c as f64;
                        let mty = tx.iter().zip(&y).map(|(t, y)| t * a(*y)).sum::<f64>() / c as f64;
                        v.extend((0..c).map(|j| {
                            if abs {
                                (tx[j] + mt + y[j].abs() * mty) / s
                            } else {
                                (tx[j] - mt - y[j] * mty) / s
                            }
                        }));
                    }
                    v
                }
            };
            t.push(tv);
        }
        t
    }
}

/// The tangent of a reduction of x `[r, c]` along `axis` (None: all).
fn reduce(hx: &H, tx: &[f64], out: &H, axis: Option<usize>, kind: Red, abs: bool) -> Vec<f64> {
    let (r, c) = (hx.shape[0], hx.shape[1]);
    let group = |e: usize| match axis {
        Some(0) => (e % c, r),
        Some(_) => (e / c, c),
        None => (0, r * c),
    };
    let mut v = vec![0.0; out.v.len()];
    let mut means = vec![0.0; out.v.len()];
    for (e, &xe) in hx.v.iter().enumerate() {
        let (o, n) = group(e);
        means[o] += xe / n as f64;
    }
    // max and min: the tangent of the first extreme element (pullback's
    // convention, as in the adjoint).
    let mut taken = vec![false; out.v.len()];
    for (e, &xe) in hx.v.iter().enumerate() {
        let (o, n) = group(e);
        v[o] += tx[e]
            * match kind {
                Red::Sum => 1.0,
                Red::Mean => 1.0 / n as f64,
                Red::Max | Red::Min if !taken[o] && xe == out.v[o] => {
                    taken[o] = true;
                    1.0
                }
                Red::Max | Red::Min => 0.0,
                Red::Var if abs => 2.0 * (xe.abs() + means[o].abs()) / n as f64,
                Red::Var => 2.0 * (xe - means[o]) / n as f64,
            };
    }
    v
}
