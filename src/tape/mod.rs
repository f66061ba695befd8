//! The tape: tensors and the graph they record. A tensor is a buffer, a
//! shape and, when tracked, a node; recording a forward result links a node
//! to its inputs and keeps what the op's rule saves (`record.rs`). The one
//! circle between layers is here: a node records its `Op`, and an op's
//! front-end records a node (`ops` ↔ `tape`). Nothing here imports from
//! `autodiff` (`tests/layers.rs`).

pub(crate) mod graph;
mod interop;
#[cfg(feature = "ndarray")]
mod ndarray;
pub(crate) mod record;
pub(crate) mod tensor;
