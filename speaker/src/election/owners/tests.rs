//! Owner election: examples, then the properties every speaker relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::{AddressSet, InterfaceName, L2AdvertisementSpec, LabelSelector};
use proptest::prelude::*;

use super::*;
use crate::election::candidates::{EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, NodeFacts, PoolFacts};
use crate::election::node_interfaces::PublishedInterface;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn interface(name: &str, subnets: &[&str]) -> PublishedInterface {
    PublishedInterface {
        name: InterfaceName::new(name).unwrap(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
        is_virtual: false,
        subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn dual_stack_node(name: &str) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        labels: BTreeMap::new(),
        network_unavailable: false,
        interfaces: vec![interface("eth0", &["198.51.100.2/24", "2001:db8:1::2/64"])],
    }
}

fn pools() -> Vec<PoolFacts> {
    vec![
        PoolFacts {
            name: "lan".into(),
            labels: BTreeMap::new(),
            addresses: AddressSet::parse(["198.51.100.0/24", "2001:db8:1::/64"]).unwrap(),
        },
        PoolFacts {
            name: "dmz".into(),
            labels: BTreeMap::new(),
            addresses: AddressSet::parse(["203.0.113.0/24"]).unwrap(),
        },
    ]
}

fn service(name: &str, ips: &[&str]) -> ServiceFacts {
    ServiceFacts {
        id: ServiceId {
            namespace: "shop".into(),
            name: name.into(),
        },
        ips: ips.iter().map(|s| ip(s)).collect(),
        ..Default::default()
    }
}

fn names(nodes: &[NodeFacts]) -> BTreeSet<String> {
    nodes.iter().map(|n| n.name.clone()).collect()
}

fn elect(
    nodes: &[NodeFacts],
    alive: &BTreeSet<String>,
    advertisements: &[L2AdvertisementSpec],
    services: &[ServiceFacts],
) -> Election {
    Election::run(ClusterView {
        nodes,
        alive: Alive::Everywhere(alive),
        pools: &pools(),
        advertisements,
        services: &by_id(services),
    })
}

#[test]
fn both_families_of_a_dual_stack_service_land_on_one_node() {
    let nodes: Vec<NodeFacts> = (0..6)
        .map(|i| dual_stack_node(&format!("node-{i}")))
        .collect();
    let services: Vec<ServiceFacts> = (1..40)
        .map(|i| {
            service(
                &format!("web-{i}"),
                &[&format!("198.51.100.{i}"), &format!("2001:db8:1::{i}")],
            )
        })
        .collect();
    let election = elect(
        &nodes,
        &names(&nodes),
        &[L2AdvertisementSpec::default()],
        &services,
    );
    for s in &services {
        let owner = election.owner_of(s.ips[0]);
        assert!(owner.is_some());
        assert_eq!(owner, election.owner_of(s.ips[1]));
        let group = election.group_of(s.ips[1]).unwrap();
        assert_eq!(group.key, s.ips[0], "the IPv4 address is the key");
        let owner = group.owner.as_ref().unwrap();
        assert_eq!(owner.interfaces.len(), 2);
    }
    // And the groups spread over more than one node.
    let owners: BTreeSet<&str> = services
        .iter()
        .filter_map(|s| election.owner_of(s.ips[0]))
        .collect();
    assert!(owners.len() > 1);
}

#[test]
fn services_sharing_an_ip_are_one_group_transitively() {
    let nodes: Vec<NodeFacts> = (0..4)
        .map(|i| dual_stack_node(&format!("node-{i}")))
        .collect();
    let services = vec![
        service("a", &["198.51.100.7"]),
        service("b", &["198.51.100.7", "2001:db8:1::9"]),
        service("c", &["2001:db8:1::9"]),
        service("d", &["198.51.100.8"]),
    ];
    let election = elect(
        &nodes,
        &names(&nodes),
        &[L2AdvertisementSpec::default()],
        &services,
    );
    let group = election.group_of(ip("2001:db8:1::9")).unwrap();
    assert_eq!(group.key, ip("198.51.100.7"));
    assert_eq!(group.services.len(), 3);
    assert_eq!(election.groups().count(), 2);
}

#[test]
fn local_policy_needs_an_endpoint_of_every_local_service_in_the_group() {
    let nodes: Vec<NodeFacts> = (0..4)
        .map(|i| dual_stack_node(&format!("node-{i}")))
        .collect();
    let mut a = service("a", &["198.51.100.7"]);
    a.local_traffic_policy = true;
    a.endpoint_nodes = ["node-1".to_string(), "node-2".to_string()].into();
    let mut b = service("b", &["198.51.100.7"]);
    b.local_traffic_policy = true;
    b.endpoint_nodes = ["node-2".to_string(), "node-3".to_string()].into();
    let cluster = service("c", &["198.51.100.7"]);
    let election = elect(
        &nodes,
        &names(&nodes),
        &[L2AdvertisementSpec::default()],
        &[a.clone(), b, cluster],
    );
    assert_eq!(election.owner_of(ip("198.51.100.7")), Some("node-2"));
    a.endpoint_nodes.clear();
    let election = elect(
        &nodes,
        &names(&nodes),
        &[L2AdvertisementSpec::default()],
        &[a],
    );
    assert_eq!(election.owner_of(ip("198.51.100.7")), None);
}

#[test]
fn dead_excluded_unavailable_and_unselected_nodes_are_not_candidates() {
    let mut nodes: Vec<NodeFacts> = (0..5)
        .map(|i| dual_stack_node(&format!("node-{i}")))
        .collect();
    nodes[1]
        .labels
        .insert(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.into(), "true".into());
    nodes[2].network_unavailable = true;
    nodes[3].labels.insert("zone".into(), "b".into());
    nodes[4].labels.insert("zone".into(), "a".into());
    nodes[0].labels.insert("zone".into(), "a".into());
    let alive: BTreeSet<String> = ["node-1", "node-2", "node-3", "node-4"]
        .map(String::from)
        .into();
    let zone_a = L2AdvertisementSpec {
        node_selectors: vec![LabelSelector::from_labels([("zone", "a")])],
        ..Default::default()
    };
    let election = elect(
        &nodes,
        &alive,
        &[zone_a],
        &[service("a", &["198.51.100.7"])],
    );
    let group = election.group_of(ip("198.51.100.7")).unwrap();
    let candidates: Vec<&str> = group.candidates.iter().map(|c| &**c).collect();
    assert_eq!(candidates, ["node-4"]);
    assert_eq!(election.owner_of(ip("198.51.100.7")), Some("node-4"));
    assert_eq!(election.owned_by("node-4").len(), 1);
    assert!(election.owned_by("node-0").is_empty());
}

#[test]
fn a_node_must_be_able_to_announce_every_ip_of_the_group() {
    let mut v4_only = dual_stack_node("node-v4");
    v4_only.interfaces = vec![interface("eth0", &["198.51.100.2/24"])];
    v4_only.interfaces[0].is_virtual = true;
    let nodes = vec![v4_only, dual_stack_node("node-dual")];
    let election = elect(
        &nodes,
        &names(&nodes),
        &[L2AdvertisementSpec::default()],
        &[service("a", &["198.51.100.7", "2001:db8:1::7"])],
    );
    assert_eq!(election.owner_of(ip("2001:db8:1::7")), Some("node-dual"));
}

#[test]
fn ips_in_no_pool_have_no_owner() {
    let nodes = vec![dual_stack_node("node-a")];
    let election = elect(
        &nodes,
        &names(&nodes),
        &[L2AdvertisementSpec::default()],
        &[service("a", &["2001:db8:99::1"])],
    );
    assert_eq!(election.owner_of(ip("2001:db8:99::1")), None);
    assert!(
        election.group_of(ip("2001:db8:99::1")).is_none(),
        "never announced: no group is kept"
    );
    assert!(election.ips_without_owner().is_empty());
}

#[test]
fn ips_meant_to_be_announced_without_a_candidate_are_counted_as_without_owner() {
    let nodes = vec![dual_stack_node("node-a"), dual_stack_node("node-b")];
    let mut local = service("local", &["198.51.100.7", "2001:db8:1::7"]);
    local.local_traffic_policy = true;
    let owned = service("owned", &["198.51.100.8"]);
    // In no pool: not FerroLB's to announce, so not "without owner".
    let foreign = service("foreign", &["2001:db8:99::1"]);
    // In a pool no advertisement covers.
    let dmz = service("dmz", &["203.0.113.5"]);
    let lan_only = L2AdvertisementSpec {
        ip_address_pools: vec!["lan".into()],
        ..Default::default()
    };
    let services = [local.clone(), owned, foreign, dmz];
    let election = elect(
        &nodes,
        &names(&nodes),
        std::slice::from_ref(&lan_only),
        &services,
    );
    assert!(election.owner_of(ip("198.51.100.8")).is_some());
    assert_eq!(election.owner_of(ip("198.51.100.7")), None);
    let without: Vec<IpAddr> = election.ips_without_owner().iter().copied().collect();
    assert_eq!(without, [ip("198.51.100.7"), ip("2001:db8:1::7")]);

    // An endpoint on node-b gives the Local Service an owner.
    local.endpoint_nodes = ["node-b".to_string()].into();
    let election = elect(
        &nodes,
        &names(&nodes),
        std::slice::from_ref(&lan_only),
        &[local],
    );
    assert_eq!(election.owner_of(ip("198.51.100.7")), Some("node-b"));
    assert!(election.ips_without_owner().is_empty());

    // No speaker alive: every covered IP is without owner.
    let election = elect(&nodes, &BTreeSet::new(), &[lan_only], &services);
    let without: Vec<IpAddr> = election.ips_without_owner().iter().copied().collect();
    assert_eq!(
        without,
        [ip("198.51.100.7"), ip("198.51.100.8"), ip("2001:db8:1::7")]
    );
}

// ---------- properties ----------

const ADDRESSES: [&str; 8] = [
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.3",
    "2001:db8:1::1",
    "2001:db8:1::2",
    "2001:db8:1::3",
    "203.0.113.1",
    "203.0.113.2",
];
const SUBNETS: [&str; 3] = ["198.51.100.9/24", "2001:db8:1::9/64", "203.0.113.9/24"];

fn arb_node(name: String) -> impl Strategy<Value = NodeFacts> {
    (
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::collection::vec(
            (
                0usize..3,
                any::<bool>(),
                prop::collection::btree_set(0usize..3, 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(move |(zone_a, excluded, unavailable, interfaces)| {
            let mut labels = BTreeMap::new();
            labels.insert(
                "zone".to_string(),
                if zone_a { "a" } else { "b" }.to_string(),
            );
            if excluded {
                labels.insert(
                    EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.to_string(),
                    String::new(),
                );
            }
            let mut seen = BTreeSet::new();
            let interfaces = interfaces
                .into_iter()
                .filter(|(index, _, _)| seen.insert(*index))
                .map(|(index, is_virtual, subnets)| PublishedInterface {
                    name: InterfaceName::new(&format!("eth{index}")).unwrap(),
                    mac: crate::packet::MacAddr([0x02, 0, 0, 0, 0, index as u8]),
                    is_virtual,
                    subnets: subnets
                        .into_iter()
                        .map(|s| SUBNETS[s].parse().unwrap())
                        .collect(),
                })
                .collect();
            NodeFacts {
                name: name.clone(),
                labels,
                network_unavailable: unavailable,
                interfaces,
            }
        })
}

fn arb_advertisement() -> impl Strategy<Value = L2AdvertisementSpec> {
    prop_oneof![
        Just(L2AdvertisementSpec::default()),
        Just(L2AdvertisementSpec {
            ip_address_pools: vec!["lan".into()],
            node_selectors: vec![LabelSelector::from_labels([("zone", "a")])],
            ..Default::default()
        }),
        Just(L2AdvertisementSpec {
            ip_address_pools: vec!["dmz".into()],
            interfaces: vec![InterfaceName::new("eth2").unwrap()],
            ..Default::default()
        }),
    ]
}

fn arb_service(index: usize) -> impl Strategy<Value = ServiceFacts> {
    (
        prop::collection::vec(0usize..ADDRESSES.len(), 1..3),
        prop::bool::weighted(0.3),
        prop::collection::btree_set(0usize..8, 0..8),
    )
        .prop_map(move |(ips, local, endpoints)| ServiceFacts {
            id: ServiceId {
                namespace: "shop".into(),
                name: format!("svc-{index}").into(),
            },
            ips: ips.into_iter().map(|i| ip(ADDRESSES[i])).collect(),
            local_traffic_policy: local,
            endpoint_nodes: endpoints.into_iter().map(|i| format!("node-{i}")).collect(),
        })
}

#[derive(Clone, Debug)]
struct Cluster {
    nodes: Vec<NodeFacts>,
    alive: BTreeSet<String>,
    advertisements: Vec<L2AdvertisementSpec>,
    services: Vec<ServiceFacts>,
}

impl Cluster {
    fn elect(&self) -> Election {
        elect(
            &self.nodes,
            &self.alive,
            &self.advertisements,
            &self.services,
        )
    }
}

fn arb_cluster() -> impl Strategy<Value = Cluster> {
    let nodes = (1usize..8).prop_flat_map(|count| {
        (0..count)
            .map(|i| arb_node(format!("node-{i}")))
            .collect::<Vec<_>>()
    });
    let services =
        (1usize..10).prop_flat_map(|count| (0..count).map(arb_service).collect::<Vec<_>>());
    (
        nodes,
        prop::collection::btree_set(0usize..8, 0..8),
        prop::collection::vec(arb_advertisement(), 1..3),
        services,
    )
        .prop_map(|(nodes, dead, advertisements, services)| Cluster {
            alive: nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !dead.contains(i) || *i % 3 == 0)
                .map(|(_, n)| n.name.clone())
                .collect(),
            nodes,
            advertisements,
            services,
        })
}

/// Owners by IP, for comparing elections.
fn owners(election: &Election, cluster: &Cluster) -> BTreeMap<IpAddr, Option<String>> {
    cluster
        .services
        .iter()
        .flat_map(|s| s.ips.iter().copied())
        .map(|ip| (ip, election.owner_of(ip).map(str::to_owned)))
        .collect()
}

/// A fixed permutation of a list chosen by `seed`.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn exactly_one_owner_per_group_the_highest_scoring_candidate(cluster in arb_cluster()) {
        let election = cluster.elect();
        for group in election.groups() {
            match &group.owner {
                None => prop_assert!(group.candidates.is_empty()),
                Some(owner) => {
                    prop_assert!(group.candidates.contains(owner.node.as_str()));
                    prop_assert!(cluster.alive.contains(&owner.node));
                    let best = group.candidates.iter().map(|c| (rendezvous::score(group.key, c), &**c)).max();
                    prop_assert_eq!(best.map(|(_, c)| c), Some(owner.node.as_str()));
                    prop_assert_eq!(owner.interfaces.keys().copied().collect::<BTreeSet<_>>(), group.ips.clone());
                    prop_assert!(owner.interfaces.values().all(|set| !set.is_empty()));
                    // Every candidate can announce every IP of the group.
                    for candidate in &group.candidates {
                        let node = cluster.nodes.iter().find(|n| *n.name == **candidate).unwrap();
                        for &ip in &group.ips {
                            prop_assert!(!crate::election::announcing_interfaces(ip, node, &pools(), &cluster.advertisements).is_empty());
                        }
                    }
                    // The election's precomputed coverage agrees with the reference function.
                    let node = cluster.nodes.iter().find(|n| n.name == owner.node).unwrap();
                    for (&ip, interfaces) in &owner.interfaces {
                        prop_assert_eq!(
                            interfaces,
                            &crate::election::announcing_interfaces(ip, node, &pools(), &cluster.advertisements)
                        );
                    }
                }
            }
            for &ip in &group.ips {
                prop_assert_eq!(election.group_of(ip).map(|g| g.key), Some(group.key));
            }
        }
    }

    #[test]
    fn every_ip_of_a_service_and_of_services_sharing_it_has_one_owner(cluster in arb_cluster()) {
        let election = cluster.elect();
        for service in &cluster.services {
            let first = election.owner_of(service.ips[0]);
            for &ip in &service.ips {
                prop_assert_eq!(election.owner_of(ip), first);
            }
        }
        // Each IP is in exactly one group.
        let total: usize = election.groups().map(|g| g.ips.len()).sum();
        let distinct: BTreeSet<IpAddr> = election.groups().flat_map(|g| g.ips.iter().copied()).collect();
        prop_assert_eq!(total, distinct.len());
    }

    #[test]
    fn removing_a_node_moves_only_the_ips_it_owned(cluster in arb_cluster(), which in 0usize..8) {
        let before = owners(&cluster.elect(), &cluster);
        let removed = cluster.nodes[which % cluster.nodes.len()].name.clone();
        let mut smaller = cluster.clone();
        smaller.nodes.retain(|n| n.name != removed);
        let after = owners(&smaller.elect(), &smaller);
        let mut dead = cluster.clone();
        dead.alive.remove(&removed);
        prop_assert_eq!(&owners(&dead.elect(), &dead), &after);
        for (ip, owner) in &before {
            if owner.as_deref() != Some(removed.as_str()) {
                prop_assert_eq!(&after[ip], owner, "{} moved", ip);
            }
        }
    }

    #[test]
    fn adding_a_node_moves_only_the_ips_it_now_wins(
        cluster in arb_cluster(),
        newcomer in arb_node("node-new".to_string()),
    ) {
        let before = owners(&cluster.elect(), &cluster);
        let mut bigger = cluster.clone();
        bigger.nodes.push(newcomer);
        bigger.alive.insert("node-new".to_string());
        let after = owners(&bigger.elect(), &bigger);
        for (ip, owner) in &after {
            if owner.as_deref() != Some("node-new") {
                prop_assert_eq!(owner, &before[ip], "{} moved to another old node", ip);
            }
        }
    }

    #[test]
    fn the_result_does_not_depend_on_input_order(cluster in arb_cluster(), seed in any::<u64>()) {
        let mut shuffled = cluster.clone();
        shuffle(&mut shuffled.nodes, seed);
        for (i, node) in shuffled.nodes.iter_mut().enumerate() {
            shuffle(&mut node.interfaces, seed ^ i as u64);
        }
        shuffle(&mut shuffled.advertisements, seed.rotate_left(7));
        shuffle(&mut shuffled.services, seed.rotate_left(13));
        for (i, service) in shuffled.services.iter_mut().enumerate() {
            shuffle(&mut service.ips, seed ^ (i as u64).rotate_left(3));
        }
        prop_assert_eq!(cluster.elect(), shuffled.elect());
    }
}

/// Two networks, v4 on eth0 and v6 on eth1, as node-a hears them.
fn two_network_nodes() -> Vec<NodeFacts> {
    ["node-a", "node-b"]
        .map(|name| NodeFacts {
            name: name.into(),
            labels: BTreeMap::new(),
            network_unavailable: false,
            interfaces: vec![
                interface("eth0", &["198.51.100.2/24"]),
                interface("eth1", &["2001:db8:1::2/64"]),
            ],
        })
        .to_vec()
}

/// The election's map of Services.
fn by_id(services: &[ServiceFacts]) -> Services {
    services
        .iter()
        .map(|s| (s.id.clone(), Arc::new(s.clone())))
        .collect()
}

fn elect_heard(heard: &[(&str, &[&str])], services: &[ServiceFacts]) -> Election {
    let by_interface: BTreeMap<InterfaceName, BTreeSet<String>> = heard
        .iter()
        .map(|(interface, nodes)| {
            (
                InterfaceName::new(interface).unwrap(),
                nodes.iter().map(|n| n.to_string()).collect(),
            )
        })
        .collect();
    Election::run(ClusterView {
        nodes: &two_network_nodes(),
        alive: Alive::Heard {
            local: "node-a",
            by_interface: &by_interface,
        },
        pools: &pools(),
        advertisements: &[L2AdvertisementSpec::default()],
        services: &by_id(services),
    })
}

#[test]
fn a_peer_heard_on_any_network_of_a_group_counts_alive_for_it() {
    let dual = [service("web", &["198.51.100.7", "2001:db8:1::7"])];
    let both = ["node-a", "node-b"];
    let winner = rendezvous::winner(ip("198.51.100.7"), both.iter().copied()).unwrap();
    // node-b heard on eth1 only: still alive for the dual-stack group (it may be answering on
    // eth0 where node-a cannot hear it), so the rendezvous decides as with both alive.
    let election = elect_heard(&[("eth0", &["node-a"]), ("eth1", &both)], &dual);
    assert_eq!(election.owner_of(ip("198.51.100.7")), Some(winner));
    // A v4-only group is decided by eth0 alone: node-b is not heard there.
    let v4 = [service("v4", &["198.51.100.7"])];
    let election = elect_heard(&[("eth0", &["node-a"]), ("eth1", &both)], &v4);
    assert_eq!(election.owner_of(ip("198.51.100.7")), Some("node-a"));
    // node-a may not answer on eth1 (a peer there suspects it): it owns the v4 group only
    // where it counts itself; the v6 address is announced nowhere by it.
    let election = elect_heard(&[("eth0", &["node-a"]), ("eth1", &[])], &dual);
    let owned = election.owned_by("node-a");
    assert_eq!(
        owned.keys().copied().collect::<Vec<_>>(),
        [ip("198.51.100.7")]
    );
    assert_eq!(
        owned[&ip("198.51.100.7")],
        [InterfaceName::new("eth0").unwrap()].into()
    );
    // Counted nowhere: no candidate at all.
    let election = elect_heard(&[("eth0", &[]), ("eth1", &[])], &v4);
    assert_eq!(election.owner_of(ip("198.51.100.7")), None);
}

#[test]
fn the_local_node_knows_where_it_would_take_over_whoever_owns_now() {
    let names = |election: &Election| -> Vec<String> {
        election
            .local_interfaces()
            .iter()
            .map(|name| name.to_string())
            .collect()
    };
    let both = ["node-a", "node-b"];
    // Whichever node wins the v4 group, node-a stands by on eth0 only (the v4 subnet's).
    let v4 = [service("v4", &["198.51.100.7"])];
    let election = elect_heard(&[("eth0", &both), ("eth1", &both)], &v4);
    assert_eq!(names(&election), ["eth0"]);
    let dual = [service("web", &["198.51.100.7", "2001:db8:1::7"])];
    let election = elect_heard(&[("eth0", &both), ("eth1", &both)], &dual);
    assert_eq!(names(&election), ["eth0", "eth1"]);
    assert!(
        elect_heard(&[("eth0", &both)], &[])
            .local_interfaces()
            .is_empty()
    );
}
