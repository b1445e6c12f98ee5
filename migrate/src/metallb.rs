//! MetalLB's configuration as this tool reads it: the `metallb.io` custom resources and the
//! ConfigMap MetalLB used before v0.13. Field names are MetalLB's. Every field not modelled here
//! lands in an `unknown` map, so that it is reported instead of silently dropped; label selectors
//! stay raw JSON so that a bad one costs that selector, not the whole object.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;

/// The API group of MetalLB's custom resources.
pub const API_GROUP: &str = "metallb.io";

/// The name and data key of the legacy ConfigMap (MetalLB v0.12 and before).
pub const LEGACY_CONFIGMAP_NAME: &str = "config";
pub const LEGACY_CONFIGMAP_KEY: &str = "config";

/// What a `metallb.io` object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IpAddressPool,
    L2Advertisement,
    /// The `AddressPool` resource, replaced by IPAddressPool and removed in MetalLB v0.14.
    AddressPool,
    Bgp(crate::bgp::BgpKind),
    /// Status MetalLB writes (ServiceL2Status, ServiceBGPStatus, ConfigurationState): not
    /// configuration; FerroLB writes its own.
    Status,
}

impl Kind {
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "IPAddressPool" => Kind::IpAddressPool,
            "L2Advertisement" => Kind::L2Advertisement,
            "AddressPool" => Kind::AddressPool,
            "ServiceL2Status" | "ServiceBGPStatus" | "ConfigurationState" => Kind::Status,
            other => Kind::Bgp(crate::bgp::BgpKind::from_kind(other)?),
        })
    }
}

/// The kinds `--from-cluster` lists, in the order they are converted.
pub const CONFIGURATION_KINDS: [&str; 7] = [
    "IPAddressPool",
    "L2Advertisement",
    "AddressPool",
    "BGPPeer",
    "BGPAdvertisement",
    "Community",
    "BFDProfile",
];

/// `apiVersion` split into group and version.
pub fn group_of(api_version: &str) -> &str {
    api_version
        .split_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub owner_references: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub finalizers: Vec<String>,
    /// uid, resourceVersion, managedFields and the like: the API server's, not the user's.
    #[serde(flatten)]
    pub server_fields: BTreeMap<String, Value>,
}

/// `metallb.io/v1beta1` IPAddressPool `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub auto_assign: Option<bool>,
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: Option<bool>,
    #[serde(default)]
    pub service_allocation: Option<ServiceAllocation>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// IPAddressPool `spec.serviceAllocation`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// MetalLB reads 0 (its default) as "no priority", which sorts last.
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub namespaces: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace_selectors: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub service_selectors: Vec<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `metallb.io/v1beta1` L2Advertisement `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub ip_address_pools: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ip_address_pool_selectors: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_selectors: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub interfaces: Vec<String>,
    /// Newer MetalLB: announce only the Services these select. FerroLB has no equivalent.
    #[serde(default, deserialize_with = "nullable")]
    pub service_selectors: Vec<Value>,
    /// Newer MetalLB: weighted preferences for the announcing node. FerroLB has no equivalent.
    #[serde(default, deserialize_with = "nullable")]
    pub preferred_node_selectors: Vec<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A BGPPeer (`metallb.io/v1beta1` and `v1beta2`, whose fields are a superset), or a peer of
/// the legacy ConfigMap, in one shape. v1beta1's node selectors are written like label
/// selectors, so they are read as such.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    #[serde(default, rename = "myASN")]
    pub my_asn: Option<u64>,
    #[serde(default, rename = "peerASN")]
    pub peer_asn: Option<u64>,
    /// Newer MetalLB: "internal" or "external" instead of peerASN.
    #[serde(default, rename = "dynamicASN")]
    pub dynamic_asn: Option<String>,
    #[serde(default)]
    pub peer_address: Option<String>,
    #[serde(default)]
    pub source_address: Option<String>,
    /// Newer MetalLB: BGP unnumbered over this interface instead of peerAddress.
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub peer_port: Option<u64>,
    #[serde(default)]
    pub hold_time: Option<String>,
    #[serde(default)]
    pub keepalive_time: Option<String>,
    #[serde(default)]
    pub connect_time: Option<String>,
    #[serde(default, rename = "routerID")]
    pub router_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_selectors: Vec<Value>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_secret: Option<SecretReference>,
    #[serde(default)]
    pub bfd_profile: Option<String>,
    #[serde(default)]
    pub ebgp_multi_hop: Option<bool>,
    #[serde(default)]
    pub enable_graceful_restart: Option<bool>,
    #[serde(default)]
    pub vrf: Option<String>,
    #[serde(default, rename = "disableMP")]
    pub disable_mp: Option<bool>,
    #[serde(default)]
    pub dual_stack_address_family: Option<bool>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A Secret named by a BGPPeer: MetalLB's `SecretReference`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SecretReference {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPeerFields {
    #[serde(default)]
    my_asn: Option<u64>,
    #[serde(default)]
    peer_asn: Option<u64>,
    #[serde(default)]
    peer_address: Option<String>,
    #[serde(default)]
    source_address: Option<String>,
    #[serde(default)]
    peer_port: Option<u64>,
    #[serde(default)]
    hold_time: Option<String>,
    #[serde(default)]
    keepalive_time: Option<String>,
    #[serde(default)]
    router_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    node_selectors: Vec<Value>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    bfd_profile: Option<String>,
    #[serde(default, rename = "ebgp-multihop", deserialize_with = "yaml11_bool")]
    ebgp_multi_hop: Option<bool>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

impl BgpPeerSpec {
    /// One entry of the legacy ConfigMap's `peers`. Its node selectors are rewritten in the
    /// resources' spelling (`match-labels` → `matchLabels`), which is what they mean.
    pub fn from_legacy(value: &Value) -> Result<Self, String> {
        let f: LegacyPeerFields = parse(value)?;
        Ok(Self {
            my_asn: f.my_asn,
            peer_asn: f.peer_asn,
            peer_address: f.peer_address,
            source_address: f.source_address,
            peer_port: f.peer_port,
            hold_time: f.hold_time,
            keepalive_time: f.keepalive_time,
            router_id: f.router_id,
            node_selectors: f.node_selectors.iter().map(legacy_selector).collect(),
            password: f.password,
            bfd_profile: f.bfd_profile,
            ebgp_multi_hop: f.ebgp_multi_hop,
            unknown: f.unknown,
            ..Self::default()
        })
    }
}

fn legacy_selector(selector: &Value) -> Value {
    match selector.as_object() {
        Some(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| {
                    let key = match key.as_str() {
                        "match-labels" => "matchLabels".to_owned(),
                        "match-expressions" => "matchExpressions".to_owned(),
                        other => other.to_owned(),
                    };
                    (key, value.clone())
                })
                .collect(),
        ),
        None => selector.clone(),
    }
}

/// A BFDProfile `spec`, or an entry of the legacy ConfigMap's `bfd-profiles` (which also holds
/// the name). Intervals are milliseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdProfileSpec {
    #[serde(default)]
    pub receive_interval: Option<u64>,
    #[serde(default)]
    pub transmit_interval: Option<u64>,
    #[serde(default)]
    pub detect_multiplier: Option<u64>,
    #[serde(default)]
    pub echo_interval: Option<u64>,
    #[serde(default)]
    pub echo_mode: Option<bool>,
    #[serde(default)]
    pub passive_mode: Option<bool>,
    #[serde(default)]
    pub minimum_ttl: Option<u64>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyBfdProfileFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    receive_interval: Option<u64>,
    #[serde(default)]
    transmit_interval: Option<u64>,
    #[serde(default)]
    detect_multiplier: Option<u64>,
    #[serde(default)]
    echo_interval: Option<u64>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    echo_mode: Option<bool>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    passive_mode: Option<bool>,
    #[serde(default)]
    minimum_ttl: Option<u64>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

impl BfdProfileSpec {
    /// One entry of the legacy ConfigMap's `bfd-profiles`, and its name.
    pub fn from_legacy(value: &Value) -> Result<(Option<String>, Self), String> {
        let f: LegacyBfdProfileFields = parse(value)?;
        Ok((
            f.name,
            Self {
                receive_interval: f.receive_interval,
                transmit_interval: f.transmit_interval,
                detect_multiplier: f.detect_multiplier,
                echo_interval: f.echo_interval,
                echo_mode: f.echo_mode,
                passive_mode: f.passive_mode,
                minimum_ttl: f.minimum_ttl,
                unknown: f.unknown,
            },
        ))
    }
}

/// `metallb.io/v1beta1` Community `spec`: aliases for communities.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    #[serde(default, deserialize_with = "nullable")]
    pub communities: Vec<CommunityAlias>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommunityAlias {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `metallb.io/v1beta1` BGPAdvertisement `spec`, or an entry of a protocol pool's
/// `bgp-advertisements` (which has only the aggregation lengths, localPref and communities).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertisementSpec {
    #[serde(default)]
    pub aggregation_length: Option<i64>,
    #[serde(default, rename = "aggregationLengthV6")]
    pub aggregation_length_v6: Option<i64>,
    #[serde(default)]
    pub local_pref: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    pub communities: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ip_address_pools: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ip_address_pool_selectors: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_selectors: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub peers: Vec<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyBgpAdvertisementFields {
    #[serde(default)]
    aggregation_length: Option<i64>,
    #[serde(default)]
    aggregation_length_v6: Option<i64>,
    #[serde(default)]
    localpref: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    communities: Vec<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressPoolBgpAdvertisementFields {
    #[serde(default)]
    aggregation_length: Option<i64>,
    #[serde(default, rename = "aggregationLengthV6")]
    aggregation_length_v6: Option<i64>,
    #[serde(default)]
    local_pref: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    communities: Vec<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

impl BgpAdvertisementSpec {
    /// One entry of a protocol pool's `bgp-advertisements`, spelled as `spelling` says.
    pub fn from_pool_entry(value: &Value, spelling: Spelling) -> Result<Self, String> {
        let (aggregation_length, aggregation_length_v6, local_pref, communities, unknown) =
            match spelling {
                Spelling::Kebab => {
                    let f: LegacyBgpAdvertisementFields = parse(value)?;
                    (
                        f.aggregation_length,
                        f.aggregation_length_v6,
                        f.localpref,
                        f.communities,
                        f.unknown,
                    )
                }
                Spelling::Camel => {
                    let f: AddressPoolBgpAdvertisementFields = parse(value)?;
                    (
                        f.aggregation_length,
                        f.aggregation_length_v6,
                        f.local_pref,
                        f.communities,
                        f.unknown,
                    )
                }
            };
        Ok(Self {
            aggregation_length,
            aggregation_length_v6,
            local_pref,
            communities,
            unknown,
            ..Self::default()
        })
    }
}

/// A pool that names its own protocol: an address pool of the legacy ConfigMap, or the
/// `AddressPool` resource (the same fields, spelled in camelCase).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProtocolPool {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub addresses: Vec<String>,
    pub auto_assign: Option<bool>,
    pub avoid_buggy_ips: Option<bool>,
    pub bgp_advertisements: Vec<Value>,
    pub unknown: BTreeMap<String, Value>,
    pub spelling: Spelling,
}

/// How a protocol pool spells its fields, for messages that quote them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Spelling {
    /// `auto-assign`, as in the legacy ConfigMap.
    #[default]
    Kebab,
    /// `autoAssign`, as in the AddressPool resource.
    Camel,
}

impl Spelling {
    pub fn field(self, kebab: &'static str) -> String {
        match self {
            Spelling::Kebab => kebab.to_owned(),
            Spelling::Camel => kebab_to_camel(kebab),
        }
    }
}

fn kebab_to_camel(kebab: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in kebab.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    // MetalLB spells this one with a capital acronym.
    out.replace("avoidBuggyIps", "avoidBuggyIPs")
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPoolFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    addresses: Vec<String>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    auto_assign: Option<bool>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    avoid_buggy_ips: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    bgp_advertisements: Vec<Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressPoolFields {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    addresses: Vec<String>,
    #[serde(default)]
    auto_assign: Option<bool>,
    #[serde(default, rename = "avoidBuggyIPs")]
    avoid_buggy_ips: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    bgp_advertisements: Vec<Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

impl ProtocolPool {
    /// One entry of the legacy ConfigMap's `address-pools`.
    pub fn from_legacy(value: &Value) -> Result<Self, String> {
        let f: LegacyPoolFields = parse(value)?;
        Ok(Self {
            name: f.name,
            protocol: f.protocol,
            addresses: f.addresses,
            auto_assign: f.auto_assign,
            avoid_buggy_ips: f.avoid_buggy_ips,
            bgp_advertisements: f.bgp_advertisements,
            unknown: f.unknown,
            spelling: Spelling::Kebab,
        })
    }

    /// The `spec` of an AddressPool resource; its name is the object's.
    pub fn from_address_pool_spec(value: &Value, name: &str) -> Result<Self, String> {
        let f: AddressPoolFields = parse(value)?;
        Ok(Self {
            name: Some(name.to_owned()),
            protocol: f.protocol,
            addresses: f.addresses,
            auto_assign: f.auto_assign,
            avoid_buggy_ips: f.avoid_buggy_ips,
            bgp_advertisements: f.bgp_advertisements,
            unknown: f.unknown,
            spelling: Spelling::Camel,
        })
    }
}

/// The YAML inside the legacy ConfigMap's `data.config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LegacyConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub address_pools: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub peers: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub bgp_communities: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub bfd_profiles: Vec<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl LegacyConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if value.is_null() {
            return Ok(Self::default());
        }
        parse(&value)
    }
}

/// Deserializes `value`, naming the path of the first field of the wrong shape.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// `null` reads as empty, as Go's JSON decoding leaves a nil slice or map.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// MetalLB parsed its ConfigMap with a YAML 1.1 library, for which `yes`, `no`, `on` and `off`
/// are booleans too.
fn yaml11_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrText {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<BoolOrText>::deserialize(deserializer)? {
        None => None,
        Some(BoolOrText::Bool(b)) => Some(b),
        Some(BoolOrText::Text(text)) => Some(match text.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                true
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
            | "FALSE" => false,
            _ => {
                return Err(D::Error::custom(format!(
                    "invalid value {text:?}, expected a boolean"
                )));
            }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_kept_for_the_report() {
        let spec: IpAddressPoolSpec = parse(&json!({
            "addresses": ["198.51.100.0/24"],
            "futureField": 1
        }))
        .unwrap();
        assert_eq!(spec.addresses, ["198.51.100.0/24"]);
        assert_eq!(spec.unknown.keys().collect::<Vec<_>>(), ["futureField"]);
    }

    #[test]
    fn wrong_shapes_name_their_path() {
        let error = parse::<IpAddressPoolSpec>(&json!({"addresses": ["a", 5]})).unwrap_err();
        assert!(error.starts_with("addresses[1]: invalid type"), "{error}");
    }

    #[test]
    fn nulls_read_as_empty() {
        let spec: L2AdvertisementSpec =
            parse(&json!({"ipAddressPools": null, "interfaces": null})).unwrap();
        assert!(spec.ip_address_pools.is_empty() && spec.interfaces.is_empty());
    }

    #[test]
    fn legacy_pools_read_yaml_1_1_booleans() {
        let pool = ProtocolPool::from_legacy(&json!({
            "name": "lan", "protocol": "layer2", "addresses": ["198.51.100.0/24"],
            "auto-assign": "no", "avoid-buggy-ips": true
        }))
        .unwrap();
        assert_eq!(pool.auto_assign, Some(false));
        assert_eq!(pool.avoid_buggy_ips, Some(true));
        assert!(ProtocolPool::from_legacy(&json!({"auto-assign": "maybe"})).is_err());
    }

    #[test]
    fn address_pool_fields_are_spelled_in_camel_case() {
        assert_eq!(Spelling::Camel.field("auto-assign"), "autoAssign");
        assert_eq!(Spelling::Camel.field("avoid-buggy-ips"), "avoidBuggyIPs");
        assert_eq!(
            Spelling::Camel.field("bgp-advertisements"),
            "bgpAdvertisements"
        );
        assert_eq!(Spelling::Kebab.field("auto-assign"), "auto-assign");
    }

    #[test]
    fn legacy_config_reads_every_section() {
        let config = LegacyConfig::parse(
            "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [198.51.100.0/24]\npeers:\n- peer-address: 203.0.113.1\nbgp-communities:\n  no-advertise: 65535:65282\n",
        )
        .unwrap();
        assert_eq!(config.address_pools.len(), 1);
        assert_eq!(config.peers.len(), 1);
        assert_eq!(config.bgp_communities.len(), 1);
        assert!(LegacyConfig::parse("address-pools: [").is_err());
    }
}
