//! Differentiation: a pass is a plan (`plan.rs`) executed by one
//! scheduler (`scheduler.rs`) from one entry (`chunk.rs`'s `Pass`), after
//! one argument check (`request.rs`). Every traversal is a mode of the one
//! plan ([`plan::Sweep`]): reverse mode (the scheduler itself), forward
//! mode (`forward.rs`), second order (`second_order.rs`), each adding what
//! reaches a node in one place (`sums.rs`). The front-ends: `backward.rs`
//! (into leaves' `grad`), `vjp.rs`, `jvp.rs`, `jacobian.rs` (either mode),
//! `hessian.rs`, `gauss_newton.rs` and `per_example/`; `gradcheck.rs`
//! checks them against finite differences; `fusion/` runs elementwise
//! regions of a pass as one kernel. This layer sits on top: nothing below
//! imports from it (`tests/layers.rs`).

mod backward;
mod chunk;
mod forward;
mod fusion;
pub(crate) mod gauss_newton;
pub(crate) mod gradcheck;
pub(crate) mod hessian;
pub(crate) mod jacobian;
pub(crate) mod jvp;
pub(crate) mod per_example;
mod plan;
mod request;
mod scheduler;
mod second_order;
mod sums;
pub(crate) mod vjp;
