//! Forward fusion. Elementwise ops (unary, binary with broadcasting,
//! scalar ops) are not dispatched when called: each is appended to the
//! device's chain (held by [`ForwardFusion`], the device's deferred hook),
//! with its output buffer allocated at once (so every error is reported by
//! the call that causes it, and the tensor exists). When anything else is
//! about to be recorded or submitted (another kernel, a copy, a readback,
//! a flush), the device runs the hook, and the chain runs as one kernel
//! (`chain_kernel.rs`): it reads each input once, keeps intermediates in
//! registers, and writes only the outputs still referenced outside the
//! chain (a tensor
//! the caller holds, a value a graph node saved). `sin(x)·exp(x)` with
//! its temporaries dropped reads x and writes the product: one kernel
//! instead of three, a third of the bytes.
//!
//! When to compose a chain is a choice of what to compile. A chain seen
//! before runs as one kernel (a training loop fuses from its second step
//! at the latest). The first time, its ops run their own kernels when at
//! most one of those is still to be compiled: a program that makes each
//! chain once, as a random-graph test does, compiles the few per-op
//! kernels and nothing per chain. When two or more are, the chain is
//! composed at once: one compile instead of several (W10's
//! `tanh(sin(x)·exp(x))` on lavapipe: one of about 35 ms instead of four
//! of about 20), and the per-op kernels it stood in for are not counted
//! as missing again, so first-sight compositions number at most half the
//! per-op kernels. A chain of one op always runs the op's own kernel. Chains
//! hold ops of one output shape; a different shape, or a chain at its
//! binding or parameter limits, runs the chain first and starts a new one.
//! The composed module is named by its recipe, so the pipeline cache
//! compiles each chain's shape of computation once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::lock::Recover;
use crate::ops::elementwise::chain_kernel::{Arg, ChainRecipe};
use crate::ops::elementwise::codegen::{Composed, Layout};
use crate::ops::elementwise::{Elementwise, ReadMode, binary, unary};
use crate::runtime::device::{Deferred, Device};
use crate::runtime::kernels::{PipelineKey, pipeline_key};
use crate::runtime::pool::Storage;
use crate::shape::numel;

/// Ops in one chain (each takes a scalar word of the parameter block).
const MAX_OPS: usize = 16;
/// Recipes remembered as seen; past this many the memory starts afresh
/// (a program that makes new chains forever should not grow it forever).
const MAX_SEEN: usize = 4096;

/// An op waiting in a chain: its output is allocated, its value not yet
/// written.
struct ChainOp {
    op: Elementwise,
    scalar: f32,
    args: Vec<Arg>,
    out: Arc<Storage>,
}

/// Elementwise ops waiting to run, all of one output shape.
struct Chain {
    shape: Vec<usize>,
    inputs: Vec<(Arc<Storage>, Vec<usize>)>,
    ops: Vec<ChainOp>,
}

/// A device's forward-fusion state, registered as its deferred hook (see
/// `runtime/device.rs`): the chain waiting to run, and the recipes seen so
/// far (a recipe seen before runs as one kernel).
#[derive(Default)]
pub(crate) struct ForwardFusion {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: Option<Chain>,
    sightings: Sightings,
}

/// What a device's chains have taught it: the recipes seen so far, and the
/// per-op kernels a first-sight composition stood in for (each waived
/// once: a later chain compiles them rather than compose again).
#[derive(Default)]
struct Sightings {
    seen: HashSet<String>,
    waived: HashSet<PipelineKey>,
}

impl Deferred for ForwardFusion {
    /// Records the waiting chain, under the state's lock, so that no other
    /// thread records work that reads its results ahead of it.
    fn run(&self, runner: &Device) {
        self.state.locked().run_waiting(runner);
    }
}

impl State {
    fn run_waiting(&mut self, runner: &Device) {
        if let Some(chain) = self.waiting.take() {
            chain.run(runner, &mut self.sightings);
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
        if shape != self.shape || self.ops.len() >= MAX_OPS {
            return false;
        }
        let new: Vec<&(&Arc<Storage>, &[usize])> = operands
            .iter()
            .filter(|(s, sh)| self.op_of(s).is_none() && self.input_of(s, sh).is_none())
            .collect();
        let mut modes = self.modes();
        modes.extend(new.iter().map(|(_, sh)| ReadMode::of(sh, shape).0));
        // Every op may have to be written: inputs + ops bindings.
        Layout::new(&modes).fits(self.ops.len() + 1)
            && self.inputs.len() + new.len() + self.ops.len() < limit
    }

    fn op_of(&self, storage: &Arc<Storage>) -> Option<usize> {
        self.ops.iter().position(|s| Arc::ptr_eq(&s.out, storage))
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
            .map(|(s, sh)| match (self.op_of(s), self.input_of(s, sh)) {
                // An op's value has the chain's shape; a view of it with
                // leading axes of 1 added or dropped reads the same values.
                (Some(p), _) => Arg::Op(p),
                (None, Some(j)) => Arg::Input(j),
                (None, None) => {
                    self.inputs.push(((*s).clone(), sh.to_vec()));
                    Arg::Input(self.inputs.len() - 1)
                }
            })
            .collect();
        self.ops.push(ChainOp {
            op,
            scalar,
            args,
            out: out.clone(),
        });
    }

    /// How the kernel reads each input.
    fn modes(&self) -> Vec<ReadMode> {
        self.inputs
            .iter()
            .map(|(_, sh)| ReadMode::of(sh, &self.shape).0)
            .collect()
    }

    /// Runs the chain, writing the values still referenced elsewhere (the
    /// chain holds one reference to each); nothing when none is. A chain
    /// seen before runs as one composed kernel; the first time, its ops
    /// run their own kernels unless two or more of those would be compiled
    /// for it (the module's doc). `dev` must not run deferred work again.
    fn run(self, dev: &Device, sightings: &mut Sightings) {
        let written: Vec<usize> = (0..self.ops.len())
            .filter(|&p| Arc::strong_count(&self.ops[p].out) > 1)
            .collect();
        if written.is_empty() {
            return;
        }
        if self.ops.len() == 1 {
            return self.run_ops(dev, &[true]);
        }
        let recipe = ChainRecipe {
            layout: Layout::new(&self.modes()),
            ops: self.ops.iter().map(|s| (s.op, s.args.clone())).collect(),
            written,
        };
        let name = recipe.signature();
        if sightings.seen.contains(&name) {
            return self.dispatch(dev, &recipe, &name);
        }
        if sightings.seen.len() >= MAX_SEEN {
            sightings.seen.clear();
        }
        sightings.seen.insert(name.clone());
        // Each op on its own, skipping those whose value nothing needs.
        let mut live: Vec<bool> = (0..self.ops.len())
            .map(|p| recipe.written.contains(&p))
            .collect();
        for p in (0..self.ops.len()).rev() {
            if live[p] {
                for a in &self.ops[p].args {
                    if let Arg::Op(q) = a {
                        live[*q] = true;
                    }
                }
            }
        }
        let missing = self.missing_kernels(dev, &live, &sightings.waived);
        if missing.len() >= 2 {
            sightings.waived.extend(missing);
            return self.dispatch(dev, &recipe, &name);
        }
        self.run_ops(dev, &live);
    }

    /// The distinct per-op kernels the live ops would run that are neither
    /// compiled nor waived.
    fn missing_kernels(
        &self,
        dev: &Device,
        live: &[bool],
        waived: &HashSet<PipelineKey>,
    ) -> Vec<PipelineKey> {
        let mut missing = Vec::new();
        for (op, _) in self.ops.iter().zip(live).filter(|(_, l)| **l) {
            let key = match op.op {
                Elementwise::Unary(u) => {
                    let (kernel, constants) = unary::forward_variant(u);
                    pipeline_key(kernel, &constants)
                }
                Elementwise::Binary(binary) => {
                    let (a, b) = (self.operand(&op.args[0]).1, self.operand(&op.args[1]).1);
                    let (kernel, constants) = binary::forward_variant(binary, a, b, &self.shape);
                    pipeline_key(kernel, &constants)
                }
            };
            if !dev.is_compiled(&key) && !waived.contains(&key) && !missing.contains(&key) {
                missing.push(key);
            }
        }
        missing
    }

    /// An op's argument: its buffer and shape.
    fn operand(&self, a: &Arg) -> (&Storage, &[usize]) {
        match *a {
            Arg::Input(j) => (&*self.inputs[j].0, self.inputs[j].1.as_slice()),
            Arg::Op(q) => (&*self.ops[q].out, self.shape.as_slice()),
        }
    }

    /// Runs op p with its own kernel where `live[p]`.
    fn run_ops(&self, dev: &Device, live: &[bool]) {
        for (op, _) in self.ops.iter().zip(live).filter(|(_, l)| **l) {
            match op.op {
                Elementwise::Unary(u) => {
                    let (x, _) = self.operand(&op.args[0]);
                    unary::forward_kernel(dev, u, op.scalar, x, &op.out, numel(&self.shape));
                }
                Elementwise::Binary(b) => binary::forward_kernel(
                    dev,
                    b,
                    self.operand(&op.args[0]),
                    self.operand(&op.args[1]),
                    &op.out,
                    &self.shape,
                ),
            }
        }
    }

    /// Records the composed kernel of `recipe`, named `name`.
    fn dispatch(&self, dev: &Device, recipe: &ChainRecipe, name: &str) {
        let shapes: Vec<&[usize]> = self.inputs.iter().map(|(_, sh)| sh.as_slice()).collect();
        let scalars: Vec<f32> = self.ops.iter().map(|s| s.scalar).collect();
        let params = recipe.layout.params(&self.shape, 1, &shapes, &scalars);
        let buffers: Vec<&Storage> = (self.inputs.iter().map(|(s, _)| &**s))
            .chain(recipe.written.iter().map(|&p| &*self.ops[p].out))
            .collect();
        let kernel = Composed {
            name,
            entry: "fused_forward",
            reads: self.inputs.len(),
            writes: recipe.written.len(),
            entry_source: &|| recipe.entry_source(),
        };
        kernel.dispatch(dev, &[], &params, &buffers, (numel(&self.shape), 1));
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
    let Some(fusion) = dev.deferred(ForwardFusion::default) else {
        return false;
    };
    let limit = dev.max_storage_bindings();
    // The chain is recorded under its lock, through a handle that does not
    // run the hook (this lock) again.
    let runner = dev.deferred_runner();
    let mut state = fusion.state.locked();
    if let Some(chain) = state.waiting.as_ref()
        && !chain.accepts(shape, operands, limit)
    {
        state.run_waiting(&runner);
    }
    let chain = state.waiting.get_or_insert_with(|| Chain {
        shape: shape.to_vec(),
        inputs: Vec::new(),
        ops: Vec::new(),
    });
    chain.push(op, scalar, operands, out);
    true
}
