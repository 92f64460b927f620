//! The corpus of invalid topologies in `tests/invalid/`: each file has exactly one mistake and says, in its
//! leading `# expect: ...` lines, what the error must contain. Every reference topology must load.

use std::path::{Path, PathBuf};

use natslab::topology::load_file;

const INVALID_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/invalid");
const TOPOLOGIES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies");

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// The `# expect:` substrings from the file's leading comment lines.
fn expectations(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect:"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn corpus_is_large_enough() {
    let files = yaml_files(INVALID_DIR);
    assert!(files.len() >= 30, "tests/invalid holds {} topologies, want at least 30", files.len());
}

#[test]
fn every_invalid_topology_is_rejected_with_its_expected_message() {
    let mut failures = Vec::new();
    for path in yaml_files(INVALID_DIR) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let first = std::fs::read_to_string(&path).unwrap().lines().next().unwrap_or_default().to_string();
        if !first.starts_with("# expect:") {
            failures.push(format!("{name}: the first line must be '# expect: <substring>', found {first:?}"));
            continue;
        }
        let expected = expectations(&path);
        // A panic in validation is a failure of this file, not of the whole corpus.
        let Ok(loaded) = std::panic::catch_unwind(|| load_file(&path)) else {
            failures.push(format!("{name}: loading panicked"));
            continue;
        };
        match loaded {
            Ok(_) => failures.push(format!("{name}: loaded without error, expected: {expected:?}")),
            Err(err) => {
                let text = err.to_string();
                let missing: Vec<&String> = expected.iter().filter(|e| !text.contains(e.as_str())).collect();
                if !missing.is_empty() {
                    failures.push(format!("{name}: the error lacks {missing:?}; actual message:\n{text}"));
                }
                if !text.lines().next().is_some_and(|l| l.ends_with("(1 problem)")) {
                    failures.push(format!("{name}: must hold exactly one mistake; actual message:\n{text}"));
                }
                if !text.contains("hint:") {
                    failures.push(format!("{name}: the error has no hint; actual message:\n{text}"));
                }
                // Every problem line is `  <file>:<line>[:<col>]: ...`: no problem without a place.
                let unplaced = text
                    .lines()
                    .skip(1)
                    .filter(|l| !l.starts_with("    hint:"))
                    .filter(|l| !l.split(&format!("{name}:")).nth(1).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())));
                for l in unplaced {
                    failures.push(format!("{name}: a problem has no line number: {l:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of the invalid topologies failed:\n\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_reference_topology_loads() {
    let files = yaml_files(TOPOLOGIES_DIR);
    assert!(!files.is_empty(), "no topologies in {TOPOLOGIES_DIR}");
    let errors: Vec<String> = files.iter().filter_map(|p| load_file(p).err().map(|e| e.to_string())).collect();
    assert!(errors.is_empty(), "reference topologies do not load:\n{}", errors.join("\n"));
}

#[test]
fn semantic_errors_name_the_file_and_line() {
    let path = Path::new(INVALID_DIR).join("13-unknown-hub.yaml");
    let text = load_file(&path).expect_err("13-unknown-hub.yaml must be rejected").to_string();
    let line = std::fs::read_to_string(&path).unwrap().lines().position(|l| l.contains("hubs: [hub-1, hub2]")).unwrap() + 1;
    let location = format!("13-unknown-hub.yaml:{line}: leaves[0].remotes[0].hubs[1]: remote names unknown hub 'hub2'");
    assert!(text.contains(&location), "expected {location:?} in:\n{text}");
}

#[test]
fn syntax_errors_name_the_line_and_column() {
    let path = Path::new(INVALID_DIR).join("01-yaml-syntax.yaml");
    let text = load_file(&path).expect_err("01-yaml-syntax.yaml must be rejected").to_string();
    let located = text.lines().any(|l| {
        l.split("01-yaml-syntax.yaml:").nth(1).is_some_and(|rest| {
            let mut parts = rest.split(':');
            parts.next().is_some_and(|n| n.parse::<usize>().is_ok()) && parts.next().is_some_and(|n| n.parse::<usize>().is_ok())
        })
    });
    assert!(located, "expected 'file:line:col' in:\n{text}");
}
