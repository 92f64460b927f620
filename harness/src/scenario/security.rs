//! Security, derived from the declared topology (the guide's security configuration and checklist):
//!
//! - every declared user connects, and each of its permission rules is probed: an allowed subject works, a
//!   denied one is refused by the server (a "Permissions Violation") and delivers nothing, and where an allow
//!   list exists a subject outside it is refused too;
//! - wrong credentials and anonymous connections are refused on every node;
//! - with TLS: plaintext, a foreign CA's client certificate and a missing one are refused; with `auth: mtls`
//!   a leaf presenting another identity's certificate is refused;
//! - accounts are isolated from each other, and no leaf reaches the hub's system account;
//! - secrets and configs on disk are readable by their owner only.
//!
//! Negative probes are bounded by control messages, never by a clock (see `mapping.rs` for the helpers).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use super::check::{Concluded, Family, Outcome, Pending, Spec};
use super::mapping::Link;
use super::probes::{attached_hub, connect, control, drain, list, publish_one, send_until, subjects_with, sync, token, watch, Seen, DELIVERY};
use super::Ctx;
use crate::lab::{Intruder, Lab};
use crate::nemesis::Capability;
use crate::plan::{probe_user, SYSTEM_ACCOUNT};
use crate::probe::client::Access;
use crate::probe::wire::{self, Hello};
use crate::secrets::{jwt, pki};
use crate::topology::subject::{example, matches};
use crate::topology::{AuthMode, Permissions, Rule, Topology};

/// How long a refused client or an expected server error may take to show. Only bounds a wait for
/// something that should happen; a pass never waits it out.
const REFUSAL: Duration = Duration::from_secs(5);

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let declared = ctx.declared.clone();
    for who in declared_users(&declared) {
        user(ctx, &who).await;
    }
    for node in declared_nodes(&declared) {
        refusals(ctx, &declared, &node).await;
    }
    tls(ctx, &declared).await;
    intruders(ctx, &declared).await;
    account_isolation(ctx, &declared).await;
    for leaf in &declared.leaves {
        for r in 0..leaf.remotes.len() {
            system_account(ctx, &Link::of(&declared, leaf, r)).await;
        }
    }
    secrets_on_disk(ctx).await;
}

// ---------------------------------------------------------------------------------------------------------
// Declared users and their permissions.

/// A declared user and where it connects (hub users to the first hub).
struct Who {
    node: String,
    scope: String,
    account: String,
    user: String,
    perms: Option<Permissions>,
}

impl Who {
    fn label(&self) -> String {
        format!("{}/{}/{}", self.scope, self.account, self.user)
    }
}

fn declared_users(t: &Topology) -> Vec<Who> {
    let mut out = Vec::new();
    let first_hub = t.hub.nodes.first().map(|h| h.name.clone()).unwrap_or_default();
    for a in &t.hub.accounts {
        for u in &a.users {
            out.push(Who {
                node: first_hub.clone(),
                scope: "hub".into(),
                account: a.name.clone(),
                user: u.user.clone(),
                perms: u.permissions.clone(),
            });
        }
    }
    for l in &t.leaves {
        for a in &l.accounts {
            for u in &a.users {
                out.push(Who {
                    node: l.name.clone(),
                    scope: l.name.clone(),
                    account: a.name.clone(),
                    user: u.user.clone(),
                    perms: u.permissions.clone(),
                });
            }
        }
    }
    out
}

/// Whether a rule lets a literal subject through, as nats-server decides it: inside the allow list (if
/// any) and outside the deny list.
pub(super) fn permitted(rule: Option<&Rule>, subject: &str) -> bool {
    match rule {
        None => true,
        Some(r) => {
            (r.allow.is_empty() || r.allow.iter().any(|p| matches(p, subject)))
                && !r.deny.iter().any(|p| matches(p, subject))
        }
    }
}

/// A subject the rule lets through, for control messages: a private one, else an example of an allow entry
/// that does not also cover `probed` (so a server refusing that entry cannot also stop the control).
fn control_subject(rule: Option<&Rule>, probed: &str) -> Option<String> {
    let tok = token();
    let mut candidates = vec![format!("natslab.control.{tok}")];
    if let Some(r) = rule {
        candidates.extend(r.allow.iter().filter(|p| !matches(p, probed)).map(|p| example(p, &tok)));
        candidates.extend(r.allow.iter().map(|p| example(p, &tok)));
    }
    candidates.into_iter().find(|s| permitted(rule, s) && s != probed)
}

/// A subject outside every allow entry (only where an allow list exists and leaves room).
fn outside_subject(rule: Option<&Rule>, tok: &str) -> Option<String> {
    let r = rule?;
    let s = format!("natslab.outside.{tok}");
    (!r.allow.is_empty() && !permitted(rule, &s)).then_some(s)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Publish,
    Subscribe,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Publish => "publish",
            Op::Subscribe => "subscribe",
        }
    }

    fn rule(self, p: Option<&Permissions>) -> Option<&Rule> {
        p.and_then(|p| match self {
            Op::Publish => p.publish.as_ref(),
            Op::Subscribe => p.subscribe.as_ref(),
        })
    }

    /// How nats-server names the operation in a permissions violation.
    fn violation(self) -> &'static str {
        match self {
            Op::Publish => "Publish",
            Op::Subscribe => "Subscription",
        }
    }
}

async fn user(ctx: &mut Ctx<'_, '_>, who: &Who) {
    let spec = Spec::new(Family::Security, "connect", &[&who.label()], format!("connect {}", who.label()), format!("{} connects to {}", who.user, who.node));
    let verdict = ctx
        .check(spec, async |lab: &mut Lab, _: &mut Pending| match lab.access(&who.node, &who.account, &who.user) {
            None => Err(Outcome::Violated(format!("declared user {} has no way in: node {} is not part of this lab", who.label(), who.node))),
            Some(a) => match a.connect(&format!("natslab-security-{}", who.user)).await {
                Ok(_) => Ok(Outcome::Pass("connected".into())),
                Err(e) => Ok(Outcome::Violated(e.to_string())),
            },
        })
        .await;
    let ok = verdict != Some(super::Verdict::Violated);
    for op in [Op::Publish, Op::Subscribe] {
        let rule = op.rule(who.perms.as_ref()).cloned();
        let Some(rule) = rule else { continue };
        for pattern in &rule.allow {
            let name = format!("{}-allow {} {pattern}", op.name(), who.label());
            let expected = format!("{} may {} on {pattern}", who.user, op.name());
            let spec = Spec::new(Family::Security, &format!("{}-allow", op.name()), &[&who.label(), pattern], name, expected);
            rule_check(ctx, who, op, ok, spec, |tok| Probe::Allowed(example(pattern, tok))).await;
        }
        for pattern in &rule.deny {
            let name = format!("{}-deny {} {pattern}", op.name(), who.label());
            let expected = format!(
                "{} may not {} on {pattern}: the server says Permissions Violation, nothing is delivered",
                who.user,
                op.name()
            );
            let spec = Spec::new(Family::Security, &format!("{}-deny", op.name()), &[&who.label(), pattern], name, expected);
            rule_check(ctx, who, op, ok, spec, |tok| Probe::Refused(example(pattern, tok))).await;
        }
        if outside_subject(Some(&rule), "t").is_some() {
            let name = format!("{}-outside-allow {}", op.name(), who.label());
            let expected = format!(
                "{} may not {} outside its allow list [{}]: Permissions Violation, nothing delivered",
                who.user,
                op.name(),
                rule.allow.join(", ")
            );
            let r = rule.clone();
            let spec = Spec::new(Family::Security, &format!("{}-outside-allow", op.name()), &[&who.label()], name, expected);
            rule_check(ctx, who, op, ok, spec, move |tok| match outside_subject(Some(&r), tok) {
                Some(s) => Probe::Refused(s),
                None => Probe::Nothing,
            })
            .await;
        }
    }
}

/// Each declared user's rules still hold, one allow and one deny of each direction, probed as the
/// permission checks do: the problems, as text. For a lab in transition (an upgrade step).
pub(super) async fn rules_still_hold(lab: &Lab, t: &Topology) -> Vec<String> {
    let mut bad = Vec::new();
    for who in declared_users(t) {
        for op in [Op::Publish, Op::Subscribe] {
            let Some(rule) = op.rule(who.perms.as_ref()) else { continue };
            let tok = token();
            let mut probes = Vec::new();
            if let Some(p) = rule.allow.first() {
                let s = example(p, &tok);
                if permitted(Some(rule), &s) {
                    probes.push((true, s));
                }
            }
            if let Some(p) = rule.deny.first() {
                probes.push((false, example(p, &tok)));
            }
            for (allow, subject) in probes {
                let r = if allow { allowed(lab, &who, op, &subject, &tok).await } else { refused(lab, &who, op, &subject, &tok).await };
                match r.unwrap_or_else(|o| o) {
                    Outcome::Pass(_) | Outcome::Skipped(_) => {}
                    other => bad.push(format!("{} {} {subject}: {}", who.label(), op.name(), other.text())),
                }
            }
        }
    }
    bad
}

/// The rules of one user (`leaf`: of that leaf; `None`: of the hub), as `t` declares them, probed on
/// exactly `subjects` in both directions — a subject a change moved between allow and deny is probed on
/// the side it moved to. The problems, as text.
pub(super) async fn user_rules_hold(lab: &Lab, t: &Topology, leaf: Option<&str>, user: &str, subjects: &[String]) -> Vec<String> {
    let scope = leaf.unwrap_or("hub");
    let Some(who) = declared_users(t).into_iter().find(|w| w.scope == scope && w.user == user) else {
        return vec![format!("{scope} declares no user {user}")];
    };
    let mut bad = Vec::new();
    for op in [Op::Publish, Op::Subscribe] {
        let rule = op.rule(who.perms.as_ref());
        for pattern in subjects {
            let tok = token();
            let subject = example(pattern, &tok);
            let allow = permitted(rule, &subject);
            let r = if allow { allowed(lab, &who, op, &subject, &tok).await } else { refused(lab, &who, op, &subject, &tok).await };
            match r.unwrap_or_else(|o| o) {
                Outcome::Pass(_) | Outcome::Skipped(_) => {}
                other => bad.push(format!("{} {} {subject} ({}): {}", who.label(), op.name(), if allow { "allowed" } else { "denied" }, other.text())),
            }
        }
    }
    bad
}

enum Probe {
    Allowed(String),
    Refused(String),
    Nothing,
}

async fn rule_check(ctx: &mut Ctx<'_, '_>, who: &Who, op: Op, connected: bool, spec: Spec, probe: impl Fn(&str) -> Probe) {
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        if !connected {
            return Ok(Outcome::Violated(format!("{} could not connect, so no rule of it can be seen to hold", who.user)));
        }
        let tok = token();
        let rule = op.rule(who.perms.as_ref());
        match probe(&tok) {
            Probe::Allowed(s) if !permitted(rule, &s) => Ok(Outcome::Skipped(format!("{s} is also denied: no example to probe"))),
            Probe::Allowed(s) => allowed(lab, who, op, &s, &tok).await,
            Probe::Refused(s) => refused(lab, who, op, &s, &tok).await,
            Probe::Nothing => Ok(Outcome::Skipped("no subject outside the allow list".into())),
        }
    })
    .await;
}

/// A client of the declared user that reports the server's errors (permission violations) on a channel.
async fn connect_reporting(lab: &Lab, who: &Who) -> Result<(Client, mpsc::UnboundedReceiver<String>), String> {
    let access =
        lab.access(&who.node, &who.account, &who.user).ok_or_else(|| format!("no credential for {}", who.label()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let options = access.options().event_callback(move |e| {
        let tx = tx.clone();
        async move {
            if let Event::ServerError(err) = e {
                let _ = tx.send(err.to_string());
            }
        }
    });
    let client =
        access.connect_with(&format!("natslab-security-{}", who.user), options).await.map_err(|e| e.to_string())?;
    Ok((client, rx))
}

/// Waits (bounded) for the server's permissions violation naming `subject`.
async fn violation(rx: &mut mpsc::UnboundedReceiver<String>, op: Op, subject: &str) -> Option<String> {
    let needle = format!("permissions violation for {} to \"{}\"", op.violation(), subject).to_lowercase();
    let deadline = Instant::now() + REFUSAL;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains(&needle) => return Some(e),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// One message on an allowed subject, then a control message on the same path: once the control has
/// arrived, the first one has too, or it never will.
async fn allowed(lab: &Lab, who: &Who, op: Op, subject: &str, tok: &str) -> Concluded {
    let rule = op.rule(who.perms.as_ref());
    let Some(ctl) = control_subject(rule, subject) else {
        return Ok(Outcome::Skipped(format!("{} may {} nowhere else: no control subject", who.user, op.name())));
    };
    let (user, _) = connect_reporting(lab, who).await?;
    let payload = format!("allowed-{tok}");
    let seen = match op {
        Op::Publish => {
            let mut all = watch(lab, &who.node, &who.account, ">").await?;
            publish_one(&user, subject, &payload).await?;
            let mut seen = control_on(&user, &ctl, &mut all.sub).await?;
            seen.extend(all.settle().await?);
            seen
        }
        Op::Subscribe => {
            let (mut sub, mut ctl_sub, probe) = subscribe_both(lab, who, &user, subject, &ctl).await?;
            publish_one(&probe, subject, &payload).await?;
            control_on(&probe, &ctl, &mut ctl_sub).await?;
            drain(&mut sub).await
        }
    };
    let got = subjects_with(&seen, &payload);
    Ok(if got.contains(subject) {
        Outcome::Pass(format!("{} on {subject} worked", op.name()))
    } else {
        Outcome::Violated(format!("{} on {subject}: nothing delivered", op.name()))
    })
}

/// The user subscribes to `subject`, then to `ctl`; returns both and a full-access publisher once a control
/// message has reached the user, which proves the server has handled both subscriptions (in order).
async fn subscribe_both(
    lab: &Lab,
    who: &Who,
    user: &Client,
    subject: &str,
    ctl: &str,
) -> Result<(async_nats::Subscriber, async_nats::Subscriber, Client), Outcome> {
    let sub = user.subscribe(subject.to_string()).await.map_err(|e| format!("subscribe {subject}: {e}"))?;
    let mut ctl_sub = user.subscribe(ctl.to_string()).await.map_err(|e| format!("subscribe {ctl}: {e}"))?;
    user.flush().await.map_err(|e| format!("flush: {e}"))?;
    let probe = connect(lab, &who.node, &who.account).await?;
    control_on(&probe, ctl, &mut ctl_sub).await?;
    Ok((sub, ctl_sub, probe))
}

/// Publishes a control message on `subject` (one the user may use) until `sub` receives it.
async fn control_on(publisher: &Client, subject: &str, sub: &mut async_nats::Subscriber) -> Result<Seen, String> {
    let payload = format!("control-{}", token());
    send_until(publisher, subject, &payload, sub, DELIVERY)
        .await
        .map_err(|_| format!("the control message on {subject} never arrived within {DELIVERY:?}"))
}

async fn refused(lab: &Lab, who: &Who, op: Op, subject: &str, tok: &str) -> Concluded {
    let rule = op.rule(who.perms.as_ref());
    let Some(ctl) = control_subject(rule, subject) else {
        return Ok(Outcome::Skipped(format!("{} may {} nowhere: no control subject", who.user, op.name())));
    };
    let (user, mut errors) = connect_reporting(lab, who).await?;
    let forbidden = format!("forbidden-{tok}");
    let leaked: Seen = match op {
        Op::Publish => {
            // A full-access subscriber on everything: catches the message under whatever subject it went.
            let mut all = watch(lab, &who.node, &who.account, ">").await?;
            user.publish(subject.to_string(), forbidden.clone().into()).await.map_err(|e| format!("publish: {e}"))?;
            let mut seen = control_on(&user, &ctl, &mut all.sub).await?;
            seen.extend(all.settle().await?);
            seen
        }
        Op::Subscribe => {
            let (mut denied, mut ctl_sub, probe) = subscribe_both(lab, who, &user, subject, &ctl).await?;
            publish_one(&probe, subject, &forbidden).await?;
            control_on(&probe, &ctl, &mut ctl_sub).await?;
            drain(&mut denied).await
        }
    };
    let leaked = subjects_with(&leaked, &forbidden);
    if !leaked.is_empty() {
        return Ok(Outcome::Violated(format!(
            "{} on {subject} was not refused: delivered as {}",
            op.name(),
            list(&leaked)
        )));
    }
    Ok(match violation(&mut errors, op, subject).await {
        Some(e) => Outcome::Pass(format!("nothing delivered; the server said: {e}")),
        None => Outcome::Violated(format!(
            "nothing delivered, but the server reported no permissions violation for {subject}"
        )),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Refused connections.

/// A credential to try on `node`: its first declared user, else the probe user of its first account.
fn some_user(t: &Topology, node: &str) -> Option<(String, String)> {
    let accounts = match t.leaf(node) {
        None => &t.hub.accounts,
        Some(l) => &l.accounts,
    };
    let declared = accounts.iter().find_map(|a| a.users.first().map(|u| (a.name.clone(), u.user.clone())));
    declared.or_else(|| accounts.first().map(|a| (a.name.clone(), probe_user(&a.name))))
}

async fn refusals(ctx: &mut Ctx<'_, '_>, t: &Topology, node: &str) {
    let operator_hub = t.security.auth == AuthMode::Operator && t.leaf(node).is_none();
    let spec = if operator_hub {
        Spec::new(Family::Security, "foreign-creds", &[node], format!("foreign-creds {node}"), format!("a user JWT signed by a foreign operator is refused on {node}"))
    } else {
        Spec::new(Family::Security, "wrong-password", &[node], format!("wrong-password {node}"), format!("a declared user with a wrong password is refused on {node}"))
    };
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let good = good_access(lab, t, node)?;
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let bad = if operator_hub {
            Access { creds: Some(foreign_creds(dir.path())?), user: Some("intruder".into()), ..good.clone() }
        } else {
            Access { password: good.password.as_ref().map(|p| format!("{p}x")), ..good.clone() }
        };
        Ok(refused_connect(&good, bad.options(), &bad).await)
    })
    .await;
    let spec = Spec::new(Family::Security, "anonymous", &[node], format!("anonymous {node}"), format!("a client without credentials is refused on {node}"));
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        let good = good_access(lab, t, node)?;
        let anonymous = Access { user: None, password: None, creds: None, ..good.clone() };
        Ok(refused_connect(&good, anonymous.options(), &anonymous).await)
    })
    .await;
}

/// Proper credentials for `node`; a declared node the lab does not run is a violation.
fn good_access(lab: &Lab, t: &Topology, node: &str) -> Result<Access, Outcome> {
    if lab.endpoint(node).is_none() {
        return Err(Outcome::Violated(format!("declared node {node} is not part of this lab")));
    }
    let (account, user) = some_user(t, node).ok_or_else(|| Outcome::Error(format!("{node} declares no account")))?;
    lab.access(node, &account, &user).ok_or_else(|| Outcome::Error(format!("the plan has no credential for {account}/{user} on {node}")))
}

/// Pass when `bad` is refused; an error when `good` (the same node, proper credentials) is refused too.
async fn refused_connect(good: &Access, options: ConnectOptions, bad: &Access) -> Outcome {
    if let Err(e) = good.connect("natslab-security-good").await {
        return Outcome::Error(format!("even the proper credentials are refused, so the probe proves nothing: {e}"));
    }
    match tokio::time::timeout(REFUSAL * 2, bad.connect_with("natslab-security-bad", options)).await {
        Ok(Err(e)) => Outcome::Pass(format!("refused: {e}")),
        Ok(Ok(_)) => Outcome::Violated("connected".into()),
        Err(_) => Outcome::Error(format!("connecting neither succeeded nor failed within {:?}", REFUSAL * 2)),
    }
}

/// A creds file for a user of an account of a freshly made operator the lab has never heard of.
fn foreign_creds(dir: &Path) -> Result<PathBuf, String> {
    let (operator, _) = jwt::Operator::generate("natslab-foreign").map_err(|e| e.to_string())?;
    let spec = jwt::AccountSpec { name: "FOREIGN", exports: vec![], imports: vec![], jetstream: false };
    let account = operator.account(jwt::account_key(), &spec).map_err(|e| e.to_string())?;
    let (ujwt, seed) = account.user("intruder", None).map_err(|e| e.to_string())?;
    let path = dir.join("foreign.creds");
    crate::files::write_secret(&path, &jwt::creds(&ujwt, &seed)).map_err(|e| e.to_string())?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------------------
// TLS.

async fn tls(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    if !t.security.tls {
        ctx.skip(Spec::new(Family::Security, "tls", &[], "tls", "TLS on every port"), "the topology declares no TLS");
        return;
    }
    for node in declared_nodes(t) {
        let node = node.as_str();
        let spec = Spec::new(
            Family::Security,
            "plaintext",
            &[node],
            format!("plaintext {node}"),
            format!(
                "the client port of {node} says tls_required in its INFO, and a plaintext CONNECT with valid credentials (the same \
                 user connects over TLS) gets no PONG: its refusal can only be TLS's"
            ),
        );
        ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
            let good = good_access(lab, t, node)?;
            // A TLS client refused while the plaintext one reads INFO: the port is not what was declared,
            // and the INFO below says how.
            let tls_refused = good.connect("natslab-security-good").await.err();
            let hello = Hello::of(&good)?;
            let addr = client_addr(lab, node)?;
            let outcome = plaintext_outcome(&addr, &hello, false, "client").await?;
            match (tls_refused, outcome) {
                (Some(e), Outcome::Pass(_)) => Err(Outcome::Error(format!("even a TLS client with proper credentials is refused, so the probe proves nothing: {e}"))),
                (Some(e), Outcome::Violated(v)) => Ok(Outcome::Violated(format!("{v}; a TLS client is refused: {e}"))),
                (_, o) => Ok(o),
            }
        })
        .await;
        if t.leaf(node).is_none() {
            plaintext_leafnode(ctx, t, node).await;
        }
        if !t.security.verify_clients {
            continue;
        }
        let spec = Spec::new(
            Family::Security,
            "foreign-ca-cert",
            &[node],
            format!("foreign-ca-cert {node}"),
            format!("a client certificate from a foreign CA is refused on {node}, with valid credentials: the refusal is the CA's"),
        );
        ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
            let good = good_access(lab, t, node)?;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let (cert, key) = foreign_cert(dir.path())?;
            let bad = Access { cert: Some(cert), key: Some(key), ..good.clone() };
            Ok(refused_connect(&good, bad.options(), &bad).await)
        })
        .await;
        let spec = Spec::new(
            Family::Security,
            "no-client-cert",
            &[node],
            format!("no-client-cert {node}"),
            format!("a client without a certificate is refused on {node} (verify_clients), with valid credentials: the refusal is verify's"),
        );
        ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
            let good = good_access(lab, t, node)?;
            let bad = Access { cert: None, key: None, ..good.clone() };
            Ok(refused_connect(&good, bad.options(), &bad).await)
        })
        .await;
    }
}

/// A hub's leafnode port in plaintext, with a declared leaf link's own credentials where it has any
/// (password or creds; with `auth: mtls` a leaf's only credential is its certificate, so there INFO's
/// `tls_required` is what proves TLS).
async fn plaintext_leafnode(ctx: &mut Ctx<'_, '_>, t: &Topology, hub: &str) {
    let spec = Spec::new(
        Family::Security,
        "plaintext-leafnode",
        &[hub],
        format!("plaintext-leafnode {hub}"),
        format!("the leafnode port of {hub} says tls_required in its INFO, and a plaintext leaf CONNECT with a declared leaf's credentials gets no PONG"),
    );
    let link = t.leaves.iter().find(|l| !l.remotes.is_empty()).map(|l| l.name.clone());
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| {
        // With mTLS a leaf's only credential is its certificate: a password would prove nothing.
        let cred = link.as_deref().and_then(|l| lab.plan.secrets.leaf_link(l, 0)).filter(|_| t.security.auth != AuthMode::Mtls);
        let hello = match cred {
            Some(c) if c.creds.is_some() => Hello::Creds(c.creds.clone().unwrap_or_default()),
            Some(c) => Hello::Password { user: c.user.clone(), pass: c.password.clone() },
            None => Hello::Password { user: String::new(), pass: String::new() },
        };
        let addr = lab.endpoint(hub).ok_or_else(|| Outcome::Violated(format!("declared hub {hub} is not part of this lab")))?.leaf_addr.clone();
        plaintext_outcome(&addr, &hello, true, "leafnode").await
    })
    .await;
}

/// The declared nodes: hubs, then leaves.
fn declared_nodes(t: &Topology) -> Vec<String> {
    t.hub_names().map(String::from).chain(t.leaves.iter().map(|l| l.name.clone())).collect()
}

/// A node's client port as the harness reaches it (a container's is published on the engine's host).
fn client_addr(lab: &Lab, node: &str) -> Result<String, Outcome> {
    let e = lab.endpoint(node).ok_or_else(|| Outcome::Violated(format!("declared node {node} is not part of this lab")))?;
    Ok(e.client_url.rsplit("://").next().unwrap_or(&e.client_url).to_string())
}

/// Plaintext to a port that must demand TLS: violated when its INFO does not say `tls_required`, or when
/// it answers PING; else a pass saying what refused it.
async fn plaintext_outcome(addr: &str, hello: &Hello, leaf: bool, port: &str) -> Concluded {
    let session = match wire::plaintext(addr, hello, leaf, REFUSAL).await {
        Ok(s) => s,
        // TLS-first ports send nothing in plaintext: that is a refusal too.
        Err(e) if e.contains("no INFO") || e.contains("closed before") => return Ok(Outcome::Pass(format!("the {port} port sent no plaintext INFO: {e}"))),
        Err(e) => return Err(Outcome::Error(e)),
    };
    let creds = match hello {
        Hello::Password { user, .. } if user.is_empty() => "no credentials (the leaf's only one is its certificate)",
        _ => "valid credentials",
    };
    if session.tls_required() != Some(true) {
        let also = if session.answered() { ", and it answered a plaintext client (PONG)" } else { "" };
        return Ok(Outcome::Violated(format!("the {port} port's INFO says tls_required: false{also}; it said {}", session.said())));
    }
    if session.answered() {
        return Ok(Outcome::Violated(format!("the {port} port says tls_required, yet answered a plaintext CONNECT with {creds} (PONG)")));
    }
    Ok(Outcome::Pass(format!(
        "INFO says tls_required: true; a plaintext CONNECT with {creds} got no PONG: the server said {} — refused for TLS",
        session.said()
    )))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(160).collect()
}

/// A client certificate with the probe's own subject, but from a CA the lab has never seen.
fn foreign_cert(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let ca = pki::Ca::generate("natslab foreign CA").map_err(|e| e.to_string())?;
    let pair = ca.issue_client("natslab-probe", Some("natslab")).map_err(|e| e.to_string())?;
    let (cert, key) = (dir.join("foreign-cert.pem"), dir.join("foreign-key.pem"));
    crate::files::write_secret(&cert, &pair.cert_pem).map_err(|e| e.to_string())?;
    crate::files::write_secret(&key, &pair.key_pem).map_err(|e| e.to_string())?;
    Ok((cert, key))
}

// ---------------------------------------------------------------------------------------------------------
// Leaves that must not get in: with `auth: mtls`, one whose certificate (from the lab's own CA) names an
// identity no account maps, and one with no certificate at all.

async fn intruders(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    if t.security.auth != AuthMode::Mtls {
        return;
    }
    let spec = Spec::new(
        Family::Security,
        "impostor-leaf",
        &[],
        "impostor-leaf",
        "a leaf presenting a certificate of the lab's CA with another, unmapped identity is refused (Authorization Violation) \
         and never attaches: the refusal is the identity mapping's",
    )
    .needs(Capability::Guest);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| intruder_probe(lab, Intruder::Impostor).await).await;
    let spec = Spec::new(
        Family::Security,
        "certless-leaf",
        &[],
        "certless-leaf",
        "a leaf speaking TLS with the lab's CA but presenting no client certificate is refused in the handshake and never \
         attaches: the refusal is verify's",
    )
    .needs(Capability::Guest);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| intruder_probe(lab, Intruder::Certless).await).await;
}

async fn intruder_probe(lab: &mut Lab, kind: Intruder) -> Concluded {
    let name = format!("natslab-intruder-{}", token());
    // The hub it dials (the first) logs why it refused the handshake: only what it logs from now on counts.
    let hub_log = lab.plan.hubs().next().map(|h| lab.plan.layout.host_log(&h.name));
    let from = hub_log.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len() as usize);
    let (log, identity) = lab.start_intruder(kind, &name).await?;
    let logs = IntruderLogs { own: log, hub: hub_log.map(|p| (p, from)) };
    let outcome = watch_intruder(lab, kind, &name, &identity, &logs).await;
    if let Some(g) = lab.guests() {
        g.stop_guest(&name).await;
    }
    outcome
}

/// Where a refusal shows: the intruder's own log, and the hub's from an offset on.
struct IntruderLogs {
    own: PathBuf,
    hub: Option<(PathBuf, usize)>,
}

impl IntruderLogs {
    /// The first line saying the hub refused the intruder for the property under test: an impostor hears
    /// "Authorization Violation"; a certless leaf's handshake fails in TLS 1.3 only after it completed on
    /// its side, so the hub's log is what names the missing certificate.
    fn refusal(&self, kind: Intruder) -> Option<String> {
        match kind {
            Intruder::Impostor => std::fs::read_to_string(&self.own).ok()?.lines().find(|l| l.contains("Authorization Violation")).map(str::to_string),
            Intruder::Certless => {
                let (path, from) = self.hub.as_ref()?;
                let text = std::fs::read_to_string(path).ok()?;
                text.get(*from..)?.lines().find(|l| l.contains("didn't provide a certificate") || l.contains("certificate required")).map(str::to_string)
            }
        }
    }
}

async fn watch_intruder(lab: &mut Lab, kind: Intruder, name: &str, identity: &str, logs: &IntruderLogs) -> Concluded {
    let deadline = Instant::now() + DELIVERY;
    loop {
        if let Some(h) = attached_anywhere(lab, name).await {
            return Ok(Outcome::Violated(format!("the intruder ({identity}) attached to {h}")));
        }
        if let Some(line) = logs.refusal(kind) {
            return Ok(Outcome::Pass(format!("{identity}: never attached; logged: {}", line.trim())));
        }
        let text = std::fs::read_to_string(&logs.own).unwrap_or_default();
        if let Some(status) = lab.guests().and_then(|g| g.guest_exited(name)) {
            return Err(Outcome::Error(format!("the intruder exited ({status}): {}", text.lines().last().unwrap_or_default())));
        }
        if Instant::now() >= deadline {
            return Ok(Outcome::Violated(format!(
                "the intruder ({identity}) neither attached nor was refused for it within {DELIVERY:?}; its log ends: {}",
                text.lines().last().unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attached_anywhere(lab: &Lab, name: &str) -> Option<String> {
    for h in lab.plan.hubs() {
        let Ok(url) = lab.monitor_url(&h.name) else { continue };
        if let Ok(ls) = lab.monitor.leafs(url).await {
            if ls.iter().any(|(n, _)| n == name) {
                return Some(h.name.clone());
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------------------
// Account isolation and the system account.

async fn account_isolation(ctx: &mut Ctx<'_, '_>, t: &Topology) {
    let Some(hub) = t.hub.nodes.first().map(|h| h.name.clone()) else { return };
    for a in &t.hub.accounts {
        for b in t.hub.accounts.iter().filter(|b| b.name != a.name) {
            let spec = Spec::new(
                Family::Security,
                "account-isolation",
                &[&a.name, &b.name],
                format!("account-isolation {} from {}", a.name, b.name),
                format!("a subscriber on `>` in {} receives nothing {} publishes (hub accounts import nothing from each other)", a.name, b.name),
            );
            ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| isolation_probe(lab, t, &hub, &a.name, &b.name).await).await;
        }
    }
}

async fn isolation_probe(lab: &Lab, t: &Topology, hub: &str, a: &str, b: &str) -> Concluded {
    let mut on_a = watch(lab, hub, a, ">").await?;
    let from_b = connect(lab, hub, b).await?;
    let tok = token();
    let subjects = super::mapping::probe_subjects(t, &tok, &[super::mapping::Sender { leaf: None, account: b }]);
    let payload = format!("from-{b}-{tok}");
    for s in &subjects {
        from_b.publish(s.clone(), payload.clone().into()).await.map_err(|e| format!("publish {s}: {e}"))?;
    }
    // After the round trip the hub has handled B's messages, before A's own control goes out.
    sync(&from_b).await?;
    let mut seen = control(&on_a.client, &mut on_a.sub, &format!("{a} → {a}")).await?;
    seen.extend(on_a.settle().await?);
    let got = subjects_with(&seen, &payload);
    Ok(Outcome::expect(
        got.is_empty(),
        format!("{b} published {} subjects; {a} received {}", subjects.len(), list(&got)),
    ))
}

async fn system_account(ctx: &mut Ctx<'_, '_>, link: &Link<'_>) {
    let spec = Spec::new(
        Family::Security,
        "system-request",
        &[&link.label()],
        format!("system-request {}", link.label()),
        format!("$SYS.REQ.SERVER.PING from {} ({}) gets no answer from the hubs", link.label(), link.local),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| system_request(lab, link).await).await;
    let spec = Spec::new(
        Family::Security,
        "system-isolation",
        &[&link.label()],
        format!("system-isolation {}", link.label()),
        format!("nothing crosses between {} ({}) and the hub's system account, either way", link.label(), link.local),
    );
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| system_isolation(lab, link).await).await;
}

async fn system_request(lab: &Lab, link: &Link<'_>) -> Concluded {
    let leaf = connect(lab, &link.leaf.name, &link.local).await?;
    let reply = leaf.request("$SYS.REQ.SERVER.PING".to_string(), "".into()).await;
    Ok(match reply {
        Ok(m) => Outcome::Violated(format!("answered: {}", first_line(&String::from_utf8_lossy(&m.payload)))),
        Err(e) => match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => Outcome::Pass("no responders".into()),
            async_nats::client::RequestErrorKind::TimedOut => Outcome::Pass("no answer (timed out)".into()),
            _ => Outcome::Error(format!("request: {e}")),
        },
    })
}

async fn system_isolation(lab: &Lab, link: &Link<'_>) -> Concluded {
    let hub = attached_hub(lab, &link.leaf.name, &link.account).await?;
    let tok = token();
    let mut bad = Vec::new();

    // Leaf → hub: the link account hears everything the leaf sends (the control's path); SYS must not.
    let mut via = watch(lab, &hub, &link.account, ">").await?;
    let mut sys = watch(lab, &hub, SYSTEM_ACCOUNT, "$SYS.>").await?;
    let leaf = connect(lab, &link.leaf.name, &link.local).await?;
    control(&leaf, &mut via.sub, "leaf → its hub account").await?;
    let up = [
        "$SYS.REQ.SERVER.PING".to_string(),
        format!("$SYS.REQ.ACCOUNT.{}.CONNZ", link.account),
        format!("$SYS.natslab.{tok}"),
    ];
    let payload = format!("from-leaf-{tok}");
    for s in &up {
        leaf.publish(s.clone(), payload.clone().into()).await.map_err(|e| format!("publish {s}: {e}"))?;
    }
    control(&leaf, &mut via.sub, "leaf → its hub account").await?;
    let got = subjects_with(&sys.settle().await?, &payload);
    if !got.is_empty() {
        bad.push(format!("the hub's {SYSTEM_ACCOUNT} received {} from the leaf", list(&got)));
    }

    // Hub → leaf: the system account publishes; the leaf (listening to everything) must not hear it.
    let mut on_leaf = watch(lab, &link.leaf.name, &link.local, ">").await?;
    let via_hub = connect(lab, &hub, &link.account).await?;
    control(&via_hub, &mut on_leaf.sub, "hub link account → leaf").await?;
    let payload = format!("from-sys-{tok}");
    for s in [format!("$SYS.natslab.{tok}"), format!("natslab.sys.{tok}")] {
        sys.client.publish(s.clone(), payload.clone().into()).await.map_err(|e| format!("publish {s}: {e}"))?;
    }
    sync(&sys.client).await?;
    let mut seen = control(&via_hub, &mut on_leaf.sub, "hub link account → leaf").await?;
    seen.extend(on_leaf.settle().await?);
    let got = subjects_with(&seen, &payload);
    if !got.is_empty() {
        bad.push(format!("the leaf received {} from the hub's {SYSTEM_ACCOUNT}", list(&got)));
    }
    Ok(if bad.is_empty() {
        Outcome::Pass(format!(
            "the leaf sent {} to $SYS subjects, {SYSTEM_ACCOUNT} on {hub} published 2; nothing crossed",
            up.len()
        ))
    } else {
        Outcome::Violated(bad.join("; "))
    })
}

// ---------------------------------------------------------------------------------------------------------
// Files.

async fn secrets_on_disk(ctx: &mut Ctx<'_, '_>) {
    let spec = Spec::new(
        Family::Security,
        "secrets-mode",
        &[],
        "secrets-mode",
        "every file under secrets/ and every node config (nats.conf, settings.json) has mode 0600",
    );
    if ctx.lab.is_attached() {
        ctx.skip(spec, "the attached backend reaches servers over the network: their files are the deployment's, not the harness's");
        return;
    }
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| Ok(secrets_probe(lab))).await;
}

fn secrets_probe(lab: &Lab) -> Outcome {
    let l = &lab.plan.layout;
    let mut files = Vec::new();
    let dir = l.host_root.join("secrets");
    match std::fs::read_dir(&dir) {
        Ok(entries) => files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file())),
        // A topology without TLS, operator mode or users still has password files: no directory is wrong.
        Err(e) => return Outcome::Error(format!("read {}: {e}", dir.display())),
    }
    for n in &lab.plan.nodes {
        for f in ["nats.conf", "settings.json"] {
            files.push(l.host_node_dir(&n.name).join(f));
        }
    }
    let mut bad = BTreeSet::new();
    for f in &files {
        match std::fs::metadata(f) {
            Ok(m) if m.permissions().mode() & 0o777 == 0o600 => {}
            Ok(m) => {
                bad.insert(format!("{} is {:o}", f.display(), m.permissions().mode() & 0o777));
            }
            Err(e) => {
                bad.insert(format!("{}: {e}", f.display()));
            }
        }
    }
    Outcome::expect(
        bad.is_empty(),
        if bad.is_empty() { format!("{} files, all 0600", files.len()) } else { list(&bad) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: &[&str], deny: &[&str]) -> Rule {
        Rule {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn permitted_follows_allow_then_deny() {
        let r = rule(&["domain.>", "events.>"], &["system.>"]);
        assert!(permitted(Some(&r), "domain.x"));
        assert!(!permitted(Some(&r), "system.x"));
        assert!(!permitted(Some(&r), "natslab.outside.x"));
        let deny_only = rule(&[], &["system.>"]);
        assert!(permitted(Some(&deny_only), "anything.at.all"));
        assert!(!permitted(Some(&deny_only), "system.x"));
        assert!(permitted(None, "system.x"));
    }

    #[test]
    fn control_subjects_avoid_the_entry_under_test() {
        // `natslab.control.*` is outside this allow list: the control comes from the other entry.
        let r = rule(&["commands.>", "global.events.>"], &[]);
        let c = control_subject(Some(&r), "commands.t").unwrap();
        assert!(c.starts_with("global.events."), "{c}");
        // One entry only: a different example of the same entry, never the probed subject itself.
        let one = rule(&["leaf.>"], &[]);
        let c = control_subject(Some(&one), "leaf.t").unwrap();
        assert!(c.starts_with("leaf.") && c != "leaf.t", "{c}");
        assert!(control_subject(None, "x").unwrap().starts_with("natslab.control."));
    }

    #[test]
    fn outside_subjects_exist_only_beside_a_narrow_allow_list() {
        assert!(outside_subject(Some(&rule(&["commands.>"], &[])), "t").is_some());
        assert!(outside_subject(Some(&rule(&[">"], &[])), "t").is_none());
        assert!(outside_subject(Some(&rule(&[], &["system.>"])), "t").is_none());
        assert!(outside_subject(None, "t").is_none());
    }

    #[test]
    fn users_come_from_hub_and_leaf_accounts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/cim-reference.yaml");
        let t = crate::topology::load_file(&path).expect("cim-reference.yaml loads");
        let labels: Vec<String> = declared_users(&t).iter().map(Who::label).collect();
        assert_eq!(
            labels,
            [
                "hub/HUB/alchemist",
                "cim-prod-001/CIM/cim-local",
                "cim-prod-002/CIM/cim-local",
                "cim-dev-001/CIM/cim-local"
            ]
        );
    }
}
