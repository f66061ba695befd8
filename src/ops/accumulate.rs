//! The scheduler's accumulation of contributions (`shaders/accumulate.wgsl`):
//! in place when it holds the only reference to the accumulator, otherwise
//! into a new buffer. Plain sums over `len` values, no broadcasting.

use crate::error::Result;
use crate::ops::shaders::ACCUMULATE;
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Params, groups_for};
use crate::runtime::pool::Storage;

const ADD_INTO: Kernel = Kernel {
    module: &ACCUMULATE,
    entry: "add_into",
    bindings: &[(1, Access::Read), (2, Access::Write)],
};
const ADD: Kernel = Kernel {
    module: &ACCUMULATE,
    entry: "add",
    bindings: &[(1, Access::Read), (2, Access::Write), (3, Access::Read)],
};

/// acc += c over `len` values.
pub(crate) fn add_into(dev: &Device, acc: &Storage, c: &Storage, len: usize) {
    dev.dispatch(
        &ADD_INTO,
        &[],
        &Params::new(len, 1),
        &[c, acc],
        groups_for(len.div_ceil(4) as u64),
    );
}

/// acc + c over `len` values, into a new buffer.
pub(crate) fn add(dev: &Device, acc: &Storage, c: &Storage, len: usize) -> Result<Storage> {
    let out = dev.alloc("sum of contributions", len)?;
    dev.dispatch(
        &ADD,
        &[],
        &Params::new(len, 1),
        &[c, &out, acc],
        groups_for(len.div_ceil(4) as u64),
    );
    Ok(out)
}
