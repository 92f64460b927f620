//! A run: for each topology, bring a lab up, run the chosen scenario families, tear it down, and collect
//! one report. Checks derive from the declared topology; the lab may be rendered from another one (tests
//! sabotage it to prove the checks can fail).

use std::path::PathBuf;
use std::time::Instant;

use crate::errors::Result;
use crate::lab::{Lab, Progress, UpOptions};
use crate::report::{RunReport, TopologyRun};
use crate::scenario::{self, Ctx, Family, Observer, Recorder};
use crate::topology::{self, Topology};

/// The reference topology, compiled in so `natslab run` works from any directory.
pub const REFERENCE: &str = include_str!("../../topologies/cim-reference.yaml");
pub const REFERENCE_PATH: &str = "topologies/cim-reference.yaml";

/// A topology to run: where it came from and what it declares.
pub struct Target {
    pub file: String,
    pub topology: Topology,
}

/// Loads every topology first, so bad input fails before anything starts.
pub fn load_targets(paths: &[PathBuf]) -> Result<Vec<Target>> {
    if paths.is_empty() {
        let path = PathBuf::from(REFERENCE_PATH);
        let topology = if path.is_file() { topology::load_file(&path)? } else { topology::parse_str(REFERENCE, &path)? };
        return Ok(vec![Target { file: REFERENCE_PATH.into(), topology }]);
    }
    paths
        .iter()
        .map(|p| Ok(Target { file: p.display().to_string(), topology: topology::load_file(p)? }))
        .collect()
}

/// What to run: which families, and (optionally) only the checks whose id starts with one of `only`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub families: Vec<Family>,
    pub only: Vec<String>,
}

impl Selection {
    pub fn families(families: &[Family]) -> Selection {
        Selection { families: families.to_vec(), only: Vec::new() }
    }
}

/// Brings `rendered` up, runs the families against what `declared` promises, tears down.
pub async fn run_topology(
    declared: &Topology,
    rendered: Topology,
    file: &str,
    selection: &Selection,
    up: &UpOptions,
    progress: &dyn Progress,
    observer: &dyn Observer,
) -> TopologyRun {
    let families = &selection.families[..];
    let started = Instant::now();
    let mut run = TopologyRun {
        topology: declared.name.clone(),
        file: file.to_string(),
        backend: up.backend.to_string(),
        server_version: up.server_version.map(|v| v.to_string()).unwrap_or_default(),
        ready_ms: None,
        wall_ms: 0.0,
        checks: vec![],
        error: None,
        error_is_input: false,
    };
    // Network faults on the process backend need every link behind a proxy (so do latency on netns, whose
    // kernel has no netem, and anything finer than isolating a whole container); the other families
    // measure direct links. So there the network family gets a lab
    // of its own, brought up with proxies.
    use crate::backend::BackendKind;
    let own_lab = matches!(up.backend, BackendKind::Process | BackendKind::Netns | BackendKind::Container) && families.contains(&Family::Network);
    let first: Vec<Family> = families.iter().copied().filter(|f| !own_lab || *f != Family::Network).collect();
    let mut labs: Vec<(Vec<Family>, UpOptions)> = Vec::new();
    if !first.is_empty() {
        labs.push((first, up.clone()));
    }
    if own_lab {
        labs.push((vec![Family::Network], UpOptions { proxied: true, ..up.clone() }));
    }
    for (fams, opts) in labs {
        match Lab::up(rendered.clone(), &opts, progress).await {
            Ok(mut lab) => {
                if run.ready_ms.is_none() {
                    run.ready_ms = Some(lab.ready_in.as_secs_f64() * 1000.0);
                    run.server_version = scenario::upgrade::describe(&lab.servers);
                }
                let mut rec = Recorder::new(observer).only(selection.only.clone());
                {
                    let mut ctx = Ctx { lab: &mut lab, declared, rec: &mut rec };
                    scenario::run(&mut ctx, &fams).await;
                }
                run.checks.extend(rec.checks);
                lab.shutdown().await;
            }
            Err(e) => {
                run.error = Some(e.to_string());
                run.error_is_input = e.is_input();
                break;
            }
        }
    }
    run.wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    run
}

/// Every topology, on each of `versions` (`[None]`: the versions the topology declares, else the server
/// found) — a `--matrix` run is the same topologies once per version.
pub async fn run_all(
    targets: &[Target],
    selection: &Selection,
    up: &UpOptions,
    progress: &dyn Progress,
    observer: &dyn Observer,
    server_version: String,
    versions: &[Option<crate::server::Version>],
) -> RunReport {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut runs = Vec::new();
    let default = [None];
    let versions = if versions.is_empty() { &default[..] } else { versions };
    for v in versions {
        let opts = UpOptions { server_version: *v, ..up.clone() };
        for t in targets {
            let on = v.map(|v| format!(" on nats-server {v}")).unwrap_or_default();
            progress.message(&format!("== {} ({}){on}", t.topology.name, t.file));
            runs.push(run_topology(&t.topology, t.topology.clone(), &t.file, selection, &opts, progress, observer).await);
        }
    }
    let mut report = RunReport {
        natslab_version: env!("CARGO_PKG_VERSION").to_string(),
        nats_server_version: server_version,
        started_unix,
        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
        runs,
    };
    // The versions the labs ran, where they differ from the server found (a matrix, a declared version).
    let ran: Vec<String> = report.versions().into_iter().filter(|v| !v.is_empty()).collect();
    if !ran.is_empty() {
        report.nats_server_version = ran.join(", ");
    }
    report
}
