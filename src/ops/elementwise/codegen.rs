//! The one WGSL emitter of both fusions: forward chains
//! (`chain_kernel.rs`) and adjoint regions (`autodiff/fusion/kernel.rs`).
//! A composed kernel is [`PRELUDE`] followed by an entry point written with
//! these pieces: binding declarations from [`FIRST_BINDING`] on, vec4
//! reads of operands of the kernel's shape or broadcast to it, calls of the
//! elementwise ops' functions with literal op codes, and a parameter block
//! laid out by [`Layout`]. [`Composed::dispatch`] launches one; its name is
//! its signature (equal names, equal sources), and its source is written
//! only when the pipeline cache has no module of that name.

use std::fmt::Write;

use crate::ops::elementwise::{Elementwise, ReadMode};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Module, Params, Source, grid, groups_for};
use crate::runtime::pool::Storage;
use crate::shape::broadcast_strides;

/// What every composed module starts with: the shared prelude and both
/// elementwise families' functions (their own entry points come along
/// unused).
pub(crate) const PRELUDE: &str = concat!(
    include_str!("../../../shaders/common.wgsl"),
    include_str!("../../../shaders/unary.wgsl"),
    include_str!("../../../shaders/binary.wgsl"),
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
        Elementwise::Unary(u) => format!("unary_f({}u, {}, {scalar})", u as u32, args[0]),
        Elementwise::Binary(b) => {
            format!("binary_f({}u, {}, {})", b as u32, args[0], args[1])
        }
    }
}

/// `op`'s partial derivatives, one per operand, from `saved` (the values
/// its rule saves, in its `saves()` order; unused ones may be anything).
pub(crate) fn derivatives(op: Elementwise, saved: &[String], scalar: &str) -> Vec<String> {
    match op {
        Elementwise::Unary(u) => {
            vec![format!("unary_d({}u, {}, {scalar})", u as u32, saved[0])]
        }
        Elementwise::Binary(b) => {
            let call = |f: &str| format!("{f}({}u, {}, {})", b as u32, saved[0], saved[1]);
            vec![call("binary_da"), call("binary_db")]
        }
    }
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
        let kernel = Kernel {
            module: &module,
            entry: self.entry,
            bindings: &bindings,
        };
        let (x, y) = grid(groups_for(n.div_ceil(4) as u64));
        dev.dispatch_grid(&kernel, constants, params, buffers, (x, y, blocks));
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
