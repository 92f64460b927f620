//! Run directories and the record of each running lab (`lab.json`), which `status` and `down` read.
//! A run is alive while its supervising natslab process is; everything else in the runs root is a leftover.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend::BackendKind;
use crate::errors::{Error, Result};
use crate::files::write_secret;
use crate::plan::Role;
use crate::probe::client::Access;

pub fn root() -> PathBuf {
    std::env::var_os("NATSLAB_RUNS").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("natslab-runs"))
}

pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

/// The record holds passwords (for contexts): mode 0600 like every secret.
pub fn write_info(info: &LabInfo) -> Result<()> {
    let text = serde_json::to_string_pretty(info).map_err(|source| Error::Serialise { what: "the lab record", source })?;
    write_secret(&record_path(&info.dir), &text)
}

pub fn read_info(dir: &Path) -> Option<LabInfo> {
    let text = std::fs::read_to_string(record_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub use crate::backend::spawn::alive;

/// Every run directory under the root, with its record when it has one.
pub fn list(root: &Path) -> Vec<(PathBuf, Option<LabInfo>)> {
    let mut out: Vec<(PathBuf, Option<LabInfo>)> = std::fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).map(|p| (p.clone(), read_info(&p))).collect())
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Running labs (their supervisor is alive).
pub fn running(root: &Path) -> Vec<LabInfo> {
    list(root).into_iter().filter_map(|(_, i)| i).filter(|i| alive(i.supervisor_pid)).collect()
}

/// The record of a running lab: how to reach its nodes and users, who supervises it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LabInfo {
    pub run_id: String,
    pub topology: String,
    pub backend: BackendKind,
    pub dir: PathBuf,
    pub supervisor_pid: u32,
    pub ready_ms: u128,
    pub nodes: Vec<NodeInfo>,
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    pub client_url: String,
    pub monitor_url: String,
    pub pid: Option<u32>,
    pub log: PathBuf,
    pub config: PathBuf,
    /// For a leaf: the hub it is attached to.
    pub hub: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UserInfo {
    /// The `nats` CLI context written for this user.
    pub context: String,
    pub scope: String,
    pub account: String,
    pub user: String,
    pub url: String,
    pub access: Access,
}
