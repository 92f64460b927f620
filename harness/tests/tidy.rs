//! The invariants ARCHITECTURE.md states, kept true by reading the source (rust-analyzer's tidy tests):
//! which modules may do I/O, print, know clap or spawn processes; what scenarios may not touch; and that the
//! modules' dependencies form no cycle. Each rule is data; `violations` applies them to any set of files, so
//! a planted violation can be shown to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A rule: files whose module path starts with one of `modules` (empty: every file but the exempt ones)
/// must not contain any of `forbidden`, except the files in `exempt`.
struct Rule {
    what: &'static str,
    modules: &'static [&'static str],
    exempt: &'static [&'static str],
    forbidden: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        what: "pure modules do no I/O and talk to no network",
        modules: &["topology", "plan", "render", "secrets", "report", "nemesis"],
        // The one file a topology is read from.
        exempt: &["topology/load.rs"],
        forbidden: &["std::fs", "tokio::", "std::process", "TcpStream", "TcpListener", "UdpSocket", "reqwest", "async_nats", "crate::lab", "crate::backend", "crate::files"],
    },
    Rule {
        what: "only the CLI knows clap, prints, reads terminals or picks exit codes",
        modules: &[],
        exempt: &["cli.rs", "main.rs"],
        forbidden: &["clap", "println!", "eprintln!", "print!(", "IsTerminal", "indicatif", "std::process::exit"],
    },
    Rule {
        what: "scenarios never render, spawn processes or reach into a backend",
        modules: &["scenario"],
        exempt: &[],
        forbidden: &["crate::render", "std::process", "spawn_guarded", "crate::backend::"],
    },
    Rule {
        what: "checks derive from the declared topology, not from the nodes the lab was rendered with",
        modules: &["scenario"],
        exempt: &[],
        forbidden: &["plan.nodes.iter()", ".plan.leaves()"],
    },
    Rule {
        what: "backends never interpret scenarios or reports",
        modules: &["backend", "net", "probe"],
        exempt: &[],
        forbidden: &["crate::scenario", "crate::report", "crate::runner", "crate::lab", "crate::runs"],
    },
    Rule {
        what: "no hand-written checksums or archives where a crate does it",
        modules: &[],
        exempt: &[],
        forbidden: &["fn sha512_compress", "struct Tar ", "fn octal("],
    },
    Rule {
        what: "shell-outs to tools go through `tool` (duct); only supervised servers and the detached supervisor are spawned by hand",
        modules: &[],
        exempt: &["tool.rs", "backend/process.rs", "bench.rs", "cli.rs"],
        forbidden: &["Command::new", "tokio::process"],
    },
];

/// `scenario/mapping.rs` → `scenario::mapping`; `backend/container/mod.rs` → `backend::container`.
fn module_of(path: &str) -> String {
    let p = path.trim_end_matches(".rs").trim_end_matches("/mod");
    if p == "lib" || p == "main" {
        return String::new();
    }
    p.replace('/', "::")
}

/// The code of a file without its comments and its unit tests (a rule about code must not trip on prose).
fn code(source: &str) -> String {
    let body = match source.find("#[cfg(test)]") {
        Some(i) => &source[..i],
        None => source,
    };
    body.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn violations(files: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, source) in files {
        let module = module_of(path);
        let code = code(source);
        for r in RULES {
            let applies = (r.modules.is_empty() || r.modules.iter().any(|m| module == *m || module.starts_with(&format!("{m}::"))))
                && !r.exempt.contains(&path.as_str());
            if !applies {
                continue;
            }
            for f in r.forbidden {
                if let Some(line) = code.lines().position(|l| l.contains(f)) {
                    out.push(format!("{path}:{}: `{f}` ({})", line + 1, r.what));
                }
            }
        }
    }
    out.extend(cycles(files));
    out
}

/// The modules a file refers to, at the level the dependency rules care about: top-level modules, and the
/// files of `scenario` and `topology` (whose families and layers must not lean on each other in circles).
fn unit_of(module: &str) -> String {
    let parts: Vec<&str> = module.split("::").collect();
    match parts.as_slice() {
        ["scenario" | "topology", file, ..] => format!("{}::{file}", parts[0]),
        [top, ..] => top.to_string(),
        [] => String::new(),
    }
}

fn dependencies(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, source) in files {
        let module = module_of(path);
        if module.is_empty() {
            continue;
        }
        let from = unit_of(&module);
        let parent: Vec<&str> = module.split("::").collect();
        let code = code(source);
        let mut refs = BTreeSet::new();
        for (marker, base) in [("crate::", vec![]), ("super::", parent[..parent.len() - 1].to_vec())] {
            let mut rest = code.as_str();
            while let Some(i) = rest.find(marker) {
                rest = &rest[i + marker.len()..];
                let mut path = base.clone();
                path.extend(rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).next().unwrap_or("").split("::").filter(|s| !s.is_empty()));
                if !path.is_empty() {
                    refs.insert(unit_of(&path.join("::")));
                }
                // `use super::{a, b}`: every item named in the braces.
                if rest.starts_with('{') && !base.is_empty() {
                    let inner = &rest[1..rest.find('}').unwrap_or(0).max(1)];
                    for item in inner.split(',') {
                        let name = item.trim().split("::").next().unwrap_or("");
                        if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_lowercase()) {
                            let mut p = base.clone();
                            p.push(name);
                            refs.insert(unit_of(&p.join("::")));
                        }
                    }
                }
            }
        }
        refs.remove(&from);
        refs.retain(|r| files.keys().any(|f| unit_of(&module_of(f)) == *r));
        graph.entry(from).or_default().extend(refs);
    }
    graph
}

/// Every cycle among the units, as `a → b → a`.
fn cycles(files: &BTreeMap<String, String>) -> Vec<String> {
    let graph = dependencies(files);
    let mut out = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first search back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    // The same cycle from each of its nodes: name it from its smallest.
                    let min = cycle.iter().enumerate().min_by_key(|(_, n)| *n).map(|(i, _)| i).unwrap_or(0);
                    cycle.rotate_left(min);
                    let first = cycle[0].clone();
                    cycle.push(first);
                    out.insert(format!("import cycle: {}", cycle.join(" → ")));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    out.into_iter().collect()
}

fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                dirs.push(e);
            } else if e.extension().is_some_and(|x| x == "rs") {
                let rel = e.strip_prefix(&root).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read_to_string(&e).unwrap());
            }
        }
    }
    out
}

#[test]
fn the_architectures_invariants_hold() {
    let v = violations(&sources());
    assert!(v.is_empty(), "ARCHITECTURE.md's invariants are broken:\n{}", v.join("\n"));
}

#[test]
fn a_planted_violation_of_each_kind_is_found() {
    let clean = sources();
    let plant = |path: &str, text: &str| {
        let mut files = clean.clone();
        let entry = files.entry(path.to_string()).or_default();
        entry.insert_str(0, &format!("{text}\n"));
        violations(&files)
    };
    let found = plant("scenario/mapping.rs", "use clap::Parser;");
    assert!(found.iter().any(|v| v.starts_with("scenario/mapping.rs:1: `clap`")), "{found:?}");
    let found = plant("render/node.rs", "fn f() { std::fs::write(\"x\", \"y\").ok(); }");
    assert!(found.iter().any(|v| v.contains("render/node.rs:1: `std::fs`")), "{found:?}");
    let found = plant("scenario/security.rs", "fn f() { let _ = std::process::Command::new(\"nats-server\"); }");
    assert!(found.iter().any(|v| v.contains("scenarios never render, spawn")), "{found:?}");
    let found = plant("health_print.rs", "fn f() { println!(\"hi\"); }");
    assert!(found.iter().any(|v| v.contains("`println!`")), "{found:?}");
    // A cycle: nemesis now leans on backend, which leans on nemesis.
    let found = plant("nemesis.rs", "use crate::backend::BackendKind;");
    assert!(found.iter().any(|v| v == "import cycle: backend → nemesis → backend"), "{found:?}");
    // Comments and unit tests may say anything.
    let found = plant("report/mod.rs", "// std::fs is not used here");
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn modules_are_named_by_their_files() {
    assert_eq!(module_of("scenario/mapping.rs"), "scenario::mapping");
    assert_eq!(module_of("backend/container/mod.rs"), "backend::container");
    assert_eq!(unit_of("backend::container::engine"), "backend");
    assert_eq!(unit_of("scenario::acked_writes"), "scenario::acked_writes");
}
