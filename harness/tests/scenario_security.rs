//! The security family against real labs: every declared permission, credential, TLS and isolation check
//! passes on each topology that declares them, and a lab rendered with a permission wider than declared (or
//! with a secret left readable) is caught.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use natslab::lab::Lab;
use natslab::scenario::{security, Check, Ctx, Recorder, Silent, Verdict};
use natslab::topology::Topology;

/// Runs the security family on a running lab against `declared`; returns the checks.
async fn run_security(lab: &mut Lab, declared: &Topology) -> Vec<Check> {
    let mut rec = Recorder::new(&Silent);
    let mut ctx = Ctx { lab, declared, rec: &mut rec };
    let started = std::time::Instant::now();
    security::run(&mut ctx).await;
    eprintln!("{}: security family took {:?} (lab ready in {:?})", declared.name, started.elapsed(), lab.ready_in);
    for c in &rec.checks {
        eprintln!("  {:?} {} — {} [{:.0} ms]", c.verdict, c.name, c.observed, c.duration.as_secs_f64() * 1000.0);
    }
    rec.checks
}

/// The family passes on the topology as declared; returns its checks.
async fn passes_on(file: &str) -> Vec<Check> {
    let t = load(file);
    let root = tempfile::tempdir().unwrap();
    let mut lab = up(t.clone(), &root).await;
    let checks = run_security(&mut lab, &t).await;
    lab.shutdown().await;
    let bad = failures(&checks);
    assert!(bad.is_empty(), "checks failed:\n{}", bad.join("\n"));
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cim_reference_passes() {
    let checks = passes_on("cim-reference.yaml").await;
    for leaf in ["cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        for name in [
            format!("security/publish-allow/{leaf}/CIM/cim-local/domain.>"),
            format!("security/publish-deny/{leaf}/CIM/cim-local/system.>"),
            format!("security/publish-outside-allow/{leaf}/CIM/cim-local"),
            format!("security/subscribe-allow/{leaf}/CIM/cim-local/>"),
            format!("security/wrong-password/{leaf}"),
            format!("security/anonymous/{leaf}"),
            format!("security/system-request/{leaf}"),
            format!("security/system-isolation/{leaf}"),
        ] {
            assert_eq!(verdict_of(&checks, &name), Verdict::Passed, "{name}");
        }
    }
    assert_eq!(verdict_of(&checks, "security/publish-allow/hub/HUB/alchemist/$JS.API.>"), Verdict::Passed);
    assert_eq!(verdict_of(&checks, "security/secrets-mode"), Verdict::Passed);
    // cim-reference follows the guide's checklist: TLS everywhere and operator mode on the hub.
    for node in ["hub-1", "hub-2", "hub-3", "cim-prod-001", "cim-prod-002", "cim-dev-001"] {
        assert_eq!(verdict_of(&checks, &format!("security/plaintext/{node}")), Verdict::Passed, "plaintext {node}");
    }
    for hub in ["hub-1", "hub-2", "hub-3"] {
        assert_eq!(verdict_of(&checks, &format!("security/foreign-creds/{hub}")), Verdict::Passed, "foreign-creds {hub}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_mapping_passes() {
    let checks = passes_on("subject-mapping.yaml").await;
    assert_eq!(verdict_of(&checks, "security/publish-allow/hub/HUB/control/commands.>"), Verdict::Passed);
    assert_eq!(verdict_of(&checks, "security/subscribe-allow/hub/HUB/control/leaf.>"), Verdict::Passed);
    assert_eq!(verdict_of(&checks, "security/subscribe-outside-allow/hub/HUB/control"), Verdict::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_passes() {
    let checks = passes_on("mtls.yaml").await;
    for node in ["hub-1", "hub-2", "hub-3", "secure-1", "secure-2"] {
        for check in ["plaintext", "foreign-ca-cert", "no-client-cert", "wrong-password", "anonymous"] {
            assert_eq!(verdict_of(&checks, &format!("security/{check}/{node}")), Verdict::Passed, "{check} {node}");
        }
    }
    assert_eq!(verdict_of(&checks, "security/impostor-leaf"), Verdict::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_jwt_passes() {
    let checks = passes_on("operator-jwt.yaml").await;
    for name in [
        "security/foreign-creds/hub-1",
        "security/anonymous/hub-2",
        "security/account-isolation/CONTROL/BILLING",
        "security/account-isolation/BILLING/CONTROL",
        "security/publish-deny/hub/CONTROL/alchemist/system.>",
        "security/system-request/op-leaf-1",
        "security/system-isolation/op-leaf-2",
    ] {
        assert_eq!(verdict_of(&checks, name), Verdict::Passed, "{name}");
    }
}

/// The lab is rendered with cim-local free to publish on `system.>` on one leaf, and one secret file is left
/// world-readable: the declared topology still says otherwise, so the family must report exactly those.
/// (Removing the deny alone would not widen anything: `system.>` is outside the declared allow list too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wider_permission_and_a_readable_secret_are_caught() {
    let declared = load("cim-reference.yaml");
    let mut rendered = declared.clone();
    let leaf = rendered.leaves.iter_mut().find(|l| l.name == "cim-prod-001").unwrap();
    let publish = leaf.accounts[0].users[0].permissions.as_mut().unwrap().publish.as_mut().unwrap();
    assert_eq!(publish.deny, vec!["system.>".to_string()]);
    publish.deny.clear();
    publish.allow.push("system.>".into());

    let root = tempfile::tempdir().unwrap();
    let mut lab = up(rendered, &root).await;
    let secret = lab.plan.layout.host_secret("hub.HUB.alchemist.password");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let checks = run_security(&mut lab, &declared).await;
    lab.shutdown().await;

    assert_eq!(verdict_of(&checks, "security/publish-deny/cim-prod-001/CIM/cim-local/system.>"), Verdict::Violated);
    assert_eq!(verdict_of(&checks, "security/publish-deny/cim-prod-002/CIM/cim-local/system.>"), Verdict::Passed);
    assert_eq!(verdict_of(&checks, "security/secrets-mode"), Verdict::Violated);
    let bad = failures(&checks);
    assert_eq!(bad.len(), 2, "only the two sabotages fail:\n{}", bad.join("\n"));
    let deny = check(&checks, "security/publish-deny/cim-prod-001/CIM/cim-local/system.>");
    assert!(deny.observed.contains("not refused"), "{}", deny.observed);
}
