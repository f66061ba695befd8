//! Out of memory is a typed error that keeps the device and every tensor:
//! under `Device::set_memory_limit` (pullback's own check, before the
//! driver is asked) and under a real shortage (a child process whose
//! address space is capped with `ulimit -v`, so the driver's allocations
//! fail), for uploads, op results and a backward pass's buffers.
mod common;

use common::*;
use pullback::{Device, Error, Tensor};

const MIB: u64 = 1 << 20;
/// 64 MiB of f32 per tensor, as in the reproduction.
const BIG: usize = 16 << 20;

/// Distinct values, so a tensor that lost its contents cannot pass.
fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 1009) as f32)
        .collect()
}

/// Uploads `data` (64 MiB) as a tensor and multiplies it by 2, both kept,
/// until an allocation fails; returns what was made and the error.
fn fill(dev: &Device, data: &[f32], at_most: usize) -> (Vec<(Tensor, Tensor)>, Error) {
    let mut kept = Vec::new();
    for _ in 0..at_most {
        let made = dev
            .tensor(data, &[BIG])
            .and_then(|t| Ok((t.mul_scalar(2.0)?, t)))
            .and_then(|(m, t)| dev.synchronize().map(|()| (t, m)));
        match made {
            Ok(pair) => kept.push(pair),
            Err(e) => return (kept, e),
        }
    }
    panic!("{at_most} pairs of 64 MiB tensors all fit; the shortage never came");
}

/// The first pair still holds its values: the upload and the product.
fn assert_first_pair_intact(kept: &[(Tensor, Tensor)], data: &[f32]) {
    let (t, m) = &kept[0];
    assert!(ok(t.to_vec()) == data, "the first tensor lost its values");
    let doubled = ok(m.to_vec());
    assert!(
        doubled.iter().zip(data).all(|(d, w)| *d == 2.0 * w),
        "the first product lost its values"
    );
}

/// The seed example, `y = x·x` at [2, 3] with v = [1, 1]: grad [4, 6].
fn assert_seed_example(dev: &Device) {
    let x = ok(dev.tensor(&[2.0, 3.0], &[2])).requires_grad();
    let y = ok(x.mul(&x));
    ok(y.backward_with(&ok(dev.tensor(&[1.0, 1.0], &[2]))));
    assert_eq!(ok(x.grad().expect("x.grad").to_vec()), vec![4.0, 6.0]);
}

#[test]
fn the_memory_limit_fails_before_the_driver_and_keeps_every_tensor() {
    let dev = fresh_device();
    assert_eq!(dev.memory_limit(), None);
    dev.set_memory_limit(1024 * MIB);
    assert_eq!(dev.memory_limit(), Some(1024 * MIB));
    let data = pattern(BIG, 0);
    let (kept, err) = fill(&dev, &data, 64);
    // Pairs of 64 MiB: the 9th pair's upload or product passes 1 GiB.
    assert!((7..=8).contains(&kept.len()), "{} pairs fit", kept.len());
    match &err {
        Error::OutOfMemory { requested, live } => {
            assert_eq!(*requested, 64 * MIB);
            assert!(*live + requested > 1024 * MIB, "{live} live");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("set_memory_limit") && text.contains("intact"),
        "{text}"
    );
    assert!(!dev.is_lost());
    assert_first_pair_intact(&kept, &data);
    let live = dev.stats().live_bytes;
    assert!(live <= 1024 * MIB, "{live} bytes live under a 1 GiB limit");
    drop(kept);
    assert_seed_example(&dev);
    // Freed memory is usable again under the same limit.
    let again = ok(dev.tensor(&pattern(BIG, 3), &[BIG]));
    assert_eq!(ok(again.to_vec())[..4], pattern(BIG, 3)[..4]);
}

#[test]
fn idle_pooled_buffers_are_released_before_the_limit_refuses() {
    let dev = fresh_device();
    // 512 MiB of buffers made and dropped: they stay pooled (idle).
    let made: Vec<Tensor> = (0..8).map(|_| ok(dev.zeros(&[BIG]))).collect();
    drop(made);
    assert!(dev.stats().pooled_bytes >= 512 * MIB);
    // A limit below live + pooled but above what is asked for now: the
    // idle buffers go, the allocation succeeds.
    dev.set_memory_limit(256 * MIB);
    let t = ok(dev.tensor(&pattern(BIG * 2, 1), &[BIG * 2]));
    assert!(dev.stats().pooled_bytes + dev.stats().live_bytes <= 256 * MIB);
    assert_eq!(ok(t.to_vec())[..8], pattern(BIG * 2, 1)[..8]);
}

#[test]
fn a_pass_plans_its_chunks_under_the_memory_limit() {
    let dev = fresh_device();
    let (n, k) = (1 << 16, 64);
    let x = ok(dev.tensor(&pattern(n, 5), &[n])).requires_grad();
    // Three branches that meet twice: unfused, a pass keeps several [K, n]
    // cotangents alive at once.
    let (sx, cx) = (ok(x.sin()), ok(x.cos()));
    let ex = ok(ok(x.mul_scalar(1e-3)).exp());
    let y = ok(ok(ok(sx.mul(&cx)).mul(&ex)).add(&ok(sx.mul(&ex))));
    let v = ok(dev.tensor(&pattern(k * n, 6), &[k, n]));
    let whole = ok(ok(pullback::vjp_batched(&[&y], &[&v], &[&x]))[0].to_vec());
    // Room for the results ([K, n]) and about a quarter of the pass.
    let peak = ok(pullback::plan_peak_bytes(&[&y], &[&x], k));
    dev.trim_pool();
    dev.set_memory_limit(dev.stats().live_bytes + (k * n * 4) as u64 + peak / 4);
    let submits = dev.stats().submits;
    let chunked = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
    assert!(
        dev.stats().submits - submits > 1,
        "the pass was not chunked"
    );
    assert!(ok(chunked[0].to_vec()) == whole, "chunked != whole");

    // With no room for even one row: OutOfMemory, and the graph intact.
    drop(chunked);
    dev.set_memory_limit(dev.stats().live_bytes + 4096);
    match pullback::vjp_batched(&[&y], &[&v], &[&x]) {
        Err(Error::OutOfMemory { .. }) => {}
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    dev.clear_memory_limit();
    let again = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
    assert!(ok(again[0].to_vec()) == whole, "the graph changed");
}

/// Address space for the child: lavapipe, LLVM and the test harness take
/// about 1.5 GiB of it before any tensor; the rest runs out after some
/// tens of 64 MiB tensors.
const ULIMIT_KIB: u64 = 3_500_000;

#[test]
fn a_real_shortage_is_out_of_memory_and_the_device_survives() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ULIMIT_KIB} && exec timeout 600 \"$0\" --exact child_under_ulimit \
             --ignored --nocapture"
        ))
        .arg(&exe)
        .env("PULLBACK_OOM_CHILD", "1")
        // A backtrace allocates: under the cap it could deadlock the child.
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running the child under ulimit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the child failed:\n{text}");
    for marker in ["OOM-UPLOADS", "OOM-PASS", "OOM-DONE"] {
        assert!(
            text.contains(marker),
            "the child never printed {marker}:\n{text}"
        );
    }
}

#[test]
#[ignore = "run by a_real_shortage_is_out_of_memory_and_the_device_survives under ulimit -v"]
fn child_under_ulimit() {
    assert!(
        std::env::var("PULLBACK_OOM_CHILD").is_ok(),
        "run through a_real_shortage_is_out_of_memory_and_the_device_survives"
    );
    let dev = fresh_device();
    // Every kernel the child uses, compiled while memory is plentiful.
    assert_seed_example(&dev);
    let n = 1 << 20;
    let x = ok(dev.tensor(&pattern(n, 1), &[n])).requires_grad();
    // Three branches that meet twice: unfused, a pass keeps several [K, n]
    // cotangents alive at once.
    let (sx, cx) = (ok(x.sin()), ok(x.cos()));
    let ex = ok(ok(x.mul_scalar(1e-3)).exp());
    let y = ok(ok(ok(sx.mul(&cx)).mul(&ex)).add(&ok(sx.mul(&ex))));
    let small = ok(dev.tensor(&pattern(4 * n, 2), &[4, n]));
    dev.set_fused_adjoints(true); // whatever PULLBACK_FUSION says
    let want = ok(ok(pullback::vjp_batched(&[&y], &[&small], &[&x]))[0].to_vec());
    dev.set_fused_adjoints(false);
    let one = ok(dev.full(&[n], 0.5));
    let unfused = ok(ok(pullback::vjp_batched(&[&y], &[&small], &[&x]))[0].to_vec());
    let one_grad = ok(ok(pullback::vjp(&[&y], &[&one], &[&x]))[0].to_vec());
    dev.set_fused_adjoints(true);
    ok(ok(ok(dev.zeros(&[8])).mul_scalar(2.0)).to_vec());

    // One host copy of the data for every upload: the host's own memory
    // is capped too.
    let data = pattern(BIG, 0);
    let (mut kept, err) = fill(&dev, &data, 200);
    assert!(
        matches!(err, Error::OutOfMemory { .. }),
        "uploads: expected OutOfMemory, got {err:?}"
    );
    assert!(!dev.is_lost());
    let pairs = kept.len();
    assert!(pairs >= 3, "only {pairs} pairs fit: raise ULIMIT_KIB");
    // Reading back needs host memory and a staging buffer: free a pair.
    kept.truncate(pairs - 2);
    dev.trim_pool();
    assert_first_pair_intact(&kept, &data);
    println!("OOM-UPLOADS after {pairs} pairs of 64 MiB: {err}");

    // A pass that needs more than is left, with no budget: typed error,
    // the graph intact; the same pass under a budget runs. Unfused, the
    // pass holds two [K, n] cotangents at once besides v (the product's
    // two operands'); v and the result take about 90% of what the fill
    // freed, v and two cotangents about 135%. (The room after the fill is
    // more than what it freed, by what the allocator keeps of its blocks:
    // 42% and 126% failed once CPU adapters took smaller blocks.)
    let freed = (pairs - 1) as u64 * 128 * MIB;
    drop(kept);
    dev.trim_pool();
    dev.set_fused_adjoints(false);
    // Whole multiples of 128 MiB (32 rows), which are their own size class
    // here, rounded to the nearest.
    let rows = freed * 45 / 100 / (4 * n as u64);
    let k = ((rows + 16) / 32 * 32) as usize;
    let v = ok(dev.full(&[k, n], 0.5)); // no host copy, no staging
    let err = pullback::vjp_batched(&[&y], &[&v], &[&x]).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { .. }),
        "pass: got {err:?}"
    );
    assert!(!dev.is_lost());
    println!("OOM-PASS K = {k}: {err}");
    dev.set_memory_budget(64 * MIB);
    let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x]));
    // The K rows are too large to read back here (or to bind: past the
    // binding limit they can only be copied); the pass's correctness under
    // chunking is checked in tests/chunking.rs. Here: it ran, whole.
    assert_eq!(g[0].shape(), &[k, n]);
    drop((g, v));
    let first = ok(pullback::vjp(&[&y], &[&one], &[&x]));
    assert!(ok(first[0].to_vec()) == one_grad, "the graph changed");
    let again = ok(pullback::vjp_batched(&[&y], &[&small], &[&x]));
    assert!(ok(again[0].to_vec()) == unfused, "the graph changed");
    dev.set_fused_adjoints(true);
    let again = ok(pullback::vjp_batched(&[&y], &[&small], &[&x]));
    assert!(ok(again[0].to_vec()) == want, "the graph changed");
    assert_seed_example(&dev);
    println!("OOM-DONE");
}
