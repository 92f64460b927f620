//! The netns backend: every node a host of its own — a network namespace with one address in 198.18.0.0/15
//! on a bridge shared by the lab — running the same nats-server, through the process backend's process
//! management (`ip netns exec <ns>` execs the server, so pids, signals and the parent-death signal are the
//! process backend's own).
//!
//! Faults: kill/start and pause/resume as the process backend; `partition(grudge)`/`heal()` and
//! `blackhole(a, b)`/`restore(a, b)` with nftables rules inside the namespaces (a partition also aborts the
//! open connections, as a link proxy's cut does; a blackhole keeps them open and silent); `cap(a, b)`/
//! `fast(a, b)` with htb classes matching the peer's address. Latency (`slow`): this kernel has no netem, so a
//! lab brought up with link proxies gets one per link, listening inside the dialed node's namespace — the
//! dialer's packets still carry its own address through the rules and the shaping above.
//!
//! Cleanup: `shutdown` and `Drop` kill the servers and remove every namespace and link of the lab (rules and
//! qdiscs live inside the namespaces and go with them); a lab killed with SIGKILL leaves them behind, and
//! `remove_leftovers` (`natslab down --all`) clears those of dead owners; a new lab on the same slot clears
//! the ones in its way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;

use super::names::{self, Names};
use super::net;
use super::owner;
use crate::backend::links::{self, LinkSet};
use crate::backend::process::ProcessBackend;
use crate::backend::{Backend, BackendKind, Endpoint, Guests, Kill, Net, Pause};
use crate::errors::{Error, Result};
use crate::nemesis::{self, Capabilities, Capability, Grudge};
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;

/// nats-server's standard ports: every node has a network stack of its own.
pub const CLIENT_PORT: u16 = 4222;
pub const CLUSTER_PORT: u16 = 6222;
pub const LEAF_PORT: u16 = 7422;
pub const HTTP_PORT: u16 = 8222;

type Pair = (String, String);

pub struct NetnsBackend {
    /// The servers, and the lab's slot (`198.18.<slot>.0/24`), held for the lab's lifetime.
    procs: Option<ProcessBackend>,
    slot: usize,
    /// Set once the lab's network exists (or is being built): what teardown removes.
    names: Option<Names>,
    /// Node → its index in the plan (hubs first, then leaves).
    nodes: BTreeMap<String, usize>,
    partition: BTreeSet<Pair>,
    dark: BTreeSet<Pair>,
    caps: BTreeMap<Pair, u64>,
    /// The link proxies, when the lab was brought up with them.
    links: Option<LinkSet>,
}

fn pair(a: &str, b: &str) -> Pair {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn peer<'a>(p: &'a Pair, node: &str) -> Option<&'a str> {
    if p.0 == node {
        Some(&p.1)
    } else if p.1 == node {
        Some(&p.0)
    } else {
        None
    }
}

impl NetnsBackend {
    /// Needs root and iproute2/nftables. Clears the leftovers of a dead run that still hold this slot's host
    /// address (a crashed lab releases its slot, not its links).
    pub async fn new(server: NatsServer) -> Result<NetnsBackend> {
        net::check_tools().map_err(|e| Error::Backend { backend: "netns", reason: format!("needs root (uid 0) and iproute2/nftables: {e}") })?;
        let procs = ProcessBackend::new(server)?;
        let slot = procs.slot_index();
        let left = tokio::task::spawn_blocking(move || owner::remove_leftovers_on_slot(slot)).await.unwrap_or_default();
        if !left.is_empty() {
            tracing::info!(tags = ?left.tags, "removed leftovers of dead netns labs");
        }
        Ok(NetnsBackend {
            procs: Some(procs),
            slot,
            names: None,
            nodes: BTreeMap::new(),
            partition: BTreeSet::new(),
            dark: BTreeSet::new(),
            caps: BTreeMap::new(),
            links: None,
        })
    }

    pub fn slot_index(&self) -> usize {
        self.slot
    }

    pub fn names(&self) -> Option<&Names> {
        self.names.as_ref()
    }

    /// The namespace node runs in.
    pub fn namespace(&self, node: &str) -> Option<String> {
        let n = self.names.as_ref()?;
        self.nodes.contains_key(node).then(|| n.node_ns(node))
    }

    pub fn node_addr(&self, i: usize) -> NodeAddr {
        let ip = names::node_ip(self.slot, i);
        NodeAddr { bind: ip.clone(), host: ip, client: CLIENT_PORT, cluster: CLUSTER_PORT, leaf: LEAF_PORT, http: HTTP_PORT }
    }

    /// Builds the lab's network and tells the process backend to start each node in its namespace.
    async fn build(&mut self, plan: &Plan) -> Result<()> {
        let fail = |reason: String| Error::Backend { backend: "netns", reason: format!("build the lab network: {reason}") };
        if plan.nodes.len() > names::MAX_NODES {
            return Err(fail(format!("{} nodes, at most {} fit on one bridge", plan.nodes.len(), names::MAX_NODES)));
        }
        let n = Names::new(&plan.run_id, self.slot);
        let mut nodes = Vec::new();
        for (i, node) in plan.nodes.iter().enumerate() {
            if node.addr.host != names::node_ip(self.slot, i) {
                return Err(fail(format!("node {} has address {}, not this backend's", node.name, node.addr.host)));
            }
            nodes.push((i, node.name.clone()));
        }
        owner::claim(&n.tag, &plan.run_id).map_err(fail)?;
        // From here on, teardown removes whatever part was built.
        self.names = Some(n.clone());
        self.nodes = nodes.iter().map(|(i, name)| (name.clone(), *i)).collect();
        let built = nodes.clone();
        let names = n.clone();
        tokio::task::spawn_blocking(move || net::build(&names, &built)).await.map_err(|e| fail(e.to_string()))?.map_err(fail)?;
        if plan.proxied() {
            let ns = |to: &str| n.node_ns(to);
            self.links = Some(LinkSet::start_with(plan, |to, addr| net::bind_in(&ns(to), addr)).await?);
        }
        let procs = self.procs_mut()?;
        procs.register(plan);
        procs.set_run_dir(&plan.layout.host_root);
        for (_, node) in &nodes {
            procs.set_prefix(node, vec!["ip".into(), "netns".into(), "exec".into(), n.node_ns(node)]);
        }
        Ok(())
    }

    fn procs_mut(&mut self) -> Result<&mut ProcessBackend> {
        self.procs.as_mut().ok_or_else(|| Error::Backend { backend: "netns", reason: "it was shut down".into() })
    }

    fn ip(&self, node: &str, op: &'static str) -> Result<String> {
        match self.nodes.get(node) {
            Some(i) => Ok(names::node_ip(self.slot, *i)),
            None => Err(Error::Fault { node: node.into(), op, reason: "no such node in this lab".into() }),
        }
    }

    fn ns(&self, node: &str, op: &'static str) -> Result<String> {
        self.namespace(node).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "no such node in this lab".into() })
    }

    /// Applies each node's current rules (from the partition and blackhole state) to the given nodes.
    async fn sync_rules(&self, nodes: BTreeSet<String>, op: &'static str) -> Result<()> {
        let mut jobs = Vec::new();
        for node in nodes {
            let peers = |set: &BTreeSet<Pair>| -> Result<Vec<String>> {
                set.iter().filter_map(|p| peer(p, &node)).map(|o| self.ip(o, op)).collect()
            };
            jobs.push((node.clone(), self.ns(&node, op)?, net::ruleset(&peers(&self.partition)?, &peers(&self.dark)?)));
        }
        self.run_jobs(op, jobs, |ns, script| net::apply_rules(ns, script)).await
    }

    /// Applies each node's current caps to the given nodes.
    async fn sync_shaping(&self, nodes: BTreeSet<String>, op: &'static str) -> Result<()> {
        let mut jobs = Vec::new();
        for node in nodes {
            let mut caps = Vec::new();
            for (p, rate) in &self.caps {
                if let Some(o) = peer(p, &node) {
                    caps.push((self.ip(o, op)?, *rate));
                }
            }
            jobs.push((node.clone(), self.ns(&node, op)?, caps));
        }
        self.run_jobs(op, jobs, |ns, caps| net::apply_shaping(ns, caps)).await
    }

    async fn run_jobs<T: Send + 'static>(
        &self,
        op: &'static str,
        jobs: Vec<(String, String, T)>,
        f: fn(&str, &T) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let done = tokio::task::spawn_blocking(move || {
            for (node, ns, arg) in &jobs {
                f(ns, arg).map_err(|reason| Error::Fault { node: node.clone(), op, reason })?;
            }
            Ok(())
        });
        done.await.map_err(|e| Error::Fault { node: "-".into(), op, reason: e.to_string() })?
    }

    fn check_nodes<'a>(&self, nodes: impl IntoIterator<Item = &'a str>, op: &'static str) -> Result<()> {
        for n in nodes {
            self.ip(n, op)?;
        }
        Ok(())
    }

    /// Network first (that kills the servers in their namespaces), then the process handles, which also
    /// release the slot: no later lab gets this slot while its addresses still exist.
    pub async fn teardown_all(mut self) {
        if let Some(l) = self.links.take() {
            l.shutdown().await;
        }
        if let Some(n) = self.names.take() {
            let _ = tokio::task::spawn_blocking(move || teardown(&n)).await;
        }
        if let Some(p) = self.procs.take() {
            p.shutdown_all().await;
        }
    }
}

#[async_trait]
impl Backend for NetnsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Netns
    }

    fn addr(&self, i: usize, _name: &str) -> NodeAddr {
        self.node_addr(i)
    }

    /// The namespaces share the host's filesystem.
    fn layout(&self, dir: &Path) -> Layout {
        Layout::same(dir)
    }

    /// Where each link's proxy listens, on the dialed node's address (see `links::addrs`).
    fn link_addrs(&self, t: &crate::topology::Topology) -> Option<BTreeMap<Pair, String>> {
        Some(links::addrs(t, |i, _| names::node_ip(self.slot, i)))
    }

    async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        self.build(plan).await
    }

    async fn start(&mut self, node: &str) -> Result<()> {
        self.procs_mut()?.spawn_node(node)
    }

    fn endpoint(&self, node: &NodePlan) -> Endpoint {
        ProcessBackend::endpoint_of(node)
    }

    fn exited(&mut self, node: &str) -> Option<String> {
        self.procs.as_mut()?.node_exit(node)
    }

    fn pid(&self, node: &str) -> Option<u32> {
        self.procs.as_ref()?.node_pid(node)
    }

    async fn shutdown(self: Box<Self>) {
        self.teardown_all().await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn kill(&mut self) -> Option<&mut dyn Kill> {
        self.procs.as_mut().map(|p| p as &mut dyn Kill)
    }

    /// The namespaces share the host's filesystem: the servers read the run directory itself.
    fn reload(&mut self) -> Option<&mut dyn crate::backend::Reload> {
        self.procs.as_mut().map(|p| p as &mut dyn crate::backend::Reload)
    }

    fn store(&mut self) -> Option<&mut dyn crate::backend::Store> {
        self.procs.as_mut().map(|p| p as &mut dyn crate::backend::Store)
    }

    fn upgrade(&mut self) -> Option<&mut dyn crate::backend::Upgrade> {
        self.procs.as_mut().map(|p| p as &mut dyn crate::backend::Upgrade)
    }

    async fn use_server(&mut self, node: &str, server: &NatsServer) -> Result<()> {
        match self.procs.as_mut() {
            Some(p) => {
                p.set_server(node, server);
                Ok(())
            }
            None => Err(Error::Backend { backend: "netns", reason: "the lab is gone".into() }),
        }
    }

    fn pause(&mut self) -> Option<&mut dyn Pause> {
        self.procs.as_mut().map(|p| p as &mut dyn Pause)
    }

    fn net(&mut self) -> Option<&mut dyn Net> {
        Some(self)
    }

    fn net_ref(&self) -> Option<&dyn Net> {
        Some(self)
    }

    /// Guests run in the host's namespace, which reaches every node over the host link.
    fn guests(&mut self) -> Option<&mut dyn Guests> {
        self.procs.as_mut().map(|p| p as &mut dyn Guests)
    }
}

/// The kernel's network: nftables partitions and blackholes, htb caps; latency through link proxies (no
/// netem here), where the lab has them.
#[async_trait]
impl Net for NetnsBackend {
    fn kinds(&self) -> Capabilities {
        let mut k: Capabilities = [Capability::Partition, Capability::Blackhole, Capability::Bandwidth].into_iter().collect();
        if self.links.is_some() {
            k.insert(Capability::Latency);
        }
        k
    }

    /// Makes `grudge` the lab's partition (replacing any earlier one): every pair it cuts drops each other's
    /// traffic, refuses new connections, and loses its open ones at once.
    async fn partition(&mut self, grudge: &Grudge) -> Result<()> {
        let cut = nemesis::cut_pairs(grudge);
        self.check_nodes(cut.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]), "partition")?;
        let old = std::mem::replace(&mut self.partition, cut.clone());
        let touched: BTreeSet<String> = old.iter().chain(&cut).flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
        self.sync_rules(touched, "partition").await?;
        let mut jobs = Vec::new();
        for (a, b) in &cut {
            jobs.push((a.clone(), self.ns(a, "partition")?, self.ip(b, "partition")?));
            jobs.push((b.clone(), self.ns(b, "partition")?, self.ip(a, "partition")?));
        }
        self.run_jobs("partition", jobs, |ns, peer| net::kill_connections(ns, peer)).await
    }

    /// Everything between `a` and `b` is dropped, both ways; their connections stay open (the half-open
    /// case only pings detect).
    async fn blackhole(&mut self, a: &str, b: &str) -> Result<()> {
        self.check_nodes([a, b], "blackhole")?;
        self.dark.insert(pair(a, b));
        self.sync_rules([a.to_string(), b.to_string()].into(), "blackhole").await
    }

    async fn restore(&mut self, a: &str, b: &str) -> Result<()> {
        self.check_nodes([a, b], "restore")?;
        self.dark.remove(&pair(a, b));
        self.sync_rules([a.to_string(), b.to_string()].into(), "restore").await
    }

    /// Caps traffic between `a` and `b` at `bytes_per_s`, each direction.
    async fn cap(&mut self, a: &str, b: &str, bytes_per_s: u64) -> Result<()> {
        self.check_nodes([a, b], "cap")?;
        self.caps.insert(pair(a, b), bytes_per_s);
        self.sync_shaping([a.to_string(), b.to_string()].into(), "cap").await
    }

    /// Latency (± jitter) on every link between `a` and `b`, through their proxies.
    async fn slow(&mut self, a: &str, b: &str, latency: std::time::Duration, jitter: std::time::Duration) -> Result<()> {
        let links = self.links.as_mut().ok_or_else(|| Error::Fault {
            node: format!("{a}/{b}"),
            op: "slow",
            reason: "this kernel has no netem: latency needs a lab brought up with link proxies".into(),
        })?;
        links.slow(a, b, latency, jitter).await
    }

    /// No cap, no latency.
    async fn fast(&mut self, a: &str, b: &str) -> Result<()> {
        self.check_nodes([a, b], "fast")?;
        if let Some(links) = &mut self.links {
            links.fast(a, b).await?;
        }
        self.caps.remove(&pair(a, b));
        self.sync_shaping([a.to_string(), b.to_string()].into(), "fast").await
    }


    fn counters(&self) -> BTreeMap<Pair, crate::net::Counters> {
        self.links.as_ref().map(LinkSet::link_counters).unwrap_or_default()
    }

    fn in_force(&self) -> Vec<String> {
        let mut out: Vec<String> = self.partition.iter().map(|(a, b)| format!("{a} ↔ {b} cut (nft)")).collect();
        out.extend(self.dark.iter().map(|(a, b)| format!("{a} ↔ {b} blackholed (nft)")));
        out.extend(self.caps.iter().map(|((a, b), r)| format!("{a} ↔ {b} capped at {r} B/s (htb)")));
        if let Some(l) = &self.links {
            out.extend(l.in_force());
        }
        out
    }
}

fn teardown(n: &Names) {
    let removed = net::remove_tag(&n.tag);
    if removed.failures.is_empty() {
        owner::release(&n.tag);
    } else {
        // The marker stays: once this process is gone, `natslab down --all` retries.
        tracing::warn!(tag = %n.tag, failures = ?removed.failures, "netns teardown left something behind");
    }
}

impl Drop for NetnsBackend {
    fn drop(&mut self) {
        if let Some(n) = self.names.take() {
            teardown(&n);
        }
        drop(self.procs.take());
    }
}
