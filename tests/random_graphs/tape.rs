//! The float64 reference: a tape of the ops the random programs use, each
//! evaluated forward and reversed on the host. Test-only code; never an
//! execution path of the engine.
//!
//! Region values are `[r, c]`; binary operands broadcast from `[]`, `[c]`,
//! `[r, 1]` or `[1, c]`. Every op works on whatever values it is handed, so
//! the same tape evaluates the exact f64 program and, op by op, the
//! device's own f32 values (see `main.rs`).

use crate::taps;

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
    Max,
    Min,
    /// x^y (a positive base).
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Red {
    Sum,
    Mean,
    Max,
    Min,
    /// Population variance.
    Var,
}

/// A comparison: a 0/1 mask, no gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
}

impl Cmp {
    pub fn holds(self, x: f64, y: f64) -> bool {
        match self {
            Cmp::Gt => x > y,
            Cmp::Lt => x < y,
            Cmp::Ge => x >= y,
            Cmp::Le => x <= y,
            Cmp::Eq => x == y,
        }
    }
}

/// How a unary op's derivative is computed on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deriv {
    /// Through exp, sin, tanh…: accurate to about DERIV_ERROR·(1 + |x|).
    Transcendental,
    /// In a few exact roundings: no absolute floor.
    Exact,
}

impl Deriv {
    /// The absolute floor's factor: 1 for a transcendental derivative.
    pub fn floor(self) -> f64 {
        match self {
            Deriv::Transcendental => 1.0,
            Deriv::Exact => 0.0,
        }
    }
}

/// How a value was made. Reductions over `Some(axis)` keep the axis;
/// `None` reduces everything to `[]`. Row-wise ops work along axis 1.
#[derive(Clone, Debug)]
pub enum Node {
    Leaf,
    /// y = f(x); f'(x, y); whether f' is computed by a transcendental
    /// function on the device (its absolute error grows with |x|), or
    /// exactly (neg, square, scalings, relu, abs, leaky_relu, clamp).
    Unary(usize, fn(f64) -> f64, fn(f64, f64) -> f64, Deriv),
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
    /// 1 where a > b, else 0 (no gradient).
    Cmp(usize, usize, Cmp),
    /// cond, on_true, on_false (all `[r, c]`).
    Where(usize, usize, usize),
    Cumsum(usize, usize),
    /// x `[r, c]` ⋆ w `[3, 3]`, zero padding 1 (conv2d of one image, one channel).
    Conv(usize, usize),
    /// (x − mean)/√(var + LN_EPS) over axis 1.
    LayerNorm(usize),
    /// y[e] = x[src[e]], or the fill value where src[e] is None (pad,
    /// narrow); the output shape. See `taps.rs` for these three.
    Gather(usize, Vec<Option<usize>>, f64, Vec<usize>),
    /// The maximum (true) or mean of x over each window of flat indices
    /// (max_pool2d, avg_pool2d); the output shape.
    Pool(usize, Vec<Vec<usize>>, bool, Vec<usize>),
    /// y[e] = Σ x[i]·w[k] over the (i, k) taps of e (conv1d, conv2d with
    /// stride, padding, dilation, groups); the output shape.
    Taps(usize, usize, Vec<Vec<(usize, usize)>>, Vec<usize>),
}

/// layer_norm's eps in the programs.
pub const LN_EPS: f64 = 1e-5;

/// Mean and σ = √(var + LN_EPS) of a row.
pub fn moments(row: &[f64]) -> (f64, f64) {
    let n = row.len() as f64;
    let m = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, (var + LN_EPS).sqrt())
}

/// The taps of the 3×3 convolution at output element e of `[r, c]`:
/// (input index, weight index) pairs inside the image.
pub fn conv_taps(r: usize, c: usize, e: usize) -> impl Iterator<Item = (usize, usize)> {
    let (i, j) = (e / c, e % c);
    (0..9isize).filter_map(move |t| {
        let (a, b) = (i as isize + t / 3 - 1, j as isize + t % 3 - 1);
        let inside = a >= 0 && b >= 0 && a < r as isize && b < c as isize;
        inside.then(|| (a as usize * c + b as usize, t as usize))
    })
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

/// ∂(x op y)/∂x and ∂(x op y)/∂y; maximum and minimum give all to the
/// winner and split a tie (pullback's convention).
pub fn bin_partials(op: Bin, x: f64, y: f64) -> (f64, f64) {
    match op {
        Bin::Add => (1.0, 1.0),
        Bin::Sub => (1.0, -1.0),
        Bin::Mul => (y, x),
        Bin::Div => (1.0 / y, -x / (y * y)),
        Bin::Pow => (y * x.powf(y - 1.0), x.powf(y) * x.ln()),
        Bin::Max | Bin::Min if x == y => (0.5, 0.5),
        Bin::Max => (f64::from(u8::from(x > y)), f64::from(u8::from(y > x))),
        Bin::Min => (f64::from(u8::from(x < y)), f64::from(u8::from(y < x))),
    }
}

/// The absolute error of the y-partial of `bin_partials` as the device
/// computes it: ∂(x^y)/∂y = x^y·ln x, with ln x accurate only absolutely
/// (near x = 1 it is small and its error is not), about
/// DERIV_ERROR·x^y. Exact for the other ops. Counted in the sweeps over
/// absolute values, as a unary op's derivative error is.
pub fn bin_floor(op: Bin, x: f64, y: f64) -> f64 {
    match op {
        Bin::Pow => crate::reverse::DERIV_ERROR * x.powf(y).abs(),
        _ => 0.0,
    }
}

/// Rows of a `[r, c]` value.
pub fn rows(h: &H) -> impl Iterator<Item = &[f64]> {
    h.v.chunks(h.shape[1].max(1))
}

/// log Σ exp of one row, shifted by its maximum.
pub fn lse(row: &[f64]) -> f64 {
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
            node @ (Node::Gather(..) | Node::Pool(..) | Node::Taps(..)) => {
                taps::eval(node, vals).expect("a map node")
            }
            Node::Unary(x, f, ..) => (h(*x).shape.clone(), h(*x).v.iter().map(|&e| f(e)).collect()),
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
                            Bin::Max => x.max(z),
                            Bin::Min => x.min(z),
                            Bin::Pow => x.powf(z),
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
                            Red::Min => it.fold(f64::MAX, f64::min),
                            Red::Var => {
                                let v: Vec<f64> = it.collect();
                                let m = v.iter().sum::<f64>() / v.len() as f64;
                                v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64
                            }
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
            Node::Cmp(a, b, cmp) => {
                let v = h(*a).v.iter().zip(&h(*b).v);
                let v = v
                    .map(|(&x, &y)| f64::from(u8::from(cmp.holds(x, y))))
                    .collect();
                (h(*a).shape.clone(), v)
            }
            Node::Where(cond, t, f) => {
                let pick = |e: usize| {
                    if h(*cond).v[e] != 0.0 {
                        h(*t).v[e]
                    } else {
                        h(*f).v[e]
                    }
                };
                (h(*t).shape.clone(), (0..h(*t).v.len()).map(pick).collect())
            }
            Node::Cumsum(x, axis) => {
                let hx = h(*x);
                let (r, c) = (hx.shape[0], hx.shape[1]);
                let mut v = hx.v.clone();
                for e in 0..r * c {
                    let prev = if *axis == 0 {
                        e.checked_sub(c)
                    } else {
                        (e % c > 0).then(|| e - 1)
                    };
                    if let Some(p) = prev {
                        v[e] += v[p];
                    }
                }
                (hx.shape.clone(), v)
            }
            Node::Conv(x, w) => {
                let hx = h(*x);
                let (r, c) = (hx.shape[0], hx.shape[1]);
                let v = (0..r * c)
                    .map(|e| {
                        conv_taps(r, c, e)
                            .map(|(xi, t)| hx.v[xi] * h(*w).v[t])
                            .sum()
                    })
                    .collect();
                (hx.shape.clone(), v)
            }
            Node::LayerNorm(x) => {
                let v = rows(h(*x))
                    .flat_map(|row| {
                        let (m, s) = moments(row);
                        row.iter().map(move |e| (e - m) / s)
                    })
                    .collect();
                (h(*x).shape.clone(), v)
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
            Node::Unary(x, _, df, _) => (0..mag.len())
                .map(|e| {
                    let xe = vals[*x].v[e];
                    mag[e] + (xe * df(xe, out.v[e])).abs()
                })
                .collect(),
            Node::Binary(a, b, Bin::Add | Bin::Sub) => {
                self.eval_with(Node::Binary(0, 1, Bin::Add), &[abs(*a), abs(*b)])
                    .v
            }
            // exp2(y·log2 x): log2 x rounded, then scaled by y·ln 2 in exp2.
            Node::Binary(a, b, Bin::Pow) => (0..mag.len())
                .map(|e| {
                    let (x, y) = (
                        vals[*a].v[e],
                        vals[*b].v[bidx(&vals[*b].shape, &out.shape, e)],
                    );
                    mag[e] * (1.0 + (y * x.ln()).abs())
                })
                .collect(),
            Node::Matmul(x, w) => {
                let v = [abs(*x), abs(*w)];
                self.eval_with(Node::Matmul(0, 1), &v).v
            }
            Node::Reduce(x, axis, Red::Sum | Red::Mean) => {
                let v = [abs(*x)];
                self.eval_with(Node::Reduce(0, *axis, Red::Sum), &v).v
            }
            // Σ(x − m)²/n with m rounded: x² terms.
            Node::Reduce(x, axis, Red::Var) => {
                let sq = H {
                    shape: vals[*x].shape.clone(),
                    v: vals[*x].v.iter().map(|e| e * e).collect(),
                };
                self.eval_with(Node::Reduce(0, *axis, Red::Mean), &[sq]).v
            }
            Node::Cumsum(x, axis) => self.eval_with(Node::Cumsum(0, *axis), &[abs(*x)]).v,
            Node::Conv(x, w) => self.eval_with(Node::Conv(0, 1), &[abs(*x), abs(*w)]).v,
            // (x − m)/σ: x − m cancels to the size of |x| + |m|, over σ.
            Node::LayerNorm(x) => {
                let c = vals[*x].shape[1];
                let t = rows(&vals[*x]).flat_map(|row| {
                    let (m, s) = moments(row);
                    let big = row.iter().fold(0.0f64, |a, e| a.max(e.abs()));
                    (0..c).map(move |_| (big + m.abs()) / s)
                });
                t.zip(&mag).map(|(t, m)| t + m).collect()
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
            node @ (Node::Pool(..) | Node::Taps(..)) => taps::terms(node, vals, mag),
            _ => mag,
        }
    }

    /// Evaluates a node that is not on the tape, on the values `vals`
    /// (for [`Tape::terms`], and linear ops' tangents).
    pub fn eval_with(&self, node: Node, vals: &[H]) -> H {
        let mut nodes = vec![Node::Leaf; vals.len()];
        nodes.push(node);
        Tape { nodes }.eval(vals.len(), vals)
    }
}
