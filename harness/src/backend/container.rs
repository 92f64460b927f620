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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use testcontainers::bollard::{self, ClientVersion, Docker};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig, PortBinding, PortMap,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    ListNetworksOptions, LogsOptions, PruneImagesOptions, RemoveContainerOptions, UploadToContainerOptions,
};

use super::links::{self, LinkSet, LinkSpec};
use super::{Endpoint, FaultKind, FaultSet};
use super::slot::{self, Slot};
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

/// The label goes first, so even intermediate layers of a failed build are recognisably ours.
const DOCKERFILE: &str = "FROM scratch\nLABEL natslab=1\nCOPY nats-server /nats-server\nENTRYPOINT [\"/nats-server\"]\n";

/// How long a single engine operation that should be quick may take before we call the engine broken.
const ENGINE_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------------------
// The engine connection

/// A connection to a Docker engine at the engine's own API version, and where its mapped ports are reached.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    host: String,
    version: (usize, usize),
    /// The address the harness dials for mapped ports.
    pub reach: String,
    /// The host address ports are bound to (`None`: all of them, for a remote engine).
    bind: Option<String>,
}

impl Engine {
    /// Connects to `DOCKER_HOST` (default: the local socket). Errors say why there is no usable engine.
    /// bollard 0.21 happens to send unversioned paths, which an engine serves at its own API version; should
    /// it send its own (1.53), an older engine refuses and names its newest, which is then used.
    pub async fn connect() -> Result<Engine, String> {
        let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let newest = bollard::API_DEFAULT_VERSION;
        let first = open(&host, newest)?;
        let version = match ask_version(&first, &host).await {
            Ok(()) => (newest.major_version, newest.minor_version),
            Err(e) => max_supported(&e).ok_or(e)?,
        };
        let docker = open(&host, &ClientVersion { major_version: version.0, minor_version: version.1 })?;
        ask_version(&docker, &host).await?;
        let (reach, bind) = match host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            Some(rest) => (rest.split(':').next().unwrap_or("127.0.0.1").to_string(), None),
            None => ("127.0.0.1".to_string(), Some("127.0.0.1".to_string())),
        };
        Ok(Engine { docker, host, version, reach, bind })
    }

    /// A fresh connection with the same settings, for use on another runtime (cleanup in `Drop`).
    fn reopen(&self) -> Result<Docker, String> {
        open(&self.host, &ClientVersion { major_version: self.version.0, minor_version: self.version.1 })
    }
}

/// Whether a Docker engine answers here, and if not why (tests skip on `Err`).
pub async fn engine_available() -> Result<(), String> {
    Engine::connect().await.map(|_| ())
}

fn open(host: &str, v: &ClientVersion) -> Result<Docker, String> {
    let r = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, v)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, 120, v)
    } else {
        return Err(format!("DOCKER_HOST={host}: only unix:// and tcp:// engines are supported"));
    };
    r.map_err(|e| format!("connect to the Docker engine at {host}: {e}"))
}

async fn ask_version(docker: &Docker, host: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(10), docker.version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("no usable Docker engine at {host}: {e}")),
        Err(_) => Err(format!("no usable Docker engine at {host}: no answer in 10 s")),
    }
}

/// The engine's newest API version, from its refusal of a newer client ("client version 1.53 is too new.
/// Maximum supported API version is 1.41").
fn max_supported(refusal: &str) -> Option<(usize, usize)> {
    let tail = refusal.split("Maximum supported API version is ").nth(1)?;
    let v: String = tail.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut it = v.trim_end_matches('.').split('.').map(|p| p.parse::<usize>().ok());
    Some((it.next()??, it.next()??))
}

fn engine_error(what: impl std::fmt::Display) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Run(format!("the container backend: {what}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// The image

/// Tags already hashed in this process, by (binary, size, mtime): hashing 19 MB is not free.
type TagCache = HashMap<(PathBuf, u64, Option<std::time::SystemTime>), String>;

/// `natslab/nats-server:<first 12 hex of sha256(binary)>`: the cache key is the binary itself.
pub fn image_tag(binary: &Path) -> Result<String> {
    static CACHE: OnceLock<Mutex<TagCache>> = OnceLock::new();
    let meta = std::fs::metadata(binary).map_err(Error::io(format!("read {}", binary.display())))?;
    let key = (binary.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(tag) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(tag);
    }
    let bytes = std::fs::read(binary).map_err(Error::io(format!("read {}", binary.display())))?;
    let hex: String = Sha256::digest(&bytes).iter().take(6).map(|b| format!("{b:02x}")).collect();
    let tag = format!("{IMAGE_REPO}:{hex}");
    if let Ok(mut c) = cache.lock() {
        c.insert(key, tag.clone());
    }
    Ok(tag)
}

/// The image to run: the one `NATSLAB_IMAGE` names, else ours for this binary, built if missing.
async fn ensure_image(engine: &Engine, server: &NatsServer, named: Option<String>) -> Result<String> {
    // One build at a time in this process: parallel labs would otherwise all build the same image.
    static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = BUILD.lock().await;
    match named {
        Some(image) => {
            if engine.docker.inspect_image(&image).await.is_err() {
                pull(engine, &image).await?;
            }
            Ok(image)
        }
        None => {
            let tag = image_tag(&server.path)?;
            if engine.docker.inspect_image(&tag).await.is_err() {
                build(engine, &server.path, &tag).await?;
            }
            Ok(tag)
        }
    }
}

async fn build(engine: &Engine, binary: &Path, tag: &str) -> Result<()> {
    let bin = tokio::fs::read(binary).await.map_err(Error::io(format!("read {}", binary.display())))?;
    let mut ctx = Tar::default();
    ctx.file("Dockerfile", 0o644, DOCKERFILE.as_bytes())?;
    ctx.file("nats-server", 0o755, &bin)?;
    let opts = BuildImageOptions {
        t: Some(tag.to_string()),
        labels: Some(HashMap::from([(LABEL_IMAGE.to_string(), "1".to_string())])),
        rm: true,
        forcerm: true,
        q: true,
        ..Default::default()
    };
    let mut progress = engine.docker.build_image(opts, None, Some(bollard::body_full(ctx.finish().into())));
    while let Some(item) = progress.next().await {
        let info = item.map_err(engine_error(format!("build image {tag}")))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(Error::Run(format!("the container backend: build image {tag}: {e}")));
        }
    }
    engine.docker.inspect_image(tag).await.map(|_| ()).map_err(engine_error(format!("build image {tag} (not there after the build)")))
}

async fn pull(engine: &Engine, image: &str) -> Result<()> {
    let opts = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
    let mut progress = engine.docker.create_image(Some(opts), None, None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| Error::Run(format!("the container backend: image {image} is not on this engine and could not be pulled: {e}")))?;
    }
    Ok(())
}

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
    slot: Slot,
    run: Option<Run>,
    nodes: BTreeMap<String, Node>,
    /// The link proxies, when the lab was brought up with them, and the links they serve.
    pub links: Option<LinkSet>,
    link_specs: Vec<LinkSpec>,
}

impl ContainerBackend {
    /// Connects to the engine and makes sure the image is there (built or pulled); `image` overrides ours.
    pub async fn new(server: &NatsServer, image: Option<String>) -> Result<ContainerBackend> {
        let engine = Engine::connect().await.map_err(|e| Error::Run(format!("the container backend: {e}")))?;
        let image = ensure_image(&engine, server, image).await?;
        let slot = slot::acquire()?;
        // A lab that died holding this slot may have left containers on its ports.
        remove_dead(&engine.docker, &format!("{LABEL_SLOT}={}", slot.index)).await;
        Ok(ContainerBackend { engine, image, slot, run: None, nodes: BTreeMap::new(), links: None, link_specs: Vec::new() })
    }

    /// As `new`, with the image named by `NATSLAB_IMAGE` if set.
    pub async fn from_env(server: &NatsServer) -> Result<ContainerBackend> {
        let named = std::env::var(IMAGE_ENV).ok().filter(|s| !s.trim().is_empty());
        ContainerBackend::new(server, named).await
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
    pub fn addr(_i: usize, name: &str) -> NodeAddr {
        NodeAddr { bind: "0.0.0.0".into(), host: name.into(), client: CLIENT_PORT, cluster: CLUSTER_PORT, leaf: LEAF_PORT, http: HTTP_PORT }
    }

    /// The containers see the files at the same paths as the host (they are copied there).
    pub fn layout(dir: &Path) -> Layout {
        Layout::same(dir)
    }

    pub fn faults(&self) -> FaultSet {
        let mut f: FaultSet = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition].into_iter().collect();
        if self.links.is_some() {
            f.extend([FaultKind::Blackhole, FaultKind::Latency, FaultKind::Bandwidth]);
        }
        f
    }

    /// Whether link proxies can be placed in the containers' namespaces: a local engine, and root to enter them.
    pub fn can_proxy(&self) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        self.engine.bind.is_some() && unsafe { nix::libc::geteuid() } == 0
    }

    /// Where each link's proxy listens: `<dialed node's name>:<LINK_PORT_BASE + dialer index>` (see
    /// `links::addrs`); none where proxies cannot be placed, so such a lab has direct links.
    pub fn link_addrs(&self, t: &crate::topology::Topology) -> BTreeMap<(String, String), String> {
        if !self.can_proxy() {
            return BTreeMap::new();
        }
        // Peers reach a container by its node name.
        links::addrs(t, |_, name| name.to_string())
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

    /// The link proxies, for network faults (a lab brought up with them).
    pub fn link_set(&mut self, op: &'static str) -> Result<&mut LinkSet> {
        self.links.as_mut().ok_or_else(|| links::no_links(op))
    }

    /// Where the harness reaches a node: its fixed host ports on the engine's host.
    pub fn endpoint(&self, node: &NodePlan) -> Endpoint {
        let p = self.nodes.get(&node.name).map(|n| n.ports).unwrap_or_default();
        let h = &self.engine.reach;
        Endpoint {
            client_url: format!("nats://{h}:{}", p.client),
            monitor_url: format!("http://{h}:{}", p.http),
            leaf_addr: format!("{h}:{}", p.leaf),
        }
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.nodes.get(node).and_then(|n| n.pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.values().filter_map(|n| n.pid).collect()
    }

    /// Creates the run's networks and every node's container (not started), with its files copied in.
    pub async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        if plan.nodes.len() > MAX_NODES {
            return Err(Error::Run(format!("the container backend: at most {MAX_NODES} nodes per lab, and {} has {}", plan.topology.name, plan.nodes.len())));
        }
        let network = format!("natslab-{}-peers", plan.run_id);
        // Recorded first: from here on, `Drop` sweeps whatever carries the run's label.
        self.run = Some(Run { id: plan.run_id.clone(), network: network.clone() });
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
            image: Some(self.image.clone()),
            cmd: Some(vec!["-c".into(), format!("{}/nats.conf", plan.layout.node_dir(node))]),
            hostname: Some(node.into()),
            labels: Some(labels),
            exposed_ports: Some(PORTS.iter().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(HostConfig {
                network_mode: Some(own_network.into()),
                port_bindings: Some(port_bindings(self.engine.bind.as_deref(), ports)),
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

    /// Starts (or restarts: same container, same files, same store) a node; a running one is left alone.
    pub async fn start(&mut self, node: &str) -> Result<()> {
        self.start_group(&[node.to_string()]).await
    }

    /// Starts several nodes at once (hubs must come up together, see the module doc).
    pub async fn start_group(&mut self, nodes: &[String]) -> Result<()> {
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
            let follower = self.follow_log(name)?;
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

    /// Appends the container's output to its log file, skipping what an earlier run of it already wrote;
    /// when the output ends and we did not stop it, records how the container ended.
    fn follow_log(&self, node: &str) -> Result<JoinHandle<()>> {
        let n = self.node(node, "follow log")?;
        let (docker, id, path) = (self.engine.docker.clone(), n.id.clone(), n.log.clone());
        let (written, stopping, exit) = (n.written.clone(), n.stopping.clone(), n.exit.clone());
        Ok(tokio::spawn(async move {
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
        }))
    }

    /// Whether a node's container has stopped on its own (how, if so).
    pub fn exited(&self, node: &str) -> Option<String> {
        self.nodes.get(node)?.exit.lock().ok()?.clone()
    }

    /// `docker kill -s KILL`: sudden death, nothing flushed. Returns once the container has stopped and its
    /// log is written out.
    pub async fn kill(&mut self, node: &str) -> Result<()> {
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

    pub async fn pause(&mut self, node: &str) -> Result<()> {
        let id = self.node(node, "pause")?.id.clone();
        self.engine.docker.pause_container(&id).await.map_err(|e| Error::Fault { node: node.into(), op: "pause", reason: e.to_string() })
    }

    pub async fn resume(&mut self, node: &str) -> Result<()> {
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
    pub async fn partition(&mut self, node: &str) -> Result<()> {
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
        let pid = self.pid(node).ok_or("it is not running")?;
        for (peer, ip) in addresses.iter().filter(|(p, _)| p.as_str() != node) {
            abort_connections(pid, ip).await?;
            if let Some(peer_pid) = self.pid(peer) {
                abort_connections(peer_pid, own).await?;
            }
        }
        Ok(())
    }

    /// Reconnects a partitioned node to the run's network under its name.
    pub async fn heal(&mut self, node: &str) -> Result<()> {
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
    pub async fn shutdown(mut self) {
        if let Some(l) = self.links.take() {
            l.shutdown().await;
        }
        let nodes = std::mem::take(&mut self.nodes);
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
    let out = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ss", "-K", "-t", "dst", dst])
        .output()
        .await
        .map_err(|e| format!("run nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nsenter -t {pid} -n ss -K dst {dst}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn alias(node: &str) -> EndpointSettings {
    EndpointSettings { aliases: Some(vec![node.to_string()]), ..Default::default() }
}

fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions { force: true, v: true, ..Default::default() }
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
    let mut tar = Tar::default();
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
    Ok(tar.finish())
}

/// Whether `text` names `path` as a whole (not as the prefix of a longer file name).
fn mentions(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let next = text[i + path.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
    })
}

/// Removes every container and network labeled with `run_id`.
pub async fn remove_run(docker: &Docker, run_id: &str) -> (usize, usize) {
    remove_labeled(docker, &format!("{LABEL_RUN}={run_id}")).await
}

/// Removes every container and network carrying `label` (`key=value`). Containers go first (a network with
/// endpoints cannot be removed); a second pass catches a container whose creation was still in flight.
async fn remove_labeled(docker: &Docker, label: &str) -> (usize, usize) {
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let mut removed = (0, 0);
    for _ in 0..2 {
        let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
        let ids: Vec<String> = docker.list_containers(Some(list)).await.unwrap_or_default().into_iter().filter_map(|c| c.id).collect();
        let results = futures::future::join_all(ids.iter().map(|id| docker.remove_container(id, Some(force_remove())))).await;
        removed.0 += results.iter().filter(|r| r.is_ok()).count();
        let nets = ListNetworksOptions { filters: Some(filter.clone()) };
        for net in docker.list_networks(Some(nets)).await.unwrap_or_default() {
            if let Some(name) = net.name {
                if docker.remove_network(&name).await.is_ok() {
                    removed.1 += 1;
                }
            }
        }
    }
    removed
}

/// What `remove_leftovers` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    pub containers: usize,
    pub networks: usize,
    pub images: usize,
}

/// For `natslab down --all`: removes every container and network of a run whose supervising natslab
/// process is gone (crashed, `kill -9`ed), and dangling layers of natslab image builds. `None` when there is
/// no Docker engine (nothing to clean).
pub async fn remove_leftovers() -> Option<Leftovers> {
    let engine = Engine::connect().await.ok()?;
    let docker = &engine.docker;
    let mut out = remove_dead(docker, LABEL_RUN).await;
    let dangling = HashMap::from([
        ("dangling".to_string(), vec!["true".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_IMAGE}=1")]),
    ]);
    if let Ok(r) = docker.prune_images(Some(PruneImagesOptions { filters: Some(dangling) })).await {
        out.images = r.images_deleted.map(|d| d.len()).unwrap_or(0);
    }
    Some(out)
}

/// Removes the containers, then the networks, carrying `label` (`key` or `key=value`) whose supervisor is
/// not alive. A live lab's are never touched.
async fn remove_dead(docker: &Docker, label: &str) -> Leftovers {
    let dead = |labels: Option<&HashMap<String, String>>| {
        let pid = labels.and_then(|l| l.get(LABEL_SUPERVISOR)).and_then(|p| p.parse::<u32>().ok());
        !pid.is_some_and(crate::runs::alive)
    };
    let mut out = Leftovers::default();
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
    let containers = docker.list_containers(Some(list)).await.unwrap_or_default();
    for id in containers.iter().filter(|c| dead(c.labels.as_ref())).filter_map(|c| c.id.as_ref()) {
        if docker.remove_container(id, Some(force_remove())).await.is_ok() {
            out.containers += 1;
        }
    }
    let nets = docker.list_networks(Some(ListNetworksOptions { filters: Some(filter) })).await.unwrap_or_default();
    for name in nets.iter().filter(|n| dead(n.labels.as_ref())).filter_map(|n| n.name.as_ref()) {
        if docker.remove_network(name).await.is_ok() {
            out.networks += 1;
        }
    }
    out
}

/// Containers and networks labeled with a run id, as (container names, network names): for tests and for
/// checking that a run left nothing behind.
pub async fn resources_of_run(run_id: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let engine = Engine::connect().await?;
    let docker = &engine.docker;
    let filter = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run_id}")])]);
    let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
    let containers = docker.list_containers(Some(list)).await.map_err(|e| e.to_string())?;
    let names = containers.into_iter().flat_map(|c| c.names.unwrap_or_default()).collect();
    let nets = docker.list_networks(Some(ListNetworksOptions { filters: Some(filter) })).await.map_err(|e| e.to_string())?;
    Ok((names, nets.into_iter().filter_map(|n| n.name).collect()))
}

// ---------------------------------------------------------------------------------------------------------
// A minimal tar writer (ustar): what the engine's copy and build APIs take, without another dependency.

#[derive(Default)]
struct Tar {
    out: Vec<u8>,
}

impl Tar {
    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = format!("{}/", path.trim_matches('/'));
        self.entry(&path, mode, 0, b'5')
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.entry(path.trim_start_matches('/'), mode, data.len() as u64, b'0')?;
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    fn entry(&mut self, path: &str, mode: u32, size: u64, kind: u8) -> Result<()> {
        let (prefix, name) = split_ustar(path).ok_or_else(|| Error::Run(format!("the container backend: path too long to copy into a container: {path}")))?;
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        octal(&mut h[136..148], now);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.out.extend_from_slice(&h);
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// ustar keeps a long path as prefix (≤ 155) + '/' + name (≤ 100).
fn split_ustar(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    let body = path.trim_end_matches('/');
    body.match_indices('/').map(|(i, _)| i).filter(|&i| i <= 155 && path.len() - i - 1 <= 100).map(|i| (&path[..i], &path[i + 1..])).next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_engines_newest_api_version_from_its_refusal() {
        let refusal = "Docker responded with status code 400: client version 1.53 is too new. Maximum supported API version is 1.41";
        assert_eq!(max_supported(refusal), Some((1, 41)));
        assert_eq!(max_supported("connection refused"), None);
    }

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

    #[test]
    fn tar_entries_keep_paths_modes_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/nodes/cim-prod-001/nats.conf", "/tmp/a-rather-long-runs-root".repeat(4));
        let mut t = Tar::default();
        t.dir("/x/secrets", 0o700).unwrap();
        t.file("/x/secrets/ca.pem", 0o600, b"pem").unwrap();
        t.file(&long, 0o640, &[7u8; 1000]).unwrap();
        t.file("Dockerfile", 0o644, DOCKERFILE.as_bytes()).unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, t.finish()).unwrap();
        let out = std::process::Command::new("tar").arg("-tvf").arg(&archive).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        assert!(lines[0].starts_with("drwx------") && lines[0].ends_with(" x/secrets/"), "{}", lines[0]);
        assert!(lines[1].starts_with("-rw-------") && lines[1].ends_with(" x/secrets/ca.pem"), "{}", lines[1]);
        assert!(lines[2].starts_with("-rw-r-----") && lines[2].ends_with(long.trim_start_matches('/')), "{}", lines[2]);
        assert!(lines[3].starts_with("-rw-r--r--") && lines[3].ends_with(" Dockerfile"), "{}", lines[3]);
        let x = std::process::Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dir.path()).output().unwrap();
        assert!(x.status.success());
        assert_eq!(std::fs::read(dir.path().join("x/secrets/ca.pem")).unwrap(), b"pem");
        assert_eq!(std::fs::read(dir.path().join(long.trim_start_matches('/'))).unwrap(), vec![7u8; 1000]);
    }

    #[test]
    fn paths_beyond_ustar_are_refused_not_truncated() {
        let mut t = Tar::default();
        assert!(t.file(&"a".repeat(300), 0o600, b"").is_err());
        assert!(t.file(&format!("{}/x", "b".repeat(200)), 0o600, b"").is_err(), "a prefix longer than 155");
    }
}
