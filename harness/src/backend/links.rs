//! Inter-node links routed through link proxies, so a backend without kernel tools (the process backend)
//! can still partition, blackhole, slow down and cap the network: one proxy per (dialer, dialed) pair —
//! a leaf's remote to each hub it lists, each hub's route to every other hub.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::errors::{Error, Result};
use crate::nemesis::{cut_pairs, Grudge};
use crate::net::{Counters, Direction, LinkProxy, Toxics};
use crate::plan::{Plan, Role};
use crate::topology::Topology;

/// The links a topology has: (dialer, dialed) for every leaf remote's hub and every ordered hub pair.
pub fn pairs(t: &Topology) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in &t.hub.nodes {
        for b in &t.hub.nodes {
            if a.name != b.name {
                out.push((a.name.clone(), b.name.clone()));
            }
        }
    }
    for l in &t.leaves {
        for r in &l.remotes {
            for h in &r.hubs {
                if !out.contains(&(l.name.clone(), h.clone())) {
                    out.push((l.name.clone(), h.clone()));
                }
            }
        }
    }
    out
}

/// Where each link's proxy listens: (dialer, dialed) → `<dialed's address>:<LINK_PORT_BASE + dialer index>`,
/// so a dialer reaches the proxy at the dialed node's own address (its certificate still matches) and two
/// dialers of one node never share a port. `host(i, name)` is where dialers reach node `i` (hubs first, then
/// leaves) called `name`.
pub fn addrs(t: &Topology, host: impl Fn(usize, &str) -> String) -> BTreeMap<(String, String), String> {
    let index = |name: &str| -> usize {
        t.hub.nodes.iter().map(|n| &n.name).chain(t.leaves.iter().map(|l| &l.name)).position(|n| n == name).unwrap_or(0)
    };
    pairs(t)
        .into_iter()
        .map(|(from, to)| {
            let addr = format!("{}:{}", host(index(&to), &to), LINK_PORT_BASE + index(&from) as u16);
            ((from, to), addr)
        })
        .collect()
}

/// First port of the proxies on a node's address: the proxy for dialer `i` listens on `LINK_PORT_BASE + i`
/// (clear of the nodes' own ports on every backend).
pub const LINK_PORT_BASE: u16 = 25000;

/// One link as planned: `from` dials `listen` to reach `to`, whose real listener is `port` (its cluster
/// port for a hub dialer, its leafnode port for a leaf).
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub from: String,
    pub to: String,
    pub listen: String,
    pub port: u16,
}

impl LinkSpec {
    /// The port of `listen` (the proxy binds it wherever the backend puts the proxy).
    pub fn listen_port(&self) -> Result<u16> {
        self.listen.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or_else(|| Error::Link { link: self.name(), reason: format!("no port in {}", self.listen) })
    }

    pub fn name(&self) -> String {
        format!("{}->{}", self.from, self.to)
    }
}

/// The plan's links (`plan.links`), each with the port it forwards to.
pub fn specs(plan: &Plan) -> Vec<LinkSpec> {
    plan.links
        .iter()
        .filter_map(|((from, to), listen)| {
            let target = plan.node(to)?;
            let dialer_is_hub = plan.node(from).is_some_and(|n| n.role == Role::Hub);
            let port = if dialer_is_hub { target.addr.cluster } else { target.addr.leaf };
            Some(LinkSpec { from: from.clone(), to: to.clone(), listen: listen.clone(), port })
        })
        .collect()
}

/// The error for a network fault asked of a lab whose links are direct.
pub fn no_links(op: &'static str) -> Error {
    Error::Fault { node: "-".into(), op, reason: "this lab's links are direct; network faults need a lab brought up with link proxies (natslab up --link-proxies)".into() }
}

#[derive(Default)]
pub struct LinkSet {
    proxies: BTreeMap<(String, String), LinkProxy>,
    /// Pairs (a < b) the partition in force cuts, and pairs blackholed: a proxy placed anew (its node
    /// restarted) starts in the same state.
    cut: BTreeSet<(String, String)>,
    dark: BTreeSet<(String, String)>,
}

fn parse(addr: &str, what: &str) -> Result<SocketAddr> {
    addr.parse().map_err(|e| Error::Link { link: what.into(), reason: format!("bad address {addr}: {e}") })
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl LinkSet {
    /// Starts a proxy for every link of the plan: listening where the dialer dials (`plan.links`), forwarding
    /// to the dialed node's real route or leafnode port.
    pub async fn start(plan: &Plan) -> Result<LinkSet> {
        LinkSet::start_with(plan, |_, addr| std::net::TcpListener::bind(addr)).await
    }

    /// As `start`, with the listening socket of the proxy in front of node `to` bound by `bind(to, addr)`
    /// (the netns backend binds it inside `to`'s namespace, so a dialer's packets still carry its own address
    /// through the kernel's partition rules and shaping). The proxy dials upstream from here.
    pub async fn start_with(plan: &Plan, bind: impl Fn(&str, SocketAddr) -> std::io::Result<std::net::TcpListener>) -> Result<LinkSet> {
        let mut set = LinkSet::default();
        for spec in specs(plan) {
            let target = plan.node(&spec.to).map(|n| n.addr.host.clone()).unwrap_or_default();
            let upstream = parse(&format!("{target}:{}", spec.port), &spec.name())?;
            let listener = bind(&spec.to, parse(&spec.listen, &spec.name())?);
            set.place(&spec, listener, upstream)?;
        }
        Ok(set)
    }

    /// (Re)places the proxy of one link on `listener`, forwarding to `upstream`: a fresh link (no toxics,
    /// counters from zero), cut or blackholed if the faults in force say so.
    pub fn place(&mut self, spec: &LinkSpec, listener: std::io::Result<std::net::TcpListener>, upstream: SocketAddr) -> Result<()> {
        let name = spec.name();
        let proxy = listener
            .and_then(|l| LinkProxy::from_std(&name, l, upstream))
            .map_err(|e| Error::Link { link: name.clone(), reason: format!("start on {}: {e}", spec.listen) })?;
        let p = pair(&spec.from, &spec.to);
        if self.cut.contains(&p) {
            proxy.cut();
        }
        if self.dark.contains(&p) {
            proxy.blackhole();
        }
        self.proxies.insert((spec.from.clone(), spec.to.clone()), proxy);
        Ok(())
    }

    /// Drops the proxies in front of `to` (its listeners went with it).
    pub fn remove(&mut self, to: &str) {
        self.proxies.retain(|(_, t), _| t != to);
    }

    /// Every proxy carrying traffic between `a` and `b`, whichever dialed.
    fn between<'a>(&'a self, a: &'a str, b: &'a str) -> impl Iterator<Item = &'a LinkProxy> + 'a {
        self.proxies.iter().filter(move |((x, y), _)| (x == a && y == b) || (x == b && y == a)).map(|(_, p)| p)
    }

    fn expect_some(&self, a: &str, b: &str, op: &'static str) -> Result<()> {
        if self.between(a, b).next().is_none() {
            return Err(Error::Fault { node: format!("{a}/{b}"), op, reason: "no link between these nodes".into() });
        }
        Ok(())
    }

    /// Byte counters per link, (dialer, dialed) → counters.
    pub fn link_counters(&self) -> BTreeMap<(String, String), Counters> {
        self.proxies.iter().map(|(k, p)| (k.clone(), p.counters())).collect()
    }

    pub async fn shutdown(self) {
        for (_, p) in self.proxies {
            p.shutdown().await;
        }
    }
}

#[async_trait::async_trait]
impl crate::backend::Net for LinkSet {
    fn kinds(&self) -> crate::nemesis::Capabilities {
        use crate::nemesis::Capability::*;
        [Partition, Blackhole, Latency, Bandwidth].into_iter().collect()
    }

    /// Cuts every link the grudge names (both directions: a TCP link carries both), lifts the cuts it no
    /// longer names.
    async fn partition(&mut self, g: &Grudge) -> Result<()> {
        let new = cut_pairs(g);
        for ((x, y), p) in &self.proxies {
            let key = pair(x, y);
            match (self.cut.contains(&key), new.contains(&key)) {
                (false, true) => p.cut(),
                (true, false) => p.uncut(),
                _ => {}
            }
        }
        self.cut = new;
        Ok(())
    }

    async fn blackhole(&mut self, a: &str, b: &str) -> Result<()> {
        self.expect_some(a, b, "blackhole")?;
        self.dark.insert(pair(a, b));
        self.between(a, b).for_each(LinkProxy::blackhole);
        Ok(())
    }

    async fn restore(&mut self, a: &str, b: &str) -> Result<()> {
        self.expect_some(a, b, "restore")?;
        self.dark.remove(&pair(a, b));
        self.between(a, b).for_each(LinkProxy::unblackhole);
        Ok(())
    }

    async fn slow(&mut self, a: &str, b: &str, latency: Duration, jitter: Duration) -> Result<()> {
        self.expect_some(a, b, "slow")?;
        for p in self.between(a, b) {
            let mut t = p.toxics(Direction::Upstream);
            t.latency = latency;
            t.jitter = jitter;
            p.set(Direction::Both, t);
        }
        Ok(())
    }

    async fn cap(&mut self, a: &str, b: &str, bytes_per_s: u64) -> Result<()> {
        self.expect_some(a, b, "cap")?;
        for p in self.between(a, b) {
            let mut t = p.toxics(Direction::Upstream);
            t.bandwidth_bytes_per_s = Some(bytes_per_s);
            p.set(Direction::Both, t);
        }
        Ok(())
    }

    async fn fast(&mut self, a: &str, b: &str) -> Result<()> {
        self.expect_some(a, b, "fast")?;
        for p in self.between(a, b) {
            p.set(Direction::Both, Toxics::default());
        }
        Ok(())
    }

    fn counters(&self) -> BTreeMap<(String, String), Counters> {
        self.link_counters()
    }

    fn in_force(&self) -> Vec<String> {
        let mut out: Vec<String> = self.cut.iter().map(|(a, b)| format!("{a} ↔ {b} cut")).collect();
        out.extend(self.dark.iter().map(|(a, b)| format!("{a} ↔ {b} blackholed")));
        for ((from, to), p) in &self.proxies {
            let t = p.toxics(Direction::Upstream);
            if t != Toxics::default() {
                out.push(format!("{from} → {to}: {t:?}"));
            }
        }
        out
    }
}
