//! The attached backend: nodes someone else started, described by an inventory. Faults are delegated over
//! the inventory's fault channel (`mailbox`): the harness writes `<seq>.request.json` —
//! `{"seq": N, "fault": <nemesis::Fault>}`, e.g. `{"seq":3,"fault":{"op":"kill","node":"hub-1"}}` — and waits
//! for `<seq>.response.json` — `{"seq": N, "ok": bool, "message": "..."}`. Whoever serves the channel does
//! what it `supports`: a NixOS test script with the driver's powers (kill, start, pause, resume, power-loss,
//! isolate, rejoin), or a detached natslab lab's supervisor (everything its own backend can do).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Backend, BackendKind, Endpoint, Isolate, Kill, Net, Pause, PowerLoss};
use crate::errors::{Error, Result};
use crate::inventory::{FaultChannel, Inventory};
use crate::nemesis::{Capabilities, Capability, Fault, Grudge};
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};

/// One request on a fault channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub seq: u64,
    pub fault: Fault,
}

/// Its answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub seq: u64,
    pub ok: bool,
    #[serde(default)]
    pub message: String,
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

    fn supports(&self, c: Capability) -> bool {
        self.inventory.faults.as_ref().is_some_and(|ch| ch.supports.iter().any(|s| Capability::parse(s) == Some(c)))
    }

    /// The network faults whoever serves the channel can do on links (not only whole machines).
    fn link_faults(&self) -> Capabilities {
        [Capability::Partition, Capability::Blackhole, Capability::Latency, Capability::Bandwidth].into_iter().filter(|c| self.supports(*c)).collect()
    }

    /// Asks whoever owns the nodes to perform `fault`, and waits for the answer.
    pub async fn request(&self, fault: Fault) -> Result<()> {
        let op = fault.op();
        let node = fault.nodes().first().map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        let ch: &FaultChannel = self.inventory.faults.as_ref().ok_or_else(|| Error::Fault {
            node: node.clone(),
            op,
            reason: "the inventory names no fault channel: the attached backend cannot do faults here".into(),
        })?;
        ask(ch, self.seq.fetch_add(1, Ordering::SeqCst), fault).await
    }
}

/// Asks on a fault channel; the server's refusal becomes a fault error.
pub async fn ask(ch: &FaultChannel, seq: u64, fault: Fault) -> Result<()> {
    let op = fault.op();
    let node = fault.nodes().first().map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let failed = |reason: String| Error::Fault { node: node.clone(), op, reason };
    let req = Request { seq, fault };
    let answer: Answer = crate::mailbox::ask(&ch.dir, seq, &req, Duration::from_secs(ch.timeout_s)).await.map_err(failed)?;
    if answer.ok {
        Ok(())
    } else {
        Err(failed(if answer.message.is_empty() { "refused".into() } else { answer.message }))
    }
}

#[async_trait]
impl Backend for AttachedBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Attached
    }

    fn addr(&self, _i: usize, name: &str) -> NodeAddr {
        self.inventory.nodes.iter().find(|n| n.name == name).map(|n| n.addr.clone()).unwrap_or_else(|| NodeAddr {
            bind: String::new(),
            host: name.to_string(),
            client: 0,
            cluster: 0,
            leaf: 0,
            http: 0,
        })
    }

    fn layout(&self, _dir: &Path) -> Layout {
        self.inventory.layout()
    }

    /// Not ours to prepare.
    async fn prepare(&mut self, _plan: &Plan) -> Result<()> {
        Ok(())
    }

    async fn start(&mut self, node: &str) -> Result<()> {
        self.request(Fault::Start { node: node.into() }).await
    }

    fn endpoint(&self, node: &NodePlan) -> Endpoint {
        match self.inventory.nodes.iter().find(|n| n.name == node.name) {
            Some(n) => Endpoint {
                client_url: n.client_url.clone(),
                monitor_url: n.monitor_url.clone(),
                leaf_addr: format!("{}:{}", n.addr.host, n.addr.leaf),
            },
            None => Endpoint { client_url: String::new(), monitor_url: String::new(), leaf_addr: String::new() },
        }
    }

    /// Not ours to stop.
    async fn shutdown(self: Box<Self>) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn kill(&mut self) -> Option<&mut dyn Kill> {
        self.supports(Capability::Kill).then_some(self as &mut dyn Kill)
    }

    fn pause(&mut self) -> Option<&mut dyn Pause> {
        self.supports(Capability::Pause).then_some(self as &mut dyn Pause)
    }

    fn power(&mut self) -> Option<&mut dyn PowerLoss> {
        self.supports(Capability::PowerLoss).then_some(self as &mut dyn PowerLoss)
    }

    fn isolate(&mut self) -> Option<&mut dyn Isolate> {
        self.supports(Capability::Isolate).then_some(self as &mut dyn Isolate)
    }

    fn net(&mut self) -> Option<&mut dyn Net> {
        (!self.link_faults().is_empty()).then_some(self as &mut dyn Net)
    }

    fn net_ref(&self) -> Option<&dyn Net> {
        (!self.link_faults().is_empty()).then_some(self as &dyn Net)
    }
}

/// Link faults forwarded to a server that has them (a detached natslab lab's supervisor). The channel's
/// partition adds to what is in force, so making `grudge` the partition is a heal, then that partition.
#[async_trait]
impl Net for AttachedBackend {
    fn kinds(&self) -> Capabilities {
        self.link_faults()
    }

    async fn partition(&mut self, grudge: &Grudge) -> Result<()> {
        self.request(Fault::Heal).await?;
        if !grudge.is_empty() {
            self.request(Fault::Partition { grudge: grudge.clone() }).await?;
        }
        Ok(())
    }

    async fn blackhole(&mut self, a: &str, b: &str) -> Result<()> {
        self.request(Fault::Blackhole { a: a.into(), b: b.into() }).await
    }

    async fn restore(&mut self, a: &str, b: &str) -> Result<()> {
        self.request(Fault::Restore { a: a.into(), b: b.into() }).await
    }

    async fn slow(&mut self, a: &str, b: &str, latency: Duration, jitter: Duration) -> Result<()> {
        self.request(Fault::Slow { a: a.into(), b: b.into(), latency, jitter }).await
    }

    async fn cap(&mut self, a: &str, b: &str, bytes_per_s: u64) -> Result<()> {
        self.request(Fault::Cap { a: a.into(), b: b.into(), bytes_per_s }).await
    }

    async fn fast(&mut self, a: &str, b: &str) -> Result<()> {
        self.request(Fault::Fast { a: a.into(), b: b.into() }).await
    }
}

#[async_trait]
impl Kill for AttachedBackend {
    async fn kill(&mut self, node: &str) -> Result<()> {
        self.request(Fault::Kill { node: node.into() }).await
    }
}

#[async_trait]
impl Pause for AttachedBackend {
    async fn pause(&mut self, node: &str) -> Result<()> {
        self.request(Fault::Pause { node: node.into() }).await
    }

    async fn resume(&mut self, node: &str) -> Result<()> {
        self.request(Fault::Resume { node: node.into() }).await
    }
}

#[async_trait]
impl PowerLoss for AttachedBackend {
    async fn power_loss(&mut self, node: &str) -> Result<()> {
        self.request(Fault::PowerLoss { node: node.into() }).await
    }
}

/// The driver isolates whole machines (`block()`); a heal is a rejoin of each machine isolated.
#[async_trait]
impl Isolate for AttachedBackend {
    async fn isolate(&mut self, node: &str) -> Result<()> {
        self.request(Fault::Isolate { node: node.into() }).await
    }

    async fn rejoin(&mut self, node: &str) -> Result<()> {
        self.request(Fault::Rejoin { node: node.into() }).await
    }
}
