//! The JetStream family against real labs: every check passes (or says why it skipped) on the topologies that
//! declare streams, and a lab rendered with a consumer whose max_deliver differs from the declared one is caught.

mod common;

use common::*;
use natslab::scenario::{jetstream, Check, Ctx, Recorder, Silent, Verdict};
use natslab::topology::Topology;

/// Brings `rendered` up, runs the JetStream family against `declared`, tears down; returns the checks.
async fn run_jetstream(declared: &Topology, rendered: Topology) -> Vec<Check> {
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(rendered, &root).await;
    let mut rec = Recorder::new(&Silent);
    let mut ctx = Ctx { lab: &mut lab, declared, rec: &mut rec };
    let started = std::time::Instant::now();
    jetstream::run(&mut ctx).await;
    eprintln!("{}: jetstream family took {:?} (lab ready in {:?})", declared.name, started.elapsed(), lab.ready_in);
    lab.shutdown().await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {} [{:.0} ms] {:?}", c.verdict, c.name, c.observed, c.duration.as_secs_f64() * 1000.0, c.metrics);
    }
    rec.checks
}

fn assert_all_pass(checks: &[Check]) {
    assert!(!checks.is_empty(), "no checks derived");
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Violated | Verdict::HarnessError))
        .map(|c| format!("{:?} {}: {}", c.verdict, c.id, c.observed))
        .collect();
    assert!(bad.is_empty(), "checks failed:\n{}", bad.join("\n"));
    for c in checks.iter().filter(|c| c.verdict == Verdict::Skipped) {
        assert!(!c.observed.trim().is_empty(), "{} skipped without a reason", c.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_passes() {
    let t = load("cim-reference.yaml");
    let checks = run_jetstream(&t, t.clone()).await;
    assert_all_pass(&checks);
    for leaf in ["cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        let account = format!("LEAF_{}", leaf.to_uppercase().replace('-', "_"));
        for id in [
            format!("jetstream/stream-config/{leaf}/DOMAIN_EVENTS"),
            format!("jetstream/consumer-config/{leaf}/DOMAIN_EVENTS/graph-processor"),
            format!("jetstream/dedup/{leaf}/DOMAIN_EVENTS"),
            format!("jetstream/interest-retention/{leaf}/METRICS"),
            format!("jetstream/domain-isolation/{leaf}/METRICS/hub:{account}"),
            format!("jetstream/domain-access/{leaf}/DOMAIN_EVENTS/hub:{account}"),
            format!("jetstream/file-store-durable/{leaf}"),
        ] {
            assert_eq!(verdict_of(&checks, &id), Verdict::Passed, "{id}");
        }
        // The push consumer's max_deliver is measured, not just read back.
        let md = check(&checks, &format!("jetstream/max-deliver/{leaf}/DOMAIN_EVENTS/graph-processor"));
        assert_eq!(md.verdict, Verdict::Passed);
        assert!(md.observed.starts_with("3 deliveries"), "{}", md.observed);
    }
    assert_eq!(verdict_of(&checks, "jetstream/stream-config/hub/HUB_EVENTS"), Verdict::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_domains_passes() {
    let t = load("jetstream-domains.yaml");
    let checks = run_jetstream(&t, t.clone()).await;
    assert_all_pass(&checks);
    for id in [
        "jetstream/stream-config/hub/ORDERS",
        "jetstream/stream-config/hub/FROM_STORE_1",
        "jetstream/consumer-config/hub/ORDERS/order-audit",
        "jetstream/max-deliver/hub/ORDERS/order-audit",
        "jetstream/max-deliver/store-1/LOCAL_EVENTS/local-worker",
        "jetstream/dedup/hub/ORDERS",
        "jetstream/dedup/store-1/LOCAL_EVENTS",
        "jetstream/max-msg-size/store-1/LOCAL_EVENTS",
        "jetstream/domain-isolation/hub/FROM_STORE_1/store-1:LOCAL",
        "jetstream/domain-access/hub/FROM_STORE_1/store-1:LOCAL",
        "jetstream/domain-isolation/store-2/LOCAL_EVENTS/hub:LEAF_STORE_2",
        "jetstream/domain-access/store-2/LOCAL_EVENTS/hub:LEAF_STORE_2",
        "jetstream/store-and-forward/hub/FROM_STORE_1/store-1/LOCAL_EVENTS",
        "jetstream/store-and-forward/hub/FROM_STORE_2/store-2/LOCAL_EVENTS",
        "jetstream/file-store-durable/store-1",
        "jetstream/file-store-durable/store-2",
    ] {
        assert_eq!(verdict_of(&checks, id), Verdict::Passed, "{id}");
    }
    let sf = check(&checks, "jetstream/store-and-forward/hub/FROM_STORE_1/store-1/LOCAL_EVENTS");
    assert!(sf.metrics.contains_key("catchup_ms"), "{:?}", sf.metrics);
}

/// The lab is rendered with local-worker's max_deliver 3 → 4 while the declaration says 3: the configuration
/// check and the delivery count both catch it. Only store-1's JetStream is kept, to stay quick; its stream is
/// declared in memory here, so the durability check has to bring its own temporary file stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_max_deliver_is_caught() {
    let mut declared = load("jetstream-domains.yaml");
    declared.hub.streams.clear();
    declared.leaves.retain(|l| l.name == "store-1");
    declared.leaves[0].streams[0].storage = natslab::topology::Storage::Memory;
    let mut rendered = declared.clone();
    let consumer = &mut rendered.leaves[0].streams[0].consumers[0];
    assert_eq!((consumer.name.as_str(), consumer.max_deliver), ("local-worker", Some(3)));
    consumer.max_deliver = Some(4);

    let checks = run_jetstream(&declared, rendered).await;
    let config = check(&checks, "jetstream/consumer-config/store-1/LOCAL_EVENTS/local-worker");
    assert_eq!(config.verdict, Verdict::Violated, "{}", config.observed);
    assert!(config.observed.contains("max_deliver: declared 3, got 4"), "{}", config.observed);
    let probe = check(&checks, "jetstream/max-deliver/store-1/LOCAL_EVENTS/local-worker");
    assert_eq!(probe.verdict, Verdict::Violated, "{}", probe.observed);
    assert!(probe.observed.starts_with("4 deliveries"), "{}", probe.observed);
    let durable = check(&checks, "jetstream/file-store-durable/store-1");
    assert!(durable.name.contains("NATSLAB_DURABLE_"), "durability on a temporary stream: {}", durable.name);
    assert_eq!(durable.verdict, Verdict::Passed, "{}", durable.observed);
    // Nothing else is blamed.
    let others: Vec<String> = checks
        .iter()
        .filter(|c| !c.id.contains("local-worker") && matches!(c.verdict, Verdict::Violated | Verdict::HarnessError))
        .map(|c| format!("{}: {}", c.id, c.observed))
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

