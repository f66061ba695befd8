//! The kernel of a forward-fusion chain (`src/ops/fused_forward.rs`):
//! `shaders/common.wgsl`, `unary.wgsl` and `binary.wgsl`, then an entry
//! point written here that reads each input once, computes every step in
//! registers with `unary_f`/`binary_f` called with literal op codes, and
//! writes the values still referenced.

use std::fmt::Write;

use crate::ops::fused::Elementwise;

/// First binding of the chain's inputs; outputs follow them.
pub(crate) const FIRST_BINDING: u32 = 10;

/// An operand of a step: an input of the chain, or an earlier step's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Arg {
    Input(usize),
    Step(usize),
}

/// How the kernel reads one input (`binary::read_mode`): the chain's shape,
/// a suffix of it, a prefix of it, or through strides in parameter slot s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Read {
    Same,
    Suffix,
    Prefix,
    Strided(usize),
}

/// A chain as its kernel sees it: how each input is read, each step's op
/// and operands, and which steps' values are written.
pub(crate) struct Recipe {
    pub reads: Vec<Read>,
    pub steps: Vec<(Elementwise, Vec<Arg>)>,
    pub written: Vec<usize>,
}

impl Recipe {
    /// Where the inputs' sizes and the steps' scalars start among the
    /// parameter words (after slot 0, the shape, and the stride slots).
    pub fn words(&self) -> (usize, usize) {
        let strided = self
            .reads
            .iter()
            .filter(|r| matches!(r, Read::Strided(_)))
            .count();
        let sizes_at = 6 * (1 + strided);
        (sizes_at, sizes_at + self.reads.len())
    }

    /// A name that determines the source.
    pub fn signature(&self) -> String {
        let mut s = format!("fused_forward{:?}", self.reads);
        for (op, args) in &self.steps {
            let _ = write!(s, "|{op:?}{args:?}");
        }
        let _ = write!(s, "|{:?}", self.written);
        s
    }

    /// The composed entry point `fused_forward` (appended to `fused::PRELUDE`, as a fused adjoint's entry point is).
    pub fn entry_source(&self) -> String {
        let (sizes_at, scalars_at) = self.words();
        let mut w = String::new();
        let mut binding = FIRST_BINDING;
        for j in 0..self.reads.len() {
            let _ = writeln!(
                w,
                "@group(0) @binding({binding}) var<storage, read> ff_i{j}: array<vec4<f32>>;"
            );
            binding += 1;
        }
        for o in 0..self.written.len() {
            let _ = writeln!(
                w,
                "@group(0) @binding({binding}) var<storage, read_write> ff_o{o}: array<vec4<f32>>;"
            );
            binding += 1;
        }
        let _ = writeln!(
            w,
            "@compute @workgroup_size(WG)
fn fused_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {{
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) {{ return; }}"
        );
        // Elements 4t..4t+3 of each input, as `binary_lhs_at` reads them.
        for (j, read) in self.reads.iter().enumerate() {
            let size = format!("slot_word({}u)", sizes_at + j);
            let _ = match read {
                Read::Same => writeln!(w, "    let i{j} = ff_i{j}[t];"),
                Read::Suffix => writeln!(w, "    let i{j} = ff_i{j}[t % ({size} / 4u)];"),
                Read::Prefix => writeln!(
                    w,
                    "    let o{j} = t * 4u / {size};\n    let i{j} = vec4(ff_i{j}[o{j} / 4u][o{j} % 4u]);"
                ),
                Read::Strided(s) => writeln!(
                    w,
                    "    var i{j} = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {{
        let i = t * 4u + c;
        if (i < params.n) {{
            let o = strided_offset(i, 0u, {s}u);
            i{j}[c] = ff_i{j}[o / 4u][o % 4u];
        }}
    }}"
                ),
            };
        }
        let arg = |a: &Arg| match a {
            Arg::Input(j) => format!("i{j}"),
            Arg::Step(p) => format!("v{p}"),
        };
        for (p, (op, args)) in self.steps.iter().enumerate() {
            let _ = match op {
                Elementwise::Unary(op) => writeln!(
                    w,
                    "    let v{p} = unary_f({}u, {}, bitcast<f32>(slot_word({}u)));",
                    *op as u32,
                    arg(&args[0]),
                    scalars_at + p
                ),
                Elementwise::Binary(op) => writeln!(
                    w,
                    "    let v{p} = binary_f({}u, {}, {});",
                    *op as u32,
                    arg(&args[0]),
                    arg(&args[1])
                ),
            };
        }
        for (o, p) in self.written.iter().enumerate() {
            let _ = writeln!(w, "    ff_o{o}[t] = v{p};");
        }
        w.push_str("}\n");
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::adjoint_recipe::tests::validate;
    use crate::ops::binary::BinaryOp;
    use crate::ops::fused::PRELUDE;
    use crate::ops::unary::UnaryOp;

    /// Every unary and binary op, every way of reading an input, steps
    /// reading inputs and earlier steps, some values written: each composed
    /// module parses and validates with naga, and the signature tells
    /// different recipes apart.
    #[test]
    fn composed_modules_validate() {
        let (unary, binary) = (UnaryOp::ALL, BinaryOp::ALL);
        let reads = [Read::Same, Read::Suffix, Read::Prefix, Read::Strided(1)];
        let mut seen = std::collections::HashSet::new();
        for (i, &u) in unary.iter().enumerate() {
            let b = binary[i % binary.len()];
            let recipe = Recipe {
                reads: vec![Read::Same, reads[i % reads.len()], Read::Strided(2)],
                steps: vec![
                    (Elementwise::Unary(u), vec![Arg::Input(0)]),
                    (Elementwise::Binary(b), vec![Arg::Step(0), Arg::Input(1)]),
                    (
                        Elementwise::Binary(BinaryOp::Mul),
                        vec![Arg::Input(2), Arg::Step(1)],
                    ),
                ],
                written: if i % 2 == 0 { vec![2] } else { vec![0, 2] },
            };
            validate(&format!("{PRELUDE}\n{}", recipe.entry_source()));
            assert!(seen.insert(recipe.signature()));
        }
    }
}
