//! Custom ops: the user's own WGSL forward and adjoint kernels, joined to
//! the graph as one more variant of the op match (`Op::Custom`), so they
//! take part in pruning, pooling, one submit per pass, `vjp_batched`,
//! chunking, Jacobians and `gradcheck` like any built-in op. The WGSL is
//! validated by naga and compiled when the op is defined
//! (`wgsl.rs`); `shaders/custom/prelude.wgsl` is the parameter
//! block and helpers a kernel may use.

use std::sync::Arc;

mod builder;
mod tangent;
mod wgsl;

use crate::error::{Result, invalid};
use crate::ops::{Contributions, Op, Saved, VjpCtx};
use crate::runtime::device::Device;
use crate::runtime::kernels::Params;
use crate::runtime::pool::Storage;
use crate::shape::{check_rank, numel};
use crate::tape::record::{check_operands, record};
use crate::tape::tensor::Tensor;
pub use builder::CustomOpBuilder;
pub(crate) use tangent::{curvature, jvp};
use wgsl::Entry;

/// Inputs a custom op may take (one shape slot each in the prelude).
pub const MAX_CUSTOM_INPUTS: usize = 4;
/// Scalars a custom op may take per application.
pub const MAX_CUSTOM_SCALARS: usize = 16;

/// A value a custom op's adjoint reads from the forward pass; the adjoint
/// kernel sees the saved values at bindings 3, 4, … in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CustomSave {
    /// Input i of the op.
    Input(usize),
    /// The op's output.
    Output,
}

/// The output shape from the inputs' shapes and the scalars; `Err` says why
/// they are refused (it becomes [`Error::InvalidArgument`]).
type ShapeRule =
    Arc<dyn Fn(&[&[usize]], &[f32]) -> std::result::Result<Vec<usize>, String> + Send + Sync>;

/// A defined custom op (see [`CustomOp`]).
pub(crate) struct CustomDef {
    pub name: String,
    dev: Device,
    inputs: usize,
    shape: ShapeRule,
    pub saves: Vec<Saved>,
    /// Output row b (axis 0) depends on row b of each input only.
    pub rowwise: bool,
    /// Linear in every input: the tangent is the forward of the tangent
    /// rows, and there is no curvature.
    linear: bool,
    forward: Entry,
    adjoints: Vec<Entry>,
    /// The `tangent` entry point, when given.
    tangent: Option<Entry>,
}

impl std::fmt::Debug for CustomDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "custom op `{}`", self.name)
    }
}

/// An op defined by the caller's own WGSL: a forward kernel, an adjoint
/// kernel per input that takes all K cotangents in one dispatch, a shape
/// rule and what the adjoint reads from the forward pass. Built with
/// [`CustomOp::builder`], applied with [`CustomOp::apply`]; the result
/// joins the graph like a built-in op (pruning, pooled buffers, one submit
/// per pass, `vjp_batched`, chunking under a memory budget, Jacobians,
/// [`crate::gradcheck`]). Per-example passes refuse custom ops unless
/// they are declared [`CustomOpBuilder::keeps_rows_apart`]: pullback
/// cannot tell from a kernel whether it keeps the examples apart.
///
/// # Conventions
///
/// pullback appends its prelude (`shaders/custom/prelude.wgsl`) after each
/// of the two WGSL sources, so error lines are the source's own. The
/// prelude declares the parameter block `pb` at `@group(0) @binding(0)`:
/// `pb.threads` (invocations with work), `pb.k`, `pb.input`, `pb.n_out`,
/// `pb.n_in`, `pb.out_rank`, and functions `pb_thread(wid, nwg,
/// local_index)` (this invocation's linear index: workgroups are spread
/// over x and y), `pb_scalar(i)`, `pb_out_dim(d)`, `pb_in_dim(i, d)`,
/// `pb_in_rank(i)`. Buffers are `array<f32>` in row-major order.
///
/// - **Forward source**, entry point `forward`: input i at binding `1 + i`
///   (`var<storage, read>`), the output at binding `1 + inputs`
///   (`var<storage, read_write>`). It runs `numel(output)` invocations
///   (`pb.threads`, rounded up to whole workgroups) and must write every
///   output element: buffers come from a pool and hold old values.
/// - **Adjoint source**, entry point `adjoint_i` for each input i: the
///   cotangents `[K, *out_shape]` at binding 1 (read), the contribution to
///   input i, `[K, *input_i_shape]`, at binding 2 (`read_write`, every
///   element must be written), the saved values at bindings 3, 4, … in
///   the order of [`CustomOpBuilder::saves`]. It runs `K · numel(input i)`
///   invocations, one dispatch for all K: invocation t computes row
///   `t / pb.n_in`, element `t % pb.n_in`.
/// - Workgroup sizes are literal (`@workgroup_size(64)`); group 0 only;
///   at most 4 inputs, 16 scalars, rank 6.
/// - Keep each invocation's loops short: lavapipe (llvmpipe) silently
///   stops an invocation's loops after 65535 iterations in all.
///
/// The WGSL is parsed, validated and compiled when the op is built; a
/// mistake comes back as [`Error::Wgsl`](crate::Error::Wgsl) with naga's message and line.
/// `examples/custom_op.rs` is a complete op (a diffusion stencil).
///
/// A complete op, `y = s·a` for a scalar s, with its adjoint `ā = s·ȳ`
/// (row by row, all K rows in one dispatch):
///
/// ```
/// # fn main() -> pullback::Result<()> {
/// use pullback::CustomOp;
/// const FORWARD: &str = "
/// @group(0) @binding(1) var<storage, read> a: array<f32>;
/// @group(0) @binding(2) var<storage, read_write> out: array<f32>;
/// @compute @workgroup_size(64)
/// fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
///            @builtin(local_invocation_index) li: u32) {
///     let t = pb_thread(wid, nwg, li);
///     if (t >= pb.threads) { return; }
///     out[t] = pb_scalar(0u) * a[t];
/// }";
/// const ADJOINT: &str = "
/// @group(0) @binding(1) var<storage, read> cot: array<f32>;
/// @group(0) @binding(2) var<storage, read_write> res: array<f32>;
/// @compute @workgroup_size(64)
/// fn adjoint_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
///              @builtin(local_invocation_index) li: u32) {
///     let t = pb_thread(wid, nwg, li);
///     if (t >= pb.threads) { return; }
///     res[t] = pb_scalar(0u) * cot[t];
/// }";
/// let dev = pullback::Device::new()?;
/// let scale = CustomOp::builder("scale")
///     .forward(FORWARD)
///     .adjoint(ADJOINT)
///     .linear() // forward mode and HVPs through it too
///     .build(&dev)?;
/// let x = dev.tensor(&[1.0, 2.0], &[2])?.requires_grad();
/// let y = scale.apply(&[&x], &[3.0])?;
/// assert_eq!(y.to_vec()?, vec![3.0, 6.0]);
/// let v = dev.tensor(&[1.0, 0.0, 0.0, 1.0], &[2, 2])?; // K = 2 cotangents
/// let g = pullback::vjp_batched(&[&y], &[&v], &[&x])?;
/// assert_eq!(g[0].to_vec()?, vec![3.0, 0.0, 0.0, 3.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CustomOp {
    def: Arc<CustomDef>,
}

impl CustomOp {
    /// Starts describing an op called `name` (used in messages). Defaults:
    /// one input, output shaped like input 0, nothing saved.
    pub fn builder(name: &str) -> CustomOpBuilder {
        CustomOpBuilder {
            name: name.to_string(),
            forward: None,
            adjoint: None,
            tangent: None,
            inputs: 1,
            shape: None,
            saves: Vec::new(),
            rowwise: false,
            linear: false,
        }
    }

    /// The name given to [`CustomOp::builder`].
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Runs the forward kernel on `inputs` with `scalars` (readable in WGSL
    /// as `pb_scalar(i)`); the result is tracked when any input is.
    pub fn apply(&self, inputs: &[&Tensor], scalars: &[f32]) -> Result<Tensor> {
        let def = &*self.def;
        let refuse = |reason: String| invalid("custom op", format!("`{}`: {reason}", def.name));
        if inputs.len() != def.inputs {
            return Err(refuse(format!(
                "it takes {} inputs, {} were given",
                def.inputs,
                inputs.len()
            )));
        }
        if scalars.len() > MAX_CUSTOM_SCALARS {
            return Err(refuse(format!(
                "{} scalars given; at most {MAX_CUSTOM_SCALARS}",
                scalars.len()
            )));
        }
        let (first, rest) = inputs
            .split_first()
            .ok_or_else(|| refuse("no inputs".into()))?;
        check_operands(first, rest)?;
        def.dev.check_same(first.device())?;
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let out_shape = (def.shape)(&shapes, scalars).map_err(refuse)?;
        check_rank("custom op", &out_shape)?;
        let n = numel(&out_shape);
        let dev = &def.dev;
        let out = dev.alloc("custom op output", n)?;
        if n > 0 {
            let params = params(n, 1, 0, &out_shape, &shapes, scalars);
            let mut buffers: Vec<&Storage> = inputs.iter().map(|t| &*t.inner.data).collect();
            buffers.push(&out);
            def.forward.dispatch(dev, n, params, &buffers);
        }
        let op = Op::Custom(self.def.clone(), scalars.into());
        record(dev, op, inputs, out, out_shape)
    }
}

/// The prelude's `PbParams` (word 2, the workgroup size, is set per entry).
pub(super) fn params(
    threads: usize,
    k: usize,
    input: usize,
    out_shape: &[usize],
    in_shapes: &[&[usize]],
    scalars: &[f32],
) -> Params {
    let mut p = Params::new(threads, k)
        .word(3, input as u32)
        .word(4, numel(out_shape) as u32)
        .word(5, numel(in_shapes[input]) as u32)
        .word(6, out_shape.len() as u32);
    let mut ranks = 0u32;
    // Shapes are padded with 1s to 8 dims; input i's at word 16 + 8i.
    let put_shape = |p: Params, base: usize, shape: &[usize]| {
        (0..8).fold(p, |p, d| {
            p.word(base + d, shape.get(d).copied().unwrap_or(1) as u32)
        })
    };
    p = put_shape(p, 8, out_shape);
    for (i, s) in in_shapes.iter().enumerate() {
        ranks |= (s.len() as u32) << (8 * i);
        p = put_shape(p, 16 + 8 * i, s);
    }
    p = p.word(7, ranks);
    for (i, s) in scalars.iter().enumerate() {
        p = p.word(48 + i, s.to_bits());
    }
    p
}

/// Each needed input's contribution: `adjoint_i` over `K · numel(input i)`
/// invocations, reading the K cotangents and the saved values.
pub(crate) fn vjp(cx: &VjpCtx, def: &CustomDef, scalars: &[f32]) -> Result<Contributions> {
    let shapes: Vec<&[usize]> = cx.inputs.iter().map(|i| &i.shape[..]).collect();
    let mut out = vec![None; shapes.len()];
    for (i, slot) in out.iter_mut().enumerate() {
        if !cx.needs[i] {
            continue;
        }
        let threads = cx.k * numel(shapes[i]);
        let c = cx.dev.alloc("custom op contribution", threads)?;
        if threads > 0 {
            let params = params(threads, cx.k, i, cx.out_shape, &shapes, scalars);
            let mut buffers: Vec<&Storage> = vec![cx.g, &c];
            buffers.extend(cx.saved.iter().map(|s| &**s));
            def.adjoints[i].dispatch(cx.dev, threads, params, &buffers);
        }
        *slot = Some(Arc::new(c));
    }
    Ok(out)
}
