//! Scenarios: checks derived from the declared topology, run against a live lab. Each family lives in its
//! own file and exposes `run(&mut Ctx)`; this module only sequences them.

pub mod check;
pub mod failover;
pub mod health;
pub mod jepsen;
pub mod jetstream;
pub mod mapping;
pub mod network;
pub mod probes;
pub mod security;

pub use check::{Check, Family, Observer, Outcome, Recorder, Silent, Verdict};

use crate::lab::Lab;
use crate::topology::Topology;

/// What a family works with: the lab, what was *declared* (checks derive from this, not from what was
/// rendered, so a sabotaged lab shows up as violations), and the recorder.
pub struct Ctx<'a, 'r> {
    pub lab: &'a mut Lab,
    pub declared: &'a Topology,
    pub rec: &'a mut Recorder<'r>,
}

/// Runs the chosen families in an order that keeps disruption last: health, mapping, security, JetStream,
/// then failover (which kills and pauses nodes, and heals before it returns).
pub async fn run(ctx: &mut Ctx<'_, '_>, families: &[Family]) {
    for family in Family::ALL {
        if !families.contains(&family) {
            continue;
        }
        let _span = tracing::info_span!("scenario", family = family.name()).entered();
        match family {
            Family::Health => health::run(ctx).await,
            Family::Mapping => mapping::run(ctx).await,
            Family::Security => security::run(ctx).await,
            Family::Jetstream => jetstream::run(ctx).await,
            Family::Failover => failover::run(ctx).await,
            Family::Network => network::run(ctx).await,
        }
    }
}
