//! Requests and answers over files in a directory, between processes that share nothing else: the attached
//! backend and a NixOS test script (or its stand-in), `natslab fault` and a lab's supervisor.
//!
//! The asker writes `<seq>.request.json` (written aside, then renamed: never read half-written) and polls
//! for `<seq>.response.json`; once it has parsed the answer it removes the request, then the answer — in
//! that order, so a server never sees a request without its answer and serves it twice. A server lists the
//! requests that have no answer, and must skip one that has vanished since it listed it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

fn request_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq}.request.json"))
}

fn answer_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq}.response.json"))
}

/// Writes `text` at `path` through a dotted name beside it and a rename.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The highest sequence number any file in `dir` carries (0 for none): start past it, so answers left by
/// an earlier exchange are never taken for new ones.
pub fn highest_seq(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_string_lossy().split('.').next().and_then(|n| n.parse::<u64>().ok()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Asks, and waits up to `timeout` for the answer. Errors are text for the caller to wrap.
pub async fn ask<Q: Serialize, A: DeserializeOwned>(dir: &Path, seq: u64, request: &Q, timeout: Duration) -> Result<A, String> {
    let path = request_path(dir, seq);
    let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
    write_atomically(&path, &text).map_err(|e| format!("write {}: {e}", path.display()))?;
    let answer = answer_path(dir, seq);
    let deadline = Instant::now() + timeout;
    loop {
        // An answer still being written does not parse yet: read it again.
        if let Some(a) = std::fs::read_to_string(&answer).ok().and_then(|t| serde_json::from_str::<A>(&t).ok()) {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&answer);
            return Ok(a);
        }
        if Instant::now() > deadline {
            let _ = std::fs::remove_file(&path);
            return Err(format!("no answer in {} s from whoever serves {}", timeout.as_secs(), dir.display()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The requests waiting for an answer, oldest first: (seq, request). Unreadable ones are skipped (gone
/// meanwhile) or answered by `bad` (not a request this server understands).
pub fn pending<Q: DeserializeOwned>(dir: &Path) -> Vec<(u64, Result<Q, String>)> {
    let mut out: Vec<(u64, Result<Q, String>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let seq = name.strip_suffix(".request.json")?.parse::<u64>().ok()?;
            if answer_path(dir, seq).exists() {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((seq, serde_json::from_str::<Q>(&text).map_err(|err| format!("not a request: {err}"))))
        })
        .collect();
    out.sort_by_key(|(seq, _)| *seq);
    out
}

/// Answers request `seq`.
pub fn answer<A: Serialize>(dir: &Path, seq: u64, answer: &A) -> std::io::Result<()> {
    let text = serde_json::to_string(answer).map_err(std::io::Error::other)?;
    write_atomically(&answer_path(dir, seq), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_answered_once_and_both_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let server = tokio::spawn(async move {
            loop {
                if let Some((seq, q)) = pending::<String>(&d).into_iter().next() {
                    answer(&d, seq, &format!("done {}", q.unwrap())).unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let a: String = ask(dir.path(), 7, &"kill".to_string(), Duration::from_secs(10)).await.unwrap();
        server.await.unwrap();
        assert_eq!(a, "done kill");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "request and answer removed");
        assert!(pending::<String>(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn no_answer_is_an_error_naming_the_directory_and_the_request_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let e = ask::<_, String>(dir.path(), 1, &"x", Duration::from_millis(50)).await.unwrap_err();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(pending::<String>(dir.path()).is_empty(), "a withdrawn request is not served later");
    }

    #[test]
    fn numbering_starts_past_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(highest_seq(dir.path()), 0);
        std::fs::write(dir.path().join("12.response.json"), "{}").unwrap();
        std::fs::write(dir.path().join("3.request.json"), "{}").unwrap();
        assert_eq!(highest_seq(dir.path()), 12);
    }
}
