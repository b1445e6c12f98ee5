//! Who announces which external IP: candidate nodes and the rendezvous choice among the ones
//! counted alive (by the heartbeats, [`crate::heartbeat`]). All pure: the cluster's state comes
//! in as plain values.

pub mod candidates;
pub mod node_interfaces;
pub mod owners;
pub mod rendezvous;

pub use candidates::{
    EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, NodeFacts, PoolFacts, announcing_interfaces,
    candidate_interfaces, gratuitous_interval,
};
pub use node_interfaces::{INTERFACES_ANNOTATION, PublishedInterface};
pub use owners::{Alive, ClusterView, Election, Group, Owner, ServiceFacts, ServiceId, Services};
