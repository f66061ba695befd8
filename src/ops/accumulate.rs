//! The scheduler's accumulation of contributions: in place when it holds
//! the only reference to the accumulator, otherwise into a new buffer.

use crate::device::Device;
use crate::error::Result;
use crate::kernels::{ACCUMULATE, Access, Kernel, Params, groups_for};
use crate::ops::binary;
use crate::pool::Storage;

const ADD_INTO: Kernel = Kernel {
    module: &ACCUMULATE,
    entry: "add_into",
    bindings: &[(1, Access::Read), (2, Access::Write)],
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

/// a + b over `len` values, into a new buffer.
pub(crate) fn add(dev: &Device, a: &Storage, b: &Storage, len: usize) -> Result<Storage> {
    binary::same_shape(dev, binary::BinaryOp::Add, a, b, len)
}
