//! The mapping family against real labs: every declared flow passes on each topology that declares flows;
//! a lab rendered without a declared flow, or with an undeclared one, is caught.

mod common;

use common::*;
use natslab::scenario::{mapping, Check, Ctx, Recorder, Silent, Verdict};
use natslab::topology::{Flow, Topology};

/// Brings `rendered` up, runs the mapping family against `declared`, tears down; returns the checks.
async fn run_mapping(declared: &Topology, rendered: Topology) -> Vec<Check> {
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(rendered, &root).await;
    let mut rec = Recorder::new(&Silent);
    let mut ctx = Ctx { lab: &mut lab, declared, rec: &mut rec };
    let started = std::time::Instant::now();
    mapping::run(&mut ctx).await;
    eprintln!("{}: mapping family took {:?} (lab ready in {:?})", declared.name, started.elapsed(), lab.ready_in);
    lab.shutdown().await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {} [{:.0} ms]", c.verdict, c.name, c.observed, c.duration.as_secs_f64() * 1000.0);
    }
    rec.checks
}

/// The family passes on the topology as declared, with one check per declared flow; returns its checks.
async fn passes_on(file: &str) -> Vec<Check> {
    let t = load(file);
    let checks = run_mapping(&t, t.clone()).await;
    let bad = failures(&checks);
    assert!(bad.is_empty(), "checks failed:\n{}", bad.join("\n"));
    for l in &t.leaves {
        for r in l.remotes.iter() {
            for f in &r.exports {
                assert_eq!(verdict_of(&checks, &format!("mapping/export/{}/{}", l.name, f.subject)), Verdict::Passed);
                assert_eq!(verdict_of(&checks, &format!("mapping/local/{}/{}", l.name, f.subject)), Verdict::Passed);
            }
            for f in &r.imports {
                assert_eq!(verdict_of(&checks, &format!("mapping/import/{}/{}", l.name, f.subject)), Verdict::Passed);
            }
        }
        assert_eq!(verdict_of(&checks, &format!("mapping/leak-up/{}", l.name)), Verdict::Passed);
        assert_eq!(verdict_of(&checks, &format!("mapping/leak-down/{}", l.name)), Verdict::Passed);
        for other in t.leaves.iter().filter(|o| o.name != l.name) {
            assert_eq!(verdict_of(&checks, &format!("mapping/leaf-to-leaf/{}/{}", l.name, other.name)), Verdict::Passed);
        }
    }
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_passes() {
    passes_on("cim-reference.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_mapping_passes() {
    let checks = passes_on("subject-mapping.yaml").await;
    let export = check(&checks, "mapping/export/site-a/domain.graph.>");
    assert!(export.observed.contains("received it as leaf.site-a.domain.graph."), "{}", export.observed);
    let import = check(&checks, "mapping/import/site-b/commands.>");
    assert!(import.observed.contains("received it as hub.commands."), "{}", import.observed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_passes() {
    passes_on("mtls.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_jwt_passes() {
    passes_on("operator-jwt.yaml").await;
}

/// The lab lacks one declared export and one declared import: exactly those two flows are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_flow_is_caught() {
    let declared = load("subject-mapping.yaml");
    let mut rendered = declared.clone();
    rendered.leaves[0].remotes[0].exports.retain(|f| f.subject != "metrics.>");
    rendered.leaves[1].remotes[0].imports.retain(|f| f.subject != "commands.>");
    let checks = run_mapping(&declared, rendered).await;

    assert_eq!(verdict_of(&checks, "mapping/export/site-a/metrics.>"), Verdict::Violated);
    assert_eq!(verdict_of(&checks, "mapping/import/site-b/commands.>"), Verdict::Violated);
    let bad = failures(&checks);
    assert_eq!(bad.len(), 2, "only the two missing flows fail:\n{}", bad.join("\n"));
}

/// The lab carries flows nobody declared: site-a's graph export without its prefix, an export of
/// `natslab.>`, and site-b importing straight from site-a's hub account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_flows_are_caught() {
    let declared = load("subject-mapping.yaml");
    let mut rendered = declared.clone();
    let a = &mut rendered.leaves[0].remotes[0];
    a.exports[0].prefix = None;
    a.exports.push(Flow { subject: "natslab.>".into(), prefix: None });
    let b = &mut rendered.leaves[1].remotes[0];
    b.peer = Some("LEAF_SITE_A".into());
    b.exports.clear();
    b.imports = vec![Flow { subject: "domain.graph.>".into(), prefix: None }];
    let checks = run_mapping(&declared, rendered).await;

    for id in ["mapping/export/site-a/domain.graph.>", "mapping/leak-up/site-a", "mapping/leaf-to-leaf/site-a/site-b"] {
        assert_eq!(verdict_of(&checks, id), Verdict::Violated, "{id}");
    }
    let hub = check(&checks, "mapping/leak-up/site-a");
    assert!(hub.observed.contains("natslab.private."), "{}", hub.observed);
    assert_eq!(verdict_of(&checks, "mapping/local/site-a/domain.graph.>"), Verdict::Passed);
}

/// Across the hub cluster: cim-prod-002 (on hub-2) is rendered to import cim-prod-001's metrics (on hub-1)
/// straight from its hub account. The leak crosses a route, and the check still bounds it with controls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_across_the_hub_cluster_is_caught() {
    let declared = load("cim-reference.yaml");
    let mut rendered = declared.clone();
    let b = &mut rendered.leaves[1].remotes[0];
    b.peer = Some("LEAF_CIM_PROD_001".into());
    b.exports.clear();
    b.imports = vec![Flow { subject: "metrics.>".into(), prefix: Some("stolen".into()) }];
    let checks = run_mapping(&declared, rendered).await;

    let leak = check(&checks, "mapping/leaf-to-leaf/cim-prod-001/cim-prod-002");
    assert_eq!(leak.verdict, Verdict::Violated, "{}", leak.observed);
    assert!(
        leak.observed.contains("via hub-1 and hub-2") && leak.observed.contains("as stolen.metrics."),
        "{}",
        leak.observed
    );
    assert_eq!(verdict_of(&checks, "mapping/leaf-to-leaf/cim-prod-001/cim-dev-001"), Verdict::Passed);
}
