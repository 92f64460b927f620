//! Probing subject flow with real clients. Interest crosses routes and leaf links asynchronously, so a
//! positive probe republishes until delivery (bounded); a negative probe never waits on a clock: it sends
//! the forbidden message and then a control message along the same path, and once the control has arrived,
//! anything the forbidden one would have done has happened (NATS keeps per-connection order).

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::probe::client::Access;

pub const DELIVERY: Duration = Duration::from_secs(10);

/// Publishes on `subject` every 25 ms until `sub` receives something, or `within` passes.
/// Returns the subject and payload of the first message received.
pub async fn publish_until_received(
    publisher: &async_nats::Client,
    subject: &str,
    payload: &str,
    sub: &mut async_nats::Subscriber,
    within: Duration,
) -> Option<(String, String)> {
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
pub async fn drain(sub: &mut async_nats::Subscriber) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), sub.next()).await {
        out.push((m.subject.to_string(), String::from_utf8_lossy(&m.payload).to_string()));
    }
    out
}

/// Waits (bounded) for a message whose payload is `payload` on `sub`; returns what else arrived before it.
pub async fn wait_for_payload(sub: &mut async_nats::Subscriber, payload: &str, within: Duration) -> Result<Vec<(String, String)>, Vec<(String, String)>> {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(m)) => {
                let p = String::from_utf8_lossy(&m.payload).to_string();
                if p == payload {
                    return Ok(before);
                }
                before.push((m.subject.to_string(), p));
            }
            _ => return Err(before),
        }
    }
}

/// A unique token for payloads and subjects of one probe.
pub fn token() -> String {
    let n = nuid::next().to_string();
    n[n.len() - 10..].to_lowercase()
}

/// Connects, mapping errors to text for check outcomes.
pub async fn connect(access: &Access, name: &str) -> Result<async_nats::Client, String> {
    access.connect(name).await.map_err(|e| e.to_string())
}
