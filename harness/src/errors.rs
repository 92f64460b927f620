//! The library's errors: one variant per operation, each carrying what it was doing and where.
//! Messages are lower-case fragments that read well after "failed to"; only the CLI decorates them.

use std::path::PathBuf;

use crate::topology::TopologyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Topology(#[from] TopologyError),

    #[error("generate secrets: {0}")]
    Secret(String),

    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{0}")]
    Server(String),

    #[error("config of node {node} rejected by `nats-server -t`:\n{output}")]
    ConfigRejected { node: String, output: String },

    #[error("start node {node}: {reason}\n  log: {log}\n{tail}")]
    NodeStart { node: String, reason: String, log: PathBuf, tail: String },

    #[error("lab not ready after {waited_ms} ms: {waiting_for}\n{logs}")]
    NotReady { waited_ms: u128, waiting_for: String, logs: String },

    #[error("no free lab slot: all {0} loopback slots are in use (stale runs? try `natslab down --all`)")]
    NoSlot(usize),

    /// `node` is "-" for a fault that concerns no node in particular.
    #[error("{}", fault_text(node, op, reason))]
    Fault { node: String, op: &'static str, reason: String },

    #[error("provision {what}: {reason}")]
    Provision { what: String, reason: String },

    #[error("connect to {target}: {reason}")]
    Connect { target: String, reason: String },

    #[error("{0}")]
    Run(String),

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fault_text(node: &str, op: &str, reason: &str) -> String {
    if node == "-" {
        format!("{op}: {reason}")
    } else {
        format!("node {node}: {op}: {reason}")
    }
}
