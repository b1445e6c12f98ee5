//! One program for FerroLB's image: the controller and the speaker share most of their code
//! (Kubernetes client, TLS, HTTP, Tokio), so one binary holds both for about the size of one.
//! It runs the component its name says (`ferrolb-controller`, `ferrolb-speaker`: the image links
//! both names to it), or the one named by its first argument (`ferrolb controller ...`).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;
use ferrolb::Component;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let Some(component) = ferrolb::pick(&mut args) else {
        eprintln!("{}", ferrolb::USAGE);
        return ExitCode::from(2);
    };
    let outcome = match component {
        Component::Controller => {
            ferrolb_controller::main_process(ferrolb_controller::cli::Args::parse_from(args))
        }
        Component::Speaker => {
            ferrolb_speaker::main_process(ferrolb_speaker::cli::Args::parse_from(args))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}
