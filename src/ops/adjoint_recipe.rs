//! The recipe of a fused adjoint (see `fused.rs`, which runs it): the
//! region's members, where each contribution goes, and the composed WGSL
//! entry point that calls the ops' derivative functions with literal op
//! codes, appended to [`PRELUDE`]. Its signature names the source, so the
//! pipeline cache compiles each shape of region once.

use std::fmt::Write;

use crate::ops::{BinaryOp, UnaryOp};

/// What every composed adjoint module starts with: the shared prelude and
/// both elementwise families' functions (their own entry points come along
/// unused).
pub(crate) const PRELUDE: &str = concat!(
    include_str!("../../shaders/common.wgsl"),
    include_str!("../../shaders/unary.wgsl"),
    include_str!("../../shaders/binary.wgsl"),
);
/// Binding of the cotangent rows; saved values and outputs follow it.
pub(crate) const FIRST_BINDING: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elementwise {
    Unary(UnaryOp),
    Binary(BinaryOp),
}

/// Where one input's contribution goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Into member `p`'s factor (members are numbered root first).
    Member(usize),
    /// Into output `o`: the cotangent of an input outside the region.
    Out(usize),
    /// Nowhere (the input is not tracked or not needed).
    Nothing,
}

/// One member: its op, one target per operand, and the saved values its
/// derivative reads (indices into the region's saved values, in the order
/// of the op's `saves()`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    pub op: Elementwise,
    pub targets: Vec<Target>,
    pub saved: Vec<usize>,
}

/// A region as its kernel sees it: the members in order (root first,
/// every consumer before what it consumes), how many saved values and
/// outputs it binds, and which saved values are broadcast (read through
/// strides in parameter slots 1, 2, …; slot 0 holds the region's shape).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Recipe {
    pub steps: Vec<Step>,
    pub saved: usize,
    pub outs: usize,
    pub broadcast: Vec<bool>,
}

/// Broadcast saved values a region may read (each takes a parameter slot,
/// and the members' scalars follow the slots: 6·(1 + 3) + 32 = 56 words).
pub(crate) const MAX_BROADCAST: usize = 3;

impl Recipe {
    /// A name that determines the source (with which outputs accumulate).
    pub fn signature(&self, accumulate: &[bool]) -> String {
        let mut s = format!("fused_s{}", self.saved);
        for &b in &self.broadcast {
            s.push(if b { 'b' } else { 'c' });
        }
        for step in &self.steps {
            let _ = write!(s, "|{:?}{:?}{:?}", step.op, step.targets, step.saved);
        }
        for &a in accumulate {
            s.push(if a { '+' } else { '=' });
        }
        s
    }

    /// The composed entry point `fused_adjoint` (appended to [`PRELUDE`]).
    /// `accumulate[o]`: output o already holds a cotangent to add to.
    pub fn entry_source(&self, accumulate: &[bool]) -> String {
        let mut w = String::new();
        let mut binding = FIRST_BINDING;
        let line = |w: &mut String, text: String| {
            w.push_str(&text);
            w.push('\n');
        };
        line(
            &mut w,
            format!("@group(0) @binding({binding}) var<storage, read> fused_g: array<vec4<f32>>;"),
        );
        for j in 0..self.saved {
            binding += 1;
            line(
                &mut w,
                format!(
                    "@group(0) @binding({binding}) var<storage, read> fused_s{j}: array<vec4<f32>>;"
                ),
            );
        }
        let aliases = self.aliases();
        for o in (0..self.outs).filter(|&o| aliases[o].is_none()) {
            binding += 1;
            line(
                &mut w,
                format!(
                    "@group(0) @binding({binding}) var<storage, read_write> fused_o{o}: array<vec4<f32>>;"
                ),
            );
        }
        let broadcast: Vec<usize> = (0..self.saved).filter(|&j| self.is_broadcast(j)).collect();
        let first_scalar = 6 * (1 + broadcast.len());
        line(
            &mut w,
            "// The scalar parameter of member i (after the shape and stride slots).".into(),
        );
        line(
            &mut w,
            format!(
                "fn fused_p(i: u32) -> f32 {{ return bitcast<f32>(slot_word({first_scalar}u + i)); }}"
            ),
        );
        line(&mut w, "override ROW_VEC4S: u32 = 0u;".into());
        line(&mut w, "override ROWS_K: u32 = 0u;".into());
        line(&mut w, "@compute @workgroup_size(WG)".into());
        line(&mut w, "fn fused_adjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,".into());
        line(
            &mut w,
            "                 @builtin(num_workgroups) nwg: vec3<u32>) {".into(),
        );
        line(&mut w, "    let t = linear_id(wid, lid, nwg);".into());
        line(&mut w, "    let live = t * 4u < params.n;".into());
        line(
            &mut w,
            "    let tc = min(t, (max(params.n, 1u) - 1u) / 4u);".into(),
        );
        for j in 0..self.saved {
            match broadcast.iter().position(|&b| b == j) {
                None => line(&mut w, format!("    let s{j} = fused_s{j}[tc];")),
                Some(slot) => {
                    line(&mut w, format!("    var s{j} = vec4(0.0);"));
                    line(&mut w, "    for (var c = 0u; c < 4u; c++) {".into());
                    line(
                        &mut w,
                        "        let i = min(tc * 4u + c, max(params.n, 1u) - 1u);".into(),
                    );
                    line(
                        &mut w,
                        format!("        let o = strided_offset(i, 0u, {}u);", slot + 1),
                    );
                    line(
                        &mut w,
                        format!("        s{j}[c] = fused_s{j}[o / 4u][o % 4u];"),
                    );
                    line(&mut w, "    }".into());
                }
            }
        }
        line(&mut w, "    let d0 = vec4(1.0);".into());
        for p in 1..self.steps.len() {
            line(&mut w, format!("    var d{p} = vec4(0.0);"));
        }
        for o in (0..self.outs).filter(|&o| aliases[o].is_none()) {
            line(&mut w, format!("    var e{o} = vec4(0.0);"));
        }
        for (target, term) in self.terms() {
            let into = match target {
                Target::Member(q) => format!("d{q}"),
                Target::Out(o) if aliases[o].is_none() => format!("e{o}"),
                _ => continue,
            };
            line(&mut w, format!("    {into} += {term};"));
        }
        // The row loop, once per layout: ALIGNED is an override, so the
        // branch not taken is compiled out (inside the loop, lavapipe would
        // step through the unaligned path's masked loads on every row).
        // `g` (or `g0`…`g3`) times each output's factor, into the output at
        // `index` (or four rows at index + r·n/4).
        let writes = |index: &str, e: &str, g: &str| -> String {
            let mut out = String::new();
            for (o, &acc) in accumulate.iter().enumerate() {
                if aliases[o].is_none() {
                    let at = format!("fused_o{o}[{index}]");
                    let old = if acc {
                        format!("{at} + ")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(out, "                {at} = {old}{g} * e{o}{e};");
                }
            }
            out
        };
        let four: String = (0..4)
            .map(|r| writes(&format!("j + {r}u * n4"), "", &format!("g{r}")))
            .collect();
        // Aligned rows go four at a time: all four loads are issued before
        // the stores (on lavapipe 1.6× the rate of one row per iteration,
        // measured on a K-row scaling loop). The K loop's barriers stay
        // every 8 rows (see row_sync).
        let _ = write!(
            w,
            "    // The row stride and the rows: ROW_VEC4S and ROWS_K when the host
    // specialized the kernel to them (CPU adapters), else the parameters.
    let n4 = select(params.n / 4u, ROW_VEC4S, ROW_VEC4S != 0u);
    let rows_k = select(params.k, ROWS_K, ROWS_K != 0u);
    var k = 0u;
    if (ALIGNED) {{
        for (; k + 4u <= rows_k; k += 4u) {{
            if (live) {{
                let j = k * n4 + t;
                let g0 = fused_g[j];
                let g1 = fused_g[j + n4];
                let g2 = fused_g[j + 2u * n4];
                let g3 = fused_g[j + 3u * n4];
{four}            }}
            row_sync(k + 3u, SYNC_ROWS);
        }}
        for (; k < rows_k; k++) {{
            if (live) {{
                let j = k * n4 + t;
                let g = fused_g[j];
{one}            }}
            row_sync(k, SYNC_ROWS);
        }}
    }} else {{
        for (; k < rows_k; k++) {{
            for (var c = 0u; c < 4u; c++) {{
                if (!live || t * 4u + c >= params.n) {{ continue; }}
                let j = k * params.n + t * 4u + c;
                let g = fused_g[j / 4u][j % 4u];
{scalar}            }}
            row_sync(k, SYNC_ROWS);
        }}
    }}
}}
",
            one = writes("j", "", "g"),
            scalar = writes("j / 4u][j % 4u", "[c]", "g"),
        );
        w
    }

    /// Every contribution the kernel sums, in order: (where it goes, the
    /// WGSL term `d_p * f'`), member p's factor times its local derivative.
    fn terms(&self) -> Vec<(Target, String)> {
        let mut terms = Vec::new();
        for (p, step) in self.steps.iter().enumerate() {
            let s = |i: usize| match step.saved.get(i) {
                Some(j) => format!("s{j}"),
                None => "vec4(0.0)".to_string(),
            };
            let factors: Vec<String> = match step.op {
                Elementwise::Unary(u) => {
                    vec![format!("unary_d({}u, {}, fused_p({p}u))", u as u32, s(0))]
                }
                Elementwise::Binary(b) => {
                    let da = format!("binary_da({}u, {}, {})", b as u32, s(0), s(1));
                    // d(a + b)/db is d(a + b)/da (1): the same term, so that
                    // equal contributions are recognized (`aliases`).
                    let db = match b {
                        BinaryOp::Add => da.clone(),
                        _ => format!("binary_db({}u, {}, {})", b as u32, s(0), s(1)),
                    };
                    vec![da, db]
                }
            };
            for (target, factor) in step.targets.iter().zip(factors) {
                if *target != Target::Nothing {
                    terms.push((*target, format!("d{p} * {factor}")));
                }
            }
        }
        terms
    }

    /// For each output, an earlier output that receives exactly the same
    /// terms (so the same values: the inputs of `a + b` both get the sum's
    /// cotangent). Such an output is neither bound nor written; it shares
    /// the earlier one's buffer, as the unfused `add` passes g to both.
    pub fn aliases(&self) -> Vec<Option<usize>> {
        let terms = self.terms();
        let of = |o: usize| -> Vec<&String> {
            terms
                .iter()
                .filter(|(t, _)| *t == Target::Out(o))
                .map(|(_, term)| term)
                .collect()
        };
        let lists: Vec<Vec<&String>> = (0..self.outs).map(of).collect();
        (0..self.outs)
            .map(|o| (0..o).find(|&q| lists[q] == lists[o]))
            .collect()
    }

    /// How many contributions meet another at the same member or output
    /// (each an accumulation kernel when unfused).
    pub fn meetings(&self) -> usize {
        let terms = self.terms();
        let mut targets: Vec<Target> = terms.iter().map(|(t, _)| *t).collect();
        let all = targets.len();
        targets.sort_by_key(|t| format!("{t:?}"));
        targets.dedup();
        all - targets.len()
    }

    /// Whether output o may be handed an accumulator to add to in place:
    /// not when it shares its buffer with another output.
    pub fn may_accumulate(&self, o: usize) -> bool {
        let aliases = self.aliases();
        aliases[o].is_none() && !aliases.contains(&Some(o))
    }

    pub(crate) fn is_broadcast(&self, j: usize) -> bool {
        self.broadcast.get(j).copied().unwrap_or(false)
    }

    /// The whole composed module.
    pub fn module_source(&self, accumulate: &[bool]) -> String {
        format!(
            "{PRELUDE}\n// Composed: {}\n{}",
            self.signature(accumulate),
            self.entry_source(accumulate)
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn validate(source: &str) {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{e:?}"));
    }

    /// Every unary and binary op, every kind of target, saved values shared
    /// between members, outputs written and accumulated: each composed
    /// module parses and validates with naga, and the signature tells
    /// different recipes apart.
    #[test]
    fn composed_modules_validate() {
        use BinaryOp::*;
        use UnaryOp::*;
        // Comparisons have no gradient, so no region holds one.
        let binary: Vec<BinaryOp> = BinaryOp::ALL
            .into_iter()
            .filter(|b| !b.is_comparison())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (i, &u) in UnaryOp::ALL.iter().enumerate() {
            let b = binary[i % binary.len()];
            // root: b(member 1, out 0); member 1: u(out 1) or u(out 0).
            let recipe = Recipe {
                steps: vec![
                    Step {
                        op: Elementwise::Binary(b),
                        targets: vec![Target::Member(1), Target::Out(0)],
                        saved: vec![0, 1],
                    },
                    Step {
                        op: Elementwise::Unary(u),
                        targets: vec![if i % 2 == 0 {
                            Target::Out(1)
                        } else {
                            Target::Out(0)
                        }],
                        saved: vec![1],
                    },
                ],
                saved: 2,
                outs: 2,
                broadcast: vec![false, i % 3 == 0],
            };
            for accumulate in [[false, false], [true, false], [true, true]] {
                validate(&recipe.module_source(&accumulate));
                assert!(seen.insert(recipe.signature(&accumulate)));
            }
        }
        // A member whose inputs are untracked, and one with no saved values.
        let recipe = Recipe {
            steps: vec![
                Step {
                    op: Elementwise::Binary(Add),
                    targets: vec![Target::Member(1), Target::Nothing],
                    saved: vec![],
                },
                Step {
                    op: Elementwise::Unary(Neg),
                    targets: vec![Target::Out(0)],
                    saved: vec![],
                },
            ],
            saved: 0,
            outs: 1,
            broadcast: vec![],
        };
        validate(&recipe.module_source(&[false]));
    }
}

#[cfg(test)]
mod alias_tests {
    use super::*;

    /// `sin(a + b)`: both inputs of the sum get the same contribution, so
    /// the second shares the first's buffer and neither takes an
    /// accumulator; `a - b` gives them different ones.
    #[test]
    fn equal_contributions_share_a_buffer() {
        let recipe = |op| Recipe {
            steps: vec![
                Step {
                    op: Elementwise::Unary(UnaryOp::Sin),
                    targets: vec![Target::Member(1)],
                    saved: vec![0],
                },
                Step {
                    op: Elementwise::Binary(op),
                    targets: vec![Target::Out(0), Target::Out(1)],
                    saved: vec![],
                },
            ],
            saved: 1,
            outs: 2,
            broadcast: vec![false],
        };
        let add = recipe(BinaryOp::Add);
        assert_eq!(add.aliases(), vec![None, Some(0)]);
        assert!(!add.may_accumulate(0) && !add.may_accumulate(1));
        assert_eq!(add.meetings(), 0);
        let sub = recipe(BinaryOp::Sub);
        assert_eq!(sub.aliases(), vec![None, None]);
        assert!(sub.may_accumulate(0) && sub.may_accumulate(1));
    }
}
