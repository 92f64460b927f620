//! The process backend for real: cim-reference comes up, routes mesh, leaves attach, subjects cross the leaf
//! links exactly as declared, and nothing survives teardown.

mod common;

use natslab::nemesis::Fault;

use std::time::Duration;

use common::*;
use natslab::plan::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_meshes_maps_subjects_and_tears_down() {
    let root = tempfile::tempdir().unwrap();
    let lab = up(load("cim-reference.yaml"), &root).await;

    // Full route mesh: every hub has routes to both others.
    let hubs: Vec<String> = lab.plan.hubs().map(|h| h.name.clone()).collect();
    for h in &hubs {
        let peers = lab.monitor.route_peers(lab.monitor_url(h).unwrap()).await.unwrap();
        let mut want: Vec<String> = hubs.iter().filter(|o| *o != h).cloned().collect();
        want.sort();
        assert_eq!(peers, want, "routes of {h}");
    }
    // Every leaf attached, to its preferred hub, bound to its own hub account.
    for (leaf, preferred) in [("cim-prod-001", "hub-1"), ("cim-prod-002", "hub-2"), ("cim-dev-001", "hub-3")] {
        assert_eq!(lab.leaf_hub(leaf).await.as_deref(), Some(preferred), "{leaf} attached to");
        let on_hub = lab.monitor.leafs(lab.monitor_url(preferred).unwrap()).await.unwrap();
        let account = lab.plan.account_id(&format!("LEAF_{}", leaf.to_uppercase().replace('-', "_")));
        assert!(on_hub.iter().any(|(n, a)| n == leaf && *a == account), "{preferred} /leafz: {on_hub:?}");
    }

    let hub = lab.access("hub-1", "HUB", "alchemist").unwrap().connect("test-hub").await.unwrap();
    for leaf in ["cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        let local = lab.access(leaf, "CIM", "cim-local").unwrap().connect("test-leaf").await.unwrap();

        // Leaf domain.graph.x arrives on the hub as leaf.<leaf>.domain.graph.x.
        let mut on_hub = hub.subscribe(format!("leaf.{leaf}.domain.graph.>")).await.unwrap();
        let mut local_sub = local.subscribe("domain.graph.>").await.unwrap();
        hub.flush().await.unwrap();
        local.flush().await.unwrap();
        let got = publish_until_received(&local, "domain.graph.x", leaf, &mut on_hub, Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some(format!("leaf.{leaf}.domain.graph.x").as_str()));
        // A local subscriber on the leaf still sees its own unprefixed subject.
        let m = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut local_sub)).await.unwrap().unwrap();
        assert_eq!(m.subject.as_str(), "domain.graph.x");

        // Hub commands.x arrives on the leaf as hub.commands.x.
        let mut cmds = local.subscribe("hub.commands.>").await.unwrap();
        local.flush().await.unwrap();
        let got = publish_until_received(&hub, "commands.x", "go", &mut cmds, Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some("hub.commands.x"));
    }

    // Declared streams exist on every leaf.
    let client = lab.probe("cim-prod-001", "CIM").await.unwrap();
    let info = natslab::probe::js::api(&client, "$JS.API", "STREAM.INFO.DOMAIN_EVENTS", &serde_json::json!({})).await.unwrap();
    assert_eq!(info["config"]["name"], "DOMAIN_EVENTS");

    let pids = lab.backend::<natslab::backend::process::ProcessBackend>().expect("processes").pids();
    let dir = lab.dir.clone();
    assert_eq!(pids.len(), 6);
    lab.shutdown().await;
    for pid in pids {
        assert!(!server_alive_under(pid, &dir), "nats-server {pid} survived teardown");
    }
    assert!(!dir.exists(), "run directory {} was not removed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labs_in_parallel_do_not_collide() {
    let root = tempfile::tempdir().unwrap();
    let t = load("cim-reference.yaml");
    let (a, b) = tokio::join!(up(t.clone(), &root), up(t, &root));
    assert_ne!(a.endpoint("hub-1").unwrap().client_url, b.endpoint("hub-1").unwrap().client_url);
    for lab in [&a, &b] {
        for n in lab.plan.nodes.iter().filter(|n| n.role == Role::Leaf) {
            assert!(lab.leaf_hub(&n.name).await.is_some());
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hub_restarts_at_the_same_address_and_rejoins() {
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(load("cim-reference.yaml"), &root).await;
    lab.apply(&Fault::Kill { node: "hub-2".into() }).await.unwrap();
    assert!(lab.monitor.healthy(lab.monitor_url("hub-2").unwrap()).await.is_err());
    lab.apply(&Fault::Start { node: "hub-2".into() }).await.unwrap();
    lab.wait_ready(&["hub-1", "hub-2", "hub-3"], Duration::from_secs(30)).await.unwrap();
    lab.shutdown().await;
}

/// `nats-server -t` misses startup failures (AUDIT §1b): every topology must also boot and become ready,
/// with its streams provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topology_boots() {
    let root = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(topology_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let lab = natslab::Lab::up(load(&name), &opts(&root), &natslab::lab::Quiet)
            .await
            .unwrap_or_else(|e| panic!("{name} did not boot: {e}"));
        lab.shutdown().await;
    }
}
