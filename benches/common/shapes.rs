//! W10, shapes that change (issue 22): one step is `y = tanh(sin(x)·exp(x))`
//! with x of n elements, `vjp_batched` with K cotangents, and the
//! gradient read back, on a device whose shapes keep changing:
//!
//! - the list: 30 steps, n in [50,000, 70,000) and K in [1, 100], fixed by
//!   a seeded generator;
//! - the K sweep: K = 1…128 at n = 60,000.
//!
//! Each is run twice on the same device; the first pass pays for every new
//! kernel variant, the second reuses them, so first/second is what a new
//! shape costs. Run with Mesa's shader cache off
//! (`MESA_SHADER_CACHE_DISABLE=true`): the bench and the report start a
//! child process with it, or a second run would find the first's shaders.

use std::time::Instant;

use pullback::{Device, Tensor};

use super::values;

/// The list's steps.
pub const W10_STEPS: usize = 30;
/// The K sweep's largest K.
pub const W10_SWEEP_K: usize = 128;
/// The K sweep's n.
pub const W10_SWEEP_N: usize = 60_000;

/// The 30 `(n, K)` of the list, from a fixed xorshift stream.
pub fn w10_list() -> Vec<(usize, usize)> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..W10_STEPS)
        .map(|_| {
            let n = 50_000 + (next() % 20_000) as usize;
            let k = 1 + (next() % 100) as usize;
            (n, k)
        })
        .collect()
}

/// The K sweep's `(n, K)`.
pub fn w10_sweep() -> Vec<(usize, usize)> {
    (1..=W10_SWEEP_K).map(|k| (W10_SWEEP_N, k)).collect()
}

/// One step: record the forward of x (n elements), take the VJP of K
/// cotangents, read the `[K, n]` gradient back. Returns the seconds the
/// device work took (host data is made before the clock starts) and the
/// gradient's first value (so nothing is optimized away).
pub fn step(dev: &Device, n: usize, k: usize) -> (f64, f32) {
    let xs = values(n, n);
    let cs = values(k * n, k);
    let t = Instant::now();
    let x = dev.tensor(&xs, &[n]).unwrap().requires_grad();
    let y = x
        .sin()
        .unwrap()
        .mul(&x.exp().unwrap())
        .unwrap()
        .tanh()
        .unwrap();
    let cot: Tensor = dev.tensor(&cs, &[k, n]).unwrap();
    let g = pullback::vjp_batched(&[&y], &[&cot], &[&x]).unwrap();
    let first = g[0].to_vec().unwrap()[0];
    (t.elapsed().as_secs_f64(), first)
}

/// One pass over `steps`: seconds in all, and pipelines created.
pub fn pass(dev: &Device, steps: &[(usize, usize)]) -> (f64, u64) {
    let before = dev.stats().pipelines;
    let mut secs = 0.0;
    for &(n, k) in steps {
        secs += step(dev, n, k).0;
    }
    (secs, dev.stats().pipelines - before)
}

/// Resident memory of this process in bytes (Linux: /proc/self/statm),
/// None elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// What W10 measured on one fresh device per workload: first and second
/// pass in seconds, pipelines each created, and the process's resident
/// memory and the pool's idle bytes after the second pass.
pub struct W10Figures {
    pub name: &'static str,
    pub first: f64,
    pub second: f64,
    pub first_pipelines: u64,
    pub second_pipelines: u64,
    pub resident: Option<u64>,
    pub pooled: u64,
}

impl W10Figures {
    /// One line a parent process can parse: name, first, second (s),
    /// pipelines, resident and pooled bytes.
    pub fn line(&self) -> String {
        format!(
            "w10 {} {} {} {} {} {} {}",
            self.name,
            self.first,
            self.second,
            self.first_pipelines,
            self.second_pipelines,
            self.resident.unwrap_or(0),
            self.pooled
        )
    }

    pub fn parse(line: &str) -> Option<W10Figures> {
        let mut f = line.strip_prefix("w10 ")?.split_whitespace();
        let name = match f.next()? {
            "list" => "list",
            "sweep" => "sweep",
            "fixed" => "fixed",
            _ => return None,
        };
        let mut num = || f.next()?.parse::<f64>().ok();
        let (first, second) = (num()?, num()?);
        let (p1, p2, rss, pooled) = (num()?, num()?, num()?, num()?);
        Some(W10Figures {
            name,
            first,
            second,
            first_pipelines: p1 as u64,
            second_pipelines: p2 as u64,
            resident: (rss > 0.0).then_some(rss as u64),
            pooled: pooled as u64,
        })
    }

    pub fn print(&self) {
        let what = match self.name {
            "list" => "the 30-step list",
            "sweep" => "the K sweep 1..128",
            _ => "30 steps of one shape",
        };
        println!(
            "  {what:22} first {:7.3} s ({} pipelines)  second {:7.3} s ({})  = {:4.2}x  resident {:.0} MB, pool idle {:.0} MB",
            self.first,
            self.first_pipelines,
            self.second,
            self.second_pipelines,
            self.first / self.second,
            self.resident.unwrap_or(0) as f64 / 1e6,
            self.pooled as f64 / 1e6
        );
    }
}

/// W10's workloads by name: the list, the sweep, and the reference
/// `fixed` (the list's n = 60,000 and K = 50 for all 30 steps: what a loop
/// whose shapes never change pays for its first pass).
pub const W10_WORKLOADS: [&str; 3] = ["list", "sweep", "fixed"];

/// One W10 workload (a name of [`W10_WORKLOADS`]) on a fresh device.
pub fn measure_w10(name: &str) -> W10Figures {
    let (name, steps) = match name {
        "list" => ("list", w10_list()),
        "sweep" => ("sweep", w10_sweep()),
        _ => ("fixed", vec![(W10_SWEEP_N, 50); W10_STEPS]),
    };
    let dev = Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    let (first, first_pipelines) = pass(&dev, &steps);
    let (second, second_pipelines) = pass(&dev, &steps);
    W10Figures {
        name,
        first,
        second,
        first_pipelines,
        second_pipelines,
        resident: resident_bytes(),
        pooled: dev.stats().pooled_bytes,
    }
}

/// Runs each W10 workload in its own child process of `exe` (started with
/// `arg` and the workload's name) with Mesa's shader cache off, so that
/// compiles are cold and resident memory is the workload's own; None if
/// one failed.
pub fn w10_in_fresh_processes(exe: &std::path::Path, arg: &str) -> Option<Vec<W10Figures>> {
    (W10_WORKLOADS.iter())
        .map(|name| w10_in_fresh_process(exe, arg, name))
        .collect()
}

/// One W10 workload in a child process of `exe`, as
/// [`w10_in_fresh_processes`] runs each.
pub fn w10_in_fresh_process(exe: &std::path::Path, arg: &str, name: &str) -> Option<W10Figures> {
    let out = std::process::Command::new(exe)
        .args([arg, name])
        .env("MESA_SHADER_CACHE_DISABLE", "true")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(W10Figures::parse)
}
