//! The report's W10 section (issue 22): shapes that change, each workload
//! in a child process of this program with Mesa's shader cache off.

use crate::common::shapes::{
    W10Figures, measure_w10, w10_in_fresh_process, w10_in_fresh_processes,
};
use crate::report::Report;

const CHILD: &str = "--w10-child";

/// In a child started by [`section`]: runs the named workload, prints its
/// figures, and returns true.
pub fn child(args: &[String]) -> bool {
    let Some(i) = args.iter().position(|a| a == CHILD) else {
        return false;
    };
    let name = args.get(i + 1).map_or("list", String::as_str);
    println!("{}", measure_w10(name).line());
    true
}

/// Fresh processes of the list in all, for its ratio's median and range:
/// one process's first/second moves by ±0.07 from run to run here.
const LIST_RUNS: usize = 5;

pub fn section(r: &mut Report) {
    r.section("W10: shapes that change (fresh processes, MESA_SHADER_CACHE_DISABLE=true)");
    let exe = std::env::current_exe().ok();
    let figures = exe
        .as_ref()
        .and_then(|exe| w10_in_fresh_processes(exe, CHILD));
    let Some(figures) = figures else {
        println!("  (a child process failed: run this program with `{CHILD} list`)");
        return;
    };
    for f in &figures {
        let name = match f.name {
            "list" => "30-step list (target <= 1.5x)",
            "sweep" => "K sweep 1..128 (target <= 2x)",
            _ => "one shape, 30 steps (for scale)",
        };
        r.add("W10", &format!("{name}: first pass"), f.first * 1e3, "ms");
        r.add("W10", &format!("{name}: second pass"), f.second * 1e3, "ms");
        r.add(
            "W10",
            &format!("{name}: first/second"),
            f.first / f.second,
            "x",
        );
        let pipelines = (f.first_pipelines + f.second_pipelines) as f64;
        r.add("W10", &format!("{name}: pipelines created"), pipelines, "");
        let mb = |b: u64| b as f64 / 1e6;
        r.add(
            "W10",
            &format!("{name}: resident at the end"),
            mb(f.resident.unwrap_or(0)),
            "MB",
        );
        r.add(
            "W10",
            &format!("{name}: pool idle at the end"),
            mb(f.pooled),
            "MB",
        );
    }
    list_spread(r, &figures, exe.as_deref());
}

/// The list's first/second over [`LIST_RUNS`] fresh processes (the one
/// above and more): median, least and most.
fn list_spread(r: &mut Report, figures: &[W10Figures], exe: Option<&std::path::Path>) {
    let Some(exe) = exe else { return };
    let mut ratios: Vec<f64> = figures
        .iter()
        .filter(|f| f.name == "list")
        .map(|f| f.first / f.second)
        .collect();
    while ratios.len() < LIST_RUNS {
        match w10_in_fresh_process(exe, CHILD, "list") {
            Some(f) => ratios.push(f.first / f.second),
            None => return,
        }
    }
    ratios.sort_by(f64::total_cmp);
    let name = format!("30-step list, {LIST_RUNS} processes: first/second");
    r.add(
        "W10",
        &format!("{name}, median"),
        ratios[LIST_RUNS / 2],
        "x",
    );
    r.add("W10", &format!("{name}, least"), ratios[0], "x");
    r.add("W10", &format!("{name}, most"), ratios[LIST_RUNS - 1], "x");
}
