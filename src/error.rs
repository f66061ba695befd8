//! The one error type of pullback. Every variant's message says what went
//! wrong and what to do about it; after any error the device stays usable.

use std::fmt;

/// Result alias used by every fallible pullback call.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in pullback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No GPU or software adapter could be found at all.
    NoAdapter,
    /// `PULLBACK_ADAPTER` (or the options) asked for an adapter that is not present.
    AdapterNotFound {
        /// The requested name substring (or `software`).
        wanted: String,
        /// Every compute-capable adapter found, as `name (backend, type)`.
        available: Vec<String>,
    },
    /// The adapter refused to create a device.
    RequestDevice(String),
    /// Two operands' shapes cannot be combined (binary ops, matmul, concat, ...).
    ShapeMismatch {
        /// The op that refused them.
        op: &'static str,
        /// The first operand's shape.
        lhs: Vec<usize>,
        /// The second operand's shape.
        rhs: Vec<usize>,
    },
    /// A shape, axis or argument is invalid on its own (rank too high, axis out of range, ...).
    InvalidArgument {
        /// The op (or function) that refused it.
        op: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// Host data whose length does not match the requested shape.
    DataLength {
        /// The product of the shape's dimensions.
        expected: usize,
        /// The number of values given.
        got: usize,
    },
    /// A cotangent whose shape is not the one its output needs.
    CotangentShape {
        /// Position of the cotangent (and its output) in the call.
        index: usize,
        /// The output's shape, with the leading K for `vjp_batched`.
        expected: Vec<usize>,
        /// The cotangent's shape.
        got: Vec<usize>,
    },
    /// A different number of cotangents than outputs.
    CotangentCount {
        /// Outputs given.
        outputs: usize,
        /// Cotangents given.
        cotangents: usize,
    },
    /// `backward()` on an output with more than one element.
    NonScalarBackward {
        /// The output's shape.
        shape: Vec<usize>,
    },
    /// A tensor that gradients were asked for (or backward started from) is not tracked.
    NotTracked {
        /// Which tensor: its role in the call and its position.
        what: String,
    },
    /// Tensors from two different `Device`s were combined.
    DeviceMismatch,
    /// A buffer larger than the adapter allows.
    TooLarge {
        /// What the buffer would hold.
        what: String,
        /// Bytes it needs.
        bytes: u64,
        /// The adapter's limit that applies (binding or buffer size).
        limit: u64,
    },
    /// Not even one cotangent row of a pass fits the device's memory budget
    /// ([`crate::Device::set_memory_budget`]).
    MemoryBudget {
        /// Working bytes of a one-row chunk of the pass.
        row_bytes: u64,
        /// The budget in force.
        budget: u64,
    },
    /// An allocation did not fit: past the device's memory limit
    /// ([`crate::Device::set_memory_limit`]), or the driver ran out of memory
    /// even after the pool released its idle buffers. Nothing is lost: the
    /// tensors made before keep their values and the device keeps working.
    OutOfMemory {
        /// Bytes the allocation asked for (its size class).
        requested: u64,
        /// Bytes held by live tensors, saved values and cotangents when it failed.
        live: u64,
    },
    /// A graph that mixes examples was given to a per-example computation.
    MixesExamples {
        /// The op whose use mixes rows of the example axis.
        op: &'static str,
        /// How it mixes them.
        reason: String,
    },
    /// A custom op's WGSL failed to parse or validate, breaks the binding
    /// conventions of [`crate::CustomOp`], or the driver refused it.
    Wgsl {
        /// The custom op's name.
        op: String,
        /// naga's (or wgpu's) message, with the source line where known.
        message: String,
    },
    /// A custom op lacks the rule a computation through it needs.
    MissingRule {
        /// The custom op's name.
        op: String,
        /// What needs the rule: forward mode (`jvp`) or second order (`hvp`).
        needed_by: &'static str,
        /// The [`crate::CustomOpBuilder`] call that provides it.
        builder: &'static str,
    },
    /// A tangent (or a direction) whose shape is not the one its input needs.
    TangentShape {
        /// Position of the tangent (and its input) in the call.
        index: usize,
        /// The input's shape, with the leading K for the batched calls.
        expected: Vec<usize>,
        /// The tangent's shape.
        got: Vec<usize>,
    },
    /// A different number of tangents (or directions) than inputs.
    TangentCount {
        /// Inputs given.
        inputs: usize,
        /// Tangents given.
        tangents: usize,
    },
    /// The GPU device was lost (driver reset, unplugged, destroyed).
    DeviceLost(String),
    /// The GPU ran out of memory or reported an error for an operation.
    Gpu(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter => write!(
                f,
                "no GPU or software adapter found. Install a Vulkan driver; on a machine \
                 without a GPU install Mesa's lavapipe (Debian/Ubuntu: `sudo apt-get update && \
                 sudo apt-get install -y mesa-vulkan-drivers`), or run `scripts/with-adapter` \
                 from the pullback repository, which does this for you"
            ),
            Error::AdapterNotFound { wanted, available } => write!(
                f,
                "no adapter matches PULLBACK_ADAPTER={wanted:?} (a case-insensitive substring of \
                 the adapter name, or `software` for a CPU adapter such as lavapipe); available: \
                 [{}]. Unset PULLBACK_ADAPTER or pick one of these; to get a software adapter \
                 install Mesa's lavapipe (`apt-get install -y mesa-vulkan-drivers`)",
                available.join(", ")
            ),
            Error::RequestDevice(msg) => {
                write!(
                    f,
                    "the adapter refused to create a device: {msg}; try another adapter with PULLBACK_ADAPTER"
                )
            }
            Error::ShapeMismatch { op, lhs, rhs } => write!(
                f,
                "{op}: shapes {lhs:?} and {rhs:?} are incompatible; make them equal or \
                 broadcastable (NumPy rules: align on the right, each dimension equal or 1)"
            ),
            Error::InvalidArgument { op, reason } => write!(f, "{op}: {reason}"),
            Error::DataLength { expected, got } => write!(
                f,
                "data has {got} elements but the shape needs {expected}; pass as many values as \
                 the product of the shape's dimensions"
            ),
            Error::CotangentShape {
                index,
                expected,
                got,
            } => write!(
                f,
                "cotangent {index} has shape {got:?} but its output needs {expected:?} (for \
                 vjp_batched: [K, *output.shape], K cotangents stacked on a leading axis)"
            ),
            Error::CotangentCount {
                outputs,
                cotangents,
            } => write!(
                f,
                "{cotangents} cotangents given for {outputs} outputs; pass exactly one per output"
            ),
            Error::NonScalarBackward { shape } => write!(
                f,
                "backward() needs a scalar output (one element), but this output has shape \
                 {shape:?}; pass a cotangent of the output's shape with backward_with(&v) \
                 (v = ones for the summed gradient), or reduce to a scalar first"
            ),
            Error::NotTracked { what } => write!(
                f,
                "{what} does not require grad; call .requires_grad() on the leaf tensors before \
                 computing with them"
            ),
            Error::DeviceMismatch => write!(
                f,
                "tensors from two different devices were combined; create all tensors of one \
                 computation on the same Device"
            ),
            Error::TooLarge { what, bytes, limit } => write!(
                f,
                "{what} needs {bytes} bytes but the adapter allows at most {limit} bytes per \
                 buffer; split the work into smaller tensors or use an adapter with larger limits"
            ),
            Error::MemoryBudget { row_bytes, budget } => write!(
                f,
                "one cotangent row of this pass needs {row_bytes} bytes of working memory, more \
                 than the device's memory budget of {budget} bytes; raise the budget with \
                 Device::set_memory_budget (or clear it), or differentiate a smaller graph"
            ),
            Error::OutOfMemory { requested, live } => write!(
                f,
                "out of GPU memory: an allocation of {requested} bytes did not fit, with {live} \
                 bytes held by live tensors (idle pooled buffers were released first); drop \
                 tensors you no longer need, lower the memory limit's demand with a memory \
                 budget (Device::set_memory_budget splits a pass into chunks), raise \
                 Device::set_memory_limit if it is set, or use smaller sizes. Tensors made \
                 before are intact and the device still works"
            ),
            Error::MixesExamples { op, reason } => write!(
                f,
                "per-example gradients: `{op}` mixes examples: {reason}. Per-example gradients \
                 need every value to keep example b in row b of axis 0 from the data to the \
                 loss; compute this part per example, or use vjp_batched with one-hot \
                 cotangents (one row per example)"
            ),
            Error::MissingRule {
                op,
                needed_by,
                builder,
            } => write!(
                f,
                "custom op `{op}` has no rule for {needed_by}; declare one with \
                 CustomOpBuilder::{builder} (see pullback::CustomOp)"
            ),
            Error::TangentShape {
                index,
                expected,
                got,
            } => write!(
                f,
                "tangent {index} has shape {got:?} but its input needs {expected:?} (for \
                 jvp_batched and hvp_batched: [K, *input.shape], K directions stacked on a \
                 leading axis)"
            ),
            Error::TangentCount { inputs, tangents } => write!(
                f,
                "{tangents} tangents given for {inputs} inputs; pass exactly one per input, \
                 shaped like it"
            ),
            Error::DeviceLost(msg) => write!(
                f,
                "the GPU device was lost ({msg}); its tensors are gone and every call on it \
                 fails: create a new Device and rebuild the tensors"
            ),
            Error::Wgsl { op, message } => write!(
                f,
                "custom op `{op}`: {message}\n(entry points, bindings and the prelude a kernel \
                 may use are documented on pullback::CustomOp)"
            ),
            Error::Gpu(msg) => write!(
                f,
                "the GPU reported an error: {msg}; free tensors you no longer need or use \
                 smaller sizes"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op,
        reason: reason.into(),
    }
}
