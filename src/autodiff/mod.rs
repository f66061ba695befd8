//! Differentiation: a pass is a plan (`plan.rs`) executed by one
//! scheduler (`scheduler.rs`) from one entry (`chunk.rs`'s `Pass`), after
//! one argument check (`request.rs`). Reverse mode's front-ends are
//! `backward.rs` (into leaves' `grad`), `vjp.rs`, `jacobian.rs` and
//! `per_example/`; `gradcheck.rs` checks any of them against finite
//! differences; `fusion/` runs elementwise regions of a pass as one kernel.
//! Every traversal is a mode of the one plan, not a second scheduler. This
//! layer sits on top: nothing below imports from it (`tests/layers.rs`).

mod backward;
mod chunk;
mod fusion;
pub(crate) mod gradcheck;
pub(crate) mod jacobian;
pub(crate) mod per_example;
mod plan;
mod request;
mod scheduler;
pub(crate) mod vjp;
