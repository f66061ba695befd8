//! Devices: the dispatch/submit and memory counters, the buffer pool,
//! long forward chains submitted in pieces, adapter selection and its
//! errors, `Device::new_async` and `Device::from_wgpu`.

mod common;

use common::*;
use pullback::{Device, DeviceOptions, Error, GemmKernel, Tensor};

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[test]
fn batched_vjp_costs_the_same_dispatches_and_submits_for_every_k() {
    // A dedicated device, so no other test's work is counted.
    let d = fresh_device();
    let mut r = rng(seed_of("stats"));
    let xv = sample(&mut r, 6 * 5, Dist::Uniform(-1.0, 1.0));
    let yv = sample(&mut r, 5, Dist::Signed(0.5, 2.0));
    let x = ok(d.tensor(&xv, &[6, 5])).requires_grad();
    let y = ok(d.tensor(&yv, &[5])).requires_grad();
    // A chain with reuse, broadcasting and an input used three times.
    let f = ok(ok(ok(x.sin()).mul(&ok(x.exp()))).add(&ok(x.div(&y))));
    let out = ok(ok(f.tanh()).mul(&y));
    let unused = ok(d.tensor(&[1.0, 2.0], &[2])).requires_grad();
    let mut cost = Vec::new();
    for k in [1usize, 64] {
        let v = ok(d.tensor(&sample(&mut r, k * 30, COTANGENT), &[k, 6, 5]));
        ok(d.synchronize()); // nothing pending before the pass
        let before = d.stats();
        let g = ok(pullback::vjp_batched(&[&out], &[&v], &[&x, &y, &unused]));
        let after = d.stats();
        assert_eq!(g[0].shape(), &[k, 6, 5]);
        assert_eq!(g[1].shape(), &[k, 5]);
        assert_eq!(g[2].shape(), &[k, 2]);
        assert_eq!(
            after.submits - before.submits,
            1,
            "K={k}: one submit per pass"
        );
        cost.push((
            after.dispatches - before.dispatches,
            after.submits - before.submits,
        ));
        // Reading results back is one more submit per tensor, no dispatch.
        let before = d.stats();
        assert!(read(&g[2]).iter().all(|&v| v == 0.0));
        let after = d.stats();
        assert_eq!(after.submits - before.submits, 1);
        assert_eq!(after.dispatches, before.dispatches);
    }
    assert_eq!(cost[0], cost[1], "(dispatches, submits) for K=1 vs K=64");
    assert!(cost[0].0 > 0);
    // backward_with: also one submit.
    ok(d.synchronize());
    let before = d.stats();
    ok(out.backward_with(&ok(d.tensor(&sample(&mut r, 30, COTANGENT), &[6, 5]))));
    assert_eq!(d.stats().submits - before.submits, 1);
}

#[test]
fn memory_counters_track_live_tensors() {
    let d = fresh_device();
    let s0 = d.stats();
    let t = ok(d.zeros(&[1000]));
    let s1 = d.stats();
    assert!(s1.live_bytes >= s0.live_bytes + 4000, "{s0:?} -> {s1:?}");
    assert!(s1.peak_bytes >= s1.live_bytes);
    drop(t);
    let s2 = d.stats();
    assert_eq!(s2.live_bytes, s0.live_bytes, "dropping a tensor frees it");
    assert_eq!(s2.peak_bytes, s1.peak_bytes, "peak stays");
    d.reset_peak();
    assert_eq!(d.stats().peak_bytes, s2.live_bytes);
}

// ---------------------------------------------------------------------------
// Adapter selection and device creation
// ---------------------------------------------------------------------------

#[test]
fn pool_keeps_idle_buffers_up_to_its_limit() {
    let dev = fresh_device();
    let t = ok(dev.ones(&[1000]));
    drop(t);
    assert!(
        dev.stats().pooled_bytes >= 4000,
        "a freed buffer is kept for reuse"
    );
    dev.trim_pool();
    assert_eq!(dev.stats().pooled_bytes, 0);
    dev.set_pool_limit(0);
    let t = ok(dev.ones(&[1000]));
    drop(t);
    assert_eq!(
        dev.stats().pooled_bytes,
        0,
        "past the limit a freed buffer is released"
    );
    assert_eq!(read(&ok(dev.full(&[3], 2.0))), vec![2.0; 3]);
}

#[test]
fn long_forward_chains_are_submitted_in_pieces() {
    // Forward work that is never read back must not grow one encoder forever.
    // Fused, a run of elementwise ops is one dispatch per chain, so it
    // takes more ops to record as many dispatches; the bound is the same.
    let dev = fresh_device();
    for fused in [false, true] {
        dev.set_fused_forward(fused);
        let mut x = ok(dev.ones(&[16]));
        let (submits, dispatches) = (dev.stats().submits, dev.stats().dispatches);
        let mut ops = 0;
        while dev.stats().dispatches - dispatches < 2500 {
            x = ok(x.add_scalar(1.0));
            ops += 1;
        }
        assert!(
            dev.stats().submits - submits >= 2,
            "fused {fused}: {:?}",
            dev.stats()
        );
        assert_eq!(read(&x), vec![1.0 + ops as f32; 16], "fused {fused}");
    }
}

#[test]
fn no_backend_means_no_adapter_and_the_text_says_how_to_install_one() {
    let r = pollster::block_on(Device::with_options(DeviceOptions {
        adapter: None,
        backends: pullback::wgpu::Backends::empty(),
    }));
    let e = expect_err(r, &["mesa-vulkan-drivers"]);
    assert_eq!(e, Error::NoAdapter);
}

#[test]
fn unknown_adapter_name_is_adapter_not_found() {
    let r = pollster::block_on(Device::with_options(DeviceOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    }));
    let e = expect_err(r, &["no-such-adapter-xyz", "PULLBACK_ADAPTER"]);
    match e {
        Error::AdapterNotFound { wanted, available } => {
            assert_eq!(wanted, "no-such-adapter-xyz");
            assert!(!available.is_empty(), "it lists the adapters there are");
        }
        other => panic!("expected AdapterNotFound, got {other:?}"),
    }
}

#[test]
fn device_new_async() {
    let d = pollster::block_on(Device::new_async())
        .unwrap_or_else(|e| panic!("pullback tests need an adapter: {e}"));
    assert!(!d.adapter_info().name.is_empty());
    assert_usable(&d);
}

#[test]
fn from_wgpu_with_a_device_the_caller_made() {
    // A wgpu device requested from a fresh instance, with default limits.
    let instance = pullback::wgpu::Instance::new(
        pullback::wgpu::InstanceDescriptor::new_without_display_handle(),
    );
    let adapter = pollster::block_on(
        instance.request_adapter(&pullback::wgpu::RequestAdapterOptions::default()),
    )
    .unwrap_or_else(|e| panic!("no adapter for from_wgpu: {e}"));
    let (device, queue) =
        pollster::block_on(adapter.request_device(&pullback::wgpu::DeviceDescriptor::default()))
            .unwrap_or_else(|e| panic!("request_device: {e}"));
    let d = Device::from_wgpu(device, queue);
    assert_usable(&d);
    // The same wgpu device shared by a second pullback Device: independent
    // pullback devices (tensors do not mix), both working.
    let shared = Device::from_wgpu(dev().wgpu_device().clone(), dev().wgpu_queue().clone());
    assert!(!shared.same(dev()));
    assert_usable(&shared);
    let a = ok(shared.tensor(&[1.0], &[1]));
    assert_eq!(
        expect_err(a.add(&tensor(&[1.0], &[1])), &[]),
        Error::DeviceMismatch
    );
}

/// Every GEMM schedule gives the reference product on this adapter (the
/// whole matmul suite runs under the tiles in CI: `PULLBACK_GEMM=tiles`,
/// `large`), and asking for one the device cannot run is an error that
/// changes nothing.
#[test]
fn gemm_kernel_can_be_chosen_and_each_computes_the_product() {
    let dev = fresh_device();
    assert_eq!(GemmKernel::parse("TILES"), Some(GemmKernel::Tiles));
    assert_eq!(GemmKernel::parse("Large"), Some(GemmKernel::LargeTiles));
    assert_eq!(GemmKernel::parse("lanes"), Some(GemmKernel::Lanes));
    assert_eq!(GemmKernel::parse("fast"), None);
    // 70×7 · 7×66: crosses the 64 tiles, a contraction of 7 (not a multiple
    // of 4: unaligned rows and a tail); 150×37 · 37×133 crosses the 128
    // tiles, with a contraction past one 16- or 32-deep step and a tail.
    let products = [(70, 7, 66), (150, 37, 133)].map(|mpn| Product::new(&dev, mpn));
    let lanes_runs =
        dev.gemm_kernel() == GemmKernel::Lanes || dev.set_gemm_kernel(GemmKernel::Lanes).is_ok();
    let mut kernels = vec![GemmKernel::Tiles, GemmKernel::LargeTiles];
    if lanes_runs {
        kernels.push(GemmKernel::Lanes);
    } else {
        let before = dev.gemm_kernel();
        let e = expect_err(
            dev.set_gemm_kernel(GemmKernel::Lanes),
            &["subgroups", "Tiles"],
        );
        assert!(matches!(e, Error::RequestDevice(_)), "{e:?}");
        assert_eq!(dev.gemm_kernel(), before);
    }
    for kernel in kernels {
        ok(dev.set_gemm_kernel(kernel));
        assert_eq!(dev.gemm_kernel(), kernel);
        for product in &products {
            product.check(&format!("{kernel:?}"));
        }
    }
    if dev.adapter_info().device_type == pullback::wgpu::DeviceType::Cpu {
        ok(dev.set_gemm_kernel(GemmKernel::Auto));
        assert_eq!(dev.gemm_kernel() == GemmKernel::Lanes, lanes_runs);
    }
}

/// Devices created on several threads at once (what a parallel test
/// harness does) each work: creation is serialized inside pullback,
/// because some drivers are not thread-safe there. `with_options`'s
/// future stays `Send`, so async callers can create devices on any executor.
#[test]
fn devices_created_on_several_threads_at_once_each_work() {
    fn assert_send<T: Send>(_: &T) {}
    let creating = Device::with_options(DeviceOptions::from_env());
    assert_send(&creating);
    drop(creating);
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let dev = fresh_device();
                    let x = ok(dev.tensor(&[t as f32, 2.0, 3.0], &[3]));
                    read(&ok(x.mul(&x)))
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let got = h.join().expect("a thread creating a device panicked");
            assert_eq!(got, vec![(t * t) as f32, 4.0, 9.0]);
        }
    });
}

/// The GEMM autotune times both tiles schedules at three sizes, sets where
/// `Auto` switches to the large tiles from what it measured, leaves the
/// schedule choice as it was, and products keep their values.
#[test]
fn tune_gemm_measures_both_tiles_and_sets_the_switch() {
    let dev = fresh_device();
    let kernel = dev.gemm_kernel();
    let default = dev.large_tile_min_tiles();
    let cpu = dev.adapter_info().device_type == pullback::wgpu::DeviceType::Cpu;
    assert_eq!(
        default,
        if cpu {
            GemmKernel::CPU_LARGE_TILE_MIN_TILES
        } else {
            GemmKernel::LARGE_TILE_MIN_TILES
        }
    );
    let tuning = ok(dev.tune_gemm());
    let sizes: Vec<usize> = tuning.probes.iter().map(|p| p.n).collect();
    let want = if cpu {
        [128, 256, 512]
    } else {
        [512, 1024, 2048]
    };
    assert_eq!(sizes, want.iter().flat_map(|&n| [n, n]).collect::<Vec<_>>());
    for (i, p) in tuning.probes.iter().enumerate() {
        let expected = [GemmKernel::Tiles, GemmKernel::LargeTiles][i % 2];
        assert_eq!(p.kernel, expected);
        assert!(p.ms > 0.0 && p.ms.is_finite(), "{p:?}");
    }
    // The switch is the tile count of a probe size, or 4× the largest's.
    let tiles = |n: usize| n.div_ceil(128).pow(2);
    let allowed: Vec<usize> = want
        .iter()
        .map(|&n| tiles(n))
        .chain([4 * tiles(want[2])])
        .collect();
    assert!(allowed.contains(&tuning.large_tile_min_tiles), "{tuning:?}");
    assert_eq!(dev.large_tile_min_tiles(), tuning.large_tile_min_tiles);
    assert_eq!(dev.gemm_kernel(), kernel);
    assert!(tuning.took.as_secs_f64() > 0.0);
    // Products after tuning: the reference values (Auto, whichever tiles).
    Product::new(&dev, (150, 37, 133)).check("after tune_gemm");
}

/// A matrix product on the device and its float64 reference.
struct Product {
    a: Tensor,
    b: Tensor,
    /// (value, bound on f32 summation error: p·2⁻²⁴·Σ|terms|).
    want: Vec<(f64, f64)>,
}

impl Product {
    fn new(dev: &Device, (m, p, n): (usize, usize, usize)) -> Product {
        let a: Vec<f32> = (0..m * p)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..p * n)
            .map(|i| ((i * 53 % 97) as f32) / 48.0 - 1.0)
            .collect();
        let want = (0..m * n)
            .map(|e| {
                let terms = (0..p).map(|q| a[e / n * p + q] as f64 * b[q * n + e % n] as f64);
                let abs: f64 = terms.clone().map(f64::abs).sum();
                (terms.sum(), 1e-7 + p as f64 * 6e-8 * abs)
            })
            .collect();
        Product {
            a: ok(dev.tensor(&a, &[m, p])),
            b: ok(dev.tensor(&b, &[p, n])),
            want,
        }
    }

    fn check(&self, what: &str) {
        let got = read(&ok(self.a.matmul(&self.b)));
        for (e, (g, (w, tol))) in got.iter().zip(&self.want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= *tol,
                "{what} {:?}: element {e}: {g} vs {w}",
                self.a.shape()
            );
        }
    }
}
