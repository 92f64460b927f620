use std::io::IsTerminal;

use clap::Parser;

/// Without `NATSLAB_LOG`: natslab's warnings, other crates' errors — but not async-nats's: the security
/// probes are refused on purpose, and each refusal is a check's observation, not an error to print.
const DEFAULT_LOG: &str = "error,natslab=warn,async_nats=off";

#[tokio::main]
async fn main() {
    // `natslab … | head` ends quietly, as Unix tools do, not with a panic on a closed stdout. (Dying here
    // is as safe as kill -9: the servers of a lab die with natslab.)
    // SAFETY: setting a signal's disposition to the default has no preconditions.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    let filter = match std::env::var("NATSLAB_LOG") {
        Ok(f) if !f.trim().is_empty() => tracing_subscriber::EnvFilter::new(f),
        _ => tracing_subscriber::EnvFilter::new(DEFAULT_LOG),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let code = natslab::cli::main(natslab::cli::Cli::parse()).await;
    std::process::exit(code);
}
