//! `natslab wan`: the guide's "Performance Tuning" question answered by measurement — over a leaf link with
//! added latency and a bandwidth cap (through the link proxy), how many bytes cross the wire and how fast
//! the same workload gets through for each leaf compression mode.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::errors::{Error, Result};
use crate::lab::{Lab, Progress, Quiet, UpOptions};
use crate::nemesis::Fault;
use crate::topology::{self, Compression};

fn failed(reason: impl Into<String>) -> Error {
    Error::Measure { what: "wan", reason: reason.into() }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub latency: Duration,
    pub bandwidth_bytes_per_s: u64,
    pub messages: usize,
    pub size: usize,
    /// Process or container (latency and cap in the link proxy), or netns (latency in the proxy, the cap in
    /// the kernel).
    pub backend: crate::backend::BackendKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: String,
    /// What `/leafz` on the leaf reported for the link.
    pub negotiated: String,
    pub wire_bytes: u64,
    pub payload_bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
}

pub const MODES: [Compression; 5] = [Compression::Off, Compression::S2Fast, Compression::S2Better, Compression::S2Best, Compression::S2Auto];

fn topology(mode: Compression) -> Result<topology::Topology> {
    let yaml = format!(
        r#"
name: wan-{m}
hub:
  nodes: [{{name: hub-1}}]
  accounts: [{{name: HUB}}]
leaves:
  - name: edge
    compression: {m}
    remotes:
      - hubs: [hub-1]
        exports: [{{subject: "domain.>", prefix: leaf.edge}}]
"#,
        m = mode.as_str()
    );
    Ok(topology::parse_str(&yaml, std::path::Path::new("<wan profile>"))?)
}

/// A domain event as CIM would publish it: JSON, repetitive, compressible like real traffic.
fn payload(i: usize, size: usize) -> String {
    let mut s = format!(r#"{{"event_id":"{i:012}","aggregate":"graph","type":"NodeAdded","payload":{{"#);
    let mut k = 0;
    while s.len() + 40 < size {
        s.push_str(&format!(r#""attr_{k:04}":"value-{:06}","#, (i * 31 + k) % 1000));
        k += 1;
    }
    s.push_str(r#""end":true}}"#);
    s
}

async fn one_mode(mode: Compression, profile: &Profile) -> Result<ModeResult> {
    let root = tempfile::tempdir().map_err(Error::io("create a temporary directory"))?;
    let opts = UpOptions { proxied: true, backend: profile.backend, runs_root: Some(root.path().to_path_buf()), ..UpOptions::default() };
    let mut lab = Lab::up(topology(mode)?, &opts, &Quiet).await?;
    let result = measure(&mut lab, mode, profile).await;
    lab.shutdown().await;
    result
}

async fn measure(lab: &mut Lab, mode: Compression, profile: &Profile) -> Result<ModeResult> {
    let leaf = lab.probe("edge", "LOCAL").await?;
    let hub = lab.probe("hub-1", "HUB").await?;
    let mut sub = hub.subscribe("leaf.edge.domain.>").await.map_err(|e| failed(e.to_string()))?;
    // Interest must have crossed the link before the clock starts.
    let warm = crate::scenario::probes::publish_until_received(&leaf, "domain.warmup", "w", &mut sub, Duration::from_secs(10)).await;
    if warm.is_none() {
        return Err(failed("the leaf link carried nothing before the measurement"));
    }
    while tokio::time::timeout(Duration::from_millis(50), sub.next()).await.is_ok() {}

    let slow = Fault::Slow { a: "edge".into(), b: "hub-1".into(), latency: profile.latency, jitter: Duration::ZERO };
    let cap = Fault::Cap { a: "edge".into(), b: "hub-1".into(), bytes_per_s: profile.bandwidth_bytes_per_s };
    lab.apply(&slow).await?;
    lab.apply(&cap).await?;
    // s2_auto picks its level from the RTT it measures: reconnect so it measures the slow link.
    lab.apply(&Fault::Partition { grudge: crate::nemesis::cut_leaf("edge", &["hub-1"]) }).await?;
    lab.apply(&Fault::Heal).await?;
    lab.wait_ready(&["edge"], Duration::from_secs(30)).await?;
    while tokio::time::timeout(Duration::from_millis(50), sub.next()).await.is_ok() {}
    let warm = crate::scenario::probes::publish_until_received(&leaf, "domain.warmup", "w", &mut sub, Duration::from_secs(30)).await;
    if warm.is_none() {
        return Err(failed("the leaf did not carry traffic again after reconnecting over the slow link"));
    }
    while tokio::time::timeout(Duration::from_millis(200), sub.next()).await.is_ok() {}
    let before: u64 = lab.link_counters().values().map(|c| c.bytes_up).sum();
    let payloads: Vec<String> = (0..profile.messages).map(|i| payload(i, profile.size)).collect();
    let payload_bytes: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    let started = Instant::now();
    let publisher = leaf.clone();
    let sending = tokio::spawn(async move {
        for (i, p) in payloads.into_iter().enumerate() {
            if publisher.publish(format!("domain.graph.{i}"), p.into()).await.is_err() {
                break;
            }
        }
        let _ = publisher.flush().await;
    });
    let deadline = started + Duration::from_secs(600);
    let mut got = 0;
    while got < profile.messages {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = sending.await;
    if got < profile.messages {
        return Err(failed(format!("{}: only {got}/{} messages crossed the link", mode.as_str(), profile.messages)));
    }
    let after: u64 = lab.link_counters().values().map(|c| c.bytes_up).sum();
    let negotiated = lab
        .monitor
        .get(lab.monitor_url("edge").map_err(failed)?, "/leafz")
        .await
        .ok()
        .and_then(|v| v.pointer("/leafs/0/compression").and_then(|c| c.as_str()).map(String::from))
        .unwrap_or_default();
    Ok(ModeResult {
        mode: mode.as_str().to_string(),
        negotiated,
        wire_bytes: after.saturating_sub(before),
        payload_bytes,
        seconds,
        msgs_per_s: profile.messages as f64 / seconds,
    })
}

/// Measures every compression mode; `progress` hears which. The CLI prints the table.
pub async fn run(profile: &Profile, progress: &dyn Progress) -> Result<Vec<ModeResult>> {
    use crate::backend::BackendKind;
    if profile.backend == BackendKind::Attached {
        return Err(Error::Usage {
            what: "natslab wan needs link proxies with latency".into(),
            hint: "use --backend process (default), netns or container".into(),
        });
    }
    let mut results = Vec::new();
    for mode in MODES {
        progress.message(&format!("measuring compression {} ...", mode.as_str()));
        results.push(one_mode(mode, profile).await?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_differ() {
        let a = payload(1, 1024);
        assert!(a.len() <= 1024 && a.len() > 900, "{}", a.len());
        assert_ne!(a, payload(2, 1024));
        assert!(serde_json::from_str::<serde_json::Value>(&a).is_ok());
    }
}
