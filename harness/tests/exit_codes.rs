//! Exit codes mean one thing each, end to end through the binary: 0 every check passed, 1 a check was
//! violated, 2 bad input (with and without --detach), 3 the harness or its environment broke, 130
//! interrupted. Nightly CI tells "NATS regressed" from "the harness broke" by them alone.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn code(out: &std::process::Output) -> (Option<i32>, String) {
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn zero_when_every_check_passed() {
    let env = Env::new();
    let out = env.cmd().args(["run", "--scenario", "health"]).arg(topology_path("failover.yaml")).output().unwrap();
    let (c, text) = code(&out);
    assert_eq!(c, Some(0), "{text}");
    assert!(text.contains("PASS"), "{text}");
}

/// The running lab lacks a flow the topology given to the attached run declares: NATS (as configured)
/// does not do what is declared, so the run exits 1.
#[test]
fn one_when_a_check_is_violated() {
    let env = Env::new();
    let lab = env.detach("failover.yaml", &[]);
    let info = &lab.info;
    let declared = std::fs::read_to_string(topology_path("failover.yaml"))
        .unwrap()
        .replace("exports: [\"commands.>\"]", "exports: [\"commands.>\", \"alerts.>\"]")
        .replace("        imports:\n          - subject: \"commands.>\"", "        imports:\n          - subject: \"alerts.>\"\n          - subject: \"commands.>\"");
    assert!(declared.contains("alerts.>\"\n"), "the edit took: {declared}");
    let file = env.runs.path().join("declared.yaml");
    std::fs::write(&file, declared).unwrap();
    let inventory = info.dir.join("inventory.json");
    let out = env
        .cmd()
        .args(["run", "--backend", "attached", "--scenario", "mapping", "--only", "mapping/import", "--inventory"])
        .arg(&inventory)
        .arg(&file)
        .output()
        .unwrap();
    let (c, text) = code(&out);
    assert_eq!(c, Some(1), "{text}");
    assert!(text.contains("mapping/import/edge-1/alerts.>"), "the violated check is named by its id: {text}");
}

#[test]
fn two_for_bad_input_with_and_without_detach() {
    let env = Env::new();
    let missing = env.runs.path().join("missing.yaml");
    for args in [vec!["up", "--detach"], vec!["up"], vec!["run"], vec!["check"], vec!["render", "--out", "/tmp/natslab-nowhere"]] {
        let out = env.cmd().args(&args).arg(&missing).output().unwrap();
        let (c, text) = code(&out);
        assert_eq!(c, Some(2), "{args:?}: {text}");
        assert!(text.contains("missing.yaml"), "{args:?} names the file: {text}");
    }
    let (c, text) = code(&env.cmd().args(["run", "--scenario", "bogus"]).output().unwrap());
    assert_eq!(c, Some(2), "{text}");
    assert!(text.contains("bogus") && text.contains("health"), "{text}");
    let (c, text) = code(&env.cmd().args(["run", "--backend", "attached"]).output().unwrap());
    assert_eq!(c, Some(2), "{text}");
    assert!(text.contains("--inventory"), "{text}");
    // Nothing to act on.
    let (c, text) = code(&env.cmd().args(["fault", "kill", "hub-1"]).output().unwrap());
    assert_eq!(c, Some(2), "{text}");
    assert!(text.contains("no lab is running"), "{text}");
    let (c, text) = code(&env.cmd().args(["down"]).output().unwrap());
    assert_eq!(c, Some(0), "{text}");
    assert!(text.contains("nothing to tear down"), "{text}");
    assert_eq!(std::fs::read_dir(env.runs.path()).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count(), 0, "nothing was started");
}

/// A nats-server that is not one: the environment is broken, not the input and not NATS.
#[test]
fn three_when_the_harness_breaks() {
    let env = Env::new();
    let out = env.cmd().env("NATS_SERVER_BIN", "/bin/true").args(["run", "--scenario", "health"]).arg(topology_path("failover.yaml")).output().unwrap();
    let (c, text) = code(&out);
    assert_eq!(c, Some(3), "{text}");
    assert!(text.contains("printed no version"), "{text}");
}

#[test]
fn one_hundred_thirty_when_interrupted() {
    let env = Env::new();
    let mut child = env.cmd().arg("run").arg(topology_path("failover.yaml")).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Interrupt once the first check has finished: the run is under way, a lab is up.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with('[') {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "natslab run ended before any check");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "natslab run did not end within 60 s of SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    // Every lab was torn down: no run directory is left.
    let left: Vec<_> = std::fs::read_dir(env.runs.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
