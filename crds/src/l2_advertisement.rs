//! `L2Advertisement`: which pools are announced with ARP/NDP, from which nodes and interfaces.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::duration;
use crate::schema::{self, OBJECT_NAME_PATTERN};
use crate::selector::{LabelSelector, any_selects};

/// Bounds of `spec.gratuitousInterval`: more often than once a second floods the LAN; less often
/// than hourly is of no use to a switch whose MAC table ages out in minutes.
pub const GRATUITOUS_INTERVAL_MIN: Duration = Duration::from_secs(1);
pub const GRATUITOUS_INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// Announces the addresses of some pools on the local network (ARP for IPv4, NDP for IPv6).
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    singular = "l2advertisement",
    shortname = "l2adv",
    category = "ferrolb",
    derive = "PartialEq",
    derive = "Default",
    doc = "Announces the external IPs of some IPAddressPools with ARP (IPv4) and NDP (IPv6) from selected nodes and interfaces.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools",
        description = "Pools announced, by name (empty with no selectors: all pools)"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors",
        description = "Pools announced, by label"
    ),
    printcolumn(
        name = "Interfaces",
        type_ = "string",
        json_path = ".spec.interfaces",
        description = "Interfaces announced on (empty: the one whose subnet holds the IP)"
    ),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        description = "Nodes that may announce (empty: all)"
    ),
    printcolumn(
        name = "Gratuitous Interval",
        type_ = "string",
        json_path = ".spec.gratuitousInterval",
        description = "Period of repeated gratuitous ARP / unsolicited NA (empty: only on takeover)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools to announce, by name. With neither this nor ipAddressPoolSelectors, every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "pool_names_schema")]
    pub ip_address_pools: Vec<String>,
    /// Pools to announce, by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce. Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on. Empty: the interface whose subnet holds the IP, or else any
    /// non-virtual interface that is up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "interfaces_schema")]
    pub interfaces: Vec<InterfaceName>,
    /// Repeat gratuitous ARP / unsolicited NA at this period (1s to 1h, e.g. "30s", "5m"), for
    /// switches that forget MAC addresses. Unset: only when a node takes an IP over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gratuitous_interval: Option<GratuitousInterval>,
}

fn pool_names_schema(_: &mut SchemaGenerator) -> Schema {
    schema::name_list(
        64,
        OBJECT_NAME_PATTERN,
        253,
        "Pools to announce, by name. With neither this nor ipAddressPoolSelectors, every pool.",
    )
}

fn interfaces_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "description": "Interfaces to announce on. Empty: the interface whose subnet holds the IP, or else any non-virtual interface that is up.",
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "items": InterfaceName::schema_json(),
    }))
}

impl L2AdvertisementSpec {
    /// Whether this advertisement announces the pool with this name and labels.
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

    /// Whether a node with these labels may announce for this advertisement.
    pub fn selects_node(&self, node_labels: &BTreeMap<String, String>) -> bool {
        any_selects(&self.node_selectors, node_labels)
    }
}

/// A Linux network interface name: 1 to 15 bytes, no '/', ':' or whitespace, not "." or "..".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

/// Longest interface name the kernel accepts (IFNAMSIZ minus the terminating NUL).
pub const MAX_INTERFACE_NAME_LENGTH: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Linux interface name (1 to 15 characters, no '/', ':' or whitespace, not '.' or '..')"
)]
pub struct InterfaceNameError(pub String);

impl InterfaceName {
    pub fn new(name: &str) -> Result<Self, InterfaceNameError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_INTERFACE_NAME_LENGTH
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InterfaceNameError(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn schema_json() -> serde_json::Value {
        json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_INTERFACE_NAME_LENGTH,
            "pattern": r"^[^/:\s]+$",
            "x-kubernetes-validations": [schema::rule_with_message_expression(
                "self != '.' && self != '..'",
                "'\"' + self + '\" is not a Linux interface name'",
            )],
        })
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InterfaceName {
    type Err = InterfaceNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for InterfaceName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::new(&name).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for InterfaceName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InterfaceName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::from_json(Self::schema_json())
    }
}

/// A period written as a Go duration ("30s", "1m30s", "1h"), between 1s and 1h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GratuitousInterval(Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GratuitousIntervalError {
    #[error("{0:?} is not a duration such as \"30s\", \"5m\" or \"1h\"")]
    Unparsable(String),
    #[error("{0:?} is outside 1s to 1h")]
    OutOfBounds(String),
}

impl GratuitousInterval {
    pub fn new(duration: Duration) -> Result<Self, GratuitousIntervalError> {
        if (GRATUITOUS_INTERVAL_MIN..=GRATUITOUS_INTERVAL_MAX).contains(&duration) {
            Ok(Self(duration))
        } else {
            Err(GratuitousIntervalError::OutOfBounds(format!(
                "{duration:?}"
            )))
        }
    }

    pub fn duration(&self) -> Duration {
        self.0
    }
}

impl FromStr for GratuitousInterval {
    type Err = GratuitousIntervalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration = duration::parse(text)
            .ok_or_else(|| GratuitousIntervalError::Unparsable(text.to_owned()))?;
        if (GRATUITOUS_INTERVAL_MIN..=GRATUITOUS_INTERVAL_MAX).contains(&duration) {
            Ok(Self(duration))
        } else {
            Err(GratuitousIntervalError::OutOfBounds(text.to_owned()))
        }
    }
}

impl fmt::Display for GratuitousInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&duration::format(self.0))
    }
}

impl Serialize for GratuitousInterval {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GratuitousInterval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GratuitousInterval {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GratuitousInterval".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::from_json(json!({
            "type": "string",
            "description": "Repeat gratuitous ARP / unsolicited NA at this period (1s to 1h, e.g. \"30s\", \"5m\"). Unset: only when a node takes an IP over.",
            "maxLength": 32,
            "pattern": duration::PATTERN,
            "x-kubernetes-validations": [schema::rule_with_message_expression(
                "duration(self) >= duration('1s') && duration(self) <= duration('1h')",
                "'gratuitousInterval ' + self + ' is outside 1s to 1h'",
            )],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for good in [
            "eth0",
            "enp3s0f1",
            "bond0.100",
            "br-lan",
            "a",
            "123456789012345",
        ] {
            assert!(InterfaceName::new(good).is_ok(), "{good} rejected");
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0:1",
            "a/b",
            "has space",
            "1234567890123456",
            "tab\t",
        ] {
            assert!(InterfaceName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn intervals_parse_go_durations_within_bounds() {
        let parse = |s: &str| s.parse::<GratuitousInterval>().map(|i| i.duration());
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2.5s"), Ok(Duration::from_millis(2500)));
        assert!(matches!(
            parse("500ms"),
            Err(GratuitousIntervalError::OutOfBounds(_))
        ));
        assert!(matches!(
            parse("61m"),
            Err(GratuitousIntervalError::OutOfBounds(_))
        ));
        for bad in [
            "", "30", "s", "1d", "-1s", "1.s", ".5s", "1..5s", "1 s", "30S",
        ] {
            assert!(
                matches!(parse(bad), Err(GratuitousIntervalError::Unparsable(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn intervals_display_as_they_parse() {
        for text in ["30s", "1m30s", "1h", "1500ms", "5m"] {
            assert_eq!(
                text.parse::<GratuitousInterval>().unwrap().to_string(),
                text
            );
        }
    }

    #[test]
    fn empty_pool_lists_select_every_pool() {
        let none = BTreeMap::new();
        let all = L2AdvertisementSpec::default();
        assert!(all.selects_pool("anything", &none));
        let named = L2AdvertisementSpec {
            ip_address_pools: vec!["lan".into()],
            ..Default::default()
        };
        assert!(named.selects_pool("lan", &none));
        assert!(!named.selects_pool("dmz", &none));
        let by_label = L2AdvertisementSpec {
            ip_address_pool_selectors: vec![LabelSelector::from_labels([("site", "a")])],
            ..Default::default()
        };
        let labels: BTreeMap<String, String> = [("site".to_string(), "a".to_string())].into();
        assert!(by_label.selects_pool("dmz", &labels));
        assert!(!by_label.selects_pool("dmz", &none));
    }
}
