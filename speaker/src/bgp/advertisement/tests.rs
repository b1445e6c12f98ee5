#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use ferrolb_crds::AddressSet;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::election::{EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, ServiceFacts};

fn node(name: &str, labels: &[(&str, &str)]) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn peer(name: &str, age: i64, spec: serde_json::Value) -> PeerFacts {
    PeerFacts {
        name: name.into(),
        order: (age, name.into()),
        spec: serde_json::from_value(spec).unwrap(),
    }
}

fn v4_peer(name: &str) -> PeerFacts {
    peer(
        name,
        1,
        json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}),
    )
}

fn v6_peer(name: &str) -> PeerFacts {
    peer(
        name,
        2,
        json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "2001:db8:1::1"}),
    )
}

fn advertisement(name: &str, spec: serde_json::Value) -> AdvertisementFacts {
    AdvertisementFacts {
        name: name.into(),
        spec: serde_json::from_value(spec).unwrap(),
    }
}

fn pool(name: &str, entries: &[&str]) -> PoolFacts {
    PoolFacts {
        name: name.into(),
        labels: BTreeMap::new(),
        addresses: AddressSet::parse(entries.iter().copied()).unwrap(),
    }
}

fn service(name: &str, ips: &[&str]) -> ServiceFacts {
    ServiceFacts {
        id: ServiceId {
            namespace: "shop".into(),
            name: name.into(),
        },
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ..Default::default()
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

#[derive(Debug)]
struct World {
    peers: Vec<PeerFacts>,
    advertisements: Vec<AdvertisementFacts>,
    pools: Vec<PoolFacts>,
    services: Vec<ServiceFacts>,
}

impl World {
    fn lan() -> Self {
        Self {
            peers: vec![v4_peer("tor"), v6_peer("tor-v6")],
            advertisements: vec![advertisement("lan", json!({"ipAddressPools": ["lan"]}))],
            pools: vec![pool("lan", &["198.51.100.0/25", "2001:db8:1::/64"])],
            services: vec![service("web", &["198.51.100.10", "2001:db8:1::10"])],
        }
    }

    fn decide(&self, node: &NodeFacts) -> Decision {
        decide(BgpView {
            node,
            peers: &self.peers,
            advertisements: &self.advertisements,
            pools: &self.pools,
            services: &self
                .services
                .iter()
                .map(|s| (s.id.clone(), Arc::new(s.clone())))
                .collect(),
        })
    }
}

fn prefixes(decision: &Decision, peer: &str) -> Vec<String> {
    decision.routes[peer]
        .keys()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_node_advertises_each_family_on_its_own_sessions() {
    let world = World::lan();
    for name in ["node-a", "node-b", "node-c"] {
        let decision = world.decide(&node(name, &[]));
        assert_eq!(prefixes(&decision, "tor"), ["198.51.100.10/32"]);
        assert_eq!(prefixes(&decision, "tor-v6"), ["2001:db8:1::10/128"]);
        let web = decision.service(&world.services[0].id).unwrap();
        assert_eq!(*web.peers, ["tor", "tor-v6"]);
        assert_eq!(web.prefixes.len(), 2);
    }
}

#[test]
fn local_traffic_policy_keeps_the_routes_on_endpoint_nodes() {
    let mut world = World::lan();
    world.services[0].local_traffic_policy = true;
    world.services[0].endpoint_nodes = ["node-b".to_string()].into();
    assert!(world.decide(&node("node-a", &[])).routes["tor"].is_empty());
    assert_eq!(
        prefixes(&world.decide(&node("node-b", &[])), "tor").len(),
        1
    );
}

#[test]
fn an_excluded_or_unreachable_node_keeps_its_sessions_but_advertises_nothing() {
    let world = World::lan();
    let excluded = node("node-a", &[(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, "")]);
    let decision = world.decide(&excluded);
    assert_eq!(decision.routes.len(), 2);
    assert!(decision.routes.values().all(|routes| routes.is_empty()));
    let mut unavailable = node("node-a", &[]);
    unavailable.network_unavailable = true;
    assert!(
        world
            .decide(&unavailable)
            .routes
            .values()
            .all(|routes| routes.is_empty())
    );
}

#[test]
fn selectors_choose_nodes_peers_and_pools() {
    let mut world = World::lan();
    world.peers.push(peer(
        "rack-b",
        3,
        json!({"myASN": 64512, "peerASN": 64514, "peerAddress": "198.51.100.2",
               "nodeSelectors": [{"matchLabels": {"rack": "b"}}]}),
    ));
    world.advertisements = vec![
        advertisement(
            "to-tor",
            json!({"ipAddressPools": ["lan"], "peers": ["tor"]}),
        ),
        advertisement(
            "rack-b-only",
            json!({"ipAddressPools": ["lan"], "peers": ["rack-b"],
                   "nodeSelectors": [{"matchLabels": {"rack": "b"}}]}),
        ),
        advertisement("other-pool", json!({"ipAddressPools": ["dmz"]})),
    ];
    let a = world.decide(&node("node-a", &[("rack", "a")]));
    assert!(!a.routes.contains_key("rack-b"));
    assert_eq!(prefixes(&a, "tor"), ["198.51.100.10/32"]);
    assert!(a.routes["tor-v6"].is_empty(), "to-tor names only tor");
    let b = world.decide(&node("node-b", &[("rack", "b")]));
    assert_eq!(prefixes(&b, "rack-b"), ["198.51.100.10/32"]);
}

#[test]
fn aggregates_replace_addresses_and_misfits_are_not_advertised() {
    let mut world = World::lan();
    world.services.push(service("api", &["198.51.100.20"]));
    world.advertisements = vec![advertisement(
        "agg",
        json!({"ipAddressPools": ["lan"], "aggregationLength": 25, "aggregationLengthV6": 64}),
    )];
    let decision = world.decide(&node("node-a", &[]));
    assert_eq!(prefixes(&decision, "tor"), ["198.51.100.0/25"]);
    assert_eq!(prefixes(&decision, "tor-v6"), ["2001:db8:1::/64"]);
    // An aggregate wider than the pool would draw traffic for addresses outside it: nothing
    // from that advertisement (the controller says why in its Ready condition).
    world.advertisements = vec![advertisement(
        "wide",
        json!({"ipAddressPools": ["lan"], "aggregationLength": 24}),
    )];
    let decision = world.decide(&node("node-a", &[]));
    assert!(decision.routes.values().all(|routes| routes.is_empty()));
}

#[test]
fn overlapping_advertisements_merge_communities_and_take_the_highest_local_pref() {
    let mut world = World::lan();
    world.advertisements = vec![
        advertisement(
            "a",
            json!({"ipAddressPools": ["lan"], "communities": ["64512:1"], "localPref": 50}),
        ),
        advertisement(
            "b",
            json!({"ipAddressPools": ["lan"], "communities": ["no-export"], "localPref": 200}),
        ),
    ];
    let decision = world.decide(&node("node-a", &[]));
    let attributes = &decision.routes["tor"][&net("198.51.100.10/32")];
    assert_eq!(attributes.local_pref, Some(200));
    let names: Vec<String> = attributes
        .communities
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["64512:1", "no-export"]);
}

#[test]
fn of_two_peers_for_one_router_the_older_is_used_and_invalid_peers_are_skipped() {
    let mut world = World::lan();
    world.peers = vec![
        peer(
            "young",
            9,
            json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}),
        ),
        peer(
            "old",
            1,
            json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}),
        ),
        peer(
            "bad",
            1,
            json!({"myASN": 0, "peerASN": 64513, "peerAddress": "198.51.100.3"}),
        ),
    ];
    let decision = world.decide(&node("node-a", &[]));
    assert_eq!(decision.routes.keys().collect::<Vec<_>>(), ["old"]);
    assert!(decision.skipped_peers["young"].starts_with("BGPPeer old (older)"));
    assert!(decision.skipped_peers["bad"].contains("myASN 0"));
}

fn arb_world() -> impl Strategy<Value = (World, NodeFacts)> {
    let ips = proptest::collection::vec(
        prop_oneof![
            (0u8..=255).prop_map(|o| format!("198.51.100.{o}")),
            (0u16..=64).prop_map(|h| format!("2001:db8:1::{h:x}")),
        ],
        1..3,
    );
    let services = proptest::collection::vec((ips, any::<bool>(), any::<bool>()), 0..6);
    let advertisements = proptest::collection::vec(
        (
            0u8..3,
            20u8..=32,
            56u8..=128,
            proptest::option::of(0u32..500),
            any::<bool>(),
        ),
        0..4,
    );
    (services, advertisements, any::<bool>(), any::<bool>()).prop_map(
        |(services, advertisements, excluded, rack_a)| {
            let pools = vec![
                pool("p0", &["198.51.100.0/26", "2001:db8:1::/120"]),
                pool("p1", &["198.51.100.64-198.51.100.200"]),
                pool("p2", &["198.51.100.128/25"]),
            ];
            let services = services
                .into_iter()
                .enumerate()
                .map(|(i, (ips, local, here))| {
                    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
                    let mut s = service(&format!("s{i}"), &refs);
                    s.local_traffic_policy = local;
                    if here {
                        s.endpoint_nodes.insert("node-a".into());
                    }
                    s
                })
                .collect();
            let advertisements = advertisements
                .into_iter()
                .enumerate()
                .map(|(i, (p, v4, v6, pref, rack))| {
                    let mut spec = json!({"ipAddressPools": [format!("p{p}")],
                        "aggregationLength": v4, "aggregationLengthV6": v6});
                    if let Some(pref) = pref {
                        spec["localPref"] = json!(pref);
                    }
                    if rack {
                        spec["nodeSelectors"] = json!([{"matchLabels": {"rack": "a"}}]);
                    }
                    advertisement(&format!("a{i}"), spec)
                })
                .collect();
            let mut labels = vec![];
            if excluded {
                labels.push((EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, ""));
            }
            if rack_a {
                labels.push(("rack", "a"));
            }
            let world = World {
                peers: vec![v4_peer("tor"), v6_peer("tor-v6")],
                advertisements,
                pools,
                services,
            };
            (world, node("node-a", &labels))
        },
    )
}

proptest! {
    /// Every route is a covered pool's aggregate of some Service IP the node may advertise, of
    /// the session's family, inside the pool; and reordering the inputs changes nothing.
    #[test]
    fn routes_only_cover_what_the_node_may_advertise((world, node) in arb_world()) {
        let decision = world.decide(&node);
        for (peer, routes) in &decision.routes {
            for prefix in routes.keys() {
                prop_assert!(node.may_announce());
                prop_assert_eq!(peer == "tor", matches!(prefix, IpNet::V4(_)));
                let origin = world.services.iter().filter(|s| {
                    !s.local_traffic_policy || s.endpoint_nodes.contains(&node.name)
                }).flat_map(|s| &s.ips).any(|ip| prefix.contains(ip));
                prop_assert!(origin, "{} comes from no Service IP", prefix);
                let inside = world.pools.iter().any(|p| {
                    p.addresses.contains(prefix.network()) && p.addresses.contains(prefix.broadcast())
                });
                prop_assert!(inside, "{} reaches outside every pool", prefix);
            }
        }
        // Sorted by id, so that a Service's entry is found by binary search; each one found.
        prop_assert!(decision.services.windows(2).all(|pair| pair[0].0 < pair[1].0));
        for (id, advertised) in &decision.services {
            prop_assert_eq!(decision.service(id), Some(advertised));
        }
        let mut shuffled = World {
            peers: world.peers.iter().rev().cloned().collect(),
            advertisements: world.advertisements.iter().rev().cloned().collect(),
            pools: world.pools.iter().rev().cloned().collect(),
            services: world.services.iter().rev().cloned().collect(),
        };
        prop_assert_eq!(shuffled.decide(&node), decision);
        shuffled.services.clear();
        prop_assert!(shuffled.decide(&node).routes.values().all(|routes| routes.is_empty()));
    }
}
