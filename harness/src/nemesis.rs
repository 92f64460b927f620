//! Faults as data: the one fault vocabulary of natslab. A `Fault` is what a family, `natslab fault`, the
//! attached backend's fault channel and the NixOS test script all speak — its JSON form is the wire format
//! (`{"op": "kill", "node": "hub-1"}`). Every fault has an inverse (kill/start, pause/resume,
//! power-loss/start, isolate/rejoin, partition/heal, slow and cap/fast, blackhole/restore); `Lab::apply`
//! journals the inverse and `Lab::undo_all` is the one final heal (Jepsen's `:final-generator`).
//!
//! A partition is a pure value — a *grudge*: for each node, the nodes it cannot hear — built by small helpers
//! (isolate one node, split a minority from a majority, cut a leaf from every hub). Backends say which
//! capabilities they have; a check that needs one they lack is skipped, saying which.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Node → the nodes whose traffic it drops. Symmetric when built by the helpers here.
pub type Grudge = BTreeMap<String, BTreeSet<String>>;

/// What a backend can do to a lab. A fault needs exactly one capability (`Fault::needs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Sudden death of a node's process (`kill -9`), and starting it again.
    Kill,
    /// Freezing a node (SIGSTOP) and thawing it.
    Pause,
    /// Cutting a machine's power: unsynced writes are lost (a VM's `crash()`); started again by `start`.
    PowerLoss,
    /// Cutting one whole node off the network, and back.
    Isolate,
    /// Cutting any set of links (a grudge), not only whole nodes.
    Partition,
    /// Links that stay open but carry nothing (half-open).
    Blackhole,
    Latency,
    Bandwidth,
    /// Starting a throwaway server beside the lab, on its network (e.g. an impostor leaf). Not a fault.
    Guest,
    /// Stopping a node gracefully (lame duck) and starting it on another nats-server version. Not a fault.
    Upgrade,
    /// Rewriting a running node's config and secrets and having it reload them. Not a fault.
    Reload,
    /// Destroying a stopped node's JetStream store (a disaster-recovery drill).
    Wipe,
}

impl Capability {
    pub const ALL: [Capability; 12] = [
        Capability::Kill,
        Capability::Pause,
        Capability::PowerLoss,
        Capability::Isolate,
        Capability::Partition,
        Capability::Blackhole,
        Capability::Latency,
        Capability::Bandwidth,
        Capability::Guest,
        Capability::Upgrade,
        Capability::Reload,
        Capability::Wipe,
    ];

    /// What the capability lets a backend do, for "the X backend cannot ..." skip reasons.
    pub fn verb(self) -> &'static str {
        match self {
            Capability::Kill => "kill nodes",
            Capability::Pause => "pause nodes",
            Capability::PowerLoss => "cut a node's power",
            Capability::Isolate => "isolate a node from the network",
            Capability::Partition => "partition links",
            Capability::Blackhole => "blackhole links",
            Capability::Latency => "add latency to links",
            Capability::Bandwidth => "cap the bandwidth of links",
            Capability::Guest => "start a throwaway server beside the lab",
            Capability::Upgrade => "swap a running node's nats-server for another version",
            Capability::Reload => "rewrite a running node's config and reload it",
            Capability::Wipe => "destroy a node's JetStream store",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Kill => "kill",
            Capability::Pause => "pause",
            Capability::PowerLoss => "power-loss",
            Capability::Isolate => "isolate",
            Capability::Partition => "partition",
            Capability::Blackhole => "blackhole",
            Capability::Latency => "latency",
            Capability::Bandwidth => "bandwidth",
            Capability::Guest => "guest",
            Capability::Upgrade => "upgrade",
            Capability::Reload => "reload",
            Capability::Wipe => "wipe",
        }
    }

    /// The capability called `s` (as in an inventory's `supports`).
    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == s)
    }
}

pub type Capabilities = BTreeSet<Capability>;

/// One fault, or the inverse that undoes it. The serde form is the wire format of every fault channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// `kill -9`: the process dies, its store survives (fsynced or not: the kernel keeps the page cache).
    Kill { node: String },
    /// Starts a killed or powered-off node again (with its old store).
    Start { node: String },
    Pause { node: String },
    Resume { node: String },
    /// The machine loses power: writes the kernel had not synced are gone.
    PowerLoss { node: String },
    /// The node is cut off from every other node.
    Isolate { node: String },
    /// Undoes `Isolate` of that node.
    Rejoin { node: String },
    /// Cuts every link the grudge names (in addition to any partition in force).
    Partition { grudge: Grudge },
    /// Undoes every partition and isolation.
    Heal,
    /// Links between the two stay open but carry nothing (the half-open case only pings detect).
    Blackhole { a: String, b: String },
    Restore { a: String, b: String },
    /// Added latency (± jitter) on every link between the two nodes, both directions.
    Slow {
        a: String,
        b: String,
        #[serde(with = "humantime_serde")]
        latency: Duration,
        #[serde(with = "humantime_serde", default)]
        jitter: Duration,
    },
    /// Bandwidth cap (bytes/s) on every link between the two nodes, both directions.
    Cap { a: String, b: String, bytes_per_s: u64 },
    /// No latency, no cap between the two.
    Fast { a: String, b: String },
}

impl Fault {
    /// The fault that undoes this one (`None` for the undoing faults themselves).
    pub fn inverse(&self) -> Option<Fault> {
        match self {
            Fault::Kill { node } | Fault::PowerLoss { node } => Some(Fault::Start { node: node.clone() }),
            Fault::Pause { node } => Some(Fault::Resume { node: node.clone() }),
            Fault::Isolate { node } => Some(Fault::Rejoin { node: node.clone() }),
            Fault::Partition { .. } => Some(Fault::Heal),
            Fault::Slow { a, b, .. } | Fault::Cap { a, b, .. } => Some(Fault::Fast { a: a.clone(), b: b.clone() }),
            Fault::Blackhole { a, b } => Some(Fault::Restore { a: a.clone(), b: b.clone() }),
            Fault::Start { .. } | Fault::Resume { .. } | Fault::Rejoin { .. } | Fault::Heal | Fault::Fast { .. } | Fault::Restore { .. } => None,
        }
    }

    /// Whether `self`, applied, also undoes `pending` (an inverse left in a journal): a heal undoes every
    /// rejoin still owed, a start undoes a start owed for the same node, and so on.
    pub fn settles(&self, pending: &Fault) -> bool {
        match (self, pending) {
            (Fault::Heal, Fault::Heal | Fault::Rejoin { .. }) => true,
            (a, b) => a == b,
        }
    }

    /// The capability a backend needs for this fault. `Start` is part of every backend's lifecycle.
    pub fn needs(&self) -> Option<Capability> {
        Some(match self {
            Fault::Start { .. } => return None,
            Fault::Kill { .. } => Capability::Kill,
            Fault::Pause { .. } | Fault::Resume { .. } => Capability::Pause,
            Fault::PowerLoss { .. } => Capability::PowerLoss,
            Fault::Isolate { .. } | Fault::Rejoin { .. } | Fault::Heal => Capability::Isolate,
            Fault::Partition { .. } => Capability::Partition,
            Fault::Blackhole { .. } | Fault::Restore { .. } => Capability::Blackhole,
            Fault::Slow { .. } => Capability::Latency,
            Fault::Cap { .. } => Capability::Bandwidth,
            Fault::Fast { .. } => return None,
        })
    }

    /// Every node the fault names.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Fault::Kill { node }
            | Fault::Start { node }
            | Fault::Pause { node }
            | Fault::Resume { node }
            | Fault::PowerLoss { node }
            | Fault::Isolate { node }
            | Fault::Rejoin { node } => vec![node],
            Fault::Partition { grudge } => {
                let all: BTreeSet<&str> = grudge.keys().chain(grudge.values().flatten()).map(String::as_str).collect();
                all.into_iter().collect()
            }
            Fault::Heal => vec![],
            Fault::Blackhole { a, b } | Fault::Restore { a, b } | Fault::Slow { a, b, .. } | Fault::Cap { a, b, .. } | Fault::Fast { a, b } => {
                vec![a, b]
            }
        }
    }

    /// The operation's name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Start { .. } => "start",
            Fault::Pause { .. } => "pause",
            Fault::Resume { .. } => "resume",
            Fault::PowerLoss { .. } => "power-loss",
            Fault::Isolate { .. } => "isolate",
            Fault::Rejoin { .. } => "rejoin",
            Fault::Partition { .. } => "partition",
            Fault::Heal => "heal",
            Fault::Blackhole { .. } => "blackhole",
            Fault::Restore { .. } => "restore",
            Fault::Slow { .. } => "slow",
            Fault::Cap { .. } => "cap",
            Fault::Fast { .. } => "fast",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Partition { grudge } => {
                let pairs: Vec<String> = cut_pairs(grudge).into_iter().map(|(a, b)| format!("{a}/{b}")).collect();
                write!(f, "partition {}", pairs.join(" "))
            }
            Fault::Heal => write!(f, "heal"),
            Fault::Slow { a, b, latency, jitter } => {
                write!(f, "slow {a} {b} {} ms ± {} ms", latency.as_millis(), jitter.as_millis())
            }
            Fault::Cap { a, b, bytes_per_s } => write!(f, "cap {a} {b} {bytes_per_s} B/s"),
            other => write!(f, "{} {}", other.op(), other.nodes().join(" ")),
        }
    }
}

/// durations as `"150ms"` on the wire.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Both directions: every node in `a` drops every node in `b`, and the other way round.
pub fn split(a: &[&str], b: &[&str]) -> Grudge {
    let mut g = Grudge::new();
    for x in a {
        for y in b {
            if x != y {
                g.entry(x.to_string()).or_default().insert(y.to_string());
                g.entry(y.to_string()).or_default().insert(x.to_string());
            }
        }
    }
    g
}

/// One node cut off from every other node.
pub fn isolate(node: &str, all: &[&str]) -> Grudge {
    let others: Vec<&str> = all.iter().copied().filter(|n| *n != node).collect();
    split(&[node], &others)
}

/// The first `len/2` nodes (a minority for odd sizes) against the rest; e.g. 1 of 3 hubs.
pub fn minority(nodes: &[&str]) -> (Vec<String>, Grudge) {
    let k = nodes.len() / 2;
    let (min, maj) = nodes.split_at(k.max(1).min(nodes.len()));
    (min.iter().map(|s| s.to_string()).collect(), split(min, maj))
}

/// A leaf cut from every hub (its WAN link is down), the hubs still meshed among themselves.
pub fn cut_leaf(leaf: &str, hubs: &[&str]) -> Grudge {
    split(&[leaf], hubs)
}

/// Whether `from` can hear `to` under a grudge.
pub fn hears(g: &Grudge, from: &str, to: &str) -> bool {
    !g.get(from).is_some_and(|s| s.contains(to))
}

/// Both grudges at once.
pub fn union(a: &Grudge, b: &Grudge) -> Grudge {
    let mut out = a.clone();
    for (n, drops) in b {
        out.entry(n.clone()).or_default().extend(drops.iter().cloned());
    }
    out
}

/// The grudge without any cut that involves `node`.
pub fn without(g: &Grudge, node: &str) -> Grudge {
    g.iter()
        .filter(|(n, _)| *n != node)
        .map(|(n, drops)| (n.clone(), drops.iter().filter(|d| *d != node).cloned().collect::<BTreeSet<_>>()))
        .filter(|(_, drops)| !drops.is_empty())
        .collect()
}

/// Pairs (a, b) with a < b that the grudge cuts in at least one direction: what a backend must block.
pub fn cut_pairs(g: &Grudge) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (a, bs) in g {
        for b in bs {
            let pair = if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
            out.insert(pair);
        }
    }
    out
}

/// The nodes of `all` that a grudge cuts off from every other node of `all`, when that is all it does
/// (every cut involves one of them); `None` for a finer partition. What a backend that can only isolate
/// whole nodes can do of a grudge.
pub fn isolated_nodes(g: &Grudge, all: &[&str]) -> Option<BTreeSet<String>> {
    let isolated: BTreeSet<String> = all
        .iter()
        .filter(|n| all.iter().filter(|o| *o != *n).all(|o| !hears(g, n, o) && !hears(g, o, n)))
        .map(|n| n.to_string())
        .collect();
    let covered = cut_pairs(g).iter().all(|(a, b)| isolated.contains(a) || isolated.contains(b));
    covered.then_some(isolated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverses_pair_up() {
        let kill = Fault::Kill { node: "a".into() };
        assert_eq!(kill.inverse(), Some(Fault::Start { node: "a".into() }));
        assert_eq!(Fault::PowerLoss { node: "a".into() }.inverse(), Some(Fault::Start { node: "a".into() }));
        assert_eq!(Fault::Partition { grudge: Grudge::new() }.inverse(), Some(Fault::Heal));
        assert_eq!(Fault::Isolate { node: "a".into() }.inverse(), Some(Fault::Rejoin { node: "a".into() }));
        assert_eq!(Fault::Heal.inverse(), None);
        let slow = Fault::Slow { a: "x".into(), b: "y".into(), latency: Duration::from_millis(50), jitter: Duration::ZERO };
        assert_eq!(slow.inverse(), Some(Fault::Fast { a: "x".into(), b: "y".into() }));
        assert!(Fault::Heal.settles(&Fault::Rejoin { node: "a".into() }));
        assert!(!Fault::Rejoin { node: "a".into() }.settles(&Fault::Heal));
    }

    #[test]
    fn the_wire_format_is_the_json_of_a_fault() {
        let kill: Fault = serde_json::from_str(r#"{"op":"kill","node":"hub-1"}"#).unwrap();
        assert_eq!(kill, Fault::Kill { node: "hub-1".into() });
        assert_eq!(serde_json::to_string(&Fault::PowerLoss { node: "n".into() }).unwrap(), r#"{"op":"power-loss","node":"n"}"#);
        let slow = Fault::Slow { a: "a".into(), b: "b".into(), latency: Duration::from_millis(150), jitter: Duration::from_millis(5) };
        let text = serde_json::to_string(&slow).unwrap();
        assert_eq!(text, r#"{"op":"slow","a":"a","b":"b","latency":"150ms","jitter":"5ms"}"#);
        assert_eq!(serde_json::from_str::<Fault>(&text).unwrap(), slow);
        assert!(serde_json::from_str::<Fault>(r#"{"op":"kill","node":"a","extra":1}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"op":"explode"}"#).is_err());
    }

    #[test]
    fn partitions_are_symmetric_values() {
        let hubs = ["hub-1", "hub-2", "hub-3"];
        let g = isolate("hub-2", &hubs);
        assert!(!hears(&g, "hub-2", "hub-1") && !hears(&g, "hub-1", "hub-2"));
        assert!(hears(&g, "hub-1", "hub-3"));
        let (min, g) = minority(&hubs);
        assert_eq!(min, vec!["hub-1".to_string()]);
        assert_eq!(cut_pairs(&g).len(), 2);
        let g = cut_leaf("leaf", &hubs);
        assert_eq!(cut_pairs(&g).len(), 3);
        assert!(hears(&g, "hub-1", "hub-2"));
        assert!(!hears(&g, "hub-3", "leaf"));
    }

    #[test]
    fn unions_and_removals_of_grudges() {
        let all = ["a", "b", "c"];
        let g = union(&isolate("a", &all), &isolate("b", &all));
        assert_eq!(cut_pairs(&g).len(), 3);
        let g = without(&g, "a");
        assert_eq!(cut_pairs(&g), BTreeSet::from([("b".to_string(), "c".to_string())]));
        assert!(without(&isolate("a", &all), "a").is_empty());
    }

    #[test]
    fn whole_node_isolations_are_recognised() {
        let all = ["a", "b", "c", "d"];
        assert_eq!(isolated_nodes(&isolate("a", &all), &all), Some(BTreeSet::from(["a".to_string()])));
        // A leaf cut from the hubs only (it still hears d) is no whole-node isolation.
        assert_eq!(isolated_nodes(&split(&["a"], &["b", "c"]), &all), None);
        assert_eq!(isolated_nodes(&Grudge::new(), &all), Some(BTreeSet::new()));
    }
}
