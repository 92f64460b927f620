//! `natslab bench`: time-to-ready of a topology through the harness, against the floor — the same rendered
//! configs started by hand (all at once) until every `/healthz` is ok. Figures, not assertions.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::process::ProcessBackend;
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
    pub floor_healthz: Stats,
    pub ratio: f64,
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

pub async fn run(path: &Path, runs: usize, json: Option<&Path>) -> Result<BenchReport> {
    let t = topology::load_file(path)?;
    let mut say = |m: &str| eprintln!("{m}");
    let server = server::find_or_install(&mut say)?;
    let mut harness = Vec::new();
    let mut floor = Vec::new();
    for i in 0..runs.max(1) {
        // Alternate the order so neither side always runs on a warmer machine.
        let one_lab = async || -> Result<Duration> {
            let lab = Lab::up(t.clone(), &UpOptions::default(), &Quiet).await?;
            let took = lab.ready_in;
            lab.shutdown().await;
            Ok(took)
        };
        if i % 2 == 0 {
            harness.push(one_lab().await?);
            floor.push(floor_once(&t, &server).await?);
        } else {
            floor.push(floor_once(&t, &server).await?);
            harness.push(one_lab().await?);
        }
        eprintln!("run {}/{}: harness {:?}, floor {:?}", i + 1, runs, harness[i], floor[i]);
    }
    let h = stats(&harness);
    let f = stats(&floor);
    let report = BenchReport {
        topology: t.name.clone(),
        nodes: t.hub.nodes.len() + t.leaves.len(),
        ratio: if f.median_ms > 0.0 { h.median_ms / f.median_ms } else { 0.0 },
        harness_ready: h,
        floor_healthz: f,
    };
    println!("time-to-ready of {} ({} nodes, {} runs, nats-server {})", report.topology, report.nodes, runs, server.version);
    println!("  natslab up (healthz + full route mesh + leaves attached + JetStream meta leader + streams provisioned):");
    println!("    min {:.0} ms  median {:.0} ms  max {:.0} ms", report.harness_ready.min_ms, report.harness_ready.median_ms, report.harness_ready.max_ms);
    println!("  floor (same configs started by hand, all /healthz ok):");
    println!("    min {:.0} ms  median {:.0} ms  max {:.0} ms", report.floor_healthz.min_ms, report.floor_healthz.median_ms, report.floor_healthz.max_ms);
    println!("  ratio (median/median): {:.2}x", report.ratio);
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(p, text).map_err(Error::io(format!("write {}", p.display())))?;
    }
    Ok(report)
}
