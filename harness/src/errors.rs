//! The library's errors: one variant per operation, each carrying what it was doing and where.
//! Messages are lower-case fragments that read well after "failed to"; only the CLI decorates them and maps
//! them to exit codes: `is_input()` errors are bad input (exit 2), every other one means the harness or its
//! environment broke (exit 3) — never that NATS misbehaved, which is a violated check.

use std::path::PathBuf;

use crate::topology::TopologyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Topology(#[from] TopologyError),

    /// Bad flags or arguments.
    #[error("{what}\n  hint: {hint}")]
    Usage { what: String, hint: String },

    #[error("inventory {}: {reason}", path.display())]
    Inventory { path: PathBuf, reason: String },

    /// A request names a node the lab does not have.
    #[error("no node `{node}` in {run}; its nodes: {nodes}")]
    NoSuchNode { node: String, run: String, nodes: String },

    /// Nothing to act on: no lab running, or not the one named.
    #[error("{0}")]
    NoLab(String),

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

    /// What the backend needs and does not have here (root, an engine, a tool).
    #[error("the {backend} backend: {reason}")]
    Backend { backend: &'static str, reason: String },

    #[error("link proxy {link}: {reason}")]
    Link { link: String, reason: String },

    #[error("provision {what}: {reason}")]
    Provision { what: String, reason: String },

    /// A nats-server version that cannot be had, or that lacks an option the topology uses.
    #[error("{key}: {reason}")]
    Version { key: String, reason: String },

    /// A stream or consumer exists with another configuration than the declared one: the lab is not what
    /// was declared (exit 1, as a violated check), not a breakage.
    #[error("{what} exists with another configuration ({fields}); `natslab provision --update` applies the declared one")]
    Drift { what: String, fields: String },

    #[error("connect to {target}: {reason}")]
    Connect { target: String, reason: String },

    /// A detached lab's supervisor, or a lab's fault server.
    #[error("{0}")]
    Supervisor(String),

    #[error("{what}: {reason}")]
    Measure { what: &'static str, reason: String },

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    #[error("serialise {what}: {source}")]
    Serialise { what: &'static str, source: serde_json::Error },
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// Bad input — a topology, an inventory, flags, a node or lab that does not exist — rather than a
    /// harness or environment failure. `nats-server -t` refusing a rendered config counts as input: the
    /// topology asks for something this server does not take.
    /// Whether the error says the lab differs from the declaration.
    pub fn is_drift(&self) -> bool {
        matches!(self, Error::Drift { .. })
    }

    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Error::Topology(_) | Error::Version { .. } | Error::Usage { .. } | Error::Inventory { .. } | Error::NoSuchNode { .. } | Error::NoLab(_) | Error::ConfigRejected { .. }
        )
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
