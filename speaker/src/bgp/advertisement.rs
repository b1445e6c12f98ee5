//! What this node advertises to which BGP peer: every selected node with a speaker advertises
//! every IP of the pools its BGPAdvertisements cover (the router spreads traffic over them by
//! ECMP), except where layer 2's own facts rule the node out. Pure: the same inputs give the
//! same routes, so the glue only diffs them against what each session has sent.
//!
//! The node facts (exclusion label, NetworkUnavailable), pools and Services (with the nodes
//! holding endpoints, for externalTrafficPolicy Local) are the ones the layer-2 election reads.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::{BGPAdvertisementSpec, BGPPeerSpec, Community};
use ipnet::IpNet;
use smallvec::SmallVec;

use crate::election::{NodeFacts, PoolFacts, ServiceId, Services};

/// A BGPPeer as the decision needs it. `order` sorts peers oldest first (creation time, then
/// name), so that of two peers for one router the older wins everywhere alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFacts {
    pub name: String,
    pub order: (i64, String),
    pub spec: BGPPeerSpec,
}

/// An advertisement by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisementFacts {
    pub name: String,
    pub spec: BGPAdvertisementSpec,
}

/// The attributes one prefix is advertised with, before the session adds its own (next hop,
/// AS path, and whether LOCAL_PREF may be sent at all).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvertisedAttributes {
    /// Sorted, without repeats. A vector, not a set: there is one per route, and a set's
    /// smallest allocation is ten times that of one or two communities.
    pub communities: Vec<Community>,
    /// The highest asked for when several advertisements cover the prefix.
    pub local_pref: Option<u32>,
}

/// What this node sends to one peer. Prefixes with equal attributes share them: thousands of
/// routes usually carry a handful of distinct attribute sets.
pub type PeerRoutes = BTreeMap<IpNet, Arc<AdvertisedAttributes>>;

/// Everything the decision reads.
#[derive(Clone, Copy, Debug)]
pub struct BgpView<'a> {
    pub node: &'a NodeFacts,
    pub peers: &'a [PeerFacts],
    pub advertisements: &'a [AdvertisementFacts],
    pub pools: &'a [PoolFacts],
    pub services: &'a Services,
}

/// A Service's prefixes, sorted, without repeats: nearly always one, so kept inline.
pub type ServicePrefixes = SmallVec<[IpNet; 1]>;

/// Where one Service is advertised from this node. Both sorted, without repeats, and small:
/// one per Service, with thousands of Services, so the peer list (nearly always the same few
/// peers) is shared between them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAdvertisement {
    pub peers: Arc<[String]>,
    pub prefixes: ServicePrefixes,
}

/// Where `item` goes in the sorted `items`; none if it is there.
fn insertion_point<T: Ord>(items: &[T], item: &T) -> Option<usize> {
    items.binary_search(item).err()
}

/// The one shared copy of `key`'s value in `cache`, made by `make` the first time.
fn shared<K: Eq + std::hash::Hash, V: ?Sized>(
    cache: &mut HashMap<K, Arc<V>>,
    key: K,
    make: impl FnOnce(&K) -> Arc<V>,
) -> Arc<V> {
    Arc::clone(cache.entry(key).or_insert_with_key(|key| make(key)))
}

/// The decision for this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Routes per peer name, for every peer this node has a session with (possibly none).
    /// Peers that get the same routes share one table, which their sessions share in turn.
    pub routes: BTreeMap<String, Arc<PeerRoutes>>,
    /// Per Service, which peers get which of its prefixes; sorted by id. A vector rather than
    /// a map: it is built in order and read in order or by binary search, and with thousands
    /// of Services a map's nodes would cost more than the entries.
    pub services: Vec<(ServiceId, ServiceAdvertisement)>,
    /// Peers that select this node but are not used, with why (shown in BGPSessionState).
    pub skipped_peers: BTreeMap<String, String>,
}

impl Decision {
    /// Where `id` is advertised; none if nowhere.
    pub fn service(&self, id: &ServiceId) -> Option<&ServiceAdvertisement> {
        let at = self.services.binary_search_by(|(k, _)| k.cmp(id)).ok()?;
        self.services
            .get(at)
            .map(|(_, advertisement)| advertisement)
    }
}

/// The peers this node holds sessions with: those that select it and whose spec is valid;
/// of several for one router (address and port), the oldest.
pub fn session_peers<'a>(
    node: &NodeFacts,
    peers: &'a [PeerFacts],
) -> (Vec<&'a PeerFacts>, BTreeMap<String, String>) {
    let mut ordered: Vec<&PeerFacts> = peers
        .iter()
        .filter(|peer| peer.spec.selects_node(&node.labels))
        .collect();
    ordered.sort_by(|a, b| a.order.cmp(&b.order));
    let mut chosen: Vec<&PeerFacts> = Vec::new();
    let mut routers: BTreeMap<(IpAddr, u16), &str> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for peer in ordered {
        let settings = match peer.spec.settings() {
            Ok(settings) => settings,
            Err(errors) => {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                skipped.insert(peer.name.clone(), text.join("; "));
                continue;
            }
        };
        let router = (settings.peer_address, settings.peer_port);
        if let Some(older) = routers.get(&router) {
            skipped.insert(
                peer.name.clone(),
                format!("BGPPeer {older} (older) already peers with this router from this node"),
            );
            continue;
        }
        routers.insert(router, &peer.name);
        chosen.push(peer);
    }
    (chosen, skipped)
}

fn family_matches(prefix: &IpNet, peer: &PeerFacts) -> bool {
    // Each family travels on a session of its own family, so the next hop (this node's
    // address on the session) is always of the prefix's family.
    peer.spec
        .peer_address
        .parse::<IpAddr>()
        .is_ok_and(|address| address.is_ipv4() == matches!(prefix, IpNet::V4(_)))
}

/// The prefix that advertises `ip` under `advertisement`: the IP itself, or the block of the
/// aggregation length holding it.
fn prefix_for(ip: IpAddr, advertisement: &BGPAdvertisementSpec) -> Option<IpNet> {
    let length = match ip {
        IpAddr::V4(_) => advertisement.aggregation_length,
        IpAddr::V6(_) => advertisement.aggregation_length_v6,
    };
    IpNet::new(ip, length).ok().map(|net| net.trunc())
}

/// What this node advertises, to whom.
pub fn decide(view: BgpView<'_>) -> Decision {
    let (peers, skipped_peers) = session_peers(view.node, view.peers);
    let mut routes: Vec<PeerRoutes> = vec![PeerRoutes::new(); peers.len()];
    let mut services = Vec::with_capacity(view.services.len());
    if view.node.may_announce() && !peers.is_empty() {
        // Per pool, the advertisements that cover it from this node and fit it.
        let usable: Vec<(&PoolFacts, Vec<&AdvertisementFacts>)> = view
            .pools
            .iter()
            .map(|pool| {
                let covering = view
                    .advertisements
                    .iter()
                    .filter(|a| {
                        a.spec.selects_pool(&pool.name, &pool.labels)
                            && a.spec.selects_node(&view.node.labels)
                            && a.spec
                                .aggregation_problem(&pool.name, &pool.addresses)
                                .is_none()
                    })
                    .collect();
                (pool, covering)
            })
            .collect();
        let mut attribute_sets = HashMap::new();
        let mut peer_lists = HashMap::new();
        for service in view.services.values() {
            if service.local_traffic_policy && !service.endpoint_nodes.contains(&view.node.name) {
                continue;
            }
            let mut service_peers: SmallVec<[usize; 4]> = SmallVec::new();
            let mut prefixes = ServicePrefixes::new();
            for &ip in &service.ips {
                for (_, covering) in usable
                    .iter()
                    .filter(|(pool, _)| pool.addresses.contains(ip))
                {
                    for advertisement in covering {
                        let Some(prefix) = prefix_for(ip, &advertisement.spec) else {
                            continue;
                        };
                        for (index, peer) in peers.iter().enumerate() {
                            if !advertisement.spec.selects_peer(&peer.name)
                                || !family_matches(&prefix, peer)
                            {
                                continue;
                            }
                            let table = &mut routes[index];
                            let mut attributes: AdvertisedAttributes = table
                                .get(&prefix)
                                .map(|a| (**a).clone())
                                .unwrap_or_default();
                            for community in &advertisement.spec.communities {
                                if let Some(at) =
                                    insertion_point(&attributes.communities, community)
                                {
                                    attributes.communities.insert(at, *community);
                                }
                            }
                            attributes.local_pref =
                                attributes.local_pref.max(advertisement.spec.local_pref);
                            table.insert(
                                prefix,
                                shared(&mut attribute_sets, attributes, |a| Arc::new(a.clone())),
                            );
                            if let Some(at) = insertion_point(&service_peers, &index) {
                                service_peers.insert(at, index);
                            }
                            if let Some(at) = insertion_point(&prefixes, &prefix) {
                                prefixes.insert(at, prefix);
                            }
                        }
                    }
                }
            }
            if !service_peers.is_empty() {
                let peers = shared(&mut peer_lists, service_peers, |indices| {
                    indices.iter().map(|&i| peers[i].name.clone()).collect()
                });
                // In id order: `view.services` is.
                services.push((service.id.clone(), ServiceAdvertisement { peers, prefixes }));
            }
        }
    }
    services.shrink_to_fit();
    // Peers with equal routes share one table (sessions to two routers usually get the same).
    let mut tables: Vec<Arc<PeerRoutes>> = Vec::new();
    let routes = peers
        .iter()
        .zip(routes)
        .map(|(peer, table)| {
            let table = match tables.iter().find(|known| ***known == table) {
                Some(known) => Arc::clone(known),
                None => {
                    let table = Arc::new(table);
                    tables.push(Arc::clone(&table));
                    table
                }
            };
            (peer.name.clone(), table)
        })
        .collect();
    Decision {
        routes,
        services,
        skipped_peers,
    }
}

#[cfg(test)]
mod tests;
