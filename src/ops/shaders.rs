//! The registry of the ops' WGSL files: each module is
//! `shaders/common.wgsl`, the op family's math library where it has one
//! (`unary_ops.wgsl`, `binary_ops.wgsl`: the functions the fused kernels
//! compose with, without the op files' bindings and entry points), then
//! the op's own file; a unit test validates every file in `shaders/` with
//! naga. Adding an op's WGSL file adds one line here.

use crate::runtime::kernels::{Module, Source};

macro_rules! module {
    ($name:literal $(, $library:literal)?) => {
        Module {
            name: $name,
            source: Source::Text(concat!(
                include_str!("../../shaders/common.wgsl"),
                $(include_str!(concat!("../../shaders/", $library, ".wgsl")),)?
                include_str!(concat!("../../shaders/", $name, ".wgsl"))
            )),
        }
    };
}

/// The files that are no module of their own: included by others.
#[cfg(test)]
const LIBRARIES: &[&str] = &["common.wgsl", "unary_ops.wgsl", "binary_ops.wgsl"];

pub(crate) const UNARY: Module = module!("unary", "unary_ops");
pub(crate) const BINARY: Module = module!("binary", "binary_ops");
pub(crate) const REDUCE: Module = module!("reduce");
pub(crate) const FILL: Module = module!("fill");
pub(crate) const ACCUMULATE: Module = module!("accumulate");
pub(crate) const LAYOUT: Module = module!("layout");
pub(crate) const MAX: Module = module!("max");
pub(crate) const MATMUL: Module = module!("matmul");
/// Needs `Features::SUBGROUP`: created only on devices that have it.
pub(crate) const MATMUL_LANES: Module = module!("matmul_lanes");
pub(crate) const INDEX: Module = module!("index");
pub(crate) const SCAN: Module = module!("scan");
pub(crate) const UNFOLD: Module = module!("unfold");

/// Every module, for validation.
#[cfg(test)]
const MODULES: &[&Module<'static>] = &[
    &UNARY,
    &BINARY,
    &REDUCE,
    &FILL,
    &ACCUMULATE,
    &LAYOUT,
    &MAX,
    &MATMUL,
    &MATMUL_LANES,
    &INDEX,
    &SCAN,
    &UNFOLD,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module (common.wgsl, a library, the op's file) parses and
    /// validates with naga.
    #[test]
    fn every_wgsl_module_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".wgsl") && !LIBRARIES.contains(&n.as_str()))
            .collect();
        on_disk.sort();
        let mut registered: Vec<String> =
            MODULES.iter().map(|m| format!("{}.wgsl", m.name)).collect();
        registered.sort();
        assert_eq!(
            on_disk, registered,
            "every shaders/*.wgsl file must be registered in MODULES"
        );
        for m in MODULES {
            let Source::Text(source) = m.source else {
                unreachable!("registered modules are WGSL files");
            };
            let module = naga::front::wgsl::parse_str(source)
                .unwrap_or_else(|e| panic!("{}.wgsl: {}", m.name, e.emit_to_string(source)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl: {e:?}", m.name));
        }
    }
}
