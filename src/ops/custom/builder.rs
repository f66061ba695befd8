//! Describing a custom op: its WGSL sources (forward, adjoint, and for
//! forward mode a tangent), inputs, shape rule, saved values, and what it
//! promises (rows kept apart, linearity). [`CustomOpBuilder::build`]
//! validates and compiles it (`wgsl.rs`).

use std::sync::Arc;

use super::wgsl;
use super::{CustomDef, CustomOp, CustomSave, MAX_CUSTOM_INPUTS, ShapeRule};
use crate::error::{Error, Result, invalid};
use crate::ops::Saved;
use crate::runtime::device::Device;
use crate::runtime::kernels::Access;

/// Describes a [`CustomOp`]; [`CustomOpBuilder::build`] validates it.
pub struct CustomOpBuilder {
    pub(super) name: String,
    pub(super) forward: Option<String>,
    pub(super) adjoint: Option<String>,
    pub(super) tangent: Option<String>,
    pub(super) inputs: usize,
    pub(super) shape: Option<ShapeRule>,
    pub(super) saves: Vec<CustomSave>,
    pub(super) rowwise: bool,
    pub(super) linear: bool,
}

impl CustomOpBuilder {
    /// The forward WGSL source (entry point `forward`).
    pub fn forward(mut self, wgsl: &str) -> Self {
        self.forward = Some(wgsl.to_string());
        self
    }

    /// The adjoint WGSL source (entry points `adjoint_0`, `adjoint_1`, …).
    pub fn adjoint(mut self, wgsl: &str) -> Self {
        self.adjoint = Some(wgsl.to_string());
        self
    }

    /// The number of inputs, 1 to 4 (default 1).
    pub fn inputs(mut self, n: usize) -> Self {
        self.inputs = n;
        self
    }

    /// The output shape from the inputs' shapes and the scalars (default:
    /// input 0's shape); an `Err` message is returned to the caller of
    /// [`CustomOp::apply`].
    pub fn shape(
        mut self,
        rule: impl Fn(&[&[usize]], &[f32]) -> std::result::Result<Vec<usize>, String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.shape = Some(Arc::new(rule));
        self
    }

    /// What the adjoint reads from the forward pass (default: nothing),
    /// bound at 3, 4, … in this order. The values are kept until the
    /// backward pass uses them, and freed then.
    pub fn saves(mut self, saves: &[CustomSave]) -> Self {
        self.saves = saves.to_vec();
        self
    }

    /// The tangent WGSL source (forward mode, `jvp`): entry point `tangent`,
    /// the K tangent rows of input i (`[K, *input_i]`, zeros where an input
    /// has none) at binding `1 + i`, the output's K tangent rows at binding
    /// `1 + inputs` (every element must be written), the saved values from
    /// `2 + inputs` on, in the order of [`CustomOpBuilder::saves`]. It runs
    /// `K · numel(output)` invocations, one dispatch for all K: invocation
    /// t computes row `t / pb.n_out`, element `t % pb.n_out`.
    pub fn tangent(mut self, wgsl: &str) -> Self {
        self.tangent = Some(wgsl.to_string());
        self
    }

    /// Declares the op linear in every input (a stencil, a transform): its
    /// tangent is its forward applied to each tangent row (one dispatch per
    /// row: give [`CustomOpBuilder::tangent`] for one dispatch in all), and
    /// it adds no curvature to Hessian-vector products. Without it or a
    /// tangent, `jvp` through the op is an error that says so; without it,
    /// `hvp` is.
    pub fn linear(mut self) -> Self {
        self.linear = true;
        self
    }

    /// Declares that the op keeps rows apart along axis 0: output row b
    /// depends on row b of every input only (every input has the output's
    /// axis 0). Per-example passes (`per_example_grads`) then accept the op,
    /// with the inputs' axis 0 as the example axis; without it they refuse
    /// custom ops, since pullback cannot read that from the kernels.
    pub fn keeps_rows_apart(mut self) -> Self {
        self.rowwise = true;
        self
    }

    /// Validates both sources with naga, checks entry points and bindings
    /// against the conventions of [`CustomOp`] and compiles the kernels on
    /// `dev`. Errors: [`Error::Wgsl`] with naga's message and line, or
    /// [`Error::InvalidArgument`] for counts out of range.
    pub fn build(self, dev: &Device) -> Result<CustomOp> {
        let name = self.name;
        let refuse = |reason: String| invalid("custom op", format!("`{name}`: {reason}"));
        if !(1..=MAX_CUSTOM_INPUTS).contains(&self.inputs) {
            return Err(refuse(format!(
                "{} inputs; a custom op takes 1 to {MAX_CUSTOM_INPUTS}",
                self.inputs
            )));
        }
        let n = self.inputs;
        let saves = self
            .saves
            .iter()
            .map(|s| match *s {
                CustomSave::Input(i) if i < n => Ok(Saved::Input(i)),
                CustomSave::Input(i) => {
                    Err(refuse(format!("it saves input {i}, but takes {n} inputs")))
                }
                CustomSave::Output => Ok(Saved::Output),
            })
            .collect::<Result<Vec<_>>>()?;
        let missing = |what: &str| Error::Wgsl {
            op: name.clone(),
            message: format!("no {what} source was given (CustomOpBuilder::{what})"),
        };
        let forward_src = self.forward.ok_or_else(|| missing("forward"))?;
        let adjoint_src = self.adjoint.ok_or_else(|| missing("adjoint"))?;
        let mut fwd_bindings: Vec<(u32, Access)> =
            (1..=n as u32).map(|b| (b, Access::Read)).collect();
        fwd_bindings.push((1 + n as u32, Access::Write));
        let mut adj_bindings = vec![(1, Access::Read), (2, Access::Write)];
        adj_bindings.extend((0..saves.len() as u32).map(|j| (3 + j, Access::Read)));
        let forward = wgsl::compile(
            dev,
            &name,
            "forward",
            &forward_src,
            &[("forward".to_string(), fwd_bindings)],
        )?;
        let adjoints = wgsl::compile(
            dev,
            &name,
            "adjoint",
            &adjoint_src,
            &(0..n)
                .map(|i| (format!("adjoint_{i}"), adj_bindings.clone()))
                .collect::<Vec<_>>(),
        )?;
        let forward = forward
            .into_iter()
            .next()
            .ok_or_else(|| missing("forward"))?;
        let tangent = match &self.tangent {
            None => None,
            Some(src) => {
                let mut bindings: Vec<(u32, Access)> =
                    (1..=n as u32).map(|b| (b, Access::Read)).collect();
                bindings.push((1 + n as u32, Access::Write));
                bindings.extend((0..saves.len() as u32).map(|j| (2 + n as u32 + j, Access::Read)));
                let entries = [("tangent".to_string(), bindings)];
                wgsl::compile(dev, &name, "tangent", src, &entries)?
                    .into_iter()
                    .next()
            }
        };
        Ok(CustomOp {
            def: Arc::new(CustomDef {
                name,
                dev: dev.clone(),
                inputs: n,
                shape: self
                    .shape
                    .unwrap_or_else(|| Arc::new(|shapes, _| Ok(shapes[0].to_vec()))),
                saves,
                rowwise: self.rowwise,
                linear: self.linear,
                forward,
                adjoints,
                tangent,
            }),
        })
    }
}
