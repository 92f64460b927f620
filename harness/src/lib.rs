//! natslab: declare a NATS hub/leaf topology, bring it up for real, break it, and prove what it promises.
//!
//! Data flows one way: `topology` → `plan` → `render` → `backend` → `scenario` → `report`.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod secrets;
pub mod topology;
