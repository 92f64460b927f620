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
    o.backend = natslab::backend::BackendKind::Container;
    for _ in 0..2 {
        let t0 = Instant::now();
        let lab = natslab::Lab::up(common::load("cim-reference.yaml"), &o, &natslab::lab::Quiet).await.unwrap();
        eprintln!("up {:?} ready_in {:?}", t0.elapsed(), lab.ready_in);
        let t0 = Instant::now();
        lab.shutdown().await;
        eprintln!("shutdown {:?}", t0.elapsed());
    }
}
