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
use super::probes::{connect, token};
use super::streams::{account_of, client_for, client_for_avoiding, copies, hub_client, literal, placed, sample, servers_of, transform, Copy, Placed};
use super::{Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::nemesis::{Capability, Fault};
use crate::probe::js::{self, ack_error, ack_seq, api, not_found, publish, publish_stored, state_u64, stream_state, API};
use crate::provision::{consumer_config, consumer_drift, stream_config, stream_drift};
use crate::topology::{subject, AckPolicy, Consumer, Leaf, Retention, Source, Storage, Stream, Topology};

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
    // Copies first: after a leaf restarts, a stream takes a while (its stall detection) to copy from it again.
    for copy in copies(declared, &streams) {
        store_and_forward_check(ctx, declared, copy).await;
    }
    for l in declared.leaves.iter().filter(|l| l.jetstream.is_some()) {
        durability_check(ctx, l).await;
        power_loss_check(ctx, l).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Where streams live

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
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| stream_config_body(lab, p).await).await;
}

async fn stream_config_body(lab: &Lab, p: &Placed<'_>) -> Concluded {
    let c = client_for(lab, p).await?;
    let info = match api(&c, API, &format!("STREAM.INFO.{}", p.stream.name), &json!({})).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("no such stream: {e}"))),
        Err(e) => return Err(Outcome::Error(e)),
    };
    let mut bad = stream_drift(p.stream, &info["config"]);
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
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| consumer_config_body(lab, p, c).await).await;
}

async fn consumer_config_body(lab: &Lab, p: &Placed<'_>, c: &Consumer) -> Concluded {
    let client = client_for(lab, p).await?;
    let info = match api(&client, API, &format!("CONSUMER.INFO.{}.{}", p.stream.name, c.name), &json!({})).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(Outcome::Violated(format!("no such consumer: {e}"))),
        Err(e) => return Err(Outcome::Error(e)),
    };
    Ok(config_outcome(consumer_drift(c, &info["config"]), &info))
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
            for s in l.streams.iter().filter(|s| account_of(s, &l.accounts[0].name) == local) {
                let label = format!("{}/{}", l.name, s.name);
                let from = Side::Hub(linked.clone());
                let twin = t.hub.streams.iter().find(|h| h.name == s.name && account_of(h, &t.hub.accounts[0].name) == linked);
                match (twin, hub_domain.as_deref()) {
                    (Some(h), Some(hd)) => {
                        let a = Home { node: l.name.clone(), leaf: true, account: local.clone(), domain: domain.clone(), stream: s };
                        let b = Home { node: "hub".into(), leaf: false, account: linked.clone(), domain: hd.to_string(), stream: h };
                        same_name_check(ctx, &a, &b).await;
                    }
                    _ => isolation_check(ctx, &from, &label, &s.name, &domain).await,
                }
                access_check(ctx, t, &from, &label, &s.name, Some(&domain)).await;
            }
            // Hub streams in the linked account, seen from the leaf (a twin was checked above).
            for s in t.hub.streams.iter().filter(|s| account_of(s, &t.hub.accounts[0].name) == linked) {
                let label = format!("hub/{}", s.name);
                let from = Side::Leaf(l.name.clone(), local.clone());
                let twin = l.streams.iter().any(|x| x.name == s.name && account_of(x, &l.accounts[0].name) == local);
                if !twin {
                    let hub_label = hub_domain.clone().unwrap_or_else(|| "(no domain)".into());
                    isolation_check(ctx, &from, &label, &s.name, &hub_label).await;
                }
                access_check(ctx, t, &from, &label, &s.name, hub_domain.as_deref()).await;
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

    async fn client(&self, lab: &Lab) -> Result<Client, Outcome> {
        match self {
            Side::Hub(a) => hub_client(lab, a, None).await,
            Side::Leaf(l, a) => connect(lab, l, a).await,
        }
    }
}

/// A stream is invisible through the asking side's own `$JS.API`: its own domain answers "not found".
async fn isolation_check(ctx: &mut Ctx<'_, '_>, from: &Side, label: &str, stream: &str, domain: &str) {
    let name = format!("domain-isolation {label} from {}", from.describe());
    let parts = [label, &from.id()];
    let expected = format!(
        "$JS.API.STREAM.INFO.{stream} from {} answers from its own domain: stream not found (10059), and STREAM.NAMES lacks it \
         (the stream lives in domain {domain})",
        from.describe()
    );
    ctx.check(spec("domain-isolation", &parts, name, expected), async |lab: &mut Lab, _: &mut Pending| isolation_body(lab, from, stream).await).await;
}

async fn isolation_body(lab: &Lab, from: &Side, stream: &str) -> Concluded {
    let c = from.client(lab).await?;
    let e = match js::api_patient(&c, API, &format!("STREAM.INFO.{stream}"), &json!({}), 4).await {
        Ok(v) => return Ok(Outcome::Violated(format!("its own domain found it: {}", v["config"]))),
        Err(e) if js::no_responders(&e) => return Ok(Outcome::Pass("no JetStream answers $JS.API on this side: nothing is visible".into())),
        Err(e) if e.contains("err_code 10059") => e,
        Err(e) => return Err(Outcome::Error(e)),
    };
    let listed = js::stream_names(&c, API).await?;
    Ok(Outcome::expect(!listed.iter().any(|n| n == stream), format!("STREAM.INFO: {e}; STREAM.NAMES: {listed:?}")))
}

/// The stream is reachable across the link through its domain's API prefix, and that domain answers:
/// the answer names the domain, and its leader is one of that domain's servers.
async fn access_check(ctx: &mut Ctx<'_, '_>, t: &Topology, from: &Side, label: &str, stream: &str, domain: Option<&str>) {
    let name = format!("domain-access {label} from {}", from.describe());
    let parts = [label, &from.id()];
    let Some(domain) = domain else {
        let why = "the hub declares no JetStream domain: there is no $JS.<domain>.API prefix to reach it by";
        ctx.skip(spec("domain-access", &parts, name, format!("hub stream {stream} reachable from {}", from.describe())), why);
        return;
    };
    let prefix = js::prefix(Some(domain));
    let servers = servers_of(t, domain);
    let expected = format!(
        "{prefix}.STREAM.INFO.{stream} from {} finds the stream, answered by domain {domain} with its leader one of {}",
        from.describe(),
        servers.join(", ")
    );
    ctx.check(spec("domain-access", &parts, name, expected), async |lab: &mut Lab, _: &mut Pending| {
        let c = from.client(lab).await?;
        let v = match js::api_patient(&c, &prefix, &format!("STREAM.INFO.{stream}"), &json!({}), 4).await {
            Ok(v) => v,
            Err(e) if not_found(&e) || js::no_responders(&e) || e.contains("timed out") => return Ok(Outcome::Violated(e)),
            Err(e) => return Err(Outcome::Error(e)),
        };
        let answered = v.get("domain").and_then(Value::as_str).unwrap_or("");
        let leader = v.pointer("/cluster/leader").and_then(Value::as_str).unwrap_or("");
        let seen = format!("config.name {}, answered by domain '{answered}', leader '{leader}'", v["config"]["name"]);
        let right = v["config"]["name"] == stream && (answered.is_empty() || answered == domain) && servers.iter().any(|s| s == leader);
        Ok(Outcome::expect(right, seen))
    })
    .await;
}

/// A stream as a domain probe sees it: on which node and account, in which domain.
struct Home<'t> {
    node: String,
    leaf: bool,
    account: String,
    domain: String,
    stream: &'t Stream,
}

impl Home<'_> {
    async fn client(&self, lab: &Lab) -> Result<Client, Outcome> {
        if self.leaf {
            connect(lab, &self.node, &self.account).await
        } else {
            hub_client(lab, &self.account, None).await
        }
    }

    fn label(&self) -> String {
        format!("{}/{} (domain {})", self.node, self.stream.name, self.domain)
    }
}

/// A subject `x` stores and `y` does not capture, for a probe message.
fn only_in(x: &Stream, y: &Stream, tok: &str) -> Option<String> {
    x.subjects.iter().enumerate().map(|(i, p)| literal(p, tok, i)).find(|s| !y.subjects.iter().any(|p| subject::matches(p, s)))
}

/// Two streams of one name in two domains (and one account, across the link): a message written to each
/// is stored by its own (the PubAck names stream and domain) and the other holds nothing of it.
async fn same_name_check(ctx: &mut Ctx<'_, '_>, a: &Home<'_>, b: &Home<'_>) {
    let name = format!("same-name stream {} in domains {} and {}", a.stream.name, a.domain, b.domain);
    let expected = format!(
        "a message written into {} is acknowledged by that stream in domain {}, and {} holds nothing of it; the same the other way",
        a.label(),
        a.domain,
        b.label()
    );
    let parts = [a.stream.name.as_str(), &a.domain, &b.domain];
    let tok = token();
    let (Some(sa), Some(sb)) = (only_in(a.stream, b.stream, &tok), only_in(b.stream, a.stream, &tok)) else {
        let why = "every subject one stream stores, the other captures too: across a link data crosses by declaration (domains isolate the API, AUDIT §4a)";
        ctx.skip(spec("same-name", &parts, name, expected), why);
        return;
    };
    ctx.check(spec("same-name", &parts, name, expected), async |lab: &mut Lab, _: &mut Pending| {
        let mut seen = Vec::new();
        for (x, y, subj) in [(a, b, &sa), (b, a, &sb)] {
            let (cx, cy) = (x.client(lab).await?, y.client(lab).await?);
            let before = state_u64(&stream_state(&cy, API, &y.stream.name).await?, "last_seq");
            let ack = publish(&cx, subj, None, format!("same-name {tok}").into_bytes()).await?;
            if let Some(e) = ack_error(&ack) {
                return Ok(Outcome::Violated(format!("{} refused a write on {subj}: {e}", x.label())));
            }
            let (stream, domain) = (ack["stream"].as_str().unwrap_or(""), ack["domain"].as_str().unwrap_or(""));
            if stream != x.stream.name || (!domain.is_empty() && domain != x.domain) {
                return Ok(Outcome::Violated(format!("a write on {subj} meant for {} was acknowledged by stream '{stream}' in domain '{domain}'", x.label())));
            }
            // A round trip through the other stream's own domain, after the write was acknowledged.
            let found = js::last_on(&cy, API, &y.stream.name, subj).await?;
            let after = state_u64(&stream_state(&cy, API, &y.stream.name).await?, "last_seq");
            if found.is_some() || after != before {
                return Ok(Outcome::Violated(format!(
                    "{subj} written into {} also reached {} (last_seq {before} → {after}, message {found:?})",
                    x.label(),
                    y.label()
                )));
            }
            seen.push(format!("{subj}: acknowledged by {stream} in domain {}, seq {}; {} unchanged at seq {after}", if domain.is_empty() { "(unnamed)" } else { domain }, ack_seq(&ack).unwrap_or(0), y.label()));
        }
        Ok(Outcome::Pass(seen.join("; ")))
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
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        let lost = durability_body(lab, l, &t, &tok, p, Fault::Kill { node: l.name.clone() }).await?;
        let observed = if lost.is_empty() { format!("all {DURABLE} read back after restart") } else { lost.join("; ") };
        Ok(Outcome::expect(lost.is_empty(), observed))
    })
    .await;
}

/// A power cut (where the backend can make one: a VM quitting) loses what the kernel had not written: with
/// `sync_interval: always` nothing acknowledged; otherwise up to an interval's worth, which is NATS's
/// documented trade-off and so a measurement (`power_loss_lost`), not a violation.
async fn power_loss_check(ctx: &mut Ctx<'_, '_>, l: &Leaf) {
    let tok = token();
    let t = durable_target(l, &tok);
    let always = matches!(l.jetstream.as_ref().and_then(|j| j.sync_interval.as_ref()), Some(crate::topology::SyncInterval::Always));
    let expected = if always {
        format!("with sync_interval: always, all {DURABLE} acknowledged messages in {} survive a power cut of {}", t.stream, l.name)
    } else {
        format!(
            "{DURABLE} acknowledged messages in {}; after a power cut of {} the stream is readable again; how many were lost is measured (sync_interval {}: acknowledged but unsynced writes may be lost, as NATS documents)",
            t.stream,
            l.name,
            l.jetstream.as_ref().and_then(|j| j.sync_interval.as_ref()).map_or("2m (default)".into(), |s| s.to_string())
        )
    };
    let spec = spec("power-loss", &[&l.name], format!("power-loss {}/{}", l.name, t.stream), expected).needs(Capability::PowerLoss);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        let lost = durability_body(lab, l, &t, &tok, p, Fault::PowerLoss { node: l.name.clone() }).await?;
        p.metric("power_loss_lost", lost.len() as f64);
        let observed = format!("{} of {DURABLE} acknowledged messages lost{}", lost.len(), if lost.is_empty() { String::new() } else { format!(": {}", lost.join("; ")) });
        Ok(if always || lost.is_empty() { Outcome::expect(lost.is_empty(), observed) } else { Outcome::Pass(format!("{observed} (measured, not a violation without sync_interval: always)")) })
    })
    .await;
}

/// Writes `DURABLE` acknowledged messages, applies `fault` to the leaf, restarts it, reads them back: the
/// ones not read back as written.
async fn durability_body(lab: &mut Lab, l: &Leaf, t: &Target, tok: &str, pending: &mut Pending, fault: Fault) -> Result<Vec<String>, Outcome> {
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
    lab.apply(&fault).await.map_err(|e| e.to_string())?;
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
    Ok(lost)
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

async fn store_and_forward_check(ctx: &mut Ctx<'_, '_>, t: &Topology, copy: Result<Copy<'_>, (&Placed<'_>, &Source, String)>) {
    let (into, via) = match &copy {
        Ok(c) => (c.into, c.via),
        Err((p, s, _)) => (*p, *s),
    };
    let domain = via.domain.clone().unwrap_or_default();
    let kind = if copy.as_ref().is_ok_and(|c| c.mirror) || (copy.is_err() && into.stream.mirror.as_ref() == Some(via)) { "mirror" } else { "source" };
    let name = format!("store-and-forward {} ({kind} of {domain}:{})", into.label(), via.name);
    let parts = [into.node(), &into.stream.name, &domain, &via.name];
    let copy = match copy {
        Ok(c) => c,
        Err((_, _, why)) => {
            ctx.skip(spec("store-and-forward", &parts, name, format!("{} copies {domain}:{}", into.label(), via.name)), why);
            return;
        }
    };
    let hub_sources_leaf = copy.from.leaf.is_some();
    let expect = t.expect_for(copy.from.leaf.or(copy.into.leaf));
    let fault = if hub_sources_leaf { "the hub the leaf is attached to is killed" } else { "the leaf holding the copy is killed" };
    let expected = format!(
        "{BEFORE} messages published into {} arrive in {}{}; then {fault}, {DURING} more are published, it is restarted, and the copy \
         holds all {} in order, same subjects and payloads{}{}",
        copy.from.label(),
        into.label(),
        via.subject_transform.as_ref().map_or(String::new(), |x| format!(" as {} → {}", x.src, x.dest)),
        BEFORE + DURING,
        if copy.mirror { ", at the same sequence numbers" } else { "" },
        match &expect.catchup_within {
            Some(d) => format!(", within {d} of the restart (expect.catchup_within)"),
            None => " (metric catchup_ms: from the restart until all are there)".into(),
        }
    );
    let spec = spec("store-and-forward", &parts, name, expected).needs(Capability::Kill);
    let tok = token();
    let mut filters: Vec<&str> = via.filter_subject.iter().map(String::as_str).collect();
    filters.extend(via.subject_transform.iter().map(|x| x.src.as_str()));
    let plan: Option<Vec<(String, String, String)>> = (0..BEFORE + DURING)
        .map(|i| {
            let subj = sample(&copy.from.stream.subjects, &filters, &tok, i)?;
            let arrives = match &via.subject_transform {
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
    let within = expect.catchup_within.as_ref().map(|d| d.get());
    ctx.check(spec, async |lab: &mut Lab, pending: &mut Pending| CopyRun { copy: &copy, plan: &plan, tok: &tok, within }.run(lab, pending).await).await;
}

/// One store-and-forward run: (published subject, expected subject in the copy, payload) per message.
struct CopyRun<'a, 't> {
    copy: &'a Copy<'t>,
    plan: &'a [(String, String, String)],
    tok: &'a str,
    within: Option<Duration>,
}

/// A publish before any fault of this check, asked again while no stream answers ("no responders": a
/// replicated stream still electing its leader after the previous check's kill; nothing was stored, so
/// asking again stores nothing twice).
async fn publish_settled(c: &Client, subject: &str, payload: &str) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match publish_stored(c, subject, payload).await {
            Err(e) if Instant::now() < deadline && js::no_responders(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other,
        }
    }
}

impl CopyRun<'_, '_> {
    async fn run(&self, lab: &mut Lab, pending: &mut Pending) -> Concluded {
        let (from, into) = (&self.copy.from, self.copy.into);
        let source = client_for(lab, from).await?;
        let copy = client_for(lab, into).await?;
        let mut reader = Reader::new(&into.stream.name, state_u64(&stream_state(&copy, API, &into.stream.name).await?, "last_seq") + 1);
        let mut seqs = Vec::new();
        for (subj, _, payload) in &self.plan[..BEFORE] {
            seqs.push(publish_settled(&source, subj, payload).await?);
        }
        let first = Instant::now();
        let arrived = reader.until(&copy, self.tok, BEFORE, first + RESUME).await;
        pending.metric_duration("first_arrival_ms", first.elapsed());
        if arrived.len() < BEFORE {
            return Ok(Outcome::Violated(format!("before any fault only {} of {BEFORE} arrived: {arrived:?}", arrived.len())));
        }
        // Break the link: kill the leaf's hub when the leaf feeds the hub; kill the leaf when it copies the hub.
        let victim = match from.leaf {
            Some(l) => lab.leaf_hub(&l.name).await.ok_or_else(|| Outcome::Violated(format!("{} is attached to no hub", l.name)))?,
            None => into.node().to_string(),
        };
        drop(copy);
        lab.apply(&Fault::Kill { node: victim.clone() }).await?;
        let outage = Instant::now();
        // The source keeps taking writes meanwhile (a hub stream through another hub).
        let source = if from.leaf.is_some() { source } else { client_for_avoiding(lab, from, &victim).await? };
        let mut during = Ok(());
        for (subj, _, payload) in &self.plan[BEFORE..] {
            match publish_stored(&source, subj, payload).await {
                Ok(seq) => seqs.push(seq),
                Err(e) => {
                    during = Err(e);
                    break;
                }
            }
        }
        lab.apply(&Fault::Start { node: victim.clone() }).await?;
        let restarted = Instant::now();
        pending.metric_duration("outage_ms", outage.elapsed());
        let caught_up = async {
            during?;
            // A restarted server listens for clients only once its monitoring says it is healthy.
            lab.wait_healthy(&victim, RESTART).await.map_err(|e| e.to_string())?;
            let copy = client_for_avoiding(lab, into, &victim).await.map_err(|o| o.text().to_string())?;
            Ok::<_, String>(reader.until(&copy, self.tok, BEFORE + DURING, restarted + RESUME).await)
        }
        .await;
        let took = restarted.elapsed();
        if caught_up.as_ref().is_ok_and(|all| all.len() >= BEFORE + DURING) {
            pending.metric_duration("catchup_ms", took);
        }
        // Whatever happened, the lab is whole again before the next check.
        let healing = Instant::now();
        wait_ready_all(lab).await?;
        pending.metric_duration("ready_again_ms", healing.elapsed());
        let all = caught_up?;
        let want: Vec<(String, String)> = self.plan.iter().map(|(_, s, p)| (s.clone(), p.clone())).collect();
        let got: Vec<(String, String)> = all.iter().map(|m| (m.subject.clone(), m.payload.clone())).collect();
        let mut observed = format!("killed {victim}; the copy got {} of {}: {}", got.len(), want.len(), summary(&got, &want));
        let mut ok = got == want;
        if self.copy.mirror {
            let copied: Vec<u64> = all.iter().map(|m| m.seq).collect();
            if copied != seqs {
                ok = false;
                observed.push_str(&format!("; a mirror keeps sequences: source {seqs:?}, mirror {copied:?}"));
            }
        }
        if let (true, Some(bound)) = (ok, self.within) {
            if took > bound {
                return Ok(Outcome::Violated(format!("{observed}; caught up {} ms after the restart, beyond expect.catchup_within {} ms", took.as_millis(), bound.as_millis())));
            }
        }
        Ok(Outcome::expect(ok, observed))
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
    got: Vec<js::Stored>,
}

impl Reader {
    fn new(stream: &str, from: u64) -> Reader {
        Reader { stream: stream.to_string(), next: from, got: Vec::new() }
    }

    /// Polls until `n` probe messages have been read or the deadline passes; errors count as "not yet"
    /// (a hub may be electing a stream leader).
    async fn until(&mut self, c: &Client, tok: &str, n: usize, deadline: Instant) -> Vec<js::Stored> {
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
                self.got.push(m);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_count_leader_and_replicas() {
        assert_eq!(peers(&json!({ "cluster": { "leader": "hub-1", "replicas": [{ "name": "hub-2" }, { "name": "hub-3" }] } })), Some(3));
        assert_eq!(peers(&json!({ "cluster": { "leader": "store-1" } })), Some(1));
        assert_eq!(peers(&json!({ "cluster": { "name": "c" } })), None);
    }
}
