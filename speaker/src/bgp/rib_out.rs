//! The adj-RIB-out of one peer (RFC 4271 §3.2): the routes we have announced to it, so that a
//! change of the desired routes sends only the difference. A prefix whose attributes change is
//! announced again with the new ones (an announcement replaces the previous route, RFC 4271
//! §9.1.4, so no withdrawal is needed); a prefix no longer desired is withdrawn. A new session
//! starts from an empty `RibOut`, so everything is sent again.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::capabilities::Family;
use super::update_packing::{
    RouteAttributes, SessionEncoding, Unsendable, pack_announcements, pack_withdrawals,
};

/// Routes by prefix; prefixes with equal attributes share one [`RouteAttributes`].
pub type RouteTable = BTreeMap<IpNet, Arc<RouteAttributes>>;

/// What was sent to one peer on the current session.
#[derive(Clone, Debug)]
pub struct RibOut {
    encoding: SessionEncoding,
    /// Once everything desired went out this is the desired table itself, shared rather than
    /// copied: with thousands of routes a copy per session is a good part of a speaker's heap.
    sent: Arc<RouteTable>,
    unsendable: BTreeMap<IpNet, Unsendable>,
}

impl RibOut {
    /// An empty adj-RIB-out for a session just Established.
    pub fn new(encoding: SessionEncoding) -> Self {
        Self {
            encoding,
            sent: Arc::default(),
            unsendable: BTreeMap::new(),
        }
    }

    pub fn encoding(&self) -> &SessionEncoding {
        &self.encoding
    }

    /// The routes the peer has from us.
    pub fn sent(&self) -> &RouteTable {
        &self.sent
    }

    /// The desired routes of the last [`Self::reconcile`] that could not be sent, and why.
    pub fn unsendable(&self) -> &BTreeMap<IpNet, Unsendable> {
        &self.unsendable
    }

    /// Forgets what was sent, so the next reconcile sends every desired route again.
    pub fn reset(&mut self) {
        self.sent = Arc::default();
    }

    /// Forgets what was sent in `family`: the peer asked for it again (ROUTE-REFRESH).
    pub fn forget_family(&mut self, family: Family) {
        Arc::make_mut(&mut self.sent).retain(|prefix, _| Family::of(prefix) != family);
    }

    /// The UPDATEs that take the peer from what it has to `desired`: withdrawals first, then
    /// announcements of new and changed routes. Afterwards [`Self::sent`] is `desired` less the
    /// routes [`Self::unsendable`] lists.
    pub fn reconcile(&mut self, desired: &Arc<RouteTable>) -> Vec<Vec<u8>> {
        if Arc::ptr_eq(&self.sent, desired) {
            return Vec::new();
        }
        let changed = desired.iter().filter(|(prefix, attributes)| {
            self.sent
                .get(*prefix)
                .is_none_or(|sent| **sent != ***attributes)
        });
        let packed = pack_announcements(
            changed.map(|(prefix, attributes)| (*prefix, &**attributes)),
            &self.encoding,
        );
        self.unsendable = packed.unsendable.into_iter().collect();
        let stale: Vec<IpNet> = self
            .sent
            .keys()
            .filter(|prefix| {
                !desired.contains_key(*prefix) || self.unsendable.contains_key(*prefix)
            })
            .copied()
            .collect();
        // Withdrawals cannot fail to encode for plain prefixes; if they did, the prefixes stay
        // recorded as sent and the next reconcile tries again.
        let withdrawals = pack_withdrawals(stale.iter().copied(), &self.encoding);
        let withdrawn = withdrawals.is_ok();
        let mut messages = withdrawals.unwrap_or_default();
        messages.extend(packed.messages);
        self.sent = if withdrawn && self.unsendable.is_empty() {
            Arc::clone(desired)
        } else {
            let mut sent: RouteTable = desired
                .iter()
                .filter(|(prefix, _)| !self.unsendable.contains_key(*prefix))
                .map(|(prefix, attributes)| (*prefix, Arc::clone(attributes)))
                .collect();
            if !withdrawn {
                for prefix in &stale {
                    if let Some(attributes) = self.sent.get(prefix) {
                        sent.entry(*prefix)
                            .or_insert_with(|| Arc::clone(attributes));
                    }
                }
            }
            Arc::new(sent)
        };
        messages
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::bgp::capabilities::Families;
    use crate::bgp::codec::{self, DecodeContext, Message, NO_EXPORT, Update};
    use crate::bgp::update_packing::NextHop;

    fn session() -> SessionEncoding {
        SessionEncoding {
            local_asn: 64512,
            ebgp: true,
            four_octet_as: true,
            families: Families::BOTH,
        }
    }

    fn decode_all(messages: &[Vec<u8>]) -> Vec<Update> {
        let context = DecodeContext {
            four_octet_as: true,
            ebgp: true,
        };
        messages
            .iter()
            .map(|m| match codec::decode(m, context) {
                Ok(Message::Update(update)) => update,
                other => panic!("not an UPDATE: {other:?}"),
            })
            .collect()
    }

    /// Applies UPDATEs to a model of the peer's adj-RIB-in: prefix → communities.
    fn apply(peer: &mut BTreeMap<IpNet, Vec<u32>>, messages: &[Vec<u8>]) {
        for update in decode_all(messages) {
            for prefix in update.withdrawn {
                peer.remove(&prefix);
            }
            for prefix in update.announced {
                peer.insert(prefix, update.attributes.communities.clone());
            }
        }
    }

    fn attributes(next_hop: NextHop, community: Option<u32>) -> Arc<RouteAttributes> {
        Arc::new(RouteAttributes::new(next_hop).with_communities(community))
    }

    fn v4(prefix: &str) -> IpNet {
        prefix.parse().unwrap()
    }

    /// Each call with a table of its own, as the glue gives after every change.
    fn reconcile(rib: &mut RibOut, desired: &RouteTable) -> Vec<Vec<u8>> {
        rib.reconcile(&Arc::new(desired.clone()))
    }

    const NH4: NextHop = NextHop::V4(Ipv4Addr::new(192, 0, 2, 10));

    #[test]
    fn only_changes_are_sent() {
        let mut rib = RibOut::new(session());
        let mut desired = BTreeMap::from([
            (v4("198.51.100.1/32"), attributes(NH4, None)),
            (v4("198.51.100.2/32"), attributes(NH4, None)),
        ]);
        let first = reconcile(&mut rib, &desired);
        assert_eq!(first.len(), 1);
        assert!(reconcile(&mut rib, &desired).is_empty(), "nothing changed");

        // One attribute change, one withdrawal, one addition.
        desired.insert(v4("198.51.100.1/32"), attributes(NH4, Some(NO_EXPORT)));
        desired.remove(&v4("198.51.100.2/32"));
        desired.insert(v4("198.51.100.3/32"), attributes(NH4, None));
        let updates = decode_all(&reconcile(&mut rib, &desired));
        let withdrawn: Vec<_> = updates.iter().flat_map(|u| u.withdrawn.clone()).collect();
        let announced: BTreeSet<_> = updates.iter().flat_map(|u| u.announced.clone()).collect();
        assert_eq!(withdrawn, vec![v4("198.51.100.2/32")]);
        assert_eq!(
            announced,
            BTreeSet::from([v4("198.51.100.1/32"), v4("198.51.100.3/32")])
        );
        // Withdrawals come first.
        assert!(!updates[0].withdrawn.is_empty());
    }

    #[test]
    fn what_was_sent_is_the_desired_table_itself() {
        let mut rib = RibOut::new(session());
        let desired = Arc::new(BTreeMap::from([(
            v4("198.51.100.1/32"),
            attributes(NH4, None),
        )]));
        assert_eq!(rib.reconcile(&desired).len(), 1);
        assert!(std::ptr::eq(rib.sent(), &*desired), "shared, not copied");
        assert!(rib.reconcile(&desired).is_empty());
        // Asked again for the family: the shared table is left alone, the peer gets it anew.
        rib.forget_family(Family::Ipv4Unicast);
        assert!(rib.sent().is_empty());
        assert_eq!(desired.len(), 1);
        assert_eq!(rib.reconcile(&desired).len(), 1);
    }

    #[test]
    fn reset_and_forget_family_resend() {
        let nh6 = NextHop::V6 {
            global: "2001:db8::10".parse().unwrap(),
            link_local: None,
        };
        let desired = BTreeMap::from([
            (v4("198.51.100.1/32"), attributes(NH4, None)),
            (v4("2001:db8:1::1/128"), attributes(nh6, None)),
        ]);
        let mut rib = RibOut::new(session());
        assert_eq!(reconcile(&mut rib, &desired).len(), 2);
        rib.forget_family(Family::Ipv6Unicast);
        let again = decode_all(&reconcile(&mut rib, &desired));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].announced, vec![v4("2001:db8:1::1/128")]);
        rib.reset();
        assert_eq!(reconcile(&mut rib, &desired).len(), 2);
    }

    #[test]
    fn a_route_that_becomes_unsendable_is_withdrawn() {
        let mut rib = RibOut::new(session());
        let prefix = v4("198.51.100.1/32");
        reconcile(&mut rib, &BTreeMap::from([(prefix, attributes(NH4, None))]));
        let too_big = Arc::new(RouteAttributes::new(NH4).with_communities(0..1100));
        let updates = decode_all(&reconcile(&mut rib, &BTreeMap::from([(prefix, too_big)])));
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].withdrawn, vec![prefix]);
        assert!(rib.sent().is_empty());
        assert_eq!(rib.unsendable()[&prefix], Unsendable::AttributesTooLarge);
    }

    fn desired_strategy() -> impl Strategy<Value = BTreeMap<IpNet, Arc<RouteAttributes>>> {
        // Few prefixes and few attribute sets, so that sequences revisit them.
        proptest::collection::btree_map(
            (0u32..40, any::<bool>()),
            proptest::option::of(0u32..3),
            0..40,
        )
        .prop_map(|routes| {
            routes
                .into_iter()
                .map(|((host, v6), community)| {
                    if v6 {
                        let prefix: IpNet = format!("2001:db8:1::{host:x}/128").parse().unwrap();
                        let next_hop = NextHop::V6 {
                            global: "2001:db8::10".parse().unwrap(),
                            link_local: Some("fe80::10".parse().unwrap()),
                        };
                        (prefix, attributes(next_hop, community))
                    } else {
                        (
                            v4(&format!("198.51.100.{host}/32")),
                            attributes(NH4, community),
                        )
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn reconcile_sequences_leave_the_peer_with_the_desired_routes(
            sequence in proptest::collection::vec(desired_strategy(), 1..8),
            reset_at in proptest::option::of(0usize..8),
        ) {
            let mut rib = RibOut::new(session());
            let mut peer = BTreeMap::new();
            for (step, desired) in sequence.iter().enumerate() {
                if reset_at == Some(step) {
                    // A new session: the peer starts empty, so must the RIB.
                    rib.reset();
                    peer.clear();
                }
                let shared = Arc::new(desired.clone());
                apply(&mut peer, &rib.reconcile(&shared));
                let expected: BTreeMap<IpNet, Vec<u32>> = desired
                    .iter()
                    .map(|(p, a)| (*p, a.communities().to_vec()))
                    .collect();
                prop_assert_eq!(&peer, &expected);
                prop_assert_eq!(rib.sent(), desired);
                prop_assert!(rib.reconcile(&shared).is_empty());
                prop_assert!(reconcile(&mut rib, desired).is_empty());
            }
        }
    }
}
