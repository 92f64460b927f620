//! The same settings, shaped for the NixOS `services.nats` module: the module itself sets `server_name`
//! (from `serverName`), `port` and `jetstream.store_dir` (from `dataDir`), so those must not be set twice;
//! the listen host goes in `settings.host`. Plus a manifest of nodes for the Nix side (which VM runs what,
//! which ports to open, which secret files to deliver).

use std::path::Path;

use serde_json::{json, Value};

use crate::errors::Result;
use crate::plan::{Layout, NodeAddr, NodePlan, Plan, Role};
use crate::secrets::entropy::Entropy;
use crate::topology::Topology;

/// Ports on a NixOS node: the NATS defaults (each VM has its own address).
pub const CLIENT: u16 = 4222;
pub const CLUSTER: u16 = 6222;
pub const LEAF: u16 = 7422;
pub const HTTP: u16 = 8222;

/// Where secrets are delivered on a VM, and where node state lives (the module's default `dataDir`).
pub const SECRETS_ROOT: &str = "/etc/natslab";
pub const DATA_DIR: &str = "/var/lib/nats";

/// A node's rendered settings as `services.nats.settings`, with every secret the settings would carry inline
/// (a leaf link's password in its remote URL) replaced by a placeholder: the config lands in the world-
/// readable Nix store, and the module fills the placeholders in from the secrets directory when the service
/// starts. Also the secrets so replaced, as (file under the secrets directory, placeholder).
pub fn module_settings(plan: &Plan, node: &NodePlan, settings: &Value) -> (Value, Vec<(String, String)>) {
    let mut s = settings.clone();
    let mut inline = Vec::new();
    if let Some(m) = s.as_object_mut() {
        m.remove("server_name");
        m.remove("listen");
        m.insert("host".into(), json!("0.0.0.0"));
        if let Some(js) = m.get_mut("jetstream").and_then(Value::as_object_mut) {
            js.remove("store_dir");
        }
    }
    if node.role == Role::Leaf {
        let remotes = s.pointer_mut("/leafnodes/remotes").and_then(Value::as_array_mut);
        for (r, remote) in remotes.into_iter().flatten().enumerate() {
            let Some(c) = plan.secrets.leaf_link(&node.name, r) else { continue };
            let secret = format!("{}:{}@", c.user, c.password);
            let file = format!("{}.password", c.stem());
            let hole = placeholder(&file);
            let mut used = false;
            for url in remote.get_mut("urls").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(u) = url.as_str().filter(|u| u.contains(&secret)) {
                    *url = json!(u.replace(&secret, &format!("{}:{hole}@", c.user)));
                    used = true;
                }
            }
            if used {
                inline.push((file, hole));
            }
        }
    }
    (s, inline)
}

/// What stands in a config for the content of a secret file until the service starts.
pub fn placeholder(file: &str) -> String {
    format!("@NATSLAB_SECRET:{file}@")
}

/// The node that creates the declared streams of its place: the first hub for the hub's, each leaf with
/// streams for its own (the module's provisioning unit runs there).
pub fn provisions(plan: &Plan, node: &NodePlan) -> bool {
    match node.role {
        Role::Hub => !plan.topology.hub.streams.is_empty() && plan.hubs().next().is_some_and(|h| h.name == node.name),
        Role::Leaf => plan.topology.leaf(&node.name).is_some_and(|l| !l.streams.is_empty()),
    }
}

/// What the Nix side needs per node besides its settings: `inline` holds each node's placeholders
/// (`module_settings`).
pub fn manifest(plan: &Plan, secret_files: &[String], inline: &std::collections::BTreeMap<String, Vec<(String, String)>>) -> Value {
    let nodes: Vec<Value> = plan
        .nodes
        .iter()
        .map(|n| {
            let holes: Vec<Value> = inline.get(&n.name).into_iter().flatten().map(|(file, hole)| json!({ "file": file, "placeholder": hole })).collect();
            let js = match n.role {
                Role::Hub => plan.topology.hub.jetstream.is_some(),
                Role::Leaf => plan.topology.leaf(&n.name).is_some_and(|l| l.jetstream.is_some()),
            };
            json!({
                "name": n.name,
                "role": n.role,
                "jetstream": js,
                "ports": [n.addr.client, n.addr.cluster, n.addr.leaf, n.addr.http],
                "client_url": format!("nats://{}:{}", n.addr.host, n.addr.client),
                "monitor_url": format!("http://{}:{}", n.addr.host, n.addr.http),
                "inline_secrets": holes,
                "provisions": provisions(plan, n),
                // The nats-server version the topology declares for this node (null: the host's own
                // package). The module picks the build from `natsPackages`.
                "server_version": crate::topology::versions::declared_version(&plan.topology, &n.name).map(|(v, _)| v.to_string()),
            })
        })
        .collect();
    json!({
        "topology": plan.topology.name,
        "seed": plan.run_id,
        "secrets_root": SECRETS_ROOT,
        "secret_files": secret_files,
        "nodes": nodes,
    })
}

/// VM addressing: each node is a machine named after it, on the NATS default ports.
pub fn addr(name: &str) -> NodeAddr {
    NodeAddr { bind: "0.0.0.0".into(), host: name.to_string(), client: CLIENT, cluster: CLUSTER, leaf: LEAF, http: HTTP }
}

/// The plan a NixOS test is rendered from, reproducible from the seed (a lab VM re-derives the same
/// credentials from it). `out` is where the files are written on this host.
pub fn plan(t: Topology, seed: &str, out: &Path) -> Result<Plan> {
    let layout = Layout { root: SECRETS_ROOT.into(), host_root: out.to_path_buf(), state_dir: Some(DATA_DIR.into()) };
    Plan::new_with(t, seed.to_string(), layout, |_, name| addr(name), &mut Entropy::seeded(seed))
}

/// The shared directory of a NixOS test (`/tmp/shared` in every VM), where fault requests go.
pub const FAULTS_DIR: &str = "/tmp/shared/faults";

