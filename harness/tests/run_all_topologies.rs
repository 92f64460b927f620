//! The acceptance run: `natslab run` on every topology in topologies/, every scenario family, process
//! backend — what nightly CI does. Fails if any check is violated or the harness broke.

mod common;

use std::process::Command;

use common::*;

#[test]
fn natslab_run_passes_on_every_topology() {
    let mut files: Vec<_> = std::fs::read_dir(topology_path("")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    files.sort();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_natslab"))
        .env("NATSLAB_RUNS", dir.path().join("runs"))
        .arg("run")
        .args(&files)
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "natslab run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), files.len());
    for r in runs {
        assert!(r["error"].is_null(), "{}: {}", r["topology"], r["error"]);
        let checks = r["checks"].as_array().unwrap();
        assert!(checks.iter().any(|c| c["verdict"] == "passed"), "{}", r["topology"]);
        assert!(checks.iter().all(|c| c["verdict"] != "violated" && c["verdict"] != "harness_error"), "{}", r["topology"]);
        // Every skip says why.
        assert!(checks.iter().filter(|c| c["verdict"] == "skipped").all(|c| !c["observed"].as_str().unwrap_or("").is_empty()));
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));
    assert_eq!(doc.root_element().attribute("errors"), Some("0"));
}
