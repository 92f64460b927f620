//! Declared service levels (`expect:`) are compared, not just recorded: a level no lab can meet makes the
//! checks that measure it report violated, naming the bound. (The bounds are 1 ns: a leaf waits its
//! 100 ms reconnect interval before it redials, and every measurement includes at least a round trip to a
//! server, so these are certain misses, not timing thresholds.)

mod common;

use common::*;
use natslab::lab::{Lab, Quiet, UpOptions};
use natslab::scenario::{self, Ctx, Family, Recorder, Silent, Verdict};
use natslab::topology::{Expect, Topology};

async fn run(t: &Topology, families: &[Family], only: &[&str], proxied: bool) -> Vec<natslab::scenario::Check> {
    let root = tempfile::tempdir().unwrap();
    let opts = UpOptions { runs_root: Some(root.path().to_path_buf()), proxied, ..UpOptions::default() };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap();
    let mut rec = Recorder::new(&Silent).only(only.iter().map(|s| s.to_string()).collect());
    let mut ctx = Ctx { lab: &mut lab, declared: t, rec: &mut rec };
    scenario::run(&mut ctx, families).await;
    lab.shutdown().await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {}", c.verdict, c.id, c.observed);
    }
    rec.checks
}

/// A bound nothing meets: any reattach or catch-up takes at least a monitoring round trip.
fn impossible() -> Option<natslab::topology::Duration> {
    Some(natslab::topology::Duration::parse("1ns").unwrap())
}

fn missed(checks: &[natslab::scenario::Check], id: &str, bound: &str) {
    let c = check(checks, id);
    assert_eq!(c.verdict, Verdict::Violated, "{id}: {}", c.observed);
    assert!(c.observed.contains(bound), "{id} names the bound it missed: {}", c.observed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_levels_are_compared() {
    let mut t = load("failover.yaml");
    t.expect = Some(Expect { failover_within: impossible(), cold_start_within: impossible(), ..Expect::default() });
    let checks = run(&t, &[Family::Failover], &["failover/kill-hub", "failover/cold-start"], false).await;
    missed(&checks, "failover/kill-hub/edge-1", "expect.failover_within");
    missed(&checks, "failover/cold-start/edge-1", "expect.cold_start_within");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_and_reattach_levels_are_compared() {
    let mut t = load("leaf-peers.yaml");
    t.expect = Some(Expect { catchup_within: impossible(), reattach_within: impossible(), ..Expect::default() });
    let checks = run(&t, &[Family::Jetstream, Family::Network], &["jetstream/store-and-forward/hub", "network/cut-leaf/peer-b"], true).await;
    missed(&checks, "jetstream/store-and-forward/hub/FROM_PEER_B/peer-b/EVENTS", "expect.catchup_within");
    missed(&checks, "network/cut-leaf/peer-b", "expect.reattach_within");
}
