//! FerroLB controller: assigns external IPs from IPAddressPools to LoadBalancer Services.
//!
//! The allocation engine ([`allocator`]), the decisions ([`state`]) and the verdicts on BGP
//! configuration ([`bgp_config`]) are pure; [`runtime`] connects them to the Kubernetes API.

pub mod allocator;
pub mod bgp_config;
pub mod cli;
pub mod heartbeat_key;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pools;
pub mod runtime;
pub mod service;
pub mod state;

pub use runtime::run;

/// The whole process for `args`: Tokio's default multi-threaded runtime around [`run`]. The
/// `ferrolb-controller` binary and the image's multi-call `ferrolb` binary both start here.
pub fn main_process(args: cli::Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
