//! Backends bring a plan's nodes up and down, and may offer capabilities to fault them. Every backend has a
//! node lifecycle (`Backend`); faults are small optional interfaces (`Kill`, `Pause`, `PowerLoss`, `Isolate`,
//! `Net`), and a backend's capabilities follow from which of them it offers (Jepsen's `db`/`Kill`/`Pause`/`Net`
//! protocols). `Lab::apply` turns a `nemesis::Fault` into calls on them; nothing here interprets a scenario.
//!
//! Adding a backend: a file (or directory) here implementing `Backend` and whichever capabilities it has, a
//! `BackendKind` variant, and one line in `open`.

pub mod attached;
pub mod container;
pub mod links;
pub mod netns;
pub mod process;
pub mod slot;
pub mod spawn;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::errors::{Error, Result};
use crate::nemesis::{Capabilities, Capability, Grudge};
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;
use crate::topology::Topology;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// nats-server processes on 127.77.<slot>.<n> (default; no privileges).
    Process,
    /// Nodes someone else runs, described by an inventory (`--inventory`); faults are requested from them.
    Attached,
    /// Each node a container on a Docker engine, one network per run.
    Container,
    /// Each node a host in its own network namespace on a bridge, addressed in 198.18.0.0/15 (needs root).
    Netns,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [BackendKind::Process, BackendKind::Netns, BackendKind::Container, BackendKind::Attached];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Process => "process",
            BackendKind::Attached => "attached",
            BackendKind::Container => "container",
            BackendKind::Netns => "netns",
        }
    }

    /// One line for `--help`.
    pub fn about(self) -> &'static str {
        match self {
            BackendKind::Process => "nats-server processes on loopback addresses (default; no privileges)",
            BackendKind::Netns => "each node a host in its own network namespace (needs root)",
            BackendKind::Container => "each node a container on a local Docker engine",
            BackendKind::Attached => "nodes someone else runs, described by --inventory",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        BackendKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown backend `{s}` (one of {})", names.join(", "))
        })
    }
}

/// Where the harness reaches a node (which may differ from where peers reach it, e.g. mapped ports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub client_url: String,
    pub monitor_url: String,
    /// `host:port` of the leafnode listener as the harness reaches it (hubs), to know when leaves may dial.
    pub leaf_addr: String,
}

/// A node lifecycle: what every backend does. Faults are the optional capabilities below.
#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Where node `i` (hubs first, then leaves) called `name` listens and how peers reach it.
    fn addr(&self, i: usize, name: &str) -> NodeAddr;

    /// Paths as the servers see them, for a run directory on this host.
    fn layout(&self, dir: &Path) -> Layout;

    /// Where each inter-node link's proxy listens when the lab is brought up with link proxies; `None` when
    /// this backend cannot place proxies here.
    fn link_addrs(&self, _t: &Topology) -> Option<BTreeMap<(String, String), String>> {
        None
    }

    /// Learns the plan (configs, logs) and builds what the nodes need before any starts.
    async fn prepare(&mut self, plan: &Plan) -> Result<()>;

    /// Starts (or restarts) a node.
    async fn start(&mut self, node: &str) -> Result<()>;

    /// Starts several nodes, all at once where the backend can (their order does not matter).
    async fn start_group(&mut self, nodes: &[String]) -> Result<()> {
        for n in nodes {
            self.start(n).await?;
        }
        Ok(())
    }

    fn endpoint(&self, node: &NodePlan) -> Endpoint;

    /// Whether a node's server has exited on its own (why, if so).
    fn exited(&mut self, _node: &str) -> Option<String> {
        None
    }

    /// Host process id of a node's server, where the backend has one.
    fn pid(&self, _node: &str) -> Option<u32> {
        None
    }

    /// Stops every node this backend started and removes what it built.
    async fn shutdown(self: Box<Self>);

    /// For tests and tools that need one backend's own handles (`Lab::backend::<T>()`).
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;

    fn kill(&mut self) -> Option<&mut dyn Kill> {
        None
    }
    fn pause(&mut self) -> Option<&mut dyn Pause> {
        None
    }
    fn power(&mut self) -> Option<&mut dyn PowerLoss> {
        None
    }
    /// Whole-node isolation, for backends that have no finer network control (`Net` implies it).
    fn isolate(&mut self) -> Option<&mut dyn Isolate> {
        None
    }
    fn net(&mut self) -> Option<&mut dyn Net> {
        None
    }
    fn net_ref(&self) -> Option<&dyn Net> {
        None
    }
    /// Throwaway servers beside the lab (e.g. an impostor leaf), on the lab's own network.
    fn guests(&mut self) -> Option<&mut dyn Guests> {
        None
    }
    /// Stopping a node gracefully and starting it on another version, while the lab runs.
    fn upgrade(&mut self) -> Option<&mut dyn Upgrade> {
        None
    }
    /// Changing a running node's files (config, secrets) for a config reload.
    fn reload(&mut self) -> Option<&mut dyn Reload> {
        None
    }
    /// Destroying a stopped node's JetStream store (disaster-recovery drills).
    fn store(&mut self) -> Option<&mut dyn Store> {
        None
    }

    /// Runs `node` on `server` instead of the backend's own, from its next start on: before `prepare` for
    /// a topology whose nodes declare their versions. Backends that run one server for every node say so.
    async fn use_server(&mut self, _node: &str, server: &crate::server::NatsServer) -> Result<()> {
        Err(Error::Backend { backend: self.kind().name(), reason: format!("runs one nats-server for every node; nodes cannot run {} here", server.version) })
    }
}

#[async_trait]
pub trait Upgrade: Send {
    /// Lame-duck stop (SIGUSR2: the server stops accepting, hands its clients off, exits); how long it took.
    /// Killed after `within`.
    async fn stop_gracefully(&mut self, node: &str, within: std::time::Duration) -> Result<std::time::Duration>;
    /// The server the node runs from its next start.
    async fn swap(&mut self, node: &str, server: &crate::server::NatsServer) -> Result<()>;
}

#[async_trait]
pub trait Reload: Send {
    /// Makes the node's files as now written in the run directory the ones its server reads (a no-op where
    /// the server reads the run directory itself).
    async fn refresh_files(&mut self, node: &str, layout: &Layout) -> Result<()>;
}

#[async_trait]
pub trait Store: Send {
    /// Removes the JetStream store of `node`, which is not running.
    async fn wipe(&mut self, node: &str, layout: &Layout) -> Result<()>;
}

/// Where the store is a directory of the run's on this host: emptied (it stays, as a container's mount).
pub fn wipe_host_store(node: &str, layout: &Layout) -> Result<()> {
    let dir = layout.host_node_dir(node).join("store");
    let fail = |e: std::io::Error| Error::Fault { node: node.into(), op: "wipe", reason: format!("empty {}: {e}", dir.display()) };
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    crate::files::mkdir(&dir).map_err(|e| Error::Fault { node: node.into(), op: "wipe", reason: e.to_string() })
}

/// What a backend can do, from the capabilities it offers.
pub fn capabilities(b: &mut dyn Backend) -> Capabilities {
    let mut c = Capabilities::new();
    if b.kill().is_some() {
        c.insert(Capability::Kill);
    }
    if b.pause().is_some() {
        c.insert(Capability::Pause);
    }
    if b.power().is_some() {
        c.insert(Capability::PowerLoss);
    }
    if b.isolate().is_some() {
        c.insert(Capability::Isolate);
    }
    if b.guests().is_some() {
        c.insert(Capability::Guest);
    }
    if b.upgrade().is_some() {
        c.insert(Capability::Upgrade);
    }
    if b.reload().is_some() {
        c.insert(Capability::Reload);
    }
    if b.store().is_some() {
        c.insert(Capability::Wipe);
    }
    if let Some(n) = b.net() {
        let kinds = n.kinds();
        if kinds.contains(&Capability::Partition) {
            c.insert(Capability::Isolate);
        }
        c.extend(kinds);
    }
    c
}

#[async_trait]
pub trait Kill: Send {
    /// `kill -9`: sudden death of the server process, nothing flushed by it (the kernel keeps its writes).
    async fn kill(&mut self, node: &str) -> Result<()>;
}

#[async_trait]
pub trait Pause: Send {
    async fn pause(&mut self, node: &str) -> Result<()>;
    async fn resume(&mut self, node: &str) -> Result<()>;
}

#[async_trait]
pub trait PowerLoss: Send {
    /// The machine loses power; `Backend::start` boots it again.
    async fn power_loss(&mut self, node: &str) -> Result<()>;
}

#[async_trait]
pub trait Isolate: Send {
    async fn isolate(&mut self, node: &str) -> Result<()>;
    async fn rejoin(&mut self, node: &str) -> Result<()>;
}

/// The network between nodes: implemented by the link-proxy set (`links::LinkSet`) and by the kernel (netns).
#[async_trait]
pub trait Net: Send + Sync {
    /// Which network capabilities this implementation has (of Partition, Blackhole, Latency, Bandwidth).
    fn kinds(&self) -> Capabilities;
    /// Makes `grudge` the partition in force: cuts what it names, lifts earlier cuts it no longer names
    /// (an empty grudge heals). Blackholes, latency and caps stay.
    async fn partition(&mut self, grudge: &Grudge) -> Result<()>;
    async fn blackhole(&mut self, a: &str, b: &str) -> Result<()>;
    async fn restore(&mut self, a: &str, b: &str) -> Result<()>;
    async fn slow(&mut self, a: &str, b: &str, latency: Duration, jitter: Duration) -> Result<()>;
    async fn cap(&mut self, a: &str, b: &str, bytes_per_s: u64) -> Result<()>;
    /// No latency, no cap.
    async fn fast(&mut self, a: &str, b: &str) -> Result<()>;
    /// Byte counters per link, (dialer, dialed) → counters, where links go through proxies.
    fn counters(&self) -> BTreeMap<(String, String), crate::net::Counters> {
        BTreeMap::new()
    }
    /// What this network has in force now (cuts, blackholes, latency, caps), one line each; empty when
    /// clean or when it cannot tell.
    fn in_force(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A throwaway server started beside a lab; stopped when dropped or by `Guests::stop`.
#[async_trait]
pub trait Guests: Send {
    /// Starts a server with `settings` (paths in them as the servers see the run directory) under `name`;
    /// its log is at the returned host path.
    async fn start_guest(&mut self, name: &str, settings: &serde_json::Value, files: &[(String, String)]) -> Result<std::path::PathBuf>;
    /// Whether the guest is still running (why not, if it exited).
    fn guest_exited(&mut self, name: &str) -> Option<String>;
    async fn stop_guest(&mut self, name: &str);
}

/// The backend of a kind, ready to prepare a plan. The one place that knows every backend.
pub async fn open(kind: BackendKind, server: &NatsServer, inventory: Option<&crate::inventory::Inventory>, image: Option<String>) -> Result<Box<dyn Backend>> {
    Ok(match kind {
        BackendKind::Process => Box::new(process::ProcessBackend::new(server.clone())?),
        BackendKind::Attached => Box::new(attached::AttachedBackend::new(inventory.ok_or(Error::Usage {
            what: "the attached backend needs an inventory".into(),
            hint: "pass --inventory FILE (a lab's inventory.json)".into(),
        })?
        .clone())),
        BackendKind::Container => Box::new(container::ContainerBackend::new(server, image).await?),
        BackendKind::Netns => Box::new(netns::NetnsBackend::new(server.clone()).await?),
    })
}

/// The error for a fault a backend cannot do, with how to get it where there is a way.
pub fn cannot(kind: BackendKind, capability: Capability) -> Error {
    let network = matches!(capability, Capability::Partition | Capability::Blackhole | Capability::Latency | Capability::Bandwidth);
    let hint = if network && kind != BackendKind::Attached {
        "; network faults need a lab brought up with link proxies (natslab up --link-proxies)"
    } else {
        ""
    };
    Error::Fault { node: "-".into(), op: capability.name(), reason: format!("the {kind} backend cannot {}{hint}", capability.verb()) }
}
