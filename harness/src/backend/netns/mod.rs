//! `--backend netns` (root): each node a host in its own network namespace on a bridge, addressed in
//! 198.18.0.0/15. See `backend.rs` for the backend, `names.rs` for the naming scheme, `net.rs` for the
//! kernel side, `owner.rs` for how leftovers are told from live labs.

mod backend;
pub mod names;
pub mod net;
mod owner;

pub use backend::{NetnsBackend, CLIENT_PORT, CLUSTER_PORT, HTTP_PORT, LEAF_PORT};
pub use owner::{remove_leftovers, Leftovers};
