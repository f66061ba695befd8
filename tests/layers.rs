//! The house's walls (README, "How it is built"), read from the sources:
//! every path a file of `src/` names (`use crate::…`, `crate::…`,
//! `super::…`, and the crate root's re-exports they reach) points to its
//! own layer or one below. From the bottom: `error.rs`, `lock.rs`,
//! `shape.rs`; `runtime/`; `tape/` and `ops/` (one floor: a node records its
//! op, an op records a node); `autodiff/`. Test modules (`#[cfg(test)]`)
//! are outside the walls. Also: every file opens with what it owns (`//!`)
//! and has at most 400 lines.
//!
//! A static check of the sources: it needs no adapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The floor of a top-level module of the crate; None: the crate root.
fn floor(module: &str) -> Option<(u8, &'static str)> {
    Some(match module {
        "error" | "lock" | "shape" => (0, "the base (error, lock, shape)"),
        "runtime" => (1, "runtime"),
        "tape" => (2, "tape"),
        "ops" => (2, "ops"),
        "autodiff" => (3, "autodiff"),
        _ => return None,
    })
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// The module path of a file: `src/ops/custom/wgsl.rs` is
/// `["ops", "custom", "wgsl"]`, `src/ops/custom/mod.rs` `["ops", "custom"]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of each line, comments and `#[cfg(test)]` items blanked out.
fn code_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skipping = false;
    let mut depth = 0i64;
    let mut entered = false;
    for line in text.lines() {
        let code = strip_comment(line);
        if code.trim() == "#[cfg(test)]" {
            skipping = true;
            depth = 0;
            entered = false;
            out.push(String::new());
            continue;
        }
        if skipping {
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        entered = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            // The item ends where its braces close, or at a `;` without any.
            if (entered && depth <= 0) || (!entered && code.trim_end().ends_with(';')) {
                skipping = false;
            }
            out.push(String::new());
            continue;
        }
        out.push(code);
    }
    out
}

/// The line without its `//` comment (a `//` inside a string stays).
fn strip_comment(line: &str) -> String {
    let mut in_string = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        if c == '"' && prev != '\\' {
            in_string = !in_string;
        }
        if !in_string && c == '/' && prev == '/' {
            return line[..i - 1].to_string();
        }
        prev = c;
    }
    line.to_string()
}

/// For each name the crate root re-exports, the top-level module it comes
/// from (`pub use autodiff::vjp::{vjp, …};` gives `vjp` → `autodiff`).
fn root_exports() -> HashMap<String, String> {
    let text = std::fs::read_to_string(src().join("lib.rs")).expect("reading src/lib.rs");
    let code: String = code_lines(&text).join("\n");
    let mut exports = HashMap::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let end = rest.find(';').unwrap_or(rest.len());
        let statement = &rest[..end];
        let module = statement
            .split("::")
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        for name in statement
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
        {
            exports.insert(name.to_string(), module.clone());
        }
        rest = &rest[end..];
    }
    exports
}

/// The top-level modules the paths of one line of `module`'s code reach.
fn targets(code: &str, module: &[String], exports: &HashMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if at > 0 && {
            let before = code[..at].chars().last().unwrap_or(' ');
            before.is_alphanumeric() || before == '_' || before == ':'
        } {
            continue; // part of a longer path (`super::super::`: the first counts)
        }
        let rest = &code[at..];
        let (mut base, rest) = if let Some(r) = rest.strip_prefix("crate::") {
            (Vec::new(), r)
        } else {
            let mut base = module.to_vec();
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                base.pop();
                r = next;
            }
            (base, r)
        };
        // `crate::{a::x, b::y}`: each item's first name.
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            let top = if base.is_empty() {
                name.to_string()
            } else {
                base.truncate(1);
                base[0].clone()
            };
            let top = match floor(&top) {
                Some(_) => top,
                None => match exports.get(&top) {
                    Some(module) => module.clone(),
                    None => continue,
                },
            };
            found.push(top);
        }
    }
    found
}

#[test]
fn every_import_points_down_the_layers() {
    let exports = root_exports();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let mut crossings = Vec::new();
    for file in &files {
        let module = module_path(file);
        let Some((own, own_name)) = module.first().and_then(|m| floor(m)) else {
            continue; // lib.rs: the re-exports
        };
        let text = std::fs::read_to_string(file).expect("reading a source file");
        for (i, code) in code_lines(&text).iter().enumerate() {
            for target in targets(code, &module, &exports) {
                let Some((theirs, their_name)) = floor(&target) else {
                    continue;
                };
                if theirs > own {
                    crossings.push(format!(
                        "{}:{}: a {own_name} file imports from {their_name}: {}",
                        file.strip_prefix(src()).unwrap_or(file).display(),
                        i + 1,
                        code.trim()
                    ));
                }
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "imports that point up the layers (runtime < tape, ops < autodiff):\n{}",
        crossings.join("\n")
    );
}

#[test]
fn the_walls_are_seen_where_they_are_crossed() {
    // The checker itself: an upward import in a runtime file, a root
    // re-export reached from the base, a `super::` path, test code skipped.
    let exports = root_exports();
    let runtime = vec!["runtime".to_string(), "device".to_string()];
    assert_eq!(
        targets("use crate::ops::fill;", &runtime, &exports),
        ["ops"]
    );
    assert_eq!(
        targets("let t = crate::Tensor::from(x);", &runtime, &exports),
        ["tape"]
    );
    assert_eq!(
        targets(
            "use crate::{autodiff::plan, shape::numel};",
            &runtime,
            &exports
        ),
        ["autodiff", "shape"]
    );
    let wgsl = vec!["ops".to_string(), "custom".to_string(), "wgsl".to_string()];
    assert_eq!(targets("use super::Entry;", &wgsl, &exports), ["ops"]);
    let lines = code_lines(
        "use a;\n#[cfg(test)]\nmod tests {\n    use crate::autodiff;\n}\nuse b; // crate::autodiff\n",
    );
    assert!(lines.iter().all(|l| !l.contains("crate::")), "{lines:?}");
    assert_eq!(lines[5], "use b; ");
}

#[test]
fn every_file_opens_with_what_it_owns_and_stays_short() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading a source file");
        let name = file
            .strip_prefix(src())
            .unwrap_or(file)
            .display()
            .to_string();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{name}: does not open with a `//!` line saying what it owns"
            ));
        }
        let lines = text.lines().count();
        if lines > 400 {
            problems.push(format!("{name}: {lines} lines (at most 400: split it)"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
