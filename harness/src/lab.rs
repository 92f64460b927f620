//! A running lab: a plan brought up by a backend, ready, with its streams provisioned. The one handle that
//! scenarios, the CLI and tests use; it owns the backend, so dropping it tears everything down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{Backend, BackendKind, Endpoint, FaultSet};
use crate::errors::{Error, Result};
use crate::files;
use crate::plan::{CredKind, Layout, Plan, Role, Scope};
use crate::probe::client::Access;
use crate::probe::monitor::Monitor;
use crate::provision;
use crate::ready;
use crate::render;
use crate::runs;
use crate::server::{self, NatsServer};
use crate::topology::Topology;

/// What bringing a lab up reports as it goes.
pub trait Progress: Send + Sync {
    fn message(&self, _text: &str) {}
    /// The nodes still waited for, with what each lacks (empty: all ready).
    fn waiting(&self, _total: usize, _waiting: &BTreeMap<String, String>) {}
}

pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub backend: BackendKind,
    /// How long the lab may take to become ready.
    pub timeout: Duration,
    /// Keep the run directory after teardown (for reading logs).
    pub keep: bool,
    /// Where run directories go (default: `runs::root()`).
    pub runs_root: Option<PathBuf>,
    /// The attached backend's inventory.
    pub inventory: Option<PathBuf>,
    /// Seed for the lab's secrets (default: a fresh random one, recorded in the run's inventory).
    pub seed: Option<String>,
    /// Route inter-node links through link proxies (process backend), so the network can be faulted.
    pub proxied: bool,
    /// Container backend: run this image (e.g. `nats:2.12-alpine`, where a registry is reachable) instead of
    /// the one built locally from natslab's nats-server binary.
    pub image: Option<String>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions { backend: BackendKind::Process, timeout: Duration::from_secs(60), keep: false, runs_root: None, inventory: None, seed: None, proxied: false, image: None }
    }
}

pub struct Lab {
    pub plan: Plan,
    pub server: NatsServer,
    pub backend: Backend,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub monitor: Monitor,
    pub dir: PathBuf,
    pub keep: bool,
    /// Time from the first spawn until ready (streams provisioned).
    pub ready_in: Duration,
}

/// Run directory name, unique per run: `<topology>-<nuid tail>`.
pub fn run_id(t: &Topology) -> String {
    let n = nuid::next().to_string();
    format!("{}-{}", t.name, &n[n.len() - 8..]).to_lowercase()
}

/// Renders and writes a plan into a fresh run directory, and checks every config with `nats-server -t`.
pub fn prepare(
    topology: Topology,
    server: &NatsServer,
    addr: impl FnMut(usize, &str) -> crate::plan::NodeAddr,
    dir: &std::path::Path,
) -> Result<Plan> {
    prepare_with_layout(topology, server, addr, Layout::same(dir), &nuid::next().to_string(), Default::default())
}

/// As `prepare`, for servers that see the run directory elsewhere (a container's mount point).
pub fn prepare_with_layout(
    topology: Topology,
    server: &NatsServer,
    addr: impl FnMut(usize, &str) -> crate::plan::NodeAddr,
    layout: Layout,
    seed: &str,
    links: BTreeMap<(String, String), String>,
) -> Result<Plan> {
    server::check_version(server, &topology)?;
    let dir = layout.host_root.clone();
    files::mkdir(&dir)?;
    let id = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| run_id(&topology));
    let mut plan = Plan::new_with(topology, id, layout, addr, &mut crate::secrets::entropy::Entropy::seeded(seed))?;
    plan.links = links;
    let configs = render::render(&plan);
    files::write_plan(&plan, &configs)?;
    for n in &plan.nodes {
        server::test_config(server, &n.name, &plan.layout.host_config(&n.name))?;
    }
    Ok(plan)
}

impl Lab {
    pub async fn up(topology: Topology, opts: &UpOptions, progress: &dyn Progress) -> Result<Lab> {
        let mut say = |m: &str| progress.message(m);
        let server = server::find_or_install(&mut say)?;
        if opts.backend == BackendKind::Attached {
            return Lab::attach(topology, opts, server).await;
        }
        let mut backend = Backend::new(opts.backend, &server, None, opts.image.clone()).await?;
        let dir = opts.runs_root.clone().unwrap_or_else(runs::root).join(run_id(&topology));
        let seed = opts.seed.clone().unwrap_or_else(|| nuid::next().to_string());
        // On failure the run directory stays: the error names its logs.
        let links = backend.links(&topology, opts.proxied);
        if opts.proxied && links.is_empty() {
            progress.message(&format!(
                "no link proxies on the {:?} backend here (containers need root and a local engine): network faults other than partitions of whole nodes are unavailable",
                opts.backend
            ).to_lowercase());
        }
        let plan = prepare_with_layout(topology, &server, |i, name| backend.addr(i, name), backend.layout(&dir), &seed, links)?;
        backend.prepare(&plan).await?;
        let monitor = Monitor::new();
        let started = Instant::now();
        let deadline = started + opts.timeout;
        let mut lab = Lab { plan, server, backend, endpoints: BTreeMap::new(), monitor, dir, keep: opts.keep, ready_in: Duration::ZERO };
        lab.start_all(deadline, progress).await?;
        lab.provision(deadline).await?;
        lab.ready_in = started.elapsed();
        runs::write_record(&lab)?;
        let inventory = crate::inventory::Inventory::of_plan(&lab.plan, &seed, |n| {
            let e = &lab.endpoints[n];
            (e.client_url.clone(), e.monitor_url.clone())
        });
        inventory.write(&lab.dir.join("inventory.json"))?;
        Ok(lab)
    }

    /// A lab someone else runs: re-derive its plan from the inventory, wait until it is ready, provision the
    /// declared streams (idempotent). Checks still derive from `topology`, the declared one.
    async fn attach(_declared: Topology, opts: &UpOptions, server: NatsServer) -> Result<Lab> {
        let path = opts.inventory.as_ref().ok_or_else(|| Error::Run("the attached backend needs --inventory FILE".into()))?;
        let inventory = crate::inventory::Inventory::load(path)?;
        let backend = Backend::new(BackendKind::Attached, &server, Some(&inventory), None).await?;
        let plan = inventory.plan(&format!("attached-{}", inventory.topology.name))?;
        let endpoints = plan.nodes.iter().map(|n| (n.name.clone(), backend.endpoint(n))).collect();
        let started = Instant::now();
        let deadline = started + opts.timeout;
        let dir = inventory.secrets_root.clone();
        let mut lab = Lab { plan, server, backend, endpoints, monitor: Monitor::new(), dir, keep: true, ready_in: Duration::ZERO };
        let names: Vec<String> = lab.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        lab.wait_ready(&refs, opts.timeout).await?;
        lab.provision_leaves(deadline).await?;
        lab.provision(deadline).await?;
        lab.ready_in = started.elapsed();
        Ok(lab)
    }

    /// Hubs first (a leaf that dials a hub not yet listening waits a whole reconnect interval), then leaves,
    /// each group all at once.
    async fn start_all(&mut self, deadline: Instant, progress: &dyn Progress) -> Result<()> {
        let hubs: Vec<String> = self.plan.hubs().map(|n| n.name.clone()).collect();
        let leaves: Vec<String> = self.plan.leaves().map(|n| n.name.clone()).collect();
        self.backend.start_group(&hubs).await?;
        for h in &hubs {
            self.learn_endpoint(h);
        }
        for h in &hubs {
            let addr = self.endpoint(h).leaf_addr.clone();
            if !ready::wait_listening(&addr, deadline).await {
                return Err(self.start_failure(h, "its leafnode port never opened"));
            }
        }
        self.backend.start_group(&leaves).await?;
        for l in &leaves {
            self.learn_endpoint(l);
        }
        let bases: BTreeMap<String, String> = self.endpoints.iter().map(|(k, e)| (k.clone(), e.monitor_url.clone())).collect();
        let total = self.plan.nodes.len();
        let nodes: Vec<&crate::plan::NodePlan> = self.plan.nodes.iter().collect();
        let mut on_change = |w: &BTreeMap<String, String>| progress.waiting(total, w);
        // A leaf's own streams need only its own JetStream: provision them while the hubs still elect. (The
        // hub's wait for the whole lab: created while leaves attach, the R3 stream's replicas are still
        // catching up when the lab is otherwise ready, and /healthz says so — on containers for seconds.)
        let (result, early) = futures::join!(
            ready::wait_nodes(&self.monitor, &self.plan, &bases, &nodes, deadline, &mut on_change),
            self.provision_leaves(deadline)
        );
        early?;
        if let Err(waiting) = result {
            for name in waiting.keys() {
                if let Some(status) = self.backend.exited(name) {
                    return Err(self.start_failure(name, &format!("the server exited: {status}")));
                }
            }
            let waiting_for = waiting.iter().map(|(n, w)| format!("{n}: {w}")).collect::<Vec<_>>().join("; ");
            let logs = waiting.keys().map(|n| self.log_tail(n, 8)).collect::<Vec<_>>().join("\n");
            return Err(Error::NotReady { waited_ms: deadline.elapsed().as_millis(), waiting_for, logs });
        }
        Ok(())
    }

    fn learn_endpoint(&mut self, node: &str) {
        if let Some(n) = self.plan.node(node) {
            let e = self.backend.endpoint(n);
            self.endpoints.insert(node.to_string(), e);
        }
    }

    fn start_failure(&mut self, node: &str, reason: &str) -> Error {
        Error::NodeStart { node: node.into(), reason: reason.into(), log: self.plan.layout.host_log(node), tail: self.log_tail(node, 12) }
    }

    /// The last lines of a node's log, indented, for error messages.
    pub fn log_tail(&self, node: &str, lines: usize) -> String {
        let path = self.plan.layout.host_log(node);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        format!("  --- {} (last {} lines of {}) ---\n{}", node, tail.len(), path.display(), tail.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"))
    }

    /// Each leaf's declared streams, as soon as that leaf answers `/healthz` (its JetStream is up), all leaves
    /// at once.
    async fn provision_leaves(&self, deadline: Instant) -> Result<()> {
        let jobs = self.plan.topology.leaves.iter().filter(|l| !l.streams.is_empty()).map(|l| async move {
            let base = self.endpoint(&l.name).monitor_url.clone();
            while self.monitor.healthy(&base).await.is_err() {
                if Instant::now() >= deadline {
                    // The overall readiness wait reports what is missing.
                    return Ok(());
                }
                tokio::time::sleep(ready::POLL).await;
            }
            for s in &l.streams {
                let account = s.account.as_deref().unwrap_or(&l.accounts[0].name);
                let client = self.probe(&l.name, account).await?;
                provision::create_stream(&client, "$JS.API", s, deadline).await?;
            }
            Ok::<(), Error>(())
        });
        for r in futures::future::join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    /// The hub's declared streams, once the cluster is ready (R3 streams need their peers); idempotent, so
    /// an attached lab provisions leaves here too.
    async fn provision(&self, deadline: Instant) -> Result<()> {
        let t = &self.plan.topology;
        if let Some(first_hub) = self.plan.hubs().next() {
            for s in &t.hub.streams {
                let account = s.account.as_deref().unwrap_or(&t.hub.accounts[0].name);
                let client = self.probe(&first_hub.name, account).await?;
                provision::create_stream(&client, "$JS.API", s, deadline).await?;
            }
        }
        Ok(())
    }

    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    pub fn faults(&self) -> FaultSet {
        self.backend.faults()
    }

    pub fn endpoint(&self, node: &str) -> &Endpoint {
        &self.endpoints[node]
    }

    /// The node's client URL as a client must dial it (`tls://` where the lab requires TLS).
    pub fn client_url(&self, node: &str) -> String {
        let url = &self.endpoint(node).client_url;
        if self.plan.tls() {
            url.replacen("nats://", "tls://", 1)
        } else {
            url.clone()
        }
    }

    /// How to connect to `node` as `user` of `account`. Hub users may connect to any hub.
    pub fn access(&self, node: &str, account: &str, user: &str) -> Option<Access> {
        let scope = self.plan.scope_of(node);
        let cred = self.plan.secrets.find(&scope, account, user)?;
        let l = &self.plan.layout;
        let tls = self.plan.tls();
        let verify = self.plan.topology.security.verify_clients;
        Some(Access {
            url: self.client_url(node),
            user: Some(cred.user.clone()),
            password: Some(cred.password.clone()),
            password_file: Some(l.host_secret(&format!("{}.password", cred.stem()))),
            creds: cred.creds.as_ref().map(|_| l.host_secret(&format!("{}.creds", cred.stem()))),
            ca: tls.then(|| l.host_secret("ca.pem")),
            cert: (tls && verify).then(|| l.host_secret("probe-cert.pem")),
            key: (tls && verify).then(|| l.host_secret("probe-key.pem")),
        })
    }

    /// A full-access client of `account` on `node` (the harness's own probe user).
    pub async fn probe(&self, node: &str, account: &str) -> Result<async_nats::Client> {
        let access = self
            .access(node, account, &crate::plan::probe_user(account))
            .ok_or_else(|| Error::Connect { target: format!("{node}/{account}"), reason: "no such account on that node".into() })?;
        access.connect(&format!("natslab-probe-{node}")).await
    }

    /// The hub a leaf is connected to right now, from the leaf's `/leafz`.
    pub async fn leaf_hub(&self, leaf: &str) -> Option<String> {
        let ls = self.monitor.uplinks(&self.endpoint(leaf).monitor_url).await.ok()?;
        ls.into_iter().map(|(name, _)| name).find(|n| !n.is_empty())
    }

    pub async fn kill(&mut self, node: &str) -> Result<()> {
        self.backend.kill(node).await
    }

    pub async fn start(&mut self, node: &str) -> Result<()> {
        self.backend.start(node).await?;
        self.learn_endpoint(node);
        Ok(())
    }

    pub async fn pause(&mut self, node: &str) -> Result<()> {
        self.backend.pause(node).await
    }

    pub async fn resume(&mut self, node: &str) -> Result<()> {
        self.backend.resume(node).await
    }

    /// Cuts the links a grudge names (see `nemesis`).
    pub async fn partition(&mut self, g: &crate::nemesis::Grudge) -> Result<()> {
        self.backend.partition(g).await
    }

    pub async fn heal(&mut self) -> Result<()> {
        self.backend.heal().await
    }

    pub async fn blackhole(&mut self, a: &str, b: &str) -> Result<()> {
        self.backend.blackhole(a, b).await
    }

    pub async fn restore(&mut self, a: &str, b: &str) -> Result<()> {
        self.backend.restore(a, b).await
    }

    pub async fn slow(&mut self, a: &str, b: &str, latency: Duration, jitter: Duration) -> Result<()> {
        self.backend.slow(a, b, latency, jitter).await
    }

    pub async fn cap(&mut self, a: &str, b: &str, bytes_per_s: u64) -> Result<()> {
        self.backend.cap(a, b, bytes_per_s).await
    }

    pub async fn fast(&mut self, a: &str, b: &str) -> Result<()> {
        self.backend.fast(a, b).await
    }

    /// Waits until the named node is ready again (after a restart), by the same conditions as `up`.
    pub async fn wait_ready(&self, nodes: &[&str], timeout: Duration) -> Result<()> {
        let bases: BTreeMap<String, String> = self.endpoints.iter().map(|(k, e)| (k.clone(), e.monitor_url.clone())).collect();
        let list: Vec<&crate::plan::NodePlan> = self.plan.nodes.iter().filter(|n| nodes.contains(&n.name.as_str())).collect();
        ready::wait_nodes(&self.monitor, &self.plan, &bases, &list, Instant::now() + timeout, &mut |_| {})
            .await
            .map_err(|w| Error::NotReady {
                waited_ms: timeout.as_millis(),
                waiting_for: w.iter().map(|(n, w)| format!("{n}: {w}")).collect::<Vec<_>>().join("; "),
                logs: w.keys().map(|n| self.log_tail(n, 8)).collect::<Vec<_>>().join("\n"),
            })
    }

    /// Kills every node and removes the run directory (unless kept).
    pub async fn shutdown(self) {
        let Lab { backend, dir, keep, .. } = self;
        backend.shutdown().await;
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    pub fn describe(&self) -> LabInfo {
        let nodes = self
            .plan
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                role: n.role,
                client_url: self.client_url(&n.name),
                monitor_url: self.endpoint(&n.name).monitor_url.clone(),
                pid: self.backend.pid(&n.name),
                log: self.plan.layout.host_log(&n.name),
                config: self.plan.layout.host_config(&n.name),
                hub: None,
            })
            .collect();
        let users = self
            .plan
            .secrets
            .credentials
            .iter()
            .filter(|c| c.kind == CredKind::Declared)
            .filter_map(|c| {
                let node = match &c.scope {
                    Scope::Hub => self.plan.hubs().next()?.name.clone(),
                    Scope::Leaf(l) => l.clone(),
                };
                let access = self.access(&node, &c.account, &c.user)?;
                let url = match &c.scope {
                    Scope::Hub => self.plan.hubs().map(|h| self.client_url(&h.name)).collect::<Vec<_>>().join(","),
                    Scope::Leaf(_) => access.url.clone(),
                };
                Some(UserInfo {
                    context: format!("{}-{}-{}", self.plan.topology.name, c.scope.label(), c.user),
                    scope: c.scope.label().to_string(),
                    account: c.account.clone(),
                    user: c.user.clone(),
                    url,
                    access,
                })
            })
            .collect();
        LabInfo {
            run_id: self.plan.run_id.clone(),
            topology: self.plan.topology.name.clone(),
            backend: self.kind(),
            dir: self.dir.clone(),
            supervisor_pid: std::process::id(),
            ready_ms: self.ready_in.as_millis(),
            nodes,
            users,
        }
    }

    /// `describe()` plus which hub each leaf is attached to now.
    pub async fn describe_live(&self) -> LabInfo {
        let mut info = self.describe();
        for n in &mut info.nodes {
            if n.role == Role::Leaf {
                n.hub = self.leaf_hub(&n.name).await;
            }
        }
        info
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LabInfo {
    pub run_id: String,
    pub topology: String,
    pub backend: BackendKind,
    pub dir: PathBuf,
    pub supervisor_pid: u32,
    pub ready_ms: u128,
    pub nodes: Vec<NodeInfo>,
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    pub client_url: String,
    pub monitor_url: String,
    pub pid: Option<u32>,
    pub log: PathBuf,
    pub config: PathBuf,
    /// For a leaf: the hub it is attached to.
    pub hub: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UserInfo {
    /// The `nats` CLI context written for this user.
    pub context: String,
    pub scope: String,
    pub account: String,
    pub user: String,
    pub url: String,
    pub access: Access,
}
