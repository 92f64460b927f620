//! `natslab bench`: time-to-ready of a topology through the harness, against the floor — the same rendered
//! configs started by hand (all at once) until every `/healthz` is ok — and, where a Docker engine answers,
//! on the container backend in the same run. Figures, not assertions.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::container::{self, ContainerBackend};
use crate::backend::process::ProcessBackend;
use crate::backend::spawn::spawn_guarded;
use crate::backend::BackendKind;
use crate::errors::{Error, Result};
use crate::lab::{Lab, Progress, Quiet, UpOptions};
use crate::probe::monitor::Monitor;
use crate::report::{stats, Stats};
use crate::server;
use crate::topology;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub topology: String,
    pub nodes: usize,
    pub server_version: String,
    pub runs: usize,
    pub harness_ready: Stats,
    /// The whole `Lab::up` (rendering, `nats-server -t`, backend preparation, then ready).
    pub harness_up: Stats,
    pub floor_healthz: Stats,
    pub ratio: f64,
    /// The same topology on the container backend, when a Docker engine answered.
    pub container: Option<ContainerBench>,
    /// Why there are no container figures.
    pub container_skipped: Option<String>,
    /// One full scenario run (every family) on the process backend: its wall time and its timings.
    pub suite: Option<SuiteBench>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SuiteBench {
    pub wall_ms: f64,
    pub passed: usize,
    pub not_passed: usize,
    /// min/median/max of every timing metric (failover, hung failover, catch-up, ...).
    pub timings: std::collections::BTreeMap<String, Stats>,
}

/// One run of every scenario family: the wall time people wait for, and the failover times it measured.
async fn suite_once(t: &topology::Topology, path: &Path, server: &server::NatsServer) -> SuiteBench {
    let selection = crate::runner::Selection::families(&crate::scenario::Family::DEFAULT);
    let run = crate::runner::run_topology(t, t.clone(), &path.display().to_string(), &selection, &UpOptions::default(), &Quiet, &crate::scenario::Silent).await;
    let report = crate::report::RunReport {
        natslab_version: env!("CARGO_PKG_VERSION").into(),
        nats_server_version: server.version.to_string(),
        started_unix: 0,
        wall_ms: run.wall_ms,
        runs: vec![run],
    };
    let c = report.counts();
    SuiteBench { wall_ms: report.wall_ms, passed: c.passed, not_passed: c.total() - c.passed, timings: report.timings() }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerBench {
    pub image: String,
    /// From the first container start until ready (as `harness_ready`).
    pub ready: Stats,
    /// The whole `Lab::up`, including the networks and the containers created with their files.
    pub up: Stats,
}

/// One lab: (time from first start to ready, the whole `Lab::up`).
async fn lab_once(t: &topology::Topology, backend: BackendKind) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let lab = Lab::up(t.clone(), &UpOptions { backend, ..UpOptions::default() }, &Quiet).await?;
    let took = (lab.ready_in, started.elapsed());
    lab.shutdown().await;
    Ok(took)
}

/// The container backend's image, built now if needed (so no sample pays for the build), or why not.
async fn container_image(server: &server::NatsServer) -> std::result::Result<String, String> {
    container::engine_available().await.map_err(|e| format!("no Docker engine ({e})"))?;
    let backend = ContainerBackend::new(server, None).await.map_err(|e| e.to_string())?;
    Ok(backend.image().to_string())
}

/// One floor sample: spawn every node of a freshly rendered plan at once, poll `/healthz` on all.
async fn floor_once(t: &topology::Topology, server: &server::NatsServer) -> Result<Duration> {
    let backend = ProcessBackend::new(server.clone())?;
    let dir = tempfile::tempdir().map_err(Error::io("create a temporary directory"))?;
    let plan = crate::lab::prepare(t.clone(), &crate::server::Servers::single(server), |i, _| backend.node_addr(i), &dir.path().join("floor"))?;
    let monitor = Monitor::new();
    let started = Instant::now();
    let mut children = Vec::new();
    for n in &plan.nodes {
        let mut cmd = Command::new(&server.path);
        cmd.arg("-c").arg(plan.layout.host_config(&n.name)).stdout(Stdio::null()).stderr(Stdio::null());
        children.push(spawn_guarded(cmd).map_err(Error::io("spawn nats-server"))?);
    }
    let deadline = started + Duration::from_secs(60);
    for n in &plan.nodes {
        let base = ProcessBackend::endpoint_of(n).monitor_url;
        while monitor.healthy(&base).await.is_err() {
            if Instant::now() > deadline {
                return Err(Error::Measure { what: "bench", reason: format!("floor: {} never became healthy", n.name) });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let took = started.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(backend);
    Ok(took)
}

/// Measures; `progress` hears a line per run. The CLI prints the report.
pub async fn run(path: &Path, runs: usize, suite: bool, progress: &dyn Progress) -> Result<BenchReport> {
    let t = topology::load_file(path)?;
    let mut say = |m: &str| progress.message(m);
    let server = server::find_or_install(&mut say)?;
    let image = container_image(&server).await;
    let (mut harness, mut harness_up, mut floor, mut ready_c, mut up_c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs.max(1) {
        // Alternate the order so neither side always runs on a warmer machine.
        if i % 2 == 0 {
            let (r, u) = lab_once(&t, BackendKind::Process).await?;
            harness.push(r);
            harness_up.push(u);
            floor.push(floor_once(&t, &server).await?);
        } else {
            floor.push(floor_once(&t, &server).await?);
            let (r, u) = lab_once(&t, BackendKind::Process).await?;
            harness.push(r);
            harness_up.push(u);
        }
        let mut line = format!("run {}/{}: harness {:?}, floor {:?}", i + 1, runs, harness[i], floor[i]);
        if image.is_ok() {
            let (r, u) = lab_once(&t, BackendKind::Container).await?;
            ready_c.push(r);
            up_c.push(u);
            line.push_str(&format!(", container {r:?} (up {u:?})"));
        }
        progress.message(&line);
    }
    let h = stats(&harness);
    let f = stats(&floor);
    let suite = if suite {
        progress.message("running every scenario family once ...");
        Some(suite_once(&t, path, &server).await)
    } else {
        None
    };
    Ok(BenchReport {
        topology: t.name.clone(),
        nodes: t.hub.nodes.len() + t.leaves.len(),
        server_version: server.version.to_string(),
        runs,
        ratio: if f.median_ms > 0.0 { h.median_ms / f.median_ms } else { 0.0 },
        harness_ready: h,
        harness_up: stats(&harness_up),
        floor_healthz: f,
        container: image.as_ref().ok().map(|i| ContainerBench { image: i.clone(), ready: stats(&ready_c), up: stats(&up_c) }),
        container_skipped: image.err(),
        suite,
    })
}
