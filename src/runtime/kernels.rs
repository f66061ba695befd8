//! The one pipeline cache (keyed by module, entry point and override
//! constants; least recently used variants evicted past a limit) and bind
//! group layouts built in one place; the parameter block at binding 0 is
//! `params.rs`. Kernels know no graph and no op: they get a module, an
//! entry point and buffers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock::Recover;
pub(crate) use crate::runtime::params::Params;
use crate::runtime::warm::Warmer;

/// Workgroup size shared by every kernel (`WG` in `shaders/common.wgsl`).
pub(crate) const WG: u32 = 256;

/// The most iterations a kernel's invocation is given to loop over along
/// a data-sized count: llvmpipe (lavapipe) silently stops an invocation's
/// loops after 65535 iterations in all, so long axes and contractions are
/// cut into pieces of this many (max, cumsum, the GEMM's contraction on
/// CPU adapters) and a pass's K rows are bounded by it
/// (`Device::loop_limit`).
pub(crate) const LOOP_PIECE: usize = 32768;

/// The value of an override constant that is a flag.
pub(crate) fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Read,
    Write,
}

/// One WGSL module, named by what it computes so that the cache compiles
/// it once: a built-in op's file (`ops/shaders.rs` registers them), a
/// custom op's source, or a module composed at run time (the fusions).
pub(crate) struct Module<'a> {
    pub name: &'a str,
    pub source: Source<'a>,
}

/// A module's WGSL.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Text(&'a str),
    /// Written only when the cache has no module of this name: a composed
    /// kernel's source (tens of KB) costs nothing once compiled.
    Composed(&'a dyn Fn() -> String),
}

/// An entry point of a module and the storage bindings it uses
/// (`(binding, access)`; binding 0 is always the parameter block).
pub(crate) struct Kernel<'a> {
    pub module: &'a Module<'a>,
    pub entry: &'a str,
    pub bindings: &'a [(u32, Access)],
}

/// A kernel that loops over K cotangent rows, in two entry points: plain,
/// and synced (a workgroup barrier every few rows; see `row_sync` in
/// `shaders/common.wgsl`). `Device::dispatch_rows` picks one.
pub(crate) struct RowKernel {
    pub plain: Kernel<'static>,
    pub synced: Kernel<'static>,
}

impl RowKernel {
    pub const fn new(
        module: &'static Module<'static>,
        plain: &'static str,
        synced: &'static str,
        bindings: &'static [(u32, Access)],
    ) -> Self {
        RowKernel {
            plain: Kernel {
                module,
                entry: plain,
                bindings,
            },
            synced: Kernel {
                module,
                entry: synced,
                bindings,
            },
        }
    }
}

type LayoutKey = Vec<(u32, Access)>;

/// What names a compiled pipeline: module, entry point, override constants.
pub(crate) type PipelineKey = (String, String, Vec<(&'static str, u64)>);

/// The cache's key of `kernel` with `constants`.
pub(crate) fn pipeline_key(kernel: &Kernel, constants: &[(&'static str, f64)]) -> PipelineKey {
    let bits = constants.iter().map(|(n, v)| (*n, v.to_bits())).collect();
    (kernel.module.name.into(), kernel.entry.into(), bits)
}

/// Default for [`KernelCache::set_limit`]: far more variants than a model
/// needs (a W3 training step compiles 22), few enough that a loop over
/// changing shapes cannot grow the cache without bound.
pub(crate) const DEFAULT_PIPELINE_LIMIT: usize = 512;

/// A cached pipeline and when it was last asked for (a tick of the cache).
struct Cached {
    pipeline: Arc<wgpu::ComputePipeline>,
    used: u64,
}

/// Compiled pipelines and layouts of one device; each compiled once, and
/// the least recently used pipelines evicted past a limit.
pub(crate) struct KernelCache {
    modules: Mutex<HashMap<String, Arc<wgpu::ShaderModule>>>,
    layouts: Mutex<HashMap<LayoutKey, Arc<wgpu::BindGroupLayout>>>,
    pipelines: Mutex<HashMap<PipelineKey, Cached>>,
    /// Ticks of the least-recently-used order.
    clock: AtomicU64,
    /// Pipelines kept at most.
    limit: AtomicUsize,
    /// Pipelines created since the device was made (`Stats::pipelines`).
    created: AtomicU64,
    /// Starts the driver's compilation of each new pipeline at once, where
    /// it would wait for the first dispatch (`warm.rs`).
    warmer: Option<Warmer>,
}

impl KernelCache {
    pub fn new(warmer: Option<Warmer>) -> Self {
        KernelCache {
            modules: Mutex::default(),
            layouts: Mutex::default(),
            pipelines: Mutex::default(),
            clock: AtomicU64::new(0),
            limit: AtomicUsize::new(DEFAULT_PIPELINE_LIMIT),
            created: AtomicU64::new(0),
            warmer,
        }
    }

    /// Pipelines created so far (evicted ones included).
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Pipelines cached now.
    pub fn cached(&self) -> usize {
        self.pipelines.locked().len()
    }

    /// Whether the pipeline of `key` is compiled and cached.
    pub fn contains(&self, key: &PipelineKey) -> bool {
        self.pipelines.locked().contains_key(key)
    }

    /// Keeps at most `count` pipelines (at least one), evicting the least
    /// recently used ones now if there are more.
    pub fn set_limit(&self, count: usize) {
        self.limit.store(count.max(1), Ordering::Relaxed);
        self.evict(&mut self.pipelines.locked());
    }

    /// Drops the least recently used pipelines past the limit, and the
    /// modules no cached pipeline uses any more (a composed module's source
    /// is written again if it is ever needed).
    fn evict(&self, pipelines: &mut HashMap<PipelineKey, Cached>) {
        let limit = self.limit.load(Ordering::Relaxed);
        if pipelines.len() <= limit {
            return;
        }
        let mut ages: Vec<(u64, PipelineKey)> = (pipelines.iter())
            .map(|(k, c)| (c.used, k.clone()))
            .collect();
        ages.sort_unstable_by_key(|(used, _)| *used);
        let excess = pipelines.len() - limit;
        for (_, key) in ages.into_iter().take(excess) {
            pipelines.remove(&key);
        }
        let mut modules = self.modules.locked();
        modules.retain(|name, _| pipelines.keys().any(|k| &k.0 == name));
    }

    #[cfg(test)]
    pub fn poison_locks(&self) {
        crate::lock::poison(&self.modules);
        crate::lock::poison(&self.layouts);
        crate::lock::poison(&self.pipelines);
        if let Some(warmer) = &self.warmer {
            warmer.poison_locks();
        }
    }

    /// Submits the warm dispatches still queued (`warm.rs`); called
    /// before each real submission.
    pub fn submit_warm(&self, device: &wgpu::Device) {
        if let Some(warmer) = &self.warmer {
            warmer.submit_waiting(device);
        }
    }

    /// Drops a module and its pipelines (one the driver refused).
    pub fn forget(&self, module: &str) {
        self.modules.locked().remove(module);
        self.pipelines.locked().retain(|key, _| key.0 != module);
    }

    /// The bind group layout for a binding list: the only place layouts are made.
    pub fn layout(
        &self,
        device: &wgpu::Device,
        bindings: &[(u32, Access)],
    ) -> Arc<wgpu::BindGroupLayout> {
        let mut layouts = self.layouts.locked();
        layouts
            .entry(bindings.to_vec())
            .or_insert_with(|| {
                let storage = |(binding, access): &(u32, Access)| wgpu::BindGroupLayoutEntry {
                    binding: *binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *access == Access::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let params = wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let entries: Vec<_> = std::iter::once(params)
                    .chain(bindings.iter().map(storage))
                    .collect();
                Arc::new(
                    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("pullback"),
                        entries: &entries,
                    }),
                )
            })
            .clone()
    }

    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
    ) -> Arc<wgpu::ComputePipeline> {
        let key = pipeline_key(kernel, constants);
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.pipelines.locked().get_mut(&key) {
            c.used = tick;
            return c.pipeline.clone();
        }
        let module = self
            .modules
            .locked()
            .entry(kernel.module.name.to_string())
            .or_insert_with(|| {
                let source = match kernel.module.source {
                    Source::Text(text) => text.into(),
                    Source::Composed(write) => write().into(),
                };
                Arc::new(device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.module.name),
                    source: wgpu::ShaderSource::Wgsl(source),
                }))
            })
            .clone();
        let layout = self.layout(device, kernel.bindings);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = Arc::new(
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            }),
        );
        self.created.fetch_add(1, Ordering::Relaxed);
        let mut pipelines = self.pipelines.locked();
        let cached = Cached {
            pipeline: pipeline.clone(),
            used: tick,
        };
        pipelines.insert(key, cached);
        self.evict(&mut pipelines);
        drop(pipelines);
        if let Some(warmer) = &self.warmer {
            let bindings: Vec<u32> = kernel.bindings.iter().map(|(b, _)| *b).collect();
            warmer.warm(device, &pipeline, &layout, &bindings);
        }
        pipeline
    }

    /// Records one dispatch of a grid of workgroups.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &Params,
        buffers: &[&wgpu::Buffer],
        (x, y, z): (u32, u32, u32),
    ) {
        debug_assert_eq!(buffers.len(), kernel.bindings.len(), "{}", kernel.entry);
        let pipeline = self.pipeline(device, kernel, constants);
        let layout = self.layout(device, kernel.bindings);
        // The parameter block, mapped at creation: wgpu stages it (256
        // bytes) and, unlike `create_buffer_init`, a failure to map (a lost
        // device) is no panic; the lost device is reported at the submit.
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pullback params"),
            size: params.bytes().len() as u64,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: true,
        });
        if let Ok(mut view) = uniform.slice(..).get_mapped_range_mut() {
            view.slice(..).copy_from_slice(params.bytes());
        }
        uniform.unmap();
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for ((binding, _), buffer) in kernel.bindings.iter().zip(buffers) {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: buffer.as_entire_binding(),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Splits a workgroup count over x and y (each at most 65535); kernels
/// recover the linear index as `wid.y * num_workgroups.x + wid.x`.
pub(crate) fn grid(workgroups: u64) -> (u32, u32) {
    const MAX: u64 = 65535;
    let workgroups = workgroups.max(1);
    if workgroups <= MAX {
        (workgroups as u32, 1)
    } else {
        let y = workgroups.div_ceil(MAX);
        (workgroups.div_ceil(y) as u32, y as u32)
    }
}

/// Workgroups needed for `threads` invocations.
pub(crate) fn groups_for(threads: u64) -> u64 {
    threads.div_ceil(WG as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_workgroup() {
        for n in [1u64, 65535, 65536, 1 << 20, 65535 * 65535] {
            let (x, y) = grid(n);
            assert!(x as u64 * y as u64 >= n && x <= 65535 && y <= 65535, "{n}");
        }
    }
}
