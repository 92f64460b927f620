//! Checks and their verdicts. A check records what the topology declares (expected), what NATS did
//! (observed), how long it took, any measurements, and exactly one verdict. `Violated` means NATS did not do
//! what the topology declares; `HarnessError` means the harness itself broke; `Skipped` says why. Only
//! `Passed` is a pass: reports keep the other three apart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Health,
    Failover,
    Mapping,
    Security,
    Jetstream,
    /// Partitions, half-open links (the lab's links must be faultable: proxies or kernel tools).
    Network,
}

impl Family {
    pub const ALL: [Family; 6] = [Family::Health, Family::Mapping, Family::Security, Family::Jetstream, Family::Failover, Family::Network];

    pub fn name(self) -> &'static str {
        match self {
            Family::Health => "health",
            Family::Failover => "failover",
            Family::Mapping => "mapping",
            Family::Security => "security",
            Family::Jetstream => "jetstream",
            Family::Network => "network",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Violated,
    Skipped,
    HarnessError,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub family: Family,
    pub name: String,
    pub expected: String,
    pub observed: String,
    pub verdict: Verdict,
    #[serde(serialize_with = "as_ms")]
    pub duration: Duration,
    /// Named measurements (e.g. `failover_ms`), for reports and benchmarks; never asserted on.
    pub metrics: BTreeMap<String, f64>,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// What a check concluded.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pass(String),
    Violated(String),
    Skipped(String),
    Error(String),
}

impl Outcome {
    /// Pass when `ok`, else a violation; `observed` either way.
    pub fn expect(ok: bool, observed: impl Into<String>) -> Outcome {
        if ok {
            Outcome::Pass(observed.into())
        } else {
            Outcome::Violated(observed.into())
        }
    }
}

impl From<crate::errors::Error> for Outcome {
    fn from(e: crate::errors::Error) -> Outcome {
        Outcome::Error(e.to_string())
    }
}

/// An open check: started, not yet concluded.
pub struct Pending {
    family: Family,
    name: String,
    expected: String,
    started: Instant,
    metrics: BTreeMap<String, f64>,
}

impl Pending {
    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }

    pub fn metric_duration(&mut self, name: &str, d: Duration) {
        self.metric(name, d.as_secs_f64() * 1000.0);
    }
}

/// Hears checks start and finish (progress display).
pub trait Observer: Send + Sync {
    fn started(&self, _family: Family, _name: &str) {}
    fn finished(&self, _check: &Check, _elapsed_run: Duration) {}
}

pub struct Silent;
impl Observer for Silent {}

/// Collects the checks of a run.
pub struct Recorder<'a> {
    pub checks: Vec<Check>,
    run_started: Instant,
    observer: &'a dyn Observer,
}

impl<'a> Recorder<'a> {
    pub fn new(observer: &'a dyn Observer) -> Recorder<'a> {
        Recorder { checks: vec![], run_started: Instant::now(), observer }
    }

    pub fn start(&self, family: Family, name: impl Into<String>, expected: impl Into<String>) -> Pending {
        let name = name.into();
        self.observer.started(family, &name);
        Pending { family, name, expected: expected.into(), started: Instant::now(), metrics: BTreeMap::new() }
    }

    pub fn finish(&mut self, p: Pending, outcome: Outcome) -> Verdict {
        let (verdict, observed) = match outcome {
            Outcome::Pass(o) => (Verdict::Passed, o),
            Outcome::Violated(o) => (Verdict::Violated, o),
            Outcome::Skipped(o) => (Verdict::Skipped, o),
            Outcome::Error(o) => (Verdict::HarnessError, o),
        };
        let check = Check {
            family: p.family,
            name: p.name,
            expected: p.expected,
            observed,
            verdict,
            duration: p.started.elapsed(),
            metrics: p.metrics,
        };
        self.observer.finished(&check, self.run_started.elapsed());
        self.checks.push(check);
        verdict
    }

    /// A check that cannot run here, recorded at once.
    pub fn skip(&mut self, family: Family, name: impl Into<String>, expected: impl Into<String>, why: impl Into<String>) {
        let p = self.start(family, name, expected);
        self.finish(p, Outcome::Skipped(why.into()));
    }
}
