//! JetStream stream backups through the API, as `nats stream backup` / `restore` do: a snapshot request
//! names an inbox, the server streams the stream's files (an s2-compressed tar, its consumers included) to
//! it in chunks, each acknowledged for flow control, and ends with an empty message; a restore request
//! names the stream's configuration and state and answers with a subject to send the chunks to, each
//! answered, then an empty message, answered with the restored stream's info or the server's refusal.
//!
//! On disk a backup is what `nats stream backup` writes: `backup.json` (the configuration and state the
//! server gave, the consumers' infos natslab recorded) and `stream.tar.s2` (the bytes as streamed).

use std::path::Path;
use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use serde_json::{json, Value};

use super::js::api;

const CHUNK: usize = 128 * 1024;
/// Between two chunks, or for the server's answer to one.
const QUIET: Duration = Duration::from_secs(30);

/// A stream's snapshot: what the server said about it, and its bytes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Value,
    pub state: Value,
    pub data: Vec<u8>,
}

/// Takes a snapshot of `stream` (consumers included) through the API at `prefix`.
pub async fn take(c: &Client, prefix: &str, stream: &str) -> Result<Snapshot, String> {
    let inbox = c.new_inbox();
    let mut sub = c.subscribe(inbox.clone()).await.map_err(|e| format!("subscribe for the snapshot of {stream}: {e}"))?;
    let body = json!({ "deliver_subject": inbox, "chunk_size": CHUNK, "no_consumers": false, "jsck": false });
    let answer = api(c, prefix, &format!("STREAM.SNAPSHOT.{stream}"), &body).await?;
    let mut data = Vec::new();
    loop {
        let msg = tokio::time::timeout(QUIET, sub.next())
            .await
            .map_err(|_| format!("the snapshot of {stream} stalled after {} bytes", data.len()))?
            .ok_or_else(|| format!("the snapshot subscription of {stream} ended"))?;
        if msg.payload.is_empty() {
            // The end; a server that failed says so in a status header.
            if let Some(d) = msg.description.as_ref().filter(|d| !d.is_empty()) {
                return Err(format!("the snapshot of {stream} failed: {d}"));
            }
            break;
        }
        data.extend_from_slice(&msg.payload);
        if let Some(reply) = msg.reply {
            c.publish(reply, "".into()).await.map_err(|e| format!("acknowledge a snapshot chunk of {stream}: {e}"))?;
        }
    }
    Ok(Snapshot { config: answer["config"].clone(), state: answer["state"].clone(), data })
}

/// Restores `snap` as a new stream (it must not exist); the restored stream's info.
pub async fn restore(c: &Client, prefix: &str, snap: &Snapshot) -> Result<Value, String> {
    let stream = snap.config["name"].as_str().ok_or("the snapshot names no stream")?.to_string();
    let answer = api(c, prefix, &format!("STREAM.RESTORE.{stream}"), &json!({ "config": snap.config, "state": snap.state })).await?;
    let deliver = answer["deliver_subject"].as_str().ok_or_else(|| format!("the restore of {stream} named no subject to send to: {answer}"))?.to_string();
    for chunk in snap.data.chunks(CHUNK) {
        let reply = ask(c, &deliver, chunk.to_vec()).await.map_err(|e| format!("restore {stream}: {e}"))?;
        if !reply.is_empty() {
            let v: Value = serde_json::from_slice(&reply).unwrap_or_default();
            if let Some(err) = v.get("error") {
                return Err(format!("restore {stream}: {}", err["description"].as_str().unwrap_or("refused")));
            }
        }
    }
    let done = ask(c, &deliver, Vec::new()).await.map_err(|e| format!("restore {stream}: {e}"))?;
    let v: Value = serde_json::from_slice(&done).map_err(|e| format!("restore {stream}: bad final answer: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("restore {stream}: {} (err_code {})", err["description"].as_str().unwrap_or("refused"), err["err_code"]));
    }
    Ok(v)
}

/// A request answered within `QUIET` (a restore's last answer waits for the stream to be rebuilt).
async fn ask(c: &Client, subject: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    let inbox = c.new_inbox();
    let mut sub = c.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
    c.publish_with_reply(subject.to_string(), inbox, payload.into()).await.map_err(|e| e.to_string())?;
    let msg = tokio::time::timeout(QUIET, sub.next()).await.map_err(|_| format!("no answer from {subject} within {} s", QUIET.as_secs()))?;
    Ok(msg.ok_or("the answer subscription ended")?.payload.to_vec())
}

/// Writes a snapshot (and what else was recorded about the stream) into `dir`.
pub fn write(dir: &Path, snap: &Snapshot, extra: &Value) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let meta = json!({ "config": snap.config, "state": snap.state, "natslab": extra });
    let text = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("backup.json"), text + "\n").map_err(|e| format!("write {}/backup.json: {e}", dir.display()))?;
    std::fs::write(dir.join("stream.tar.s2"), &snap.data).map_err(|e| format!("write {}/stream.tar.s2: {e}", dir.display()))
}

/// Reads a snapshot `write` wrote (or `nats stream backup`); the extra record, if any.
pub fn read(dir: &Path) -> Result<(Snapshot, Value), String> {
    let text = std::fs::read_to_string(dir.join("backup.json")).map_err(|e| format!("read {}/backup.json: {e}", dir.display()))?;
    let meta: Value = serde_json::from_str(&text).map_err(|e| format!("{}/backup.json: {e}", dir.display()))?;
    let data = std::fs::read(dir.join("stream.tar.s2")).map_err(|e| format!("read {}/stream.tar.s2: {e}", dir.display()))?;
    Ok((Snapshot { config: meta["config"].clone(), state: meta["state"].clone(), data }, meta["natslab"].clone()))
}
