//! `nats` CLI context files, one per declared user, so `nats --context <name> ...` just works against a lab.
//! They hold the password inline (the CLI has no password file), so they are written with mode 0600 and
//! removed at teardown.

use std::path::PathBuf;

use serde_json::json;

use crate::errors::Result;
use crate::files::write_secret;
use crate::runs::LabInfo;

/// `$NATSLAB_CONTEXT_DIR`, else the CLI's own: `$XDG_CONFIG_HOME/nats/context` or `~/.config/nats/context`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NATSLAB_CONTEXT_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nats").join("context")
}

pub fn write(info: &LabInfo) -> Result<Vec<PathBuf>> {
    let d = dir();
    let mut written = Vec::new();
    for u in &info.users {
        let a = &u.access;
        let password = a.password_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
        let mut ctx = json!({
            "description": format!("natslab {} ({}): {} in account {}", info.run_id, u.scope, u.user, u.account),
            "url": u.url,
        });
        match &a.creds {
            Some(c) => ctx["creds"] = json!(c),
            None => {
                ctx["user"] = json!(u.user);
                ctx["password"] = json!(password);
            }
        }
        for (k, v) in [("ca", &a.ca), ("cert", &a.cert), ("key", &a.key)] {
            if let Some(p) = v {
                ctx[k] = json!(p);
            }
        }
        let path = d.join(format!("{}.json", u.context));
        write_secret(&path, &serde_json::to_string_pretty(&ctx).unwrap_or_default())?;
        written.push(path);
    }
    Ok(written)
}

/// Removes the contexts of a run, but only those that still point at it (a newer run may own the name).
pub fn remove(info: &LabInfo) {
    let d = dir();
    for u in &info.users {
        let path = d.join(format!("{}.json", u.context));
        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&info.run_id)) {
            let _ = std::fs::remove_file(path);
        }
    }
}
