//! Who announces which external IP: liveness from Leases, candidate nodes, the rendezvous
//! choice among them, and when a speaker must stop answering. All pure: time comes in as
//! `Instant`s on this node's monotonic clock, and the cluster's state as plain values.

pub mod candidates;
pub mod fence;
pub mod liveness;
pub mod node_interfaces;
pub mod owners;
pub mod rendezvous;

pub use candidates::{
    EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, NodeFacts, PoolFacts, announcing_interfaces,
    gratuitous_interval,
};
pub use fence::{LeaseTiming, LeaseTimingError, SelfFence};
pub use liveness::{LeaseEvent, Liveness};
pub use node_interfaces::{INTERFACES_ANNOTATION, PublishedInterface};
pub use owners::{ClusterView, Election, Group, Owner, ServiceFacts, ServiceId};
