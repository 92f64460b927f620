use std::io::IsTerminal;

use clap::Parser;

/// Without `NATSLAB_LOG`: natslab's warnings, other crates' errors — but not async-nats's: the security
/// probes are refused on purpose, and each refusal is a check's observation, not an error to print.
const DEFAULT_LOG: &str = "error,natslab=warn,async_nats=off";

#[tokio::main]
async fn main() {
    // SIGPIPE stays ignored (Rust's default): clients write to sockets with writev, which raises it when
    // the peer has closed, and its default action would kill natslab in the middle of a lab. A closed
    // stdout (`natslab … | head`) is handled where natslab prints (`cli::say!`).
    let filter = match std::env::var("NATSLAB_LOG") {
        Ok(f) if !f.trim().is_empty() => tracing_subscriber::EnvFilter::new(f),
        _ => tracing_subscriber::EnvFilter::new(DEFAULT_LOG),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let code = natslab::cli::main(natslab::cli::Cli::parse()).await;
    std::process::exit(code);
}
