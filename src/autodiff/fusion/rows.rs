//! The row loops of a region's kernels (`kernel.rs` writes the rest): the
//! per-element factors are computed once, then applied to each of the K
//! rows. One frame for both: ALIGNED is an override, so the branch not
//! taken is compiled out (taken at run time, W2's adjoint on lavapipe runs
//! 2× slower at K = 1 and 7). Which rows an invocation takes is
//! `launch.rs`'s choice (ROW_BLOCK, ROWS_K).
//!
//! Aligned rows go four at a time, all four loads issued before the
//! stores, where an invocation loops over all K rows (GPUs); one at a time
//! in a block of ROW_BLOCK rows (CPU adapters), where four at a time runs
//! no faster and costs LLVM 20 ms more at the first dispatch. W10's fused
//! adjoint on lavapipe, four → one: LLVM 56–59 → 34–35 ms; per dispatch,
//! n = 60,000, K = 64 4.1–5.1 ms either way, K = 24 1.5–1.7, K = 8 1.2 →
//! 0.75; W2 batched (n = 2^16, K = 64) 4.39–6.69 → 4.39–5.40 ms, medians
//! 4.63 both (12 interleaved runs each). Four at a time once ran 1.6× the
//! rate of one, before rows came in blocks (a K-row scaling loop). The
//! unaligned loop keeps its `continue` on `!live`: the forms that compile
//! 10 ms faster (`break` at the row's end, an early return) ran it 10–15%
//! slower (K = 64: 7.2–7.5 → 8.2–8.5 ms).

use std::fmt::Write;

/// The adjoint's rows: the root's cotangent row `g` times each primary
/// output's factor, into that output (`accumulate[o]`: added to it).
pub(super) fn adjoint(w: &mut String, accumulate: &[bool], primaries: &[usize]) {
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
    let scalar = format!(
        "                let g = fused_g[j / 4u][j % 4u];\n{}",
        stores("j / 4u][j % 4u", "[c]", "g")
    );
    frame(w, &four, &one, &scalar);
}

/// The tangent's rows: `Σ factor ⊙ ṫ[k]` into the root's tangent, for each
/// `(o, f)` of `terms`: input o's tangent rows (`fused_t{o}`) times the
/// factor of output f (o's own, or the one it shares).
pub(super) fn tangent(w: &mut String, terms: &[(usize, usize)]) {
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
    let four: String = (0..4)
        .map(|r| format!("                {}\n", sum(&format!("j + {r}u * n4"), "")))
        .collect();
    let one = format!("                {}\n", sum("j", ""));
    let scalar = format!("                {}\n", sum("j / 4u][j % 4u", "[c]"));
    frame(w, &four, &one, &scalar);
}

/// The K loop around a row's body: `four` for four aligned rows from
/// vec4 `j`, `one` for one aligned row at `j`, `scalar` for element `c` of
/// an unaligned row at flat index `j`. Closes the entry point.
fn frame(w: &mut String, four: &str, one: &str, scalar: &str) {
    let _ = write!(
        w,
        "    // The rows: all K (GPUs), the workgroup's block of ROW_BLOCK rows
    // along the grid's z, or ROWS_K, a constant trip count (CPU adapters).
    let n4 = params.n / 4u;
    var k = 0u;
    var rows_k = select(params.k, ROWS_K, ROWS_K != 0u);
    if (ROW_BLOCK != 0u) {{
        k = wid.z * ROW_BLOCK;
        rows_k = min(k + ROW_BLOCK, params.k);
    }}
    if (ALIGNED) {{
        for (; ROW_BLOCK == 0u && ROWS_K == 0u && k + 4u <= rows_k; k += 4u) {{
            if (live) {{
                let j = k * n4 + t;
{four}            }}
        }}
        for (; k < rows_k; k++) {{
            if (live) {{
                let j = k * n4 + t;
{one}            }}
        }}
    }} else {{
        for (; k < rows_k; k++) {{
            for (var c = 0u; c < 4u; c++) {{
                if (!live || t * 4u + c >= params.n) {{ continue; }}
                let j = k * params.n + t * 4u + c;
{scalar}            }}
        }}
    }}
}}
"
    );
}
