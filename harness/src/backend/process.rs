//! The process backend: each node a nats-server child process on its own loopback address.
//!
//! Faults: kill (SIGKILL to the node's process group), start (same config, same address), pause/resume
//! (SIGSTOP/SIGCONT). Dropping the backend kills every node it started; `shutdown` does it in order.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use async_trait::async_trait;

use super::slot::{self, Slot};
use super::spawn::spawn_guarded;
use super::{Backend, BackendKind, Endpoint, Guests, Kill, Net, Pause};
use crate::errors::{Error, Result};
use crate::plan::{Layout, NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;

pub struct ProcessBackend {
    slot: Slot,
    server: NatsServer,
    /// Nodes that run another server than `server` (declared versions, upgrades).
    servers: BTreeMap<String, NatsServer>,
    children: BTreeMap<String, Child>,
    configs: BTreeMap<String, (PathBuf, PathBuf)>,
    /// Link proxies, when the lab's inter-node links are routed through them (network faults).
    pub links: Option<super::links::LinkSet>,
    /// Per node, a command that execs the server (`ip netns exec <ns>`): the pid stays the server's, and so
    /// does the parent-death signal.
    prefix: BTreeMap<String, Vec<String>>,
    /// Throwaway servers beside the lab, by name.
    guests: BTreeMap<String, Child>,
    /// The run directory (guests keep their files under it).
    run_dir: Option<PathBuf>,
}

impl ProcessBackend {
    pub fn new(server: NatsServer) -> Result<ProcessBackend> {
        Ok(ProcessBackend {
            slot: slot::acquire()?,
            server,
            servers: BTreeMap::new(),
            children: BTreeMap::new(),
            configs: BTreeMap::new(),
            links: None,
            prefix: BTreeMap::new(),
            guests: BTreeMap::new(),
            run_dir: None,
        })
    }

    pub fn slot_index(&self) -> usize {
        self.slot.index
    }

    /// Where node `i` listens: its own loopback address, fixed ports per role.
    pub fn node_addr(&self, i: usize) -> NodeAddr {
        let ip = self.slot.ip(i);
        NodeAddr {
            bind: ip.clone(),
            host: ip,
            client: slot::CLIENT_PORT,
            cluster: slot::CLUSTER_PORT,
            leaf: slot::LEAF_PORT,
            http: slot::HTTP_PORT,
        }
    }

    pub fn endpoint_of(node: &NodePlan) -> Endpoint {
        Endpoint {
            client_url: format!("nats://{}:{}", node.addr.host, node.addr.client),
            monitor_url: format!("http://{}:{}", node.addr.host, node.addr.http),
            leaf_addr: format!("{}:{}", node.addr.host, node.addr.leaf),
        }
    }

    pub fn register(&mut self, plan: &Plan) {
        for n in &plan.nodes {
            self.configs.insert(n.name.clone(), (plan.layout.host_config(&n.name), plan.layout.host_log(&n.name)));
        }
    }

    /// Where guests keep their files (the run directory).
    pub fn set_run_dir(&mut self, dir: &std::path::Path) {
        self.run_dir = Some(dir.to_path_buf());
    }

    /// Starts `node` through `prefix` (which must exec its arguments) instead of running the server directly.
    pub fn set_prefix(&mut self, node: &str, prefix: Vec<String>) {
        self.prefix.insert(node.to_string(), prefix);
    }

    pub fn node_pid(&self, node: &str) -> Option<u32> {
        self.children.get(node).map(Child::id)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.values().map(Child::id).collect()
    }

    /// Starts (or restarts) a node. Its log is appended to, so a restart keeps the story in one file.
    pub fn spawn_node(&mut self, node: &str) -> Result<()> {
        if let Some(c) = self.children.get_mut(node) {
            if matches!(c.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let (config, log) = self.configs.get(node).cloned().ok_or_else(|| Error::Fault {
            node: node.to_string(),
            op: "start",
            reason: "no such node".into(),
        })?;
        let out = OpenOptions::new().create(true).append(true).open(&log).map_err(Error::io(format!("open {}", log.display())))?;
        let err = out.try_clone().map_err(Error::io("dup log handle"))?;
        let binary = self.servers.get(node).unwrap_or(&self.server).path.clone();
        let mut cmd = match self.prefix.get(node).and_then(|p| p.split_first()) {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        cmd.arg("-c").arg(&config).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn_guarded(cmd).map_err(|e| Error::NodeStart {
            node: node.to_string(),
            reason: format!("spawn {}: {e}", binary.display()),
            log: log.clone(),
            tail: String::new(),
        })?;
        self.children.insert(node.to_string(), child);
        Ok(())
    }

    /// Whether the node's process has exited (it failed at startup, or was killed).
    pub fn node_exit(&mut self, node: &str) -> Option<String> {
        let c = self.children.get_mut(node)?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn signal(&mut self, node: &str, sig: Signal, op: &'static str) -> Result<()> {
        let c = self.children.get(node).ok_or_else(|| Error::Fault { node: node.into(), op, reason: "not running".into() })?;
        killpg(Pid::from_raw(c.id() as i32), sig).map_err(|e| Error::Fault { node: node.into(), op, reason: e.to_string() })
    }

    /// `kill -9`: sudden death, nothing flushed.
    pub async fn kill_node(&mut self, node: &str) -> Result<()> {
        self.signal(node, Signal::SIGKILL, "kill")?;
        if let Some(mut c) = self.children.remove(node) {
            tokio::task::spawn_blocking(move || c.wait()).await.ok();
        }
        Ok(())
    }

    /// The server a node runs from its next start.
    pub fn set_server(&mut self, node: &str, server: &NatsServer) {
        self.servers.insert(node.to_string(), server.clone());
    }

    /// SIGUSR2 (lame duck: stop accepting, hand clients off, exit), waiting for the exit; SIGKILL after
    /// `within`. How long the stop took.
    pub async fn stop_node_gracefully(&mut self, node: &str, within: std::time::Duration) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        // A server that already exited (one that would not start) is stopped: there is nothing to drain.
        if !self.children.contains_key(node) || self.node_exit(node).is_some() {
            self.children.remove(node);
            return Ok(std::time::Duration::ZERO);
        }
        self.signal(node, Signal::SIGUSR2, "stop")?;
        if let Some(mut c) = self.children.remove(node) {
            let deadline = started + within;
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    _ => {
                        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGKILL);
                        tokio::task::spawn_blocking(move || c.wait()).await.ok();
                        return Err(Error::Fault { node: node.into(), op: "stop", reason: format!("still running {} s after SIGUSR2 (lame duck): killed", within.as_secs()) });
                    }
                }
            }
        }
        Ok(started.elapsed())
    }

    pub fn pause_node(&mut self, node: &str) -> Result<()> {
        self.signal(node, Signal::SIGSTOP, "pause")
    }

    pub fn resume_node(&mut self, node: &str) -> Result<()> {
        self.signal(node, Signal::SIGCONT, "resume")
    }

    /// Starts a throwaway server from `settings`, with `files` in its own directory under the run
    /// directory; its log is returned.
    pub fn spawn_guest(&mut self, dir: &std::path::Path, name: &str, settings: &serde_json::Value, files: &[(String, String)]) -> Result<PathBuf> {
        let gdir = dir.join("guests").join(name);
        crate::files::mkdir(&gdir)?;
        for (f, text) in files {
            crate::files::write_secret(&gdir.join(f), text)?;
        }
        let conf = gdir.join("nats.conf");
        crate::files::write_secret(&conf, &crate::render::to_conf(settings))?;
        let log = gdir.join("server.log");
        let out = std::fs::File::create(&log).map_err(Error::io(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(Error::io("dup log handle"))?;
        let mut cmd = Command::new(&self.server.path);
        cmd.arg("-c").arg(&conf).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn_guarded(cmd).map_err(|e| Error::NodeStart { node: name.into(), reason: format!("spawn: {e}"), log: log.clone(), tail: String::new() })?;
        self.guests.insert(name.to_string(), child);
        Ok(log)
    }

    pub fn guest_status(&mut self, name: &str) -> Option<String> {
        match self.guests.get_mut(name)?.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub async fn stop_guest_process(&mut self, name: &str) {
        if let Some(c) = self.guests.remove(name) {
            tokio::task::spawn_blocking(move || kill_all(BTreeMap::from([(String::new(), c)]))).await.ok();
        }
    }

    pub async fn shutdown_all(mut self) {
        let mut children = std::mem::take(&mut self.children);
        children.extend(std::mem::take(&mut self.guests).into_iter().map(|(n, c)| (format!("guest {n}"), c)));
        tokio::task::spawn_blocking(move || kill_all(children)).await.ok();
        if let Some(l) = self.links.take() {
            l.shutdown().await;
        }
    }

    pub async fn start_links(&mut self, plan: &Plan) -> Result<()> {
        if plan.proxied() {
            self.links = Some(super::links::LinkSet::start(plan).await?);
        }
        Ok(())
    }

}

#[async_trait]
impl Backend for ProcessBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    fn addr(&self, i: usize, _name: &str) -> NodeAddr {
        self.node_addr(i)
    }

    fn layout(&self, dir: &std::path::Path) -> Layout {
        Layout::same(dir)
    }

    fn link_addrs(&self, t: &crate::topology::Topology) -> Option<BTreeMap<(String, String), String>> {
        Some(super::links::addrs(t, |i, _| self.slot.ip(i)))
    }

    async fn prepare(&mut self, plan: &Plan) -> Result<()> {
        self.register(plan);
        self.set_run_dir(&plan.layout.host_root);
        self.start_links(plan).await
    }

    async fn start(&mut self, node: &str) -> Result<()> {
        self.spawn_node(node)
    }

    fn endpoint(&self, node: &NodePlan) -> Endpoint {
        ProcessBackend::endpoint_of(node)
    }

    fn exited(&mut self, node: &str) -> Option<String> {
        self.node_exit(node)
    }

    fn pid(&self, node: &str) -> Option<u32> {
        self.node_pid(node)
    }

    async fn shutdown(self: Box<Self>) {
        self.shutdown_all().await
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

    fn upgrade(&mut self) -> Option<&mut dyn super::Upgrade> {
        Some(self)
    }

    fn reload(&mut self) -> Option<&mut dyn super::Reload> {
        Some(self)
    }

    fn store(&mut self) -> Option<&mut dyn super::Store> {
        Some(self)
    }

    async fn use_server(&mut self, node: &str, server: &NatsServer) -> Result<()> {
        self.set_server(node, server);
        Ok(())
    }

    fn pause(&mut self) -> Option<&mut dyn Pause> {
        Some(self)
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
}

#[async_trait]
impl super::Upgrade for ProcessBackend {
    async fn stop_gracefully(&mut self, node: &str, within: std::time::Duration) -> Result<std::time::Duration> {
        self.stop_node_gracefully(node, within).await
    }

    async fn swap(&mut self, node: &str, server: &NatsServer) -> Result<()> {
        self.set_server(node, server);
        Ok(())
    }
}

#[async_trait]
impl super::Store for ProcessBackend {
    async fn wipe(&mut self, node: &str, layout: &crate::plan::Layout) -> Result<()> {
        super::wipe_host_store(node, layout)
    }
}

/// The servers read the run directory itself: what is written there is what a reload reads.
#[async_trait]
impl super::Reload for ProcessBackend {
    async fn refresh_files(&mut self, _node: &str, _layout: &crate::plan::Layout) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Kill for ProcessBackend {
    async fn kill(&mut self, node: &str) -> Result<()> {
        self.kill_node(node).await
    }
}

#[async_trait]
impl Pause for ProcessBackend {
    async fn pause(&mut self, node: &str) -> Result<()> {
        self.pause_node(node)
    }

    async fn resume(&mut self, node: &str) -> Result<()> {
        self.resume_node(node)
    }
}

#[async_trait]
impl Guests for ProcessBackend {
    async fn start_guest(&mut self, name: &str, settings: &serde_json::Value, files: &[(String, String)]) -> Result<PathBuf> {
        let dir = self.run_dir.clone().ok_or_else(|| Error::Fault { node: name.into(), op: "guest", reason: "the lab is not prepared".into() })?;
        self.spawn_guest(&dir, name, settings, files)
    }

    fn guest_exited(&mut self, name: &str) -> Option<String> {
        self.guest_status(name)
    }

    async fn stop_guest(&mut self, name: &str) {
        self.stop_guest_process(name).await
    }
}

fn kill_all(children: BTreeMap<String, Child>) {
    for (_, mut c) in children {
        // The whole group: a paused server dies from SIGKILL too.
        let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
        let _ = c.wait();
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        kill_all(std::mem::take(&mut self.children));
        kill_all(std::mem::take(&mut self.guests));
    }
}

/// Kills nats-server processes whose config lies under `root` (leftovers of runs whose supervisor died
/// without its parent-death signal firing, e.g. on another kernel). Returns how many it killed.
pub fn kill_strays(root: &std::path::Path) -> usize {
    let root = root.display().to_string();
    let mut killed = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else { return 0 };
    for p in procs.filter_map(|e| e.ok()) {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        let is_server = args.first().is_some_and(|a| a.ends_with("nats-server"));
        if is_server && args.iter().any(|a| a.starts_with(&root)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}
