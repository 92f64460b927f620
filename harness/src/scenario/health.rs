//! Health: the guide's `check-leaf-health`, done against the real monitoring JSON (AUDIT §5): `/healthz`
//! status, leaf connections from `/leafz .leafs` (not `.leafnodes[0].current.state`, which does not
//! exist), JetStream from `/jsz`, and message rates computed from `/varz` counters (there is no rate field).
//! Also the `natslab health --monitor URL...` command.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::{Ctx, Family, Outcome};
use crate::plan::Role;
use crate::probe::monitor::Monitor;

/// What one server's monitoring port says about it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub url: String,
    pub server_name: String,
    pub healthy: Result<(), String>,
    /// Hubs (server names) this server is attached to as a leaf, with the local account.
    pub leafs: Vec<(String, String)>,
    /// Leaf connections this server accepted (it is someone's hub).
    pub accepted_leafs: usize,
    pub jetstream: Option<JsHealth>,
    pub in_msgs_per_s: f64,
    pub out_msgs_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct JsHealth {
    pub domain: Option<String>,
    pub streams: u64,
    pub consumers: u64,
    pub messages: u64,
}

fn counter(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Reads one server's health; the rate is the counter delta over `window`.
pub async fn assess(monitor: &Monitor, url: &str, window: Duration) -> Result<Health, String> {
    let healthy = monitor.healthy(url).await;
    let v1 = monitor.get(url, "/varz").await?;
    let t1 = Instant::now();
    tokio::time::sleep(window).await;
    let v2 = monitor.get(url, "/varz").await?;
    let secs = t1.elapsed().as_secs_f64().max(1e-3);
    let leafs = monitor.uplinks(url).await.unwrap_or_default();
    let accepted_leafs = monitor.leafs(url).await.map(|l| l.len()).unwrap_or(0).saturating_sub(leafs.len());
    let js_enabled = v2.pointer("/jetstream/config").is_some_and(|c| !c.is_null());
    let jetstream = if js_enabled {
        let jsz = monitor.get(url, "/jsz").await?;
        Some(JsHealth {
            domain: jsz.pointer("/config/domain").and_then(Value::as_str).filter(|d| !d.is_empty()).map(String::from),
            streams: jsz.get("streams").and_then(Value::as_u64).unwrap_or(0),
            consumers: jsz.get("consumers").and_then(Value::as_u64).unwrap_or(0),
            messages: jsz.get("messages").and_then(Value::as_u64).unwrap_or(0),
        })
    } else {
        None
    };
    Ok(Health {
        url: url.to_string(),
        server_name: v2.get("server_name").and_then(Value::as_str).unwrap_or_default().to_string(),
        healthy,
        leafs,
        accepted_leafs,
        jetstream,
        in_msgs_per_s: (counter(&v2, "in_msgs") - counter(&v1, "in_msgs")) / secs,
        out_msgs_per_s: (counter(&v2, "out_msgs") - counter(&v1, "out_msgs")) / secs,
    })
}

/// The guide's output, with the real answers. Returns whether the server is healthy, as a leaf if
/// `expect_leaf` (at least one hub connection).
pub fn print(h: &Health, expect_leaf: bool) -> bool {
    let mut ok = true;
    println!("=== NATS health: {} ({}) ===", h.server_name, h.url);
    match &h.healthy {
        Ok(()) => println!("✓ server: healthy (/healthz ok)"),
        Err(e) => {
            ok = false;
            println!("✗ server: {e}");
        }
    }
    if h.leafs.is_empty() {
        if expect_leaf {
            ok = false;
            println!("✗ leaf connection: none to a hub (no `is_spoke` entry in /leafz .leafs)");
        } else {
            println!("- leaf connections: none");
        }
    } else {
        for (hub, account) in &h.leafs {
            println!("✓ leaf connection: {hub} (account {account})");
        }
    }
    if h.accepted_leafs > 0 {
        println!("✓ leaf nodes attached here: {}", h.accepted_leafs);
    }
    match &h.jetstream {
        Some(js) => println!(
            "✓ JetStream: enabled{}; {} streams, {} consumers, {} messages",
            js.domain.as_deref().map(|d| format!(" (domain {d})")).unwrap_or_default(),
            js.streams,
            js.consumers,
            js.messages
        ),
        None => println!("- JetStream: not enabled"),
    }
    println!("✓ message rate: {:.1} msg/s in, {:.1} msg/s out (from /varz counters)", h.in_msgs_per_s, h.out_msgs_per_s);
    println!("=== {} ===", if ok { "healthy" } else { "NOT healthy" });
    ok
}

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let monitor = ctx.lab.monitor.clone();
    let nodes: Vec<(String, Role, String)> =
        ctx.lab.plan.nodes.iter().map(|n| (n.name.clone(), n.role, ctx.lab.endpoint(&n.name).monitor_url.clone())).collect();
    // Rates need a window per node: take them all at once.
    let assessed = futures::future::join_all(nodes.iter().map(|(_, _, url)| assess(&monitor, url, Duration::from_millis(200)))).await;
    for ((name, role, _), assessed) in nodes.into_iter().zip(assessed) {
        let declared_leaf = ctx.declared.leaf(&name);
        let declared_js = match role {
            Role::Hub => ctx.declared.hub.jetstream.as_ref(),
            Role::Leaf => declared_leaf.and_then(|l| l.jetstream.as_ref()),
        };
        let mut p = ctx.rec.start(Family::Health, format!("{name}: healthy"), "/healthz ok, rate computed from /varz counters");
        let h = match assessed {
            Ok(h) => h,
            Err(e) => {
                ctx.rec.finish(p, Outcome::Error(e));
                continue;
            }
        };
        p.metric("in_msgs_per_s", h.in_msgs_per_s);
        p.metric("out_msgs_per_s", h.out_msgs_per_s);
        let outcome = match &h.healthy {
            Ok(()) => Outcome::Pass(format!("healthz ok; {:.1} msg/s in, {:.1} msg/s out", h.in_msgs_per_s, h.out_msgs_per_s)),
            Err(e) => Outcome::Violated(e.clone()),
        };
        ctx.rec.finish(p, outcome);

        if let Some(l) = declared_leaf {
            let want = l.remotes.len();
            let p = ctx.rec.start(Family::Health, format!("{name}: leaf attached"), format!("{want} hub connection(s) in /leafz .leafs"));
            let names: Vec<String> = h.leafs.iter().map(|(n, a)| format!("{n} ({a})")).collect();
            ctx.rec.finish(p, Outcome::expect(h.leafs.len() >= want, format!("{} connection(s): {}", h.leafs.len(), names.join(", "))));
        }

        if let Some(js) = declared_js {
            let domain = js.domain.clone();
            let p = ctx.rec.start(
                Family::Health,
                format!("{name}: JetStream enabled"),
                format!("JetStream on{}", domain.as_deref().map(|d| format!(", domain {d}")).unwrap_or_default()),
            );
            let outcome = match &h.jetstream {
                Some(j) if j.domain == domain => Outcome::Pass(format!("enabled, domain {:?}, {} streams", j.domain, j.streams)),
                Some(j) => Outcome::Violated(format!("domain {:?}", j.domain)),
                None => Outcome::Violated("JetStream is not enabled".into()),
            };
            ctx.rec.finish(p, outcome);
            if role == Role::Leaf {
                let declared_streams = declared_leaf.map(|l| l.streams.len()).unwrap_or(0) as u64;
                let p = ctx.rec.start(Family::Health, format!("{name}: stream count"), format!("at least the {declared_streams} declared stream(s)"));
                let got = h.jetstream.as_ref().map(|j| j.streams).unwrap_or(0);
                ctx.rec.finish(p, Outcome::expect(got >= declared_streams, format!("{got} stream(s) in /jsz")));
            }
        }
    }
}
