//! FerroLB speaker binary.

use anyhow::Context;
use clap::Parser;
use ferrolb_speaker::cli::{Args, LogFormat};

// The main loop runs on the main thread and the status writer, Lease renewer and HTTP server on
// one worker; the packet path has its own reader threads. More workers only add stacks and
// heap arenas.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timing = args.lease_timing().context("lease timing flags")?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    tracing::info!(node = %args.node_name, namespace = %args.namespace, ?timing, "ferrolb-speaker starting");
    ferrolb_speaker::runtime::run(args, timing).await
}
