//! Probing subject flow with real clients, for every family. Interest crosses routes and leaf links
//! asynchronously, so a positive probe republishes until delivery (bounded); a negative probe never waits on
//! a clock: it sends the forbidden message and then a control message along the same path, and once the
//! control has arrived, anything the forbidden one would have done has happened (NATS keeps per-connection
//! order; `barrier` orders the hop across the hub cluster).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use futures::StreamExt;

use super::check::Outcome;
use crate::lab::Lab;
use crate::plan::{CredKind, Scope, SYSTEM_ACCOUNT};
use crate::probe::client::Access;

/// Bound on a delivery that must happen (a pass never waits it out).
pub const DELIVERY: Duration = Duration::from_secs(10);

/// Messages as (subject, payload).
pub type Seen = Vec<(String, String)>;

/// Publishes on `subject` every 25 ms until `sub` receives something, or `within` passes.
/// Returns the subject and payload of the first message received.
pub async fn publish_until_received(publisher: &Client, subject: &str, payload: &str, sub: &mut Subscriber, within: Duration) -> Option<(String, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        publisher.publish(subject.to_string(), payload.to_string().into()).await.ok()?;
        publisher.flush().await.ok()?;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(25), sub.next()).await {
            return Some((m.subject.to_string(), String::from_utf8_lossy(&m.payload).to_string()));
        }
    }
    None
}

/// Everything `sub` has buffered right now, without waiting.
pub async fn drain(sub: &mut Subscriber) -> Seen {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), sub.next()).await {
        out.push((m.subject.to_string(), String::from_utf8_lossy(&m.payload).to_string()));
    }
    out
}

/// Waits (bounded) for a message whose payload is `payload` on `sub`; returns what else arrived before it.
pub async fn wait_for_payload(sub: &mut Subscriber, payload: &str, within: Duration) -> Result<Seen, Seen> {
    let mut seen = Vec::new();
    if read_until(sub, payload, within, &mut seen).await {
        seen.pop();
        Ok(seen)
    } else {
        Err(seen)
    }
}

/// A unique token for payloads and subjects of one probe.
pub fn token() -> String {
    let n = nuid::next().to_string();
    n[n.len() - 10..].to_lowercase()
}

/// Connects as exactly the user `access` describes, mapping errors to text for check outcomes.
pub async fn connect_as(access: &Access, name: &str) -> Result<Client, String> {
    access.connect(name).await.map_err(|e| e.to_string())
}

/// A subscription on its own connection.
pub struct Watch {
    pub client: Client,
    pub sub: Subscriber,
}

impl Watch {
    /// Everything delivered so far: after the round trip, every message the server queued for this
    /// connection before it has been read.
    pub async fn settle(&mut self) -> Result<Seen, String> {
        sync(&self.client).await?;
        Ok(drain(&mut self.sub).await)
    }
}

/// A real round trip to the server. async-nats' `flush` only empties the socket buffer, so it proves
/// nothing; this subscribes to a fresh subject on the same connection and publishes to it: when the
/// message comes back, the server has processed everything this connection sent before, and this
/// connection has read everything the server queued for it before. Needs a full-access client.
pub async fn sync(client: &Client) -> Result<(), String> {
    let tok = token();
    let subject = format!("natslab.sync.{tok}");
    let mut sub = client.subscribe(subject.clone()).await.map_err(|e| format!("subscribe {subject}: {e}"))?;
    client.publish(subject.clone(), tok.clone().into()).await.map_err(|e| format!("publish {subject}: {e}"))?;
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut seen = Vec::new();
    if read_until(&mut sub, &tok, DELIVERY, &mut seen).await {
        Ok(())
    } else {
        Err(format!("no round trip to the server within {DELIVERY:?}"))
    }
}

/// A full-access client of `account` on `node`. A declared node that is not there, or does not let the
/// harness's own user in, is what the calling check is about: a violation, not a harness error.
pub async fn connect(lab: &Lab, node: &str, account: &str) -> Result<Client, Outcome> {
    let Some(access) = lab.access(node, account, &crate::plan::probe_user(account)) else {
        return Err(match lab.endpoint(node) {
            None => Outcome::Violated(format!("declared node {node} is not part of this lab")),
            Some(_) => Outcome::Error(format!("the plan has no harness user of account {account} on {node}")),
        });
    };
    access
        .connect(&format!("natslab-probe-{node}"))
        .await
        .map_err(|e| Outcome::Violated(format!("{node} does not let the harness's user of account {account} in: {e}")))
}

/// Subscribes a fresh full-access client of `account` on `node` to `subject`; the subscription is in
/// place on the server when this returns.
pub async fn watch(lab: &Lab, node: &str, account: &str, subject: &str) -> Result<Watch, Outcome> {
    let client = connect(lab, node, account).await?;
    let sub = client.subscribe(subject.to_string()).await.map_err(|e| format!("subscribe {subject}: {e}"))?;
    sync(&client).await?;
    Ok(Watch { client, sub })
}

/// Reads `sub` until a message carrying `payload` arrives (kept in `seen`), or `within` passes.
async fn read_until(sub: &mut Subscriber, payload: &str, within: Duration, seen: &mut Seen) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(m)) => {
                let p = String::from_utf8_lossy(&m.payload).to_string();
                let hit = p == payload;
                seen.push((m.subject.to_string(), p));
                if hit {
                    return true;
                }
            }
            _ => return false,
        }
    }
}

/// Publishes `payload` on `subject` every 25 ms until `sub` receives it (interest crosses links and routes
/// asynchronously). Ok: everything `sub` received up to and including it; Err: everything it received.
pub async fn send_until(publisher: &Client, subject: &str, payload: &str, sub: &mut Subscriber, within: Duration) -> Result<Seen, Seen> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let sent = publisher.publish(subject.to_string(), payload.to_string().into()).await.is_ok();
        if !sent || publisher.flush().await.is_err() {
            break;
        }
        if read_until(sub, payload, Duration::from_millis(25), &mut seen).await {
            return Ok(seen);
        }
    }
    Err(seen)
}

/// Proves that everything `publisher` sent before has been delivered wherever `sub` listens (NATS keeps
/// per-connection order along one path): publishes a fresh control message until `sub` sees it. Returns
/// what `sub` received meanwhile.
pub async fn control(publisher: &Client, sub: &mut Subscriber, path: &str) -> Result<Seen, String> {
    let tok = token();
    send_until(publisher, &format!("natslab.control.{tok}"), &format!("control-{tok}"), sub, DELIVERY)
        .await
        .map_err(|_| format!("the control message ({path}) never arrived within {DELIVERY:?}"))
}

/// Orders the hub cluster: once it returns, every message and subscription that `from` had sent towards
/// `to` (in any hub account) has arrived there. Routes are pooled per account, so the barrier crosses once
/// per account, each on its account's own route connection.
pub async fn barrier(lab: &Lab, from: &str, to: &str) -> Result<(), Outcome> {
    if from == to {
        return Ok(());
    }
    for account in hub_accounts(lab) {
        let tok = token();
        let subject = format!("natslab.barrier.{tok}");
        let mut w = watch(lab, to, &account, &subject).await?;
        let p = connect(lab, from, &account).await?;
        send_until(&p, &subject, &tok, &mut w.sub, DELIVERY)
            .await
            .map_err(|_| format!("the barrier {from} → {to} in account {account} never arrived within {DELIVERY:?}"))?;
    }
    Ok(())
}

/// Every hub account of the running lab that the harness can reach (not the system account).
fn hub_accounts(lab: &Lab) -> Vec<String> {
    let mut out: Vec<String> = lab
        .plan
        .secrets
        .credentials
        .iter()
        .filter(|c| c.scope == Scope::Hub && c.kind == CredKind::Probe && c.account != SYSTEM_ACCOUNT)
        .map(|c| c.account.clone())
        .collect();
    out.dedup();
    out
}

/// Where a leaf link really is, from the hubs' `/leafz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// On this hub, in the declared account.
    On(String),
    /// Attached, but bound to another hub account than declared: (hub, the account it is in).
    Elsewhere(String, String),
    /// On no hub at all.
    Nowhere,
}

/// The hub the leaf's link into `account` is attached to now, from the hubs' `/leafz` (which names the
/// account by its public key in operator mode). Waits (bounded) for the link to appear.
pub async fn attachment(lab: &Lab, leaf: &str, account: &str) -> Attachment {
    let key = lab.plan.account_id(account);
    let deadline = Instant::now() + DELIVERY;
    let mut elsewhere = None;
    loop {
        for h in lab.plan.hubs() {
            let Ok(url) = lab.monitor_url(&h.name) else { continue };
            if let Ok(ls) = lab.monitor.leafs(url).await {
                for (_, a) in ls.iter().filter(|(n, _)| n == leaf) {
                    if *a == key || a == account {
                        return Attachment::On(h.name.clone());
                    }
                    elsewhere = Some((h.name.clone(), lab.plan.account_name(a)));
                }
            }
        }
        if Instant::now() >= deadline {
            return match elsewhere {
                Some((h, a)) => Attachment::Elsewhere(h, a),
                None => Attachment::Nowhere,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hub the leaf's link into `account` is attached to. A link bound to another account, or none, is
/// what the calling check is about: `Err(Violated)`, never a harness error.
pub async fn attached_hub(lab: &Lab, leaf: &str, account: &str) -> Result<String, Outcome> {
    match attachment(lab, leaf, account).await {
        Attachment::On(h) => Ok(h),
        Attachment::Elsewhere(h, a) => {
            Err(Outcome::Violated(format!("leaf {leaf} is attached to {h} in hub account {a}, not in the declared {account}")))
        }
        Attachment::Nowhere => Err(Outcome::Violated(format!("leaf {leaf} is attached to no hub in account {account} (hubs' /leafz)"))),
    }
}

/// Publishes once. Only the order of this connection's later messages is implied; `sync` it before
/// relying on the server having processed it.
pub async fn publish_one(c: &Client, subject: &str, payload: &str) -> Result<(), String> {
    c.publish(subject.to_string(), payload.to_string().into()).await.map_err(|e| format!("publish {subject}: {e}"))?;
    c.flush().await.map_err(|e| format!("flush: {e}"))
}

pub fn probe_payload(i: usize, tok: &str) -> String {
    format!("probe-{i}-{tok}")
}

/// Publishes the i-th subject with `probe_payload(i, tok)`.
pub async fn publish_all(c: &Client, subjects: &[String], tok: &str) -> Result<(), String> {
    for (i, s) in subjects.iter().enumerate() {
        c.publish(s.clone(), probe_payload(i, tok).into()).await.map_err(|e| format!("publish {s}: {e}"))?;
    }
    c.flush().await.map_err(|e| format!("flush: {e}"))
}

pub fn subjects_with(seen: &Seen, payload: &str) -> BTreeSet<String> {
    seen.iter().filter(|(_, p)| p == payload).map(|(s, _)| s.clone()).collect()
}

pub fn list(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        "nothing".into()
    } else {
        s.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
