//! The network family on the process backend, through link proxies: partitions and half-open links are
//! real (sockets reset, bytes dropped), and a lab that cannot do what the topology declares is caught.

mod common;

use common::*;
use natslab::lab::{Quiet, UpOptions};
use natslab::runner::{run_topology, Selection};
use natslab::scenario::{Family, Silent, Verdict};

fn proxied(root: &tempfile::TempDir) -> UpOptions {
    UpOptions { proxied: true, ..opts(root) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_half_open_links_on_failover_yaml() {
    let root = tempfile::tempdir().unwrap();
    let t = load("failover.yaml");
    let run = run_topology(&t, t.clone(), "failover.yaml", &Selection::families(&[Family::Network]), &proxied(&root), &Quiet, &Silent).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(verdict_of(&run.checks, "network/cut-leaf/edge-1"), Verdict::Passed, "{:#?}", run.checks);
    let half_open = check(&run.checks, "network/half-open/edge-1");
    assert_eq!(half_open.verdict, Verdict::Passed, "{half_open:#?}");
    assert!(half_open.metrics.contains_key("blackhole_failover_ms"));
    // No hub JetStream here: the minority check says why it cannot run.
    assert_eq!(verdict_of(&run.checks, "network/minority"), Verdict::Skipped);
}

/// Declared: the leaf lists three hubs. Rendered: only hub-1. With proxies the hubs advertise nothing, so
/// the leaf cannot learn another hub and a half-open link to hub-1 strands it: a violation, not a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_hub_leaf_is_caught_by_the_half_open_check() {
    let root = tempfile::tempdir().unwrap();
    let declared = load("failover.yaml");
    let mut rendered = declared.clone();
    rendered.leaves[0].remotes[0].hubs.truncate(1);
    let run = run_topology(&declared, rendered, "failover.yaml", &Selection::families(&[Family::Network]), &proxied(&root), &Quiet, &Silent).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(verdict_of(&run.checks, "network/half-open/edge-1"), Verdict::Violated, "{:#?}", run.checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_are_skipped_where_links_are_direct() {
    let root = tempfile::tempdir().unwrap();
    let t = load("failover.yaml");
    let mut lab = up(t.clone(), &root).await;
    let mut rec = natslab::scenario::Recorder::new(&Silent);
    {
        let mut ctx = natslab::scenario::Ctx { lab: &mut lab, declared: &t, rec: &mut rec };
        natslab::scenario::run(&mut ctx, &[Family::Network]).await;
    }
    assert!(rec.checks.iter().all(|c| c.verdict == Verdict::Skipped), "{:#?}", rec.checks);
    assert!(rec.checks.iter().filter(|c| c.id != "network/minority").all(|c| c.observed.contains("cannot")), "{:#?}", rec.checks);
    lab.shutdown().await;
}
