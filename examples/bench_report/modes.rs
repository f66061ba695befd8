//! The report's forward-mode and second-order sections (issue 18's
//! workloads, `benches/common/modes.rs`): W7 (Hessian-vector products of
//! W4's MLP), W8 (`jvp_batched` of W2's graph), the tall Jacobian, and
//! their K sweeps.

use crate::common::modes::{TALL_M, TALL_N, Tall, W7, W7_K, W8, W8_K};
use crate::ms;
use crate::report::Report;
use pullback::{Device, JacobianMode};

/// W7, W8 and the tall Jacobian, with the ratios issue 18 sets targets for.
pub fn sections(dev: &Device, r: &mut Report) {
    r.section("W7: Hessian-vector products of W4's MLP (mean cross-entropy), K = 16");
    let w7 = W7::new(dev);
    let grad = r.add(
        "W7",
        "gradient (vjp of the loss)",
        ms(9, &|| w7.gradient()),
        "ms",
    );
    let hvp = r.add("W7", "hvp", ms(9, &|| w7.hvp()), "ms");
    r.add("W7", "hvp / gradient (target <= 4)", hvp / grad, "x");
    let batched = r.add(
        "W7",
        &format!("hvp_batched K={W7_K}"),
        ms(7, &|| w7.batched()),
        "ms",
    );
    let looped = r.add(
        "W7",
        &format!("{W7_K} hvp queued + wait"),
        ms(3, &|| w7.looped()),
        "ms",
    );
    r.add(
        "W7",
        "looped / batched (target >= 4)",
        looped / batched,
        "x",
    );

    r.section("W8: jvp of y = sin(x)*exp(x), n = 2^16, K = 64");
    let w8 = W8::new(dev);
    let batched = r.add(
        "W8",
        &format!("jvp_batched K={W8_K} + wait"),
        ms(9, &|| w8.batched()),
        "ms",
    );
    let looped = r.add(
        "W8",
        &format!("{W8_K} jvp queued + wait"),
        ms(5, &|| w8.looped()),
        "ms",
    );
    r.add(
        "W8",
        "looped / batched (target >= 4)",
        looped / batched,
        "x",
    );

    r.section(&format!("Tall Jacobian: tanh(W·x), W [{TALL_M}, {TALL_N}]"));
    let tall = Tall::new(dev);
    let auto = r.add(
        "tall",
        "JacobianMode::Auto (forward)",
        ms(9, &|| tall.jacobian(JacobianMode::Auto)),
        "ms",
    );
    let reverse = r.add(
        "tall",
        "JacobianMode::Reverse",
        ms(3, &|| tall.jacobian(JacobianMode::Reverse)),
        "ms",
    );
    r.add("tall", "Reverse / Auto (target >= 4)", reverse / auto, "x");
}

/// ms per direction: W7's `hvp_batched` at K = 1, 4, 16, 64 against one
/// `hvp` (timed over 4 calls), W8's `jvp_batched` at K = 1 … 256 against
/// one `jvp` (timed over at most 16 calls). Returns the sweep's series.
pub fn k_sweep(dev: &Device, r: &mut Report) -> Vec<(String, Vec<(usize, f64)>)> {
    let (mut w7b, mut w7l, mut w8b, mut w8l) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let single = W7::with_k(dev, 4);
    let w7_per = ms(3, &|| single.looped()) / 4.0;
    for k in [1usize, 4, 16, 64] {
        let w = W7::with_k(dev, k);
        let b = ms(3, &|| w.batched()) / k as f64;
        r.add(
            "sweep",
            &format!("W7 K={k}: hvp_batched, per direction"),
            b,
            "ms",
        );
        r.add(
            "sweep",
            &format!("W7 K={k}: looped hvp, per direction"),
            w7_per,
            "ms",
        );
        w7b.push((k, b));
        w7l.push((k, w7_per));
    }
    for k in [1usize, 4, 16, 64, 256] {
        let w = W8::with_k(dev, k);
        let b = ms(5, &|| w.batched()) / k as f64;
        let small = W8::with_k(dev, k.min(16));
        let per = ms(3, &|| small.looped()) / k.min(16) as f64;
        r.add(
            "sweep",
            &format!("W8 K={k}: jvp_batched, per tangent"),
            b,
            "ms",
        );
        r.add(
            "sweep",
            &format!("W8 K={k}: looped jvp, per tangent"),
            per,
            "ms",
        );
        w8b.push((k, b));
        w8l.push((k, per));
    }
    vec![
        ("W7 hvp_batched".into(), w7b),
        ("W7 looped".into(), w7l),
        ("W8 jvp_batched".into(), w8b),
        ("W8 looped".into(), w8l),
    ]
}
