//! Faults as data. Every fault has an inverse (kill/start, pause/resume, partition/heal, slow/fast,
//! blackhole/restore); a partition is a pure value — a *grudge*: for each node, the nodes it cannot hear —
//! built by small helpers (isolate one node, split a minority from a majority, cut a leaf from every hub).
//! Backends say which kinds they can perform; scenarios ask, and record a skip where they cannot.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::backend::FaultKind;

/// Node → the nodes whose traffic it drops. Symmetric when built by the helpers here.
pub type Grudge = BTreeMap<String, BTreeSet<String>>;

/// One fault, or the inverse that undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Kill(String),
    Start(String),
    Pause(String),
    Resume(String),
    Partition(Grudge),
    Heal,
    /// Added latency (± jitter) on every link between the two nodes, both directions.
    Slow { a: String, b: String, latency: Duration, jitter: Duration },
    /// Bandwidth cap (bytes/s) on every link between the two nodes, both directions.
    Cap { a: String, b: String, bytes_per_s: u64 },
    Fast { a: String, b: String },
    /// Links between the two stay open but carry nothing (the half-open case only pings detect).
    Blackhole { a: String, b: String },
    Restore { a: String, b: String },
}

impl Fault {
    /// The fault that undoes this one (`None` for the inverses themselves).
    pub fn inverse(&self) -> Option<Fault> {
        match self {
            Fault::Kill(n) => Some(Fault::Start(n.clone())),
            Fault::Pause(n) => Some(Fault::Resume(n.clone())),
            Fault::Partition(_) => Some(Fault::Heal),
            Fault::Slow { a, b, .. } | Fault::Cap { a, b, .. } => Some(Fault::Fast { a: a.clone(), b: b.clone() }),
            Fault::Blackhole { a, b } => Some(Fault::Restore { a: a.clone(), b: b.clone() }),
            Fault::Start(_) | Fault::Resume(_) | Fault::Heal | Fault::Fast { .. } | Fault::Restore { .. } => None,
        }
    }

    /// Which capability a backend needs for this fault.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) | Fault::Start(_) => FaultKind::Kill,
            Fault::Pause(_) | Fault::Resume(_) => FaultKind::Pause,
            Fault::Partition(_) | Fault::Heal => FaultKind::Partition,
            Fault::Slow { .. } | Fault::Fast { .. } => FaultKind::Latency,
            Fault::Cap { .. } => FaultKind::Bandwidth,
            Fault::Blackhole { .. } | Fault::Restore { .. } => FaultKind::Blackhole,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverses_pair_up() {
        assert_eq!(Fault::Kill("a".into()).inverse(), Some(Fault::Start("a".into())));
        assert_eq!(Fault::Partition(Grudge::new()).inverse(), Some(Fault::Heal));
        assert_eq!(Fault::Heal.inverse(), None);
        let slow = Fault::Slow { a: "x".into(), b: "y".into(), latency: Duration::from_millis(50), jitter: Duration::ZERO };
        assert_eq!(slow.inverse(), Some(Fault::Fast { a: "x".into(), b: "y".into() }));
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
}
