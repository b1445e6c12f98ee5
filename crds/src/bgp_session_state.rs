//! `BGPSessionState`: one node's session with one BGPPeer, as that node's speaker sees it.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::schema::{self, OBJECT_NAME_PATTERN};

/// Labels on every BGPSessionState, so a speaker lists its own and the controller those of a
/// node or peer that went away.
pub const NODE_LABEL: &str = "ferrolb.io/node";
pub const PEER_LABEL: &str = "ferrolb.io/bgp-peer";

/// A label value standing for `name`: the name itself when it fits a label (63 characters),
/// else its first 46 characters and a hash of the whole, so long node names still select.
pub fn label_value(name: &str) -> String {
    crate::naming::bounded(name, 63)
}

/// The BGPSessionState of `node`'s session with `peer`: "<node>-<peer>", shortened with a hash
/// where that exceeds an object name's 253 characters.
pub fn object_name(node: &str, peer: &str) -> String {
    crate::naming::bounded(&format!("{node}-{peer}"), 253)
}

/// The state of a node's BGP session with a peer. Lives in the speakers' namespace, is written
/// by the speaker on that node, and is owned by the Node (so it goes with the node); the speaker
/// deletes it when the peer goes or stops selecting the node.
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPSessionState",
    plural = "bgpsessionstates",
    singular = "bgpsessionstate",
    shortname = "bgpss",
    category = "ferrolb",
    namespaced,
    status = "BGPSessionStateStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "One node's BGP session with one BGPPeer: RFC 4271 state, last error, routes advertised and BFD state. Written by the speaker on that node.",
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "The node whose session this is"
    ),
    printcolumn(
        name = "Peer",
        type_ = "string",
        json_path = ".status.peer",
        description = "The BGPPeer"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "RFC 4271 session state"
    ),
    printcolumn(
        name = "Advertised",
        type_ = "integer",
        json_path = ".status.advertisedPrefixes",
        description = "Prefixes advertised on the session"
    ),
    printcolumn(
        name = "BFD",
        type_ = "string",
        json_path = ".status.bfdState",
        priority = 1,
        description = "BFD session state, when BFD is on"
    ),
    printcolumn(
        name = "Last Error",
        type_ = "string",
        json_path = ".status.lastError",
        priority = 1,
        description = "Why the session last failed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct BGPSessionStateSpec {}

/// RFC 4271 §8 session states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SessionState {
    #[default]
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// RFC 5880 §4.1 BFD session states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BfdState {
    AdminDown,
    Down,
    Init,
    Up,
}

/// What the speaker reports about the session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateStatus {
    /// The node whose session this is.
    #[schemars(length(max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub node: String,
    /// The BGPPeer.
    #[schemars(length(max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub peer: String,
    /// The router's address and port, as dialled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 48))]
    pub peer_address: String,
    /// The node's address on the session (the next hop it advertises), once connected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 48))]
    pub local_address: String,
    /// The RFC 4271 state.
    pub state: SessionState,
    /// When the session entered this state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub since: Option<String>,
    /// Why the session last failed: wrong ASN, bad password, peer unreachable, hold timer
    /// expired, malformed message, or the NOTIFICATION the router sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub last_error: String,
    /// When lastError happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub last_error_time: Option<String>,
    /// Prefixes this node advertises on the session.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub advertised_prefixes: u64,
    /// The negotiated hold time in seconds, while Established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<u16>,
    /// The BFD session's state, when the peer has bfd set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_state: Option<BfdState>,
}

fn time_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({"type": "string", "format": "date-time", "maxLength": 64}))
}
