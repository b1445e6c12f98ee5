//! FerroLB controller binary.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrolb_controller::run(ferrolb_controller::cli::Args::parse()).await
}
