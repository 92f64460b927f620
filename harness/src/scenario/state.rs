//! State: what each server actually has, read from its monitoring endpoints and JetStream API and compared
//! with the declaration. Probes (the mapping and security families) show what a lab *does* for the
//! subjects they try; this shows what it *is*, so a rule no probe guesses is still caught:
//!
//! - accounts on every node, and each account's exports and imports (`/accountz`): anything extra,
//!   missing or wider is named by account, subject and direction;
//! - leaf links, both ends (`/leafz`): one per declared remote, in the declared accounts on both sides,
//!   no undeclared leaf on any hub; the remote as configured (`/varz .leaf.remotes`: local account, hubs,
//!   deny lists); the interest the hub sends up each link (`/leafz?subs=1`) covered by what may cross;
//! - TLS per port, limits, ping settings and JetStream settings (`/varz`);
//! - each declared user's permissions as the server holds them (`$SYS.REQ.USER.INFO`, where the user may
//!   ask);
//! - no stream or durable consumer the topology does not declare.
//!
//! A node that does not answer makes its own checks violated and leaves the rest alone.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::check::{Concluded, Pending, Spec};
use super::{Ctx, Family, Outcome};
use crate::lab::Lab;
use crate::plan::SYSTEM_ACCOUNT;
use crate::probe::js::{self, API};
use crate::topology::flows::{flows, AccountFlows};
use crate::topology::subject::covers;
use crate::topology::{Leaf, Limits, Permissions, Rule, SyncInterval, Topology};

const FAMILY: Family = Family::State;

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let t: &Topology = ctx.declared;
    for node in nodes(t) {
        accounts_check(ctx, t, &node).await;
    }
    for l in &t.leaves {
        links_check(ctx, t, l).await;
        remotes_check(ctx, l).await;
        for r in 0..l.remotes.len() {
            interest_check(ctx, t, l, r).await;
        }
    }
    undeclared_links_check(ctx, t).await;
    for node in nodes(t) {
        version_check(ctx, t, &node).await;
        tls_check(ctx, t, &node).await;
        limits_check(ctx, t, &node).await;
        jetstream_check(ctx, t, &node).await;
    }
    permissions_checks(ctx, t).await;
    streams_checks(ctx, t).await;
}

fn spec(kind: &str, parts: &[&str], name: String, expected: String) -> Spec {
    Spec::new(FAMILY, kind, parts, name, expected)
}

/// A declared node: a hub or a leaf.
struct Node<'t> {
    name: String,
    leaf: Option<&'t Leaf>,
}

fn nodes(t: &Topology) -> Vec<Node<'_>> {
    t.hub_names().map(|h| Node { name: h.to_string(), leaf: None }).chain(t.leaves.iter().map(|l| Node { name: l.name.clone(), leaf: Some(l) })).collect()
}

/// A monitoring endpoint of a declared node; a node that does not answer is a violation of its checks.
async fn get(lab: &Lab, node: &str, path: &str) -> Result<Value, Outcome> {
    let base = lab.monitor_url(node).map_err(|e| Outcome::Violated(format!("declared node {node} is not reachable: {e}")))?;
    lab.monitor.get(base, path).await.map_err(|e| Outcome::Violated(format!("{node} does not answer {path}: {e}")))
}

fn verdict(bad: Vec<String>, good: String) -> Outcome {
    if bad.is_empty() {
        Outcome::Pass(good)
    } else {
        Outcome::Violated(bad.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Accounts, exports and imports

/// One account as the server holds it: its exports and its imports (exporter by name, subject, local
/// subject), less the imports every server adds from its system account.
#[derive(Debug, Default, PartialEq)]
struct Held {
    exports: BTreeSet<String>,
    imports: BTreeSet<(String, String, String)>,
    /// Subject mappings (`mappings`): a topology declares none.
    mappings: BTreeSet<String>,
}

/// The imports nats-server gives every account from the system account (account-scoped CONNZ/STATZ/
/// USER.INFO, and the JetStream API in operator mode). Anything else from it is someone's doing.
fn implicit(subject: &str) -> bool {
    subject.starts_with("$SYS.REQ.ACCOUNT.") || subject.starts_with("$SYS.REQ.USER.") || subject == "$JS.API.>"
}

/// In operator mode servers name accounts by public key: the plan's operator material names them back.
fn key_names(lab: &Lab) -> BTreeMap<String, String> {
    lab.plan.secrets.operator.as_ref().map(|op| op.accounts.iter().map(|(name, (key, _))| (key.clone(), name.clone())).collect()).unwrap_or_default()
}

fn operator_mode(lab: &Lab) -> bool {
    lab.plan.secrets.operator.is_some()
}

/// Every account on a node, by name (operator mode lists public keys: the operator material or their
/// `name_tag` names them).
async fn held_accounts(lab: &Lab, node: &str) -> Result<BTreeMap<String, Held>, Outcome> {
    let keys = key_names(lab);
    let list = get(lab, node, "/accountz").await?;
    let system = list.get("system_account").and_then(Value::as_str).unwrap_or(SYSTEM_ACCOUNT).to_string();
    let ids: Vec<String> = list.get("accounts").and_then(Value::as_array).into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
    let mut details = BTreeMap::new();
    let mut names = BTreeMap::new();
    for id in &ids {
        let d = get(lab, node, &format!("/accountz?acc={id}")).await?;
        let d = d.get("account_detail").cloned().unwrap_or_default();
        // A placeholder (an operator-mode server knows of the account, has not loaded its JWT) holds nothing yet.
        if d.get("complete").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let tag = d.get("name_tag").and_then(Value::as_str).filter(|s| !s.is_empty());
        let name = keys.get(id).map(String::as_str).or(tag).unwrap_or(id).to_string();
        names.insert(id.clone(), name);
        details.insert(id.clone(), d);
    }
    // An import may name an account this server has not loaded yet (a placeholder): the operator material
    // still names it.
    let name_of = |id: &str| names.get(id).or_else(|| keys.get(id)).cloned().unwrap_or_else(|| id.to_string());
    let mut out = BTreeMap::new();
    for (id, d) in details {
        let mut held = Held::default();
        for e in d.get("exports").and_then(Value::as_array).into_iter().flatten() {
            let subject = e.get("subject").and_then(Value::as_str).unwrap_or_default();
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("stream");
            // The system account's own services (monitoring requests, the JetStream API) come with it.
            if id == system && kind == "service" && (subject.starts_with("$SYS.") || subject.starts_with("$JS.")) {
                continue;
            }
            held.exports.insert(if kind == "stream" { subject.to_string() } else { format!("{subject} ({kind})") });
        }
        for i in d.get("imports").and_then(Value::as_array).into_iter().flatten() {
            let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let (from, subject) = (s("account"), s("subject"));
            if from == system && implicit(&subject) {
                continue;
            }
            let local = Some(s("local_subject")).filter(|l| !l.is_empty()).unwrap_or_else(|| subject.clone());
            let subject = if s("type") == "service" { format!("{subject} (service)") } else { subject };
            held.imports.insert((name_of(&from), subject, local));
        }
        if let Some(m) = d.get("mappings").and_then(Value::as_object) {
            // A JetStream domain maps `$JS.<domain>.API.…` onto the account's own API by itself.
            let ours = m.iter().filter(|(from, _)| !from.starts_with("$JS."));
            held.mappings.extend(ours.map(|(from, to)| format!("{from} → {to}")));
        }
        out.insert(name_of(&id), held);
    }
    Ok(out)
}

/// What the declaration says a node's accounts hold: hubs per `topology::flows`, leaves nothing.
fn declared_accounts(t: &Topology, node: &Node<'_>) -> BTreeMap<String, Held> {
    let mut out: BTreeMap<String, Held> = BTreeMap::new();
    match node.leaf {
        Some(l) => {
            for a in &l.accounts {
                out.entry(a.name.clone()).or_default();
            }
        }
        None => {
            for a in &t.hub.accounts {
                out.entry(a.name.clone()).or_default();
            }
            for (name, f) in flows(t) {
                out.insert(name, held_of(&f));
            }
        }
    }
    out.entry(SYSTEM_ACCOUNT.into()).or_default();
    out
}

fn held_of(f: &AccountFlows) -> Held {
    Held {
        exports: f.exports.iter().cloned().collect(),
        imports: f.imports.iter().map(|i| (i.from.clone(), i.subject.clone(), i.local_subject.clone().unwrap_or_else(|| i.subject.clone()))).collect(),
        mappings: BTreeSet::new(),
    }
}

async fn accounts_check(ctx: &mut Ctx<'_, '_>, t: &Topology, node: &Node<'_>) {
    let want = declared_accounts(t, node);
    let names: Vec<&str> = want.keys().map(String::as_str).collect();
    let spec = spec(
        "accounts",
        &[&node.name],
        format!("accounts on {}", node.name),
        format!(
            "/accountz on {} lists exactly the accounts {} (and the global $G), each with exactly its declared exports and imports \
             (beside the system account's own)",
            node.name,
            names.join(", ")
        ),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let got = held_accounts(lab, &node.name).await?;
        let mut bad = Vec::new();
        // An operator-mode server resolves accounts when first used: one it has not loaded is not missing.
        let lazy = operator_mode(lab) && node.leaf.is_none();
        let unloaded: Vec<&str> = want.keys().filter(|n| !got.contains_key(*n)).map(String::as_str).collect();
        if !lazy {
            for name in &unloaded {
                bad.push(format!("account {name} is missing"));
            }
        }
        for name in got.keys().filter(|n| !want.contains_key(*n) && *n != "$G") {
            bad.push(format!("account {name} is not declared"));
        }
        for (name, w) in &want {
            let Some(g) = got.get(name) else { continue };
            bad.extend(account_diff(name, w, g));
        }
        let exports: usize = got.values().map(|h| h.exports.len()).sum();
        let imports: usize = got.values().map(|h| h.imports.len()).sum();
        let note = if lazy && !unloaded.is_empty() { format!(" ({} not loaded yet: operator mode resolves accounts on first use)", unloaded.join(", ")) } else { String::new() };
        Ok(verdict(bad, format!("{} accounts, {exports} exports and {imports} imports, all as declared{note}", got.len())))
    })
    .await;
}

/// Differences of one account, named by account, subject and direction.
fn account_diff(name: &str, want: &Held, got: &Held) -> Vec<String> {
    let mut bad = Vec::new();
    for e in got.exports.difference(&want.exports) {
        bad.push(format!("{name} exports {e}, which is not declared"));
    }
    for e in want.exports.difference(&got.exports) {
        bad.push(format!("{name} does not export {e}"));
    }
    for (from, subject, local) in got.imports.difference(&want.imports) {
        bad.push(format!("{name} imports {subject} from {from} as {local}, which is not declared"));
    }
    for (from, subject, local) in want.imports.difference(&got.imports) {
        bad.push(format!("{name} does not import {subject} from {from} as {local}"));
    }
    for m in got.mappings.difference(&want.mappings) {
        bad.push(format!("{name} maps {m}, which is not declared"));
    }
    bad
}

// ---------------------------------------------------------------------------------------------------------
// Leaf links

/// A leaf's links as both ends report them: from the leaf, (hub, local account); from the hubs,
/// (hub, hub account) of every connection named after the leaf.
async fn links_check(ctx: &mut Ctx<'_, '_>, t: &Topology, l: &Leaf) {
    let declared: Vec<(String, String)> = (0..l.remotes.len()).map(|r| (l.remote_account(&l.remotes[r]).to_string(), l.hub_account(r))).collect();
    let described: Vec<String> = declared.iter().map(|(local, hub)| format!("{local} → {hub}")).collect();
    let spec = spec(
        "leaf-links",
        &[&l.name],
        format!("leaf links of {}", l.name),
        format!("{} has exactly one link per declared remote ({}), bound to the declared account on each side", l.name, described.join(", ")),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let base = lab.monitor_url(&l.name).map_err(|e| Outcome::Violated(format!("{} is not reachable: {e}", l.name)))?;
        let up = lab.monitor.uplinks(base).await.map_err(|e| Outcome::Violated(format!("{} does not answer /leafz: {e}", l.name)))?;
        let keys = key_names(lab);
        let mut on_hubs = Vec::new();
        for h in t.hub_names() {
            match lab.monitor_url(h) {
                Ok(b) => {
                    if let Ok(ls) = lab.monitor.leafs(b).await {
                        on_hubs.extend(ls.into_iter().filter(|(n, _)| *n == l.name).map(|(_, a)| (h.to_string(), keys.get(&a).cloned().unwrap_or(a))));
                    }
                }
                Err(_) => continue,
            }
        }
        let mut want_local: Vec<&str> = declared.iter().map(|(a, _)| a.as_str()).collect();
        let mut want_hub: Vec<&str> = declared.iter().map(|(_, a)| a.as_str()).collect();
        let mut got_local: Vec<&str> = up.iter().map(|(_, a)| a.as_str()).collect();
        let mut got_hub: Vec<&str> = on_hubs.iter().map(|(_, a)| a.as_str()).collect();
        for v in [&mut want_local, &mut want_hub, &mut got_local, &mut got_hub] {
            v.sort();
        }
        let mut bad = Vec::new();
        if got_local != want_local {
            bad.push(format!("{}'s links leave from accounts [{}], declared [{}]", l.name, got_local.join(", "), want_local.join(", ")));
        }
        if got_hub != want_hub {
            let seen: Vec<String> = on_hubs.iter().map(|(h, a)| format!("{a} on {h}")).collect();
            bad.push(format!(
                "{}'s links land in [{}], declared [{}]",
                l.name,
                if seen.is_empty() { "nothing".to_string() } else { seen.join(", ") },
                want_hub.join(", ")
            ));
        }
        let seen: Vec<String> = on_hubs.iter().map(|(h, a)| format!("{a} on {h}")).collect();
        Ok(verdict(bad, format!("{} link(s): {}", on_hubs.len(), seen.join(", "))))
    })
    .await;
}

/// No hub holds a leaf connection the topology does not declare.
async fn undeclared_links_check(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let spec = spec(
        "leaf-links",
        &["undeclared"],
        "no undeclared leaf links".into(),
        "every leaf connection on every hub comes from a declared leaf (by server name)".into(),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let mut bad = Vec::new();
        let mut n = 0;
        for h in t.hub_names() {
            let base = match lab.monitor_url(h) {
                Ok(b) => b,
                Err(e) => {
                    bad.push(format!("{h} is not reachable: {e}"));
                    continue;
                }
            };
            match lab.monitor.leafs(base).await {
                Ok(ls) => {
                    n += ls.len();
                    for (name, account) in ls.iter().filter(|(name, _)| t.leaf(name).is_none()) {
                        bad.push(format!("{h} holds a link from undeclared leaf {name:?} in account {account}"));
                    }
                }
                Err(e) => bad.push(format!("{h} does not answer /leafz: {e}")),
            }
        }
        Ok(verdict(bad, format!("{n} leaf connection(s) on the hubs, all from declared leaves")))
    })
    .await;
}

/// A leaf's remotes as it is configured (`/varz .leaf.remotes`): local account, hub URLs, deny lists.
async fn remotes_check(ctx: &mut Ctx<'_, '_>, l: &Leaf) {
    let spec = spec(
        "remotes",
        &[&l.name],
        format!("remotes of {}", l.name),
        format!("{} is configured with exactly its {} declared remote(s): local account, hubs and deny lists as declared", l.name, l.remotes.len()),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let varz = get(lab, &l.name, "/varz").await?;
        let got: Vec<Value> = varz.pointer("/leaf/remotes").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut bad = Vec::new();
        if got.len() != l.remotes.len() {
            bad.push(format!("{} remote(s) configured, {} declared", got.len(), l.remotes.len()));
        }
        // Which hub an URL dials, as this lab addresses them (proxies included).
        let hub_of = |url: &str| -> String {
            let hostport = url.rsplit("://").next().unwrap_or(url);
            lab.plan.hubs().find(|h| lab.plan.dial(&l.name, h, h.addr.leaf) == hostport).map_or_else(|| url.to_string(), |h| h.name.clone())
        };
        for (i, (r, g)) in l.remotes.iter().zip(&got).enumerate() {
            let label = l.remote_label(i);
            let local = g.get("local_account").and_then(Value::as_str).unwrap_or_default();
            if local != l.remote_account(r) {
                bad.push(format!("{label} binds local account {local}, declared {}", l.remote_account(r)));
            }
            let hubs: Vec<String> = g.get("urls").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(hub_of).collect();
            if hubs != r.hubs {
                bad.push(format!("{label} dials [{}], declared [{}]", hubs.join(", "), r.hubs.join(", ")));
            }
            for (key, want) in [("exports", &r.deny_exports), ("imports", &r.deny_imports)] {
                let have: BTreeSet<String> = g.pointer(&format!("/deny/{key}")).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
                let want: BTreeSet<String> = want.iter().cloned().collect();
                if have != want {
                    bad.push(format!("{label} deny_{key} is [{}], declared [{}]", join(&have), join(&want)));
                }
            }
        }
        Ok(verdict(bad, format!("{} remote(s) as declared", got.len())))
    })
    .await;
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The interest a hub sends up a leaf link (what the leaf will forward) is covered by what may cross: a
/// declared export of the remote, or a hub stream's subjects in the link's account.
async fn interest_check(ctx: &mut Ctx<'_, '_>, t: &Topology, l: &Leaf, r: usize) {
    let label = l.remote_label(r);
    let local = l.remote_account(&l.remotes[r]).to_string();
    let link_account = l.hub_account(r);
    let mut may: Vec<String> = l.remotes[r].exports.iter().map(|f| f.subject.clone()).collect();
    for s in t.hub.streams.iter().filter(|s| s.account.as_deref().unwrap_or(&t.hub.accounts[0].name) == link_account) {
        may.extend(s.subjects.iter().cloned());
    }
    let spec = spec(
        "leaf-interest",
        &[&label],
        format!("interest up {label}"),
        format!(
            "every subject the hub asks {} for over this link (/leafz?subs=1 on the leaf, account {local}) is covered by [{}] \
             (system and reply subjects aside)",
            l.name,
            may.join(", ")
        ),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let leafz = get(lab, &l.name, "/leafz?subs=1").await?;
        let links: Vec<&Value> = leafz
            .get("leafs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|x| x.get("is_spoke").and_then(Value::as_bool).unwrap_or(false) && x.get("account").and_then(Value::as_str) == Some(local.as_str()))
            .collect();
        if links.is_empty() {
            return Ok(Outcome::Violated(format!("{} has no link from account {local}", l.name)));
        }
        let mut bad = BTreeSet::new();
        let mut n = 0;
        for link in links {
            for s in link.get("subscriptions_list").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if s.starts_with('$') || s.starts_with("_INBOX.") || s.starts_with("_R_.") || s.starts_with("natslab.") {
                    continue;
                }
                n += 1;
                if !may.iter().any(|m| covers(m, s)) {
                    bad.insert(format!("the hub asks {} for {s} over {label}, which no declared export or link-account stream covers", l.name));
                }
            }
        }
        Ok(verdict(bad.into_iter().collect(), format!("{n} subject(s) of interest, all covered")))
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// Server settings

async fn tls_check(ctx: &mut Ctx<'_, '_>, t: &Topology, node: &Node<'_>) {
    let s = &t.security;
    let mtls = s.auth == crate::topology::AuthMode::Mtls;
    let mut want = vec![("tls_required", s.tls), ("tls_verify", s.tls && s.verify_clients)];
    if node.leaf.is_none() {
        want.push(("leaf.tls_required", s.tls));
        want.push(("leaf.tls_verify", s.tls && mtls));
        if t.hub.nodes.len() > 1 {
            want.push(("cluster.tls_required", s.tls));
        }
    }
    let described: Vec<String> = want.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let spec = spec("tls", &[&node.name], format!("tls settings of {}", node.name), format!("/varz on {}: {}", node.name, described.join(", ")));
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let varz = get(lab, &node.name, "/varz").await?;
        let mut bad = Vec::new();
        for (key, want) in &want {
            let path = format!("/{}", key.replace('.', "/"));
            let got = varz.pointer(&path).and_then(Value::as_bool).unwrap_or(false);
            if got != *want {
                bad.push(format!("{key}: declared {want}, the server has {got}"));
            }
        }
        Ok(verdict(bad, "every port's TLS as declared".into()))
    })
    .await;
}

/// nats-server's defaults, for limits a topology does not declare.
const DEFAULTS: [(&str, u64); 6] = [
    ("max_payload", 1024 * 1024),
    ("max_connections", 64 * 1024),
    ("max_pending", 64 * 1024 * 1024),
    ("max_control_line", 4096),
    ("write_deadline", 10_000_000_000),
    ("ping_max", 2),
];
const DEFAULT_PING_INTERVAL_NS: u64 = 120_000_000_000;
/// JetStream's default file-store sync interval (2 min).
const DEFAULT_SYNC_INTERVAL_NS: u64 = 120_000_000_000;

fn declared_limits(l: Option<&Limits>, ping_interval: Option<u64>, ping_max: Option<u32>) -> Vec<(&'static str, u64)> {
    let l = l.cloned().unwrap_or_default();
    let declared: [(&str, Option<u64>); 6] = [
        ("max_payload", l.max_payload.map(|s| s.0)),
        ("max_connections", l.max_connections),
        ("max_pending", l.max_pending.map(|s| s.0)),
        ("max_control_line", l.max_control_line.map(|s| s.0)),
        ("write_deadline", l.write_deadline.as_ref().map(|d| d.get().as_nanos() as u64)),
        ("ping_max", ping_max.map(u64::from)),
    ];
    let mut out: Vec<(&str, u64)> = declared.iter().zip(DEFAULTS).map(|((k, v), (_, d))| (*k, v.unwrap_or(d))).collect();
    out.push(("ping_interval", ping_interval.unwrap_or(DEFAULT_PING_INTERVAL_NS)));
    if let Some(m) = l.max_subscriptions {
        out.push(("max_subscriptions", m));
    }
    out
}

/// The nats-server version a node runs (`/varz .version`): the one natslab started it on, or on an
/// attached lab the one the topology declares (nothing to compare where it declares none).
async fn version_check(ctx: &mut Ctx<'_, '_>, t: &Topology, node: &Node<'_>) {
    let declared = crate::topology::versions::declared_version(t, &node.name).and_then(|(v, _)| v.parse::<crate::server::Version>().ok());
    let want = if ctx.lab.is_attached() { declared } else { Some(ctx.lab.servers.of(&node.name).version) };
    let Some(want) = want else { return };
    let spec = spec("version", &[&node.name], format!("nats-server version of {}", node.name), format!("/varz on {} reports version {want}", node.name));
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let varz = get(lab, &node.name, "/varz").await?;
        let got = varz.get("version").and_then(Value::as_str).unwrap_or_default();
        Ok(if got.parse::<crate::server::Version>().ok() == Some(want) {
            Outcome::Pass(format!("{} runs {got}", node.name))
        } else {
            Outcome::Violated(format!("{} runs {}, not {want}", node.name, if got.is_empty() { "an unknown version" } else { got }))
        })
    })
    .await;
}

async fn limits_check(ctx: &mut Ctx<'_, '_>, t: &Topology, node: &Node<'_>) {
    let want = match node.leaf {
        Some(l) => declared_limits(l.limits.as_ref(), l.ping_interval.as_ref().map(|d| d.get().as_nanos() as u64), l.ping_max),
        None => declared_limits(t.hub.limits.as_ref(), None, None),
    };
    let described: Vec<String> = want.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let spec = spec(
        "limits",
        &[&node.name],
        format!("limits of {}", node.name),
        format!("/varz on {}: {} (declared, else the server's defaults; durations in ns)", node.name, described.join(", ")),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let varz = get(lab, &node.name, "/varz").await?;
        let mut bad = Vec::new();
        for (key, want) in &want {
            let got = varz.get(*key).and_then(Value::as_u64);
            if got != Some(*want) {
                bad.push(format!("{key}: declared {want}, the server has {}", got.map_or("nothing".into(), |g| g.to_string())));
            }
        }
        Ok(verdict(bad, format!("{} settings as declared", want.len())))
    })
    .await;
}

async fn jetstream_check(ctx: &mut Ctx<'_, '_>, t: &Topology, node: &Node<'_>) {
    let js = match node.leaf {
        Some(l) => l.jetstream.as_ref(),
        None => t.hub.jetstream.as_ref(),
    };
    let mut want = Map::new();
    if let Some(j) = js {
        want.insert("domain".into(), json!(j.domain));
        if let Some(m) = j.max_memory_store {
            want.insert("max_memory".into(), json!(m.0));
        }
        if let Some(m) = j.max_file_store {
            want.insert("max_storage".into(), json!(m.0));
        }
        let sync = match &j.sync_interval {
            None => json!(DEFAULT_SYNC_INTERVAL_NS),
            Some(SyncInterval::Every(d)) => json!(d.get().as_nanos() as u64),
            Some(SyncInterval::Always) => json!("always"),
        };
        want.insert("sync_interval".into(), sync);
    }
    let expected = match js {
        Some(_) => format!("/varz on {} has JetStream with {}", node.name, Value::Object(want.clone())),
        None => format!("/varz on {} has no JetStream (none declared)", node.name),
    };
    let spec = spec("jetstream", &[&node.name], format!("jetstream settings of {}", node.name), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let varz = get(lab, &node.name, "/varz").await?;
        let config = varz.pointer("/jetstream/config").filter(|c| c.as_object().is_some_and(|o| !o.is_empty()));
        let mut bad = Vec::new();
        match (js, config) {
            (None, None) => {}
            (None, Some(c)) => bad.push(format!("JetStream is on (store {}), none is declared", c.get("store_dir").unwrap_or(&Value::Null))),
            (Some(_), None) => bad.push("JetStream is off, it is declared".into()),
            (Some(_), Some(c)) => {
                for (k, w) in &want {
                    let g = c.get(k).cloned().unwrap_or(Value::Null);
                    let same = match (w, &g) {
                        // "always" is reported as a zero interval with sync_always.
                        (Value::String(s), _) if s == "always" => c.get("sync_always").and_then(Value::as_bool) == Some(true),
                        (Value::Null, Value::String(s)) => s.is_empty(),
                        _ => *w == g,
                    };
                    if !same {
                        bad.push(format!("{k}: declared {w}, the server has {g}"));
                    }
                }
            }
        }
        Ok(verdict(bad, "JetStream as declared".into()))
    })
    .await;
}

type Map = serde_json::Map<String, Value>;

// ---------------------------------------------------------------------------------------------------------
// Permissions

const USER_INFO: &str = "$SYS.REQ.USER.INFO";

async fn permissions_checks(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let mut users = Vec::new();
    let hub = t.hub_names().next().map(String::from);
    for a in &t.hub.accounts {
        for u in &a.users {
            users.push((hub.clone(), a.name.clone(), u.user.clone(), u.permissions.clone()));
        }
    }
    for l in &t.leaves {
        for a in &l.accounts {
            for u in &a.users {
                users.push((Some(l.name.clone()), a.name.clone(), u.user.clone(), u.permissions.clone()));
            }
        }
    }
    for (node, account, user, perms) in users {
        let Some(node) = node else { continue };
        let scope = if t.leaf(&node).is_some() { node.clone() } else { "hub".into() };
        let spec = spec(
            "permissions",
            &[&scope, &account, &user],
            format!("permissions of {scope}/{account}/{user}"),
            format!("{USER_INFO} as {user} answers with exactly the declared permissions ({})", describe(perms.as_ref())),
        );
        let may_ask = perms.as_ref().and_then(|p| p.publish.as_ref()).is_none_or(|r| permits(r, USER_INFO));
        if !may_ask {
            ctx.skip(spec, format!("{user} may not publish {USER_INFO}, so the server will not tell it its permissions (a blind spot: no monitoring endpoint lists them)"));
            continue;
        }
        ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| permissions_body(lab, &node, &account, &user, perms.as_ref()).await).await;
    }
}

fn describe(p: Option<&Permissions>) -> String {
    match p {
        None => "none: full access".into(),
        Some(p) => serde_json::to_string(p).unwrap_or_default(),
    }
}

fn permits(r: &Rule, subject: &str) -> bool {
    (r.allow.is_empty() || r.allow.iter().any(|a| crate::topology::subject::matches(a, subject))) && !r.deny.iter().any(|d| crate::topology::subject::matches(d, subject))
}

async fn permissions_body(lab: &Lab, node: &str, account: &str, user: &str, perms: Option<&Permissions>) -> Concluded {
    let access = lab.access(node, account, user).ok_or_else(|| Outcome::Error(format!("the plan has no credential for {account}/{user} on {node}")))?;
    let c = access.connect("natslab-state").await.map_err(|e| Outcome::Violated(format!("{user} cannot connect to {node}: {e}")))?;
    // The leaf's hub answers too, about the leaf link's own user: only the answer about this user counts.
    let keys = key_names(lab);
    let inbox = c.new_inbox();
    let mut sub = c.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
    c.publish_with_reply(USER_INFO.to_string(), inbox, "".into()).await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let v = loop {
        let m = match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut sub)).await {
            Ok(Some(m)) => m,
            _ => return Err(Outcome::Error(format!("no server answered {USER_INFO} about {user} within 5 s"))),
        };
        let v: Value = serde_json::from_slice(&m.payload).map_err(|e| format!("{USER_INFO} answered {e}"))?;
        // By account: in operator mode the user is named by its public key.
        let of = v.pointer("/data/account").and_then(Value::as_str).unwrap_or_default();
        if of == account || keys.get(of).map(String::as_str) == Some(account) {
            break v;
        }
    };
    let got = v.pointer("/data/permissions").cloned().unwrap_or(Value::Null);
    let bad = permission_diff(perms, &got);
    Ok(verdict(bad, format!("the server holds {}", if got.is_null() { "no restrictions".to_string() } else { got.to_string() })))
}

fn permission_diff(want: Option<&Permissions>, got: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for (dir, rule) in [("publish", want.and_then(|p| p.publish.as_ref())), ("subscribe", want.and_then(|p| p.subscribe.as_ref()))] {
        for (kind, list) in [("allow", rule.map(|r| &r.allow)), ("deny", rule.map(|r| &r.deny))] {
            let want: BTreeSet<String> = list.into_iter().flatten().cloned().collect();
            let have: BTreeSet<String> = got.pointer(&format!("/{dir}/{kind}")).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
            for s in have.difference(&want) {
                bad.push(format!("{dir} {kind} has {s}, not declared"));
            }
            for s in want.difference(&have) {
                bad.push(format!("{dir} {kind} lacks declared {s}"));
            }
        }
    }
    bad
}

// ---------------------------------------------------------------------------------------------------------
// Streams and consumers

/// Names the harness gives its own temporary streams and consumers.
fn harness_owned(name: &str) -> bool {
    name.starts_with("NATSLAB_") || name.starts_with("natslab-")
}

async fn streams_checks(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let mut places: Vec<(String, Option<&Leaf>, String)> = Vec::new();
    if t.hub.jetstream.is_some() {
        let mut accounts: BTreeSet<String> = t.hub.accounts.iter().map(|a| a.name.clone()).collect();
        accounts.extend(t.hub.streams.iter().filter_map(|s| s.account.clone()));
        for a in accounts {
            places.push(("hub".into(), None, a));
        }
    }
    for l in t.leaves.iter().filter(|l| l.jetstream.is_some()) {
        for a in &l.accounts {
            places.push((l.name.clone(), Some(l), a.name.clone()));
        }
    }
    for (label, leaf, account) in places {
        let (streams, default) = match leaf {
            Some(l) => (&l.streams, &l.accounts[0].name),
            None => (&t.hub.streams, &t.hub.accounts[0].name),
        };
        let declared: BTreeMap<String, BTreeSet<String>> = streams
            .iter()
            .filter(|s| s.account.as_ref().unwrap_or(default) == &account)
            .map(|s| (s.name.clone(), s.consumers.iter().map(|c| c.name.clone()).collect()))
            .collect();
        let names: Vec<&str> = declared.keys().map(String::as_str).collect();
        let spec = spec(
            "streams",
            &[&label, &account],
            format!("streams of {label}/{account}"),
            format!(
                "account {account} on {label} holds no stream beyond [{}] and no durable consumer beyond the declared ones (the harness's own aside)",
                names.join(", ")
            ),
        );
        let node = leaf.map(|l| l.name.clone());
        ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| streams_body(lab, node.as_deref(), &account, &declared).await).await;
    }
}

async fn streams_body(lab: &Lab, node: Option<&str>, account: &str, declared: &BTreeMap<String, BTreeSet<String>>) -> Concluded {
    let c = match node {
        Some(n) => super::probes::connect(lab, n, account).await?,
        None => super::streams::hub_client(lab, account, None).await?,
    };
    let names = match js::stream_names(&c, API).await {
        Ok(n) => n,
        // An account without JetStream holds no streams: right exactly when it declares none.
        Err(e) if e.contains("10039") && declared.is_empty() => return Ok(Outcome::Pass(format!("JetStream is off for {account}, which declares no stream"))),
        Err(e) if e.contains("10039") => return Ok(Outcome::Violated(format!("JetStream is off for {account}, which declares streams: {e}"))),
        Err(e) => return Err(Outcome::Error(e)),
    };
    let mut bad = Vec::new();
    let mut consumers = 0;
    for s in names.iter().filter(|s| !harness_owned(s)) {
        let Some(want) = declared.get(s) else {
            bad.push(format!("stream {s} is not declared"));
            continue;
        };
        for name in js::consumer_names(&c, API, s).await.map_err(Outcome::Error)? {
            if harness_owned(&name) || want.contains(&name) {
                consumers += 1;
                continue;
            }
            // Sources and mirrors elsewhere read through ephemeral consumers: only durable ones are declared.
            let info = js::consumer_info(&c, API, s, &name).await.unwrap_or_default();
            if info.pointer("/config/durable_name").and_then(Value::as_str).is_some_and(|d| !d.is_empty()) {
                bad.push(format!("stream {s} has durable consumer {name}, which is not declared"));
            }
        }
    }
    Ok(verdict(bad, format!("{} stream(s), {consumers} declared consumer(s), nothing undeclared", names.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(exports: &[&str], imports: &[(&str, &str, &str)]) -> Held {
        Held {
            exports: exports.iter().map(|s| s.to_string()).collect(),
            imports: imports.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect(),
            mappings: BTreeSet::new(),
        }
    }

    #[test]
    fn account_differences_name_account_subject_and_direction() {
        let want = held(&["telemetry.>"], &[("HUB", "commands.>", "hub.commands.>")]);
        let got = held(&["telemetry.>", "secrets.>"], &[("HUB", "commands.>", "commands.>")]);
        assert_eq!(
            account_diff("LEAF_A", &want, &got),
            vec![
                "LEAF_A exports secrets.>, which is not declared".to_string(),
                "LEAF_A imports commands.> from HUB as commands.>, which is not declared".to_string(),
                "LEAF_A does not import commands.> from HUB as hub.commands.>".to_string(),
            ]
        );
        assert!(account_diff("X", &want, &want).is_empty());
    }

    #[test]
    fn declared_accounts_of_the_hub_follow_the_flows() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/leaf-peers.yaml");
        let t = crate::topology::load_file(&path).unwrap();
        let hub = Node { name: "hub-1".into(), leaf: None };
        let d = declared_accounts(&t, &hub);
        assert!(d.contains_key("SYS") && d.contains_key("HUB") && d.contains_key("LEAF_PEER_A"), "{:?}", d.keys());
        assert!(d["LEAF_PEER_A"].imports.iter().any(|(from, _, local)| from == "HUB" && local.starts_with("hub.")), "{:?}", d["LEAF_PEER_A"]);
        let leaf = Node { name: "peer-a".into(), leaf: t.leaf("peer-a") };
        assert!(declared_accounts(&t, &leaf).values().all(|h| *h == Held::default()));
    }

    #[test]
    fn permissions_compare_both_ways() {
        let p: Permissions = serde_yaml::from_str("publish: { allow: ['a.>'] }\nsubscribe: { deny: ['b.>'] }").unwrap();
        let got = json!({ "publish": { "allow": ["a.>", "c.>"] }, "subscribe": {} });
        assert_eq!(permission_diff(Some(&p), &got), vec!["publish allow has c.>, not declared".to_string(), "subscribe deny lacks declared b.>".to_string()]);
        assert!(permission_diff(None, &Value::Null).is_empty());
    }

    #[test]
    fn undeclared_limits_are_the_servers_defaults() {
        let l = declared_limits(None, None, None);
        assert!(l.contains(&("max_payload", 1_048_576)) && l.contains(&("ping_interval", 120_000_000_000)) && l.contains(&("ping_max", 2)));
        assert!(!l.iter().any(|(k, _)| *k == "max_subscriptions"));
    }
}
