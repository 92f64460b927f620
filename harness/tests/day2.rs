//! The day-2 families on real servers, on every backend that can reload: rotation (cim-reference's
//! operator-mode users and leaf links with their old keys revoked, the leaves' local passwords, every
//! node's certificate) and reload (cim-reference's declared `changes:`: a leaf user's permissions narrowed,
//! a link's flows swapped, each undone). And their sabotage: a rotation whose revocation is rendered away,
//! a password rotation or a declared change whose reload applies nothing, must each be reported violated;
//! a reload nats-server will not do is reported in its words. Backup (cim-reference's file streams, the
//! hub's R3 one included: snapshot, store destroyed, restore, compared) and its sabotage (a snapshot missing
//! a message); `natslab backup` / `restore` on a running lab.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use natslab::backend::BackendKind;
use natslab::lab::{Lab, Patch, Quiet, UpOptions};
use natslab::scenario::{self, Check, Ctx, Family, Recorder, Silent, Verdict};
use natslab::topology::Topology;
use serde_json::Value;

async fn rotate(lab: &mut Lab, t: &Topology) -> Vec<Check> {
    run_only(lab, t, &[Family::Rotation], &[]).await
}

async fn run_only(lab: &mut Lab, t: &Topology, families: &[Family], only: &[&str]) -> Vec<Check> {
    let mut rec = Recorder::new(&Silent).only(only.iter().map(|s| s.to_string()).collect());
    let mut ctx = Ctx { lab, declared: t, rec: &mut rec };
    scenario::run(&mut ctx, families).await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {}", c.verdict, c.id, c.observed);
    }
    rec.checks
}

/// The families run on every backend (netns and containers: `.ci/nightly`); the limits family (gigabytes
/// of writes) joins them on processes.
const ON_EVERY_BACKEND: [Family; 3] = [Family::Rotation, Family::Reload, Family::Backup];

async fn day2_passes_on(backend: BackendKind, families: &[Family]) -> Vec<Check> {
    let t = load("cim-reference.yaml");
    let root = tempfile::tempdir().unwrap();
    let opts = UpOptions { backend, runs_root: Some(root.path().to_path_buf()), ..UpOptions::default() };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    let checks = run_only(&mut lab, &t, families, &[]).await;
    lab.shutdown().await;
    assert!(failures(&checks).is_empty(), "{:#?}", failures(&checks));
    for change in ["reload/permissions/narrow-cim-local", "reload/flows/swap-metrics-for-telemetry"] {
        assert_eq!(check(&checks, change).verdict, Verdict::Passed);
    }
    // The hub's R3 stream and each leaf's file stream were destroyed and restored (memory streams skip).
    for stream in ["hub/HUB_EVENTS", "cim-prod-001/DOMAIN_EVENTS", "cim-prod-002/DOMAIN_EVENTS", "cim-dev-001/DOMAIN_EVENTS"] {
        let c = check(&checks, &format!("backup/restore/{stream}"));
        assert_eq!(c.verdict, Verdict::Passed, "{}", c.observed);
        assert!(c.metrics.contains_key("restore_ms_per_mb"));
    }
    assert!(check(&checks, "backup/restore/hub/HUB_EVENTS").metrics.contains_key("converged_ms"));
    // Every credential and certificate the topology declares was rotated, none skipped.
    assert!(checks.iter().filter(|c| c.family == Family::Rotation).all(|c| c.verdict == Verdict::Passed), "{:?}", checks.iter().map(|c| (&c.id, c.verdict)).collect::<Vec<_>>());
    assert_eq!(check(&checks, "rotation/user/hub/HUB/alchemist").verdict, Verdict::Passed);
    for leaf in ["cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        let link = check(&checks, &format!("rotation/leaf-link/{leaf}/0"));
        assert_eq!(link.metrics["acked_writes_lost"], 0.0);
        assert!(link.metrics["acked_writes_acked"] > 0.0, "the writers wrote across the rotation: {:?}", link.metrics);
        assert!(link.metrics.contains_key("reattach_ms"));
        assert_eq!(check(&checks, &format!("rotation/password/{leaf}/CIM/cim-local")).verdict, Verdict::Passed);
    }
    for node in ["hub-1", "hub-2", "hub-3", "cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        assert_eq!(check(&checks, &format!("rotation/tls/{node}")).verdict, Verdict::Passed);
    }
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_rotates_and_reloads_on_processes() {
    let mut all = ON_EVERY_BACKEND.to_vec();
    all.push(Family::Limits);
    let checks = day2_passes_on(BackendKind::Process, &all).await;
    // Every limit cim-reference declares that a check can reach, pushed past.
    for node in ["hub-1", "cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        for kind in ["payload", "slow-consumer", "storage/memory", "storage/file"] {
            let (head, tail) = kind.split_once('/').map_or((kind, None), |(h, t)| (h, Some(t)));
            let id = match tail {
                Some(t) => format!("limits/{head}/{node}/{t}"),
                None => format!("limits/{head}/{node}"),
            };
            assert_eq!(check(&checks, &id).verdict, Verdict::Passed, "{id}");
        }
        // 10000 connections and a million subscriptions are load tests: skipped, saying so.
        assert_eq!(check(&checks, &format!("limits/connections/{node}")).verdict, Verdict::Skipped);
    }
    let rate = check(&checks, "limits/rate/cim-prod-001/DOMAIN_EVENTS/graph-processor");
    assert!(rate.metrics.contains_key("rate_measured_bps"), "the rate is a figure: {:?}", rate.metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_rotates_and_reloads_on_network_namespaces() {
    if !nightly_or_skip("the day-2 families on netns") || !netns_or_skip() {
        return;
    }
    day2_passes_on(BackendKind::Netns, &ON_EVERY_BACKEND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_rotates_and_reloads_on_containers() {
    if !nightly_or_skip("the day-2 families on containers") || !engine_or_skip().await {
        return;
    }
    day2_passes_on(BackendKind::Container, &ON_EVERY_BACKEND).await;
}

/// In every CI run, the container backend's own part of the day-2 families: a reload copies the node's
/// files into its container again, and a backup drill destroys a bind-mounted store (the whole of it on
/// containers is nightly's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_backup_drills_work_in_containers() {
    if !engine_or_skip().await {
        return;
    }
    let t = load("cim-reference.yaml");
    let root = tempfile::tempdir().unwrap();
    let opts = UpOptions { backend: BackendKind::Container, runs_root: Some(root.path().to_path_buf()), ..UpOptions::default() };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    let only = ["reload/", "backup/restore/cim-prod-001/DOMAIN_EVENTS"];
    let checks = run_only(&mut lab, &t, &[Family::Reload, Family::Backup], &only).await;
    lab.shutdown().await;
    assert!(failures(&checks).is_empty(), "{:#?}", failures(&checks));
    for id in ["reload/permissions/narrow-cim-local", "reload/flows/swap-metrics-for-telemetry", "backup/restore/cim-prod-001/DOMAIN_EVENTS"] {
        assert_eq!(check(&checks, id).verdict, Verdict::Passed, "{id}");
    }
}

/// Sabotage: the new creds are issued, but the account JWT pushed to the resolver does not revoke the old
/// key. A client presenting the old creds still connects, and the link never has to come back on the new
/// ones: both rotations must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_that_still_connects_is_violated() {
    let t = load("operator-jwt.yaml");
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(t.clone(), &root).await;
    lab.plan.secrets.operator.as_mut().expect("operator mode").revoke = false;
    let checks = rotate(&mut lab, &t).await;
    lab.shutdown().await;
    let user = check(&checks, "rotation/user/hub/CONTROL/alchemist");
    assert_eq!(user.verdict, Verdict::Violated, "{}", user.observed);
    assert!(user.observed.contains("revoked creds still connects"), "{}", user.observed);
    let link = check(&checks, "rotation/leaf-link/op-leaf-1/0");
    assert_eq!(link.verdict, Verdict::Violated, "{}", link.observed);
}

/// Sabotage: every re-render gives each node the accounts block it started with, so a reload applies
/// nothing — the old password still works, and the password rotation must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_did_not_apply_is_violated() {
    let t = load("subject-mapping.yaml");
    let root = tempfile::tempdir().unwrap();
    let first: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let frozen = first.clone();
    let patch = Patch(Arc::new(move |node: &str, s: &mut Value| {
        let mut seen = frozen.lock().unwrap();
        match seen.get(node) {
            Some(accounts) => s["accounts"] = accounts.clone(),
            None => {
                seen.insert(node.to_string(), s["accounts"].clone());
            }
        }
    }));
    let opts = UpOptions { patch: Some(patch), ..opts(&root) };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    let checks = run_only(&mut lab, &t, &[Family::Rotation], &["rotation/password"]).await;
    lab.shutdown().await;
    let passwords: Vec<&Check> = checks.iter().filter(|c| c.id.starts_with("rotation/password/")).collect();
    assert!(!passwords.is_empty(), "subject-mapping declares users with passwords");
    for c in passwords {
        assert_eq!(c.verdict, Verdict::Violated, "{}: {}", c.id, c.observed);
        assert!(c.observed.contains("old password still connects"), "{}: {}", c.id, c.observed);
    }
}

/// Sabotage: cim-prod-001 keeps the accounts block it started with whatever is rendered, so the declared
/// narrowing of cim-local never reaches the server: the reload family must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_change_whose_reload_did_not_apply_is_violated() {
    let t = load("cim-reference.yaml");
    let root = tempfile::tempdir().unwrap();
    let first: Arc<Mutex<Option<Value>>> = Arc::default();
    let patch = Patch(Arc::new(move |node: &str, s: &mut Value| {
        if node != "cim-prod-001" {
            return;
        }
        let mut kept = first.lock().unwrap();
        match kept.as_ref() {
            Some(accounts) => s["accounts"] = accounts.clone(),
            None => *kept = Some(s["accounts"].clone()),
        }
    }));
    let opts = UpOptions { patch: Some(patch), ..opts(&root) };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    let checks = run_only(&mut lab, &t, &[Family::Reload], &["reload/permissions/narrow-cim-local"]).await;
    lab.shutdown().await;
    let c = check(&checks, "reload/permissions/narrow-cim-local");
    assert_eq!(c.verdict, Verdict::Violated, "{}", c.observed);
    assert!(c.observed.contains("after the change") && c.observed.contains("events."), "the narrowed subject is named: {}", c.observed);
}

/// A change nats-server cannot make by a reload (a hub's JetStream memory limit lowered) is refused, and
/// the refusal is the server's own words, not natslab's guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_server_refuses_is_reported_in_its_words() {
    let t = load("operator-jwt.yaml");
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(t, &root).await;
    let js = lab.plan.topology.hub.jetstream.as_mut().expect("the hub has JetStream");
    js.max_memory_store = Some(natslab::topology::Size(64 * 1024 * 1024));
    let answer = lab.reload("hub-1").await;
    lab.shutdown().await;
    match answer {
        Ok(natslab::lab::Reloaded::Refused(why)) => assert!(why.contains("not supported for decreasing jetstream max memory"), "{why}"),
        other => panic!("the server should have refused the reload: {other:?}"),
    }
}

/// Sabotage: the snapshot restored lacks one of the messages recorded before it was taken; the backup
/// family must report the loss by sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_lost_a_message_is_violated() {
    let t = load("leaf-peers.yaml");
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(t.clone(), &root).await;
    lab.sabotage.drop_one_from_backups = true;
    let checks = run_only(&mut lab, &t, &[Family::Backup], &["backup/restore/peer-a/EVENTS"]).await;
    // The same lab (to spare one) also has peer-b's `discard: new` stream: past max_msgs, refused.
    let limits = run_only(&mut lab, &t, &[Family::Limits], &["limits/stream/peer-b/EVENTS"]).await;
    lab.shutdown().await;
    let c = check(&checks, "backup/restore/peer-a/EVENTS");
    assert_eq!(c.verdict, Verdict::Violated, "{}", c.observed);
    assert!(c.observed.contains("restored nothing"), "the lost sequence is named: {}", c.observed);
    let discard = check(&limits, "limits/stream/peer-b/EVENTS");
    assert_eq!(discard.verdict, Verdict::Passed, "{}", discard.observed);
    assert!(discard.observed.contains("5 refused"), "{}", discard.observed);
}

/// `natslab backup` and `natslab restore` on a running lab: a directory a person can keep, a stream
/// destroyed and brought back from it with every message, and a restore over an existing stream refused
/// (exit 2, nothing restored) unless --replace.
#[test]
fn backup_and_restore_commands_round_trip_a_running_lab() {
    let env = Env::new();
    let lab = env.detach("leaf-peers.yaml", &[]);
    let inventory = lab.info.dir.join("inventory.json");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let attached = || {
        let opts = UpOptions { backend: BackendKind::Attached, inventory: Some(inventory.clone()), ..UpOptions::default() };
        rt.block_on(Lab::up(load("leaf-peers.yaml"), &opts, &Quiet)).unwrap_or_else(|e| panic!("{e}"))
    };
    let count = |l: &Lab| {
        rt.block_on(async {
            let c = l.probe("peer-a", "LOCAL").await.unwrap();
            natslab::probe::js::stream_state(&c, natslab::probe::js::API, "EVENTS").await.map(|s| natslab::probe::js::state_u64(&s, "messages"))
        })
    };
    let l = attached();
    rt.block_on(async {
        let c = l.probe("peer-a", "LOCAL").await.unwrap();
        for i in 0..25 {
            natslab::probe::js::publish_stored(&c, &format!("events.backup.{i}"), &format!("m{i}")).await.unwrap();
        }
    });
    let before = count(&l).unwrap();
    assert!(before >= 25);

    let out = tempfile::tempdir().unwrap();
    let backup = env.cmd().args(["backup", "--run", &lab.info.run_id, "--out"]).arg(out.path()).output().unwrap();
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    for f in ["backup.json", "stream.tar.s2"] {
        assert!(out.path().join("peer-a/EVENTS").join(f).is_file(), "{f} written");
    }
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("peer-a/EVENTS/backup.json")).unwrap()).unwrap();
    assert_eq!(meta["config"]["name"], "EVENTS");

    // Refused over existing streams, and nothing is touched.
    let refused = env.cmd().args(["restore", "--run", &lab.info.run_id]).arg(out.path()).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--replace"));
    assert_eq!(count(&l).unwrap(), before);

    // The disaster, then the restore.
    rt.block_on(async {
        let c = l.probe("peer-a", "LOCAL").await.unwrap();
        natslab::probe::js::api(&c, natslab::probe::js::API, "STREAM.DELETE.EVENTS", &serde_json::json!({})).await.unwrap();
    });
    assert!(count(&l).is_err(), "the stream is gone");
    let restored = env.cmd().args(["restore", "--replace", "--run", &lab.info.run_id]).arg(out.path()).output().unwrap();
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert_eq!(count(&l).unwrap(), before, "every message is back");
    rt.block_on(l.shutdown());
}

/// The limits small enough to reach (subject-mapping's site-b: 50 connections, 2000 subscriptions, 64 KB
/// payloads, 8 MB pending) each pushed past and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_limits_are_each_reached_and_refused() {
    let t = load("subject-mapping.yaml");
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(t.clone(), &root).await;
    let checks = run_only(&mut lab, &t, &[Family::Limits], &["limits/connections/site-b", "limits/subscriptions/site-b", "limits/payload/site-b", "limits/slow-consumer/site-b"]).await;
    lab.shutdown().await;
    for id in ["limits/connections/site-b", "limits/subscriptions/site-b", "limits/payload/site-b", "limits/slow-consumer/site-b"] {
        let c = check(&checks, id);
        assert_eq!(c.verdict, Verdict::Passed, "{id}: {}", c.observed);
    }
    assert!(check(&checks, "limits/connections/site-b").observed.contains("maximum connections"));
}

/// Sabotage: a leaf rendered with twice the declared memory store and payload limit. The checks derive
/// from the declaration, so both must say the limit is wider than declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_rendered_wider_than_declared_is_violated() {
    let t = load("cim-reference.yaml");
    let root = tempfile::tempdir().unwrap();
    let patch = Patch(Arc::new(|node: &str, s: &mut Value| {
        if node == "cim-prod-001" {
            s["jetstream"]["max_memory_store"] = serde_json::json!(256 * 1024 * 1024);
            s["max_payload"] = serde_json::json!(16 * 1024 * 1024);
            s["max_pending"] = serde_json::json!(64 * 1024 * 1024);
        }
    }));
    let opts = UpOptions { patch: Some(patch), ..opts(&root) };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    let checks = run_only(&mut lab, &t, &[Family::Limits], &["limits/storage/cim-prod-001/memory", "limits/payload/cim-prod-001"]).await;
    lab.shutdown().await;
    let store = check(&checks, "limits/storage/cim-prod-001/memory");
    assert_eq!(store.verdict, Verdict::Violated, "{}", store.observed);
    assert!(store.observed.contains("wider than declared"), "{}", store.observed);
    let payload = check(&checks, "limits/payload/cim-prod-001");
    assert_eq!(payload.verdict, Verdict::Violated, "{}", payload.observed);
}
