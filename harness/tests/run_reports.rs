//! `natslab run` end to end and its reports: JUnit that parses as XML with one testcase per check and
//! failures for violations, JSON with every check, Markdown with the summary; and `natslab health`.

mod common;

use std::process::Command;

use common::*;
use natslab::lab::Quiet;
use natslab::report::{to_junit, to_markdown, RunReport};
use natslab::runner::run_topology;
use natslab::scenario::{Family, Silent, Verdict};

fn natslab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_natslab"));
    c.env("NATSLAB_RUNS", std::env::temp_dir().join("natslab-test-runs"));
    c
}

/// What one `natslab run` wrote: its stdout, and its three reports as text (JUnit, JSON, Markdown).
struct Reports {
    stdout: String,
    junit: String,
    json: serde_json::Value,
    markdown: String,
}

/// `natslab run ARGS TOPOLOGY` with all three reports, which must succeed.
fn run_with_reports(args: &[&str], topology: &str) -> Reports {
    let dir = tempfile::tempdir().unwrap();
    let (junit, json, md) = (dir.path().join("r.xml"), dir.path().join("r.json"), dir.path().join("r.md"));
    let out = natslab()
        .arg("run")
        .args(args)
        .arg(topology_path(topology))
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    Reports {
        stdout,
        junit: std::fs::read_to_string(&junit).unwrap(),
        json: serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(),
        markdown: std::fs::read_to_string(&md).unwrap(),
    }
}

/// `--matrix`: the same topology once per version, each lab on that version (its `/varz`, read by the
/// state family), and every report split by version: a JUnit suite per topology × version × family, a JSON run
/// per version, Markdown's per-version summary and timings side by side.
#[test]
fn a_matrix_runs_each_version_and_reports_them_apart() {
    let r = run_with_reports(&["--scenario", "health,state", "--only", "health/,state/version", "--matrix", "2.14.6,2.15.1"], "failover.yaml");
    let stdout = &r.stdout;
    assert!(stdout.contains("failover@2.14.6") && stdout.contains("failover@2.15.1"), "{stdout}");
    let runs = r.json["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["server_version"].as_str().unwrap()).collect::<Vec<_>>(), ["2.14.6", "2.15.1"]);
    for r in runs {
        let version = r["server_version"].as_str().unwrap();
        let c = r["checks"].as_array().unwrap().iter().find(|c| c["id"] == "state/version/hub-1").expect("the version check ran");
        assert_eq!(c["verdict"], "passed", "{c}");
        assert!(c["observed"].as_str().unwrap().contains(&format!("runs {version}")), "{c}");
    }
    let xml = &r.junit;
    assert!(xml.contains(r#"<testsuite name="failover@2.14.6.health""#) && xml.contains(r#"<testsuite name="failover@2.15.1.state""#), "{xml}");
    let text = &r.markdown;
    assert!(text.contains("## Per version") && text.contains("| 2.14.6 |") && text.contains("## Timings by version"), "{text}");
}

#[test]
fn run_writes_junit_json_and_markdown() {
    let r = run_with_reports(&["--scenario", "health"], "failover.yaml");
    assert!(r.stdout.contains("PASS:"), "{}", r.stdout);

    let v = &r.json;
    let checks = v["runs"][0]["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| c["verdict"] == "passed" && c["expected"].is_string() && c["duration_ms"].is_number()));

    let doc = roxmltree::Document::parse(&r.junit).unwrap();
    let cases = doc.descendants().filter(|n| n.has_tag_name("testcase")).count();
    assert_eq!(cases, checks.len());
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));

    let md = &r.markdown;
    let version = v["runs"][0]["server_version"].as_str().unwrap().to_string();
    assert!(md.starts_with("# natslab run") && md.contains(&format!("| failover | {version} | process | health |")), "{md}");
}

/// A sabotaged lab (a leaf whose rendered remote differs from the declared one) fails the run, and every
/// report says so in its own way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_reach_every_report() {
    let root = tempfile::tempdir().unwrap();
    // Declared: the leaf has two remotes. Rendered: only one. Health must see one leaf connection missing.
    let mut declared = load("failover.yaml");
    let rendered = declared.clone();
    let mut second = declared.leaves[0].remotes[0].clone();
    second.imports.clear();
    second.exports.clear();
    declared.leaves[0].remotes.push(second);
    let run = run_topology(&declared, rendered, "failover.yaml", &natslab::runner::Selection::families(&[Family::Health]), &opts(&root), &Quiet, &Silent).await;
    let bad: Vec<_> = run.checks.iter().filter(|c| c.verdict == Verdict::Violated).collect();
    assert_eq!(bad.len(), 1, "{:#?}", run.checks);
    assert!(bad[0].name.contains("edge-1: leaf attached"));

    let report = RunReport { natslab_version: "t".into(), nats_server_version: "t".into(), started_unix: 0, wall_ms: 1.0, runs: vec![run] };
    assert!(!report.ok());
    let xml = to_junit(&report);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failures: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("failure")).collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(doc.root_element().attribute("failures"), Some("1"));
    let md = to_markdown(&report);
    assert!(md.contains("**FAIL**") && md.contains("edge-1: leaf attached"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_reads_real_monitoring_json() {
    let root = tempfile::tempdir().unwrap();
    let lab = up(load("failover.yaml"), &root).await;
    let leaf = lab.monitor_url("edge-1").unwrap().to_string();
    let hub = lab.monitor_url("hub-1").unwrap().to_string();
    let out = natslab().args(["health", "--leaf", "--window", "0.1", "--monitor", &leaf]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("✓ leaf connection: hub-1") && text.contains("msg/s in"), "{text}");
    // A hub has no leaf connection of its own: with --leaf that is unhealthy.
    let out = natslab().args(["health", "--leaf", "--window", "0.1", "--monitor", &hub]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    lab.shutdown().await;
    // A server that is gone is reported, not a crash.
    let out = natslab().args(["health", "--window", "0.1", "--monitor", &leaf]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT healthy"));
}
