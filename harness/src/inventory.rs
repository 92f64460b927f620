//! An inventory describes a lab that someone else runs (NixOS VMs, a staging lab, a detached natslab lab):
//! the declared topology, the seed its secrets were derived from, each node's addresses, where the secret
//! files are readable, and where fault requests go. With the seed the harness re-derives exactly the
//! credentials the running servers were configured with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::{Error, Result};
use crate::plan::{Layout, NodeAddr, Plan};
use crate::secrets::entropy::Entropy;
use crate::topology::Topology;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    pub topology: Topology,
    pub seed: String,
    /// Paths in the servers' configs start here.
    pub layout_root: String,
    /// Where the harness reads the secret files (`<secrets_root>/secrets/...`).
    pub secrets_root: PathBuf,
    #[serde(default)]
    pub state_dir: Option<String>,
    pub nodes: Vec<InventoryNode>,
    #[serde(default)]
    pub faults: Option<FaultChannel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryNode {
    pub name: String,
    /// The address the node's config was rendered with (certificates name it).
    pub addr: NodeAddr,
    pub client_url: String,
    pub monitor_url: String,
}

/// Where fault requests are written and which faults whoever serves them can do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultChannel {
    pub dir: PathBuf,
    /// Capability names (`nemesis::Capability::name`): kill, pause, power-loss, isolate, partition,
    /// blackhole, latency, bandwidth.
    pub supports: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_timeout() -> u64 {
    120
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Inventory { path: path.to_path_buf(), reason: format!("cannot read it: {e}") })?;
        serde_json::from_str(&text).map_err(|e| Error::Inventory { path: path.to_path_buf(), reason: format!("not a valid inventory: {e}") })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Serialise { what: "the inventory", source })? + "\n";
        crate::files::write_secret(path, &text)
    }

    pub fn layout(&self) -> Layout {
        Layout { root: self.layout_root.clone(), host_root: self.secrets_root.clone(), state_dir: self.state_dir.clone() }
    }

    /// The plan the running servers were rendered from.
    pub fn plan(&self, run_id: &str) -> Result<Plan> {
        let addr = |_: usize, name: &str| {
            self.nodes.iter().find(|n| n.name == name).map(|n| n.addr.clone()).unwrap_or_else(|| NodeAddr {
                bind: String::new(),
                host: name.to_string(),
                client: 0,
                cluster: 0,
                leaf: 0,
                http: 0,
            })
        };
        for n in self.topology.hub.nodes.iter().map(|h| &h.name).chain(self.topology.leaves.iter().map(|l| &l.name)) {
            if !self.nodes.iter().any(|i| &i.name == n) {
                return Err(Error::Inventory { path: PathBuf::from("-"), reason: format!("no entry for node {n} of topology {}", self.topology.name) });
            }
        }
        Plan::new_with(self.topology.clone(), run_id.to_string(), self.layout(), addr, &mut Entropy::seeded(&self.seed))
    }

    /// The inventory of a plan this harness rendered (for `up` and `render --format nixos`).
    pub fn of_plan(plan: &Plan, seed: &str, endpoints: impl Fn(&str) -> (String, String)) -> Inventory {
        Inventory {
            topology: plan.topology.clone(),
            seed: seed.to_string(),
            layout_root: plan.layout.root.clone(),
            secrets_root: plan.layout.host_root.clone(),
            state_dir: plan.layout.state_dir.clone(),
            nodes: plan
                .nodes
                .iter()
                .map(|n| {
                    let (client_url, monitor_url) = endpoints(&n.name);
                    InventoryNode { name: n.name.clone(), addr: n.addr.clone(), client_url, monitor_url }
                })
                .collect(),
            faults: None,
        }
    }

    /// The inventory the `lab` VM hands to `natslab run --backend attached`: every node by its VM name, the
    /// secrets where the VM gets them, faults served by the test script through the shared directory.
    pub fn for_nixos(plan: &Plan) -> Inventory {
        use crate::render::nixos::{CLIENT, FAULTS_DIR, HTTP, SECRETS_ROOT};
        let mut inv = Inventory::of_plan(plan, &plan.run_id, |name| (format!("nats://{name}:{CLIENT}"), format!("http://{name}:{HTTP}")));
        inv.secrets_root = SECRETS_ROOT.into();
        inv.faults = Some(FaultChannel { dir: FAULTS_DIR.into(), supports: ["kill", "pause", "power-loss", "isolate"].map(String::from).to_vec(), timeout_s: 600 });
        inv
    }
}
