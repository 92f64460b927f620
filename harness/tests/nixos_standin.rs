//! Each topology's generated NixOS `testScript`, unchanged, under the driver stand-in
//! (nixos-tests/standin/driver.py): machines are hosts in network namespaces running the real nats-server
//! with the settings the services.nats module would hand them, each host provisions its own streams, and
//! the `lab` machine runs `natslab run --backend attached` from the committed inventory, its faults served
//! by the script. Every family must pass, the reports must land in the driver's out_dir, and no namespace,
//! bridge or server may be left behind. Needs root and nix-instantiate (CI has both).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rstest::rstest;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why this machine cannot run the stand-in, if it cannot.
fn missing() -> Option<String> {
    if let Err(e) = natslab::backend::netns::net::check_tools() {
        return Some(format!("needs root and iproute2 (network namespaces and mounts): {e}"));
    }
    for tool in ["nix-instantiate", "ip", "unshare", "python3"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success()) {
            return Some(format!("needs {tool}"));
        }
    }
    None
}

fn leftovers(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    out.extend(String::from_utf8_lossy(&netns.stdout).lines().filter(|l| l.starts_with(&format!("nsd{id}-"))).map(|l| format!("netns {l}")));
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    out.extend(String::from_utf8_lossy(&links.stdout).lines().filter(|l| l.contains(&format!(" bd{id}:")) || l.contains(&format!(" vd{id}"))).map(|l| format!("link {l}")));
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&format!("natslab-standin-{id}-")) {
            out.push(format!("process {}", e.file_name().to_string_lossy()));
        }
    }
    out
}

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
fn generated_test_script_passes_under_the_driver_stand_in(#[case] name: &str) {
    // The reference topology in every CI run; the others are a topology matrix, nightly's.
    if name != "cim-reference" && !nightly_or_skip(&format!("the driver stand-in on {name}")) {
        return;
    }
    assert!(TOPOLOGIES.contains(&name));
    if let Some(why) = missing() {
        let msg = format!("skipped: the driver stand-in {why}");
        assert!(std::env::var_os("NATSLAB_REQUIRE_ALL").is_none(), "{msg}, and NATSLAB_REQUIRE_ALL is set");
        eprintln!("{msg}");
        return;
    }
    let server = natslab::server::find_or_install(&mut |m| eprintln!("{m}")).unwrap();
    // The builds natsPackages would hold: one per version the topology declares (the cache's layout is a
    // package's, `DIR/bin/nats-server`).
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo().join("nixos-tests/rendered").join(name).join("nodes.json")).unwrap()).unwrap();
    let mut packages = Vec::new();
    for v in manifest["nodes"].as_array().unwrap().iter().filter_map(|n| n["server_version"].as_str()) {
        let s = natslab::server::exact(v.parse().unwrap(), &mut |m| eprintln!("{m}")).unwrap();
        let dir = s.path.parent().and_then(|b| b.parent()).unwrap().display().to_string();
        if !packages.contains(&format!("{v}={dir}")) {
            packages.push(format!("{v}={dir}"));
        }
    }
    let out = tempfile::tempdir().unwrap();
    // Unique per case and process: the stand-in names its namespaces and links after it.
    let id = format!("{}{}", std::process::id() % 1000, name.len() + name.bytes().map(usize::from).sum::<usize>() % 97);
    let run = Command::new("python3")
        .arg(repo().join("nixos-tests/standin/driver.py"))
        .args(["--rendered"])
        .arg(repo().join("nixos-tests/rendered").join(name))
        .arg("--nats-server")
        .arg(&server.path)
        .arg("--natslab")
        .arg(env!("CARGO_BIN_EXE_natslab"))
        .arg("--out")
        .arg(out.path())
        .args(["--id", &id])
        .args(packages.iter().flat_map(|p| ["--package", p.as_str()]))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    let left = leftovers(&id);
    assert!(left.is_empty(), "{name}: the stand-in left {left:?}");
    // What natslab itself said in the lab, where it got that far: the checks that did not pass.
    let said = std::fs::read_to_string(out.path().join("reports/natslab.log")).unwrap_or_default();
    let lines: Vec<&str> = said.lines().collect();
    let not_passed: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("... VIOLATED") || l.contains("... HARNESS ERROR"))
        .map(|(i, _)| lines[i..(i + 4).min(lines.len())].join("\n"))
        .collect();
    assert!(run.status.success(), "{name}: the test script failed under the stand-in:\n{log}\n{}\n{}", not_passed.join("\n"), String::from_utf8_lossy(&run.stdout));
    check_reports(name, &out.path().join("reports"));
}

fn check_reports(name: &str, reports: &Path) {
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap_or_else(|e| panic!("{name}: no junit.xml in out_dir: {e}"));
    let doc = roxmltree::Document::parse(&junit).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("0"), "{name}");
    assert_eq!(doc.root_element().attribute("errors"), Some("0"), "{name}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let checks = v["runs"][0]["checks"].as_array().unwrap();
    // Every family ran through the attached backend (JetStream where the topology has it), and the
    // failover checks really faulted nodes through the script.
    let t = load(&format!("{name}.yaml"));
    for family in ["health", "state", "mapping", "security", "failover", "network"] {
        assert!(checks.iter().any(|c| c["family"] == family), "{name}: no {family} checks");
    }
    if t.uses_jetstream() {
        assert!(checks.iter().any(|c| c["family"] == "jetstream" && c["verdict"] == "passed"), "{name}: no JetStream check passed");
    }
    if !t.hub.streams.is_empty() || t.leaves.iter().any(|l| !l.streams.is_empty()) {
        // The hosts provisioned their own streams: the attached run found them as declared.
        assert!(checks.iter().any(|c| c["id"].as_str().is_some_and(|i| i.starts_with("jetstream/stream-config/")) && c["verdict"] == "passed"), "{name}");
    }
    assert!(checks.iter().any(|c| c["family"] == "failover" && c["verdict"] == "passed"), "{name}: no failover check passed");
}
