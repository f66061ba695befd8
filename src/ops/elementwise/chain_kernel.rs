//! The kernel of a forward-fusion chain (`chain.rs`): an entry point,
//! written with `codegen.rs`, that reads each input once, computes every op
//! in registers with each op's own `_f` function (`codegen::value`), and
//! writes the values still referenced.

use std::fmt::Write;

use crate::ops::elementwise::Elementwise;
use crate::ops::elementwise::codegen::{self, Layout};

/// An operand of an op in a chain: an input of the chain, or an earlier
/// op's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Arg {
    Input(usize),
    Op(usize),
}

/// A chain as its kernel sees it: how each input is read, each op and its
/// operands, and which ops' values are written.
pub(crate) struct ChainRecipe {
    pub layout: Layout,
    pub ops: Vec<(Elementwise, Vec<Arg>)>,
    pub written: Vec<usize>,
}

impl ChainRecipe {
    /// A name that determines the source.
    pub fn signature(&self) -> String {
        let modes: Vec<_> = self.layout.modes().collect();
        let mut s = format!("fused_forward{modes:?}");
        for (op, args) in &self.ops {
            let _ = write!(s, "|{op:?}{args:?}");
        }
        let _ = write!(s, "|{:?}", self.written);
        s
    }

    /// The entry point `fused_forward`.
    pub fn entry_source(&self) -> String {
        let mut w = String::new();
        let inputs: Vec<String> = (0..self.layout.operands())
            .map(|j| format!("ff_i{j}"))
            .collect();
        let outputs: Vec<String> = (0..self.written.len())
            .map(|o| format!("ff_o{o}"))
            .collect();
        codegen::declare(&mut w, &inputs, &outputs);
        w.push_str(
            "@compute @workgroup_size(WG)
fn fused_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
",
        );
        for (j, buffer) in inputs.iter().enumerate() {
            self.layout.read(&mut w, j, &format!("i{j}"), buffer, "t");
        }
        let arg = |a: &Arg| match a {
            Arg::Input(j) => format!("i{j}"),
            Arg::Op(p) => format!("v{p}"),
        };
        for (p, (op, args)) in self.ops.iter().enumerate() {
            let args: Vec<String> = args.iter().map(arg).collect();
            let value = codegen::value(*op, &args, &self.layout.scalar(p));
            let _ = writeln!(w, "    let v{p} = {value};");
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
    use crate::ops::elementwise::codegen::{PRELUDE, validate};
    use crate::ops::elementwise::{BinaryOp, ReadMode, UnaryOp};

    /// Every unary and binary op, every way of reading an input, ops
    /// reading inputs and earlier ops, some values written: each composed
    /// module parses and validates with naga, and the signature tells
    /// different recipes apart.
    #[test]
    fn composed_modules_validate() {
        let (unary, binary) = (UnaryOp::ALL, BinaryOp::ALL);
        use ReadMode::*;
        let reads = [Same, Suffix, Prefix, Strided];
        let mut seen = std::collections::HashSet::new();
        for (i, &u) in unary.iter().enumerate() {
            let b = binary[i % binary.len()];
            let recipe = ChainRecipe {
                layout: Layout::new(&[Same, reads[i % reads.len()], Strided]),
                ops: vec![
                    (Elementwise::Unary(u), vec![Arg::Input(0)]),
                    (Elementwise::Binary(b), vec![Arg::Op(0), Arg::Input(1)]),
                    (
                        Elementwise::Binary(BinaryOp::Mul),
                        vec![Arg::Input(2), Arg::Op(1)],
                    ),
                ],
                written: if i % 2 == 0 { vec![2] } else { vec![0, 2] },
            };
            validate(&format!("{PRELUDE}\n{}", recipe.entry_source()));
            assert!(seen.insert(recipe.signature()));
        }
    }
}
