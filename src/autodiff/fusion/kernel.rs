//! The kernel of a fused adjoint region (`mod.rs` finds the regions,
//! `launch.rs` runs them): the members, where each contribution goes, and
//! the composed entry point, written with the elementwise emitter
//! (`ops/elementwise/codegen.rs`), that calls each op's own derivative
//! functions by name. Per element it reads each saved value
//! once, sums the products of local derivatives along every path into one
//! factor per input leaving the region, then for each of the K cotangent
//! rows writes `g[k] ⊙ factor` (or adds it to the input's cotangent in
//! place). The signature names the source, so the pipeline cache compiles
//! each shape of region once.

use std::fmt::Write;

use super::rows::{self, Rows};
use crate::ops::elementwise::codegen::{self, Layout};
use crate::ops::elementwise::{BinaryOp, Elementwise, ReadMode};

/// Where one input's contribution goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
pub(crate) struct Member {
    pub op: Elementwise,
    pub targets: Vec<Target>,
    pub saved: Vec<usize>,
}

/// A region as its kernel sees it: the members in order (root first, every
/// consumer before what it consumes), how each saved value is read (the
/// region's shape, or broadcast to it), and how many outputs it has. The
/// terms it sums and the outputs that share a buffer are worked out once,
/// when it is made.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RegionRecipe {
    members: Vec<Member>,
    layout: Layout,
    outs: usize,
    /// Every contribution the kernel sums, in order.
    terms: Vec<Term>,
    /// Per output, an earlier output that receives exactly the same terms.
    aliases: Vec<Option<usize>>,
}

impl RegionRecipe {
    pub fn new(members: Vec<Member>, saved: &[ReadMode], outs: usize) -> RegionRecipe {
        let layout = Layout::new(saved);
        let terms = terms(&members);
        let of = |o: usize| -> Vec<(usize, usize)> {
            (terms.iter())
                .filter(|t| t.target == Target::Out(o))
                .map(|t| (t.member, t.operand))
                .collect()
        };
        let lists: Vec<Vec<(usize, usize)>> = (0..outs).map(of).collect();
        let aliases = (0..outs)
            .map(|o| (0..o).find(|&q| lists[q] == lists[o]))
            .collect();
        RegionRecipe {
            members,
            layout,
            outs,
            terms,
            aliases,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// For each output, an earlier output that receives exactly the same
    /// terms (so the same values: the inputs of `a + b` both get the sum's
    /// cotangent). Such an output is neither bound nor written; it shares
    /// the earlier one's buffer, as the unfused `add` passes g to both.
    pub fn aliases(&self) -> &[Option<usize>] {
        &self.aliases
    }

    /// How many contributions meet another at the same member or output
    /// (each an accumulation kernel when unfused).
    pub fn meetings(&self) -> usize {
        let mut targets: Vec<Target> = self.terms.iter().map(|t| t.target).collect();
        let all = targets.len();
        targets.sort_unstable();
        targets.dedup();
        all - targets.len()
    }

    /// Whether output o may be handed an accumulator to add to in place:
    /// not when it shares its buffer with another output.
    pub fn may_accumulate(&self, o: usize) -> bool {
        self.aliases[o].is_none() && !self.aliases.contains(&Some(o))
    }

    /// A name that determines the source (with which outputs accumulate,
    /// and which row lengths it takes).
    pub fn signature(&self, accumulate: &[bool], rows: Rows) -> String {
        let modes: Vec<_> = self.layout.modes().collect();
        let rows = match rows {
            Rows::Aligned => "",
            Rows::Any => "(any n)",
        };
        let mut s = format!("fused_adjoint{rows}{modes:?}");
        for m in &self.members {
            let _ = write!(s, "|{:?}{:?}{:?}", m.op, m.targets, m.saved);
        }
        for &a in accumulate {
            s.push(if a { '+' } else { '=' });
        }
        s
    }

    /// The entry point `fused_adjoint`: each output's factor times the
    /// root's K cotangent rows. `accumulate[o]`: output o already holds a
    /// cotangent to add to. `rows`: the row lengths it takes.
    pub fn entry_source(&self, accumulate: &[bool], rows: Rows) -> String {
        let primaries = self.primaries();
        let reads: Vec<String> = std::iter::once("fused_g".to_string())
            .chain((0..self.layout.operands()).map(|j| format!("fused_s{j}")))
            .collect();
        let writes: Vec<String> = primaries.iter().map(|o| format!("fused_o{o}")).collect();
        let mut w = String::new();
        codegen::declare(&mut w, &reads, &writes);
        self.factors(&mut w, "fused_adjoint", &reads[1..]);
        rows::adjoint(&mut w, accumulate, &primaries, rows);
        w
    }

    /// A name that determines the tangent's source: `present[o]`, input o
    /// leaving the region has a tangent.
    pub fn tangent_signature(&self, present: &[bool], rows: Rows) -> String {
        let mut s = self
            .signature(&[], rows)
            .replacen("fused_adjoint", "fused_tangent", 1);
        for &p in present {
            s.push(if p { 't' } else { '0' });
        }
        s
    }

    /// The entry point `fused_tangent` (forward mode): the root's K tangent
    /// rows, `Σ_o factor_o ⊙ ṫ_o[k]` over the inputs leaving the region
    /// that have a tangent (`present[o]`; read at the region's shape).
    /// `rows` as for [`RegionRecipe::entry_source`].
    pub fn tangent_source(&self, present: &[bool], rows: Rows) -> String {
        let reads: Vec<String> = (0..self.layout.operands())
            .map(|j| format!("fused_s{j}"))
            .chain(
                (0..self.outs)
                    .filter(|&o| present[o])
                    .map(|o| format!("fused_t{o}")),
            )
            .collect();
        let mut w = String::new();
        let writes = ["fused_y".to_string()];
        codegen::declare(&mut w, &reads, &writes);
        self.factors(&mut w, "fused_tangent", &reads[..self.layout.operands()]);
        // An output sharing its factor with an earlier one reads that one's.
        let terms: Vec<(usize, usize)> = (0..self.outs)
            .filter(|&o| present[o])
            .map(|o| (o, self.aliases[o].unwrap_or(o)))
            .collect();
        rows::tangent(&mut w, &terms, rows);
        w
    }

    /// The outputs that are bound and written (the others share a buffer).
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.outs)
            .filter(|&o| self.aliases[o].is_none())
            .collect()
    }

    /// The entry point's opening, up to each primary output's factor `e_o`
    /// per element: the saved values read from `saved` (buffer names),
    /// every path's product of local derivatives summed.
    fn factors(&self, w: &mut String, entry: &str, saved: &[String]) {
        // The row loop's choices (see `launch.rs`). No early return (a
        // row loop could hold a barrier); reads past the end use the last
        // vec4 (`tc`).
        let _ = write!(
            w,
            "override ROW_BLOCK: u32 = 0u;
override ROWS_K: u32 = 0u;
@compute @workgroup_size(WG)
fn {entry}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {{
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    let tc = min(t, (max(params.n, 1u) - 1u) / 4u);
"
        );
        for (j, buffer) in saved.iter().enumerate() {
            self.layout.read(w, j, &format!("s{j}"), buffer, "tc");
        }
        w.push_str("    let d0 = vec4(1.0);\n");
        for p in 1..self.members.len() {
            let _ = writeln!(w, "    var d{p} = vec4(0.0);");
        }
        for o in self.primaries() {
            let _ = writeln!(w, "    var e{o} = vec4(0.0);");
        }
        // Member p's local derivatives, from its saved values.
        let derivatives: Vec<Vec<String>> = (self.members.iter().enumerate())
            .map(|(p, m)| {
                let saved: Vec<String> = (0..2)
                    .map(|i| match m.saved.get(i) {
                        Some(j) => format!("s{j}"),
                        None => "vec4(0.0)".to_string(),
                    })
                    .collect();
                codegen::derivatives(m.op, &saved, &self.layout.scalar(p))
            })
            .collect();
        for t in &self.terms {
            let into = match t.target {
                Target::Member(q) => format!("d{q}"),
                Target::Out(o) if self.aliases[o].is_none() => format!("e{o}"),
                _ => continue,
            };
            let factor = &derivatives[t.member][t.operand];
            let _ = writeln!(w, "    {into} += d{} * {factor};", t.member);
        }
    }
}

/// One contribution a region's kernel sums: member `member`'s factor
/// times its local derivative by operand `operand`, into `target`.
#[derive(Clone, Debug, PartialEq)]
struct Term {
    target: Target,
    member: usize,
    operand: usize,
}

/// Every contribution a region's kernel sums, in order. d(a + b)/db is
/// d(a + b)/da (both 1): one term, so that equal contributions are
/// recognized (the outputs that share a buffer, `aliases`).
fn terms(members: &[Member]) -> Vec<Term> {
    let mut terms = Vec::new();
    for (p, m) in members.iter().enumerate() {
        let add = m.op == Elementwise::Binary(BinaryOp::Add);
        for (i, target) in m.targets.iter().enumerate() {
            if *target != Target::Nothing {
                terms.push(Term {
                    target: *target,
                    member: p,
                    operand: if add { 0 } else { i },
                });
            }
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::elementwise::codegen::{PRELUDE, validate};
    use crate::ops::{BinaryOp, UnaryOp};

    fn source(recipe: &RegionRecipe, accumulate: &[bool], rows: Rows) -> String {
        format!("{PRELUDE}\n{}", recipe.entry_source(accumulate, rows))
    }

    /// Every unary and binary op, every kind of target and of read, saved
    /// values shared between members, outputs written and accumulated, and
    /// the tangent kernels: each composed module parses and validates with
    /// naga, and the signature tells different recipes apart.
    #[test]
    fn composed_modules_validate() {
        use BinaryOp::*;
        use ReadMode::*;
        use UnaryOp::*;
        // Comparisons have no gradient, so no region holds one.
        let binary: Vec<BinaryOp> = BinaryOp::ALL
            .into_iter()
            .filter(|b| !b.is_comparison())
            .collect();
        let reads = [Same, Suffix, Prefix, Strided];
        let mut seen = std::collections::HashSet::new();
        for (i, &u) in UnaryOp::ALL.iter().enumerate() {
            let b = binary[i % binary.len()];
            // root: b(member 1, out 0); member 1: u(out 1) or u(out 0).
            let members = vec![
                Member {
                    op: Elementwise::Binary(b),
                    targets: vec![Target::Member(1), Target::Out(0)],
                    saved: vec![0, 1],
                },
                Member {
                    op: Elementwise::Unary(u),
                    targets: vec![if i % 2 == 0 {
                        Target::Out(1)
                    } else {
                        Target::Out(0)
                    }],
                    saved: vec![1],
                },
            ];
            let recipe = RegionRecipe::new(members, &[Same, reads[i % reads.len()]], 2);
            for rows in [Rows::Aligned, Rows::Any] {
                for accumulate in [[false, false], [true, false], [true, true]] {
                    validate(&source(&recipe, &accumulate, rows));
                    assert!(seen.insert(recipe.signature(&accumulate, rows)));
                }
                // The tangent (forward mode), with one or both inputs' tangents.
                for present in [[true, true], [true, false], [false, true]] {
                    let tangent = recipe.tangent_source(&present, rows);
                    validate(&format!("{PRELUDE}\n{tangent}"));
                    assert!(seen.insert(recipe.tangent_signature(&present, rows)));
                }
            }
        }
        // A member whose inputs are untracked, and one with no saved values.
        let members = vec![
            Member {
                op: Elementwise::Binary(Add),
                targets: vec![Target::Member(1), Target::Nothing],
                saved: vec![],
            },
            Member {
                op: Elementwise::Unary(Neg),
                targets: vec![Target::Out(0)],
                saved: vec![],
            },
        ];
        let recipe = RegionRecipe::new(members, &[], 1);
        validate(&source(&recipe, &[false], Rows::Aligned));
        validate(&source(&recipe, &[false], Rows::Any));
    }

    /// `sin(a + b)`: both inputs of the sum get the same contribution, so
    /// the second shares the first's buffer and neither takes an
    /// accumulator; `a - b` gives them different ones.
    #[test]
    fn equal_contributions_share_a_buffer() {
        let recipe = |op| {
            let members = vec![
                Member {
                    op: Elementwise::Unary(UnaryOp::Sin),
                    targets: vec![Target::Member(1)],
                    saved: vec![0],
                },
                Member {
                    op: Elementwise::Binary(op),
                    targets: vec![Target::Out(0), Target::Out(1)],
                    saved: vec![],
                },
            ];
            RegionRecipe::new(members, &[ReadMode::Same], 2)
        };
        let add = recipe(BinaryOp::Add);
        assert_eq!(add.aliases(), &[None, Some(0)]);
        assert!(!add.may_accumulate(0) && !add.may_accumulate(1));
        assert_eq!(add.meetings(), 0);
        let sub = recipe(BinaryOp::Sub);
        assert_eq!(sub.aliases(), &[None, None]);
        assert!(sub.may_accumulate(0) && sub.may_accumulate(1));
    }
}
