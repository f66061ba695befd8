//! Threads sharing one `Device`: each runs its own model's backward pass
//! many times and gets, bit for bit, what one thread gets; tensors move
//! between threads; graphs built and dropped on one thread while another
//! runs passes neither panic nor leak. The iteration count is
//! `PULLBACK_CONCURRENCY_ITERS` (default 100; the load is 1000:
//! `PULLBACK_CONCURRENCY_ITERS=1000 cargo test --release --test concurrency`).

mod common;

use std::sync::Arc;

use common::*;
use pullback::{Device, Tensor};

fn iterations() -> usize {
    std::env::var("PULLBACK_CONCURRENCY_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// A small MLP per thread (its own weights, from `seed`): per-example
/// cross-entropy of `tanh(x·W1 + b1)·W2`, differentiated by `vjp` into W1,
/// b1, W2.
struct Model {
    x: Tensor,
    params: Vec<Tensor>,
    labels: Vec<u32>,
    v: Tensor,
}

impl Model {
    fn new(dev: &Device, seed: u64) -> Model {
        let mut r = rng(seed);
        let mut u = |shape: &[usize]| {
            ok(dev.tensor(
                &sample(&mut r, numel(shape), Dist::Uniform(-0.5, 0.5)),
                shape,
            ))
        };
        let x = u(&[16, 8]);
        let params = vec![
            u(&[8, 12]).requires_grad(),
            u(&[12]).requires_grad(),
            u(&[12, 3]).requires_grad(),
        ];
        Model {
            x,
            params,
            labels: (0..16).map(|i| (i % 3) as u32).collect(),
            v: u(&[16]),
        }
    }

    fn grads(&self) -> Vec<Vec<f32>> {
        let p = &self.params;
        let h = ok(ok(ok(self.x.matmul(&p[0])).add(&p[1])).tanh());
        let loss = ok(ok(h.matmul(&p[2])).cross_entropy(&self.labels));
        let refs: Vec<&Tensor> = p.iter().collect();
        let g = ok(pullback::vjp(&[&loss], &[&self.v], &refs));
        ok(pullback::read_all(&g.iter().collect::<Vec<_>>()))
    }
}

#[test]
fn threads_sharing_a_device_agree_with_one_thread() {
    let dev = fresh_device();
    let n = iterations();
    for threads in [2u64, 4] {
        let models: Vec<Arc<Model>> = (0..threads)
            .map(|t| Arc::new(Model::new(&dev, seed_of("thread") + t)))
            .collect();
        // What one thread gets, model by model.
        let alone: Vec<Vec<Vec<f32>>> = models.iter().map(|m| m.grads()).collect();
        let handles: Vec<_> = models
            .iter()
            .cloned()
            .zip(alone.clone())
            .map(|(model, want)| {
                std::thread::spawn(move || {
                    for i in 0..n {
                        assert_eq!(model.grads(), want, "iteration {i}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a thread panicked");
        }
    }
    assert_usable(&dev);
}

#[test]
fn tensors_move_between_threads() {
    let dev = fresh_device();
    let x = ok(dev.tensor(&[1.0, 2.0, 3.0], &[3])).requires_grad();
    let y = std::thread::spawn(move || {
        let y = ok(x.square());
        (x, y)
    })
    .join()
    .expect("the thread panicked");
    let (x, y) = y;
    let g = std::thread::spawn(move || {
        let ones = ok(y.device().ones(&[3]));
        ok(pullback::vjp(&[&y], &[&ones], &[&x]))
    })
    .join()
    .expect("the thread panicked");
    assert_eq!(read(&g[0]), vec![2.0, 4.0, 6.0]);
}

/// One thread builds large graphs and drops them (last handles included)
/// while another runs batched passes: no panic, and once both are done
/// live bytes are back where they started.
#[test]
fn graphs_dropped_on_one_thread_while_another_runs_passes() {
    let dev = fresh_device();
    ok(dev.synchronize());
    let before = dev.stats().live_bytes;
    let n = iterations();
    let worker = {
        let dev = dev.clone();
        std::thread::spawn(move || {
            let x = ok(dev.tensor(&vec![0.5; 4096], &[4096])).requires_grad();
            let y = ok(ok(x.sin()).mul(&ok(x.exp())));
            let v = ok(dev.tensor(&vec![1.0; 8 * 4096], &[8, 4096]));
            for _ in 0..n {
                let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
                // d/dx sin(x)e^x = (cos x + sin x)e^x = 2.2373 at 0.5.
                assert!((read(&g[0])[7] - 2.237_328).abs() < 1e-4);
            }
        })
    };
    for i in 0..n {
        let x = ok(dev.tensor(&vec![0.1 * i as f32; 1 << 14], &[1 << 14])).requires_grad();
        let mut y = x.clone();
        for _ in 0..20 {
            y = ok(ok(y.tanh()).add_scalar(0.1));
        }
        let handle = std::thread::spawn(move || drop((x, y)));
        handle.join().expect("dropping on another thread panicked");
    }
    worker.join().expect("the worker panicked");
    ok(dev.synchronize());
    assert_eq!(dev.stats().live_bytes, before, "{:?}", dev.stats());
}
