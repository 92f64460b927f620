//! The kernel side of a netns lab, through the stock tools (`ip`, `nft`, `tc`, `ss`): build a lab's network,
//! tear it (or any leftover) down, and apply rules and shaping inside a node's namespace. Synchronous and
//! quick (each call spawns a short-lived tool); the backend calls them off the async threads.
//!
//! The scripts themselves (nft rulesets, tc commands) are pure functions, tested without root.

use std::time::{Duration, Instant};

use super::names::{self, Names, NODE_IF};

/// Runs a tool; its stderr becomes the error.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    crate::tool::run_ok(program, args.iter().copied(), input)
}

/// Root, and the tools this backend drives.
pub fn check_tools() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { nix::libc::geteuid() };
    if uid != 0 {
        return Err(format!("running as uid {uid}"));
    }
    for (tool, flag, package) in [("ip", "-V", "iproute2"), ("tc", "-V", "iproute2"), ("ss", "-V", "iproute2"), ("nft", "-v", "nftables")] {
        run(tool, &[flag]).map_err(|e| format!("{e} (hint: apt-get install -y {package})"))?;
    }
    Ok(())
}

/// Builds the lab's network: the switch namespace with its bridge, the host's link to it, and per node a
/// namespace plugged into the bridge. `nodes` are (plan index, name). On error, what was built stays for
/// `remove_tag` to clear.
pub fn build(n: &Names, nodes: &[(usize, String)]) -> Result<(), String> {
    let sw = n.switch_ns();
    let (bridge, uplink, host) = (n.bridge(), n.bridge_uplink(), n.host_link());
    let host_cidr = format!("{}/24", names::host_ip(n.slot));
    run("ip", &["netns", "add", &sw])?;
    run("ip", &["-n", &sw, "link", "add", &bridge, "type", "bridge"])?;
    run("ip", &["-n", &sw, "link", "set", &bridge, "up"])?;
    run("ip", &["link", "add", &host, "type", "veth", "peer", "name", &uplink, "netns", &sw])?;
    run("ip", &["-n", &sw, "link", "set", &uplink, "master", &bridge, "up"])?;
    run("ip", &["addr", "add", &host_cidr, "dev", &host])?;
    run("ip", &["link", "set", &host, "up"])?;
    for (i, node) in nodes {
        let ns = n.node_ns(node);
        let port = n.node_port(*i);
        let cidr = format!("{}/24", names::node_ip(n.slot, *i));
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", NODE_IF, "netns", &ns])?;
        run("ip", &["-n", &sw, "link", "set", &port, "master", &bridge, "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", NODE_IF])?;
        run("ip", &["-n", &ns, "link", "set", NODE_IF, "up"])?;
    }
    Ok(())
}

/// A listening socket bound inside namespace `ns`.
pub fn bind_in(ns: &str, addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    crate::net::bind_in_netns(std::path::Path::new(&format!("/run/netns/{ns}")), addr)
}

/// Namespaces on this host (iproute2 keeps them as files under /run/netns).
pub fn namespaces() -> Vec<String> {
    list_dir("/run/netns")
}

/// Links in the host's namespace.
pub fn host_links() -> Vec<String> {
    list_dir("/sys/class/net")
}

/// Host links holding the IPv4 address `ip`.
pub fn host_links_with(ip: &str) -> Vec<String> {
    let out = run("ip", &["-o", "-4", "addr", "show"]).unwrap_or_default();
    let prefix = format!("{ip}/");
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.nth(1)?;
            let addr = f.nth(1)?;
            addr.starts_with(&prefix).then(|| name.to_string())
        })
        .collect()
}

fn list_dir(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut v: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Processes living in a namespace.
pub fn pids_in(ns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", ns]).map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect()).unwrap_or_default()
}

/// What `remove_tag` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub processes: usize,
    /// What could not be removed, and why.
    pub failures: Vec<String>,
}

/// Removes everything carrying `tag`: kills the processes in its namespaces (SIGKILL), deletes its host
/// links (their veth peers go with them) and its namespaces (the bridge and the remaining ports go with the
/// switch namespace). Safe on partial state.
pub fn remove_tag(tag: &str) -> Removed {
    let mut r = Removed::default();
    let ours = |name: &String| names::tag_in(name) == Some(tag);
    let spaces: Vec<String> = namespaces().into_iter().filter(ours).collect();
    for ns in &spaces {
        r.processes += kill_in(ns, &mut r.failures);
    }
    for link in host_links().into_iter().filter(ours) {
        match run("ip", &["link", "del", &link]) {
            Ok(_) => r.links.push(link),
            // Its peer's deletion may have taken it already.
            Err(e) if !host_links().contains(&link) => drop(e),
            Err(e) => r.failures.push(e),
        }
    }
    for ns in spaces {
        match run("ip", &["netns", "del", &ns]) {
            Ok(_) => r.namespaces.push(ns),
            Err(e) => r.failures.push(e),
        }
    }
    r
}

/// SIGKILLs every process in `ns` and waits (bounded) until none is left; returns how many it killed.
fn kill_in(ns: &str, failures: &mut Vec<String>) -> usize {
    let pids = pids_in(ns);
    for &pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_in(ns).is_empty() {
        if Instant::now() > deadline {
            failures.push(format!("processes {:?} in {ns} survived SIGKILL", pids_in(ns)));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pids.len()
}

/// The nft ruleset of one node: traffic to and from `cut` peers is dropped and the node's own connection
/// attempts to them are refused at once (a partition); traffic with `dark` peers is dropped silently, so open
/// connections stay open and only pings notice (a blackhole). Replaces whatever the table held, atomically.
pub fn ruleset(cut: &[String], dark: &[String]) -> String {
    // Creating then deleting the table makes the delete valid whether or not it existed.
    let mut s = String::from("table inet natslab\ndelete table inet natslab\n");
    if cut.is_empty() && dark.is_empty() {
        return s;
    }
    let all: Vec<String> = cut.iter().chain(dark).cloned().collect();
    let set = |ips: &[String]| format!("{{ {} }}", ips.join(", "));
    s.push_str("table inet natslab {\n");
    s.push_str("  chain input {\n    type filter hook input priority 0; policy accept;\n");
    s.push_str(&format!("    ip saddr {} drop\n  }}\n", set(&all)));
    s.push_str("  chain output {\n    type filter hook output priority 0; policy accept;\n");
    if !cut.is_empty() {
        s.push_str(&format!("    ip daddr {} meta l4proto tcp reject with tcp reset\n", set(cut)));
    }
    s.push_str(&format!("    ip daddr {} drop\n  }}\n}}\n", set(&all)));
    s
}

/// Installs a node's ruleset in its namespace.
pub fn apply_rules(ns: &str, ruleset: &str) -> Result<(), String> {
    run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(ruleset)).map(drop)
}

/// Aborts the TCP connections in `ns` with `peer` (both ends learn at once: the kernel sends a reset),
/// as a link proxy's cut does.
pub fn kill_connections(ns: &str, peer: &str) -> Result<(), String> {
    run("ip", &["netns", "exec", ns, "ss", "-K", "-t", "dst", peer]).map(drop)
}

/// The burst a cap allows (bytes): the link proxy's (a tenth of a second), but at least two full frames,
/// below which htb cannot send a frame at all.
pub fn cap_burst(bytes_per_s: u64) -> u64 {
    crate::net::shape::burst_bytes(bytes_per_s).max(2 * 1514)
}

/// The largest packet htb may send on credit (a GSO segment of a veth): how far beyond `rate × t + burst`
/// one transfer may get. For honest lower bounds on transfer times.
pub const MAX_SEGMENT: u64 = 65_536 + 256;

/// `tc -batch` lines that cap what a node sends to each peer (by destination address): an htb root whose
/// unclassified traffic (the harness, uncapped peers) bypasses every class, one class and filter per peer.
pub fn shaping(caps: &[(String, u64)]) -> String {
    let mut s = format!("qdisc add dev {NODE_IF} root handle 1: htb\n");
    for (k, (ip, bytes_per_s)) in caps.iter().enumerate() {
        let class = format!("1:{:x}", k + 1);
        let bits = bytes_per_s.saturating_mul(8).max(8);
        let burst = cap_burst(*bytes_per_s);
        s.push_str(&format!("class add dev {NODE_IF} parent 1: classid {class} htb rate {bits}bit ceil {bits}bit burst {burst}\n"));
        s.push_str(&format!("filter add dev {NODE_IF} parent 1: protocol ip prio 1 u32 match ip dst {ip}/32 flowid {class}\n"));
    }
    s
}

/// Replaces a node's shaping: none left where `caps` is empty.
pub fn apply_shaping(ns: &str, caps: &[(String, u64)]) -> Result<(), String> {
    // No root qdisc to delete is fine: the veth's default has no handle.
    let _ = run("tc", &["-n", ns, "qdisc", "del", "dev", NODE_IF, "root"]);
    if caps.is_empty() {
        return Ok(());
    }
    run_with_input("tc", &["-n", ns, "-batch", "-"], Some(&shaping(caps))).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_ruleset_only_removes_the_table() {
        let s = ruleset(&[], &[]);
        assert_eq!(s, "table inet natslab\ndelete table inet natslab\n");
    }

    #[test]
    fn a_partition_refuses_and_drops_a_blackhole_only_drops() {
        let s = ruleset(&["198.18.3.2".into()], &["198.18.3.4".into()]);
        assert!(s.contains("ip saddr { 198.18.3.2, 198.18.3.4 } drop"), "{s}");
        assert!(s.contains("ip daddr { 198.18.3.2 } meta l4proto tcp reject with tcp reset"), "{s}");
        assert!(!s.contains("ip daddr { 198.18.3.4 } meta l4proto tcp reject"), "{s}");
        assert!(s.contains("ip daddr { 198.18.3.2, 198.18.3.4 } drop"), "{s}");
    }

    #[test]
    fn shaping_classifies_by_peer_address() {
        let s = shaping(&[("198.18.3.2".into(), 125_000), ("198.18.3.5".into(), 1_000)]);
        assert!(s.starts_with("qdisc add dev eth0 root handle 1: htb\n"));
        assert!(s.contains("classid 1:1 htb rate 1000000bit ceil 1000000bit burst 12500"), "{s}");
        assert!(s.contains("match ip dst 198.18.3.2/32 flowid 1:1"), "{s}");
        assert!(s.contains("classid 1:2 htb rate 8000bit ceil 8000bit burst 3028"), "{s}");
        assert!(s.contains("match ip dst 198.18.3.5/32 flowid 1:2"), "{s}");
    }
}
