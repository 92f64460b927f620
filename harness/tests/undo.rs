//! The one final heal: a check that leaves a partition, a pause, a slow link and a kill behind and then
//! fails gets all of them undone by `Ctx::check` before the next family starts — on every backend,
//! attached included (there the faults go over the lab's fault channel to its supervisor). The next
//! families (health, mapping) then pass on the same lab.

mod common;

use std::time::Duration;

use common::*;
use natslab::backend::BackendKind;
use natslab::lab::{Lab, Quiet, UpOptions};
use natslab::nemesis::{self, Capability, Fault};
use natslab::scenario::{self, Check, Ctx, Family, Outcome, Pending, Recorder, Silent, Spec, Verdict};
use natslab::topology::Topology;

/// Runs one check that applies every fault the lab can do and fails, then health and mapping; the checks.
async fn leave_faults_then_check(lab: &mut Lab, t: &Topology) -> Vec<Check> {
    let mut rec = Recorder::new(&Silent);
    let mut ctx = Ctx { lab, declared: t, rec: &mut rec };
    let spec = Spec::new(Family::Network, "planted", &[], "a check that fails with faults in force", "nothing");
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let hubs: Vec<&str> = t.hub_names().collect();
        let mut applied = Vec::new();
        for (need, fault) in [
            (Capability::Partition, Fault::Partition { grudge: nemesis::split(&["hub-1"], &["hub-2"]) }),
            (Capability::Isolate, Fault::Isolate { node: "hub-3".into() }),
            (Capability::Latency, Fault::Slow { a: "edge-1".into(), b: "hub-2".into(), latency: Duration::from_millis(300), jitter: Duration::ZERO }),
            (Capability::Bandwidth, Fault::Cap { a: "edge-1".into(), b: "hub-1".into(), bytes_per_s: 1000 }),
            (Capability::Pause, Fault::Pause { node: "hub-2".into() }),
            (Capability::Kill, Fault::Kill { node: "hub-1".into() }),
        ] {
            if lab.can(need) {
                lab.apply(&fault).await.map_err(|e| format!("{fault}: {e}"))?;
                applied.push(fault.to_string());
            }
        }
        assert!(!lab.in_force().is_empty(), "the planted check applied nothing on {:?}", hubs);
        Ok(Outcome::Violated(format!("planted failure after {}", applied.join(", "))))
    })
    .await;
    assert!(ctx.lab.in_force().is_empty(), "faults left in force: {:?}", ctx.lab.in_force());
    assert!(ctx.lab.network_in_force().is_empty(), "the network still has: {:?}", ctx.lab.network_in_force());
    scenario::run(&mut ctx, &[Family::Health, Family::Mapping]).await;
    rec.checks
}

fn assert_undone(checks: &[Check]) {
    let planted = check(checks, "network/planted");
    assert_eq!(planted.verdict, Verdict::Violated, "the planted failure is reported as such, not as a broken heal: {}", planted.observed);
    assert!(planted.observed.contains("kill hub-1"), "{}", planted.observed);
    assert!(!planted.observed.contains("could not undo") && !planted.observed.contains("not ready again"), "{}", planted.observed);
    let rest: Vec<&Check> = checks.iter().filter(|c| c.id != "network/planted").collect();
    assert!(!rest.is_empty());
    let bad: Vec<String> = rest.iter().filter(|c| c.verdict != Verdict::Passed).map(|c| format!("{}: {:?} {}", c.id, c.verdict, c.observed)).collect();
    assert!(bad.is_empty(), "the next families found faults left over:\n{}", bad.join("\n"));
}

async fn on(backend: BackendKind) {
    let t = load("failover.yaml");
    let root = tempfile::tempdir().unwrap();
    let opts = UpOptions { backend, proxied: true, timeout: Duration::from_secs(120), ..opts(&root) };
    let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("lab did not come up: {e}"));
    let checks = leave_faults_then_check(&mut lab, &t).await;
    lab.shutdown().await;
    assert_undone(&checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undone_on_process() {
    on(BackendKind::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undone_on_netns() {
    if netns_or_skip() {
        on(BackendKind::Netns).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undone_on_container() {
    if engine_or_skip().await {
        on(BackendKind::Container).await;
    }
}

/// A detached lab with link proxies; the attached run asks its supervisor for every fault and every undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undone_on_attached() {
    let env = Env::new();
    let detached = env.detach("failover.yaml", &["--link-proxies"]);
    let info = &detached.info;
    let t = load("failover.yaml");
    let opts = UpOptions { backend: BackendKind::Attached, inventory: Some(info.dir.join("inventory.json")), ..UpOptions::default() };
    let result = async {
        let mut lab = Lab::up(t.clone(), &opts, &Quiet).await.unwrap_or_else(|e| panic!("attach: {e}"));
        for c in [Capability::Kill, Capability::Pause, Capability::Partition, Capability::Latency] {
            assert!(lab.can(c), "the supervisor's channel offers {c:?}: {:?}", lab.faults());
        }
        let checks = leave_faults_then_check(&mut lab, &t).await;
        lab.shutdown().await;
        checks
    }
    .await;
    assert_undone(&result);
}
