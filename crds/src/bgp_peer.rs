//! `BGPPeer`: a router the speakers open BGP sessions to. Field names are MetalLB's
//! (`metallb.io/v1beta2` BGPPeer), so configurations and the migration tool carry over.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::duration;
use crate::schema::{self, OBJECT_NAME_PATTERN};
use crate::selector::{LabelSelector, any_selects};

/// The BGP port (RFC 4271 §8.2.1).
pub const DEFAULT_PEER_PORT: u16 = 179;
/// RFC 4271 §10's suggested hold time, and MetalLB's default.
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// The shortest non-zero hold time RFC 4271 §4.2 allows.
pub const MIN_HOLD_TIME: Duration = Duration::from_secs(3);
/// The hold time field is 16 bits of seconds.
pub const MAX_HOLD_TIME: Duration = Duration::from_secs(65535);
/// Connection attempts back off exponentially up to this unless connectTime says otherwise.
pub const DEFAULT_CONNECT_TIME: Duration = Duration::from_secs(60);
/// AS_TRANS (RFC 6793): stands in for a 4-octet AS towards old speakers, never anyone's own.
pub const AS_TRANS: u32 = 23456;
/// The key of the password in `passwordSecret` when none is named (MetalLB's convention).
pub const DEFAULT_PASSWORD_KEY: &str = "password";
/// TCP MD5 keys are at most 80 bytes (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_PASSWORD_LENGTH: usize = 80;

/// A BGP router that selected nodes peer with.
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    shortname = "bgpp",
    category = "ferrolb",
    status = "BGPPeerStatus",
    derive = "PartialEq",
    doc = "A BGP router that the speakers on selected nodes open sessions to and advertise LoadBalancer IPs to.",
    printcolumn(
        name = "Peer",
        type_ = "string",
        json_path = ".spec.peerAddress",
        description = "The router's address"
    ),
    printcolumn(
        name = "Peer-ASN",
        type_ = "integer",
        json_path = ".spec.peerASN",
        description = "The router's AS number"
    ),
    printcolumn(
        name = "My-ASN",
        type_ = "integer",
        json_path = ".spec.myASN",
        description = "The nodes' AS number"
    ),
    printcolumn(
        name = "BFD",
        type_ = "string",
        json_path = ".spec.bfd",
        description = "BFD intervals (ms) and multiplier, when BFD is on"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1,
        description = "Whether the peer is valid"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = peer_rules)]
pub struct BGPPeerSpec {
    /// The AS number the nodes speak as (4-octet, RFC 6793).
    #[serde(rename = "myASN")]
    #[schemars(schema_with = "asn_schema")]
    pub my_asn: u32,
    /// The router's AS number. Equal to myASN: iBGP; different: eBGP.
    #[serde(rename = "peerASN")]
    #[schemars(schema_with = "asn_schema")]
    pub peer_asn: u32,
    /// The router's IPv4 or IPv6 address.
    #[schemars(schema_with = "peer_address_schema")]
    pub peer_address: String,
    /// The router's BGP port.
    #[serde(default = "default_peer_port", skip_serializing_if = "is_default_port")]
    #[schemars(schema_with = "peer_port_schema")]
    pub peer_port: u16,
    /// The local address to connect from; it must be one of the node's. Unset: the kernel picks
    /// the source by its routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "source_address_schema")]
    pub source_address: Option<String>,
    /// The hold time offered in OPEN (the lower of both sides' wins): 0s for no keepalives and no
    /// hold timer, else 3s to 65535s. Whole seconds; fractions are dropped.
    #[serde(
        default = "default_hold_time",
        skip_serializing_if = "is_default_hold_time"
    )]
    #[schemars(schema_with = "hold_time_schema")]
    pub hold_time: BgpDuration,
    /// How often to send KEEPALIVE; shorter than holdTime. Unset: a third of the negotiated hold
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "keepalive_time_schema")]
    pub keepalive_time: Option<BgpDuration>,
    /// The longest wait between connection attempts (1s to 65535s); attempts back off
    /// exponentially from 1s up to it. Unset: 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "connect_time_schema")]
    pub connect_time: Option<BgpDuration>,
    /// For eBGP, whether the router may be more than one hop away (IP TTL 255 instead of 1).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ebgp_multi_hop: bool,
    /// The BGP identifier to send. Unset: the node's IPv4 address on the session (or, for a
    /// session over IPv6, the node's first IPv4 address).
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "router_id_schema")]
    pub router_id: Option<String>,
    /// The TCP MD5 password (RFC 2385), from a Secret in the speakers' namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecret>,
    /// Nodes that peer with this router. Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selectors: Vec<LabelSelector>,
    /// Bidirectional Forwarding Detection (RFC 5880, single hop RFC 5881) on the session: the
    /// router drops a dead node's routes within transmitInterval × detectMultiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSettings>,
    /// Offer graceful restart (RFC 4724): the router keeps this node's routes while the speaker
    /// restarts, for up to 120s.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_graceful_restart: bool,
}

fn default_peer_port() -> u16 {
    DEFAULT_PEER_PORT
}

fn default_hold_time() -> BgpDuration {
    BgpDuration(DEFAULT_HOLD_TIME)
}

fn is_default_port(port: &u16) -> bool {
    *port == DEFAULT_PEER_PORT
}

fn is_default_hold_time(hold: &BgpDuration) -> bool {
    hold.0 == DEFAULT_HOLD_TIME
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The Secret and key holding a session's TCP MD5 password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecret {
    /// The Secret's name, in the speakers' namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// The key within the Secret. Unset: "password".
    #[serde(
        default = "default_password_key",
        skip_serializing_if = "is_default_key"
    )]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_password_key() -> String {
    DEFAULT_PASSWORD_KEY.to_owned()
}

fn is_default_key(key: &str) -> bool {
    key == DEFAULT_PASSWORD_KEY
}

/// BFD timers, in milliseconds as MetalLB's BFDProfile writes them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdSettings {
    /// The shortest interval between BFD packets this node can receive, in ms (10 to 60000).
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: u32,
    /// The interval at which this node would like to send BFD packets, in ms (10 to 60000).
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: u32,
    /// Packets missed in a row before the session is declared down (2 to 255).
    #[serde(default = "default_detect_multiplier")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: u8,
}

/// MetalLB's BFDProfile defaults.
pub const DEFAULT_BFD_INTERVAL_MS: u32 = 300;
pub const DEFAULT_DETECT_MULTIPLIER: u8 = 3;

fn default_bfd_interval() -> u32 {
    DEFAULT_BFD_INTERVAL_MS
}

fn default_detect_multiplier() -> u8 {
    DEFAULT_DETECT_MULTIPLIER
}

impl Default for BfdSettings {
    fn default() -> Self {
        Self {
            receive_interval: DEFAULT_BFD_INTERVAL_MS,
            transmit_interval: DEFAULT_BFD_INTERVAL_MS,
            detect_multiplier: DEFAULT_DETECT_MULTIPLIER,
        }
    }
}

impl BfdSettings {
    pub fn receive_interval(&self) -> Duration {
        Duration::from_millis(self.receive_interval.into())
    }

    pub fn transmit_interval(&self) -> Duration {
        Duration::from_millis(self.transmit_interval.into())
    }

    /// How long after the last packet the router declares this node gone, at these settings.
    pub fn detection_time(&self) -> Duration {
        self.transmit_interval() * u32::from(self.detect_multiplier)
    }
}

fn asn_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": u32::MAX,
        "x-kubernetes-validations": [schema::rule(
            &format!("self != {AS_TRANS}"),
            "AS 23456 is AS_TRANS (RFC 6793), which stands in for 4-octet AS numbers and is nobody's own",
        )],
    }))
}

fn ip_text_schema(description: &str, extra_rules: Vec<serde_json::Value>) -> Schema {
    let mut rules = vec![schema::rule_with_message_expression(
        "isIP(self)",
        "'\"' + self + '\" is not an IPv4 or IPv6 address'",
    )];
    rules.extend(extra_rules);
    schema::from_json(json!({
        "type": "string",
        "description": description,
        "minLength": 2,
        "maxLength": 39,
        "x-kubernetes-validations": rules,
    }))
}

fn unicast_rule(what: &str) -> serde_json::Value {
    schema::rule_with_message_expression(
        "!isIP(self) || !(ip(self).isUnspecified() || ip(self).isLoopback() || ip(self).isLinkLocalUnicast() || ip(self).isLinkLocalMulticast())",
        &format!(
            "'{what} ' + self + ' is unspecified, loopback or link-local; use a routable address'"
        ),
    )
}

fn peer_address_schema(_: &mut SchemaGenerator) -> Schema {
    ip_text_schema(
        "The router's IPv4 or IPv6 address.",
        vec![unicast_rule("peerAddress")],
    )
}

fn source_address_schema(_: &mut SchemaGenerator) -> Schema {
    ip_text_schema(
        "The local address to connect from; it must be one of the node's. Unset: the kernel picks the source by its routes.",
        vec![unicast_rule("sourceAddress")],
    )
}

fn router_id_schema(_: &mut SchemaGenerator) -> Schema {
    ip_text_schema(
        "The BGP identifier to send, written as an IPv4 address. Unset: the node's IPv4 address.",
        vec![schema::rule_with_message_expression(
            "!isIP(self) || (ip(self).family() == 4 && !ip(self).isUnspecified())",
            "'routerID ' + self + ' must be a non-zero IPv4 address'",
        )],
    )
}

fn peer_port_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "integer",
        "description": "The router's BGP port.",
        "minimum": 1,
        "maximum": 65535,
        "default": DEFAULT_PEER_PORT,
    }))
}

fn duration_field(description: &str, default: Option<&str>, rule: &str, message: &str) -> Schema {
    let mut value = json!({
        "type": "string",
        "description": description,
        "maxLength": duration::MAX_LENGTH,
        "pattern": duration::PATTERN,
        "x-kubernetes-validations": [schema::rule_with_message_expression(rule, message)],
    });
    if let Some(default) = default {
        value["default"] = json!(default);
    }
    schema::from_json(value)
}

fn hold_time_schema(_: &mut SchemaGenerator) -> Schema {
    duration_field(
        "The hold time offered in OPEN (the lower of both sides' wins): 0s for no keepalives and no hold timer, else 3s to 65535s. Whole seconds; fractions are dropped.",
        Some("90s"),
        "duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",
        "'holdTime ' + self + ' must be 0s (no hold timer) or between 3s and 65535s'",
    )
}

fn keepalive_time_schema(_: &mut SchemaGenerator) -> Schema {
    duration_field(
        "How often to send KEEPALIVE; shorter than holdTime. Unset: a third of the negotiated hold time.",
        None,
        "duration(self) >= duration('1s') && duration(self) <= duration('65535s')",
        "'keepaliveTime ' + self + ' must be between 1s and 65535s'",
    )
}

fn connect_time_schema(_: &mut SchemaGenerator) -> Schema {
    duration_field(
        "The longest wait between connection attempts (1s to 65535s); attempts back off exponentially from 1s up to it. Unset: 60s.",
        None,
        "duration(self) >= duration('1s') && duration(self) <= duration('65535s')",
        "'connectTime ' + self + ' must be between 1s and 65535s'",
    )
}

fn peer_rules(schema: &mut Schema) {
    schema::add_rules(
        schema,
        [
            schema::rule(
                "!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)",
                "keepaliveTime must be shorter than holdTime",
            ),
            schema::rule(
                "!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",
                "sourceAddress and peerAddress must be of the same IP family",
            ),
            schema::rule(
                "!has(self.bfd) || !has(self.bfd.transmitInterval) || !has(self.bfd.detectMultiplier) || self.bfd.transmitInterval * self.bfd.detectMultiplier <= 600000",
                "bfd transmitInterval × detectMultiplier must be at most 10 minutes",
            ),
        ],
    );
}

/// A BGP timer written as a Go duration ("90s", "1m30s"), as MetalLB's fields are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BgpDuration(pub Duration);

impl BgpDuration {
    /// The duration in the whole seconds BGP carries.
    pub fn whole_seconds(&self) -> Duration {
        Duration::from_secs(self.0.as_secs())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as \"90s\" or \"1m30s\"")]
pub struct BgpDurationError(pub String);

impl FromStr for BgpDuration {
    type Err = BgpDurationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        duration::parse(text)
            .map(Self)
            .ok_or_else(|| BgpDurationError(text.to_owned()))
    }
}

/// Whole seconds as "90s", the way BGP timers are usually written; anything else as Go would.
impl fmt::Display for BgpDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            f.write_str(&duration::format(self.0))
        }
    }
}

impl Serialize for BgpDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BgpDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for BgpDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BgpDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::from_json(json!({
            "type": "string",
            "maxLength": duration::MAX_LENGTH,
            "pattern": duration::PATTERN,
        }))
    }
}

/// Condition type and reasons of `BGPPeer` status.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const REASON_VALID: &str = "Valid";
    pub const REASON_INVALID: &str = "InvalidSpec";
    pub const REASON_DUPLICATE: &str = "DuplicatePeer";
}

/// What the controller reports about a peer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready is True when the spec is usable and no other BGPPeer names the same router for
    /// the same nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// What is wrong with a peer's spec: what the schema refuses, for objects that reached the
/// cluster before it did (or through a server that skipped it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerSpecError {
    #[error("{field} {value} is not a valid AS number (1 to 4294967295, not AS_TRANS 23456)")]
    Asn { field: &'static str, value: u32 },
    #[error("{field} {value:?} is not a routable IP address")]
    Address { field: &'static str, value: String },
    #[error("sourceAddress {local} and peerAddress {peer} are of different IP families")]
    SourceFamily { local: IpAddr, peer: IpAddr },
    #[error("holdTime {0} must be 0s or between 3s and 65535s")]
    HoldTime(BgpDuration),
    #[error("keepaliveTime {keepalive} must be at least 1s and shorter than holdTime {hold}")]
    KeepaliveTime {
        keepalive: BgpDuration,
        hold: BgpDuration,
    },
    #[error("connectTime {0} must be between 1s and 65535s")]
    ConnectTime(BgpDuration),
    #[error("routerID {0:?} must be a non-zero IPv4 address")]
    RouterId(String),
    #[error(
        "bfd intervals must be 10 to 60000 ms and detectMultiplier 2 to 255 (got {transmit} ms, {receive} ms, ×{multiplier})"
    )]
    Bfd {
        transmit: u32,
        receive: u32,
        multiplier: u8,
    },
    #[error("peerPort must not be 0")]
    Port,
}

/// A peer's spec with every default applied and every value checked: what a session runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub my_asn: u32,
    pub peer_asn: u32,
    pub peer_address: IpAddr,
    pub peer_port: u16,
    pub source_address: Option<IpAddr>,
    /// Zero: no hold timer and no keepalives.
    pub hold_time: Duration,
    /// Unset: a third of the negotiated hold time.
    pub keepalive_time: Option<Duration>,
    pub connect_time: Duration,
    pub ebgp_multi_hop: bool,
    pub router_id: Option<Ipv4Addr>,
    pub password_secret: Option<PasswordSecret>,
    pub bfd: Option<BfdSettings>,
    pub graceful_restart: bool,
}

impl PeerSettings {
    pub fn is_ebgp(&self) -> bool {
        self.my_asn != self.peer_asn
    }
}

fn routable(field: &'static str, text: &str) -> Result<IpAddr, PeerSpecError> {
    let bad = || PeerSpecError::Address {
        field,
        value: text.to_owned(),
    };
    let address: IpAddr = text.parse().map_err(|_| bad())?;
    let link_local = match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_multicast(),
    };
    if address.is_unspecified() || address.is_loopback() || link_local {
        return Err(bad());
    }
    Ok(address)
}

fn valid_asn(field: &'static str, value: u32) -> Result<u32, PeerSpecError> {
    if value == 0 || value == AS_TRANS {
        Err(PeerSpecError::Asn { field, value })
    } else {
        Ok(value)
    }
}

impl BGPPeerSpec {
    /// The spec with defaults applied, or everything wrong with it.
    pub fn settings(&self) -> Result<PeerSettings, Vec<PeerSpecError>> {
        let mut errors = Vec::new();
        let mut check = |result: Result<(), PeerSpecError>| {
            if let Err(error) = result {
                errors.push(error);
            }
        };
        check(valid_asn("myASN", self.my_asn).map(drop));
        check(valid_asn("peerASN", self.peer_asn).map(drop));
        check(if self.peer_port == 0 {
            Err(PeerSpecError::Port)
        } else {
            Ok(())
        });
        let peer_address = routable("peerAddress", &self.peer_address);
        let source_address = self
            .source_address
            .as_deref()
            .map(|text| routable("sourceAddress", text))
            .transpose();
        if let (Ok(peer), Ok(Some(source))) = (&peer_address, &source_address)
            && peer.is_ipv4() != source.is_ipv4()
        {
            check(Err(PeerSpecError::SourceFamily {
                local: *source,
                peer: *peer,
            }));
        }
        let hold = self.hold_time.whole_seconds();
        if hold != Duration::ZERO && !(MIN_HOLD_TIME..=MAX_HOLD_TIME).contains(&hold) {
            check(Err(PeerSpecError::HoldTime(self.hold_time)));
        }
        if let Some(keepalive) = self.keepalive_time {
            let seconds = keepalive.whole_seconds();
            let too_long = hold != Duration::ZERO && seconds >= hold;
            if seconds < Duration::from_secs(1) || seconds > MAX_HOLD_TIME || too_long {
                check(Err(PeerSpecError::KeepaliveTime {
                    keepalive,
                    hold: self.hold_time,
                }));
            }
        }
        let connect_time = self.connect_time.map_or(DEFAULT_CONNECT_TIME, |c| c.0);
        if !(Duration::from_secs(1)..=MAX_HOLD_TIME).contains(&connect_time) {
            check(Err(PeerSpecError::ConnectTime(BgpDuration(connect_time))));
        }
        let router_id = match self.router_id.as_deref() {
            None => Ok(None),
            Some(text) => match text.parse::<Ipv4Addr>() {
                Ok(id) if !id.is_unspecified() => Ok(Some(id)),
                _ => Err(PeerSpecError::RouterId(text.to_owned())),
            },
        };
        if let Some(bfd) = &self.bfd {
            let interval_ok = |ms: u32| (10..=60000).contains(&ms);
            if !interval_ok(bfd.transmit_interval)
                || !interval_ok(bfd.receive_interval)
                || bfd.detect_multiplier < 2
            {
                check(Err(PeerSpecError::Bfd {
                    transmit: bfd.transmit_interval,
                    receive: bfd.receive_interval,
                    multiplier: bfd.detect_multiplier,
                }));
            }
        }
        let (peer_address, source_address, router_id) =
            match (peer_address, source_address, router_id) {
                (Ok(peer), Ok(source), Ok(id)) if errors.is_empty() => (peer, source, id),
                (peer, source, id) => {
                    errors.extend(peer.err());
                    errors.extend(source.err());
                    errors.extend(id.err());
                    return Err(errors);
                }
            };
        Ok(PeerSettings {
            my_asn: self.my_asn,
            peer_asn: self.peer_asn,
            peer_address,
            peer_port: self.peer_port,
            source_address,
            hold_time: hold,
            keepalive_time: self.keepalive_time.map(|k| k.whole_seconds()),
            connect_time,
            ebgp_multi_hop: self.ebgp_multi_hop,
            router_id,
            password_secret: self.password_secret.clone(),
            bfd: self.bfd,
            graceful_restart: self.enable_graceful_restart,
        })
    }

    /// Whether a node with these labels peers with this router.
    pub fn selects_node(&self, node_labels: &BTreeMap<String, String>) -> bool {
        any_selects(&self.node_selectors, node_labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::labels;

    fn spec(json: serde_json::Value) -> BGPPeerSpec {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    #[test]
    fn defaults_are_metallbs() {
        let peer = spec(json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}));
        let settings = peer.settings().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(settings.peer_port, 179);
        assert_eq!(settings.hold_time, Duration::from_secs(90));
        assert_eq!(settings.keepalive_time, None);
        assert_eq!(settings.connect_time, Duration::from_secs(60));
        assert!(settings.is_ebgp());
        assert!(!settings.graceful_restart);
        assert!(peer.selects_node(&labels(&[("any", "node")])));
    }

    #[test]
    fn durations_are_go_durations_rounded_to_seconds() {
        let peer = spec(
            json!({"myASN": 64512, "peerASN": 64512, "peerAddress": "2001:db8:1::1",
            "holdTime": "1m30.5s", "keepaliveTime": "10s", "connectTime": "5s"}),
        );
        let settings = peer.settings().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(settings.hold_time, Duration::from_secs(90));
        assert_eq!(settings.keepalive_time, Some(Duration::from_secs(10)));
        assert_eq!(settings.connect_time, Duration::from_secs(5));
        assert!(!settings.is_ebgp());
        assert!(
            serde_json::from_value::<BGPPeerSpec>(json!({"myASN": 1, "peerASN": 2,
            "peerAddress": "198.51.100.1", "holdTime": "90"}))
            .is_err()
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let peer = spec(
            json!({"myASN": 23456, "peerASN": 0, "peerAddress": "fe80::1",
            "sourceAddress": "127.0.0.1", "holdTime": "2s", "keepaliveTime": "0s",
            "routerID": "2001:db8:1::1", "connectTime": "0s", "peerPort": 0,
            "bfd": {"transmitInterval": 5, "receiveInterval": 100, "detectMultiplier": 1}}),
        );
        let errors = peer.settings().err().unwrap_or_default();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 10, "{text:#?}");
        assert!(
            text.contains(
                &"myASN 23456 is not a valid AS number (1 to 4294967295, not AS_TRANS 23456)"
                    .to_owned()
            )
        );
        assert!(text.contains(&"peerAddress \"fe80::1\" is not a routable IP address".to_owned()));
    }

    #[test]
    fn keepalive_must_be_shorter_than_hold_unless_hold_is_zero() {
        let with = |hold: &str, keepalive: &str| {
            spec(
                json!({"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1",
                "holdTime": hold, "keepaliveTime": keepalive}),
            )
            .settings()
            .is_ok()
        };
        assert!(with("9s", "3s"));
        assert!(!with("9s", "9s"));
        assert!(with("0s", "30s"));
        assert!(!with("9s", "500ms"));
    }

    #[test]
    fn source_and_peer_must_share_a_family() {
        let peer = spec(
            json!({"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1",
            "sourceAddress": "2001:db8:1::2"}),
        );
        assert!(matches!(
            peer.settings().err().as_deref(),
            Some([PeerSpecError::SourceFamily { .. }])
        ));
    }

    #[test]
    fn bfd_detection_time_is_interval_times_multiplier() {
        let bfd = BfdSettings {
            transmit_interval: 100,
            receive_interval: 100,
            detect_multiplier: 3,
        };
        assert_eq!(bfd.detection_time(), Duration::from_millis(300));
        let defaulted: BfdSettings = serde_json::from_value(json!({})).unwrap_or_default();
        assert_eq!(defaulted, BfdSettings::default());
    }
}
