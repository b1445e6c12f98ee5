//! FerroLB at work in one command (run by `scripts/demo`, as root): see [`ferrolb_tests::demo`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ferrolb-demo",
    about = "FerroLB in network namespaces: three nodes, a client, the API server double, the controller and the speakers; a Service, curl through its IPs, and a failover"
)]
struct Args {
    /// Run every step once, then clean up and exit: 0 when every step worked, 1 otherwise.
    #[arg(long)]
    once: bool,
    /// The FerroLB source tree (for config/).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    repo: PathBuf,
    /// Use the binaries next to this one as they are (scripts/demo has just built them).
    #[arg(long)]
    prebuilt: bool,
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !is_root() {
        eprintln!(
            "The demo needs root: it builds network namespaces (ip netns) for three nodes and a client, \
             and the speakers answer ARP and NDP with raw sockets there.\n\
             Without root, scripts/run-local shows the controller against the API server double."
        );
        return ExitCode::from(2);
    }
    let options = ferrolb_tests::demo::Options {
        once: args.once,
        repo: args.repo,
        prebuilt: args.prebuilt,
    };
    match ferrolb_tests::demo::run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nThe demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
