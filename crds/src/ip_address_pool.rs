//! `IPAddressPool`: addresses the controller may hand to LoadBalancer Services.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::address_count::AddressCount;
use crate::addresses::{AddressError, AddressSet, IpFamily, IpRange, parse_entry};
use crate::schema::{self, NAMESPACE_NAME_PATTERN};
use crate::selector::{LabelSelector, any_selects};

/// The most entries `spec.addresses` may hold.
pub const MAX_ADDRESS_ENTRIES: u32 = 64;
/// The longest entry: an IPv6 range of two fully written addresses.
pub const MAX_ADDRESS_ENTRY_LENGTH: u32 = 79;

/// A pool of external IP addresses for LoadBalancer Services.
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    singular = "ipaddresspool",
    shortname = "ipp",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    doc = "A pool of external IP addresses that FerroLB assigns to LoadBalancer Services.",
    printcolumn(
        name = "Addresses",
        type_ = "string",
        json_path = ".spec.addresses",
        description = "The pool's CIDRs and ranges"
    ),
    printcolumn(
        name = "Auto-Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign",
        description = "Whether Services get addresses from this pool without asking for it"
    ),
    printcolumn(
        name = "Assigned",
        type_ = "string",
        json_path = ".status.assigned",
        description = "Addresses in use, per family"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.available",
        description = "Addresses still free, per family"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the pool is valid and in use"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool: IPv4 or IPv6 CIDRs (198.51.100.0/24, 2001:db8:1::/64) and
    /// inclusive ranges of one family (198.51.100.10-198.51.100.20). Entries may overlap each other.
    #[schemars(schema_with = "addresses_schema")]
    pub addresses: Vec<AddressEntry>,
    /// Whether Services get addresses from this pool without naming it. When false, only Services
    /// that request the pool (annotation ferrolb.io/address-pool) or one of its IPs get its addresses.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in .0 and .255, which some old clients and routers mishandle.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services this pool serves, and in which order pools are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

/// Restricts a pool to some Services and orders pools.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Pools are tried in ascending priority (0 first); pools without a priority come last.
    /// Ties are broken by pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool (in addition to those namespaceSelectors select).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "namespaces_schema")]
    pub namespaces: Vec<String>,
    /// Namespaces, by their labels, whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services, by their labels, that may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub service_selectors: Vec<LabelSelector>,
}

impl ServiceAllocation {
    /// Whether a Service in `namespace` (with `namespace_labels`) and with `service_labels` may
    /// use the pool. Namespaces listed by name and namespaces selected by label both qualify.
    pub fn allows(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        service_labels: &BTreeMap<String, String>,
    ) -> bool {
        let namespace_allowed = (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.iter().any(|n| n == namespace)
            || self
                .namespace_selectors
                .iter()
                .any(|s| s.matches(namespace_labels));
        namespace_allowed && any_selects(&self.service_selectors, service_labels)
    }

    /// Whether the allocation says anything about which Services qualify.
    pub fn restricts_services(&self) -> bool {
        !(self.namespaces.is_empty()
            && self.namespace_selectors.is_empty()
            && self.service_selectors.is_empty())
    }
}

fn namespaces_schema(_: &mut SchemaGenerator) -> Schema {
    schema::name_list(
        128,
        NAMESPACE_NAME_PATTERN,
        63,
        "Namespaces whose Services may use the pool (in addition to those namespaceSelectors select).",
    )
}

/// One entry of `spec.addresses`, as written by the user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressEntry(pub String);

impl AddressEntry {
    pub fn parse(&self) -> Result<IpRange, AddressError> {
        parse_entry(&self.0)
    }
}

impl fmt::Display for AddressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AddressEntry {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Serialize for AddressEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AddressEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl JsonSchema for AddressEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AddressEntry".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::from_json(address_entry_schema())
    }
}

/// The CEL rules for one address entry: everything the API server can check within its static
/// cost budget. Each rule is a single pass over the entry; a rule that loops over the parts of a
/// part, or tries prefix lengths one by one, costs more than kube-apiserver allows for 64 entries
/// (`tests/data/realk8s-cel-costs.json` holds its verdicts). What is left out, the order of a
/// range's ends and the network address in the host-bits message, the controller reports on the
/// pool ([`AddressError::refused_at_apply`]). Their messages are [`AddressError::schema_message`]
/// (a test holds the two together).
pub fn address_entry_rules() -> Vec<serde_json::Value> {
    const START: &str = "self.split('-')[0]";
    const END: &str = "self.split('-')[1]";
    const IS_MAPPED: &str =
        "self.split('-').exists(part, part.contains(':') && part.contains('.'))";
    let is_range = format!(
        "(!self.contains('/') && self.split('-').size() == 2 && isIP({START}) && isIP({END}))"
    );
    // Go's parsers (behind isIP and isCIDR) refuse an IPv4 octet or a prefix length with a
    // leading zero; saying so here keeps every CEL implementation, and FerroLB's own parser, in
    // agreement. One regular expression is a single pass, within budget.
    const NO_LEADING_ZERO_OCTET: &str = "!self.matches('(^|[.-])0[0-9]+([./-]|$)')";
    let is_cidr = format!(
        "(self.contains('/') && {NO_LEADING_ZERO_OCTET} && isCIDR(self) \
         && !(self.split('/')[1].size() > 1 && self.split('/')[1].startsWith('0')))"
    );
    vec![
        schema::rule_with_message_expression(
            &format!("!{IS_MAPPED}"),
            "self + ' is an IPv4-mapped IPv6 address; write the IPv4 address instead'",
        ),
        schema::rule_with_message_expression(
            &format!(
                "{IS_MAPPED} || (self.contains('/') ? {is_cidr} : ({NO_LEADING_ZERO_OCTET} && {is_range}))"
            ),
            "self + ' is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)'",
        ),
        schema::rule_with_message_expression(
            &format!("!{is_cidr} || cidr(self).masked() == cidr(self)"),
            "self + ' has host bits set; write the network address of the prefix'",
        ),
        schema::rule_with_message_expression(
            &format!("!{is_range} || ip({START}).family() == ip({END}).family()"),
            &format!(
                "'range start ' + {START} + ' and end ' + {END} + ' are of different families; write one range per family'"
            ),
        ),
    ]
}

fn address_entry_schema() -> serde_json::Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ADDRESS_ENTRY_LENGTH,
        "x-kubernetes-validations": address_entry_rules(),
    })
}

fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "description": "The addresses of the pool: IPv4 or IPv6 CIDRs (198.51.100.0/24, 2001:db8:1::/64) and inclusive ranges of one family (198.51.100.10-198.51.100.20).",
        "minItems": 1,
        "maxItems": MAX_ADDRESS_ENTRIES,
        "x-kubernetes-list-type": "set",
        "items": address_entry_schema(),
    }))
}

impl IPAddressPoolSpec {
    /// The pool's addresses, or every entry that is wrong.
    pub fn address_set(&self) -> Result<AddressSet, Vec<AddressError>> {
        AddressSet::parse(self.addresses.iter().map(|a| a.0.as_str()))
    }

    /// The pool's priority for ordering: `None` (unset) sorts after every number.
    pub fn priority(&self) -> Option<i32> {
        self.service_allocation.as_ref().and_then(|a| a.priority)
    }
}

/// Condition type and reasons of `IPAddressPool` status.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const REASON_VALID: &str = "Valid";
    pub const REASON_INVALID_ADDRESSES: &str = "InvalidAddresses";
    pub const REASON_OVERLAP: &str = "Overlap";
    pub const REASON_INVALID_SELECTOR: &str = "InvalidSelector";
}

/// What the controller reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready is True when every address entry is valid and no other pool claims them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
    /// IPv4 addresses assigned to Services.
    #[serde(
        default,
        rename = "assignedIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_ipv4: Option<Count>,
    /// IPv6 addresses assigned to Services.
    #[serde(
        default,
        rename = "assignedIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_ipv6: Option<Count>,
    /// IPv4 addresses that can still be assigned.
    #[serde(
        default,
        rename = "availableIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_ipv4: Option<Count>,
    /// IPv6 addresses that can still be assigned.
    #[serde(
        default,
        rename = "availableIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_ipv6: Option<Count>,
    /// Assigned addresses per family, for reading: "IPv4 3, IPv6 1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
    /// Available addresses per family, for reading: "IPv4 250, IPv6 18446744073709551615".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
}

/// Per-family address counts and their readable summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyCounts {
    pub ipv4: Option<AddressCount>,
    pub ipv6: Option<AddressCount>,
}

impl FamilyCounts {
    pub fn get(&self, family: IpFamily) -> Option<AddressCount> {
        match family {
            IpFamily::IPv4 => self.ipv4,
            IpFamily::IPv6 => self.ipv6,
        }
    }

    /// "IPv4 3, IPv6 1", naming only the families present; "0" when the pool has none.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = IpFamily::BOTH
            .iter()
            .filter_map(|&f| self.get(f).map(|c| format!("{f} {c}")))
            .collect();
        if parts.is_empty() {
            "0".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl IPAddressPoolStatus {
    /// Sets the counts and their summaries. A family is reported only when the pool has it.
    pub fn set_counts(&mut self, assigned: FamilyCounts, available: FamilyCounts) {
        self.assigned_ipv4 = assigned.ipv4.map(Count);
        self.assigned_ipv6 = assigned.ipv6.map(Count);
        self.available_ipv4 = available.ipv4.map(Count);
        self.available_ipv6 = available.ipv6.map(Count);
        self.assigned = Some(assigned.summary());
        self.available = Some(available.summary());
    }
}

/// An exact address count, written as a decimal string (JSON numbers in Kubernetes stop at
/// 2^63, and an IPv6 pool can hold 2^128 addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub AddressCount);

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        AddressCount::from_str(&text)
            .map(Count)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Count {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Count".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::from_json(json!({
            "type": "string",
            "pattern": "^(0|[1-9][0-9]{0,38})$",
            "maxLength": 39,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::labels;

    #[test]
    fn defaults_apply_when_fields_are_missing() {
        let spec: IPAddressPoolSpec =
            serde_json::from_value(json!({"addresses": ["198.51.100.0/24"]})).unwrap();
        assert!(spec.auto_assign);
        assert!(!spec.avoid_buggy_ips);
        assert_eq!(spec.priority(), None);
    }

    #[test]
    fn allocation_namespaces_by_name_or_selector() {
        let allocation = ServiceAllocation {
            namespaces: vec!["shop".into()],
            namespace_selectors: vec![LabelSelector::from_labels([("team", "edge")])],
            ..Default::default()
        };
        let none = labels(&[]);
        assert!(allocation.allows("shop", &none, &none));
        assert!(allocation.allows("web", &labels(&[("team", "edge")]), &none));
        assert!(!allocation.allows("web", &labels(&[("team", "core")]), &none));
    }

    #[test]
    fn allocation_service_selectors_apply_on_top() {
        let allocation = ServiceAllocation {
            namespaces: vec!["shop".into()],
            service_selectors: vec![LabelSelector::from_labels([("expose", "lan")])],
            ..Default::default()
        };
        let none = labels(&[]);
        assert!(allocation.allows("shop", &none, &labels(&[("expose", "lan")])));
        assert!(!allocation.allows("shop", &none, &none));
        assert!(!allocation.allows("other", &none, &labels(&[("expose", "lan")])));
        let priority_only = ServiceAllocation {
            priority: Some(1),
            ..Default::default()
        };
        assert!(priority_only.allows("any", &none, &none));
        assert!(!priority_only.restricts_services());
    }

    #[test]
    fn status_counts_are_strings_and_summaries_name_families() {
        let mut status = IPAddressPoolStatus::default();
        status.set_counts(
            FamilyCounts {
                ipv4: Some(AddressCount::new(3)),
                ipv6: Some(AddressCount::new(1)),
            },
            FamilyCounts {
                ipv4: Some(AddressCount::new(251)),
                ipv6: Some(AddressCount::new((1 << 80) - 1)),
            },
        );
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(value["assignedIPv4"], "3");
        assert_eq!(value["availableIPv6"], "1208925819614629174706175");
        assert_eq!(value["assigned"], "IPv4 3, IPv6 1");
        let back: IPAddressPoolStatus = serde_json::from_value(value).unwrap();
        assert_eq!(back, status);
        assert!(serde_json::from_value::<Count>(json!("-1")).is_err());
    }
}
