//! Forward fusion. Elementwise ops (unary, binary with broadcasting,
//! scalar ops) are not dispatched when called: each is appended to the
//! device's chain, with its output buffer allocated at once (so every
//! error is reported by the call that causes it, and the tensor exists).
//! When anything else is about to be recorded or submitted (another
//! kernel, a copy, a readback, a flush), the chain runs as one kernel
//! composed of `shaders/unary.wgsl` and `shaders/binary.wgsl` and an entry
//! point written here that calls `unary_f`/`binary_f` with literal op
//! codes: it reads each input once, keeps intermediates in registers, and
//! writes only the outputs still referenced outside the chain (a tensor
//! the caller holds, a value a graph node saved). `sin(x)·exp(x)` with
//! its temporaries dropped reads x and writes the product: one kernel
//! instead of three, a third of the bytes.
//!
//! A chain is composed only the second time its recipe is seen: the first
//! time its ops run their own kernels (already compiled), so a program
//! that makes each chain once, as a random-graph test does, compiles no
//! kernel for it, and a training loop fuses from its second step. A chain
//! of one op always runs the op's own kernel. Chains
//! hold ops of one output shape; a different shape, or a chain at its
//! binding or parameter limits, runs the chain first and starts a new one.
//! The composed module is named by its recipe, so the pipeline cache
//! compiles each chain's shape of computation once.

use std::collections::HashSet;
use std::sync::Arc;

use crate::device::Device;
use crate::kernels::{Access, Kernel, Module, Params, groups_for};
use crate::lock::Recover;
use crate::ops::forward_recipe::{Arg, FIRST_BINDING, Read, Recipe};
use crate::ops::fused::{Elementwise, PRELUDE};
use crate::ops::{binary, unary};
use crate::pool::Storage;
use crate::shape::{broadcast_strides, numel};

/// Ops in one chain (each takes a scalar word of the parameter block).
const MAX_STEPS: usize = 16;
/// Inputs read through strides (each takes a parameter slot).
const MAX_STRIDED: usize = 3;
/// Recipes remembered as seen; past this many the memory starts afresh
/// (a program that makes new chains forever should not grow it forever).
const MAX_SEEN: usize = 4096;

struct Step {
    op: Elementwise,
    scalar: f32,
    args: Vec<Arg>,
    out: Arc<Storage>,
}

/// Elementwise ops waiting to run, all of one output shape.
pub(crate) struct Chain {
    shape: Vec<usize>,
    inputs: Vec<(Arc<Storage>, Vec<usize>)>,
    steps: Vec<Step>,
}

/// A device's forward-fusion state: the chain waiting to run, and the
/// recipes seen so far (a recipe seen before runs as one kernel).
#[derive(Default)]
pub(crate) struct Chains {
    waiting: Option<Chain>,
    seen: HashSet<String>,
}

impl Chains {
    /// Runs the waiting chain, if any (see [`Chain::run`]).
    pub fn run_waiting(&mut self, dev: &Device) {
        if let Some(chain) = self.waiting.take() {
            chain.run(dev, &mut self.seen);
        }
    }
}

impl Chain {
    /// Whether an op with these operands and output `shape` may join.
    fn accepts(
        &self,
        shape: &[usize],
        operands: &[(&Arc<Storage>, &[usize])],
        limit: usize,
    ) -> bool {
        if shape != self.shape || self.steps.len() >= MAX_STEPS {
            return false;
        }
        let new: Vec<&(&Arc<Storage>, &[usize])> = operands
            .iter()
            .filter(|(s, sh)| self.step_of(s).is_none() && self.input_of(s, sh).is_none())
            .collect();
        let strided = self
            .reads()
            .iter()
            .filter(|r| matches!(r, Read::Strided(_)))
            .count()
            + new
                .iter()
                .filter(|(_, sh)| binary::read_mode(sh, shape).0 == binary::STRIDED)
                .count();
        // Every step may have to be written: inputs + steps bindings.
        strided <= MAX_STRIDED && self.inputs.len() + new.len() + self.steps.len() < limit
    }

    fn step_of(&self, storage: &Arc<Storage>) -> Option<usize> {
        self.steps.iter().position(|s| Arc::ptr_eq(&s.out, storage))
    }

    fn input_of(&self, storage: &Arc<Storage>, shape: &[usize]) -> Option<usize> {
        self.inputs
            .iter()
            .position(|(s, sh)| Arc::ptr_eq(s, storage) && sh == shape)
    }

    fn push(
        &mut self,
        op: Elementwise,
        scalar: f32,
        operands: &[(&Arc<Storage>, &[usize])],
        out: &Arc<Storage>,
    ) {
        let args = operands
            .iter()
            .map(|(s, sh)| match (self.step_of(s), self.input_of(s, sh)) {
                // A step's value has the chain's shape; a view of it with
                // leading axes of 1 added or dropped reads the same values.
                (Some(p), _) => Arg::Step(p),
                (None, Some(j)) => Arg::Input(j),
                (None, None) => {
                    self.inputs.push(((*s).clone(), sh.to_vec()));
                    Arg::Input(self.inputs.len() - 1)
                }
            })
            .collect();
        self.steps.push(Step {
            op,
            scalar,
            args,
            out: out.clone(),
        });
    }

    fn reads(&self) -> Vec<Read> {
        let mut strided = 0;
        self.inputs
            .iter()
            .map(|(_, sh)| match binary::read_mode(sh, &self.shape).0 {
                m if m == binary::SAME => Read::Same,
                m if m == binary::SUFFIX => Read::Suffix,
                m if m == binary::PREFIX => Read::Prefix,
                _ => {
                    strided += 1;
                    Read::Strided(strided)
                }
            })
            .collect()
    }

    /// Runs the chain, writing the values still referenced elsewhere (the
    /// chain holds one reference to each); nothing when none is. A chain
    /// whose recipe was seen before runs as one composed kernel; the first
    /// time, its ops run their own kernels (a one-off chain compiles
    /// nothing). `dev` must not run deferred work again (`in_chain`).
    fn run(self, dev: &Device, seen: &mut HashSet<String>) {
        let written: Vec<usize> = (0..self.steps.len())
            .filter(|&p| Arc::strong_count(&self.steps[p].out) > 1)
            .collect();
        if written.is_empty() {
            return;
        }
        if self.steps.len() == 1 {
            return self.run_ops(dev, &[true]);
        }
        let recipe = Recipe {
            reads: self.reads(),
            steps: self.steps.iter().map(|s| (s.op, s.args.clone())).collect(),
            written,
        };
        let name = recipe.signature();
        if seen.contains(&name) {
            return self.dispatch(dev, &recipe, &name);
        }
        if seen.len() >= MAX_SEEN {
            seen.clear();
        }
        seen.insert(name);
        // Each op on its own, skipping those whose value nothing needs.
        let mut live: Vec<bool> = (0..self.steps.len())
            .map(|p| recipe.written.contains(&p))
            .collect();
        for p in (0..self.steps.len()).rev() {
            if live[p] {
                for a in &self.steps[p].args {
                    if let Arg::Step(q) = a {
                        live[*q] = true;
                    }
                }
            }
        }
        self.run_ops(dev, &live);
    }

    /// Runs step p with its op's own kernel where `live[p]`.
    fn run_ops(&self, dev: &Device, live: &[bool]) {
        let operand = |a: &Arg| match *a {
            Arg::Input(j) => (&*self.inputs[j].0, self.inputs[j].1.as_slice()),
            Arg::Step(q) => (&*self.steps[q].out, self.shape.as_slice()),
        };
        for (step, _) in self.steps.iter().zip(live).filter(|(_, l)| **l) {
            match step.op {
                Elementwise::Unary(op) => {
                    let (x, _) = operand(&step.args[0]);
                    unary::forward_kernel(dev, op, step.scalar, x, &step.out, numel(&self.shape));
                }
                Elementwise::Binary(op) => binary::forward_kernel(
                    dev,
                    op,
                    operand(&step.args[0]),
                    operand(&step.args[1]),
                    &step.out,
                    &self.shape,
                ),
            }
        }
    }

    fn dispatch(&self, dev: &Device, recipe: &Recipe, name: &str) {
        let written = &recipe.written;
        let source = format!("{PRELUDE}\n// Composed: {name}\n{}", recipe.entry_source());
        let module = Module {
            name,
            source: &source,
        };
        let bindings: Vec<(u32, Access)> = (0..self.inputs.len())
            .map(|_| Access::Read)
            .chain(written.iter().map(|_| Access::Write))
            .enumerate()
            .map(|(i, a)| (FIRST_BINDING + i as u32, a))
            .collect();
        let kernel = Kernel {
            module: &module,
            entry: "fused_forward",
            bindings: &bindings,
        };
        let n = numel(&self.shape);
        let mut params = Params::new(n, 1)
            .rank(self.shape.len())
            .slot(0, &self.shape);
        for ((_, sh), read) in self.inputs.iter().zip(&recipe.reads) {
            if let Read::Strided(s) = read {
                params = params.slot(*s, &broadcast_strides(sh, &self.shape));
            }
        }
        let (sizes_at, scalars_at) = recipe.words();
        for (j, (_, sh)) in self.inputs.iter().enumerate() {
            let size = binary::read_mode(sh, &self.shape).1;
            params = params.slot_word(sizes_at + j, size as u32);
        }
        for (p, step) in self.steps.iter().enumerate() {
            params = params.slot_word(scalars_at + p, step.scalar.to_bits());
        }
        let buffers: Vec<&Storage> = self
            .inputs
            .iter()
            .map(|(s, _)| &**s)
            .chain(written.iter().map(|&p| &*self.steps[p].out))
            .collect();
        dev.dispatch(
            &kernel,
            &[],
            &params,
            &buffers,
            groups_for(n.div_ceil(4) as u64),
        );
    }
}

impl Device {
    /// Records the elementwise ops waiting in the forward-fusion chain (one
    /// kernel once their recipe has been seen): before anything else is
    /// recorded or submitted, since it may read their results. Holds the chain's lock while recording, so
    /// no other thread records work that reads them ahead of them.
    pub(crate) fn run_chain(&self) {
        if !self.in_chain {
            self.with_chain(|chains, runner| chains.run_waiting(runner));
        }
    }

    /// Runs `f` on the chain under its lock, with a handle whose dispatches
    /// do not run the chain again.
    pub(crate) fn with_chain(&self, f: impl FnOnce(&mut Chains, &Device)) {
        let runner = Device {
            shared: self.shared.clone(),
            dry: None,
            in_chain: true,
        };
        f(&mut self.shared.chain.locked(), &runner);
    }
}

/// Appends an elementwise op to `dev`'s chain, or returns false where ops
/// run at once (forward fusion off, or a dry-run handle): then the caller
/// dispatches it. `operands`: the op's inputs and their shapes; `out`, of
/// `shape`, is written when the chain runs, if still referenced then.
pub(crate) fn defer(
    dev: &Device,
    op: Elementwise,
    scalar: f32,
    operands: &[(&Arc<Storage>, &[usize])],
    out: &Arc<Storage>,
    shape: &[usize],
) -> bool {
    if dev.is_dry_run() || !dev.fused_forward() || numel(shape) == 0 {
        return false;
    }
    let limit = dev.max_storage_bindings();
    dev.with_chain(|chains, runner| {
        if let Some(chain) = chains.waiting.as_ref()
            && !chain.accepts(shape, operands, limit)
        {
            chains.run_waiting(runner);
        }
        let chain = chains.waiting.get_or_insert_with(|| Chain {
            shape: shape.to_vec(),
            inputs: Vec::new(),
            steps: Vec::new(),
        });
        chain.push(op, scalar, operands, out);
    });
    true
}
