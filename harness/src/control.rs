//! A running lab's fault channel, served by its supervisor (`natslab up`, in the foreground or detached)
//! over a mailbox in the run directory (`<run>/control`): `natslab fault` asks there, and so does an attached
//! natslab run pointed at the lab's `inventory.json`. Requests and answers are the attached backend's own
//! (`{"seq", "fault": <nemesis::Fault>}` → `{"seq", "ok", "message"}`): one wire format for every fault
//! channel. The supervisor does each fault with `Lab::apply`, so its journal knows what is in force and
//! `undo_all` can take it all back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::attached::Answer;
use crate::errors::{Error, Result};
use crate::lab::Lab;
use crate::mailbox;
use crate::nemesis::Fault;

/// The mailbox of a lab whose run directory is `dir`.
pub fn dir_of(run_dir: &Path) -> PathBuf {
    run_dir.join("control")
}

/// How long `natslab fault` waits for the supervisor (a start waits for the node to be ready).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(120);
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One request to a supervisor: a fault (the attached backend's request), or undo everything in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undo_all: bool,
}

/// Does one fault on the lab; the message says what was done. A start returns once the node answers
/// `/healthz` (not the whole lab's readiness: other nodes may still be faulted on purpose).
pub async fn apply(lab: &mut Lab, fault: &Fault) -> Result<String> {
    let t = Instant::now();
    lab.apply(fault).await?;
    if let Fault::Start { node } = fault {
        lab.wait_healthy(node, READY_WITHIN).await?;
        return Ok(format!("started {node}; healthy in {} ms", t.elapsed().as_millis()));
    }
    Ok(done(fault))
}

/// What a fault did, in words.
fn done(fault: &Fault) -> String {
    match fault {
        Fault::Kill { node } => format!("killed {node}"),
        Fault::Start { node } => format!("started {node}"),
        Fault::Pause { node } => format!("paused {node}"),
        Fault::Resume { node } => format!("resumed {node}"),
        Fault::PowerLoss { node } => format!("cut the power of {node}"),
        Fault::Isolate { node } => format!("isolated {node} from every other node"),
        Fault::Rejoin { node } => format!("{node} rejoined the network"),
        Fault::Partition { grudge } => {
            let pairs: Vec<String> = crate::nemesis::cut_pairs(grudge).into_iter().map(|(a, b)| format!("{a} ↔ {b}")).collect();
            format!("cut {}", pairs.join(", "))
        }
        Fault::Heal => "healed every partition".into(),
        Fault::Blackhole { a, b } => format!("blackholed {a} ↔ {b}"),
        Fault::Restore { a, b } => format!("restored {a} ↔ {b}"),
        Fault::Slow { a, b, latency, jitter } => format!("{a} ↔ {b}: {} ms ± {} ms each way", latency.as_millis(), jitter.as_millis()),
        Fault::Cap { a, b, bytes_per_s } => format!("{a} ↔ {b}: capped at {bytes_per_s} B/s"),
        Fault::Fast { a, b } => format!("{a} ↔ {b}: no latency, no cap"),
    }
}

/// Undoes every fault in force; the message lists them.
pub async fn undo(lab: &mut Lab) -> Result<String> {
    match lab.undo_all().await {
        Ok(undone) if undone.is_empty() => Ok("no fault was in force".into()),
        Ok(undone) => Ok(format!("undid {}; the lab is ready", undone.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", "))),
        Err(e) => Err(Error::Supervisor(e.to_string())),
    }
}

/// Serves fault requests for `lab` until dropped (the supervisor selects it against Ctrl-C/SIGTERM).
pub async fn serve(lab: &mut Lab, dir: &Path) {
    loop {
        for (seq, req) in mailbox::pending::<Request>(dir) {
            let done = match req {
                Ok(Request { fault: Some(f), .. }) => apply(lab, &f).await,
                Ok(Request { undo_all: true, .. }) => undo(lab).await,
                Ok(_) => Err(Error::Usage { what: "an empty request".into(), hint: "send a fault, or undo_all".into() }),
                Err(e) => Err(Error::Supervisor(e)),
            };
            let (ok, message) = match done {
                Ok(m) => (true, m),
                Err(e) => (false, e.to_string()),
            };
            tracing::info!(seq, ok, "fault: {message}");
            if let Err(e) = mailbox::answer(dir, seq, &Answer { seq, ok, message }) {
                tracing::warn!("fault {seq}: cannot answer in {}: {e}", dir.display());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What went wrong asking a supervisor.
#[derive(Debug)]
pub enum Refused {
    /// The supervisor did it not: its message (a node it does not have, a fault its backend lacks, ...).
    No(String),
    /// Nobody answered.
    Gone(String),
}

/// Asks the supervisor (process `supervisor`) of the lab in `run_dir`; its message, or why not.
pub async fn ask(run_dir: &Path, supervisor: u32, fault: Option<Fault>) -> Result<String, Refused> {
    let dir = dir_of(run_dir);
    if !dir.is_dir() {
        return Err(Refused::Gone(format!("{} has no control mailbox: is its `natslab up` still running?", run_dir.display())));
    }
    let seq = mailbox::highest_seq(&dir) + 1;
    let gone = async {
        while crate::runs::alive(supervisor) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let undo_all = fault.is_none();
    let request = Request { seq, fault, undo_all };
    let a: Answer = tokio::select! {
        a = mailbox::ask(&dir, seq, &request, ANSWER_WITHIN) => a.map_err(Refused::Gone)?,
        _ = gone => return Err(Refused::Gone(format!("the lab's supervisor (pid {supervisor}) ended before answering"))),
    };
    if a.ok {
        Ok(a.message)
    } else {
        Err(Refused::No(a.message))
    }
}
