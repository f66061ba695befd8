//! Helpers shared by the benchmarks: deterministic inputs, a runner for
//! standalone WGSL kernels (bandwidth and FMA baselines), the summary's
//! timing sources (criterion's estimates of this run, or a median loop) and
//! the facts a reader needs to trust a figure (adapter, shader cache, load).

#![allow(dead_code)]

pub mod modes;
pub mod shapes;
pub mod small_graph;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use pullback::{Device, Tensor};

/// Deterministic values in [-0.5, 0.5).
pub fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(7919).wrapping_add(seed * 104_729)) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// The MLP of W3 and W4: `h = tanh(X·W1 + b1)`, `z = h·W2 + b2`,
/// per-example cross-entropy `l ∈ R^B`; X and the parameters from
/// [`values`] (seeds 1 to 5, parameters scaled by 0.1), labels `b·7 mod C`.
pub struct Mlp {
    pub x: Tensor,
    pub labels: Vec<u32>,
    pub params: Vec<Tensor>,
}

impl Mlp {
    pub fn new(dev: &Device, b: usize, d: usize, h: usize, c: usize) -> Mlp {
        let param = |n: usize, seed: usize, shape: &[usize]| {
            let data: Vec<f32> = values(n, seed).iter().map(|v| v * 0.1).collect();
            dev.tensor(&data, shape).unwrap().requires_grad()
        };
        Mlp {
            x: dev.tensor(&values(b * d, 1), &[b, d]).unwrap(),
            labels: (0..b).map(|i| (i * 7 % c) as u32).collect(),
            params: vec![
                param(d * h, 2, &[d, h]),
                param(h, 3, &[h]),
                param(h * c, 4, &[h, c]),
                param(c, 5, &[c]),
            ],
        }
    }

    /// The forward pass: per-example losses `[B]`.
    pub fn loss(&self) -> Tensor {
        let p = &self.params;
        let h = self
            .x
            .matmul(&p[0])
            .unwrap()
            .add(&p[1])
            .unwrap()
            .tanh()
            .unwrap();
        let z = h.matmul(&p[2]).unwrap().add(&p[3]).unwrap();
        z.cross_entropy(&self.labels).unwrap()
    }
}

/// One standalone WGSL kernel on pullback's device: bindings 0..n are
/// storage buffers (the first `reads` read-only), dispatched as
/// `workgroups` along x; `run` is one dispatch, one submit, and a wait.
pub struct RawKernel {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: u32,
    /// The last binding (every baseline's output), to check once.
    output: wgpu::Buffer,
}

impl RawKernel {
    pub fn new(
        dev: &Device,
        source: &str,
        entry: &str,
        buffers: &[(&wgpu::Buffer, bool)],
        workgroups: u32,
    ) -> RawKernel {
        let device = dev.wgpu_device().clone();
        let queue = dev.wgpu_queue().clone();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(entry),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, (_, read_only))| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *read_only,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let bind_entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, (buffer, _))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &layout,
            entries: &bind_entries,
        });
        RawKernel {
            device,
            queue,
            pipeline,
            bind_group,
            workgroups,
            output: buffers.last().expect("a kernel writes something").0.clone(),
        }
    }

    /// Runs once and reads the output's first `n` values back, through
    /// pullback (the buffer wrapped as a tensor): for checking a baseline
    /// against pullback's own result before timing it.
    pub fn output(&self, dev: &Device, n: usize) -> Vec<f32> {
        self.run();
        let t = pullback::Tensor::from_wgpu_buffer(dev, self.output.clone(), &[n]).unwrap();
        t.to_vec().unwrap()
    }

    /// A storage buffer of `bytes` bytes, optionally filled with `data`.
    pub fn buffer(dev: &Device, bytes: u64, data: Option<&[f32]>) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        // COPY_SRC: readable once, to check the baseline (`output`).
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        match data {
            Some(data) => dev
                .wgpu_device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("bench input"),
                    contents: bytemuck::cast_slice(data),
                    usage,
                }),
            None => dev.wgpu_device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench output"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            }),
        }
    }

    /// One dispatch, one submit, wait until done.
    pub fn run(&self) {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(self.workgroups, 1, 1);
        }
        self.queue.submit([encoder.finish()]);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
    }
}

/// What a reader needs to judge this run's figures: adapter, shader cache, host load.
pub struct RunFacts {
    pub started: SystemTime,
    load_at_start: String,
    shader_cache: String,
}

impl RunFacts {
    /// Call before the device exists, so the cache is described as this run found it.
    pub fn capture() -> RunFacts {
        RunFacts {
            started: SystemTime::now(),
            load_at_start: load_average(),
            shader_cache: mesa_shader_cache_state(),
        }
    }

    pub fn print(&self, dev: &Device) {
        let info = dev.adapter_info();
        println!(
            "adapter:          {} ({:?}, {:?}; driver: {} {})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        );
        println!("mesa shader cache: {}", self.shader_cache);
        println!(
            "host:             {} CPUs; 1-min load average {} at start, {} at end (other work skews results)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.load_at_start,
            load_average()
        );
    }

    /// Seconds per iteration of `id`: criterion's mean from this run, else
    /// a median of `reps` calls of `f` (the label says which).
    pub fn seconds(&self, id: (&str, &str), reps: usize, f: &dyn Fn()) -> (f64, &'static str) {
        match criterion_mean_ns(id, self.started) {
            Some(ns) => (ns * 1e-9, "criterion mean"),
            None => (median_secs(reps, f), "median, own loop"),
        }
    }
}

/// True when criterion measured (not `cargo test --benches`, `--list`, ...).
pub fn measured() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// The 1-minute load average (Linux), or "?".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Median wall times of `reps` rounds that call each of `fs` once in
/// turn, after one untimed round: a ratio of two of them compares calls
/// made under the same conditions. On a 2-vCPU host llvmpipe's two
/// workers sometimes share one vCPU for a while, doubling a call's time
/// (W2's batched adjoint: 4.0 or 7.8 ms), so medians taken at different
/// moments can land in different modes.
pub fn interleaved_median_secs<const N: usize>(reps: usize, fs: [&dyn Fn(); N]) -> [f64; N] {
    fs.iter().for_each(|f| f());
    let mut times = [(); N].map(|_| Vec::with_capacity(reps));
    for _ in 0..reps {
        for (f, t) in fs.iter().zip(&mut times) {
            let start = Instant::now();
            f();
            t.push(start.elapsed().as_secs_f64());
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

/// Median wall time of `reps` calls of `f`, after one untimed call.
pub fn median_secs(reps: usize, f: &dyn Fn()) -> f64 {
    interleaved_median_secs(reps, [f])[0]
}

/// Criterion's mean time per iteration (ns) for `id`, if this run (modified
/// after `started`) wrote it. Criterion's directory is `$CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else `<target dir>/criterion`; the
/// target dir is found as an ancestor of this executable
/// (`<target>/[<triple>/]<profile>/deps/<bench>`).
pub fn criterion_mean_ns(id: (&str, &str), started: SystemTime) -> Option<f64> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        roots.push(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        roots.push(Path::new(&target).join("criterion"));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(|a| a.join("criterion")));
    }
    roots.push("target/criterion".into());
    roots.iter().find_map(|root| {
        let file = root
            .join(id.0)
            .join(id.1)
            .join("new")
            .join("estimates.json");
        let modified = std::fs::metadata(&file).ok()?.modified().ok()?;
        if modified < started {
            return None;
        }
        mean_point_estimate(&std::fs::read_to_string(&file).ok()?)
    })
}

/// `mean.point_estimate` from criterion's estimates.json, without a JSON
/// library: the first `"point_estimate":` after `"mean":`.
pub fn mean_point_estimate(json: &str) -> Option<f64> {
    let mean = &json[json.find("\"mean\"")?..];
    let value = &mean[mean.find("\"point_estimate\"")? + "\"point_estimate\"".len()..];
    let value = value.trim_start().strip_prefix(':')?.trim_start();
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// Whether Mesa could reuse shaders compiled by earlier runs. (Criterion's
/// warm-up keeps compile time out of its numbers either way; the first
/// iteration of each new pipeline costs 14–42 ms on lavapipe when cold.)
pub fn mesa_shader_cache_state() -> String {
    if let Ok(v) = std::env::var("MESA_SHADER_CACHE_DISABLE") {
        let v = v.trim().to_ascii_lowercase();
        if matches!(v.as_str(), "1" | "true" | "yes" | "y") {
            return format!("disabled (MESA_SHADER_CACHE_DISABLE={v}): pipelines compiled cold");
        }
    }
    let env_dir = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // Mesa's cache: $MESA_SHADER_CACHE_DIR, else mesa_shader_cache* under
    // $XDG_CACHE_HOME, else under ~/.cache.
    let candidates: Vec<PathBuf> = match env_dir("MESA_SHADER_CACHE_DIR") {
        Some(dir) => vec![dir],
        None => {
            let base = env_dir("XDG_CACHE_HOME")
                .or_else(|| env_dir("HOME").map(|h| h.join(".cache")))
                .unwrap_or_default();
            std::fs::read_dir(base)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .starts_with("mesa_shader_cache")
                        })
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    let nonempty = |p: &PathBuf| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
    match candidates.iter().find(|p| nonempty(p)) {
        Some(p) => format!(
            "enabled, warm ({} was non-empty before this run; MESA_SHADER_CACHE_DISABLE=true for cold)",
            p.display()
        ),
        None => "enabled, cold (no Mesa shader cache before this run)".to_string(),
    }
}
