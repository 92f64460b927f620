//! The declared topology: model, loading with precise errors, semantic validation. Pure: no I/O but reading
//! the file it is asked to load.

pub mod flows;
mod load;
mod model;
mod problem;
pub mod subject;
mod units;
mod validate;
pub mod versions;

pub use load::{load_file, parse_str, TopologyError};
pub use problem::Problem;
pub use model::*;
pub use units::{go_duration, Duration, Size, SyncInterval};
