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

use super::slot::{self, Slot};
use super::spawn::spawn_guarded;
use super::{Endpoint, FaultKind, FaultSet};
use crate::errors::{Error, Result};
use crate::plan::{NodeAddr, NodePlan, Plan};
use crate::server::NatsServer;

pub struct ProcessBackend {
    slot: Slot,
    server: NatsServer,
    children: BTreeMap<String, Child>,
    configs: BTreeMap<String, (PathBuf, PathBuf)>,
    /// Link proxies, when the lab's inter-node links are routed through them (network faults).
    pub links: Option<super::links::LinkSet>,
    /// Per node, a command that execs the server (`ip netns exec <ns>`): the pid stays the server's, and so
    /// does the parent-death signal.
    prefix: BTreeMap<String, Vec<String>>,
}

impl ProcessBackend {
    pub fn new(server: NatsServer) -> Result<ProcessBackend> {
        Ok(ProcessBackend { slot: slot::acquire()?, server, children: BTreeMap::new(), configs: BTreeMap::new(), links: None, prefix: BTreeMap::new() })
    }

    pub fn slot_index(&self) -> usize {
        self.slot.index
    }

    /// Where node `i` listens: its own loopback address, fixed ports per role.
    pub fn addr(&self, i: usize) -> NodeAddr {
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

    pub fn endpoint(node: &NodePlan) -> Endpoint {
        Endpoint {
            client_url: format!("nats://{}:{}", node.addr.host, node.addr.client),
            monitor_url: format!("http://{}:{}", node.addr.host, node.addr.http),
            leaf_addr: format!("{}:{}", node.addr.host, node.addr.leaf),
        }
    }

    pub fn faults(&self) -> FaultSet {
        let mut f: FaultSet = [FaultKind::Kill, FaultKind::Pause].into_iter().collect();
        if self.links.is_some() {
            f.extend([FaultKind::Partition, FaultKind::Blackhole, FaultKind::Latency, FaultKind::Bandwidth]);
        }
        f
    }

    pub fn register(&mut self, plan: &Plan) {
        for n in &plan.nodes {
            self.configs.insert(n.name.clone(), (plan.layout.host_config(&n.name), plan.layout.host_log(&n.name)));
        }
    }

    /// Starts `node` through `prefix` (which must exec its arguments) instead of running the server directly.
    pub fn set_prefix(&mut self, node: &str, prefix: Vec<String>) {
        self.prefix.insert(node.to_string(), prefix);
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.children.get(node).map(Child::id)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.values().map(Child::id).collect()
    }

    /// Starts (or restarts) a node. Its log is appended to, so a restart keeps the story in one file.
    pub fn start(&mut self, node: &str) -> Result<()> {
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
        let mut cmd = match self.prefix.get(node).and_then(|p| p.split_first()) {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.server.path);
                c
            }
            None => Command::new(&self.server.path),
        };
        cmd.arg("-c").arg(&config).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn_guarded(cmd).map_err(|e| Error::NodeStart {
            node: node.to_string(),
            reason: format!("spawn {}: {e}", self.server.path.display()),
            log: log.clone(),
            tail: String::new(),
        })?;
        self.children.insert(node.to_string(), child);
        Ok(())
    }

    /// Whether the node's process has exited (it failed at startup, or was killed).
    pub fn exited(&mut self, node: &str) -> Option<String> {
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
    pub async fn kill(&mut self, node: &str) -> Result<()> {
        self.signal(node, Signal::SIGKILL, "kill")?;
        if let Some(mut c) = self.children.remove(node) {
            tokio::task::spawn_blocking(move || c.wait()).await.ok();
        }
        Ok(())
    }

    pub fn pause(&mut self, node: &str) -> Result<()> {
        self.signal(node, Signal::SIGSTOP, "pause")
    }

    pub fn resume(&mut self, node: &str) -> Result<()> {
        self.signal(node, Signal::SIGCONT, "resume")
    }

    pub async fn shutdown(mut self) {
        let children = std::mem::take(&mut self.children);
        tokio::task::spawn_blocking(move || kill_all(children)).await.ok();
        if let Some(l) = self.links.take() {
            l.shutdown().await;
        }
    }

    /// Where each link's proxy listens (see `links::addrs`).
    pub fn link_addrs(&self, t: &crate::topology::Topology) -> BTreeMap<(String, String), String> {
        super::links::addrs(t, |i, _| self.slot.ip(i))
    }

    pub async fn start_links(&mut self, plan: &Plan) -> Result<()> {
        if plan.proxied() {
            self.links = Some(super::links::LinkSet::start(plan).await?);
        }
        Ok(())
    }

    fn link_set(&self, op: &'static str) -> Result<&super::links::LinkSet> {
        self.links.as_ref().ok_or_else(|| super::links::no_links(op))
    }

    pub fn partition(&mut self, g: &crate::nemesis::Grudge) -> Result<()> {
        self.links.as_mut().ok_or_else(|| super::links::no_links("partition"))?.partition(g);
        Ok(())
    }

    pub fn heal(&mut self) -> Result<()> {
        if let Some(l) = &mut self.links {
            l.heal();
        }
        Ok(())
    }

    pub fn blackhole(&self, a: &str, b: &str) -> Result<()> {
        self.link_set("blackhole")?.blackhole(a, b)
    }

    pub fn restore(&self, a: &str, b: &str) -> Result<()> {
        self.link_set("restore")?.restore(a, b)
    }

    pub fn slow(&self, a: &str, b: &str, latency: std::time::Duration, jitter: std::time::Duration) -> Result<()> {
        self.link_set("slow")?.slow(a, b, latency, jitter)
    }

    pub fn cap(&self, a: &str, b: &str, bytes_per_s: u64) -> Result<()> {
        self.link_set("cap")?.cap(a, b, bytes_per_s)
    }

    pub fn fast(&self, a: &str, b: &str) -> Result<()> {
        self.link_set("fast")?.fast(a, b)
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
