//! Zero-copy interop: the caller's compute pass writes a buffer, pullback
//! differentiates a function of it, and the caller's next pass reads the
//! gradient from pullback's buffer, with no readback through pullback
//! (`stats().readbacks` unchanged) and no host round trip in between.

mod common;

use common::*;
use pullback::Tensor;
use pullback::wgpu::{self, util::DeviceExt};

/// The caller's kernel: out[i] = f(in[i]) for two small functions.
const USER_WGSL: &str = "
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

// dst[i] = 0.01 · i − 1 (src unused but bound, to share one layout)
@compute @workgroup_size(64)
fn fill(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&dst)) { dst[id.x] = 0.01 * f32(id.x) - 1.0 + 0.0 * src[0]; }
}

// dst[i] = 2 · src[i]
@compute @workgroup_size(64)
fn double(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&dst)) { dst[id.x] = 2.0 * src[id.x]; }
}
";

/// Runs `entry` of USER_WGSL over `n` elements, `src` → `dst`.
fn user_pass(
    dev: &pullback::Device,
    entry: &str,
    src: wgpu::BufferBinding,
    dst: &wgpu::Buffer,
    n: u32,
) {
    let d = dev.wgpu_device();
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("user"),
        source: wgpu::ShaderSource::Wgsl(USER_WGSL.into()),
    });
    let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(src),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: dst.as_entire_binding(),
            },
        ],
    });
    let mut enc = d.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(n.div_ceil(64), 1, 1);
    }
    dev.wgpu_queue().submit([enc.finish()]);
}

/// The caller's own readback of a buffer (not pullback's).
fn map_read(dev: &pullback::Device, buffer: &wgpu::Buffer, n: usize) -> Vec<f32> {
    let d = dev.wgpu_device();
    let staging = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (n * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = d.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, (n * 4) as u64);
    dev.wgpu_queue().submit([enc.finish()]);
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec()
}

fn storage(dev: &pullback::Device, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    dev.wgpu_device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller's buffer"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    })
}

#[test]
fn callers_pass_to_pullback_to_callers_pass_without_readback() {
    let dev = fresh_device();
    let n = 1000usize;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let dummy = dev
        .wgpu_device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&[0.0f32; 4]),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let x_buf = storage(&dev, (n * 4) as u64, usage);
    let out = storage(&dev, (n * 4) as u64, usage);
    let readbacks = dev.stats().readbacks;
    // 1. The caller writes x.
    user_pass(
        &dev,
        "fill",
        dummy.as_entire_buffer_binding(),
        &x_buf,
        n as u32,
    );
    // 2. pullback differentiates Σ x·sin x with respect to it.
    let x = ok(Tensor::from_wgpu_buffer(&dev, x_buf.clone(), &[n])).requires_grad();
    let loss = ok(ok(ok(x.sin()).mul(&x)).sum_all());
    ok(loss.backward());
    let g = x.grad().unwrap();
    // 3. The caller's next pass reads the gradient where it lies.
    user_pass(&dev, "double", ok(g.wgpu_binding()), &out, n as u32);
    assert_eq!(
        dev.stats().readbacks,
        readbacks,
        "no readback through pullback"
    );
    // d(x sin x)/dx = sin x + x cos x, doubled by the caller's pass.
    let got = map_read(&dev, &out, n);
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let x = (0.01f32 * i as f32 - 1.0) as f64;
            2.0 * (x.sin() + x * x.cos())
        })
        .collect();
    assert_close(
        "caller's pass over the gradient",
        &to_f64(&got),
        &want,
        &[n],
        Tol::new(1e-5, 1e-6),
    );
    // The wrapped buffer is the tensor's storage: pullback reads the same values.
    assert_eq!(read(&x), map_read(&dev, &x_buf, n));
}

#[test]
fn wrapping_checks_usage_size_and_rank() {
    let dev = dev();
    let only_storage = storage(dev, 64, wgpu::BufferUsages::STORAGE);
    expect_err(
        Tensor::from_wgpu_buffer(dev, only_storage, &[4]),
        &["COPY_SRC", "BufferUsages::STORAGE | BufferUsages::COPY_SRC"],
    );
    let uniform = storage(
        dev,
        64,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_SRC,
    );
    expect_err(
        Tensor::from_wgpu_buffer(dev, uniform, &[4]),
        &["lacks STORAGE"],
    );
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    // 5 floats need 20 bytes, rounded up to 32.
    expect_err(
        Tensor::from_wgpu_buffer(dev, storage(dev, 20, usage), &[5]),
        &["at least 32 bytes", "has 20"],
    );
    expect_err(
        Tensor::from_wgpu_buffer(dev, storage(dev, 64, usage), &[1, 1, 1, 1, 1, 1, 1]),
        &["rank"],
    );
    // A buffer larger than the tensor: the first numel floats are the values.
    let big = dev
        .wgpu_device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            usage,
        });
    let t = ok(Tensor::from_wgpu_buffer(dev, big, &[3]));
    assert_eq!(read(&ok(t.mul_scalar(2.0))), vec![2.0, 4.0, 6.0]);
    assert_usable(dev);
}
