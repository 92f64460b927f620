//! Faults on a running lab, from another terminal: `natslab fault` asks the lab's supervisor (`natslab up`,
//! in the foreground or detached) over a mailbox in the run directory (`<run>/control`), and the supervisor
//! does them with its own backend — the one that holds the processes, containers, namespaces and link
//! proxies. For reproducing an incident by hand on a production layout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::errors::{Error, Result};
use crate::lab::Lab;
use crate::mailbox;
use crate::nemesis;

/// The mailbox of a lab whose run directory is `dir`.
pub fn dir_of(run_dir: &Path) -> PathBuf {
    run_dir.join("control")
}

/// How long `natslab fault` waits for the supervisor (a start waits for the node to be ready).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(120);
const READY_WITHIN: Duration = Duration::from_secs(60);

fn duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 100ms, 1s)"))
}

/// One fault (or its undoing), as `natslab fault` takes it and the supervisor does it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum FaultCmd {
    /// kill -9 a node.
    Kill { node: String },
    /// Start a killed node again, and wait until it is ready.
    Start { node: String },
    /// Freeze a node (SIGSTOP, docker pause).
    Pause { node: String },
    Resume { node: String },
    /// Cut a node off from every other node.
    Isolate { node: String },
    /// Cut a leaf off from every hub (its local clients keep working).
    CutLeaf { leaf: String },
    /// Undo every partition.
    Heal,
    /// Keep the links between two nodes open but drop every byte (only pings notice).
    Blackhole { a: String, b: String },
    Restore { a: String, b: String },
    /// Add latency (each way) to the links between two nodes.
    Slow {
        a: String,
        b: String,
        #[arg(value_parser = duration)]
        latency: Duration,
        #[arg(long, value_parser = duration, default_value = "0ms")]
        jitter: Duration,
    },
    /// Cap the links between two nodes, bytes per second each way.
    Cap { a: String, b: String, bytes_per_s: u64 },
    /// Remove latency and caps between two nodes.
    Fast { a: String, b: String },
}

impl FaultCmd {
    fn nodes(&self) -> Vec<&str> {
        match self {
            FaultCmd::Kill { node } | FaultCmd::Start { node } | FaultCmd::Pause { node } | FaultCmd::Resume { node } | FaultCmd::Isolate { node } => {
                vec![node]
            }
            FaultCmd::CutLeaf { leaf } => vec![leaf],
            FaultCmd::Heal => vec![],
            FaultCmd::Blackhole { a, b } | FaultCmd::Restore { a, b } | FaultCmd::Slow { a, b, .. } | FaultCmd::Cap { a, b, .. } | FaultCmd::Fast { a, b } => {
                vec![a, b]
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub seq: u64,
    pub fault: FaultCmd,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub seq: u64,
    pub ok: bool,
    pub message: String,
}

/// Does one fault on the lab; the message says what was done.
pub async fn apply(lab: &mut Lab, fault: &FaultCmd) -> Result<String> {
    let names: Vec<String> = lab.plan.nodes.iter().map(|n| n.name.clone()).collect();
    for n in fault.nodes() {
        if !names.iter().any(|x| x == n) {
            return Err(Error::Run(format!("no node `{n}` in {}; its nodes: {}", lab.plan.run_id, names.join(", "))));
        }
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let hub_names: Vec<String> = lab.plan.hubs().map(|n| n.name.clone()).collect();
    let hubs: Vec<&str> = hub_names.iter().map(String::as_str).collect();
    match fault {
        FaultCmd::Kill { node } => lab.kill(node).await.map(|_| format!("killed {node}")),
        FaultCmd::Start { node } => {
            let t = Instant::now();
            lab.start(node).await?;
            lab.wait_ready(&[node], READY_WITHIN).await?;
            Ok(format!("started {node}; ready in {} ms", t.elapsed().as_millis()))
        }
        FaultCmd::Pause { node } => lab.pause(node).await.map(|_| format!("paused {node}")),
        FaultCmd::Resume { node } => lab.resume(node).await.map(|_| format!("resumed {node}")),
        FaultCmd::Isolate { node } => {
            let g = nemesis::isolate(node, &all);
            lab.partition(&g).await.map(|_| format!("isolated {node} from every other node"))
        }
        FaultCmd::CutLeaf { leaf } => {
            if hubs.contains(&leaf.as_str()) {
                return Err(Error::Run(format!("{leaf} is a hub; cut-leaf takes a leaf (isolate takes any node)")));
            }
            let g = nemesis::cut_leaf(leaf, &hubs);
            lab.partition(&g).await.map(|_| format!("cut {leaf} off from {}", hubs.join(", ")))
        }
        FaultCmd::Heal => lab.heal().await.map(|_| "healed every partition".to_string()),
        FaultCmd::Blackhole { a, b } => lab.blackhole(a, b).await.map(|_| format!("blackholed {a} ↔ {b}")),
        FaultCmd::Restore { a, b } => lab.restore(a, b).await.map(|_| format!("restored {a} ↔ {b}")),
        FaultCmd::Slow { a, b, latency, jitter } => lab
            .slow(a, b, *latency, *jitter)
            .await
            .map(|_| format!("{a} ↔ {b}: {} ms ± {} ms each way", latency.as_millis(), jitter.as_millis())),
        FaultCmd::Cap { a, b, bytes_per_s } => lab.cap(a, b, *bytes_per_s).await.map(|_| format!("{a} ↔ {b}: capped at {bytes_per_s} B/s")),
        FaultCmd::Fast { a, b } => lab.fast(a, b).await.map(|_| format!("{a} ↔ {b}: no latency, no cap")),
    }
}

/// Serves fault requests for `lab` until dropped (the supervisor selects it against Ctrl-C/SIGTERM).
pub async fn serve(lab: &mut Lab, dir: &Path) {
    loop {
        for (seq, req) in mailbox::pending::<Request>(dir) {
            let (ok, message) = match req {
                Ok(r) => match apply(lab, &r.fault).await {
                    Ok(m) => (true, m),
                    Err(e) => (false, e.to_string()),
                },
                Err(e) => (false, e),
            };
            tracing::info!(seq, ok, "fault: {message}");
            if let Err(e) = mailbox::answer(dir, seq, &Answer { seq, ok, message }) {
                tracing::warn!("fault {seq}: cannot answer in {}: {e}", dir.display());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the supervisor (process `supervisor`) of the lab in `run_dir` to do `fault`; its message, or why not.
pub async fn ask(run_dir: &Path, supervisor: u32, fault: FaultCmd) -> Result<String> {
    let dir = dir_of(run_dir);
    if !dir.is_dir() {
        return Err(Error::Run(format!("{} has no control mailbox: is its `natslab up` still running?", run_dir.display())));
    }
    let seq = mailbox::highest_seq(&dir) + 1;
    let gone = async {
        while crate::runs::alive(supervisor) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let request = Request { seq, fault };
    let a: Answer = tokio::select! {
        a = mailbox::ask(&dir, seq, &request, ANSWER_WITHIN) => a.map_err(Error::Run)?,
        _ = gone => return Err(Error::Run(format!("the lab's supervisor (pid {supervisor}) ended before answering"))),
    };
    if a.ok {
        Ok(a.message)
    } else {
        Err(Error::Run(a.message))
    }
}
