//! natslab: declare a NATS hub/leaf topology, bring it up for real, break it, and prove what it promises.
//!
//! Data flows one way: `topology` → `plan` → `render` → `backend` → `scenario` → `report`.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod backend;
pub mod backups;
pub mod bench;
pub mod cli;
pub mod contexts;
pub mod control;
pub mod errors;
pub mod files;
pub mod inventory;
pub mod lab;
pub mod mailbox;
pub mod nemesis;
pub mod net;
pub mod plan;
pub mod probe;
pub mod provision;
pub mod ready;
pub mod render;
pub mod rendered;
pub mod report;
pub mod runner;
pub mod runs;
pub mod scenario;
pub mod secrets;
pub mod server;
pub mod tool;
pub mod topology;
pub mod wan;

pub use errors::{Error, Result};
pub use lab::{Lab, UpOptions};
