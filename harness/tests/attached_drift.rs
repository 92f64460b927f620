//! An attached run checks and never writes: on a lab whose consumers and streams drifted from the
//! declaration, `natslab run --backend attached` reports each drift as violated, field by field, and the
//! lab's JetStream state (every stream and consumer, by name and configuration) is the same afterwards.

mod common;

use std::collections::BTreeMap;

use common::*;
use natslab::backend::BackendKind;
use natslab::lab::{Lab, Quiet, UpOptions};
use natslab::probe::js;
use serde_json::{json, Value};

/// Every stream and consumer, with its configuration, in each account that holds JetStream assets.
async fn snapshot(lab: &Lab) -> BTreeMap<String, Value> {
    let places = [("hub-1", "HUB"), ("hub-1", "LEAF_STORE_1"), ("hub-1", "LEAF_STORE_2"), ("store-1", "LOCAL"), ("store-2", "LOCAL")];
    let mut out = BTreeMap::new();
    for (node, account) in places {
        let c = lab.probe(node, account).await.unwrap();
        for s in js::stream_names(&c, js::API).await.unwrap() {
            // Patient: a stream just updated may be between leaders for a moment.
            let info = js::api_patient(&c, js::API, &format!("STREAM.INFO.{s}"), &json!({}), 20).await.unwrap_or_else(|e| panic!("{node}/{account}/{s}: {e}"));
            out.insert(format!("{node}/{account}/{s}"), info["config"].clone());
            for name in js::consumer_names(&c, js::API, &s).await.unwrap() {
                let ci = js::api_patient(&c, js::API, &format!("CONSUMER.INFO.{s}.{name}"), &json!({}), 20).await.unwrap_or_else(|e| panic!("{s}/{name}: {e}"));
                out.insert(format!("{node}/{account}/{s}/{name}"), ci["config"].clone());
            }
        }
    }
    out
}

async fn api(lab: &Lab, node: &str, account: &str, op: &str, body: Value) -> Value {
    let c = lab.probe(node, account).await.unwrap();
    js::api(&c, js::API, op, &body).await.unwrap_or_else(|e| panic!("{op}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_field_by_field_and_nothing_is_written() {
    let env = Env::new();
    let lab_run = env.detach("jetstream-domains.yaml", &[]);
    let inventory = lab_run.info.dir.join("inventory.json");
    let opts = UpOptions { backend: BackendKind::Attached, inventory: Some(inventory.clone()), ..UpOptions::default() };
    let lab = Lab::up(load("jetstream-domains.yaml"), &opts, &Quiet).await.unwrap();

    // The drift: a consumer deleted, a stream limit the topology does not declare, a consumer changed.
    api(&lab, "hub-1", "HUB", "CONSUMER.DELETE.ORDERS.order-audit", json!({})).await;
    let mut orders = api(&lab, "hub-1", "HUB", "STREAM.INFO.ORDERS", json!({})).await["config"].clone();
    orders["max_msgs"] = json!(1000);
    api(&lab, "hub-1", "HUB", "STREAM.UPDATE.ORDERS", orders).await;
    let mut worker = api(&lab, "store-1", "LOCAL", "CONSUMER.INFO.LOCAL_EVENTS.local-worker", json!({})).await["config"].clone();
    worker["max_deliver"] = json!(7);
    api(&lab, "store-1", "LOCAL", "CONSUMER.CREATE.LOCAL_EVENTS.local-worker", json!({ "stream_name": "LOCAL_EVENTS", "config": worker, "action": "update" })).await;
    let before = snapshot(&lab).await;

    let report = env.runs.path().join("drift.json");
    let run = env
        .cmd()
        .args(["run", "--backend", "attached", "--inventory", inventory.to_str().unwrap(), "--scenario", "state,jetstream", "--json", report.to_str().unwrap()])
        .output()
        .unwrap();
    let after = snapshot(&lab).await;
    assert_eq!(run.status.code(), Some(1), "violations exit 1:\n{}", String::from_utf8_lossy(&run.stdout));
    assert_eq!(before, after, "the attached run changed the lab's JetStream state");

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let checks = v["runs"][0]["checks"].as_array().unwrap();
    let by_id = |id: &str| checks.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}"));
    let deleted = by_id("jetstream/consumer-config/hub/ORDERS/order-audit");
    assert_eq!(deleted["verdict"], "violated", "{deleted}");
    assert!(deleted["observed"].as_str().unwrap().contains("no such consumer"), "{deleted}");
    let limits = by_id("jetstream/stream-config/hub/ORDERS");
    assert_eq!(limits["verdict"], "violated", "{limits}");
    assert!(limits["observed"].as_str().unwrap().contains("max_msgs: undeclared (default -1), got 1000"), "{limits}");
    let changed = by_id("jetstream/consumer-config/store-1/LOCAL_EVENTS/local-worker");
    assert_eq!(changed["verdict"], "violated", "{changed}");
    assert!(changed["observed"].as_str().unwrap().contains("max_deliver: declared 3, got 7"), "{changed}");
    // What did not drift still passes: the drift is named, not smeared over the run.
    assert_eq!(by_id("jetstream/stream-config/store-1/LOCAL_EVENTS")["verdict"], "passed");
    assert_eq!(by_id("state/streams/hub/HUB")["verdict"], "passed");
}
