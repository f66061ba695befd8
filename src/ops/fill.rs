//! Fill a buffer with one value: constructors, seeds, zero gradients.

use crate::device::Device;
use crate::error::Result;
use crate::kernels::{Access, FILL, Kernel, Params, groups_for};
use crate::pool::Storage;

const FILL_KERNEL: Kernel = Kernel {
    module: &FILL,
    entry: "fill",
    bindings: &[(1, Access::Write)],
};

pub(crate) fn fill(dev: &Device, len: usize, value: f32) -> Result<Storage> {
    let out = dev.alloc("filled tensor", len)?;
    dev.dispatch(
        &FILL_KERNEL,
        &[],
        &Params::new(len, 1).scalar(value),
        &[&out],
        groups_for(len.div_ceil(4) as u64),
    );
    Ok(out)
}
