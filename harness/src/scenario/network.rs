//! Network faults, derived from the topology: a leaf cut from every hub keeps serving locally and its hub
//! streams catch up after heal; a minority hub partitioned away leaves the R3 stream available on the
//! majority with no acknowledged message lost; a half-open (blackholed) leaf link is noticed by pings and the
//! leaf moves; a leaf link with WAN latency stays up and carries traffic no sooner than the latency allows.
//! Every fault is healed, and the lab is ready again, before the next check.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::acked_writes::{record_counts, Workload};
use super::check::{Pending, Spec};
use super::{probes, Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::nemesis::{self, Capability, Fault};
use crate::probe::js::api;
use crate::topology::{subject, Leaf, Topology};

const READY: Duration = Duration::from_secs(30);
const FAMILY: Family = Family::Network;

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let declared: &Topology = ctx.declared;
    for leaf in &declared.leaves {
        cut_leaf(ctx, declared, leaf).await;
    }
    minority(ctx, declared).await;
    for leaf in &declared.leaves {
        half_open(ctx, leaf).await;
    }
    for leaf in &declared.leaves {
        slow_link(ctx, leaf).await;
    }
}

/// A check of this family.
fn spec(kind: &str, parts: &[&str], name: impl Into<String>, expected: impl Into<String>) -> Spec {
    Spec::new(FAMILY, kind, parts, name, expected)
}

async fn wait_for<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn uplinks(lab: &Lab, leaf: &str) -> usize {
    let Ok(url) = lab.monitor_url(leaf) else { return 0 };
    lab.monitor.uplinks(url).await.map(|l| l.len()).unwrap_or(0)
}

/// Hub streams that copy this leaf's streams through its JetStream domain: (hub stream, its account).
fn sourcing_streams<'a>(t: &'a Topology, leaf: &Leaf) -> Vec<(&'a str, String)> {
    let Some(domain) = leaf.jetstream.as_ref().and_then(|j| j.domain.as_deref()) else { return vec![] };
    t.hub
        .streams
        .iter()
        .filter(|s| s.sources.iter().any(|src| src.domain.as_deref() == Some(domain)))
        .map(|s| (s.name.as_str(), s.account.clone().unwrap_or_else(|| t.hub.accounts[0].name.clone())))
        .collect()
}

async fn cut_leaf(ctx: &mut Ctx<'_, '_>, t: &Topology, leaf: &Leaf) {
    let name = format!("{}: cut from every hub keeps serving locally", leaf.name);
    let sourced = sourcing_streams(t, leaf);
    let mut expected = "its hubs lose it; local clients still publish and subscribe; local JetStream still stores".to_string();
    if !sourced.is_empty() {
        expected.push_str("; after heal the hub streams sourcing it catch up with no loss");
    }
    let spec = spec("cut-leaf", &[&leaf.name], name, expected).needs(Capability::Partition);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| Ok(cut_leaf_body(lab, t, leaf, &sourced, p).await)).await;
}

async fn cut_leaf_body(lab: &mut Lab, t: &Topology, leaf: &Leaf, sourced: &[(&str, String)], p: &mut Pending) -> Outcome {
    let hubs: Vec<&str> = t.hub_names().collect();
    let account = leaf.accounts[0].name.clone();
    let local = match lab.probe(&leaf.name, &account).await {
        Ok(c) => c,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    // What the hub streams hold before: the catch-up is measured against it.
    let mut before = Vec::new();
    for (stream, acc) in sourced {
        match hub_messages(lab, t, stream, acc).await {
            Ok(m) => before.push(m),
            Err(e) => return Outcome::Error(e),
        }
    }
    if let Err(e) = lab.apply(&Fault::Partition { grudge: nemesis::cut_leaf(&leaf.name, &hubs) }).await {
        return Outcome::Error(format!("partition: {e}"));
    }
    let at = Instant::now();
    if !wait_for(READY, || async { uplinks(lab, &leaf.name).await == 0 }).await {
        return Outcome::Error(format!("{} still shows a hub link {} s after the cut: the partition did not take", leaf.name, READY.as_secs()));
    }
    p.metric_duration("detach_ms", at.elapsed());

    // Local core NATS still works.
    let tok = probes::token();
    let subj = format!("natslab.local.{tok}");
    let mut sub = match local.subscribe(subj.clone()).await {
        Ok(s) => s,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    if probes::publish_until_received(&local, &subj, &tok, &mut sub, probes::DELIVERY).await.is_none() {
        return Outcome::Violated(format!("a local subscriber on {} got nothing while the leaf was cut off", leaf.name));
    }
    let mut seen = vec![format!("{} detached in {} ms; local pub/sub works", leaf.name, at.elapsed().as_millis())];

    // Local JetStream still stores, into the leaf's first stream.
    let mut published = Vec::new();
    if let (Some(_), Some(stream)) = (&leaf.jetstream, leaf.streams.iter().find(|s| !s.subjects.is_empty())) {
        let base = subject::example(&stream.subjects[0], "natslab");
        for i in 0..5 {
            let payload = format!("{tok}-{i}");
            let subj = format!("{base}.{tok}");
            match local.request(subj.clone(), payload.clone().into()).await {
                Ok(m) if serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v.get("seq").is_some()) => published.push(payload),
                Ok(m) => return Outcome::Violated(format!("local stream {} refused a publish while cut off: {}", stream.name, String::from_utf8_lossy(&m.payload))),
                Err(e) => return Outcome::Violated(format!("local stream {} did not acknowledge a publish while cut off: {e}", stream.name)),
            }
        }
        seen.push(format!("{} acknowledged {} publishes locally", stream.name, published.len()));
    }

    if let Err(e) = lab.apply(&Fault::Heal).await {
        return Outcome::Error(format!("heal: {e}"));
    }
    let healed_at = Instant::now();
    if !wait_for(READY, || async { uplinks(lab, &leaf.name).await > 0 }).await {
        return Outcome::Violated(format!("{} did not reattach within {} s of the heal", leaf.name, READY.as_secs()));
    }
    p.metric_duration("reattach_ms", healed_at.elapsed());

    for ((stream, acc), before) in sourced.iter().zip(before) {
        let want = before + published.len() as u64;
        let caught_up = wait_for(Duration::from_secs(60), || async { hub_messages(lab, t, stream, acc).await.is_ok_and(|m| m >= want) }).await;
        if !caught_up {
            let got = hub_messages(lab, t, stream, acc).await.unwrap_or(0);
            return Outcome::Violated(format!("hub stream {stream} holds {got} messages, wanted at least {want} after the heal"));
        }
        p.metric_duration("catchup_ms", healed_at.elapsed());
        match hub_payloads(lab, t, stream, acc).await {
            Ok(payloads) => {
                let missing: Vec<&String> = published.iter().filter(|x| payloads.iter().filter(|y| y == x).count() != 1).collect();
                if !missing.is_empty() {
                    return Outcome::Violated(format!("hub stream {stream}: payloads missing or duplicated after catch-up: {missing:?}"));
                }
            }
            Err(e) => return Outcome::Error(e),
        }
        seen.push(format!("{stream} caught up in {} ms", healed_at.elapsed().as_millis()));
    }
    Outcome::Pass(seen.join("; "))
}

async fn hub_client(lab: &Lab, t: &Topology, account: &str) -> Result<async_nats::Client, String> {
    let hub = t.hub.nodes.first().map(|h| h.name.clone()).ok_or("no hub")?;
    lab.probe(&hub, account).await.map_err(|e| e.to_string())
}

async fn hub_messages(lab: &Lab, t: &Topology, stream: &str, account: &str) -> Result<u64, String> {
    let c = hub_client(lab, t, account).await?;
    let info = api(&c, "$JS.API", &format!("STREAM.INFO.{stream}"), &json!({})).await?;
    Ok(info.pointer("/state/messages").and_then(Value::as_u64).unwrap_or(0))
}

/// Every payload in a (small) hub stream, by sequence.
async fn hub_payloads(lab: &Lab, t: &Topology, stream: &str, account: &str) -> Result<Vec<String>, String> {
    use base64::Engine;
    let c = hub_client(lab, t, account).await?;
    let info = api(&c, "$JS.API", &format!("STREAM.INFO.{stream}"), &json!({})).await?;
    let first = info.pointer("/state/first_seq").and_then(Value::as_u64).unwrap_or(1);
    let last = info.pointer("/state/last_seq").and_then(Value::as_u64).unwrap_or(0);
    let mut out = Vec::new();
    for seq in first..=last.min(first + 5000) {
        let Ok(m) = api(&c, "$JS.API", &format!("STREAM.MSG.GET.{stream}"), &json!({ "seq": seq })).await else { continue };
        let data = m.pointer("/message/data").and_then(Value::as_str).unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
        out.push(String::from_utf8_lossy(&bytes).to_string());
    }
    Ok(out)
}

async fn minority(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let name = "hub JetStream: a minority hub partitioned away";
    let expected = "the R3 stream keeps taking writes on the majority; no acknowledged message lost, duplicated or unexpected; the minority rejoins after heal";
    let spec = spec("minority", &[], name, expected).needs(Capability::Isolate);
    if t.hub.jetstream.is_none() || t.hub.nodes.len() < 3 {
        ctx.skip(spec, "needs JetStream on a hub of 3 or more nodes");
        return;
    }
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| Ok(minority_body(lab, t, p).await)).await;
}

async fn minority_body(lab: &mut Lab, t: &Topology, p: &mut Pending) -> Outcome {
    let hubs: Vec<String> = t.hub_names().map(String::from).collect();
    let account = t.hub.accounts[0].name.clone();
    let refs: Vec<&str> = hubs.iter().map(String::as_str).collect();
    let (minority, _) = nemesis::minority(&refs);
    let isolated = minority[0].clone();
    // Publish through the majority only: the question is whether *it* stays available (a client of the
    // isolated hub keeps a healthy connection to a server that can no longer reach quorum).
    let majority: Vec<String> = hubs.iter().filter(|h| **h != isolated).cloned().collect();
    let workload = match Workload::start(lab, &hubs, &majority, &account).await {
        Ok(w) => w,
        Err(e) => return Outcome::Error(e),
    };
    let started = Instant::now();
    if workload.recovered_after(started, READY).await.is_none() {
        return finish(workload, p, Outcome::Violated("the R3 stream took no write before any fault".into())).await;
    }
    let led = workload.stream_leader().await.is_ok_and(|l| l == isolated);
    let at = Instant::now();
    if let Err(e) = lab.apply(&Fault::Isolate { node: isolated.clone() }).await {
        return finish(workload, p, Outcome::Error(format!("partition: {e}"))).await;
    }
    let cut = wait_for(READY, || async {
        let Ok(url) = lab.monitor_url(&isolated) else { return false };
        lab.monitor.route_peers(url).await.is_ok_and(|peers| peers.is_empty())
    })
    .await;
    if !cut {
        return finish(workload, p, Outcome::Error(format!("{isolated} kept its routes: the partition did not take"))).await;
    }
    let Some(gap) = workload.recovered_after(at, READY).await else {
        return finish(workload, p, Outcome::Violated(format!("no write was acknowledged on the majority within {} s of isolating {isolated}", READY.as_secs()))).await;
    };
    p.metric_duration("partition_unavailable_ms", gap);
    if let Err(e) = lab.apply(&Fault::Rejoin { node: isolated.clone() }).await {
        return finish(workload, p, Outcome::Error(format!("rejoin: {e}"))).await;
    }
    let healed_at = Instant::now();
    if let Err(e) = lab.wait_ready(&refs, READY).await {
        return finish(workload, p, Outcome::Violated(format!("{isolated} did not rejoin the mesh after heal: {e}"))).await;
    }
    p.metric_duration("minority_rejoin_ms", healed_at.elapsed());
    let role = if led { "the stream leader" } else { "a stream follower" };
    let seen = format!("isolated {isolated} ({role}); the majority acknowledged again after {} ms; rejoined in {} ms", gap.as_millis(), healed_at.elapsed().as_millis());
    finish(workload, p, Outcome::Pass(seen)).await
}

async fn finish(workload: Workload, p: &mut Pending, outcome: Outcome) -> Outcome {
    match workload.finish().await {
        Ok(c) => {
            record_counts(p, &c);
            let counts = format!("{} published, {} acked, {} lost, {} duplicated, {} unexpected", c.published, c.acked, c.lost, c.duplicated, c.unexpected);
            match outcome {
                Outcome::Pass(s) if c.ok() => Outcome::Pass(format!("{s}; {counts}")),
                Outcome::Pass(s) => Outcome::Violated(format!("{s}; {counts}")),
                Outcome::Violated(s) => Outcome::Violated(format!("{s}; {counts}")),
                other => other,
            }
        }
        Err(e) => match outcome {
            Outcome::Pass(_) => Outcome::Error(e),
            other => other,
        },
    }
}

async fn half_open(ctx: &mut Ctx<'_, '_>, leaf: &Leaf) {
    let hubs: usize = leaf.remotes.iter().map(|r| r.hubs.len()).max().unwrap_or(0);
    let name = format!("{}: half-open link to its hub", leaf.name);
    let Some(ping) = leaf.ping_interval.as_ref().map(|d| d.get()) else {
        let expected = "the leaf notices by pings and moves to another hub";
        ctx.skip(spec("half-open", &[&leaf.name], name, expected), "the leaf declares no ping_interval: with the default (2m) a half-open link goes unnoticed for minutes");
        return;
    };
    let max = leaf.ping_max.unwrap_or(2);
    let expected = format!("the leaf notices within about ping_interval × ping_max ({} ms × {max}) and attaches to another hub", ping.as_millis());
    let spec = spec("half-open", &[&leaf.name], name, expected).needs(Capability::Blackhole);
    if hubs < 2 {
        ctx.skip(spec, "moving needs two or more hubs declared");
        return;
    }
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| Ok(half_open_body(lab, leaf, ping * (max + 1) + Duration::from_secs(20), p).await)).await;
}

async fn half_open_body(lab: &mut Lab, leaf: &Leaf, bound: Duration, p: &mut Pending) -> Outcome {
    let Some(hub) = lab.leaf_hub(&leaf.name).await else {
        return Outcome::Error(format!("{} is attached to no hub before the fault", leaf.name));
    };
    if let Err(e) = lab.apply(&Fault::Blackhole { a: leaf.name.clone(), b: hub.clone() }).await {
        return Outcome::Error(format!("blackhole: {e}"));
    }
    let at = Instant::now();
    let moved = wait_for(bound, || async { lab.leaf_hub(&leaf.name).await.is_some_and(|h| h != hub) }).await;
    let took = at.elapsed();
    let restore = lab.apply(&Fault::Restore { a: leaf.name.clone(), b: hub.clone() }).await;
    if !moved {
        return Outcome::Violated(format!("{} stayed on (or off) {hub} for {} ms of a half-open link", leaf.name, took.as_millis()));
    }
    if let Err(e) = restore {
        return Outcome::Error(format!("restore: {e}"));
    }
    p.metric_duration("blackhole_failover_ms", took);
    let now = lab.leaf_hub(&leaf.name).await.unwrap_or_default();
    Outcome::Pass(format!("left the half-open link to {hub} after {} ms, now on {now}", took.as_millis()))
}

/// Latency added each way on a leaf's link by the WAN check: well above loopback delivery times, well below
/// any ping interval a topology would declare.
const WAN_LATENCY: Duration = Duration::from_millis(150);
const WAN_SAMPLES: usize = 5;

async fn slow_link(ctx: &mut Ctx<'_, '_>, leaf: &Leaf) {
    let name = format!("{}: WAN latency on its hub link", leaf.name);
    let expected = format!(
        "with {} ms added each way, the link stays up and every message crosses it, none sooner than {} ms",
        WAN_LATENCY.as_millis(),
        WAN_LATENCY.as_millis()
    );
    let spec = spec("wan-latency", &[&leaf.name], name, expected).needs(Capability::Latency);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| Ok(slow_link_body(lab, leaf, p).await)).await;
}

/// Leaf → hub one-way delivery times of `WAN_SAMPLES` messages (interest already in place), or the first
/// that did not arrive.
async fn one_way(leaf: &async_nats::Client, subject: &str, sub: &mut async_nats::Subscriber) -> Result<Vec<Duration>, String> {
    let mut times = Vec::new();
    for i in 0..WAN_SAMPLES {
        let payload = format!("{}-{i}", probes::token());
        let sent = Instant::now();
        leaf.publish(subject.to_string(), payload.clone().into()).await.map_err(|e| format!("publish: {e}"))?;
        if probes::wait_for_payload(sub, &payload, probes::DELIVERY).await.is_err() {
            return Err(format!("message {i} did not cross in {} s", probes::DELIVERY.as_secs()));
        }
        times.push(sent.elapsed());
    }
    Ok(times)
}

async fn slow_link_body(lab: &mut Lab, leaf: &Leaf, p: &mut Pending) -> Outcome {
    let Some(hub) = lab.leaf_hub(&leaf.name).await else {
        return Outcome::Error(format!("{} is attached to no hub before the fault", leaf.name));
    };
    // The first remote's accounts: the leaf's local one and the hub account the link lands in.
    let remote = &leaf.remotes[0];
    let (local, landing) = (leaf.remote_account(remote).to_string(), leaf.hub_account(0));
    let subject = format!("natslab.wan.{}", probes::token());
    let (client, hub_client) = match (lab.probe(&leaf.name, &local).await, lab.probe(&hub, &landing).await) {
        (Ok(c), Ok(h)) => (c, h),
        (Err(e), _) | (_, Err(e)) => return Outcome::Error(e.to_string()),
    };
    let mut sub = match hub_client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("subscribe on {hub}: {e}")),
    };
    if probes::publish_until_received(&client, &subject, "warm-up", &mut sub, probes::DELIVERY).await.is_none() {
        return Outcome::Violated(format!("{subject} did not cross {} → {hub} before any latency", leaf.name));
    }
    probes::drain(&mut sub).await;
    let direct = match one_way(&client, &subject, &mut sub).await {
        Ok(t) => t,
        Err(e) => return Outcome::Violated(format!("before the latency: {e}")),
    };
    if let Err(e) = lab.apply(&Fault::Slow { a: leaf.name.clone(), b: hub.clone(), latency: WAN_LATENCY, jitter: Duration::ZERO }).await {
        return Outcome::Error(format!("slow: {e}"));
    }
    let slowed = one_way(&client, &subject, &mut sub).await;
    let still_on = lab.leaf_hub(&leaf.name).await;
    let fast = lab.apply(&Fault::Fast { a: leaf.name.clone(), b: hub.clone() }).await;
    let slowed = match slowed {
        Ok(t) => t,
        Err(e) => return Outcome::Violated(format!("with {} ms latency: {e}", WAN_LATENCY.as_millis())),
    };
    if let Err(e) = fast {
        return Outcome::Error(format!("fast: {e}"));
    }
    let ms = |d: &[Duration]| d.iter().map(|t| t.as_millis().to_string()).collect::<Vec<_>>().join(", ");
    if still_on.as_deref() != Some(hub.as_str()) {
        return Outcome::Violated(format!("the link moved or dropped under latency: on {still_on:?}, was on {hub}"));
    }
    // A lower bound, not a threshold: a message cannot cross a delayed link sooner than the delay.
    if let Some(early) = slowed.iter().find(|t| **t < WAN_LATENCY) {
        return Outcome::Violated(format!("a message crossed in {} ms, sooner than the added {} ms: the latency is not on this link", early.as_millis(), WAN_LATENCY.as_millis()));
    }
    let median = |d: &[Duration]| {
        let mut v = d.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    p.metric_duration("wan_one_way_direct_ms", median(&direct));
    p.metric_duration("wan_one_way_slowed_ms", median(&slowed));
    Outcome::Pass(format!("one-way {} → {hub}: direct {} ms; with {} ms added: {} ms", leaf.name, ms(&direct), WAN_LATENCY.as_millis(), ms(&slowed)))
}
