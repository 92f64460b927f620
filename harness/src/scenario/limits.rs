//! Limits: every limit the topology declares, pushed past on the running lab, and the server's refusal
//! read back. Per node (the hubs share one declaration: the first hub stands for them):
//! - **payload**: a message of exactly `max_payload` (default 1 MB) is taken, one byte more is refused
//!   with the server's `Maximum Payload Violation` (sent by hand: clients refuse it before sending);
//! - **slow consumer**: a subscriber that never reads, fed past `max_pending` (default 64 MB), is cut off
//!   and counted in `/varz` `slow_consumers`;
//! - **connections** / **subscriptions**: `max_connections` clients connect and one more is refused;
//!   `max_subscriptions` subscriptions are taken on one connection and one more is refused — where the
//!   limit is small enough to reach (above 1000 connections or 100000 subscriptions it is a load test,
//!   skipped saying so);
//! - **storage**: a scratch stream filled past `max_memory_store` / `max_file_store` is refused with the
//!   server's error, the server's own account of what it stores then is within one message of the declared
//!   limit (above it: the limit is wider than declared), and nothing acknowledged before is lost.
//!
//! Per stream, on a scratch copy of its configuration (the declared stream keeps its data; its declared
//! values are the jetstream family's `stream-config`), with each limit scaled down to what a check can
//! reach: `max_msgs` and `max_bytes` under its `discard` (old: the newest kept, the first sequence moved
//! on; new: the new message refused, the first ones kept), and `max_age` (the messages expire). Per consumer with `rate_limit_bps`: the delivery rate is measured on a scratch
//! copy and reported as a figure; only a rate far above the limit (4×) is a violation.
//!
//! Runs only when named (`--scenario limits`).

use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;
use serde_json::{json, Value};

use super::check::{Concluded, Pending, Spec};
use super::probes::token;
use super::{Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::probe::client::Access;
use crate::probe::js::{self, api, API};
use crate::probe::raw::{Raw, Trust};
use crate::probe::wire::Hello;
use crate::topology::{Consumer, JetStream, Limits, Storage, Stream, Topology};

const FAMILY: Family = Family::Limits;
const MB: u64 = 1024 * 1024;
const DEFAULT_MAX_PAYLOAD: u64 = MB;
const DEFAULT_MAX_PENDING: u64 = 64 * MB;
/// Beyond these a limit is a load test, not a check.
const MAX_CONNECTIONS_CHECKED: u64 = 1000;
const MAX_SUBSCRIPTIONS_CHECKED: u64 = 100_000;
/// A rate this many times the declared `rate_limit_bps` means the limit is not applied.
const RATE_SLACK: f64 = 4.0;
/// The scratch copy's max_msg_size, which is a rate-limited consumer's burst.
const BURST: u64 = 1024;

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let t: &Topology = ctx.declared;
    let mut nodes: Vec<(String, Option<&Limits>, Option<&JetStream>)> = Vec::new();
    if let Some(h) = t.hub_names().next() {
        nodes.push((h.to_string(), t.hub.limits.as_ref(), t.hub.jetstream.as_ref()));
    }
    for l in &t.leaves {
        nodes.push((l.name.clone(), l.limits.as_ref(), l.jetstream.as_ref()));
    }
    for (node, limits, js) in &nodes {
        payload(ctx, node, *limits).await;
        slow_consumer(ctx, node, *limits).await;
        connections(ctx, node, *limits).await;
        subscriptions(ctx, node, *limits).await;
        for storage in [Storage::Memory, Storage::File] {
            store(ctx, node, *js, storage).await;
        }
    }
    let hub = t.hub_names().next().unwrap_or_default().to_string();
    let places = std::iter::once((hub, "hub".to_string(), &t.hub.streams)).chain(t.leaves.iter().map(|l| (l.name.clone(), l.name.clone(), &l.streams)));
    for (node, place, streams) in places {
        for s in streams {
            stream_limits(ctx, &node, &place, s).await;
            for c in s.consumers.iter().filter(|c| c.rate_limit_bps.is_some()) {
                rate(ctx, &node, &place, s, c).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Hand-made connections.

/// The account a node's probes use: the first declared one of its place.
fn first_account(lab: &Lab, node: &str) -> String {
    let t = &lab.plan.topology;
    t.leaf(node).map_or_else(|| t.hub.accounts[0].name.clone(), |l| l.accounts[0].name.clone())
}

fn probe_access(lab: &Lab, node: &str) -> Result<Access, Outcome> {
    let account = first_account(lab, node);
    lab.access(node, &account, &crate::plan::probe_user(&account)).ok_or_else(|| Outcome::Error(format!("no probe user for {node}/{account}")))
}

/// What a hand-made connection needs of an access: where, the CONNECT credentials, the TLS material.
fn hand_made(access: &Access) -> Result<(String, Hello, Option<Trust>), Outcome> {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| Outcome::Error(format!("read {}: {e}", p.display())));
    let addr = access.url.split("://").nth(1).unwrap_or(&access.url).to_string();
    let hello = Hello::of(access).map_err(Outcome::Error)?;
    let trust = match &access.ca {
        Some(ca) => {
            let client = match (&access.cert, &access.key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            };
            Some(Trust { ca_pem: read(ca)?, client })
        }
        None => None,
    };
    Ok((addr, hello, trust))
}

async fn open_raw(lab: &Lab, node: &str) -> Result<Raw, Outcome> {
    let (addr, hello, trust) = hand_made(&probe_access(lab, node)?)?;
    Raw::open(&addr, trust.as_ref(), &hello).await.map_err(Outcome::Error)
}

async fn varz(lab: &Lab, node: &str) -> Result<Value, Outcome> {
    let url = lab.monitor_url(node).map_err(Outcome::Error)?.to_string();
    lab.monitor.get(&url, "/varz").await.map_err(Outcome::Error)
}

// ---------------------------------------------------------------------------------------------------------
// Payload.

async fn payload(ctx: &mut Ctx<'_, '_>, node: &str, limits: Option<&Limits>) {
    let max = limits.and_then(|l| l.max_payload).map_or(DEFAULT_MAX_PAYLOAD, |s| s.0);
    let declared = if limits.and_then(|l| l.max_payload).is_some() { "declared" } else { "default" };
    let expected = format!("a message of exactly max_payload ({max} bytes, {declared}) is taken; one of {} bytes is refused with 'Maximum Payload Violation'", max + 1);
    let spec = Spec::new(FAMILY, "payload", &[node], format!("max_payload {node}"), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let subject = format!("natslab.limits.payload.{}", token());
        let mut at_max = open_raw(lab, node).await?;
        let mut pubs = format!("PUB {subject} {max}\r\n").into_bytes();
        pubs.extend(std::iter::repeat_n(b'x', max as usize));
        pubs.extend_from_slice(b"\r\nPING\r\n");
        at_max.send(&pubs).await.map_err(Outcome::Error)?;
        let seen = at_max.read_until(Duration::from_secs(10), |s| s.contains("PONG") || s.contains("-ERR")).await;
        if !seen.contains("PONG") || seen.contains("-ERR") {
            return Ok(Outcome::Violated(format!("a message of exactly {max} bytes was refused: {}", seen.trim())));
        }
        let mut over = open_raw(lab, node).await?;
        let mut big = format!("PUB {subject} {}\r\n", max + 1).into_bytes();
        big.extend(std::iter::repeat_n(b'x', max as usize + 1));
        big.extend_from_slice(b"\r\nPING\r\n");
        // The server may refuse at the header and close before the body is written: a write error then.
        let _ = over.send(&big).await;
        let seen = over.read_until(Duration::from_secs(10), |s| s.contains("-ERR") || s.contains("PONG")).await;
        let said = seen.lines().find(|l| l.starts_with("-ERR")).unwrap_or("").trim().to_string();
        Ok(Outcome::expect(said.contains("Maximum Payload"), format!("{max} bytes taken; {} bytes: {}", max + 1, if said.is_empty() { seen.trim().to_string() } else { said })))
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Slow consumers.

async fn slow_consumer(ctx: &mut Ctx<'_, '_>, node: &str, limits: Option<&Limits>) {
    let max_pending = limits.and_then(|l| l.max_pending).map_or(DEFAULT_MAX_PENDING, |s| s.0);
    let max_payload = limits.and_then(|l| l.max_payload).map_or(DEFAULT_MAX_PAYLOAD, |s| s.0).min(MB);
    let expected = format!(
        "a subscriber that never reads, sent more than max_pending ({max_pending} bytes) and the socket buffers, is cut off by the \
         server and counted in /varz slow_consumers"
    );
    let spec = Spec::new(FAMILY, "slow-consumer", &[node], format!("slow consumer {node}"), expected);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        let before = varz(lab, node).await?["slow_consumers"].as_u64().unwrap_or(0);
        let subject = format!("natslab.limits.slow.{}", token());
        let mut slow = open_raw(lab, node).await?;
        slow.send(format!("SUB {subject} 1\r\nPING\r\n").as_bytes()).await.map_err(Outcome::Error)?;
        // Subscribed once the server answers; from here on it is never read — and must be fed quickly: where
        // short pings are declared, a client that never answers them is closed as stale within seconds.
        if !slow.read_until(Duration::from_secs(5), |s| s.contains("PONG")).await.contains("PONG") {
            return Err(Outcome::Error(format!("the subscriber's SUB was not answered: {}", slow.seen.trim())));
        }
        let publisher = lab.probe(node, &first_account(lab, node)).await.map_err(|e| Outcome::Error(e.to_string()))?;
        let chunk = vec![b's'; max_payload as usize];
        // Past the limit and whatever the kernel buffers on both ends.
        let budget = 2 * max_pending + 64 * MB;
        let mut sent = 0u64;
        let mut after = before;
        while sent < budget {
            publisher.publish(subject.clone(), chunk.clone().into()).await.map_err(|e| Outcome::Error(e.to_string()))?;
            sent += max_payload;
            if sent % (16 * MB) < max_payload {
                publisher.flush().await.map_err(|e| Outcome::Error(e.to_string()))?;
                after = varz(lab, node).await?["slow_consumers"].as_u64().unwrap_or(0);
                if after > before {
                    break;
                }
            }
        }
        publisher.flush().await.map_err(|e| Outcome::Error(e.to_string()))?;
        if after == before {
            after = varz(lab, node).await?["slow_consumers"].as_u64().unwrap_or(0);
        }
        p.metric("slow_consumer_cut_after_bytes", sent as f64);
        Ok(Outcome::expect(after > before, format!("sent {sent} bytes to a subscriber that never read; /varz slow_consumers {before} → {after}")))
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Connections and subscriptions.

async fn connections(ctx: &mut Ctx<'_, '_>, node: &str, limits: Option<&Limits>) {
    let spec = |expected: String| Spec::new(FAMILY, "connections", &[node], format!("max_connections {node}"), expected);
    let Some(max) = limits.and_then(|l| l.max_connections) else {
        ctx.skip(spec("max_connections as declared".into()), "no max_connections declared (the server's default is 64K)");
        return;
    };
    if max > MAX_CONNECTIONS_CHECKED {
        ctx.skip(spec(format!("{max} connections taken, one more refused")), format!("max_connections {max}: reaching it is a load test (above {MAX_CONNECTIONS_CHECKED} this family does not open them)"));
        return;
    }
    let expected = format!("clients connect until the server holds max_connections ({max}); one more is refused with 'maximum connections exceeded'");
    ctx.check(spec(expected), async |lab: &mut Lab, _: &mut Pending| {
        // Other clients come and go (the lab's own, earlier checks'): connect until the server refuses, and
        // never more than max_connections + 1 times.
        let mut open = Vec::new();
        let refused = loop {
            match open_raw(lab, node).await {
                Ok(r) => {
                    open.push(r);
                    if open.len() as u64 > max {
                        break None;
                    }
                }
                Err(o) => break Some(o.text().to_string()),
            }
        };
        let held = varz(lab, node).await?["connections"].as_u64().unwrap_or(0);
        let opened = open.len();
        drop(open);
        // The next check needs connections again: until the server has let these go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && varz(lab, node).await?["connections"].as_u64().unwrap_or(0) + 1 >= max {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(match refused {
            Some(e) if e.contains("maximum connections") => Outcome::Pass(format!("{opened} connected (the server held {held}); the next: {e}")),
            Some(e) => Outcome::Violated(format!("connection {} was refused, but not for the limit: {e}", opened + 1)),
            None => Outcome::Violated(format!("{opened} connections were taken (the server held {held}), past max_connections {max}")),
        })
    })
    .await;
}

async fn subscriptions(ctx: &mut Ctx<'_, '_>, node: &str, limits: Option<&Limits>) {
    let spec = |expected: String| Spec::new(FAMILY, "subscriptions", &[node], format!("max_subscriptions {node}"), expected);
    let Some(max) = limits.and_then(|l| l.max_subscriptions) else {
        ctx.skip(spec("max_subscriptions as declared".into()), "no max_subscriptions declared (unlimited by default)");
        return;
    };
    if max > MAX_SUBSCRIPTIONS_CHECKED {
        ctx.skip(spec(format!("{max} subscriptions taken, one more refused")), format!("max_subscriptions {max}: reaching it is a load test (above {MAX_SUBSCRIPTIONS_CHECKED} this family does not take them)"));
        return;
    }
    let expected = format!("one connection takes max_subscriptions ({max}) subscriptions; one more is refused with 'maximum subscriptions exceeded'");
    ctx.check(spec(expected), async |lab: &mut Lab, _: &mut Pending| {
        let tok = token();
        let mut r = open_raw(lab, node).await?;
        let mut subs = String::new();
        for i in 1..=max {
            subs.push_str(&format!("SUB natslab.limits.subs.{tok}.{i} {i}\r\n"));
        }
        subs.push_str("PING\r\n");
        r.send(subs.as_bytes()).await.map_err(Outcome::Error)?;
        let seen = r.read_until(Duration::from_secs(30), |s| s.contains("PONG") || s.contains("-ERR")).await;
        if seen.contains("-ERR") {
            return Ok(Outcome::Violated(format!("refused before max_subscriptions: {}", seen.trim())));
        }
        r.send(format!("SUB natslab.limits.subs.{tok}.over {}\r\nPING\r\n", max + 1).as_bytes()).await.map_err(Outcome::Error)?;
        let seen = r.read_until(Duration::from_secs(10), |s| s.contains("-ERR") || s.matches("PONG").count() >= 2).await;
        let said = seen.lines().find(|l| l.starts_with("-ERR")).unwrap_or("").trim().to_string();
        Ok(Outcome::expect(said.to_lowercase().contains("maximum subscriptions"), format!("{max} taken; one more: {}", if said.is_empty() { "taken".to_string() } else { said })))
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// JetStream storage.

async fn store(ctx: &mut Ctx<'_, '_>, node: &str, js: Option<&JetStream>, storage: Storage) {
    let (key, declared) = match storage {
        Storage::Memory => ("max_memory_store", js.and_then(|j| j.max_memory_store)),
        Storage::File => ("max_file_store", js.and_then(|j| j.max_file_store)),
    };
    let kind = if storage == Storage::Memory { "memory" } else { "file" };
    let spec = |expected: String| Spec::new(FAMILY, "storage", &[node, kind], format!("{key} {node}"), expected);
    let Some(limit) = declared.map(|s| s.0) else {
        let why = if js.is_none() { "no JetStream here".to_string() } else { format!("no {key} declared (the server sizes it from the machine)") };
        ctx.skip(spec(format!("{key} as declared")), why);
        return;
    };
    if ctx.lab.is_attached() {
        ctx.skip(spec(format!("{key} as declared")), "an attached lab is someone else's: natslab does not fill its stores");
        return;
    }
    let expected = format!(
        "a scratch {kind} stream filled with 1 MiB messages is refused past {key} ({limit} bytes) with the server's error: as \
         many messages taken as fit in {key} (less what other streams there hold), not one more; every acknowledged message \
         is still there"
    );
    ctx.check(spec(expected), async |lab: &mut Lab, p: &mut Pending| fill_store(lab, node, storage, limit, p).await).await;
}

async fn fill_store(lab: &Lab, node: &str, storage: Storage, limit: u64, p: &mut Pending) -> Concluded {
    let tok = token().to_uppercase();
    let stream = format!("NATSLAB_FILL_{tok}");
    let c = lab.probe(node, &first_account(lab, node)).await.map_err(|e| Outcome::Error(e.to_string()))?;
    let kind = if storage == Storage::Memory { "memory" } else { "file" };
    let cfg = json!({ "name": stream, "subjects": [format!("natslab.fill.{tok}")], "storage": kind, "num_replicas": 1 });
    create(&c, &stream, &cfg).await?;
    let body = vec![b'f'; MB as usize];
    let mut acked = 0u64;
    let t0 = Instant::now();
    let mut busy = 0;
    let refusal = loop {
        // A message id, so that one asked again after a lost acknowledgement is not stored twice.
        let mut id = async_nats::HeaderMap::new();
        id.insert("Nats-Msg-Id", format!("{tok}-{acked}").as_str());
        let answer = match js::publish(&c, &format!("natslab.fill.{tok}"), Some(id), body.clone()).await {
            Ok(ack) => js::ack_error(&ack),
            Err(e) => Some(e),
        };
        match answer {
            None => acked += 1,
            // A busy moment (a timeout, "temporarily unavailable") is not the limit: asked again.
            Some(e) if busy < 20 && (e.contains("timed out") || e.contains("10008")) => {
                busy += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Some(e) => break e,
        }
        if acked * MB > limit * 2 + 16 * MB {
            break format!("nothing refused after {acked} MB");
        }
    };
    p.metric_duration("fill_ms", t0.elapsed());
    let info = js::stream_info(&c, API, &stream).await.map_err(Outcome::Error)?;
    let held = js::state_u64(&info["state"], "messages");
    let bytes = js::state_u64(&info["state"], "bytes");
    let on = info.pointer("/cluster/leader").and_then(Value::as_str).unwrap_or(node).to_string();
    let _ = api(&c, API, &format!("STREAM.DELETE.{stream}"), &json!({})).await;
    p.metric("stored_bytes_at_refusal", bytes as f64);
    let mut bad = Vec::new();
    // The server counts payloads against the limit: the messages it took fit in it, one more would not
    // (other streams on that server use some of it too: what /jsz says they hold, measured before the end).
    let others = jsz_used(lab, &on, storage).await.unwrap_or(0);
    if refusal.starts_with("nothing refused") {
        bad.push(refusal.clone());
    } else if acked * MB > limit {
        bad.push(format!("{acked} MiB taken on {on}, above the declared {limit} bytes: the limit is wider than declared"));
    } else if (acked + 1) * MB + others <= limit {
        bad.push(format!("refused at {acked} MiB on {on} (other streams there hold {others} bytes), below the declared {limit} bytes"));
    }
    if held != acked {
        bad.push(format!("{acked} messages acknowledged, {held} stored"));
    }
    let seen = format!("{acked} messages of 1 MiB acknowledged, then refused: {refusal}; {bytes} bytes stored with the per-message overhead, every acknowledged message held");
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(format!("{}; {seen}", bad.join("; "))) })
}

/// What a server says it stores in all (`/jsz`), of one kind.
async fn jsz_used(lab: &Lab, node: &str, storage: Storage) -> Option<u64> {
    let url = lab.monitor_url(node).ok()?.to_string();
    let v = lab.monitor.get(&url, "/jsz").await.ok()?;
    v.get(if storage == Storage::Memory { "memory" } else { "storage" })?.as_u64()
}

// ---------------------------------------------------------------------------------------------------------
// Stream limits, on a scratch copy.

/// Creates a scratch stream, asking again while a cluster that has just freed a stream says its JetStream
/// is busy (10008, "temporarily unavailable").
async fn create(c: &Client, name: &str, cfg: &Value) -> Result<(), Outcome> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let op = format!("STREAM.CREATE.{name}");
    js::retry_transient(deadline, || api(c, API, &op, cfg)).await.map(|_| ()).map_err(Outcome::Error)
}

/// A scratch copy of a declared stream's configuration on its own subject, with the given limits.
async fn scratch(c: &Client, s: &Stream, extra: Value) -> Result<(String, String), Outcome> {
    let tok = token();
    let name = format!("NATSLAB_LIMITS_{}", tok.to_uppercase());
    let subject = format!("natslab.limits.{tok}");
    let storage = if s.storage == Storage::Memory { "memory" } else { "file" };
    let discard = if s.discard == Some(crate::topology::Discard::New) { "new" } else { "old" };
    let mut cfg = json!({ "name": name, "subjects": [format!("{subject}.>")], "storage": storage, "num_replicas": 1, "discard": discard });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    create(c, &name, &cfg).await?;
    Ok((name, subject))
}

async fn stream_limits(ctx: &mut Ctx<'_, '_>, node: &str, place: &str, s: &Stream) {
    let mut what = Vec::new();
    if let Some(n) = s.max_msgs {
        what.push(format!("max_msgs {n}"));
    }
    if let Some(b) = s.max_bytes {
        what.push(format!("max_bytes {}", b.0));
    }
    if let Some(a) = &s.max_age {
        what.push(format!("max_age {a}"));
    }
    if let Some(d) = s.discard {
        what.push(format!("discard {}", if d == crate::topology::Discard::New { "new" } else { "old" }));
    }
    if what.is_empty() {
        return;
    }
    let label = format!("{place}/{}", s.name);
    let expected = format!(
        "on a scratch copy of {}'s configuration ({}; discard {}), each limit scaled to what a check reaches (max_msgs to \
         20 at most, max_bytes to 64 KiB at most, max_age to 2 s at most): past max_msgs and max_bytes {}; past max_age the \
         messages expire",
        s.name,
        what.join(", "),
        if s.discard == Some(crate::topology::Discard::New) { "new" } else { "old (the default)" },
        if s.discard == Some(crate::topology::Discard::New) {
            "a new message is refused with the server's error and the first ones stay"
        } else {
            "the newest messages are kept and the first sequence moves on"
        }
    );
    let spec = Spec::new(FAMILY, "stream", &[&label], format!("stream limits {label}"), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let c = lab.probe(node, &s.account.clone().unwrap_or_else(|| first_account(lab, node))).await.map_err(|e| Outcome::Error(e.to_string()))?;
        let mut bad = Vec::new();
        let mut seen = Vec::new();
        let discard_new = s.discard == Some(crate::topology::Discard::New);
        // Publishes `count` messages; how many the stream refused, with the server's last refusal.
        let fill = async |subject: &str, count: u64, payload: &str| -> Result<(u64, String), Outcome> {
            let (mut refused, mut said) = (0, String::new());
            for i in 0..count {
                let ack = js::publish(&c, &format!("{subject}.{i}"), None, payload.as_bytes().to_vec()).await.map_err(Outcome::Error)?;
                if let Some(e) = js::ack_error(&ack) {
                    refused += 1;
                    said = e;
                }
            }
            Ok((refused, said))
        };
        if let Some(n) = s.max_msgs {
            let n = n.clamp(1, 20) as u64;
            let (name, subject) = scratch(&c, s, json!({ "max_msgs": n })).await?;
            let (refused, said) = fill(&subject, n + 5, "m").await?;
            let st = js::stream_state(&c, API, &name).await.map_err(Outcome::Error)?;
            let (msgs, first) = (js::state_u64(&st, "messages"), js::state_u64(&st, "first_seq"));
            let right = if discard_new { msgs == n && first == 1 && refused == 5 } else { msgs == n && first == 6 && refused == 0 };
            let line = format!("max_msgs {n}: {} published, {refused} refused{}, {msgs} kept from seq {first}", n + 5, if said.is_empty() { String::new() } else { format!(" ({said})") });
            if !right {
                bad.push(format!("{line} (want {n} kept from seq {}, {} refused)", if discard_new { 1 } else { 6 }, if discard_new { 5 } else { 0 }));
            }
            seen.push(line);
            let _ = api(&c, API, &format!("STREAM.DELETE.{name}"), &json!({})).await;
        }
        if let Some(b) = s.max_bytes {
            let cap = b.0.min(64 * 1024);
            let (name, subject) = scratch(&c, s, json!({ "max_bytes": cap })).await?;
            let (refused, said) = fill(&subject, cap / 1000 + 10, &"b".repeat(1000)).await?;
            let st = js::stream_state(&c, API, &name).await.map_err(Outcome::Error)?;
            let (bytes, first) = (js::state_u64(&st, "bytes"), js::state_u64(&st, "first_seq"));
            let right = bytes <= cap && if discard_new { first == 1 && refused > 0 } else { first > 1 && refused == 0 };
            let line = format!("max_bytes {cap}: {refused} refused{}, {bytes} bytes kept from seq {first}", if said.is_empty() { String::new() } else { format!(" ({said})") });
            if !right {
                bad.push(line.clone());
            }
            seen.push(line);
            let _ = api(&c, API, &format!("STREAM.DELETE.{name}"), &json!({})).await;
        }
        if let Some(a) = &s.max_age {
            let age = a.get().min(Duration::from_secs(2));
            let (name, subject) = scratch(&c, s, json!({ "max_age": age.as_nanos() as u64 })).await?;
            js::publish_stored(&c, &format!("{subject}.aged"), "aged").await.map_err(Outcome::Error)?;
            let t0 = Instant::now();
            let deadline = t0 + age + Duration::from_secs(30);
            let gone = loop {
                let st = js::stream_state(&c, API, &name).await.map_err(Outcome::Error)?;
                if js::state_u64(&st, "messages") == 0 {
                    break Some(t0.elapsed());
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            match gone {
                Some(d) => seen.push(format!("max_age {}: expired after {} ms", humantime::format_duration(age), d.as_millis())),
                None => bad.push(format!("max_age {}: the message was still there {} s later", humantime::format_duration(age), (age + Duration::from_secs(30)).as_secs())),
            }
            let _ = api(&c, API, &format!("STREAM.DELETE.{name}"), &json!({})).await;
        }
        Ok(if bad.is_empty() { Outcome::Pass(seen.join("; ")) } else { Outcome::Violated(bad.join("; ")) })
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Consumer rate limits, measured.

async fn rate(ctx: &mut Ctx<'_, '_>, node: &str, place: &str, s: &Stream, consumer: &Consumer) {
    let bps = consumer.rate_limit_bps.unwrap_or(0);
    let label = format!("{place}/{}/{}", s.name, consumer.name);
    let expected = format!(
        "a push consumer with rate_limit_bps {bps} (as {} declares) delivers no faster than that once its burst is spent, \
         measured over three messages on a scratch stream (payload and subject bits: what the server also counts makes the \
         figure low); the rate is a figure, and only one above {RATE_SLACK}× the limit is a \
         violation",
        consumer.name
    );
    let spec = Spec::new(FAMILY, "rate", &[&label], format!("rate_limit_bps {label}"), expected);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        let c = lab.probe(node, &s.account.clone().unwrap_or_else(|| first_account(lab, node))).await.map_err(|e| Outcome::Error(e.to_string()))?;
        // nats-server lets a rate-limited consumer burst the stream's max_msg_size (else the account's or
        // server's max_payload) before the rate applies: the copy's is 1 KiB, so the burst is over at once.
        let (name, subject) = scratch(&c, s, json!({ "storage": "memory", "max_msg_size": BURST })).await?;
        // Past the burst (about BURST bytes, counted with the subject and headers), three messages of an
        // eighth of a second's worth each at the declared rate (more, with what the server counts besides).
        let size = ((bps as f64 / 8.0) / 8.0).clamp(16.0, BURST as f64 / 2.0) as usize;
        let payload = "r".repeat(size);
        let drain = (BURST as usize / (size + 64)).max(1);
        let total = drain + 3;
        for i in 0..total {
            js::publish_stored(&c, &format!("{subject}.{i}"), &payload).await.map_err(Outcome::Error)?;
        }
        let inbox = c.new_inbox();
        let mut sub = c.subscribe(inbox.clone()).await.map_err(|e| Outcome::Error(e.to_string()))?;
        let cfg = json!({ "stream_name": name, "config": { "name": "natslab-rate", "deliver_subject": inbox, "ack_policy": "none", "rate_limit_bps": bps } });
        api(&c, API, &format!("CONSUMER.CREATE.{name}.natslab-rate"), &cfg).await.map_err(Outcome::Error)?;
        let mut t0 = Instant::now();
        let mut bits = 0u64;
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while got < total {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => {
                    got += 1;
                    if got == drain {
                        t0 = Instant::now();
                    } else if got > drain {
                        bits += (m.payload.len() + m.subject.len()) as u64 * 8;
                    }
                }
                _ => break,
            }
        }
        let took = t0.elapsed().as_secs_f64();
        let _ = api(&c, API, &format!("STREAM.DELETE.{name}"), &json!({})).await;
        if got < total {
            return Ok(Outcome::Violated(format!("only {got} of {total} messages delivered within 60 s")));
        }
        let measured = bits as f64 / took.max(0.001);
        p.metric("rate_measured_bps", measured);
        p.metric("rate_declared_bps", bps as f64);
        let burst = s.max_msg_size.map_or_else(|| "the server's max_payload".to_string(), |m| format!("its max_msg_size, {} bytes", m.0));
        let seen = format!(
            "past the burst, {} messages ({bits} bits) in {took:.1} s: {measured:.0} bit/s against a declared {bps}; note that \
             nats-server lets {} burst {burst} at once before the rate applies",
            total - drain,
            consumer.name
        );
        Ok(Outcome::expect(measured <= bps as f64 * RATE_SLACK, seen))
    })
    .await;
}
