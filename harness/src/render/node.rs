//! One node's settings tree. Sizes are rendered as integers and durations as Go duration strings: the only
//! forms that work both in a config file and as JSON (NixOS `settings`), AUDIT §1b.

use serde_json::{json, Map, Value};

use crate::topology::flows::{flows, AccountFlows};
use crate::plan::{CredKind, NodePlan, Plan, Role, Scope, SYSTEM_ACCOUNT};
use crate::topology::{AuthMode, JetStream, Leaf, SyncInterval};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub settings: Value,
}

pub fn render(plan: &Plan) -> Vec<NodeConfig> {
    plan.nodes.iter().map(|n| NodeConfig { name: n.name.clone(), settings: render_node(plan, n) }).collect()
}

pub fn render_node(plan: &Plan, node: &NodePlan) -> Value {
    match node.role {
        Role::Hub => hub(plan, node),
        Role::Leaf => leaf(plan, node, plan.topology.leaf(&node.name).expect("plan nodes come from the topology")),
    }
}

fn hostport(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Server-wide limits: sizes as integers (`"8MB"` strings are rejected in JSON form, AUDIT §1b).
fn limits(m: &mut Map<String, Value>, l: Option<&crate::topology::Limits>) {
    let Some(l) = l else { return };
    let sizes = [("max_control_line", l.max_control_line), ("max_payload", l.max_payload), ("max_pending", l.max_pending)];
    for (k, v) in sizes {
        if let Some(v) = v {
            m.insert(k.into(), json!(v.0));
        }
    }
    for (k, v) in [("max_connections", l.max_connections), ("max_subscriptions", l.max_subscriptions)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(d) = &l.write_deadline {
        m.insert("write_deadline".into(), json!(d.to_go()));
    }
}

fn base(plan: &Plan, node: &NodePlan, tags: Vec<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("server_name".into(), json!(node.name));
    m.insert("listen".into(), json!(hostport(&node.addr.bind, node.addr.client)));
    m.insert("http".into(), json!(hostport(&node.addr.bind, node.addr.http)));
    if !tags.is_empty() {
        m.insert("server_tags".into(), json!(tags));
    }
    if let Some(tls) = tls_block(plan, node, plan.topology.security.verify_clients, false) {
        m.insert("tls".into(), tls);
    }
    if let Some(ld) = &plan.topology.lame_duck {
        if let Some(d) = &ld.duration {
            m.insert("lame_duck_duration".into(), json!(d.to_go()));
        }
        if let Some(g) = &ld.grace_period {
            m.insert("lame_duck_grace_period".into(), json!(g.to_go()));
        }
    }
    m
}

/// A server-side TLS block with the node's certificate.
fn tls_block(plan: &Plan, node: &NodePlan, verify: bool, map: bool) -> Option<Value> {
    plan.tls().then(|| {
        let l = &plan.layout;
        let mut t = json!({
            "cert_file": l.secret(&format!("{}-cert.pem", node.name)),
            "key_file": l.secret(&format!("{}-key.pem", node.name)),
            "ca_file": l.secret("ca.pem"),
            "timeout": 3,
        });
        if map {
            t["verify_and_map"] = json!(true);
        } else if verify {
            t["verify"] = json!(true);
        }
        t
    })
}

fn jetstream(plan: &Plan, node: &NodePlan, js: &JetStream) -> Value {
    let mut j = json!({ "store_dir": plan.layout.store_dir(&node.name) });
    if let Some(d) = &js.domain {
        j["domain"] = json!(d);
    }
    if let Some(s) = js.max_memory_store {
        j["max_memory_store"] = json!(s.0);
    }
    if let Some(s) = js.max_file_store {
        j["max_file_store"] = json!(s.0);
    }
    match &js.sync_interval {
        Some(SyncInterval::Always) => j["sync_interval"] = json!("always"),
        Some(SyncInterval::Every(d)) => j["sync_interval"] = json!(d.to_go()),
        None => {}
    }
    if let Some(c) = js.encryption {
        // A cipher without a key is silently ignored by nats-server (AUDIT §1b): always pair them.
        j["cipher"] = json!(match c {
            crate::topology::Cipher::Aes => "aes",
            crate::topology::Cipher::Chachapoly => "chachapoly",
        });
        j["key"] = json!(plan.secrets.js_keys.get(&node.name).cloned().unwrap_or_default());
    }
    j
}

fn users(plan: &Plan, scope: &Scope, account: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for c in plan.secrets.credentials.iter().filter(|c| &c.scope == scope && c.account == account) {
        // mTLS: the leaf link is a user named after its certificate's subject, without a password.
        if let CredKind::LeafLink { leaf, remote } = &c.kind {
            if plan.topology.security.auth == AuthMode::Mtls {
                if let Some((_, identity)) = plan.secrets.tls.as_ref().and_then(|t| t.leaf_clients.get(&(leaf.clone(), *remote))) {
                    out.push(json!({ "user": identity }));
                }
                continue;
            }
        }
        let mut u = json!({ "user": c.user, "password": c.bcrypt });
        if let Some(p) = &c.permissions {
            let mut perms = Map::new();
            for (k, rule) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
                if let Some(r) = rule {
                    let mut rm = Map::new();
                    if !r.allow.is_empty() {
                        rm.insert("allow".into(), json!(r.allow));
                    }
                    if !r.deny.is_empty() {
                        rm.insert("deny".into(), json!(r.deny));
                    }
                    perms.insert(k.into(), Value::Object(rm));
                }
            }
            u["permissions"] = Value::Object(perms);
        }
        out.push(u);
    }
    out
}

fn account_block(plan: &Plan, scope: &Scope, name: &str, flows: Option<&AccountFlows>, js: bool) -> Value {
    let mut a = json!({ "users": users(plan, scope, name) });
    if js {
        a["jetstream"] = json!("enabled");
    }
    if let Some(f) = flows {
        if !f.exports.is_empty() {
            a["exports"] = json!(f.exports.iter().map(|s| json!({ "stream": s })).collect::<Vec<_>>());
        }
        if !f.imports.is_empty() {
            a["imports"] = json!(f
                .imports
                .iter()
                .map(|i| {
                    let mut v = json!({ "stream": { "account": i.from, "subject": i.subject } });
                    if let Some(p) = &i.prefix {
                        v["prefix"] = json!(p);
                    }
                    v
                })
                .collect::<Vec<_>>());
        }
    }
    a
}

fn hub(plan: &Plan, node: &NodePlan) -> Value {
    let t = &plan.topology;
    let hub_node = t.hub.nodes.iter().find(|h| h.name == node.name);
    let mut m = base(plan, node, hub_node.map(|h| h.tags.clone()).unwrap_or_default());
    limits(&mut m, t.hub.limits.as_ref());
    if let Some(js) = &t.hub.jetstream {
        m.insert("jetstream".into(), jetstream(plan, node, js));
    }
    if t.hub.nodes.len() > 1 {
        let scheme = if plan.tls() { "tls" } else { "nats" };
        let routes: Vec<String> = plan
            .hubs()
            .filter(|h| h.name != node.name || !plan.proxied())
            .map(|h| format!("{scheme}://{}", plan.dial(&node.name, h, h.addr.cluster)))
            .collect();
        let mut c = json!({ "name": t.hub.cluster, "listen": hostport(&node.addr.bind, node.addr.cluster), "routes": routes });
        if plan.proxied() {
            // Peers learn each other's route URLs by gossip; a dead advertised address keeps a partitioned
            // pair from reconnecting around the proxy (every route is explicit, so nothing is lost).
            c["advertise"] = json!(hostport(&node.addr.host, 1));
        }
        if let Some(tls) = tls_block(plan, node, true, false) {
            c["tls"] = tls;
        }
        m.insert("cluster".into(), c);
    }
    let mut leafnodes = json!({ "listen": hostport(&node.addr.bind, node.addr.leaf) });
    if t.hub.no_advertise {
        leafnodes["no_advertise"] = json!(true);
    } else if plan.proxied() {
        // With proxies, else a leaf learns every hub's real leafnode URL from INFO and dials around the
        // proxy. A dead advertised address, not no_advertise: before 2.15 a hub with no_advertise still
        // sent its own URL, and a 2.15 hub with it is refused by older leaves (versions::incompatibilities).
        leafnodes["advertise"] = json!(hostport(&node.addr.host, 1));
    }
    if let Some(tls) = tls_block(plan, node, false, t.security.auth == AuthMode::Mtls) {
        leafnodes["tls"] = tls;
    }
    m.insert("leafnodes".into(), leafnodes);

    let flows = flows(t);
    match &plan.secrets.operator {
        Some(op) => {
            m.insert("operator".into(), json!(plan.layout.secret("operator.jwt")));
            m.insert("system_account".into(), json!(op.system_account));
            m.insert(
                "resolver".into(),
                json!({ "type": "full", "dir": plan.layout.resolver_dir(&node.name), "allow_delete": false, "interval": "2m" }),
            );
            let preload: Map<String, Value> = op.accounts.values().map(|(k, j)| (k.clone(), json!(j))).collect();
            m.insert("resolver_preload".into(), Value::Object(preload));
        }
        None => {
            let js = t.hub.jetstream.is_some();
            let mut accounts = Map::new();
            for (name, f) in &flows {
                accounts.insert(name.clone(), account_block(plan, &Scope::Hub, name, Some(f), js));
            }
            accounts.insert(SYSTEM_ACCOUNT.into(), account_block(plan, &Scope::Hub, SYSTEM_ACCOUNT, None, false));
            m.insert("accounts".into(), Value::Object(accounts));
            m.insert("system_account".into(), json!(SYSTEM_ACCOUNT));
        }
    }
    Value::Object(m)
}

fn leaf(plan: &Plan, node: &NodePlan, l: &Leaf) -> Value {
    let t = &plan.topology;
    let tags = l.region.iter().map(|r| format!("region:{r}")).collect();
    let mut m = base(plan, node, tags);
    limits(&mut m, l.limits.as_ref());
    if let Some(d) = &l.ping_interval {
        m.insert("ping_interval".into(), json!(d.to_go()));
    }
    if let Some(p) = l.ping_max {
        m.insert("ping_max".into(), json!(p));
    }
    if let Some(js) = &l.jetstream {
        m.insert("jetstream".into(), jetstream(plan, node, js));
    }
    let scope = Scope::Leaf(l.name.clone());
    let mut accounts = Map::new();
    for a in &l.accounts {
        accounts.insert(a.name.clone(), account_block(plan, &scope, &a.name, None, l.jetstream.is_some()));
    }
    accounts.insert(SYSTEM_ACCOUNT.into(), account_block(plan, &scope, SYSTEM_ACCOUNT, None, false));
    m.insert("accounts".into(), Value::Object(accounts));
    m.insert("system_account".into(), json!(SYSTEM_ACCOUNT));

    let scheme = if plan.tls() { "tls" } else { "nats" };
    let mut remotes = Vec::new();
    for (r, remote) in l.remotes.iter().enumerate() {
        let cred = plan.secrets.leaf_link(&l.name, r);
        let userinfo = match (t.security.auth, cred) {
            (AuthMode::Password, Some(c)) => format!("{}:{}@", c.user, c.password),
            _ => String::new(),
        };
        let urls: Vec<String> = remote
            .hubs
            .iter()
            .filter_map(|h| plan.node(h))
            .map(|h| format!("{scheme}://{userinfo}{}", plan.dial(&l.name, h, h.addr.leaf)))
            .collect();
        // Hubs are listed in order of preference: keep that order instead of nats-server's shuffle.
        let mut rv = json!({ "urls": urls, "account": l.remote_account(remote), "dont_randomize": true });
        if let Some(c) = l.compression {
            rv["compression"] = json!(c.as_str());
        }
        if !remote.deny_imports.is_empty() {
            rv["deny_imports"] = json!(remote.deny_imports);
        }
        if !remote.deny_exports.is_empty() {
            rv["deny_exports"] = json!(remote.deny_exports);
        }
        if t.security.auth == AuthMode::Operator {
            if let Some(c) = cred {
                rv["credentials"] = json!(plan.layout.secret(&format!("{}.creds", c.stem())));
            }
        }
        if plan.tls() {
            let mut tls = json!({ "ca_file": plan.layout.secret("ca.pem"), "timeout": 3 });
            if t.security.auth == AuthMode::Mtls {
                tls["cert_file"] = json!(plan.layout.secret(&format!("{}.remote{r}-cert.pem", l.name)));
                tls["key_file"] = json!(plan.layout.secret(&format!("{}.remote{r}-key.pem", l.name)));
            }
            rv["tls"] = tls;
        }
        remotes.push(rv);
    }
    let mut leafnodes = json!({ "remotes": remotes });
    if let Some(d) = &l.reconnect_interval {
        leafnodes["reconnect_interval"] = json!(d.to_go());
    }
    m.insert("leafnodes".into(), leafnodes);
    Value::Object(m)
}
