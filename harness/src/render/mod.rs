//! Rendering: one nats-server config per node, from a plan. Pure: returns data, writes nothing.
//! This is where the guide's intent becomes what nats-server 2.15 really accepts (see AUDIT.md).

mod conf;
pub mod guest;
mod node;
pub mod nixos;

pub use conf::to_conf;
pub use crate::topology::flows::{flows, AccountFlows, Import};
pub use node::{render, render_node, NodeConfig};
