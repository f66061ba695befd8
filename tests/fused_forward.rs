//! Forward fusion: elementwise ops wait in a chain and run as one kernel
//! when something needs the device. Checked: the values equal the unfused
//! ops' (the same WGSL functions on the same inputs: a few ULP at most)
//! and a float64 reference; one dispatch per chain; only values still
//! referenced are written (and nothing runs when none is); other kernels,
//! readbacks, backward passes and other threads see the chain's results.

mod common;

use common::*;
use pullback::{Device, Tensor};
use rand::RngExt;

/// |a − b| ≤ 1e-6 · max(|a|, |b|, 1e-30): the same functions on the same
/// inputs, where only the compiler's contraction of a product and a sum
/// into one FMA could differ (f32 ε is 1.2e-7).
#[track_caller]
fn assert_same(what: &str, fused: &[f32], unfused: &[f32]) {
    assert_eq!(fused.len(), unfused.len(), "{what}: lengths");
    for (i, (a, b)) in fused.iter().zip(unfused).enumerate() {
        let scale = a.abs().max(b.abs()).max(1e-30);
        assert!(
            (a - b).abs() <= 1e-6 * scale || (a.is_nan() && b.is_nan()) || a == b,
            "{what}, element {i}: fused {a} vs unfused {b}"
        );
    }
}

/// Against float64: lavapipe's sin, exp and tanh are within a few ULP of
/// the f32 result, so 1e-5 relative leaves a wide margin; atol covers
/// results near 0 (sin x near x = 0), whose relative error is not small.
const LIBM: Tol = Tol::new(1e-5, 1e-6);

/// Runs `f` twice with forward fusion on or off; returns what the second
/// run read back and the dispatches it made. A chain runs as one kernel
/// from the second time its recipe is seen (the first time, its ops run
/// one by one: `first_sighting_runs_the_ops_themselves`).
fn run<T>(dev: &Device, fused: bool, f: impl Fn() -> T) -> (T, u64) {
    ok(dev.synchronize());
    dev.set_fused_forward(fused);
    f();
    ok(dev.synchronize());
    let before = dev.stats().dispatches;
    let out = f();
    ok(dev.synchronize());
    let dispatches = dev.stats().dispatches - before;
    dev.set_fused_forward(true);
    (out, dispatches)
}

fn uniform(dev: &Device, name: &str, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let mut r = rng(seed_of(name));
    ok(dev.tensor(&sample(&mut r, numel(shape), Dist::Uniform(lo, hi)), shape))
}

#[test]
fn w2_forward_is_one_dispatch_and_matches_unfused_and_f64() {
    let dev = fresh_device();
    for n in [1usize, 3, 7, 33, 1024, 1 << 16] {
        let x = uniform(&dev, &format!("w2 {n}"), &[n], -2.0, 2.0);
        let w2 = || read(&ok(ok(x.sin()).mul(&ok(x.exp()))));
        let (fused, fd) = run(&dev, true, w2);
        let (unfused, ud) = run(&dev, false, w2);
        assert_eq!((fd, ud), (1, 3), "n = {n}: dispatches fused, unfused");
        assert_same(&format!("W2, n = {n}"), &fused, &unfused);
        let want: Vec<f64> = read(&x)
            .iter()
            .map(|&v| (v as f64).sin() * (v as f64).exp())
            .collect();
        assert_close_f32(&format!("W2 vs f64, n = {n}"), &fused, &want, &[n], LIBM);
    }
}

/// The first time a chain is seen its ops run their own kernels when
/// those are compiled already; from then on it is one kernel; the values
/// are the same both times.
#[test]
fn first_sighting_runs_compiled_ops_themselves() {
    let dev = fresh_device();
    dev.set_fused_forward(true); // whatever PULLBACK_FUSION says
    let x = uniform(&dev, "sighting x", &[1000], -1.0, 1.0);
    // Each op alone (a chain of one op runs the op's own kernel).
    read(&ok(x.cos()));
    read(&ok(x.mul_scalar(3.0)));
    read(&ok(x.tanh()));
    let mut seen = Vec::new();
    for _ in 0..3 {
        ok(dev.synchronize());
        let before = dev.stats().dispatches;
        let y = read(&ok(ok(ok(x.cos()).mul_scalar(3.0)).tanh()));
        seen.push((dev.stats().dispatches - before, y));
    }
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [3, 1, 1]);
    assert_same("first and second sighting", &seen[1].1, &seen[0].1);
}

/// A first-seen chain whose ops' kernels are not compiled yet runs as one
/// kernel at once: one compile instead of three. Those per-op kernels are
/// then not counted as missing again: a different chain of the same ops
/// compiles and runs them, rather than compose a kernel of its own.
#[test]
fn first_sighting_composes_when_that_compiles_less() {
    let dev = fresh_device();
    dev.set_fused_forward(true);
    let x = uniform(&dev, "compose x", &[1000], -1.0, 1.0);
    let xs: Vec<f64> = read(&x).iter().map(|&v| v as f64).collect();
    let step = |f: &dyn Fn() -> Vec<f32>| {
        ok(dev.synchronize());
        let (d, p) = (dev.stats().dispatches, dev.stats().pipelines);
        let y = f();
        (y, dev.stats().dispatches - d, dev.stats().pipelines - p)
    };
    let (y, dispatches, compiled) = step(&|| read(&ok(ok(ok(x.cos()).mul_scalar(3.0)).tanh())));
    assert_eq!((dispatches, compiled), (1, 1), "composed at first sight");
    let want: Vec<f64> = xs.iter().map(|v| (3.0 * v.cos()).tanh()).collect();
    assert_close_f32("tanh(3 cos x)", &y, &want, &[1000], LIBM);
    let (z, dispatches, compiled) = step(&|| read(&ok(ok(ok(x.tanh()).cos()).mul_scalar(3.0))));
    assert_eq!(
        (dispatches, compiled),
        (3, 3),
        "the same ops, another chain"
    );
    let want: Vec<f64> = xs.iter().map(|v| 3.0 * v.tanh().cos()).collect();
    assert_close_f32("3 cos(tanh x)", &z, &want, &[1000], LIBM);
}

/// A program of one-off chains (every ordered pair of six ops, each chain
/// seen once) compiles each op's kernel once plus at most one composed
/// kernel per two ops: first-sight compositions are bounded by the ops'
/// kernels, not by the number of chains.
#[test]
fn one_off_chains_compile_a_bounded_number_of_kernels() {
    type Op = (fn(&Tensor) -> pullback::Result<Tensor>, fn(f64) -> f64);
    let dev = fresh_device();
    dev.set_fused_forward(true);
    let x = uniform(&dev, "one-off x", &[256], -1.0, 1.0);
    let xs: Vec<f64> = read(&x).iter().map(|&v| v as f64).collect();
    let ops: [Op; 6] = [
        (Tensor::sin, f64::sin),
        (Tensor::cos, f64::cos),
        (Tensor::exp, f64::exp),
        (Tensor::tanh, f64::tanh),
        (Tensor::sigmoid, |v| 1.0 / (1.0 + (-v).exp())),
        (Tensor::neg, |v| -v),
    ];
    let before = dev.stats().pipelines;
    for (i, (f, f64_f)) in ops.iter().enumerate() {
        for (j, (g, f64_g)) in ops.iter().enumerate() {
            if i != j {
                let y = read(&ok(g(&ok(f(&x)))));
                let want: Vec<f64> = xs.iter().map(|&v| f64_g(f64_f(v))).collect();
                assert_close_f32(&format!("op {j} of op {i}"), &y, &want, &[256], LIBM);
            }
        }
    }
    let compiled = dev.stats().pipelines - before;
    assert!(
        compiled <= 6 + 3,
        "{compiled} pipelines for 30 one-off chains of 6 ops"
    );
}

/// A value the caller still holds is written; one dropped before the
/// chain runs is not needed and costs nothing; nothing held, nothing runs.
#[test]
fn held_values_are_written_and_dropped_ones_are_not_needed() {
    let dev = fresh_device();
    let x = uniform(&dev, "held x", &[5, 7], -1.0, 1.0);
    let (values, dispatches) = run(&dev, true, || {
        let a = ok(x.sin());
        let c = ok(ok(a.exp()).add(&x));
        (read(&a), read(&c))
    });
    assert_eq!(dispatches, 1);
    let xs = read(&x);
    let want_a: Vec<f64> = xs.iter().map(|&v| (v as f64).sin()).collect();
    let want_c: Vec<f64> = xs
        .iter()
        .map(|&v| (v as f64).sin().exp() + v as f64)
        .collect();
    assert_close_f32("sin x, held", &values.0, &want_a, &[5, 7], LIBM);
    assert_close_f32("exp(sin x) + x", &values.1, &want_c, &[5, 7], LIBM);
    let ((), dispatches) = run(&dev, true, || {
        let _ = ok(ok(x.sin()).exp());
    });
    assert_eq!(dispatches, 0, "no result is referenced: nothing to run");
}

/// Kernels, copies and readbacks recorded after a chain read its values;
/// a new shape runs the chain first; long chains and many inputs split.
#[test]
fn other_kernels_shape_changes_and_limits() {
    let dev = fresh_device();
    let x = uniform(&dev, "mm x", &[4, 8], -1.0, 1.0);
    let w = uniform(&dev, "mm w", &[8, 3], -1.0, 1.0);
    let big = uniform(&dev, "mm big", &[3, 4, 8], -1.0, 1.0);
    let program = || {
        let h = ok(ok(x.tanh()).mul_scalar(2.0));
        let z = ok(h.matmul(&w));
        let s = ok(h.sum(&[1], false));
        let b = ok(ok(h.add(&big)).sigmoid());
        let flat = ok(ok(h.reshape(&[32])).square());
        let mut long = h.clone();
        for i in 0..40 {
            long = ok(ok(long.mul_scalar(0.9)).add_scalar(0.01 * i as f32));
        }
        let mut wide = ok(x.mul_scalar(0.0));
        for i in 0..20 {
            let term = uniform(&dev, &format!("wide {i}"), &[4, 8], -1.0, 1.0);
            wide = ok(wide.add(&term));
        }
        [z, s, b, flat, long, wide]
            .iter()
            .map(read)
            .collect::<Vec<_>>()
    };
    let (fused, fd) = run(&dev, true, program);
    let (unfused, ud) = run(&dev, false, program);
    assert!(fd < ud, "fused {fd} dispatches, unfused {ud}");
    for (i, (f, u)) in fused.iter().zip(&unfused).enumerate() {
        assert_same(&format!("result {i}"), f, u);
    }
}

/// One random program: inputs (the region's shape and shapes broadcast
/// into it), then ops on earlier values; some values kept to read back.
#[derive(Debug)]
enum Instr {
    Unary(usize, usize),
    Binary(usize, usize, usize),
}

fn unary(op: usize, t: &Tensor) -> Tensor {
    ok(match op {
        0 => t.sin(),
        1 => t.tanh(),
        2 => t.sigmoid(),
        3 => t.neg(),
        4 => t.square(),
        5 => t.mul_scalar(-1.5),
        6 => t.add_scalar(0.25),
        7 => t.relu(),
        8 => t.gelu(),
        9 => t.silu(),
        10 => t.softplus(),
        11 => t.leaky_relu(0.1),
        12 => t.clamp(-0.5, 0.75),
        13 => ok(t.tanh()).exp(),
        14 => t.elu(0.5),
        _ => t.abs(),
    })
}

fn binary(op: usize, a: &Tensor, b: &Tensor) -> Tensor {
    ok(match op {
        0 => a.add(b),
        1 => a.sub(b),
        2 => a.mul(b),
        3 => a.maximum(b),
        4 => a.minimum(b),
        5 => a.div(&ok(ok(b.sigmoid()).add_scalar(0.5))),
        _ => a.gt(b),
    })
}

/// Random elementwise programs (chains, diamonds, an input used twice,
/// operands broadcast as a suffix, a prefix, a scalar or through strides),
/// fused against unfused, with random values kept alive.
#[test]
fn random_programs_agree_with_unfused() {
    let dev = fresh_device();
    let mut r = rng(seed_of("random fused forward programs"));
    let shapes: [(&[usize], &[&[usize]]); 5] = [
        (&[1], &[&[], &[1]]),
        (&[7], &[&[], &[7]]),
        (&[5, 33], &[&[33], &[5, 1], &[1, 1]]),
        (&[4, 8], &[&[8], &[4, 1], &[]]),
        (&[3, 4, 5], &[&[3, 1, 5], &[4, 5], &[3, 1, 1]]),
    ];
    for case in 0..60 {
        let (shape, others) = shapes[case % shapes.len()];
        let mut inputs = vec![uniform(&dev, &format!("rp {case} x"), shape, -2.0, 2.0)];
        for (i, s) in others.iter().enumerate() {
            inputs.push(uniform(&dev, &format!("rp {case} in {i}"), s, -2.0, 2.0));
        }
        let len = r.random_range(2..14usize);
        let mut program = Vec::new();
        // Values 0..inputs are inputs; value inputs + i is instruction i.
        // Binary ops take their first operand from the region's values, so
        // every result has the region's shape.
        let region = |v: usize| if v == 0 { 0 } else { v + others.len() };
        for i in 0..len {
            let prior = i + 1;
            program.push(if r.random_bool(0.4) {
                Instr::Unary(r.random_range(0..16), region(r.random_range(0..prior)))
            } else {
                let b = r.random_range(0..prior + others.len());
                Instr::Binary(r.random_range(0..7), region(r.random_range(0..prior)), b)
            });
        }
        let kept: Vec<bool> = (0..len)
            .map(|i| i == len - 1 || r.random_bool(0.3))
            .collect();
        let eval = || {
            let mut values: Vec<Option<Tensor>> = inputs.iter().cloned().map(Some).collect();
            for (i, instr) in program.iter().enumerate() {
                let v = |j: usize| values[j].clone().expect("a value still held");
                let out = match *instr {
                    Instr::Unary(op, a) => unary(op, &v(a)),
                    Instr::Binary(op, a, b) => binary(op, &v(a), &v(b)),
                };
                values.push(Some(out));
                // Drop values no later instruction reads and nobody keeps.
                for j in inputs.len()..values.len() {
                    let used_later = program[i + 1..].iter().any(|p| match *p {
                        Instr::Unary(_, a) => a == j,
                        Instr::Binary(_, a, b) => a == j || b == j,
                    });
                    if !used_later && !kept[j - inputs.len()] {
                        values[j] = None;
                    }
                }
            }
            values[inputs.len()..]
                .iter()
                .flatten()
                .map(read)
                .collect::<Vec<_>>()
        };
        let (fused, fd) = run(&dev, true, eval);
        let (unfused, ud) = run(&dev, false, eval);
        // One dispatch per op unfused. A chain binds its inputs and its
        // outputs: up to 8 in all it is one kernel on every adapter (8
        // storage buffers is WebGPU's minimum); longer ones may split.
        if ud + inputs.len() as u64 <= 8 {
            assert_eq!(fd, 1, "case {case} ({program:?}): one dispatch");
        } else {
            assert!(
                fd < ud,
                "case {case} ({program:?}): {fd} dispatches, unfused {ud}"
            );
        }
        for (i, (f, u)) in fused.iter().zip(&unfused).enumerate() {
            assert_same(&format!("case {case} ({program:?}), kept value {i}"), f, u);
        }
    }
}

/// Saved values come from the fused forward: gradients equal the unfused
/// forward's, for one cotangent and for a batch.
#[test]
fn gradients_through_a_fused_forward() {
    let dev = fresh_device();
    let x = uniform(&dev, "grad x", &[6, 10], -1.0, 1.0).requires_grad();
    let b = uniform(&dev, "grad b", &[10], -1.0, 1.0).requires_grad();
    let v = uniform(&dev, "grad v", &[3, 6, 10], -1.0, 1.0);
    let grads = || {
        let y = ok(ok(ok(ok(x.add(&b)).tanh()).mul(&ok(x.sin()))).mul_scalar(1.5));
        let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x, &b]));
        g.iter().map(read).collect::<Vec<_>>()
    };
    let (fused, _) = run(&dev, true, grads);
    let (unfused, _) = run(&dev, false, grads);
    for (i, (f, u)) in fused.iter().zip(&unfused).enumerate() {
        assert_same(&format!("gradient {i}"), f, u);
    }
}

/// A chain's result handed to another thread before the chain ran: the
/// other thread's kernels and readbacks see it written.
#[test]
fn another_thread_reads_a_waiting_result() {
    let dev = fresh_device();
    let x = uniform(&dev, "thread x", &[256], -1.0, 1.0);
    let want: Vec<f64> = read(&x).iter().map(|&v| (v as f64).sin().exp()).collect();
    for _ in 0..20 {
        let y = ok(ok(x.sin()).exp());
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let y: Tensor = rx.recv().expect("a tensor");
            (read(&y), read(&ok(y.sum(&[0], false)))[0])
        });
        tx.send(y).expect("the reader is alive");
        let (got, sum) = reader.join().expect("the reader finished");
        assert_close_f32(
            "exp(sin x) read by another thread",
            &got,
            &want,
            &[256],
            LIBM,
        );
        let want_sum: f64 = want.iter().sum();
        assert!((sum as f64 - want_sum).abs() < 1e-4 * want_sum.abs().max(1.0));
    }
}
