//! `ferrolb-migrate`: see `ferrolb-migrate --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    ferrolb_migrate::run(ferrolb_migrate::Args::parse())
}
