//! The Ready condition of BGPPeers and BGPAdvertisements: what the schema cannot refuse because
//! it spans objects (a pool or peer that does not exist, an aggregate that would cover addresses
//! outside its pool, two peers for the same router and nodes) or because the object reached the
//! cluster before its rule did. The speakers apply the same checks (from `ferrolb_crds`) before
//! they advertise anything; this module only tells the user.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::bgp_advertisement::condition as adv_condition;
use ferrolb_crds::bgp_peer::condition as peer_condition;
use ferrolb_crds::{BGPAdvertisement, BGPPeer, LabelSelector};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::pools::{PoolAssessment, Readiness};

/// Which kind of BGP object a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BgpKind {
    Peer,
    Advertisement,
}

impl BgpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BgpKind::Peer => "BGPPeer",
            BgpKind::Advertisement => "BGPAdvertisement",
        }
    }
}

/// The verdict on one object, with the generation it was reached for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub generation: Option<i64>,
    pub readiness: Readiness,
}

fn valid() -> Readiness {
    Readiness {
        ready: true,
        reason: peer_condition::REASON_VALID,
        message: String::new(),
    }
}

fn creation_order<K: kube::Resource>(object: &K) -> (Option<Timestamp>, String) {
    let meta = object.meta();
    (
        meta.creation_timestamp.as_ref().map(|t| t.0),
        meta.name.clone().unwrap_or_default(),
    )
}

fn selector_problems(field: &str, selectors: &[LabelSelector]) -> Vec<String> {
    selectors
        .iter()
        .enumerate()
        .filter_map(|(index, s)| s.check().err().map(|e| format!("{field}[{index}]: {e}")))
        .collect()
}

/// Judges every peer. A peer whose router (address and port) an older peer already names, for
/// nodes both certainly select (one selects every node, or both select alike), is a duplicate:
/// a node can hold only one session to a router, and it keeps the older peer's.
pub fn judge_peers(peers: &[BGPPeer]) -> BTreeMap<String, Verdict> {
    let mut ordered: Vec<&BGPPeer> = peers.iter().collect();
    ordered.sort_by_key(|p| creation_order(*p));
    let mut verdicts = BTreeMap::new();
    let mut judged: Vec<&BGPPeer> = Vec::new();
    for peer in ordered {
        let name = peer.metadata.name.clone().unwrap_or_default();
        let mut problems: Vec<String> = match peer.spec.settings() {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        problems.extend(selector_problems(
            "nodeSelectors",
            &peer.spec.node_selectors,
        ));
        let readiness = if !problems.is_empty() {
            Readiness {
                ready: false,
                reason: peer_condition::REASON_INVALID,
                message: problems.join("; "),
            }
        } else if let Some(older) = judged
            .iter()
            .find(|older| same_router_same_nodes(older, peer))
        {
            Readiness {
                ready: false,
                reason: peer_condition::REASON_DUPLICATE,
                message: format!(
                    "BGPPeer {} (older) already peers with {} port {} from the same nodes; those nodes keep its session and ignore this one",
                    older.metadata.name.as_deref().unwrap_or_default(),
                    peer.spec.peer_address,
                    peer.spec.peer_port
                ),
            }
        } else {
            judged.push(peer);
            valid()
        };
        verdicts.insert(
            name,
            Verdict {
                generation: peer.metadata.generation,
                readiness,
            },
        );
    }
    verdicts
}

fn same_router_same_nodes(a: &BGPPeer, b: &BGPPeer) -> bool {
    let address = |p: &BGPPeer| p.spec.peer_address.parse::<std::net::IpAddr>().ok();
    address(a).is_some()
        && address(a) == address(b)
        && a.spec.peer_port == b.spec.peer_port
        && (a.spec.node_selectors.is_empty()
            || b.spec.node_selectors.is_empty()
            || a.spec.node_selectors == b.spec.node_selectors)
}

/// Judges every advertisement against the pools (as the controller assessed them) and the peers
/// that exist.
pub fn judge_advertisements(
    advertisements: &[BGPAdvertisement],
    pools: &[PoolAssessment],
    peer_names: &BTreeSet<String>,
) -> BTreeMap<String, Verdict> {
    let mut verdicts = BTreeMap::new();
    for advertisement in advertisements {
        let name = advertisement.metadata.name.clone().unwrap_or_default();
        let spec = &advertisement.spec;
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        for field in [
            ("ipAddressPoolSelectors", &spec.ip_address_pool_selectors),
            ("nodeSelectors", &spec.node_selectors),
        ] {
            problems.extend(
                selector_problems(field.0, field.1)
                    .into_iter()
                    .map(|p| (adv_condition::REASON_INVALID, p)),
            );
        }
        for pool in &spec.ip_address_pools {
            if !pools.iter().any(|p| &p.name == pool) {
                problems.push((
                    adv_condition::REASON_UNKNOWN_POOL,
                    format!("pool {pool} does not exist"),
                ));
            }
        }
        for peer in &spec.peers {
            if !peer_names.contains(peer) {
                problems.push((
                    adv_condition::REASON_UNKNOWN_PEER,
                    format!("BGPPeer {peer} does not exist"),
                ));
            }
        }
        // Pool labels are not part of an assessment; selectors are matched by the speakers
        // against the pool objects, so only named pools and the every-pool default are checked.
        let covered = pools.iter().filter(|p| {
            let named = spec.ip_address_pools.contains(&p.name);
            let all = spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty();
            named || all
        });
        for pool in covered {
            if let Some(problem) = pool
                .declared
                .as_ref()
                .and_then(|set| spec.aggregation_problem(&pool.name, set))
            {
                problems.push((adv_condition::REASON_AGGREGATION_TOO_SHORT, problem));
            }
        }
        let readiness = match problems.first() {
            None => Readiness {
                ready: true,
                reason: adv_condition::REASON_VALID,
                message: String::new(),
            },
            Some((reason, _)) => Readiness {
                ready: false,
                reason,
                message: problems
                    .iter()
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        };
        verdicts.insert(
            name,
            Verdict {
                generation: advertisement.metadata.generation,
                readiness,
            },
        );
    }
    verdicts
}

/// The Ready condition for a verdict, keeping the transition time of `current` when the status
/// does not change.
pub fn ready_condition(verdict: &Verdict, current: &[Condition], now: Timestamp) -> Condition {
    let status = if verdict.readiness.ready {
        "True"
    } else {
        "False"
    };
    let previous = current.iter().find(|c| c.type_ == peer_condition::READY);
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: peer_condition::READY.to_owned(),
        status: status.to_owned(),
        reason: verdict.readiness.reason.to_owned(),
        message: verdict.readiness.message.clone(),
        observed_generation: verdict.generation,
        last_transition_time,
    }
}

/// Whether the object's current Ready condition already says what the verdict says.
pub fn is_reported(verdict: &Verdict, current: &[Condition], observed: Option<i64>) -> bool {
    let status = if verdict.readiness.ready {
        "True"
    } else {
        "False"
    };
    observed == verdict.generation
        && current.iter().any(|c| {
            c.type_ == peer_condition::READY
                && c.status == status
                && c.reason == verdict.readiness.reason
                && c.message == verdict.readiness.message
        })
}

/// A write the verdicts call for.
#[derive(Debug, Clone, PartialEq)]
pub enum BgpAction {
    /// A merge patch of the object's whole status.
    Status {
        kind: BgpKind,
        name: String,
        patch: serde_json::Value,
    },
    Event {
        kind: BgpKind,
        name: String,
        reference: ObjectReference,
        warning: bool,
        reason: &'static str,
        message: String,
    },
}

/// The BGPPeers and BGPAdvertisements as watched, and what was last said about each, so a
/// verdict is written once and an event published once per change.
#[derive(Default)]
pub struct BgpObjects {
    peers: BTreeMap<String, BGPPeer>,
    advertisements: BTreeMap<String, BGPAdvertisement>,
    pub peers_synced: bool,
    pub advertisements_synced: bool,
    dirty: bool,
    announced: BTreeMap<(BgpKind, String), Readiness>,
}

fn keyed<K: kube::Resource>(objects: Vec<K>) -> BTreeMap<String, K> {
    objects
        .into_iter()
        .filter_map(|o| o.meta().name.clone().map(|n| (n, o)))
        .collect()
}

impl BgpObjects {
    pub fn replace_peers(&mut self, peers: Vec<BGPPeer>) {
        self.peers = keyed(peers);
        self.peers_synced = true;
        self.dirty = true;
    }

    pub fn apply_peer(&mut self, peer: BGPPeer) {
        if let Some(name) = peer.metadata.name.clone() {
            self.peers.insert(name, peer);
            self.dirty = true;
        }
    }

    pub fn delete_peer(&mut self, peer: &BGPPeer) {
        if let Some(name) = &peer.metadata.name {
            self.peers.remove(name);
            self.announced.remove(&(BgpKind::Peer, name.clone()));
            self.dirty = true;
        }
    }

    pub fn replace_advertisements(&mut self, advertisements: Vec<BGPAdvertisement>) {
        self.advertisements = keyed(advertisements);
        self.advertisements_synced = true;
        self.dirty = true;
    }

    pub fn apply_advertisement(&mut self, advertisement: BGPAdvertisement) {
        if let Some(name) = advertisement.metadata.name.clone() {
            self.advertisements.insert(name, advertisement);
            self.dirty = true;
        }
    }

    pub fn delete_advertisement(&mut self, advertisement: &BGPAdvertisement) {
        if let Some(name) = &advertisement.metadata.name {
            self.advertisements.remove(name);
            self.announced
                .remove(&(BgpKind::Advertisement, name.clone()));
            self.dirty = true;
        }
    }

    /// Pools changed, or this replica became leader: judge everything again.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn has_work(&self) -> bool {
        self.dirty && self.peers_synced && self.advertisements_synced
    }

    /// Judges every object and returns the writes that make their status say so.
    pub fn step(&mut self, pools: &[PoolAssessment], now: Timestamp) -> Vec<BgpAction> {
        self.dirty = false;
        let peers: Vec<BGPPeer> = self.peers.values().cloned().collect();
        let advertisements: Vec<BGPAdvertisement> = self.advertisements.values().cloned().collect();
        let peer_names: BTreeSet<String> = self.peers.keys().cloned().collect();
        let mut actions = Vec::new();
        for (name, verdict) in judge_peers(&peers) {
            if let Some(peer) = self.peers.get(&name).cloned() {
                let status = peer.status.clone().unwrap_or_default();
                let report = (status.conditions, status.observed_generation);
                self.report(
                    BgpKind::Peer,
                    &peer,
                    &name,
                    &verdict,
                    report,
                    now,
                    &mut actions,
                );
            }
        }
        for (name, verdict) in judge_advertisements(&advertisements, pools, &peer_names) {
            if let Some(advertisement) = self.advertisements.get(&name).cloned() {
                let status = advertisement.status.clone().unwrap_or_default();
                let report = (status.conditions, status.observed_generation);
                self.report(
                    BgpKind::Advertisement,
                    &advertisement,
                    &name,
                    &verdict,
                    report,
                    now,
                    &mut actions,
                );
            }
        }
        actions
    }

    #[allow(clippy::too_many_arguments)]
    fn report<K: kube::Resource<DynamicType = ()>>(
        &mut self,
        kind: BgpKind,
        object: &K,
        name: &str,
        verdict: &Verdict,
        (conditions, observed): (Vec<Condition>, Option<i64>),
        now: Timestamp,
        actions: &mut Vec<BgpAction>,
    ) {
        if !is_reported(verdict, &conditions, observed) {
            let condition = ready_condition(verdict, &conditions, now);
            actions.push(BgpAction::Status {
                kind,
                name: name.to_owned(),
                patch: serde_json::json!({"status": {
                    "observedGeneration": verdict.generation,
                    "conditions": [condition],
                }}),
            });
        }
        let key = (kind, name.to_owned());
        let was_ready = conditions
            .iter()
            .find(|c| c.type_ == peer_condition::READY)
            .map(|c| c.status == "True");
        let said_before = self.announced.get(&key) == Some(&verdict.readiness)
            || is_reported(verdict, &conditions, observed);
        self.announced.insert(key, verdict.readiness.clone());
        let recovered = verdict.readiness.ready && was_ready == Some(false);
        if said_before || (verdict.readiness.ready && !recovered) {
            return;
        }
        actions.push(BgpAction::Event {
            kind,
            name: name.to_owned(),
            reference: object.object_ref(&()),
            warning: !verdict.readiness.ready,
            reason: verdict.readiness.reason,
            message: if verdict.readiness.ready {
                format!("{} {name} is valid again", kind.as_str())
            } else {
                verdict.readiness.message.clone()
            },
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::pools::assess;
    use ferrolb_crds::IPAddressPool;
    use serde_json::json;

    fn peer(name: &str, created: &str, spec: serde_json::Value) -> BGPPeer {
        serde_json::from_value(
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
            "metadata": {"name": name, "creationTimestamp": created, "generation": 1},
            "spec": spec}),
        )
        .unwrap()
    }

    fn advertisement(name: &str, spec: serde_json::Value) -> BGPAdvertisement {
        serde_json::from_value(
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": name, "generation": 2}, "spec": spec}),
        )
        .unwrap()
    }

    fn pool(name: &str, addresses: &[&str]) -> IPAddressPool {
        serde_json::from_value(
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"addresses": addresses}}),
        )
        .unwrap()
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn the_younger_of_two_peers_for_one_router_and_node_set_is_a_duplicate() {
        let tor = json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"});
        let rack_a = json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1",
            "nodeSelectors": [{"matchLabels": {"rack": "a"}}]});
        let rack_b = json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1",
            "nodeSelectors": [{"matchLabels": {"rack": "b"}}]});
        let verdicts = judge_peers(&[peer("b", T2, tor.clone()), peer("a", T1, tor)]);
        assert!(verdicts["a"].readiness.ready);
        assert_eq!(verdicts["b"].readiness.reason, "DuplicatePeer");
        assert!(
            verdicts["b"]
                .readiness
                .message
                .starts_with("BGPPeer a (older) already peers with 198.51.100.1 port 179")
        );
        // The same router address per rack (an anycast gateway) is fine.
        let verdicts = judge_peers(&[peer("a", T1, rack_a), peer("b", T2, rack_b)]);
        assert!(verdicts.values().all(|v| v.readiness.ready));
    }

    #[test]
    fn a_peer_that_skipped_the_schema_is_invalid_with_every_reason() {
        let verdicts = judge_peers(&[peer(
            "x",
            T1,
            json!({"myASN": 0, "peerASN": 64513,
            "peerAddress": "127.0.0.1"}),
        )]);
        let verdict = &verdicts["x"];
        assert_eq!(verdict.readiness.reason, "InvalidSpec");
        assert_eq!(
            verdict.readiness.message,
            "myASN 0 is not a valid AS number (1 to 4294967295, not AS_TRANS 23456); peerAddress \"127.0.0.1\" is not a routable IP address"
        );
    }

    #[test]
    fn advertisements_name_existing_pools_and_peers_and_fit_their_pools() {
        let pools = assess(&[
            pool("lan", &["198.51.100.0/25"]),
            pool("odd", &["198.51.100.130-198.51.100.140"]),
        ]);
        let peers: BTreeSet<String> = ["tor".to_owned()].into();
        let verdicts = judge_advertisements(
            &[
                advertisement(
                    "ok",
                    json!({"ipAddressPools": ["lan"], "peers": ["tor"], "aggregationLength": 25}),
                ),
                advertisement(
                    "missing",
                    json!({"ipAddressPools": ["lan", "gone"], "peers": ["nobody"]}),
                ),
                advertisement("wide", json!({"aggregationLength": 24})),
            ],
            &pools,
            &peers,
        );
        assert!(verdicts["ok"].readiness.ready, "{:?}", verdicts["ok"]);
        assert_eq!(verdicts["missing"].readiness.reason, "UnknownPool");
        assert_eq!(
            verdicts["missing"].readiness.message,
            "pool gone does not exist; BGPPeer nobody does not exist"
        );
        assert_eq!(
            verdicts["wide"].readiness.reason,
            "AggregationLengthTooShort"
        );
        assert!(
            verdicts["wide"].readiness.message.contains("pool lan"),
            "{:?}",
            verdicts["wide"]
        );
        assert_eq!(verdicts["wide"].generation, Some(2));
    }

    #[test]
    fn conditions_keep_their_transition_time_until_the_status_flips() {
        let verdict = Verdict {
            generation: Some(3),
            readiness: valid(),
        };
        let earlier: Timestamp = T1.parse().unwrap();
        let now: Timestamp = T2.parse().unwrap();
        let first = ready_condition(&verdict, &[], earlier);
        assert!(is_reported(&verdict, std::slice::from_ref(&first), Some(3)));
        assert!(!is_reported(
            &verdict,
            std::slice::from_ref(&first),
            Some(2)
        ));
        let again = ready_condition(&verdict, std::slice::from_ref(&first), now);
        assert_eq!(again.last_transition_time, Time(earlier));
        let broken = Verdict {
            generation: Some(3),
            readiness: Readiness {
                ready: false,
                reason: "UnknownPool",
                message: "pool gone does not exist".into(),
            },
        };
        assert!(!is_reported(&broken, std::slice::from_ref(&first), Some(3)));
        assert_eq!(
            ready_condition(&broken, &[first], now).last_transition_time,
            Time(now)
        );
    }

    #[test]
    fn objects_get_one_status_write_and_one_event_per_change() {
        let now: Timestamp = T2.parse().unwrap();
        let pools = assess(&[pool("lan", &["198.51.100.0/25"])]);
        let mut objects = BgpObjects::default();
        objects.replace_peers(vec![]);
        objects.replace_advertisements(vec![advertisement(
            "adv",
            json!({"ipAddressPools": ["gone"]}),
        )]);
        assert!(objects.has_work());
        let actions = objects.step(&pools, now);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(
            &actions[1],
            BgpAction::Event {
                warning: true,
                reason: "UnknownPool",
                ..
            }
        ));
        assert!(!objects.has_work());
        // Judged again before the status write is seen: the status is written again (it is not
        // there yet) but the event is not repeated.
        objects.mark_dirty();
        let again = objects.step(&pools, now);
        assert_eq!(again.len(), 1, "{again:?}");
        // The status landed; the fix arrives: one write and a Normal event.
        let BgpAction::Status { patch, .. } = &actions[0] else {
            panic!()
        };
        let mut written = advertisement("adv", json!({"ipAddressPools": ["lan"]}));
        written.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
        objects.apply_advertisement(written);
        let fixed = objects.step(&pools, now);
        assert_eq!(fixed.len(), 2, "{fixed:?}");
        assert!(matches!(
            &fixed[1],
            BgpAction::Event {
                warning: false,
                reason: "Valid",
                ..
            }
        ));
    }
}
