//! The report for people: a summary per topology and family, failover timings (min/median/max), the
//! JetStream checker's counts, and every check that did not pass with what was expected and seen.

use super::{family_counts, RunReport};
use crate::scenario::Verdict;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn to_markdown(report: &RunReport) -> String {
    let total = report.counts();
    let mut m = String::new();
    m.push_str("# natslab run\n\n");
    m.push_str(&format!(
        "**{}** — {} passed, {} violated, {} skipped, {} harness errors; wall time {:.1} s; nats-server {}.\n\n",
        if report.ok() { "PASS" } else { "FAIL" },
        total.passed,
        total.violated,
        total.skipped,
        total.harness_error,
        report.wall_ms / 1000.0,
        report.nats_server_version
    ));
    m.push_str("| topology | nats-server | backend | family | passed | violated | skipped | harness errors |\n|---|---|---|---|---:|---:|---:|---:|\n");
    for run in &report.runs {
        if let Some(e) = &run.error {
            m.push_str(&format!("| {} | {} | {} | (lab) | 0 | 0 | 0 | 1: {} |\n", run.topology, run.server_version, run.backend, cell(e)));
            continue;
        }
        for (f, c) in family_counts(run) {
            m.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                run.topology, run.server_version, run.backend, f.name(), c.passed, c.violated, c.skipped, c.harness_error
            ));
        }
    }
    let versions = report.versions();
    if versions.len() > 1 {
        m.push_str("\n## Per version\n\n| nats-server | passed | violated | skipped | harness errors | wall |\n|---|---:|---:|---:|---:|---:|\n");
        for v in &versions {
            let runs: Vec<_> = report.runs.iter().filter(|r| &r.server_version == v).collect();
            let c = super::Counts::of(runs.iter().flat_map(|r| r.checks.iter()));
            let wall: f64 = runs.iter().map(|r| r.wall_ms).sum::<f64>() / 1000.0;
            m.push_str(&format!("| {v} | {} | {} | {} | {} | {wall:.1} s |\n", c.passed, c.violated, c.skipped, c.harness_error));
        }
        let by = report.timings_by_version();
        let names: std::collections::BTreeSet<&String> = by.values().flat_map(|t| t.keys()).collect();
        m.push_str(&format!("\n## Timings by version (median)\n\n| measurement | {} |\n|---|{}\n", versions.join(" | "), "---:|".repeat(versions.len())));
        for k in names {
            let cells: Vec<String> = versions.iter().map(|v| by.get(v).and_then(|t| t.get(k)).map_or("—".into(), |s| format!("{:.0} ms", s.median_ms))).collect();
            m.push_str(&format!("| {} | {} |\n", k.trim_end_matches("_ms"), cells.join(" | ")));
        }
    }
    let ready: Vec<String> = report.runs.iter().filter_map(|r| r.ready_ms.map(|ms| format!("{} {:.0} ms", r.topology, ms))).collect();
    if !ready.is_empty() {
        m.push_str(&format!("\nTime to ready: {}.\n", ready.join(", ")));
    }

    let timings = report.timings();
    if !timings.is_empty() {
        m.push_str("\n## Timings\n\n| measurement | n | min | median | max |\n|---|---:|---:|---:|---:|\n");
        for (k, s) in &timings {
            m.push_str(&format!("| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms |\n", k.trim_end_matches("_ms"), s.n, s.min_ms, s.median_ms, s.max_ms));
        }
    }
    let jepsen = report.acked_writes();
    if !jepsen.is_empty() {
        m.push_str("\n## JetStream checker (R3 stream under faults)\n\n| count | value |\n|---|---:|\n");
        for (k, v) in &jepsen {
            m.push_str(&format!("| {k} | {v:.0} |\n"));
        }
    }

    let bad: Vec<_> = report.runs.iter().flat_map(|r| r.checks.iter().map(move |c| (r, c))).filter(|(_, c)| c.verdict != Verdict::Passed).collect();
    if !bad.is_empty() {
        m.push_str("\n## Not passed\n\n| topology | check | id | verdict | expected | observed |\n|---|---|---|---|---|---|\n");
        for (r, c) in bad {
            m.push_str(&format!(
                "| {} | {} | `{}` | {} | {} | {} |\n",
                r.topology,
                cell(&c.name),
                cell(&c.id),
                c.verdict.name(),
                cell(&c.expected),
                cell(&c.observed)
            ));
        }
    }
    m.push_str("\n<details><summary>All checks</summary>\n\n| topology | check | id | verdict | ms |\n|---|---|---|---|---:|\n");
    for r in &report.runs {
        for c in &r.checks {
            m.push_str(&format!("| {} | {} | `{}` | {} | {:.0} |\n", r.topology, cell(&c.name), cell(&c.id), c.verdict.name(), c.duration.as_secs_f64() * 1000.0));
        }
    }
    m.push_str("\n</details>\n");
    m
}
