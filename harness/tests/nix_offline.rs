//! What can be checked of the flake without nixpkgs (NIX.md): every `.nix` file parses; the committed NixOS
//! renderings are exactly what the harness renders now; the pure wiring (builtins only) evaluates for every
//! topology and agrees with the harness; `nix flake check --no-build --offline` passes against the stub
//! nixpkgs; every generated VM test script is valid Python naming only machines that exist; deadnix passes.
//! Building with Nix and running the VM tests needs a networked Nix and cannot happen here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A tool the check needs, or a skip (a failure where NATSLAB_REQUIRE_ALL is set, as in CI).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        let msg = format!("skipped: `{name}` is not installed (see .ci/run for how CI installs it)");
        if std::env::var_os("NATSLAB_REQUIRE_ALL").is_some() {
            panic!("{msg}, and NATSLAB_REQUIRE_ALL is set");
        }
        eprintln!("{msg}");
    }
    found
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn committed_nixos_renderings_have_not_drifted() {
    for name in topology_names() {
        let committed = repo().join("nixos-tests/rendered").join(&name);
        assert!(
            committed.is_dir(),
            "topology {name} has no NixOS rendering; run: natslab render topologies/{name}.yaml --format nixos --out nixos-tests/rendered/{name}"
        );
        let fresh = tempfile::tempdir().unwrap();
        let plan = natslab::render::nixos::plan(load(&format!("{name}.yaml")), &name, fresh.path()).unwrap();
        natslab::rendered::write_nixos(&plan).unwrap();
        let rel = |root: &Path, files: Vec<PathBuf>| -> Vec<PathBuf> { files.into_iter().map(|p| p.strip_prefix(root).unwrap().to_path_buf()).collect() };
        let a = rel(&committed, files_under(&committed));
        let b = rel(fresh.path(), files_under(fresh.path()));
        assert_eq!(a, b, "{name}: the set of rendered files drifted; re-render nixos-tests/rendered/{name}");
        for f in a {
            let x = std::fs::read(committed.join(&f)).unwrap();
            let y = std::fs::read(fresh.path().join(&f)).unwrap();
            assert!(x == y, "{name}: {} drifted from what the harness renders now; re-render nixos-tests/rendered/{name}", f.display());
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = tool("nix-instantiate") else { return };
    let mut files: Vec<PathBuf> = files_under(&repo()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "nix")).filter(|p| !p.starts_with(repo().join("target"))).collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    for f in files {
        let out = Command::new(&nix).arg("--parse").arg(&f).output().unwrap();
        assert!(out.status.success(), "{} does not parse:\n{}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

fn nix_eval(nix: &Path, expr: &str) -> Value {
    let out = Command::new(nix).current_dir(repo().join("nixos-tests")).args(["--eval", "--strict", "--json", "-E", expr]).output().unwrap();
    assert!(out.status.success(), "nix-instantiate --eval {expr}:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The settings nats-server finally runs on a VM (rendered settings + what the services.nats module adds,
/// its placeholders filled in from the secrets as the service does at start) are the harness's own
/// rendering of that node, with `listen` split into the module's `host` and `port`, and JetStream switched
/// off explicitly where the topology has none.
#[test]
fn pure_nix_wiring_agrees_with_the_harness() {
    let Some(nix) = tool("nix-instantiate") else { return };
    for name in topology_names() {
        let dir = tempfile::tempdir().unwrap();
        let plan = natslab::render::nixos::plan(load(&format!("{name}.yaml")), &name, dir.path()).unwrap();
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("nixos-tests/rendered").join(&name).join("nodes.json")).unwrap()).unwrap();
        for node in &plan.nodes {
            let mut expected = natslab::render::render_node(&plan, node);
            let m = expected.as_object_mut().unwrap();
            m.remove("listen");
            m.insert("host".into(), "0.0.0.0".into());
            m.insert("port".into(), node.addr.client.into());
            if !m.contains_key("jetstream") {
                m.insert("jetstream".into(), serde_json::json!({ "enabled": false }));
            }
            let expr = format!(r#"let l = import ./lib.nix; in l.effectiveSettings (l.load ./rendered/{name}) "{}""#, node.name);
            let template = nix_eval(&nix, &expr);
            let holes: Vec<(String, String)> = manifest["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == node.name.as_str())
                .unwrap()["inline_secrets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h["file"].as_str().unwrap().to_string(), h["placeholder"].as_str().unwrap().to_string()))
                .collect();
            let text = serde_json::to_string(&template).unwrap();
            for (_, hole) in &holes {
                assert!(text.contains(hole.as_str()), "{name}/{}: the store template carries a placeholder, not the secret", node.name);
            }
            let secrets = repo().join("nixos-tests/rendered").join(&name).join("secrets");
            let filled = natslab::rendered::fill_in(&text, &holes, &secrets).unwrap();
            let got: Value = serde_json::from_str(&filled).unwrap();
            assert_eq!(got, expected, "{name}/{}: the NixOS wiring disagrees with the harness", node.name);
            // The VM's config: module options, firewall, every secret delivered read-only to nats.
            // A stand-in build of each declared version (the package choice has its own test below).
            let builds = format!(r#"builtins.listToAttrs (map (n: {{ name = n.server_version; value = "/builds/${{n.server_version}}"; }}) (builtins.filter (n: n.server_version != null) (l.load ./rendered/{name}).nodes))"#);
            let expr = format!(r#"let l = import ./lib.nix; in l.nodeConfig (l.load ./rendered/{name}) "{}" {{ natsPackages = {builds}; }}"#, node.name);
            let cfg = nix_eval(&nix, &expr);
            assert_eq!(cfg["services"]["nats"]["serverName"], node.name.as_str());
            assert_eq!(cfg["networking"]["firewall"]["allowedTCPPorts"], serde_json::json!([4222, 6222, 7422, 8222]));
            let etc = cfg["environment"]["etc"].as_object().unwrap();
            assert!(etc.values().all(|e| e["mode"] == "0400" && e["user"] == "nats"));
            // With a runtime secrets directory nothing comes from the store, and every path points there.
            let expr = format!(r#"let l = import ./lib.nix; in l.nodeConfig (l.load ./rendered/{name}) "{}" {{ secrets = "/run/secrets/natslab"; natsPackages = {builds}; }}"#, node.name);
            let cfg = nix_eval(&nix, &expr);
            assert_eq!(cfg["environment"]["etc"], serde_json::json!({}), "{name}/{}", node.name);
            let text = cfg["services"]["nats"]["settings"].to_string();
            assert!(!text.contains("/etc/natslab/secrets"), "{name}/{}: a secret path still points into the store delivery: {text}", node.name);
        }
    }
}

/// The services.nats module always renders a `jetstream` key (`optionalAttrs false {…}` is `{}`), and
/// nats-server starts JetStream for any map that does not say `enabled: false`: every node the topology
/// gives no JetStream must say so explicitly.
#[test]
fn jetstream_stays_off_where_the_topology_has_none() {
    let Some(nix) = tool("nix-instantiate") else { return };
    let mut off = 0;
    for name in topology_names() {
        let t = load(&format!("{name}.yaml"));
        let nodes: Vec<(String, bool)> = t
            .hub
            .nodes
            .iter()
            .map(|n| (n.name.clone(), t.hub.jetstream.is_some()))
            .chain(t.leaves.iter().map(|l| (l.name.clone(), l.jetstream.is_some())))
            .collect();
        for (node, declared) in nodes {
            let expr = format!(r#"let l = import ./lib.nix; in l.effectiveSettings (l.load ./rendered/{name}) "{node}""#);
            let js = nix_eval(&nix, &expr)["jetstream"].clone();
            // nats-server's rule (opts.go parseJetStream): a bool is itself; a map enables unless enabled/enable is false.
            let on = match &js {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Object(m) => !m.get("enabled").or(m.get("enable")).is_some_and(|v| v == false),
                _ => true,
            };
            assert_eq!(on, declared, "{name}/{node}: JetStream would be {} on the VM (settings.jetstream = {js})", if on { "on" } else { "off" });
            off += usize::from(!declared);
        }
    }
    assert!(off >= 10, "the topologies have nodes without JetStream ({off} found): the check has something to check");
}

/// The driver's global timer must outlast the script's own budget for natslab run plus the boot: else the
/// driver kills the test before the reports are copied (both default to an hour).
#[test]
fn the_script_finishes_inside_the_drivers_timeout() {
    let Some(nix) = tool("nix-instantiate") else { return };
    let t = nix_eval(&nix, "(import ./lib.nix).timeouts");
    let (global, run) = (t["global"].as_u64().unwrap(), t["run"].as_u64().unwrap());
    assert!(run + 600 <= global, "natslab run's budget ({run} s) plus 10 min of boot must fit in the driver's globalTimeout ({global} s)");
    let topo = std::fs::read_to_string(repo().join("nixos-tests/topology-test.nix")).unwrap();
    assert!(topo.contains("globalTimeout = lib'.timeouts.global;"), "topology-test.nix sets the driver's globalTimeout from lib.nix");
    let script = nix_eval(&nix, "let l = import ./lib.nix; in l.testScript (l.load ./rendered/cim-reference)");
    assert!(script.as_str().unwrap().contains(&format!("time.monotonic() + {run}")), "the script's deadline is lib.nix's run budget");
}

fn flake_check_env() -> Option<(PathBuf, tempfile::TempDir)> {
    let nix = tool("nix")?;
    // A git+file flake sees only tracked files: check a fresh clone of HEAD plus the working tree's
    // tracked changes, as CI would.
    let copy = tempfile::tempdir().unwrap();
    let st = Command::new("git").args(["clone", "-q"]).arg(repo()).arg(copy.path()).status().unwrap();
    assert!(st.success());
    let diff = Command::new("git").current_dir(repo()).args(["diff", "HEAD", "--binary"]).output().unwrap();
    if !diff.stdout.is_empty() {
        let mut apply = Command::new("git").current_dir(copy.path()).args(["apply", "--allow-empty", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(apply.stdin.as_mut().unwrap(), &diff.stdout).unwrap();
        assert!(apply.wait().unwrap().success());
        Command::new("git").current_dir(copy.path()).args(["add", "-A"]).status().unwrap();
    }
    Some((nix, copy))
}

#[test]
fn flake_check_passes_with_the_stub_nixpkgs() {
    let Some((nix, copy)) = flake_check_env() else { return };
    let stub = format!("path:{}", copy.path().join("nix/stub-nixpkgs").display());
    let out = Command::new(&nix)
        .current_dir(copy.path())
        .args(["--extra-experimental-features", "nix-command flakes", "flake", "check", "--no-build", "--offline", "--no-write-lock-file", "--override-input", "nixpkgs", &stub])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix flake check failed:\n{}", String::from_utf8_lossy(&out.stderr));
    // One VM test per topology, for both systems.
    let out = Command::new(&nix)
        .current_dir(copy.path())
        .args(["--extra-experimental-features", "nix-command flakes", "eval", "--json", "--offline", "--no-write-lock-file", "--override-input", "nixpkgs", &stub, ".#checks.x86_64-linux", "--apply", "builtins.attrNames"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    for t in topology_names() {
        // A topology declaring nats-server versions has a VM test only where builds of them are given
        // (the stub, like nixpkgs, has one nats-server), and the evaluation says which it left out.
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("nixos-tests/rendered").join(&t).join("nodes.json")).unwrap()).unwrap();
        if manifest["nodes"].as_array().unwrap().iter().any(|n| n["server_version"].is_string()) {
            assert!(!names.contains(&format!("vm-{t}")), "{t} declares versions the stub has no build of: {names:?}");
            assert!(said.contains(&format!("no VM test for {t}")), "the evaluation names {t} as left out:\n{said}");
        } else {
            assert!(names.contains(&format!("vm-{t}")), "no VM test for {t}: {names:?}");
        }
    }
    assert!(names.contains(&"natslab".to_string()));
}

/// Every generated test script parses as Python, and pyflakes (told the driver's globals and the machines
/// that exist) finds no undefined name: a script naming a machine that does not exist fails here.
#[test]
fn generated_test_scripts_are_valid_python_naming_real_machines() {
    let Some(nix) = tool("nix-instantiate") else { return };
    let Some(python) = tool("python3") else { return };
    let has_pyflakes = Command::new(&python).args(["-m", "pyflakes", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_pyflakes {
        let msg = "skipped: python3 -m pyflakes is not installed (pip install pyflakes)";
        assert!(std::env::var_os("NATSLAB_REQUIRE_ALL").is_none(), "{msg}, and NATSLAB_REQUIRE_ALL is set");
        eprintln!("{msg}");
        return;
    }
    let driver_globals = "start_all,test_script,machines_qemu,machines_nspawn,vlans,driver,log,os,create_machine,subtest,run_tests,join_all,retry,serial_stdout_off,serial_stdout_on,polling_condition,BaseMachine,t,debug";
    for name in topology_names() {
        let expr = format!("let l = import ./lib.nix; in l.testScript (l.load ./rendered/{name})");
        let script = nix_eval(&nix, &expr);
        let script = script.as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.py");
        std::fs::write(&path, script).unwrap();
        let parse = Command::new(&python).args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())"]).arg(&path).output().unwrap();
        assert!(parse.status.success(), "{name}: not valid Python:\n{}", String::from_utf8_lossy(&parse.stderr));
        let t = load(&format!("{name}.yaml"));
        let mut machines: Vec<String> = t.hub.nodes.iter().map(|n| n.name.replace('-', "_")).collect();
        machines.extend(t.leaves.iter().map(|l| l.name.replace('-', "_")));
        machines.push("lab".into());
        let out = Command::new(&python)
            .args(["-m", "pyflakes"])
            .arg(&path)
            .env("PYFLAKES_BUILTINS", format!("{driver_globals},{}", machines.join(",")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: pyflakes:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // And the check has teeth: a script naming a machine that does not exist is caught.
        std::fs::write(&path, format!("{script}\nno_such_machine.succeed('true')\n")).unwrap();
        let out = Command::new(&python).args(["-m", "pyflakes"]).arg(&path).env("PYFLAKES_BUILTINS", format!("{driver_globals},{}", machines.join(","))).output().unwrap();
        assert!(!out.status.success());
    }
}

#[test]
fn deadnix_finds_nothing_unused() {
    let Some(deadnix) = tool("deadnix") else { return };
    let out = Command::new(&deadnix).arg("--fail").arg(repo().join("flake.nix")).arg(repo().join("nix")).arg(repo().join("nixos-tests")).output().unwrap();
    assert!(out.status.success(), "deadnix:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A node declaring a nats-server version runs the build of it from natsPackages; without one the
/// evaluation stops naming the node, the version and the option to set.
#[test]
fn a_declared_version_picks_its_build_or_says_which_is_missing() {
    let Some(nix) = tool("nix-instantiate") else { return };
    let picked = nix_eval(&nix, r#"let l = import ./lib.nix; in (l.nodeConfig (l.load ./rendered/mixed-versions) "edge-old" { natsPackages = { "2.11.11" = "/builds/2.11.11"; }; }).services.nats.package"#);
    assert_eq!(picked, "/builds/2.11.11");
    let hub = nix_eval(&nix, r#"let l = import ./lib.nix; in (l.nodeConfig (l.load ./rendered/mixed-versions) "hub-1" { }).services.nats ? package"#);
    assert_eq!(hub, false, "a node without a declared version keeps the module's package");
    let out = Command::new(&nix)
        .current_dir(repo().join("nixos-tests"))
        .args(["--eval", "--strict", "--json", "-E", r#"let l = import ./lib.nix; in (l.nodeConfig (l.load ./rendered/mixed-versions) "edge-mid" { }).services.nats.package"#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("node edge-mid declares nats-server 2.12.8") && err.contains("natsPackages"), "{err}");
}
