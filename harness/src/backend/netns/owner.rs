//! Who owns a tag: before a lab creates anything under its tag it writes a marker, `/run/natslab/netns/<tag>`,
//! naming its process (pid and start time, so a recycled pid is not mistaken for the owner) and its run id. Whatever carries a tag whose owner is gone
//! is a leftover — of a run killed with SIGKILL, say — and `remove_leftovers` clears it; a live lab's
//! namespaces are never touched, even by another lab's `natslab down --all`.

use std::path::PathBuf;

use super::names;
use super::net::{self, Removed};

fn marker_dir() -> PathBuf {
    PathBuf::from("/run/natslab/netns")
}

fn marker(tag: &str) -> PathBuf {
    marker_dir().join(tag)
}

/// A process's start time (clock ticks since boot), from `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its closing one.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The marker's text: pid, start time, and the run id (which the tag, a hash, cannot be turned back into).
fn this_process(run_id: &str) -> String {
    let pid = std::process::id();
    format!("{pid} {} {run_id}\n", start_time(pid).unwrap_or(0))
}

/// Whether the process that claimed `tag` still runs.
pub fn owner_alive(tag: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(marker(tag)) else { return false };
    let mut it = text.split_whitespace();
    let (Some(pid), Some(start)) = (it.next().and_then(|p| p.parse::<u32>().ok()), it.next().and_then(|s| s.parse::<u64>().ok())) else {
        return false;
    };
    start_time(pid) == Some(start)
}

/// Claims `tag` (of run `run_id`) for this process; refuses a tag a live lab holds.
pub fn claim(tag: &str, run_id: &str) -> Result<(), String> {
    if owner_alive(tag) {
        return Err(format!("tag {tag} is held by a running lab"));
    }
    let dir = marker_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = marker(tag);
    std::fs::write(&path, this_process(run_id)).map_err(|e| format!("write {}: {e}", path.display()))
}

pub fn release(tag: &str) {
    let _ = std::fs::remove_file(marker(tag));
}

/// What `remove_leftovers` cleared, for `natslab down --all` to say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    pub tags: Vec<String>,
    pub removed: Removed,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// Tags found on this host: in namespace names, host link names and markers.
fn tags_on_host() -> Vec<String> {
    let mut tags: Vec<String> = net::namespaces()
        .iter()
        .chain(net::host_links().iter())
        .filter_map(|n| names::tag_in(n).map(String::from))
        .collect();
    if let Ok(entries) = std::fs::read_dir(marker_dir()) {
        let files = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned());
        tags.extend(files.filter(|f| names::tag_in(&format!("{}{f}", names::NS_PREFIX)) == Some(f.as_str())));
    }
    tags.sort();
    tags.dedup();
    tags
}

/// Removes every namespace, link and process of netns labs whose owner is gone. Live labs are left alone.
pub fn remove_leftovers() -> Leftovers {
    remove_dead(tags_on_host())
}

/// Removes the leftovers of dead labs that still hold slot `slot`'s host address (which a new lab on that
/// slot needs); other leftovers stay for `natslab down --all`.
pub fn remove_leftovers_on_slot(slot: usize) -> Leftovers {
    let tags = net::host_links_with(&names::host_ip(slot)).iter().filter_map(|l| names::tag_in(l).map(String::from)).collect();
    remove_dead(tags)
}

fn remove_dead(tags: Vec<String>) -> Leftovers {
    let mut out = Leftovers::default();
    for tag in tags {
        if owner_alive(&tag) {
            continue;
        }
        let r = net::remove_tag(&tag);
        if r.failures.is_empty() {
            release(&tag);
        }
        out.removed.namespaces.extend(r.namespaces);
        out.removed.links.extend(r.links);
        out.removed.processes += r.processes;
        out.removed.failures.extend(r.failures);
        out.tags.push(tag);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
