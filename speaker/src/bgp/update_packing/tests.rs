//! Packing: sizes, grouping, the attributes each session kind gets, and the round trip through
//! the codec for random route sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::bgp::codec::{DecodeContext, Message, NO_ADVERTISE, NO_EXPORT, Update};

const LOCAL_ASN: u32 = 4_200_000_001;

fn ebgp() -> SessionEncoding {
    SessionEncoding {
        local_asn: LOCAL_ASN,
        ebgp: true,
        four_octet_as: true,
        families: Families::BOTH,
    }
}

fn ibgp() -> SessionEncoding {
    SessionEncoding {
        ebgp: false,
        ..ebgp()
    }
}

fn v4_next_hop() -> RouteAttributes {
    RouteAttributes::new(NextHop::V4(Ipv4Addr::new(192, 0, 2, 10)))
}

fn v6_next_hop() -> RouteAttributes {
    RouteAttributes::new(NextHop::V6 {
        global: "2001:db8::10".parse().unwrap(),
        link_local: Some("fe80::10".parse().unwrap()),
    })
}

fn decode_update(message: &[u8], session: &SessionEncoding) -> Update {
    assert!(message.len() <= MAX_MESSAGE_LEN, "{} bytes", message.len());
    let context = DecodeContext {
        four_octet_as: session.four_octet_as,
        ebgp: session.ebgp,
    };
    match codec::decode(message, context) {
        Ok(Message::Update(update)) => update,
        other => panic!("not a valid UPDATE: {other:?}"),
    }
}

/// Every prefix announced, with the attributes it was announced with; asserts each message is
/// valid and at most 4096 bytes.
fn announced(messages: &[Vec<u8>], session: &SessionEncoding) -> BTreeMap<IpNet, PathAttributes> {
    let mut out = BTreeMap::new();
    for message in messages {
        let update = decode_update(message, session);
        assert!(update.withdrawn.is_empty());
        assert!(!update.announced.is_empty());
        for prefix in update.announced {
            assert!(
                out.insert(prefix, update.attributes.clone()).is_none(),
                "{prefix} announced twice"
            );
        }
    }
    out
}

fn withdrawn(messages: &[Vec<u8>], session: &SessionEncoding) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for message in messages {
        let update = decode_update(message, session);
        assert!(update.announced.is_empty());
        assert!(!update.withdrawn.is_empty());
        out.extend(update.withdrawn);
    }
    out
}

fn v4_hosts(count: u32) -> Vec<IpNet> {
    (0..count)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
        .collect()
}

fn v6_hosts(count: u32) -> Vec<IpNet> {
    (0..count)
        .map(|i| {
            let base = u128::from("2001:db8:ff::".parse::<Ipv6Addr>().unwrap());
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base + u128::from(i)), 128).unwrap())
        })
        .collect()
}

#[test]
fn ten_thousand_ipv4_hosts_fit_in_thirteen_updates() {
    let route = v4_next_hop();
    let prefixes = v4_hosts(10_000);
    let packed = pack_announcements(prefixes.iter().map(|p| (*p, &route)), &ebgp());
    assert!(packed.unsendable.is_empty());
    // 4096 - 43 bytes of header and attributes leave room for 810 five-byte /32s.
    assert_eq!(packed.messages.len(), 13);
    assert!(packed.messages[..12].iter().all(|m| m.len() > 4090));
    let got = announced(&packed.messages, &ebgp());
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), prefixes);
    assert!(got.values().all(|a| *a == path_attributes(&route, &ebgp())));
}

#[test]
fn ten_thousand_ipv6_hosts_pack_into_full_updates() {
    let route = v6_next_hop();
    let prefixes = v6_hosts(10_000);
    let packed = pack_announcements(prefixes.iter().map(|p| (*p, &route)), &ebgp());
    assert!(packed.unsendable.is_empty());
    // 17 bytes per /128: about 236 per message.
    assert!(packed.messages.len() <= 43, "{}", packed.messages.len());
    let got = announced(&packed.messages, &ebgp());
    assert_eq!(got.len(), 10_000);
}

#[test]
fn withdrawals_pack_and_decode() {
    let mut prefixes = v4_hosts(2_000);
    prefixes.extend(v6_hosts(600));
    let messages = pack_withdrawals(prefixes.iter().copied(), &ebgp()).unwrap();
    // 2,000 IPv4 at 5 bytes: 3 messages; 600 IPv6 at 17 bytes: 3 messages.
    assert_eq!(messages.len(), 6);
    assert_eq!(
        withdrawn(&messages, &ebgp()),
        prefixes.into_iter().collect::<BTreeSet<_>>()
    );
}

#[test]
fn ebgp_carries_our_asn_and_no_local_pref() {
    let route = v4_next_hop()
        .with_local_pref(Some(200))
        .with_communities([NO_EXPORT, 65000 << 16 | 1]);
    let a = path_attributes(&route, &ebgp());
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.as_path, Some(vec![LOCAL_ASN]));
    assert_eq!(a.local_pref, None);
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(a.communities, vec![65000 << 16 | 1, NO_EXPORT]);
}

#[test]
fn ibgp_carries_an_empty_as_path_and_local_pref() {
    let a = path_attributes(&v4_next_hop().with_local_pref(Some(200)), &ibgp());
    assert_eq!(a.as_path, Some(vec![]));
    assert_eq!(a.local_pref, Some(200));
    let a = path_attributes(&v4_next_hop(), &ibgp());
    assert_eq!(a.local_pref, Some(DEFAULT_LOCAL_PREF));
    // And it decodes: an empty AS_PATH is valid on iBGP.
    let packed = pack_announcements([(v4_hosts(1)[0], &v4_next_hop())], &ibgp());
    let got = announced(&packed.messages, &ibgp());
    assert_eq!(got.values().next().unwrap().as_path, Some(vec![]));
}

#[test]
fn ipv6_routes_carry_the_link_local_next_hop_in_mp_reach() {
    let route = v6_next_hop();
    let packed = pack_announcements([(v6_hosts(1)[0], &route)], &ebgp());
    let got = announced(&packed.messages, &ebgp());
    let a = got.values().next().unwrap();
    assert_eq!(a.next_hop, None);
    assert_eq!(
        a.mp_next_hop,
        Some(MpNextHop {
            global: "2001:db8::10".parse().unwrap(),
            link_local: Some("fe80::10".parse().unwrap()),
        })
    );
}

#[test]
fn different_attribute_sets_go_in_different_updates() {
    let plain = v4_next_hop();
    let no_advertise = v4_next_hop().with_communities([NO_ADVERTISE]);
    let hosts = v4_hosts(4);
    let packed = pack_announcements(
        [
            (hosts[0], &plain),
            (hosts[1], &no_advertise),
            (hosts[2], &plain),
            (hosts[3], &no_advertise),
        ],
        &ebgp(),
    );
    assert_eq!(packed.messages.len(), 2);
    let got = announced(&packed.messages, &ebgp());
    assert_eq!(got[&hosts[1]].communities, vec![NO_ADVERTISE]);
    assert!(got[&hosts[0]].communities.is_empty());
}

#[test]
fn unsendable_routes_are_reported_not_sent() {
    let v4_only = SessionEncoding {
        families: Families {
            ipv4_unicast: true,
            ipv6_unicast: false,
        },
        ..ebgp()
    };
    let too_many = v4_next_hop().with_communities(0..1100);
    let hosts = v4_hosts(3);
    let v6 = v6_hosts(1)[0];
    let v6_route = v6_next_hop();
    let packed = pack_announcements(
        [
            (hosts[0], &v6_route),
            (hosts[1], &too_many),
            (hosts[2], &v4_next_hop()),
            (v6, &v6_route),
        ],
        &v4_only,
    );
    assert_eq!(packed.messages.len(), 1);
    let reasons: BTreeMap<_, _> = packed.unsendable.into_iter().collect();
    assert_eq!(reasons[&hosts[0]], Unsendable::NextHopFamilyMismatch);
    assert_eq!(reasons[&hosts[1]], Unsendable::AttributesTooLarge);
    assert_eq!(
        reasons[&v6],
        Unsendable::FamilyNotNegotiated(Family::Ipv6Unicast)
    );
}

#[test]
fn communities_that_nearly_fill_a_message_still_pack() {
    // 1,000 communities: 4,004 bytes of attribute, room left for a handful of /32s.
    let route = v4_next_hop().with_communities(0..1000);
    let hosts = v4_hosts(100);
    let packed = pack_announcements(hosts.iter().map(|p| (*p, &route)), &ebgp());
    assert!(packed.unsendable.is_empty());
    assert_eq!(announced(&packed.messages, &ebgp()).len(), 100);
}

#[test]
fn end_of_rib_markers() {
    for family in Family::ALL {
        let marker = end_of_rib(family).unwrap();
        assert_eq!(decode_update(&marker, &ebgp()).end_of_rib, Some(family));
    }
}

#[test]
fn two_octet_as_sessions_still_encode_a_four_octet_asn() {
    let session = SessionEncoding {
        four_octet_as: false,
        ..ebgp()
    };
    let packed = pack_announcements([(v4_hosts(1)[0], &v4_next_hop())], &session);
    let update = decode_update(&packed.messages[0], &session);
    // AS_TRANS in AS_PATH, the real ASN in AS4_PATH (the codec reconciles both).
    assert_eq!(update.attributes.as_path, Some(vec![LOCAL_ASN]));
}

fn arbitrary_prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())),
    ]
}

/// A few attribute sets for each family, so that routes share them.
fn attribute_sets() -> Vec<RouteAttributes> {
    let mut sets = Vec::new();
    for (i, base) in [v4_next_hop(), v6_next_hop()].into_iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        sets.push(base.clone());
        sets.push(base.clone().with_communities([NO_EXPORT, i]));
        sets.push(
            base.clone()
                .with_local_pref(Some(50 + i))
                .with_large_communities([LargeCommunity {
                    global_admin: LOCAL_ASN,
                    local_data1: i,
                    local_data2: 7,
                }]),
        );
        sets.push(base.with_communities(0..300));
    }
    sets
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn announcements_decode_back_to_the_routes(
        routes in proptest::collection::btree_map(arbitrary_prefix(), 0usize..4, 0..1500),
        ibgp_session in any::<bool>(),
    ) {
        let sets = attribute_sets();
        let session = if ibgp_session { ibgp() } else { ebgp() };
        // Pick a set of the prefix's family.
        let routes: BTreeMap<IpNet, &RouteAttributes> = routes
            .into_iter()
            .map(|(prefix, pick)| {
                let offset = match prefix { IpNet::V4(_) => 0, IpNet::V6(_) => 4 };
                (prefix, &sets[offset + pick])
            })
            .collect();
        let packed = pack_announcements(routes.iter().map(|(p, a)| (*p, *a)), &session);
        prop_assert!(packed.unsendable.is_empty());
        let got = announced(&packed.messages, &session);
        let expected: BTreeMap<IpNet, PathAttributes> = routes
            .iter()
            .map(|(p, a)| (*p, path_attributes(a, &session)))
            .collect();
        prop_assert_eq!(got, expected);
        // Few messages: per attribute set, the bytes of its prefixes over a message's room, with
        // at most one prefix's worth wasted per message.
        let mut groups: BTreeMap<(&RouteAttributes, bool), usize> = BTreeMap::new();
        for (prefix, route) in &routes {
            *groups.entry((*route, prefix.addr().is_ipv4())).or_default() += codec::nlri_len(prefix);
        }
        let bound: usize = groups
            .iter()
            .map(|((route, _), bytes)| {
                let room = MAX_MESSAGE_LEN - 80 - 4 * route.communities().len() - 17;
                bytes.div_ceil(room)
            })
            .sum();
        prop_assert!(packed.messages.len() <= bound, "{} > {}", packed.messages.len(), bound);
    }

    #[test]
    fn withdrawals_decode_back_to_the_prefixes(
        prefixes in proptest::collection::btree_set(arbitrary_prefix(), 0..2000),
    ) {
        let messages = pack_withdrawals(prefixes.iter().copied(), &ebgp()).unwrap();
        prop_assert_eq!(withdrawn(&messages, &ebgp()), prefixes);
    }
}
