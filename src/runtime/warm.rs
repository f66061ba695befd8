//! Early compilation on drivers that compile a pipeline at its first
//! dispatch. llvmpipe (lavapipe) turns a pipeline into machine code with
//! LLVM only when a dispatch first runs it: 20–40 ms for an elementwise
//! kernel and about 125 ms for a GEMM. A new graph's first step would pay
//! all of that after its submit, one kernel after another, while the host
//! thread waits. A dispatch of zero workgroups, submitted as soon as a
//! pipeline exists, starts that compilation on the driver's queue thread
//! while the host records the rest of the graph.
//!
//! lavapipe runs one submission at a time, and a submit waits for the one
//! before it to finish. So warm dispatches wait in a queue while a warm
//! submission runs, and go together in one submission once it is done:
//! the host never blocks on a compile it did not need yet. What is still
//! queued goes ahead of the next real submission.
//!
//! Warm dispatches bind small placeholder buffers, write nothing, and are
//! not counted in `stats()`. They are best effort: a kernel whose bindings
//! the placeholders do not fit compiles at its first real dispatch instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock::Recover;

/// Placeholder bytes per binding: the parameter block is 256 bytes, and
/// every storage binding of a built-in kernel needs at most one vec4.
const PLACEHOLDER_BYTES: u64 = 256;

pub(crate) struct Warmer {
    queue: wgpu::Queue,
    /// A uniform placeholder, then one storage placeholder per binding
    /// index (distinct, so writable bindings never alias).
    placeholders: Mutex<Vec<wgpu::Buffer>>,
    /// Warm dispatches not submitted yet.
    waiting: Mutex<Vec<(Arc<wgpu::ComputePipeline>, wgpu::BindGroup)>>,
    /// A warm submission is running (cleared by its done callback).
    running: Arc<AtomicBool>,
}

impl Warmer {
    /// A warmer where the driver compiles at first dispatch (CPU adapters:
    /// llvmpipe, and other software drivers alike); None elsewhere, where
    /// pipeline creation already compiles.
    pub fn for_adapter(info: &wgpu::AdapterInfo, queue: &wgpu::Queue) -> Option<Warmer> {
        (info.device_type == wgpu::DeviceType::Cpu).then(|| Warmer {
            queue: queue.clone(),
            placeholders: Mutex::new(Vec::new()),
            waiting: Mutex::new(Vec::new()),
            running: Arc::new(AtomicBool::new(false)),
        })
    }

    #[cfg(test)]
    pub fn poison_locks(&self) {
        crate::lock::poison(&self.placeholders);
        crate::lock::poison(&self.waiting);
    }

    /// Queues a zero-workgroup dispatch of a new pipeline (`bindings`: its
    /// storage binding numbers), and submits the queue unless a warm
    /// submission is still running.
    pub fn warm(
        &self,
        device: &wgpu::Device,
        pipeline: &Arc<wgpu::ComputePipeline>,
        layout: &wgpu::BindGroupLayout,
        bindings: &[u32],
    ) {
        if let Some(bind_group) = self.placeholder_group(device, layout, bindings) {
            self.waiting.locked().push((pipeline.clone(), bind_group));
        }
        if self.running.load(Ordering::Acquire) {
            // Runs the done callback if the submission has finished.
            let _ = device.poll(wgpu::PollType::Poll);
        }
        if !self.running.load(Ordering::Acquire) {
            self.submit_waiting(device);
        }
    }

    /// Submits every queued warm dispatch in one submission (before a real
    /// submission: they would compile at its dispatches all the same).
    pub fn submit_waiting(&self, device: &wgpu::Device) {
        let waiting = std::mem::take(&mut *self.waiting.locked());
        if waiting.is_empty() {
            return;
        }
        // Dispatch validation (binding sizes a custom kernel's types ask
        // for) can still refuse the batch: then it is dropped, unreported.
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for (pipeline, bind_group) in &waiting {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                pass.dispatch_workgroups(0, 1, 1);
            }
        }
        let commands = encoder.finish();
        if pollster::block_on(scope.pop()).is_some() {
            return;
        }
        self.running.store(true, Ordering::Release);
        self.queue.submit([commands]);
        let running = self.running.clone();
        self.queue
            .on_submitted_work_done(move || running.store(false, Ordering::Release));
    }

    /// A bind group of placeholders for `bindings`, or None where wgpu
    /// refuses it (a custom kernel's layout the placeholders do not fit).
    fn placeholder_group(
        &self,
        device: &wgpu::Device,
        layout: &wgpu::BindGroupLayout,
        bindings: &[u32],
    ) -> Option<wgpu::BindGroup> {
        let top = bindings.iter().copied().max().unwrap_or(0) as usize;
        let mut placeholders = self.placeholders.locked();
        while placeholders.len() <= top {
            let usage = if placeholders.is_empty() {
                wgpu::BufferUsages::UNIFORM
            } else {
                wgpu::BufferUsages::STORAGE
            };
            placeholders.push(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pullback warm placeholder"),
                size: PLACEHOLDER_BYTES,
                usage,
                mapped_at_creation: false,
            }));
        }
        let entries: Vec<_> = std::iter::once(0)
            .chain(bindings.iter().copied())
            .map(|b| wgpu::BindGroupEntry {
                binding: b,
                resource: placeholders[b as usize].as_entire_binding(),
            })
            .collect();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("pullback warm"),
            layout,
            entries: &entries,
        });
        pollster::block_on(scope.pop())
            .is_none()
            .then_some(bind_group)
    }
}
