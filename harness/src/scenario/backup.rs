//! Backup: the guide's disaster-recovery plan, drilled on every declared file stream (a leaf's, and the
//! hub's replicated ones). The stream is filled with a known workload (subjects its consumers take,
//! headers and payloads that name each message), each declared consumer takes and acknowledges a few,
//! everything is recorded (every message by sequence; every consumer's ack floor, pending and delivered
//! counts), and a snapshot is taken through the JetStream API as `nats stream backup` takes one. Then the
//! disaster: the node holding it — for a hub stream every hub, so no replica survives — is killed, its
//! JetStream store deleted, and started again empty. The snapshot is restored through the API, a
//! replicated stream must converge (every replica current), and the stream must hold exactly what was
//! recorded, message by message (sequence, subject, headers, payload) and consumer by consumer. The other
//! declared streams the wipe took are provisioned again afterwards. Restore time per MB is a metric.
//!
//! Runs only when named (`--scenario backup`), on backends that can destroy a node's store.

use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use futures::StreamExt;
use serde_json::{json, Value};

use super::check::{Concluded, Pending, Spec};
use super::probes::token;
use super::streams::{client_for, placed, Placed};
use super::{Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::nemesis::Capability;
use crate::probe::js::{self, all_msgs, api, Stored, API};
use crate::probe::snapshot::{self, Snapshot};
use crate::topology::{subject, Consumer, Storage, Topology};

const FAMILY: Family = Family::Backup;
/// Messages of the known workload per stream, and the padding that makes it about a megabyte (so restore
/// time per MB is a figure, not noise).
const WORKLOAD: usize = 200;
const PADDING: usize = 5 * 1024;
/// At most this many messages a consumer takes and acknowledges before the snapshot.
const TAKEN: usize = 5;
const READY: Duration = Duration::from_secs(60);

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let t: &Topology = ctx.declared;
    let streams = placed(t);
    if streams.is_empty() {
        ctx.skip(Spec::new(FAMILY, "restore", &[], "backup and restore", "each declared file stream backed up, destroyed, restored"), "the topology declares no streams");
    }
    for p in &streams {
        let spec = Spec::new(
            FAMILY,
            "restore",
            &[p.node(), &p.stream.name],
            format!("backup and restore {}", p.label()),
            expected(t, p),
        )
        .needs(Capability::Wipe);
        if p.stream.storage != Storage::File {
            ctx.skip(spec, "memory storage: nothing on disk to destroy; a restart loses it by design");
            continue;
        }
        ctx.check(spec, async |lab: &mut Lab, pending: &mut Pending| drill(lab, t, p, pending).await).await;
    }
}

fn expected(t: &Topology, p: &Placed<'_>) -> String {
    let wiped = match p.leaf {
        Some(l) => l.name.clone(),
        None => format!("every hub ({})", t.hub_names().collect::<Vec<_>>().join(", ")),
    };
    format!(
        "{WORKLOAD} messages of about 5 KiB written to {} and its consumers advanced, then a snapshot through $JS.API.STREAM.SNAPSHOT; {wiped} \
         killed, JetStream store deleted, started empty; the snapshot restored through $JS.API.STREAM.RESTORE{}; every \
         message back at its sequence with its subject, headers and payload, every consumer at its ack floor with its \
         pending and delivered counts",
        p.stream.name,
        if p.stream.replicas > 1 { format!(" and all {} replicas current", p.stream.replicas) } else { String::new() }
    )
}

/// What a stream held, for comparing after the restore.
#[derive(Debug, PartialEq)]
struct Record {
    messages: Vec<Stored>,
    consumers: Vec<(String, Value)>,
}

async fn drill(lab: &mut Lab, t: &Topology, p: &Placed<'_>, pending: &mut Pending) -> Concluded {
    let c = client_for(lab, p).await?;
    let tok = token();
    fill(&c, p, &tok).await?;
    for consumer in &p.stream.consumers {
        advance(&c, p, consumer).await?;
    }
    let before = record(&c, p).await?;
    let t0 = Instant::now();
    let mut snap = snapshot::take(&c, API, &p.stream.name).await.map_err(Outcome::Error)?;
    pending.metric_duration("snapshot_ms", t0.elapsed());
    pending.metric("snapshot_bytes", snap.data.len() as f64);
    if lab.sabotage.drop_one_from_backups {
        snap = without_one(&c, p, &before).await?;
    }
    drop(c);

    // The disaster.
    let nodes: Vec<String> = match p.leaf {
        Some(l) => vec![l.name.clone()],
        None => t.hub_names().map(String::from).collect(),
    };
    lab.wipe_stores(&nodes).await.map_err(|e| Outcome::Error(format!("destroy the store of {}: {e}", nodes.join(", "))))?;
    lab.wait_ready_all(READY).await.map_err(|e| Outcome::Violated(format!("the lab was not ready again after the stores were destroyed: {e}")))?;
    let c = client_for(lab, p).await?;
    account_js_ready(&c).await?;
    match js::stream_info(&c, API, &p.stream.name).await {
        Err(e) if js::not_found(&e) => {}
        Ok(_) => return Ok(Outcome::Violated(format!("{} survived the destruction of its store: the drill proves nothing", p.stream.name))),
        Err(e) => return Err(Outcome::Error(e)),
    }

    let t1 = Instant::now();
    let restored = restore_patiently(&c, &snap).await;
    let took = t1.elapsed();
    if let Err(e) = restored {
        return Ok(Outcome::Violated(format!("the restore failed: {e}")));
    }
    pending.metric_duration("restore_ms", took);
    let mb = snap.data.len() as f64 / (1024.0 * 1024.0);
    if mb > 0.0 {
        pending.metric("restore_ms_per_mb", took.as_secs_f64() * 1000.0 / mb);
    }
    let mut bad = Vec::new();
    if p.stream.replicas > 1 {
        match converged(&c, &p.stream.name, p.stream.replicas).await {
            Ok(ms) => pending.metric("converged_ms", ms as f64),
            Err(e) => bad.push(e),
        }
    }
    let after = record(&c, p).await?;
    bad.extend(differences(&before, &after));
    // What the wipe took besides: the other declared streams of the node, provisioned again.
    let again = p.leaf.map_or_else(|| t.hub_names().next().unwrap_or_default().to_string(), |l| l.name.clone());
    if let Err(e) = lab.provision_node(&again, Instant::now() + READY).await {
        bad.push(format!("the other declared streams of {again} could not be provisioned again: {e}"));
    }
    let consumers: Vec<String> = before.consumers.iter().map(|(n, s)| format!("{n} at ack floor {}, {} pending", s["ack_floor"], s["num_pending"])).collect();
    let seen = format!(
        "{} messages and {} consumer(s) recorded ({}); snapshot {} bytes; store destroyed on {}; restored in {} ms; everything back as recorded",
        before.messages.len(),
        before.consumers.len(),
        consumers.join(", "),
        snap.data.len(),
        nodes.join(", "),
        took.as_millis()
    );
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(format!("{}; {seen}", bad.join("; "))) })
}

/// Until the account's JetStream answers again: servers started on an empty store (operator mode: once
/// the account's JWT is back from the resolver) say "JetStream not enabled for account" for a moment.
async fn account_js_ready(c: &Client) -> Result<(), Outcome> {
    let deadline = Instant::now() + READY;
    loop {
        match api(c, API, "INFO", &json!({})).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline && (e.contains("10039") || e.contains("10008") || e.contains("timed out") || js::no_responders(&e)) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(Outcome::Violated(format!("the account's JetStream did not come back after the stores were destroyed: {e}"))),
        }
    }
}

/// A restore right after a cluster came back may meet a meta layer still settling: asked again then.
async fn restore_patiently(c: &Client, snap: &Snapshot) -> Result<Value, String> {
    let deadline = Instant::now() + READY;
    loop {
        match snapshot::restore(c, API, snap).await {
            Err(e) if Instant::now() < deadline && ["insufficient resources", "timed out", "no suitable peers", "10008", "10039"].iter().any(|k| e.contains(k)) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => return other,
        }
    }
}

/// The known workload: messages on the stream's subjects and on every consumer's filter within them, each
/// with a header and payload naming it.
async fn fill(c: &Client, p: &Placed<'_>, tok: &str) -> Result<(), Outcome> {
    let mut subjects: Vec<String> = p.stream.subjects.iter().map(|s| subject::example(s, tok)).collect();
    for f in p.stream.consumers.iter().filter_map(|c| c.filter_subject.as_deref()) {
        subjects.extend(p.stream.subjects.iter().filter_map(|s| subject::meet(s, f)).map(|m| subject::example(&m, tok)));
    }
    if subjects.is_empty() {
        return Err(Outcome::Error(format!("{} declares no subjects to write to", p.stream.name)));
    }
    for i in 0..WORKLOAD {
        let mut h = HeaderMap::new();
        h.insert("Natslab-Backup", format!("{tok}-{i}").as_str());
        let subj = &subjects[i % subjects.len()];
        // Random text: the snapshot is compressed, and a megabyte of one letter would be a few kilobytes.
        let pad: String = std::iter::repeat_with(|| nuid::next().to_string()).take(PADDING / 22).collect();
        let payload = format!("backup {tok} {i} {pad}");
        let ack = js::publish(c, subj, Some(h), payload.into_bytes()).await.map_err(Outcome::Error)?;
        if let Some(e) = js::ack_error(&ack) {
            return Err(Outcome::Error(format!("write {subj} to {}: {e}", p.stream.name)));
        }
    }
    Ok(())
}

/// A consumer takes up to `TAKEN` messages and acknowledges them, so its ack floor is not where it started.
async fn advance(c: &Client, p: &Placed<'_>, consumer: &Consumer) -> Result<(), Outcome> {
    if consumer.ack_policy == crate::topology::AckPolicy::None {
        return Ok(());
    }
    let stream = &p.stream.name;
    let (inbox, pull) = match &consumer.deliver_subject {
        Some(d) => (d.clone(), false),
        None => (c.new_inbox(), true),
    };
    let mut sub = c.subscribe(inbox.clone()).await.map_err(|e| Outcome::Error(e.to_string()))?;
    if pull {
        js::pull(c, API, stream, &consumer.name, &inbox, TAKEN, Duration::from_secs(2)).await.map_err(Outcome::Error)?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for _ in 0..TAKEN {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await else { break };
        if let Some(reply) = m.reply.filter(|r| r.starts_with("$JS.ACK")) {
            c.publish(reply, "".into()).await.map_err(|e| Outcome::Error(e.to_string()))?;
        }
    }
    drop(sub);
    c.flush().await.map_err(|e| Outcome::Error(e.to_string()))
}

/// Every message by sequence, and every declared consumer's state.
async fn record(c: &Client, p: &Placed<'_>) -> Result<Record, Outcome> {
    let state = js::stream_state(c, API, &p.stream.name).await.map_err(Outcome::Error)?;
    let n = js::state_u64(&state, "messages") as usize;
    let messages = all_msgs(c, API, &p.stream.name, n + 1).await.map_err(Outcome::Error)?;
    let mut consumers = Vec::new();
    for consumer in &p.stream.consumers {
        let info = js::consumer_info(c, API, &p.stream.name, &consumer.name).await.map_err(Outcome::Error)?;
        consumers.push((consumer.name.clone(), consumer_state(&info)));
    }
    Ok(Record { messages, consumers })
}

/// What a consumer's state is, for a restore to bring back.
fn consumer_state(info: &Value) -> Value {
    json!({
        "ack_floor": info["ack_floor"]["stream_seq"],
        "ack_floor_consumer": info["ack_floor"]["consumer_seq"],
        "delivered": info["delivered"]["stream_seq"],
        "num_pending": info["num_pending"],
    })
}

fn differences(before: &Record, after: &Record) -> Vec<String> {
    let mut bad = Vec::new();
    if before.messages.len() != after.messages.len() {
        bad.push(format!("{} messages recorded, {} after the restore", before.messages.len(), after.messages.len()));
    }
    let at = |r: &Record, seq: u64| r.messages.iter().find(|m| m.seq == seq).cloned();
    let mut shown = 0;
    for m in &before.messages {
        match at(after, m.seq) {
            Some(a) if &a == m => {}
            got => {
                if shown < 5 {
                    bad.push(format!("seq {}: recorded {} {:?}, restored {}", m.seq, m.subject, m.payload, got.map_or("nothing".into(), |g| format!("{} {:?}", g.subject, g.payload))));
                }
                shown += 1;
            }
        }
    }
    if shown > 5 {
        bad.push(format!("… {shown} messages in all differ"));
    }
    for (name, state) in &before.consumers {
        match after.consumers.iter().find(|(n, _)| n == name) {
            Some((_, s)) if s == state => {}
            Some((_, s)) => bad.push(format!("consumer {name}: recorded {state}, restored {s}")),
            None => bad.push(format!("consumer {name} is missing after the restore")),
        }
    }
    bad
}

/// Until every replica of the restored stream is current: how long it took.
async fn converged(c: &Client, stream: &str, replicas: u32) -> Result<u128, String> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < READY {
        if let Ok(info) = js::stream_info(c, API, stream).await {
            let cluster = &info["cluster"];
            let peers = cluster["replicas"].as_array().cloned().unwrap_or_default();
            let current = peers.iter().filter(|r| r["current"] == true).count();
            if cluster["leader"].is_string() && current + 1 == replicas as usize {
                return Ok(t0.elapsed().as_millis());
            }
            last = format!("leader {}, {current} of {} other replicas current", cluster["leader"], replicas - 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the restored stream did not converge within {} s: {last}", READY.as_secs()))
}

/// Sabotage: a snapshot missing one recorded message (deleted from the stream, then snapshotted again).
async fn without_one(c: &Client, p: &Placed<'_>, before: &Record) -> Result<Snapshot, Outcome> {
    let victim = before.messages.get(before.messages.len() / 2).ok_or_else(|| Outcome::Error("nothing to drop".into()))?;
    api(c, API, &format!("STREAM.MSG.DELETE.{}", p.stream.name), &json!({ "seq": victim.seq, "no_erase": true })).await.map_err(Outcome::Error)?;
    snapshot::take(c, API, &p.stream.name).await.map_err(Outcome::Error)
}
