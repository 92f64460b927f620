//! Upgrade: the lab moved to another nats-server version one node at a time, then rolled back, under load.
//! The acknowledged-write workload runs on the hub's R3 stream and on a file stream of each leaf with
//! JetStream, and core traffic on every declared flow (its loss measured: core NATS is at most once). The
//! hubs go first, then the leaves: the new binary reads the node's config (`-t`) before the running server
//! is stopped in lame duck, the binary swapped, the node started, the lab ready and current again, the
//! node's streams provisioned again (as the NixOS module's provisioning unit is restarted with nats.service:
//! a memory stream does not survive a restart, and the step says it was created again). After every step
//! the mixed-version lab must still be what was declared: every leaf attached, every declared flow
//! crossing, the users' rules holding, the streams and consumers as declared. At the end no acknowledged
//! write may be lost or duplicated; each step's unavailability (the longest stretch without an
//! acknowledgement on the writer it affects) is a metric. The rollback takes the leaves back first, then
//! the hubs, to the versions they started on. A node that will not run on a version (a store a newer
//! version wrote, a broken build) is reported with the server's own words and put back on the version it
//! ran, so the lab stays whole.
//!
//! Runs only when asked for (`--scenario upgrade`, `--upgrade-to V`), on backends that can swap a node's
//! binary (process, netns).

use std::time::{Duration, Instant};

use super::acked_writes::{record_counts, Tally, Target, Workload};
use super::core_traffic::CoreTraffic;
use super::check::{Concluded, Pending, Spec};
use super::mapping::{export_probe, import_probe, Link};
use super::streams::{drift_of, placed};
use super::{security, Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::nemesis::Capability;
use crate::server::{NatsServer, Servers};
use crate::topology::Topology;

const FAMILY: Family = Family::Upgrade;
/// How long the whole lab may take to be ready again after one node's step.
const READY: Duration = Duration::from_secs(60);
/// Beyond the declared lame-duck time, how long a stopping server may take before it is killed.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// The workloads' own bound: they stop by themselves whatever happens.
const MAX_RUN: Duration = Duration::from_secs(30 * 60);

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let t: &Topology = ctx.declared;
    let Some(to) = ctx.lab.upgrade_to.clone() else {
        let spec = Spec::new(FAMILY, "rolling", &[], "rolling upgrade", "the lab upgraded node by node under load");
        ctx.skip(spec, "no version to upgrade to (--upgrade-to V)");
        return;
    };
    let from = ctx.lab.servers.clone();
    let from_list = list(&from.versions());
    let order: Vec<String> = t.hub_names().map(String::from).chain(t.leaves.iter().map(|l| l.name.clone())).collect();
    let expected = format!(
        "from {from_list} to {}: each hub, then each leaf, stopped in lame duck, started on {} and ready again; after every \
         step every leaf is attached, every declared flow crosses, the users' rules hold and the streams are as declared; \
         the acknowledged writes on the hub's R3 stream and each leaf's file stream: 0 lost, 0 duplicated",
        to.version, to.version
    );
    let spec = Spec::new(FAMILY, "rolling", &[&to.version.to_string()], format!("rolling upgrade {from_list} → {}", to.version), expected).needs(Capability::Upgrade);
    let steps: Vec<(String, NatsServer)> = order.iter().map(|n| (n.clone(), to.clone())).collect();
    let upgraded = ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| Rolling { t, steps: &steps }.run(lab, p).await).await;
    if upgraded.is_none() {
        return;
    }
    // Back the way it came: leaves first, then the hubs, each to the version it started on.
    let back: Vec<(String, NatsServer)> = order.iter().rev().map(|n| (n.clone(), from.of(n).clone())).collect();
    let expected = format!(
        "each leaf, then each hub, back to the version it started on ({from_list}), under the same workload and the same \
         checks after every step; a version that refuses what the newer one wrote is reported with the server's words"
    );
    let spec = Spec::new(FAMILY, "rollback", &[&to.version.to_string()], format!("rollback {} → {from_list}", to.version), expected).needs(Capability::Upgrade);
    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| Rolling { t, steps: &back }.run(lab, p).await).await;
}

fn list(v: &[crate::server::Version]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ")
}

/// One pass over the nodes: each moved to its server in turn, the lab checked after each.
struct Rolling<'a> {
    t: &'a Topology,
    steps: &'a [(String, NatsServer)],
}

/// The writers: the hub's R3 stream, and each leaf's own file stream.
pub(super) struct Writers {
    hub: Option<Workload>,
    leaves: Vec<(String, Workload)>,
}

impl Writers {
    pub(super) async fn start(lab: &Lab, t: &Topology) -> Result<Writers, Outcome> {
        let hubs: Vec<String> = t.hub_names().map(String::from).collect();
        let hub = if t.hub.jetstream.is_some() && hubs.len() >= 3 {
            let target = Target { max_run: MAX_RUN, ..Target::hub() };
            Some(Workload::start_on(lab, target, &hubs, &hubs, &t.hub.accounts[0].name).await.map_err(Outcome::Error)?)
        } else {
            None
        };
        let mut leaves = Vec::new();
        for l in t.leaves.iter().filter(|l| l.jetstream.is_some()) {
            let tag = l.name.to_uppercase().replace(['-', '.'], "_");
            let target = Target { stream: format!("NATSLAB_UPGRADE_{tag}"), subject: format!("natslab.upgrade.{}", l.name), replicas: 1, max_run: MAX_RUN };
            let node = [l.name.clone()];
            leaves.push((l.name.clone(), Workload::start_on(lab, target, &node, &node, &l.accounts[0].name).await.map_err(Outcome::Error)?));
        }
        Ok(Writers { hub, leaves })
    }

    /// The writer a step on `node` affects: the hub's for a hub, the leaf's own for a leaf.
    pub(super) fn gap(&self, node: &str, hub: bool, from: Instant, to: Instant) -> Option<Duration> {
        if hub {
            self.hub.as_ref().map(|w| w.longest_gap(from, to))
        } else {
            self.leaves.iter().find(|(n, _)| n == node).map(|(_, w)| w.longest_gap(from, to))
        }
    }

    pub(super) async fn finish(self) -> Result<Vec<(String, Tally)>, Outcome> {
        let mut out = Vec::new();
        if let Some(w) = self.hub {
            out.push(("hub R3 stream".to_string(), w.finish().await.map_err(Outcome::Error)?));
        }
        for (n, w) in self.leaves {
            out.push((format!("{n}'s stream"), w.finish().await.map_err(Outcome::Error)?));
        }
        Ok(out)
    }
}

impl Rolling<'_> {
    async fn run(&self, lab: &mut Lab, p: &mut Pending) -> Concluded {
        let t = self.t;
        lab.wait_ready_all(READY).await.map_err(|e| Outcome::Violated(format!("the lab was not ready before the first step: {e}")))?;
        let writers = Writers::start(lab, t).await?;
        let core = CoreTraffic::start(lab, t).await.map_err(Outcome::Error)?;
        let within = stop_bound(t);
        let mut log = Vec::new();
        let mut bad = Vec::new();
        for (node, server) in self.steps {
            let before = lab.servers.of(node).clone();
            let was = before.version;
            if was == server.version {
                log.push(format!("{node} already on {was}"));
                continue;
            }
            let hub = t.leaf(node).is_none();
            let t0 = Instant::now();
            let moved = lab.upgrade(node, server, within).await;
            let refused = match moved {
                Ok((stopped, started)) => {
                    p.metric_duration(&format!("{node}_stop_ms"), stopped);
                    p.metric_duration(&format!("{node}_start_ms"), started);
                    None
                }
                Err(e) => Some(e),
            };
            if let Some(e) = refused {
                // The new binary refused the config before anything was stopped: the node runs on as it was.
                if let crate::errors::Error::ConfigRejected { output, .. } = &e {
                    bad.push(format!("{node}: {} refuses its config, so it was not stopped — {}", server.version, output.lines().last().unwrap_or_default()));
                    continue;
                }
                // The server would not run there: its own last words say why.
                let tail = lab.log_tail(node, 6);
                let words = tail.lines().rev().find(|l| l.contains("[FTL]") || l.contains("[ERR]")).unwrap_or_default().trim().to_string();
                bad.push(format!("{node} did not come up on {}: {e}{}", server.version, if words.is_empty() { String::new() } else { format!(" — {words}") }));
                // Keep the lab whole for what follows: the node goes back to the version it was on (on a
                // rollback, that is the newer one).
                if lab.upgrade(node, &before, within).await.is_err() {
                    bad.push(format!("{node} could not be put back on {}", before.version));
                }
                continue;
            }
            if let Err(e) = lab.wait_ready_all(READY).await {
                bad.push(format!("after {node} → {}: the lab was not ready again: {e}", server.version));
                continue;
            }
            // As the NixOS module's natslab-provision unit does when nats.service restarts (Requires=): what
            // the restart lost — a memory stream on one server — is created again, and the step says so.
            let again = if hub { t.hub_names().next().unwrap_or(node.as_str()).to_string() } else { node.clone() };
            let mut recreated = Vec::new();
            match lab.provision_node(&again, Instant::now() + READY).await {
                Ok(done) => recreated.extend(done.into_iter().filter(|p| p.stream_action == "created").map(|p| p.stream)),
                Err(e) => bad.push(format!("after {node} → {}: its streams could not be provisioned again: {e}", server.version)),
            }
            let t1 = Instant::now();
            let gap = writers.gap(node, hub, t0, t1);
            if let Some(gap) = gap {
                p.metric_duration(&format!("{node}_unavailable_ms"), gap);
            }
            let problems = mixed_version_checks(lab, t).await;
            log.push(format!(
                "{node} {was} → {} in {} ms{}{}",
                server.version,
                t1.duration_since(t0).as_millis(),
                gap.map_or(String::new(), |g| format!(" (writes paused {} ms)", g.as_millis())),
                if recreated.is_empty() { String::new() } else { format!(", {} created again (memory storage does not survive a restart)", recreated.join(", ")) }
            ));
            bad.extend(problems.into_iter().map(|x| format!("after {node} → {}: {x}", server.version)));
        }
        // A writer that cannot read back is one more problem, not one that hides the others.
        let tallies = match writers.finish().await {
            Ok(t) => t,
            Err(o) => {
                bad.push(format!("the writers could not be read back: {}", o.text()));
                Vec::new()
            }
        };
        let (total, broken) = Tally::sum(&tallies);
        bad.extend(broken);
        record_counts(p, &total);
        // Core NATS is at most once: what the restarts cost on the declared flows is measured, not judged.
        let flows = core.finish().await;
        let (sent, received): (u64, u64) = flows.iter().fold((0, 0), |(s, r), f| (s + f.sent, r + f.received));
        p.metric("core_sent", sent as f64);
        p.metric("core_received", received as f64);
        p.metric("core_lost", sent.saturating_sub(received) as f64);
        let core_seen = if flows.is_empty() {
            String::new()
        } else {
            format!("; core messages on {} declared flows: {sent} sent, {received} received, {} lost across the restarts (at most once: measured)", flows.len(), sent.saturating_sub(received))
        };
        let seen = format!("{}; acknowledged {} writes, lost {}, duplicated {}{core_seen}", log.join("; "), total.acked, total.lost, total.duplicated);
        Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(format!("{}; {seen}", bad.join("; "))) })
    }
}

/// How long a lame-duck stop may take: the declared (or default) duration, plus slack.
fn stop_bound(t: &Topology) -> Duration {
    let ld = t.lame_duck.as_ref();
    let d = ld.and_then(|l| l.duration.as_ref()).map_or(Duration::from_secs(120), |d| d.get());
    d + STOP_SLACK
}

/// What a mixed-version lab must still be: every leaf attached, every declared flow crossing, the users'
/// rules holding, the streams and consumers as declared.
pub(super) async fn mixed_version_checks(lab: &Lab, t: &Topology) -> Vec<String> {
    let mut bad = Vec::new();
    for l in &t.leaves {
        let attached = match lab.monitor_url(&l.name) {
            Ok(url) => lab.monitor.uplinks(url).await.map(|u| u.len()).unwrap_or(0),
            Err(_) => 0,
        };
        if attached < l.remotes.len() {
            bad.push(format!("{} has {attached} of its {} hub links", l.name, l.remotes.len()));
        }
        for r in 0..l.remotes.len() {
            let link = Link::of(t, l, r);
            for f in &link.remote.exports {
                if let Err(o) | Ok(o @ (Outcome::Violated(_) | Outcome::Error(_))) = export_probe(lab, &link, f).await {
                    bad.push(format!("export {} {}: {}", link.label(), f.subject, o.text()));
                }
            }
            for f in &link.remote.imports {
                if let Err(o) | Ok(o @ (Outcome::Violated(_) | Outcome::Error(_))) = import_probe(lab, &link, f).await {
                    bad.push(format!("import {} {}: {}", link.label(), f.subject, o.text()));
                }
            }
        }
    }
    bad.extend(security::rules_still_hold(lab, t).await);
    for s in placed(t) {
        match drift_of(lab, &s).await {
            Ok(d) => bad.extend(d),
            Err(o) => bad.push(format!("{}: {}", s.label(), o.text())),
        }
    }
    bad
}

/// The servers a lab runs, in a line.
pub fn describe(servers: &Servers) -> String {
    list(&servers.versions())
}
