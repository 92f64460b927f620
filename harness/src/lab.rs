//! A running lab: a plan brought up by a backend, ready, with its streams provisioned (when asked). The one
//! handle that scenarios, the CLI and tests use; it owns the backend, so dropping it tears everything down.
//!
//! Faults go through `apply`, which performs a `nemesis::Fault` with the backend's capabilities and journals
//! its inverse; `undo_all` undoes whatever is still in force and waits until the lab is ready again — the one
//! final heal of every check and of `natslab fault undo`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};


use crate::backend::{self, Backend, BackendKind, Endpoint};
use crate::errors::{Error, Result};
use crate::files;
use crate::inventory::{FaultChannel, Inventory};
use crate::nemesis::{self, Capabilities, Capability, Fault, Grudge};
use crate::plan::{CredKind, Layout, Plan, Role, Scope};
use crate::probe::client::Access;
use crate::probe::monitor::Monitor;
use crate::provision;
use crate::ready;
use crate::render;
use crate::runs;
pub use crate::runs::{LabInfo, NodeInfo, UserInfo};
use crate::server::{self, NatsServer};
use crate::topology::Topology;

/// How long a lab may take to be ready again after its faults are undone.
pub const READY_AGAIN: Duration = Duration::from_secs(30);

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
    /// Route inter-node links through link proxies, so the network can be faulted.
    pub proxied: bool,
    /// Container backend: run this image instead of the one built locally from natslab's nats-server binary.
    pub image: Option<String>,
    /// Create the declared streams and consumers once the lab is ready. Never done on an attached lab: an
    /// attached run checks what is there (`natslab provision` creates them).
    pub provision: bool,
    /// Edits each node's rendered settings before they are written (tests plant operator mistakes with it).
    pub patch: Option<Patch>,
    /// Every node on this nats-server version, whatever the topology declares (`--server-version`).
    pub server_version: Option<server::Version>,
    /// The version the upgrade family moves the lab to (installed when the lab comes up).
    pub upgrade_to: Option<server::Version>,
}

/// The intruding leaves a lab can start beside itself (`start_intruder`).
pub use crate::render::guest::Intruder;

/// A change to one node's rendered settings: `(node, settings)`.
#[derive(Clone)]
pub struct Patch(pub std::sync::Arc<PatchFn>);

/// `(node, settings)`: edits a node's settings in place.
pub type PatchFn = dyn Fn(&str, &mut serde_json::Value) + Send + Sync;

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Patch(..)")
    }
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            backend: BackendKind::Process,
            timeout: Duration::from_secs(60),
            keep: false,
            runs_root: None,
            inventory: None,
            seed: None,
            proxied: false,
            image: None,
            provision: true,
            patch: None,
            server_version: None,
            upgrade_to: None,
        }
    }
}

pub struct Lab {
    pub plan: Plan,
    pub server: NatsServer,
    /// The server each node runs now (declared versions; upgrades change it).
    pub servers: server::Servers,
    /// Where the upgrade family takes the lab (`--upgrade-to`).
    pub upgrade_to: Option<NatsServer>,
    backend: Box<dyn Backend>,
    /// Removes the run directory when the lab goes, however it goes (after the backend: fields drop in
    /// order, and the servers write their logs there until they die).
    dir_guard: RunDir,
    caps: Capabilities,
    endpoints: BTreeMap<String, Endpoint>,
    pub monitor: Monitor,
    pub dir: PathBuf,
    pub keep: bool,
    /// Time from the first spawn until ready (streams provisioned).
    pub ready_in: Duration,
    /// The seed the lab's secrets come from.
    pub seed: String,
    /// Inverses of the faults in force, oldest first.
    journal: Vec<Fault>,
    /// The partition in force (isolations included).
    grudge: Grudge,
    /// Nodes isolated whole, on backends that can only do that.
    isolated: BTreeSet<String>,
    /// The change the lab's configs were rendered with (tests' sabotage); a reload renders with it too.
    patch: Option<Patch>,
    /// Mistakes a test plants in what the day-2 families do, to prove they are caught.
    pub sabotage: Sabotage,
}

/// Mistakes planted in a day-2 family's own work (tests only): each must make its check violated.
#[derive(Debug, Clone, Default)]
pub struct Sabotage {
    /// The backup family restores a snapshot missing one of the messages it recorded.
    pub drop_one_from_backups: bool,
}

/// What a server said to a config reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    Applied,
    /// The server's own words: it kept running on the config it had.
    Refused(String),
}

/// Removes a run directory when dropped, unless kept.
struct RunDir {
    dir: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Run directory name, unique per run: `<topology>-<nuid tail>`.
pub fn run_id(t: &Topology) -> String {
    let n = nuid::next().to_string();
    format!("{}-{}", t.name, &n[n.len() - 8..]).to_lowercase()
}

/// Renders and writes a plan into a fresh run directory, and checks every config with `nats-server -t`.
pub fn prepare(
    topology: Topology,
    servers: &server::Servers,
    addr: impl FnMut(usize, &str) -> crate::plan::NodeAddr,
    dir: &std::path::Path,
) -> Result<Plan> {
    prepare_with_layout(topology, servers, addr, Layout::same(dir), &nuid::next().to_string(), Default::default(), None)
}

/// As `prepare`, for servers that see the run directory elsewhere (a container's mount point).
pub fn prepare_with_layout(
    topology: Topology,
    servers: &server::Servers,
    addr: impl FnMut(usize, &str) -> crate::plan::NodeAddr,
    layout: Layout,
    seed: &str,
    links: BTreeMap<(String, String), String>,
    patch: Option<&Patch>,
) -> Result<Plan> {
    // Each server itself, so that a refusal names the binary that is too old.
    for s in std::iter::once(&servers.default).chain(servers.per_node.values()) {
        server::check_version(s, &topology)?;
    }
    server::check_features(&topology, servers)?;
    let dir = layout.host_root.clone();
    files::mkdir(&dir)?;
    let id = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| run_id(&topology));
    let mut plan = Plan::new_with(topology, id, layout, addr, &mut crate::secrets::entropy::Entropy::seeded(seed))?;
    plan.links = links;
    crate::rendered::write_plan(&plan, &patched(&plan, patch))?;
    for n in &plan.nodes {
        server::test_config(servers.of(&n.name), &n.name, &plan.layout.host_config(&n.name))?;
    }
    Ok(plan)
}

/// Every node's config as rendered from the plan, with the patch (tests' sabotage) applied.
fn patched(plan: &Plan, patch: Option<&Patch>) -> Vec<render::NodeConfig> {
    let mut configs = render::render(plan);
    if let Some(p) = patch {
        for c in &mut configs {
            (p.0)(&c.name, &mut c.settings);
        }
    }
    configs
}

impl Lab {
    pub async fn up(topology: Topology, opts: &UpOptions, progress: &dyn Progress) -> Result<Lab> {
        let mut say = |m: &str| progress.message(m);
        let found = server::find_or_install(&mut say)?;
        if opts.backend == BackendKind::Attached {
            return Lab::attach(opts, found, progress).await;
        }
        let servers = server::for_topology(&topology, opts.server_version, &found, &mut say)?;
        let server = servers.default.clone();
        let mut backend = backend::open(opts.backend, &server, None, opts.image.clone()).await?;
        for (node, s) in &servers.per_node {
            backend.use_server(node, s).await?;
        }
        let dir = opts.runs_root.clone().unwrap_or_else(runs::root).join(run_id(&topology));
        let seed = opts.seed.clone().unwrap_or_else(|| nuid::next().to_string());
        let links = match (opts.proxied, backend.link_addrs(&topology)) {
            (true, Some(l)) => l,
            (true, None) => {
                progress.message(&format!(
                    "no link proxies on the {} backend here (containers need root and a local engine): network faults other than isolating whole nodes are unavailable",
                    opts.backend
                ));
                BTreeMap::new()
            }
            (false, _) => BTreeMap::new(),
        };
        // On failure the run directory stays: the error names its logs.
        let plan = prepare_with_layout(topology, &servers, |i, name| backend.addr(i, name), backend.layout(&dir), &seed, links, opts.patch.as_ref())?;
        backend.prepare(&plan).await?;
        let caps = backend::capabilities(backend.as_mut());
        let started = Instant::now();
        let deadline = started + opts.timeout;
        let mut lab = Lab::new(plan, server, backend, caps, dir, opts.keep, seed);
        lab.servers = servers;
        lab.patch = opts.patch.clone();
        if let Some(v) = opts.upgrade_to {
            lab.upgrade_to = Some(server::exact(v, &mut say).map_err(|e| Error::Version { key: "--upgrade-to".into(), reason: e.to_string() })?);
        }
        let ready = async {
            lab.start_all(deadline, opts.provision, progress).await?;
            if opts.provision {
                lab.provision_hub(deadline).await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = ready {
            // The error names the nodes' logs: they stay.
            lab.dir_guard.keep = true;
            return Err(e);
        }
        lab.ready_in = started.elapsed();
        runs::write_info(&lab.describe())?;
        lab.write_inventory(None)?;
        Ok(lab)
    }

    fn new(plan: Plan, server: NatsServer, backend: Box<dyn Backend>, caps: Capabilities, dir: PathBuf, keep: bool, seed: String) -> Lab {
        Lab {
            plan,
            servers: server::Servers::single(&server),
            upgrade_to: None,
            server,
            backend,
            dir_guard: RunDir { dir: dir.clone(), keep },
            caps,
            endpoints: BTreeMap::new(),
            monitor: Monitor::new(),
            dir,
            keep,
            ready_in: Duration::ZERO,
            seed,
            journal: Vec::new(),
            grudge: Grudge::new(),
            isolated: BTreeSet::new(),
            patch: None,
            sabotage: Sabotage::default(),
        }
    }

    /// A lab someone else runs: re-derive its plan from the inventory and wait until it is ready. Nothing is
    /// written to it: checks read what is there.
    async fn attach(opts: &UpOptions, server: NatsServer, progress: &dyn Progress) -> Result<Lab> {
        let path = opts.inventory.as_ref().ok_or_else(|| Error::Usage {
            what: "the attached backend needs an inventory".into(),
            hint: "pass --inventory FILE (a lab's inventory.json)".into(),
        })?;
        let inventory = Inventory::load(path)?;
        let mut backend = backend::open(BackendKind::Attached, &server, Some(&inventory), None).await?;
        let plan = inventory.plan(&format!("attached-{}", inventory.topology.name))?;
        let caps = backend::capabilities(backend.as_mut());
        let started = Instant::now();
        let dir = inventory.secrets_root.clone();
        let mut lab = Lab::new(plan, server, backend, caps, dir, true, inventory.seed.clone());
        lab.endpoints = lab.plan.nodes.iter().map(|n| (n.name.clone(), lab.backend.endpoint(n))).collect();
        // Someone else's lab is checked as it is: a node that is not ready makes its own checks violated,
        // and every other check still runs.
        if let Err(e) = lab.wait_ready_all(opts.timeout).await {
            progress.message(&format!("not every node is ready; the checks go on and say what is wrong: {e}"));
        }
        lab.ready_in = started.elapsed();
        Ok(lab)
    }

    /// Hubs first (a leaf that dials a hub not yet listening waits a whole reconnect interval), then leaves,
    /// each group all at once.
    async fn start_all(&mut self, deadline: Instant, provision: bool, progress: &dyn Progress) -> Result<()> {
        let hubs: Vec<String> = self.plan.hubs().map(|n| n.name.clone()).collect();
        let leaves: Vec<String> = self.plan.leaves().map(|n| n.name.clone()).collect();
        self.backend.start_group(&hubs).await?;
        for h in &hubs {
            self.learn_endpoint(h);
        }
        for h in &hubs {
            let addr = self.endpoints[h].leaf_addr.clone();
            if !ready::wait_listening(&addr, deadline).await {
                return Err(self.start_failure(h, "its leafnode port never opened"));
            }
        }
        self.backend.start_group(&leaves).await?;
        for l in &leaves {
            self.learn_endpoint(l);
        }
        let bases = self.monitor_bases();
        let total = self.plan.nodes.len();
        let nodes: Vec<&crate::plan::NodePlan> = self.plan.nodes.iter().collect();
        let mut on_change = |w: &BTreeMap<String, String>| progress.waiting(total, w);
        // A leaf's own streams need only its own JetStream: provision them while the hubs still elect. (The
        // hub's wait for the whole lab: created while leaves attach, the R3 stream's replicas are still
        // catching up when the lab is otherwise ready, and /healthz says so — on containers for seconds.)
        let leaves_provisioned = async {
            if provision {
                self.provision_leaves(deadline).await
            } else {
                Ok(())
            }
        };
        let (result, early) =
            futures::join!(ready::wait_nodes(&self.monitor, &self.plan, &bases, &nodes, deadline, &mut on_change), leaves_provisioned);
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

    fn monitor_bases(&self) -> BTreeMap<String, String> {
        self.endpoints.iter().map(|(k, e)| (k.clone(), e.monitor_url.clone())).collect()
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
        // An attached lab's servers log elsewhere (their hosts' journals): nothing to show here.
        let Ok(text) = std::fs::read_to_string(&path) else { return String::new() };
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        format!("  --- {} (last {} lines of {}) ---\n{}", node, tail.len(), path.display(), tail.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"))
    }

    /// Each leaf's declared streams, as soon as that leaf answers `/healthz` (its JetStream is up), all leaves
    /// at once.
    async fn provision_leaves(&self, deadline: Instant) -> Result<()> {
        let jobs = self.plan.topology.leaves.iter().filter(|l| !l.streams.is_empty() && !l.copies_from_elsewhere()).map(|l| async move {
            let base = self.endpoints[&l.name].monitor_url.clone();
            while self.monitor.healthy(&base).await.is_err() {
                if Instant::now() >= deadline {
                    // The overall readiness wait reports what is missing.
                    return Ok(());
                }
                tokio::time::sleep(ready::POLL).await;
            }
            self.provision_node(&l.name, deadline).await.map(|_| ())
        });
        for r in futures::future::join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    /// The hub's declared streams, once the cluster is ready (R3 streams need their peers), then the leaf
    /// streams that copy from another domain.
    async fn provision_hub(&self, deadline: Instant) -> Result<()> {
        if let Some(first_hub) = self.plan.hubs().next() {
            self.provision_node(&first_hub.name.clone(), deadline).await?;
        }
        // A leaf stream copying from another domain is created once what it copies exists: created before,
        // its source backs off and starts copying only tens of seconds later.
        for l in self.plan.topology.leaves.iter().filter(|l| l.copies_from_elsewhere()) {
            self.provision_node(&l.name, deadline).await?;
        }
        Ok(())
    }

    /// Creates the declared streams and consumers that live on `node` (a hub: the hub cluster's), through
    /// the harness's own user of each stream's account; idempotent. What it created or found.
    pub async fn provision_node(&self, node: &str, deadline: Instant) -> Result<Vec<provision::Provisioned>> {
        self.provision_node_with(node, deadline, false).await
    }

    /// As `provision_node`; with `update`, streams and consumers that differ from the declaration are
    /// given the declared configuration instead of being reported.
    pub async fn provision_node_with(&self, node: &str, deadline: Instant, update: bool) -> Result<Vec<provision::Provisioned>> {
        let t = &self.plan.topology;
        let (streams, default_account) = match t.leaf(node) {
            Some(l) => (&l.streams, l.accounts[0].name.as_str()),
            None => (&t.hub.streams, t.hub.accounts[0].name.as_str()),
        };
        let mut out = Vec::new();
        for s in streams {
            let account = s.account.as_deref().unwrap_or(default_account);
            let client = self.probe(node, account).await?;
            out.push(provision::ensure_stream(&client, "$JS.API", s, deadline, update).await?);
        }
        Ok(out)
    }

    /// `provision_node_with` for the hub cluster (once) and every leaf, labelled `hub` or by leaf.
    pub async fn provision_all_with(&self, deadline: Instant, update: bool) -> Result<Vec<(String, provision::Provisioned)>> {
        let mut out = Vec::new();
        let nodes: Vec<String> = self.plan.hubs().take(1).chain(self.plan.leaves()).map(|n| n.name.clone()).collect();
        for n in nodes {
            let label = if self.plan.topology.leaf(&n).is_some() { n.clone() } else { "hub".into() };
            for p in self.provision_node_with(&n, deadline, update).await? {
                out.push((label.clone(), p));
            }
        }
        Ok(out)
    }

    /// Whether the lab is someone else's, reached through an inventory.
    pub fn is_attached(&self) -> bool {
        self.kind() == BackendKind::Attached
    }

    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// What this lab's backend can do to it.
    pub fn faults(&self) -> &Capabilities {
        &self.caps
    }

    pub fn can(&self, c: Capability) -> bool {
        self.caps.contains(&c)
    }

    /// Where the harness reaches a node of this lab; `None` for a node the lab does not have.
    pub fn endpoint(&self, node: &str) -> Option<&Endpoint> {
        self.endpoints.get(node)
    }

    /// A node's monitoring URL, or why there is none (a declared node this lab does not run).
    pub fn monitor_url(&self, node: &str) -> std::result::Result<&str, String> {
        self.endpoint(node).map(|e| e.monitor_url.as_str()).ok_or_else(|| format!("node {node} is not part of this lab"))
    }

    /// The backend, for tests and tools that need one backend's own handles.
    pub fn backend<T: 'static>(&self) -> Option<&T> {
        self.backend.as_any().downcast_ref()
    }

    pub fn backend_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.backend.as_any_mut().downcast_mut()
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.backend.pid(node)
    }

    /// What the lab's network has in force now (cuts, blackholes, latency, caps), as its backend sees it.
    pub fn network_in_force(&self) -> Vec<String> {
        self.backend.net_ref().map(|n| n.in_force()).unwrap_or_default()
    }

    /// Byte counters of the link proxies, (dialer, dialed) → counters; empty without proxies.
    pub fn link_counters(&self) -> BTreeMap<(String, String), crate::net::Counters> {
        self.backend.net_ref().map(|n| n.counters()).unwrap_or_default()
    }

    /// The node's client URL as a client must dial it (`tls://` where the lab requires TLS).
    pub fn client_url(&self, node: &str) -> String {
        let url = self.endpoint(node).map(|e| e.client_url.clone()).unwrap_or_default();
        if self.plan.tls() {
            url.replacen("nats://", "tls://", 1)
        } else {
            url
        }
    }

    /// How to connect to `node` as `user` of `account`. Hub users may connect to any hub.
    pub fn access(&self, node: &str, account: &str, user: &str) -> Option<Access> {
        self.endpoint(node)?;
        let scope = self.plan.scope_of(node);
        let cred = self.plan.secrets.find(&scope, account, user)?;
        let l = &self.plan.layout;
        let tls = self.plan.tls();
        let verify = self.plan.topology.security.verify_clients;
        let operator = cred.creds.is_some();
        Some(Access {
            url: self.client_url(node),
            user: Some(cred.user.clone()),
            // In operator mode the server takes the creds, not a password: none is offered.
            password: (!operator).then(|| cred.password.clone()),
            password_file: (!operator).then(|| l.host_secret(&format!("{}.password", cred.stem()))),
            creds: operator.then(|| l.host_secret(&format!("{}.creds", cred.stem()))),
            ca: tls.then(|| l.host_secret("ca.pem")),
            cert: (tls && verify).then(|| l.host_secret("probe-cert.pem")),
            key: (tls && verify).then(|| l.host_secret("probe-key.pem")),
        })
    }

    /// A full-access client of `account` on `node` (the harness's own probe user).
    pub async fn probe(&self, node: &str, account: &str) -> Result<async_nats::Client> {
        let access = self.access(node, account, &crate::plan::probe_user(account)).ok_or_else(|| Error::Connect {
            target: format!("{node}/{account}"),
            reason: if self.endpoint(node).is_none() { "no such node in this lab".into() } else { "no such account on that node".into() },
        })?;
        access.connect(&format!("natslab-probe-{node}")).await
    }

    /// The hub a leaf is connected to right now, from the leaf's `/leafz`.
    pub async fn leaf_hub(&self, leaf: &str) -> Option<String> {
        let ls = self.monitor.uplinks(self.monitor_url(leaf).ok()?).await.ok()?;
        ls.into_iter().map(|(name, _)| name).find(|n| !n.is_empty())
    }

    // ------------------------------------------------------------------------------------------ faults

    /// Performs a fault and journals its inverse (an undoing fault settles what it undoes instead).
    pub async fn apply(&mut self, fault: &Fault) -> Result<()> {
        let names: Vec<&str> = self.plan.nodes.iter().map(|n| n.name.as_str()).collect();
        for n in fault.nodes() {
            if !names.contains(&n) {
                return Err(Error::NoSuchNode { node: n.to_string(), run: self.plan.run_id.clone(), nodes: names.join(", ") });
            }
        }
        if let Some(c) = fault.needs().filter(|c| !self.caps.contains(c)) {
            return Err(backend::cannot(self.kind(), c));
        }
        tracing::info!(%fault, "fault");
        self.perform(fault).await?;
        match fault.inverse() {
            Some(inverse) => self.journal.push(inverse),
            None => self.journal.retain(|owed| !fault.settles(owed)),
        }
        Ok(())
    }

    /// The inverses still owed, oldest first.
    pub fn in_force(&self) -> &[Fault] {
        &self.journal
    }

    /// Undoes every fault still in force, newest first, then waits until the whole lab is ready again.
    /// Returns what it undid.
    pub async fn undo_all(&mut self) -> std::result::Result<Vec<Fault>, UndoError> {
        let owed = std::mem::take(&mut self.journal);
        if owed.is_empty() {
            return Ok(owed);
        }
        let mut failed = Vec::new();
        for f in owed.iter().rev() {
            tracing::info!(fault = %f, "undo");
            if let Err(e) = self.perform(f).await {
                failed.push(format!("{f}: {e}"));
            }
        }
        if !failed.is_empty() {
            return Err(UndoError::Undo(failed.join("; ")));
        }
        self.wait_ready_all(READY_AGAIN).await.map_err(UndoError::NotReady)?;
        Ok(owed)
    }

    async fn perform(&mut self, fault: &Fault) -> Result<()> {
        let kind = self.kind();
        match fault {
            Fault::Start { node } => {
                self.backend.start(node).await?;
                self.learn_endpoint(node);
                Ok(())
            }
            Fault::Kill { node } => self.backend.kill().ok_or_else(|| backend::cannot(kind, Capability::Kill))?.kill(node).await,
            Fault::Pause { node } => self.backend.pause().ok_or_else(|| backend::cannot(kind, Capability::Pause))?.pause(node).await,
            Fault::Resume { node } => self.backend.pause().ok_or_else(|| backend::cannot(kind, Capability::Pause))?.resume(node).await,
            Fault::PowerLoss { node } => {
                self.backend.power().ok_or_else(|| backend::cannot(kind, Capability::PowerLoss))?.power_loss(node).await
            }
            Fault::Isolate { node } => {
                let names: Vec<&str> = self.plan.nodes.iter().map(|n| n.name.as_str()).collect();
                let g = nemesis::union(&self.grudge, &nemesis::isolate(node, &names));
                self.set_partition(g).await
            }
            Fault::Rejoin { node } => {
                let g = nemesis::without(&self.grudge, node);
                self.set_partition(g).await
            }
            Fault::Partition { grudge } => {
                let g = nemesis::union(&self.grudge, grudge);
                self.set_partition(g).await
            }
            Fault::Heal => self.set_partition(Grudge::new()).await,
            Fault::Blackhole { a, b } => self.net(Capability::Blackhole)?.blackhole(a, b).await,
            Fault::Restore { a, b } => self.net(Capability::Blackhole)?.restore(a, b).await,
            Fault::Slow { a, b, latency, jitter } => self.net(Capability::Latency)?.slow(a, b, *latency, *jitter).await,
            Fault::Cap { a, b, bytes_per_s } => self.net(Capability::Bandwidth)?.cap(a, b, *bytes_per_s).await,
            Fault::Fast { a, b } => match self.backend.net() {
                Some(n) => n.fast(a, b).await,
                None => Ok(()),
            },
        }
    }

    fn net(&mut self, c: Capability) -> Result<&mut dyn crate::backend::Net> {
        let kind = self.kind();
        match self.backend.net() {
            Some(n) if n.kinds().contains(&c) => Ok(n),
            _ => Err(backend::cannot(kind, c)),
        }
    }

    /// Makes `g` the partition in force: through the backend's network control where it has one, else by
    /// isolating and rejoining whole nodes.
    async fn set_partition(&mut self, g: Grudge) -> Result<()> {
        let kind = self.kind();
        let names: Vec<String> = self.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let partitions = self.backend.net().is_some_and(|n| n.kinds().contains(&Capability::Partition));
        if partitions {
            self.backend.net().expect("checked").partition(&g).await?;
        } else {
            let want = nemesis::isolated_nodes(&g, &refs).ok_or_else(|| Error::Fault {
                node: "-".into(),
                op: "partition",
                reason: format!("the {kind} backend isolates whole nodes only, and this partition cuts finer"),
            })?;
            let iso = self.backend.isolate().ok_or_else(|| backend::cannot(kind, Capability::Isolate))?;
            for n in self.isolated.difference(&want) {
                iso.rejoin(n).await?;
            }
            for n in want.difference(&self.isolated) {
                iso.isolate(n).await?;
            }
            self.isolated = want;
        }
        self.grudge = g;
        Ok(())
    }

    /// Moves `node` to `server`: lame-duck stop (bounded by `within`), swap, start. How long the stop took
    /// and how long until the node answered `/healthz` again. The journal owes a start while the node is
    /// down, so a check that fails in between still gets the lab back.
    pub async fn upgrade(&mut self, node: &str, server: &NatsServer, within: Duration) -> Result<(Duration, Duration)> {
        let kind = self.kind();
        if self.plan.node(node).is_none() {
            return Err(Error::NoSuchNode { node: node.into(), run: self.plan.run_id.clone(), nodes: self.plan.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(", ") });
        }
        let up = self.backend.upgrade().ok_or_else(|| backend::cannot(kind, Capability::Upgrade))?;
        // As an operator would: the new binary reads the node's config before the running one is stopped.
        // (Attached labs never get here: they have no Upgrade.)
        server::test_config(server, node, &self.plan.layout.host_config(node))?;
        self.journal.push(Fault::Start { node: node.to_string() });
        let stopped = up.stop_gracefully(node, within).await?;
        up.swap(node, server).await?;
        let t = Instant::now();
        self.apply(&Fault::Start { node: node.to_string() }).await?;
        self.wait_started(node, Duration::from_secs(60)).await?;
        if *server == self.servers.default {
            self.servers.per_node.remove(node);
        } else {
            self.servers.per_node.insert(node.to_string(), server.clone());
        }
        Ok((stopped, t.elapsed()))
    }

    /// A disaster: every one of `nodes` killed, then their JetStream stores removed, then all started again
    /// with empty ones and answering `/healthz` (all down at once, so no replica survives to copy from).
    /// The journal owes a start for each while it is down.
    pub async fn wipe_stores(&mut self, nodes: &[String]) -> Result<()> {
        let kind = self.kind();
        if self.backend.store().is_none() {
            return Err(backend::cannot(kind, Capability::Wipe));
        }
        for n in nodes {
            self.apply(&Fault::Kill { node: n.clone() }).await?;
        }
        let layout = self.plan.layout.clone();
        for n in nodes {
            if let Some(s) = self.backend.store() {
                s.wipe(n, &layout).await?;
            }
        }
        for n in nodes {
            self.apply(&Fault::Start { node: n.clone() }).await?;
        }
        for n in nodes {
            self.wait_started(n, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// Writes every node's files (configs, secrets) again from the plan as it is now, rendered as at `up`.
    pub fn rewrite(&self) -> Result<()> {
        crate::rendered::write_plan(&self.plan, &patched(&self.plan, self.patch.as_ref()))
    }

    /// Pushes an account JWT to the hubs' resolver (`$SYS.REQ.CLAIMS.UPDATE`, as `nsc push` does), through
    /// the system account on `hub`; the server's refusal in its own words.
    pub async fn push_account(&self, hub: &str, account_jwt: &str) -> Result<Reloaded> {
        let sys = self.probe(hub, crate::plan::SYSTEM_ACCOUNT).await?;
        let asked = sys.request("$SYS.REQ.CLAIMS.UPDATE", account_jwt.to_string().into());
        let msg = tokio::time::timeout(Duration::from_secs(10), asked)
            .await
            .map_err(|_| Error::Connect { target: format!("{hub}'s resolver"), reason: "no answer to $SYS.REQ.CLAIMS.UPDATE within 10 s".into() })?
            .map_err(|e| Error::Connect { target: format!("{hub}'s resolver"), reason: e.to_string() })?;
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
        Ok(match v.pointer("/error/description").and_then(|d| d.as_str()) {
            Some(why) => Reloaded::Refused(why.to_string()),
            None => Reloaded::Applied,
        })
    }

    /// Writes every node's files again from the plan as it is now (a scenario changed it: a password, a
    /// certificate, a user's permissions), checks `node`'s new config with its own binary, and has its
    /// server reload it — asked through the system account (`$SYS.REQ.SERVER.<id>.RELOAD`), so that what
    /// is reported is the server's own answer, never assumed.
    pub async fn reload(&mut self, node: &str) -> Result<Reloaded> {
        let kind = self.kind();
        if self.plan.node(node).is_none() {
            return Err(Error::NoSuchNode { node: node.into(), run: self.plan.run_id.clone(), nodes: self.plan.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(", ") });
        }
        if self.backend.reload().is_none() {
            return Err(backend::cannot(kind, Capability::Reload));
        }
        self.rewrite()?;
        server::test_config(self.servers.of(node), node, &self.plan.layout.host_config(node))?;
        let layout = self.plan.layout.clone();
        if let Some(r) = self.backend.reload() {
            r.refresh_files(node, &layout).await?;
        }
        let varz = self.monitor.get(self.monitor_url(node).map_err(|e| Error::Connect { target: node.into(), reason: e })?, "/varz").await;
        let id = varz.ok().and_then(|v| v["server_id"].as_str().map(String::from)).ok_or_else(|| Error::Connect { target: node.into(), reason: "its /varz names no server_id".into() })?;
        tracing::debug!("reload {node}: asking server {id}");
        let sys = self.probe(node, crate::plan::SYSTEM_ACCOUNT).await?;
        let answer = crate::probe::client::request_json(&sys, &format!("$SYS.REQ.SERVER.{id}.RELOAD"), Duration::from_secs(10))
            .await
            .map_err(|reason| Error::Connect { target: format!("{node}'s system account"), reason })?;
        Ok(match answer.pointer("/error/description").and_then(|d| d.as_str()) {
            Some(why) => Reloaded::Refused(why.to_string()),
            None => Reloaded::Applied,
        })
    }

    /// Waits until the named nodes are ready, by the same conditions as `up`.
    pub async fn wait_ready(&self, nodes: &[&str], timeout: Duration) -> Result<()> {
        let bases = self.monitor_bases();
        let list: Vec<&crate::plan::NodePlan> = self.plan.nodes.iter().filter(|n| nodes.contains(&n.name.as_str())).collect();
        ready::wait_nodes(&self.monitor, &self.plan, &bases, &list, Instant::now() + timeout, &mut |_| {})
            .await
            .map_err(|w| Error::NotReady {
                waited_ms: timeout.as_millis(),
                waiting_for: w.iter().map(|(n, w)| format!("{n}: {w}")).collect::<Vec<_>>().join("; "),
                logs: w.keys().map(|n| self.log_tail(n, 8)).collect::<Vec<_>>().join("\n"),
            })
    }

    /// As `wait_healthy`, but a server that exits meanwhile ends the wait at once, with its log.
    async fn wait_started(&mut self, node: &str, timeout: Duration) -> Result<()> {
        let url = self.monitor_url(node).map_err(|reason| Error::Fault { node: node.into(), op: "start", reason })?.to_string();
        let waited = poll_healthy(&self.monitor, &url, timeout, || self.backend.exited(node)).await;
        self.healthy_or_not(node, timeout, waited)
    }

    /// Waits until a node answers `/healthz` ok (it is up; the lab around it may not be whole).
    pub async fn wait_healthy(&self, node: &str, timeout: Duration) -> Result<()> {
        let url = self.monitor_url(node).map_err(|reason| Error::Fault { node: node.into(), op: "start", reason })?.to_string();
        let waited = poll_healthy(&self.monitor, &url, timeout, || None).await;
        self.healthy_or_not(node, timeout, waited)
    }

    fn healthy_or_not(&self, node: &str, timeout: Duration, waited: Waited) -> Result<()> {
        let not_ready = |waited_ms, waiting_for| Err(Error::NotReady { waited_ms, waiting_for, logs: self.log_tail(node, 8) });
        match waited {
            Waited::Healthy => Ok(()),
            Waited::Exited(status) => not_ready(0, format!("{node}: exited ({status})")),
            Waited::TimedOut(e) => not_ready(timeout.as_millis(), format!("{node}: {e}")),
        }
    }

    /// Waits until every node of the lab is ready.
    pub async fn wait_ready_all(&self, timeout: Duration) -> Result<()> {
        let names: Vec<String> = self.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.wait_ready(&refs, timeout).await
    }

    /// Throwaway servers beside the lab, where the backend can start them.
    pub fn guests(&mut self) -> Option<&mut dyn crate::backend::Guests> {
        self.backend.guests()
    }

    /// Starts an intruding leaf called `name` beside the lab (`render::guest::intruder_leaf`); its log and
    /// the identity it presents.
    pub async fn start_intruder(&mut self, kind: Intruder, name: &str) -> Result<(PathBuf, String)> {
        let backend_kind = self.kind();
        let hub = self.plan.hubs().next().cloned().ok_or_else(|| Error::Fault { node: name.into(), op: "guest", reason: "the lab has no hub".into() })?;
        let (settings, files, identity) = render::guest::intruder_leaf(&self.plan, kind, name, &hub)
            .ok_or_else(|| Error::Fault { node: name.into(), op: "guest", reason: "the lab has no TLS material".into() })?;
        let guests = self.backend.guests().ok_or_else(|| backend::cannot(backend_kind, Capability::Guest))?;
        let log = guests.start_guest(name, &settings, &files).await?;
        Ok((log, identity))
    }

    /// Kills every node and removes the run directory (unless kept).
    pub async fn shutdown(self) {
        let Lab { backend, dir_guard, .. } = self;
        backend.shutdown().await;
        drop(dir_guard);
    }

    /// Writes the lab's `inventory.json` (how another natslab reaches it), with the fault channel its
    /// supervisor serves, if any.
    pub fn write_inventory(&self, faults: Option<FaultChannel>) -> Result<()> {
        let mut inventory = Inventory::of_plan(&self.plan, &self.seed, |n| {
            let e = &self.endpoints[n];
            (e.client_url.clone(), e.monitor_url.clone())
        });
        inventory.faults = faults;
        inventory.write(&self.dir.join("inventory.json"))
    }

    /// The fault channel a supervisor serving `dir` offers: every capability of this lab.
    pub fn fault_channel(&self, dir: PathBuf) -> FaultChannel {
        let supports = self.caps.iter().filter(|c| **c != Capability::Guest).map(|c| c.name().to_string()).collect();
        FaultChannel { dir, supports, timeout_s: 120 }
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
                monitor_url: self.endpoint(&n.name).map(|e| e.monitor_url.clone()).unwrap_or_default(),
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

/// Why `undo_all` did not leave a whole, ready lab.
#[derive(Debug)]
pub enum UndoError {
    /// An inverse could not be performed: the harness or its backend broke.
    Undo(String),
    /// Everything was undone, but the lab did not become ready again.
    NotReady(Error),
}

impl std::fmt::Display for UndoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UndoError::Undo(e) => write!(f, "could not undo the faults in force: {e}"),
            UndoError::NotReady(e) => write!(f, "the lab was not ready again after its faults were undone: {e}"),
        }
    }
}

/// How a wait for `/healthz` ended.
enum Waited {
    Healthy,
    /// The server exited first (its status).
    Exited(String),
    /// Still not healthy at the deadline (the last answer).
    TimedOut(String),
}

/// Polls a node's `/healthz` until it is ok, `exited` says the server is gone, or `timeout` passes.
async fn poll_healthy(monitor: &Monitor, url: &str, timeout: Duration, mut exited: impl FnMut() -> Option<String>) -> Waited {
    let deadline = Instant::now() + timeout;
    loop {
        match monitor.healthy(url).await {
            Ok(()) => return Waited::Healthy,
            Err(e) => {
                if let Some(status) = exited() {
                    return Waited::Exited(status);
                }
                if Instant::now() >= deadline {
                    return Waited::TimedOut(e);
                }
                tokio::time::sleep(ready::POLL * 4).await;
            }
        }
    }
}
