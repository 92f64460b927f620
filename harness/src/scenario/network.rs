//! Network faults, derived from the topology: a leaf cut from every hub keeps serving locally and its hub
//! streams catch up after heal; a minority hub partitioned away leaves the R3 stream available on the
//! majority with no acknowledged message lost; a half-open (blackholed) leaf link is noticed by pings and the
//! leaf moves; a leaf link with WAN latency stays up and carries traffic no sooner than the latency allows.
//! Every fault is healed, and the lab is ready again, before the next check.

use std::time::{Duration, Instant};


use super::acked_writes::{record_counts, Workload};
use super::check::{Concluded, Pending, Spec};
use super::streams::{copies, hub_client, placed, sample, Copy, Placed};
use super::{probes, Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::nemesis::{self, Capability, Fault};
use crate::probe::js;
use crate::topology::{subject, Leaf, Topology};

const READY: Duration = Duration::from_secs(30);
/// How long a hub stream may take to copy what a cut leaf stored (stall detection, then backoff).
const CATCHUP: Duration = Duration::from_secs(60);
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

async fn cut_leaf(ctx: &mut Ctx<'_, '_>, t: &Topology, leaf: &Leaf) {
    let name = format!("{}: cut from every hub keeps serving locally", leaf.name);
    let streams = placed(t);
    let copies: Vec<Copy<'_>> = copies(t, &streams).into_iter().filter_map(Result::ok).filter(|c| c.from.leaf.is_some_and(|l| l.name == leaf.name)).collect();
    let plan = match local_plan(leaf, &streams, &copies) {
        Ok(p) => p,
        Err(why) => {
            ctx.skip(spec("cut-leaf", &[&leaf.name], name, "its hubs lose it; local clients and JetStream keep working"), why);
            return;
        }
    };
    let within = t.expect_for(Some(leaf)).reattach_within.as_ref().map(|d| d.get());
    let mut expected = "its hubs lose it; local clients still publish and subscribe".to_string();
    if let Some(p) = &plan {
        expected.push_str(&format!("; local stream {} still acknowledges writes", p.stream.label()));
        for c in &p.copies {
            expected.push_str(&format!("; after heal hub stream {} holds each of them exactly once", c.into.label()));
        }
    }
    expected.push_str(&match within {
        Some(d) => format!("; it is attached again within {} ms of the heal (expect.reattach_within)", d.as_millis()),
        None => "; it is attached again after the heal (metric reattach_ms)".into(),
    });
    let spec = spec("cut-leaf", &[&leaf.name], name, expected).needs(Capability::Partition);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| cut_leaf_body(lab, t, leaf, plan.as_ref(), within, p).await).await;
}

/// What a cut leaf writes locally: into a stream the hub copies when there is one (so the catch-up is
/// checked), else into its first stream with subjects. `None`: the leaf stores nothing.
struct LocalWrites<'a, 't> {
    stream: &'a Placed<'t>,
    subjects: Vec<String>,
    /// The hub streams copying `stream` whose filters take every one of `subjects`.
    copies: Vec<&'a Copy<'t>>,
}

const CUT_WRITES: usize = 5;

fn local_plan<'a, 't>(leaf: &Leaf, streams: &'a [Placed<'t>], copies: &'a [Copy<'t>]) -> Result<Option<LocalWrites<'a, 't>>, String> {
    if leaf.jetstream.is_none() {
        return Ok(None);
    }
    let tok = probes::token();
    let first = copies.first();
    let stream = match first {
        Some(c) => &c.from,
        None => match streams.iter().find(|p| p.leaf.is_some_and(|l| l.name == leaf.name) && !p.stream.subjects.is_empty()) {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    // The plan refers into `streams` or `copies`; both outlive it.
    let filters: Vec<&str> = first.map(|c| c.via.filter_subject.iter().chain(c.via.subject_transform.iter().map(|x| &x.src)).map(String::as_str).collect()).unwrap_or_default();
    let subjects: Option<Vec<String>> = (0..CUT_WRITES).map(|i| sample(&stream.stream.subjects, &filters, &tok, i)).collect();
    let subjects = subjects.ok_or_else(|| format!("no subject of {} passes the filter of the hub's copy", stream.label()))?;
    let takes = |c: &Copy<'_>| {
        c.from.stream.name == stream.stream.name
            && c.from.account == stream.account
            && subjects.iter().all(|s| c.via.filter_subject.iter().chain(c.via.subject_transform.iter().map(|x| &x.src)).all(|f| subject::matches(f, s)))
    };
    let copies = copies.iter().filter(|c| takes(c)).collect();
    Ok(Some(LocalWrites { stream, subjects, copies }))
}

async fn cut_leaf_body(lab: &mut Lab, t: &Topology, leaf: &Leaf, plan: Option<&LocalWrites<'_, '_>>, within: Option<Duration>, p: &mut Pending) -> Concluded {
    let hubs: Vec<&str> = t.hub_names().collect();
    let account = plan.map_or_else(|| leaf.accounts[0].name.clone(), |w| w.stream.account.clone());
    let local = probes::connect(lab, &leaf.name, &account).await?;
    lab.apply(&Fault::Partition { grudge: nemesis::cut_leaf(&leaf.name, &hubs) }).await?;
    let at = Instant::now();
    if !wait_for(READY, || async { uplinks(lab, &leaf.name).await == 0 }).await {
        return Err(Outcome::Error(format!("{} still shows a hub link {} s after the cut: the partition did not take", leaf.name, READY.as_secs())));
    }
    p.metric_duration("detach_ms", at.elapsed());

    // Local core NATS still works.
    let tok = probes::token();
    let subj = format!("natslab.local.{tok}");
    let mut sub = local.subscribe(subj.clone()).await.map_err(|e| e.to_string())?;
    if probes::publish_until_received(&local, &subj, &tok, &mut sub, probes::DELIVERY).await.is_none() {
        return Ok(Outcome::Violated(format!("a local subscriber on {} got nothing while the leaf was cut off", leaf.name)));
    }
    let mut seen = vec![format!("{} detached in {} ms; local pub/sub works", leaf.name, at.elapsed().as_millis())];

    // Local JetStream still stores.
    let mut published = Vec::new();
    if let Some(w) = plan {
        for (i, subj) in w.subjects.iter().enumerate() {
            let payload = format!("cut {tok} {i}");
            match js::publish(&local, subj, None, payload.clone().into_bytes()).await {
                Ok(ack) if js::ack_seq(&ack).is_some() => published.push(payload),
                Ok(ack) => return Ok(Outcome::Violated(format!("local stream {} refused {subj} while cut off: {ack}", w.stream.label()))),
                Err(e) => return Ok(Outcome::Violated(format!("local stream {} did not acknowledge {subj} while cut off: {e}", w.stream.label()))),
            }
        }
        seen.push(format!("{} acknowledged {} publishes locally", w.stream.label(), published.len()));
    }

    lab.apply(&Fault::Heal).await?;
    let healed_at = Instant::now();
    if !wait_for(READY, || async { uplinks(lab, &leaf.name).await > 0 }).await {
        return Ok(Outcome::Violated(format!("{} did not reattach within {} s of the heal", leaf.name, READY.as_secs())));
    }
    let reattach = healed_at.elapsed();
    p.metric_duration("reattach_ms", reattach);
    seen.push(format!("attached again {} ms after the heal", reattach.as_millis()));

    for c in plan.map(|w| w.copies.as_slice()).unwrap_or_default() {
        let hub = hub_client(lab, &c.into.account, None).await?;
        let deadline = Instant::now() + CATCHUP;
        let mut counts = Vec::new();
        while Instant::now() < deadline {
            let msgs = js::all_msgs(&hub, js::API, &c.into.stream.name, 10_000).await.unwrap_or_default();
            counts = published.iter().map(|x| msgs.iter().filter(|m| &m.payload == x).count()).collect();
            if counts.iter().all(|n| *n >= 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wrong: Vec<String> = published.iter().zip(&counts).filter(|(_, n)| **n != 1).map(|(x, n)| format!("{x:?} ×{n}")).collect();
        if counts.len() != published.len() || !wrong.is_empty() {
            return Ok(Outcome::Violated(format!("{}; hub stream {} after the heal: {}", seen.join("; "), c.into.label(), if wrong.is_empty() { "nothing read".into() } else { wrong.join(", ") })));
        }
        p.metric_duration("catchup_ms", healed_at.elapsed());
        seen.push(format!("{} caught up in {} ms", c.into.label(), healed_at.elapsed().as_millis()));
    }
    if let Some(bound) = within.filter(|b| reattach > *b) {
        return Ok(Outcome::Violated(format!("{}; beyond expect.reattach_within {} ms", seen.join("; "), bound.as_millis())));
    }
    Ok(Outcome::Pass(seen.join("; ")))
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
    // Where the backend isolates whole machines (a VM's cable unplugged), the harness is cut off from it
    // too: its monitoring not answering is the partition taking.
    let whole_machine = !lab.can(Capability::Partition);
    let cut = wait_for(READY, || async {
        let Ok(url) = lab.monitor_url(&isolated) else { return false };
        lab.monitor.route_peers(url).await.map_or(whole_machine, |peers| peers.is_empty())
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
