//! Forward mode and second order of each random program: the device's
//! `jvp_batched` of the output along K random tangents of the inputs, and
//! its `hvp_batched` of ⟨v, output⟩ along the same K directions, against
//! the float64 tape's tangent sweep (`tangent.rs`) and second-order sweep
//! (`second.rs`) taken at the device's forward values, as the gradients
//! are. Tolerances as for gradients: GTOL·(|want| + Σ|terms|), the terms
//! being the same sweeps over absolute values. Through the custom op
//! (which declares a tangent but is not linear) the HVP must be refused
//! with `Error::MissingRule`.

use common::*;
use pullback::Tensor;
use rand::rngs::StdRng;

use crate::tape::H;
use crate::{Both, GTOL, Program, common, compare};

/// H·v elements may also differ by this much of their input's largest
/// |H·v| + Σ|terms| (see where it is used).
const HSCALE: f64 = 1e-6;

/// The worst JVP and HVP errors of one program, as fractions of their
/// tolerances; Err names what differs.
pub(crate) fn check(
    p: &Program,
    g: &Both,
    leaves: &[usize],
    device: &[H],
    ops: &[&str],
    rs: &mut StdRng,
) -> Result<(f64, f64), String> {
    let dev = common::dev();
    let out = g.exact.len() - 1;
    let what = |w: String| format!("{w}; [{}, {}], K = {}, ops {ops:?}", p.r, p.c, p.k);
    // K tangent rows per input, [K, *shape], and each row per input.
    let mut rows: Vec<Vec<Vec<f64>>> = vec![Vec::new(); p.k];
    let mut tangents: Vec<Tensor> = Vec::new();
    for &l in leaves {
        let shape = &g.exact[l].shape;
        let n: usize = shape.iter().product();
        let data = sample(rs, p.k * n, Dist::Uniform(-1.0, 1.0));
        for (k, row) in rows.iter_mut().enumerate() {
            row.push(to_f64(&data[k * n..(k + 1) * n]));
        }
        tangents.push(ok(dev.tensor(&data, &[&[p.k][..], shape].concat())));
    }
    let inputs: Vec<&Tensor> = leaves.iter().map(|&l| g.t(l)).collect();
    let trefs: Vec<&Tensor> = tangents.iter().collect();
    let jvp = ok(pullback::jvp_batched(&[g.t(out)], &inputs, &trefs));
    assert_eq!(jvp.len(), 1, "one tangent per output");
    let got = to_f64(&read(&jvp[0]));
    let n = g.exact[out].v.len();
    assert_eq!(jvp[0].shape(), &[&[p.k][..], &g.exact[out].shape].concat());
    let mut worst = (0.0f64, 0.0f64);
    // The first and last rows (the f64 sweeps cost a pass or a few per
    // row; batched == loop is tests/forward_mode.rs's and
    // tests/second_order.rs's): every node's tangent, exact and over
    // absolute values.
    let mut checked = vec![0, p.k - 1];
    checked.dedup();
    let mut sweeps = Vec::with_capacity(2);
    for &k in &checked {
        let row = &rows[k];
        let want = g.tape.jvp_scaled(device, leaves, row, None);
        let terms = g.tape.jvp_scaled(device, leaves, row, Some(1.0 / GTOL));
        let w = compare(&got[k * n..(k + 1) * n], &want[out], |e| {
            GTOL * (want[out][e].abs() + terms[out][e])
        })
        .map_err(|e| what(format!("tangent row {k} of the output, {e}")))?;
        worst.0 = worst.0.max(w);
        sweeps.push((want, terms));
    }

    // H·t of ⟨v, output⟩, v a constant.
    let v = sample(rs, n, Dist::Uniform(-1.0, 1.0));
    let vt = ok(dev.tensor(&v, &g.exact[out].shape));
    let loss = ok(ok(g.t(out).mul(&vt)).sum_all());
    // Through the custom op (a tangent rule, no curvature) the HVP must be
    // refused; where the op is not on a path to the output, computed.
    let hv = match pullback::hvp_batched(&loss, &inputs, &trefs) {
        Err(pullback::Error::MissingRule { .. }) if ops.iter().any(|o| o.starts_with("custom")) => {
            return Ok(worst);
        }
        other => ok(other),
    };
    assert_eq!(hv.len(), inputs.len(), "one H·v per input");
    let got: Vec<Vec<f64>> = hv.iter().map(|h| to_f64(&read(h))).collect();
    let all: Vec<usize> = (0..=out).collect();
    let v = to_f64(&v);
    let ybar = g.tape.vjp(device, &v, &all);
    let ybar_abs = g.tape.vjp_scaled(device, &v, &all, Some(1.0 / GTOL));
    for (&k, (t, t_abs)) in checked.iter().zip(&sweeps) {
        let want = g.tape.hvp_scaled(device, &ybar, t, leaves, None);
        let terms = g
            .tape
            .hvp_scaled(device, &ybar_abs, t_abs, leaves, Some(1.0 / GTOL));
        for (li, gr) in got.iter().enumerate() {
            let m = want[li].len();
            let shape = [&[p.k][..], &g.exact[leaves[li]].shape].concat();
            assert_eq!(hv[li].shape(), &shape[..]);
            // Per element as for gradients, and HSCALE of the input's
            // largest scale: the curvature terms' bound over absolute
            // values is not one where a rule's second derivatives cancel
            // (softmax's), so a tiny element may carry its neighbours'
            // rounding.
            let scale =
                (want[li].iter().zip(&terms[li])).fold(0.0f64, |s, (w, t)| s.max(w.abs() + t));
            let w = compare(&gr[k * m..(k + 1) * m], &want[li], |e| {
                GTOL * (want[li][e].abs() + terms[li][e]) + HSCALE * scale
            })
            .map_err(|e| what(format!("H·v row {k} of input {li}, {e}")))?;
            worst.1 = worst.1.max(w);
        }
    }
    Ok(worst)
}
