//! The acknowledged-write workload and its checker (Jepsen-style), for the hub's JetStream, used by the
//! failover and network families: a dedicated R3 stream takes a steady flow of publishes,
//! each with a unique id (payload = `Nats-Msg-Id` = id), while the nemesis restarts every hub in turn and
//! kills the stream leader and the meta leader. The history records which ids were acknowledged; at the end
//! the whole stream is read back and compared. An acknowledged id that is missing (lost), an id stored twice
//! (duplicated) or a stored id nobody published (unexpected) means JetStream broke its promise; publishes
//! that failed or timed out are indeterminate and may or may not be stored. How long the stream refused
//! publishes after a leader died is a measurement, never a verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::check::{Pending, Spec};
use super::{Ctx, Family, Outcome};
use crate::lab::{Lab, READY_AGAIN as READY};
use crate::nemesis::{Capability, Fault};
use crate::plan::probe_user;
use crate::probe::js::{api, is_stored};
use crate::topology::Topology;

pub const STREAM: &str = "NATSLAB_JEPSEN";
const SUBJECT: &str = "natslab.jepsen.msg";
use crate::probe::js::API as JS_API;
/// One publish every tick, without waiting for the previous ack: gaps in acks then resolve to ~10 ms.
const TICK: Duration = Duration::from_millis(10);
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const IN_FLIGHT: usize = 256;
/// Hard bounds: the publisher stops by itself whatever the nemesis does.
const MAX_MESSAGES: u64 = 6000;
const MAX_RUN: Duration = Duration::from_secs(150);
/// Publishing goes on this long after the faults are over, and until a fresh publish is acknowledged.
const GRACE: Duration = Duration::from_secs(1);
const LAST_CHANCE: Duration = Duration::from_secs(15);
/// How long the stream may stay unwritable after losing a node before that counts as a violation.
const RECOVERY: Duration = Duration::from_secs(30);

/// What happened to every id: published, acknowledged (with when it was sent and acknowledged), read back.
#[derive(Debug, Default, Clone)]
pub struct History {
    published: Vec<u64>,
    acks: Vec<Ack>,
    read: Vec<u64>,
    /// Stored messages whose payload is not an id at all.
    foreign: usize,
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    id: u64,
    sent: Instant,
    at: Instant,
}

/// The verdict-relevant figures of a history.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub published: usize,
    pub acked: usize,
    /// Acknowledged but not in the stream.
    pub lost: usize,
    /// Extra stored copies of an id (an id stored three times counts two).
    pub duplicated: usize,
    /// Stored but never published.
    pub unexpected: usize,
}

impl Tally {
    /// JetStream kept its promise: nothing acknowledged was lost, nothing stored twice or from nowhere.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0
    }

    /// Several writers' tallies added up, with a line for each writer that broke the promise.
    pub fn sum(tallies: &[(String, Tally)]) -> (Tally, Vec<String>) {
        let mut total = Tally::default();
        let mut broken = Vec::new();
        for (what, t) in tallies {
            total.published += t.published;
            total.acked += t.acked;
            total.lost += t.lost;
            total.duplicated += t.duplicated;
            total.unexpected += t.unexpected;
            if !t.ok() {
                broken.push(format!("{what}: {} lost, {} duplicated, {} unexpected of {} acknowledged", t.lost, t.duplicated, t.unexpected, t.acked));
            }
        }
        (total, broken)
    }
}

impl History {
    pub fn published(&mut self, id: u64) {
        self.published.push(id);
    }

    pub fn acked(&mut self, id: u64, sent: Instant, at: Instant) {
        self.acks.push(Ack { id, sent, at });
    }

    /// One stored message, by its payload.
    pub fn read(&mut self, payload: &[u8]) {
        match std::str::from_utf8(payload).ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(id) => self.read.push(id),
            None => self.foreign += 1,
        }
    }

    pub fn read_count(&self) -> usize {
        self.read.len() + self.foreign
    }

    pub fn counts(&self) -> Tally {
        let published: BTreeSet<u64> = self.published.iter().copied().collect();
        let acked: BTreeSet<u64> = self.acks.iter().map(|a| a.id).collect();
        let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
        for id in &self.read {
            *stored.entry(*id).or_default() += 1;
        }
        Tally {
            published: published.len(),
            acked: acked.len(),
            lost: acked.iter().filter(|id| !stored.contains_key(id)).count(),
            duplicated: stored.values().map(|n| n - 1).sum(),
            unexpected: stored.keys().filter(|id| !published.contains(id)).count() + self.foreign,
        }
    }

    /// The longest stretch between acknowledgements within [from, to].
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut ats: Vec<Instant> = self.acks.iter().map(|a| a.at).filter(|t| *t >= from && *t <= to).collect();
        ats.sort();
        let mut edges = vec![from];
        edges.extend(ats);
        edges.push(to);
        edges.windows(2).map(|w| w[1].saturating_duration_since(w[0])).max().unwrap_or_default()
    }

    /// Whether a message published after `at` has been acknowledged: the stream takes writes again.
    /// (An ack that merely arrives after `at` may be for a message the old leader stored before.)
    pub fn recovered_after(&self, at: Instant) -> bool {
        self.acks.iter().any(|a| a.sent > at)
    }

    /// The gap in acknowledgements around `at`: from the last ack at or before it to the first ack of a
    /// message published after it. `None` while nothing published after `at` is acknowledged.
    pub fn gap_around(&self, at: Instant) -> Option<Duration> {
        let next = self.acks.iter().filter(|a| a.sent > at).map(|a| a.at).min()?;
        let last = self.acks.iter().filter(|a| a.at <= at).map(|a| a.at).max().unwrap_or(at);
        Some(next.saturating_duration_since(last))
    }
}

type Shared = Arc<Mutex<History>>;

fn with<T>(h: &Shared, f: impl FnOnce(&mut History) -> T) -> T {
    // A poisoned lock only means a panic elsewhere; the history itself is still consistent.
    let mut g = h.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut g)
}

/// The hub's JetStream under restarts and leader kills. Runs where the declared hub has JetStream on three
/// or more nodes (an R3 stream needs them).
pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let declared: &Topology = ctx.declared;
    let name = "hub JetStream: R3 stream keeps every acknowledged message through restarts and leader kills";
    let expected = format!(
        "stream {STREAM} (R3) under continuous publishing while every hub is restarted in turn and the stream leader \
         and meta leader are killed: 0 lost, 0 duplicated, 0 unexpected"
    );
    let spec = Spec::new(Family::Failover, "acked-writes", &[], name, expected).needs(Capability::Kill);
    if declared.hub.jetstream.is_none() {
        ctx.skip(spec, "the hub declares no JetStream");
        return;
    }
    if declared.hub.nodes.len() < 3 {
        let why = format!("an R3 stream needs 3 hub nodes; the hub declares {}", declared.hub.nodes.len());
        ctx.skip(spec, why);
        return;
    }
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        let outcome = check(lab, declared, p).await;
        Ok(match delete_stream(lab, declared).await {
            Ok(()) => outcome,
            Err(e) => outcome.worse(Outcome::Error(format!("could not delete {STREAM}: {e}"))),
        })
    })
    .await;
}

/// Where a workload writes: its own stream (created, checked, deleted), how many replicas, how long it may
/// run at most.
#[derive(Debug, Clone)]
pub struct Target {
    pub stream: String,
    pub subject: String,
    pub replicas: u32,
    pub max_run: Duration,
}

impl Target {
    /// The hub's R3 stream of the failover and network checks.
    pub fn hub() -> Target {
        Target { stream: STREAM.into(), subject: SUBJECT.into(), replicas: 3, max_run: MAX_RUN }
    }
}

/// The checker as a reusable workload: a dedicated stream and a steady publisher, started before some
/// faults and checked after them (the partition and upgrade scenarios use it too).
pub struct Workload {
    admin: async_nats::Client,
    history: Shared,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    target: Target,
}

impl Workload {
    /// Creates the hub's stream through `admin_hubs` and publishes through `publish_hubs` (e.g. only a majority).
    pub async fn start(lab: &Lab, admin_hubs: &[String], publish_hubs: &[String], account: &str) -> Result<Workload, String> {
        Workload::start_on(lab, Target::hub(), admin_hubs, publish_hubs, account).await
    }

    /// A workload on `target`, created through `admin_nodes`, published through `publish_nodes` (hubs, or
    /// one leaf for a leaf's own stream).
    pub async fn start_on(lab: &Lab, target: Target, admin_nodes: &[String], publish_nodes: &[String], account: &str) -> Result<Workload, String> {
        let admin = connect_cluster(lab, admin_nodes, account, "natslab-jepsen-admin").await?;
        create_stream(&admin, &target).await.map_err(|e| format!("create {}: {e}", target.stream))?;
        let publisher = connect_cluster(lab, publish_nodes, account, "natslab-jepsen-publisher").await?;
        let history: Shared = Arc::default();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(publish(publisher, history.clone(), stopped, target.clone()));
        Ok(Workload { admin, history, stop, task, target })
    }

    /// The longest stretch without an acknowledgement between `from` and `to` (an upgrade step's
    /// unavailability): from one ack to the next, clipped to the window.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        with(&self.history, |h| h.longest_gap(from, to))
    }

    /// Waits until a publish sent after `at` is acknowledged; the gap in acks around `at` if so.
    pub async fn recovered_after(&self, at: Instant, within: Duration) -> Option<Duration> {
        if !wait_until(within, || with(&self.history, |h| h.recovered_after(at))).await {
            return None;
        }
        Some(with(&self.history, |h| h.gap_around(at)).unwrap_or_default())
    }

    pub async fn stream_leader(&self) -> Result<String, String> {
        stream_leader(&self.admin, &self.target.stream).await
    }

    /// Stops publishing, reads the stream back, deletes it; the counts.
    pub async fn finish(self) -> Result<Tally, String> {
        let stream = self.target.stream.clone();
        let _ = self.stop.send(true);
        self.task.await.map_err(|_| "the publisher task failed".to_string())?;
        read_back(&self.admin, &self.history, &stream).await.map_err(|e| format!("read back {stream}: {e}"))?;
        let counts = with(&self.history, |h| h.counts());
        let _ = api(&self.admin, JS_API, &format!("STREAM.DELETE.{stream}"), &json!({})).await;
        Ok(counts)
    }
}

/// The checker's counts as check metrics (the report sums `acked_writes_*`).
pub fn record_counts(p: &mut Pending, counts: &Tally) {
    p.metric("acked_writes_published", counts.published as f64);
    p.metric("acked_writes_acked", counts.acked as f64);
    p.metric("acked_writes_lost", counts.lost as f64);
    p.metric("acked_writes_duplicated", counts.duplicated as f64);
    p.metric("acked_writes_unexpected", counts.unexpected as f64);
}

async fn check(lab: &mut Lab, declared: &Topology, p: &mut Pending) -> Outcome {
    let hubs: Vec<String> = declared.hub_names().map(String::from).collect();
    let account = declared.hub.accounts[0].name.clone();
    let admin = match connect_cluster(lab, &hubs, &account, "natslab-jepsen-admin").await {
        Ok(c) => c,
        Err(e) => return Outcome::Error(e),
    };
    if let Err(e) = create_stream(&admin, &Target::hub()).await {
        return Outcome::Error(format!("create {STREAM}: {e}"));
    }
    let publisher = match connect_cluster(lab, &hubs, &account, "natslab-jepsen-publisher").await {
        Ok(c) => c,
        Err(e) => return Outcome::Error(e),
    };
    let history: Shared = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(publish(publisher, history.clone(), stopped, Target::hub()));

    let mut log = Vec::new();
    let bound = declared.expect_for(None).leader_recovery_within.map(|d| d.get());
    let nemesis = nemesis(lab, &admin, &hubs, &history, p, &mut log, bound).await;
    let _ = stop.send(true);
    if task.await.is_err() {
        return Outcome::Error("the publisher task failed".into());
    }
    // Everything back up before reading: every replica has a say in what the stream holds.
    let nemesis = nemesis.map_or_else(|o| o, |()| Outcome::Pass(String::new()));
    let nemesis = match lab.undo_all().await {
        Ok(_) => nemesis,
        Err(e) => nemesis.worse(Outcome::Error(e.to_string())),
    };
    if let Err(e) = read_back(&admin, &history, STREAM).await {
        return nemesis.worse(Outcome::Error(format!("read back {STREAM}: {e}")));
    }
    let counts = with(&history, |h| h.counts());
    record_counts(p, &counts);
    let seen = format!(
        "{} published, {} acked, {} lost, {} duplicated, {} unexpected; {}",
        counts.published,
        counts.acked,
        counts.lost,
        counts.duplicated,
        counts.unexpected,
        log.join("; ")
    );
    let verdict = Outcome::expect(counts.ok(), seen.clone());
    match nemesis {
        Outcome::Pass(_) => verdict,
        other => verdict.worse(prefix(other, &seen)),
    }
}

fn prefix(o: Outcome, seen: &str) -> Outcome {
    match o {
        Outcome::Violated(t) => Outcome::Violated(format!("{seen}; {t}")),
        Outcome::Error(t) => Outcome::Error(format!("{seen}; {t}")),
        other => other,
    }
}

/// The faults, in order: wait for the stream to take writes, restart every hub in turn, kill the stream
/// leader, kill the meta leader (whoever it is by then). Each killed node is restarted and the cluster is ready
/// again before the next fault. `Err` carries a violation (NATS did not recover) or a harness error.
async fn nemesis(
    lab: &mut Lab,
    admin: &async_nats::Client,
    hubs: &[String],
    history: &Shared,
    p: &mut Pending,
    log: &mut Vec<String>,
    bound: Option<Duration>,
) -> Result<(), Outcome> {
    let start = Instant::now();
    if !wait_until(RECOVERY, || with(history, |h| h.recovered_after(start))).await {
        return Err(Outcome::Violated(format!("{STREAM} acknowledged no publish within {} s of its creation", RECOVERY.as_secs())));
    }
    let t = Instant::now();
    for h in hubs {
        lab.apply(&Fault::Kill { node: h.clone() }).await.map_err(Outcome::from)?;
        lab.apply(&Fault::Start { node: h.clone() }).await.map_err(Outcome::from)?;
        settle(lab, admin, hubs, &format!("{h} restarted")).await?;
    }
    p.metric_duration("rolling_restart_ms", t.elapsed());
    log.push(format!("rolling restart of {} hubs took {} ms", hubs.len(), t.elapsed().as_millis()));

    let leader = stream_leader(admin, STREAM).await.map_err(Outcome::Error)?;
    let gap = kill_leader(lab, admin, hubs, history, &leader).await?;
    let first_gap = gap;
    p.metric_duration("unavailable_ms", gap);
    log.push(format!("stream leader {leader} killed: no acks for {} ms", gap.as_millis()));

    // Whether the meta leader also leads the stream decides whether publishes stall (AUDIT §3): say which.
    let meta = meta_leader(lab, hubs).await.map_err(Outcome::Error)?;
    let leader = stream_leader(admin, STREAM).await.map_err(Outcome::Error)?;
    let gap = kill_leader(lab, admin, hubs, history, &meta).await?;
    p.metric_duration("meta_unavailable_ms", gap);
    let role = if meta == leader { "meta leader, also the stream leader," } else { "meta leader (not the stream leader)" };
    log.push(format!("{role} {meta} killed: no acks for {} ms", gap.as_millis()));
    // A declared service level: the stream takes writes again within it after its leader is killed.
    if let Some(b) = bound.filter(|b| first_gap > *b) {
        return Err(Outcome::Violated(format!(
            "after its leader was killed the stream took writes again only after {} ms, beyond expect.leader_recovery_within {} ms",
            first_gap.as_millis(),
            b.as_millis()
        )));
    }
    Ok(())
}

/// Kills `node`, waits until the stream takes writes again, then restarts it. Returns the gap in acks.
async fn kill_leader(
    lab: &mut Lab,
    admin: &async_nats::Client,
    hubs: &[String],
    history: &Shared,
    node: &str,
) -> Result<Duration, Outcome> {
    let at = Instant::now();
    lab.apply(&Fault::Kill { node: node.to_string() }).await.map_err(Outcome::from)?;
    if !wait_until(RECOVERY, || with(history, |h| h.recovered_after(at))).await {
        return Err(Outcome::Violated(format!("{STREAM} took no publish for {} s after {node} was killed", RECOVERY.as_secs())));
    }
    let gap = with(history, |h| h.gap_around(at)).unwrap_or_default();
    lab.apply(&Fault::Start { node: node.to_string() }).await.map_err(Outcome::from)?;
    settle(lab, admin, hubs, &format!("{node} restarted")).await?;
    Ok(gap)
}

/// The hub cluster is ready again (routes, meta leader) and every replica of the stream is current.
async fn settle(lab: &Lab, admin: &async_nats::Client, hubs: &[String], after: &str) -> Result<(), Outcome> {
    let names: Vec<&str> = hubs.iter().map(String::as_str).collect();
    lab.wait_ready(&names, READY).await.map_err(|e| Outcome::Violated(format!("{after}: the hub cluster was not ready again: {e}")))?;
    let mut last = String::new();
    let deadline = Instant::now() + READY;
    while Instant::now() < deadline {
        match api(admin, JS_API, &format!("STREAM.INFO.{STREAM}"), &json!({})).await {
            Ok(info) => match replicas_current(&info, hubs.len()) {
                Ok(()) => return Ok(()),
                Err(w) => last = w,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Outcome::Violated(format!("{after}: {STREAM} replicas not current within {} s ({last})", READY.as_secs())))
}

/// A leader and every other replica current, from `STREAM.INFO`'s `cluster` block.
fn replicas_current(info: &Value, replicas: usize) -> Result<(), String> {
    let cluster = info.get("cluster").ok_or("no cluster block")?;
    if cluster.get("leader").and_then(Value::as_str).unwrap_or_default().is_empty() {
        return Err("no leader".into());
    }
    let followers = cluster.get("replicas").and_then(Value::as_array).cloned().unwrap_or_default();
    let current = followers.iter().filter(|r| r.get("current").and_then(Value::as_bool) == Some(true)).count();
    let want = replicas.min(3) - 1;
    if current < want {
        return Err(format!("{current}/{want} followers current"));
    }
    Ok(())
}

async fn stream_leader(admin: &async_nats::Client, stream: &str) -> Result<String, String> {
    let info = api(admin, JS_API, &format!("STREAM.INFO.{stream}"), &json!({})).await?;
    info.pointer("/cluster/leader").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from).ok_or_else(|| format!("{stream} has no leader"))
}

async fn meta_leader(lab: &Lab, hubs: &[String]) -> Result<String, String> {
    let mut last = String::from("no hub answered");
    for h in hubs {
        let Ok(url) = lab.monitor_url(h) else { continue };
        match lab.monitor.meta_leader(url).await {
            Ok(Some(l)) => return Ok(l),
            Ok(None) => last = format!("{h}: no meta leader"),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A client of `account` that knows every hub, so it follows the cluster through restarts.
pub(super) async fn connect_cluster(lab: &Lab, hubs: &[String], account: &str, name: &str) -> Result<async_nats::Client, String> {
    let user = probe_user(account);
    let access: Vec<_> = hubs.iter().filter_map(|h| lab.access(h, account, &user)).collect();
    let first = access.first().ok_or_else(|| format!("no probe user for account {account} on the hubs"))?;
    let urls: Vec<String> = access.iter().map(|a| a.url.clone()).collect();
    let mut options = first.options().reconnect_delay_callback(|_| Duration::from_millis(25));
    if let Some(creds) = &first.creds {
        options = options.credentials_file(creds).await.map_err(|e| format!("read creds {}: {e}", creds.display()))?;
    }
    options.name(name).connect(urls.clone()).await.map_err(|e| format!("connect to {} as {user}: {e}", urls.join(",")))
}

async fn create_stream(admin: &async_nats::Client, target: &Target) -> Result<(), String> {
    let stream = &target.stream;
    // A leftover from an earlier run in the same lab would read back as "unexpected".
    let _ = api(admin, JS_API, &format!("STREAM.DELETE.{stream}"), &json!({})).await;
    let config = json!({
        "name": stream,
        "subjects": [target.subject],
        "retention": "limits",
        "storage": "file",
        "num_replicas": target.replicas,
        "duplicate_window": Duration::from_secs(120).as_nanos() as u64,
    });
    let deadline = Instant::now() + READY;
    loop {
        match api(admin, JS_API, &format!("STREAM.CREATE.{stream}"), &config).await {
            Ok(_) => return Ok(()),
            // A cluster that has just settled may not know all its peers yet.
            Err(e) if Instant::now() < deadline && (e.contains("insufficient resources") || e.contains("no suitable peers") || e.contains("timed out")) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn delete_stream(lab: &Lab, declared: &Topology) -> Result<(), String> {
    let hubs: Vec<String> = declared.hub_names().map(String::from).collect();
    let client = connect_cluster(lab, &hubs, &declared.hub.accounts[0].name, "natslab-jepsen-cleanup").await?;
    api(&client, JS_API, &format!("STREAM.DELETE.{STREAM}"), &json!({})).await.map(|_| ())
}

/// The publisher: one new id per tick, many in flight, until told to stop (then for `GRACE` more, and until
/// a fresh publish is acknowledged), or its own bounds are reached.
async fn publish(client: async_nats::Client, history: Shared, stop: tokio::sync::watch::Receiver<bool>, target: Target) {
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = 1u64;
    let mut stop_at: Option<Instant> = None;
    loop {
        if stop_at.is_none() && *stop.borrow() {
            stop_at = Some(Instant::now());
        }
        let done = match stop_at {
            Some(s) => s.elapsed() >= GRACE && (with(&history, |h| h.recovered_after(s)) || s.elapsed() >= LAST_CHANCE),
            None => false,
        };
        if done || next > MAX_MESSAGES * (target.max_run.as_secs() / MAX_RUN.as_secs()).max(1) || started.elapsed() > target.max_run {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if in_flight.len() < IN_FLIGHT => {
                with(&history, |h| h.published(next));
                in_flight.push(publish_one(client.clone(), target.subject.clone(), next));
                next += 1;
            }
            Some(r) = in_flight.next(), if !in_flight.is_empty() => record(&history, r),
        }
    }
    while let Some(r) = in_flight.next().await {
        record(&history, r);
    }
}

type Sent = (u64, Instant, Option<Instant>);

fn record(history: &Shared, (id, sent, acked): Sent) {
    if let Some(at) = acked {
        with(history, |h| h.acked(id, sent, at));
    }
}

/// Publishes one id and waits for its PubAck; `None` when it failed or timed out (indeterminate).
async fn publish_one(client: async_nats::Client, subject: String, id: u64) -> Sent {
    let sent = Instant::now();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.to_string().as_str());
    let answer = tokio::time::timeout(ACK_TIMEOUT, client.request_with_headers(subject, headers, id.to_string().into())).await;
    let acked = match answer {
        Ok(Ok(m)) if is_stored(&m.payload) => Some(Instant::now()),
        _ => None,
    };
    (id, sent, acked)
}


/// Reads the whole stream with an ephemeral push consumer and records every stored payload.
async fn read_back(admin: &async_nats::Client, history: &Shared, stream: &str) -> Result<(), String> {
    let inbox = admin.new_inbox();
    let mut sub = admin.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
    // Named, so that asking again after a lost answer (a cluster just healed) is idempotent: two unnamed
    // consumers on one inbox would deliver everything twice and read as duplicates.
    let name = format!("natslab-readback-{}", super::probes::token());
    let config = json!({
        "stream_name": stream,
        "config": {
            "name": name,
            "deliver_subject": inbox,
            "ack_policy": "none",
            "deliver_policy": "all",
            "replay_policy": "instant",
            "mem_storage": true,
            "num_replicas": 1,
            "inactive_threshold": Duration::from_secs(30).as_nanos() as u64,
        }
    });
    let deadline = Instant::now() + READY;
    let create = format!("CONSUMER.CREATE.{stream}.{name}");
    crate::probe::js::retry_transient(deadline, || api(admin, JS_API, &create, &config)).await?;
    // Read what the stream says it holds; ask again in case it held more by the time we got there.
    let (info_op, empty) = (format!("STREAM.INFO.{stream}"), json!({}));
    loop {
        let info = crate::probe::js::retry_transient(Instant::now() + READY, || api(admin, JS_API, &info_op, &empty)).await?;
        let total = info.pointer("/state/messages").and_then(Value::as_u64).unwrap_or(0) as usize;
        if with(history, |h| h.read_count()) >= total {
            return Ok(());
        }
        while with(history, |h| h.read_count()) < total {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Some(m)) if m.status.is_none() => with(history, |h| h.read(&m.payload)),
                Ok(Some(_)) => {}
                _ => return Err(format!("read {} of {total} messages, then nothing for 5 s", with(history, |h| h.read_count()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn clean_history_counts_nothing_wrong() {
        let base = Instant::now();
        let mut h = History::default();
        for id in 1..=3 {
            h.published(id);
            h.acked(id, ms(base, id), ms(base, id + 1));
            h.read(id.to_string().as_bytes());
        }
        assert_eq!(h.counts(), Tally { published: 3, acked: 3, lost: 0, duplicated: 0, unexpected: 0 });
        assert!(h.counts().ok());
    }

    #[test]
    fn unacked_and_missing_is_not_lost_but_acked_and_missing_is() {
        let base = Instant::now();
        let mut h = History::default();
        for id in 1..=4 {
            h.published(id);
        }
        h.acked(1, base, base);
        h.acked(2, base, base);
        h.read(b"1");
        h.read(b"3"); // published, never acked, stored: indeterminate, fine
        let c = h.counts();
        assert_eq!((c.lost, c.duplicated, c.unexpected), (1, 0, 0));
        assert!(!c.ok());
    }

    #[test]
    fn duplicates_count_extra_copies() {
        let base = Instant::now();
        let mut h = History::default();
        h.published(7);
        h.acked(7, base, base);
        for _ in 0..3 {
            h.read(b"7");
        }
        assert_eq!(h.counts().duplicated, 2);
        assert_eq!(h.counts().lost, 0);
    }

    #[test]
    fn unexpected_counts_unknown_ids_and_foreign_payloads() {
        let mut h = History::default();
        h.published(1);
        h.read(b"1");
        h.read(b"99");
        h.read(b"not an id");
        assert_eq!(h.counts().unexpected, 2);
    }

    #[test]
    fn gap_runs_from_last_ack_before_to_first_fresh_ack_after() {
        let base = Instant::now();
        let mut h = History::default();
        h.acked(1, ms(base, 0), ms(base, 5));
        h.acked(2, ms(base, 10), ms(base, 15));
        let kill = ms(base, 20);
        // Sent before the kill, acknowledged after it: the old leader's, says nothing about recovery.
        h.acked(3, ms(base, 18), ms(base, 22));
        assert!(!h.recovered_after(kill));
        assert_eq!(h.gap_around(kill), None);
        h.acked(9, ms(base, 4000), ms(base, 4800));
        h.acked(10, ms(base, 4810), ms(base, 4812));
        assert!(h.recovered_after(kill));
        assert_eq!(h.gap_around(kill), Some(Duration::from_millis(4800 - 15)));
    }

    #[test]
    fn counts_serialize_with_their_names() {
        let v = serde_json::to_value(Tally { published: 5, acked: 4, lost: 1, duplicated: 0, unexpected: 0 }).unwrap();
        assert_eq!(v, json!({"published": 5, "acked": 4, "lost": 1, "duplicated": 0, "unexpected": 0}));
    }

    #[test]
    fn replicas_current_needs_a_leader_and_current_followers() {
        let ok = json!({"cluster": {"leader": "hub-1", "replicas": [{"name": "hub-2", "current": true}, {"name": "hub-3", "current": true}]}});
        assert!(replicas_current(&ok, 3).is_ok());
        let lagging = json!({"cluster": {"leader": "hub-1", "replicas": [{"name": "hub-2", "current": true}, {"name": "hub-3", "current": false}]}});
        assert!(replicas_current(&lagging, 3).is_err());
        let leaderless = json!({"cluster": {"replicas": []}});
        assert!(replicas_current(&leaderless, 3).is_err());
    }
}
