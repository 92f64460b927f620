mod common;
use std::time::Instant;
use natslab::backend::container::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_timings() {
    let t0 = Instant::now();
    let e = Engine::connect().await.unwrap();
    eprintln!("connect {:?} api {}", t0.elapsed(), e.api_version());
    let server = natslab::server::find_or_install(&mut |_| {}).unwrap();
    let t0 = Instant::now();
    let tag = image_tag(&server.path).unwrap();
    eprintln!("hash {:?} {tag}", t0.elapsed());
    let root = tempfile::tempdir().unwrap();
    let mut o = common::opts(&root);
    o.backend = natslab::backend::BackendKind::Container; o.keep = true;
    for _ in 0..4 {
        let t0 = Instant::now();
        let lab = natslab::Lab::up(common::load("cim-reference.yaml"), &o, &natslab::lab::Quiet).await.unwrap();
        eprintln!("up {:?} ready_in {:?}", t0.elapsed(), lab.ready_in);
        let dir = lab.dir.clone();
        let t0 = Instant::now();
        lab.shutdown().await;
        for h in ["hub-1","hub-2","hub-3"] {
            let log = std::fs::read_to_string(dir.join("nodes").join(h).join("server.log")).unwrap_or_default();
            let pick = |pat: &str| log.lines().find(|l| l.contains(pat)).map(|l| l[15..30].to_string()).unwrap_or_default();
            eprintln!("  {h}: start {} first-route {} no-such-host {} leader {}", pick("Starting nats-server"), pick("Route connection created"), log.matches("no such host").count(), pick("metadata leader"));
        }
        eprintln!("shutdown {:?}", t0.elapsed());
    }
}
