use testcontainers::{GenericImage, runners::AsyncRunner, ImageExt, core::IntoContainerPort};
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_tc() {
    let c = GenericImage::new("natslab/nats-server", "dd9b8a99f789")
        .with_exposed_port(8222.tcp())
        .with_cmd(["-m", "8222"])
        .with_label("natslab.run", "scratch-tc")
        .start().await;
    match &c {
        Ok(c) => eprintln!("started {} port {:?}", c.id(), c.get_host_port_ipv4(8222).await),
        Err(e) => eprintln!("ERR {e}"),
    }
}
