//! Creating declared streams and consumers through the JetStream API, with the API's real field names and
//! units (durations in ns, sizes in bytes, `num_replicas`: AUDIT §4b). The guide's `jetstream.streams`
//! config block does not exist in nats-server.

use std::time::Instant;

use serde_json::{json, Value};

use crate::errors::{Error, Result};
use crate::probe::js;
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
    if let Some(d) = s.discard {
        v["discard"] = json!(match d { crate::topology::Discard::Old => "old", crate::topology::Discard::New => "new" });
    }
    if let Some(d) = &s.duplicate_window {
        v["duplicate_window"] = json!(d.as_nanos());
    }
    if let Some(c) = s.compression {
        v["compression"] = json!(match c { StreamCompression::None => "none", StreamCompression::S2 => "s2" });
    }
    if !s.sources.is_empty() {
        v["sources"] = json!(s.sources.iter().map(source_config).collect::<Vec<_>>());
    }
    if let Some(m) = &s.mirror {
        v["mirror"] = source_config(m);
    }
    if s.allow_msg_ttl {
        v["allow_msg_ttl"] = json!(true);
    }
    if s.allow_msg_counter {
        v["allow_msg_counter"] = json!(true);
    }
    v
}

fn source_config(src: &crate::topology::Source) -> Value {
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

/// What provisioning one stream did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provisioned {
    pub stream: String,
    /// `created`, `unchanged` (it was there as declared) or `updated` (asked to, it differed).
    pub stream_action: &'static str,
    /// (consumer, action), as for the stream.
    pub consumers: Vec<(String, &'static str)>,
}

/// Creates a stream and its consumers where missing, idempotently: one that exists as declared is left alone,
/// one that exists otherwise is an error naming the fields — unless `update`, which applies the declared
/// configuration. Retries the transient failures of a cluster that has just elected its meta leader.
pub async fn create_stream(client: &async_nats::Client, prefix: &str, s: &Stream, deadline: Instant) -> Result<Provisioned> {
    ensure_stream(client, prefix, s, deadline, false).await
}

pub async fn ensure_stream(client: &async_nats::Client, prefix: &str, s: &Stream, deadline: Instant, update: bool) -> Result<Provisioned> {
    let what = |x: &str| format!("stream {}{x}", s.name);
    let config = stream_config(s);
    let existing = match js::stream_info(client, prefix, &s.name).await {
        Ok(info) => Some(info),
        Err(e) if js::not_found(&e) => None,
        Err(e) if js::no_responders(&e) || e.contains("timed out") => None,
        Err(e) => return Err(Error::Provision { what: what(""), reason: e }),
    };
    let stream_action = match existing {
        None => {
            let op = format!("STREAM.CREATE.{}", s.name);
            js::retry_transient(deadline, || js::api(client, prefix, &op, &config))
                .await
                .map_err(|reason| Error::Provision { what: what(""), reason })?;
            "created"
        }
        Some(info) => {
            let drift = stream_drift(s, &info["config"]);
            if drift.is_empty() {
                "unchanged"
            } else if update {
                let op = format!("STREAM.UPDATE.{}", s.name);
                js::retry_transient(deadline, || js::api(client, prefix, &op, &config))
                    .await
                    .map_err(|reason| Error::Provision { what: what(""), reason })?;
                "updated"
            } else {
                return Err(Error::Drift { what: what(""), fields: drift.join("; ") });
            }
        }
    };
    let mut consumers = Vec::new();
    for c in &s.consumers {
        let config = consumer_config(c);
        let existing = match js::consumer_info(client, prefix, &s.name, &c.name).await {
            Ok(info) => Some(info),
            Err(e) if js::not_found(&e) => None,
            Err(e) => return Err(Error::Provision { what: what(&format!(" consumer {}", c.name)), reason: e }),
        };
        let drift = existing.as_ref().map(|i| consumer_drift(c, &i["config"]));
        let action = match drift {
            Some(d) if d.is_empty() => "unchanged",
            Some(d) if !update => {
                return Err(Error::Drift { what: what(&format!(" consumer {}", c.name)), fields: d.join("; ") })
            }
            found => {
                let body = json!({ "stream_name": s.name, "config": config });
                let op = format!("CONSUMER.CREATE.{}.{}", s.name, c.name);
                js::retry_transient(deadline, || js::api(client, prefix, &op, &body))
                    .await
                    .map_err(|reason| Error::Provision { what: what(&format!(" consumer {}", c.name)), reason })?;
                if found.is_some() { "updated" } else { "created" }
            }
        };
        consumers.push((c.name.clone(), action));
    }
    Ok(Provisioned { stream: s.name.clone(), stream_action, consumers })
}

/// How a live stream differs from its declaration: every declared field as declared, every undeclared
/// limit at the server's default (a limit raised behind the topology's back is drift too), and no source or
/// mirror the topology does not declare. A field the server does not report (an older version) is not
/// compared.
pub fn stream_drift(s: &Stream, got: &Value) -> Vec<String> {
    let declared = stream_config(s);
    let mut out = drift(&declared, got);
    let defaults = json!({
        "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msg_size": -1, "max_msgs_per_subject": -1, "max_consumers": -1,
        "discard": "old", "sealed": false, "deny_delete": false, "deny_purge": false, "allow_rollup_hdrs": false,
    });
    out.extend(undeclared_at_default(&declared, &defaults, got));
    for key in ["subjects", "sources", "mirror"] {
        if declared.get(key).is_none() && got.get(key).is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty())) {
            out.push(format!("{key}: declared none, got {}", got[key]));
        }
    }
    out
}

/// As `stream_drift`, for a consumer: declared fields as declared, undeclared ones at their defaults, no
/// filter, deliver subject or rate limit the topology does not declare.
pub fn consumer_drift(c: &Consumer, got: &Value) -> Vec<String> {
    let declared = consumer_config(c);
    let mut out = drift(&declared, got);
    let mut defaults = json!({ "max_deliver": -1 });
    if c.ack_policy != AckPolicy::None {
        defaults["ack_wait"] = json!(30_000_000_000u64);
        defaults["max_ack_pending"] = json!(1000);
    }
    out.extend(undeclared_at_default(&declared, &defaults, got));
    for key in ["filter_subject", "deliver_subject", "rate_limit_bps"] {
        if declared.get(key).is_none() && got.get(key).is_some_and(|v| !v.is_null() && v != "" && v != 0) {
            out.push(format!("{key}: declared none, got {}", got[key]));
        }
    }
    out
}

fn undeclared_at_default(declared: &Value, defaults: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (k, want) in defaults.as_object().into_iter().flatten() {
        if declared.get(k).is_some() {
            continue;
        }
        if let Some(g) = got.get(k) {
            if !drift(want, g).is_empty() {
                out.push(format!("{k}: undeclared (default {want}), got {g}"));
            }
        }
    }
    out
}

/// Every field of `want` (recursively) compared with `got`, as "path: declared X, got Y"; fields only in
/// `got` are the server's own (defaults, state) and are not compared here.
pub fn drift(want: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("", want, got, &mut out);
    out
}

fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    let at = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&at(k), wv, gv, out),
                    None => out.push(format!("{}: declared {wv}, got nothing", at(k))),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        (Value::Number(w), Value::Number(g)) if same_number(w, g) => {}
        _ if want == got => {}
        _ => out.push(format!("{path}: declared {want}, got {got}")),
    }
}

fn same_number(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a.as_u64().zip(b.as_u64()).map_or(a.as_f64() == b.as_f64(), |(x, y)| x == y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undeclared_limits_must_be_at_their_defaults() {
        let s: Stream = serde_yaml::from_str("name: S\nsubjects: ['a.>']").unwrap();
        let got = json!({ "name": "S", "subjects": ["a.>"], "retention": "limits", "storage": "file", "num_replicas": 1, "max_msgs": -1, "max_bytes": 1024, "discard": "old" });
        assert_eq!(stream_drift(&s, &got), vec!["max_bytes: undeclared (default -1), got 1024".to_string()]);
        let got = json!({ "name": "S", "subjects": ["a.>"], "retention": "limits", "storage": "file", "num_replicas": 1, "sources": [{ "name": "X" }] });
        assert_eq!(stream_drift(&s, &got), vec![r#"sources: declared none, got [{"name":"X"}]"#.to_string()]);
        let c: Consumer = serde_yaml::from_str("name: c\nack_policy: explicit").unwrap();
        let got = json!({ "durable_name": "c", "ack_policy": "explicit", "deliver_policy": "all", "replay_policy": "instant", "ack_wait": 30_000_000_000u64, "max_deliver": 5, "filter_subject": "x.>" });
        assert_eq!(consumer_drift(&c, &got), vec!["max_deliver: undeclared (default -1), got 5".to_string(), r#"filter_subject: declared none, got "x.>""#.to_string()]);
    }

    #[test]
    fn drift_reports_declared_fields_only() {
        let want = json!({ "max_deliver": 3, "ack_wait": 30_000_000_000u64, "sources": [{ "external": { "api": "$JS.x.API" } }] });
        let got = json!({ "max_deliver": 4, "ack_wait": 30_000_000_000u64, "max_waiting": 512, "sources": [{ "external": { "api": "$JS.x.API", "deliver": "" } }] });
        assert_eq!(drift(&want, &got), vec!["max_deliver: declared 3, got 4".to_string()]);
        assert_eq!(drift(&json!({ "subjects": ["a", "b"] }), &json!({ "subjects": ["a"] })), vec![r#"subjects: declared ["a","b"], got ["a"]"#.to_string()]);
    }
}
