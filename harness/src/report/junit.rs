//! JUnit XML as CI systems read it: one testsuite per topology and family, one testcase per check;
//! `failure` for a violation, `error` for a harness error, `skipped` with its reason.

use super::{family_counts, RunReport};
use crate::scenario::Verdict;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

pub fn to_junit(report: &RunReport) -> String {
    let total = report.counts();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"natslab\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        total.total(),
        total.violated,
        total.harness_error,
        total.skipped,
        report.wall_ms / 1000.0
    ));
    // A matrix run names each suite after its version too: a testsuite per topology × version.
    let matrix = report.is_matrix();
    for run in &report.runs {
        let topology = run.label(matrix);
        if let Some(err) = &run.error {
            x.push_str(&format!(
                "  <testsuite name=\"{t}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"{:.3}\">\n    <testcase classname=\"natslab.{t}\" name=\"bring the lab up\" time=\"{:.3}\">\n      <error message=\"{m}\">{m}</error>\n    </testcase>\n  </testsuite>\n",
                run.wall_ms / 1000.0,
                run.wall_ms / 1000.0,
                t = esc(&topology),
                m = esc(err)
            ));
            continue;
        }
        for (family, counts) in family_counts(run) {
            let checks: Vec<_> = run.checks.iter().filter(|c| c.family == family).collect();
            let time: f64 = checks.iter().map(|c| c.duration.as_secs_f64()).sum();
            x.push_str(&format!(
                "  <testsuite name=\"{}.{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
                esc(&topology),
                family.name(),
                counts.total(),
                counts.violated,
                counts.harness_error,
                counts.skipped,
                time
            ));
            for c in checks {
                x.push_str(&format!(
                    "    <testcase classname=\"natslab.{}.{}\" name=\"{}\" time=\"{:.3}\">\n",
                    esc(&run.topology),
                    family.name(),
                    esc(&c.id),
                    c.duration.as_secs_f64()
                ));
                x.push_str(&format!("      <properties><property name=\"title\" value=\"{}\"/></properties>\n", esc(&c.name)));
                let detail = format!("{}\nexpected: {}\nobserved: {}", c.name, c.expected, c.observed);
                match c.verdict {
                    Verdict::Passed => {}
                    Verdict::Violated => x.push_str(&format!("      <failure message=\"{}\" type=\"violated\">{}</failure>\n", esc(&c.observed), esc(&detail))),
                    Verdict::HarnessError => x.push_str(&format!("      <error message=\"{}\" type=\"harness_error\">{}</error>\n", esc(&c.observed), esc(&detail))),
                    Verdict::Skipped => x.push_str(&format!("      <skipped message=\"{}\"/>\n", esc(&c.observed))),
                }
                let metrics: Vec<String> = c.metrics.iter().map(|(k, v)| format!("{k}={v:.1}")).collect();
                x.push_str(&format!("      <system-out>{}{}</system-out>\n", esc(&detail), if metrics.is_empty() { String::new() } else { esc(&format!("\nmetrics: {}", metrics.join(" "))) }));
                x.push_str("    </testcase>\n");
            }
            x.push_str("  </testsuite>\n");
        }
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(esc("a<b>&\"c\"\u{1}"), "a&lt;b&gt;&amp;&quot;c&quot;?");
    }
}
