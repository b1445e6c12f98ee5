//! Liveness on the LAN: the heartbeats speakers send each other on every network they announce
//! on, and what each speaker concludes from them. The protocol and its reasoning:
//! `docs/heartbeat-protocol.md`.

pub mod membership;
pub mod replay;
pub mod timing;
pub mod wire;

#[cfg(test)]
mod tests;

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

pub use membership::{Membership, Outgoing};
pub use replay::{Replay, ReplayGuard};
pub use timing::{HeartbeatTiming, HeartbeatTimingError};
pub use wire::{DecodeError, Heartbeat, Kind, NodeId};

/// Separates node ids from the rendezvous scores, which use the same hash.
const NODE_ID_DOMAIN: &[u8] = b"ferrolb.io/heartbeat-node/v1\0";

/// The id heartbeats carry for a node: SipHash-1-3 with fixed keys of the domain and the node's
/// name. Every speaker must compute the same id for the same name, in any version.
pub fn node_id(name: &str) -> NodeId {
    let mut hasher = SipHasher13::new_with_keys(0x6665_7272_6f6c_6231, 0x6862_2d6e_6f64_6531);
    hasher.write(NODE_ID_DOMAIN);
    hasher.write(name.as_bytes());
    NodeId(hasher.finish())
}
