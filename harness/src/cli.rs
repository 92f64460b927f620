//! The command line: the only module that knows clap, terminals and exit codes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::backend::BackendKind;
use crate::errors::Error;
use crate::lab::{Lab, LabInfo, Progress, UpOptions};
use crate::plan::{Layout, NodeAddr, Plan};
use crate::render::nixos;
use crate::secrets::entropy::Entropy;
use crate::report::{self, RunReport};
use crate::scenario::{Check, Family, Observer, Verdict};
use crate::{bench, contexts, files, render, runner, runs, server, topology};

pub const EXIT_FAIL: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(name = "natslab", version, about = "Declare NATS hub/leaf topologies, bring them up for real, break them, prove what they promise.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate topologies, render every node's config and run `nats-server -t` on each.
    Check {
        #[arg(required = true)]
        topologies: Vec<PathBuf>,
    },
    /// Write every node's config and the generated secrets into DIR: `conf` (nats.conf + settings.json per
    /// node, process-backend addresses) or `nixos` (services.nats settings per node for VMs named after the
    /// nodes, a nodes.json manifest, secrets for /etc/natslab).
    Render {
        topology: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "conf")]
        format: RenderFormat,
        /// Derive every secret from this seed: the same seed renders the same files byte for byte.
        /// Default for `nixos`: the topology's name.
        #[arg(long)]
        seed: Option<String>,
    },
    /// Bring a topology up, print how to reach it, write `nats` contexts; Ctrl-C tears it down.
    Up {
        topology: PathBuf,
        #[arg(long, value_enum, default_value = "process")]
        backend: BackendKind,
        /// Return once ready and leave the lab running (stop it with `natslab down`).
        #[arg(long)]
        detach: bool,
        /// Print the lab as JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Seconds the lab may take to become ready.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Keep the run directory (configs, logs) after teardown.
        #[arg(long)]
        keep: bool,
        #[arg(long, hide = true)]
        ready_file: Option<PathBuf>,
        /// Derive the lab's secrets from this seed (default: random; recorded in the run's inventory.json).
        #[arg(long)]
        seed: Option<String>,
        /// Container backend: a user-named image instead of the locally built one.
        #[arg(long)]
        image: Option<String>,
        /// Route every inter-node link through a link proxy, so `natslab fault` can partition, blackhole,
        /// slow down and cap links (process backend; netns and containers too, for latency and more).
        #[arg(long)]
        link_proxies: bool,
    },
    /// Do a fault on a running lab (`natslab up`, foreground or detached), e.g. `natslab fault kill hub-1`.
    Fault {
        /// The lab's run id (default: the only one running).
        #[arg(long)]
        run: Option<String>,
        #[command(subcommand)]
        fault: crate::control::FaultCmd,
    },
    /// Tear down a detached lab (by run id), or every lab and leftover with --all.
    Down {
        run: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// List running labs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Bring each topology up, run the scenario families against it, tear down, report. Without
    /// topologies: the reference topology on the process backend.
    Run {
        topologies: Vec<PathBuf>,
        /// Families to run (comma-separated); default all.
        #[arg(long, value_enum, value_delimiter = ',')]
        scenario: Vec<Family>,
        #[arg(long, value_enum, default_value = "process")]
        backend: BackendKind,
        #[arg(long)]
        junit: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Seconds each lab may take to become ready.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Keep run directories (configs, logs) after teardown.
        #[arg(long)]
        keep: bool,
        /// For `--backend attached`: the inventory of the running lab (its inventory.json). Without
        /// topologies, the inventory's own declared topology is checked.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Container backend: a user-named image instead of the locally built one.
        #[arg(long)]
        image: Option<String>,
    },
    /// The guide's check-leaf-health, done right: health, leaf connections, JetStream, message rates.
    Health {
        /// Monitoring URLs (http://host:8222), one per server.
        #[arg(long, required = true, num_args = 1..)]
        monitor: Vec<String>,
        /// Fail unless each server has at least one leaf connection to a hub.
        #[arg(long)]
        leaf: bool,
        /// Seconds over which message rates are computed.
        #[arg(long, default_value_t = 1.0)]
        window: f64,
    },
    /// Bytes on the wire and throughput of each leaf compression mode over a slow, capped leaf link.
    Wan {
        /// Added latency on the leaf link, each way.
        #[arg(long, default_value = "25ms")]
        latency: humantime::Duration,
        /// Bandwidth cap on the leaf link, bytes per second.
        #[arg(long, default_value_t = 512 * 1024)]
        bandwidth: u64,
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// process, container (root, local engine), or netns (root: the cap then comes from the kernel's htb).
        #[arg(long, value_enum, default_value_t = BackendKind::Process)]
        backend: BackendKind,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Measure time-to-ready of a topology against the floor (the same configs started by hand).
    Bench {
        #[arg(default_value = "topologies/cim-reference.yaml")]
        topology: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Skip the one full scenario run (wall time and failover times).
        #[arg(long)]
        no_suite: bool,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Runs the CLI; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    install_stop_handlers();
    let result = match cli.command {
        Command::Check { topologies } => check(&topologies),
        Command::Render { topology, out, format, seed } => render_cmd(&topology, &out, format, seed),
        Command::Up { topology, backend, detach, json, timeout, keep, ready_file, seed, image, link_proxies } => {
            let opts = UpOptions { backend, timeout: Duration::from_secs(timeout), keep, seed, image, proxied: link_proxies, ..UpOptions::default() };
            if detach {
                detach_up(&topology, &opts, json).await
            } else {
                up(&topology, &opts, json, ready_file.as_deref()).await
            }
        }
        Command::Down { run, all } => down(run.as_deref(), all).await,
        Command::Fault { run, fault } => fault_cmd(run.as_deref(), fault).await,
        Command::Status { json } => status(json).await,
        Command::Run { topologies, scenario, backend, junit, json, markdown, timeout, keep, inventory, image } => {
            let opts = UpOptions { backend, timeout: Duration::from_secs(timeout), keep, inventory, image, ..UpOptions::default() };
            let families = if scenario.is_empty() { Family::ALL.to_vec() } else { scenario };
            run_cmd(&topologies, &families, &opts, Outputs { junit, json, markdown }).await
        }
        Command::Health { monitor, leaf, window } => health_cmd(&monitor, leaf, window).await,
        Command::Wan { latency, bandwidth, messages, size, backend, json } => {
            let profile = crate::wan::Profile { latency: latency.into(), bandwidth_bytes_per_s: bandwidth, messages, size, backend };
            crate::wan::run(&profile, json.as_deref()).await.map(|_| 0)
        }
        Command::Bench { topology, runs, no_suite, json } => bench::run(&topology, runs, !no_suite, json.as_deref()).await.map(|_| 0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::Topology(_) => EXIT_USAGE,
                _ => EXIT_FAIL,
            }
        }
    }
}

fn load(path: &Path) -> Result<topology::Topology, Error> {
    Ok(topology::load_file(path)?)
}

/// Addresses for rendering outside a running lab: the process backend's scheme on slot 0.
fn nominal_addr(i: usize) -> NodeAddr {
    use crate::backend::slot::*;
    let ip = format!("127.77.0.{}", i + 1);
    NodeAddr { bind: ip.clone(), host: ip, client: CLIENT_PORT, cluster: CLUSTER_PORT, leaf: LEAF_PORT, http: HTTP_PORT }
}

fn check(paths: &[PathBuf]) -> Result<i32, Error> {
    let mut say = |m: &str| eprintln!("{m}");
    let server = server::find_or_install(&mut say)?;
    let mut failed = 0;
    for p in paths {
        let result = (|| -> Result<usize, Error> {
            let t = load(p)?;
            let dir = tempfile::tempdir().map_err(Error::io("create a temporary directory"))?;
            let plan = crate::lab::prepare(t, &server, |i, _| nominal_addr(i), &dir.path().join("run"))?;
            Ok(plan.nodes.len())
        })();
        match result {
            Ok(n) => println!("ok    {} ({n} nodes; every config passes nats-server {} -t)", p.display(), server.version),
            Err(e) => {
                failed += 1;
                println!("FAIL  {}\n{e}", p.display());
            }
        }
    }
    Ok(if failed == 0 { 0 } else { EXIT_USAGE })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderFormat {
    Conf,
    Nixos,
}

fn render_cmd(path: &Path, out: &Path, format: RenderFormat, seed: Option<String>) -> Result<i32, Error> {
    let t = load(path)?;
    files::mkdir(out)?;
    match format {
        RenderFormat::Conf => {
            let mut entropy = match &seed {
                Some(s) => Entropy::seeded(s),
                None => Entropy::random(),
            };
            let plan = Plan::new_with(t, "render".into(), Layout::same(out), |i, _| nominal_addr(i), &mut entropy)?;
            let configs = render::render(&plan);
            files::write_plan(&plan, &configs)?;
            println!("wrote {} node configs and their secrets to {}", configs.len(), out.display());
            for c in &configs {
                println!("  {}", plan.layout.host_config(&c.name).display());
            }
        }
        RenderFormat::Nixos => {
            let seed = seed.unwrap_or_else(|| t.name.clone());
            let plan = nixos::plan(t, &seed, out)?;
            let written = nixos::write(&plan)?;
            println!("wrote NixOS settings for {written} nodes, nodes.json and secrets to {} (seed {seed:?})", out.display());
        }
    }
    Ok(0)
}

/// Live progress on a terminal; plain lines elsewhere (CI logs).
struct TermProgress {
    bar: Option<indicatif::ProgressBar>,
    /// Without a terminal, a line only when the number of ready nodes changes.
    last_ready: std::sync::Mutex<Option<usize>>,
}

impl TermProgress {
    fn new() -> TermProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        TermProgress { bar, last_ready: std::sync::Mutex::new(None) }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for TermProgress {
    fn message(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
    fn waiting(&self, total: usize, waiting: &BTreeMap<String, String>) {
        let line = if waiting.is_empty() {
            format!("all {total} nodes ready")
        } else {
            let w: Vec<String> = waiting.iter().map(|(n, what)| format!("{n}: {what}")).collect();
            format!("ready {}/{total}; waiting for {}", total - waiting.len(), w.join("; "))
        };
        match &self.bar {
            Some(b) => b.set_message(line),
            None => {
                let ready = total - waiting.len();
                let mut last = self.last_ready.lock().unwrap_or_else(|e| e.into_inner());
                if *last != Some(ready) {
                    *last = Some(ready);
                    eprintln!("  {line}");
                }
            }
        }
    }
}

static STOP: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> = std::sync::OnceLock::new();

/// Installs the SIGINT/SIGTERM handlers at once, before anything starts: a signal that arrives before anyone
/// waits for it (e.g. right after readiness is announced) is remembered, never lost or left at an inherited
/// "ignore" disposition.
pub fn install_stop_handlers() {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async fn wait(s: Option<&mut tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = wait(int.as_mut()) => {}
            _ = wait(term.as_mut()) => {}
        }
        let _ = tx.send(true);
    });
    let _ = STOP.set(rx);
}

/// Resolves when the user asks us to stop (Ctrl-C or SIGTERM), at any time since `install_stop_handlers`.
pub async fn stop_requested() {
    match STOP.get() {
        Some(rx) => {
            let mut rx = rx.clone();
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn up(path: &Path, opts: &UpOptions, json: bool, ready_file: Option<&Path>) -> Result<i32, Error> {
    let t = match load(path) {
        Ok(t) => t,
        Err(e) => {
            if let Some(f) = ready_file {
                let _ = std::fs::write(f, format!("error: {e}"));
            }
            return Err(e);
        }
    };
    let progress = TermProgress::new();
    let started = Instant::now();
    let lab = tokio::select! {
        r = Lab::up(t, opts, &progress) => r,
        _ = stop_requested() => { progress.finish(); eprintln!("interrupted while starting; everything started was stopped"); return Ok(130); }
    };
    progress.finish();
    let mut lab = match lab {
        Ok(l) => l,
        Err(e) => {
            if let Some(f) = ready_file {
                let _ = std::fs::write(f, format!("error: {e}"));
            }
            return Err(e);
        }
    };
    let info = lab.describe_live().await;
    contexts::write(&info)?;
    let control = crate::control::dir_of(&info.dir);
    files::mkdir(&control)?;
    if let Some(f) = ready_file {
        let text = serde_json::to_string(&info).unwrap_or_default();
        files::write_secret(f, &text)?;
    } else {
        if json {
            println!("{}", serde_json::to_string_pretty(&info).unwrap_or_default());
        } else {
            print_lab(&info, started.elapsed());
            println!("\nFaults from another terminal: natslab fault --run {} kill|start|pause|resume|isolate|... (natslab fault --help)", info.run_id);
            println!("Ctrl-C to tear down.");
        }
    }
    // Serves `natslab fault` until asked to stop.
    tokio::select! {
        _ = stop_requested() => {}
        _ = crate::control::serve(&mut lab, &control) => {}
    }
    eprintln!("tearing down {}", info.run_id);
    contexts::remove(&info);
    lab.shutdown().await;
    Ok(0)
}

/// Starts `natslab up` as a background supervisor and returns once its lab is ready.
async fn detach_up(path: &Path, opts: &UpOptions, json: bool) -> Result<i32, Error> {
    let exe = std::env::current_exe().map_err(Error::io("find the natslab executable"))?;
    let ready = tempfile::Builder::new().prefix("natslab-ready").tempdir().map_err(Error::io("create a temporary directory"))?;
    let ready_file = ready.path().join("ready.json");
    let log = runs::root().join(format!("supervisor-{}.log", std::process::id()));
    files::mkdir(&runs::root())?;
    let out = std::fs::File::create(&log).map_err(Error::io(format!("create {}", log.display())))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up").arg(path).arg("--timeout").arg(opts.timeout.as_secs().to_string()).arg("--ready-file").arg(&ready_file);
    if opts.keep {
        cmd.arg("--keep");
    }
    if let Some(seed) = &opts.seed {
        cmd.arg("--seed").arg(seed);
    }
    if let Some(image) = &opts.image {
        cmd.arg("--image").arg(image);
    }
    if opts.proxied {
        cmd.arg("--link-proxies");
    }
    // The supervisor must bring up the same kind of lab the user asked for.
    if let Some(kind) = clap::ValueEnum::to_possible_value(&opts.backend) {
        cmd.arg("--backend").arg(kind.get_name());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(Error::io("dup"))?)
        .stderr(out);
    // Its own session: the supervisor must outlive this terminal's Ctrl-C.
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(Error::io("start the supervisor"))?;
    let deadline = Instant::now() + opts.timeout + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            if let Some(err) = text.strip_prefix("error: ") {
                let _ = child.wait();
                return Err(Error::Run(format!("the lab did not come up: {err}")));
            }
            if let Ok(info) = serde_json::from_str::<LabInfo>(&text) {
                if json {
                    println!("{}", serde_json::to_string_pretty(&info).unwrap_or_default());
                } else {
                    print_lab(&info, Duration::from_millis(info.ready_ms as u64));
                    println!("\nrunning in the background (supervisor pid {}); stop it with: natslab down {}", info.supervisor_pid, info.run_id);
                }
                return Ok(0);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(Error::Run(format!("the supervisor exited ({status}) before the lab was ready:\n{tail}")));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(Error::Run("the supervisor did not report readiness in time".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_lab(info: &LabInfo, took: Duration) {
    println!("lab {} ({}) ready in {} ms; run directory {}", info.run_id, info.topology, took.as_millis(), info.dir.display());
    println!();
    println!("{:<16} {:<5} {:<30} {:<30} ATTACHED TO", "NODE", "ROLE", "CLIENT URL", "MONITOR URL");
    for n in &info.nodes {
        let role = format!("{:?}", n.role).to_lowercase();
        println!("{:<16} {:<5} {:<30} {:<30} {}", n.name, role, n.client_url, n.monitor_url, n.hub.as_deref().unwrap_or("-"));
    }
    if !info.users.is_empty() {
        println!();
        println!("{:<40} {:<14} {:<12} SECRET", "NATS CONTEXT (nats --context NAME)", "ACCOUNT", "USER");
        for u in &info.users {
            let secret = u.access.creds.as_ref().or(u.access.password_file.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
            println!("{:<40} {:<14} {:<12} {}", u.context, u.account, u.user, secret);
        }
        println!("\ncontexts written to {}", contexts::dir().display());
    }
}

async fn status(json: bool) -> Result<i32, Error> {
    let labs = runs::running(&runs::root());
    if json {
        println!("{}", serde_json::to_string_pretty(&labs).unwrap_or_default());
        return Ok(0);
    }
    if labs.is_empty() {
        println!("no labs running");
    }
    for l in &labs {
        println!("{}  {} nodes  supervisor pid {}  {}", l.run_id, l.nodes.len(), l.supervisor_pid, l.dir.display());
    }
    Ok(0)
}

async fn fault_cmd(run: Option<&str>, fault: crate::control::FaultCmd) -> Result<i32, Error> {
    let live: Vec<LabInfo> = runs::running(&runs::root());
    let info = match run {
        Some(id) => live.into_iter().find(|i| i.run_id == id).ok_or_else(|| Error::Run(format!("fault: no running lab '{id}' (see `natslab status`)")))?,
        None if live.len() == 1 => live.into_iter().next().expect("one"),
        None => return Err(Error::Run(format!("fault: {} labs are running; name one with --run (see `natslab status`)", live.len()))),
    };
    let message = crate::control::ask(&info.dir, info.supervisor_pid, fault).await?;
    println!("{}: {message}", info.run_id);
    Ok(0)
}

async fn down(run: Option<&str>, all: bool) -> Result<i32, Error> {
    let root = runs::root();
    let entries = runs::list(&root);
    let chosen: Vec<_> = match (run, all) {
        (_, true) => entries,
        (Some(id), false) => {
            let v: Vec<_> = entries.into_iter().filter(|(p, _)| p.file_name().is_some_and(|n| n == id)).collect();
            if v.is_empty() {
                return Err(Error::Run(format!("down: no run '{id}' under {} (see `natslab status`)", root.display())));
            }
            v
        }
        (None, false) => {
            let live: Vec<_> = entries.into_iter().filter(|(_, i)| i.as_ref().is_some_and(|i| runs::alive(i.supervisor_pid))).collect();
            if live.len() != 1 {
                return Err(Error::Run(format!("down: {} labs are running; name one (see `natslab status`) or use --all", live.len())));
            }
            live
        }
    };
    for (dir, info) in &chosen {
        if let Some(i) = info {
            if runs::alive(i.supervisor_pid) && i.supervisor_pid != std::process::id() {
                stop_pid(i.supervisor_pid).await;
            }
            contexts::remove(i);
        }
        let _ = std::fs::remove_dir_all(dir);
        println!("removed {}", dir.display());
    }
    if all {
        // Logs of detached supervisors that are gone.
        for e in std::fs::read_dir(&root).into_iter().flatten().filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.strip_prefix("supervisor-").and_then(|n| n.strip_suffix(".log")).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !runs::alive(p)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let stray = crate::backend::process::kill_strays(&root);
        if stray > 0 {
            println!("killed {stray} stray nats-server process(es) of old runs");
        }
        netns_leftovers().await;
        // Containers and networks of runs whose supervisor died (`kill -9`, a crash), dangling build layers.
        if let Some(l) = crate::backend::container::remove_leftovers().await {
            if l.containers + l.networks + l.images > 0 {
                println!("removed {} container(s), {} network(s) and {} dangling image layer(s) of dead runs", l.containers, l.networks, l.images);
            }
        }
    }
    Ok(0)
}

/// Namespaces, links and processes of netns labs whose owner is gone (a run killed with SIGKILL).
async fn netns_leftovers() {
    let left = tokio::task::spawn_blocking(crate::backend::netns::remove_leftovers).await.unwrap_or_default();
    let r = &left.removed;
    if !left.is_empty() {
        println!(
            "removed {} network namespace(s), {} link(s) and {} process(es) of dead netns labs",
            r.namespaces.len(),
            r.links.len(),
            r.processes
        );
    }
    for f in &r.failures {
        eprintln!("warning: could not remove a netns leftover: {f}");
    }
}

/// SIGTERM, a grace period for an orderly teardown, then SIGKILL (its servers die with it: parent-death signal).
async fn stop_pid(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs::alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if runs::alive(pid) {
        let _ = kill(p, Signal::SIGKILL);
    }
}

pub struct Outputs {
    pub junit: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
}

/// One line per finished check, with the run's elapsed time.
struct CheckLines;

impl Observer for CheckLines {
    fn finished(&self, c: &Check, elapsed: Duration) {
        let verdict = match c.verdict {
            Verdict::Passed => "passed",
            Verdict::Violated => "VIOLATED",
            Verdict::Skipped => "skipped",
            Verdict::HarnessError => "HARNESS ERROR",
        };
        eprintln!("[{:>6.1}s] {:<9} {} ... {verdict} ({} ms)", elapsed.as_secs_f64(), c.family.name(), c.name, c.duration.as_millis());
        if !matches!(c.verdict, Verdict::Passed) {
            eprintln!("           expected: {}\n           observed: {}", c.expected, c.observed);
        }
    }
}

async fn run_cmd(paths: &[PathBuf], families: &[Family], opts: &UpOptions, out: Outputs) -> Result<i32, Error> {
    let targets = match (&opts.inventory, paths.is_empty()) {
        (Some(inv), true) if opts.backend == BackendKind::Attached => {
            let inventory = crate::inventory::Inventory::load(inv)?;
            vec![runner::Target { file: inv.display().to_string(), topology: inventory.topology }]
        }
        _ => runner::load_targets(paths)?,
    };
    let mut say = |m: &str| eprintln!("{m}");
    let server = server::find_or_install(&mut say)?;
    let progress = TermProgress::new();
    let work = runner::run_all(&targets, families, opts, &progress, &CheckLines, server.version.to_string());
    let report = tokio::select! {
        r = work => r,
        _ = stop_requested() => { progress.finish(); eprintln!("interrupted; every lab was torn down"); return Ok(130); }
    };
    progress.finish();
    write_reports(&report, &out)?;
    print_summary(&report);
    Ok(if report.ok() { 0 } else { EXIT_FAIL })
}

fn write_reports(report: &RunReport, out: &Outputs) -> Result<(), Error> {
    let write = |path: &Option<PathBuf>, text: String| -> Result<(), Error> {
        if let Some(p) = path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
            }
            std::fs::write(p, text).map_err(Error::io(format!("write {}", p.display())))?;
        }
        Ok(())
    };
    write(&out.junit, report::to_junit(report))?;
    write(&out.json, report.to_json())?;
    write(&out.markdown, report::to_markdown(report))?;
    Ok(())
}

fn print_summary(report: &RunReport) {
    println!();
    println!("{:<20} {:<10} {:>7} {:>9} {:>8} {:>14}", "TOPOLOGY", "FAMILY", "PASSED", "VIOLATED", "SKIPPED", "HARNESS ERROR");
    for run in &report.runs {
        if let Some(e) = &run.error {
            println!("{:<20} {:<10} lab did not come up: {e}", run.topology, "-");
            continue;
        }
        for (f, c) in report::family_counts(run) {
            println!("{:<20} {:<10} {:>7} {:>9} {:>8} {:>14}", run.topology, f.name(), c.passed, c.violated, c.skipped, c.harness_error);
        }
    }
    let timings = report.timings();
    if !timings.is_empty() {
        println!();
        println!("{:<24} {:>4} {:>9} {:>9} {:>9}", "TIMING", "N", "MIN", "MEDIAN", "MAX");
        for (k, s) in &timings {
            println!("{:<24} {:>4} {:>7.0}ms {:>7.0}ms {:>7.0}ms", k.trim_end_matches("_ms"), s.n, s.min_ms, s.median_ms, s.max_ms);
        }
    }
    let j = report.jepsen();
    if !j.is_empty() {
        let parts: Vec<String> = j.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        println!("\nJetStream checker: {}", parts.join(", "));
    }
    let c = report.counts();
    println!(
        "\n{}: {} passed, {} violated, {} skipped, {} harness errors in {:.1} s",
        if report.ok() { "PASS" } else { "FAIL" },
        c.passed,
        c.violated,
        c.skipped,
        c.harness_error,
        report.wall_ms / 1000.0
    );
}

async fn health_cmd(urls: &[String], leaf: bool, window: f64) -> Result<i32, Error> {
    let monitor = crate::probe::monitor::Monitor::new();
    let mut all_ok = true;
    for url in urls {
        match crate::scenario::health::assess(&monitor, url, Duration::from_secs_f64(window.max(0.05))).await {
            Ok(h) => all_ok &= crate::scenario::health::print(&h, leaf),
            Err(e) => {
                all_ok = false;
                println!("=== NATS health: {url} ===\n✗ monitoring endpoint: {e}\n=== NOT healthy ===");
            }
        }
    }
    Ok(if all_ok { 0 } else { EXIT_FAIL })
}
