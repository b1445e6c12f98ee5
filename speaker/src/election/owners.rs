//! The owner of every announcement group: the live candidate with the highest rendezvous score.
//!
//! An *announcement group* is a set of external IPs that must be answered for by one node: the
//! IPs of one Service (so both families of a dual-stack Service land together), joined with
//! those of every Service that shares any of them (so all Services sharing an IP agree), and so
//! on transitively. Its *key*, the one value hashed with each node name, is its lowest IP (every
//! IPv4 address orders before every IPv6 address, then by numeric value). Keying by the lowest
//! IP rather than the whole set means that adding an IPv6 address to an IPv4 Service, or a
//! second Service to a shared IP, leaves the owner where it was.
//!
//! A node is a candidate for a group when its speaker is alive, nothing about the node rules it
//! out (see [`NodeFacts::may_announce`]), it holds a ready or serving endpoint of every Service
//! of the group with `externalTrafficPolicy: Local`, and it has an interface for every IP of
//! the group (see [`announcing_interfaces`]). The result depends on these facts alone, not on
//! the order they are given in, so every speaker computes the same owners from the same view.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::{InterfaceName, L2AdvertisementSpec};

use super::candidates::{
    NodeFacts, PoolFacts, advertisements_covering_ip, has_interface_for, interfaces_for,
};
use super::rendezvous;

/// A Service by namespace and name. Shared strings: the id is a key in the Service index, the
/// election's facts, the BGP decision and the status writers, once per Service each.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// The Services the election reads, by id. Each Service's facts are shared with the Service
/// index they come from: with thousands of Services, a copy per holder is megabytes.
pub type Services = BTreeMap<ServiceId, Arc<ServiceFacts>>;

/// A LoadBalancer Service with external IPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    pub id: ServiceId,
    pub ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`: only nodes in `endpoint_nodes` may announce.
    pub local_traffic_policy: bool,
    /// Nodes holding a ready or serving endpoint of the Service (from its EndpointSlices).
    pub endpoint_nodes: BTreeSet<String>,
}

impl Default for ServiceId {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            name: "".into(),
        }
    }
}

/// Which speakers count alive, and on which network.
#[derive(Clone, Copy, Debug)]
pub enum Alive<'a> {
    /// The same speakers for every IP.
    Everywhere(&'a BTreeSet<String>),
    /// As `local` hears them, per interface of its own (this node included on the interfaces
    /// where it may answer). For a group, a node counts alive if it is heard on any interface
    /// `local` would announce the group on: a node that answers somewhere must not be taken
    /// over anywhere (see `docs/heartbeat-protocol.md`). `local` announces only on the
    /// interfaces where it counts itself.
    Heard {
        local: &'a str,
        by_interface: &'a BTreeMap<InterfaceName, BTreeSet<String>>,
    },
}

/// Everything the election reads.
#[derive(Clone, Copy, Debug)]
pub struct ClusterView<'a> {
    pub nodes: &'a [NodeFacts],
    /// The speakers counted alive.
    pub alive: Alive<'a>,
    pub pools: &'a [PoolFacts],
    pub advertisements: &'a [L2AdvertisementSpec],
    pub services: &'a Services,
}

/// The node answering for a group, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    /// For each IP of the group, the interfaces it is announced on (never empty).
    pub interfaces: BTreeMap<IpAddr, BTreeSet<InterfaceName>>,
}

/// IPs that one node announces together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The lowest IP: what is hashed.
    pub key: IpAddr,
    pub ips: BTreeSet<IpAddr>,
    pub services: BTreeSet<ServiceId>,
    /// The live candidates (names shared between groups).
    pub candidates: BTreeSet<Arc<str>>,
    /// None when no node is a candidate.
    pub owner: Option<Owner>,
}

/// The owners of every group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Election {
    groups: BTreeMap<IpAddr, Group>,
    group_of_ip: BTreeMap<IpAddr, IpAddr>,
    /// IPs that an L2Advertisement covers (so they are meant to be announced) in a group with
    /// no live candidate: nobody answers for them.
    without_owner: BTreeSet<IpAddr>,
    /// The interfaces on which the local node (of [`Alive::Heard`]) would announce some group
    /// if it owned it.
    local_interfaces: BTreeSet<InterfaceName>,
}

impl Election {
    pub fn run(view: ClusterView<'_>) -> Self {
        let mut election = Election::default();
        let nodes: BTreeMap<&str, &NodeFacts> = view
            .nodes
            .iter()
            .rev()
            .map(|node| (node.name.as_str(), node))
            .collect();
        // Which advertisements select which node, once per election rather than per IP; names
        // shared, since every group lists its candidates.
        let nodes: Vec<(Arc<str>, &NodeFacts, Vec<bool>)> = nodes
            .into_iter()
            .map(|(name, node)| {
                let selected_by = view
                    .advertisements
                    .iter()
                    .map(|advertisement| advertisement.selects_node(&node.labels))
                    .collect();
                (Arc::from(name), node, selected_by)
            })
            .collect();
        for (key, members) in sharing_groups(view.services) {
            let ips: BTreeSet<IpAddr> =
                members.iter().flat_map(|s| s.ips.iter().copied()).collect();
            let covering_ips: Vec<(IpAddr, Vec<usize>)> = ips
                .iter()
                .map(|&ip| {
                    (
                        ip,
                        advertisements_covering_ip(ip, view.pools, view.advertisements),
                    )
                })
                .collect();
            // No L2Advertisement covers any of its IPs: never announced, so no node is a
            // candidate. Not kept: with thousands of BGP-only Services the groups would cost
            // megabytes and every election a pass over them.
            if covering_ips.iter().all(|(_, covering)| covering.is_empty()) {
                continue;
            }
            let covering_on = |ip_covering: &'_ [usize], selected_by: &'_ [bool]| {
                ip_covering
                    .iter()
                    .filter(|&&index| selected_by.get(index).copied().unwrap_or(false))
                    .filter_map(|&index| view.advertisements.get(index))
                    .collect::<Vec<_>>()
            };
            let local = match view.alive {
                Alive::Everywhere(_) => None,
                Alive::Heard {
                    local,
                    by_interface,
                } => nodes.iter().find(|(name, _, _)| &**name == local).map(
                    |(_, node, selected_by)| {
                        let interfaces: BTreeSet<InterfaceName> = covering_ips
                            .iter()
                            .flat_map(|(ip, covering)| {
                                interfaces_for(
                                    *ip,
                                    node,
                                    covering_on(covering, selected_by).into_iter(),
                                )
                            })
                            .collect();
                        (local, interfaces, by_interface)
                    },
                ),
            };
            if let Some((_, interfaces, _)) = &local {
                election.local_interfaces.extend(interfaces.iter().cloned());
            }
            let alive_here: Cow<'_, BTreeSet<String>> = match (view.alive, &local) {
                (Alive::Everywhere(alive), _) => Cow::Borrowed(alive),
                // Where this node cannot announce the group, what it hears anywhere.
                (Alive::Heard { by_interface, .. }, None) => {
                    Cow::Owned(by_interface.values().flatten().cloned().collect())
                }
                (Alive::Heard { .. }, Some((_, interfaces, by_interface))) => {
                    let on = |interface: &InterfaceName| by_interface.get(interface);
                    let mut heard: BTreeSet<String> = interfaces
                        .iter()
                        .filter_map(on)
                        .flatten()
                        .cloned()
                        .collect();
                    if interfaces.is_empty() {
                        heard.extend(by_interface.values().flatten().cloned());
                    }
                    Cow::Owned(heard)
                }
            };
            let mut candidates: BTreeSet<Arc<str>> = BTreeSet::new();
            for (name, node, selected_by) in &nodes {
                let eligible = alive_here.contains(&**name)
                    && node.may_announce()
                    && members
                        .iter()
                        .filter(|s| s.local_traffic_policy)
                        .all(|s| s.endpoint_nodes.contains(&**name))
                    && covering_ips.iter().all(|(ip, covering)| {
                        has_interface_for(*ip, node, covering_on(covering, selected_by).into_iter())
                    });
                if eligible {
                    candidates.insert(name.clone());
                }
            }
            // Interfaces are listed for the winner only: most candidates never need them.
            let owner =
                rendezvous::winner(key, candidates.iter().map(|c| &**c)).and_then(|winner| {
                    let (_, node, selected_by) =
                        nodes.iter().find(|(name, _, _)| &**name == winner)?;
                    let mut interfaces: BTreeMap<IpAddr, BTreeSet<InterfaceName>> = covering_ips
                        .iter()
                        .map(|(ip, covering)| {
                            (
                                *ip,
                                interfaces_for(
                                    *ip,
                                    node,
                                    covering_on(covering, selected_by).into_iter(),
                                ),
                            )
                        })
                        .collect();
                    // This node answers only where it counts itself.
                    if let Some((local, _, by_interface)) = &local
                        && *local == winner
                    {
                        for on in interfaces.values_mut() {
                            on.retain(|interface| {
                                by_interface
                                    .get(interface)
                                    .is_some_and(|heard| heard.contains(winner))
                            });
                        }
                        interfaces.retain(|_, on| !on.is_empty());
                    }
                    Some(Owner {
                        node: winner.to_owned(),
                        interfaces,
                    })
                });
            for &ip in &ips {
                election.group_of_ip.insert(ip, key);
            }
            if owner.is_none() {
                election.without_owner.extend(
                    covering_ips
                        .iter()
                        .filter(|(_, covering)| !covering.is_empty())
                        .map(|(ip, _)| *ip),
                );
            }
            election.groups.insert(
                key,
                Group {
                    key,
                    ips,
                    services: members.iter().map(|s| s.id.clone()).collect(),
                    candidates,
                    owner,
                },
            );
        }
        election
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn group_of(&self, ip: IpAddr) -> Option<&Group> {
        self.group_of_ip
            .get(&ip)
            .and_then(|key| self.groups.get(key))
    }

    pub fn owner_of(&self, ip: IpAddr) -> Option<&str> {
        self.group_of(ip)
            .and_then(|group| group.owner.as_ref())
            .map(|owner| owner.node.as_str())
    }

    /// The IPs that should be announced (an L2Advertisement covers a pool holding them) but
    /// have no owner: no live node is a candidate for their group. IPs that no advertisement
    /// covers are not announced by design and are not listed.
    pub fn ips_without_owner(&self) -> &BTreeSet<IpAddr> {
        &self.without_owner
    }

    /// Where the local node would announce a group it took over: where its packet sockets
    /// should already be open, so that a takeover waits for no socket.
    pub fn local_interfaces(&self) -> &BTreeSet<InterfaceName> {
        &self.local_interfaces
    }

    /// What `node` announces: each IP it owns with its interfaces.
    pub fn owned_by(&self, node: &str) -> BTreeMap<IpAddr, BTreeSet<InterfaceName>> {
        self.groups
            .values()
            .filter_map(|group| group.owner.as_ref())
            .filter(|owner| owner.node == node)
            .flat_map(|owner| owner.interfaces.clone())
            .collect()
    }
}

/// Services joined into groups by shared IPs, keyed by each group's lowest IP.
fn sharing_groups(services: &Services) -> BTreeMap<IpAddr, Vec<&ServiceFacts>> {
    // Union-find over IPs where each root is the lowest IP of its set, so a root is a group key.
    let mut parent: BTreeMap<IpAddr, IpAddr> = BTreeMap::new();
    fn root(parent: &BTreeMap<IpAddr, IpAddr>, mut ip: IpAddr) -> IpAddr {
        while let Some(&up) = parent.get(&ip) {
            if up == ip {
                break;
            }
            ip = up;
        }
        ip
    }
    for service in services.values() {
        for &ip in &service.ips {
            parent.entry(ip).or_insert(ip);
        }
        if let Some((&first, rest)) = service.ips.split_first() {
            for &ip in rest {
                let (a, b) = (root(&parent, first), root(&parent, ip));
                let (low, high) = if a <= b { (a, b) } else { (b, a) };
                parent.insert(high, low);
            }
        }
    }
    let mut groups: BTreeMap<IpAddr, Vec<&ServiceFacts>> = BTreeMap::new();
    for service in services.values() {
        if let Some(&first) = service.ips.first() {
            groups
                .entry(root(&parent, first))
                .or_default()
                .push(service);
        }
    }
    for members in groups.values_mut() {
        members.sort_by(|a, b| a.id.cmp(&b.id));
    }
    groups
}

#[cfg(test)]
mod tests;
