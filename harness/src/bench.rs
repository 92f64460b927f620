//! `natslab bench`: time-to-ready of a topology through the harness, against the floor — the same rendered
//! configs started by hand (all at once) until every `/healthz` is ok — and, where a Docker engine answers,
//! on the container backend in the same run. Figures, not assertions.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::container::{self, ContainerBackend};
use crate::backend::process::ProcessBackend;
use crate::backend::BackendKind;
use crate::backend::spawn::spawn_guarded;
use crate::errors::{Error, Result};
use crate::lab::{Lab, Quiet, UpOptions};
use crate::probe::monitor::Monitor;
use crate::server;
use crate::topology;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

pub fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n == 0 { 0.0 } else if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    Stats { n, min_ms: ms.first().copied().unwrap_or(0.0), median_ms: median, max_ms: ms.last().copied().unwrap_or(0.0) }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub topology: String,
    pub nodes: usize,
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
    let families = crate::scenario::Family::ALL;
    let run = crate::runner::run_topology(t, t.clone(), &path.display().to_string(), &families, &UpOptions::default(), &Quiet, &crate::scenario::Silent).await;
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
    let backend = ContainerBackend::from_env(server).await.map_err(|e| e.to_string())?;
    Ok(backend.image().to_string())
}

/// One floor sample: spawn every node of a freshly rendered plan at once, poll `/healthz` on all.
async fn floor_once(t: &topology::Topology, server: &server::NatsServer) -> Result<Duration> {
    let backend = ProcessBackend::new(server.clone())?;
    let dir = tempfile::tempdir().map_err(Error::io("create a temporary directory"))?;
    let plan = crate::lab::prepare(t.clone(), server, |i, _| backend.addr(i), &dir.path().join("floor"))?;
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
        let base = ProcessBackend::endpoint(n).monitor_url;
        while monitor.healthy(&base).await.is_err() {
            if Instant::now() > deadline {
                return Err(Error::Run(format!("bench: floor: {} never became healthy", n.name)));
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

pub async fn run(path: &Path, runs: usize, suite: bool, json: Option<&Path>) -> Result<BenchReport> {
    let t = topology::load_file(path)?;
    let mut say = |m: &str| eprintln!("{m}");
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
        eprintln!("{line}");
    }
    let h = stats(&harness);
    let f = stats(&floor);
    let report = BenchReport {
        topology: t.name.clone(),
        nodes: t.hub.nodes.len() + t.leaves.len(),
        ratio: if f.median_ms > 0.0 { h.median_ms / f.median_ms } else { 0.0 },
        harness_ready: h,
        harness_up: stats(&harness_up),
        floor_healthz: f,
        container: image.as_ref().ok().map(|i| ContainerBench { image: i.clone(), ready: stats(&ready_c), up: stats(&up_c) }),
        container_skipped: image.err(),
        suite: if suite { eprintln!("running every scenario family once ..."); Some(suite_once(&t, path, &server).await) } else { None },
    };
    println!("time-to-ready of {} ({} nodes, {} runs, nats-server {})", report.topology, report.nodes, runs, server.version);
    println!("  natslab up (healthz + full route mesh + leaves attached + JetStream meta leader + streams provisioned):");
    println!("    min {:.0} ms  median {:.0} ms  max {:.0} ms", report.harness_ready.min_ms, report.harness_ready.median_ms, report.harness_ready.max_ms);
    println!("  floor (same configs started by hand, all /healthz ok):");
    println!("    min {:.0} ms  median {:.0} ms  max {:.0} ms", report.floor_healthz.min_ms, report.floor_healthz.median_ms, report.floor_healthz.max_ms);
    println!("  ratio (median/median): {:.2}x", report.ratio);
    let line = |s: &Stats| format!("min {:.0} ms  median {:.0} ms  max {:.0} ms", s.min_ms, s.median_ms, s.max_ms);
    println!("  whole natslab up, process backend (render, nats-server -t, then the above):");
    println!("    {}", line(&report.harness_up));
    match (&report.container, &report.container_skipped) {
        (Some(c), _) => {
            println!("  container backend ({}), same readiness conditions, from the first container start:", c.image);
            println!("    {}", line(&c.ready));
            println!("  whole natslab up, container backend (also: networks, containers created with their files):");
            println!("    {}", line(&c.up));
        }
        (None, why) => println!("  container backend: not measured: {}", why.as_deref().unwrap_or("unknown")),
    }
    if let Some(s) = &report.suite {
        println!("scenario suite (every family, process backend): {:.1} s wall, {} checks passed, {} not passed", s.wall_ms / 1000.0, s.passed, s.not_passed);
        for (k, v) in &s.timings {
            println!("    {:<24} n={:<3} {}", k.trim_end_matches("_ms"), v.n, line(v));
        }
    }
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(p, text).map_err(Error::io(format!("write {}", p.display())))?;
    }
    Ok(report)
}
