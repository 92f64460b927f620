//! Reading a topology file: YAML syntax and shape errors with file, line and column; unknown keys with the
//! nearest valid key; then the semantic checks of `validate`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::Topology;
use super::validate;

/// Everything wrong with one topology file, each problem with its place and a fix.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Key path in the document (`leaves[0].remotes[0].hubs[1]`), empty for syntax errors.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} is not a valid topology ({n} problem{})",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "  {}", self.file.display())?;
            if let Some(l) = p.line {
                write!(f, ":{l}")?;
                if let Some(c) = p.column {
                    write!(f, ":{c}")?;
                }
            }
            if !p.path.is_empty() {
                write!(f, ": {}", p.path)?;
            }
            writeln!(f, ": {}", p.message)?;
            if let Some(h) = &p.hint {
                writeln!(f, "    hint: {h}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for TopologyError {}

pub fn load_file(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
            hint: Some("check the path; the reference topologies live in topologies/".into()),
        }],
    })?;
    parse_str(&text, path)
}

pub fn parse_str(text: &str, file: &Path) -> Result<Topology, TopologyError> {
    let topology: Topology = serde_yaml::from_str(text).map_err(|e| TopologyError {
        file: file.to_path_buf(),
        problems: vec![yaml_problem(&e)],
    })?;
    let mut problems = validate::validate(&topology);
    if problems.is_empty() {
        return Ok(topology);
    }
    for p in &mut problems {
        if p.line.is_none() {
            p.line = locate(text, &p.path);
        }
    }
    Err(TopologyError { file: file.to_path_buf(), problems })
}

fn yaml_problem(e: &serde_yaml::Error) -> Problem {
    let (line, column) = e.location().map(|l| (Some(l.line()), Some(l.column()))).unwrap_or((None, None));
    let mut text = e.to_string();
    if let Some(i) = text.rfind(" at line ") {
        text.truncate(i);
    }
    // serde_yaml prefixes the key path: "hub.nodes[0]: unknown field ...".
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    let hint = unknown_field_hint(&message).or_else(|| {
        if message.contains("missing field") {
            Some("add the key; docs/topology.md lists every key and its default".into())
        } else if message.contains("unknown variant") {
            expected_list(&message).map(|l| format!("use one of: {}", l.join(", ")))
        } else {
            None
        }
    });
    Problem { path, line, column, message: message.replace('`', "'"), hint }
}

/// For `unknown field `nme`, expected one of `name`, `tags``: the nearest valid key.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, _) = rest.split_once('`')?;
    let expected = expected_list(message)?;
    let best = expected
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    let list = expected.join(", ");
    if best.0 > 0.7 {
        Some(format!("did you mean '{}'? valid keys here: {list}", best.1))
    } else {
        Some(format!("valid keys here: {list}"))
    }
}

fn expected_list(message: &str) -> Option<Vec<String>> {
    let (_, tail) = message.split_once("expected ")?;
    let keys: Vec<String> = tail.split('`').skip(1).step_by(2).map(str::to_string).collect();
    (!keys.is_empty()).then_some(keys)
}

/// Best-effort line of a key path (`leaves[1].remotes[0].hubs[2]`) in the YAML text, by walking keys and
/// list items by indentation. Semantic errors come from the typed model, which has no spans.
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut min_indent: isize = -1;
    let mut found = None;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let mut hit = None;
        for (n, l) in lines.iter().enumerate().skip(from) {
            let indent = (l.len() - l.trim_start().len()) as isize;
            let body = l.trim_start().trim_start_matches("- ");
            if indent <= min_indent && !l.trim().is_empty() && n > from {
                break;
            }
            if body.starts_with(&format!("{key}:")) {
                hit = Some((n, indent));
                break;
            }
        }
        let (mut n, mut indent) = hit?;
        found = Some(n + 1);
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let want: usize = idx.parse().ok()?;
            let mut seen = 0usize;
            let mut item = None;
            for (m, l) in lines.iter().enumerate().skip(n + 1) {
                let ind = (l.len() - l.trim_start().len()) as isize;
                if !l.trim().is_empty() && ind <= indent && !l.trim_start().starts_with('-') {
                    break;
                }
                if l.trim_start().starts_with("- ") || l.trim() == "-" {
                    if seen == want {
                        item = Some((m, ind));
                        break;
                    }
                    seen += 1;
                }
            }
            // An inline list (`hubs: [a, b]`) has no item lines: the key's line is the best place.
            let Some((m, ind)) = item else { return found };
            n = m;
            indent = ind;
            found = Some(m + 1);
        }
        from = n;
        min_indent = indent;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_list_items() {
        let text = "name: x\nhub:\n  nodes:\n    - name: a\n    - name: b\nleaves:\n  - name: l\n    remotes:\n      - hubs: [a, c]\n";
        assert_eq!(locate(text, "hub.nodes[1]"), Some(5));
        assert_eq!(locate(text, "leaves[0].remotes[0].hubs"), Some(9));
        assert_eq!(locate(text, "leaves[0].remotes[0]"), Some(9));
        assert_eq!(locate(text, "leaves[0].remotes[0].hubs[1]"), Some(9));
    }
}
