//! The container backend for real, on the local Docker engine: every scenario family passes on cim-reference;
//! nothing of a run survives it, whether it fails, panics, gets SIGTERM, or its supervisor is `kill -9`ed and
//! `natslab down --all` cleans up after it; a partitioned leaf loses its hub and gets it back on heal.
//!
//! Without a Docker engine every test says `skipped: no Docker engine (...)` and passes, unless
//! NATSLAB_REQUIRE_ALL is set (CI), where that is a failure.

// The serialising lock below is held across awaits on purpose: each test has its own runtime, and the lock
// orders tests, not tasks.
#![allow(clippy::await_holding_lock)]

mod common;

use natslab::nemesis::Fault;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use natslab::backend::container::{resources_of_run, ContainerBackend};
use natslab::backend::BackendKind;
use natslab::nemesis::Capability;
use natslab::nemesis;
use natslab::lab::{Lab, LabInfo, Quiet, UpOptions};
use natslab::scenario::{Family, Silent, Verdict};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Container labs are heavy (six containers each) and this machine small: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine_or_skip_blocking() -> bool {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(engine_or_skip())
}

fn container_opts(root: &tempfile::TempDir) -> UpOptions {
    UpOptions { backend: BackendKind::Container, timeout: Duration::from_secs(120), ..opts(root) }
}

/// Polls until no container or network of the run is left, or fails naming what is.
async fn assert_nothing_left(run_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (containers, networks) = resources_of_run(run_id).await.unwrap();
        if containers.is_empty() && networks.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "run {run_id} left containers {containers:?} and networks {networks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `natslab up --backend container --json` in the foreground, and the lab it prints once ready.
fn up_container(env: &Env) -> (Child, LabInfo) {
    let mut child = env
        .cmd()
        .args(["up", "--backend", "container", "--timeout", "120", "--json"])
        .arg(topology_path("cim-reference.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("natslab up exited before printing the lab: {text}");
        }
        text.push_str(&line);
        if line.trim_end() == "}" {
            break;
        }
    }
    (child, serde_json::from_str(&text).unwrap())
}

/// `natslab run --backend container` on a topology, through the binary, its JSON report read back: what it
/// printed (stdout, then stderr), whether it exited 0, and the topology's run from the report (`null` where
/// there is no report).
fn run_in_containers(env: &Env, topology: &str, args: &[&str]) -> (String, bool, serde_json::Value) {
    let report = env.runs.path().join("report.json");
    let out = env
        .cmd()
        .args(["run", "--backend", "container", "--timeout", "120", "--json"])
        .arg(&report)
        .args(args)
        .arg(topology_path(topology))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_default()).unwrap_or_default();
    (text, out.status.success(), v["runs"][0].clone())
}

/// mTLS on containers: the impostor leaf (a certificate of the lab's CA with an unmapped identity) is
/// refused there too.
#[test]
fn mtls_security_holds_in_containers_impostor_included() {
    if !engine_or_skip_blocking() {
        return;
    }
    let _one = serial();
    let env = Env::new();
    let (text, ok, run) = run_in_containers(&env, "mtls.yaml", &["--scenario", "security"]);
    let checks = run["checks"].as_array().cloned().unwrap_or_default();
    let impostor = checks.iter().find(|c| c["id"] == "security/impostor-leaf").unwrap_or_else(|| panic!("no impostor check:\n{text}"));
    // The impostor is a guest container on the run's network: it dials the hub by name, as a leaf there would.
    assert_eq!(impostor["verdict"], "passed", "{impostor}");
    assert!(impostor["observed"].as_str().unwrap_or("").contains("Authorization Violation"), "{impostor}");
    assert!(ok, "{text}");
}

/// Mixed versions in containers: one image per version, and each container runs its node's (its own
/// `/varz`, read by the state family).
#[test]
fn each_container_runs_its_nodes_declared_version() {
    if !engine_or_skip_blocking() {
        return;
    }
    let _one = serial();
    let env = Env::new();
    let (text, ok, run) = run_in_containers(&env, "mixed-versions.yaml", &["--scenario", "health,state"]);
    assert!(ok, "{text}");
    let checks = run["checks"].as_array().cloned().unwrap_or_default();
    for (node, version) in [("hub-1", natslab::server::PINNED), ("edge-mid", "2.12.8"), ("edge-old", "2.11.11")] {
        let c = checks.iter().find(|c| c["id"] == format!("state/version/{node}").as_str()).unwrap_or_else(|| panic!("no version check for {node}:\n{text}"));
        assert_eq!(c["verdict"], "passed", "{c}");
        assert!(c["observed"].as_str().unwrap_or("").contains(&format!("runs {version}")), "{c}");
    }
}

/// (1) Every scenario family passes on cim-reference with the container backend, through the binary (the
/// network family on a lab of its own, with link proxies in the containers' namespaces).
#[test]
fn every_family_passes_on_cim_reference_in_containers() {
    if !nightly_or_skip("every family on cim-reference in containers") || !engine_or_skip_blocking() {
        return;
    }
    let _one = serial();
    let env = Env::new();
    let started = Instant::now();
    let (text, ok, run) = run_in_containers(&env, "cim-reference.yaml", &[]);
    assert!(run["error"].is_null(), "the lab did not come up: {}\n{text}", run["error"]);
    let checks = run["checks"].as_array().cloned().unwrap_or_default();
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| c["verdict"] != "passed" && c["verdict"] != "skipped")
        .map(|c| format!("{} {}: {} — expected {}, observed {}", c["family"], c["name"], c["verdict"], c["expected"], c["observed"]))
        .collect();
    assert!(bad.is_empty(), "checks failed on the container backend:\n{}\n{text}", bad.join("\n"));
    for family in ["health", "mapping", "security", "jetstream", "failover", "network"] {
        assert!(checks.iter().any(|c| c["family"] == family && c["verdict"] == "passed"), "no {family} check passed:\n{text}");
    }
    // As root on a local engine the network family's lab has link proxies: no check lacks a fault (not as
    // root: partitions by disconnecting containers only, the rest skipped and saying so).
    // (A power cut is a VM's: no container engine can drop a container's page cache, so those are skipped.)
    let for_want: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["verdict"] == "skipped")
        .filter(|c| c["observed"].as_str().is_some_and(|o| o.contains("backend cannot") && !o.contains("cut a node's power")))
        .collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { nix::libc::geteuid() } == 0 {
        assert!(for_want.is_empty(), "skipped for want of a fault on containers: {for_want:?}");
    }
    assert!(ok, "{text}");
    let skipped: Vec<String> = checks.iter().filter(|c| c["verdict"] == "skipped").map(|c| format!("{}: {}", c["name"], c["observed"])).collect();
    eprintln!(
        "container backend: {} checks, {} skipped {skipped:?}; ready in {:.0} ms; wall {:.1} s",
        checks.len(),
        skipped.len(),
        run["ready_ms"].as_f64().unwrap_or(0.0),
        started.elapsed().as_secs_f64()
    );
}

/// (2a) A run whose checks fail (a leaf declares two remotes, the lab is rendered with one) still tears every
/// container and network of its run down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_leaves_no_container_or_network() {
    if !engine_or_skip().await {
        return;
    }
    let _one = serial();
    let root = tempfile::tempdir().unwrap();
    let mut declared = load("cim-reference.yaml");
    let rendered = declared.clone();
    let mut second = declared.leaves[0].remotes[0].clone();
    second.imports.clear();
    second.exports.clear();
    declared.leaves[0].remotes.push(second);
    // Kept, so the run directory names the run id to look for afterwards.
    let up = UpOptions { keep: true, ..container_opts(&root) };
    let run = natslab::runner::run_topology(&declared, rendered, "cim-reference.yaml", &natslab::runner::Selection::families(&[Family::Health]), &up, &Quiet, &Silent).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert!(run.checks.iter().any(|c| c.verdict == Verdict::Violated), "the sabotage went unnoticed: {:#?}", run.checks);
    let run_ids: Vec<String> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(run_ids.len(), 1, "{run_ids:?}");
    assert_nothing_left(&run_ids[0], Duration::ZERO).await;
}

/// (2b) A test that panics with a lab up (no `shutdown`): dropping the lab removes its containers and networks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_with_a_lab_up_leaves_no_container_or_network() {
    if !engine_or_skip().await {
        return;
    }
    let _one = serial();
    let root = tempfile::tempdir().unwrap();
    let opts = container_opts(&root);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let lab = Lab::up(load("cim-reference.yaml"), &opts, &Quiet).await.unwrap();
        let (containers, _) = resources_of_run(&lab.plan.run_id).await.unwrap();
        let _ = tx.send((lab.plan.run_id.clone(), containers.len()));
        panic!("a check blew up with the lab still up");
    });
    let joined = task.await;
    assert!(joined.is_err_and(|e| e.is_panic()), "the task was meant to panic");
    let (run_id, running) = rx.await.unwrap();
    assert_eq!(running, 6, "the lab had its six containers up");
    assert_nothing_left(&run_id, Duration::ZERO).await;
}

/// (3) SIGTERM to `natslab up --backend container`: an orderly teardown, no container or network left, the
/// contexts it wrote are gone.
#[test]
fn sigterm_to_natslab_up_removes_its_containers_and_network() {
    if !engine_or_skip_blocking() {
        return;
    }
    let _one = serial();
    let env = Env::new();
    let (mut child, info) = up_container(&env);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (containers, networks) = rt.block_on(resources_of_run(&info.run_id)).unwrap();
    assert_eq!(containers.len(), 6, "{containers:?}");
    assert_eq!(networks.len(), 7, "the run's network and one per node for its host ports: {networks:?}");
    // Host-reachable URLs and contexts, as with processes.
    assert!(info.nodes.iter().all(|n| n.monitor_url.starts_with("http://127.0.0.1:")), "{:?}", info.nodes);
    let ctx = std::fs::read_to_string(env.contexts.path().join("cim-reference-hub-alchemist.json")).unwrap();
    assert!(ctx.contains("127.0.0.1:"), "{ctx}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    rt.block_on(assert_nothing_left(&info.run_id, Duration::ZERO));
    assert!(!info.dir.exists());
    assert!(!env.contexts.path().join("cim-reference-hub-alchemist.json").exists());
}

/// (4) `kill -9` of `natslab up` leaves its containers running; `natslab down --all` removes them.
#[test]
fn down_all_removes_what_a_killed_supervisor_left() {
    if !engine_or_skip_blocking() {
        return;
    }
    let _one = serial();
    let env = Env::new();
    let (mut child, info) = up_container(&env);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (containers, networks) = rt.block_on(resources_of_run(&info.run_id)).unwrap();
    assert_eq!((containers.len(), networks.len()), (6, 7), "a kill -9 gives no chance to clean up: {containers:?} {networks:?}");
    let down = env.cmd().args(["down", "--all"]).output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(said.contains("container(s)"), "down --all did not say what it removed: {said}");
    rt.block_on(assert_nothing_left(&info.run_id, Duration::ZERO));
    assert!(!info.dir.exists());
}

/// Lines of `log` after the first `from` bytes that contain `needle`, polled until one appears.
async fn wait_for_log(log: &Path, from: usize, needle: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.get(from..).unwrap_or_default().lines().find(|l| l.contains(needle)) {
            return Some(line.to_string());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (5) A leaf cut off the run's network loses its hub (its own log says its link went stale, and the hub's
/// commands stop reaching it) while the harness still reaches it; healed, it reattaches and receives again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leaf_detaches_and_reattaches_on_heal() {
    if !engine_or_skip().await {
        return;
    }
    let _one = serial();
    let root = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(load("cim-reference.yaml"), &container_opts(&root), &Quiet).await.unwrap();
    let leaf = "cim-prod-001";
    assert_eq!(lab.leaf_hub(leaf).await.as_deref(), Some("hub-1"));
    assert!(lab.can(Capability::Isolate));
    let hub = lab.access("hub-1", "HUB", "alchemist").unwrap().connect("test-hub").await.unwrap();
    let local = lab.access(leaf, "CIM", "cim-local").unwrap().connect("test-leaf").await.unwrap();
    // May publish anything on the leaf: the control message of the negative probe below.
    let probe = lab.probe(leaf, "CIM").await.unwrap();
    let mut cmds = local.subscribe("hub.commands.>").await.unwrap();
    local.flush().await.unwrap();
    let got = publish_until_received(&hub, "commands.before", "go", &mut cmds, Duration::from_secs(10)).await;
    assert_eq!(got.as_deref(), Some("hub.commands.before"));

    let log = lab.plan.layout.host_log(leaf);
    let mark = std::fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
    lab.apply(&Fault::Isolate { node: leaf.into() }).await.unwrap();
    assert_eq!(lab.backend::<ContainerBackend>().expect("containers").partitioned(), vec![leaf.to_string()]);
    // The leaf's pings (every 1 s, 2 missed) go unanswered: it closes its link to the hub.
    let closed = wait_for_log(&log, mark, "Leafnode connection closed", Duration::from_secs(30)).await;
    assert!(closed.is_some(), "the partitioned leaf never dropped its hub link:\n{}", lab.log_tail(leaf, 20));
    // The harness still reaches it, and it reports no hub.
    assert_eq!(lab.leaf_hub(leaf).await, None, "the leaf still claims a hub while cut off");
    // Nothing the hub publishes reaches it; a control message published on the leaf does, through
    // connections opened before the cut.
    let within = |what: &'static str| move |r: Result<Result<(), async_nats::client::FlushError>, _>| {
        r.unwrap_or_else(|_| panic!("{what}: no answer in 10 s")).unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    hub.publish("commands.during", "lost".into()).await.unwrap();
    within("hub flush")(tokio::time::timeout(Duration::from_secs(10), hub.flush()).await);
    probe.publish("hub.commands.control", "local".into()).await.unwrap();
    within("a connection to the leaf opened before the cut")(tokio::time::timeout(Duration::from_secs(10), probe.flush()).await);
    let first = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut cmds)).await.unwrap().unwrap();
    assert_eq!(first.subject.as_str(), "hub.commands.control", "a hub message crossed the partition");

    lab.apply(&Fault::Rejoin { node: leaf.into() }).await.unwrap();
    assert!(lab.backend::<ContainerBackend>().expect("containers").partitioned().is_empty());
    let reattached = wait_for_log(&log, mark, "Leafnode connection created", Duration::from_secs(30)).await;
    assert!(reattached.is_some(), "the healed leaf never reattached:\n{}", lab.log_tail(leaf, 20));
    lab.wait_ready(&[leaf], Duration::from_secs(30)).await.unwrap();
    assert!(lab.leaf_hub(leaf).await.is_some());
    let got = publish_until_received(&hub, "commands.after", "go", &mut cmds, Duration::from_secs(10)).await;
    assert_eq!(got.as_deref(), Some("hub.commands.after"));
    let run_id = lab.plan.run_id.clone();
    lab.shutdown().await;
    assert_nothing_left(&run_id, Duration::ZERO).await;
}

/// A killed node restarts in the same container at the same host ports (clients that know the cluster's
/// URLs follow it, as with processes) and rejoins; its log keeps one story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hub_restarts_in_its_container_and_rejoins() {
    if !engine_or_skip().await {
        return;
    }
    let _one = serial();
    let root = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(load("cim-reference.yaml"), &container_opts(&root), &Quiet).await.unwrap();
    let before = lab.endpoint("hub-2").unwrap().clone();
    let id = lab.backend::<ContainerBackend>().expect("containers").container_id("hub-2").unwrap().to_string();
    lab.apply(&Fault::Kill { node: "hub-2".into() }).await.unwrap();
    assert!(lab.monitor.healthy(&before.monitor_url).await.is_err());
    assert!(lab.backend::<ContainerBackend>().expect("containers").node_exit("hub-2").is_none(), "a kill we did is not an exit");
    lab.apply(&Fault::Start { node: "hub-2".into() }).await.unwrap();
    lab.wait_ready(&["hub-1", "hub-2", "hub-3"], Duration::from_secs(60)).await.unwrap();
    assert_eq!(lab.backend::<ContainerBackend>().expect("containers").container_id("hub-2"), Some(id.as_str()), "the same container");
    assert_eq!(lab.endpoint("hub-2"), Some(&before), "the same host ports");
    lab.monitor.healthy(&before.monitor_url).await.unwrap();
    let log = std::fs::read_to_string(lab.plan.layout.host_log("hub-2")).unwrap();
    assert_eq!(log.matches("Starting nats-server").count(), 2, "both runs, each once, in one log");
    lab.shutdown().await;
}

/// With link proxies (a local engine, root): a finer partition than a whole container cuts exactly one
/// route, and a killed hub's proxies follow it into the new network namespace of its restarted container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_proxies_partition_one_route_and_follow_a_restarted_container() {
    if !engine_or_skip().await {
        return;
    }
    let _one = serial();
    let root = tempfile::tempdir().unwrap();
    let opts = UpOptions { proxied: true, ..container_opts(&root) };
    let mut lab = Lab::up(load("cim-reference.yaml"), &opts, &Quiet).await.unwrap();
    assert!(lab.plan.proxied(), "as root on a local engine the lab gets link proxies");
    for f in [Capability::Blackhole, Capability::Latency, Capability::Bandwidth] {
        assert!(lab.faults().contains(&f), "{f:?} missing from {:?}", lab.faults());
    }
    let hubs = ["hub-1", "hub-2", "hub-3"];
    let peers = |lab: &Lab, hub: &str| {
        let url = lab.monitor_url(hub).unwrap().to_string();
        let monitor = lab.monitor.clone();
        async move { monitor.route_peers(&url).await.unwrap_or_default() }
    };

    // Only hub-1 ↔ hub-2: both still route to hub-3.
    lab.apply(&Fault::Partition { grudge: nemesis::split(&["hub-1"], &["hub-2"]) }).await.unwrap();
    let cut = wait_for(Duration::from_secs(30), || async {
        let (one, two) = (peers(&lab, "hub-1").await, peers(&lab, "hub-2").await);
        !one.contains(&"hub-2".to_string()) && !two.contains(&"hub-1".to_string())
    })
    .await;
    assert!(cut, "hub-1 and hub-2 still route to each other: {:?}", peers(&lab, "hub-1").await);
    let three = peers(&lab, "hub-3").await;
    assert!(three.contains(&"hub-1".to_string()) && three.contains(&"hub-2".to_string()), "hub-3 lost a route it should keep: {three:?}");
    lab.apply(&Fault::Heal).await.unwrap();
    lab.wait_ready(&hubs, Duration::from_secs(30)).await.expect("full mesh again after heal");

    // hub-2 killed and started: a new namespace, new proxies in front of it, the mesh through them again.
    lab.apply(&Fault::Kill { node: "hub-2".into() }).await.unwrap();
    assert!(lab.link_counters().keys().all(|(_, to)| to != "hub-2"), "proxies left in a dead namespace");
    lab.apply(&Fault::Start { node: "hub-2".into() }).await.unwrap();
    lab.wait_ready(&hubs, Duration::from_secs(60)).await.expect("hub-2 rejoins the mesh");
    // The mesh may have formed by hub-2 dialing out; a leaf that can reach only hub-2 must dial through
    // the new proxy in front of it.
    let leaf = "cim-prod-001";
    lab.apply(&Fault::Partition { grudge: nemesis::cut_leaf(leaf, &["hub-1", "hub-3"]) }).await.unwrap();
    let moved = wait_for(Duration::from_secs(60), || async { lab.leaf_hub(leaf).await.as_deref() == Some("hub-2") }).await;
    assert!(moved, "{leaf} never attached to the restarted hub-2 (on {:?})", lab.leaf_hub(leaf).await);
    let link = lab.link_counters().get(&(leaf.to_string(), "hub-2".to_string())).cloned().expect("a proxy in front of hub-2");
    assert!(link.bytes_up > 0 && link.bytes_down > 0, "{leaf} → hub-2 did not go through the new proxy: {link:?}");
    lab.apply(&Fault::Heal).await.unwrap();
    let run_id = lab.plan.run_id.clone();
    lab.shutdown().await;
    assert_nothing_left(&run_id, Duration::ZERO).await;
}

async fn wait_for<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
