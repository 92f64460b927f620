//! Failover: every leaf remote that declares several hubs is failed over for real. Its hub is killed
//! (`kill -9`: the socket closes, the leaf redials after its reconnect interval), hung (SIGSTOP: the socket
//! stays open, only pings notice), and down while the leaf starts (the leaf must dial the next declared hub
//! by itself: the hubs a connected leaf learns from the cluster do not help then). Each time the leaf must
//! land on another hub and the link must carry the declared flows again. Killing a leaf must leave the hub
//! cluster and the other leaves alone, and the hub's JetStream goes through `jepsen`.
//!
//! Timings (AUDIT §3: kill ≈ reconnect interval + 10–30 ms; SIGSTOP ≈ ping_interval × ping_max + up to one
//! interval) are metrics; only "did not reattach within a generous bound" is a violation. Every fault is
//! undone, and the lab is ready again, before the check that made it is recorded.

use std::time::{Duration, Instant};

use super::check::{Concluded, Pending, Spec};
use super::{acked_writes, probes, Ctx, Family, Outcome};
use crate::lab::{Lab, READY_AGAIN as READY};
use crate::nemesis::{Capability, Fault};
use crate::plan::probe_user;
use crate::topology::{Expect, Flow, Leaf, Topology};

/// `/leafz` polling period while a leaf fails over (AUDIT §3 polled every 20 ms).
const POLL: Duration = Duration::from_millis(10);
/// Beyond what a leaf's declared settings explain, how long it may take to reattach before that is a
/// violation. Generous on purpose: timings are metrics, this only separates "slow" from "never".
const SLACK: Duration = Duration::from_secs(10);
/// nats-server's defaults where the leaf declares nothing.
const DEFAULT_RECONNECT: Duration = Duration::from_secs(1);
const DEFAULT_PING_MAX: u32 = 2;

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let declared: &Topology = ctx.declared;
    let advertised = !declared.hub.no_advertise && !ctx.lab.plan.proxied();
    for leaf in &declared.leaves {
        for index in 0..leaf.remotes.len() {
            let link = Link::new(declared, leaf, index, advertised);
            kill_hub(ctx, &link).await;
            hung_hub(ctx, &link).await;
            cold_start(ctx, &link).await;
        }
    }
    for leaf in &declared.leaves {
        kill_leaf(ctx, declared, leaf).await;
    }
    acked_writes::run(ctx).await;
}

/// One leaf remote as declared: the hubs it may use and what crosses it.
struct Link<'t> {
    leaf: &'t Leaf,
    index: usize,
    hubs: &'t [String],
    /// The leaf-local account the link binds; `/leafz` on the leaf names it.
    local_account: &'t str,
    /// The hub account the link lands in (`LEAF_<X>`).
    hub_account: String,
    /// The hub account the declared flows trade with.
    peer: &'t str,
    export: Option<&'t Flow>,
    import: Option<&'t Flow>,
    /// Hubs in the cluster besides the declared ones that a connected leaf learns (hub gossip; off with
    /// `no_advertise`).
    learned: Vec<&'t str>,
    /// The service levels that apply to this leaf.
    expect: Expect,
}

impl<'t> Link<'t> {
    /// `advertised`: whether the hubs tell leaves about each other in this lab (not with `no_advertise`, nor
    /// behind link proxies, which must not be bypassed).
    fn new(t: &'t Topology, leaf: &'t Leaf, index: usize, advertised: bool) -> Link<'t> {
        let remote = &leaf.remotes[index];
        Link {
            leaf,
            index,
            hubs: &remote.hubs,
            local_account: leaf.remote_account(remote),
            hub_account: leaf.hub_account(index),
            peer: remote.peer_account(&t.hub),
            export: remote.exports.first(),
            import: remote.imports.first(),
            learned: if !advertised { vec![] } else { t.hub_names().filter(|h| !remote.hubs.iter().any(|d| d == h)).collect() },
            expect: t.expect_for(Some(leaf)),
        }
    }

    fn label(&self) -> String {
        self.leaf.remote_label(self.index)
    }

    fn reconnect(&self) -> Duration {
        self.leaf.reconnect_interval.as_ref().map(|d| d.get()).unwrap_or(DEFAULT_RECONNECT)
    }

    /// How long reattaching may take before it counts as "never".
    fn bound(&self) -> Duration {
        SLACK + self.reconnect()
    }

    fn hub_list(&self) -> String {
        self.hubs.join(", ")
    }

    /// `None` when a running leaf can move off a faulted hub: it declares another, or it learns the others
    /// from the cluster (a single-URL remote relies on that gossip); else why not.
    fn cannot_fail_over(&self) -> Option<String> {
        if self.hubs.len() >= 2 || !self.learned.is_empty() {
            return None;
        }
        Some(format!(
            "the remote declares only {} and the hubs advertise no others (no_advertise, or link proxies in the way): \
             a leaf whose hub dies has nowhere to go",
            self.hub_list()
        ))
    }

    /// `None` when a leaf started with its first hub down can attach elsewhere: only the declared list is
    /// dialled at start, so it needs a second declared hub.
    fn cannot_cold_start(&self) -> Option<String> {
        (self.hubs.len() < 2).then(|| {
            format!(
                "the remote declares only {}: a leaf started while it is down dials nothing else (gossip is learned only once attached); \
                 declare more hubs in the remote to survive that",
                self.hub_list()
            )
        })
    }

    /// Where the leaf may land: every declared hub and every hub it learns.
    fn candidates(&self) -> String {
        let mut all: Vec<&str> = self.hubs.iter().map(String::as_str).collect();
        all.extend(&self.learned);
        all.join(", ")
    }
}

/// The bound a declared service level sets beside the harness's "never" bound: the wait runs to the larger,
/// and a result beyond the declared one is a violation naming it.
fn with_expect(never: Duration, declared: Option<Duration>) -> Duration {
    declared.map_or(never, |d| d.max(never))
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A check of this family.
fn spec(kind: &str, link: &str, name: String, expected: String) -> Spec {
    Spec::new(Family::Failover, kind, &[link], name, expected)
}

// ---------------------------------------------------------------- the checks

async fn kill_hub(ctx: &mut Ctx<'_, '_>, link: &Link<'_>) {
    let name = format!("{}: fails over when its hub is killed", link.label());
    let declared = link.expect.failover_within.as_ref().map(|d| d.get());
    let expected = format!(
        "kill -9 of the hub it is attached to: the leaf attaches to another of [{}] within {} ms{}, a round trip across the link \
         works again, and the restarted hub rejoins the full mesh",
        link.candidates(),
        ms(declared.unwrap_or(link.bound())),
        match declared {
            Some(_) => " (expect.failover_within)".to_string(),
            None => format!(" (10 s + reconnect_interval {} ms)", ms(link.reconnect())),
        }
    );
    let spec = spec("kill-hub", &link.label(), name, expected).needs(Capability::Kill);
    if let Some(why) = link.cannot_fail_over() {
        ctx.skip(spec, why);
        return;
    }
    let bound = Bound { wait: with_expect(link.bound(), declared), declared, what: "expect.failover_within" };
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| fail_over(lab, p, link, &bound, &KILL).await).await;
}

/// How long a leaf may take to move: `wait` before it counts as never; beyond `declared` (named `what`)
/// it is a violation too.
struct Bound {
    wait: Duration,
    declared: Option<Duration>,
    what: &'static str,
}

impl Bound {
    /// The violation when `took` is beyond the declared level.
    fn exceeded(&self, took: Duration) -> Option<String> {
        self.declared.filter(|d| took > *d).map(|d| format!("{} ms is beyond {} {} ms", ms(took), self.what, ms(d)))
    }
}

async fn hung_hub(ctx: &mut Ctx<'_, '_>, link: &Link<'_>) {
    let name = format!("{}: fails over when its hub hangs", link.label());
    let leaf = link.leaf;
    let ping_max = leaf.ping_max.unwrap_or(DEFAULT_PING_MAX);
    let Some(interval) = leaf.ping_interval.as_ref().map(|d| d.get()) else {
        let expected = "SIGSTOP of the hub it is attached to: the leaf notices by pings and moves to another hub".to_string();
        let why = "the leaf declares no ping_interval: with the default (2m × ping_max 2) a hung hub goes unnoticed for minutes";
        ctx.skip(spec("hang-hub", &link.label(), name, expected), link.cannot_fail_over().unwrap_or_else(|| why.into()));
        return;
    };
    let noticed = interval * ping_max;
    let declared = link.expect.hung_failover_within.as_ref().map(|d| d.get());
    let bound = interval * (ping_max + 2) + link.bound();
    let expected = format!(
        "SIGSTOP of the hub it is attached to: the leaf notices by pings (ping_interval {} ms × ping_max {ping_max} ≈ {} ms, \
         plus up to one interval and reconnect_interval {} ms) and attaches to another of [{}] within {} ms{}; a round trip \
         across the link works again; resumed, the hub is ready again",
        ms(interval),
        ms(noticed),
        ms(link.reconnect()),
        link.candidates(),
        ms(declared.unwrap_or(bound)),
        if declared.is_some() { " (expect.hung_failover_within)" } else { "" }
    );
    let spec = spec("hang-hub", &link.label(), name, expected).needs(Capability::Pause);
    if let Some(why) = link.cannot_fail_over() {
        ctx.skip(spec, why);
        return;
    }
    let bound = Bound { wait: with_expect(bound, declared), declared, what: "expect.hung_failover_within" };
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| fail_over(lab, p, link, &bound, &HANG).await).await;
}

/// A fault on the hub a leaf is attached to, and its undoing: what the kill and hang checks share.
struct HubFault {
    /// The fault; its inverse undoes it.
    fault: fn(&str) -> Fault,
    /// "killed", "hung": what happened to the hub, for the observations.
    done: &'static str,
    moved_metric: &'static str,
    back_metric: &'static str,
    /// What the hub does once the fault is undone, and after what.
    back: &'static str,
    after: &'static str,
}

const KILL: HubFault = HubFault {
    fault: |n| Fault::Kill { node: n.to_string() },
    done: "killed",
    moved_metric: "failover_ms",
    back_metric: "rejoin_ms",
    back: "rejoined the full mesh",
    after: "restart",
};

const HANG: HubFault = HubFault {
    fault: |n| Fault::Pause { node: n.to_string() },
    done: "hung (SIGSTOP)",
    moved_metric: "hung_failover_ms",
    back_metric: "resume_ready_ms",
    back: "ready again",
    after: "resume",
};

/// Faults the leaf's hub, waits (bounded) until the leaf is on another hub, proves a round trip over it,
/// undoes the fault and waits until the hub is ready again; records both times.
async fn fail_over(lab: &mut Lab, p: &mut Pending, link: &Link<'_>, bound: &Bound, f: &HubFault) -> Concluded {
    let from = attached_before(lab, link).await?;
    let t0 = Instant::now();
    let fault = (f.fault)(&from);
    lab.apply(&fault).await?;
    let Some((to, took)) = wait_attached(lab, link, Some(&from), t0, bound.wait).await else {
        return Ok(Outcome::Violated(format!("with {from} {} the leaf was attached to no other hub within {} ms", f.done, ms(bound.wait))));
    };
    p.metric_duration(f.moved_metric, took);
    let mut seen = format!("{from} {}; attached to {to} after {} ms{}", f.done, ms(took), undeclared_note(link, &to));
    match round_trip(lab, link, &to).await {
        Ok(Ok(trip)) => seen.push_str(&format!("; {trip}")),
        Ok(Err(trip)) => return Ok(Outcome::Violated(format!("{seen}; {trip}"))),
        Err(e) => return Err(Outcome::Error(format!("{seen}; {e}"))),
    }
    let undo = fault.inverse().expect("kill and pause have inverses");
    lab.apply(&undo).await.map_err(|e| Outcome::Error(format!("{seen}; {e}")))?;
    let t1 = Instant::now();
    let hubs = hub_names(lab);
    if let Err(e) = lab.wait_ready(&hubs.iter().map(String::as_str).collect::<Vec<_>>(), READY).await {
        return Ok(Outcome::Violated(format!("{seen}; {from} was not {} after {}: {e}", f.back, f.after)));
    }
    p.metric_duration(f.back_metric, t1.elapsed());
    seen.push_str(&format!("; {from} {} {} ms after {}", f.back, ms(t1.elapsed()), f.after));
    match bound.exceeded(took) {
        Some(late) => Ok(Outcome::Violated(format!("{seen}; moving took {late}"))),
        None => Ok(Outcome::Pass(seen)),
    }
}

/// A leaf (re)started while its first hub is down must dial the next declared hub. This is what the
/// declared list is for: a running leaf also learns the other hubs from the one it is attached to, so a
/// remote that lists a single hub survives a hub kill, but not a restart while that hub is down.
async fn cold_start(ctx: &mut Ctx<'_, '_>, link: &Link<'_>) {
    let name = format!("{}: starts with its first hub down", link.label());
    let first = link.hubs.first().cloned().unwrap_or_default();
    let declared = link.expect.cold_start_within.as_ref().map(|d| d.get());
    let expected = format!(
        "with {first} killed, the restarted leaf attaches to another of [{}] within {} ms{}",
        link.hub_list(),
        ms(declared.unwrap_or(link.bound())),
        if declared.is_some() { " (expect.cold_start_within)" } else { "" }
    );
    let spec = spec("cold-start", &link.label(), name, expected).needs(Capability::Kill);
    if let Some(why) = link.cannot_cold_start() {
        ctx.skip(spec, why);
        return;
    }
    let bound = Bound { wait: with_expect(link.bound(), declared), declared, what: "expect.cold_start_within" };
    let leaf = link.leaf.name.clone();
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        attached_before(lab, link).await?;
        for node in [&leaf, &first] {
            lab.apply(&Fault::Kill { node: node.clone() }).await?;
        }
        let t0 = Instant::now();
        lab.apply(&Fault::Start { node: leaf.clone() }).await?;
        let Some((to, took)) = wait_attached(lab, link, None, t0, bound.wait).await else {
            return Ok(Outcome::Violated(format!(
                "with {first} down, the restarted leaf was attached to no hub within {} ms: it did not dial the other declared hubs",
                ms(bound.wait)
            )));
        };
        p.metric_duration("cold_attach_ms", took);
        let seen = format!("{first} down; the restarted leaf attached to {to} after {} ms{}", ms(took), undeclared_note(link, &to));
        Ok(match bound.exceeded(took) {
            Some(late) => Outcome::Violated(format!("{seen}: {late}")),
            None => Outcome::Pass(seen),
        })
    })
    .await;
}

async fn kill_leaf(ctx: &mut Ctx<'_, '_>, declared: &Topology, leaf: &Leaf) {
    let name = format!("{}: killing it leaves the rest healthy", leaf.name);
    let expected = format!(
        "after kill -9 of {}: every hub healthy with the full route mesh, every other leaf attached, a message crosses the hub \
         cluster; restarted, the leaf attaches again",
        leaf.name
    );
    let spec = spec("kill-leaf", &leaf.name, name, expected).needs(Capability::Kill);
    let account = declared.hub.accounts[0].name.clone();
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
        lab.apply(&Fault::Kill { node: leaf.name.clone() }).await?;
        let others: Vec<String> =
            declared.hub_names().map(String::from).chain(declared.leaves.iter().map(|l| l.name.clone())).filter(|n| *n != leaf.name).collect();
        if let Err(e) = lab.wait_ready(&others.iter().map(String::as_str).collect::<Vec<_>>(), SLACK).await {
            return Ok(Outcome::Violated(format!("with {} killed, the rest was not healthy: {e}", leaf.name)));
        }
        let hubs = hub_names(lab);
        let (a, b) = (hubs.first().cloned().unwrap_or_default(), hubs.last().cloned().unwrap_or_default());
        let mut seen = format!("with {} killed: hubs meshed, {} other node(s) ready", leaf.name, others.len());
        match hub_trip(lab, &account, &a, &b).await {
            Ok(Ok(trip)) => seen.push_str(&format!("; {trip}")),
            Ok(Err(trip)) => return Ok(Outcome::Violated(format!("{seen}; {trip}"))),
            Err(e) => return Err(Outcome::Error(format!("{seen}; {e}"))),
        }
        lab.apply(&Fault::Start { node: leaf.name.clone() }).await.map_err(|e| Outcome::Error(format!("{seen}; {e}")))?;
        let t = Instant::now();
        if let Err(e) = lab.wait_ready(&[leaf.name.as_str()], READY).await {
            return Ok(Outcome::Violated(format!("{seen}; restarted, {} did not attach again: {e}", leaf.name)));
        }
        p.metric_duration("leaf_rejoin_ms", t.elapsed());
        Ok(Outcome::Pass(format!("{seen}; restarted, {} was attached again after {} ms", leaf.name, ms(t.elapsed()))))
    })
    .await;
}

// ---------------------------------------------------------------- observing the leaf

fn hub_names(lab: &Lab) -> Vec<String> {
    lab.plan.hubs().map(|h| h.name.clone()).collect()
}

/// The hub this link is attached to, from the leaf's own `/leafz` (the entry bound to the link's account).
async fn attached(lab: &Lab, link: &Link<'_>) -> Result<Option<String>, String> {
    let leafs = lab.monitor.leafs(lab.monitor_url(&link.leaf.name)?).await?;
    Ok(leafs.into_iter().find(|(hub, account)| account == link.local_account && !hub.is_empty()).map(|(hub, _)| hub))
}

/// Polls until the link is attached to a hub other than `not`; returns it and the time since `since` (the
/// fault), or `None` once `within` of that has passed.
async fn wait_attached(lab: &Lab, link: &Link<'_>, not: Option<&str>, since: Instant, within: Duration) -> Option<(String, Duration)> {
    loop {
        if let Ok(Some(hub)) = attached(lab, link).await {
            if Some(hub.as_str()) != not {
                return Some((hub, since.elapsed()));
            }
        }
        if since.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The hub the link is on before a fault; a link not attached at all is already a violation.
async fn attached_before(lab: &Lab, link: &Link<'_>) -> Result<String, Outcome> {
    match wait_attached(lab, link, None, Instant::now(), READY).await {
        Some((hub, _)) => Ok(hub),
        None => Err(Outcome::Violated(format!("the leaf was not attached to any hub before the fault (waited {} s)", READY.as_secs()))),
    }
}

fn undeclared_note(link: &Link<'_>, hub: &str) -> String {
    if link.hubs.iter().any(|h| h == hub) {
        String::new()
    } else {
        " (not a declared hub of this remote: learned from the cluster)".to_string()
    }
}

// ---------------------------------------------------------------- round trips

/// A subject with every wildcard token replaced by `token`: something a publisher may use.
fn concrete(subject: &str, token: &str) -> String {
    subject.split('.').map(|t| if t == "*" || t == ">" { token } else { t }).collect::<Vec<_>>().join(".")
}

/// Both directions across the link, through `hub`: leaf → hub on the first declared export (received under
/// its prefix by the peer account), hub → leaf on the first declared import; where none is declared, a
/// subject of the link's own hub account. `Ok(Err)` is "not delivered"; `Err` is a harness failure.
async fn round_trip(lab: &Lab, link: &Link<'_>, hub: &str) -> Result<Result<String, String>, String> {
    let leaf = lab.probe(&link.leaf.name, link.local_account).await.map_err(|e| e.to_string())?;
    let token = probes::token();
    let up = match link.export {
        Some(f) => (link.peer, concrete(&f.subject, &token), concrete(&f.local_subject(), &token)),
        None => (link.hub_account.as_str(), format!("natslab.failover.up.{token}"), format!("natslab.failover.up.{token}")),
    };
    let hub_up = hub_client(lab, hub, up.0).await?;
    if let Err(e) = leg(&leaf, &up.1, &hub_up, &up.2).await? {
        return Ok(Err(format!("leaf → hub: {e}")));
    }
    let down = match link.import {
        Some(f) => (link.peer, concrete(&f.subject, &token), concrete(&f.local_subject(), &token)),
        None => (link.hub_account.as_str(), format!("natslab.failover.down.{token}"), format!("natslab.failover.down.{token}")),
    };
    let hub_down = hub_client(lab, hub, down.0).await?;
    if let Err(e) = leg(&hub_down, &down.1, &leaf, &down.2).await? {
        return Ok(Err(format!("hub → leaf: {e}")));
    }
    Ok(Ok(format!("round trip via {hub}: {} → {}, {} → {}", up.1, up.2, down.1, down.2)))
}

/// A message across the hub cluster itself: subscribed on `a`, published on `b`.
async fn hub_trip(lab: &Lab, account: &str, a: &str, b: &str) -> Result<Result<String, String>, String> {
    let subject = format!("natslab.failover.hub.{}", probes::token());
    let sub = hub_client(lab, a, account).await?;
    let publ = hub_client(lab, b, account).await?;
    Ok(leg(&publ, &subject, &sub, &subject).await?.map(|()| format!("{subject} crossed {b} → {a}")))
}

async fn hub_client(lab: &Lab, hub: &str, account: &str) -> Result<async_nats::Client, String> {
    let access = lab.access(hub, account, &probe_user(account)).ok_or_else(|| format!("no probe user for {account} on {hub}"))?;
    probes::connect_as(&access, &format!("natslab-failover-{hub}")).await
}

/// Publishes on `subject` from `from` until `to` receives it as `expect` (bounded by `probes::DELIVERY`).
async fn leg(from: &async_nats::Client, subject: &str, to: &async_nats::Client, expect: &str) -> Result<Result<(), String>, String> {
    let mut sub = to.subscribe(expect.to_string()).await.map_err(|e| format!("subscribe {expect}: {e}"))?;
    to.flush().await.map_err(|e| format!("flush: {e}"))?;
    let got = probes::publish_until_received(from, subject, "natslab-failover", &mut sub, probes::DELIVERY).await;
    Ok(match got {
        Some((s, _)) if s == expect => Ok(()),
        Some((s, _)) => Err(format!("{subject} arrived as {s}, not {expect}")),
        None => Err(format!("{subject} never arrived as {expect} within {} s", probes::DELIVERY.as_secs())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_fills_every_wildcard() {
        assert_eq!(concrete("telemetry.>", "t1"), "telemetry.t1");
        assert_eq!(concrete("domain.*.events.>", "t1"), "domain.t1.events.t1");
        assert_eq!(concrete("leaf.edge-1.telemetry.>", "t1"), "leaf.edge-1.telemetry.t1");
        assert_eq!(concrete("a.b", "t1"), "a.b");
    }

    #[test]
    fn links_derive_from_the_declared_remote() {
        let t: Topology = crate::topology::load_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/failover.yaml"))
            .expect("failover.yaml loads");
        let link = Link::new(&t, &t.leaves[0], 0, true);
        assert_eq!(link.hubs, ["hub-1", "hub-2", "hub-3"]);
        assert_eq!(link.hub_account, "LEAF_EDGE_1");
        assert_eq!(link.peer, "HUB");
        assert_eq!(link.export.map(|f| f.local_subject()).as_deref(), Some("leaf.edge-1.telemetry.>"));
        assert_eq!(link.reconnect(), Duration::from_millis(100));
        assert!(link.cannot_fail_over().is_none());
    }
}
