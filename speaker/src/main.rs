//! FerroLB speaker binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    ferrolb_speaker::main_process(ferrolb_speaker::cli::Args::parse())
}
