//! Which nodes may announce an IP, and on which of their interfaces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_crds::{AddressSet, InterfaceName, L2AdvertisementSpec};

use super::node_interfaces::PublishedInterface;

/// Kubernetes' well-known label: a node carrying it (with any value) never announces.
pub const EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the election needs to know about a node. Names are unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's NetworkUnavailable condition is True.
    pub network_unavailable: bool,
    /// The interfaces that are up, as the node's speaker published them in its Lease.
    pub interfaces: Vec<PublishedInterface>,
}

impl NodeFacts {
    /// Whether anything about the node itself rules it out, whatever the IP.
    pub fn may_announce(&self) -> bool {
        !self.network_unavailable
            && !self
                .labels
                .contains_key(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS)
    }
}

/// An IPAddressPool as far as announcing goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: AddressSet,
}

/// The interfaces of `node` on which `ip` may be announced: for every L2Advertisement that
/// covers a pool holding `ip` and selects the node, the interfaces it names, or without names
/// the interfaces whose subnet holds `ip`, or failing those every non-virtual interface.
/// Empty when the node cannot announce `ip` (it says nothing of the node's own state).
pub fn announcing_interfaces(
    ip: IpAddr,
    node: &NodeFacts,
    pools: &[PoolFacts],
    advertisements: &[L2AdvertisementSpec],
) -> BTreeSet<InterfaceName> {
    interfaces_for(ip, node, covering(ip, node, pools, advertisements))
}

/// The interfaces of `node` on which it could announce some IP of some pool, whatever is
/// assigned now: where its heartbeats go. For every L2Advertisement that selects the node and
/// covers a pool, the interfaces it names, or without names every non-virtual interface and
/// every interface on a subnet that shares addresses with a covered pool. This holds
/// [`announcing_interfaces`] of every IP of every pool, and leaves out links such as pods'
/// veths, where no IP is ever announced.
pub fn candidate_interfaces(
    node: &NodeFacts,
    pools: &[PoolFacts],
    advertisements: &[L2AdvertisementSpec],
) -> BTreeSet<InterfaceName> {
    let mut chosen = BTreeSet::new();
    for advertisement in advertisements
        .iter()
        .filter(|advertisement| advertisement.selects_node(&node.labels))
    {
        let covered: Vec<&PoolFacts> = pools
            .iter()
            .filter(|pool| advertisement.selects_pool(&pool.name, &pool.labels))
            .collect();
        if covered.is_empty() {
            continue;
        }
        let usable = |interface: &PublishedInterface| {
            if advertisement.interfaces.is_empty() {
                !interface.is_virtual
                    || interface
                        .subnets
                        .iter()
                        .any(|subnet| covered.iter().any(|pool| pool.addresses.overlaps(*subnet)))
            } else {
                advertisement.interfaces.contains(&interface.name)
            }
        };
        chosen.extend(
            node.interfaces
                .iter()
                .filter(|interface| usable(interface))
                .map(|interface| interface.name.clone()),
        );
    }
    chosen
}

/// The indices of the advertisements that cover a pool holding `ip`, whatever the node: the
/// node-independent half of [`announcing_interfaces`], computed once per IP per election.
pub(crate) fn advertisements_covering_ip(
    ip: IpAddr,
    pools: &[PoolFacts],
    advertisements: &[L2AdvertisementSpec],
) -> Vec<usize> {
    advertisements
        .iter()
        .enumerate()
        .filter(|(_, advertisement)| {
            pools.iter().any(|pool| {
                pool.addresses.contains(ip) && advertisement.selects_pool(&pool.name, &pool.labels)
            })
        })
        .map(|(index, _)| index)
        .collect()
}

/// The interfaces of `node` for `ip` under the advertisements that cover it there.
pub(crate) fn interfaces_for<'a>(
    ip: IpAddr,
    node: &NodeFacts,
    covering: impl Iterator<Item = &'a L2AdvertisementSpec>,
) -> BTreeSet<InterfaceName> {
    let mut chosen = BTreeSet::new();
    for advertisement in covering {
        if advertisement.interfaces.is_empty() {
            chosen.extend(default_interfaces(ip, &node.interfaces));
        } else {
            chosen.extend(
                node.interfaces
                    .iter()
                    .filter(|interface| advertisement.interfaces.contains(&interface.name))
                    .map(|interface| interface.name.clone()),
            );
        }
    }
    chosen
}

/// How often `node` repeats its gratuitous announcements of `ip`: the shortest
/// `gratuitousInterval` among the advertisements covering it there; None for only on takeover.
pub fn gratuitous_interval(
    ip: IpAddr,
    node: &NodeFacts,
    pools: &[PoolFacts],
    advertisements: &[L2AdvertisementSpec],
) -> Option<Duration> {
    covering(ip, node, pools, advertisements)
        .filter_map(|advertisement| advertisement.gratuitous_interval)
        .map(|interval| interval.duration())
        .min()
}

/// The advertisements that select `node` and cover a pool holding `ip`.
fn covering<'a>(
    ip: IpAddr,
    node: &'a NodeFacts,
    pools: &'a [PoolFacts],
    advertisements: &'a [L2AdvertisementSpec],
) -> impl Iterator<Item = &'a L2AdvertisementSpec> {
    advertisements.iter().filter(move |advertisement| {
        advertisement.selects_node(&node.labels)
            && pools.iter().any(|pool| {
                pool.addresses.contains(ip) && advertisement.selects_pool(&pool.name, &pool.labels)
            })
    })
}

/// Whether [`interfaces_for`] would list anything, without building the list.
pub(crate) fn has_interface_for<'a>(
    ip: IpAddr,
    node: &NodeFacts,
    mut covering: impl Iterator<Item = &'a L2AdvertisementSpec>,
) -> bool {
    covering.any(|advertisement| {
        if advertisement.interfaces.is_empty() {
            node.interfaces.iter().any(|interface| {
                !interface.is_virtual || interface.subnets.iter().any(|subnet| subnet.contains(&ip))
            })
        } else {
            node.interfaces
                .iter()
                .any(|interface| advertisement.interfaces.contains(&interface.name))
        }
    })
}

fn default_interfaces(ip: IpAddr, interfaces: &[PublishedInterface]) -> Vec<InterfaceName> {
    let on_subnet: Vec<InterfaceName> = interfaces
        .iter()
        .filter(|interface| interface.subnets.iter().any(|subnet| subnet.contains(&ip)))
        .map(|interface| interface.name.clone())
        .collect();
    if !on_subnet.is_empty() {
        return on_subnet;
    }
    interfaces
        .iter()
        .filter(|interface| !interface.is_virtual)
        .map(|interface| interface.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use ferrolb_crds::LabelSelector;

    use super::*;

    fn interface(name: &str, is_virtual: bool, subnets: &[&str]) -> PublishedInterface {
        PublishedInterface {
            name: InterfaceName::new(name).unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            is_virtual,
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn node(interfaces: Vec<PublishedInterface>) -> NodeFacts {
        NodeFacts {
            name: "node-a".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            network_unavailable: false,
            interfaces,
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

    fn names(set: BTreeSet<InterfaceName>) -> Vec<String> {
        set.into_iter().map(|n| n.to_string()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn by_default_the_interface_on_the_ips_subnet_announces() {
        let n = node(vec![
            interface("eth0", false, &["198.51.100.5/24"]),
            interface("eth1", false, &["2001:db8:1::5/64"]),
            interface("br0", true, &[]),
        ]);
        let all = [L2AdvertisementSpec::default()];
        assert_eq!(
            names(announcing_interfaces(
                ip("198.51.100.10"),
                &n,
                &pools(),
                &all
            )),
            ["eth0"]
        );
        assert_eq!(
            names(announcing_interfaces(
                ip("2001:db8:1::10"),
                &n,
                &pools(),
                &all
            )),
            ["eth1"]
        );
        // No interface on 203.0.113.0/24: every non-virtual one.
        assert_eq!(
            names(announcing_interfaces(
                ip("203.0.113.10"),
                &n,
                &pools(),
                &all
            )),
            ["eth0", "eth1"]
        );
    }

    #[test]
    fn candidates_hold_every_announcing_interface_and_no_link_without_a_pool() {
        let n = node(vec![
            interface("eth0", false, &["198.51.100.5/24"]),
            interface("eth1", false, &[]),
            interface("br-pods", true, &["2001:db8:2::1/64"]),
            interface("vlan7", true, &["2001:db8:1::5/64"]),
            interface("veth1234", true, &[]),
        ]);
        let all = [L2AdvertisementSpec::default()];
        let candidates = candidate_interfaces(&n, &pools(), &all);
        assert_eq!(names(candidates.clone()), ["eth0", "eth1", "vlan7"]);
        for ip in ["198.51.100.10", "2001:db8:1::10", "203.0.113.10"].map(ip) {
            assert!(announcing_interfaces(ip, &n, &pools(), &all).is_subset(&candidates));
        }
        let named = [L2AdvertisementSpec {
            interfaces: vec![InterfaceName::new("veth1234").unwrap()],
            ..Default::default()
        }];
        assert_eq!(
            names(candidate_interfaces(&n, &pools(), &named)),
            ["veth1234"]
        );
        let elsewhere = [L2AdvertisementSpec {
            node_selectors: vec![LabelSelector {
                match_labels: [("zone".to_string(), "b".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        assert!(candidate_interfaces(&n, &pools(), &elsewhere).is_empty());
        assert!(candidate_interfaces(&n, &[], &all).is_empty());
    }

    #[test]
    fn named_interfaces_are_used_only_when_up_on_the_node() {
        let n = node(vec![
            interface("eth0", false, &["198.51.100.5/24"]),
            interface("vlan7", true, &[]),
        ]);
        let advertisement = L2AdvertisementSpec {
            interfaces: vec![
                InterfaceName::new("vlan7").unwrap(),
                InterfaceName::new("eth9").unwrap(),
            ],
            ..Default::default()
        };
        assert_eq!(
            names(announcing_interfaces(
                ip("198.51.100.10"),
                &n,
                &pools(),
                &[advertisement]
            )),
            ["vlan7"]
        );
    }

    #[test]
    fn ips_outside_covered_pools_or_on_unselected_nodes_are_not_announced() {
        let n = node(vec![interface("eth0", false, &["198.51.100.5/24"])]);
        let lan_only = L2AdvertisementSpec {
            ip_address_pools: vec!["lan".into()],
            ..Default::default()
        };
        assert!(
            announcing_interfaces(
                ip("203.0.113.10"),
                &n,
                &pools(),
                std::slice::from_ref(&lan_only)
            )
            .is_empty()
        );
        assert!(
            announcing_interfaces(
                ip("198.51.100.10"),
                &n,
                &[],
                std::slice::from_ref(&lan_only)
            )
            .is_empty()
        );
        assert!(announcing_interfaces(ip("198.51.100.10"), &n, &pools(), &[]).is_empty());
        let zone_b = L2AdvertisementSpec {
            node_selectors: vec![LabelSelector::from_labels([("zone", "b")])],
            ..lan_only
        };
        assert!(announcing_interfaces(ip("198.51.100.10"), &n, &pools(), &[zone_b]).is_empty());
    }

    #[test]
    fn the_shortest_covering_gratuitous_interval_wins() {
        let n = node(vec![interface("eth0", false, &["198.51.100.5/24"])]);
        let every = |text: &str| L2AdvertisementSpec {
            gratuitous_interval: Some(text.parse().unwrap()),
            ..Default::default()
        };
        let dmz_only = L2AdvertisementSpec {
            ip_address_pools: vec!["dmz".into()],
            ..every("5s")
        };
        let advertisements = [
            every("1m"),
            every("30s"),
            dmz_only,
            L2AdvertisementSpec::default(),
        ];
        assert_eq!(
            gratuitous_interval(ip("198.51.100.10"), &n, &pools(), &advertisements),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            gratuitous_interval(
                ip("198.51.100.10"),
                &n,
                &pools(),
                &[L2AdvertisementSpec::default()]
            ),
            None
        );
    }

    #[test]
    fn excluded_or_network_unavailable_nodes_may_not_announce() {
        let mut n = node(vec![]);
        assert!(n.may_announce());
        n.labels
            .insert(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.into(), String::new());
        assert!(!n.may_announce());
        let mut n = node(vec![]);
        n.network_unavailable = true;
        assert!(!n.may_announce());
    }
}
