//! W10, shapes that change (`cargo bench --bench shapes`; issue 22): the
//! 30-step list (n in [50,000, 70,000), K in [1, 100]) and the K sweep
//! 1…128 at n = 60,000 of `y = tanh(sin(x)·exp(x))`, `vjp_batched` and a
//! read back, each run twice on a fresh device with Mesa's shader cache
//! off: the first pass against the second is what new shapes cost. Also
//! 30 steps of one shape, for what a first pass costs when nothing
//! changes. Not a criterion bench: a first pass happens once per device.
//! It prints pipelines created, and the resident memory of the workload's
//! own process at its end.

mod common;

use common::shapes::{W10Figures, measure_w10, w10_in_fresh_processes};

const CHILD: &str = "--w10-child";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        let name = args.get(i + 1).map_or("list", String::as_str);
        println!("{}", measure_w10(name).line());
        return;
    }
    if !common::measured() {
        return;
    }
    let facts = common::RunFacts::capture();
    let exe = std::env::current_exe().expect("the bench's own path");
    let figures = w10_in_fresh_processes(&exe, CHILD).unwrap_or_else(|| {
        panic!(
            "a W10 child process failed: run `{} {CHILD} list`",
            exe.display()
        )
    });
    let dev = pullback::Device::new().unwrap_or_else(|e| panic!("no pullback device: {e}"));
    println!("== pullback W10 (shapes that change) summary (this run) ==");
    facts.print(&dev);
    println!(
        "(each in a child process with MESA_SHADER_CACHE_DISABLE=true: pipelines compiled cold)"
    );
    println!("first pass against second on one device (targets: list <= 1.5x, sweep <= 2x):");
    figures.iter().for_each(W10Figures::print);
}
