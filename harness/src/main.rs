use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("NATSLAB_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let code = natslab::cli::main(natslab::cli::Cli::parse()).await;
    std::process::exit(code);
}
