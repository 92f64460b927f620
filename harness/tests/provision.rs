//! `natslab provision` creates a node's declared streams and consumers, idempotently: a second run leaves
//! everything as it is; drift is reported field by field (exit 1, as a violation) and left alone unless
//! `--update` is given, which applies the declaration. What a NixOS host's provisioning unit runs.

mod common;

use common::*;
use natslab::backend::BackendKind;
use natslab::lab::{Lab, Quiet, UpOptions};
use natslab::probe::js;
use serde_json::json;

fn provision(env: &Env, inventory: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = env.cmd().args(["provision", "--inventory", inventory.to_str().unwrap()]).args(extra).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_idempotent_and_reports_drift() {
    let env = Env::new();
    let lab_run = env.detach("jetstream-domains.yaml", &["--no-provision"]);
    let inventory = lab_run.info.dir.join("inventory.json");

    let (code, out) = provision(&env, &inventory, &["--node", "store-1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("store-1: stream LOCAL_EVENTS created; consumers: local-worker created"), "{out}");
    let (code, out) = provision(&env, &inventory, &["--node", "store-1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("store-1: stream LOCAL_EVENTS unchanged; consumers: local-worker unchanged"), "{out}");
    let (code, out) = provision(&env, &inventory, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hub: stream ORDERS created") && out.contains("store-1: stream LOCAL_EVENTS unchanged"), "{out}");

    // Someone raises a limit: reported, not overwritten, until --update.
    let opts = UpOptions { backend: BackendKind::Attached, inventory: Some(inventory.clone()), ..UpOptions::default() };
    let lab = Lab::up(load("jetstream-domains.yaml"), &opts, &Quiet).await.unwrap();
    let c = lab.probe("store-1", "LOCAL").await.unwrap();
    let mut cfg = js::stream_info(&c, js::API, "LOCAL_EVENTS").await.unwrap()["config"].clone();
    cfg["max_msgs"] = json!(50);
    js::api(&c, js::API, "STREAM.UPDATE.LOCAL_EVENTS", &cfg).await.unwrap();
    let (code, out) = provision(&env, &inventory, &["--node", "store-1"]);
    assert_eq!(code, 1, "drift is the lab not being what was declared: {out}");
    assert!(out.contains("max_msgs: undeclared (default -1), got 50") && out.contains("--update"), "{out}");
    let still = js::stream_info(&c, js::API, "LOCAL_EVENTS").await.unwrap();
    assert_eq!(still["config"]["max_msgs"], 50, "without --update nothing is written");
    let (code, out) = provision(&env, &inventory, &["--node", "store-1", "--update"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("store-1: stream LOCAL_EVENTS updated"), "{out}");
    assert_eq!(js::stream_info(&c, js::API, "LOCAL_EVENTS").await.unwrap()["config"]["max_msgs"], -1);
}
