//! The container backend: each node a container on a Docker engine, started through testcontainers; all of
//! a run's containers on one network (`natslab-<run id>`) where each answers to its node name (its
//! hostname). The harness reaches them through host ports mapped on 127.0.0.1, which live on a second,
//! per-node network (`natslab-<run id>-<node>-host`) so that they survive a partition. What testcontainers
//! has no verb for (labeled networks, SIGKILL, network disconnect/connect, following logs across restarts,
//! label sweeps) goes through the `bollard` client it re-exports.
//!
//! - Image: by default `natslab/nats-server:<first 12 hex of the binary's sha256>`, built `FROM scratch` from the
//!   same static nats-server the process backend runs (no registry needed, comparable results), once per
//!   binary. Built with the engine's classic builder, not testcontainers' (which always uses BuildKit): the
//!   classic builder's leftovers are images carrying our label, BuildKit's cache carries none, so
//!   `down --all` could not tell ours from everyone else's. `NATSLAB_IMAGE` names another image instead
//!   (pulled if missing, where a registry exists).
//! - Files: each node's config and the secrets its config names are copied in, mode 0600, at the paths the
//!   config uses. The layout is the run directory itself (`Layout::same`), so `nats-server -t` on the host
//!   checks exactly the files the containers get.
//! - Faults: kill (SIGKILL) / start (the same container: same config and store; its host ports change),
//!   pause/resume (cgroup freezer), partition/heal (disconnect from / reconnect to the run's network: the node
//!   is cut off from every peer and keeps its host ports — a container's only network can't be left without
//!   losing them, hence the per-node one, which no peer shares: the engine isolates bridge networks).
//! - Logs: each container's output is followed into `<run>/nodes/<node>/server.log`, as the process backend
//!   writes it.
//! - Cleanup: every container and network carries `natslab.run=<run id>` and `natslab.supervisor=<pid>`;
//!   `shutdown` and `Drop` remove the run's, `remove_leftovers` (for `natslab down --all`) those of dead
//!   supervisors plus dangling build layers.

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
    EndpointSettings, HostConfigLogConfig, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, PortBinding, PortMap,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    PruneImagesOptions, RemoveContainerOptions,
};
use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, CopyTargetOptions, GenericImage, ImageExt};

use super::{Endpoint, FaultKind, FaultSet};
use crate::errors::{Error, Result};
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;

/// Every container and network of a run carries this label, valued with the run id.
pub const LABEL_RUN: &str = "natslab.run";
/// The pid of the natslab process that owns the run: when it is gone, the run is a leftover.
pub const LABEL_SUPERVISOR: &str = "natslab.supervisor";
pub const LABEL_NODE: &str = "natslab.node";
/// Images natslab builds (and their intermediate layers) carry `natslab=1`.
pub const LABEL_IMAGE: &str = "natslab";
pub const IMAGE_REPO: &str = "natslab/nats-server";
/// Names another image to run instead of building one (`nats:2.12-alpine`).
pub const IMAGE_ENV: &str = "NATSLAB_IMAGE";

const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const LEAF_PORT: u16 = 7422;
const HTTP_PORT: u16 = 8222;
const PORTS: [u16; 4] = [CLIENT_PORT, CLUSTER_PORT, LEAF_PORT, HTTP_PORT];

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

    pub fn api_version(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
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
    move |e| Error::Run(format!("container backend: {what}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// The image

/// `natslab/nats-server:<first 12 hex of sha256(binary)>`: the cache key is the binary itself.
pub fn image_tag(binary: &Path) -> Result<String> {
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, u64, Option<std::time::SystemTime>), String>>> = OnceLock::new();
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
            return Err(Error::Run(format!("container backend: build image {tag}: {e}")));
        }
    }
    engine.docker.inspect_image(tag).await.map(|_| ()).map_err(engine_error(format!("build image {tag} (not there after the build)")))
}

async fn pull(engine: &Engine, image: &str) -> Result<()> {
    let opts = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
    let mut progress = engine.docker.create_image(Some(opts), None, None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| Error::Run(format!("container backend: image {image} is not on this engine and could not be pulled: {e}")))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// The backend

/// Host ports of one running container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    pub cluster: u16,
    pub leaf: u16,
    pub http: u16,
}

/// One node: what its container is made of, the container once started, and what follows it.
struct Node {
    /// The node's own network, which carries its host ports (no peer is on it).
    host_network: String,
    /// The config's path inside the container.
    config: String,
    /// (path inside the container, file on the host) for the config and the secrets it names.
    copies: Vec<(String, PathBuf)>,
    container: Option<ContainerAsync<GenericImage>>,
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
    fn id(&self) -> Option<&str> {
        self.container.as_ref().map(|c| c.id())
    }
}

struct Run {
    id: String,
    network: String,
}

pub struct ContainerBackend {
    engine: Engine,
    image: String,
    run: Option<Run>,
    nodes: BTreeMap<String, Node>,
}

impl ContainerBackend {
    /// Connects to the engine and makes sure the image is there (built or pulled); `image` overrides ours.
    pub async fn new(server: &NatsServer, image: Option<String>) -> Result<ContainerBackend> {
        let engine = Engine::connect().await.map_err(|e| Error::Run(format!("the container backend needs a Docker engine: {e}")))?;
        let image = ensure_image(&engine, server, image).await?;
        Ok(ContainerBackend { engine, image, run: None, nodes: BTreeMap::new() })
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

    /// The node's container id, once started.
    pub fn container_id(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).and_then(Node::id)
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
        [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition].into_iter().collect()
    }

    /// Where the harness reaches a node now (host ports change when a container restarts or rejoins).
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

    /// Creates the run's network and learns what goes into each node's container.
    pub async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        let network = format!("natslab-{}", plan.run_id);
        // Recorded first: from here on, `Drop` sweeps whatever carries the run's label.
        self.run = Some(Run { id: plan.run_id.clone(), network: network.clone() });
        let names: Vec<String> = plan.nodes.iter().map(|n| format!("{network}-{}-host", n.name)).collect();
        let created = futures::future::join_all(std::iter::once(&network).chain(&names).map(|name| self.create_network(&plan.run_id, name))).await;
        created.into_iter().collect::<Result<Vec<()>>>()?;
        for (n, host_network) in plan.nodes.iter().zip(names) {
            let node = Node {
                host_network,
                config: format!("{}/nats.conf", plan.layout.node_dir(&n.name)),
                copies: node_files(&plan.layout, &n.name)?,
                container: None,
                ports: Ports::default(),
                pid: None,
                log: plan.layout.host_log(&n.name),
                written: Arc::new(AtomicUsize::new(0)),
                follower: None,
                stopping: Arc::new(AtomicBool::new(false)),
                exit: Arc::new(Mutex::new(None)),
                partitioned: false,
            };
            self.nodes.insert(n.name.clone(), node);
        }
        Ok(())
    }

    async fn create_network(&self, run_id: &str, name: &str) -> Result<()> {
        let req = NetworkCreateRequest { name: name.into(), driver: Some("bridge".into()), labels: Some(labels(run_id)), ..Default::default() };
        self.engine.docker.create_network(req).await.map(|_| ()).map_err(engine_error(format!("create network {name}")))
    }

    /// What testcontainers creates for a node: our image, its config, its name as hostname on the run's
    /// network, its ports mapped to random ports on 127.0.0.1 only, its files copied in with mode 0600.
    fn request(&self, run: &Run, name: &str, node: &Node) -> ContainerRequest<GenericImage> {
        let (repo, tag) = split_image(&self.image);
        let image = PORTS.iter().fold(GenericImage::new(repo, tag), |i, p| i.with_exposed_port(p.tcp()));
        let mut node_labels = labels(&run.id);
        node_labels.insert(LABEL_NODE.into(), name.into());
        let bind = self.engine.bind.clone();
        let mut req = image
            .with_cmd(["-c", node.config.as_str()])
            .with_hostname(name)
            .with_container_name(format!("natslab-{}-{name}", run.id))
            .with_network(run.network.clone())
            .with_labels(node_labels)
            .with_startup_timeout(ENGINE_WAIT)
            .with_host_config_modifier(move |hc| {
                // testcontainers publishes every port on every host address; the lab stays on loopback.
                hc.publish_all_ports = Some(false);
                hc.port_bindings = Some(port_bindings(bind.as_deref()));
                // `docker logs` needs a driver it can read back, whatever the engine's default.
                hc.log_config = Some(HostConfigLogConfig { typ: Some("json-file".into()), config: None });
            });
        for (target, source) in &node.copies {
            req = req.with_copy_to(CopyTargetOptions::new(target.as_str()).with_mode(0o600), source.clone());
        }
        req
    }

    fn node(&self, node: &str, op: &'static str) -> Result<&Node> {
        self.nodes.get(node).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "no such node".into() })
    }

    fn node_mut(&mut self, node: &str, op: &'static str) -> Result<&mut Node> {
        self.nodes.get_mut(node).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "no such node".into() })
    }

    /// The node's container id, or why a fault cannot be done to it.
    fn id_for(&self, node: &str, op: &'static str) -> Result<String> {
        self.node(node, op)?.id().map(String::from).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "never started".into() })
    }

    async fn running(&self, id: &str) -> bool {
        let info = self.engine.docker.inspect_container(id, None).await.ok();
        info.and_then(|i| i.state).and_then(|s| s.running).unwrap_or(false)
    }

    /// Starts a node: the first time testcontainers creates its container; later the same container is
    /// started again (same files, same store). A running one is left alone.
    pub async fn start(&mut self, node: &str) -> Result<()> {
        self.start_group(&[node.to_string()]).await
    }

    /// Starts several nodes at once. Hubs must come up together: a container takes ~0.4 s to start, and
    /// hubs started one after another miss JetStream's first meta-leader election and wait out a Raft
    /// election timeout (seconds) for the next.
    pub async fn start_group(&mut self, nodes: &[String]) -> Result<()> {
        let mut todo = Vec::new();
        for name in nodes {
            let id = self.node(name, "start")?.id().map(String::from);
            if let Some(id) = &id {
                if self.running(id).await {
                    continue;
                }
            }
            self.arm(name)?;
            todo.push(name.as_str());
        }
        let started = futures::future::join_all(todo.iter().map(|name| self.start_one(name))).await;
        for (name, result) in todo.iter().zip(started) {
            if let Some(container) = result? {
                let req = NetworkConnectRequest { container: container.id().to_string(), endpoint_config: None };
                let host_network = self.node(name, "start")?.host_network.clone();
                // Stored first, so that a failure below still leaves the container to `shutdown`.
                self.node_mut(name, "start")?.container = Some(container);
                self.engine.docker.connect_network(&host_network, req).await.map_err(engine_error(format!("connect {name} to {host_network}")))?;
            }
        }
        for name in todo {
            self.refresh(name).await?;
            let follower = self.follow_log(name)?;
            self.node_mut(name, "start")?.follower = Some(follower);
        }
        Ok(())
    }

    /// Creates and starts a node's container (returned), or starts its existing one again (`None`).
    async fn start_one(&self, name: &str) -> Result<Option<ContainerAsync<GenericImage>>> {
        let n = self.node(name, "start")?;
        let fail = |reason: String| Error::NodeStart { node: name.into(), reason, log: n.log.clone(), tail: String::new() };
        match &n.container {
            Some(c) => c.start().await.map(|_| None).map_err(|e| fail(format!("start container: {e}"))),
            None => {
                let run = self.run.as_ref().ok_or_else(|| fail("the lab is not prepared".into()))?;
                self.request(run, name, n).start().await.map(Some).map_err(|e| fail(format!("create and start container: {e}")))
            }
        }
    }

    /// Clears what a previous run of the container left: it is expected to run now.
    fn arm(&mut self, node: &str) -> Result<()> {
        let n = self.node_mut(node, "start")?;
        n.stopping.store(false, Ordering::SeqCst);
        if let Ok(mut e) = n.exit.lock() {
            *e = None;
        }
        Ok(())
    }

    /// Re-reads a container's host ports and pid (both change when it restarts or rejoins its network).
    async fn refresh(&mut self, node: &str) -> Result<()> {
        let id = self.id_for(node, "inspect")?;
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
        let id = self.id_for(node, "follow log")?;
        let n = self.node(node, "follow log")?;
        let (docker, path) = (self.engine.docker.clone(), n.log.clone());
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
        let id = self.id_for(node, "kill")?;
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

    fn container(&self, node: &str, op: &'static str) -> Result<&ContainerAsync<GenericImage>> {
        self.node(node, op)?.container.as_ref().ok_or_else(|| Error::Fault { node: node.into(), op, reason: "never started".into() })
    }

    pub async fn pause(&mut self, node: &str) -> Result<()> {
        let c = self.container(node, "pause")?;
        c.pause().await.map_err(|e| Error::Fault { node: node.into(), op: "pause", reason: e.to_string() })
    }

    pub async fn resume(&mut self, node: &str) -> Result<()> {
        let c = self.container(node, "resume")?;
        c.unpause().await.map_err(|e| Error::Fault { node: node.into(), op: "resume", reason: e.to_string() })
    }

    fn network_for(&self, node: &str, op: &'static str) -> Result<String> {
        self.network().map(String::from).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "the lab is not prepared".into() })
    }

    /// Cuts the node off the run's network: no peer reaches it, it reaches no peer; the harness still does
    /// (its host ports stay, on its own network).
    pub async fn partition(&mut self, node: &str) -> Result<()> {
        let (network, id) = (self.network_for(node, "partition")?, self.id_for(node, "partition")?);
        let req = NetworkDisconnectRequest { container: id, force: Some(true) };
        self.engine
            .docker
            .disconnect_network(&network, req)
            .await
            .map_err(|e| Error::Fault { node: node.into(), op: "partition", reason: e.to_string() })?;
        self.node_mut(node, "partition")?.partitioned = true;
        Ok(())
    }

    /// Reconnects a partitioned node under its name.
    pub async fn heal(&mut self, node: &str) -> Result<()> {
        let (network, id) = (self.network_for(node, "heal")?, self.id_for(node, "heal")?);
        let req = NetworkConnectRequest { container: id, endpoint_config: Some(alias(node)) };
        self.engine
            .docker
            .connect_network(&network, req)
            .await
            .map_err(|e| Error::Fault { node: node.into(), op: "heal", reason: e.to_string() })?;
        self.node_mut(node, "heal")?.partitioned = false;
        self.refresh(node).await
    }

    /// Nodes cut off by `partition` and not healed yet.
    pub fn partitioned(&self) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.partitioned).map(|(k, _)| k.clone()).collect()
    }

    /// Removes every container (through testcontainers) and the network of the run, after letting the
    /// logs drain.
    pub async fn shutdown(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let Some(run) = self.run.take() else { return };
        let mut followers = Vec::new();
        let mut containers = Vec::new();
        for n in nodes.into_values() {
            n.stopping.store(true, Ordering::SeqCst);
            followers.extend(n.follower);
            containers.extend(n.container);
        }
        futures::future::join_all(containers.into_iter().map(|c| c.rm())).await;
        for f in followers {
            let _ = tokio::time::timeout(ENGINE_WAIT, f).await;
        }
        remove_run(&self.engine.docker, &run.id).await;
    }
}

impl Drop for ContainerBackend {
    /// Best effort when `shutdown` was not called (an error, a panic, a cancelled start): remove everything
    /// labeled with the run — which also catches a container whose creation was cut short — on a thread of
    /// its own, so it works from any runtime or none.
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let Some(run) = self.run.take() else { return };
        let Ok(docker) = self.engine.reopen() else { return };
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(remove_run(&docker, &run.id));
        });
        let _ = cleanup.join();
        // Their containers are gone; testcontainers' own drop would only ask again, and needs a runtime.
        for n in nodes.into_values() {
            n.stopping.store(true, Ordering::SeqCst);
            if let Some(c) = n.container {
                std::mem::forget(c);
            }
        }
    }
}

fn labels(run_id: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_RUN.to_string(), run_id.to_string()), (LABEL_SUPERVISOR.to_string(), std::process::id().to_string())])
}

/// `repo:tag` (a registry's `host:port/` prefix keeps its colon); no tag means `latest`.
fn split_image(image: &str) -> (&str, &str) {
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], &image[slash + i + 1..]),
        None => (image, "latest"),
    }
}

fn port_bindings(bind: Option<&str>) -> PortMap {
    PORTS
        .iter()
        .map(|p| (format!("{p}/tcp"), Some(vec![PortBinding { host_ip: bind.map(String::from), host_port: Some(String::new()) }])))
        .collect()
}

fn alias(node: &str) -> EndpointSettings {
    EndpointSettings { aliases: Some(vec![node.to_string()]), ..Default::default() }
}

fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions { force: true, v: true, ..Default::default() }
}

/// The host ports of a container's four listeners, when all are mapped.
fn ports_of(map: &PortMap) -> Option<Ports> {
    let port = |p: u16| -> Option<u16> {
        map.get(&format!("{p}/tcp"))?.as_ref()?.iter().find_map(|b| b.host_port.as_deref()?.parse().ok())
    };
    Some(Ports { client: port(CLIENT_PORT)?, cluster: port(CLUSTER_PORT)?, leaf: port(LEAF_PORT)?, http: port(HTTP_PORT)? })
}

/// What a node's container gets, as (path inside, file on the host): its config and the secrets the config
/// names (nothing of other nodes).
fn node_files(l: &Layout, node: &str) -> Result<Vec<(String, PathBuf)>> {
    let host_config = l.host_config(node);
    let config = std::fs::read_to_string(&host_config).map_err(Error::io(format!("read {}", host_config.display())))?;
    let mut copies = vec![(format!("{}/nats.conf", l.node_dir(node)), host_config)];
    let mut names: Vec<String> = std::fs::read_dir(l.host_root.join("secrets"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    names.sort();
    for name in names.into_iter().filter(|n| mentions(&config, &l.secret(n))) {
        copies.push((l.secret(&name), l.host_secret(&name)));
    }
    Ok(copies)
}

/// Whether `text` names `path` as a whole (not as the prefix of a longer file name).
fn mentions(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let next = text[i + path.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
    })
}

/// Removes every container and network labeled with `run_id`. Containers go first (a network with
/// endpoints cannot be removed); a second pass catches a container whose creation was still in flight.
pub async fn remove_run(docker: &Docker, run_id: &str) -> (usize, usize) {
    let filter = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run_id}")])]);
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
    let dead = |labels: Option<&HashMap<String, String>>| {
        let pid = labels.and_then(|l| l.get(LABEL_SUPERVISOR)).and_then(|p| p.parse::<u32>().ok());
        !pid.is_some_and(crate::runs::alive)
    };
    let mut out = Leftovers::default();
    let filter = HashMap::from([("label".to_string(), vec![LABEL_RUN.to_string()])]);
    let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
    let containers = docker.list_containers(Some(list)).await.unwrap_or_default();
    for c in containers.iter().filter(|c| dead(c.labels.as_ref())) {
        if let Some(id) = &c.id {
            if docker.remove_container(id, Some(force_remove())).await.is_ok() {
                out.containers += 1;
            }
        }
    }
    let nets = docker.list_networks(Some(ListNetworksOptions { filters: Some(filter) })).await.unwrap_or_default();
    for n in nets.iter().filter(|n| dead(n.labels.as_ref())) {
        if let Some(name) = &n.name {
            if docker.remove_network(name).await.is_ok() {
                out.networks += 1;
            }
        }
    }
    let dangling = HashMap::from([
        ("dangling".to_string(), vec!["true".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_IMAGE}=1")]),
    ]);
    if let Ok(r) = docker.prune_images(Some(PruneImagesOptions { filters: Some(dangling) })).await {
        out.images = r.images_deleted.map(|d| d.len()).unwrap_or(0);
    }
    Some(out)
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
// A minimal tar writer (ustar), for the build context: two files, no dependency.

#[derive(Default)]
struct Tar {
    out: Vec<u8>,
}

impl Tar {
    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.entry(path, mode, data.len() as u64)?;
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, size: u64) -> Result<()> {
        if name.len() > 100 {
            return Err(Error::Run(format!("container backend: build context name too long: {name}")));
        }
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        octal(&mut h[136..148], now);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
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
    fn finds_the_host_ports_of_all_four_listeners() {
        let bind = |p: &str| Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(p.into()) }]);
        let mut map: PortMap = HashMap::new();
        for (c, h) in [("4222/tcp", "32771"), ("6222/tcp", "32772"), ("7422/tcp", "32773"), ("8222/tcp", "32774")] {
            map.insert(c.into(), bind(h));
        }
        assert_eq!(ports_of(&map), Some(Ports { client: 32771, cluster: 32772, leaf: 32773, http: 32774 }));
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
    fn tar_entries_keep_names_modes_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        t.file("Dockerfile", 0o644, DOCKERFILE.as_bytes()).unwrap();
        t.file("nats-server", 0o755, &[7u8; 1000]).unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, t.finish()).unwrap();
        let out = std::process::Command::new("tar").arg("-tvf").arg(&archive).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 2, "{listing}");
        assert!(lines[0].starts_with("-rw-r--r--") && lines[0].ends_with(" Dockerfile"), "{}", lines[0]);
        assert!(lines[1].starts_with("-rwxr-xr-x") && lines[1].ends_with(" nats-server"), "{}", lines[1]);
        let x = std::process::Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dir.path()).output().unwrap();
        assert!(x.status.success());
        assert_eq!(std::fs::read(dir.path().join("nats-server")).unwrap(), vec![7u8; 1000]);
        assert_eq!(std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap(), DOCKERFILE);
    }

    #[test]
    fn long_names_are_refused_not_truncated() {
        let mut t = Tar::default();
        assert!(t.file(&"a".repeat(101), 0o600, b"").is_err());
    }

    #[test]
    fn image_names_split_into_repository_and_tag() {
        assert_eq!(split_image("natslab/nats-server:dd9b8a99f789"), ("natslab/nats-server", "dd9b8a99f789"));
        assert_eq!(split_image("nats:2.12-alpine"), ("nats", "2.12-alpine"));
        assert_eq!(split_image("registry.local:5000/nats"), ("registry.local:5000/nats", "latest"));
        assert_eq!(split_image("registry.local:5000/nats:2.12"), ("registry.local:5000/nats", "2.12"));
    }
}
