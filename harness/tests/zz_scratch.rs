mod common;
use common::*;
use natslab::scenario::{mapping, Ctx, Recorder, Silent};
use natslab::topology::Flow;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_hub_leak() {
    let declared = load("cim-reference.yaml");
    let mut rendered = declared.clone();
    let b = &mut rendered.leaves[1].remotes[0];
    b.peer = Some("LEAF_CIM_PROD_001".into());
    b.exports.clear();
    b.imports = vec![Flow { subject: "metrics.>".into(), prefix: Some("x".into()) }];
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(rendered, &root).await;
    let mut rec = Recorder::new(&Silent);
    let mut ctx = Ctx { lab: &mut lab, declared: &declared, rec: &mut rec };
    mapping::run(&mut ctx).await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {} [{:.0} ms]", c.verdict, c.name, c.observed, c.duration.as_secs_f64() * 1000.0);
    }
    lab.shutdown().await;
}
