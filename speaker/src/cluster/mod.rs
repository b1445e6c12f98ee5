//! The election's inputs read from Kubernetes objects: speakers' Leases, Nodes, Services and
//! their EndpointSlices. Pure conversions; the watches that feed them are glue.

pub mod lease;
pub mod node;
pub mod service;
pub mod service_index;
