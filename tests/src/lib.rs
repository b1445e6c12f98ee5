//! FerroLB end-to-end harness.
//!
//! The main piece is [`apiserver`], an in-memory double of the Kubernetes API
//! server that kube-rs clients and kubectl can talk to, and [`harness`], which
//! lets the same conformance tests run against either the double or a real
//! cluster named by `FERROLB_TEST_KUBECONFIG`.

pub mod apiserver;
pub mod bgp_sessions;
pub mod bird;
pub mod components;
pub mod demo;
pub mod frr;
pub mod harness;
pub mod keepalived;
pub mod netlab;
pub mod router_link;
