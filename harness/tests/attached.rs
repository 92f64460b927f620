//! The attached backend for real: a lab started by the process backend is handed, through its inventory,
//! to `natslab run --backend attached`; a small stand-in for the NixOS test driver serves the fault
//! requests (kill/start/pause/resume) from the shared directory, and the failover scenario passes through it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use natslab::backend::attached::{Answer, Request};
use natslab::nemesis::Fault;
use natslab::inventory::{FaultChannel, Inventory};
use natslab::lab::LabInfo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What a NixOS test script does with `crash()`, `start()` and `systemctl kill -s STOP/CONT`, done to
/// processes: it owns the nodes it restarts.
struct DriverStandIn {
    server: PathBuf,
    configs: BTreeMap<String, PathBuf>,
    pids: BTreeMap<String, u32>,
    restarted: Vec<Child>,
    served: Vec<String>,
}

impl DriverStandIn {
    fn serve(&mut self, req: &Request) -> Result<(), String> {
        self.served.push(req.fault.to_string());
        let node = req.fault.nodes().first().map(|n| n.to_string()).unwrap_or_default();
        let pid = |s: &Self| s.pids.get(&node).copied().ok_or_else(|| format!("unknown node {node}"));
        match &req.fault {
            Fault::Kill { .. } => {
                let p = pid(self)?;
                kill(Pid::from_raw(p as i32), Signal::SIGKILL).map_err(|e| e.to_string())?;
                // Like crash(): the machine is gone when the call returns.
                while std::fs::metadata(format!("/proc/{p}/cmdline")).is_ok_and(|m| m.len() > 0) && server_alive(p) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(())
            }
            Fault::Start { .. } => {
                let config = self.configs.get(&node).ok_or("no config")?;
                let mut cmd = Command::new(&self.server);
                cmd.arg("-c").arg(config).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                let child = natslab::backend::spawn::spawn_guarded(cmd).map_err(|e| e.to_string())?;
                self.pids.insert(node.clone(), child.id());
                self.restarted.push(child);
                Ok(())
            }
            Fault::Pause { .. } => kill(Pid::from_raw(pid(self)? as i32), Signal::SIGSTOP).map_err(|e| e.to_string()),
            Fault::Resume { .. } => kill(Pid::from_raw(pid(self)? as i32), Signal::SIGCONT).map_err(|e| e.to_string()),
            other => Err(format!("this driver cannot {}", other.op())),
        }
    }
}

fn server_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn serve_loop(dir: &Path, driver: &mut DriverStandIn, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        for (seq, req) in natslab::mailbox::pending::<Request>(dir) {
            let resp = match req.map_err(|e| e.to_string()).and_then(|r| driver.serve(&r)) {
                Ok(()) => Answer { seq, ok: true, message: String::new() },
                Err(e) => Answer { seq, ok: false, message: e },
            };
            natslab::mailbox::answer(dir, seq, &resp).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn failover_through_the_attached_backend_and_its_fault_protocol() {
    let runs = tempfile::tempdir().unwrap();
    let natslab = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_natslab"));
        c.env("NATSLAB_RUNS", runs.path()).env("NATSLAB_CONTEXT_DIR", runs.path().join("ctx")).args(args);
        c
    };
    let topo = topology_path("failover.yaml");
    let out = natslab(&["up", "--detach", "--json", topo.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: LabInfo = serde_json::from_slice(&out.stdout).unwrap();

    // The inventory the lab recorded, plus a fault channel served by the stand-in.
    let faults = tempfile::tempdir().unwrap();
    let mut inventory = Inventory::load(&info.dir.join("inventory.json")).unwrap();
    inventory.faults = Some(FaultChannel { dir: faults.path().to_path_buf(), supports: vec!["kill".into(), "pause".into()], timeout_s: 60 });
    let inv_path = faults.path().join("inventory.json");
    inventory.write(&inv_path).unwrap();

    let server = natslab::server::find_or_install(&mut |m| eprintln!("{m}")).unwrap();
    let mut driver = DriverStandIn {
        server: server.path.clone(),
        configs: info.nodes.iter().map(|n| (n.name.clone(), n.config.clone())).collect(),
        pids: info.nodes.iter().map(|n| (n.name.clone(), n.pid.unwrap())).collect(),
        restarted: vec![],
        served: vec![],
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (dir, stop2) = (faults.path().to_path_buf(), stop.clone());
    let serving = std::thread::spawn(move || {
        serve_loop(&dir, &mut driver, &stop2);
        driver
    });

    let report = faults.path().join("report.json");
    let run = natslab(&["run", "--backend", "attached", "--inventory", inv_path.to_str().unwrap(), "--scenario", "health,failover", "--json", report.to_str().unwrap()])
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut driver = serving.join().unwrap();
    for mut c in driver.restarted.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
    let down = natslab(&["down", "--all"]).output().unwrap();
    assert!(down.status.success());

    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "natslab run failed:\n{}\n{stderr}", String::from_utf8_lossy(&run.stdout));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let checks = v["runs"][0]["checks"].as_array().unwrap();
    let killed = checks.iter().find(|c| c["id"] == "failover/kill-hub/edge-1").expect("a kill failover check");
    assert_eq!(killed["verdict"], "passed", "{killed}");
    assert!(killed["metrics"]["failover_ms"].as_f64().is_some());
    // The faults really went through the protocol.
    assert!(driver.served.iter().any(|s| s.starts_with("kill hub-")), "{:?}", driver.served);
    assert!(driver.served.iter().any(|s| s.starts_with("start hub-")), "{:?}", driver.served);
    assert!(driver.served.iter().any(|s| s.starts_with("pause ")), "{:?}", driver.served);
}

/// `natslab up --detach`, then `natslab run --backend attached --inventory <run>/inventory.json`: the
/// inventory names the lab's own fault channel, its supervisor serves the faults, and the failover checks
/// run — all of them, none skipped — and pass.
#[test]
fn failover_through_a_detached_labs_own_inventory() {
    let env = Env::new();
    let lab = env.detach("cim-reference.yaml", &[]);
    let report = env.runs.path().join("failover.json");
    let inventory = lab.info.dir.join("inventory.json");
    let run = env
        .cmd()
        .args(["run", "--backend", "attached", "--inventory", inventory.to_str().unwrap(), "--scenario", "failover", "--json", report.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "natslab run failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let checks = v["runs"][0]["checks"].as_array().unwrap();
    assert!(checks.len() >= 10, "{stdout}");
    for c in checks {
        assert_eq!(c["verdict"], "passed", "{}: {}", c["id"], c["observed"]);
    }
}
