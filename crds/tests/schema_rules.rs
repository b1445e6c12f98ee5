//! The CRD schemas' CEL rules, evaluated the way the API server evaluates them (kube-cel implements
//! the Kubernetes CEL libraries), and held against the Rust parsers the controller uses: what the
//! API server accepts, FerroLB understands, with the same words when it refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on bad fixtures

use ferrolb_crds::addresses::parse_entry;
use ferrolb_crds::{
    BGPAdvertisement, BGPPeer, BGPPeerSpec, BGPSessionState, Community, GratuitousInterval,
    IPAddressPool, InterfaceName, L2Advertisement, ServiceBGPStatus, ServiceL2Status,
};
use kube::CustomResourceExt;
use kube_cel::Validator;
use proptest::prelude::*;
use serde_json::{Value, json};

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
}

/// The messages of every rule the object breaks; empty when the API server would accept it.
fn rule_failures(schema: &Value, object: &Value) -> Vec<String> {
    match Validator::new().validate(schema, object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn pool_with(addresses: &[&str]) -> Value {
    json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "lan"},
           "spec": {"addresses": addresses}})
}

fn entry_failures(entry: &str) -> Vec<String> {
    rule_failures(&schema_of(IPAddressPool::crd()), &pool_with(&[entry]))
}

#[test]
fn valid_pools_pass_every_rule() {
    let schema = schema_of(IPAddressPool::crd());
    let pool = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "lan"},
    "spec": {
        "addresses": ["198.51.100.0/24", "198.51.100.10-198.51.100.20", "2001:db8:1::/64",
                      "2001:db8:1::10-2001:db8:1::1f", "203.0.113.7/32", "203.0.113.9-203.0.113.9",
                      "2001:db8:1:0:ffff::1-2001:db8:1:1::", "2001:0db8:2::/64"],
        "autoAssign": false,
        "serviceAllocation": {
            "priority": 0,
            "namespaces": ["shop"],
            "namespaceSelectors": [{"matchLabels": {"example.com/team": "edge"}}],
            "serviceSelectors": [{"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web"]},
                {"key": "gpu", "operator": "DoesNotExist"}]}]
        }
    }});
    assert_eq!(rule_failures(&schema, &pool), Vec::<String>::new());
}

#[test]
fn bad_entries_are_refused_with_what_the_controller_would_say() {
    let cases = [
        (
            "198.51.100.1-2001:db8:1::1",
            "range start 198.51.100.1 and end 2001:db8:1::1 are of different families; write one range per family",
        ),
        (
            "198.51.100.7/24",
            "198.51.100.7/24 has host bits set; write the network address of the prefix",
        ),
        (
            "2001:db8:1::1/64",
            "2001:db8:1::1/64 has host bits set; write the network address of the prefix",
        ),
        (
            "::ffff:198.51.100.1/128",
            "::ffff:198.51.100.1/128 is an IPv4-mapped IPv6 address; write the IPv4 address instead",
        ),
        (
            "lan",
            "lan is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)",
        ),
        (
            "198.51.100.0/33",
            "198.51.100.0/33 is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)",
        ),
        (
            "198.51.100.0/024",
            "198.51.100.0/024 is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)",
        ),
        (
            "01.2.3.4/0",
            "01.2.3.4/0 is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)",
        ),
        (
            "198.51.100.010-198.51.100.20",
            "198.51.100.010-198.51.100.20 is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)",
        ),
    ];
    for (entry, message) in cases {
        assert_eq!(
            entry_failures(entry),
            vec![message.to_owned()],
            "entry {entry}"
        );
        let error = parse_entry(entry).unwrap_err();
        assert!(error.refused_at_apply(), "entry {entry}");
        assert_eq!(
            error.schema_message().as_deref(),
            Some(message),
            "entry {entry}"
        );
        assert!(
            error.to_string().starts_with(message),
            "entry {entry}: {error}"
        );
    }
}

#[test]
fn what_the_budget_leaves_out_reaches_the_controller() {
    // kube-apiserver's cost budget affords no ordering of two addresses: reversed ranges pass the
    // schema, and the controller flags the pool with the fix.
    for (entry, message) in [
        (
            "198.51.100.9-198.51.100.1",
            "range start 198.51.100.9 is after its end 198.51.100.1; write 198.51.100.1-198.51.100.9",
        ),
        (
            "2001:db8:1::2-2001:db8:1::1",
            "range start 2001:db8:1::2 is after its end 2001:db8:1::1; write 2001:db8:1::1-2001:db8:1::2",
        ),
    ] {
        assert_eq!(entry_failures(entry), Vec::<String>::new(), "entry {entry}");
        let error = parse_entry(entry).unwrap_err();
        assert!(!error.refused_at_apply(), "entry {entry}");
        assert_eq!(error.to_string(), message);
    }
    assert_eq!(
        parse_entry("198.51.100.7/24").unwrap_err().to_string(),
        "198.51.100.7/24 has host bits set; write the network address of the prefix: 198.51.100.0/24"
    );
}

/// Address text in the shapes users write, right and wrong.
fn address_text() -> impl Strategy<Value = String> {
    let v4 = any::<u8>().prop_map(|last| format!("198.51.100.{last}"));
    let v4_any = any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]));
    let v6 = (0u16..4, 0u16..=0xffff).prop_map(|(a, b)| format!("2001:db8:1:{a:x}::{b:x}"));
    let v6_full = any::<[u16; 8]>().prop_map(|h| {
        h.iter()
            .map(|x| format!("{x:x}"))
            .collect::<Vec<_>>()
            .join(":")
    });
    let junk = prop_oneof![
        Just("::ffff:198.51.100.1".to_owned()),
        Just("01.2.3.4".to_owned()),
        Just("".to_owned()),
        Just("x".to_owned())
    ];
    prop_oneof![4 => v4, 2 => v4_any, 4 => v6, 2 => v6_full, 1 => junk]
}

fn entry_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Sometimes with a leading zero in the prefix length, which Go's parser refuses.
        (address_text(), 0u8..=130, prop::bool::weighted(0.1)).prop_map(|(a, p, zero)| {
            let zero = if zero { "0" } else { "" };
            format!("{a}/{zero}{p}")
        }),
        (address_text(), address_text()).prop_map(|(a, b)| format!("{a}-{b}")),
        address_text(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// What the API server refuses, the controller refuses with the same words; what the
    /// controller accepts, the API server accepts; and anything the API server lets through that
    /// the controller refuses is one of the checks left to the controller.
    #[test]
    fn schema_and_parser_agree(entry in entry_text()) {
        let cel = entry_failures(&entry);
        let rust = parse_entry(&entry);
        match (&rust, cel.as_slice()) {
            (Ok(_), []) => {}
            (Err(e), []) => prop_assert!(!e.refused_at_apply(), "entry {}: schema accepts, parser says {}", entry, e),
            (Err(e), [only]) => {
                prop_assert!(e.refused_at_apply(), "entry {}", entry);
                prop_assert_eq!(e.schema_message(), Some(only.clone()), "entry {}", entry);
            }
            _ => prop_assert!(false, "entry {}: parser says {:?}, schema says {:?}", entry, rust, cel),
        }
    }
}

#[test]
fn selector_rules_refuse_malformed_requirements() {
    let schema = schema_of(L2Advertisement::crd());
    let adv = |selector: Value| {
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "a"}, "spec": {"nodeSelectors": [selector]}})
    };
    assert_eq!(
        rule_failures(
            &schema,
            &adv(json!({"matchExpressions": [{"key": "zone", "operator": "In"}]}))
        ),
        vec!["operator In on zone needs at least one value"]
    );
    assert_eq!(
        rule_failures(
            &schema,
            &adv(
                json!({"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]})
            )
        ),
        vec!["operator Exists on zone takes no values"]
    );
    assert!(
        rule_failures(
            &schema,
            &adv(json!({"matchLabels": {"kubernetes.io/hostname": "node-a"}}))
        )
        .is_empty()
    );
}

#[test]
fn interface_and_interval_rules_match_the_parsers() {
    let schema = schema_of(L2Advertisement::crd());
    let adv = |spec: Value| {
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "a"}, "spec": spec})
    };
    assert!(
        rule_failures(
            &schema,
            &adv(json!({"interfaces": ["eth1"], "gratuitousInterval": "1m30s"}))
        )
        .is_empty()
    );
    assert_eq!(
        rule_failures(&schema, &adv(json!({"interfaces": [".."]}))),
        vec!["\"..\" is not a Linux interface name"]
    );
    assert!(InterfaceName::new("..").is_err());
    for (interval, accepted) in [
        ("1s", true),
        ("1h", true),
        ("999ms", false),
        ("61m", false),
        ("30s", true),
    ] {
        let failures = rule_failures(&schema, &adv(json!({"gratuitousInterval": interval})));
        assert_eq!(failures.is_empty(), accepted, "{interval}: {failures:?}");
        assert_eq!(
            interval.parse::<GratuitousInterval>().is_ok(),
            accepted,
            "{interval}"
        );
    }
}

#[test]
fn l2_status_ips_must_be_ips() {
    let schema = schema_of(ServiceL2Status::crd());
    let status = |ips: Value| {
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "ServiceL2Status",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": {}, "status": {"node": "node-a", "ips": ips}})
    };
    assert!(rule_failures(&schema, &status(json!(["198.51.100.7", "2001:db8:1::7"]))).is_empty());
    assert_eq!(
        rule_failures(&schema, &status(json!(["198.51.100.300"]))),
        vec!["198.51.100.300 is not an IP address"]
    );
}

fn peer(spec: Value) -> Value {
    json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "tor"},
           "spec": spec})
}

#[test]
fn bgp_peer_rules_refuse_what_the_speaker_would_refuse() {
    let schema = schema_of(BGPPeer::crd());
    let base = json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"});
    let with = |extra: Value| {
        let mut spec = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let cases = [
        (json!({}), vec![]),
        (
            json!({"holdTime": "0s", "keepaliveTime": "30s", "sourceAddress": "198.51.100.2",
                   "routerID": "198.51.100.2", "connectTime": "5s",
                   "bfd": {"transmitInterval": 100, "receiveInterval": 100, "detectMultiplier": 3}}),
            vec![],
        ),
        (
            json!({"myASN": 23456}),
            vec![
                "AS 23456 is AS_TRANS (RFC 6793), which stands in for 4-octet AS numbers and is nobody's own",
            ],
        ),
        (
            json!({"peerAddress": "fe80::1"}),
            vec![
                "peerAddress fe80::1 is unspecified, loopback or link-local; use a routable address",
            ],
        ),
        (
            json!({"peerAddress": "router"}),
            vec!["\"router\" is not an IPv4 or IPv6 address"],
        ),
        (
            json!({"holdTime": "2s"}),
            vec!["holdTime 2s must be 0s (no hold timer) or between 3s and 65535s"],
        ),
        (
            json!({"holdTime": "9s", "keepaliveTime": "9s"}),
            vec!["keepaliveTime must be shorter than holdTime"],
        ),
        (
            json!({"sourceAddress": "2001:db8:1::2"}),
            vec!["sourceAddress and peerAddress must be of the same IP family"],
        ),
        (
            json!({"routerID": "2001:db8:1::2"}),
            vec!["routerID 2001:db8:1::2 must be a non-zero IPv4 address"],
        ),
        (
            json!({"connectTime": "0s"}),
            vec!["connectTime 0s must be between 1s and 65535s"],
        ),
    ];
    for (extra, expected) in cases {
        let spec = with(extra.clone());
        let failures = rule_failures(&schema, &peer(spec.clone()));
        assert_eq!(failures, expected, "{extra}");
        // The speaker's own check agrees on every case.
        let typed: Result<BGPPeerSpec, _> = serde_json::from_value(spec);
        let accepted = typed.map(|t| t.settings().is_ok()).unwrap_or(false);
        assert_eq!(accepted, expected.is_empty(), "{extra}");
    }
}

fn community_failures(community: &str) -> Vec<String> {
    let adv = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
        "metadata": {"name": "a"}, "spec": {"communities": [community]}});
    rule_failures(&schema_of(BGPAdvertisement::crd()), &adv)
}

/// What the schema's pattern admits (the API server checks it before CEL).
fn community_shaped() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[0-9]{1,5}", "[0-9]{1,5}").prop_map(|(a, b)| format!("{a}:{b}")),
        ("[0-9]{1,10}", "[0-9]{1,10}", "[0-9]{1,10}")
            .prop_map(|(a, b, c)| format!("large:{a}:{b}:{c}")),
        Just("no-export".to_string()),
        Just("no-advertise".to_string()),
    ]
}

proptest! {
    #[test]
    fn community_rule_agrees_with_the_parser(text in community_shaped()) {
        let refused = !community_failures(&text).is_empty();
        prop_assert_eq!(refused, text.parse::<Community>().is_err(), "{}", text);
    }
}

#[test]
fn community_numbers_are_bounded() {
    assert!(community_failures("64512:100").is_empty());
    assert!(community_failures("large:4294967295:0:1").is_empty());
    assert_eq!(
        community_failures("65536:1"),
        vec![
            "community 65536:1 has a number out of range (standard: up to 65535, large: up to 4294967295)"
        ]
    );
    assert_eq!(community_failures("large:4294967296:0:1").len(), 1);
}

#[test]
fn bgp_status_objects_hold_addresses_and_prefixes() {
    let schema = schema_of(ServiceBGPStatus::crd());
    let status = |prefixes: Value| {
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "ServiceBGPStatus",
        "metadata": {"name": "web-node-a", "namespace": "shop"}, "spec": {},
        "status": {"node": "node-a", "serviceName": "web", "peers": ["tor"], "prefixes": prefixes}})
    };
    assert!(
        rule_failures(
            &schema,
            &status(json!(["198.51.100.7/32", "2001:db8:1::/64"]))
        )
        .is_empty()
    );
    assert_eq!(
        rule_failures(&schema, &status(json!(["198.51.100.7"]))),
        vec!["198.51.100.7 is not an IP prefix"]
    );
    let session = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPSessionState",
        "metadata": {"name": "tor-node-a", "namespace": "ferrolb-system"}, "spec": {},
        "status": {"node": "node-a", "peer": "tor", "state": "Established", "advertisedPrefixes": 3,
                   "bfdState": "Up"}});
    assert!(rule_failures(&schema_of(BGPSessionState::crd()), &session).is_empty());
}
