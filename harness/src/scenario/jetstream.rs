//! JetStream, derived from the declared streams. Every stream and consumer exists with its declared
//! configuration; streams and consumers behave as declared (deduplication, message size limit, max
//! deliveries, interest retention); JetStream domains keep each node's streams apart while the domain's API
//! prefix reaches across (AUDIT §4a); hub streams that source a leaf stream lose nothing when the leaf's hub
//! dies (AUDIT §4c); a file store keeps every acknowledged message across `kill -9`.
//!
//! Checks that kill a node restart it and wait for the whole lab to be ready before the next check.

use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use futures::StreamExt;
use serde_json::{json, Value};

use super::check::{Concluded, Pending, Spec};
use super::probes::token;
use super::{Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::nemesis::{Capability, Fault};
use crate::probe::js::{self, ack_error, ack_seq, api, not_found, publish, publish_stored, state_u64, stream_state, API};
use crate::provision::{consumer_config, drift, stream_config};
use crate::topology::{subject, AckPolicy, Consumer, Leaf, Retention, Storage, Stream, Topology};

const FAMILY: Family = Family::Jetstream;
/// Bound on any wait for the servers to reach a state.
const WAIT: Duration = Duration::from_secs(20);
/// How long a restarted node (and the lab around it) may take to be ready again.
const RESTART: Duration = Duration::from_secs(30);
/// How long a sourcing stream may take to resume: the server notices a stalled source by missed heartbeats and
/// retries with a backoff (measured: up to ~16 s after the source's leaf restarted).
const RESUME: Duration = Duration::from_secs(60);
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
    // Sourcing first: after a leaf restarts, the hub takes a while (its stall detection) to source from it again.
    for p in streams.iter().filter(|p| p.leaf.is_none()) {
        for src in p.stream.sources.iter().filter(|s| s.domain.is_some()) {
            store_and_forward_check(ctx, declared, p, src).await;
        }
    }
    for l in declared.leaves.iter().filter(|l| l.jetstream.is_some()) {
        durability_check(ctx, l).await;
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

/// A check of this family: `kind` and the parts of its id, its name and what it expects.
fn spec(kind: &str, parts: &[&str], name: String, expected: String) -> Spec {
    Spec::new(FAMILY, kind, parts, name, expected)
}

// ---------------------------------------------------------------------------------------------------------
// Configuration read back

async fn stream_config_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>) {
    let want = stream_config(p.stream);
    let spec = spec(
        "stream-config",
        &[p.node(), &p.stream.name],
        format!("stream-config {}", p.label()),
        format!(
            "STREAM.INFO.{} in account {} answers with every declared field as declared ({want}; durations in ns, sizes in bytes) \
             and the stream is held by {} server(s)",
            p.stream.name, p.account, p.stream.replicas
        ),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| stream_config_body(lab, p, &want).await).await;
}

async fn stream_config_body(lab: &Lab, p: &Placed<'_>, want: &Value) -> Concluded {
    let c = client_for(lab, p).await?;
    let info = match api(&c, API, &format!("STREAM.INFO.{}", p.stream.name), &json!({})).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("no such stream: {e}"))),
        Err(e) => return Err(Outcome::Error(e)),
    };
    let mut bad = drift(want, &info["config"]);
    let held_by = peers(&info);
    if held_by != Some(p.stream.replicas as usize) && !(held_by.is_none() && p.stream.replicas == 1) {
        bad.push(format!("peers: declared {}, got {}", p.stream.replicas, held_by.map_or("no leader".into(), |n| n.to_string())));
    }
    Ok(config_outcome(bad, &info))
}

async fn consumer_config_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>, c: &Consumer) {
    let want = consumer_config(c);
    let spec = spec(
        "consumer-config",
        &[p.node(), &p.stream.name, &c.name],
        format!("consumer-config {}/{}", p.label(), c.name),
        format!("CONSUMER.INFO.{}.{} answers with every declared field as declared ({want}; durations in ns)", p.stream.name, c.name),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| consumer_config_body(lab, p, c, &want).await).await;
}

async fn consumer_config_body(lab: &Lab, p: &Placed<'_>, c: &Consumer, want: &Value) -> Concluded {
    let client = client_for(lab, p).await?;
    let info = match api(&client, API, &format!("CONSUMER.INFO.{}.{}", p.stream.name, c.name), &json!({})).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("no such consumer: {e}"))),
        Err(e) => return Err(Outcome::Error(e)),
    };
    Ok(config_outcome(drift(want, &info["config"]), &info))
}

fn config_outcome(bad: Vec<String>, info: &Value) -> Outcome {
    if bad.is_empty() {
        let fields = info["config"].as_object().map_or(0, |o| o.len());
        Outcome::Pass(format!("every declared field matches ({fields} fields read back, undeclared ones at server defaults)"))
    } else {
        Outcome::Violated(bad.join("; "))
    }
}

/// How many servers hold a stream (leader plus replicas), from STREAM.INFO's `cluster`.
fn peers(info: &Value) -> Option<usize> {
    let c = info.get("cluster")?;
    c.get("leader").and_then(Value::as_str).filter(|s| !s.is_empty())?;
    Some(1 + c.get("replicas").and_then(Value::as_array).map_or(0, Vec::len))
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

/// One stored message: (subject, payload), or `None` when that sequence holds nothing.
async fn get_msg(c: &Client, stream: &str, seq: u64) -> Result<Option<(String, String)>, String> {
    Ok(js::get_msg(c, API, stream, seq).await?.map(|m| (m.subject, m.payload)))
}

async fn pull(c: &Client, stream: &str, consumer: &str, inbox: &str, batch: usize, expires: Duration) -> Result<(), String> {
    js::pull(c, API, stream, consumer, inbox, batch, expires).await
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
    lab.wait_ready_all(RESTART).await.map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------------------
// Domains

async fn domain_checks(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let hub_domain = t.hub.jetstream.as_ref().and_then(|j| j.domain.clone());
    for l in &t.leaves {
        let Some(domain) = l.jetstream.as_ref().and_then(|j| j.domain.clone()) else { continue };
        for (r, remote) in l.remotes.iter().enumerate() {
            let (local, linked) = (l.remote_account(remote).to_string(), l.hub_account(r));
            // The leaf's streams in the linked account, seen from the hub side of the link.
            for s in l.streams.iter().filter(|s| s.account.as_deref().unwrap_or(&l.accounts[0].name) == local) {
                let shadow = t.hub.streams.iter().any(|h| h.name == s.name && h.account.as_deref().unwrap_or(&t.hub.accounts[0].name) == linked);
                let from = Side::Hub(linked.clone());
                isolation_check(ctx, &from, &format!("{}/{}", l.name, s.name), &s.name, &domain, shadow).await;
                access_check(ctx, &from, &format!("{}/{}", l.name, s.name), &s.name, Some(&domain)).await;
            }
            // Hub streams in the linked account, seen from the leaf.
            for s in t.hub.streams.iter().filter(|s| s.account.as_deref().unwrap_or(&t.hub.accounts[0].name) == linked) {
                let shadow = l.streams.iter().any(|x| x.name == s.name && x.account.as_deref().unwrap_or(&l.accounts[0].name) == local);
                let from = Side::Leaf(l.name.clone(), local.clone());
                let hub_label = hub_domain.clone().unwrap_or_else(|| "(no domain)".into());
                isolation_check(ctx, &from, &format!("hub/{}", s.name), &s.name, &hub_label, shadow).await;
                access_check(ctx, &from, &format!("hub/{}", s.name), &s.name, hub_domain.as_deref()).await;
            }
        }
    }
}

/// Where a domain probe asks from: a hub account (any hub), or a leaf's local account.
enum Side {
    Hub(String),
    Leaf(String, String),
}

impl Side {
    fn describe(&self) -> String {
        match self {
            Side::Hub(a) => format!("hub account {a}"),
            Side::Leaf(l, a) => format!("{l} account {a}"),
        }
    }

    /// For check ids: `hub:ACCOUNT` or `leaf:ACCOUNT`.
    fn id(&self) -> String {
        match self {
            Side::Hub(a) => format!("hub:{a}"),
            Side::Leaf(l, a) => format!("{l}:{a}"),
        }
    }

    async fn client(&self, lab: &Lab) -> Result<Client, String> {
        match self {
            Side::Hub(a) => hub_client(lab, a, None).await,
            Side::Leaf(l, a) => lab.probe(l, a).await.map_err(|e| e.to_string()),
        }
    }
}

/// A stream is invisible through the asking side's own `$JS.API`: its own domain answers "not found".
async fn isolation_check(ctx: &mut Ctx<'_, '_>, from: &Side, label: &str, stream: &str, domain: &str, shadow: bool) {
    let name = format!("domain-isolation {label} from {}", from.describe());
    let parts = [label, &from.id()];
    let expected = format!(
        "$JS.API.STREAM.INFO.{stream} from {} answers from its own domain: stream not found (10059), and STREAM.NAMES lacks it \
         (the stream lives in domain {domain})",
        from.describe()
    );
    if shadow {
        let why = format!("{} declares its own stream named {stream}: the names collide, isolation cannot be told apart", from.describe());
        ctx.skip(spec("domain-isolation", &parts, name, expected), why);
        return;
    }
    ctx.check(spec("domain-isolation", &parts, name, expected), async |lab: &mut Lab, _: &mut Pending| isolation_body(lab, from, stream).await).await;
}

async fn isolation_body(lab: &Lab, from: &Side, stream: &str) -> Concluded {
    let c = from.client(lab).await?;
    // A timeout is no answer either way (the JetStream API of a just-settled cluster can be slow): ask again.
    let mut answer = api(&c, API, &format!("STREAM.INFO.{stream}"), &json!({})).await;
    for _ in 0..3 {
        match &answer {
            Err(e) if e.contains("timed out") => answer = api(&c, API, &format!("STREAM.INFO.{stream}"), &json!({})).await,
            _ => break,
        }
    }
    let e = match answer {
        Ok(v) => return Ok(Outcome::Violated(format!("its own domain found it: {}", v["config"]))),
        Err(e) if e.contains("no responders") => {
            return Ok(Outcome::Pass("no JetStream answers $JS.API on this side: nothing is visible".into()))
        }
        Err(e) if e.contains("err_code 10059") => e,
        Err(e) => return Err(Outcome::Error(e)),
    };
    let names = api(&c, API, "STREAM.NAMES", &json!({})).await?;
    let listed: Vec<&str> = names["streams"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    Ok(Outcome::expect(!listed.contains(&stream), format!("STREAM.INFO: {e}; STREAM.NAMES: {listed:?}")))
}

/// The same stream is reachable across the link through its domain's API prefix.
async fn access_check(ctx: &mut Ctx<'_, '_>, from: &Side, label: &str, stream: &str, domain: Option<&str>) {
    let name = format!("domain-access {label} from {}", from.describe());
    let parts = [label, &from.id()];
    let Some(domain) = domain else {
        let why = "the hub declares no JetStream domain: there is no $JS.<domain>.API prefix to reach it by";
        ctx.skip(spec("domain-access", &parts, name, format!("hub stream {stream} reachable from {}", from.describe())), why);
        return;
    };
    let prefix = format!("$JS.{domain}.API");
    let spec = spec("domain-access", &parts, name, format!("{prefix}.STREAM.INFO.{stream} from {} finds the stream", from.describe()));
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let c = from.client(lab).await?;
        match api(&c, &prefix, &format!("STREAM.INFO.{stream}"), &json!({})).await {
            Ok(v) => Ok(Outcome::expect(v["config"]["name"] == stream, format!("found: config.name {}", v["config"]["name"]))),
            Err(e) if not_found(&e) || e.contains("no responders") || e.contains("timed out") => Ok(Outcome::Violated(e)),
            Err(e) => Err(Outcome::Error(e)),
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Behaviour: deduplication, message size, interest retention

async fn dedup_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>) {
    let Some(window) = &p.stream.duplicate_window else { return };
    let name = format!("dedup {}", p.label());
    let expected = format!(
        "two publishes with the same Nats-Msg-Id within the {window} duplicate window are stored once: the second PubAck \
         says duplicate with the first one's sequence, and the stream's last sequence moves by one"
    );
    let tok = token();
    let spec = spec("dedup", &[p.node(), &p.stream.name], name, expected);
    let Some(subj) = sample(&p.stream.subjects, &[], &tok, 0) else {
        ctx.skip(spec, "the stream only sources other streams: nothing can be published into it");
        return;
    };
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| dedup_body(lab, p, &subj, &tok).await).await;
}

async fn dedup_body(lab: &Lab, p: &Placed<'_>, subj: &str, tok: &str) -> Concluded {
    let c = client_for(lab, p).await?;
    let before = state_u64(&stream_state(&c, API, &p.stream.name).await?, "last_seq");
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, format!("natslab-{tok}").as_str());
    let first = publish(&c, subj, Some(h.clone()), format!("dedup {tok} 1").into_bytes()).await?;
    let second = publish(&c, subj, Some(h), format!("dedup {tok} 2").into_bytes()).await?;
    if let Some(e) = ack_error(&first) {
        return Ok(Outcome::Violated(format!("the first publish was refused: {e}")));
    }
    let after = state_u64(&stream_state(&c, API, &p.stream.name).await?, "last_seq");
    let dup = second.get("duplicate").and_then(Value::as_bool).unwrap_or(false);
    let ok = dup && ack_seq(&second) == ack_seq(&first) && after == before + 1;
    Ok(Outcome::expect(ok, format!("first PubAck {first}; second PubAck {second}; last_seq {before} → {after}")))
}

async fn max_msg_size_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>) {
    let Some(limit) = p.stream.max_msg_size else { return };
    let limit = limit.0 as usize;
    let name = format!("max-msg-size {}", p.label());
    let expected = format!(
        "a message of {} bytes is refused (error in the PubAck, nothing stored) while one of exactly {limit} bytes is stored",
        limit + 1
    );
    let tok = token();
    let spec = spec("max-msg-size", &[p.node(), &p.stream.name], name, expected);
    let Some(subj) = sample(&p.stream.subjects, &[], &tok, 0) else {
        ctx.skip(spec, "the stream only sources other streams: nothing can be published into it");
        return;
    };
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let c = client_for(lab, p).await?;
        let max_payload = c.server_info().max_payload;
        if limit >= max_payload {
            return Ok(Outcome::Skipped(format!(
                "max_msg_size {limit} is not below the server's max_payload {max_payload}: a bigger message is refused by the \
                 connection itself (Maximum Payload Violation) before JetStream sees it"
            )));
        }
        max_msg_size_body(&c, p, &subj, limit).await
    })
    .await;
}

async fn max_msg_size_body(c: &Client, p: &Placed<'_>, subj: &str, limit: usize) -> Concluded {
    let before = state_u64(&stream_state(c, API, &p.stream.name).await?, "last_seq");
    let over = publish(c, subj, None, vec![b'x'; limit + 1]).await?;
    let at = publish(c, subj, None, vec![b'y'; limit]).await?;
    let after = state_u64(&stream_state(c, API, &p.stream.name).await?, "last_seq");
    let refused = ack_error(&over);
    let ok = refused.is_some() && ack_error(&at).is_none() && after == before + 1;
    Ok(Outcome::expect(
        ok,
        format!(
            "{} bytes: {}; {limit} bytes: {}; last_seq {before} → {after}",
            limit + 1,
            refused.unwrap_or_else(|| format!("stored ({over})")),
            ack_error(&at).unwrap_or_else(|| format!("stored as seq {}", ack_seq(&at).unwrap_or(0)))
        ),
    ))
}

async fn interest_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>) {
    if p.stream.retention != Retention::Interest {
        return;
    }
    let name = format!("interest-retention {}", p.label());
    let tok = token();
    // A subject every consumer is interested in where one exists; else the consumers that match it.
    let all: Vec<&str> = p.stream.consumers.iter().flat_map(filters_of).collect();
    let subj = sample(&p.stream.subjects, &all, &tok, 0).or_else(|| sample(&p.stream.subjects, &[], &tok, 0));
    let consumers: Vec<&Consumer> = p
        .stream
        .consumers
        .iter()
        .filter(|c| subj.as_deref().is_some_and(|s| c.filter_subject.as_deref().is_none_or(|f| subject::matches(f, s))))
        .collect();
    let names: Vec<&str> = consumers.iter().map(|c| c.name.as_str()).collect();
    let expected = format!(
        "a message stays while any interested consumer ({}) has not acked it, and is removed once every one has",
        names.join(", ")
    );
    let spec = spec("interest-retention", &[p.node(), &p.stream.name], name, expected);
    let Some(subj) = subj.filter(|_| !consumers.is_empty()) else {
        ctx.skip(spec, "no subject reaches both the stream and a consumer");
        return;
    };
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| interest_body(lab, p, &consumers, &subj, &tok).await).await;
}

async fn interest_body(lab: &Lab, p: &Placed<'_>, consumers: &[&Consumer], subj: &str, tok: &str) -> Concluded {
    let c = client_for(lab, p).await?;
    let stream = &p.stream.name;
    let payload = format!("interest {tok}");
    let seq = publish_stored(&c, subj, &payload).await?;
    let mut seen = vec![format!("stored as seq {seq}")];
    for consumer in consumers {
        if get_msg(&c, stream, seq).await?.is_none() {
            seen.push(format!("gone before {} acked", consumer.name));
            return Ok(Outcome::Violated(seen.join("; ")));
        }
        seen.push(format!("still stored before {} acked", consumer.name));
        let m = receive(&c, stream, consumer, &payload).await?;
        // With ack_policy none, delivery is the acknowledgement.
        if consumer.ack_policy != AckPolicy::None {
            ack_sync(&c, &m).await?;
        }
        seen.push(format!("{} acked", consumer.name));
    }
    let deadline = Instant::now() + WAIT;
    let started = Instant::now();
    while get_msg(&c, stream, seq).await?.is_some() {
        if Instant::now() >= deadline {
            seen.push(format!("still stored {WAIT:?} after the last ack"));
            return Ok(Outcome::Violated(seen.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.push(format!("removed {} ms after the last ack", started.elapsed().as_millis()));
    let state = stream_state(&c, API, stream).await?;
    seen.push(format!("stream now holds {} message(s)", state_u64(&state, "messages")));
    Ok(Outcome::Pass(seen.join("; ")))
}

// ---------------------------------------------------------------------------------------------------------
// Behaviour: max deliveries

async fn max_deliver_check(ctx: &mut Ctx<'_, '_>, p: &Placed<'_>, c: &Consumer) {
    let Some(max) = c.max_deliver.filter(|m| *m > 0) else { return };
    let name = format!("max-deliver {}/{}", p.label(), c.name);
    let probe = format!("natslab-probe-{}", c.name);
    let expected = format!(
        "a message that is never acked is delivered exactly {max} times, then the server gives up with \
         $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES (deliveries counted until that advisory). Measured on a temporary copy \
         {probe} of the live consumer's configuration (ack_wait {PROBE_ACK_WAIT:?} instead of the declared one, starting at \
         the probe message{}), deleted afterwards",
        if c.deliver_subject.is_some() { ", delivering to a private subject" } else { "" }
    );
    let spec = spec("max-deliver", &[p.node(), &p.stream.name, &c.name], name, expected);
    if c.ack_policy != AckPolicy::Explicit {
        ctx.skip(spec, "max_deliver is probed on ack_policy explicit consumers, where each message is acked alone");
        return;
    }
    if p.stream.retention == Retention::Workqueue {
        ctx.skip(spec, "a work-queue stream refuses a second consumer with an overlapping filter: no temporary copy can be made");
        return;
    }
    let tok = token();
    let Some(subj) = sample(&p.stream.subjects, &filters_of(c), &tok, 0) else {
        ctx.skip(spec, "no subject reaches both the stream and the consumer's filter");
        return;
    };
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let client = client_for(lab, p).await?;
        let probe = Probe { client: &client, stream: &p.stream.name, consumer: c, name: &probe, tok: &tok };
        Ok(probe.run(&subj, max).await?)
    })
    .await;
}

/// A temporary copy of a live consumer that counts deliveries of one unacked message.
struct Probe<'a> {
    client: &'a Client,
    stream: &'a str,
    consumer: &'a Consumer,
    name: &'a str,
    tok: &'a str,
}

impl Probe<'_> {
    async fn run(&self, subj: &str, declared: i64) -> Result<Outcome, String> {
        let c = self.client;
        let live = match api(c, API, &format!("CONSUMER.INFO.{}.{}", self.stream, self.consumer.name), &json!({})).await {
            Ok(v) => v["config"].clone(),
            Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("the consumer does not exist: {e}"))),
            Err(e) => return Err(e),
        };
        let payload = format!("max-deliver {}", self.tok);
        let seq = publish_stored(c, subj, &payload).await?;
        let deliver_to = format!("natslab.probe.{}", self.tok);
        let advisory = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}", self.stream, self.name);
        let mut adv = c.subscribe(advisory).await.map_err(|e| e.to_string())?;
        let inbox = if live.get("deliver_subject").is_some() { deliver_to.clone() } else { c.new_inbox() };
        let mut deliveries = c.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
        c.flush().await.map_err(|e| e.to_string())?;
        let config = self.copy(&live, seq, &deliver_to);
        // A copy left over from an interrupted run would refuse the new configuration.
        let _ = api(c, API, &format!("CONSUMER.DELETE.{}.{}", self.stream, self.name), &json!({})).await;
        api(c, API, &format!("CONSUMER.CREATE.{}.{}", self.stream, self.name), &json!({ "stream_name": self.stream, "config": config })).await?;
        let counted = self.count((&mut deliveries, &inbox), &mut adv, seq, &payload, &live).await;
        let deleted = api(c, API, &format!("CONSUMER.DELETE.{}.{}", self.stream, self.name), &json!({})).await;
        let (count, advised) = counted?;
        deleted.map_err(|e| format!("delete temporary consumer {}: {e}", self.name))?;
        let live_max = live.get("max_deliver").cloned().unwrap_or(Value::Null);
        let observed = format!(
            "{count} deliveries; advisory: {}; live consumer's max_deliver {live_max}",
            advised.map_or("none".to_string(), |d| format!("gave up after {d} deliveries"))
        );
        Ok(Outcome::expect(count as i64 == declared && advised == Some(declared), observed))
    }

    /// The live configuration under a probe name, redelivering fast, starting at the probe message.
    fn copy(&self, live: &Value, seq: u64, deliver_to: &str) -> Value {
        let mut cfg = live.clone();
        if let Some(o) = cfg.as_object_mut() {
            for k in ["name", "opt_start_time", "opt_start_seq", "deliver_policy"] {
                o.remove(k);
            }
            if o.contains_key("deliver_subject") {
                o.insert("deliver_subject".into(), json!(deliver_to));
            }
        }
        cfg["durable_name"] = json!(self.name);
        cfg["ack_wait"] = json!(PROBE_ACK_WAIT.as_nanos() as u64);
        cfg["deliver_policy"] = json!("by_start_sequence");
        cfg["opt_start_seq"] = json!(seq);
        // If the harness dies before deleting it, the server drops it on its own.
        cfg["inactive_threshold"] = json!(Duration::from_secs(60).as_nanos() as u64);
        cfg
    }

    /// Deliveries of the probe message until the MAX_DELIVERIES advisory for it (or the deadline).
    async fn count(
        &self,
        (deliveries, inbox): (&mut async_nats::Subscriber, &str),
        adv: &mut async_nats::Subscriber,
        seq: u64,
        payload: &str,
        live: &Value,
    ) -> Result<(usize, Option<i64>), String> {
        let pulled = live.get("deliver_subject").is_none();
        let max = live.get("max_deliver").and_then(Value::as_i64).unwrap_or(1).max(1) as u32;
        let deadline = Instant::now() + PROBE_ACK_WAIT * (max + 4) + WAIT;
        if pulled {
            pull(self.client, self.stream, self.name, inbox, 16, Duration::from_secs(2)).await?;
        }
        let mut count = 0;
        loop {
            tokio::select! {
                m = deliveries.next() => {
                    let m = m.ok_or("delivery subscription closed")?;
                    if m.status.is_some() {
                        if pulled {
                            pull(self.client, self.stream, self.name, inbox, 16, Duration::from_secs(2)).await?;
                        }
                    } else if m.payload.as_ref() == payload.as_bytes() {
                        count += 1;
                    }
                }
                a = adv.next() => {
                    let a = a.ok_or("advisory subscription closed")?;
                    let v: Value = serde_json::from_slice(&a.payload).map_err(|e| format!("advisory: {e}"))?;
                    if v.get("stream_seq").and_then(Value::as_u64) == Some(seq) {
                        return Ok((count, v.get("deliveries").and_then(Value::as_i64)));
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => return Ok((count, None)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Faults: file-store durability, store-and-forward

/// What the durability check writes to: a declared file stream of the leaf that keeps what it is given, or a
/// temporary one.
struct Target {
    stream: String,
    account: String,
    subjects: Vec<String>,
    temporary: bool,
}

fn durable_target(l: &Leaf, tok: &str) -> Target {
    let keeps = |s: &&Stream| {
        s.storage == Storage::File && s.retention == Retention::Limits && !s.subjects.is_empty() && s.max_msg_size.is_none_or(|m| m.0 >= 1024)
    };
    match l.streams.iter().find(keeps) {
        Some(s) => Target {
            stream: s.name.clone(),
            account: s.account.clone().unwrap_or_else(|| l.accounts[0].name.clone()),
            subjects: s.subjects.clone(),
            temporary: false,
        },
        None => Target {
            stream: format!("NATSLAB_DURABLE_{}", tok.to_uppercase()),
            account: l.accounts[0].name.clone(),
            subjects: vec![format!("natslab.durable.{tok}.>")],
            temporary: true,
        },
    }
}

async fn durability_check(ctx: &mut Ctx<'_, '_>, l: &Leaf) {
    let tok = token();
    let t = durable_target(l, &tok);
    let name = format!("file-store-durable {}/{}", l.name, t.stream);
    let expected = format!(
        "{DURABLE} acknowledged messages in file-store stream {}{} are all read back, same subjects and payloads, after \
         kill -9 and restart of {}",
        t.stream,
        if t.temporary { " (temporary: the leaf declares no file stream that keeps what it is given)" } else { "" },
        l.name
    );
    let spec = spec("file-store-durable", &[&l.name], name, expected).needs(Capability::Kill);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| durability_body(lab, l, &t, &tok, p).await).await;
}

async fn durability_body(lab: &mut Lab, l: &Leaf, t: &Target, tok: &str, pending: &mut Pending) -> Concluded {
    let c = lab.probe(&l.name, &t.account).await.map_err(|e| e.to_string())?;
    if t.temporary {
        let cfg = json!({ "name": t.stream, "subjects": t.subjects, "storage": "file", "num_replicas": 1 });
        api(&c, API, &format!("STREAM.CREATE.{}", t.stream), &cfg).await?;
    }
    let mut written = Vec::new();
    for i in 0..DURABLE {
        let subj = sample(&t.subjects, &[], tok, i).ok_or("no subject in the stream")?;
        let payload = format!("durable {tok} {i}");
        written.push((publish_stored(&c, &subj, &payload).await?, (subj, payload)));
    }
    drop(c);
    lab.apply(&Fault::Kill { node: l.name.clone() }).await.map_err(|e| e.to_string())?;
    let restarted = Instant::now();
    lab.apply(&Fault::Start { node: l.name.clone() }).await.map_err(|e| e.to_string())?;
    wait_ready_all(lab).await?;
    pending.metric_duration("restart_ms", restarted.elapsed());
    let c = lab.probe(&l.name, &t.account).await.map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    for (seq, want) in &written {
        match read_after_restart(&c, &t.stream, *seq).await? {
            Some(got) if &got == want => {}
            got => lost.push(format!("seq {seq}: wrote {want:?}, read {got:?}")),
        }
    }
    if t.temporary {
        api(&c, API, &format!("STREAM.DELETE.{}", t.stream), &json!({})).await?;
    }
    let observed = if lost.is_empty() { format!("all {DURABLE} read back after restart") } else { lost.join("; ") };
    Ok(Outcome::expect(lost.is_empty(), observed))
}

/// A message by sequence, retrying while the restarted server's JetStream still recovers the stream.
async fn read_after_restart(c: &Client, stream: &str, seq: u64) -> Result<Option<(String, String)>, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match get_msg(c, stream, seq).await {
            Ok(m) => return Ok(m),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A hub stream that sources a leaf stream through the leaf's domain: where the source lives.
struct Feed<'t> {
    leaf: &'t Leaf,
    stream: &'t Stream,
    account: String,
}

fn feed<'t>(t: &'t Topology, src: &crate::topology::Source) -> Option<Feed<'t>> {
    let leaf = t.leaves.iter().find(|l| l.jetstream.as_ref().and_then(|j| j.domain.as_deref()) == src.domain.as_deref())?;
    let stream = leaf.streams.iter().find(|s| s.name == src.name)?;
    let account = stream.account.clone().unwrap_or_else(|| leaf.accounts[0].name.clone());
    Some(Feed { leaf, stream, account })
}

async fn store_and_forward_check(ctx: &mut Ctx<'_, '_>, t: &Topology, p: &Placed<'_>, src: &crate::topology::Source) {
    let domain = src.domain.clone().unwrap_or_default();
    let name = format!("store-and-forward {} from {}:{}", p.label(), domain, src.name);
    let expected = format!(
        "{BEFORE} messages published into {} in domain {domain} arrive in hub stream {}{}; then the hub the leaf is attached to \
         is killed, {DURING} more are published on the leaf, the hub is restarted, and the hub stream holds all {} in order, \
         same subjects and payloads (metric catchup_ms: from the restart until all are there)",
        src.name,
        p.stream.name,
        src.subject_transform.as_ref().map_or(String::new(), |x| format!(" as {} → {}", x.src, x.dest)),
        BEFORE + DURING
    );
    let spec = spec("store-and-forward", &[&p.stream.name, &domain, &src.name], name, expected).needs(Capability::Kill);
    let Some(f) = feed(t, src) else {
        ctx.skip(spec, format!("no leaf declares stream {} in domain {domain}", src.name));
        return;
    };
    let tok = token();
    let mut filters: Vec<&str> = src.filter_subject.iter().map(String::as_str).collect();
    filters.extend(src.subject_transform.iter().map(|x| x.src.as_str()));
    let plan: Option<Vec<(String, String, String)>> = (0..BEFORE + DURING)
        .map(|i| {
            let subj = sample(&f.stream.subjects, &filters, &tok, i)?;
            let arrives = match &src.subject_transform {
                Some(x) => transform(&x.src, &x.dest, &subj)?,
                None => subj.clone(),
            };
            Some((subj, arrives, format!("sf {tok} {i}")))
        })
        .collect();
    let Some(plan) = plan else {
        ctx.skip(spec, "no subject reaches the source stream, its filter and its transform (or the transform uses functions the harness cannot predict)");
        return;
    };
    ctx.check(spec, async |lab: &mut Lab, pending: &mut Pending| SourceRun { p, feed: &f, plan: &plan, tok: &tok }.run(lab, pending).await).await;
}

/// One store-and-forward run: (published subject, expected hub subject, payload) per message.
struct SourceRun<'a, 't> {
    p: &'a Placed<'t>,
    feed: &'a Feed<'t>,
    plan: &'a [(String, String, String)],
    tok: &'a str,
}

impl SourceRun<'_, '_> {
    async fn run(&self, lab: &mut Lab, pending: &mut Pending) -> Concluded {
        let leaf = lab.probe(&self.feed.leaf.name, &self.feed.account).await.map_err(|e| e.to_string())?;
        let hub = hub_client(lab, &self.p.account, None).await?;
        let mut reader = Reader::new(&self.p.stream.name, state_u64(&stream_state(&hub, API, &self.p.stream.name).await?, "last_seq") + 1);
        for (subj, _, payload) in &self.plan[..BEFORE] {
            publish_stored(&leaf, subj, payload).await?;
        }
        let first = Instant::now();
        let arrived = reader.until(&hub, self.tok, BEFORE, first + RESUME).await;
        pending.metric_duration("first_arrival_ms", first.elapsed());
        if arrived.len() < BEFORE {
            return Ok(Outcome::Violated(format!("before any fault only {} of {BEFORE} arrived: {arrived:?}", arrived.len())));
        }
        let killed = lab.leaf_hub(&self.feed.leaf.name).await.ok_or_else(|| Outcome::Violated("the leaf is attached to no hub".into()))?;
        lab.apply(&Fault::Kill { node: killed.clone() }).await.map_err(|e| e.to_string())?;
        let outage = Instant::now();
        let during = self.publish_during(&leaf).await;
        lab.apply(&Fault::Start { node: killed.clone() }).await.map_err(|e| e.to_string())?;
        let restarted = Instant::now();
        pending.metric_duration("outage_ms", outage.elapsed());
        let caught_up = async {
            during?;
            let hub = hub_client(lab, &self.p.account, Some(&killed)).await?;
            Ok::<_, String>(reader.until(&hub, self.tok, BEFORE + DURING, restarted + RESUME).await)
        }
        .await;
        if caught_up.as_ref().is_ok_and(|all| all.len() >= BEFORE + DURING) {
            pending.metric_duration("catchup_ms", restarted.elapsed());
        }
        // Whatever happened, the lab is whole again before the next check.
        let healing = Instant::now();
        wait_ready_all(lab).await?;
        pending.metric_duration("ready_again_ms", healing.elapsed());
        let all = caught_up?;
        let want: Vec<(String, String)> = self.plan.iter().map(|(_, s, p)| (s.clone(), p.clone())).collect();
        let observed = format!("killed {killed}; hub stream got {} of {}: {}", all.len(), want.len(), summary(&all, &want));
        Ok(Outcome::expect(all == want, observed))
    }

    async fn publish_during(&self, leaf: &Client) -> Result<(), String> {
        for (subj, _, payload) in &self.plan[BEFORE..] {
            publish_stored(leaf, subj, payload).await?;
        }
        Ok(())
    }
}

fn summary(got: &[(String, String)], want: &[(String, String)]) -> String {
    if got == want {
        return format!("all in order, e.g. {:?}", got.last());
    }
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).map(|w| &w.1).collect();
    format!("missing {missing:?}; got {got:?}")
}

/// Reads a stream forward from a sequence, keeping the messages of one probe (by token in the payload).
struct Reader {
    stream: String,
    next: u64,
    got: Vec<(String, String)>,
}

impl Reader {
    fn new(stream: &str, from: u64) -> Reader {
        Reader { stream: stream.to_string(), next: from, got: Vec::new() }
    }

    /// Polls until `n` probe messages have been read or the deadline passes; errors count as "not yet"
    /// (a hub may be electing a stream leader).
    async fn until(&mut self, c: &Client, tok: &str, n: usize, deadline: Instant) -> Vec<(String, String)> {
        while self.got.len() < n && Instant::now() < deadline {
            if self.read(c, tok).await.is_err() || self.got.len() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.got.clone()
    }

    async fn read(&mut self, c: &Client, tok: &str) -> Result<(), String> {
        while let Some(m) = js::next_msg(c, API, &self.stream, self.next).await? {
            self.next = m.seq + 1;
            if m.payload.contains(tok) {
                self.got.push((m.subject, m.payload));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_patterns() {
        assert_eq!(meet("domain.*.events.>", "domain.graph.>").as_deref(), Some("domain.graph.events.>"));
        assert_eq!(meet("domain.>", "domain.orders.>").as_deref(), Some("domain.orders.>"));
        assert_eq!(meet("orders.>", "orders.>").as_deref(), Some("orders.>"));
        assert_eq!(meet("a.*", "a.b").as_deref(), Some("a.b"));
        assert_eq!(meet("a.b", "a.c"), None);
        assert_eq!(meet("a.b", "a.b.c"), None);
        assert_eq!(meet("metrics.>", "metrics"), None);
    }

    #[test]
    fn sample_subjects() {
        let subjects = vec!["domain.*.events.>".to_string(), "domain.*.commands.>".to_string()];
        assert_eq!(sample(&subjects, &["domain.graph.>"], "t", 2).as_deref(), Some("domain.graph.events.t.2"));
        assert_eq!(sample(&subjects, &["domain.x.commands.go"], "t", 0).as_deref(), Some("domain.x.commands.go"));
        assert_eq!(sample(&subjects, &["nomatch.>"], "t", 0), None);
        assert_eq!(sample(&[], &[], "t", 0), None);
    }

    #[test]
    fn transforms() {
        assert_eq!(transform("domain.>", "leaf.store-1.domain.>", "domain.a.b").as_deref(), Some("leaf.store-1.domain.a.b"));
        assert_eq!(transform("a.*.*", "x.{{wildcard(2)}}.$1", "a.p.q").as_deref(), Some("x.q.p"));
        assert_eq!(transform("a.*", "b.*", "a.p").as_deref(), Some("b.p"));
        assert_eq!(transform("a.*", "b.*", "c.p"), None);
        assert_eq!(transform("a.*", "b.{{partition(3,1)}}", "a.p"), None);
    }

    #[test]
    fn peers_count_leader_and_replicas() {
        assert_eq!(peers(&json!({ "cluster": { "leader": "hub-1", "replicas": [{ "name": "hub-2" }, { "name": "hub-3" }] } })), Some(3));
        assert_eq!(peers(&json!({ "cluster": { "leader": "store-1" } })), Some(1));
        assert_eq!(peers(&json!({ "cluster": { "name": "c" } })), None);
    }
}
