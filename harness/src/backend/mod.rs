//! Backends bring a plan's nodes up and down and perform faults on them. A fixed set, so an enum: each says
//! which faults it can do (`faults()`), and callers ask before they try.

pub mod attached;
pub mod links;
pub mod container;
pub mod netns;
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
    /// Each node a host in its own network namespace on a bridge, addressed in 198.18.0.0/15 (needs root).
    Netns,
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
    Netns(netns::NetnsBackend),
}

impl Backend {
    /// `image`: for containers, a user-named image instead of the locally built one.
    pub async fn new(kind: BackendKind, server: &NatsServer, inventory: Option<&crate::inventory::Inventory>, image: Option<String>) -> Result<Backend> {
        match kind {
            BackendKind::Process => Ok(Backend::Process(process::ProcessBackend::new(server.clone())?)),
            BackendKind::Attached => {
                let inv = inventory.ok_or_else(|| crate::errors::Error::Run("the attached backend needs --inventory FILE".into()))?;
                Ok(Backend::Attached(attached::AttachedBackend::new(inv.clone())))
            }
            BackendKind::Container => Ok(Backend::Container(match image {
                Some(i) => container::ContainerBackend::new(server, Some(i)).await?,
                None => container::ContainerBackend::from_env(server).await?,
            })),
            BackendKind::Netns => Ok(Backend::Netns(netns::NetnsBackend::new(server.clone()).await?)),
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Process(_) => BackendKind::Process,
            Backend::Attached(_) => BackendKind::Attached,
            Backend::Container(_) => BackendKind::Container,
            Backend::Netns(_) => BackendKind::Netns,
        }
    }

    /// Where node `i` listens and how peers reach it.
    pub fn addr(&self, i: usize, _name: &str) -> NodeAddr {
        match self {
            Backend::Process(b) => b.addr(i),
            Backend::Attached(b) => b.inventory.nodes.iter().find(|n| n.name == _name).map(|n| n.addr.clone()).unwrap_or_else(|| b.inventory.nodes[0].addr.clone()),
            Backend::Container(_) => container::ContainerBackend::addr(i, _name),
            Backend::Netns(b) => b.addr(i),
        }
    }

    /// Paths as the servers see them, for a run directory on this host.
    pub fn layout(&self, dir: &Path) -> Layout {
        match self {
            Backend::Process(_) => Layout::same(dir),
            Backend::Attached(b) => b.inventory.layout(),
            Backend::Container(_) => container::ContainerBackend::layout(dir),
            Backend::Netns(_) => netns::NetnsBackend::layout(dir),
        }
    }

    /// Learns the plan (configs, logs) before any node starts.
    pub async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        match self {
            Backend::Process(b) => {
                b.register(plan);
                b.start_links(plan).await
            }
            Backend::Attached(_) => Ok(()),
            Backend::Container(b) => b.prepare(plan).await,
            Backend::Netns(b) => b.prepare(plan).await,
        }
    }

    pub fn endpoint(&self, node: &NodePlan) -> Endpoint {
        match self {
            Backend::Process(_) => process::ProcessBackend::endpoint(node),
            Backend::Attached(b) => b.endpoint(node),
            Backend::Container(b) => b.endpoint(node),
            Backend::Netns(_) => netns::NetnsBackend::endpoint(node),
        }
    }

    pub fn faults(&self) -> FaultSet {
        match self {
            Backend::Process(b) => b.faults(),
            Backend::Attached(b) => b.faults(),
            Backend::Container(b) => b.faults(),
            Backend::Netns(b) => b.faults(),
        }
    }

    pub async fn start(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.start(node),
            Backend::Attached(b) => b.request("start", node).await,
            Backend::Container(b) => b.start(node).await,
            Backend::Netns(b) => b.start(node),
        }
    }

    /// Starts several nodes, all at once where the backend can (the order among them does not matter).
    pub async fn start_group(&mut self, nodes: &[String]) -> Result<()> {
        match self {
            Backend::Process(_) | Backend::Attached(_) | Backend::Netns(_) => {
                for n in nodes {
                    self.start(n).await?;
                }
                Ok(())
            }
            Backend::Container(b) => b.start_group(nodes).await,
        }
    }

    pub async fn kill(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.kill(node).await,
            Backend::Attached(b) => b.request("kill", node).await,
            Backend::Container(b) => b.kill(node).await,
            Backend::Netns(b) => b.kill(node).await,
        }
    }

    pub async fn pause(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.pause(node),
            Backend::Attached(b) => b.request("pause", node).await,
            Backend::Container(b) => b.pause(node).await,
            Backend::Netns(b) => b.pause(node),
        }
    }

    pub async fn resume(&mut self, node: &str) -> Result<()> {
        match self {
            Backend::Process(b) => b.resume(node),
            Backend::Attached(b) => b.request("resume", node).await,
            Backend::Container(b) => b.resume(node).await,
            Backend::Netns(b) => b.resume(node),
        }
    }

    /// Whether a node's server has exited on its own (why, if so).
    pub fn exited(&mut self, node: &str) -> Option<String> {
        match self {
            Backend::Process(b) => b.exited(node),
            Backend::Attached(_) => None,
            Backend::Container(b) => b.exited(node),
            Backend::Netns(b) => b.exited(node),
        }
    }

    /// Host process ids of the servers, where the backend has them.
    pub fn pid(&self, node: &str) -> Option<u32> {
        match self {
            Backend::Process(b) => b.pid(node),
            Backend::Attached(_) => None,
            Backend::Container(b) => b.pid(node),
            Backend::Netns(b) => b.pid(node),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        match self {
            Backend::Process(b) => b.pids(),
            Backend::Attached(_) => vec![],
            Backend::Container(b) => b.pids(),
            Backend::Netns(b) => b.pids(),
        }
    }

    /// Where inter-node links are dialed when they go through link proxies (`proxied`); empty for direct
    /// links and for backends that fault the network by other means.
    pub fn links(&self, t: &crate::topology::Topology, proxied: bool) -> std::collections::BTreeMap<(String, String), String> {
        match self {
            Backend::Process(b) if proxied => b.link_addrs(t),
            Backend::Netns(b) if proxied => b.link_addrs(t),
            Backend::Container(b) if proxied => b.link_addrs(t),
            _ => Default::default(),
        }
    }

    fn cannot(&self, op: &'static str) -> crate::errors::Error {
        crate::errors::Error::Fault { node: "-".into(), op, reason: format!("the {:?} backend cannot do this", self.kind()).to_lowercase() }
    }

    /// Cuts every link the grudge names.
    pub async fn partition(&mut self, g: &crate::nemesis::Grudge) -> Result<()> {
        match self {
            Backend::Process(b) => b.partition(g),
            Backend::Netns(b) => b.partition(g).await,
            Backend::Container(b) if b.links.is_some() => {
                b.link_set("partition")?.partition(g);
                Ok(())
            }
            Backend::Container(b) => {
                // Without proxies a container can only be cut off from the whole network: grudges that
                // isolate single nodes.
                for node in isolated_nodes(g).ok_or_else(|| self_cannot("partition", "only a partition that isolates whole nodes can be done by disconnecting containers"))? {
                    b.partition(&node).await?;
                }
                Ok(())
            }
            Backend::Attached(b) => {
                for node in isolated_nodes(g).ok_or_else(|| self_cannot("partition", "the driver isolates whole machines only (block())"))? {
                    b.request("isolate", &node).await?;
                }
                Ok(())
            }
        }
    }

    /// Undoes every partition.
    pub async fn heal(&mut self) -> Result<()> {
        match self {
            Backend::Process(b) => b.heal(),
            Backend::Netns(b) => b.heal().await,
            Backend::Container(b) => {
                if let Some(l) = &mut b.links {
                    l.heal();
                }
                for node in b.partitioned() {
                    b.heal(&node).await?;
                }
                Ok(())
            }
            Backend::Attached(_) => Ok(()),
        }
    }

    pub async fn blackhole(&mut self, a: &str, b: &str) -> Result<()> {
        match self {
            Backend::Process(p) => p.blackhole(a, b),
            Backend::Netns(n) => n.blackhole(a, b).await,
            Backend::Container(c) => c.link_set("blackhole")?.blackhole(a, b),
            _ => Err(self.cannot("blackhole")),
        }
    }

    pub async fn restore(&mut self, a: &str, b: &str) -> Result<()> {
        match self {
            Backend::Process(p) => p.restore(a, b),
            Backend::Netns(n) => n.restore(a, b).await,
            Backend::Container(c) => c.link_set("restore")?.restore(a, b),
            _ => Err(self.cannot("restore")),
        }
    }

    pub async fn slow(&mut self, a: &str, b: &str, latency: std::time::Duration, jitter: std::time::Duration) -> Result<()> {
        match self {
            Backend::Process(p) => p.slow(a, b, latency, jitter),
            Backend::Netns(n) => n.slow(a, b, latency, jitter),
            Backend::Container(c) => c.link_set("slow")?.slow(a, b, latency, jitter),
            _ => Err(self.cannot("slow")),
        }
    }

    pub async fn cap(&mut self, a: &str, b: &str, bytes_per_s: u64) -> Result<()> {
        match self {
            Backend::Process(p) => p.cap(a, b, bytes_per_s),
            Backend::Netns(n) => n.cap(a, b, bytes_per_s).await,
            Backend::Container(c) => c.link_set("cap")?.cap(a, b, bytes_per_s),
            _ => Err(self.cannot("cap")),
        }
    }

    pub async fn fast(&mut self, a: &str, b: &str) -> Result<()> {
        match self {
            Backend::Process(p) => p.fast(a, b),
            Backend::Netns(n) => n.fast(a, b).await,
            Backend::Container(c) => c.link_set("fast")?.fast(a, b),
            _ => Err(self.cannot("fast")),
        }
    }

    /// Byte counters of the link proxies, (dialer, dialed) → counters; empty without proxies.
    pub fn link_counters(&self) -> std::collections::BTreeMap<(String, String), crate::net::Counters> {
        match self {
            Backend::Process(b) => b.links.as_ref().map(|l| l.counters()).unwrap_or_default(),
            Backend::Netns(b) => b.link_counters(),
            Backend::Container(b) => b.links.as_ref().map(|l| l.counters()).unwrap_or_default(),
            _ => Default::default(),
        }
    }

    pub async fn shutdown(self) {
        match self {
            Backend::Process(b) => b.shutdown().await,
            // Not ours to stop.
            Backend::Attached(_) => {}
            Backend::Container(b) => b.shutdown().await,
            Backend::Netns(b) => b.shutdown().await,
        }
    }
}

fn self_cannot(op: &'static str, why: &str) -> crate::errors::Error {
    crate::errors::Error::Fault { node: "-".into(), op, reason: why.to_string() }
}

/// The nodes a grudge cuts off from everyone else it names, when that is all it does (each isolated node
/// drops every node of the grudge); `None` for a finer partition.
fn isolated_nodes(g: &crate::nemesis::Grudge) -> Option<Vec<String>> {
    let all: std::collections::BTreeSet<&String> = g.keys().chain(g.values().flatten()).collect();
    let isolated: Vec<String> = g
        .iter()
        .filter(|(n, drops)| all.iter().filter(|o| **o != *n).all(|o| drops.contains(*o)))
        .map(|(n, _)| n.clone())
        .collect();
    // Every cut must involve an isolated node.
    let covered = crate::nemesis::cut_pairs(g).iter().all(|(a, b)| isolated.contains(a) || isolated.contains(b));
    (covered && !isolated.is_empty()).then_some(isolated)
}
