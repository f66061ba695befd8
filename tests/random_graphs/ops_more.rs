//! The op codes past `ops.rs`'s: shape ops (squeeze, unsqueeze, flatten,
//! transpose, stack, pad), reductions that drop their axis, `pow` with a
//! tensor exponent, pooling and convolutions with stride, padding,
//! dilation, groups and channels. Each builds the device value and its
//! tape node together; pooling and convolutions through the index maps of
//! `taps.rs`, built here from the ops' definitions.

use pullback::ConvOptions;

use crate::common::ok;
use crate::ops::reduce;
use crate::tape::{Bin, Node, Red};
use crate::{Both, Step};

/// Op codes handled here, from `FIRST`.
pub const FIRST: u8 = 47;
pub const COUNT: u8 = 9;

/// The conv1d weight leaf `[r, in_per_group(r), 3]` (channels are the
/// region's rows): dense for r <= 7, 11 groups of 3 for r = 33, depthwise
/// past that (a dense 257-channel conv is too slow for the f64 tape).
pub fn in_per_group(r: usize) -> usize {
    match r {
        0..=7 => r,
        33 => 3,
        _ => 1,
    }
}

/// Output length of a convolution along one axis.
fn out_len(n: usize, k: usize, o: &ConvOptions) -> usize {
    (n + 2 * o.padding - o.dilation * (k - 1) - 1) / o.stride + 1
}

/// Input position of tap `t` at output position `j`, if inside.
fn at(j: usize, t: usize, n: usize, o: &ConvOptions) -> Option<usize> {
    let p = (j * o.stride + t * o.dilation).checked_sub(o.padding)?;
    (p < n).then_some(p)
}

/// Appends op `st.op` (at least [`FIRST`]) on region value `a`.
pub(crate) fn step(
    g: &mut Both,
    st: &Step,
    region: &[usize],
    leaves: &[usize],
) -> (usize, &'static str) {
    let a = region[st.a % region.len()];
    let b = region[st.b % region.len()];
    let (r, c) = (g.exact[a].shape[0], g.exact[a].shape[1]);
    let ta = g.t(a).clone();
    match st.op - FIRST {
        0 => {
            // unsqueeze → flatten → unsqueeze → squeeze → reshape, each
            // value checked.
            let axis = st.k % 3;
            let mut s3 = vec![r, c];
            s3.insert(axis, 1);
            let u = g.push(ta.unsqueeze(axis), Node::Reshape(a, s3));
            let f = g.push(g.t(u).flatten(0, 2), Node::Reshape(u, vec![r * c]));
            let ax = st.b % 2;
            let s2 = if ax == 0 {
                vec![1, r * c]
            } else {
                vec![r * c, 1]
            };
            let q = g.push(g.t(f).unsqueeze(ax), Node::Reshape(f, s2));
            let s = g.push(g.t(q).squeeze(ax), Node::Reshape(q, vec![r * c]));
            let t = g.t(s).reshape(&[r, c]);
            (
                g.push(t, Node::Reshape(s, vec![r, c])),
                "unsqueeze+flatten+squeeze",
            )
        }
        1 => {
            let p = g.push(ta.transpose(1, 0), Node::Transpose(a));
            let t = g.t(p).reshape(&[r, c]);
            (g.push(t, Node::Reshape(p, vec![r, c])), "transpose")
        }
        2 => {
            // A reduction that drops its axis, put back as a kept axis.
            let kind = [Red::Sum, Red::Mean, Red::Max, Red::Min, Red::Var][st.b % 5];
            let axis = st.k % 2;
            let dropped = reduce(&ta, kind, axis, false);
            let kept = if axis == 0 { [1, c] } else { [r, 1] };
            let d = ok(dropped);
            assert_eq!(d.shape(), &[[c], [r]][axis], "{kind:?} over axis {axis}");
            let t = d.reshape(&kept);
            let red = g.push(t, Node::Reduce(a, Some(axis), kind));
            (g.times(a, red), "reduction dropping its axis")
        }
        3 => {
            // stack(a, b) along a new axis, summed over it: a + b.
            let axis = st.k % 3;
            let t = pullback::stack(&[&ta, g.t(b)], axis).and_then(|s| s.sum(&[axis], false));
            (g.push(t, Node::Binary(a, b, Bin::Add)), "stack")
        }
        4 => {
            // A positive base to a bounded exponent (2·tanh of any operand).
            let b_any = [b, leaves[2], leaves[3], leaves[4]][st.k];
            let p = g.positive(a);
            let th = g.unary(g.t(b_any).tanh(), b_any, f64::tanh, |_, y| 1.0 - y * y);
            let e = g.exact_unary(g.t(th).mul_scalar(2.0), th, |x| 2.0 * x, |_, _| 2.0);
            (g.binary(p, e, Bin::Pow), "pow (tensor exponent)")
        }
        5 => pad_then_narrow(g, st, a, r, c),
        6 => pool(g, st, a, r, c),
        7 => conv1d(g, st, a, leaves[7], r, c),
        _ => conv2d(g, st, a, leaves[6], r, c),
    }
}

/// pad by up to 2 on each side with 0 or 0.5, then narrow back to [r, c]
/// at an offset: each of the two values checked.
fn pad_then_narrow(g: &mut Both, st: &Step, a: usize, r: usize, c: usize) -> (usize, &'static str) {
    let pads = [
        (st.b % 3, (st.b / 3) % 3),
        ((st.b / 9) % 3, (st.b / 27) % 3),
    ];
    let fill = [0.0, 0.5][st.k % 2];
    let (pr, pc) = (r + pads[0].0 + pads[0].1, c + pads[1].0 + pads[1].1);
    let src: Vec<Option<usize>> = (0..pr * pc)
        .map(|e| {
            let i = (e / pc).checked_sub(pads[0].0).filter(|&i| i < r)?;
            let j = (e % pc).checked_sub(pads[1].0).filter(|&j| j < c)?;
            Some(i * c + j)
        })
        .collect();
    let t = g.t(a).pad(&pads, fill as f32);
    let p = g.push(t, Node::Gather(a, src, fill, vec![pr, pc]));
    let (o0, o1) = ((st.b / 81) % (pr - r + 1), (st.b / 243) % (pc - c + 1));
    let src: Vec<Option<usize>> = (0..r * c)
        .map(|e| Some((e / c + o0) * pc + e % c + o1))
        .collect();
    let t = g.t(p).narrow(0, o0, r).and_then(|x| x.narrow(1, o1, c));
    (
        g.push(t, Node::Gather(p, src, 0.0, vec![r, c])),
        "pad+narrow",
    )
}

/// max_pool2d or avg_pool2d of [1, 1, r, c] (kernel up to 3, stride 1 or
/// 2), checked, then summed and multiplied back into the region.
fn pool(g: &mut Both, st: &Step, a: usize, r: usize, c: usize) -> (usize, &'static str) {
    let k = (1 + st.b % 3).min(r).min(c);
    let s = 1 + (st.b / 3) % 2;
    let max = st.k.is_multiple_of(2);
    let (pr, pc) = ((r - k) / s + 1, (c - k) / s + 1);
    let windows: Vec<Vec<usize>> = (0..pr * pc)
        .map(|e| {
            let (i, j) = (e / pc * s, e % pc * s);
            (0..k * k).map(|t| (i + t / k) * c + j + t % k).collect()
        })
        .collect();
    let x4 = g.t(a).reshape(&[1, 1, r, c]);
    let t = x4
        .and_then(|x| {
            if max {
                x.max_pool2d(k, s)
            } else {
                x.avg_pool2d(k, s)
            }
        })
        .and_then(|y| y.reshape(&[pr, pc]));
    let p = g.push(t, Node::Pool(a, windows, max, vec![pr, pc]));
    let all = g.push(g.t(p).sum_all(), Node::Reduce(p, None, Red::Sum));
    (
        g.times(a, all),
        ["avg_pool2d", "max_pool2d"][usize::from(max)],
    )
}

/// Back into the region: the value itself when it is [r, c], else its sum
/// times the region value `a`.
fn into_region(g: &mut Both, a: usize, y: usize, r: usize, c: usize) -> usize {
    if g.exact[y].shape == [r, c] {
        return y;
    }
    let all = g.push(g.t(y).sum_all(), Node::Reduce(y, None, Red::Sum));
    g.times(a, all)
}

/// conv1d of the region as [1, r, c] (r channels of length c) with the
/// weight leaf [r, r/groups, 3]: stride, dilation and padding drawn.
fn conv1d(
    g: &mut Both,
    st: &Step,
    a: usize,
    w: usize,
    r: usize,
    c: usize,
) -> (usize, &'static str) {
    let per = in_per_group(r);
    let dilation = 1 + st.b % 2;
    let o = ConvOptions {
        stride: 1 + (st.b / 2) % 2,
        dilation,
        // Enough that the window fits a length-1 row.
        padding: dilation + st.k % 2,
        groups: r / per,
    };
    let l = out_len(c, 3, &o);
    let taps: Vec<Vec<(usize, usize)>> = (0..r * l)
        .map(|e| {
            let (ch, j) = (e / l, e % l);
            let first = ch / per * per; // the group's first input channel
            (0..per * 3)
                .filter_map(|q| {
                    let (cc, t) = (q / 3, q % 3);
                    let p = at(j, t, c, &o)?;
                    Some(((first + cc) * c + p, (ch * per + cc) * 3 + t))
                })
                .collect()
        })
        .collect();
    let t = (g.t(a).reshape(&[1, r, c]))
        .and_then(|x| x.conv1d(g.t(w), o))
        .and_then(|y| y.reshape(&[r, l]));
    let y = g.push(t, Node::Taps(a, w, taps, vec![r, l]));
    (
        into_region(g, a, y, r, c),
        "conv1d (stride, dilation, groups)",
    )
}

/// conv2d of the region as [1, 1, r, c] with the 3×3 weight leaf: stride 1
/// or 2, dilation 1 or 2, padding the dilation (so a 1-wide image fits).
fn conv2d(
    g: &mut Both,
    st: &Step,
    a: usize,
    w: usize,
    r: usize,
    c: usize,
) -> (usize, &'static str) {
    let dilation = 1 + st.b % 2;
    let o = ConvOptions {
        stride: 1 + (st.b / 2) % 2,
        dilation,
        padding: dilation,
        groups: 1,
    };
    let (h, wd) = (out_len(r, 3, &o), out_len(c, 3, &o));
    let taps: Vec<Vec<(usize, usize)>> = (0..h * wd)
        .map(|e| {
            (0..9)
                .filter_map(|t| {
                    let i = at(e / wd, t / 3, r, &o)?;
                    let j = at(e % wd, t % 3, c, &o)?;
                    Some((i * c + j, t))
                })
                .collect()
        })
        .collect();
    let t = (g.t(a).reshape(&[1, 1, r, c]))
        .and_then(|x| x.conv2d(&g.t(w).reshape(&[1, 1, 3, 3])?, o))
        .and_then(|y| y.reshape(&[h, wd]));
    let y = g.push(t, Node::Taps(a, w, taps, vec![h, wd]));
    (into_region(g, a, y, r, c), "conv2d (stride, dilation)")
}
