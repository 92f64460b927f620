//! The upgrade family on real servers of several versions: the mixed-versions topology (hubs on one
//! version, leaves on two older ones) moved node by node to the pinned release and back, under load. What a
//! node runs is read from its own `/varz`, not from natslab's bookkeeping. The sabotage: a "release" that
//! passes `-t` but will not start must make the rolling upgrade report violated, and each node it touched
//! must be running its old version again afterwards.

mod common;

use common::*;
use natslab::lab::{Lab, Quiet, UpOptions};
use natslab::scenario::{self, Check, Ctx, Family, Recorder, Silent, Verdict};
use natslab::server::{NatsServer, Version, PINNED};
use natslab::topology::Topology;

/// The mixed-versions topology with its hubs one series behind the pinned release (leaves as declared).
fn behind() -> Topology {
    let mut t = load("mixed-versions.yaml");
    t.server_version = Some("2.14.6".into());
    t
}

async fn running_versions(lab: &Lab, t: &Topology) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in t.hub_names().map(String::from).chain(t.leaves.iter().map(|l| l.name.clone())) {
        let url = lab.monitor_url(&n).unwrap().to_string();
        let varz = lab.monitor.get(&url, "/varz").await.unwrap_or_else(|e| panic!("{n} /varz: {e}"));
        out.push((n, varz["version"].as_str().unwrap_or_default().to_string()));
    }
    out
}

async fn upgrade(lab: &mut Lab, t: &Topology, only: &[&str]) -> Vec<Check> {
    let mut rec = Recorder::new(&Silent).only(only.iter().map(|s| s.to_string()).collect());
    let mut ctx = Ctx { lab, declared: t, rec: &mut rec };
    scenario::run(&mut ctx, &[Family::Upgrade]).await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {}", c.verdict, c.id, c.observed);
    }
    rec.checks
}

fn started_on(t: &Topology) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = t.hub_names().map(|n| (n.to_string(), "2.14.6".to_string())).collect();
    v.push(("edge-mid".into(), "2.12.8".into()));
    v.push(("edge-old".into(), "2.11.11".into()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_and_its_rollback_lose_no_acknowledged_write() {
    let t = behind();
    let root = tempfile::tempdir().unwrap();
    let to: Version = PINNED.parse().unwrap();
    let opts = UpOptions { runs_root: Some(root.path().to_path_buf()), upgrade_to: Some(to), ..UpOptions::default() };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(running_versions(&lab, &t).await, started_on(&t));
    let checks = upgrade(&mut lab, &t, &[]).await;
    let after = running_versions(&lab, &t).await;
    lab.shutdown().await;

    let rolling = check(&checks, &format!("upgrade/rolling/{PINNED}"));
    assert_eq!(rolling.verdict, Verdict::Passed, "{}", rolling.observed);
    for node in ["hub-1", "hub-2", "hub-3", "edge-mid", "edge-old"] {
        assert!(rolling.observed.contains(&format!("{node} ")), "every node was moved: {}", rolling.observed);
        for m in ["stop_ms", "start_ms", "unavailable_ms"] {
            assert!(rolling.metrics.contains_key(&format!("{node}_{m}")), "{node}_{m} recorded: {:?}", rolling.metrics);
        }
    }
    assert_eq!(rolling.metrics["acked_writes_lost"], 0.0);
    assert!(rolling.metrics["acked_writes_acked"] > 0.0, "the writers wrote during the upgrade");
    // Core traffic crossed the declared flows throughout (its loss is a measurement, not asserted).
    assert!(rolling.metrics["core_received"] > 0.0, "core messages crossed the declared flows: {:?}", rolling.metrics);
    assert!(rolling.observed.contains("declared flows"), "{}", rolling.observed);
    let back = check(&checks, &format!("upgrade/rollback/{PINNED}"));
    assert_eq!(back.verdict, Verdict::Passed, "{}", back.observed);
    // What the servers themselves say they are, after the rollback: what they started on.
    assert_eq!(after, started_on(&t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_will_not_start_is_reported_and_every_node_is_put_back() {
    let t = behind();
    let root = tempfile::tempdir().unwrap();
    // Passes the config check, then dies at start, as a build for the wrong platform or a broken package
    // would.
    let fake = root.path().join("nats-server-2.99.0");
    std::fs::write(&fake, "#!/bin/sh\ncase \"$1\" in -t) exit 0;; esac\necho '[FTL] natslab sabotage: this build will not start' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let opts = UpOptions { runs_root: Some(root.path().join("runs")), ..UpOptions::default() };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
    lab.upgrade_to = Some(NatsServer { path: fake, version: Version(2, 99, 0) });
    let checks = upgrade(&mut lab, &t, &["upgrade/rolling"]).await;
    let after = running_versions(&lab, &t).await;
    let ready = lab.wait_ready_all(std::time::Duration::from_secs(60)).await;
    lab.shutdown().await;

    let rolling = check(&checks, "upgrade/rolling/2.99.0");
    assert_eq!(rolling.verdict, Verdict::Violated, "{}", rolling.observed);
    for node in ["hub-1", "hub-2", "hub-3", "edge-mid", "edge-old"] {
        assert!(rolling.observed.contains(&format!("{node} did not come up on 2.99.0")), "{node} named: {}", rolling.observed);
    }
    assert_eq!(after, started_on(&t), "every node runs what it ran before");
    assert!(ready.is_ok(), "the lab is whole again: {ready:?}");
}

/// The state family reads each node's version from its own `/varz`: a node that runs another version than
/// the one it should (here: natslab believes edge-mid was moved to the pinned release; it was not) is
/// reported violated, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_version_than_expected_is_violated() {
    let t = load("mixed-versions.yaml");
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(t.clone(), &root).await;
    let pinned = natslab::server::exact(PINNED.parse().unwrap(), &mut |_| {}).unwrap();
    lab.servers.per_node.insert("edge-mid".into(), pinned);
    let mut rec = Recorder::new(&Silent).only(vec!["state/version".into()]);
    let mut ctx = Ctx { lab: &mut lab, declared: &t, rec: &mut rec };
    scenario::run(&mut ctx, &[Family::State]).await;
    lab.shutdown().await;
    let c = check(&rec.checks, "state/version/edge-mid");
    assert_eq!(c.verdict, Verdict::Violated, "{}", c.observed);
    assert!(c.observed.contains("runs 2.12.8, not 2.15.1"), "{}", c.observed);
    assert_eq!(verdict_of(&rec.checks, "state/version/edge-old"), Verdict::Passed);
    assert_eq!(verdict_of(&rec.checks, "state/version/hub-1"), Verdict::Passed);
}
