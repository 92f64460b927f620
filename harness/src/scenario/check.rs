//! Checks and their verdicts. A check has a stable id (`family/kind/subject...`: reports and tests refer to
//! checks by it, so rewording a message breaks nothing), records what the topology declares (expected), what
//! NATS did (observed), how long it took, any measurements, and exactly one verdict. `Violated` means NATS
//! did not do what the topology declares; `HarnessError` means the harness itself broke; `Skipped` says
//! why. Only `Passed` is a pass: reports keep the other three apart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::nemesis::Capability;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Health,
    /// What each server holds, read back and compared with the declaration.
    State,
    Failover,
    Mapping,
    Security,
    Jetstream,
    /// Partitions, half-open links (the lab's links must be faultable: proxies or kernel tools).
    Network,
    /// A rolling upgrade to another nats-server version and the rollback, under load. Only when asked for.
    Upgrade,
    /// Credentials and certificates replaced on the running lab by config reloads. Only when asked for.
    Rotation,
    /// The topology's declared `changes:` made by config reloads, checked, undone. Only when asked for.
    Reload,
    /// Each declared file stream backed up, its store destroyed, restored and compared. Only when asked for.
    Backup,
    /// Every declared limit pushed past, the server's refusal read back. Only when asked for.
    Limits,
}

impl Family {
    /// Every family, in the order a run takes them: reading first, disruption last.
    pub const ALL: [Family; 12] = [
        Family::Health,
        Family::State,
        Family::Mapping,
        Family::Security,
        Family::Jetstream,
        Family::Failover,
        Family::Network,
        Family::Rotation,
        Family::Reload,
        Family::Backup,
        Family::Limits,
        Family::Upgrade,
    ];

    /// What a run takes when no family is named: all but the upgrade (it needs a version to go to) and the
/// day-2 operations (they change the lab's secrets and take minutes).
    pub const DEFAULT: [Family; 7] = [Family::Health, Family::State, Family::Mapping, Family::Security, Family::Jetstream, Family::Failover, Family::Network];

    pub fn name(self) -> &'static str {
        match self {
            Family::Health => "health",
            Family::State => "state",
            Family::Failover => "failover",
            Family::Mapping => "mapping",
            Family::Security => "security",
            Family::Jetstream => "jetstream",
            Family::Network => "network",
            Family::Upgrade => "upgrade",
            Family::Rotation => "rotation",
            Family::Reload => "reload",
            Family::Backup => "backup",
            Family::Limits => "limits",
        }
    }

    /// One line for `--help` and `run --list`.
    pub fn about(self) -> &'static str {
        match self {
            Family::Health => "the guide's check-leaf-health against the real monitoring JSON",
            Family::State => "accounts, imports/exports, leaf links, TLS, limits, permissions and streams as the servers hold them",
            Family::Mapping => "every declared flow crosses under its declared name; nothing else crosses",
            Family::Security => "permissions, credentials, TLS and account isolation hold",
            Family::Jetstream => "streams and consumers as declared; domains, sourcing, durability",
            Family::Failover => "leaves move between hubs when a hub dies or hangs; acknowledged writes survive",
            Family::Network => "partitions, half-open links and WAN latency",
            Family::Upgrade => "a rolling upgrade to --upgrade-to and the rollback, under load (only when named)",
            Family::Rotation => "passwords, leaf-link credentials and certificates replaced by config reloads, under load (only when named)",
            Family::Reload => "the topology's declared changes (permissions, flows) made by config reloads, checked, undone (only when named)",
            Family::Backup => "each declared file stream snapshotted, its store destroyed, restored and compared message by message (only when named)",
            Family::Limits => "payload, pending, connection, subscription, storage, stream and rate limits pushed past; the server's refusals (only when named)",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            format!("unknown scenario family `{s}` (one of {})", names.join(", "))
        })
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

impl Verdict {
    /// The one spelling every report uses.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Violated => "violated",
            Verdict::Skipped => "skipped",
            Verdict::HarnessError => "harness error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable: `<family>/<kind>/<what>...`, e.g. `mapping/export/cim-prod-001/domain.graph.>`.
    pub id: String,
    pub family: Family,
    /// For people; may be reworded at will.
    pub name: String,
    pub expected: String,
    pub observed: String,
    pub verdict: Verdict,
    #[serde(rename = "duration_ms", serialize_with = "as_ms")]
    pub duration: Duration,
    /// Named measurements (e.g. `failover_ms`), for reports and benchmarks; never asserted on.
    pub metrics: BTreeMap<String, f64>,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10_000.0).round() / 10.0)
}

/// What a check is: its id, its words, and the capabilities it needs from the backend.
#[derive(Debug, Clone)]
pub struct Spec {
    pub family: Family,
    pub id: String,
    pub name: String,
    pub expected: String,
    pub needs: Vec<Capability>,
}

impl Spec {
    /// `kind` and `parts` make the id: `family/kind/part/part`.
    pub fn new(family: Family, kind: &str, parts: &[&str], name: impl Into<String>, expected: impl Into<String>) -> Spec {
        let mut id = format!("{}/{kind}", family.name());
        for p in parts {
            id.push('/');
            id.push_str(p);
        }
        Spec { family, id, name: name.into(), expected: expected.into(), needs: Vec::new() }
    }

    pub fn needs(mut self, c: Capability) -> Spec {
        self.needs.push(c);
        self
    }
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

    pub fn text(&self) -> &str {
        match self {
            Outcome::Pass(t) | Outcome::Skipped(t) | Outcome::Violated(t) | Outcome::Error(t) => t,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Outcome::Pass(_) => 0,
            Outcome::Skipped(_) => 1,
            Outcome::Error(_) => 2,
            Outcome::Violated(_) => 3,
        }
    }

    /// The more serious of two outcomes, with both texts. A violation outranks a harness error: what NATS
    /// did wrong stays visible even if the harness broke afterwards.
    pub fn worse(self, other: Outcome) -> Outcome {
        let joined = [self.text(), other.text()].into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>().join("; ");
        match if other.rank() > self.rank() { other } else { self } {
            Outcome::Pass(_) => Outcome::Pass(joined),
            Outcome::Skipped(_) => Outcome::Skipped(joined),
            Outcome::Error(_) => Outcome::Error(joined),
            Outcome::Violated(_) => Outcome::Violated(joined),
        }
    }
}

/// What a check body returns: `Err` ends it early with that outcome; `?` on a `String` error ends it as a
/// harness error.
pub type Concluded = Result<Outcome, Outcome>;

impl From<String> for Outcome {
    fn from(e: String) -> Outcome {
        Outcome::Error(e)
    }
}

impl From<&str> for Outcome {
    fn from(e: &str) -> Outcome {
        Outcome::Error(e.to_string())
    }
}

impl From<crate::errors::Error> for Outcome {
    fn from(e: crate::errors::Error) -> Outcome {
        Outcome::Error(e.to_string())
    }
}

/// An open check: started, not yet concluded.
pub struct Pending {
    spec: Spec,
    started: Instant,
    metrics: BTreeMap<String, f64>,
}

impl Pending {
    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }

    pub fn metric_duration(&mut self, name: &str, d: Duration) {
        self.metric(name, (d.as_secs_f64() * 10_000.0).round() / 10.0);
    }

    pub fn id(&self) -> &str {
        &self.spec.id
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
    /// Only checks whose id starts with one of these run (empty: all).
    only: Vec<String>,
}

impl<'a> Recorder<'a> {
    pub fn new(observer: &'a dyn Observer) -> Recorder<'a> {
        Recorder { checks: vec![], run_started: Instant::now(), observer, only: Vec::new() }
    }

    /// Runs only the checks whose id starts with one of `prefixes`.
    pub fn only(mut self, prefixes: Vec<String>) -> Recorder<'a> {
        self.only = prefixes;
        self
    }

    /// Whether the check `id` is to run.
    pub fn wanted(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| id.starts_with(p.as_str()))
    }

    pub fn start(&self, spec: Spec) -> Pending {
        self.observer.started(spec.family, &spec.name);
        Pending { spec, started: Instant::now(), metrics: BTreeMap::new() }
    }

    pub fn finish(&mut self, p: Pending, outcome: Outcome) -> Verdict {
        let (verdict, observed) = match outcome {
            Outcome::Pass(o) => (Verdict::Passed, o),
            Outcome::Violated(o) => (Verdict::Violated, o),
            Outcome::Skipped(o) => (Verdict::Skipped, o),
            Outcome::Error(o) => (Verdict::HarnessError, o),
        };
        let Pending { spec, started, metrics } = p;
        let check = Check {
            id: spec.id,
            family: spec.family,
            name: spec.name,
            expected: spec.expected,
            observed,
            verdict,
            duration: started.elapsed(),
            metrics,
        };
        self.observer.finished(&check, self.run_started.elapsed());
        self.checks.push(check);
        verdict
    }

    /// A check that cannot run here, recorded at once.
    pub fn skip(&mut self, spec: Spec, why: impl Into<String>) {
        let p = self.start(spec);
        self.finish(p, Outcome::Skipped(why.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_family_kind_and_parts() {
        let s = Spec::new(Family::Mapping, "export", &["cim-prod-001", "domain.graph.>"], "n", "e");
        assert_eq!(s.id, "mapping/export/cim-prod-001/domain.graph.>");
        assert_eq!(Spec::new(Family::Security, "secrets-mode", &[], "n", "e").id, "security/secrets-mode");
    }

    #[test]
    fn worse_keeps_the_most_serious_verdict_and_both_texts() {
        let o = Outcome::Pass("fine".into()).worse(Outcome::Violated("broken".into()));
        assert!(matches!(o, Outcome::Violated(t) if t == "fine; broken"));
        let o = Outcome::Violated("nats".into()).worse(Outcome::Error("harness".into()));
        assert!(matches!(o, Outcome::Violated(_)));
        let o = Outcome::Pass(String::new()).worse(Outcome::Error("x".into()));
        assert!(matches!(o, Outcome::Error(t) if t == "x"));
    }

    #[test]
    fn families_parse_by_name() {
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>(), Ok(f));
        }
        assert!("bogus".parse::<Family>().unwrap_err().contains("one of health"));
    }
}
