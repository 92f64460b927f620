//! The declared `rust-version` is honest: no locked crate needs a newer rustc (the Nix build uses the
//! pinned nixpkgs' rustc, which must be at least this), read from `cargo metadata --locked`.

use std::process::Command;

fn version(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect::<Vec<_>>().into_iter().chain([0, 0]).take(3).collect()
}

#[test]
fn no_locked_crate_needs_a_newer_rustc_than_declared() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours = packages.iter().find(|p| p["name"] == "natslab").unwrap();
    let declared = ours["rust_version"].as_str().expect("harness/Cargo.toml declares rust-version");
    let mut newer: Vec<String> = packages
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["version"].as_str()?, p["rust_version"].as_str()?)))
        .filter(|(_, _, needs)| version(needs) > version(declared))
        .map(|(n, v, needs)| format!("{n} {v} needs rustc {needs}"))
        .collect();
    newer.sort();
    assert!(newer.is_empty(), "rust-version {declared} is too old for the lock: {}", newer.join(", "));
    // And the check has teeth: the newest requirement in the lock is what we declare.
    let newest = packages.iter().filter_map(|p| p["rust_version"].as_str()).max_by_key(|v| version(v)).unwrap();
    assert_eq!(version(newest), version(declared), "declare the lock's newest requirement ({newest}), not an older guess");
}
