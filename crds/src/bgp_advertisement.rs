//! `BGPAdvertisement`: which pools are advertised over BGP, from which nodes, to which peers, with
//! which attributes. Field names are MetalLB's (`metallb.io/v1beta1` BGPAdvertisement).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::addresses::{AddressSet, IpFamily};
use crate::schema::{self, OBJECT_NAME_PATTERN};
use crate::selector::{LabelSelector, any_selects};

/// The longest community text: "large:" and three 10-digit numbers.
pub const MAX_COMMUNITY_LENGTH: u32 = 40;
/// The most communities one advertisement attaches.
pub const MAX_COMMUNITIES: u32 = 32;

/// Advertises the external IPs of some pools over BGP.
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    singular = "bgpadvertisement",
    shortname = "bgpadv",
    category = "ferrolb",
    status = "BGPAdvertisementStatus",
    derive = "PartialEq",
    doc = "Advertises the external IPs of some IPAddressPools over BGP from selected nodes to selected BGPPeers.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools",
        description = "Pools advertised, by name (empty with no selectors: all pools)"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors",
        description = "Pools advertised, by label"
    ),
    printcolumn(
        name = "Peers",
        type_ = "string",
        json_path = ".spec.peers",
        description = "BGPPeers advertised to (empty: all)"
    ),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 1,
        description = "Nodes that advertise (empty: all)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the advertisement is valid"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Pools to advertise, by name. With neither this nor ipAddressPoolSelectors, every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "pool_names_schema")]
    pub ip_address_pools: Vec<String>,
    /// Pools to advertise, by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that advertise. Empty: every node with a session to a selected peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selectors: Vec<LabelSelector>,
    /// BGPPeers to advertise to, by name. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "peer_names_schema")]
    pub peers: Vec<String>,
    /// Advertise each IPv4 address as the prefix of this length that holds it (0 to 32), so
    /// routers carry one route per block. 32: one route per address.
    #[serde(
        default = "default_aggregation_length",
        skip_serializing_if = "is_default_v4"
    )]
    #[schemars(range(min = 0, max = 32), extend("default" = 32))]
    pub aggregation_length: u8,
    /// The same for IPv6 (0 to 128).
    #[serde(
        default = "default_aggregation_length_v6",
        rename = "aggregationLengthV6",
        skip_serializing_if = "is_default_v6"
    )]
    #[schemars(range(min = 0, max = 128), extend("default" = 128))]
    pub aggregation_length_v6: u8,
    /// LOCAL_PREF to attach. Sent to iBGP peers only: RFC 4271 §5.1.5 keeps it inside an AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities to attach: standard ("64512:100"), well-known ("no-export", "no-advertise",
    /// "no-export-subconfed") and large ("large:64512:1:2").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "communities_schema")]
    pub communities: Vec<Community>,
}

fn default_aggregation_length() -> u8 {
    32
}

fn default_aggregation_length_v6() -> u8 {
    128
}

fn is_default_v4(length: &u8) -> bool {
    *length == default_aggregation_length()
}

fn is_default_v6(length: &u8) -> bool {
    *length == default_aggregation_length_v6()
}

impl Default for BGPAdvertisementSpec {
    fn default() -> Self {
        Self {
            ip_address_pools: Vec::new(),
            ip_address_pool_selectors: Vec::new(),
            node_selectors: Vec::new(),
            peers: Vec::new(),
            aggregation_length: default_aggregation_length(),
            aggregation_length_v6: default_aggregation_length_v6(),
            local_pref: None,
            communities: Vec::new(),
        }
    }
}

fn pool_names_schema(_: &mut SchemaGenerator) -> Schema {
    schema::name_list(
        64,
        OBJECT_NAME_PATTERN,
        253,
        "Pools to advertise, by name. With neither this nor ipAddressPoolSelectors, every pool.",
    )
}

fn peer_names_schema(_: &mut SchemaGenerator) -> Schema {
    schema::name_list(
        32,
        OBJECT_NAME_PATTERN,
        253,
        "BGPPeers to advertise to, by name. Empty: all.",
    )
}

fn communities_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "description": "Communities to attach: standard (\"64512:100\"), well-known (\"no-export\", \"no-advertise\", \"no-export-subconfed\") and large (\"large:64512:1:2\").",
        "maxItems": MAX_COMMUNITIES,
        "x-kubernetes-list-type": "set",
        "items": Community::schema_json(),
    }))
}

impl BGPAdvertisementSpec {
    /// Whether this advertisement covers the pool with this name and labels.
    pub fn selects_pool(&self, pool_name: &str, pool_labels: &BTreeMap<String, String>) -> bool {
        if self.ip_address_pools.is_empty() && self.ip_address_pool_selectors.is_empty() {
            return true;
        }
        self.ip_address_pools.iter().any(|p| p == pool_name)
            || self
                .ip_address_pool_selectors
                .iter()
                .any(|s| s.matches(pool_labels))
    }

    /// Whether a node with these labels advertises for this advertisement.
    pub fn selects_node(&self, node_labels: &BTreeMap<String, String>) -> bool {
        any_selects(&self.node_selectors, node_labels)
    }

    /// The aggregation length for addresses of this family.
    pub fn aggregation_length_of(&self, family: IpFamily) -> u8 {
        match family {
            IpFamily::IPv4 => self.aggregation_length,
            IpFamily::IPv6 => self.aggregation_length_v6,
        }
    }

    /// Why this advertisement's aggregation lengths do not fit a pool it covers, if they do not:
    /// an aggregate must hold only the pool's own addresses, or the routers would send traffic
    /// for addresses FerroLB never assigned (or another pool's) to these nodes. MetalLB refuses
    /// the same configurations.
    pub fn aggregation_problem(&self, pool_name: &str, addresses: &AddressSet) -> Option<String> {
        addresses.ranges().iter().find_map(|range| {
            let family = range.family();
            let length = self.aggregation_length_of(family);
            let width: u32 = match family {
                IpFamily::IPv4 => 32,
                IpFamily::IPv6 => 128,
            };
            let host_bits = width.saturating_sub(u32::from(length));
            // Blocks of 2^host_bits addresses: the range must start and end on block edges.
            let mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |size| size - 1);
            let fits = range.start_value() & mask == 0 && range.end_value() & mask == mask;
            let field = match family {
                IpFamily::IPv4 => "aggregationLength",
                IpFamily::IPv6 => "aggregationLengthV6",
            };
            (!fits).then(|| {
                format!(
                    "{field} {length} does not fit pool {pool_name}: {range} is not made of whole /{length} blocks, so the aggregate would advertise addresses outside the pool"
                )
            })
        })
    }

    /// Whether this advertisement is sent to the peer with this name.
    pub fn selects_peer(&self, peer_name: &str) -> bool {
        self.peers.is_empty() || self.peers.iter().any(|p| p == peer_name)
    }
}

/// Condition type and reasons of `BGPAdvertisement` status.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const REASON_VALID: &str = "Valid";
    pub const REASON_UNKNOWN_POOL: &str = "UnknownPool";
    pub const REASON_UNKNOWN_PEER: &str = "UnknownPeer";
    pub const REASON_AGGREGATION_TOO_SHORT: &str = "AggregationLengthTooShort";
    pub const REASON_INVALID: &str = "InvalidSpec";
}

/// What the controller reports about an advertisement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready is True when every pool and peer it names exists and its aggregation lengths fit
    /// the pools it covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// A BGP community: standard (RFC 1997, including the well-known ones) or large (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    Standard(u32),
    Large {
        global_admin: u32,
        local_data1: u32,
        local_data2: u32,
    },
}

/// The well-known communities of RFC 1997, by the names MetalLB and FRR use.
pub const WELL_KNOWN_COMMUNITIES: [(&str, u32); 3] = [
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a community: write \"64512:100\" (two numbers up to 65535), \"no-export\", \"no-advertise\", \"no-export-subconfed\", or \"large:64512:1:2\" (three numbers up to 4294967295)"
)]
pub struct CommunityError(pub String);

impl Community {
    fn schema_json() -> serde_json::Value {
        let number = "[0-9]{1,10}";
        json!({
            "type": "string",
            "minLength": 3,
            "maxLength": MAX_COMMUNITY_LENGTH,
            "pattern": format!("^([0-9]{{1,5}}:[0-9]{{1,5}}|no-export|no-advertise|no-export-subconfed|large:{number}:{number}:{number})$"),
            "x-kubernetes-validations": [schema::rule_with_message_expression(
                "self.startsWith('large:') ? self.split(':').all(part, part == 'large' || (part.matches('^[0-9]{1,10}$') && int(part) <= 4294967295)) : (!self.contains(':') || self.split(':').all(part, part.matches('^[0-9]{1,5}$') && int(part) <= 65535))",
                "'community ' + self + ' has a number out of range (standard: up to 65535, large: up to 4294967295)'",
            )],
        })
    }
}

impl FromStr for Community {
    type Err = CommunityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || CommunityError(text.to_owned());
        if let Some((_, value)) = WELL_KNOWN_COMMUNITIES
            .iter()
            .find(|(name, _)| *name == text)
        {
            return Ok(Self::Standard(*value));
        }
        let number = |part: &str, digits: usize| -> Option<u64> {
            (!part.is_empty() && part.len() <= digits && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
        };
        if let Some(rest) = text.strip_prefix("large:") {
            let parts: Vec<u32> = rest
                .split(':')
                .map(|p| number(p, 10).and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            return match parts[..] {
                [global_admin, local_data1, local_data2] => Ok(Self::Large {
                    global_admin,
                    local_data1,
                    local_data2,
                }),
                _ => Err(bad()),
            };
        }
        let (high, low) = text.split_once(':').ok_or_else(bad)?;
        let half = |p: &str| number(p, 5).and_then(|n| u16::try_from(n).ok());
        match (half(high), half(low)) {
            (Some(high), Some(low)) => Ok(Self::Standard(u32::from(high) << 16 | u32::from(low))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standard(value) => {
                match WELL_KNOWN_COMMUNITIES.iter().find(|(_, v)| v == value) {
                    Some((name, _)) => f.write_str(name),
                    None => write!(f, "{}:{}", value >> 16, value & 0xFFFF),
                }
            }
            Self::Large {
                global_admin,
                local_data1,
                local_data2,
            } => write!(f, "large:{global_admin}:{local_data1}:{local_data2}"),
        }
    }
}

impl Serialize for Community {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Community {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Community".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::from_json(Self::schema_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn communities_parse_in_every_form() {
        let parse = |s: &str| s.parse::<Community>();
        assert_eq!(
            parse("64512:100"),
            Ok(Community::Standard(64512 << 16 | 100))
        );
        assert_eq!(parse("no-export"), Ok(Community::Standard(0xFFFF_FF01)));
        assert_eq!(parse("no-advertise"), Ok(Community::Standard(0xFFFF_FF02)));
        assert_eq!(
            parse("large:64512:1:4294967295"),
            Ok(Community::Large {
                global_admin: 64512,
                local_data1: 1,
                local_data2: u32::MAX
            })
        );
        for bad in [
            "",
            "64512",
            "65536:1",
            "1:65536",
            "a:b",
            "1:2:3",
            "large:1:2",
            "large:1:2:3:4",
            "large:4294967296:1:1",
            "no_export",
            "-1:5",
            "1: 2",
            "large:1::2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn well_known_communities_display_by_name() {
        assert_eq!(Community::Standard(0xFFFF_FF01).to_string(), "no-export");
        assert_eq!(Community::Standard(64512 << 16 | 7).to_string(), "64512:7");
    }

    #[test]
    fn defaults_advertise_every_pool_per_address_to_every_peer() {
        let spec: BGPAdvertisementSpec =
            serde_json::from_value(json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec, BGPAdvertisementSpec::default());
        assert_eq!(
            (spec.aggregation_length, spec.aggregation_length_v6),
            (32, 128)
        );
        assert!(spec.selects_pool("any", &BTreeMap::new()));
        assert!(spec.selects_peer("router"));
        let named = BGPAdvertisementSpec {
            peers: vec!["tor-a".into()],
            ..Default::default()
        };
        assert!(named.selects_peer("tor-a") && !named.selects_peer("tor-b"));
    }

    #[test]
    fn aggregates_must_stay_inside_the_pool() {
        let set = |entries: &[&str]| AddressSet::parse(entries.iter().copied()).unwrap_or_default();
        let with = |v4: u8, v6: u8| BGPAdvertisementSpec {
            aggregation_length: v4,
            aggregation_length_v6: v6,
            ..Default::default()
        };
        let lan = set(&["198.51.100.0/24", "2001:db8:1::/64"]);
        assert_eq!(with(32, 128).aggregation_problem("lan", &lan), None);
        assert_eq!(with(24, 64).aggregation_problem("lan", &lan), None);
        assert_eq!(
            with(23, 128).aggregation_problem("lan", &lan).as_deref(),
            Some(
                "aggregationLength 23 does not fit pool lan: 198.51.100.0-198.51.100.255 is not made of whole /23 blocks, so the aggregate would advertise addresses outside the pool"
            )
        );
        assert!(with(32, 48).aggregation_problem("lan", &lan).is_some());
        let range = set(&["198.51.100.10-198.51.100.20"]);
        assert!(with(32, 128).aggregation_problem("r", &range).is_none());
        assert!(with(31, 128).aggregation_problem("r", &range).is_some());
        let whole = set(&["::/0"]);
        assert!(with(32, 0).aggregation_problem("all", &whole).is_none());
    }

    proptest! {
        #[test]
        fn display_round_trips(community in prop_oneof![
            any::<u32>().prop_map(Community::Standard),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| Community::Large {
                global_admin: a, local_data1: b, local_data2: c }),
        ]) {
            prop_assert_eq!(community.to_string().parse::<Community>(), Ok(community));
        }
    }
}
