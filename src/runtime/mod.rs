//! The runtime: a device and what it owns (adapter, queue, buffer pool and
//! staging buffers, pipeline cache, the pending encoder, the knobs and the
//! counters). It knows no tensor, no op and no graph: it records dispatches
//! of kernels over buffers, submits them and reads buffers back. Nothing
//! here imports from `tape`, `ops` or `autodiff` (`tests/layers.rs`).

pub(crate) mod adapter;
pub(crate) mod counters;
pub(crate) mod device;
pub(crate) mod encoder;
mod idle;
pub(crate) mod kernels;
mod memory;
pub(crate) mod params;
pub(crate) mod pool;
mod readback;
mod settings;
mod staging;
mod upload;
mod warm;
