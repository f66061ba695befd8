//! The row loops of a region's kernels (`kernel.rs` writes the rest): the
//! per-element factors are computed once, then applied to each of the K
//! rows. Which rows an invocation takes is `launch.rs`'s choice
//! (ROW_BLOCK, ROWS_K); whether rows start on a vec4 (n % 4 == 0) is the
//! source's (its name says which), so each frame is compiled alone.
//!
//! Aligned rows go four at a time, all four loads issued before the
//! stores, where an invocation loops over all K rows (GPUs); one at a time
//! in a block of ROW_BLOCK rows (CPU adapters), where four at a time runs
//! no faster and costs LLVM 20 ms more at the first dispatch. W10's fused
//! adjoint on lavapipe, four → one: LLVM 56–59 → 34–35 ms; per dispatch,
//! n = 60,000, K = 64 4.1–5.1 ms either way, K = 24 1.5–1.7, K = 8 1.2 →
//! 0.75; W2 batched (n = 2^16, K = 64) 4.39–6.69 → 4.39–5.40 ms, medians
//! 4.63 both (12 interleaved runs each). Four at a time once ran 1.6× the
//! rate of one, before rows came in blocks (a K-row scaling loop).
//!
//! Unaligned rows read and write the cotangents (or tangents) as f32
//! arrays, an invocation's four elements at constant offsets; the saved
//! values stay vec4 arrays (they have one row). This replaced indexing the
//! vec4 arrays by element (`g[j / 4u][j % 4u]` in a loop over the four):
//! W10's unaligned adjoint (n = 60,001) on lavapipe compiled in 32–34
//! instead of 39–41 ms, and 30 steps of it ran in 0.64–0.66 instead of
//! 0.69–0.72 s at K = 100, 0.28 instead of 0.31–0.32 s at K = 50, the same
//! at K = 8. A kernel of one element an invocation, for every row, compiled
//! in 18 ms but ran aligned rows 1.4× slower (per-lane memory access on
//! llvmpipe favours vec4s); for unaligned rows alone it ran 3% slower.

use std::fmt::Write;

/// The adjoint's rows: the root's cotangent row `g` times each primary
/// output's factor, into that output (`accumulate[o]`: added to it).
/// `aligned`: every row starts on a vec4 (else the rows' buffers are f32
/// arrays).
pub(super) fn adjoint(w: &mut String, accumulate: &[bool], primaries: &[usize], aligned: bool) {
    let stores = |index: &str, e: &str, g: &str| -> String {
        let mut out = String::new();
        for &o in primaries {
            let at = format!("fused_o{o}[{index}]");
            let old = if accumulate[o] {
                format!("{at} + ")
            } else {
                String::new()
            };
            let _ = writeln!(out, "                {at} = {old}{g} * e{o}{e};");
        }
        out
    };
    if !aligned {
        let element = |c: usize| {
            let e = format!("[{c}]");
            format!(
                "                let g = fused_g[j];\n{}",
                stores("j", &e, "g")
            )
        };
        return unaligned_frame(w, &element);
    }
    let four = format!(
        "                let g0 = fused_g[j];
                let g1 = fused_g[j + n4];
                let g2 = fused_g[j + 2u * n4];
                let g3 = fused_g[j + 3u * n4];
{}",
        (0..4)
            .map(|r| stores(&format!("j + {r}u * n4"), "", &format!("g{r}")))
            .collect::<String>()
    );
    let one = format!(
        "                let g = fused_g[j];\n{}",
        stores("j", "", "g")
    );
    frame(w, &four, &one);
}

/// The tangent's rows: `Σ factor ⊙ ṫ[k]` into the root's tangent, for each
/// `(o, f)` of `terms`: input o's tangent rows (`fused_t{o}`) times the
/// factor of output f (o's own, or the one it shares). `aligned` as for
/// [`adjoint`].
pub(super) fn tangent(w: &mut String, terms: &[(usize, usize)], aligned: bool) {
    let sum = |index: &str, e: &str| -> String {
        let parts: Vec<String> = (terms.iter())
            .map(|(o, f)| format!("fused_t{o}[{index}] * e{f}{e}"))
            .collect();
        let zero = if e.is_empty() { "vec4(0.0)" } else { "0.0" };
        match parts.is_empty() {
            true => format!("fused_y[{index}] = {zero};"),
            false => format!("fused_y[{index}] = {};", parts.join(" + ")),
        }
    };
    if !aligned {
        let element = |c: usize| format!("                {}\n", sum("j", &format!("[{c}]")));
        return unaligned_frame(w, &element);
    }
    let four: String = (0..4)
        .map(|r| format!("                {}\n", sum(&format!("j + {r}u * n4"), "")))
        .collect();
    let one = format!("                {}\n", sum("j", ""));
    frame(w, &four, &one);
}

/// Which rows an invocation takes: all K (GPUs), the workgroup's block of
/// ROW_BLOCK rows along the grid's z, or ROWS_K, a constant trip count
/// (CPU adapters).
const ROWS: &str = "    var k = 0u;
    var rows_k = select(params.k, ROWS_K, ROWS_K != 0u);
    if (ROW_BLOCK != 0u) {
        k = wid.z * ROW_BLOCK;
        rows_k = min(k + ROW_BLOCK, params.k);
    }
";

/// The K loop around an aligned row's body: `four` for four rows from
/// vec4 `j`, `one` for one row at `j`. Closes the entry point.
fn frame(w: &mut String, four: &str, one: &str) {
    let _ = write!(
        w,
        "{ROWS}    let n4 = params.n / 4u;
    for (; ROW_BLOCK == 0u && ROWS_K == 0u && k + 4u <= rows_k; k += 4u) {{
        if (live) {{
            let j = k * n4 + t;
{four}        }}
    }}
    for (; k < rows_k; k++) {{
        if (live) {{
            let j = k * n4 + t;
{one}        }}
    }}
}}
"
    );
}

/// The K loop where rows do not start on a vec4: for each row, element
/// 4t + c's body `element(c)` at flat index `j` of the rows' f32 arrays,
/// where the row has it. Closes the entry point.
fn unaligned_frame(w: &mut String, element: &dyn Fn(usize) -> String) {
    let _ = write!(
        w,
        "{ROWS}    let has = vec4(t * 4u) + vec4(0u, 1u, 2u, 3u) < vec4(params.n);
    for (; k < rows_k; k++) {{
"
    );
    for c in 0..4 {
        let _ = write!(
            w,
            "        if (has[{c}]) {{
            let j = k * params.n + t * 4u + {c}u;
{}        }}
",
            element(c)
        );
    }
    w.push_str("    }\n}\n");
}
