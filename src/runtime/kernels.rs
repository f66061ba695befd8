//! The one pipeline cache (keyed by module, entry point and override
//! constants), bind group layouts built in one place, and the parameter
//! block every kernel reads at binding 0. Kernels know no graph and no op:
//! they get a module, an entry point and buffers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::lock::Recover;
use crate::runtime::warm::Warmer;
use crate::shape::MAX_RANK;

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

/// The parameter block at binding 0: `Params` in `shaders/common.wgsl`.
/// Words 0..8 are scalars; from word 8 on, slots of 6 words hold per-dim
/// shapes and strides (rank <= 6).
#[derive(Clone, Copy)]
pub(crate) struct Params {
    words: [u32; 64],
}

const SLOT_BASE: usize = 8;
const SLOTS: usize = (64 - SLOT_BASE) / MAX_RANK;

impl Params {
    /// `n` elements per batch row, `k` rows (cotangents).
    pub fn new(n: usize, k: usize) -> Self {
        let mut words = [0u32; 64];
        words[0] = n as u32;
        words[1] = k as u32;
        Params { words }
    }
    pub fn rank(mut self, rank: usize) -> Self {
        self.words[2] = rank as u32;
        self
    }
    pub fn scalar(mut self, s: f32) -> Self {
        self.words[3] = s.to_bits();
        self
    }
    /// Word `i` of the block, whatever it means to the kernel (custom ops'
    /// `PbParams`, `shaders/custom/prelude.wgsl`).
    pub fn word(mut self, i: usize, v: u32) -> Self {
        self.words[i] = v;
        self
    }
    /// Extra scalar words `x0..x3` (word 4 + i).
    pub fn extra(mut self, i: usize, v: usize) -> Self {
        self.words[4 + i] = v as u32;
        self
    }
    /// Slot `slot` holds `values` (right-aligned dims are the caller's job).
    pub fn slot(mut self, slot: usize, values: &[usize]) -> Self {
        debug_assert!(slot < SLOTS && values.len() <= MAX_RANK);
        for (d, &v) in values.iter().enumerate() {
            self.words[SLOT_BASE + slot * MAX_RANK + d] = v as u32;
        }
        self
    }
    /// Word `i` of the slot area (slot s, dim d is word 6s + d).
    pub fn slot_word(mut self, i: usize, v: u32) -> Self {
        self.words[SLOT_BASE + i] = v;
        self
    }
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }
}

type LayoutKey = Vec<(u32, Access)>;
type PipelineKey = (String, String, Vec<(&'static str, u64)>);

/// Compiled pipelines and layouts of one device; each compiled once.
#[derive(Default)]
pub(crate) struct KernelCache {
    modules: Mutex<HashMap<String, Arc<wgpu::ShaderModule>>>,
    layouts: Mutex<HashMap<LayoutKey, Arc<wgpu::BindGroupLayout>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Starts the driver's compilation of each new pipeline at once, where
    /// it would wait for the first dispatch (`warm.rs`).
    warmer: Option<Warmer>,
}

impl KernelCache {
    pub fn new(warmer: Option<Warmer>) -> Self {
        KernelCache {
            warmer,
            ..Default::default()
        }
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
        let key: PipelineKey = (
            kernel.module.name.to_string(),
            kernel.entry.to_string(),
            constants.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
        );
        if let Some(p) = self.pipelines.locked().get(&key) {
            return p.clone();
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
        self.pipelines.locked().insert(key, pipeline.clone());
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
