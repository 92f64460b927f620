//! The mutation corpus: real operator mistakes planted in real labs, each of which a named check must report
//! as violated. A mistake is planted in one of three ways: in a node's rendered settings before it starts
//! (`UpOptions::patch`: what a hand-edited config does), in the running lab through its own APIs (what
//! someone with credentials does), or by rendering something other than what was declared. The checks
//! always derive from the declaration, so they see what the lab really is.
//!
//! Each mutation runs only the checks that should catch it (`Recorder::only`), so the corpus stays cheap
//! enough for every CI run. That the same checks pass on the unmutated lab is `acceptance.rs`'s job (every
//! topology, every family, green). Mistakes the harness cannot catch yet are listed in `BLIND_SPOTS` and in
//! the README, with why.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use common::*;
use natslab::lab::{Lab, Patch, Quiet, UpOptions};
use natslab::probe::js;
use natslab::scenario::{self, Ctx, Family, Recorder, Silent, Verdict};
use natslab::topology::Topology;
use serde_json::{json, Value};

type Live = for<'l> fn(&'l Lab) -> Pin<Box<dyn Future<Output = ()> + Send + 'l>>;

/// How the mistake gets into the lab.
enum Plant {
    /// Edit a node's rendered settings: `(node, settings)`.
    Settings(fn(&str, &mut Value)),
    /// Change the running lab through its APIs.
    Live(Live),
    /// Render this instead of the declaration.
    Rendered(fn(&mut Topology)),
}

struct Mutation {
    /// The mistake, as an operator would describe it.
    what: &'static str,
    topology: &'static str,
    plant: Plant,
    families: &'static [Family],
    /// The checks that must report it, by id; only these (and what shares their prefix) run.
    caught_by: &'static [&'static str],
}

/// Mistakes no check catches yet, and why. The README lists them too.
pub const BLIND_SPOTS: &[(&str, &str)] = &[
    (
        "an extra user added to an account",
        "no monitoring endpoint lists an account's users, and a probe cannot guess a name and password it was never given",
    ),
    (
        "a declared user's permissions widened, where the user may not ask $SYS.REQ.USER.INFO and no probe subject falls in the widening",
        "the server tells a user its permissions only on that request; the security family probes the edges of each rule, not every subject",
    ),
    (
        "no_advertise set on the hubs where the topology does not declare it",
        "/varz does not report it; only the single-URL failover check (a fault check, not in the corpus) notices the leaf cannot move",
    ),
];

/// A planted `jetstream.store_dir` placeholder: the test's own directory.
const STORE_IN_RUN: &str = "@run";

async fn plant_and_check(m: &Mutation) {
    let declared = load(m.topology);
    let mut rendered = declared.clone();
    let root = tempfile::tempdir().unwrap();
    let mut opts = UpOptions { runs_root: Some(root.path().to_path_buf()), ..UpOptions::default() };
    match &m.plant {
        Plant::Settings(f) => {
            let f = *f;
            let store = root.path().join("planted-store");
            opts.patch = Some(Patch(Arc::new(move |node: &str, s: &mut Value| {
                f(node, s);
                // A planted JetStream keeps its files in the test's own directory, which goes with it.
                if s.pointer("/jetstream/store_dir") == Some(&json!(STORE_IN_RUN)) {
                    s["jetstream"]["store_dir"] = json!(store.join(node));
                }
            })));
        }
        Plant::Rendered(f) => f(&mut rendered),
        Plant::Live(_) => {}
    }
    let mut lab = Lab::up(rendered, &opts, &Quiet).await.unwrap_or_else(|e| panic!("{}: the mutated lab did not come up: {e}", m.what));
    if let Plant::Live(f) = &m.plant {
        f(&lab).await;
    }
    let mut rec = Recorder::new(&Silent).only(m.caught_by.iter().map(|s| s.to_string()).collect());
    let mut ctx = Ctx { lab: &mut lab, declared: &declared, rec: &mut rec };
    scenario::run(&mut ctx, m.families).await;
    lab.shutdown().await;
    for c in &rec.checks {
        eprintln!("  {:?} {} — {}", c.verdict, c.id, c.observed);
    }
    for id in m.caught_by {
        let c = check(&rec.checks, id);
        assert_eq!(c.verdict, Verdict::Violated, "{}: {id} should report it, but said {:?}: {}", m.what, c.verdict, c.observed);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers for planting

fn account<'a>(s: &'a mut Value, name: &str) -> &'a mut Value {
    &mut s["accounts"][name]
}

fn push(v: &mut Value, key: &str, item: Value) {
    match v.get_mut(key).and_then(Value::as_array_mut) {
        Some(a) => a.push(item),
        None => v[key] = json!([item]),
    }
}

fn remote(s: &mut Value) -> &mut Value {
    &mut s["leafnodes"]["remotes"][0]
}

fn boxed<'l>(f: impl Future<Output = ()> + Send + 'l) -> Pin<Box<dyn Future<Output = ()> + Send + 'l>> {
    Box::pin(f)
}

async fn js_api(lab: &Lab, node: &str, account: &str, op: &str, body: Value) -> Value {
    let c = lab.probe(node, account).await.unwrap_or_else(|e| panic!("probe {node}/{account}: {e}"));
    js::api(&c, js::API, op, &body).await.unwrap_or_else(|e| panic!("{op}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// The corpus

macro_rules! mutation {
    ($test:ident, $m:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            plant_and_check(&$m).await;
        }
    };
}

// Accounts, exports and imports (the state family reads /accountz; mapping probes the subject space).

mutation!(undeclared_export_from_a_leaf_account, Mutation {
    what: "a leaf's hub account exports a subject no topology declares, and the hub account imports it",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            push(account(s, "LEAF_SITE_A"), "exports", json!({ "stream": "secrets.>" }));
            push(account(s, "HUB"), "imports", json!({ "stream": { "account": "LEAF_SITE_A", "subject": "secrets.>" } }));
        }
    }),
    families: &[Family::State],
    caught_by: &["state/accounts/hub-1"],
});

mutation!(declared_export_widened, Mutation {
    what: "a declared export widened: domain.graph.> became domain.>, on both sides",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            for e in account(s, "LEAF_SITE_A")["exports"].as_array_mut().unwrap() {
                if e["stream"] == "domain.graph.>" {
                    e["stream"] = json!("domain.>");
                }
            }
            for i in account(s, "HUB")["imports"].as_array_mut().unwrap() {
                if i["stream"]["account"] == "LEAF_SITE_A" && i["stream"]["subject"] == "domain.graph.>" {
                    i["stream"]["subject"] = json!("domain.>");
                }
            }
        }
    }),
    families: &[Family::State, Family::Mapping],
    caught_by: &["state/accounts/hub-1", "mapping/leak-up/site-a"],
});

mutation!(import_prefix_dropped, Mutation {
    what: "the hub imports a leaf's export without its prefix (leaf.site-a dropped)",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            for i in account(s, "HUB")["imports"].as_array_mut().unwrap() {
                if i["prefix"] == "leaf.site-a" {
                    i.as_object_mut().unwrap().remove("prefix");
                }
            }
        }
    }),
    families: &[Family::State, Family::Mapping],
    caught_by: &["state/accounts/hub-1", "mapping/export/site-a/domain.graph.>"],
});

mutation!(import_from_the_wrong_leaf, Mutation {
    what: "site-b's hub account imports global.events.> from HUB, which only site-a declares",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            push(account(s, "LEAF_SITE_B"), "imports", json!({ "stream": { "account": "HUB", "subject": "global.events.>" } }));
        }
    }),
    families: &[Family::State, Family::Mapping],
    caught_by: &["state/accounts/hub-1", "mapping/leak-down/site-b"],
});

mutation!(subject_mapping_added, Mutation {
    what: "a subject mapping added to the hub account (commands.> rewritten)",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            account(s, "HUB")["mappings"] = json!({ "commands.reboot": "commands.reboot.all" });
        }
    }),
    families: &[Family::State],
    caught_by: &["state/accounts/hub-1"],
});

mutation!(system_account_imported_by_a_leaf_account, Mutation {
    what: "a leaf's hub account imports a system service ($SYS.REQ.SERVER.PING)",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            push(account(s, "SYS"), "exports", json!({ "service": "$SYS.REQ.SERVER.PING" }));
            push(account(s, "LEAF_SITE_A"), "imports", json!({ "service": { "account": "SYS", "subject": "$SYS.REQ.SERVER.PING" } }));
        }
    }),
    families: &[Family::State],
    caught_by: &["state/accounts/hub-1"],
});

// Leaf links.

mutation!(leaf_link_in_another_leafs_account, Mutation {
    what: "site-a's link user put in site-b's account block: site-a attaches as site-b",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            let users = account(s, "LEAF_SITE_A")["users"].as_array_mut().unwrap();
            let at = users.iter().position(|u| u["user"] == "leaf-site-a").unwrap();
            let user = users.remove(at);
            push(account(s, "LEAF_SITE_B"), "users", user);
        }
    }),
    families: &[Family::State, Family::Mapping],
    caught_by: &["state/leaf-links/site-a", "mapping/export/site-a/domain.graph.>"],
});

mutation!(extra_leaf_link, Mutation {
    what: "a second, undeclared remote on site-a, binding its system account to the same hub",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "site-a" {
            let mut copy = remote(s).clone();
            copy["account"] = json!("SYS");
            push(&mut s["leafnodes"], "remotes", copy);
        }
    }),
    families: &[Family::State],
    caught_by: &["state/leaf-links/site-a", "state/remotes/site-a"],
});

mutation!(remote_bound_to_the_wrong_local_account, Mutation {
    what: "site-a's remote bound to its system account instead of APP",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "site-a" {
            remote(s)["account"] = json!("SYS");
        }
    }),
    families: &[Family::State],
    caught_by: &["state/remotes/site-a", "state/leaf-links/site-a"],
});

mutation!(remote_lists_fewer_hubs, Mutation {
    what: "peer-b's remote lists only hub-2 (hub-3 dropped)",
    topology: "leaf-peers.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "peer-b" {
            remote(s)["urls"].as_array_mut().unwrap().truncate(1);
        }
    }),
    families: &[Family::State],
    caught_by: &["state/remotes/peer-b"],
});

mutation!(deny_imports_dropped, Mutation {
    what: "peer-a's remote lost its deny_imports: the hub's admin commands reach the leaf",
    topology: "leaf-peers.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "peer-a" {
            remote(s).as_object_mut().unwrap().remove("deny_imports");
        }
    }),
    families: &[Family::State, Family::Mapping],
    caught_by: &["state/remotes/peer-a", "mapping/leak-down/peer-a"],
});

mutation!(deny_exports_dropped, Mutation {
    what: "peer-a's remote lost its deny_exports: its secret telemetry crosses the link",
    topology: "leaf-peers.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "peer-a" {
            remote(s).as_object_mut().unwrap().remove("deny_exports");
        }
    }),
    families: &[Family::State, Family::Mapping],
    caught_by: &["state/remotes/peer-a", "mapping/leak-up/peer-a"],
});

// TLS and authentication.

mutation!(tls_off_on_a_client_port, Mutation {
    what: "TLS switched off on secure-1's client port (the rest of the lab unchanged)",
    topology: "mtls.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "secure-1" {
            s.as_object_mut().unwrap().remove("tls");
        }
    }),
    families: &[Family::State, Family::Security],
    caught_by: &["state/tls/secure-1", "security/plaintext/secure-1"],
});

mutation!(client_verify_off, Mutation {
    what: "client certificate verification switched off on hub-2",
    topology: "mtls.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-2" {
            s["tls"].as_object_mut().unwrap().remove("verify");
        }
    }),
    families: &[Family::State, Family::Security],
    caught_by: &["state/tls/hub-2", "security/no-client-cert/hub-2"],
});

mutation!(anonymous_clients_let_in, Mutation {
    what: "a password-less guest user in HUB, made the no_auth_user: clients without credentials get in",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            // (With a bcrypt-hashed user no_auth_user silently lets nobody in: the hash is compared as a password.)
            push(account(s, "HUB"), "users", json!({ "user": "guest" }));
            s["no_auth_user"] = json!("guest");
        }
    }),
    families: &[Family::Security],
    caught_by: &["security/anonymous/hub-1"],
});

mutation!(permissions_dropped, Mutation {
    what: "the hub user control lost its publish allow list",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            for u in account(s, "HUB")["users"].as_array_mut().unwrap() {
                if u["user"] == "control" {
                    u["permissions"].as_object_mut().unwrap().remove("publish");
                }
            }
        }
    }),
    families: &[Family::Security],
    caught_by: &["security/publish-outside-allow/hub/HUB/control"],
});

mutation!(secrets_readable_by_others, Mutation {
    what: "a node's config made world-readable (chmod 644)",
    topology: "subject-mapping.yaml",
    plant: Plant::Live(|lab| {
        boxed(async move {
            use std::os::unix::fs::PermissionsExt;
            let f = lab.plan.layout.host_node_dir("site-a").join("nats.conf");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        })
    }),
    families: &[Family::Security],
    caught_by: &["security/secrets-mode"],
});

// Server settings.

mutation!(max_payload_raised, Mutation {
    what: "max_payload raised to 8 MB on hub-1",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "hub-1" {
            s["max_payload"] = json!(8 * 1024 * 1024);
            s["max_pending"] = json!(64 * 1024 * 1024);
        }
    }),
    families: &[Family::State],
    caught_by: &["state/limits/hub-1"],
});

mutation!(ping_interval_lost, Mutation {
    what: "peer-a's ping_interval dropped (back to the 2 min default: hung hubs go unnoticed)",
    topology: "leaf-peers.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "peer-a" {
            s.as_object_mut().unwrap().remove("ping_interval");
        }
    }),
    families: &[Family::State],
    caught_by: &["state/limits/peer-a"],
});

mutation!(jetstream_on_where_none_is_declared, Mutation {
    what: "JetStream switched on for site-a, which declares none (what `jetstream: {}` does)",
    topology: "subject-mapping.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "site-a" {
            s["jetstream"] = json!({ "store_dir": STORE_IN_RUN });
        }
    }),
    families: &[Family::State],
    caught_by: &["state/jetstream/site-a"],
});

mutation!(jetstream_domain_changed, Mutation {
    what: "peer-b's JetStream domain renamed (peer-b → site-b)",
    topology: "leaf-peers.yaml",
    plant: Plant::Settings(|node, s| {
        if node == "peer-b" {
            s["jetstream"]["domain"] = json!("site-b");
        }
    }),
    families: &[Family::State, Family::Jetstream],
    caught_by: &["state/jetstream/peer-b", "jetstream/domain-access/peer-b/EVENTS/hub:LEAF_PEER_B"],
});

// Streams and consumers, changed in the running lab.

mutation!(consumer_deleted, Mutation {
    what: "the durable consumer order-audit deleted",
    topology: "jetstream-domains.yaml",
    plant: Plant::Live(|lab| boxed(async move {
        js_api(lab, "hub-1", "HUB", "CONSUMER.DELETE.ORDERS.order-audit", json!({})).await;
    })),
    families: &[Family::Jetstream],
    caught_by: &["jetstream/consumer-config/hub/ORDERS/order-audit"],
});

mutation!(consumer_changed, Mutation {
    what: "local-worker's max_deliver changed from 3 to 10 and its ack_wait to 2 min",
    topology: "jetstream-domains.yaml",
    plant: Plant::Live(|lab| boxed(async move {
        let info = js_api(lab, "store-1", "LOCAL", "CONSUMER.INFO.LOCAL_EVENTS.local-worker", json!({})).await;
        let mut config = info["config"].clone();
        config["max_deliver"] = json!(10);
        config["ack_wait"] = json!(120_000_000_000u64);
        js_api(lab, "store-1", "LOCAL", "CONSUMER.CREATE.LOCAL_EVENTS.local-worker", json!({ "stream_name": "LOCAL_EVENTS", "config": config, "action": "update" })).await;
    })),
    families: &[Family::Jetstream],
    caught_by: &["jetstream/consumer-config/store-1/LOCAL_EVENTS/local-worker"],
});

mutation!(stream_limits_changed, Mutation {
    what: "ORDERS given a max_msgs limit of 100 the topology does not declare",
    topology: "jetstream-domains.yaml",
    plant: Plant::Live(|lab| boxed(async move {
        let info = js_api(lab, "hub-1", "HUB", "STREAM.INFO.ORDERS", json!({})).await;
        let mut config = info["config"].clone();
        config["max_msgs"] = json!(100);
        js_api(lab, "hub-1", "HUB", "STREAM.UPDATE.ORDERS", config).await;
    })),
    families: &[Family::Jetstream],
    caught_by: &["jetstream/stream-config/hub/ORDERS"],
});

mutation!(stream_replicas_reduced, Mutation {
    what: "the R3 stream ORDERS scaled down to one replica",
    topology: "jetstream-domains.yaml",
    plant: Plant::Live(|lab| boxed(async move {
        let info = js_api(lab, "hub-1", "HUB", "STREAM.INFO.ORDERS", json!({})).await;
        let mut config = info["config"].clone();
        config["num_replicas"] = json!(1);
        js_api(lab, "hub-1", "HUB", "STREAM.UPDATE.ORDERS", config).await;
    })),
    families: &[Family::Jetstream],
    caught_by: &["jetstream/stream-config/hub/ORDERS"],
});

mutation!(undeclared_stream, Mutation {
    what: "someone created a stream AUDIT_COPY on store-2 that the topology does not declare",
    topology: "jetstream-domains.yaml",
    plant: Plant::Live(|lab| boxed(async move {
        js_api(lab, "store-2", "LOCAL", "STREAM.CREATE.AUDIT_COPY", json!({ "name": "AUDIT_COPY", "subjects": ["audit.>"], "storage": "memory" })).await;
    })),
    families: &[Family::State],
    caught_by: &["state/streams/store-2/LOCAL"],
});

mutation!(undeclared_durable_consumer, Mutation {
    what: "someone added a durable consumer to ORDERS that the topology does not declare",
    topology: "jetstream-domains.yaml",
    plant: Plant::Live(|lab| boxed(async move {
        js_api(lab, "hub-1", "HUB", "CONSUMER.CREATE.ORDERS.shadow-reader", json!({ "stream_name": "ORDERS", "config": { "durable_name": "shadow-reader", "ack_policy": "explicit" } })).await;
    })),
    families: &[Family::State],
    caught_by: &["state/streams/hub/HUB"],
});

mutation!(stream_rendered_without_its_source_transform, Mutation {
    what: "FROM_PEER_B rendered without its subject transform (the leaf's subjects arrive unrenamed)",
    topology: "leaf-peers.yaml",
    plant: Plant::Rendered(|t| {
        for s in t.hub.streams.iter_mut().filter(|s| s.name == "FROM_PEER_B") {
            s.sources[0].subject_transform = None;
        }
    }),
    families: &[Family::Jetstream],
    caught_by: &["jetstream/stream-config/hub/FROM_PEER_B"],
});

#[test]
fn blind_spots_are_listed_in_the_readme() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    for (what, _) in BLIND_SPOTS {
        assert!(readme.contains(what), "the README's blind spots miss {what:?}");
    }
}
