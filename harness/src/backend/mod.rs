//! Backends bring a plan's nodes up and down and perform faults on them. A fixed set, so an enum: each says
//! which faults it can do (`faults()`), and callers ask before they try.

pub mod attached;
pub mod container;
pub mod process;
pub mod slot;
pub mod spawn;

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// nats-server processes on 127.77.<slot>.<n> (default; no privileges).
    Process,
    /// Nodes someone else runs, described by an inventory (`--inventory`); faults are requested from them.
    Attached,
    /// Each node a container on a Docker engine, one network per run (`NATSLAB_IMAGE` picks the image).
    Container,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Latency,
    Bandwidth,
    Blackhole,
}

pub type FaultSet = BTreeSet<FaultKind>;

/// Where the harness reaches a node (which may differ from where peers reach it, e.g. mapped ports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub client_url: String,
    pub monitor_url: String,
    /// `host:port` of the leafnode listener as the harness reaches it (hubs), to know when leaves may dial.
    pub leaf_addr: String,
}

use std::path::Path;

use crate::errors::Result;
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;

/// A lab's backend: one of a fixed set, dispatched by enum.
pub enum Backend {
    Process(process::ProcessBackend),
    Attached(attached::AttachedBackend),
    Container(container::ContainerBackend),
}

impl Backend {
    pub async fn new(kind: BackendKind, server: &NatsServer, inventory: Option<&crate::inventory::Inventory>) -> Result<Backend> {
        match kind {
            BackendKind::Process => Ok(Backend::Process(process::ProcessBackend::new(server.clone())?)),
            BackendKind::Attached => {
                let inv = inventory.ok_or_else(|| crate::errors::Error::Run("the attached backend needs --inventory FILE".into()))?;
                Ok(Backend::Attached(attached::AttachedBackend::new(inv.clone())))
            }
            BackendKind::Container => Ok(Backend::Container(container::ContainerBackend::from_env(server).await?)),
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Process(_) => BackendKind::Process,
            Backend::Attached(_) => BackendKind::Attached,
            Backend::Container(_) => BackendKind::Container,
        }
    }

    /// Where node `i` listens and how peers reach it.
    pub fn addr(&self, i: usize, _name: &str) -> NodeAddr {
        match self {
            Backend::Process(b) => b.addr(i),
            Backend::Attached(b) => b.inventory.nodes.iter().find(|n| n.name == _name).map(|n| n.addr.clone()).unwrap_or_else(|| b.inventory.nodes[0].addr.clone()),
            Backend::Container(_) => container::ContainerBackend::addr(i, _name),
        }
    }

    /// Paths as the servers see them, for a run directory on this host.
    pub fn layout(&self, dir: &Path) -> Layout {
        match self {
            Backend::Process(_) => Layout::same(dir),
            Backend::Attached(b) => b.inventory.layout(),
            Backend::Container(_) => container::ContainerBackend::layout(dir),
        }
    }

    /// Learns the plan (configs, logs) before any node starts.
    pub async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        match self {
            Backend::Process(b) => {
                b.register(plan);
                Ok(())
            }
            Backend::Attached(_) => Ok(()),
            Backend::Container(b) => b.prepare(plan).await,
        }
    }

    pub fn endpoint(&self, node: &NodePlan) -> Endpoint {
        match self {
            Backend::Process(_) => process::ProcessBackend::endpoint(node),
            Backend::Attached(b) => b.endpoint(node),
            Backend::Container(b) => b.endpoint(node),
        }
    }

    pub fn faults(&self) -> FaultSet {
        match self {
            Backend::Process(b) => b.faults(),
            Backend::Attached(b) => b.faults(),
            Backend::Container(b) => b.faults(),
        }
    }

    pub async fn start(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.start(node),
            Backend::Attached(b) => b.request("start", node).await,
            Backend::Container(b) => b.start(node).await,
        }
    }

    pub async fn kill(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.kill(node).await,
            Backend::Attached(b) => b.request("kill", node).await,
            Backend::Container(b) => b.kill(node).await,
        }
    }

    pub async fn pause(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.pause(node),
            Backend::Attached(b) => b.request("pause", node).await,
            Backend::Container(b) => b.pause(node).await,
        }
    }

    pub async fn resume(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.resume(node),
            Backend::Attached(b) => b.request("resume", node).await,
            Backend::Container(b) => b.resume(node).await,
        }
    }

    /// Whether a node's server has exited on its own (why, if so).
    pub fn exited(&mut self, node: &str) -> Option<String> {
        match self {
            Backend::Process(b) => b.exited(node),
            Backend::Attached(_) => None,
            Backend::Container(b) => b.exited(node),
        }
    }

    /// Host process ids of the servers, where the backend has them.
    pub fn pid(&self, node: &str) -> Option<u32> {
        match self {
            Backend::Process(b) => b.pid(node),
            Backend::Attached(_) => None,
            Backend::Container(b) => b.pid(node),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        match self {
            Backend::Process(b) => b.pids(),
            Backend::Attached(_) => vec![],
            Backend::Container(b) => b.pids(),
        }
    }

    pub async fn shutdown(self) {
        match self {
            Backend::Process(b) => b.shutdown().await,
            // Not ours to stop.
            Backend::Attached(_) => {}
            Backend::Container(b) => b.shutdown().await,
        }
    }
}
