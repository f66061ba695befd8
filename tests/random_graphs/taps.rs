//! The float64 tape's ops defined by index maps, each a list per output
//! element of what it reads: `Gather` (pad, narrow: an input element or a
//! fill value), `Pool` (max or mean over a window: max_pool2d, avg_pool2d)
//! and `Taps` (Σ x·w over (input, weight) pairs: conv1d and conv2d with
//! any stride, padding, dilation, groups and channels). Forward, reverse,
//! tangent and rounding-error scale of each; the maps are built from the
//! ops' definitions in `ops_more.rs`. Test-only code.

use crate::tape::{H, Node};

/// The first maximal element of a window (pullback's convention, the
/// window listed in row-major order).
fn argmax(x: &[f64], window: &[usize]) -> usize {
    let mut best = window[0];
    for &i in &window[1..] {
        if x[i] > x[best] {
            best = i;
        }
    }
    best
}

/// Node `node`'s value from the values `vals` (None: not a map node).
pub fn eval(node: &Node, vals: &[H]) -> Option<(Vec<usize>, Vec<f64>)> {
    Some(match node {
        Node::Gather(x, src, fill, shape) => {
            let v = src.iter().map(|s| s.map_or(*fill, |i| vals[*x].v[i]));
            (shape.clone(), v.collect())
        }
        Node::Pool(x, windows, max, shape) => {
            let hx = &vals[*x].v;
            let v = windows.iter().map(|w| match max {
                true => hx[argmax(hx, w)],
                false => w.iter().map(|&i| hx[i]).sum::<f64>() / w.len() as f64,
            });
            (shape.clone(), v.collect())
        }
        Node::Taps(x, w, taps, shape) => {
            let (hx, hw) = (&vals[*x].v, &vals[*w].v);
            let v = taps
                .iter()
                .map(|e| e.iter().map(|&(i, t)| hx[i] * hw[t]).sum());
            (shape.clone(), v.collect())
        }
        _ => return None,
    })
}

/// Adds the contributions of the cotangent `gi` of a map node into `g`;
/// `a` is the identity, or |·| for the sweep over absolute values.
pub fn vjp(node: &Node, vals: &[H], gi: &[f64], g: &mut [Vec<f64>], a: &dyn Fn(f64) -> f64) {
    match node {
        Node::Gather(x, src, ..) => {
            for (s, &ge) in src.iter().zip(gi) {
                if let Some(i) = s {
                    g[*x][*i] += ge;
                }
            }
        }
        Node::Pool(x, windows, max, _) => {
            for (w, &ge) in windows.iter().zip(gi) {
                if *max {
                    g[*x][argmax(&vals[*x].v, w)] += ge;
                } else {
                    for &i in w {
                        g[*x][i] += ge / w.len() as f64;
                    }
                }
            }
        }
        Node::Taps(x, w, taps, _) => {
            for (e, &ge) in taps.iter().zip(gi) {
                for &(i, t) in e {
                    g[*x][i] += ge * a(vals[*w].v[t]);
                    g[*w][t] += ge * a(vals[*x].v[i]);
                }
            }
        }
        _ => unreachable!("not a map node: {node:?}"),
    }
}

/// A map node's tangent from its inputs' tangents `t` (over absolute
/// values where `a` is |·|).
pub fn tangent(node: &Node, vals: &[H], t: &[Vec<f64>], a: &dyn Fn(f64) -> f64) -> Vec<f64> {
    match node {
        Node::Gather(x, src, ..) => src.iter().map(|s| s.map_or(0.0, |i| t[*x][i])).collect(),
        Node::Pool(x, windows, max, _) => (windows.iter())
            .map(|w| match max {
                true => t[*x][argmax(&vals[*x].v, w)],
                false => w.iter().map(|&i| t[*x][i]).sum::<f64>() / w.len() as f64,
            })
            .collect(),
        Node::Taps(x, w, taps, _) => (taps.iter())
            .map(|e| {
                (e.iter())
                    .map(|&(i, k)| t[*x][i] * a(vals[*w].v[k]) + a(vals[*x].v[i]) * t[*w][k])
                    .sum()
            })
            .collect(),
        _ => unreachable!("not a map node: {node:?}"),
    }
}

/// The size each output element's f32 rounding error scales with: Σ|terms|
/// of a mean or a convolution's sum, |value| of a gather or a maximum.
pub fn terms(node: &Node, vals: &[H], mag: Vec<f64>) -> Vec<f64> {
    match node {
        Node::Pool(x, windows, false, _) => (windows.iter())
            .map(|w| w.iter().map(|&i| vals[*x].v[i].abs()).sum::<f64>() / w.len() as f64)
            .collect(),
        Node::Taps(x, w, taps, _) => (taps.iter())
            .map(|e| {
                (e.iter())
                    .map(|&(i, k)| (vals[*x].v[i] * vals[*w].v[k]).abs())
                    .sum()
            })
            .collect(),
        _ => mag,
    }
}
