//! Creating declared streams and consumers through the JetStream API, with the API's real field names and
//! units (durations in ns, sizes in bytes, `num_replicas`: AUDIT §4b). The guide's `jetstream.streams`
//! config block does not exist in nats-server.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::errors::{Error, Result};
use crate::topology::{AckPolicy, Consumer, DeliverPolicy, ReplayPolicy, Retention, Storage, Stream, StreamCompression};

pub fn stream_config(s: &Stream) -> Value {
    let mut v = json!({
        "name": s.name,
        "retention": match s.retention { Retention::Limits => "limits", Retention::Interest => "interest", Retention::Workqueue => "workqueue" },
        "storage": match s.storage { Storage::File => "file", Storage::Memory => "memory" },
        "num_replicas": s.replicas,
    });
    if !s.subjects.is_empty() {
        v["subjects"] = json!(s.subjects);
    }
    if let Some(m) = s.max_msgs {
        v["max_msgs"] = json!(m);
    }
    if let Some(b) = s.max_bytes {
        v["max_bytes"] = json!(b.0);
    }
    if let Some(a) = &s.max_age {
        v["max_age"] = json!(a.as_nanos());
    }
    if let Some(m) = s.max_msg_size {
        v["max_msg_size"] = json!(m.0);
    }
    if let Some(d) = &s.duplicate_window {
        v["duplicate_window"] = json!(d.as_nanos());
    }
    if let Some(c) = s.compression {
        v["compression"] = json!(match c { StreamCompression::None => "none", StreamCompression::S2 => "s2" });
    }
    if !s.sources.is_empty() {
        v["sources"] = json!(s
            .sources
            .iter()
            .map(|src| {
                let mut o = json!({ "name": src.name });
                if let Some(d) = &src.domain {
                    o["external"] = json!({ "api": format!("$JS.{d}.API") });
                }
                if let Some(f) = &src.filter_subject {
                    o["filter_subject"] = json!(f);
                }
                if let Some(t) = &src.subject_transform {
                    o["subject_transforms"] = json!([{ "src": t.src, "dest": t.dest }]);
                }
                o
            })
            .collect::<Vec<_>>());
    }
    v
}

pub fn consumer_config(c: &Consumer) -> Value {
    let mut v = json!({
        "durable_name": c.name,
        "ack_policy": match c.ack_policy { AckPolicy::None => "none", AckPolicy::All => "all", AckPolicy::Explicit => "explicit" },
        "deliver_policy": match c.deliver_policy {
            DeliverPolicy::All => "all", DeliverPolicy::Last => "last", DeliverPolicy::New => "new", DeliverPolicy::LastPerSubject => "last_per_subject",
        },
        "replay_policy": match c.replay_policy { ReplayPolicy::Instant => "instant", ReplayPolicy::Original => "original" },
    });
    if let Some(d) = &c.deliver_subject {
        v["deliver_subject"] = json!(d);
    }
    if let Some(f) = &c.filter_subject {
        v["filter_subject"] = json!(f);
    }
    if let Some(a) = &c.ack_wait {
        v["ack_wait"] = json!(a.as_nanos());
    }
    if let Some(m) = c.max_deliver {
        v["max_deliver"] = json!(m);
    }
    if let Some(r) = c.rate_limit_bps {
        v["rate_limit_bps"] = json!(r);
    }
    v
}

/// A JetStream API request; an `error` in the answer becomes `Err` with the server's description.
pub async fn api(client: &async_nats::Client, prefix: &str, op: &str, body: &Value) -> Result<Value, String> {
    let subject = format!("{prefix}.{op}");
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let msg = client.request(subject.clone(), payload.into()).await.map_err(|e| format!("{subject}: {e}"))?;
    let v: Value = serde_json::from_slice(&msg.payload).map_err(|e| format!("{subject}: bad answer: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "{} (err_code {})",
            err.get("description").and_then(Value::as_str).unwrap_or("error"),
            err.get("err_code").and_then(Value::as_i64).unwrap_or(0)
        ));
    }
    Ok(v)
}

/// Creates a stream and its consumers; retries the transient failures of a cluster that has just elected
/// its meta leader (peers not yet known) until the deadline.
pub async fn create_stream(client: &async_nats::Client, prefix: &str, s: &Stream, deadline: Instant) -> Result<()> {
    let what = |x: &str| format!("stream {}{x}", s.name);
    let (op, body) = (format!("STREAM.CREATE.{}", s.name), stream_config(s));
    retry(deadline, || api(client, prefix, &op, &body))
        .await
        .map_err(|reason| Error::Provision { what: what(""), reason })?;
    for c in &s.consumers {
        let body = json!({ "stream_name": s.name, "config": consumer_config(c) });
        let op = format!("CONSUMER.CREATE.{}.{}", s.name, c.name);
        retry(deadline, || api(client, prefix, &op, &body))
            .await
            .map_err(|reason| Error::Provision { what: what(&format!(" consumer {}", c.name)), reason })?;
    }
    Ok(())
}

async fn retry<F, Fut>(deadline: Instant, mut f: F) -> Result<Value, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && transient(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e),
        }
    }
}

fn transient(e: &str) -> bool {
    ["insufficient resources", "no suitable peers", "timed out", "no responders", "temporarily unavailable", "10008", "10023"]
        .iter()
        .any(|k| e.contains(k))
}
