//! The reverse pass of the float64 tape (`tape.rs`): one cotangent of the
//! last node back to any nodes, exact or over absolute values (the scale
//! of each gradient element's f32 rounding error). Test-only code.

use crate::tape::{
    H, Node, Red, Tape, bidx, bin_floor, bin_partials, conv_taps, lse, moments, rows,
};

/// A derivative's own error when computed from an f32 value: WGSL's tanh,
/// sigmoid, sin… are accurate to about 2.4e-6 absolutely (the spec's
/// bounds, not correctly rounded), and a derivative such as 1 − y² of a
/// saturated tanh inherits that error. Past |x| = 1 it grows with |x|:
/// sin and cos reduce their argument in f32.
pub const DERIV_ERROR: f64 = 2.4e-6;

impl Tape {
    /// Reverse mode over the tape at the values `vals`, for one cotangent
    /// of the last node; returns the cotangents of the nodes `leaves`
    /// (leaves or not).
    pub fn vjp(&self, vals: &[H], g_out: &[f64], leaves: &[usize]) -> Vec<Vec<f64>> {
        self.vjp_scaled(vals, g_out, leaves, None)
    }

    /// [`Tape::vjp`], or with `Some(scale)` the same pass over absolute
    /// values: every product and sum is of |·|, and each derivative's own
    /// error counts as [`DERIV_ERROR`]·(1 + |x|)·scale. The result bounds
    /// Σ|terms| of each gradient element, the scale its f32 rounding error
    /// grows with, also where the terms cancel to 0 (softmax's gradients
    /// sum to 0). A caller whose tolerance is rtol·Σ|terms| passes
    /// 1/rtol as the scale, so that the derivative's error is allowed
    /// absolutely rather than relatively.
    pub fn vjp_scaled(
        &self,
        vals: &[H],
        g_out: &[f64],
        leaves: &[usize],
        abs_scale: Option<f64>,
    ) -> Vec<Vec<f64>> {
        let abs = abs_scale.is_some();
        let mut g: Vec<Vec<f64>> = vals.iter().map(|h| vec![0.0; h.v.len()]).collect();
        if let Some(last) = g.last_mut() {
            *last = g_out
                .iter()
                .map(|&x| if abs { x.abs() } else { x })
                .collect();
        }
        for i in (0..self.nodes.len()).rev() {
            let gi = g[i].clone();
            self.node_vjp(i, vals, &gi, &mut g, abs_scale);
        }
        leaves.iter().map(|&l| g[l].clone()).collect()
    }

    /// One node's rule: adds the contributions of its cotangent `gi` (or,
    /// with `abs_scale`, their bound over absolute values) into `g` at its
    /// inputs, at the values `vals`. Reads only its inputs' and its own
    /// values, and writes only its inputs' entries of `g`.
    pub fn node_vjp(
        &self,
        i: usize,
        vals: &[H],
        gi: &[f64],
        g: &mut [Vec<f64>],
        abs_scale: Option<f64>,
    ) {
        let abs = abs_scale.is_some();
        let a = |x: f64| if abs { x.abs() } else { x };
        let gi = gi.to_vec();
        let out = &vals[i];
        match &self.nodes[i] {
            Node::Leaf => {}
            Node::Unary(x, _, df, deriv) => {
                for (e, &ge) in gi.iter().enumerate() {
                    let d = df(vals[*x].v[e], out.v[e]);
                    // f32 transcendentals lose absolute accuracy in
                    // proportion to the argument (range reduction); exact
                    // derivatives do not.
                    let floor = deriv.floor()
                        * DERIV_ERROR
                        * (1.0 + vals[*x].v[e].abs())
                        * abs_scale.unwrap_or(0.0);
                    g[*x][e] += ge * if abs { d.abs() + floor } else { d };
                }
            }
            Node::Binary(pa, pb, op) => {
                let (ha, hb) = (&vals[*pa], &vals[*pb]);
                for (e, &ge) in gi.iter().enumerate() {
                    let ib = bidx(&hb.shape, &out.shape, e);
                    let (x, y) = (ha.v[e], hb.v[ib]);
                    let (da, db) = bin_partials(*op, x, y);
                    let floor = bin_floor(*op, x, y) * abs_scale.unwrap_or(0.0);
                    g[*pa][e] += ge * a(da);
                    g[*pb][ib] += ge * (a(db) + floor);
                }
            }
            Node::Matmul(x, w) => {
                let (r, c) = (out.shape[0], out.shape[1]);
                let p = vals[*x].shape[1];
                for (e, &gv) in gi.iter().enumerate() {
                    let (i2, j) = (e / c, e % c);
                    for q in 0..p {
                        g[*x][i2 * p + q] += gv * a(vals[*w].v[q * c + j]);
                        g[*w][q * c + j] += gv * a(vals[*x].v[i2 * p + q]);
                    }
                }
                let _ = r;
            }
            Node::Reduce(x, axis, kind) => {
                let hx = &vals[*x];
                let (r, c) = (hx.shape[0], hx.shape[1]);
                let group = |e: usize| match axis {
                    Some(0) => (e % c, r),
                    Some(_) => (e / c, c),
                    None => (0, r * c),
                };
                // max: all of it to the first maximal element of each
                // group (pullback's convention at ties).
                let mut taken = vec![false; out.v.len()];
                let mut means = vec![0.0; out.v.len()];
                for (e, &xe) in hx.v.iter().enumerate() {
                    let (o, n) = group(e);
                    means[o] += xe / n as f64;
                }
                for (e, &xe) in hx.v.iter().enumerate() {
                    let (o, n) = group(e);
                    let w = match kind {
                        Red::Sum => 1.0,
                        Red::Mean => 1.0 / n as f64,
                        Red::Max if !taken[o] && xe == out.v[o] => {
                            taken[o] = true;
                            1.0
                        }
                        Red::Min if !taken[o] && xe == out.v[o] => {
                            taken[o] = true;
                            1.0
                        }
                        Red::Max | Red::Min => 0.0,
                        // 2(x − m)/n; over absolute values, what x − m
                        // and the mean's path round.
                        Red::Var if abs => 2.0 * (xe.abs() + means[o].abs()) / n as f64,
                        Red::Var => 2.0 * (xe - means[o]) / n as f64,
                    };
                    g[*x][e] += gi[o] * w;
                }
            }
            Node::Softmax(x) => {
                let c = out.shape[1];
                for (row, (s, gr)) in rows(out).zip(gi.chunks(c)).enumerate() {
                    let dot: f64 = s.iter().zip(gr).map(|(s, g)| s * g).sum();
                    for j in 0..c {
                        g[*x][row * c + j] += s[j] * (gr[j] + if abs { dot } else { -dot });
                    }
                }
            }
            Node::LogSoftmax(x) | Node::CrossEntropy(x, _) => {
                // x − lse(x) with cotangent h reaches x as h − softmax·Σh;
                // cross-entropy is −(x − lse)[label]: h = −g at the label.
                let hx = &vals[*x];
                let c = hx.shape[1];
                for (row, xr) in rows(hx).enumerate() {
                    let h: Vec<f64> = match &self.nodes[i] {
                        Node::CrossEntropy(_, labels) => (0..c)
                            .map(|j| if j == labels[row] { -gi[row] } else { 0.0 })
                            .collect(),
                        _ => gi[row * c..(row + 1) * c].to_vec(),
                    };
                    let total: f64 = h.iter().sum();
                    let l = lse(xr);
                    for (j, &xe) in xr.iter().enumerate() {
                        let s = (xe - l).exp();
                        g[*x][row * c + j] += if abs {
                            h[j].abs() + s * total.abs()
                        } else {
                            h[j] - s * total
                        };
                    }
                }
            }
            Node::LogSumExp(x) => {
                let hx = &vals[*x];
                let c = hx.shape[1];
                for (e, &xe) in hx.v.iter().enumerate() {
                    g[*x][e] += gi[e / c] * (xe - out.v[e / c]).exp();
                }
            }
            Node::Concat(pa, pb, k) => {
                let c = out.shape[1];
                for (e, &ge) in gi.iter().enumerate() {
                    g[if e % c < *k { *pa } else { *pb }][e] += ge;
                }
            }
            Node::Transpose(x) => {
                let (c, r) = (out.shape[0], out.shape[1]);
                for (e, &ge) in gi.iter().enumerate() {
                    g[*x][(e % r) * c + e / r] += ge;
                }
            }
            Node::Reshape(x, _) => {
                for (e, &ge) in gi.iter().enumerate() {
                    g[*x][e] += ge;
                }
            }
            Node::Broadcast(x, shape) => {
                for (e, &ge) in gi.iter().enumerate() {
                    g[*x][bidx(&vals[*x].shape, shape, e)] += ge;
                }
            }
            Node::Index(x, axis, idx) => {
                let c = out.shape[1];
                for (e, &ge) in gi.iter().enumerate() {
                    let src = match axis {
                        0 => idx[e / c] * c + e % c,
                        _ => (e / c) * c + idx[e % c],
                    };
                    g[*x][src] += ge;
                }
            }
            Node::Cmp(..) => {}
            Node::Where(cond, t, f) => {
                for (e, &ge) in gi.iter().enumerate() {
                    let to = if vals[*cond].v[e] != 0.0 { *t } else { *f };
                    g[to][e] += ge;
                }
            }
            Node::Cumsum(x, axis) => {
                // The reversed cumulative sum of the cotangent.
                let (r, c) = (out.shape[0], out.shape[1]);
                let mut acc = gi.clone();
                for e in (0..r * c).rev() {
                    let next = if *axis == 0 {
                        Some(e + c).filter(|&n| n < r * c)
                    } else {
                        Some(e + 1).filter(|&n| n % c != 0)
                    };
                    if let Some(n) = next {
                        acc[e] += acc[n];
                    }
                    g[*x][e] += acc[e];
                }
            }
            Node::Conv(x, w) => {
                let (r, c) = (out.shape[0], out.shape[1]);
                for (e, &ge) in gi.iter().enumerate() {
                    for (xi, t) in conv_taps(r, c, e) {
                        g[*x][xi] += ge * a(vals[*w].v[t]);
                        g[*w][t] += ge * a(vals[*x].v[xi]);
                    }
                }
            }
            node @ (Node::Gather(..) | Node::Pool(..) | Node::Taps(..)) => {
                crate::taps::vjp(node, vals, &gi, g, &a)
            }
            Node::LayerNorm(x) => {
                // dx = (g − mean g − y·mean(g·y))/σ.
                let c = out.shape[1];
                for (row, (xr, gr)) in rows(&vals[*x]).zip(gi.chunks(c)).enumerate() {
                    let (m, s) = moments(xr);
                    let y: Vec<f64> = xr.iter().map(|e| (e - m) / s).collect();
                    let n = c as f64;
                    let mg = gr.iter().sum::<f64>() / n;
                    let mgy = gr.iter().zip(&y).map(|(g, y)| g * a(*y)).sum::<f64>() / n;
                    for j in 0..c {
                        g[*x][row * c + j] += if abs {
                            (gr[j] + mg + y[j].abs() * mgy) / s
                        } else {
                            (gr[j] - mg - y[j] * mgy) / s
                        };
                    }
                }
            }
        }
    }
}
