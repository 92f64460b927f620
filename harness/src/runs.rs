//! Run directories and the record of each running lab (`lab.json`), which `status` and `down` read.
//! A run is alive while its supervising natslab process is; everything else in the runs root is a leftover.

use std::path::{Path, PathBuf};

use crate::errors::{Error, Result};
use crate::files::write_secret;
use crate::lab::{Lab, LabInfo};

pub fn root() -> PathBuf {
    std::env::var_os("NATSLAB_RUNS").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("natslab-runs"))
}

pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

/// The record holds passwords (for contexts): mode 0600 like every secret.
pub fn write_record(lab: &Lab) -> Result<()> {
    write_info(&lab.describe())
}

pub fn write_info(info: &LabInfo) -> Result<()> {
    let text = serde_json::to_string_pretty(info).map_err(|e| Error::Run(format!("serialise lab record: {e}")))?;
    write_secret(&record_path(&info.dir), &text)
}

pub fn read_info(dir: &Path) -> Option<LabInfo> {
    let text = std::fs::read_to_string(record_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

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
