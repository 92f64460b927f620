//! A rendered settings tree (JSON, as NixOS `services.nats.settings` also holds it) written in nats-server's
//! own config syntax, for people to read. nats-server accepts the JSON too; both forms are the same data.

use serde_json::Value;

pub fn to_conf(settings: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = settings {
        for (k, v) in map {
            write_entry(&mut out, 0, k, v);
        }
    }
    out
}

fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn write_entry(out: &mut String, depth: usize, k: &str, v: &Value) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(_) => {
            out.push_str(&format!("{pad}{} {{\n", key(k)));
            write_object_body(out, depth + 1, v);
            out.push_str(&format!("{pad}}}\n"));
        }
        _ => {
            out.push_str(&format!("{pad}{}: ", key(k)));
            write_value(out, depth, v);
            out.push('\n');
        }
    }
}

fn write_object_body(out: &mut String, depth: usize, v: &Value) {
    if let Value::Object(map) = v {
        for (k, v) in map {
            write_entry(out, depth, k, v);
        }
    }
}

fn write_value(out: &mut String, depth: usize, v: &Value) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(_) => {
            out.push_str("{\n");
            write_object_body(out, depth + 1, v);
            out.push_str(&format!("{pad}}}"));
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) && items.len() <= 4 => {
            let parts: Vec<String> = items.iter().map(|i| i.to_string()).collect();
            out.push_str(&format!("[{}]", parts.join(", ")));
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for i in items {
                out.push_str(&format!("{pad}  "));
                write_value(out, depth + 1, i);
                out.push('\n');
            }
            out.push_str(&format!("{pad}]"));
        }
        // Strings always quoted: an unquoted `$` would be a variable reference (bcrypt hashes start with `$2`).
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_nested_blocks_and_quotes_strings() {
        let v = json!({"server_name": "hub-1", "accounts": {"A": {"users": [{"user": "u", "password": "$2a$08$x"}]}}, "$weird.key": 1});
        let text = to_conf(&v);
        assert!(text.contains("server_name: \"hub-1\""));
        assert!(text.contains("accounts {\n  A {\n"));
        assert!(text.contains("\"password\":\"$2a$08$x\"") || text.contains("password: \"$2a$08$x\""));
        assert!(text.contains("\"$weird.key\": 1"));
    }
}
