//! Definition-time checks of a custom op's WGSL: naga parses and validates
//! the source (with the prelude appended, so lines are the user's), each
//! required entry point must be a compute shader with a literal workgroup
//! size whose bindings are the ones pullback binds, and the pipelines are
//! compiled under an error scope. Any failure is an `Error::Wgsl`, never a
//! wgpu validation abort later. What passes becomes an [`Entry`], which
//! dispatches the user's kernel over a count of invocations.

use std::sync::Arc;

use naga::valid::{Capabilities, GlobalUse, ValidationFlags, Validator};

use crate::error::{Error, Result};
use crate::runtime::device::Device;
use crate::runtime::kernels::{Access, Kernel, Module, Params, Source, grid};
use crate::runtime::pool::Storage;

/// One compiled entry point: the module's cache key and source, its
/// bindings and the invocations per workgroup naga found.
#[derive(Clone)]
pub(crate) struct Entry {
    module: Arc<(String, String)>,
    entry: String,
    bindings: Vec<(u32, Access)>,
    wg_size: u32,
}

impl Entry {
    /// `f` of the entry point as a kernel of the pipeline cache.
    fn with_kernel<R>(&self, f: impl FnOnce(&Kernel) -> R) -> R {
        let module = Module {
            name: &self.module.0,
            source: Source::Text(&self.module.1),
        };
        f(&Kernel {
            module: &module,
            entry: &self.entry,
            bindings: &self.bindings,
        })
    }

    /// Records one dispatch of `threads` invocations (spread over x and y),
    /// the workgroup size in word 2 of `params`.
    pub fn dispatch(&self, dev: &Device, threads: usize, params: Params, buffers: &[&Storage]) {
        let (x, y) = grid((threads as u64).div_ceil(u64::from(self.wg_size)));
        let params = params.word(2, self.wg_size);
        self.with_kernel(|kernel| dev.dispatch_grid(kernel, &[], &params, buffers, (x, y, 1)));
    }
}

const PRELUDE: &str = include_str!("../../../shaders/custom/prelude.wgsl");

/// Checks and compiles `source`'s entry points `entries` (name, bindings
/// besides the parameter block at 0), in that order.
pub(crate) fn compile(
    dev: &Device,
    op: &str,
    which: &str,
    source: &str,
    entries: &[(String, Vec<(u32, Access)>)],
) -> Result<Vec<Entry>> {
    let fail = |message: String| Error::Wgsl {
        op: op.to_string(),
        message: format!("{which} source: {message}"),
    };
    let full = format!("{source}\n{PRELUDE}");
    let module = naga::front::wgsl::parse_str(&full).map_err(|e| fail(e.emit_to_string(&full)))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| fail(e.emit_to_string(&full)))?;
    let key = Arc::new((module_key(op, which, &full), full.clone()));
    let mut out = Vec::with_capacity(entries.len());
    for (name, bindings) in entries {
        let (index, ep) = module
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, ep)| &ep.name == name)
            .ok_or_else(|| fail(format!("no entry point `{name}` (an `@compute` function)")))?;
        if ep.stage != naga::ShaderStage::Compute {
            return Err(fail(format!("`{name}` must be an `@compute` entry point")));
        }
        if ep.workgroup_size_overrides.is_some() || ep.workgroup_size.contains(&0) {
            return Err(fail(format!(
                "`{name}` needs a literal workgroup size, e.g. @workgroup_size(64)"
            )));
        }
        let uses = info.get_entry_point(index);
        for (handle, var) in module.global_variables.iter() {
            let Some(rb) = &var.binding else { continue };
            if uses[handle].is_empty() {
                continue;
            }
            check_binding(name, var, rb, uses[handle], bindings).map_err(&fail)?;
        }
        let wg = ep.workgroup_size.iter().product();
        out.push(Entry {
            module: key.clone(),
            entry: name.clone(),
            bindings: bindings.clone(),
            wg_size: wg,
        });
    }
    for e in &out {
        compile_entry(dev, e).map_err(|m| fail(format!("the GPU driver rejected it: {m}")))?;
    }
    Ok(out)
}

/// A variable `name` uses must be the parameter block or one of the
/// bindings pullback binds, with the same access.
fn check_binding(
    name: &str,
    var: &naga::GlobalVariable,
    rb: &naga::ResourceBinding,
    used: GlobalUse,
    bindings: &[(u32, Access)],
) -> std::result::Result<(), String> {
    let var_name = var.name.as_deref().unwrap_or("?");
    let layout = || {
        let list: Vec<String> = bindings
            .iter()
            .map(|(b, a)| {
                format!(
                    "{b} ({})",
                    if *a == Access::Read {
                        "read"
                    } else {
                        "read_write"
                    }
                )
            })
            .collect();
        format!(
            "`{name}` binds 0 (pb, the prelude's) and {}",
            list.join(", ")
        )
    };
    if rb.group != 0 {
        return Err(format!(
            "`{var_name}` is in group {}; custom ops use group 0 only ({})",
            rb.group,
            layout()
        ));
    }
    if rb.binding == 0 {
        return if var_name == "pb" {
            Ok(())
        } else {
            Err(format!(
                "`{var_name}` uses binding 0, which is the prelude's parameter block `pb`"
            ))
        };
    }
    let Some((_, access)) = bindings.iter().find(|(b, _)| *b == rb.binding) else {
        return Err(format!(
            "`{var_name}` uses binding {}, which pullback does not bind: {}",
            rb.binding,
            layout()
        ));
    };
    let writable = match var.space {
        naga::AddressSpace::Storage { access } => access.contains(naga::StorageAccess::STORE),
        _ => {
            return Err(format!(
                "`{var_name}` (binding {}) must be a `var<storage, …>` buffer of f32",
                rb.binding
            ));
        }
    };
    match access {
        Access::Read if writable => Err(format!(
            "`{var_name}` (binding {}) is an input: declare it `var<storage, read>`",
            rb.binding
        )),
        Access::Write if !writable => Err(format!(
            "`{var_name}` (binding {}) is the result: declare it `var<storage, read_write>`",
            rb.binding
        )),
        _ if used.contains(GlobalUse::ATOMIC) => Err(format!(
            "`{var_name}` (binding {}) is used atomically; buffers are array<f32>",
            rb.binding
        )),
        _ => Ok(()),
    }
}

/// The pipeline cache's key for a module: the op's name and a hash of the
/// source, so that equal sources share pipelines and a changed one never
/// meets a stale pipeline.
fn module_key(op: &str, which: &str, source: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    format!("custom {op} {which} {:016x}", h.finish())
}

/// Compiles one entry now; Err(wgpu's message) when the driver refuses it.
fn compile_entry(dev: &Device, e: &Entry) -> std::result::Result<(), String> {
    e.with_kernel(|kernel| dev.compile_checked(kernel))
}
