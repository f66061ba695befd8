//! Readback: `read_all` (several tensors, one submit, one map), pooled
//! staging buffers, and `to_vec_async` sleeping until the map callback
//! rather than spinning.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use common::*;
use pullback::Error;

#[test]
fn read_all_reads_many_tensors_with_one_submit_and_one_map() {
    let dev = fresh_device();
    let mut r = rng(seed_of("read_all"));
    // Odd lengths (copies start at 16-byte boundaries), an empty tensor,
    // and results still pending on the device.
    let a = ok(dev.tensor(&sample(&mut r, 7, Dist::Uniform(-1.0, 1.0)), &[7]));
    let b = ok(ok(dev.tensor(&sample(&mut r, 33 * 5, Dist::Uniform(-1.0, 1.0)), &[33, 5])).sin());
    let empty = ok(dev.tensor(&[], &[0, 3]));
    let c = ok(b.mul_scalar(2.0));
    let want = vec![read(&a), read(&b), Vec::new(), read(&c)];
    let before = dev.stats();
    let got = ok(pullback::read_all(&[&a, &b, &empty, &c]));
    let after = dev.stats();
    assert_eq!(got, want);
    assert_eq!(after.readbacks - before.readbacks, 1, "{after:?}");
    assert_eq!(after.submits - before.submits, 1, "{after:?}");
    assert_eq!(ok(pullback::read_all(&[])), Vec::<Vec<f32>>::new());
}

#[test]
fn read_all_refuses_tensors_from_two_devices() {
    let (d1, d2) = (fresh_device(), fresh_device());
    let a = ok(d1.tensor(&[1.0], &[1]));
    let b = ok(d2.tensor(&[2.0], &[1]));
    assert_eq!(
        expect_err(pullback::read_all(&[&a, &b]), &["device"]),
        Error::DeviceMismatch
    );
}

#[test]
fn staging_buffers_are_reused_across_readbacks() {
    let dev = fresh_device();
    let x = ok(dev.tensor(&vec![0.5; 4096], &[64, 64]));
    let mut first = None;
    for step in 0..20 {
        let y = ok(x.add_scalar(step as f32));
        assert_eq!(read(&y)[4095], 0.5 + step as f32);
        let s = dev.stats();
        let staging = *first.get_or_insert(s.staging_allocations);
        assert_eq!(s.staging_allocations, staging, "step {step}: {s:?}");
    }
    assert!(dev.stats().staging_allocations <= 1);
}

/// Counts wake-ups and lets the test thread sleep until the next one.
#[derive(Default)]
struct CountingWaker {
    wakes: AtomicUsize,
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        *self.woken.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

#[test]
fn to_vec_async_sleeps_until_the_data_is_there() {
    let dev = fresh_device();
    // Enough work that the GPU (or lavapipe) is busy for a while.
    let mut y = ok(dev.tensor(&vec![0.25; 1 << 18], &[1 << 18]));
    for _ in 0..50 {
        y = ok(ok(y.sin()).add_scalar(0.25));
    }
    let want = {
        let mut v = 0.25f64;
        for _ in 0..50 {
            v = v.sin() + 0.25;
        }
        v
    };
    let state = Arc::new(CountingWaker::default());
    let waker = Waker::from(state.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(y.to_vec_async());
    let mut polls = 0;
    let values = loop {
        polls += 1;
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            break ok(v);
        }
        let mut woken = state.woken.lock().unwrap();
        while !*woken {
            let (guard, timeout) = state
                .cv
                .wait_timeout(woken, std::time::Duration::from_secs(60))
                .unwrap();
            woken = guard;
            assert!(!timeout.timed_out(), "to_vec_async was never woken");
        }
        *woken = false;
    };
    assert!(
        (values[12345] as f64 - want).abs() < 1e-5,
        "{} vs {want}",
        values[12345]
    );
    // A spinning future wakes itself on every poll; this one is polled once
    // to start and once more when the map callback has run.
    assert!(
        polls <= 3,
        "polled {polls} times, woken {} times",
        state.wakes.load(Ordering::SeqCst)
    );
}

/// Past 4 MiB, uploads and readbacks go through 4 MiB staging chunks:
/// values that straddle chunk ends come back exact, alone and read
/// together, and a transfer larger than any before creates only the
/// chunks it lacks (in each direction).
#[test]
fn large_transfers_go_through_chunks_and_create_only_those_they_lack() {
    let dev = fresh_device();
    let mut r = rng(seed_of("staging chunks"));
    let chunk = 1usize << 20; // f32 values in one 4 MiB chunk
    let mut round_trip = |n: usize| {
        let xv = sample(&mut r, n, Dist::Uniform(-1.0, 1.0));
        assert_eq!(read(&ok(dev.tensor(&xv, &[n]))), xv, "n {n}");
    };
    round_trip(2 * chunk + 3); // three chunks each way
    let s = dev.stats();
    assert_eq!((s.upload_allocations, s.staging_allocations), (3, 3));
    round_trip(5 * chunk - 1); // five: two more each way
    let s = dev.stats();
    assert_eq!((s.upload_allocations, s.staging_allocations), (5, 5));
    round_trip(4 * chunk);
    assert_eq!(dev.stats().staging_allocations, 5);

    // Several tensors read together, their values crossing chunk ends at
    // odd places.
    let lens = [chunk - 5, chunk + 7, 3, 2 * chunk + 1];
    let values: Vec<Vec<f32>> = (lens.iter())
        .map(|&n| sample(&mut r, n, Dist::Uniform(-1.0, 1.0)))
        .collect();
    let tensors: Vec<_> = (values.iter().zip(lens))
        .map(|(v, n)| ok(dev.tensor(v, &[n])))
        .collect();
    let before = dev.stats();
    let got = ok(pullback::read_all(&tensors.iter().collect::<Vec<_>>()));
    let after = dev.stats();
    assert_eq!(got, values);
    assert_eq!(after.submits - before.submits, 1, "{after:?}");
}
