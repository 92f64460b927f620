//! Scenarios: checks derived from the declared topology, run against a live lab. Each family lives in its
//! own file and exposes `run(&mut Ctx)`; every check goes through `Ctx::check`, which owns what they all
//! share: skipping where the backend lacks a capability, timing, mapping harness failures, and the final
//! undo of every fault the check left (then waiting until the lab is ready again). This module only
//! sequences the families.

pub mod acked_writes;
pub mod backup;
pub mod check;
pub mod core_traffic;
pub mod failover;
pub mod health;
pub mod jetstream;
pub mod limits;
pub mod mapping;
pub mod network;
pub mod probes;
pub mod reload;
pub mod rotation;
pub mod security;
pub mod state;
pub mod streams;
pub mod upgrade;

pub use check::{Check, Concluded, Family, Observer, Outcome, Pending, Recorder, Silent, Spec, Verdict};

use crate::lab::{Lab, UndoError};
use crate::topology::Topology;

/// What a family works with: the lab, what was *declared* (checks derive from this, not from what was
/// rendered, so a sabotaged lab shows up as violations), and the recorder.
pub struct Ctx<'a, 'r> {
    pub lab: &'a mut Lab,
    pub declared: &'a Topology,
    pub rec: &'a mut Recorder<'r>,
}

impl Ctx<'_, '_> {
    /// Runs one check: skipped (saying which capability is missing) where the backend lacks one the check
    /// needs; else the body, whose `Err` is a harness error; then every fault still in force is undone and
    /// the lab must be ready again before the check is recorded. Not run at all when filtered out.
    pub async fn check<F>(&mut self, spec: Spec, body: F) -> Option<Verdict>
    where
        F: for<'l> AsyncFnOnce(&'l mut Lab, &'l mut Pending) -> Concluded,
    {
        if !self.rec.wanted(&spec.id) {
            return None;
        }
        if let Some(missing) = spec.needs.iter().find(|c| !self.lab.can(**c)) {
            let why = format!("the {} backend cannot {}", self.lab.kind(), missing.verb());
            self.rec.skip(spec, why);
            return Some(Verdict::Skipped);
        }
        let mut p = self.rec.start(spec);
        let outcome = body(self.lab, &mut p).await.unwrap_or_else(|o| o);
        let outcome = match self.lab.undo_all().await {
            Ok(_) => outcome,
            Err(UndoError::Undo(e)) => outcome.worse(Outcome::Error(format!("could not undo its faults: {e}"))),
            Err(e @ UndoError::NotReady(_)) => outcome.worse(Outcome::Violated(e.to_string())),
        };
        Some(self.rec.finish(p, outcome))
    }

    /// Records a check that does not apply to this topology or lab, with the reason.
    pub fn skip(&mut self, spec: Spec, why: impl Into<String>) {
        if self.rec.wanted(&spec.id) {
            self.rec.skip(spec, why);
        }
    }
}

/// Runs the chosen families in an order that keeps disruption last: health, state, mapping, security,
/// JetStream, then failover and network (which fault nodes and links, and undo it all before each check ends).
pub async fn run(ctx: &mut Ctx<'_, '_>, families: &[Family]) {
    for family in Family::ALL {
        if !families.contains(&family) {
            continue;
        }
        let _span = tracing::info_span!("scenario", family = family.name()).entered();
        match family {
            Family::Health => health::run(ctx).await,
            Family::State => state::run(ctx).await,
            Family::Mapping => mapping::run(ctx).await,
            Family::Security => security::run(ctx).await,
            Family::Jetstream => jetstream::run(ctx).await,
            Family::Failover => failover::run(ctx).await,
            Family::Network => network::run(ctx).await,
            Family::Rotation => rotation::run(ctx).await,
            Family::Reload => reload::run(ctx).await,
            Family::Backup => backup::run(ctx).await,
            Family::Limits => limits::run(ctx).await,
            Family::Upgrade => upgrade::run(ctx).await,
        }
        // A family that broke off mid-check must not leave faults to the next one.
        if let Err(e) = ctx.lab.undo_all().await {
            tracing::warn!("after {}: {e}", family.name());
        }
    }
}
