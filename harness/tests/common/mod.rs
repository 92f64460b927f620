//! Shared test helpers: topology paths, a lab per test, and waiting for real conditions with deadlines.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use natslab::lab::{Lab, Quiet, UpOptions};
use natslab::topology::{self, Topology};

pub fn topology_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("topologies").join(name)
}

/// Every topology in topologies/, by name, sorted.
pub fn topology_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(topology_path(""))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".yaml").map(String::from))
        .collect();
    v.sort();
    v
}

/// The topologies the per-topology suites (`run_all_topologies`, `nixos_standin`) have a case for: a new
/// topology file fails `cases_cover_every_topology` in each until it is added here and to their cases.
pub const TOPOLOGIES: [&str; 8] = ["cim-reference", "failover", "jetstream-domains", "leaf-peers", "mixed-versions", "mtls", "operator-jwt", "subject-mapping"];

pub fn load(name: &str) -> Topology {
    topology::load_file(&topology_path(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Options that keep each test's run directories in its own temporary directory.
pub fn opts(root: &tempfile::TempDir) -> UpOptions {
    UpOptions { runs_root: Some(root.path().to_path_buf()), ..UpOptions::default() }
}

pub async fn up(t: Topology, root: &tempfile::TempDir) -> Lab {
    Lab::up(t, &opts(root), &Quiet).await.unwrap_or_else(|e| panic!("lab did not come up: {e}"))
}

/// Whether a process with this pid still runs a nats-server whose config lies under `dir`.
pub fn server_alive_under(pid: u32, dir: &std::path::Path) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => String::from_utf8_lossy(&c).contains(&dir.display().to_string()),
        Err(_) => false,
    }
}

/// Publishes until `sub` receives something (interest crosses routes and leaf links asynchronously), or the
/// deadline passes; the subject it arrived on. The library's own positive probe.
pub async fn publish_until_received(
    publisher: &async_nats::Client,
    subject: &str,
    payload: &str,
    sub: &mut async_nats::Subscriber,
    within: Duration,
) -> Option<String> {
    natslab::scenario::probes::publish_until_received(publisher, subject, payload, sub, within).await.map(|(s, _)| s)
}

/// The checks that were violated or where the harness broke, one line each.
pub fn failures(checks: &[natslab::scenario::Check]) -> Vec<String> {
    use natslab::scenario::Verdict;
    checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Violated | Verdict::HarnessError))
        .map(|c| format!("{:?} {}: {}", c.verdict, c.id, c.observed))
        .collect()
}

/// The check with the stable id `id`; a missing check fails the test, listing those there are.
pub fn check<'a>(checks: &'a [natslab::scenario::Check], id: &str) -> &'a natslab::scenario::Check {
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id:?} in {ids:?}"))
}

/// The verdict of the check with the stable id `id`.
pub fn verdict_of(checks: &[natslab::scenario::Check], id: &str) -> natslab::scenario::Verdict {
    check(checks, id).verdict
}

/// Whether this machine can run netns labs; a skip says why (a failure where CI requires everything).
pub fn netns_or_skip() -> bool {
    match natslab::backend::netns::net::check_tools() {
        Ok(()) => true,
        Err(e) => {
            let msg = format!("skipped: the netns backend needs root (uid 0) and iproute2/nftables: {e}");
            assert!(std::env::var_os("NATSLAB_REQUIRE_ALL").is_none(), "{msg}, and NATSLAB_REQUIRE_ALL is set");
            eprintln!("{msg}");
            false
        }
    }
}

/// Whether to run: a Docker engine answers. Without one, skip — or fail where NATSLAB_REQUIRE_ALL is set.
pub async fn engine_or_skip() -> bool {
    match natslab::backend::container::engine_available().await {
        Ok(()) => true,
        Err(e) if std::env::var_os("NATSLAB_REQUIRE_ALL").is_some() => {
            panic!("NATSLAB_REQUIRE_ALL is set, and the container backend needs a Docker engine: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no Docker engine ({e})");
            false
        }
    }
}

/// The `natslab` binary with runs and `nats` contexts in temporary directories of the test's own.
pub struct Env {
    pub runs: tempfile::TempDir,
    pub contexts: tempfile::TempDir,
}

/// A lab brought up with `natslab up --detach`; torn down when dropped, whatever the test did (a failed
/// assertion must not leave a supervisor and its servers behind).
pub struct Detached<'e> {
    pub env: &'e Env,
    pub info: natslab::lab::LabInfo,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = self.env.cmd().args(["down", &self.info.run_id]).output();
    }
}

impl Env {
    /// `natslab up --detach --json <extra args> <topology file>`, or a panic with its stderr.
    pub fn detach(&self, topology: &str, extra: &[&str]) -> Detached<'_> {
        let out = self.cmd().args(["up", "--detach", "--json"]).args(extra).arg(topology_path(topology)).output().unwrap();
        assert!(out.status.success(), "natslab up --detach failed: {}", String::from_utf8_lossy(&out.stderr));
        Detached { env: self, info: serde_json::from_slice(&out.stdout).unwrap() }
    }

    pub fn new() -> Env {
        Env { runs: tempfile::tempdir().unwrap(), contexts: tempfile::tempdir().unwrap() }
    }

    pub fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_natslab"));
        c.env("NATSLAB_RUNS", self.runs.path()).env("NATSLAB_CONTEXT_DIR", self.contexts.path());
        c
    }
}

/// Whether to run a test kept for the nightly recipe (a backend or topology matrix too slow for CI's 25
/// minutes): `.ci/nightly` sets NATSLAB_NIGHTLY=1. Elsewhere it says it skipped, and why. Not a missing
/// tool, so NATSLAB_REQUIRE_ALL does not turn it into a failure.
pub fn nightly_or_skip(what: &str) -> bool {
    if std::env::var_os("NATSLAB_NIGHTLY").is_some() {
        return true;
    }
    eprintln!("skipped: {what} runs in .ci/nightly (NATSLAB_NIGHTLY=1), not in every CI run");
    false
}
