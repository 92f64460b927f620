//! The attached backend: nodes someone else started, described by an inventory. Faults are delegated over
//! a file protocol in a shared directory — the harness writes `<seq>.request.json`
//! (`{"seq", "op", "node"}`, op one of kill/start/pause/resume/isolate/rejoin) and waits for
//! `<seq>.response.json` (`{"seq", "ok", "error"}`). In a NixOS test the Python test script serves them
//! with the driver's `crash()`, `start()`, `block()`/`unblock()` and `systemctl kill -s STOP/CONT nats`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Endpoint, FaultKind, FaultSet};
use crate::errors::{Error, Result};
use crate::inventory::{FaultChannel, Inventory};
use crate::plan::NodePlan;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRequest {
    pub seq: u64,
    pub op: String,
    pub node: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultResponse {
    pub seq: u64,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
}

pub struct AttachedBackend {
    pub inventory: Inventory,
    seq: AtomicU64,
}

impl AttachedBackend {
    pub fn new(inventory: Inventory) -> AttachedBackend {
        // Start past any request files a previous run left, so answers are never mixed up.
        let first = inventory.faults.as_ref().map(|f| highest_seq(&f.dir) + 1).unwrap_or(1);
        AttachedBackend { inventory, seq: AtomicU64::new(first) }
    }

    pub fn endpoint(&self, node: &NodePlan) -> Endpoint {
        match self.inventory.nodes.iter().find(|n| n.name == node.name) {
            Some(n) => Endpoint {
                client_url: n.client_url.clone(),
                monitor_url: n.monitor_url.clone(),
                leaf_addr: format!("{}:{}", n.addr.host, n.addr.leaf),
            },
            None => Endpoint { client_url: String::new(), monitor_url: String::new(), leaf_addr: String::new() },
        }
    }

    pub fn faults(&self) -> FaultSet {
        let Some(ch) = &self.inventory.faults else { return FaultSet::new() };
        ch.supports
            .iter()
            .filter_map(|s| match s.as_str() {
                "kill" => Some(FaultKind::Kill),
                "pause" => Some(FaultKind::Pause),
                "partition" => Some(FaultKind::Partition),
                _ => None,
            })
            .collect()
    }

    /// Asks whoever owns the node to perform `op`, and waits for the answer.
    pub async fn request(&self, op: &'static str, node: &str) -> Result<()> {
        let ch: &FaultChannel = self.inventory.faults.as_ref().ok_or_else(|| Error::Fault {
            node: node.into(),
            op,
            reason: "the inventory names no fault channel: the attached backend cannot do faults here".into(),
        })?;
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let req = FaultRequest { seq, op: op.to_string(), node: node.to_string() };
        let path = ch.dir.join(format!("{seq}.request.json"));
        let tmp = ch.dir.join(format!(".{seq}.request.json.tmp"));
        let text = serde_json::to_string(&req).unwrap_or_default();
        // Write then rename: the server side never reads half a request.
        std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)).map_err(Error::io(format!("write {}", path.display())))?;
        let answer = ch.dir.join(format!("{seq}.response.json"));
        let deadline = Instant::now() + Duration::from_secs(ch.timeout_s);
        loop {
            if let Ok(text) = std::fs::read_to_string(&answer) {
                if let Ok(resp) = serde_json::from_str::<FaultResponse>(&text) {
                    // The request first: a server never sees it again without its answer (it would
                    // perform the fault twice); a server that listed it just before must skip it if gone.
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(&answer);
                    return if resp.ok {
                        Ok(())
                    } else {
                        Err(Error::Fault { node: node.into(), op, reason: resp.error.unwrap_or_else(|| "refused".into()) })
                    };
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Fault { node: node.into(), op, reason: format!("no answer in {}s from the fault server at {}", ch.timeout_s, ch.dir.display()) });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn highest_seq(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_string_lossy().split('.').next().and_then(|n| n.parse::<u64>().ok()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
