//! BGP mode's session core, without I/O: the speaker on each node keeps a BGP session with each
//! configured router and advertises the node's LoadBalancer IPs as /32 and /128 routes.
//!
//! Everything is driven by inputs carrying an explicit `now` and returns actions; the TCP and
//! Kubernetes glue carries them out. The parts:
//! - [`codec`]: BGP messages to bytes and back, over the `rustbgpd-wire` crate (the only module
//!   naming it; `docs/bgp-codec.md` says why that crate), framing ([`split_frame`]) and the
//!   NOTIFICATION each malformed message calls for.
//! - [`fsm`]: the RFC 4271 §8 state machine of one session ([`Session`]), initiating only.
//! - [`capabilities`]: what our OPEN offers and what a session negotiated ([`Negotiated`]).
//! - [`backoff`]: the connect-retry delay, exponential with caller-supplied jitter.
//! - [`update_packing`]: our routes ([`RouteAttributes`]) as the fewest UPDATEs of at most 4096
//!   bytes, withdrawals and End-of-RIB markers.
//! - [`rib_out`]: what one peer has from us, so only changes are sent ([`RibOut`]).
//! - [`advertisement`]: which prefixes this node advertises to which peer, from the same node,
//!   pool and Service facts the layer-2 election reads ([`advertisement::decide`]).
//!
//! The glue's loop for one peer: `Session::new(config)`, `handle(Input::ManualStart, ..)`;
//! carry out each [`Action`]; feed TCP events, each framed message (`Input::Received`) and
//! timer expiries back; call [`Session::set_routes`] whenever the routes to advertise change.

pub mod advertisement;
pub mod backoff;
pub mod capabilities;
pub mod codec;
pub mod fsm;
pub mod rib_out;
pub mod update_packing;

pub use backoff::{BackoffConfig, Jitter};
pub use capabilities::{Families, Family, Negotiated, PeerGracefulRestart};
pub use codec::{HeaderError, LargeCommunity, NO_ADVERTISE, NO_EXPORT, split_frame};
pub use fsm::{Action, Config, ConfigError, Input, Session, SessionError, State, TimerKind};
pub use rib_out::{RibOut, RouteTable};
pub use update_packing::{NextHop, RouteAttributes, SessionEncoding, Unsendable};
