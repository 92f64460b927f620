//! Servers beside a lab that no topology declares, for checks that need a misbehaving peer. Pure: the
//! settings and the files they name; a backend with the `Guests` capability starts them.

use serde_json::{json, Value};

use crate::plan::{NodePlan, Plan};
use crate::secrets::pki;

/// A guest's settings, the files (name, text) they read from its directory, and the identity it presents.
pub type Guest = (Value, Vec<(String, String)>, String);

/// A leaf beside the lab that must not get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intruder {
    /// The lab's CA signed its certificate, but for an identity no account maps (`auth: mtls`).
    Impostor,
    /// TLS with the lab's CA, but no client certificate at all (where the leafnode port verifies).
    Certless,
}

/// An intruding leaf of `kind` dialling `hub`'s leafnode port: the settings, the files (name, text) they
/// read from the guest's directory, and the identity it presents. `None` without TLS material.
pub fn intruder_leaf(plan: &Plan, kind: Intruder, name: &str, hub: &NodePlan) -> Option<Guest> {
    match kind {
        Intruder::Impostor => impostor_leaf(plan, name, hub),
        Intruder::Certless => certless_leaf(plan, name, hub),
    }
}

/// A leaf that speaks TLS and trusts the lab's CA but presents no certificate: only the hub's demand for
/// one (verify) can refuse it.
fn certless_leaf(plan: &Plan, name: &str, hub: &NodePlan) -> Option<Guest> {
    let tls = plan.secrets.tls.as_ref()?;
    let file = |f: &str| plan.layout.guest_file(name, f);
    let settings = json!({
        "server_name": name,
        "listen": "127.0.0.1:-1",
        "leafnodes": { "remotes": [ {
            "urls": [format!("tls://{}", plan.dial(name, hub, hub.addr.leaf))],
            "tls": { "ca_file": file("ca.pem"), "timeout": 3 },
        } ] },
    });
    Some((settings, vec![("ca.pem".to_string(), tls.ca.cert_pem.clone())], "no client certificate".to_string()))
}

/// An impostor leaf: it dials `hub`'s leafnode port over TLS with the harness's own client certificate —
/// signed by the lab's CA, so TLS succeeds and only the identity mapping can refuse it — whose subject no
/// account maps. `None` without TLS material. Returns the settings, the files (name, text) they read from
/// the guest's directory, and the identity it presents.
fn impostor_leaf(plan: &Plan, name: &str, hub: &NodePlan) -> Option<Guest> {
    let tls = plan.secrets.tls.as_ref()?;
    let file = |f: &str| plan.layout.guest_file(name, f);
    let settings = json!({
        "server_name": name,
        "listen": "127.0.0.1:-1",
        "leafnodes": { "remotes": [ {
            "urls": [format!("tls://{}", plan.dial(name, hub, hub.addr.leaf))],
            "tls": { "cert_file": file("cert.pem"), "key_file": file("key.pem"), "ca_file": file("ca.pem"), "timeout": 3 },
        } ] },
    });
    let files = vec![
        ("cert.pem".to_string(), tls.probe_client.cert_pem.clone()),
        ("key.pem".to_string(), tls.probe_client.key_pem.clone()),
        ("ca.pem".to_string(), tls.ca.cert_pem.clone()),
    ];
    Some((settings, files, pki::mapped_identity("natslab-probe", Some("natslab"))))
}
