//! Network faults on inter-node links: a small TCP proxy per link (`proxy`) and its pure shaping arithmetic
//! (`shape`).

pub mod proxy;
pub mod shape;

pub use proxy::{Counters, Direction, LinkProxy};
pub use shape::{burst_bytes, Toxics};
