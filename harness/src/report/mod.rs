//! Reports of a run: JUnit XML for CI systems, JSON for machines, Markdown for people. All three are views
//! of one `RunReport`; none of them runs anything.

mod junit;
mod markdown;

pub use junit::to_junit;
pub use markdown::to_markdown;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::scenario::{Check, Family, Verdict};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

pub fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n == 0 { 0.0 } else if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    Stats { n, min_ms: ms.first().copied().unwrap_or(0.0), median_ms: median, max_ms: ms.last().copied().unwrap_or(0.0) }
}

#[derive(Debug, Clone, Serialize)]
pub struct TopologyRun {
    pub topology: String,
    pub file: String,
    pub backend: String,
    /// The nats-server version(s) the lab ran (`2.15.1`, or `2.12.8 + 2.15.1` for a mixed lab).
    pub server_version: String,
    /// Time to ready (streams provisioned), when the lab came up.
    pub ready_ms: Option<f64>,
    pub wall_ms: f64,
    pub checks: Vec<Check>,
    /// The lab could not be brought up (a harness error for the whole topology).
    pub error: Option<String>,
    /// That error was the input's fault (the topology asks for what the server does not take).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub error_is_input: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub natslab_version: String,
    pub nats_server_version: String,
    pub started_unix: u64,
    pub wall_ms: f64,
    pub runs: Vec<TopologyRun>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub violated: usize,
    pub skipped: usize,
    pub harness_error: usize,
}

impl Counts {
    pub fn of<'a>(checks: impl IntoIterator<Item = &'a Check>) -> Counts {
        let mut c = Counts::default();
        for k in checks {
            match k.verdict {
                Verdict::Passed => c.passed += 1,
                Verdict::Violated => c.violated += 1,
                Verdict::Skipped => c.skipped += 1,
                Verdict::HarnessError => c.harness_error += 1,
            }
        }
        c
    }
    pub fn total(&self) -> usize {
        self.passed + self.violated + self.skipped + self.harness_error
    }
}

impl TopologyRun {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::of(&self.checks);
        if self.error.is_some() {
            c.harness_error += 1;
        }
        c
    }

    /// How reports name this run: the topology, and in a matrix run (`RunReport::is_matrix`) its version.
    pub fn label(&self, matrix: bool) -> String {
        if matrix {
            format!("{}@{}", self.topology, self.server_version)
        } else {
            self.topology.clone()
        }
    }
}

impl RunReport {
    /// Whether the runs were on more than one nats-server version (`--matrix`).
    pub fn is_matrix(&self) -> bool {
        self.versions().len() > 1
    }

    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for r in &self.runs {
            let c = r.counts();
            total.passed += c.passed;
            total.violated += c.violated;
            total.skipped += c.skipped;
            total.harness_error += c.harness_error;
        }
        total
    }

    /// A run succeeds when nothing was violated and the harness never broke.
    pub fn ok(&self) -> bool {
        let c = self.counts();
        c.violated == 0 && c.harness_error == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// min/median/max of each timing metric over all checks (failover, catch-up, ...), by metric name.
    pub fn timings(&self) -> BTreeMap<String, Stats> {
        let mut samples: BTreeMap<String, Vec<std::time::Duration>> = BTreeMap::new();
        for r in &self.runs {
            for c in &r.checks {
                for (k, v) in &c.metrics {
                    if k.ends_with("_ms") && v.is_finite() && *v >= 0.0 {
                        samples.entry(k.clone()).or_default().push(std::time::Duration::from_secs_f64(v / 1000.0));
                    }
                }
            }
        }
        samples.into_iter().map(|(k, v)| (k, stats(&v))).collect()
    }

    /// The distinct server versions of the runs, in order of first appearance.
    pub fn versions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            if !out.contains(&r.server_version) {
                out.push(r.server_version.clone());
            }
        }
        out
    }

    /// As `timings`, per server version (a `--matrix` run's figures side by side).
    pub fn timings_by_version(&self) -> BTreeMap<String, BTreeMap<String, Stats>> {
        self.versions()
            .into_iter()
            .map(|v| {
                let runs: Vec<TopologyRun> = self.runs.iter().filter(|r| r.server_version == v).cloned().collect();
                let sub = RunReport { runs, ..self.clone() };
                (v, sub.timings())
            })
            .collect()
    }

    /// Sums of the acknowledged-write checker's counts (`acked_writes_*` metrics).
    pub fn acked_writes(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for r in &self.runs {
            for c in &r.checks {
                for (k, v) in &c.metrics {
                    if let Some(name) = k.strip_prefix("acked_writes_") {
                        *out.entry(name.to_string()).or_insert(0.0) += v;
                    }
                }
            }
        }
        out
    }
}

pub fn family_counts(run: &TopologyRun) -> BTreeMap<Family, Counts> {
    let mut by: BTreeMap<Family, Vec<&Check>> = BTreeMap::new();
    for c in &run.checks {
        by.entry(c.family).or_default().push(c);
    }
    by.into_iter().map(|(f, cs)| (f, Counts::of(cs))).collect()
}
