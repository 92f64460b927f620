//! Semantic checks: what serde cannot see. Each problem names the key path and says how to fix it.
//! The server does not catch several of these (a consumer filter outside its stream, AUDIT §4b), and others
//! it catches only at startup, after a half-started lab.

use std::collections::{BTreeMap, BTreeSet};

use super::problem::Problem;
use super::model::*;
use super::subject;
use super::units::go_duration;

/// The prefix of the harness's own user in every account (`natslab-<ACCOUNT>`, see `plan::probe_user`).
const PROBE_PREFIX: &str = "natslab-";

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) {
        let hint = hint.into();
        self.problems.push(Problem {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
            hint: (!hint.is_empty()).then_some(hint),
        });
    }

    fn name(&mut self, path: &str, what: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if name == "lab" {
            self.err(path, format!("{what} name 'lab' is taken"), "the NixOS tests name the machine that runs natslab 'lab'; pick another name");
        }
        if !ok {
            self.err(
                path,
                format!("{what} name '{name}' is not usable as a host name"),
                "use lower-case letters, digits and '-' (e.g. 'hub-1', 'cim-prod-001'); names become host, file and context names",
            );
        }
    }

    fn account_name(&mut self, path: &str, name: &str) {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.err(path, format!("account name '{name}' is not valid"), "use letters, digits, '_' and '-'");
        } else if name == "SYS" || name == "$G" || name == "$SYS" {
            self.err(path, format!("account name '{name}' is reserved"), "the harness creates the system account itself; pick another name");
        }
    }

    fn subject(&mut self, path: &str, s: &str) {
        if let Some(why) = subject::invalid(s) {
            self.err(path, format!("'{s}' is not a valid subject: {why}"), "subjects are dot-separated tokens; '*' matches one token, '>' the rest");
        }
    }

    fn literal_prefix(&mut self, path: &str, p: &str) {
        if subject::invalid(p).is_some() || p.split('.').any(|t| t == "*" || t == ">") {
            self.err(path, format!("prefix '{p}' is not a literal subject"), "a prefix is literal tokens without wildcards, e.g. 'hub' or 'leaf.cim-prod-001'");
        }
    }

    fn permissions(&mut self, path: &str, p: &Permissions) {
        for (dir, rule) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
            let Some(rule) = rule else { continue };
            for (kind, list) in [("allow", &rule.allow), ("deny", &rule.deny)] {
                for (i, s) in list.iter().enumerate() {
                    self.subject(&format!("{path}.{dir}.{kind}[{i}]"), s);
                }
            }
        }
    }

    fn accounts(&mut self, path: &str, accounts: &[Account], hub: bool) {
        if accounts.is_empty() {
            self.err(path, "no accounts are declared", "declare at least one account, or remove the key to get the default one");
        }
        let mut names = BTreeSet::new();
        // User names are global in one server, across its accounts (nats-server: `Duplicate user "x" detected`).
        let mut server_users: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, a) in accounts.iter().enumerate() {
            let ap = format!("{path}[{i}]");
            self.account_name(&format!("{ap}.name"), &a.name);
            if !names.insert(a.name.as_str()) {
                self.err(format!("{ap}.name"), format!("account '{}' is declared twice", a.name), "give each account a unique name");
            }
            let mut users = BTreeSet::new();
            for (j, u) in a.users.iter().enumerate() {
                let up = format!("{ap}.users[{j}]");
                if u.user.is_empty() || u.user.contains(char::is_whitespace) {
                    self.err(format!("{up}.user"), format!("user name '{}' is not valid", u.user), "use a name without white space");
                }
                if u.user.starts_with(PROBE_PREFIX) {
                    self.err(
                        format!("{up}.user"),
                        format!("user name '{}' uses the reserved prefix '{PROBE_PREFIX}'", u.user),
                        format!("the harness names its own user of each account '{PROBE_PREFIX}<ACCOUNT>'; pick another name"),
                    );
                }
                if !users.insert(u.user.as_str()) {
                    self.err(format!("{up}.user"), format!("user '{}' is declared twice in account '{}'", u.user, a.name), "give each user a unique name");
                } else if let Some(prev) = server_users.insert(u.user.as_str(), a.name.as_str()) {
                    self.err(
                        format!("{up}.user"),
                        format!("user '{}' is already declared in account '{prev}' on the same server", u.user),
                        format!("user names are global in a server (nats-server: Duplicate user \"{}\" detected); rename one", u.user),
                    );
                }
                if let Some(p) = &u.permissions {
                    self.permissions(&format!("{up}.permissions"), p);
                }
            }
            if !hub && !a.exports.is_empty() {
                self.err(format!("{ap}.exports"), "a leaf account declares exports", "leaf-to-hub subjects are declared on the remote: remotes[].exports");
            }
            for (j, s) in a.exports.iter().enumerate() {
                self.subject(&format!("{ap}.exports[{j}]"), s);
            }
        }
    }

    fn jetstream(&mut self, path: &str, js: &JetStream) {
        if let Some(d) = &js.domain {
            if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                self.err(format!("{path}.domain"), format!("domain '{d}' is not valid"), "a domain is one subject token: letters, digits, '-' and '_'");
            }
        }
        for (k, v) in [("max_memory_store", js.max_memory_store), ("max_file_store", js.max_file_store)] {
            if let Some(v) = v {
                if v.0 < 1 << 20 {
                    self.err(format!("{path}.{k}"), format!("{k} is {} bytes, too small to hold a stream", v.0), "give at least 1MiB, e.g. '256M'");
                }
            }
        }
    }

    /// A source or mirror of stream `s` (in account `acc`), at `path`.
    fn source(&mut self, path: &str, s: &Stream, src: &Source, acc: &str, domains: &BTreeSet<String>, leaf_domains: &BTreeMap<String, (String, Vec<String>)>) {
        if let Some(d) = &src.domain {
            if !domains.contains(d) {
                self.err(format!("{path}.domain"), format!("no node has JetStream domain '{d}'"), format!("use one of: {}", domains.iter().cloned().collect::<Vec<_>>().join(", ")));
            } else if let Some((leaf, links)) = leaf_domains.get(d) {
                // `$JS.<leaf domain>.API` crosses the leaf link only inside the account the link lands in.
                if !links.iter().any(|a| a == acc) {
                    self.err(
                        format!("{path}.domain"),
                        format!("stream '{}' lives in account '{acc}', but leaf '{leaf}' (domain '{d}') is reachable only from {}: it would never copy anything", s.name, links.join(", ")),
                        format!("set account: {} on this stream", links[0]),
                    );
                }
            }
        }
        if let Some(f) = &src.filter_subject {
            self.subject(&format!("{path}.filter_subject"), f);
        }
        if let Some(t) = &src.subject_transform {
            self.subject(&format!("{path}.subject_transform.src"), &t.src);
            self.subject(&format!("{path}.subject_transform.dest"), &t.dest);
        }
    }

    /// `leaf_domains` (hub streams only): each leaf JetStream domain → (leaf, the hub accounts its links land in).
    #[allow(clippy::too_many_arguments)]
    fn streams(
        &mut self,
        path: &str,
        streams: &[Stream],
        accounts: &[&str],
        max_replicas: usize,
        has_js: bool,
        domains: &BTreeSet<String>,
        leaf_domains: &BTreeMap<String, (String, Vec<String>)>,
        names: &mut BTreeSet<String>,
    ) {
        if !streams.is_empty() && !has_js {
            self.err(path, "streams are declared but JetStream is off here", "add a 'jetstream:' section next to 'streams:'");
        }
        for (i, s) in streams.iter().enumerate() {
            let sp = format!("{path}[{i}]");
            if s.name.is_empty() || s.name.contains(['.', '*', '>', ' ', '/', '\\']) {
                self.err(format!("{sp}.name"), format!("stream name '{}' is not valid", s.name), "stream names cannot contain '.', '*', '>', '/', '\\' or spaces");
            }
            // No accounts at all is reported by `accounts()`; do not index an empty list.
            let acc = s.account.as_deref().or(accounts.first().copied()).unwrap_or_default();
            if !names.insert(format!("{acc}/{}", s.name)) {
                self.err(format!("{sp}.name"), format!("stream '{}' is declared twice in account '{acc}'", s.name), "give each stream a unique name");
            }
            if let Some(a) = &s.account {
                if !accounts.contains(&a.as_str()) {
                    self.err(format!("{sp}.account"), format!("stream account '{a}' does not exist here"), format!("use one of: {}", accounts.join(", ")));
                }
            }
            if let Some(m) = &s.mirror {
                if !s.subjects.is_empty() || !s.sources.is_empty() {
                    self.err(format!("{sp}.mirror"), format!("stream '{}' is a mirror and also has subjects or sources", s.name), "a mirror copies one stream as it is: drop its subjects and sources");
                }
                self.source(&format!("{sp}.mirror"), s, m, acc, domains, leaf_domains);
            } else if s.subjects.is_empty() && s.sources.is_empty() {
                self.err(format!("{sp}.subjects"), format!("stream '{}' has no subjects and no sources", s.name), "list the subjects it stores, e.g. subjects: ['events.>']");
            }
            for (j, subj) in s.subjects.iter().enumerate() {
                self.subject(&format!("{sp}.subjects[{j}]"), subj);
            }
            if s.replicas == 0 {
                self.err(format!("{sp}.replicas"), format!("stream '{}' asks for 0 replicas", s.name), format!("use 1..={max_replicas}"));
            } else if s.replicas as usize > max_replicas {
                let hint = if path.starts_with("leaves") {
                    "a leaf is one server: use replicas: 1 (for a redundant copy, declare a hub stream whose 'sources' name this stream and its domain)".to_string()
                } else {
                    format!("use 1..={max_replicas}, or add hub nodes")
                };
                self.err(
                    format!("{sp}.replicas"),
                    format!("stream '{}' asks for {} replicas but only {max_replicas} server(s) can hold it", s.name, s.replicas),
                    hint,
                );
            }
            if s.retention == Retention::Interest && s.consumers.is_empty() {
                // Legal, but every message would vanish at once: flag the likely mistake.
                self.err(format!("{sp}.retention"), format!("stream '{}' has interest retention and no consumers: it keeps nothing", s.name), "declare its consumers, or use retention: limits");
            }
            for (j, src) in s.sources.iter().enumerate() {
                self.source(&format!("{sp}.sources[{j}]"), s, src, acc, domains, leaf_domains);
            }
            let mut consumers = BTreeSet::new();
            for (j, c) in s.consumers.iter().enumerate() {
                let cp = format!("{sp}.consumers[{j}]");
                if !consumers.insert(c.name.as_str()) {
                    self.err(format!("{cp}.name"), format!("consumer '{}' is declared twice on stream '{}'", c.name, s.name), "give each consumer a unique name");
                }
                if c.name.is_empty() || c.name.contains(['.', '*', '>', ' ']) {
                    self.err(format!("{cp}.name"), format!("consumer name '{}' is not valid", c.name), "consumer names cannot contain '.', '*', '>' or spaces");
                }
                if let Some(f) = &c.filter_subject {
                    self.subject(&format!("{cp}.filter_subject"), f);
                    let own: Vec<String> = if s.subjects.is_empty() { vec![">".into()] } else { s.subjects.clone() };
                    if subject::invalid(f).is_none() && !own.iter().any(|ss| subject::overlap(ss, f)) {
                        self.err(
                            format!("{cp}.filter_subject"),
                            format!("filter '{f}' matches none of stream '{}' subjects ({}): the consumer would never get a message (nats-server accepts it silently)", s.name, own.join(", ")),
                            "use a filter inside the stream's subjects",
                        );
                    }
                }
                if let Some(d) = &c.deliver_subject {
                    self.subject(&format!("{cp}.deliver_subject"), d);
                    if d.contains(['*', '>']) {
                        self.err(format!("{cp}.deliver_subject"), "a deliver subject cannot have wildcards", "use a literal subject, e.g. 'process.graph'");
                    }
                }
                if let Some(m) = c.max_deliver {
                    if m == 0 || m < -1 {
                        self.err(format!("{cp}.max_deliver"), format!("max_deliver {m} is not valid"), "use a positive number, or -1 for unlimited");
                    }
                }
                if c.ack_policy == AckPolicy::None && c.max_deliver.is_some_and(|m| m > 1) {
                    self.err(format!("{cp}.max_deliver"), "max_deliver has no effect with ack_policy: none", "use ack_policy: explicit, or drop max_deliver");
                }
                if c.rate_limit_bps.is_some() && c.deliver_subject.is_none() {
                    self.err(format!("{cp}.rate_limit_bps"), "rate_limit_bps applies to push consumers only", "add a deliver_subject, or drop the rate limit");
                }
            }
        }
    }
}

fn check_limits(c: &mut Checker, path: &str, l: Option<&Limits>) {
    let Some(l) = l else { return };
    if let (Some(p), Some(q)) = (l.max_payload, l.max_pending) {
        if p.0 > q.0 {
            c.err(
                format!("{path}.max_payload"),
                format!("max_payload ({}) is larger than max_pending ({}): nats-server refuses to start (and `-t` does not notice)", p.0, q.0),
                "lower max_payload or raise max_pending",
            );
        }
    }
    if l.max_payload.is_some_and(|p| p.0 > 64 << 20) {
        c.err(format!("{path}.max_payload"), "max_payload is above 64MiB, the server's hard limit", "use at most 64MiB (8MiB is the advised maximum)");
    }
}

pub fn validate(t: &Topology) -> Vec<Problem> {
    let mut c = Checker { problems: vec![] };
    check_limits(&mut c, "hub.limits", t.hub.limits.as_ref());
    for (i, l) in t.leaves.iter().enumerate() {
        check_limits(&mut c, &format!("leaves[{i}].limits"), l.limits.as_ref());
    }
    if t.name.is_empty() || !t.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
        c.err("name", format!("topology name '{}' is not valid", t.name), "use letters, digits, '-' and '_'");
    }
    let sec = &t.security;
    if sec.auth == AuthMode::Mtls && !sec.tls {
        c.err("security.auth", "auth 'mtls' needs TLS", "set security.tls: true");
    }
    if sec.verify_clients && !sec.tls {
        c.err("security.verify_clients", "verify_clients needs TLS", "set security.tls: true");
    }
    if let Some(cost) = sec.bcrypt_cost {
        if !(4..=31).contains(&cost) {
            c.err("security.bcrypt_cost", format!("bcrypt cost {cost} is out of range"), "use 4..=31 (each step doubles the time a login takes)");
        }
    }

    check_versions(&mut c, t);
    check_changes(&mut c, t);
    if let Some(ld) = &t.lame_duck {
        let d = ld.duration.as_ref().map(|d| d.get()).unwrap_or(std::time::Duration::from_secs(120));
        if d < std::time::Duration::from_secs(30) {
            c.err("lame_duck.duration", format!("lame_duck_duration {} is below nats-server's minimum", go_duration(d)), "use 30s or more");
        }
        if let Some(g) = &ld.grace_period {
            if g.get() >= d || g.get().is_zero() {
                c.err("lame_duck.grace_period", format!("grace period {g} must be above zero and below the duration ({})", go_duration(d)), "e.g. grace_period: 1s");
            }
        }
    }

    // Node names are global: they are host names, directory names and context prefixes.
    let mut nodes: BTreeMap<&str, String> = BTreeMap::new();
    if t.hub.nodes.is_empty() {
        c.err("hub.nodes", "the hub has no nodes", "declare at least one, e.g. nodes: [{name: hub-1}]");
    }
    if t.hub.cluster.is_empty() || t.hub.cluster.contains(char::is_whitespace) {
        c.err("hub.cluster", format!("cluster name '{}' is not valid", t.hub.cluster), "use a name without spaces, e.g. 'cim-hub'");
    }
    for (i, n) in t.hub.nodes.iter().enumerate() {
        let p = format!("hub.nodes[{i}].name");
        c.name(&p, "node", &n.name);
        if let Some(prev) = nodes.insert(&n.name, p.clone()) {
            c.err(p, format!("node name '{}' is used twice (first at {prev})", n.name), "every hub and leaf needs its own name");
        }
    }
    for (i, l) in t.leaves.iter().enumerate() {
        let p = format!("leaves[{i}].name");
        c.name(&p, "leaf", &l.name);
        if let Some(prev) = nodes.insert(&l.name, p.clone()) {
            c.err(p, format!("node name '{}' is used twice (first at {prev})", l.name), "every hub and leaf needs its own name");
        }
    }

    c.accounts("hub.accounts", &t.hub.accounts, true);
    let hub_accounts: Vec<&str> = t.hub.accounts.iter().map(|a| a.name.as_str()).collect();
    let mut domains = BTreeSet::new();
    if let Some(js) = &t.hub.jetstream {
        c.jetstream("hub.jetstream", js);
        domains.insert(js.domain.clone().unwrap_or_default());
    }

    // Every account the hub will hold: its own plus one per leaf remote.
    let mut all_hub_accounts: BTreeMap<String, String> = hub_accounts.iter().map(|a| (a.to_string(), "hub.accounts".to_string())).collect();
    for (i, l) in t.leaves.iter().enumerate() {
        let lp = format!("leaves[{i}]");
        if l.remotes.is_empty() {
            c.err(format!("{lp}.remotes"), format!("leaf '{}' has no remote: it would never join the hub", l.name), "add remotes: [{hubs: [hub-1, hub-2, hub-3]}]");
        }
        c.accounts(&format!("{lp}.accounts"), &l.accounts, false);
        let leaf_accounts: Vec<&str> = l.accounts.iter().map(|a| a.name.as_str()).collect();
        let mut bound = BTreeSet::new();
        for (r, remote) in l.remotes.iter().enumerate() {
            let rp = format!("{lp}.remotes[{r}]");
            if remote.hubs.is_empty() {
                c.err(format!("{rp}.hubs"), "the remote lists no hubs", "list one or more hub nodes, e.g. hubs: [hub-1, hub-2, hub-3]");
            }
            let mut seen = BTreeSet::new();
            for (h, hub) in remote.hubs.iter().enumerate() {
                if !t.hub.nodes.iter().any(|n| &n.name == hub) {
                    let names: Vec<&str> = t.hub_names().collect();
                    let near = names.iter().map(|n| (strsim::jaro_winkler(hub, n), *n)).max_by(|a, b| a.0.total_cmp(&b.0));
                    let hint = match near {
                        Some((score, n)) if score > 0.8 => format!("did you mean '{n}'? hubs are: {}", names.join(", ")),
                        _ => format!("hubs are: {}", names.join(", ")),
                    };
                    c.err(format!("{rp}.hubs[{h}]"), format!("remote names unknown hub '{hub}'"), hint);
                } else if !seen.insert(hub) {
                    c.err(format!("{rp}.hubs[{h}]"), format!("hub '{hub}' is listed twice"), "list each hub once");
                }
            }
            // With `accounts: []` (reported above) the default local account does not exist.
            let local = remote.account.as_deref().or(l.accounts.first().map(|a| a.name.as_str())).unwrap_or_default();
            if local.is_empty() {
                // `accounts: []` is already reported.
            } else if !leaf_accounts.contains(&local) {
                c.err(format!("{rp}.account"), format!("remote binds account '{local}', which the leaf does not declare (nats-server fails at startup: 'cannot find local account')"), format!("use one of: {}", leaf_accounts.join(", ")));
            } else if !bound.insert(local) {
                c.err(format!("{rp}.account"), format!("two remotes bind local account '{local}'"), "each remote needs its own local account, or the hub sees a loop");
            }
            let link_user = if r == 0 { format!("leaf-{}", l.name) } else { format!("leaf-{}-{r}", l.name) };
            for (ai, a) in t.hub.accounts.iter().enumerate() {
                if let Some(ui) = a.users.iter().position(|u| u.user == link_user) {
                    c.err(
                        format!("hub.accounts[{ai}].users[{ui}].user"),
                        format!("user '{link_user}' is the name the harness gives the hub user of {rp}"),
                        "user names are global in the hub servers; pick another name",
                    );
                }
            }
            let ha = l.hub_account(r);
            c.account_name(&format!("{rp}.hub_account"), &ha);
            if let Some(prev) = all_hub_accounts.insert(ha.clone(), rp.clone()) {
                c.err(format!("{rp}.hub_account"), format!("hub account '{ha}' is already used by {prev}"), "each leaf remote lands in its own hub account; set hub_account to a unique name");
            }
            let peer = remote.peer.as_deref().or(t.hub.accounts.first().map(|a| a.name.as_str())).unwrap_or_default();
            let peer_acc = t.hub.accounts.iter().find(|a| a.name == peer);
            if peer_acc.is_none() && !peer.is_empty() {
                c.err(format!("{rp}.peer"), format!("peer account '{peer}' is not a hub account"), format!("use one of: {}", hub_accounts.join(", ")));
            }
            for (k, f) in remote.imports.iter().enumerate() {
                let fp = format!("{rp}.imports[{k}]");
                c.subject(&format!("{fp}.subject"), &f.subject);
                if let Some(p) = &f.prefix {
                    c.literal_prefix(&format!("{fp}.prefix"), p);
                }
                if let Some(acc) = peer_acc {
                    if subject::invalid(&f.subject).is_none() && !acc.exports.iter().any(|e| subject::covers(e, &f.subject)) {
                        c.err(
                            format!("{fp}.subject"),
                            format!("leaf imports '{}' but hub account '{}' exports nothing that covers it", f.subject, acc.name),
                            format!("add '{}' to the exports of hub account '{}' (hub.accounts[].exports)", f.subject, acc.name),
                        );
                    }
                }
            }
            for (k, f) in remote.exports.iter().enumerate() {
                let fp = format!("{rp}.exports[{k}]");
                c.subject(&format!("{fp}.subject"), &f.subject);
                if let Some(p) = &f.prefix {
                    c.literal_prefix(&format!("{fp}.prefix"), p);
                }
            }
            for (key, list) in [("deny_imports", &remote.deny_imports), ("deny_exports", &remote.deny_exports)] {
                for (k, s) in list.iter().enumerate() {
                    c.subject(&format!("{rp}.{key}[{k}]"), s);
                }
            }
        }
        if let Some(js) = &l.jetstream {
            c.jetstream(&format!("{lp}.jetstream"), js);
            match &js.domain {
                None if t.hub.jetstream.is_some() => c.err(
                    format!("{lp}.jetstream.domain"),
                    format!("leaf '{}' runs JetStream without a domain while the hub runs JetStream", l.name),
                    "give the leaf its own domain (e.g. its name): without one it would try to join the hub's JetStream cluster",
                ),
                Some(d) if !domains.insert(d.clone()) => c.err(
                    format!("{lp}.jetstream.domain"),
                    format!("JetStream domain '{d}' is used twice"),
                    "each leaf and the hub need distinct domains",
                ),
                _ => {}
            }
        }
        if l.reconnect_interval.as_ref().is_some_and(|d| d.get().is_zero()) {
            c.err(format!("{lp}.reconnect_interval"), "reconnect_interval is zero", "use a positive duration, e.g. '100ms'");
        }
        if l.ping_interval.as_ref().is_some_and(|d| d.get() < std::time::Duration::from_millis(100)) {
            c.err(format!("{lp}.ping_interval"), "ping_interval is below 100ms", "use e.g. '1s'");
        }
    }

    let mut stream_names = BTreeSet::new();
    let hub_stream_accounts: Vec<&str> = all_hub_accounts.keys().map(String::as_str).collect();
    let leaf_domains: BTreeMap<String, (String, Vec<String>)> = t
        .leaves
        .iter()
        .filter_map(|l| {
            let d = l.jetstream.as_ref()?.domain.clone()?;
            Some((d, (l.name.clone(), (0..l.remotes.len()).map(|r| l.hub_account(r)).collect::<Vec<_>>())))
        })
        .filter(|(_, (_, links))| !links.is_empty())
        .collect();
    c.streams("hub.streams", &t.hub.streams, &hub_stream_accounts_first(&hub_accounts, &hub_stream_accounts), t.hub.nodes.len().max(1), t.hub.jetstream.is_some(), &domains, &leaf_domains, &mut stream_names);
    for (i, l) in t.leaves.iter().enumerate() {
        let accs: Vec<&str> = l.accounts.iter().map(|a| a.name.as_str()).collect();
        let mut names = BTreeSet::new();
        c.streams(&format!("leaves[{i}].streams"), &l.streams, &accs, 1, l.jetstream.is_some(), &domains, &BTreeMap::new(), &mut names);
        leaf_streams_from_the_hub(&mut c, t, i, l);
    }
    import_cycles(&mut c, t);
    c.problems
}

/// A leaf stream that sources or mirrors a hub stream reaches the hub's JetStream API through its remote,
/// which lands in one hub account: the hub stream must live there.
fn leaf_streams_from_the_hub(c: &mut Checker, t: &Topology, i: usize, l: &Leaf) {
    let Some(hub_domain) = t.hub.jetstream.as_ref().and_then(|j| j.domain.clone()) else { return };
    for (j, s) in l.streams.iter().enumerate() {
        let Some(acc) = s.account.clone().or_else(|| l.accounts.first().map(|a| a.name.clone())) else { continue };
        let links: Vec<String> = l.remotes.iter().enumerate().filter(|(_, r)| l.remote_account(r) == acc).map(|(r, _)| l.hub_account(r)).collect();
        let froms = s.sources.iter().enumerate().map(|(k, src)| (format!("sources[{k}]"), src)).chain(s.mirror.iter().map(|m| ("mirror".to_string(), m)));
        for (key, src) in froms {
            if src.domain.as_deref() != Some(hub_domain.as_str()) {
                continue;
            }
            let found = t.hub.streams.iter().find(|h| h.name == src.name);
            let in_link = found.is_some_and(|h| links.iter().any(|a| Some(a.as_str()) == h.account.as_deref()));
            if !in_link {
                c.err(
                    format!("leaves[{i}].streams[{j}].{key}.name"),
                    format!(
                        "leaf stream '{}' copies hub stream '{}', which is not declared in a hub account this leaf's remotes land in ({})",
                        s.name,
                        src.name,
                        if links.is_empty() { "none binds account ".to_string() + &acc } else { links.join(", ") }
                    ),
                    match links.first() {
                        Some(a) => format!("declare hub stream '{}' with account: {a}", src.name),
                        None => "bind a remote to the stream's account".to_string(),
                    },
                );
            }
        }
    }
}

/// Stream imports that carry a subject back into an account it already flowed through, where it would
/// flow again (nats-server refuses such configs at startup: "import forms a cycle"; `-t` reports it only
/// as an error on a config line). Followed as a message would go: from an account, along every import of
/// what it exports, prefixes applied.
fn import_cycles(c: &mut Checker, t: &Topology) {
    /// One stream import: `into` imports `subject` from `from`, seen there as `local`.
    struct Import {
        into: String,
        from: String,
        subject: String,
        prefix: Option<String>,
        path: String,
    }
    if t.hub.accounts.is_empty() {
        return; // reported already
    }
    let mut imports = Vec::new();
    for (i, l) in t.leaves.iter().enumerate() {
        for (r, remote) in l.remotes.iter().enumerate() {
            let link = l.hub_account(r);
            let peer = remote.peer_account(&t.hub).to_string();
            for (k, f) in remote.imports.iter().enumerate() {
                imports.push(Import { into: link.clone(), from: peer.clone(), subject: f.subject.clone(), prefix: f.prefix.clone(), path: format!("leaves[{i}].remotes[{r}].imports[{k}]") });
            }
            for (k, f) in remote.exports.iter().enumerate() {
                imports.push(Import { into: peer.clone(), from: link.clone(), subject: f.subject.clone(), prefix: f.prefix.clone(), path: format!("leaves[{i}].remotes[{r}].exports[{k}]") });
            }
        }
    }
    if imports.iter().any(|i| subject::invalid(&i.subject).is_some()) {
        return; // reported as invalid subjects already
    }
    /// Where a message on `subject` in account `at` goes next: (account, subject there, the import).
    fn next<'a>(imports: &'a [Import], at: &str, subject: &str) -> Vec<(&'a Import, String)> {
        imports
            .iter()
            .filter(|im| im.from == at)
            .filter_map(|im| {
                let met = subject::meet(&im.subject, subject)?;
                Some((im, match &im.prefix {
                    Some(p) => format!("{p}.{met}"),
                    None => met,
                }))
            })
            .collect()
    }
    fn around(imports: &[Import], at: &str, subject: &str, seen: &mut Vec<(String, String)>, route: &mut Vec<String>) -> bool {
        if seen.len() > 8 {
            return false;
        }
        for (im, there) in next(imports, at, subject) {
            route.push(format!("{} imports '{}' from {}", im.into, im.subject, im.from));
            if seen.iter().any(|(a, s)| *a == im.into && subject::overlap(s, &there)) {
                return true;
            }
            seen.push((im.into.clone(), there.clone()));
            if around(imports, &im.into, &there, seen, route) {
                return true;
            }
            seen.pop();
            route.pop();
        }
        false
    }
    let mut reported = BTreeSet::new();
    for im in &imports {
        let mut seen = vec![(im.from.clone(), im.subject.clone())];
        let mut route = Vec::new();
        if around(&imports, &im.from, &im.subject, &mut seen, &mut route) && route.first().is_some_and(|r| r.starts_with(&im.into)) {
            let key: BTreeSet<&str> = route.iter().map(String::as_str).collect();
            if reported.insert(key.into_iter().collect::<Vec<_>>().join("|")) {
                c.err(
                    format!("{}.subject", im.path),
                    format!("stream imports form a cycle: {} — nats-server refuses to start ('import forms a cycle')", route.join(", then ")),
                    "a subject must not flow back into an account it came from: give one direction a prefix the other does not export, or drop the import or the export",
                );
            }
        }
    }
}

/// Hub streams default to the first declared hub account but may live in any hub-side account.
fn hub_stream_accounts_first<'a>(declared: &[&'a str], all: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = declared.to_vec();
    v.extend(all.iter().filter(|a| !declared.contains(a)));
    v
}

/// Each change names a place that exists and changes exactly one kind of thing.
fn check_changes(c: &mut Checker, t: &Topology) {
    let mut names = std::collections::BTreeSet::new();
    for (i, ch) in t.changes.iter().enumerate() {
        let at = format!("changes[{i}]");
        if ch.name.is_empty() || !ch.name.chars().all(|x| x.is_ascii_alphanumeric() || x == '-' || x == '_') {
            c.err(format!("{at}.name"), format!("change name '{}' is not valid", ch.name), "use letters, digits, '-' and '_' (it is part of check ids)");
        } else if !names.insert(ch.name.as_str()) {
            c.err(format!("{at}.name"), format!("two changes are called '{}'", ch.name), "give each change its own name");
        }
        let leaf = match &ch.leaf {
            Some(l) => match t.leaf(l) {
                Some(x) => Some(x),
                None => {
                    let known: Vec<&str> = t.leaves.iter().map(|x| x.name.as_str()).collect();
                    c.err(format!("{at}.leaf"), format!("no leaf '{l}'"), format!("one of {}", known.join(", ")));
                    continue;
                }
            },
            None => None,
        };
        let flows = ch.imports.is_some() || ch.exports.is_some();
        match (&ch.user, flows) {
            (Some(_), true) => c.err(at.clone(), "a change is either a user's permissions or a link's flows, not both", "split it into two changes"),
            (None, false) => c.err(at.clone(), "the change changes nothing", "give `user` and `permissions`, or `imports` / `exports` of a leaf's remote"),
            (Some(u), false) => {
                let accounts = leaf.map_or(&t.hub.accounts, |l| &l.accounts);
                if !accounts.iter().any(|a| a.users.iter().any(|x| &x.user == u)) {
                    let place = ch.leaf.as_deref().unwrap_or("the hub");
                    c.err(format!("{at}.user"), format!("{place} declares no user '{u}'"), "name a user of that place's accounts");
                }
                if ch.remote.is_some() {
                    c.err(format!("{at}.remote"), "`remote` belongs to a flow change", "drop it, or change imports / exports instead");
                }
            }
            (None, true) => {
                let Some(l) = leaf else {
                    c.err(format!("{at}.leaf"), "a flow change needs the leaf whose remote it changes", "add leaf: <name>");
                    continue;
                };
                let r = ch.remote.unwrap_or(0);
                if r >= l.remotes.len() {
                    c.err(format!("{at}.remote"), format!("{} has {} remote(s)", l.name, l.remotes.len()), format!("use 0..{}", l.remotes.len()));
                }
                if ch.permissions.is_some() {
                    c.err(format!("{at}.permissions"), "`permissions` belongs to a user change", "add `user`, or drop it");
                }
            }
        }
    }
    // The state after each change must itself be a valid topology.
    for (i, ch) in t.changes.iter().enumerate() {
        if c.problems.iter().any(|p| p.path.starts_with("changes")) {
            break;
        }
        let mut after = ch.apply(t);
        after.changes.clear();
        for p in validate(&after) {
            c.err(format!("changes[{i}]"), format!("after this change: {} ({})", p.message, p.path), p.hint.clone().unwrap_or_default());
        }
    }
}

/// Declared versions are versions, and every node's declared version has every option the node uses.
fn check_versions(c: &mut Checker, t: &Topology) {
    use super::versions::{declared_version, incompatibilities, missing, Version};
    for i in incompatibilities(t, &super::versions::declared(t)) {
        c.err(i.path, i.message, i.fix);
    }
    let mut keys: Vec<(String, &str)> = t.server_version.iter().map(|v| ("server_version".to_string(), v.as_str())).collect();
    keys.extend(t.hub.nodes.iter().enumerate().filter_map(|(i, n)| Some((format!("hub.nodes[{i}].server_version"), n.server_version.as_deref()?))));
    keys.extend(t.leaves.iter().enumerate().filter_map(|(i, l)| Some((format!("leaves[{i}].server_version"), l.server_version.as_deref()?))));
    for (path, v) in &keys {
        if let Err(e) = v.parse::<Version>() {
            c.err(path.clone(), e, "`natslab versions` lists the versions that can be had");
        }
    }
    let nodes = t.hub.nodes.iter().map(|n| n.name.as_str()).chain(t.leaves.iter().map(|l| l.name.as_str()));
    for node in nodes {
        let Some((v, at)) = declared_version(t, node) else { continue };
        let Ok(version) = v.parse::<Version>() else { continue };
        for f in missing(t, node, version) {
            c.err(
                f.path.clone(),
                format!("{} ({at})", f.lacked_by(node, version)),
                format!("raise {at} to {} or newer, or drop the option", f.since),
            );
        }
    }
}
