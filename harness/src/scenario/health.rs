//! Health: the guide's `check-leaf-health`, done against the real monitoring JSON (AUDIT §5): `/healthz`
//! status, leaf connections from `/leafz .leafs` (not `.leafnodes[0].current.state`, which does not
//! exist), JetStream from `/jsz`, and message rates computed from `/varz` counters (there is no rate field).
//! Also the `natslab health --monitor URL...` command.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::{Ctx, Family, Outcome, Pending, Spec};
use crate::lab::Lab;
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

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let monitor = ctx.lab.monitor.clone();
    let t = ctx.declared;
    let nodes: Vec<(String, bool)> = t.hub_names().map(|h| (h.to_string(), false)).chain(t.leaves.iter().map(|l| (l.name.clone(), true))).collect();
    // Rates need a window per node: take them all at once.
    let urls: Vec<Option<String>> = nodes.iter().map(|(n, _)| ctx.lab.monitor_url(n).ok().map(String::from)).collect();
    let assessed = futures::future::join_all(urls.iter().map(|url| async {
        match url {
            Some(u) => assess(&monitor, u, Duration::from_millis(200)).await,
            None => Err("the node is not part of this lab".to_string()),
        }
    }))
    .await;
    for ((name, is_leaf), assessed) in nodes.into_iter().zip(assessed) {
        let name = name.as_str();
        let declared_leaf = t.leaf(name);
        let declared_js = if is_leaf { declared_leaf.and_then(|l| l.jetstream.as_ref()) } else { t.hub.jetstream.as_ref() };
        let spec = Spec::new(Family::Health, "healthy", &[name], format!("{name}: healthy"), "/healthz ok, rate computed from /varz counters");
        // An unreachable node is violated, not a harness error: the lab does not do what was declared.
        let h = match assessed {
            Ok(h) => h,
            Err(e) => {
                ctx.check(spec, async |_: &mut Lab, _: &mut Pending| Ok(Outcome::Violated(format!("its monitoring endpoint does not answer: {e}")))).await;
                continue;
            }
        };
        ctx.check(spec, async |_: &mut Lab, p: &mut Pending| {
            p.metric("in_msgs_per_s", h.in_msgs_per_s);
            p.metric("out_msgs_per_s", h.out_msgs_per_s);
            Ok(match &h.healthy {
                Ok(()) => Outcome::Pass(format!("healthz ok; {:.1} msg/s in, {:.1} msg/s out", h.in_msgs_per_s, h.out_msgs_per_s)),
                Err(e) => Outcome::Violated(e.clone()),
            })
        })
        .await;

        if let Some(l) = declared_leaf {
            let want = l.remotes.len();
            let spec = Spec::new(Family::Health, "leaf-attached", &[name], format!("{name}: leaf attached"), format!("{want} hub connection(s) in /leafz .leafs"));
            ctx.check(spec, async |_: &mut Lab, _: &mut Pending| {
                let names: Vec<String> = h.leafs.iter().map(|(n, a)| format!("{n} ({a})")).collect();
                Ok(Outcome::expect(h.leafs.len() >= want, format!("{} connection(s): {}", h.leafs.len(), names.join(", "))))
            })
            .await;
        }

        if let Some(js) = declared_js {
            let domain = js.domain.clone();
            let spec = Spec::new(
                Family::Health,
                "jetstream",
                &[name],
                format!("{name}: JetStream enabled"),
                format!("JetStream on{}", domain.as_deref().map(|d| format!(", domain {d}")).unwrap_or_default()),
            );
            ctx.check(spec, async |_: &mut Lab, _: &mut Pending| {
                let shown = |d: &Option<String>| d.clone().unwrap_or_else(|| "(none)".into());
                Ok(match &h.jetstream {
                    Some(j) if j.domain == domain => Outcome::Pass(format!("enabled, domain {}, {} streams", shown(&j.domain), j.streams)),
                    Some(j) => Outcome::Violated(format!("domain {}", shown(&j.domain))),
                    None => Outcome::Violated("JetStream is not enabled".into()),
                })
            })
            .await;
            if let Some(l) = declared_leaf {
                let declared_streams = l.streams.len() as u64;
                let spec = Spec::new(
                    Family::Health,
                    "stream-count",
                    &[name],
                    format!("{name}: stream count"),
                    format!("at least the {declared_streams} declared stream(s)"),
                );
                ctx.check(spec, async |_: &mut Lab, _: &mut Pending| {
                    let got = h.jetstream.as_ref().map(|j| j.streams).unwrap_or(0);
                    Ok(Outcome::expect(got >= declared_streams, format!("{got} stream(s) in /jsz")))
                })
                .await;
            }
        }
    }
}
