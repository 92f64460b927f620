//! Talking to running servers: monitoring endpoints and NATS clients.

pub mod client;
pub mod js;
pub mod monitor;
pub mod raw;
pub mod snapshot;
pub mod tls;
pub mod wire;
