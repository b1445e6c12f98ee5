//! Runs the Kubernetes API server double until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ferrolb_tests::apiserver::{ApiServerConfig, ApiServerHandle, ServiceStack, write_kubeconfig};

#[derive(Parser)]
#[command(about = "In-memory Kubernetes API server double for FerroLB tests")]
struct Args {
    /// Address to serve on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the double.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Changes kept for resuming watches; older resourceVersions get 410.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_interval_seconds: u64,
    /// Service IP families of the simulated cluster: ipv4, ipv6, dual (IPv4 first) or
    /// dual-ipv6-primary.
    #[arg(long, default_value = "dual")]
    service_stack: ServiceStack,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ApiServerConfig {
        history_limit: args.history_limit,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_seconds.max(1)),
        service_stack: args.service_stack,
        ..ApiServerConfig::default()
    };
    let server = ApiServerHandle::start(args.listen, config).await?;
    if let Some(path) = &args.kubeconfig_out {
        write_kubeconfig(path, &server.url())?;
    }
    println!("ferrolb-apiserver listening on {}", server.url());
    // SIGTERM as well as Ctrl-C, so harnesses that stop it get a clean exit
    // (and the temporary kubeconfig is removed).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
