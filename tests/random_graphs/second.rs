//! Second order on the float64 tape: H·t of ⟨v, last node⟩ by forward over
//! reverse, as the engine does it, but written independently: the reverse
//! sweep of the adjoints' tangents applies each node's own reverse rule
//! (`reverse.rs`) to the incoming adjoint tangent (the rule is linear in
//! its cotangent), and adds the rule's derivative along the tangents of the
//! values it reads, with its cotangent held at the node's adjoint ȳ: the
//! curvature term. That derivative is a central difference of the rule in
//! f64 (step 1e-7 of the values' size), so no op's second derivative is
//! written twice; where a forward and a backward difference disagree, a
//! kink lies within the step (relu at 0, a tie of maximum) and the
//! one-sided difference of smaller size is the side the f32 values took.

use crate::reverse::DERIV_ERROR;
use crate::tape::{H, Node, Tape};

/// The values a node's rule reads: its inputs.
fn inputs(node: &Node) -> Vec<usize> {
    let mut v = match node {
        Node::Leaf | Node::Cmp(..) => vec![],
        Node::Unary(x, ..)
        | Node::Reduce(x, ..)
        | Node::Softmax(x)
        | Node::LogSoftmax(x)
        | Node::LogSumExp(x)
        | Node::Transpose(x)
        | Node::Reshape(x, _)
        | Node::Broadcast(x, _)
        | Node::Index(x, ..)
        | Node::CrossEntropy(x, _)
        | Node::Cumsum(x, _)
        | Node::LayerNorm(x)
        | Node::Gather(x, ..)
        | Node::Pool(x, ..) => vec![*x],
        Node::Binary(a, b, _)
        | Node::Matmul(a, b)
        | Node::Concat(a, b, _)
        | Node::Conv(a, b)
        | Node::Taps(a, b, ..) => vec![*a, *b],
        Node::Where(c, t, f) => vec![*c, *t, *f],
    };
    v.sort_unstable();
    v.dedup();
    v
}

impl Tape {
    /// H·t at the values `vals`, given every node's adjoint `ybar` (the
    /// reverse pass of ⟨v, last node⟩) and tangent `t` (the forward pass
    /// along t); returns the adjoint tangents of the nodes `leaves`. With
    /// `Some(scale)`, `ybar` and `t` being their sweeps over absolute
    /// values: the same sweep over absolute values, each unary second
    /// derivative's own error counted as DERIV_ERROR·(1 + |x|)·scale.
    pub fn hvp_scaled(
        &self,
        vals: &[H],
        ybar: &[Vec<f64>],
        t: &[Vec<f64>],
        leaves: &[usize],
        abs_scale: Option<f64>,
    ) -> Vec<Vec<f64>> {
        let abs = abs_scale.is_some();
        let mut dot: Vec<Vec<f64>> = vals.iter().map(|h| vec![0.0; h.v.len()]).collect();
        for i in (0..self.nodes.len()).rev() {
            let di = dot[i].clone();
            self.node_vjp(i, vals, &di, &mut dot, abs_scale);
            for (x, c) in self.curvature(i, vals, &ybar[i], t) {
                for (e, c) in c.into_iter().enumerate() {
                    dot[x][e] += if abs { c.abs() } else { c };
                }
            }
            if let (Some(scale), Node::Unary(x, _, _, deriv)) = (abs_scale, &self.nodes[i]) {
                for (e, &g) in ybar[i].iter().enumerate() {
                    let xe = vals[*x].v[e];
                    let floor = deriv.floor() * DERIV_ERROR * (1.0 + xe.abs()) * scale;
                    dot[*x][e] += g.abs() * t[*x][e].abs() * floor;
                }
            }
        }
        leaves.iter().map(|&l| dot[l].clone()).collect()
    }

    /// Node i's curvature term: the derivative of its reverse rule, with
    /// cotangent `gi`, along the tangents of the values it reads; per input.
    fn curvature(
        &self,
        i: usize,
        vals: &[H],
        gi: &[f64],
        t: &[Vec<f64>],
    ) -> Vec<(usize, Vec<f64>)> {
        let ins = inputs(&self.nodes[i]);
        let read: Vec<usize> = ins.iter().copied().chain([i]).collect();
        let max = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let tmax = read.iter().map(|&j| max(&t[j])).fold(0.0, f64::max);
        if ins.is_empty() || tmax == 0.0 || gi.iter().all(|&g| g == 0.0) {
            return vec![];
        }
        let vmax = read.iter().map(|&j| max(&vals[j].v)).fold(1.0, f64::max);
        let h = 1e-7 * vmax / tmax;
        let rule = |sign: f64| -> Vec<Vec<f64>> {
            let mut at: Vec<H> = vals
                .iter()
                .map(|v| H {
                    shape: v.shape.clone(),
                    v: vec![],
                })
                .collect();
            for &j in &read {
                at[j].v = (vals[j].v.iter().zip(&t[j]))
                    .map(|(v, d)| v + sign * h * d)
                    .collect();
            }
            let mut g: Vec<Vec<f64>> = vals.iter().map(|_| vec![]).collect();
            for &j in &ins {
                g[j] = vec![0.0; vals[j].v.len()];
            }
            self.node_vjp(i, &at, gi, &mut g, None);
            g
        };
        let (plus, zero, minus) = (rule(1.0), rule(0.0), rule(-1.0));
        ins.iter()
            .map(|&j| {
                let c = (0..vals[j].v.len())
                    .map(|e| {
                        let fwd = (plus[j][e] - zero[j][e]) / h;
                        let bwd = (zero[j][e] - minus[j][e]) / h;
                        if (fwd - bwd).abs() <= 1e-2 * (fwd.abs() + bwd.abs()) {
                            (fwd + bwd) / 2.0
                        } else if fwd.abs() < bwd.abs() {
                            fwd
                        } else {
                            bwd
                        }
                    })
                    .collect();
                (j, c)
            })
            .collect()
    }
}
