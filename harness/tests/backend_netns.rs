//! `--backend netns` for real (root): every node a host in its own network namespace on a bridge, addressed in
//! 198.18.0.0/15. The whole scenario suite passes on cim-reference; partitions, blackholes and bandwidth caps
//! act on real kernel state (nftables rules, htb classes); and a lab killed with SIGKILL leaves nothing behind
//! once `natslab down --all` has run.
//!
//! Without root or iproute2/nftables these tests print `skipped: ...`; with NATSLAB_REQUIRE_ALL set (CI) they
//! fail instead.

mod common;

use natslab::nemesis::Fault;

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use natslab::backend::netns::{self, names, NetnsBackend};
use natslab::backend::BackendKind;
use natslab::lab::{Lab, LabInfo, Quiet, UpOptions};
use natslab::nemesis;
use natslab::scenario::{Family, Silent, Verdict};

fn netns_opts(root: &tempfile::TempDir) -> UpOptions {
    UpOptions { backend: BackendKind::Netns, runs_root: Some(root.path().to_path_buf()), ..UpOptions::default() }
}

async fn up_netns(root: &tempfile::TempDir) -> Lab {
    Lab::up(load("cim-reference.yaml"), &netns_opts(root), &Quiet).await.unwrap_or_else(|e| panic!("netns lab did not come up: {e}"))
}

/// Polls `cond` until it holds or `within` passes; how long it took, if it held.
async fn wait_until<F, Fut>(within: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs a fault and says how long applying it took (the printed figures count from when it was in place).
async fn timed<T>(what: &str, f: impl Future<Output = natslab::Result<T>>) -> T {
    let start = Instant::now();
    let out = f.await.unwrap_or_else(|e| panic!("{what}: {e}"));
    println!("  ({what} applied in {} ms)", ms(start.elapsed()));
    out
}

fn netns_of(lab: &Lab) -> &NetnsBackend {
    lab.backend::<NetnsBackend>().expect("a netns lab")
}

fn names_of(lab: &Lab) -> names::Names {
    netns_of(lab).names().cloned().expect("a netns lab has built its network")
}

fn namespace_of(lab: &Lab, node: &str) -> String {
    netns_of(lab).namespace(node).expect("node has a namespace")
}

/// Namespaces and host links that carry `tag`.
fn remains_of(tag: &str) -> Vec<String> {
    let ours = |n: &String| names::tag_in(n) == Some(tag);
    netns::net::namespaces().into_iter().filter(ours).chain(netns::net::host_links().into_iter().filter(ours)).collect()
}

enum Teardown {
    Shutdown,
    /// `Drop` only, as when a test panics or `Lab::up` fails half-way.
    Drop,
}

/// Tears a lab down and proves its namespaces and links went with it (the kernel frees a namespace's
/// interfaces asynchronously: polled).
async fn teardown_clean(lab: Lab, how: Teardown) {
    let tag = names_of(&lab).tag;
    assert!(!remains_of(&tag).is_empty(), "the lab's namespaces exist while it runs");
    match how {
        Teardown::Shutdown => lab.shutdown().await,
        Teardown::Drop => drop(lab),
    }
    let gone = wait_until(Duration::from_secs(10), || async { remains_of(&tag).is_empty() }).await;
    assert!(gone.is_some(), "left behind after shutdown: {:?}", remains_of(&tag));
}

fn hub_names(lab: &Lab) -> Vec<String> {
    lab.plan.hubs().map(|h| h.name.clone()).collect()
}

async fn hub_lists_leaf(lab: &Lab, hub: &str, leaf: &str) -> bool {
    lab.monitor.leafs(lab.monitor_url(hub).unwrap()).await.is_ok_and(|ls| ls.iter().any(|(n, _)| n == leaf))
}

async fn uplinks(lab: &Lab, leaf: &str) -> Option<usize> {
    lab.monitor.uplinks(lab.monitor_url(leaf).unwrap()).await.ok().map(|u| u.len())
}

async fn routes_of(lab: &Lab, hub: &str) -> Option<Vec<String>> {
    lab.monitor.route_peers(lab.monitor_url(hub).unwrap()).await.ok()
}

async fn full_mesh(lab: &Lab, hubs: &[String]) -> bool {
    for h in hubs {
        let want: Vec<String> = hubs.iter().filter(|o| *o != h).cloned().collect();
        if routes_of(lab, h).await.as_ref() != Some(&want) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------------------

/// (1) Every scenario family, every check, on cim-reference with the netns backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_passes_on_cim_reference() {
    if !netns_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let t = load("cim-reference.yaml");
    let run = natslab::runner::run_topology(&t, t.clone(), "cim-reference.yaml", &natslab::runner::Selection::families(&Family::DEFAULT), &netns_opts(&root), &Quiet, &Silent).await;
    assert!(run.error.is_none(), "the lab did not come up: {}", run.error.unwrap_or_default());
    println!("cim-reference on netns: {} checks in {:.1} s (ready in {:.0} ms)", run.checks.len(), run.wall_ms / 1000.0, run.ready_ms.unwrap_or(0.0));
    for c in &run.checks {
        if c.verdict != Verdict::Passed {
            println!("  {:?} {} {}: {}", c.verdict, c.family.name(), c.name, c.observed);
        }
    }
    let failed: Vec<String> = run
        .checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Violated | Verdict::HarnessError))
        .map(|c| format!("{} {}: {}", c.family.name(), c.name, c.observed))
        .collect();
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    for family in Family::DEFAULT {
        let passed = run.checks.iter().filter(|c| c.family == family && c.verdict == Verdict::Passed).count();
        assert!(passed > 0, "no {} check passed", family.name());
    }
    // Faults the netns backend offers are never the reason for a skip: latency too, through the link
    // proxies the network family's lab is brought up with.
    let offered = ["kill", "pause", "partition", "blackhole", "bandwidth", "cap", "latency"];
    let skipped_for_backend: Vec<&str> = run
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Skipped && c.observed.contains("backend cannot"))
        .filter(|c| offered.iter().any(|f| c.observed.to_lowercase().contains(f)))
        .map(|c| c.name.as_str())
        .collect();
    assert!(skipped_for_backend.is_empty(), "skipped for want of a fault: {skipped_for_backend:?}");
}

/// (2) Partition values applied for real: a leaf cut from every hub, then a minority hub; each healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_cut_exactly_what_the_grudge_names() {
    if !netns_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut lab = up_netns(&root).await;
    let hubs = hub_names(&lab);
    let refs: Vec<&str> = hubs.iter().map(String::as_str).collect();
    let leaf = "cim-prod-001";
    assert!(wait_until(Duration::from_secs(20), || async { lab.leaf_hub(leaf).await.is_some() }).await.is_some(), "{leaf} never attached");

    // A leaf cut from every hub: the hubs lose it, its own monitoring still answers.
    timed("partition cut_leaf", lab.apply(&Fault::Partition { grudge: nemesis::cut_leaf(leaf, &refs) })).await;
    let lost = wait_until(Duration::from_secs(20), || async {
        for h in &hubs {
            if hub_lists_leaf(&lab, h, leaf).await {
                return false;
            }
        }
        uplinks(&lab, leaf).await == Some(0)
    })
    .await;
    let lost = lost.unwrap_or_else(|| panic!("{leaf} still attached after the cut"));
    println!("cut_leaf: every hub lost {leaf} after {} ms", ms(lost));
    let varz = lab.monitor.get(lab.monitor_url(leaf).unwrap(), "/varz").await.expect("the cut leaf's monitoring answers");
    assert_eq!(varz["server_name"], leaf);
    // Its local clients still work: a publish on the leaf reaches a subscriber on the leaf.
    let local = lab.probe(leaf, "CIM").await.expect("a local client connects to the cut leaf");
    let mut sub = local.subscribe("natslab.netns.local").await.unwrap();
    local.flush().await.unwrap();
    let got = publish_until_received(&local, "natslab.netns.local", "here", &mut sub, Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some("natslab.netns.local"));

    timed("heal", lab.apply(&Fault::Heal)).await;
    let back = wait_until(Duration::from_secs(30), || async {
        match lab.leaf_hub(leaf).await {
            Some(h) => hub_lists_leaf(&lab, &h, leaf).await,
            None => false,
        }
    })
    .await;
    let back = back.unwrap_or_else(|| panic!("{leaf} did not reattach after heal"));
    println!("cut_leaf: {leaf} reattached {} ms after heal (to {:?})", ms(back), lab.leaf_hub(leaf).await);

    // A minority hub: the other two still mesh, the isolated one has no routes.
    assert!(wait_until(Duration::from_secs(20), || full_mesh(&lab, &hubs)).await.is_some(), "no full mesh before the split");
    let (minority, grudge) = nemesis::minority(&refs);
    let majority: Vec<String> = hubs.iter().filter(|h| !minority.contains(h)).cloned().collect();
    timed("partition minority", lab.apply(&Fault::Partition { grudge: grudge.clone() })).await;
    let split = wait_until(Duration::from_secs(20), || async {
        for m in &minority {
            if routes_of(&lab, m).await != Some(vec![]) {
                return false;
            }
        }
        for h in &majority {
            let want: Vec<String> = majority.iter().filter(|o| *o != h).cloned().collect();
            if routes_of(&lab, h).await != Some(want) {
                return false;
            }
        }
        true
    })
    .await;
    let split = split.unwrap_or_else(|| panic!("routes after isolating {minority:?}: majority {majority:?} should mesh, minority have none"));
    println!("minority: {minority:?} lost its routes, {majority:?} still meshed, after {} ms", ms(split));
    timed("heal", lab.apply(&Fault::Heal)).await;
    let mesh = wait_until(Duration::from_secs(30), || full_mesh(&lab, &hubs)).await;
    let mesh = mesh.unwrap_or_else(|| panic!("no full mesh after heal"));
    println!("minority: full mesh again {} ms after heal", ms(mesh));

    teardown_clean(lab, Teardown::Shutdown).await;
}

/// (3) A half-open link: every packet between a leaf and its hubs dropped, connections left open. The leaf
/// notices only by its pings; the hub, which pings rarely, still lists the dead link; restore reattaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_leaf_notices_only_by_pings() {
    if !netns_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut lab = up_netns(&root).await;
    let hubs = hub_names(&lab);
    let leaf = "cim-prod-002";
    let attached = wait_until(Duration::from_secs(20), || async { lab.leaf_hub(leaf).await.is_some() }).await;
    assert!(attached.is_some(), "{leaf} never attached");
    let home = lab.leaf_hub(leaf).await.unwrap();
    let log = lab.plan.layout.host_log(leaf);
    let log_before = std::fs::read_to_string(&log).unwrap_or_default().len();

    // Every hub, so the leaf cannot simply move: it must notice, and wait for the link to come back.
    for h in &hubs {
        lab.apply(&Fault::Blackhole { a: leaf.into(), b: h.into() }).await.unwrap();
    }
    let noticed = wait_until(Duration::from_secs(20), || async { uplinks(&lab, leaf).await == Some(0) }).await;
    let noticed = noticed.unwrap_or_else(|| panic!("{leaf} never noticed its blackholed link to {home}"));
    println!("blackhole: {leaf} gave up its link to {home} after {} ms (ping_interval 1s, ping_max 2)", ms(noticed));
    // Half-open: the hub got no FIN or reset, so it still lists the leaf (its own pings are minutes apart).
    assert!(hub_lists_leaf(&lab, &home, leaf).await, "{home} dropped {leaf} although no packet could reach it");
    // Noticed by pings: the leaf closed the link as stale, not because of a reset or an error.
    let since = std::fs::read_to_string(&log).unwrap_or_default().get(log_before..).unwrap_or_default().to_string();
    let stale: Vec<&str> = since.lines().filter(|l| l.contains("Stale")).collect();
    assert!(!stale.is_empty(), "{leaf}'s log since the blackhole shows no stale connection:\n{since}");
    println!("blackhole: {leaf} logged: {}", stale[0].trim());

    for h in &hubs {
        lab.apply(&Fault::Restore { a: leaf.into(), b: h.into() }).await.unwrap();
    }
    let back = wait_until(Duration::from_secs(30), || async {
        match lab.leaf_hub(leaf).await {
            Some(h) => hub_lists_leaf(&lab, &h, leaf).await,
            None => false,
        }
    })
    .await;
    let back = back.unwrap_or_else(|| panic!("{leaf} did not reattach after restore"));
    println!("blackhole: {leaf} reattached {} ms after restore (to {:?})", ms(back), lab.leaf_hub(leaf).await);

    teardown_clean(lab, Teardown::Drop).await;
}

/// Incompressible bytes (route compression must not shrink what the cap limits).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Publishes `chunks` on `from`, waits until `sub` (on another hub) has them all; how long that took.
async fn transfer(from: &async_nats::Client, sub: &mut async_nats::Subscriber, subject: &str, chunks: &[Vec<u8>]) -> Duration {
    let start = Instant::now();
    for c in chunks {
        from.publish(subject.to_string(), c.clone().into()).await.unwrap();
    }
    from.flush().await.unwrap();
    let mut got = 0;
    while got < chunks.len() {
        let m = tokio::time::timeout(Duration::from_secs(60), sub.next()).await.expect("the transfer stalled").expect("subscription open");
        if m.subject.as_str() == subject {
            got += 1;
        }
    }
    start.elapsed()
}

fn qdiscs(ns: &str) -> String {
    let out = Command::new("tc").args(["-n", ns, "qdisc", "show", "dev", names::NODE_IF]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (4) A cap between two hubs bounds what crosses their route: sending N bytes takes at least
/// (N − burst − one segment) / rate. Only that lower bound is asserted; the times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_cap_bounds_route_throughput() {
    if !netns_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut lab = up_netns(&root).await;
    let (a, b) = ("hub-1", "hub-2");
    let sender = lab.probe(a, "HUB").await.unwrap();
    let receiver = lab.probe(b, "HUB").await.unwrap();
    let token = nuid::next().to_string();
    let mut sub = receiver.subscribe(format!("natslab.bw.{token}.>")).await.unwrap();
    receiver.flush().await.unwrap();
    // Interest reaches hub-1 over the route asynchronously: publish until it arrives.
    let prime = format!("natslab.bw.{token}.prime");
    assert!(publish_until_received(&sender, &prime, "x", &mut sub, Duration::from_secs(10)).await.is_some(), "no route {a} → {b}");

    const CHUNK: usize = 32 * 1024;
    const CHUNKS: usize = 32;
    const RATE: u64 = 256 * 1024;
    let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| noise(CHUNK, i as u64 + 1)).collect();
    let total = (CHUNK * CHUNKS) as u64;
    let data = format!("natslab.bw.{token}.data");

    let free = transfer(&sender, &mut sub, &data, &chunks).await;
    println!("bandwidth: {total} bytes {a} → {b} uncapped in {} ms", ms(free));

    lab.apply(&Fault::Cap { a: a.into(), b: b.into(), bytes_per_s: RATE }).await.unwrap();
    let ns_a = namespace_of(&lab, a);
    assert!(qdiscs(&ns_a).contains("htb"), "no htb qdisc in {ns_a}: {}", qdiscs(&ns_a));
    let capped = transfer(&sender, &mut sub, &data, &chunks).await;
    let slack = netns::net::cap_burst(RATE) + netns::net::MAX_SEGMENT;
    let floor = Duration::from_secs_f64(total.saturating_sub(slack) as f64 / RATE as f64);
    println!(
        "bandwidth: {total} bytes {a} → {b} capped at {RATE} B/s in {} ms (at least {} ms implied by the cap; {:.0} B/s achieved)",
        ms(capped),
        ms(floor),
        total as f64 / capped.as_secs_f64()
    );
    assert!(capped >= floor, "{total} bytes crossed a {RATE} B/s cap in {} ms, faster than the {} ms it allows", ms(capped), ms(floor));

    lab.apply(&Fault::Fast { a: a.into(), b: b.into() }).await.unwrap();
    assert!(!qdiscs(&ns_a).contains("htb"), "htb left in {ns_a} after fast: {}", qdiscs(&ns_a));
    let again = transfer(&sender, &mut sub, &data, &chunks).await;
    println!("bandwidth: {total} bytes {a} → {b} after fast in {} ms", ms(again));

    teardown_clean(lab, Teardown::Shutdown).await;
}

/// (5) `natslab up --backend netns` killed with SIGKILL: its servers die with it (parent-death signal), its
/// namespaces and links stay behind, and `natslab down --all` removes them.
#[test]
fn down_all_clears_a_killed_netns_lab() {
    if !netns_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let contexts = dir.path().join("contexts");
    let ready = dir.path().join("ready.json");
    let natslab = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_natslab"));
        c.args(args).env("NATSLAB_RUNS", &runs).env("NATSLAB_CONTEXT_DIR", &contexts).stdin(Stdio::null());
        c
    };
    let topology = topology_path("cim-reference.yaml");
    let mut up = natslab(&["up", topology.to_str().unwrap(), "--backend", "netns", "--ready-file", ready.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let info: LabInfo = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            assert!(!text.starts_with("error: "), "natslab up failed: {text}");
            if let Ok(info) = serde_json::from_str(&text) {
                break info;
            }
        }
        if let Ok(Some(status)) = up.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(up.stderr.as_mut().unwrap(), &mut err).ok();
            panic!("natslab up exited ({status}) before it was ready:\n{err}");
        }
        assert!(Instant::now() < deadline, "natslab up not ready in time");
        std::thread::sleep(Duration::from_millis(50));
    };
    let tag = names::tag_of(&info.run_id);
    let pids: Vec<u32> = info.nodes.iter().filter_map(|n| n.pid).collect();
    assert_eq!(pids.len(), info.nodes.len(), "every node has a pid");
    assert!(info.nodes.iter().all(|n| n.client_url.contains("198.18.")), "nodes live on 198.18.0.0/15: {:?}", info.nodes);

    up.kill().unwrap(); // SIGKILL: no teardown runs
    up.wait().unwrap();
    let left = remains_of(&tag);
    assert!(left.iter().any(|n| n.starts_with(names::NS_PREFIX)), "a killed lab leaves its namespaces behind: {left:?}");
    println!("after SIGKILL: {} namespaces and links of {} remain", left.len(), info.run_id);

    let out = natslab(&["down", "--all"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("natslab down --all:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    // Namespaces are removed synchronously; their interfaces are freed by the kernel soon after.
    let clean = (0..400).find(|_| {
        let done = remains_of(&tag).is_empty();
        if !done {
            std::thread::sleep(Duration::from_millis(25));
        }
        done
    });
    assert!(clean.is_some(), "left after down --all: {:?}", remains_of(&tag));
    let alive: Vec<u32> = pids.iter().copied().filter(|p| server_alive_under(*p, &info.dir)).collect();
    assert!(alive.is_empty(), "nats-server processes of {} still running: {alive:?}", info.run_id);
}
