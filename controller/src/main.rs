//! FerroLB controller binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    ferrolb_controller::main_process(ferrolb_controller::cli::Args::parse())
}
