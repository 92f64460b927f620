//! Reading a topology file: YAML syntax and shape errors with file, line and column; unknown keys with the
//! nearest valid key; then the semantic checks of `validate`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::Topology;
use super::problem::Problem;
use super::validate;

/// Everything wrong with one topology file, each problem with its place and a fix.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
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
        problems: vec![yaml_problem(&e, text)],
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

/// serde's own message forms; everything else with a path is a custom error of a value (units.rs).
const SERDE_FORMS: [&str; 7] =
    ["unknown field", "unknown variant", "missing field", "invalid type", "invalid value", "invalid length", "duplicate field"];

fn yaml_problem(e: &serde_yaml::Error, source: &str) -> Problem {
    let (mut line, mut column) = e.location().map(|l| (Some(l.line()), Some(l.column()))).unwrap_or((None, None));
    let mut text = e.to_string();
    if let Some(i) = text.rfind(" at line ") {
        text.truncate(i);
    }
    // serde_yaml prefixes the key path: "hub.nodes[0]: unknown field ...".
    let (mut path, mut message) = match text.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    let mut hint = unknown_field_hint(&message).or_else(|| {
        if message.contains("missing field") {
            Some("add the key; docs/topology.md lists every key and its default".into())
        } else if message.contains("unknown variant") {
            expected_list(&message).map(|l| format!("use one of: {}", l.join(", ")))
        } else {
            None
        }
    });
    let custom = !path.is_empty() && !SERDE_FORMS.iter().any(|f| message.starts_with(f));
    if custom {
        // Value errors (`5 parsecs`, `5`, `4 lightyears`) carry their fix after "; ": make it the hint.
        if let Some((m, h)) = message.split_once("; ") {
            hint = Some(h.to_string());
            message = m.to_string();
        }
        // serde_yaml places such errors at the mapping that holds the key: find the key with the bad value.
        if let (Some(l), Some(c), Some(value)) = (line, column, backticked(&message)) {
            if let Some((kl, kc, key)) = find_value(source, l, c, &value) {
                line = Some(kl);
                column = Some(kc);
                path = format!("{path}.{key}");
            }
        }
        if hint.is_none() && message.contains("is negative") {
            hint = Some("sizes are byte counts: write 0 or more, e.g. '64M'".into());
        }
    }
    if hint.is_none() {
        hint = Some(if path.is_empty() && line.is_some() && !SERDE_FORMS.iter().any(|f| message.starts_with(f)) {
            syntax_hint(&message, source, line, column)
        } else {
            type_hint(&message)
        });
    }
    Problem { path, line, column, message: message.replace('`', "'"), hint: hint.map(|h| h.replace('`', "'")) }
}

/// The first `quoted` token of a message.
fn backticked(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (value, _) = rest.split_once('`')?;
    Some(value.to_string())
}

/// The key holding `value` in the block mapping that starts at `line`:`column` (1-based): its line, column and
/// name, when exactly one key of that mapping (not of nested ones) has that value.
fn find_value(source: &str, line: usize, column: usize, value: &str) -> Option<(usize, usize, String)> {
    let lines: Vec<&str> = source.lines().collect();
    let indent = column.checked_sub(1)?;
    let mut hits = Vec::new();
    for (n, l) in lines.iter().enumerate().skip(line.checked_sub(1)?) {
        let segment = if n + 1 == line {
            l.get(indent..)?
        } else {
            let trimmed = l.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let ind = l.len() - trimmed.len();
            if ind < indent {
                break;
            }
            if ind > indent {
                continue;
            }
            trimmed
        };
        let Some((key, rest)) = segment.split_once(':') else { continue };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let mut v = rest.trim();
        if let Some(i) = v.find(" #") {
            v = v[..i].trim_end();
        }
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        if v == value {
            hits.push((n + 1, column, key.to_string()));
        }
    }
    (hits.len() == 1).then(|| hits.remove(0))
}

/// A fix for `invalid type` / `invalid value` errors, from what serde expected.
fn type_hint(message: &str) -> String {
    let expected = message.split_once("expected ").map(|(_, e)| e).unwrap_or("");
    if expected.starts_with("a boolean") {
        "write true or false without quotes; YAML 1.2 reads yes, no, on and off as strings".into()
    } else if ["u16", "u32", "u64", "i32", "i64", "an integer"].iter().any(|t| expected.starts_with(t)) {
        "write a whole number without quotes or units".into()
    } else if expected.starts_with("a sequence") {
        "write a list: [a, b] on one line, or one '- item' per line".into()
    } else if expected.starts_with("struct") || expected.starts_with("a map") {
        "write a mapping: indented 'key: value' lines, not a single value or a list".into()
    } else if expected.starts_with("a string or a number") {
        "write a value with its unit, e.g. '5s' or '64M'".into()
    } else if expected.starts_with("a string") {
        "write text here; quote it if YAML would read it as a number, a boolean or null".into()
    } else if message.starts_with("duplicate") {
        "each key may appear once in a mapping; remove or merge the repeated one".into()
    } else {
        "docs/topology.md gives the type of every key".into()
    }
}

/// A fix for a YAML syntax error, from libyaml's message and the character at the error.
fn syntax_hint(message: &str, source: &str, line: Option<usize>, column: Option<usize>) -> String {
    let at = line
        .and_then(|l| source.lines().nth(l.checked_sub(1)?))
        .and_then(|l| l.chars().nth(column?.checked_sub(1)?));
    let line_has_tab = line.and_then(|l| source.lines().nth(l.checked_sub(1)?)).is_some_and(|l| {
        let lead: String = l.chars().take_while(|c| c.is_whitespace()).collect();
        lead.contains('\t')
    });
    if at == Some('\t') || line_has_tab || message.contains("tab") {
        "YAML does not allow tabs for indentation: indent with spaces".into()
    } else if message.contains("mapping values are not allowed") {
        "put nested keys on their own indented lines, and quote a value that contains ': '".into()
    } else if message.contains("block sequence entries are not allowed") {
        "start a list on the line after its key ('key:' then '  - item'), or write it inline as [a, b]".into()
    } else if message.contains("did not find expected key") || message.contains("could not find expected ':'") {
        "check the indentation: the keys of one mapping line up in one column, each followed by ': '".into()
    } else if message.contains("did not find expected ','") || message.contains("end of stream") {
        "close every quote and every inline list or mapping ([...], {...})".into()
    } else if message.contains("cannot start any token") {
        "quote a value that starts with '@', '`' or '%'".into()
    } else {
        "fix the YAML syntax here: indent with spaces, put ': ' after each key, close quotes and brackets".into()
    }
}

/// The guide's constructs that nats-server rejects (AUDIT §1a), with the form this topology uses instead;
/// and the key to suggest, when there is a real equivalent.
fn guide_advice(key: &str, expected: &[String]) -> Option<(&'static str, Option<&'static str>)> {
    let in_jetstream = expected.iter().any(|k| k == "max_file_store");
    let in_remote = expected.iter().any(|k| k == "hubs");
    Some(match key {
        "import" | "export" if in_remote => (
            "a remote has no import/export in nats-server; the harness renders 'imports'/'exports' (subject, prefix) as account imports and exports",
            Some(if key == "import" { "imports" } else { "exports" }),
        ),
        "connection" => ("'connection' is not a nats-server option; the link is named after the leaf (server_name), TLS and compression have their own keys", None),
        "connections" => ("'connections' is not a nats-server option: leaf links have no pooling", None),
        "reconnect_buf_size" => (
            "'reconnect_buf_size' is a client-library option, not a server one; to keep messages over an outage use JetStream: a leaf stream and a hub stream whose 'sources' copy it",
            None,
        ),
        "reconnect" | "reconnect_delay" => ("the reconnect delay is 'reconnect_interval' on the leaf (rendered at leafnodes level)", Some("reconnect_interval")),
        "headers" => ("'headers' is not a nats-server option: add headers in the publishing client", None),
        "verbose" | "pedantic" | "debug" | "trace" => ("'verbose'/'pedantic' are not leaf-link options; server debug/trace logging is not part of the topology", None),
        "no_delay" => ("'no_delay' is not a nats-server option", None),
        "pending_size" => ("nats-server has no 'pending_size'; the real option is the server-wide 'max_pending' (limits.max_pending)", Some("max_pending")),
        "write_deadline" if in_remote => ("'write_deadline' is server-wide in nats-server, not per remote: set limits.write_deadline on the leaf", None),
        "resolver" | "auth_timeout" | "operator" => ("operator mode with a full resolver is 'security.auth: operator'; the harness generates the JWTs", None),
        "tls" | "verify_and_map" => ("TLS is topology-wide: 'security.tls: true' (and 'security.auth: mtls' to map leaf certificates to accounts)", None),
        "url" | "urls" => ("a remote names hub nodes in 'hubs'; the harness renders their URLs", Some("hubs")),
        "credentials" => ("credentials are generated per run ('security.auth: operator' gives leaves creds files)", None),
        "streams" if in_jetstream => (
            "'jetstream.streams' is not a nats-server option; declare 'streams:' next to 'jetstream:' (the harness creates them through the JetStream API)",
            None,
        ),
        "compression" if in_jetstream => ("'jetstream.compression' is not a nats-server option; use per-stream 'compression: s2' (streams[].compression)", None),
        "compression" if in_remote => ("link compression is set per leaf: leaves[].compression", None),
        "block_size" => ("'block_size' is not a nats-server option", None),
        "cipher" | "key" if in_jetstream => (
            "write 'encryption: aes' or 'encryption: chachapoly'; the harness generates the key (nats-server silently ignores a cipher without a key)",
            Some("encryption"),
        ),
        "memory_store" | "memoryStore" | "max_memory" => ("the memory limit is 'max_memory_store'", Some("max_memory_store")),
        "file_store" | "fileStore" | "max_storage" => ("the file store limit is 'max_file_store'", Some("max_file_store")),
        _ => return None,
    })
}

/// For `unknown field `nme`, expected one of `name`, `tags``: the nearest valid key, or what the guide's
/// non-option should be instead.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, _) = rest.split_once('`')?;
    let expected = expected_list(message)?;
    let list = expected.join(", ");
    if let Some((advice, suggest)) = guide_advice(key, &expected) {
        return Some(match suggest.filter(|s| expected.iter().any(|k| k == s)) {
            Some(s) => format!("{advice}; did you mean '{s}'? valid keys here: {list}"),
            None => format!("{advice}; valid keys here: {list}"),
        });
    }
    let best = expected
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
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
            if blank(l) {
                continue;
            }
            let indent = (l.len() - l.trim_start().len()) as isize;
            let body = l.trim_start().trim_start_matches("- ");
            if indent <= min_indent && n > from {
                break;
            }
            if body.starts_with(&format!("{key}:")) {
                hit = Some((n, indent));
                break;
            }
        }
        // A key that is not written (a default) is best shown at its parent.
        let Some((mut n, mut indent)) = hit else { return found };
        found = Some(n + 1);
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let want: usize = idx.parse().ok()?;
            let mut seen = 0usize;
            let mut item = None;
            // Items of this list share the first item's indentation; deeper dashes belong to nested lists.
            let mut item_indent = None;
            for (m, l) in lines.iter().enumerate().skip(n + 1) {
                if blank(l) {
                    continue;
                }
                let ind = (l.len() - l.trim_start().len()) as isize;
                if ind <= indent && !l.trim_start().starts_with('-') {
                    break;
                }
                if (l.trim_start().starts_with("- ") || l.trim() == "-") && *item_indent.get_or_insert(ind) == ind {
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

fn blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
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

    #[test]
    fn skips_nested_lists_and_falls_back_to_the_parent() {
        let text = "hub:
  accounts:
    - name: A
      users:
        - user: x
    # a comment
    - name: B
      users:
        - user: y
";
        assert_eq!(locate(text, "hub.accounts[1].users[0].user"), Some(9));
        assert_eq!(locate(text, "hub.accounts[1].exports"), Some(7));
    }
}
