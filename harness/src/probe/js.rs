//! The JetStream API as plain requests (AUDIT §4b: the real subjects and field names), in one place for
//! provisioning, the JetStream family, the acknowledged-write workload and the network family. Errors are
//! text: `"<description> (err_code N)"` for the server's refusals, which callers match on.

use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use base64::Engine;
use serde_json::{json, Value};

/// The local domain's API prefix.
pub const API: &str = "$JS.API";

/// The API prefix of a JetStream domain (`None`: the local one).
pub fn prefix(domain: Option<&str>) -> String {
    match domain {
        Some(d) => format!("$JS.{d}.API"),
        None => API.to_string(),
    }
}

/// One API request; an `error` in the answer becomes `Err` with the server's description and code.
pub async fn api(client: &Client, prefix: &str, op: &str, body: &Value) -> Result<Value, String> {
    let subject = format!("{prefix}.{op}");
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let msg = client.request(subject.clone(), payload.into()).await.map_err(|e| format!("{subject}: {e}"))?;
    let v: Value = serde_json::from_slice(&msg.payload).map_err(|e| format!("{subject}: bad answer: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "{} (err_code {})",
            err.get("description").and_then(Value::as_str).unwrap_or("error"),
            err.get("err_code").and_then(Value::as_i64).unwrap_or(0)
        ));
    }
    Ok(v)
}

/// As `api`, asking again while the answer is a timeout (a just-settled cluster's API can be slow to answer).
pub async fn api_patient(client: &Client, prefix: &str, op: &str, body: &Value, tries: usize) -> Result<Value, String> {
    let mut answer = api(client, prefix, op, body).await;
    for _ in 1..tries {
        match &answer {
            Err(e) if e.contains("timed out") => answer = api(client, prefix, op, body).await,
            _ => break,
        }
    }
    answer
}

/// Whether an API error says the stream, consumer or message does not exist.
pub fn not_found(e: &str) -> bool {
    ["err_code 10059", "err_code 10014", "err_code 10037"].iter().any(|c| e.contains(c))
}

/// Whether an error says nobody answers that API prefix (no JetStream there).
pub fn no_responders(e: &str) -> bool {
    e.contains("no responders")
}

pub async fn stream_info(c: &Client, prefix: &str, stream: &str) -> Result<Value, String> {
    api(c, prefix, &format!("STREAM.INFO.{stream}"), &json!({})).await
}

pub async fn consumer_info(c: &Client, prefix: &str, stream: &str, consumer: &str) -> Result<Value, String> {
    api(c, prefix, &format!("CONSUMER.INFO.{stream}.{consumer}"), &json!({})).await
}

pub async fn stream_state(c: &Client, prefix: &str, stream: &str) -> Result<Value, String> {
    Ok(stream_info(c, prefix, stream).await?["state"].clone())
}

pub fn state_u64(state: &Value, key: &str) -> u64 {
    state.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Every stream name the API prefix lists (paged).
pub async fn stream_names(c: &Client, prefix: &str) -> Result<Vec<String>, String> {
    names(c, prefix, "STREAM.NAMES", "streams").await
}

/// Every consumer name of a stream (paged).
pub async fn consumer_names(c: &Client, prefix: &str, stream: &str) -> Result<Vec<String>, String> {
    names(c, prefix, &format!("CONSUMER.NAMES.{stream}"), "consumers").await
}

async fn names(c: &Client, prefix: &str, op: &str, key: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let v = api(c, prefix, op, &json!({ "offset": out.len() })).await?;
        let page: Vec<String> = v[key].as_array().map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default();
        let total = v.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        let empty = page.is_empty();
        out.extend(page);
        if empty || out.len() >= total {
            return Ok(out);
        }
    }
}

/// A JetStream publish: the PubAck as JSON (it may carry an `error`). `Err` only when no answer came.
pub async fn publish(c: &Client, subject: &str, headers: Option<HeaderMap>, payload: Vec<u8>) -> Result<Value, String> {
    let answer = match headers {
        Some(h) => c.request_with_headers(subject.to_string(), h, payload.into()).await,
        None => c.request(subject.to_string(), payload.into()).await,
    }
    .map_err(|e| format!("publish to {subject}: {e}"))?;
    serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("publish to {subject}: not a PubAck ({e}): {}", String::from_utf8_lossy(&answer.payload)))
}

/// The refusal a PubAck carries, if any.
pub fn ack_error(ack: &Value) -> Option<String> {
    ack.get("error").map(|e| {
        format!(
            "{} (err_code {})",
            e.get("description").and_then(Value::as_str).unwrap_or("error"),
            e.get("err_code").and_then(Value::as_i64).unwrap_or(0)
        )
    })
}

pub fn ack_seq(ack: &Value) -> Option<u64> {
    ack.get("seq").and_then(Value::as_u64)
}

/// Whether an answer is a PubAck that stored the message.
pub fn is_stored(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload).is_ok_and(|v| v.get("error").is_none() && v.get("seq").is_some())
}

/// A publish that must be stored: its sequence number, or why not.
pub async fn publish_stored(c: &Client, subject: &str, payload: &str) -> Result<u64, String> {
    let ack = publish(c, subject, None, payload.as_bytes().to_vec()).await?;
    if let Some(e) = ack_error(&ack) {
        return Err(format!("publish to {subject} refused: {e}"));
    }
    ack_seq(&ack).ok_or_else(|| format!("publish to {subject}: PubAck without seq: {ack}"))
}

/// A stored message as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub payload: String,
    /// The raw header block (`NATS/1.0\r\n...`), if any.
    pub headers: Option<String>,
}

/// A message from STREAM.MSG.GET.
pub fn decode_msg(m: &Value) -> Result<Stored, String> {
    let seq = m.get("seq").and_then(Value::as_u64).ok_or_else(|| format!("message without seq: {m}"))?;
    let subject = m.get("subject").and_then(Value::as_str).unwrap_or_default().to_string();
    let b64 = |k: &str| -> Result<Option<String>, String> {
        match m.get(k).and_then(Value::as_str) {
            Some(d) => base64::engine::general_purpose::STANDARD
                .decode(d)
                .map(|b| Some(String::from_utf8_lossy(&b).to_string()))
                .map_err(|e| format!("message {seq}: bad base64 in {k}: {e}")),
            None => Ok(None),
        }
    };
    Ok(Stored { seq, subject, payload: b64("data")?.unwrap_or_default(), headers: b64("hdrs")? })
}

/// One stored message by sequence, or `None` when that sequence holds nothing.
pub async fn get_msg(c: &Client, prefix: &str, stream: &str, seq: u64) -> Result<Option<Stored>, String> {
    match api(c, prefix, &format!("STREAM.MSG.GET.{stream}"), &json!({ "seq": seq })).await {
        Ok(v) => Ok(Some(decode_msg(&v["message"])?)),
        Err(e) if e.contains("err_code 10037") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first stored message at or after `seq`, or `None` past the end.
pub async fn next_msg(c: &Client, prefix: &str, stream: &str, seq: u64) -> Result<Option<Stored>, String> {
    match api(c, prefix, &format!("STREAM.MSG.GET.{stream}"), &json!({ "seq": seq, "next_by_subj": ">" })).await {
        Ok(v) => Ok(Some(decode_msg(&v["message"])?)),
        Err(e) if e.contains("err_code 10037") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last message stored on a subject, or `None`.
pub async fn last_on(c: &Client, prefix: &str, stream: &str, subject: &str) -> Result<Option<Stored>, String> {
    match api(c, prefix, &format!("STREAM.MSG.GET.{stream}"), &json!({ "last_by_subj": subject })).await {
        Ok(v) => Ok(Some(decode_msg(&v["message"])?)),
        Err(e) if e.contains("err_code 10037") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every message of a (small) stream, in order, up to `limit`.
pub async fn all_msgs(c: &Client, prefix: &str, stream: &str, limit: usize) -> Result<Vec<Stored>, String> {
    let mut out = Vec::new();
    let mut seq = 1;
    while out.len() < limit {
        match next_msg(c, prefix, stream, seq).await? {
            Some(m) => {
                seq = m.seq + 1;
                out.push(m);
            }
            None => break,
        }
    }
    Ok(out)
}

/// Asks a pull consumer for up to `batch` messages, delivered to `inbox` within `expires`.
pub async fn pull(c: &Client, prefix: &str, stream: &str, consumer: &str, inbox: &str, batch: usize, expires: Duration) -> Result<(), String> {
    let body = json!({ "batch": batch, "expires": expires.as_nanos() as u64 }).to_string();
    c.publish_with_reply(format!("{prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"), inbox.to_string(), body.into())
        .await
        .map_err(|e| format!("pull from {stream}/{consumer}: {e}"))?;
    c.flush().await.map_err(|e| format!("pull from {stream}/{consumer}: {e}"))
}

/// Repeats `f` while its error is one a cluster that has just elected its meta leader gives (peers not yet
/// known), until the deadline.
pub async fn retry_transient<F, Fut>(deadline: Instant, mut f: F) -> Result<Value, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && transient(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e),
        }
    }
}

fn transient(e: &str) -> bool {
    ["insufficient resources", "no suitable peers", "timed out", "no responders", "temporarily unavailable", "10008", "10023"]
        .iter()
        .any(|k| e.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_with_their_headers() {
        let m = json!({ "seq": 4, "subject": "a.b", "data": "aGk=", "hdrs": "TkFUUy8xLjANCg0K" });
        let s = decode_msg(&m).unwrap();
        assert_eq!((s.seq, s.subject.as_str(), s.payload.as_str()), (4, "a.b", "hi"));
        assert_eq!(s.headers.as_deref(), Some("NATS/1.0\r\n\r\n"));
        assert!(decode_msg(&json!({ "subject": "x" })).is_err());
    }

    #[test]
    fn prefixes_name_the_domain() {
        assert_eq!(prefix(None), "$JS.API");
        assert_eq!(prefix(Some("hub")), "$JS.hub.API");
    }
}
