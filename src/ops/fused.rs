//! The fused adjoint of an elementwise region (`src/fusion.rs` says which
//! nodes form one): one kernel composed of `shaders/unary.wgsl`,
//! `shaders/binary.wgsl` and an entry point written here that calls their
//! derivative functions with literal op codes. Per element it reads each
//! saved value once, sums the products of local derivatives along every
//! path into one factor per input leaving the region, then for each of the
//! K cotangent rows writes `g[k] ⊙ factor` (or adds it to the input's
//! cotangent in place, when the scheduler hands over the accumulator).
//! The composed module is named by its recipe, so the pipeline cache
//! compiles each shape of region once.

use std::fmt::Write;
use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::kernels::{Access, Kernel, Module, Params, groups_for};
use crate::ops::{BinaryOp, UnaryOp, flag};
use crate::pool::Storage;

/// What every composed adjoint module starts with: the shared prelude and
/// both elementwise families' functions (their own entry points come along
/// unused).
const PRELUDE: &str = concat!(
    include_str!("../../shaders/common.wgsl"),
    include_str!("../../shaders/unary.wgsl"),
    include_str!("../../shaders/binary.wgsl"),
);
/// Binding of the cotangent rows; saved values and outputs follow it.
const FIRST_BINDING: u32 = 10;

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
/// outputs it binds.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Recipe {
    pub steps: Vec<Step>,
    pub saved: usize,
    pub outs: usize,
}

impl Recipe {
    /// A name that determines the source (with which outputs accumulate).
    pub fn signature(&self, accumulate: &[bool]) -> String {
        let mut s = format!("fused_s{}", self.saved);
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
        for o in 0..self.outs {
            binding += 1;
            line(
                &mut w,
                format!(
                    "@group(0) @binding({binding}) var<storage, read_write> fused_o{o}: array<vec4<f32>>;"
                ),
            );
        }
        line(&mut w, "// The scalar parameter of member i.".into());
        line(
            &mut w,
            "fn fused_p(i: u32) -> f32 { return bitcast<f32>(slot_word(i)); }".into(),
        );
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
            line(&mut w, format!("    let s{j} = fused_s{j}[tc];"));
        }
        line(&mut w, "    let d0 = vec4(1.0);".into());
        for p in 1..self.steps.len() {
            line(&mut w, format!("    var d{p} = vec4(0.0);"));
        }
        for o in 0..self.outs {
            line(&mut w, format!("    var e{o} = vec4(0.0);"));
        }
        for (p, step) in self.steps.iter().enumerate() {
            let s = |i: usize| match step.saved.get(i) {
                Some(j) => format!("s{j}"),
                None => "vec4(0.0)".to_string(),
            };
            let factors: Vec<String> = match step.op {
                Elementwise::Unary(u) => {
                    vec![format!("unary_d({}u, {}, fused_p({p}u))", u as u32, s(0))]
                }
                Elementwise::Binary(b) => vec![
                    format!("binary_da({}u, {}, {})", b as u32, s(0), s(1)),
                    format!("binary_db({}u, {}, {})", b as u32, s(0), s(1)),
                ],
            };
            for (target, factor) in step.targets.iter().zip(factors) {
                let into = match target {
                    Target::Member(q) => format!("d{q}"),
                    Target::Out(o) => format!("e{o}"),
                    Target::Nothing => continue,
                };
                line(&mut w, format!("    {into} += d{p} * {factor};"));
            }
        }
        line(&mut w, "    for (var k = 0u; k < params.k; k++) {".into());
        line(&mut w, "        if (live && ALIGNED) {".into());
        line(
            &mut w,
            "            let j = k * (params.n / 4u) + t;".into(),
        );
        line(&mut w, "            let g = fused_g[j];".into());
        for (o, &acc) in accumulate.iter().enumerate() {
            let old = if acc {
                format!("fused_o{o}[j] + ")
            } else {
                String::new()
            };
            line(
                &mut w,
                format!("            fused_o{o}[j] = {old}g * e{o};"),
            );
        }
        line(&mut w, "        } else if (live) {".into());
        line(&mut w, "            for (var c = 0u; c < 4u; c++) {".into());
        line(
            &mut w,
            "                if (t * 4u + c < params.n) {".into(),
        );
        line(
            &mut w,
            "                    let j = k * params.n + t * 4u + c;".into(),
        );
        line(
            &mut w,
            "                    let g = fused_g[j / 4u][j % 4u];".into(),
        );
        for (o, &acc) in accumulate.iter().enumerate() {
            let old = if acc {
                format!("fused_o{o}[j / 4u][j % 4u] + ")
            } else {
                String::new()
            };
            line(
                &mut w,
                format!("                    fused_o{o}[j / 4u][j % 4u] = {old}g * e{o}[c];"),
            );
        }
        line(&mut w, "                }".into());
        line(&mut w, "            }".into());
        line(&mut w, "        }".into());
        line(&mut w, "        row_sync(k, SYNC_ROWS);".into());
        line(&mut w, "    }".into());
        line(&mut w, "}".into());
        w
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

/// Runs the region's adjoint for `k` rows of `n` elements: `g` is the
/// root's cotangent `[k, n]`, `saved` the recipe's saved values, `scalars`
/// each member's parameter, and `accumulators[o]` output o's cotangent so
/// far where the scheduler hands it over (it is added to in place).
/// Returns each output's cotangent, the accumulator where one was given.
pub(crate) fn run(
    dev: &Device,
    recipe: &Recipe,
    (k, n): (usize, usize),
    g: &Storage,
    saved: &[Arc<Storage>],
    scalars: &[f32],
    accumulators: Vec<Option<Arc<Storage>>>,
) -> Result<Vec<Arc<Storage>>> {
    let accumulate: Vec<bool> = accumulators.iter().map(Option::is_some).collect();
    let outs: Vec<Arc<Storage>> = accumulators
        .into_iter()
        .map(|a| match a {
            Some(a) => Ok(a),
            None => dev.alloc("fused cotangent", k * n).map(Arc::new),
        })
        .collect::<Result<_>>()?;
    if dev.is_dry_run() {
        return Ok(outs);
    }
    let name = recipe.signature(&accumulate);
    let source = recipe.module_source(&accumulate);
    let module = Module {
        name: &name,
        source: &source,
    };
    let mut bindings = vec![(FIRST_BINDING, Access::Read)];
    let mut binding = FIRST_BINDING;
    for _ in 0..recipe.saved {
        binding += 1;
        bindings.push((binding, Access::Read));
    }
    for _ in 0..recipe.outs {
        binding += 1;
        bindings.push((binding, Access::Write));
    }
    let kernel = Kernel {
        module: &module,
        entry: "fused_adjoint",
        bindings: &bindings,
    };
    let mut params = Params::new(n, k);
    for (i, s) in scalars.iter().enumerate() {
        params = params.slot_word(i, s.to_bits());
    }
    let buffers: Vec<&Storage> = std::iter::once(g)
        .chain(saved.iter().map(|s| &**s))
        .chain(outs.iter().map(|o| &**o))
        .collect();
    let constants = [("ALIGNED", flag(n.is_multiple_of(4)))];
    dev.dispatch_rows_with(
        &kernel,
        k,
        &constants,
        &params,
        &buffers,
        groups_for(n.div_ceil(4) as u64),
    );
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(source: &str) {
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
        let unary = [
            Neg, Exp, Log, Sin, Cos, Tanh, Sigmoid, Relu, Sqrt, Square, Abs, Powf, AddScalar,
            MulScalar,
        ];
        let mut seen = std::collections::HashSet::new();
        for (i, &u) in unary.iter().enumerate() {
            let b = [Add, Sub, Mul, Div][i % 4];
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
        };
        validate(&recipe.module_source(&[false]));
    }
}
