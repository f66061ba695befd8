//! The row loops of a region's kernels (`kernel.rs` writes the rest): the
//! per-element factors are computed once, then applied to each of the K
//! rows. Which rows an invocation takes is `launch.rs`'s choice
//! (ROW_BLOCK, ROWS_K); which row lengths a source takes is in its name.
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
//! A region has two sources (`Rows`): one for rows of n % 4 == 0 only,
//! and one for any n, whose aligned loops run only where n % 4 == 0 and
//! whose third loop takes an invocation's four elements one at a time
//! (vec4 arrays indexed by element, each under its own bounds test), so
//! that one kernel serves every n (`launch.rs` chooses). On llvmpipe each
//! storage access is a loop over the SIMD lanes, one scalar access per
//! component, so a vec4 access costs about what a scalar one does: an
//! element at a time runs W10's rows (n = 60,001) in 0.68 s for 30 steps
//! at K = 100 against 0.58 for aligned rows (n = 60,000). As a source of
//! its own with the rows declared f32 arrays (f537ffa) the element loop
//! ran as fast (0.67 s; 0.33 both at K = 50, 0.057 both at K = 8) and
//! compiled about 10 ms faster (W10's first step 102 against 113 ms), but
//! a device that met both kinds of n compiled both sources. A kernel of
//! one element an invocation, for every row, compiled in 18 ms but ran
//! aligned rows 1.4× slower; for unaligned rows alone it ran 3% slower.

use std::fmt::Write;

/// Which row lengths a region's source handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// n % 4 == 0 only: every row starts on a vec4.
    Aligned,
    /// Any n: aligned rows as above, others element by element.
    Any,
}

/// Element `j` of a vec4 array, as the index of `name[...]`: its vec4, then
/// its component.
const ELEMENT: &str = "j >> 2u][j & 3u";

/// The adjoint's rows: the root's cotangent row `g` times each primary
/// output's factor, into that output (`accumulate[o]`: added to it).
pub(super) fn adjoint(w: &mut String, accumulate: &[bool], primaries: &[usize], rows: Rows) {
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
    let element = |c: usize| {
        format!(
            "                let g = fused_g[{ELEMENT}];\n{}",
            stores(ELEMENT, &format!("[{c}]"), "g")
        )
    };
    frame(w, rows, &four, &one, &element);
}

/// The tangent's rows: `Σ factor ⊙ ṫ[k]` into the root's tangent, for each
/// `(o, f)` of `terms`: input o's tangent rows (`fused_t{o}`) times the
/// factor of output f (o's own, or the one it shares).
pub(super) fn tangent(w: &mut String, terms: &[(usize, usize)], rows: Rows) {
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
    let element = |c: usize| format!("                {}\n", sum(ELEMENT, &format!("[{c}]")));
    frame(w, rows, &four, &one, &element);
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

/// The K loops, closing the entry point. Aligned rows: `four` for four
/// rows from vec4 `j`, `one` for one row at `j`. Where the source takes
/// any n, those loops run only when n % 4 == 0 and a third takes the
/// rows otherwise: element 4t + c's body `element(c)` at flat index `j`,
/// where the row has it. Loops, not an `if`: llvmpipe runs both sides of
/// an `if` under a mask, while a loop whose condition fails on entry costs
/// one masked pass per invocation, not one per row.
fn frame(w: &mut String, rows: Rows, four: &str, one: &str, element: &dyn Fn(usize) -> String) {
    let whole = match rows {
        Rows::Aligned => "",
        Rows::Any => "whole && ",
    };
    let _ = writeln!(w, "{ROWS}    let n4 = params.n / 4u;");
    if rows == Rows::Any {
        w.push_str("    let whole = params.n % 4u == 0u;\n");
    }
    let _ = write!(
        w,
        "    for (; {whole}ROW_BLOCK == 0u && ROWS_K == 0u && k + 4u <= rows_k; k += 4u) {{
        if (live) {{
            let j = k * n4 + t;
{four}        }}
    }}
    for (; {whole}k < rows_k; k++) {{
        if (live) {{
            let j = k * n4 + t;
{one}        }}
    }}
"
    );
    if rows == Rows::Any {
        w.push_str(
            "    let has = vec4(t * 4u) + vec4(0u, 1u, 2u, 3u) < vec4(params.n);
    for (; k < rows_k; k++) {
",
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
        w.push_str("    }\n");
    }
    w.push_str("}\n");
}
