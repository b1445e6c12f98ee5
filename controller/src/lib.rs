//! FerroLB controller: assigns external IPs from IPAddressPools to LoadBalancer Services.
//!
//! The allocation engine ([`allocator`]) and the decisions ([`state`]) are pure; [`runtime`]
//! connects them to the Kubernetes API.

pub mod allocator;
pub mod cli;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pools;
pub mod runtime;
pub mod service;
pub mod state;

pub use runtime::run;
