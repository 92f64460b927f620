//! Reload: the day-2 changes a topology declares (`changes:`), made to the running lab as config reloads,
//! checked against the state each declares, then undone and checked against the declaration again. The
//! servers are asked to reload through their system accounts, so a reload nats-server will not do is
//! reported in its own words.
//!
//! - **Permissions**: a user's permissions become the declared ones; every node of the user's place
//!   reloads. Every subject either state names is probed for the user, as each state declares, and both
//!   sides of the leaf link are probed too: every declared user's rules (the hub side's included) and
//!   the leaf's flows.
//! - **Flows**: a leaf remote's imports and exports become the declared ones. They live in the hub-side
//!   accounts: the hubs reload (password and mTLS modes), or the changed account JWTs are pushed to the
//!   resolver (operator mode). Every flow of the state after it must cross, every flow it removed must
//!   not, and the leaf's link must be the same connection throughout — no restart.
//!
//! Runs only when named (`--scenario reload`), on backends that can reload.

use std::collections::BTreeSet;

use super::check::{Concluded, Pending, Spec};
use super::mapping::{export_probe, import_probe, Link};
use super::{security, Ctx, Family, Outcome};
use crate::lab::{Lab, Reloaded};
use crate::nemesis::Capability;
use crate::topology::{AuthMode, Change, Flow, Permissions, Topology};

const FAMILY: Family = Family::Reload;

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let t: &Topology = ctx.declared;
    if t.changes.is_empty() {
        let spec = Spec::new(FAMILY, "change", &[], "config reloads", "each declared change made by a reload, checked, undone");
        ctx.skip(spec, "the topology declares no changes (a `changes:` list: a user's permissions or a leaf link's flows after the change)");
        return;
    }
    for change in &t.changes {
        let after = change.apply(t);
        let place = change.leaf.as_deref().unwrap_or("hub");
        if change.is_permissions() {
            let user = change.user.as_deref().unwrap_or_default();
            let spec = Spec::new(FAMILY, "permissions", &[&change.name], format!("reload {}: {user}'s permissions on {place}", change.name), permissions_expected(change, place, user))
                .needs(Capability::Reload);
            if t.security.auth == AuthMode::Operator && change.leaf.is_none() {
                ctx.skip(spec, "in operator mode a hub user's permissions are in its user JWT: changing them is a new JWT, not a config reload");
                continue;
            }
            ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| permissions_body(lab, t, &after, change, user).await).await;
        } else {
            let r = change.remote.unwrap_or(0);
            let expected = format!(
                "{place} remote {r}'s flows become the declared ones ({}); the hub side takes them ({}); every flow after the \
                 change crosses, every flow it removed does not, and the link is the same connection throughout; then the \
                 same, undone",
                flows_line(&after, place, r),
                if t.security.auth == AuthMode::Operator { "account JWTs pushed through $SYS.REQ.CLAIMS.UPDATE" } else { "each hub reloads" }
            );
            let spec = Spec::new(FAMILY, "flows", &[&change.name], format!("reload {}: {place} remote {r}'s flows", change.name), expected).needs(Capability::Reload);
            ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| flows_body(lab, t, &after, place, r).await).await;
        }
    }
}

fn permissions_expected(change: &Change, place: &str, user: &str) -> String {
    format!(
        "{user}'s permissions on {place} become {}; every node there reloads and says it applied it; the subjects the change \
         moved are then allowed or refused as it declares; then the same, undone",
        describe(change.permissions.as_ref())
    )
}

fn describe(p: Option<&Permissions>) -> String {
    serde_json::to_string(&p).unwrap_or_default()
}

fn flows_line(t: &Topology, leaf: &str, r: usize) -> String {
    let Some(remote) = t.leaf(leaf).and_then(|l| l.remotes.get(r)) else { return String::new() };
    let one = |v: &[Flow]| v.iter().map(|f| f.subject.clone()).collect::<Vec<_>>().join(", ");
    format!("imports [{}], exports [{}]", one(&remote.imports), one(&remote.exports))
}

/// The lab moves to `to` (its declaration after or before a change), by reloads or resolver pushes.
async fn move_to(lab: &mut Lab, to: &Topology, nodes: &[String]) -> Result<Vec<String>, Outcome> {
    let pushes = lab.plan.adopt(to.clone()).map_err(|e| Outcome::Error(e.to_string()))?;
    if pushes.is_empty() {
        return super::rotation::reload_all(lab, nodes).await;
    }
    lab.rewrite().map_err(|e| Outcome::Error(e.to_string()))?;
    let hub = to.hub_names().next().unwrap_or_default().to_string();
    let mut refused = Vec::new();
    for jwt in pushes {
        if let Reloaded::Refused(why) = lab.push_account(&hub, &jwt).await.map_err(|e| Outcome::Error(e.to_string()))? {
            refused.push(format!("the resolver refused an account JWT: {why}"));
        }
    }
    Ok(refused)
}

// ---------------------------------------------------------------------------------------------------------
// Permissions.

/// The subjects a permissions change is probed on: every pattern either state names.
fn moved_subjects(before: Option<&Permissions>, after: Option<&Permissions>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for p in [before, after].into_iter().flatten() {
        for r in [&p.publish, &p.subscribe].into_iter().flatten() {
            out.extend(r.allow.iter().chain(&r.deny).cloned());
        }
    }
    out.into_iter().collect()
}

fn user_perms<'t>(t: &'t Topology, leaf: Option<&str>, user: &str) -> Option<&'t Permissions> {
    let accounts = match leaf {
        Some(l) => &t.leaf(l)?.accounts,
        None => &t.hub.accounts,
    };
    accounts.iter().flat_map(|a| &a.users).find(|u| u.user == user)?.permissions.as_ref()
}

async fn permissions_body(lab: &mut Lab, declared: &Topology, after: &Topology, change: &Change, user: &str) -> Concluded {
    let leaf = change.leaf.as_deref();
    let nodes: Vec<String> = match leaf {
        Some(l) => vec![l.to_string()],
        None => declared.hub_names().map(String::from).collect(),
    };
    let subjects = moved_subjects(user_perms(declared, leaf, user), user_perms(after, leaf, user));
    let mut bad = Vec::new();
    for (state, to) in [("after the change", after), ("undone", declared)] {
        let refused = move_to(lab, to, &nodes).await?;
        if !refused.is_empty() {
            bad.extend(refused.into_iter().map(|r| format!("{state}: {r}")));
            continue;
        }
        bad.extend(security::user_rules_hold(lab, to, leaf, user, &subjects).await.into_iter().map(|p| format!("{state}: {p}")));
        // Both sides of the link still as declared: every user's rules (the hub-side accounts' included),
        // and the reloaded leaf's flows crossing.
        bad.extend(security::rules_still_hold(lab, to).await.into_iter().map(|p| format!("{state}: {p}")));
        if let Some(l) = leaf.and_then(|l| to.leaf(l)) {
            for r in 0..l.remotes.len() {
                bad.extend(flows_hold(lab, to, &l.name, r, &[]).await.into_iter().map(|p| format!("{state}: {p}")));
            }
        }
    }
    let seen = format!(
        "reloaded {} twice (the change, then undone); {} subject(s) probed each time as each state declares; every user's rules and the link's flows held",
        nodes.join(", "),
        subjects.len()
    );
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(format!("{}; {seen}", bad.join("; "))) })
}

// ---------------------------------------------------------------------------------------------------------
// Flows.

/// Which connection carries each of the leaf's links: the hubs' connection ids for it.
async fn link_ids(lab: &Lab, t: &Topology, leaf: &str) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for hub in t.hub_names() {
        let Ok(url) = lab.monitor_url(hub) else { continue };
        if let Ok(v) = lab.monitor.get(url, "/leafz").await {
            for l in v["leafs"].as_array().into_iter().flatten().filter(|l| l["name"] == leaf) {
                if let Some(id) = l["id"].as_u64() {
                    out.insert((hub.to_string(), id));
                }
            }
        }
    }
    out
}

/// Each flow of `t`'s remote that must cross does; each of `gone` must not.
async fn flows_hold(lab: &Lab, t: &Topology, leaf: &str, r: usize, gone: &[(bool, Flow)]) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(l) = t.leaf(leaf) else { return vec![format!("no leaf {leaf}")] };
    let link = Link::of(t, l, r);
    for f in &link.remote.exports {
        if let Err(o) | Ok(o @ (Outcome::Violated(_) | Outcome::Error(_))) = export_probe(lab, &link, f).await {
            bad.push(format!("export {} does not cross: {}", f.subject, o.text()));
        }
    }
    for f in &link.remote.imports {
        if let Err(o) | Ok(o @ (Outcome::Violated(_) | Outcome::Error(_))) = import_probe(lab, &link, f).await {
            bad.push(format!("import {} does not cross: {}", f.subject, o.text()));
        }
    }
    // A removed flow, probed as `t` (which lacks it) declares: what crosses must be nothing.
    for (export, f) in gone {
        let probe = if *export { export_probe(lab, &link, f).await } else { import_probe(lab, &link, f).await };
        match probe {
            Ok(Outcome::Pass(_)) => {}
            Ok(o) | Err(o) => bad.push(format!("removed {} {} still crosses: {}", if *export { "export" } else { "import" }, f.subject, o.text())),
        }
    }
    bad
}

/// The flows `from` has and `to` does not (true: an export).
fn removed(from: &Topology, to: &Topology, leaf: &str, r: usize) -> Vec<(bool, Flow)> {
    let remote = |t: &Topology| t.leaf(leaf).and_then(|l| l.remotes.get(r)).cloned();
    let (Some(a), Some(b)) = (remote(from), remote(to)) else { return Vec::new() };
    let mut out: Vec<(bool, Flow)> = a.exports.iter().filter(|f| !b.exports.iter().any(|g| g.subject == f.subject)).map(|f| (true, f.clone())).collect();
    out.extend(a.imports.iter().filter(|f| !b.imports.iter().any(|g| g.subject == f.subject)).map(|f| (false, f.clone())));
    out
}

async fn flows_body(lab: &mut Lab, declared: &Topology, after: &Topology, leaf: &str, r: usize) -> Concluded {
    let hubs: Vec<String> = declared.hub_names().map(String::from).collect();
    let links = link_ids(lab, declared, leaf).await;
    let mut bad = Vec::new();
    for (state, from, to) in [("after the change", declared, after), ("undone", after, declared)] {
        let refused = move_to(lab, to, &hubs).await?;
        if !refused.is_empty() {
            bad.extend(refused.into_iter().map(|r| format!("{state}: {r}")));
            continue;
        }
        let gone = removed(from, to, leaf, r);
        bad.extend(flows_hold(lab, to, leaf, r, &gone).await.into_iter().map(|p| format!("{state}: {p}")));
        let now = link_ids(lab, declared, leaf).await;
        if now != links {
            bad.push(format!("{state}: {leaf}'s link was made again ({links:?} → {now:?}): the change needed a reconnect"));
        }
    }
    let seen = format!("{leaf}'s flows changed and changed back, its link the same connection throughout ({links:?})");
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(format!("{}; {seen}", bad.join("; "))) })
}
