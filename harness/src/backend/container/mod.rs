//! The container backend: each node a container on a Docker engine, all of a run's containers on one
//! network (`natslab-<run id>-peers`) where each answers to its node name. The harness reaches a node through
//! host ports mapped on 127.0.0.1, which live on a second network of the node's own
//! (`natslab-<run id>-host-<node>`, no peer on it: the engine isolates bridge networks from each other) so
//! that they, and the harness's open connections, survive a partition. The engine maps ports on the
//! network that provides the container's default gateway: the highest `GwPriority` (API 1.48+), else the
//! name that sorts first — `host-` sorts before `peers` either way.
//!
//! Host ports are fixed per lab slot (the process backend's race-free slots: an exclusive lock per lab) and
//! node, on 127.0.0.1 (in every server certificate): a restarted container comes back at the same ports, so
//! clients that know the cluster's URLs follow it through restarts as they do with processes. Ports the
//! engine picks itself would change on every restart.
//!
//! The engine is driven through the `bollard` client that testcontainers re-exports, following
//! testcontainers' conventions (everything labeled, removed on shutdown and on drop), but not through its
//! runner: that creates and starts a container in one step, on one network, while a node needs both its
//! networks before its server starts (peers resolve it from the first instant, and its host ports are on the
//! network a partition leaves alone), and engines below API 1.44 attach only one network at creation. So
//! `prepare` creates every container (files copied in) and `start_group` starts a group at once — which
//! JetStream needs: hubs started one after another (a container start takes ~0.4 s) nearly always miss the
//! first meta-leader election and wait out a Raft election timeout (seconds) for the next; started
//! together they mostly make it.
//!
//! - Image: by default `natslab/nats-server:<first 12 hex of the binary's sha256>`, built `FROM scratch` from the
//!   same static nats-server the process backend runs (no registry needed, comparable results), once per
//!   binary. Built with the engine's classic builder, not testcontainers' (which always uses BuildKit): the
//!   classic builder's leftovers are images carrying our label, BuildKit's cache carries none, so
//!   `down --all` could not tell ours from everyone else's. `NATSLAB_IMAGE` names another image instead
//!   (pulled if missing, where a registry exists).
//! - Files: each node's config and the secrets its config names (nothing of other nodes) are copied in, mode
//!   0600 in 0700 directories, at the paths the config uses. The layout is the run directory itself
//!   (`Layout::same`), so `nats-server -t` on the host checks exactly the files the containers get.
//! - Faults: kill (SIGKILL) / start (the same container: same config, store and host ports),
//!   pause/resume (cgroup freezer), partition/heal (disconnect from / reconnect to the run's network).
//!   A lab brought up with link proxies (a local engine, root) gets one per link, listening inside the
//!   dialed container's network namespace — peers still dial it by name, its certificate still matches —
//!   and forwarding to the container's address on its own network: partitions of any shape, blackholes,
//!   latency and bandwidth caps then go through the proxies. A container's namespace is new on every start,
//!   so its proxies are placed again after each (fresh links; a partition in force stays in force).
//! - Logs: each container's output is followed into `<run>/nodes/<node>/server.log`, as the process backend
//!   writes it.
//! - Cleanup: every container and network carries `natslab.run=<run id>`, `natslab.supervisor=<pid>` and
//!   `natslab.slot=<slot>`; `shutdown` and `Drop` remove the run's, `remove_leftovers` (for
//!   `natslab down --all`) those of dead supervisors plus dangling build layers, and a new lab first removes
//!   whatever a crashed one left on its slot (its ports).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use testcontainers::bollard;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig, PortBinding, PortMap,
};
use bollard::query_parameters::{CreateContainerOptions, KillContainerOptions, LogsOptions, UploadToContainerOptions};

mod archive;
mod cleanup;
mod engine;
mod image;

pub use cleanup::{remove_leftovers, remove_run, resources_of_run, Leftovers};
pub use engine::{engine_available, Engine};
pub use image::image_tag;

use archive::Archive;
use cleanup::force_remove;
use engine::engine_error;

use super::links::{self, LinkSet, LinkSpec};
use super::slot::{self, Slot};
use super::{Backend, BackendKind, Endpoint, Guests, Isolate, Kill, Net, Pause};
use crate::errors::{Error, Result};
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;

/// Every container and network of a run carries this label, valued with the run id.
pub const LABEL_RUN: &str = "natslab.run";
/// The pid of the natslab process that owns the run: when it is gone, the run is a leftover.
pub const LABEL_SUPERVISOR: &str = "natslab.supervisor";
pub const LABEL_NODE: &str = "natslab.node";
/// The lab slot whose host ports a container holds.
pub const LABEL_SLOT: &str = "natslab.slot";
/// Images natslab builds (and their intermediate layers) carry `natslab=1`.
pub const LABEL_IMAGE: &str = "natslab";
pub const IMAGE_REPO: &str = "natslab/nats-server";
/// Names another image to run instead of building one (`nats:2.12-alpine`).
pub const IMAGE_ENV: &str = "NATSLAB_IMAGE";

const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const LEAF_PORT: u16 = 7422;
const HTTP_PORT: u16 = 8222;
/// The listeners the harness dials (routes stay between containers): each a host port and a userland
/// proxy, which the engine sets up on every start.
const PORTS: [u16; 3] = [CLIENT_PORT, LEAF_PORT, HTTP_PORT];

/// Host ports: from `PORT_BASE`, `MAX_NODES * 3` per slot — below the ephemeral range, so no outgoing socket
/// ever holds one (10000..22000 for 250 slots).
const PORT_BASE: u16 = 10000;
pub const MAX_NODES: usize = 16;

/// How long a single engine operation that should be quick may take before we call the engine broken.
const ENGINE_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------------------
// The backend

/// Host ports of one running container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    pub leaf: u16,
    pub http: u16,
}

/// One node: its container (created by `prepare`) and what follows it.
struct Node {
    id: String,
    ports: Ports,
    pid: Option<u32>,
    log: PathBuf,
    /// Log frames already written to `log` (a restarted container replays its whole log).
    written: Arc<AtomicUsize>,
    follower: Option<JoinHandle<()>>,
    /// Set before we stop the container ourselves, so its end is not reported as an exit.
    stopping: Arc<AtomicBool>,
    /// How the container ended on its own, once it has.
    exit: Arc<Mutex<Option<String>>>,
    partitioned: bool,
}

impl Node {
    fn new(id: String, log: PathBuf) -> Node {
        Node {
            id,
            ports: Ports::default(),
            pid: None,
            log,
            written: Arc::new(AtomicUsize::new(0)),
            follower: None,
            stopping: Arc::new(AtomicBool::new(false)),
            exit: Arc::new(Mutex::new(None)),
            partitioned: false,
        }
    }
}

struct Run {
    id: String,
    network: String,
}

pub struct ContainerBackend {
    engine: Engine,
    image: String,
    /// Nodes that run another image than `image`: one image per nats-server version.
    images: BTreeMap<String, String>,
    slot: Slot,
    run: Option<Run>,
    nodes: BTreeMap<String, Node>,
    /// The link proxies, when the lab was brought up with them, and the links they serve.
    pub links: Option<LinkSet>,
    link_specs: Vec<LinkSpec>,
    /// Throwaway servers beside the lab: their containers, by name.
    guests: BTreeMap<String, Node>,
    /// The run directory, once prepared (guests keep their files under it).
    run_dir: Option<PathBuf>,
}

impl ContainerBackend {
    /// Connects to the engine and makes sure the image is there (built or pulled); `image` overrides ours.
    pub async fn new(server: &NatsServer, image: Option<String>) -> Result<ContainerBackend> {
        let engine = Engine::connect().await.map_err(|reason| Error::Backend { backend: "container", reason })?;
        let image = image::ensure_image(&engine, server, image.or_else(|| std::env::var(IMAGE_ENV).ok().filter(|i| !i.trim().is_empty()))).await?;
        let slot = slot::acquire()?;
        // A lab that died holding this slot may have left containers on its ports.
        cleanup::remove_dead(&engine.docker, &format!("{LABEL_SLOT}={}", slot.index)).await;
        Ok(ContainerBackend { engine, image, images: BTreeMap::new(), slot, run: None, nodes: BTreeMap::new(), links: None, link_specs: Vec::new(), guests: BTreeMap::new(), run_dir: None })
    }

    pub fn image(&self) -> &str {
        &self.image
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The run's network, once prepared.
    pub fn network(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.network.as_str())
    }

    /// The node's container id, once prepared.
    pub fn container_id(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(|n| n.id.as_str())
    }

    /// Every node listens on all interfaces of its container at the standard ports; peers dial it by name.
    pub fn node_addr(name: &str) -> NodeAddr {
        NodeAddr { bind: "0.0.0.0".into(), host: name.into(), client: CLIENT_PORT, cluster: CLUSTER_PORT, leaf: LEAF_PORT, http: HTTP_PORT }
    }

    /// Whether link proxies can be placed in the containers' namespaces: a local engine, and root to enter them.
    pub fn can_proxy(&self) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        self.engine.bind.is_some() && unsafe { nix::libc::geteuid() } == 0
    }

    /// Where each link's proxy listens: `<dialed node's name>:<LINK_PORT_BASE + dialer index>` (see
    /// `links::addrs`); none where proxies cannot be placed, so such a lab has direct links.
    pub fn proxy_addrs(&self, t: &crate::topology::Topology) -> Option<BTreeMap<(String, String), String>> {
        // Peers reach a container by its node name.
        self.can_proxy().then(|| links::addrs(t, |_, name| name.to_string()))
    }

    /// Places (again) the proxies in front of `node`, inside its network namespace, forwarding to its address
    /// on its own network (which partitions leave alone).
    async fn place_links(&mut self, node: &str) -> Result<()> {
        if self.links.is_none() {
            return Ok(());
        }
        let fail = |reason: String| Error::Fault { node: node.into(), op: "place link proxies", reason };
        let n = self.node(node, "place link proxies")?;
        let pid = n.pid.ok_or_else(|| fail("the container is not running".into()))?;
        let own = own_network(self.run.as_ref().map(|r| r.id.as_str()).unwrap_or_default(), node);
        let info = self.engine.docker.inspect_container(&n.id, None).await.map_err(|e| fail(e.to_string()))?;
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|nets| nets.get(&own).and_then(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| fail(format!("no address on {own}")))?;
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let specs: Vec<LinkSpec> = self.link_specs.iter().filter(|s| s.to == node).cloned().collect();
        let set = self.links.as_mut().expect("checked above");
        for spec in specs {
            let upstream = format!("{ip}:{}", spec.port).parse().map_err(|e| fail(format!("address {ip}: {e}")))?;
            let listen = std::net::SocketAddr::from(([0, 0, 0, 0], spec.listen_port()?));
            set.place(&spec, crate::net::bind_in_netns(&netns, listen), upstream)?;
        }
        Ok(())
    }

    /// Where the harness reaches a node: its fixed host ports on the engine's host.
    pub fn endpoint_of(&self, node: &NodePlan) -> Endpoint {
        let p = self.nodes.get(&node.name).map(|n| n.ports).unwrap_or_default();
        let h = &self.engine.reach;
        Endpoint {
            client_url: format!("nats://{h}:{}", p.client),
            monitor_url: format!("http://{h}:{}", p.http),
            leaf_addr: format!("{h}:{}", p.leaf),
        }
    }

    pub fn node_pid(&self, node: &str) -> Option<u32> {
        self.nodes.get(node).and_then(|n| n.pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.values().filter_map(|n| n.pid).collect()
    }

    /// Creates the run's networks and every node's container (not started), with its files copied in.
    async fn prepare_run(&mut self, plan: &Plan) -> Result<()> {
        if plan.nodes.len() > MAX_NODES {
            return Err(Error::Backend {
                backend: "container",
                reason: format!("at most {MAX_NODES} nodes per lab, and {} has {}", plan.topology.name, plan.nodes.len()),
            });
        }
        let network = format!("natslab-{}-peers", plan.run_id);
        // Recorded first: from here on, `Drop` sweeps whatever carries the run's label.
        self.run = Some(Run { id: plan.run_id.clone(), network: network.clone() });
        self.run_dir = Some(plan.layout.host_root.clone());
        self.create_network(&plan.run_id, &network).await?;
        let created = futures::future::join_all(plan.nodes.iter().enumerate().map(|(i, n)| self.create(plan, &network, &n.name, i))).await;
        for (i, (n, id)) in plan.nodes.iter().zip(created).enumerate() {
            let mut node = Node::new(id?, plan.layout.host_log(&n.name));
            node.ports = self.host_ports(i);
            self.nodes.insert(n.name.clone(), node);
        }
        if plan.proxied() {
            self.links = Some(LinkSet::default());
            self.link_specs = links::specs(plan);
        }
        Ok(())
    }

    /// Node `i`'s host ports: fixed by slot and index, so they survive restarts.
    fn host_ports(&self, i: usize) -> Ports {
        let first = PORT_BASE as usize + ((self.slot.index - 1) * MAX_NODES + i) * PORTS.len();
        let p = |k: usize| (first + k) as u16;
        Ports { client: p(0), leaf: p(1), http: p(2) }
    }

    fn labels(&self, run_id: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_RUN.to_string(), run_id.to_string()),
            (LABEL_SUPERVISOR.to_string(), std::process::id().to_string()),
            (LABEL_SLOT.to_string(), self.slot.index.to_string()),
        ])
    }

    async fn create_network(&self, run_id: &str, name: &str) -> Result<()> {
        let req = NetworkCreateRequest { name: name.into(), driver: Some("bridge".into()), labels: Some(self.labels(run_id)), ..Default::default() };
        self.engine.docker.create_network(req).await.map(|_| ()).map_err(engine_error(format!("create network {name}")))
    }

    /// A node's container: created on its own network (which carries its host ports), then joined to the run's
    /// network under its name, then given its files.
    async fn create(&self, plan: &Plan, network: &str, node: &str, i: usize) -> Result<String> {
        let fail = |reason: String| Error::NodeStart { node: node.into(), reason, log: plan.layout.host_log(node), tail: String::new() };
        let name = format!("natslab-{}-{node}", plan.run_id);
        let own = own_network(&plan.run_id, node);
        self.create_network(&plan.run_id, &own).await?;
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let body = self.container_config(plan, node, &own, self.host_ports(i));
        let id = self.engine.docker.create_container(Some(opts), body).await.map_err(|e| fail(format!("create container {name}: {e}")))?.id;
        let join = NetworkConnectRequest { container: id.clone(), endpoint_config: Some(alias(node)) };
        self.engine.docker.connect_network(network, join).await.map_err(|e| fail(format!("connect {name} to {network}: {e}")))?;
        let files = node_files(&plan.layout, node)?;
        let to = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        self.engine
            .docker
            .upload_to_container(&id, Some(to), bollard::body_full(files.into()))
            .await
            .map_err(|e| fail(format!("copy files into {name}: {e}")))?;
        Ok(id)
    }

    /// Our image running the node's config, the node's name as hostname, labeled; its listeners mapped to
    /// its host ports on 127.0.0.1 only.
    fn container_config(&self, plan: &Plan, node: &str, own_network: &str, ports: Ports) -> ContainerCreateBody {
        let mut labels = self.labels(&plan.run_id);
        labels.insert(LABEL_NODE.into(), node.into());
        ContainerCreateBody {
            image: Some(self.images.get(node).unwrap_or(&self.image).clone()),
            cmd: Some(vec!["-c".into(), format!("{}/nats.conf", plan.layout.node_dir(node))]),
            hostname: Some(node.into()),
            labels: Some(labels),
            exposed_ports: Some(PORTS.iter().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(HostConfig {
                network_mode: Some(own_network.into()),
                port_bindings: Some(port_bindings(self.engine.bind.as_deref(), ports)),
                // A local engine and root: the store is a directory of the run's, so a drill can destroy it.
                binds: self.store_on_host().then(|| {
                    let store = plan.layout.host_node_dir(node).join("store").display().to_string();
                    vec![format!("{store}:{store}")]
                }),
                // `docker logs` needs a driver it can read back, whatever the engine's default.
                log_config: Some(HostConfigLogConfig { typ: Some("json-file".into()), config: None }),
                ..Default::default()
            }),
            // The gateway, hence where the host ports live (see the module doc).
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(own_network.to_string(), EndpointSettings { gw_priority: Some(1), ..Default::default() })])),
            }),
            ..Default::default()
        }
    }

    /// Whether nodes keep their JetStream store in the run directory (bind-mounted): the engine is local
    /// and natslab is root, so it can remove what the servers wrote there.
    fn store_on_host(&self) -> bool {
        self.engine.bind.is_some() && unsafe { nix::libc::geteuid() } == 0
    }

    fn node(&self, node: &str, op: &'static str) -> Result<&Node> {
        self.nodes.get(node).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "no such node".into() })
    }

    fn node_mut(&mut self, node: &str, op: &'static str) -> Result<&mut Node> {
        self.nodes.get_mut(node).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "no such node".into() })
    }

    async fn running(&self, id: &str) -> bool {
        let info = self.engine.docker.inspect_container(id, None).await.ok();
        info.and_then(|i| i.state).and_then(|s| s.running).unwrap_or(false)
    }

    /// Starts several nodes at once (hubs must come up together, see the module doc); a running one is left
    /// alone. A restart is the same container: same files, same store.
    async fn start_nodes(&mut self, nodes: &[String]) -> Result<()> {
        let mut todo = Vec::new();
        for name in nodes {
            let n = self.node(name, "start")?;
            if self.running(&n.id).await {
                continue;
            }
            n.stopping.store(false, Ordering::SeqCst);
            if let Ok(mut e) = n.exit.lock() {
                *e = None;
            }
            todo.push((name.as_str(), n.id.clone(), n.log.clone()));
        }
        let docker = &self.engine.docker;
        let started = futures::future::join_all(todo.iter().map(|(_, id, _)| docker.start_container(id, None))).await;
        for ((name, _, log), r) in todo.iter().zip(started) {
            r.map_err(|e| Error::NodeStart { node: name.to_string(), reason: format!("start container: {e}"), log: log.clone(), tail: String::new() })?;
        }
        for (name, _, _) in todo {
            self.refresh(name).await?;
            let follower = follow_log(&self.engine, self.node(name, "follow log")?);
            self.node_mut(name, "start")?.follower = Some(follower);
            self.place_links(name).await?;
        }
        Ok(())
    }

    /// Re-reads a container's pid (new on every start) and host ports (as the engine reports them).
    async fn refresh(&mut self, node: &str) -> Result<()> {
        let id = self.node(node, "inspect")?.id.clone();
        let info = self.engine.docker.inspect_container(&id, None).await.map_err(engine_error(format!("inspect {node}")))?;
        let pid = info.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0).map(|p| p as u32);
        let map = info.network_settings.and_then(|s| s.ports).unwrap_or_default();
        let n = self.node_mut(node, "inspect")?;
        n.pid = pid;
        // A container that already died has no ports: keep the old ones (they refuse), readiness reports it.
        if let Some(p) = ports_of(&map) {
            n.ports = p;
        }
        Ok(())
    }

    /// Whether a node's container has stopped on its own (how, if so).
    pub fn node_exit(&self, node: &str) -> Option<String> {
        self.nodes.get(node)?.exit.lock().ok()?.clone()
    }

    /// `docker kill -s KILL`: sudden death, nothing flushed. Returns once the container has stopped and its
    /// log is written out.
    async fn kill_node(&mut self, node: &str) -> Result<()> {
        let id = self.node(node, "kill")?.id.clone();
        let fault = |reason: String| Error::Fault { node: node.into(), op: "kill", reason };
        if !self.running(&id).await {
            return Err(fault("not running".into()));
        }
        self.node(node, "kill")?.stopping.store(true, Ordering::SeqCst);
        let kill = KillContainerOptions { signal: "SIGKILL".into() };
        if let Err(e) = self.engine.docker.kill_container(&id, Some(kill.clone())).await {
            // Some engines refuse to signal a frozen container: thaw it and kill at once.
            if !e.to_string().contains("paused") {
                return Err(fault(e.to_string()));
            }
            self.engine.docker.unpause_container(&id).await.map_err(|e| fault(e.to_string()))?;
            self.engine.docker.kill_container(&id, Some(kill)).await.map_err(|e| fault(e.to_string()))?;
        }
        self.wait_stopped(&id).await.map_err(fault)?;
        // Its proxies listened in the namespace that just went away; `start` places new ones.
        if let Some(l) = &mut self.links {
            l.remove(node);
        }
        let n = self.node_mut(node, "kill")?;
        n.pid = None;
        if let Some(f) = n.follower.take() {
            let _ = tokio::time::timeout(ENGINE_WAIT, f).await;
        }
        Ok(())
    }

    async fn wait_stopped(&self, id: &str) -> Result<(), String> {
        let deadline = Instant::now() + ENGINE_WAIT;
        while self.running(id).await {
            if Instant::now() > deadline {
                return Err(format!("still running {} s after SIGKILL", ENGINE_WAIT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn pause_node(&mut self, node: &str) -> Result<()> {
        let id = self.node(node, "pause")?.id.clone();
        self.engine.docker.pause_container(&id).await.map_err(|e| Error::Fault { node: node.into(), op: "pause", reason: e.to_string() })
    }

    async fn resume_node(&mut self, node: &str) -> Result<()> {
        let id = self.node(node, "resume")?.id.clone();
        self.engine.docker.unpause_container(&id).await.map_err(|e| Error::Fault { node: node.into(), op: "resume", reason: e.to_string() })
    }

    fn network_for(&self, node: &str, op: &'static str) -> Result<String> {
        self.network().map(String::from).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "the lab is not prepared".into() })
    }

    /// Cuts the node off the run's network: no peer reaches it, it reaches no peer. The harness still does,
    /// open connections included (they go through the node's own network). Open connections between the
    /// node and its peers are aborted on both ends, as the other backends' cuts do: left alone they would
    /// linger until pings time out (minutes, for routes).
    async fn disconnect(&mut self, node: &str) -> Result<()> {
        let (network, id) = (self.network_for(node, "partition")?, self.node(node, "partition")?.id.clone());
        let addresses = self.addresses_on(&network).await;
        let req = NetworkDisconnectRequest { container: id, force: Some(true) };
        self.engine
            .docker
            .disconnect_network(&network, req)
            .await
            .map_err(|e| Error::Fault { node: node.into(), op: "partition", reason: e.to_string() })?;
        self.node_mut(node, "partition")?.partitioned = true;
        if let Err(e) = self.abort_links(node, &addresses).await {
            tracing::warn!(node, "partition: open connections with peers stay until pings time out: {e}");
        }
        Ok(())
    }

    /// Each node's address on `network`, where it has one.
    async fn addresses_on(&self, network: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, n) in &self.nodes {
            let info = self.engine.docker.inspect_container(&n.id, None).await.ok();
            let networks = info.and_then(|i| i.network_settings).and_then(|s| s.networks).unwrap_or_default();
            if let Some(ip) = networks.get(network).and_then(|e| e.ip_address.clone()).filter(|ip| !ip.is_empty()) {
                out.insert(name.clone(), ip);
            }
        }
        out
    }

    /// `ss -K` in the network namespaces of `node` and of each running peer (through `nsenter`: needs root
    /// and a local engine), for the connections between them.
    async fn abort_links(&self, node: &str, addresses: &BTreeMap<String, String>) -> Result<(), String> {
        let own = addresses.get(node).ok_or("it had no address on the run's network")?;
        let pid = self.node_pid(node).ok_or("it is not running")?;
        for (peer, ip) in addresses.iter().filter(|(p, _)| p.as_str() != node) {
            abort_connections(pid, ip).await?;
            if let Some(peer_pid) = self.node_pid(peer) {
                abort_connections(peer_pid, own).await?;
            }
        }
        Ok(())
    }

    /// Reconnects a partitioned node to the run's network under its name.
    async fn reconnect(&mut self, node: &str) -> Result<()> {
        let (network, id) = (self.network_for(node, "heal")?, self.node(node, "heal")?.id.clone());
        let req = NetworkConnectRequest { container: id, endpoint_config: Some(alias(node)) };
        self.engine
            .docker
            .connect_network(&network, req)
            .await
            .map_err(|e| Error::Fault { node: node.into(), op: "heal", reason: e.to_string() })?;
        self.node_mut(node, "heal")?.partitioned = false;
        Ok(())
    }

    /// Nodes cut off by `partition` and not healed yet.
    pub fn partitioned(&self) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.partitioned).map(|(k, _)| k.clone()).collect()
    }

    /// Removes every container and network of the run, after letting the logs drain.
    async fn remove_all(mut self) {
        if let Some(l) = self.links.take() {
            l.shutdown().await;
        }
        let mut nodes = std::mem::take(&mut self.nodes);
        nodes.extend(std::mem::take(&mut self.guests).into_iter().map(|(n, g)| (format!("guest {n}"), g)));
        let Some(run) = self.run.take() else { return };
        for n in nodes.values() {
            n.stopping.store(true, Ordering::SeqCst);
        }
        let docker = &self.engine.docker;
        futures::future::join_all(nodes.values().map(|n| docker.remove_container(&n.id, Some(force_remove())))).await;
        for f in nodes.into_values().filter_map(|n| n.follower) {
            let _ = tokio::time::timeout(ENGINE_WAIT, f).await;
        }
        remove_run(docker, &run.id).await;
    }
}

#[async_trait]
impl Backend for ContainerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Container
    }

    /// Every node listens on all interfaces of its container at the standard ports; peers dial it by name.
    fn addr(&self, _i: usize, name: &str) -> NodeAddr {
        ContainerBackend::node_addr(name)
    }

    /// The containers see the files at the same paths as the host (they are copied there).
    fn layout(&self, dir: &Path) -> Layout {
        Layout::same(dir)
    }

    fn link_addrs(&self, t: &crate::topology::Topology) -> Option<BTreeMap<(String, String), String>> {
        self.proxy_addrs(t)
    }

    async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        self.prepare_run(plan).await
    }

    /// A node on another version gets the image built from that binary (before `prepare`: a container's
    /// image is fixed when it is created).
    async fn use_server(&mut self, node: &str, server: &NatsServer) -> Result<()> {
        if self.run.is_some() {
            return Err(Error::Backend { backend: "container", reason: format!("{node}'s container exists: its image cannot change (upgrades need the process or netns backend)") });
        }
        let image = image::ensure_image(&self.engine, server, None).await?;
        self.images.insert(node.to_string(), image);
        Ok(())
    }

    async fn start(&mut self, node: &str) -> Result<()> {
        self.start_nodes(&[node.to_string()]).await
    }

    async fn start_group(&mut self, nodes: &[String]) -> Result<()> {
        self.start_nodes(nodes).await
    }

    fn endpoint(&self, node: &NodePlan) -> Endpoint {
        self.endpoint_of(node)
    }

    fn exited(&mut self, node: &str) -> Option<String> {
        self.node_exit(node)
    }

    fn pid(&self, node: &str) -> Option<u32> {
        self.node_pid(node)
    }

    async fn shutdown(self: Box<Self>) {
        (*self).remove_all().await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn kill(&mut self) -> Option<&mut dyn Kill> {
        Some(self)
    }

    fn pause(&mut self) -> Option<&mut dyn Pause> {
        Some(self)
    }

    /// Without link proxies a container can only be cut off the run's network as a whole.
    fn isolate(&mut self) -> Option<&mut dyn Isolate> {
        if self.links.is_some() {
            None
        } else {
            Some(self)
        }
    }

    fn net(&mut self) -> Option<&mut dyn Net> {
        self.links.as_mut().map(|l| l as &mut dyn Net)
    }

    fn net_ref(&self) -> Option<&dyn Net> {
        self.links.as_ref().map(|l| l as &dyn Net)
    }

    fn guests(&mut self) -> Option<&mut dyn Guests> {
        Some(self)
    }

    fn reload(&mut self) -> Option<&mut dyn super::Reload> {
        Some(self)
    }

    fn store(&mut self) -> Option<&mut dyn super::Store> {
        if self.store_on_host() {
            Some(self)
        } else {
            None
        }
    }
}

/// The store is bind-mounted from the run directory (`store_on_host`).
#[async_trait]
impl super::Store for ContainerBackend {
    async fn wipe(&mut self, node: &str, layout: &Layout) -> Result<()> {
        super::wipe_host_store(node, layout)
    }
}

/// A container holds copies of its node's files: a reload needs them copied in again.
#[async_trait]
impl super::Reload for ContainerBackend {
    async fn refresh_files(&mut self, node: &str, layout: &Layout) -> Result<()> {
        let id = self.node(node, "reload")?.id.clone();
        let files = node_files(layout, node)?;
        let to = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        self.engine
            .docker
            .upload_to_container(&id, Some(to), bollard::body_full(files.into()))
            .await
            .map_err(|e| Error::Fault { node: node.into(), op: "reload", reason: format!("copy its files in again: {e}") })
    }
}

#[async_trait]
impl Kill for ContainerBackend {
    async fn kill(&mut self, node: &str) -> Result<()> {
        self.kill_node(node).await
    }
}

#[async_trait]
impl Pause for ContainerBackend {
    async fn pause(&mut self, node: &str) -> Result<()> {
        self.pause_node(node).await
    }

    async fn resume(&mut self, node: &str) -> Result<()> {
        self.resume_node(node).await
    }
}

#[async_trait]
impl Isolate for ContainerBackend {
    async fn isolate(&mut self, node: &str) -> Result<()> {
        self.disconnect(node).await
    }

    async fn rejoin(&mut self, node: &str) -> Result<()> {
        self.reconnect(node).await
    }
}

/// A guest is a container on the run's network (peers' names resolve there), with its files copied in at
/// the paths its settings name.
#[async_trait]
impl Guests for ContainerBackend {
    async fn start_guest(&mut self, name: &str, settings: &serde_json::Value, files: &[(String, String)]) -> Result<PathBuf> {
        let run = self.run.as_ref().ok_or_else(|| Error::Fault { node: name.into(), op: "guest", reason: "the lab is not prepared".into() })?;
        let (run_id, network) = (run.id.clone(), run.network.clone());
        let dir = self.run_dir.clone().ok_or_else(|| Error::Fault { node: name.into(), op: "guest", reason: "the lab is not prepared".into() })?;
        let gdir = dir.join("guests").join(name);
        crate::files::mkdir(&gdir)?;
        let conf = format!("{}/guests/{name}/nats.conf", dir.display());
        let mut tar = Archive::new();
        tar.dir(&format!("{}/guests/{name}", dir.display()), 0o700)?;
        tar.file(&conf, 0o600, crate::render::to_conf(settings).as_bytes())?;
        for (f, text) in files {
            tar.file(&format!("{}/guests/{name}/{f}", dir.display()), 0o600, text.as_bytes())?;
        }
        let fail = |reason: String| Error::NodeStart { node: name.into(), reason, log: gdir.join("server.log"), tail: String::new() };
        let mut labels = self.labels(&run_id);
        labels.insert(LABEL_NODE.into(), format!("guest-{name}"));
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(vec!["-c".into(), conf]),
            hostname: Some(name.into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network.clone()),
                log_config: Some(HostConfigLogConfig { typ: Some("json-file".into()), config: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: Some(format!("natslab-{run_id}-guest-{name}")), ..Default::default() };
        let id = self.engine.docker.create_container(Some(opts), body).await.map_err(|e| fail(format!("create container: {e}")))?.id;
        let mut node = Node::new(id.clone(), gdir.join("server.log"));
        let to = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        let uploaded = self.engine.docker.upload_to_container(&id, Some(to), bollard::body_full(tar.finish()?.into())).await;
        let started = match uploaded {
            Ok(()) => self.engine.docker.start_container(&id, None).await.map_err(|e| fail(format!("start container: {e}"))),
            Err(e) => Err(fail(format!("copy files in: {e}"))),
        };
        if let Err(e) = started {
            let _ = self.engine.docker.remove_container(&id, Some(force_remove())).await;
            return Err(e);
        }
        node.follower = Some(follow_log(&self.engine, &node));
        let log = node.log.clone();
        self.guests.insert(name.to_string(), node);
        Ok(log)
    }

    fn guest_exited(&mut self, name: &str) -> Option<String> {
        self.guests.get(name)?.exit.lock().ok()?.clone()
    }

    async fn stop_guest(&mut self, name: &str) {
        if let Some(g) = self.guests.remove(name) {
            g.stopping.store(true, Ordering::SeqCst);
            let _ = self.engine.docker.remove_container(&g.id, Some(force_remove())).await;
            if let Some(f) = g.follower {
                let _ = tokio::time::timeout(ENGINE_WAIT, f).await;
            }
        }
    }
}

impl Drop for ContainerBackend {
    /// Best effort when `shutdown` was not called (an error, a panic, a cancelled start): remove everything
    /// labeled with the run — which also catches a container whose creation was cut short — on a thread of
    /// its own, so it works from any runtime or none.
    fn drop(&mut self) {
        let Some(run) = self.run.take() else { return };
        for n in self.nodes.values() {
            n.stopping.store(true, Ordering::SeqCst);
        }
        let Ok(docker) = self.engine.reopen() else { return };
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(remove_run(&docker, &run.id));
        });
        let _ = cleanup.join();
    }
}

/// Appends the container's output to its log file, skipping what an earlier run of it already wrote;
/// when the output ends and we did not stop it, records how the container ended.
fn follow_log(engine: &Engine, n: &Node) -> JoinHandle<()> {
    let (docker, id, path) = (engine.docker.clone(), n.id.clone(), n.log.clone());
    let (written, stopping, exit) = (n.written.clone(), n.stopping.clone(), n.exit.clone());
    tokio::spawn(async move {
        let skip = written.load(Ordering::SeqCst);
        let Ok(mut file) = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await else { return };
        let opts = LogsOptions { follow: true, stdout: true, stderr: true, tail: "all".into(), ..Default::default() };
        let mut frames = docker.logs(&id, Some(opts));
        let mut seen = 0usize;
        while let Some(Ok(frame)) = frames.next().await {
            seen += 1;
            if seen > skip {
                let _ = file.write_all(&frame.into_bytes()).await;
                written.store(seen, Ordering::SeqCst);
            }
        }
        let _ = file.flush().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let state = docker.inspect_container(&id, None).await.ok().and_then(|i| i.state);
        if let Some(s) = state.filter(|s| s.running != Some(true)) {
            let why = format!("the container exited with code {}", s.exit_code.unwrap_or(-1));
            if let Ok(mut e) = exit.lock() {
                *e = Some(why);
            }
        }
    })
}

/// A node's own network: it carries the node's host ports, and partitions leave it alone.
fn own_network(run_id: &str, node: &str) -> String {
    format!("natslab-{run_id}-host-{node}")
}

fn port_bindings(bind: Option<&str>, ports: Ports) -> PortMap {
    let host = [ports.client, ports.leaf, ports.http];
    PORTS
        .iter()
        .zip(host)
        .map(|(p, h)| (format!("{p}/tcp"), Some(vec![PortBinding { host_ip: bind.map(String::from), host_port: Some(h.to_string()) }])))
        .collect()
}

/// Aborts the TCP connections to `dst` in the network namespace of process `pid`.
async fn abort_connections(pid: u32, dst: &str) -> Result<(), String> {
    let args = vec!["-t".to_string(), pid.to_string(), "-n".into(), "ss".into(), "-K".into(), "-t".into(), "dst".into(), dst.to_string()];
    tokio::task::spawn_blocking(move || crate::tool::run_ok("nsenter", args, None))
        .await
        .map_err(|e| format!("run nsenter: {e}"))?
        .map(|_| ())
}

fn alias(node: &str) -> EndpointSettings {
    EndpointSettings { aliases: Some(vec![node.to_string()]), ..Default::default() }
}


/// The host ports of a container's listeners, when all are mapped.
fn ports_of(map: &PortMap) -> Option<Ports> {
    let port = |p: u16| -> Option<u16> {
        map.get(&format!("{p}/tcp"))?.as_ref()?.iter().find_map(|b| b.host_port.as_deref()?.parse().ok())
    };
    Some(Ports { client: port(CLIENT_PORT)?, leaf: port(LEAF_PORT)?, http: port(HTTP_PORT)? })
}

/// What a node's container gets, as a tar to unpack at `/`: its config and the secrets the config names
/// (nothing of other nodes), 0600 in 0700 directories, at the paths the servers see.
fn node_files(l: &Layout, node: &str) -> Result<Vec<u8>> {
    let host_config = l.host_config(node);
    let config = std::fs::read_to_string(&host_config).map_err(Error::io(format!("read {}", host_config.display())))?;
    let mut tar = Archive::new();
    let node_dir = l.node_dir(node);
    for d in [l.root.clone(), format!("{}/nodes", l.root), node_dir.clone(), format!("{}/secrets", l.root)] {
        tar.dir(&d, 0o700)?;
    }
    tar.file(&format!("{node_dir}/nats.conf"), 0o600, config.as_bytes())?;
    let mut names: Vec<String> = std::fs::read_dir(l.host_root.join("secrets"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    names.sort();
    for name in names.iter().filter(|n| mentions(&config, &l.secret(n))) {
        let path = l.host_secret(name);
        let bytes = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        tar.file(&l.secret(name), 0o600, &bytes)?;
    }
    tar.finish()
}

/// Whether `text` names `path` as a whole (not as the prefix of a longer file name).
fn mentions(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let next = text[i + path.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_host_ports_of_the_listeners() {
        let bind = |p: &str| Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(p.into()) }]);
        let mut map: PortMap = HashMap::new();
        for (c, h) in [("4222/tcp", "32771"), ("7422/tcp", "32773"), ("8222/tcp", "32774")] {
            map.insert(c.into(), bind(h));
        }
        assert_eq!(ports_of(&map), Some(Ports { client: 32771, leaf: 32773, http: 32774 }));
        map.insert("8222/tcp".into(), None);
        assert_eq!(ports_of(&map), None, "a listener without a mapping");
    }

    #[test]
    fn a_secret_is_copied_only_where_the_config_names_it() {
        let conf = "cert_file: \"/r/secrets/hub-1-cert.pem\"\nkey_file: \"/r/secrets/hub-1-key.pem\"";
        assert!(mentions(conf, "/r/secrets/hub-1-cert.pem"));
        assert!(!mentions(conf, "/r/secrets/hub-1"), "a prefix of another file name");
        assert!(!mentions(conf, "/r/secrets/hub-2-cert.pem"));
    }
}
