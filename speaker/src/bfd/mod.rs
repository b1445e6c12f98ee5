//! Bidirectional Forwarding Detection for the BGP mode: single-hop BFD (RFC 5880, RFC 5881) in
//! Asynchronous mode, so that a router withdraws a dead node's routes within its detection time
//! (e.g. 100 ms × 3) instead of the BGP hold time, and so that this node tears a BGP session
//! down as fast when the router goes away.
//!
//! - [`packet`]: the Control packet, parsed with the reception checks of RFC 5880 §6.8.6, and
//!   built. Pure.
//! - [`session`]: the state machine (AdminDown, Down, Init, Up), timer negotiation, Poll/Final
//!   and jitter, as `handle(input, now) -> actions`. Pure: no sockets, no clock, randomness
//!   passed in.
//! - [`transport`]: the UDP sockets RFC 5881 asks for (port 3784, source ports 49152–65535,
//!   TTL 255 sent and required on receipt).
//! - [`runner`]: [`BfdSession`], a Tokio task per session that ties the three together and
//!   publishes [`BfdStatus`] through a `watch` channel for the BGP glue.
//!
//! Why our own implementation: the crates.io index has no `bfd` crate; `packet-dissector-bfd`
//! (MIT/Apache-2.0) only dissects packets for its capture framework, with no state machine or
//! timers, and `frameassembly` builds packets for captures. The `rust-bfd` project on GitHub is
//! not published on crates.io and is a whole daemon with its own event loop and sockets rather
//! than a pure state machine we could drive and test deterministically; the BFD of the holo
//! routing suite is not published separately either. What we need is small (no authentication,
//! no Echo, no Demand mode of our own), so it is written here against the RFCs.

pub mod packet;
pub mod runner;
pub mod session;
pub mod transport;

#[cfg(test)]
mod tests;

pub use packet::{ControlPacket, Diagnostic, ParseError, SessionState};
pub use runner::{BfdConfig, BfdSession, BfdStatus, StartError};
pub use session::{Action, Discard, Input, Jitter, Session, StateChange, Timers, TimersError};
