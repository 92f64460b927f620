//! Names and addresses of a netns lab. Every name carries the run's tag (6 hex characters of a hash of the
//! run id), so leftovers of a run are found by name alone; interface names stay within the kernel's 15
//! characters.
//!
//! - `natslab-<tag>`: the switch namespace, holding the bridge `nlb<tag>`, its port `nlp<tag>` towards the
//!   host and one port `nlv<tag><i>` per node.
//! - `natslab-<tag>-<node>`: node `i`'s namespace; its interface `eth0` has `198.18.<slot>.<i+1>/24`.
//! - `nlh<tag>`: the host's end, `198.18.<slot>.254/24`; the harness reaches every node through it.
//!
//! Why the bridge lives in a namespace of its own and not in the host's: where `br_netfilter` is loaded and
//! the host's FORWARD policy is drop (as Docker leaves it), frames bridged between two nodes traverse the
//! host's iptables and are dropped. A fresh namespace has no such rules, and the host only ever sends and
//! receives its own packets (no forwarding).

use sha2::{Digest, Sha256};

/// Every namespace natslab creates starts with this.
pub const NS_PREFIX: &str = "natslab-";
/// Link name prefixes: host end, bridge, bridge port to the host, node port.
pub const LINK_PREFIXES: [&str; 4] = ["nlh", "nlb", "nlp", "nlv"];
pub const TAG_LEN: usize = 6;
/// The node's interface inside its namespace.
pub const NODE_IF: &str = "eth0";
/// The host's address on every lab's bridge.
pub const HOST_OCTET: usize = 254;

/// The tag of a run id: short, stable, hex.
pub fn tag_of(run_id: &str) -> String {
    let digest = Sha256::digest(run_id.as_bytes());
    digest.iter().take(TAG_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

/// The tag inside a namespace or link name of ours, if it is one.
pub fn tag_in(name: &str) -> Option<&str> {
    let hex = |t: &str| t.len() == TAG_LEN && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if let Some(rest) = name.strip_prefix(NS_PREFIX) {
        let tag = rest.get(..TAG_LEN)?;
        let tail = &rest[TAG_LEN..];
        return (hex(tag) && (tail.is_empty() || tail.len() > 1 && tail.starts_with('-'))).then_some(tag);
    }
    let prefix = LINK_PREFIXES.iter().find(|p| name.starts_with(**p))?;
    let rest = &name[prefix.len()..];
    let tag = rest.get(..TAG_LEN)?;
    let tail = &rest[TAG_LEN..];
    let tail_ok = if *prefix == "nlv" { !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) } else { tail.is_empty() };
    (hex(tag) && tail_ok).then_some(tag)
}

/// The names of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub tag: String,
    pub slot: usize,
}

impl Names {
    pub fn new(run_id: &str, slot: usize) -> Names {
        Names { tag: tag_of(run_id), slot }
    }
    pub fn switch_ns(&self) -> String {
        format!("{NS_PREFIX}{}", self.tag)
    }
    pub fn node_ns(&self, node: &str) -> String {
        format!("{NS_PREFIX}{}-{node}", self.tag)
    }
    pub fn host_link(&self) -> String {
        format!("nlh{}", self.tag)
    }
    pub fn bridge(&self) -> String {
        format!("nlb{}", self.tag)
    }
    pub fn bridge_uplink(&self) -> String {
        format!("nlp{}", self.tag)
    }
    pub fn node_port(&self, i: usize) -> String {
        format!("nlv{}{i}", self.tag)
    }
}

/// Node `i`'s address in slot `slot` (hubs first, then leaves, as the plan numbers them).
pub fn node_ip(slot: usize, i: usize) -> String {
    format!("198.18.{slot}.{}", i + 1)
}

pub fn host_ip(slot: usize) -> String {
    format!("198.18.{slot}.{HOST_OCTET}")
}

/// How many nodes one lab can have: `.1` to `.253` (`.254` is the host, `.255` broadcast).
pub const MAX_NODES: usize = HOST_OCTET - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_tag_and_fit_the_kernel_limit() {
        let n = Names::new("cim-reference-abcdef12", 7);
        assert_eq!(n.tag.len(), TAG_LEN);
        for link in [n.host_link(), n.bridge(), n.bridge_uplink(), n.node_port(MAX_NODES - 1)] {
            assert!(link.len() <= 15, "{link}");
            assert_eq!(tag_in(&link), Some(n.tag.as_str()), "{link}");
        }
        assert_eq!(tag_in(&n.switch_ns()), Some(n.tag.as_str()));
        assert_eq!(tag_in(&n.node_ns("hub-1")), Some(n.tag.as_str()));
        assert_ne!(Names::new("other-run", 7).tag, n.tag);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in ["eth0", "docker0", "natslab", "natslab-xyz123-a", "nlbABCDEF", "nlh12", "nlv1234567x", "nlv123456", "nlb1234567", "veth1234"] {
            assert_eq!(tag_in(name), None, "{name}");
        }
    }

    #[test]
    fn addresses_stay_in_the_benchmarking_range() {
        assert_eq!(node_ip(3, 0), "198.18.3.1");
        assert_eq!(host_ip(250), "198.18.250.254");
    }
}
