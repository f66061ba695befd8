//! The one WGSL emitter of both fusions: forward chains
//! (`chain_kernel.rs`) and adjoint regions (`autodiff/fusion/kernel.rs`).
//! A composed kernel is [`PRELUDE`] followed by an entry point written with
//! these pieces: binding declarations from [`FIRST_BINDING`] on, vec4
//! reads of operands of the kernel's shape or broadcast to it, calls of
//! each op's own functions by name ([`function`]), and a parameter block
//! laid out by [`Layout`]. [`Composed::dispatch`] launches one; its name is
//! its signature (equal names, equal sources), and its source is written
//! only when the pipeline cache has no module of that name.

use std::fmt::Write;

use crate::ops::elementwise::{Elementwise, ReadMode};
use crate::runtime::device::Device;
use crate::runtime::kernels::{
    Access, Kernel, Module, Params, Source, grid, groups_for, pipeline_key,
};
use crate::runtime::pool::Storage;
use crate::shape::broadcast_strides;

/// What every composed module starts with: the shared prelude and both
/// elementwise families' math (no bindings, no entry points).
pub(crate) const PRELUDE: &str = concat!(
    include_str!("../../../shaders/common.wgsl"),
    include_str!("../../../shaders/unary_ops.wgsl"),
    include_str!("../../../shaders/binary_ops.wgsl"),
);

/// The first storage binding of a composed kernel (past the bindings the
/// prelude's files declare); reads, then writes, follow it.
pub(crate) const FIRST_BINDING: u32 = 10;

/// Operands read through strides: each takes a parameter slot.
const MAX_STRIDED: usize = 3;

/// Parameter words after the 8 scalar words of `Params`: 14 vec4s.
const SLOT_WORDS: usize = 56;

/// The storage bindings of a composed kernel: `reads` read-only buffers,
/// then `writes` read-write ones.
pub(crate) fn bindings(reads: usize, writes: usize) -> Vec<(u32, Access)> {
    (0..reads)
        .map(|_| Access::Read)
        .chain((0..writes).map(|_| Access::Write))
        .enumerate()
        .map(|(i, a)| (FIRST_BINDING + i as u32, a))
        .collect()
}

/// Declares the buffers of [`bindings`] in WGSL, named `reads` and
/// `writes` in the same order.
pub(crate) fn declare(w: &mut String, reads: &[String], writes: &[String]) {
    let names = (reads.iter().map(|n| (n, "read"))).chain(writes.iter().map(|n| (n, "read_write")));
    for (i, (name, access)) in names.enumerate() {
        let binding = FIRST_BINDING + i as u32;
        let _ = writeln!(
            w,
            "@group(0) @binding({binding}) var<storage, {access}> {name}: array<vec4<f32>>;"
        );
    }
}

/// The WGSL value of `op` at `args` (vec4 expressions); `scalar` is its
/// parameter (unary ops: powf's exponent, a scalar operand).
pub(crate) fn value(op: Elementwise, args: &[String], scalar: &str) -> String {
    match op {
        Elementwise::Unary(_) => format!("{}_f({}, {scalar})", function(op), args[0]),
        Elementwise::Binary(_) => format!("{}_f({}, {})", function(op), args[0], args[1]),
    }
}

/// `op`'s partial derivatives, one per operand, from `saved` (the values
/// its rule saves, in its `saves()` order; unused ones may be anything).
pub(crate) fn derivatives(op: Elementwise, saved: &[String], scalar: &str) -> Vec<String> {
    let f = function(op);
    match op {
        Elementwise::Unary(_) => vec![format!("{f}_d({}, {scalar})", saved[0])],
        Elementwise::Binary(_) => {
            let call = |d: &str| format!("{f}_{d}({}, {})", saved[0], saved[1]);
            vec![call("da"), call("db")]
        }
    }
}

/// The stem of `op`'s own WGSL functions (`unary_ops.wgsl`,
/// `binary_ops.wgsl`): the family, then the op's name in snake case
/// (`UnaryOp::GeluTanh`: `unary_gelu_tanh`, whose `_f` and `_d` follow).
/// Calling them by name, not through the dispatchers by op code, leaves
/// the other ops' code out of the pipeline: wgpu drops the functions an
/// entry point does not reach, but not the cases of a switch, which the
/// driver then inlines and folds at every call (a fused adjoint's pipeline
/// took 10–11 ms on the host with the dispatchers, 2.5 without, lavapipe).
pub(crate) fn function(op: Elementwise) -> String {
    let (family, name) = match op {
        Elementwise::Unary(u) => ("unary", format!("{u:?}")),
        Elementwise::Binary(b) => ("binary", format!("{b:?}")),
    };
    let mut stem = family.to_string();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            stem.push('_');
        }
        stem.push(c.to_ascii_lowercase());
    }
    stem
}

/// Where a composed kernel finds what its reads need in the parameter
/// block: slot 0 holds its shape, one slot per strided operand that
/// operand's strides, one word per suffix or prefix operand its length,
/// then one word per op its scalar.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    /// Per operand: how it is read, and the slot (strided) or word
    /// (suffix, prefix) that read uses.
    reads: Vec<(ReadMode, usize)>,
    strided: usize,
    scalars_at: usize,
}

impl Layout {
    pub fn new(modes: &[ReadMode]) -> Layout {
        let strided = modes.iter().filter(|&&m| m == ReadMode::Strided).count();
        let mut next_slot = 0;
        let mut next_word = 6 * (1 + strided);
        let reads = modes
            .iter()
            .map(|&mode| {
                let at = match mode {
                    ReadMode::Same => 0,
                    ReadMode::Strided => {
                        next_slot += 1;
                        next_slot
                    }
                    ReadMode::Suffix | ReadMode::Prefix => {
                        next_word += 1;
                        next_word - 1
                    }
                };
                (mode, at)
            })
            .collect();
        Layout {
            reads,
            strided,
            scalars_at: next_word,
        }
    }

    /// Whether the strided operands and `scalars` scalars fit the block.
    pub fn fits(&self, scalars: usize) -> bool {
        self.strided <= MAX_STRIDED && self.scalars_at + scalars <= SLOT_WORDS
    }

    /// The number of operands.
    pub fn operands(&self) -> usize {
        self.reads.len()
    }

    /// The modes, for a signature.
    pub fn modes(&self) -> impl Iterator<Item = ReadMode> + '_ {
        self.reads.iter().map(|(m, _)| *m)
    }

    /// The parameter block of a kernel over `shape` and `k` rows whose
    /// operands have `operands` shapes and whose ops take `scalars`.
    pub fn params(
        &self,
        shape: &[usize],
        k: usize,
        operands: &[&[usize]],
        scalars: &[f32],
    ) -> Params {
        let n = crate::shape::numel(shape);
        let mut params = Params::new(n, k).rank(shape.len()).slot(0, shape);
        for (&(mode, at), x) in self.reads.iter().zip(operands) {
            params = match mode {
                ReadMode::Same => params,
                ReadMode::Strided => params.slot(at, &broadcast_strides(x, shape)),
                ReadMode::Suffix | ReadMode::Prefix => {
                    params.slot_word(at, ReadMode::of(x, shape).1 as u32)
                }
            };
        }
        for (i, s) in scalars.iter().enumerate() {
            params = params.slot_word(self.scalars_at + i, s.to_bits());
        }
        params
    }

    /// The WGSL expression of op `i`'s scalar.
    pub fn scalar(&self, i: usize) -> String {
        format!("bitcast<f32>(slot_word({}u))", self.scalars_at + i)
    }

    /// Declares `var`: elements 4·`at` … 4·`at` + 3 of operand `j`, read
    /// from the buffer `buffer` (as `binary_lhs_at` reads them). `at` may
    /// pass the end of the kernel's elements by less than a vec4 (strided
    /// reads clamp to the last element), so a kernel that must reach a
    /// barrier need not branch around its reads.
    pub fn read(&self, w: &mut String, j: usize, var: &str, buffer: &str, at: &str) {
        let (mode, word) = self.reads[j];
        let _ = match mode {
            ReadMode::Same => writeln!(w, "    let {var} = {buffer}[{at}];"),
            ReadMode::Suffix => writeln!(
                w,
                "    let {var} = {buffer}[{at} % (slot_word({word}u) / 4u)];"
            ),
            ReadMode::Prefix => writeln!(
                w,
                "    let o_{var} = {at} * 4u / slot_word({word}u);
    let {var} = vec4({buffer}[o_{var} / 4u][o_{var} % 4u]);"
            ),
            ReadMode::Strided => writeln!(
                w,
                "    var {var} = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {{
        let i = min({at} * 4u + c, max(params.n, 1u) - 1u);
        let o = strided_offset(i, 0u, {word}u);
        {var}[c] = {buffer}[o / 4u][o % 4u];
    }}"
            ),
        };
    }
}

/// A composed kernel ready to launch.
pub(crate) struct Composed<'a> {
    /// The module's name: a signature that determines the source.
    pub name: &'a str,
    pub entry: &'static str,
    /// Read-only storage bindings, then read-write ones ([`bindings`]).
    pub reads: usize,
    pub writes: usize,
    /// Writes the entry point (appended to [`PRELUDE`]) on a cache miss.
    pub entry_source: &'a dyn Fn() -> String,
}

impl Composed<'_> {
    /// Whether `dev` holds this kernel compiled with `constants`.
    pub fn is_compiled(&self, dev: &Device, constants: &[(&'static str, f64)]) -> bool {
        self.with_kernel(|kernel| dev.is_compiled(&pipeline_key(kernel, constants)))
    }

    /// Records one dispatch over `n` elements, four an invocation, and
    /// `blocks` workgroups along z (a row loop's blocks of rows; else 1).
    pub fn dispatch(
        &self,
        dev: &Device,
        constants: &[(&'static str, f64)],
        params: &Params,
        buffers: &[&Storage],
        (n, blocks): (usize, u32),
    ) {
        let (x, y) = grid(groups_for(n.div_ceil(4) as u64));
        self.with_kernel(|kernel| {
            dev.dispatch_grid(kernel, constants, params, buffers, (x, y, blocks))
        });
    }

    /// `f` of this kernel (its source is written only on a cache miss).
    fn with_kernel<R>(&self, f: impl FnOnce(&Kernel) -> R) -> R {
        let write = || {
            format!(
                "{PRELUDE}\n// Composed: {}\n{}",
                self.name,
                (self.entry_source)()
            )
        };
        let module = Module {
            name: self.name,
            source: Source::Composed(&write),
        };
        let bindings = bindings(self.reads, self.writes);
        f(&Kernel {
            module: &module,
            entry: self.entry,
            bindings: &bindings,
        })
    }
}

/// Parses and validates a composed module with naga (the fusions' tests).
#[cfg(test)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::elementwise::{BinaryOp, UnaryOp};
    use naga::{Statement, SwitchValue};

    /// The function a dispatcher's case for `code` calls, by name.
    fn dispatched(module: &naga::Module, dispatcher: &str, code: u32) -> Option<String> {
        let (_, f) =
            (module.functions.iter()).find(|(_, f)| f.name.as_deref() == Some(dispatcher))?;
        let cases = f.body.iter().find_map(|s| match s {
            Statement::Switch { cases, .. } => Some(cases),
            _ => None,
        })?;
        let case = cases.iter().find(|c| c.value == SwitchValue::U32(code))?;
        case.body.iter().find_map(|s| match s {
            Statement::Call { function, .. } => module.functions[*function].name.clone(),
            _ => None,
        })
    }

    /// Every op has its own functions, and its dispatcher's case calls
    /// exactly them: the fused kernels (by name) and the op kernels (by
    /// op code) run the same code.
    #[test]
    fn every_op_s_functions_are_what_its_dispatch_case_calls() {
        let module = naga::front::wgsl::parse_str(PRELUDE).unwrap();
        let ops = (UnaryOp::ALL
            .iter()
            .map(|&u| (Elementwise::Unary(u), u as u32)))
        .chain(
            BinaryOp::ALL
                .iter()
                .map(|&b| (Elementwise::Binary(b), b as u32)),
        );
        let mut checked = 0;
        for (op, code) in ops {
            let stem = function(op);
            let dispatchers: &[(&str, &str)] = match op {
                Elementwise::Unary(_) => &[("unary_f", "f"), ("unary_d", "d")],
                Elementwise::Binary(_) => {
                    &[("binary_f", "f"), ("binary_da", "da"), ("binary_db", "db")]
                }
            };
            for (dispatcher, suffix) in dispatchers {
                let own = format!("{stem}_{suffix}");
                assert_eq!(
                    dispatched(&module, dispatcher, code).as_deref(),
                    Some(own.as_str()),
                    "{op:?}: {dispatcher}'s case {code}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * UnaryOp::ALL.len() + 3 * BinaryOp::ALL.len());
    }

    #[test]
    fn function_stems_are_the_ops_names_in_snake_case() {
        assert_eq!(
            function(Elementwise::Unary(UnaryOp::GeluTanh)),
            "unary_gelu_tanh"
        );
        assert_eq!(function(Elementwise::Unary(UnaryOp::Log1p)), "unary_log1p");
        assert_eq!(
            function(Elementwise::Binary(BinaryOp::KeepWhere)),
            "binary_keep_where"
        );
    }
}
