//! Writing a plan's files into the run directory: configs, certificates, creds, passwords. Every file that
//! holds a secret (which includes every config: bcrypt hashes, leaf passwords, JetStream keys) is created
//! with mode 0600 before any byte is written.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::errors::{Error, Result};
use crate::plan::Plan;
use crate::render::{to_conf, NodeConfig};

pub fn write_secret(path: &Path, content: &str) -> Result<()> {
    let err = |source| Error::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    }
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(err)?;
    f.write_all(content.as_bytes()).map_err(err)
}

pub fn mkdir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Writes every node's config (conf syntax and JSON settings) and every secret of the plan.
pub fn write_plan(plan: &Plan, configs: &[NodeConfig]) -> Result<()> {
    let l = &plan.layout;
    for c in configs {
        let dir = l.host_node_dir(&c.name);
        mkdir(&dir.join("store"))?;
        write_secret(&dir.join("nats.conf"), &to_conf(&c.settings))?;
        let json = serde_json::to_string_pretty(&c.settings).unwrap_or_default();
        write_secret(&dir.join("settings.json"), &json)?;
    }
    write_secrets(plan)?;
    Ok(())
}

/// Writes every secret of the plan under `secrets/`; returns the file names written, sorted.
pub fn write_secrets(plan: &Plan) -> Result<Vec<String>> {
    let l = &plan.layout;
    let mut names = Vec::new();
    let mut put = |name: String, content: &str| -> Result<()> {
        write_secret(&l.host_secret(&name), content)?;
        names.push(name);
        Ok(())
    };
    let s = &plan.secrets;
    for c in &s.credentials {
        put(format!("{}.password", c.stem()), &c.password)?;
        if let Some(creds) = &c.creds {
            put(format!("{}.creds", c.stem()), creds)?;
        }
    }
    if let Some(tls) = &s.tls {
        put("ca.pem".into(), &tls.ca.cert_pem)?;
        put("ca-key.pem".into(), &tls.ca.key_pem)?;
        for (node, pair) in &tls.servers {
            put(format!("{node}-cert.pem"), &pair.cert_pem)?;
            put(format!("{node}-key.pem"), &pair.key_pem)?;
        }
        for ((leaf, r), (pair, _)) in &tls.leaf_clients {
            put(format!("{leaf}.remote{r}-cert.pem"), &pair.cert_pem)?;
            put(format!("{leaf}.remote{r}-key.pem"), &pair.key_pem)?;
        }
        put("probe-cert.pem".into(), &tls.probe_client.cert_pem)?;
        put("probe-key.pem".into(), &tls.probe_client.key_pem)?;
    }
    if let Some(op) = &s.operator {
        put("operator.jwt".into(), &op.operator_jwt)?;
        if l.state_dir.is_none() {
            for n in plan.hubs() {
                mkdir(&l.host_root.join("nodes").join(&n.name).join("jwt"))?;
            }
        }
    }
    names.sort();
    Ok(names)
}
