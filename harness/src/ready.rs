//! Readiness as data, polled against real state with a deadline (never a fixed sleep):
//! every node's `/healthz` is ok; every hub has routes to every other hub (`/routez`); every leaf has all
//! its remotes connected (`/leafz`); a clustered hub's JetStream has a meta leader (`/jsz`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::plan::{NodePlan, Plan, Role};
use crate::probe::monitor::Monitor;

pub const POLL: Duration = Duration::from_millis(5);

/// What one node still lacks, or `None` when it is ready.
pub async fn node_waiting_for(monitor: &Monitor, plan: &Plan, node: &NodePlan, base: &str) -> Option<String> {
    if let Err(e) = monitor.healthy(base).await {
        return Some(format!("healthz ({})", short(&e)));
    }
    match node.role {
        Role::Hub => {
            let others: Vec<String> = plan.hubs().filter(|h| h.name != node.name).map(|h| h.name.clone()).collect();
            if !others.is_empty() {
                match monitor.route_peers(base).await {
                    Ok(peers) => {
                        let missing: Vec<&String> = others.iter().filter(|o| !peers.contains(o)).collect();
                        if !missing.is_empty() {
                            return Some(format!("routes to {}", join(&missing)));
                        }
                    }
                    Err(e) => return Some(format!("routez ({})", short(&e))),
                }
                if plan.topology.hub.jetstream.is_some() {
                    match monitor.meta_leader(base).await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Some("a JetStream meta leader".into()),
                        Err(e) => return Some(format!("jsz ({})", short(&e))),
                    }
                }
            }
            None
        }
        Role::Leaf => {
            let want = plan.topology.leaf(&node.name).map(|l| l.remotes.len()).unwrap_or(0);
            match monitor.uplinks(base).await {
                Ok(ls) if ls.len() >= want => None,
                Ok(ls) => Some(format!("leaf connections ({}/{want})", ls.len())),
                Err(e) => Some(format!("leafz ({})", short(&e))),
            }
        }
    }
}

/// The gist of a monitoring error: the server's own `error` text where there is one.
fn short(e: &str) -> String {
    let gist = match e.find("\"error\":\"") {
        Some(i) => e[i + 9..].split('"').next().unwrap_or(e),
        None if e.contains("error sending request") => "not answering yet",
        None => e,
    };
    gist.chars().take(60).collect()
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Polls the named nodes until all are ready or the deadline passes. `on_change` hears every change in the
/// set of nodes still waited for, for progress display. Returns what was still missing at the deadline.
///
/// A node seen ready is not asked again until every node has been: the polls compete with the starting
/// servers for the CPU. Then one pass over all confirms (a leaf link can still drop early on).
pub async fn wait_nodes(
    monitor: &Monitor,
    plan: &Plan,
    endpoints: &BTreeMap<String, String>,
    nodes: &[&NodePlan],
    deadline: Instant,
    on_change: &mut (dyn FnMut(&BTreeMap<String, String>) + Send),
) -> Result<(), BTreeMap<String, String>> {
    let mut last: Option<BTreeMap<String, String>> = None;
    let mut pending: Vec<&NodePlan> = nodes.to_vec();
    loop {
        let confirming = pending.is_empty();
        let ask: &[&NodePlan] = if confirming { nodes } else { &pending };
        let checks = ask.iter().map(|n| async move {
            let base = endpoints.get(&n.name).cloned().unwrap_or_default();
            (n.name.clone(), node_waiting_for(monitor, plan, n, &base).await)
        });
        let answers = futures::future::join_all(checks).await;
        let waiting: BTreeMap<String, String> = answers.iter().filter_map(|(n, w)| w.clone().map(|w| (n.clone(), w))).collect();
        if last.as_ref() != Some(&waiting) {
            on_change(&waiting);
            last = Some(waiting.clone());
        }
        if confirming && waiting.is_empty() {
            return Ok(());
        }
        pending = nodes.iter().copied().filter(|n| waiting.contains_key(&n.name)).collect();
        if Instant::now() >= deadline {
            return Err(waiting);
        }
        if !pending.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits until something accepts TCP connections at `addr` (a listener is up), or the deadline passes.
pub async fn wait_listening(addr: &str, deadline: Instant) -> bool {
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
