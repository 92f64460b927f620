//! The `natslab` binary end to end: no server survives it however it ends (Ctrl-C, SIGTERM, `kill -9`),
//! detached labs are listed and torn down, bad input leaves nothing behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use natslab::lab::LabInfo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts `natslab up --json` in the foreground and reads the lab it prints once ready.
fn up_foreground(env: &Env) -> (Child, LabInfo) {
    let mut child = env
        .cmd()
        .args(["up", "--json"])
        .arg(topology_path("cim-reference.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("natslab up exited before printing the lab: {text}");
        }
        text.push_str(&line);
        if line.trim_end() == "}" {
            break;
        }
    }
    (child, serde_json::from_str(&text).unwrap())
}

fn pids(info: &LabInfo) -> Vec<u32> {
    info.nodes.iter().filter_map(|n| n.pid).collect()
}

fn wait_all_gone(info: &LabInfo) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The recorded pids, and any other process running from the lab's directory (a node restarted
        // since the lab was described has a new pid).
        let all = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
        let mut alive: Vec<u32> = pids(info).into_iter().chain(all).filter(|p| server_alive_under(*p, &info.dir)).collect();
        alive.dedup();
        if alive.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "nats-server processes survived natslab: {alive:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ends_with_signal(sig: Signal) {
    let env = Env::new();
    let (mut child, info) = up_foreground(&env);
    assert_eq!(pids(&info).len(), 6);
    assert!(pids(&info).iter().all(|p| server_alive_under(*p, &info.dir)));
    // The contexts were written and point at the lab.
    let ctx = std::fs::read_to_string(env.contexts.path().join("cim-reference-hub-alchemist.json")).unwrap();
    assert!(ctx.contains(&info.nodes[0].client_url));
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    // Bounded: a natslab that ignores the signal fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("natslab did not exit within 30 s of {sig:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_all_gone(&info);
    if sig != Signal::SIGKILL {
        // An orderly teardown also removes the run directory and the contexts.
        assert!(!info.dir.exists());
        assert!(!env.contexts.path().join("cim-reference-hub-alchemist.json").exists());
    }
}

#[test]
fn ctrl_c_tears_the_lab_down() {
    ends_with_signal(Signal::SIGINT);
}

#[test]
fn sigterm_tears_the_lab_down() {
    ends_with_signal(Signal::SIGTERM);
}

#[test]
fn kill_9_of_natslab_leaves_no_server() {
    ends_with_signal(Signal::SIGKILL);
}

#[test]
fn detached_lab_is_listed_and_torn_down() {
    let env = Env::new();
    let out = env.cmd().args(["up", "--detach", "--json"]).arg(topology_path("cim-reference.yaml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: LabInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert!(pids(&info).iter().all(|p| server_alive_under(*p, &info.dir)));

    let status = env.cmd().args(["status", "--json"]).output().unwrap();
    let listed: Vec<LabInfo> = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, info.run_id);

    let down = env.cmd().args(["down", &info.run_id]).output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    wait_all_gone(&info);
    assert!(!info.dir.exists());
    let status = env.cmd().args(["status", "--json"]).output().unwrap();
    let listed: Vec<LabInfo> = serde_json::from_slice(&status.stdout).unwrap();
    assert!(listed.is_empty());
}

#[test]
fn down_all_cleans_up_after_a_killed_supervisor() {
    let env = Env::new();
    let out = env.cmd().args(["up", "--detach", "--json"]).arg(topology_path("cim-reference.yaml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: LabInfo = serde_json::from_slice(&out.stdout).unwrap();
    kill(Pid::from_raw(info.supervisor_pid as i32), Signal::SIGKILL).unwrap();
    wait_all_gone(&info);
    // The run directory is a leftover now; down --all removes it.
    assert!(info.dir.exists());
    let down = env.cmd().args(["down", "--all"]).output().unwrap();
    assert!(down.status.success());
    assert!(!info.dir.exists());
}

#[test]
fn bad_topology_is_a_clear_error_and_starts_nothing() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\nhub:\n  nodes:\n    - name: hub-1\nleaves:\n  - name: leaf-1\n    remotes:\n      - hubs: [hub-9]\n").unwrap();
    let out = env.cmd().arg("up").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:8"), "{err}");
    assert!(err.contains("unknown hub 'hub-9'"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read_dir(env.runs.path()).map(|d| d.count()).unwrap_or(0), 0, "a run directory was created");
}

/// A version that cannot be had names its key and the versions that can; one an option needs is refused by
/// `check` and by `run` alike, naming the option and the version, and `run` starts nothing.
#[test]
fn versions_that_cannot_be_had_or_lack_an_option_are_clear_errors() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, "name: v\nserver_version: 2.13.0\nhub:\n  nodes: [{name: hub-1}]\n").unwrap();
    let out = env.cmd().arg("check").arg(&unknown).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("server_version") && text.contains("2.13.0") && text.contains("2.12.8, 2.14.0"), "{text}");
    let old = dir.path().join("old.yaml");
    std::fs::write(&old, "name: v\nhub:\n  nodes: [{name: hub-1}]\n  jetstream: {}\n  streams: [{name: S, subjects: [a], allow_msg_ttl: true}]\n").unwrap();
    for cmd in ["check", "run"] {
        let out = env.cmd().arg(cmd).arg(&old).args(["--server-version", "2.10.26"].iter().filter(|_| cmd == "run")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if cmd == "check" {
            assert!(out.status.success(), "without a version it is the pinned release, which has it: {text}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("hub.streams[0].allow_msg_ttl") && text.contains("2.11.0") && text.contains("2.10.26"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    assert_eq!(std::fs::read_dir(env.runs.path()).map(|d| d.count()).unwrap_or(0), 0, "a run directory was created");
}

#[test]
fn check_passes_every_reference_topology() {
    let env = Env::new();
    let files: Vec<_> = std::fs::read_dir(topology_path("")).unwrap().map(|e| e.unwrap().path()).collect();
    let out = env.cmd().arg("check").args(&files).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("ok    ").count(), files.len(), "{text}");
}

/// `natslab fault` on a detached lab with link proxies: its supervisor kills and starts a hub, cuts a leaf
/// off and heals it, slows a link; bad fault requests name what is wrong and change nothing.
#[test]
fn faults_on_a_running_lab_go_through_its_supervisor() {
    let env = Env::new();
    let lab = env.detach("failover.yaml", &["--link-proxies"]);
    let info = lab.info.clone();
    let fault = |args: &[&str]| {
        let out = env.cmd().args(["fault", "--run", &info.run_id]).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let monitor = natslab::probe::monitor::Monitor::new();
    let url = |node: &str| info.nodes.iter().find(|n| n.name == node).unwrap().monitor_url.clone();
    let healthy = |node: &str| rt.block_on(monitor.healthy(&url(node))).is_ok();
    let uplinks = |node: &str| rt.block_on(monitor.uplinks(&url(node))).map(|u| u.len()).unwrap_or(0);
    let eventually = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let (code, text) = fault(&["kill", "hub-1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("killed hub-1"), "{text}");
    assert!(!healthy("hub-1"), "hub-1 still answers after kill");
    let (code, text) = fault(&["start", "hub-1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(healthy("hub-1"), "start returned before hub-1 was ready: {text}");

    let (code, text) = fault(&["cut-leaf", "edge-1"]);
    assert_eq!(code, Some(0), "{text}");
    eventually("edge-1 still attached after cut-leaf", &|| uplinks("edge-1") == 0);
    assert!(healthy("edge-1"), "a cut leaf keeps serving");
    let (code, text) = fault(&["heal"]);
    assert_eq!(code, Some(0), "{text}");
    eventually("edge-1 did not reattach after heal", &|| uplinks("edge-1") > 0);
    let (code, text) = fault(&["slow", "edge-1", "hub-2", "50ms"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("50 ms"), "{text}");

    // Bad requests: an unknown node (answered by the supervisor), a malformed duration (refused by the CLI).
    let (code, text) = fault(&["kill", "nope"]);
    assert_eq!(code, Some(2), "bad input: {text}");
    assert!(text.contains("no node `nope`") && text.contains("hub-1, hub-2, hub-3, edge-1"), "{text}");
    let (code, text) = fault(&["slow", "edge-1", "hub-2", "10q"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("10q"), "{text}");
    assert!(healthy("hub-2") && healthy("edge-1"));

    let down = env.cmd().args(["down", &info.run_id]).output().unwrap();
    assert!(down.status.success());
    wait_all_gone(&info);
}

/// Without link proxies a network fault is refused with the flag that provides them.
#[test]
fn a_network_fault_on_a_lab_without_proxies_names_the_flag() {
    let env = Env::new();
    let lab = env.detach("failover.yaml", &[]);
    let info = lab.info.clone();
    let out = env.cmd().args(["fault", "--run", &info.run_id, "blackhole", "edge-1", "hub-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a fault this lab cannot do is bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--link-proxies"), "{}", String::from_utf8_lossy(&out.stderr));
    let down = env.cmd().args(["down", &info.run_id]).output().unwrap();
    assert!(down.status.success());
    wait_all_gone(&info);
}

/// `natslab … | head`: a stdout closed early is neither a panic nor a death by SIGPIPE; the command goes
/// on and exits with its own code. (SIGPIPE stays ignored: with its default action a socket the peer
/// closed mid-write would kill natslab in the middle of a lab.)
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_natslab"))
        .args(["versions"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before natslab writes a line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "exits with its own code, not by a signal: {:?} {stderr}", out.status);
}
