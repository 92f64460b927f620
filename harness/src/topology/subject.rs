//! NATS subjects: validity, matching and overlap. Pure functions used by validation (a consumer filter must
//! overlap its stream, AUDIT §4b) and by scenarios (which probe subjects fall outside every export).

/// Why `s` is not a usable subject, or `None` when it is fine. Wildcards are allowed.
pub fn invalid(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.chars().any(char::is_whitespace) {
        return Some("it contains white space");
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Some("it has an empty token (two dots, or a leading or trailing dot)");
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Some("a wildcard must be a whole token (`*` or `>`)");
        }
        if *t == ">" && i != tokens.len() - 1 {
            return Some("`>` must be the last token");
        }
    }
    None
}

/// Whether a literal subject matches a pattern with wildcards.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, pt) in p.iter().enumerate() {
        match *pt {
            ">" => return s.len() > i,
            "*" => {
                if i >= s.len() {
                    return false;
                }
            }
            lit => {
                if s.get(i) != Some(&lit) {
                    return false;
                }
            }
        }
    }
    p.len() == s.len()
}

/// Whether some literal subject matches both patterns.
pub fn overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let n = a.len().max(b.len());
    for i in 0..n {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) => {
                if *x != "*" && *y != "*" && x != y {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Whether every subject matched by `inner` is matched by `outer`.
pub fn covers(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('.').collect();
    let n: Vec<&str> = inner.split('.').collect();
    for (i, ot) in o.iter().enumerate() {
        match (*ot, n.get(i)) {
            (">", Some(_)) => return true,
            ("*", Some(&t)) if t != ">" => {}
            (lit, Some(&t)) if lit == t => {}
            _ => return false,
        }
    }
    o.len() == n.len()
}

/// A literal subject that the pattern matches, replacing wildcards with `token`.
pub fn example(pattern: &str, token: &str) -> String {
    pattern
        .split('.')
        .map(|t| if t == "*" || t == ">" { token } else { t })
        .collect::<Vec<_>>()
        .join(".")
}

/// Literal subjects just outside a pattern, where a too-wide rule would let something through: its
/// parents (`domain`, `domain.graph` for `domain.graph.>`), its siblings at every literal token
/// (`tok.x`, `domain.tok`, `domain.tok.x`: e.g. `domain.workflow.x`), one level below a `*`, and the
/// pattern's own example. `tok` stands in for every wildcard and invented token.
pub fn edges(pattern: &str, tok: &str) -> Vec<String> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    let literal: Vec<&str> = tokens.iter().take_while(|t| **t != "*" && **t != ">").copied().collect();
    let mut out = vec![example(pattern, tok)];
    for k in 1..=literal.len() {
        if k < tokens.len() {
            out.push(literal[..k].join("."));
        }
    }
    for i in 0..literal.len() {
        let head = literal[..i].iter().map(|s| s.to_string()).chain([tok.to_string()]).collect::<Vec<_>>();
        out.push(head.join("."));
        out.push(format!("{}.x", head.join(".")));
    }
    if tokens.last() == Some(&"*") {
        out.push(format!("{}.deeper", example(pattern, tok)));
    }
    out.dedup();
    out
}

/// The most specific pattern matched by both `a` and `b`, if some subject matches both.
pub fn meet(a: &str, b: &str) -> Option<String> {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let mut out: Vec<&str> = Vec::new();
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (None, None) => break,
            (Some(&">"), Some(_)) => {
                out.extend(&b[i..]);
                break;
            }
            (Some(_), Some(&">")) => {
                out.extend(&a[i..]);
                break;
            }
            (Some(&"*"), Some(y)) => out.push(y),
            (Some(x), Some(&"*")) => out.push(x),
            (Some(x), Some(y)) if x == y => out.push(x),
            _ => return None,
        }
    }
    Some(out.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_of_a_pattern_lie_just_outside_it() {
        let e = edges("domain.graph.>", "t");
        for s in ["domain.graph.t", "domain", "domain.graph", "t", "t.x", "domain.t", "domain.t.x", "domain.graph.t.x"] {
            let want_inside = s.starts_with("domain.graph.");
            assert_eq!(matches("domain.graph.>", s), want_inside, "{s}");
        }
        assert!(e.contains(&"domain.t.x".to_string()) && e.contains(&"domain".to_string()) && e.contains(&"domain.graph".to_string()), "{e:?}");
        assert!(edges("a.*", "t").contains(&"a.t.deeper".to_string()));
        assert_eq!(edges("metrics", "t"), vec!["metrics".to_string(), "t".to_string(), "t.x".to_string()]);
    }

    #[test]
    fn validity() {
        assert!(invalid("domain.>").is_none());
        assert!(invalid("a..b").is_some());
        assert!(invalid("a.>.b").is_some());
        assert!(invalid("a.b*").is_some());
        assert!(invalid("").is_some());
    }

    #[test]
    fn matching() {
        assert!(matches("domain.>", "domain.graph.x"));
        assert!(!matches("domain.>", "domain"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn overlapping() {
        assert!(overlap("domain.graph.>", "domain.*.events.>"));
        assert!(!overlap("nomatch.>", "domain.*.events.>"));
        assert!(!overlap("a.b", "a.b.c"));
        assert!(overlap("a.*", "a.b"));
        assert!(!overlap("metrics.>", "metrics"));
    }

    #[test]
    fn covering() {
        assert!(covers("domain.>", "domain.graph.>"));
        assert!(!covers("domain.graph.>", "domain.>"));
        assert!(covers("a.*", "a.b"));
        assert!(!covers("a.b", "a.*"));
        assert_eq!(example("domain.*.events.>", "x"), "domain.x.events.x");
    }
}
