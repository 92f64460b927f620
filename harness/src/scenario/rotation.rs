//! Rotation: every credential the topology declares, replaced on the running lab the way an operator does
//! it — new files, then a config reload asked of each server through its system account (the server's own
//! answer is what is reported) — and proved: the old secret is refused, the new one works, what depended on
//! it comes back.
//!
//! - **Passwords** (every declared user that logs in with one): a new password and bcrypt hash, every node
//!   of the user's scope reloaded; the old password must be refused, the new one must connect.
//! - **Leaf links**, under the acknowledged-write workload: password mode — the hubs' user and the leaf's
//!   remote both changed and reloaded (hubs first); operator mode — a new user JWT and creds for the leaf,
//!   the old key revoked through the resolver; mTLS — a new client certificate for the same identity,
//!   reloaded, the leaf restarted (nothing revokes a certificate the CA signed). The link must come back as
//!   a new connection, every declared flow must cross again, no acknowledged write may be lost. Time to
//!   re-attach is a metric; core loss on the flows is measured, not judged.
//! - **TLS**: each node's certificate reissued from the same CA and reloaded; the new certificate must be
//!   the one served, and a client connected before must still be connected on its first connection.
//!
//! Runs only when named (`--scenario rotation`), on backends that can rewrite a node's files and reload it.

use std::time::{Duration, Instant};

use super::acked_writes::{record_counts, Tally};
use super::check::{Concluded, Pending, Spec};
use super::core_traffic::CoreTraffic;
use super::upgrade::{mixed_version_checks, Writers};
use super::{Ctx, Family, Outcome};
use crate::lab::{Lab, Reloaded};
use crate::nemesis::Capability;
use crate::plan::{CredKind, Scope};
use crate::probe::tls;
use crate::topology::{AuthMode, Topology};

const FAMILY: Family = Family::Rotation;
/// How long a leaf may take to attach again after its link's credentials changed.
const REATTACH: Duration = Duration::from_secs(60);

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let t: &Topology = ctx.declared;
    passwords(ctx, t).await;
    leaf_links(ctx, t).await;
    certificates(ctx, t).await;
}

fn spec(kind: &str, parts: &[&str], name: String, expected: String) -> Spec {
    Spec::new(FAMILY, kind, parts, name, expected).needs(Capability::Reload)
}

/// The nodes that hold a scope's users: every hub, or the one leaf.
fn nodes_of(t: &Topology, scope: &Scope) -> Vec<String> {
    match scope {
        Scope::Hub => t.hub_names().map(String::from).collect(),
        Scope::Leaf(l) => vec![l.clone()],
    }
}

/// Reloads each node in turn; the servers' refusals, in their own words.
pub(super) async fn reload_all(lab: &mut Lab, nodes: &[String]) -> Result<Vec<String>, Outcome> {
    let mut refused = Vec::new();
    for n in nodes {
        match lab.reload(n).await.map_err(|e| Outcome::Error(format!("reload {n}: {e}")))? {
            Reloaded::Applied => {}
            Reloaded::Refused(why) => refused.push(format!("{n} refused the reload: {why}")),
        }
    }
    Ok(refused)
}

// ---------------------------------------------------------------------------------------------------------
// Passwords.

async fn passwords(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let users: Vec<(Scope, String, String)> = ctx
        .lab
        .plan
        .secrets
        .credentials
        .iter()
        .filter(|c| c.kind == CredKind::Declared && c.creds.is_none())
        .map(|c| (c.scope.clone(), c.account.clone(), c.user.clone()))
        .collect();
    if users.is_empty() {
        let why = if t.security.auth == AuthMode::Operator { "every declared user is a JWT user (operator mode: rotated as such) or none is declared" } else { "the topology declares no users" };
        ctx.skip(Spec::new(FAMILY, "password", &[], "password rotation", "each user's password changed and reloaded"), why);
    }
    jwt_users(ctx, t).await;
    for (scope, account, user) in users {
        let nodes = nodes_of(t, &scope);
        let at = scope_label(&scope);
        let expected = format!(
            "{user} of {account} on {at} gets a new password (bcrypt); {} reload(s) and each answers that it applied it; the old \
             password is then refused and the new one connects",
            nodes.join(", ")
        );
        let spec = spec("password", &[&at, &account, &user], format!("password rotation {at}/{account}/{user}"), expected);
        ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| password_body(lab, p, &scope, &nodes, &account, &user).await).await;
    }
}

fn scope_label(scope: &Scope) -> String {
    match scope {
        Scope::Hub => "hub".into(),
        Scope::Leaf(l) => l.clone(),
    }
}

async fn password_body(lab: &mut Lab, p: &mut Pending, scope: &Scope, nodes: &[String], account: &str, user: &str) -> Concluded {
    let node = nodes.first().ok_or_else(|| Outcome::Error("no node holds this user".into()))?;
    let old = lab.access(node, account, user).ok_or_else(|| Outcome::Error(format!("the plan has no credential for {account}/{user} on {node}")))?;
    tracing::debug!("rotation: {user}: connecting with the current password");
    let before = old.connect("natslab-rotation-before").await.map_err(|e| Outcome::Error(format!("the current password does not connect, so the rotation proves nothing: {e}")))?;
    lab.plan.rotate_password(scope, account, user).map_err(|e| Outcome::Error(e.to_string()))?;
    tracing::debug!("rotation: {user}: new password; reloading {nodes:?}");
    let t0 = Instant::now();
    let refused = reload_all(lab, nodes).await?;
    p.metric_duration("reload_ms", t0.elapsed());
    if !refused.is_empty() {
        return Ok(Outcome::Violated(refused.join("; ")));
    }
    let mut bad = Vec::new();
    let new = lab.access(node, account, user).ok_or_else(|| Outcome::Error("the new credential went missing".into()))?;
    let new_ok = match new.connect("natslab-rotation-new").await {
        Ok(c) => still_on_first_connection(&c).await,
        Err(e) => {
            bad.push(format!("the new password is refused: {e}"));
            false
        }
    };
    if old.connect("natslab-rotation-old").await.is_ok() {
        bad.push("the old password still connects".into());
    }
    // nats-server checks connected clients against the new users on reload; seen, not judged.
    let kept = still_on_first_connection(&before).await;
    let seen = format!(
        "every reload applied; new password {}; old password refused; the connection made before the change was {}",
        if new_ok { "connects" } else { "refused" },
        if kept { "kept" } else { "closed by the server" }
    );
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(bad.join("; ")) })
}

/// Whether a client is still on the connection it first made: connected, never reconnected, and a round
/// trip to the server answers (bounded: a client the server closed keeps reconnecting, and a flush on it
/// would wait for as long).
async fn still_on_first_connection(c: &async_nats::Client) -> bool {
    if c.connection_state() != async_nats::connection::State::Connected || c.statistics().connects.load(std::sync::atomic::Ordering::Relaxed) > 1 {
        return false;
    }
    let flushed = tokio::time::timeout(Duration::from_secs(5), c.flush()).await.is_ok_and(|r| r.is_ok());
    flushed && c.statistics().connects.load(std::sync::atomic::Ordering::Relaxed) <= 1 && c.connection_state() == async_nats::connection::State::Connected
}

// ---------------------------------------------------------------------------------------------------------
// Leaf links.

async fn leaf_links(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    for l in &t.leaves {
        for r in 0..l.remotes.len() {
            let r_s = r.to_string();
            let parts = [l.name.as_str(), r_s.as_str()];
            let name = format!("leaf-link credential rotation {} remote {r}", l.name);
            let base = Spec::new(FAMILY, "leaf-link", &parts, name.clone(), "the leaf's link credential replaced while the lab runs");
            match t.security.auth {
                AuthMode::Operator => {
                    let Some(cred) = ctx.lab.plan.secrets.leaf_link(&l.name, r) else {
                        ctx.skip(base, "the plan has no credential for this link");
                        continue;
                    };
                    let (account, user) = (cred.account.clone(), cred.user.clone());
                    let expected = format!(
                        "a new user JWT and creds for {user} of {account}, written for {} and reloaded; the old user key revoked in \
                         the account JWT pushed through $SYS.REQ.CLAIMS.UPDATE; the hubs close the link made on the old key, the \
                         link comes back on the new creds within {} s, every declared flow crosses again, a client presenting the \
                         old creds is refused, and the acknowledged writes running throughout lose nothing",
                        l.name,
                        REATTACH.as_secs()
                    );
                    let leaf = l.name.clone();
                    let spec = spec("leaf-link", &parts, name, expected);
                    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
                        let hubs: Vec<String> = t.hub_names().map(String::from).collect();
                        link_body(lab, p, t, &leaf, &hubs, Identity::Jwt { account: &account, user: &user }).await
                    })
                    .await;
                    continue;
                }
                AuthMode::Mtls => {
                    let expected = format!(
                        "a new client certificate for {} remote {r} from the same CA and for the same identity, written and \
                         reloaded; the leaf then restarted (nothing revokes the old certificate: nats-server trusts what \
                         the CA signed) comes back within {} s on the new one, every declared flow crosses again, and the \
                         acknowledged writes running throughout lose nothing",
                        l.name,
                        REATTACH.as_secs()
                    );
                    let leaf = l.name.clone();
                    let spec = spec("leaf-link", &parts, name, expected).needs(Capability::Kill);
                    ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| {
                        let hubs: Vec<String> = t.hub_names().map(String::from).collect();
                        link_body(lab, p, t, &leaf, &hubs, Identity::Certificate { remote: r }).await
                    })
                    .await;
                    continue;
                }
                AuthMode::Password => {}
            }
            let Some(cred) = ctx.lab.plan.secrets.leaf_link(&l.name, r) else {
                ctx.skip(base, "the plan has no credential for this link");
                continue;
            };
            let (account, user) = (cred.account.clone(), cred.user.clone());
            let hubs: Vec<String> = t.hub_names().map(String::from).collect();
            let expected = format!(
                "the link user {user} of {account} gets a new password; the hubs ({}) and then {} reload and each applies it; the \
                 link comes back within {} s, every declared flow crosses again, and the acknowledged writes running \
                 throughout lose nothing",
                hubs.join(", "),
                l.name,
                REATTACH.as_secs()
            );
            let spec = spec("leaf-link", &parts, name, expected);
            let leaf = l.name.clone();
            ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| link_body(lab, p, t, &leaf, &hubs, Identity::Password { account: &account, user: &user }).await).await;
        }
    }
}

/// What a leaf link authenticates with.
enum Identity<'a> {
    /// A user and password in the hubs' config and the leaf's remote: both changed and reloaded.
    Password { account: &'a str, user: &'a str },
    /// A user JWT of a hub account (operator mode): issued again, the old key revoked.
    Jwt { account: &'a str, user: &'a str },
    /// A client certificate mapped to the link's account (mTLS): issued again; the link made again.
    Certificate { remote: usize },
}

async fn link_body(lab: &mut Lab, p: &mut Pending, t: &Topology, leaf: &str, hubs: &[String], id: Identity<'_>) -> Concluded {
    lab.wait_ready_all(REATTACH).await.map_err(|e| Outcome::Violated(format!("the lab was not ready before the rotation: {e}")))?;
    let writers = Writers::start(lab, t).await?;
    let core = CoreTraffic::start(lab, t).await.map_err(Outcome::Error)?;
    let mut bad = Vec::new();
    let before = link_id(lab, leaf).await.map_err(Outcome::Error)?;
    let t0 = Instant::now();
    match id {
        Identity::Password { account, user } => {
            lab.plan.rotate_password(&Scope::Hub, account, user).map_err(|e| Outcome::Error(e.to_string()))?;
            let mut nodes = hubs.to_vec();
            nodes.push(leaf.to_string());
            bad.extend(reload_all(lab, &nodes).await?);
        }
        Identity::Certificate { remote } => {
            lab.plan.reissue_leaf_cert(leaf, remote).map_err(|e| Outcome::Error(e.to_string()))?;
            bad.extend(reload_all(lab, &[leaf.to_string()]).await?);
            // No revocation here: nats-server checks a certificate against the CA (OCSP, where run, is
            // the way to revoke one), so nothing drops the link made on the old one: the leaf is restarted
            // to dial again, presenting the certificate it now has.
            lab.apply(&crate::nemesis::Fault::Kill { node: leaf.to_string() }).await.map_err(|e| Outcome::Error(e.to_string()))?;
            lab.apply(&crate::nemesis::Fault::Start { node: leaf.to_string() }).await.map_err(|e| Outcome::Error(e.to_string()))?;
        }
        Identity::Jwt { account, user } => {
            let hub = hubs.first().ok_or_else(|| Outcome::Error("no hub".into()))?;
            let r = reissue_and_revoke(lab, hub, account, user, &[leaf.to_string()]).await?;
            bad.extend(r.refused.iter().cloned());
            // The hub's side of the old key: a client presenting it now is refused.
            let old = r.old_access(lab, hub, account, user)?;
            if let Ok(c) = old.connect("natslab-rotation-revoked").await {
                if still_on_first_connection(&c).await {
                    bad.push(format!("a client presenting the revoked creds of {user} still connects to {hub}"));
                }
            }
        }
    }
    let reloaded = Instant::now();
    p.metric_duration("reload_ms", reloaded - t0);
    match lab.wait_ready_all(REATTACH).await {
        Ok(()) => p.metric_duration("reattach_ms", t0.elapsed()),
        Err(e) => bad.push(format!("the lab was not whole again within {} s of the reloads: {e}", REATTACH.as_secs())),
    }
    // The hubs hold only the new password now: a link made after the reloads authenticated with it.
    match link_id(lab, leaf).await {
        Ok(after) if after == before => bad.push(format!(
            "the link was never made again: the connection {} authenticated before the rotation (with the old password) still carries it",
            show(&after)
        )),
        Ok(_) => {}
        Err(e) => bad.push(e),
    }
    bad.extend(mixed_version_checks(lab, t).await);
    let gap = writers.gap(leaf, false, t0, Instant::now()).or_else(|| writers.gap(leaf, true, t0, Instant::now()));
    if let Some(g) = gap {
        p.metric_duration("writes_paused_ms", g);
    }
    let tallies = writers.finish().await?;
    let (total, broken) = Tally::sum(&tallies);
    bad.extend(broken);
    record_counts(p, &total);
    let flows = core.finish().await;
    let (sent, received): (u64, u64) = flows.iter().fold((0, 0), |(s, r), f| (s + f.sent, r + f.received));
    p.metric("core_lost", sent.saturating_sub(received) as f64);
    let after = link_id(lab, leaf).await.map(|a| show(&a)).unwrap_or_default();
    let seen = format!(
        "every reload applied, the link back ({} → {after}) and every declared flow crossing; acknowledged {} writes, lost {}; core messages on {} \
         declared flows: {sent} sent, {received} received (at most once: measured)",
        show(&before),
        total.acked,
        total.lost,
        flows.len()
    );
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(format!("{}; {seen}", bad.join("; "))) })
}

/// Which connection carries the leaf's first link: the hub it is on and that hub's connection id for it.
async fn link_id(lab: &Lab, leaf: &str) -> Result<(String, u64), String> {
    let hub = lab.leaf_hub(leaf).await.ok_or_else(|| format!("{leaf} is attached to no hub"))?;
    let leafz = lab.monitor.get(lab.monitor_url(&hub)?, "/leafz").await?;
    let id = leafz["leafs"].as_array().into_iter().flatten().find(|l| l["name"] == leaf).and_then(|l| l["id"].as_u64());
    id.map(|id| (hub.clone(), id)).ok_or_else(|| format!("{hub}'s /leafz does not list {leaf}"))
}

fn show(id: &(String, u64)) -> String {
    format!("{} cid {}", id.0, id.1)
}

// ---------------------------------------------------------------------------------------------------------
// Operator mode: users issued again, old keys revoked.

/// What a reissue left: the servers' refusals, and where the old creds were kept (to present them).
struct Reissued {
    refused: Vec<String>,
    old_creds: std::path::PathBuf,
}

impl Reissued {
    fn old_access(&self, lab: &Lab, node: &str, account: &str, user: &str) -> Result<crate::probe::client::Access, Outcome> {
        let mut a = lab.access(node, account, user).ok_or_else(|| Outcome::Error(format!("the plan has no credential for {account}/{user}")))?;
        a.creds = Some(self.old_creds.clone());
        Ok(a)
    }
}

/// A new user JWT and creds for `user` of hub account `account`, written (and `reload` reloaded, for a
/// leaf whose remote reads them), then the account JWT that revokes the old key pushed to the resolver
/// through `hub`. The old creds are kept aside, to prove they no longer work.
async fn reissue_and_revoke(lab: &mut Lab, hub: &str, account: &str, user: &str, reload: &[String]) -> Result<Reissued, Outcome> {
    let (old, account_jwt) = lab.plan.reissue_user(account, user).map_err(|e| Outcome::Error(e.to_string()))?;
    let old_creds = lab.dir.join("rotated").join(format!("{account}.{user}.old.creds"));
    crate::files::mkdir(&lab.dir.join("rotated")).map_err(|e| Outcome::Error(e.to_string()))?;
    crate::files::write_secret(&old_creds, &old).map_err(|e| Outcome::Error(e.to_string()))?;
    let mut refused = if reload.is_empty() {
        lab.rewrite().map_err(|e| Outcome::Error(e.to_string()))?;
        Vec::new()
    } else {
        reload_all(lab, reload).await?
    };
    match lab.push_account(hub, &account_jwt).await.map_err(|e| Outcome::Error(e.to_string()))? {
        Reloaded::Applied => {}
        Reloaded::Refused(why) => refused.push(format!("the resolver refused the account JWT that revokes the old key: {why}")),
    }
    Ok(Reissued { refused, old_creds })
}

async fn jwt_users(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let users: Vec<(String, String)> = ctx
        .lab
        .plan
        .secrets
        .credentials
        .iter()
        .filter(|c| c.kind == CredKind::Declared && c.creds.is_some() && c.scope == Scope::Hub)
        .map(|c| (c.account.clone(), c.user.clone()))
        .collect();
    for (account, user) in users {
        let hub = t.hub_names().next().unwrap_or_default().to_string();
        let expected = format!(
            "{user} of {account} gets a new user JWT and creds; the account JWT revoking the old key is pushed through \
             $SYS.REQ.CLAIMS.UPDATE and accepted; a connection made on the old creds is then closed, a client presenting \
             them is refused, and the new creds connect"
        );
        let spec = spec("user", &["hub", &account, &user], format!("user JWT rotation hub/{account}/{user}"), expected);
        ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| jwt_user_body(lab, p, &hub, &account, &user).await).await;
    }
}

async fn jwt_user_body(lab: &mut Lab, p: &mut Pending, hub: &str, account: &str, user: &str) -> Concluded {
    let current = lab.access(hub, account, user).ok_or_else(|| Outcome::Error(format!("the plan has no credential for {account}/{user}")))?;
    let before = current.connect("natslab-rotation-before").await.map_err(|e| Outcome::Error(format!("the current creds do not connect, so the rotation proves nothing: {e}")))?;
    let t0 = Instant::now();
    let r = reissue_and_revoke(lab, hub, account, user, &[]).await?;
    p.metric_duration("revoke_ms", t0.elapsed());
    let mut bad = r.refused.clone();
    if !closed_within(&before, Duration::from_secs(10)).await {
        bad.push("the connection made on the old creds is still open 10 s after the revocation".into());
    }
    p.metric_duration("closed_after_ms", t0.elapsed());
    let old = r.old_access(lab, hub, account, user)?;
    if let Ok(c) = old.connect("natslab-rotation-revoked").await {
        if still_on_first_connection(&c).await {
            bad.push("a client presenting the revoked creds still connects".into());
        }
    }
    let new = lab.access(hub, account, user).ok_or_else(|| Outcome::Error("the new credential went missing".into()))?;
    match new.connect("natslab-rotation-new").await {
        Ok(c) if still_on_first_connection(&c).await => {}
        Ok(_) => bad.push("the new creds connect but the connection does not hold".into()),
        Err(e) => bad.push(format!("the new creds are refused: {e}")),
    }
    let seen = "the resolver took the revoking account JWT; the old connection was closed, the old creds refused, the new creds connect";
    Ok(if bad.is_empty() { Outcome::Pass(seen.into()) } else { Outcome::Violated(bad.join("; ")) })
}

/// Whether the server closed a client's connection within `within` (it then reconnects, and is refused).
async fn closed_within(c: &async_nats::Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if c.connection_state() != async_nats::connection::State::Connected || c.statistics().connects.load(std::sync::atomic::Ordering::Relaxed) > 1 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Polling the client's own state: the server's close reaches it as an event, not a message to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// TLS certificates.

async fn certificates(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    if !t.security.tls {
        ctx.skip(Spec::new(FAMILY, "tls", &[], "certificate rotation", "each node's certificate reissued and reloaded"), "the topology declares no TLS");
        return;
    }
    let nodes: Vec<String> = t.hub_names().map(String::from).chain(t.leaves.iter().map(|l| l.name.clone())).collect();
    for node in nodes {
        let expected = format!(
            "{node} gets a new certificate from the same CA and reloads, answering that it applied it; its client port then serves \
             the new certificate, a client connected before is still on its first connection, and its leaf links stay up"
        );
        let spec = spec("tls", &[&node], format!("certificate rotation {node}"), expected);
        ctx.check(spec, async |lab: &mut Lab, p: &mut Pending| cert_body(lab, p, &node).await).await;
    }
}

async fn cert_body(lab: &mut Lab, p: &mut Pending, node: &str) -> Concluded {
    let account = lab.plan.topology.leaf(node).map_or_else(|| lab.plan.topology.hub.accounts[0].name.clone(), |l| l.accounts[0].name.clone());
    let before = lab.probe(node, &account).await.map_err(|e| Outcome::Error(e.to_string()))?;
    let base = lab.monitor_url(node).map_err(Outcome::Error)?.to_string();
    let links_before = lab.monitor.leafs(&base).await.map(|l| l.len()).map_err(Outcome::Error)?;
    let new_pem = lab.plan.reissue_server_cert(node).map_err(|e| Outcome::Error(e.to_string()))?;
    let want = tls::der_of(&new_pem).map_err(Outcome::Error)?;
    let t0 = Instant::now();
    let refused = reload_all(lab, &[node.to_string()]).await?;
    p.metric_duration("reload_ms", t0.elapsed());
    if !refused.is_empty() {
        return Ok(Outcome::Violated(refused.join("; ")));
    }
    let url = lab.client_url(node);
    let addr = url.split("://").nth(1).unwrap_or(&url).to_string();
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h).to_string();
    let ca = lab.plan.secrets.tls.as_ref().map(|t| t.ca.cert_pem.clone()).unwrap_or_default();
    let served = tls::served_cert(&addr, &ca, &host).await.map_err(Outcome::Error)?;
    let mut bad = Vec::new();
    if served != want {
        bad.push("the client port still serves the old certificate".to_string());
    }
    if !still_on_first_connection(&before).await {
        let connects = before.statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
        bad.push(format!("the client connected before the reload did not keep its connection ({connects} connect(s), now {:?})", before.connection_state()));
    }
    let links_after = lab.monitor.leafs(&base).await.map(|l| l.len()).map_err(Outcome::Error)?;
    if links_after < links_before {
        bad.push(format!("{node} had {links_before} leaf link(s) before the reload and {links_after} after"));
    }
    let seen = format!("the reload applied; the new certificate is served; the earlier client kept its connection; {links_after} leaf link(s)");
    Ok(if bad.is_empty() { Outcome::Pass(seen) } else { Outcome::Violated(bad.join("; ")) })
}
