//! The plan: a topology with everything resolved — which nodes exist, where they listen, which files they
//! read, and every generated secret. Pure data; generation is random but does no I/O (see `files` for that).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::errors::Error;
use crate::secrets::entropy::Entropy;
use crate::secrets::{jwt, pki};
use crate::topology::{AuthMode, Permissions, Topology};

/// The user every account gets so the harness can reach it is `natslab-<account>` (user names are global in a
/// server); declared users may not start with this prefix.
pub const PROBE_PREFIX: &str = "natslab-";

pub fn probe_user(account: &str) -> String {
    format!("{PROBE_PREFIX}{account}")
}
/// The system account's name in rendered configs (operator mode uses its public key instead).
pub const SYSTEM_ACCOUNT: &str = "SYS";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Hub,
    Leaf,
}

/// Where one node listens and how its peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeAddr {
    /// The address the server binds (`127.77.3.2` for processes, `0.0.0.0` in a container).
    pub bind: String,
    /// The name or address other nodes dial.
    pub host: String,
    pub client: u16,
    pub cluster: u16,
    pub leaf: u16,
    pub http: u16,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodePlan {
    pub name: String,
    pub role: Role,
    pub addr: NodeAddr,
}

/// Who a credential belongs to: the hub cluster as a whole, or one leaf.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "scope", content = "node")]
pub enum Scope {
    Hub,
    Leaf(String),
}

impl Scope {
    pub fn label(&self) -> &str {
        match self {
            Scope::Hub => "hub",
            Scope::Leaf(l) => l,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredKind {
    /// A user the topology declares.
    Declared,
    /// The harness's own full-access user of an account.
    Probe,
    /// The user a leaf's remote authenticates as on the hub.
    LeafLink { leaf: String, remote: usize },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Credential {
    pub scope: Scope,
    pub account: String,
    pub user: String,
    pub kind: CredKind,
    #[serde(skip)]
    pub password: String,
    #[serde(skip)]
    pub bcrypt: String,
    /// Operator mode: the `.creds` text (user JWT + seed).
    #[serde(skip)]
    pub creds: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

impl Credential {
    /// File name stem of this credential's secret files.
    pub fn stem(&self) -> String {
        format!("{}.{}.{}", self.scope.label(), self.account, self.user)
    }
}

/// Operator-mode material: the operator and every hub-side account as JWTs.
pub struct OperatorMaterial {
    pub operator_jwt: String,
    pub system_account: String,
    /// account name → (public key, JWT)
    pub accounts: BTreeMap<String, (String, String)>,
    /// The operator and the hub-side accounts' keys, to issue users again and revoke the old (rotation).
    pub operator: jwt::Operator,
    pub signers: BTreeMap<String, jwt::Account>,
    /// Whether a rotation revokes the old key: false only in the test that proves a kept key is caught.
    pub revoke: bool,
}

/// TLS material: one CA, a server cert per node, a client cert per leaf remote (mTLS) and for the harness.
pub struct TlsMaterial {
    pub ca: pki::CertPair,
    pub servers: BTreeMap<String, pki::CertPair>,
    /// (leaf, remote index) → client cert, for `auth: mtls`.
    pub leaf_clients: BTreeMap<(String, usize), (pki::CertPair, String)>,
    /// The harness's own client certificate (needed where `verify_clients` is on).
    pub probe_client: pki::CertPair,
    /// The CA itself, to issue certificates again (rotation).
    pub issuer: pki::Ca,
}

pub struct Secrets {
    pub credentials: Vec<Credential>,
    /// node → JetStream encryption key
    pub js_keys: BTreeMap<String, String>,
    pub tls: Option<TlsMaterial>,
    pub operator: Option<OperatorMaterial>,
}

impl Secrets {
    pub fn find(&self, scope: &Scope, account: &str, user: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| &c.scope == scope && c.account == account && c.user == user)
    }

    pub fn probe(&self, scope: &Scope, account: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| &c.scope == scope && c.account == account && c.kind == CredKind::Probe)
    }

    pub fn leaf_link(&self, leaf: &str, remote: usize) -> Option<&Credential> {
        self.credentials
            .iter()
            .find(|c| c.kind == (CredKind::LeafLink { leaf: leaf.to_string(), remote }))
    }
}

/// Paths of the run's files, as the servers see them (`root`) and as the harness writes them (`host_root`).
/// For processes both are the run directory; in a container `root` is the mount point.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: String,
    pub host_root: PathBuf,
    /// Where a node's state (JetStream store, resolver JWTs) lives when not under `root` — on NixOS the
    /// module's `dataDir`, the only place the hardened unit may write.
    pub state_dir: Option<String>,
}

impl Layout {
    pub fn same(dir: &Path) -> Layout {
        Layout { root: dir.display().to_string(), host_root: dir.to_path_buf(), state_dir: None }
    }
    pub fn node_dir(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.root)
    }
    pub fn store_dir(&self, node: &str) -> String {
        match &self.state_dir {
            Some(d) => d.clone(),
            None => format!("{}/nodes/{node}/store", self.root),
        }
    }
    pub fn resolver_dir(&self, node: &str) -> String {
        match &self.state_dir {
            Some(d) => format!("{d}/jwt"),
            None => format!("{}/nodes/{node}/jwt", self.root),
        }
    }
    pub fn secret(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.root)
    }
    pub fn host_secret(&self, name: &str) -> PathBuf {
        self.host_root.join("secrets").join(name)
    }
    pub fn host_node_dir(&self, node: &str) -> PathBuf {
        self.host_root.join("nodes").join(node)
    }
    pub fn host_config(&self, node: &str) -> PathBuf {
        self.host_node_dir(node).join("nats.conf")
    }
    pub fn host_log(&self, node: &str) -> PathBuf {
        self.host_node_dir(node).join("server.log")
    }
    /// A throwaway server's file, as servers see it.
    pub fn guest_file(&self, guest: &str, file: &str) -> String {
        format!("{}/guests/{guest}/{file}", self.root)
    }
    pub fn host_guest_dir(&self, guest: &str) -> PathBuf {
        self.host_root.join("guests").join(guest)
    }
}

pub struct Plan {
    pub topology: Topology,
    pub run_id: String,
    pub nodes: Vec<NodePlan>,
    pub layout: Layout,
    pub secrets: Secrets,
    /// (from, to) → the `host:port` node `from` dials to reach `to`, where a link proxy stands in between.
    /// Links not listed are dialed directly.
    pub links: BTreeMap<(String, String), String>,
}

impl Plan {
    /// Resolve a topology: `addr` says where node `i` (hubs first, then leaves) listens.
    pub fn new(topology: Topology, run_id: String, layout: Layout, addr: impl FnMut(usize, &str) -> NodeAddr) -> Result<Plan, Error> {
        Plan::new_with(topology, run_id, layout, addr, &mut Entropy::random())
    }

    /// As `new`, drawing every secret from `entropy`: a seeded one makes the plan reproducible.
    pub fn new_with(
        topology: Topology,
        run_id: String,
        layout: Layout,
        mut addr: impl FnMut(usize, &str) -> NodeAddr,
        entropy: &mut Entropy,
    ) -> Result<Plan, Error> {
        let mut nodes = Vec::new();
        for (i, h) in topology.hub.nodes.iter().enumerate() {
            nodes.push(NodePlan { name: h.name.clone(), role: Role::Hub, addr: addr(i, &h.name) });
        }
        let hubs = nodes.len();
        for (i, l) in topology.leaves.iter().enumerate() {
            nodes.push(NodePlan { name: l.name.clone(), role: Role::Leaf, addr: addr(hubs + i, &l.name) });
        }
        let secrets = generate_secrets(&topology, &nodes, entropy)?;
        Ok(Plan { topology, run_id, nodes, layout, secrets, links: BTreeMap::new() })
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn hubs(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| n.role == Role::Hub)
    }

    pub fn leaves(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| n.role == Role::Leaf)
    }

    pub fn tls(&self) -> bool {
        self.topology.security.tls
    }

    /// How a hub account appears in monitoring output: its name, or its public key in operator mode.
    pub fn account_id(&self, name: &str) -> String {
        self.secrets
            .operator
            .as_ref()
            .and_then(|op| op.accounts.get(name).map(|(key, _)| key.clone()))
            .unwrap_or_else(|| name.to_string())
    }

    /// The account name behind how monitoring output names it (a public key in operator mode); the id itself
    /// when no declared account has it.
    pub fn account_name(&self, id: &str) -> String {
        self.secrets
            .operator
            .as_ref()
            .and_then(|op| op.accounts.iter().find(|(_, (key, _))| key == id).map(|(name, _)| name.clone()))
            .unwrap_or_else(|| id.to_string())
    }

    /// Whether inter-node links go through proxies (then servers must not advertise their real addresses,
    /// or peers would learn them and dial around the proxy).
    pub fn proxied(&self) -> bool {
        !self.links.is_empty()
    }

    /// What `from` dials to reach `to` on `port` (the cluster or leafnode port of `to`).
    pub fn dial(&self, from: &str, to: &NodePlan, port: u16) -> String {
        match self.links.get(&(from.to_string(), to.name.clone())) {
            Some(a) => a.clone(),
            None if to.addr.host.contains(':') => format!("[{}]:{port}", to.addr.host),
            None => format!("{}:{port}", to.addr.host),
        }
    }

    /// Rotation: a new certificate for `node`'s server from the same CA, in place of the old one (written
    /// with the plan's files); the new one's PEM.
    pub fn reissue_server_cert(&mut self, node: &str) -> Result<String, Error> {
        let n = self.node(node).ok_or_else(|| Error::Secret(format!("no node {node} to issue a certificate for")))?;
        let (dns, ips) = server_sans(n);
        let tls = self.secrets.tls.as_mut().ok_or_else(|| Error::Secret("the lab has no TLS".into()))?;
        let pair = tls.issuer.issue_server(node, &dns, &ips).map_err(|e| Error::Secret(e.to_string()))?;
        let pem = pair.cert_pem.clone();
        tls.servers.insert(node.to_string(), pair);
        Ok(pem)
    }

    /// Rotation in operator mode: a new user (key and JWT) for a hub credential, its creds in place of the
    /// old; then the account JWT signed again revoking the old user key (unless the test switched revoking
    /// off). The old creds, and the account JWT to push to the resolver.
    pub fn reissue_user(&mut self, account: &str, user: &str) -> Result<(String, String), Error> {
        let err = |e: jwt::JwtError| Error::Secret(e.to_string());
        let op = self.secrets.operator.as_mut().ok_or_else(|| Error::Secret("the lab is not in operator mode".into()))?;
        let c = self
            .secrets
            .credentials
            .iter_mut()
            .find(|c| c.scope == Scope::Hub && c.account == account && c.user == user)
            .ok_or_else(|| Error::Secret(format!("no credential {user} of {account}")))?;
        let signer = op.signers.get(account).ok_or_else(|| Error::Secret(format!("no key for account {account}")))?;
        let perms = c.permissions.as_ref().map(to_jwt_permissions);
        let (ujwt, seed) = signer.user(user, perms.as_ref()).map_err(err)?;
        let old = c.creds.replace(jwt::creds(&ujwt, &seed)).unwrap_or_default();
        let entry = op.accounts.get_mut(account).ok_or_else(|| Error::Secret(format!("no JWT for account {account}")))?;
        if op.revoke {
            let old_key = jwt::user_of(&old).ok_or_else(|| Error::Secret(format!("the old creds of {user} name no user")))?;
            entry.1 = op.operator.revoking(&entry.1, &[old_key]).map_err(err)?;
        }
        Ok((old, entry.1.clone()))
    }

    /// A day-2 change: the lab's declaration becomes `after`. Declared users' permissions follow it and,
    /// in operator mode, so do the hub-side account JWTs; those that changed are returned, to push to the
    /// resolver (everything else reaches the servers as their configs, written and reloaded).
    pub fn adopt(&mut self, after: Topology) -> Result<Vec<String>, Error> {
        let before = crate::topology::flows::flows(&self.topology);
        let now = crate::topology::flows::flows(&after);
        for c in self.secrets.credentials.iter_mut().filter(|c| c.kind == CredKind::Declared) {
            let accounts = match &c.scope {
                Scope::Hub => Some(&after.hub.accounts),
                Scope::Leaf(l) => after.leaf(l).map(|l| &l.accounts),
            };
            if let Some(u) = accounts.into_iter().flatten().filter(|a| a.name == c.account).flat_map(|a| &a.users).find(|u| u.user == c.user) {
                c.permissions = u.permissions.clone();
            }
        }
        let mut pushed = Vec::new();
        if let Some(op) = self.secrets.operator.as_mut() {
            let pubs: BTreeMap<String, String> = op.signers.iter().map(|(n, a)| (n.clone(), a.key.public_key())).collect();
            let pubkey = |n: &str| pubs.get(n).cloned().unwrap_or_default();
            for (name, account) in &op.signers {
                if name == SYSTEM_ACCOUNT || before.get(name) == now.get(name) {
                    continue;
                }
                let spec = account_spec(&after, &now, name, &pubkey);
                let entry = op.accounts.get_mut(name).ok_or_else(|| Error::Secret(format!("no JWT for account {name}")))?;
                entry.1 = op.operator.account_again(account, &spec, &entry.1).map_err(|e| Error::Secret(e.to_string()))?;
                pushed.push(entry.1.clone());
            }
        }
        self.topology = after;
        Ok(pushed)
    }

    /// Rotation in mTLS mode: a new client certificate for a leaf's remote from the same CA, for the same
    /// identity (CN and O, which the hub maps to the link's account), in place of the old one.
    pub fn reissue_leaf_cert(&mut self, leaf: &str, remote: usize) -> Result<(), Error> {
        let tls = self.secrets.tls.as_mut().ok_or_else(|| Error::Secret("the lab has no TLS".into()))?;
        let cn = if remote == 0 { format!("{leaf}.leaf") } else { format!("{leaf}-{remote}.leaf") };
        let org = self.topology.name.clone();
        let pair = tls.issuer.issue_client(&cn, Some(&org)).map_err(|e| Error::Secret(e.to_string()))?;
        let entry = tls.leaf_clients.get_mut(&(leaf.to_string(), remote)).ok_or_else(|| Error::Secret(format!("{leaf} remote {remote} has no client certificate")))?;
        entry.0 = pair;
        Ok(())
    }

    /// Rotation: a new password (and bcrypt hash) for a password credential; the old password.
    pub fn rotate_password(&mut self, scope: &Scope, account: &str, user: &str) -> Result<String, Error> {
        let cost = self.topology.security.bcrypt_cost.unwrap_or(6);
        let c = self
            .secrets
            .credentials
            .iter_mut()
            .find(|c| &c.scope == scope && c.account == account && c.user == user)
            .ok_or_else(|| Error::Secret(format!("no credential {user} of {account}")))?;
        let password = Entropy::random().password(24);
        let bcrypt = bcrypt::hash(&password, cost).map_err(|e| Error::Secret(format!("bcrypt for user {user}: {e}")))?;
        c.bcrypt = bcrypt;
        Ok(std::mem::replace(&mut c.password, password))
    }

    pub fn scope_of(&self, node: &str) -> Scope {
        match self.node(node).map(|n| n.role) {
            Some(Role::Leaf) => Scope::Leaf(node.to_string()),
            _ => Scope::Hub,
        }
    }
}

fn generate_secrets(t: &Topology, nodes: &[NodePlan], entropy: &mut Entropy) -> Result<Secrets, Error> {
    let cost = t.security.bcrypt_cost.unwrap_or(6);
    let mut credentials = Vec::new();
    let mut push = |scope: Scope, account: &str, user: &str, kind: CredKind, permissions: Option<Permissions>| -> Result<(), Error> {
        let password = entropy.password(24);
        let bcrypt = bcrypt::hash_with_salt(&password, cost, entropy.bytes16())
            .map(|h| h.to_string())
            .map_err(|e| Error::Secret(format!("bcrypt for user {user}: {e}")))?;
        credentials.push(Credential { scope, account: account.to_string(), user: user.to_string(), kind, password, bcrypt, creds: None, permissions });
        Ok(())
    };
    for a in &t.hub.accounts {
        push(Scope::Hub, &a.name, &probe_user(&a.name), CredKind::Probe, None)?;
        for u in &a.users {
            push(Scope::Hub, &a.name, &u.user, CredKind::Declared, u.permissions.clone())?;
        }
    }
    push(Scope::Hub, SYSTEM_ACCOUNT, &probe_user(SYSTEM_ACCOUNT), CredKind::Probe, None)?;
    for l in &t.leaves {
        for (r, _) in l.remotes.iter().enumerate() {
            let ha = l.hub_account(r);
            push(Scope::Hub, &ha, &probe_user(&ha), CredKind::Probe, None)?;
            let link_user = if r == 0 { format!("leaf-{}", l.name) } else { format!("leaf-{}-{r}", l.name) };
            push(Scope::Hub, &ha, &link_user, CredKind::LeafLink { leaf: l.name.clone(), remote: r }, None)?;
        }
        let scope = Scope::Leaf(l.name.clone());
        for a in &l.accounts {
            push(scope.clone(), &a.name, &probe_user(&a.name), CredKind::Probe, None)?;
            for u in &a.users {
                push(scope.clone(), &a.name, &u.user, CredKind::Declared, u.permissions.clone())?;
            }
        }
        push(scope, SYSTEM_ACCOUNT, &probe_user(SYSTEM_ACCOUNT), CredKind::Probe, None)?;
    }

    let mut js_keys = BTreeMap::new();
    for n in nodes {
        let js = match n.role {
            Role::Hub => t.hub.jetstream.as_ref(),
            Role::Leaf => t.leaf(&n.name).and_then(|l| l.jetstream.as_ref()),
        };
        if js.is_some_and(|j| j.encryption.is_some()) {
            js_keys.insert(n.name.clone(), entropy.password(32));
        }
    }

    let tls = if t.security.tls { Some(tls_material(t, nodes, entropy)?) } else { None };
    let operator = if t.security.auth == AuthMode::Operator { Some(operator_material(t, &mut credentials, entropy)?) } else { None };
    Ok(Secrets { credentials, js_keys, tls, operator })
}

fn tls_material(t: &Topology, nodes: &[NodePlan], entropy: &mut Entropy) -> Result<TlsMaterial, Error> {
    let err = |e: pki::PkiError| Error::Secret(e.to_string());
    let ca = pki::Ca::generate_with(&format!("natslab {} CA", t.name), entropy).map_err(err)?;
    let mut servers = BTreeMap::new();
    for n in nodes {
        let (dns, ips) = server_sans(n);
        servers.insert(n.name.clone(), ca.issue_server_with(&n.name, &dns, &ips, entropy).map_err(err)?);
    }
    let mut leaf_clients = BTreeMap::new();
    if t.security.auth == AuthMode::Mtls {
        for l in &t.leaves {
            for r in 0..l.remotes.len() {
                let cn = if r == 0 { format!("{}.leaf", l.name) } else { format!("{}-{r}.leaf", l.name) };
                let org = t.name.as_str();
                let pair = ca.issue_client_with(&cn, Some(org), entropy).map_err(err)?;
                leaf_clients.insert((l.name.clone(), r), (pair, pki::mapped_identity(&cn, Some(org))));
            }
        }
    }
    let probe_client = ca.issue_client_with("natslab-probe", Some("natslab"), entropy).map_err(err)?;
    Ok(TlsMaterial { ca: pki::CertPair { cert_pem: ca.cert_pem.clone(), key_pem: ca.key_pem.clone() }, servers, leaf_clients, probe_client, issuer: ca })
}

/// The names and addresses a node's server certificate covers: its name, localhost, and where it listens.
fn server_sans(n: &NodePlan) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut dns = vec![n.name.clone(), "localhost".to_string()];
    let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    for h in [&n.addr.host, &n.addr.bind] {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ips.push(ip),
            Ok(_) => {}
            Err(_) => dns.push(h.clone()),
        }
    }
    dns.dedup();
    ips.dedup();
    (dns, ips)
}

/// Operator mode covers the hub: every hub-side account (declared, per-leaf, system) becomes a JWT, and
/// every hub credential a user JWT + creds. Leaves keep config accounts and dial the hub with creds.
fn operator_material(t: &Topology, credentials: &mut [Credential], entropy: &mut Entropy) -> Result<OperatorMaterial, Error> {
    let err = |e: jwt::JwtError| Error::Secret(e.to_string());
    let (operator, sys) = jwt::Operator::generate_with(&format!("natslab-{}", t.name), entropy).map_err(err)?;
    let flows = crate::topology::flows::flows(t);

    // Keys first: imports name the exporter's public key.
    let mut names: Vec<String> = t.hub.accounts.iter().map(|a| a.name.clone()).collect();
    for l in &t.leaves {
        for r in 0..l.remotes.len() {
            names.push(l.hub_account(r));
        }
    }
    let mut keys: BTreeMap<String, nkeys::KeyPair> = BTreeMap::new();
    for n in &names {
        keys.insert(n.clone(), jwt::account_key_with(entropy).map_err(err)?);
    }
    let pubs: BTreeMap<String, String> = keys.iter().map(|(n, k)| (n.clone(), k.public_key())).collect();
    let pubkey = |n: &str| pubs.get(n).cloned().unwrap_or_default();

    let mut signed: BTreeMap<String, jwt::Account> = BTreeMap::new();
    for name in &names {
        let spec = account_spec(t, &flows, name, &pubkey);
        let key = keys.remove(name).ok_or_else(|| Error::Secret(format!("no key for account {name}")))?;
        signed.insert(name.clone(), operator.account(key, &spec).map_err(err)?);
    }
    for c in credentials.iter_mut().filter(|c| c.scope == Scope::Hub) {
        let account = if c.account == SYSTEM_ACCOUNT { &sys } else { &signed[&c.account] };
        let perms = c.permissions.as_ref().map(to_jwt_permissions);
        let (ujwt, seed) = account.user_with(&c.user, perms.as_ref(), entropy).map_err(err)?;
        c.creds = Some(jwt::creds(&ujwt, &seed));
    }
    let mut accounts: BTreeMap<String, (String, String)> =
        signed.iter().map(|(n, a)| (n.clone(), (a.key.public_key(), a.jwt.clone()))).collect();
    accounts.insert(SYSTEM_ACCOUNT.to_string(), (sys.key.public_key(), sys.jwt.clone()));
    let system_account = sys.key.public_key();
    signed.insert(SYSTEM_ACCOUNT.to_string(), sys);
    Ok(OperatorMaterial { operator_jwt: operator.jwt.clone(), system_account, accounts, operator, signers: signed, revoke: true })
}

/// What a hub-side account's JWT says: its exports and imports (importers name exporters by key).
fn account_spec<'a>(t: &Topology, flows: &BTreeMap<String, crate::topology::flows::AccountFlows>, name: &'a str, pubkey: &dyn Fn(&str) -> String) -> jwt::AccountSpec<'a> {
    let a = flows.get(name).cloned().unwrap_or_default();
    jwt::AccountSpec {
        name,
        exports: a.exports.iter().map(|s| jwt::StreamExport { subject: s.clone() }).collect(),
        imports: a
            .imports
            .iter()
            .map(|i| jwt::StreamImport { from_account: pubkey(&i.from), subject: i.subject.clone(), local_subject: i.local_subject.clone() })
            .collect(),
        jetstream: t.hub.jetstream.is_some(),
    }
}

fn to_jwt_permissions(p: &Permissions) -> jwt::UserPermissions {
    let (pa, pd) = p.publish.as_ref().map(|r| (r.allow.clone(), r.deny.clone())).unwrap_or_default();
    let (sa, sd) = p.subscribe.as_ref().map(|r| (r.allow.clone(), r.deny.clone())).unwrap_or_default();
    jwt::UserPermissions { pub_allow: pa, pub_deny: pd, sub_allow: sa, sub_deny: sd }
}
