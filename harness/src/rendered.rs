//! Writing a plan's files into the run directory: configs, certificates, creds, passwords — every one
//! through `files` (mode 0600, since every config holds secrets too: bcrypt hashes, leaf passwords,
//! JetStream keys) — and the directory `natslab render --format nixos` writes.

use crate::errors::Result;
use crate::files::{mkdir, write_secret};
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::render::{nixos, to_conf, NodeConfig};

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

/// `natslab render --format nixos`: writes `nodes/<node>.json` (module settings), `nodes.json` (the
/// manifest), `inventory.json` (for the lab VM) and `secrets/`.
/// Every file ends with a newline and keys are sorted: the output is stable for a given seed.
pub fn write_nixos(plan: &Plan) -> Result<usize> {
    let out = &plan.layout.host_root;
    let secret_files = write_secrets(plan)?;
    let mut n = 0;
    let mut inline = std::collections::BTreeMap::new();
    for node in &plan.nodes {
        let (settings, holes) = nixos::module_settings(plan, node, &crate::render::render_node(plan, node));
        let text = serde_json::to_string_pretty(&settings).unwrap_or_default() + "\n";
        write_secret(&out.join("nodes").join(format!("{}.json", node.name)), &text)?;
        inline.insert(node.name.clone(), holes);
        n += 1;
    }
    let text = serde_json::to_string_pretty(&nixos::manifest(plan, &secret_files, &inline)).unwrap_or_default() + "\n";
    write_secret(&out.join("nodes.json"), &text)?;
    Inventory::for_nixos(plan).write(&out.join("inventory.json"))?;
    Ok(n)
}

/// Fills a config's placeholders in from the secret files under `dir`: what the module does when the
/// service starts.
pub fn fill_in(text: &str, inline: &[(String, String)], dir: &std::path::Path) -> std::io::Result<String> {
    let mut out = text.to_string();
    for (file, hole) in inline {
        out = out.replace(hole, std::fs::read_to_string(dir.join(file))?.trim_end());
    }
    Ok(out)
}
