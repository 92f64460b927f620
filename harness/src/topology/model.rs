//! The topology a user declares, exactly as written in YAML.
//!
//! Every struct denies unknown fields so a typo is an error that names the key, never a silent default.
//! No `untagged`/`flatten`: both ruin serde's error messages.

use serde::{Deserialize, Serialize};

use super::units::{Duration, Size, SyncInterval};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Short name, used in run ids, context names and reports.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub security: Security,
    pub hub: Hub,
    #[serde(default)]
    pub leaves: Vec<Leaf>,
    /// The nats-server version every node runs unless it says otherwise (`2.12.8`); default: the server
    /// natslab finds or installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// How nodes stop when asked to (SIGUSR2 / `systemctl stop`): lame-duck timings for every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lame_duck: Option<LameDuck>,
    /// Service levels the run must meet; without one, the timing is a measurement only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Day-2 changes the `reload` family makes to the running lab by config reloads, each stating the
    /// state after it; each is made, checked, undone and checked again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// One change to a running lab, as the state after it: a user's permissions, or a leaf link's flows.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// For reports and check ids: letters, digits, `-`, `_`.
    pub name: String,
    /// Where: a leaf's name; omitted, the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// A user of that place whose permissions become `permissions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// A remote of the leaf (default 0) whose flows become `imports` / `exports` (each as in `remotes`;
    /// one left out stays as declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imports: Option<Vec<Flow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<Vec<Flow>>,
}

impl Change {
    /// The topology after this change (validated topologies only: the places it names exist).
    pub fn apply(&self, t: &Topology) -> Topology {
        let mut after = t.clone();
        if let Some(user) = &self.user {
            let accounts = match &self.leaf {
                Some(l) => after.leaves.iter_mut().find(|x| &x.name == l).map(|x| &mut x.accounts),
                None => Some(&mut after.hub.accounts),
            };
            for a in accounts.into_iter().flatten() {
                for u in a.users.iter_mut().filter(|u| &u.user == user) {
                    u.permissions = self.permissions.clone();
                }
            }
        }
        if self.imports.is_some() || self.exports.is_some() {
            let r = self.remote.unwrap_or(0);
            if let Some(remote) = self.leaf.as_ref().and_then(|l| after.leaves.iter_mut().find(|x| &x.name == l)).and_then(|l| l.remotes.get_mut(r)) {
                if let Some(i) = &self.imports {
                    remote.imports = i.clone();
                }
                if let Some(e) = &self.exports {
                    remote.exports = e.clone();
                }
            }
        }
        after
    }

    /// Whether it changes a user's permissions (else a link's flows).
    pub fn is_permissions(&self) -> bool {
        self.user.is_some()
    }
}

/// Lame-duck mode: a stopping server closes its listener, hands off its raft leaderships, waits
/// `grace_period`, then closes its clients spread over `duration` (at most one a second).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LameDuck {
    /// `lame_duck_duration` (nats-server: at least 30s; default 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// `lame_duck_grace_period` (default 10s; must be below `duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
}

/// Service levels an operator states, as upper bounds on what the checks measure. Each applies to every
/// leaf unless the leaf states its own (`leaves[].expect`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// A leaf whose hub is killed is attached to another hub within this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_within: Option<Duration>,
    /// A leaf whose hub hangs (SIGSTOP) is attached to another hub within this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hung_failover_within: Option<Duration>,
    /// A leaf started while its first hub is down is attached within this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_within: Option<Duration>,
    /// A stream sourcing another across a leaf link holds everything within this of the link coming back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_within: Option<Duration>,
    /// A leaf cut off from its hubs is attached again within this of the heal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reattach_within: Option<Duration>,
    /// The hub's R3 stream takes writes again within this of its leader being killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_recovery_within: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Accounts and users in the server config, bcrypt-hashed passwords; leaves dial with a user and password.
    #[default]
    Password,
    /// As `password` for clients, but leaves authenticate with a client certificate mapped to their hub
    /// account (`leafnodes.tls.verify_and_map`). Needs `tls: true`.
    Mtls,
    /// The hub runs in operator mode: account and user JWTs, a full resolver; leaves dial with creds files.
    Operator,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// TLS with a generated CA on every client, route and leafnode port.
    #[serde(default)]
    pub tls: bool,
    /// Require a client certificate from every client connection (mTLS on client ports). Needs `tls: true`.
    #[serde(default)]
    pub verify_clients: bool,
    #[serde(default)]
    pub auth: AuthMode,
    /// bcrypt cost for rendered password hashes (4..=31). Low by default: labs connect often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcrypt_cost: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hub {
    /// The cluster name (`cluster.name`).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    pub nodes: Vec<HubNode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStream>,
    /// `leafnodes.no_advertise`: the hubs do not tell leaves about each other, so a leaf knows only the
    /// hubs its remote lists (a single-URL leaf then cannot fail over).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_advertise: bool,
    /// The hub's own accounts (for the hub's clients, e.g. a control plane). The first one is the
    /// default partner of every leaf's imports and exports.
    #[serde(default = "default_hub_accounts")]
    pub accounts: Vec<Account>,
    /// Streams created through the JetStream API once the lab is ready.
    #[serde(default)]
    pub streams: Vec<Stream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// Server-wide connection limits (the guide's "Connection limits" and "Rate limiting"), in the real option
/// names: top-level `max_payload`, `max_pending`, ... — the guide's `pending_size`, `connections` and per-remote
/// `write_deadline` do not exist (AUDIT §1b).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_control_line: Option<Size>,
    /// Largest message a client may publish. Must not exceed `max_pending` (nats-server fails at startup, `-t`
    /// does not notice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_deadline: Option<Duration>,
}

fn default_cluster() -> String {
    "hub".into()
}

fn default_hub_accounts() -> Vec<Account> {
    vec![Account { name: "HUB".into(), users: vec![], exports: vec![] }]
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubNode {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// This node's nats-server version, over the topology's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Leaf {
    pub name: String,
    /// This leaf's nats-server version, over the topology's (leaves often lag behind their hubs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Informational; becomes a server tag `region:<value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub remotes: Vec<Remote>,
    /// `leafnodes.reconnect_interval`: how long the leaf waits before dialing the next hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_interval: Option<Duration>,
    /// Server `ping_interval`: how fast a hung hub is noticed (with `ping_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_max: Option<u32>,
    /// Leaf link compression (`off`, `accept`, `s2_fast`, `s2_better`, `s2_best`, `s2_auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStream>,
    /// The leaf's local accounts. Without any, the leaf has one open account `LOCAL`.
    #[serde(default = "default_leaf_accounts")]
    pub accounts: Vec<Account>,
    #[serde(default)]
    pub streams: Vec<Stream>,
    /// This leaf's own service levels, instead of the topology's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

fn default_leaf_accounts() -> Vec<Account> {
    vec![Account { name: "LOCAL".into(), users: vec![], exports: vec![] }]
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Off,
    Accept,
    S2Fast,
    S2Better,
    S2Best,
    S2Auto,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Off => "off",
            Compression::Accept => "accept",
            Compression::S2Fast => "s2_fast",
            Compression::S2Better => "s2_better",
            Compression::S2Best => "s2_best",
            Compression::S2Auto => "s2_auto",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Hub nodes to dial, in order of preference. Several hubs = multi-hub failover.
    pub hubs: Vec<String>,
    /// The leaf-local account this link is bound to (default: the leaf's first account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The account the link lands in on the hub. Default `LEAF_<LEAF NAME>` (upper case, `-` → `_`),
    /// with `_<n>` for the n-th remote after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_account: Option<String>,
    /// The hub account this link trades subjects with (default: the hub's first account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Hub → leaf: subjects the leaf receives from the hub, optionally under a prefix.
    #[serde(default)]
    pub imports: Vec<Flow>,
    /// Leaf → hub: subjects the hub receives from the leaf, optionally under a prefix.
    #[serde(default)]
    pub exports: Vec<Flow>,
    /// The remote's `deny_imports`: subjects (as they cross the link, prefixes applied) the leaf never
    /// receives from the hub, whatever the accounts import.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_imports: Vec<String>,
    /// The remote's `deny_exports`: subjects the leaf never sends to the hub.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_exports: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub subject: String,
    /// Prepended (with a dot) on the receiving side: `commands.>` + `hub` → `hub.commands.>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    #[serde(default)]
    pub users: Vec<User>,
    /// Subjects this account offers to leaves (hub accounts only). A leaf's `imports` must be covered by
    /// its peer account's exports, as in NATS itself: no import without an export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user name. Passwords are generated per run and never written in the topology.
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Rule>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct JetStream {
    /// The JetStream domain (`jetstream.domain`). Leaves need their own to keep their streams apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_store: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_store: Option<Size>,
    /// `jetstream.sync_interval`: a duration, or `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<SyncInterval>,
    /// Encrypt the store at rest with a key generated per run (`cipher` + `key`: a cipher without a key is a
    /// silent no-op in nats-server, AUDIT §1b).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Cipher>,
}


#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cipher {
    Aes,
    Chachapoly,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Discard {
    Old,
    New,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    #[default]
    Limits,
    Interest,
    Workqueue,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// A JetStream stream, in the API's own field names (AUDIT §4b), with human units that the harness
/// converts (durations → ns, sizes → bytes).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub name: String,
    /// The account the stream lives in (default: the node's first account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_size: Option<Size>,
    /// What a stream at one of its limits does with a new message: `old` drops the oldest (the server's
    /// default), `new` refuses the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<Discard>,
    /// `num_replicas` in the API. Must not exceed the nodes that can hold it (1 on a leaf).
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_window: Option<Duration>,
    /// Server-side compression of stored messages (`s2`), the real form of the guide's `jetstream.compression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<StreamCompression>,
    /// `allow_msg_ttl`: messages may carry their own TTL (`Nats-TTL`). nats-server 2.11 and newer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_msg_ttl: bool,
    /// `allow_msg_counter`: a counter stream (`Nats-Incr`). nats-server 2.12 and newer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_msg_counter: bool,
    /// Other streams this one copies from, possibly in another JetStream domain (store-and-forward).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    /// A stream this one is a mirror of (same messages, same sequences); a mirror has no subjects or sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StreamCompression {
    None,
    S2,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    /// The JetStream domain the source stream lives in; becomes `external.api: $JS.<domain>.API`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
    /// Rewrites subjects while copying, e.g. `domain.>` → `leaf.cim-prod-001.domain.>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<SubjectTransform>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubjectTransform {
    pub src: String,
    pub dest: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    None,
    All,
    #[default]
    Explicit,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReplayPolicy {
    #[default]
    Instant,
    Original,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    #[default]
    All,
    Last,
    New,
    LastPerSubject,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// The durable name.
    pub name: String,
    /// Push consumers deliver here; without it the consumer is a pull consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
    #[serde(default)]
    pub ack_policy: AckPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<i64>,
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    #[serde(default)]
    pub replay_policy: ReplayPolicy,
    /// Bits per second, the real form of the guide's `rate_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_bps: Option<u64>,
}

impl Topology {
    pub fn hub_names(&self) -> impl Iterator<Item = &str> {
        self.hub.nodes.iter().map(|n| n.name.as_str())
    }

    pub fn leaf(&self, name: &str) -> Option<&Leaf> {
        self.leaves.iter().find(|l| l.name == name)
    }

    pub fn uses_jetstream(&self) -> bool {
        self.hub.jetstream.is_some() || self.leaves.iter().any(|l| l.jetstream.is_some())
    }
}

impl Leaf {
    /// Whether a stream of this leaf sources or mirrors a stream of another JetStream domain.
    pub fn copies_from_elsewhere(&self) -> bool {
        let own = self.jetstream.as_ref().and_then(|j| j.domain.as_deref());
        self.streams.iter().flat_map(|s| s.sources.iter().chain(s.mirror.iter())).any(|src| src.domain.is_some() && src.domain.as_deref() != own)
    }

    /// The local account a remote binds (explicit, or the leaf's first account).
    pub fn remote_account<'a>(&'a self, remote: &'a Remote) -> &'a str {
        remote.account.as_deref().unwrap_or(&self.accounts[0].name)
    }

    /// The account on the hub that the `index`-th remote lands in.
    pub fn hub_account(&self, index: usize) -> String {
        let remote = &self.remotes[index];
        if let Some(a) = &remote.hub_account {
            return a.clone();
        }
        let base = format!("LEAF_{}", self.name.to_uppercase().replace(['-', '.'], "_"));
        if index == 0 {
            base
        } else {
            format!("{base}_{index}")
        }
    }
}

impl Topology {
    /// The service levels that apply to a leaf: its own, else the topology's.
    pub fn expect_for(&self, leaf: Option<&Leaf>) -> Expect {
        leaf.and_then(|l| l.expect.clone()).or_else(|| self.expect.clone()).unwrap_or_default()
    }

    /// The JetStream domain streams of `node` live in (a leaf's own, or the hub's).
    pub fn domain_of<'a>(&'a self, leaf: Option<&'a Leaf>) -> Option<&'a str> {
        match leaf {
            Some(l) => l.jetstream.as_ref()?.domain.as_deref(),
            None => self.hub.jetstream.as_ref()?.domain.as_deref(),
        }
    }
}

impl Leaf {
    /// The one label of a leaf's remote: `cim-prod-001`, or `cim-prod-001#1` for its second remote.
    pub fn remote_label(&self, index: usize) -> String {
        if index == 0 {
            self.name.clone()
        } else {
            format!("{}#{index}", self.name)
        }
    }
}

impl Remote {
    pub fn peer_account<'a>(&'a self, hub: &'a Hub) -> &'a str {
        self.peer.as_deref().unwrap_or(&hub.accounts[0].name)
    }
}

impl Flow {
    /// The subject as the receiving side sees it.
    pub fn local_subject(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}.{}", self.subject),
            None => self.subject.clone(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
