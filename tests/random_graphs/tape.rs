//! The float64 reference: a tape of the ops the random programs use, each
//! evaluated forward and reversed on the host. Test-only code; never an
//! execution path of the engine.
//!
//! Region values are `[r, c]`; binary operands broadcast from `[]`, `[c]`,
//! `[r, 1]` or `[1, c]`. Every op works on whatever values it is handed, so
//! the same tape evaluates the exact f64 program and, op by op, the
//! device's own f32 values (see `main.rs`).

/// A host tensor in f64, row-major.
#[derive(Clone, Debug)]
pub struct H {
    pub shape: Vec<usize>,
    pub v: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Red {
    Sum,
    Mean,
    Max,
}

/// How a value was made. Reductions over `Some(axis)` keep the axis;
/// `None` reduces everything to `[]`. Row-wise ops work along axis 1.
#[derive(Clone, Debug)]
pub enum Node {
    Leaf,
    /// y = f(x); f'(x, y).
    Unary(usize, fn(f64) -> f64, fn(f64, f64) -> f64),
    Binary(usize, usize, Bin),
    Matmul(usize, usize),
    Reduce(usize, Option<usize>, Red),
    Softmax(usize),
    LogSoftmax(usize),
    LogSumExp(usize),
    /// The first k columns of a, then the rest of b's.
    Concat(usize, usize, usize),
    /// `[r, c]` → `[c, r]`.
    Transpose(usize),
    Reshape(usize, Vec<usize>),
    Broadcast(usize, Vec<usize>),
    /// out[i, j] = x[idx[i], j] (axis 0) or x[i, idx[j]] (axis 1).
    Index(usize, usize, Vec<usize>),
    /// `[r, c]` logits → `[r]` losses.
    CrossEntropy(usize, Vec<usize>),
}

/// Flat index into `shape` of element `e` of `out` (`[r, c]`), broadcast.
pub fn bidx(shape: &[usize], out: &[usize], e: usize) -> usize {
    let c = out[1];
    let (row, col) = (e / c, e % c);
    match shape {
        [] => 0,
        [n] => usize::from(*n != 1) * col,
        [a, b] => usize::from(*a != 1) * row * b + usize::from(*b != 1) * col,
        _ => unreachable!("operands are rank <= 2"),
    }
}

/// Rows of a `[r, c]` value.
fn rows(h: &H) -> impl Iterator<Item = &[f64]> {
    h.v.chunks(h.shape[1].max(1))
}

/// log Σ exp of one row, shifted by its maximum.
fn lse(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::MIN, f64::max);
    m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

pub struct Tape {
    pub nodes: Vec<Node>,
}

impl Tape {
    /// Value of node `i` from the values `vals` of the nodes before it.
    pub fn eval(&self, i: usize, vals: &[H]) -> H {
        let h = |j: usize| &vals[j];
        let (shape, v): (Vec<usize>, Vec<f64>) = match &self.nodes[i] {
            Node::Leaf => unreachable!("leaves are given"),
            Node::Unary(x, f, _) => (h(*x).shape.clone(), h(*x).v.iter().map(|&e| f(e)).collect()),
            Node::Binary(a, b, op) => {
                let (ha, hb) = (h(*a), h(*b));
                let v = (0..ha.v.len())
                    .map(|e| {
                        let (x, z) = (ha.v[e], hb.v[bidx(&hb.shape, &ha.shape, e)]);
                        match op {
                            Bin::Add => x + z,
                            Bin::Sub => x - z,
                            Bin::Mul => x * z,
                            Bin::Div => x / z,
                        }
                    })
                    .collect();
                (ha.shape.clone(), v)
            }
            Node::Matmul(x, w) => {
                let (hx, hw) = (h(*x), h(*w));
                let (r, p, c) = (hx.shape[0], hx.shape[1], hw.shape[1]);
                let v = (0..r * c)
                    .map(|e| {
                        (0..p)
                            .map(|q| hx.v[(e / c) * p + q] * hw.v[q * c + e % c])
                            .sum()
                    })
                    .collect();
                (vec![r, c], v)
            }
            Node::Reduce(x, axis, kind) => {
                let hx = h(*x);
                let (r, c) = (hx.shape[0], hx.shape[1]);
                let (shape, groups): (Vec<usize>, Vec<Vec<usize>>) = match axis {
                    Some(0) => (
                        vec![1, c],
                        (0..c)
                            .map(|j| (0..r).map(|t| t * c + j).collect())
                            .collect(),
                    ),
                    Some(_) => (
                        vec![r, 1],
                        (0..r)
                            .map(|i| (0..c).map(|t| i * c + t).collect())
                            .collect(),
                    ),
                    None => (vec![], vec![(0..r * c).collect()]),
                };
                let v = groups
                    .iter()
                    .map(|g| {
                        let it = g.iter().map(|&e| hx.v[e]);
                        match kind {
                            Red::Sum => it.sum(),
                            Red::Mean => it.sum::<f64>() / g.len() as f64,
                            Red::Max => it.fold(f64::MIN, f64::max),
                        }
                    })
                    .collect();
                (shape, v)
            }
            Node::Softmax(x) | Node::LogSoftmax(x) => {
                let log = matches!(self.nodes[i], Node::LogSoftmax(_));
                let v = rows(h(*x))
                    .flat_map(|row| {
                        let l = lse(row);
                        row.iter()
                            .map(move |&e| if log { e - l } else { (e - l).exp() })
                    })
                    .collect();
                (h(*x).shape.clone(), v)
            }
            Node::LogSumExp(x) => (vec![h(*x).shape[0], 1], rows(h(*x)).map(lse).collect()),
            Node::Concat(a, b, k) => {
                let (ha, hb) = (h(*a), h(*b));
                let c = ha.shape[1];
                let v = (0..ha.v.len())
                    .map(|e| if e % c < *k { ha.v[e] } else { hb.v[e] })
                    .collect();
                (ha.shape.clone(), v)
            }
            Node::Transpose(x) => {
                let hx = h(*x);
                let (r, c) = (hx.shape[0], hx.shape[1]);
                let v = (0..r * c).map(|e| hx.v[(e % r) * c + e / r]).collect();
                (vec![c, r], v)
            }
            Node::Reshape(x, shape) => (shape.clone(), h(*x).v.clone()),
            Node::Broadcast(x, shape) => {
                let hx = h(*x);
                let v = (0..shape[0] * shape[1])
                    .map(|e| hx.v[bidx(&hx.shape, shape, e)])
                    .collect();
                (shape.clone(), v)
            }
            Node::Index(x, axis, idx) => {
                let hx = h(*x);
                let c = hx.shape[1];
                let v = (0..hx.v.len())
                    .map(|e| match axis {
                        0 => hx.v[idx[e / c] * c + e % c],
                        _ => hx.v[(e / c) * c + idx[e % c]],
                    })
                    .collect();
                (hx.shape.clone(), v)
            }
            Node::CrossEntropy(x, labels) => {
                let v = rows(h(*x))
                    .zip(labels)
                    .map(|(row, &l)| lse(row) - row[l])
                    .collect();
                (vec![h(*x).shape[0]], v)
            }
        };
        H { shape, v }
    }

    /// Per element of node `i`'s value `out`, the size its f32 rounding
    /// error scales with: Σ|terms| of sums, the condition |x·f'(x)| of a
    /// unary op, the exponent range of row-wise exponentials; |out| else.
    pub fn terms(&self, i: usize, vals: &[H], out: &H) -> Vec<f64> {
        let abs = |j: usize| H {
            shape: vals[j].shape.clone(),
            v: vals[j].v.iter().map(|x| x.abs()).collect(),
        };
        let mag: Vec<f64> = out.v.iter().map(|x| x.abs()).collect();
        match &self.nodes[i] {
            Node::Unary(x, _, df) => (0..mag.len())
                .map(|e| {
                    let xe = vals[*x].v[e];
                    mag[e] + (xe * df(xe, out.v[e])).abs()
                })
                .collect(),
            Node::Binary(a, b, Bin::Add | Bin::Sub) => {
                self.eval_with(Node::Binary(0, 1, Bin::Add), &[abs(*a), abs(*b)])
                    .v
            }
            Node::Matmul(x, w) => {
                let v = [abs(*x), abs(*w)];
                self.eval_with(Node::Matmul(0, 1), &v).v
            }
            Node::Reduce(x, axis, Red::Sum | Red::Mean) => {
                let v = [abs(*x)];
                self.eval_with(Node::Reduce(0, *axis, Red::Sum), &v).v
            }
            Node::Softmax(x)
            | Node::LogSoftmax(x)
            | Node::LogSumExp(x)
            | Node::CrossEntropy(x, _) => {
                // exp(z) is off by |z|·ε relatively; z spans the row's range.
                let span: Vec<f64> = rows(&vals[*x])
                    .map(|row| row.iter().fold(0.0f64, |m, e| m.max(e.abs())) * 2.0 + 1.0)
                    .collect();
                let per_row = out.v.len() / span.len().max(1);
                (0..mag.len())
                    .map(|e| (mag[e] + 1.0) * span[e / per_row.max(1)])
                    .collect()
            }
            _ => mag,
        }
    }

    /// Evaluates a node that is not on the tape (for [`Tape::terms`]).
    fn eval_with(&self, node: Node, vals: &[H]) -> H {
        let mut nodes = vec![Node::Leaf; vals.len()];
        nodes.push(node);
        Tape { nodes }.eval(vals.len(), vals)
    }
}

/// A derivative's own error when computed from an f32 value: WGSL's tanh,
/// sigmoid, sin… are accurate to about 2.4e-6 absolutely (the spec's
/// bounds, not correctly rounded), and a derivative such as 1 − y² of a
/// saturated tanh inherits that error. Past |x| = 1 it grows with |x|:
/// sin and cos reduce their argument in f32.
pub const DERIV_ERROR: f64 = 2.4e-6;

impl Tape {
    /// Reverse mode over the tape at the values `vals`, for one cotangent
    /// of the last node; returns the cotangents of the nodes `leaves`
    /// (leaves or not). With `abs`,
    /// every product and sum is of absolute values (plus [`DERIV_ERROR`]
    /// per derivative): the result bounds Σ|terms| of each gradient element,
    /// the scale its f32 rounding error grows with, also where the terms
    /// cancel to 0 (softmax's gradients sum to 0).
    pub fn vjp(&self, vals: &[H], g_out: &[f64], leaves: &[usize], abs: bool) -> Vec<Vec<f64>> {
        self.vjp_scaled(vals, g_out, leaves, abs.then_some(1.0))
    }

    /// [`Tape::vjp`]; in abs mode (`Some(scale)`) each derivative's own
    /// error is counted as [`DERIV_ERROR`]·(1 + |x|)·scale: a caller whose
    /// tolerance is rtol·Σ|terms| passes 1/rtol, so that this error is
    /// allowed absolutely rather than relatively.
    pub fn vjp_scaled(
        &self,
        vals: &[H],
        g_out: &[f64],
        leaves: &[usize],
        abs_scale: Option<f64>,
    ) -> Vec<Vec<f64>> {
        let abs = abs_scale.is_some();
        let a = |x: f64| if abs { x.abs() } else { x };
        let mut g: Vec<Vec<f64>> = vals.iter().map(|h| vec![0.0; h.v.len()]).collect();
        if let Some(last) = g.last_mut() {
            *last = g_out.iter().map(|&x| a(x)).collect();
        }
        for i in (0..self.nodes.len()).rev() {
            let gi = g[i].clone();
            let out = &vals[i];
            match &self.nodes[i] {
                Node::Leaf => {}
                Node::Unary(x, _, df) => {
                    for (e, &ge) in gi.iter().enumerate() {
                        let d = df(vals[*x].v[e], out.v[e]);
                        // f32 transcendentals lose absolute accuracy in
                        // proportion to the argument (range reduction).
                        let floor =
                            DERIV_ERROR * (1.0 + vals[*x].v[e].abs()) * abs_scale.unwrap_or(0.0);
                        g[*x][e] += ge * if abs { d.abs() + floor } else { d };
                    }
                }
                Node::Binary(pa, pb, op) => {
                    let (ha, hb) = (&vals[*pa], &vals[*pb]);
                    for (e, &ge) in gi.iter().enumerate() {
                        let ib = bidx(&hb.shape, &out.shape, e);
                        let (x, y) = (ha.v[e], hb.v[ib]);
                        let (da, db) = match op {
                            Bin::Add => (1.0, 1.0),
                            Bin::Sub => (1.0, -1.0),
                            Bin::Mul => (y, x),
                            Bin::Div => (1.0 / y, -x / (y * y)),
                        };
                        g[*pa][e] += ge * a(da);
                        g[*pb][ib] += ge * a(db);
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
                    for (e, &xe) in hx.v.iter().enumerate() {
                        let (o, n) = group(e);
                        let w = match kind {
                            Red::Sum => 1.0,
                            Red::Mean => 1.0 / n as f64,
                            Red::Max if !taken[o] && xe == out.v[o] => {
                                taken[o] = true;
                                1.0
                            }
                            Red::Max => 0.0,
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
            }
        }
        leaves.iter().map(|&l| g[l].clone()).collect()
    }
}
