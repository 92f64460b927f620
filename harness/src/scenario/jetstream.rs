//! JetStream, derived from the declared streams. Every stream and consumer exists with its declared
//! configuration; streams and consumers behave as declared (deduplication, message size limit, max
//! deliveries, interest retention); JetStream domains keep each node's streams apart while the domain's API
//! prefix reaches across (AUDIT §4a); hub streams that source a leaf stream lose nothing when the leaf's hub
//! dies (AUDIT §4c); a file store keeps every acknowledged message across `kill -9`.
//!
//! Checks that kill a node restart it and wait for the whole lab to be ready before the next check.

use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};

use super::check::Pending;
use super::probes::token;
use super::{Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::provision::{api, consumer_config, stream_config};
use crate::topology::{subject, AckPolicy, Consumer, Leaf, Retention, Storage, Stream, Topology};

const FAMILY: Family = Family::Jetstream;
const API: &str = "$JS.API";
/// Bound on any wait for the servers to reach a state.
const WAIT: Duration = Duration::from_secs(20);
/// How long a restarted node (and the lab around it) may take to be ready again.
const RESTART: Duration = Duration::from_secs(30);
/// ack_wait of the temporary consumer copies that count deliveries: redeliveries come this often.
const PROBE_ACK_WAIT: Duration = Duration::from_millis(500);
/// Store-and-forward: messages published before the fault, and during the outage.
const BEFORE: usize = 3;
const DURING: usize = 5;
/// File-store durability: acknowledged messages that must survive `kill -9`.
const DURABLE: usize = 20;

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let declared: &Topology = ctx.declared;
    let streams = placed(declared);
    for p in &streams {
        stream_config_check(ctx, p).await;
        for c in &p.stream.consumers {
            consumer_config_check(ctx, p, c).await;
        }
    }
    domain_checks(ctx, declared).await;
    for p in &streams {
        dedup_check(ctx, p).await;
        max_msg_size_check(ctx, p).await;
        interest_check(ctx, p).await;
        for c in &p.stream.consumers {
            max_deliver_check(ctx, p, c).await;
        }
    }
    for l in declared.leaves.iter().filter(|l| l.jetstream.is_some()) {
        durability_check(ctx, l).await;
    }
    for p in streams.iter().filter(|p| p.leaf.is_none()) {
        for src in p.stream.sources.iter().filter(|s| s.domain.is_some()) {
            store_and_forward_check(ctx, declared, p, src).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Where streams live

/// A declared stream with where it lives: the hub cluster (`leaf: None`) or one leaf, and its account.
struct Placed<'t> {
    stream: &'t Stream,
    leaf: Option<&'t Leaf>,
    account: String,
}

impl Placed<'_> {
    fn node(&self) -> &str {
        self.leaf.map_or("hub", |l| l.name.as_str())
    }

    fn label(&self) -> String {
        format!("{}/{}", self.node(), self.stream.name)
    }
}

fn placed(t: &Topology) -> Vec<Placed<'_>> {
    let mut out: Vec<Placed<'_>> = t
        .hub
        .streams
        .iter()
        .map(|s| Placed { stream: s, leaf: None, account: s.account.clone().unwrap_or_else(|| t.hub.accounts[0].name.clone()) })
        .collect();
    for l in &t.leaves {
        for s in &l.streams {
            out.push(Placed { stream: s, leaf: Some(l), account: s.account.clone().unwrap_or_else(|| l.accounts[0].name.clone()) });
        }
    }
    out
}

/// A full-access client of the stream's account where the stream lives: the leaf, or the first hub that answers.
async fn client_for(lab: &Lab, p: &Placed<'_>) -> Result<Client, String> {
    match p.leaf {
        Some(l) => lab.probe(&l.name, &p.account).await.map_err(|e| e.to_string()),
        None => hub_client(lab, &p.account, None).await,
    }
}

/// A full-access client of a hub account, on the first hub (other than `avoid`) that accepts it.
async fn hub_client(lab: &Lab, account: &str, avoid: Option<&str>) -> Result<Client, String> {
    let mut last = format!("no hub to reach account {account} on");
    for h in lab.plan.hubs().filter(|h| Some(h.name.as_str()) != avoid) {
        match lab.probe(&h.name, account).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Runs a check body; `Err` from the body is a harness error.
async fn finish(ctx: &mut Ctx<'_, '_>, p: Pending, body: Result<Outcome, String>) {
    ctx.rec.finish(p, body.unwrap_or_else(Outcome::Error));
}

// ---------------------------------------------------------------------------------------------------------
// Configuration read back

async fn stream_config_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>) {
    let want = stream_config(p.stream);
    let pending = ctx.rec.start(
        FAMILY,
        format!("stream-config {}", p.label()),
        format!(
            "STREAM.INFO.{} in account {} answers with every declared field as declared ({want}; durations in ns, sizes in bytes) \
             and the stream is held by {} server(s)",
            p.stream.name, p.account, p.stream.replicas
        ),
    );
    let body = stream_config_body(ctx.lab, p, &want).await;
    finish(ctx, pending, body).await;
}

async fn stream_config_body(lab: &Lab, p: &Placed<'_>, want: &Value) -> Result<Outcome, String> {
    let c = client_for(lab, p).await?;
    let info = match api(&c, API, &format!("STREAM.INFO.{}", p.stream.name), &json!({})).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("no such stream: {e}"))),
        Err(e) => return Err(e),
    };
    let mut bad = Vec::new();
    diff("", want, &info["config"], &mut bad);
    let held_by = peers(&info);
    if held_by != Some(p.stream.replicas as usize) && !(held_by.is_none() && p.stream.replicas == 1) {
        bad.push(format!("peers: declared {}, got {}", p.stream.replicas, held_by.map_or("no leader".into(), |n| n.to_string())));
    }
    Ok(config_outcome(bad, &info))
}

async fn consumer_config_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>, c: &Consumer) {
    let want = consumer_config(c);
    let pending = ctx.rec.start(
        FAMILY,
        format!("consumer-config {}/{}", p.label(), c.name),
        format!("CONSUMER.INFO.{}.{} answers with every declared field as declared ({want}; durations in ns)", p.stream.name, c.name),
    );
    let body = consumer_config_body(ctx.lab, p, c, &want).await;
    finish(ctx, pending, body).await;
}

async fn consumer_config_body(lab: &Lab, p: &Placed<'_>, c: &Consumer, want: &Value) -> Result<Outcome, String> {
    let client = client_for(lab, p).await?;
    let info = match api(&client, API, &format!("CONSUMER.INFO.{}.{}", p.stream.name, c.name), &json!({})).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("no such consumer: {e}"))),
        Err(e) => return Err(e),
    };
    let mut bad = Vec::new();
    diff("", want, &info["config"], &mut bad);
    Ok(config_outcome(bad, &info))
}

fn config_outcome(bad: Vec<String>, info: &Value) -> Outcome {
    if bad.is_empty() {
        let fields = info["config"].as_object().map_or(0, |o| o.len());
        Outcome::Pass(format!("every declared field matches ({fields} fields read back, undeclared ones at server defaults)"))
    } else {
        Outcome::Violated(bad.join("; "))
    }
}

/// Every field of `want` (recursively) compared with `got`; extra fields in `got` are server defaults.
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
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => {}
        _ if want == got => {}
        _ => out.push(format!("{path}: declared {want}, got {got}")),
    }
}

/// How many servers hold a stream (leader plus replicas), from STREAM.INFO's `cluster`.
fn peers(info: &Value) -> Option<usize> {
    let c = info.get("cluster")?;
    c.get("leader").and_then(Value::as_str).filter(|s| !s.is_empty())?;
    Some(1 + c.get("replicas").and_then(Value::as_array).map_or(0, Vec::len))
}

fn not_found(e: &str) -> bool {
    ["err_code 10059", "err_code 10014", "err_code 10037"].iter().any(|c| e.contains(c))
}

// ---------------------------------------------------------------------------------------------------------
// Subjects for probe messages

/// The most specific pattern matched by both `a` and `b`, if some subject matches both.
fn meet(a: &str, b: &str) -> Option<String> {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let mut out: Vec<&str> = Vec::new();
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (None, None) => break,
            (Some(&">"), Some(_)) => {
                out.extend(&b[i..]);
                break;
            }
            (Some(_), Some(&">")) => {
                out.extend(&a[i..]);
                break;
            }
            (Some(&"*"), Some(y)) => out.push(y),
            (Some(x), Some(&"*")) => out.push(x),
            (Some(x), Some(y)) if x == y => out.push(x),
            _ => return None,
        }
    }
    Some(out.join("."))
}

/// A literal subject matched by one of the stream's subjects and every filter, carrying `tok` (and `i`
/// where a `>` leaves room, so that each message of a series has its own subject).
fn sample(stream_subjects: &[String], filters: &[&str], tok: &str, i: usize) -> Option<String> {
    stream_subjects.iter().find_map(|s| {
        let pattern = filters.iter().try_fold(s.clone(), |acc, f| meet(&acc, f))?;
        Some(literal(&pattern, tok, i))
    })
}

fn literal(pattern: &str, tok: &str, i: usize) -> String {
    pattern
        .split('.')
        .map(|t| match t {
            "*" => tok.to_string(),
            ">" => format!("{tok}.{i}"),
            lit => lit.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A subject through a subject transform (`*` and `>` in order, `{{wildcard(n)}}` and `$n` by position).
fn transform(src: &str, dest: &str, subject_in: &str) -> Option<String> {
    let s: Vec<&str> = subject_in.split('.').collect();
    let src: Vec<&str> = src.split('.').collect();
    let (mut stars, mut rest) = (Vec::new(), None);
    for (i, t) in src.iter().enumerate() {
        match *t {
            "*" => stars.push(*s.get(i)?),
            ">" => {
                if s.len() <= i {
                    return None;
                }
                rest = Some(s[i..].join("."));
                break;
            }
            lit => {
                if s.get(i) != Some(&lit) {
                    return None;
                }
            }
        }
    }
    if rest.is_none() && src.len() != s.len() {
        return None;
    }
    let mut next = 0;
    let mut out = Vec::new();
    for t in dest.split('.') {
        let piece = match t {
            "*" => {
                next += 1;
                stars.get(next - 1)?.to_string()
            }
            ">" => rest.clone()?,
            t if t.starts_with('$') => stars.get(t[1..].parse::<usize>().ok()?.checked_sub(1)?)?.to_string(),
            t if t.starts_with("{{") => {
                let n: String = t.chars().filter(char::is_ascii_digit).collect();
                let lower = t.to_ascii_lowercase();
                if !lower.contains("wildcard") {
                    return None;
                }
                stars.get(n.parse::<usize>().ok()?.checked_sub(1)?)?.to_string()
            }
            lit => lit.to_string(),
        };
        out.push(piece);
    }
    Some(out.join("."))
}

fn filters_of(c: &Consumer) -> Vec<&str> {
    c.filter_subject.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------------------
// JetStream plumbing

/// A JetStream publish: the PubAck as JSON (it may carry an `error`). `Err` only when no answer came.
async fn publish(c: &Client, subject: &str, headers: Option<HeaderMap>, payload: Vec<u8>) -> Result<Value, String> {
    let answer = match headers {
        Some(h) => c.request_with_headers(subject.to_string(), h, payload.into()).await,
        None => c.request(subject.to_string(), payload.into()).await,
    }
    .map_err(|e| format!("publish to {subject}: {e}"))?;
    serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("publish to {subject}: not a PubAck ({e}): {}", String::from_utf8_lossy(&answer.payload)))
}

fn ack_error(ack: &Value) -> Option<String> {
    ack.get("error").map(|e| {
        format!(
            "{} (err_code {})",
            e.get("description").and_then(Value::as_str).unwrap_or("error"),
            e.get("err_code").and_then(Value::as_i64).unwrap_or(0)
        )
    })
}

fn ack_seq(ack: &Value) -> Option<u64> {
    ack.get("seq").and_then(Value::as_u64)
}

/// A publish that must be stored: its sequence number, or why not.
async fn publish_stored(c: &Client, subject: &str, payload: &str) -> Result<u64, String> {
    let ack = publish(c, subject, None, payload.as_bytes().to_vec()).await?;
    if let Some(e) = ack_error(&ack) {
        return Err(format!("publish to {subject} refused: {e}"));
    }
    ack_seq(&ack).ok_or_else(|| format!("publish to {subject}: PubAck without seq: {ack}"))
}

async fn stream_state(c: &Client, prefix: &str, stream: &str) -> Result<Value, String> {
    Ok(api(c, prefix, &format!("STREAM.INFO.{stream}"), &json!({})).await?["state"].clone())
}

fn state_u64(state: &Value, key: &str) -> u64 {
    state.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// One stored message: (subject, payload), or `None` when that sequence holds nothing.
async fn get_msg(c: &Client, stream: &str, seq: u64) -> Result<Option<(String, String)>, String> {
    match api(c, API, &format!("STREAM.MSG.GET.{stream}"), &json!({ "seq": seq })).await {
        Ok(v) => Ok(Some(decode_msg(&v["message"])?.1)),
        Err(e) if e.contains("err_code 10037") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A message from STREAM.MSG.GET: (seq, (subject, payload)).
fn decode_msg(m: &Value) -> Result<(u64, (String, String)), String> {
    let seq = m.get("seq").and_then(Value::as_u64).ok_or_else(|| format!("message without seq: {m}"))?;
    let subject = m.get("subject").and_then(Value::as_str).unwrap_or_default().to_string();
    let data = m.get("data").and_then(Value::as_str).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("message {seq}: bad base64: {e}"))?;
    Ok((seq, (subject, String::from_utf8_lossy(&bytes).to_string())))
}

/// Asks a pull consumer for up to `batch` messages, delivered to `inbox` within `expires`.
async fn pull(c: &Client, stream: &str, consumer: &str, inbox: &str, batch: usize, expires: Duration) -> Result<(), String> {
    let body = json!({ "batch": batch, "expires": expires.as_nanos() as u64 }).to_string();
    c.publish_with_reply(format!("{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"), inbox.to_string(), body.into())
        .await
        .map_err(|e| format!("pull from {stream}/{consumer}: {e}"))?;
    c.flush().await.map_err(|e| format!("pull from {stream}/{consumer}: {e}"))
}

/// Waits for the message with `payload` through a declared consumer (pull or push) and returns it.
async fn receive(c: &Client, stream: &str, consumer: &Consumer, payload: &str) -> Result<async_nats::Message, String> {
    let deadline = Instant::now() + WAIT;
    let (mut sub, inbox) = match &consumer.deliver_subject {
        Some(d) => (c.subscribe(d.clone()).await.map_err(|e| e.to_string())?, None),
        None => {
            let inbox = c.new_inbox();
            (c.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?, Some(inbox))
        }
    };
    if let Some(i) = &inbox {
        pull(c, stream, &consumer.name, i, 256, Duration::from_secs(1)).await?;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(m)) => m,
            _ => return Err(format!("consumer {} did not deliver the probe message within {WAIT:?}", consumer.name)),
        };
        if m.status.is_some() {
            if let Some(i) = &inbox {
                pull(c, stream, &consumer.name, i, 256, Duration::from_secs(1)).await?;
            }
            continue;
        }
        if m.payload.as_ref() == payload.as_bytes() {
            return Ok(m);
        }
    }
}

/// Acknowledges a delivered message and waits for the server to confirm it (an ack sent as a request).
async fn ack_sync(c: &Client, m: &async_nats::Message) -> Result<(), String> {
    let reply = m.reply.as_ref().ok_or("delivered message has no reply subject to ack")?;
    c.request(reply.to_string(), "+ACK".into()).await.map(|_| ()).map_err(|e| format!("ack {reply}: {e}"))
}

async fn wait_ready_all(lab: &Lab) -> Result<(), String> {
    let names: Vec<String> = lab.plan.nodes.iter().map(|n| n.name.clone()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    lab.wait_ready(&refs, RESTART).await.map_err(|e| e.to_string())
}
