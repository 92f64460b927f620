//! The acceptance run: `natslab run` on every topology in topologies/, every scenario family, process
//! backend — what nightly CI does. Fails if any check is violated or the harness broke. One case per
//! topology, so cases run side by side (labs spend most of their time waiting on elections and pings).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use rstest::rstest;

/// Every topology must be a case below: a new topology file fails here until it is added.
#[test]
fn cases_cover_every_topology() {
    assert_eq!(topology_names(), TOPOLOGIES.to_vec(), "add the new topology to common::TOPOLOGIES and to the cases in {}", file!());
}

#[rstest]
#[case::cim_reference("cim-reference")]
#[case::failover("failover")]
#[case::jetstream_domains("jetstream-domains")]
#[case::leaf_peers("leaf-peers")]
#[case::mixed_versions("mixed-versions")]
#[case::mtls("mtls")]
#[case::operator_jwt("operator-jwt")]
#[case::subject_mapping("subject-mapping")]
fn natslab_run_passes(#[case] name: &str) {
    assert!(TOPOLOGIES.contains(&name));
    let file = topology_path(&format!("{name}.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let (junit, json) = (dir.path().join("junit.xml"), dir.path().join("report.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_natslab"))
        .env("NATSLAB_RUNS", dir.path().join("runs"))
        .arg("run")
        .arg(&file)
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "natslab run {name} failed:\n{}\n{stdout}\n{}", not_passed(&json), String::from_utf8_lossy(&out.stderr));
    check_reports(name, &json, &junit);
}

fn check_reports(name: &str, json: &Path, junit: &Path) {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert!(r["error"].is_null(), "{name}: {}", r["error"]);
    let checks = r["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["verdict"] == "passed"), "{name}");
    assert!(checks.iter().all(|c| c["verdict"] != "violated" && c["verdict"] != "harness_error"), "{name}");
    // Every skip says why.
    assert!(checks.iter().filter(|c| c["verdict"] == "skipped").all(|c| !c["observed"].as_str().unwrap_or("").is_empty()));
    let xml = std::fs::read_to_string(junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));
    assert_eq!(doc.root_element().attribute("errors"), Some("0"));
}

/// The checks that neither passed nor skipped, with what they observed: first in a failure's message, as a
/// long run's output is cut in CI logs.
fn not_passed(json: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(json) else { return "(no JSON report)".into() };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut out = Vec::new();
    for run in v["runs"].as_array().into_iter().flatten() {
        if !run["error"].is_null() {
            out.push(format!("run error: {}", run["error"]));
        }
        for c in run["checks"].as_array().into_iter().flatten().filter(|c| c["verdict"] == "violated" || c["verdict"] == "harness_error") {
            out.push(format!("{} {}: {}", c["verdict"], c["id"], c["observed"]));
        }
    }
    out.join("\n")
}
