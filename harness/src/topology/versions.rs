//! nats-server versions in a topology: which version each node runs (`server_version` at the top, per hub
//! node, per leaf), and which of the options natslab renders each version accepts. An option a node's
//! version lacks is refused at load with the option, the version that introduced it and the node — never a
//! config that fails at boot, or one that `nats-server -t` rejects with "unknown field".

use super::model::{Leaf, Stream, Topology};

/// A nats-server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    /// `2.12.8`, as topologies and flags write it.
    fn from_str(s: &str) -> Result<Version, String> {
        let parts: Vec<Option<u32>> = s.trim().trim_start_matches('v').split('.').map(|p| p.parse().ok()).collect();
        match parts.as_slice() {
            [Some(a), Some(b), Some(c)] => Ok(Version(*a, *b, *c)),
            _ => Err(format!("`{s}` is not a nats-server version (write it as 2.12.8)")),
        }
    }
}

impl Version {
    /// The version in `nats-server --version` output (`nats-server: v2.15.1`).
    pub fn parse(text: &str) -> Option<Version> {
        let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
        let mut it = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        Some(Version(it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
    }
}

/// One option a node's rendered config or its streams use, with the first version that has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Where the topology declares it (`leaves[1].streams[0].allow_msg_ttl`).
    pub path: String,
    /// The option as nats-server knows it.
    pub option: &'static str,
    pub since: Version,
}

impl Feature {
    /// Why `node` on `version` cannot have this option, in the words both the loader and `up` use.
    pub fn lacked_by(&self, node: &str, version: Version) -> String {
        format!("{} needs nats-server {} or newer, and node {node} runs {version}", self.option, self.since)
    }
}

const V2_10: Version = Version(2, 10, 0);
const V2_11: Version = Version(2, 11, 0);
const V2_12: Version = Version(2, 12, 0);

/// The version-dependent options the stream at `path` uses.
fn stream_features(path: &str, s: &Stream, out: &mut Vec<Feature>) {
    let mut add = |key: &str, option: &'static str, since| out.push(Feature { path: format!("{path}.{key}"), option, since });
    if s.compression.is_some() {
        add("compression", "stream compression", V2_10);
    }
    for (k, src) in s.sources.iter().enumerate() {
        if src.subject_transform.is_some() {
            add(&format!("sources[{k}].subject_transform"), "source subject_transforms", V2_10);
        }
    }
    if s.allow_msg_ttl {
        add("allow_msg_ttl", "allow_msg_ttl (per-message TTL)", V2_11);
    }
    if s.allow_msg_counter {
        add("allow_msg_counter", "allow_msg_counter (counter streams)", V2_12);
    }
}

/// Every version-dependent option a node uses: a hub runs the hub streams, a leaf its own.
pub fn features_of(t: &Topology, node: &str) -> Vec<Feature> {
    let mut out = Vec::new();
    match t.leaves.iter().position(|l| l.name == node) {
        Some(i) => {
            let l: &Leaf = &t.leaves[i];
            if l.compression.is_some() {
                out.push(Feature { path: format!("leaves[{i}].compression"), option: "leafnodes.remotes[].compression", since: V2_10 });
            }
            for (j, s) in l.streams.iter().enumerate() {
                stream_features(&format!("leaves[{i}].streams[{j}]"), s, &mut out);
            }
        }
        None => {
            for (j, s) in t.hub.streams.iter().enumerate() {
                stream_features(&format!("hub.streams[{j}]"), s, &mut out);
            }
        }
    }
    out
}

/// The version a node is declared to run, and where that is declared: its own `server_version`, else the
/// topology's. `None`: whatever server natslab finds or installs.
pub fn declared_version<'t>(t: &'t Topology, node: &str) -> Option<(&'t str, String)> {
    if let Some(i) = t.leaves.iter().position(|l| l.name == node) {
        if let Some(v) = &t.leaves[i].server_version {
            return Some((v, format!("leaves[{i}].server_version")));
        }
    }
    if let Some(i) = t.hub.nodes.iter().position(|n| n.name == node) {
        if let Some(v) = &t.hub.nodes[i].server_version {
            return Some((v, format!("hub.nodes[{i}].server_version")));
        }
    }
    t.server_version.as_deref().map(|v| (v, "server_version".to_string()))
}

/// The options `node` uses that `version` lacks.
pub fn missing(t: &Topology, node: &str, version: Version) -> Vec<Feature> {
    features_of(t, node).into_iter().filter(|f| f.since > version).collect()
}

/// A pairing of versions known not to work together, found by running them.
#[derive(Debug, Clone, PartialEq)]
pub struct Incompatibility {
    /// The declaration that makes the pairing fail (`hub.no_advertise`).
    pub path: String,
    pub message: String,
    pub fix: &'static str,
}

const V2_15: Version = Version(2, 15, 0);

/// The known incompatibilities between the versions nodes run (`version_of` a node; `None`: unknown, so
/// nothing is claimed about it).
///
/// - A 2.15 hub with `leafnodes.no_advertise` sends its first INFO without `leafnode_urls` (nats-server
///   PR 8451, which stopped the hub's own URL leaking); leaves before 2.15 take such an INFO for a client
///   port, log "attempted to connect to wrong port" and never attach. Seen here with 2.15.0 and 2.15.1 hubs
///   and 2.11.11, 2.12.8 and 2.14.6 leaves; 2.14.6 hubs with no_advertise serve those leaves.
pub fn incompatibilities(t: &Topology, version_of: &dyn Fn(&str) -> Option<Version>) -> Vec<Incompatibility> {
    let mut out = Vec::new();
    if t.hub.no_advertise {
        let new_hubs: Vec<String> = t.hub.nodes.iter().filter_map(|n| version_of(&n.name).filter(|v| *v >= V2_15).map(|v| format!("{} ({v})", n.name))).collect();
        let old_leaves: Vec<String> = t.leaves.iter().filter_map(|l| version_of(&l.name).filter(|v| *v < V2_15).map(|v| format!("{} ({v})", l.name))).collect();
        if !new_hubs.is_empty() && !old_leaves.is_empty() {
            out.push(Incompatibility {
                path: "hub.no_advertise".into(),
                message: format!(
                    "hubs on nats-server 2.15 or newer with no_advertise ({}) refuse leaves older than 2.15 ({}): the leaf reads the \
                     hub's INFO, which has no leafnode URLs since 2.15, as a wrong port and never attaches",
                    new_hubs.join(", "),
                    old_leaves.join(", ")
                ),
                fix: "upgrade those leaves to 2.15 before the hubs, or keep no_advertise off until they are",
            });
        }
    }
    out
}

/// The versions the topology declares, node by node (`None` where a node's version is not declared or
/// does not parse).
pub fn declared(t: &Topology) -> impl Fn(&str) -> Option<Version> + '_ {
    move |node| declared_version(t, node).and_then(|(v, _)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!("2.12.8".parse::<Version>(), Ok(Version(2, 12, 8)));
        assert!("2.12".parse::<Version>().is_err());
        assert!(Version(2, 10, 25) < Version(2, 11, 0));
        assert_eq!(Version::parse("nats-server: v2.15.1"), Some(Version(2, 15, 1)));
    }

    #[test]
    fn a_node_lacking_an_option_is_named_with_the_option_and_its_version() {
        let text = "name: v\nserver_version: 2.15.1\nhub: { nodes: [{ name: hub-1 }], jetstream: {} }\nleaves:\n  - name: old\n    server_version: 2.10.25\n    remotes: [{ hubs: [hub-1] }]\n    jetstream: { domain: old }\n    streams: [{ name: S, subjects: [a], allow_msg_ttl: true }]\n";
        let e = crate::topology::parse_str(text, std::path::Path::new("v.yaml")).unwrap_err();
        let p = e.problems.iter().find(|p| p.path == "leaves[0].streams[0].allow_msg_ttl").unwrap_or_else(|| panic!("{e}"));
        assert!(p.message.contains("2.11.0") && p.message.contains("2.10.25") && p.message.contains("old"), "{}", p.message);
        let ok = text.replace("2.10.25", "2.11.0");
        assert!(crate::topology::parse_str(&ok, std::path::Path::new("v.yaml")).is_ok());
    }

    #[test]
    fn no_advertise_on_new_hubs_with_old_leaves_is_named() {
        let text = "name: v\nserver_version: 2.15.1\nhub: { nodes: [{ name: hub-1 }], no_advertise: true }\nleaves:\n  - name: old\n    server_version: 2.12.8\n    remotes: [{ hubs: [hub-1] }]\n";
        let e = crate::topology::parse_str(text, std::path::Path::new("v.yaml")).unwrap_err();
        let p = e.problems.iter().find(|p| p.path == "hub.no_advertise").unwrap_or_else(|| panic!("{e}"));
        assert!(p.message.contains("hub-1 (2.15.1)") && p.message.contains("old (2.12.8)"), "{}", p.message);
        assert!(crate::topology::parse_str(&text.replace("2.12.8", "2.15.0"), std::path::Path::new("v.yaml")).is_ok());
        assert!(crate::topology::parse_str(&text.replace("server_version: 2.15.1\n", "server_version: 2.14.6\n"), std::path::Path::new("v.yaml")).is_ok());
    }
}
