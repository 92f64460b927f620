//! The attached backend: nodes someone else started, described by an inventory. Faults are delegated over
//! a file protocol in a shared directory (`mailbox`) — the harness writes `<seq>.request.json`
//! (`{"seq", "op", "node"}`, op one of kill/start/pause/resume/isolate/rejoin) and waits for
//! `<seq>.response.json` (`{"seq", "ok", "error"}`). In a NixOS test the Python test script serves them
//! with the driver's `crash()`, `start()`, `block()`/`unblock()` and `systemctl kill -s STOP/CONT nats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        let first = inventory.faults.as_ref().map(|f| crate::mailbox::highest_seq(&f.dir) + 1).unwrap_or(1);
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
        let fault = |reason: String| Error::Fault { node: node.into(), op, reason };
        let resp: FaultResponse = crate::mailbox::ask(&ch.dir, seq, &req, Duration::from_secs(ch.timeout_s)).await.map_err(fault)?;
        if resp.ok {
            Ok(())
        } else {
            Err(fault(resp.error.unwrap_or_else(|| "refused".into())))
        }
    }
}
