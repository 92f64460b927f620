//! Backends bring a plan's nodes up and down and perform faults on them. A fixed set, so an enum: each says
//! which faults it can do (`faults()`), and callers ask before they try.

pub mod process;
pub mod slot;
pub mod spawn;

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// nats-server processes on 127.77.<slot>.<n> (default; no privileges).
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Latency,
    Bandwidth,
    Blackhole,
}

pub type FaultSet = BTreeSet<FaultKind>;

/// Where the harness reaches a node (which may differ from where peers reach it, e.g. mapped ports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub client_url: String,
    pub monitor_url: String,
}
