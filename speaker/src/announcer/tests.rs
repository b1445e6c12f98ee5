//! The announcer: bursts, repeats, answers and conflicts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::InterfaceName;
use proptest::prelude::*;

use super::*;
use crate::packet::{
    ArpAnnouncementKind, ArpRequest, EthernetHeader, Inbound, MacAddr, NeighborAdvertisement,
    NeighborSolicitation, parse_frame,
};

const ETH0_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const ETH1_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const STRANGER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x66]);
const OTHER_NODE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x21]);

fn name(text: &str) -> InterfaceName {
    InterfaceName::new(text).unwrap()
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
}

fn on(interfaces: &[&str]) -> Assignment {
    Assignment {
        interfaces: interfaces.iter().map(|i| name(i)).collect(),
        gratuitous_interval: None,
    }
}

fn announcer(now: Instant) -> Announcer {
    let mut announcer = Announcer::new(BurstPolicy {
        count: 3,
        spacing: Duration::from_millis(500),
    });
    announcer.set_links(
        [(name("eth0"), ETH0_MAC), (name("eth1"), ETH1_MAC)].into(),
        now,
    );
    announcer
}

fn arp_request(target: Ipv4Addr, destination: MacAddr) -> Inbound {
    Inbound::ArpRequest(ArpRequest {
        ethernet: EthernetHeader {
            destination,
            source: PEER_MAC,
            ethertype: crate::packet::ETHERTYPE_ARP,
        },
        sender_mac: PEER_MAC,
        sender_ip: v4(200),
        target_ip: target,
    })
}

fn solicitation(target: Ipv6Addr) -> Inbound {
    let group = solicited_node_group(target);
    Inbound::NeighborSolicitation(NeighborSolicitation {
        ethernet: EthernetHeader {
            destination: MacAddr::ipv6_multicast(group),
            source: PEER_MAC,
            ethertype: crate::packet::ETHERTYPE_IPV6,
        },
        source: v6(200),
        destination: group,
        target,
        source_link_layer: Some(PEER_MAC),
    })
}

fn advertisement(target: Ipv6Addr, mac: MacAddr) -> Inbound {
    Inbound::NeighborAdvertisement(NeighborAdvertisement {
        ethernet: EthernetHeader {
            destination: MacAddr::ipv6_multicast(ndp::ALL_NODES),
            source: mac,
            ethertype: crate::packet::ETHERTYPE_IPV6,
        },
        source: target,
        destination: ndp::ALL_NODES,
        target,
        router: false,
        solicited: false,
        override_flag: true,
        target_link_layer: Some(mac),
    })
}

#[test]
fn gaining_an_ip_sends_a_burst_on_each_interface_then_falls_silent() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    let changes = announcer.assign(
        [
            (IpAddr::V4(v4(10)), on(&["eth0", "eth1"])),
            (IpAddr::V6(v6(10)), on(&["eth0"])),
        ]
        .into(),
        start,
    );
    assert_eq!(
        changes,
        [
            OwnershipChange::Gained(IpAddr::V4(v4(10))),
            OwnershipChange::Gained(IpAddr::V6(v6(10)))
        ]
    );
    let mut rounds = Vec::new();
    let mut now = start;
    while let Some(at) = announcer.next_wakeup() {
        assert!(at >= now);
        now = at;
        rounds.push((at - start, announcer.due(now)));
        assert!(rounds.len() < 10, "the burst never ends");
    }
    let times: Vec<Duration> = rounds.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [0, 500, 1000].map(Duration::from_millis));
    for (_, frames) in &rounds {
        // IPv4: request and reply forms on two interfaces; IPv6: one NA on one interface.
        assert_eq!(frames.len(), 5);
        let on_eth1: Vec<&Outgoing> = frames
            .iter()
            .filter(|o| o.interface == name("eth1"))
            .collect();
        assert_eq!(on_eth1.len(), 2);
        for outgoing in frames {
            let mac = if outgoing.interface == name("eth0") {
                ETH0_MAC
            } else {
                ETH1_MAC
            };
            assert_eq!(
                &outgoing.frame[6..12],
                &mac.octets(),
                "sent with the interface's MAC"
            );
        }
        let kinds: BTreeSet<String> = frames
            .iter()
            .map(|o| match parse_frame(&o.frame).unwrap() {
                Inbound::ArpAnnouncement(a) if a.kind == ArpAnnouncementKind::Reply => {
                    "reply".to_string()
                }
                Inbound::ArpAnnouncement(_) => "request".to_string(),
                Inbound::NeighborAdvertisement(na) => {
                    assert!(na.override_flag && !na.solicited);
                    "na".to_string()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["na", "reply", "request"].map(String::from).into());
    }
}

#[test]
fn gratuitous_interval_repeats_after_the_burst() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    let mut assignment = on(&["eth0"]);
    assignment.gratuitous_interval = Some(Duration::from_secs(30));
    announcer.assign([(IpAddr::V4(v4(10)), assignment)].into(), start);
    for offset in [0, 500, 1000] {
        assert_eq!(
            announcer.due(start + Duration::from_millis(offset)).len(),
            2
        );
    }
    assert_eq!(
        announcer.next_wakeup(),
        Some(start + Duration::from_secs(31))
    );
    assert!(announcer.due(start + Duration::from_secs(30)).is_empty());
    assert_eq!(announcer.due(start + Duration::from_secs(31)).len(), 2);
    assert_eq!(
        announcer.next_wakeup(),
        Some(start + Duration::from_secs(61))
    );
}

#[test]
fn keeping_an_ip_does_not_restart_its_burst_but_a_new_interface_does() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    let ip = IpAddr::V4(v4(10));
    announcer.assign([(ip, on(&["eth0"]))].into(), start);
    for offset in [0, 500, 1000] {
        announcer.due(start + Duration::from_millis(offset));
    }
    let later = start + Duration::from_secs(5);
    assert!(
        announcer
            .assign([(ip, on(&["eth0"]))].into(), later)
            .is_empty()
    );
    assert_eq!(announcer.next_wakeup(), None);
    announcer.assign([(ip, on(&["eth0", "eth1"]))].into(), later);
    assert_eq!(announcer.next_wakeup(), Some(later));
}

#[test]
fn arp_requests_are_answered_only_for_owned_ips_on_their_interfaces() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    announcer.assign([(IpAddr::V4(v4(10)), on(&["eth0"]))].into(), start);
    let reply = announcer
        .answer(&name("eth0"), &arp_request(v4(10), MacAddr::BROADCAST))
        .expect("an owned IP is answered");
    match parse_frame(&reply).unwrap() {
        Inbound::ArpAnnouncement(a) => {
            assert_eq!(a.sender_ip, v4(10));
            assert_eq!(a.sender_mac, ETH0_MAC);
            assert_eq!(a.target_mac, PEER_MAC);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        announcer
            .answer(&name("eth0"), &arp_request(v4(10), ETH0_MAC))
            .is_some()
    );
    assert!(
        announcer
            .answer(&name("eth0"), &arp_request(v4(11), MacAddr::BROADCAST))
            .is_none()
    );
    assert!(
        announcer
            .answer(&name("eth1"), &arp_request(v4(10), MacAddr::BROADCAST))
            .is_none()
    );
    assert!(
        announcer
            .answer(&name("eth9"), &arp_request(v4(10), MacAddr::BROADCAST))
            .is_none()
    );
    assert!(
        announcer
            .answer(&name("eth0"), &arp_request(v4(10), STRANGER_MAC))
            .is_none(),
        "a request unicast to another station is not ours"
    );
}

#[test]
fn solicitations_are_answered_only_for_owned_targets_sent_to_us() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    announcer.assign([(IpAddr::V6(v6(10)), on(&["eth0"]))].into(), start);
    let reply = announcer
        .answer(&name("eth0"), &solicitation(v6(10)))
        .expect("answered");
    match parse_frame(&reply).unwrap() {
        Inbound::NeighborAdvertisement(na) => {
            assert_eq!(na.target, v6(10));
            assert!(na.solicited && na.override_flag && !na.router);
            assert_eq!(na.target_link_layer, Some(ETH0_MAC));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        announcer
            .answer(&name("eth0"), &solicitation(v6(11)))
            .is_none()
    );
    assert!(
        announcer
            .answer(&name("eth1"), &solicitation(v6(10)))
            .is_none()
    );
    // A unicast unreachability probe to the target at our MAC is answered...
    let Inbound::NeighborSolicitation(mut probe) = solicitation(v6(10)) else {
        unreachable!()
    };
    probe.destination = v6(10);
    probe.ethernet.destination = ETH0_MAC;
    assert!(
        announcer
            .answer(&name("eth0"), &Inbound::NeighborSolicitation(probe))
            .is_some()
    );
    // ...but not one sent to another station.
    probe.ethernet.destination = STRANGER_MAC;
    assert!(
        announcer
            .answer(&name("eth0"), &Inbound::NeighborSolicitation(probe))
            .is_none()
    );
    assert_eq!(
        announcer.solicited_node_groups(),
        [(name("eth0"), [solicited_node_group(v6(10))].into())].into()
    );
}

#[test]
fn losing_or_withdrawing_stops_answering_and_sending() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    let ip = IpAddr::V4(v4(10));
    announcer.assign([(ip, on(&["eth0"]))].into(), start);
    assert_eq!(
        announcer.assign(BTreeMap::new(), start),
        [OwnershipChange::Lost(ip)]
    );
    assert!(
        announcer
            .answer(&name("eth0"), &arp_request(v4(10), MacAddr::BROADCAST))
            .is_none()
    );
    assert!(announcer.due(start).is_empty());
    announcer.assign([(ip, on(&["eth0"]))].into(), start);
    assert_eq!(announcer.withdraw_all(), [OwnershipChange::Lost(ip)]);
    assert!(
        announcer
            .answer(&name("eth0"), &arp_request(v4(10), MacAddr::BROADCAST))
            .is_none()
    );
    assert_eq!(announcer.next_wakeup(), None);
}

#[test]
fn a_down_interface_neither_answers_nor_sends_and_coming_back_reannounces() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    let ip = IpAddr::V4(v4(10));
    announcer.assign([(ip, on(&["eth0"]))].into(), start);
    for offset in [0, 500, 1000] {
        announcer.due(start + Duration::from_millis(offset));
    }
    let later = start + Duration::from_secs(5);
    announcer.set_links([(name("eth1"), ETH1_MAC)].into(), later);
    assert!(
        announcer
            .answer(&name("eth0"), &arp_request(v4(10), MacAddr::BROADCAST))
            .is_none()
    );
    let back = later + Duration::from_secs(1);
    announcer.set_links(
        [(name("eth0"), ETH0_MAC), (name("eth1"), ETH1_MAC)].into(),
        back,
    );
    assert_eq!(announcer.next_wakeup(), Some(back));
    assert_eq!(announcer.due(back).len(), 2);
}

#[test]
fn our_own_frames_are_never_answered() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    announcer.assign([(IpAddr::V4(v4(10)), on(&["eth0"]))].into(), start);
    let Inbound::ArpRequest(mut request) = arp_request(v4(10), MacAddr::BROADCAST) else {
        unreachable!()
    };
    request.ethernet.source = ETH0_MAC;
    assert!(
        announcer
            .answer(&name("eth0"), &Inbound::ArpRequest(request))
            .is_none()
    );
}

#[test]
fn claims_from_non_ferrolb_macs_on_owned_ips_are_conflicts() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    announcer.assign([(IpAddr::V6(v6(10)), on(&["eth0"]))].into(), start);
    let ferrolb: BTreeSet<MacAddr> = [OTHER_NODE_MAC].into();
    let conflict = announcer
        .conflict(
            &name("eth0"),
            &advertisement(v6(10), STRANGER_MAC),
            &ferrolb,
        )
        .expect("a stranger claiming our IP");
    assert_eq!(conflict.claim.mac, STRANGER_MAC);
    assert_eq!(conflict.interface, name("eth0"));
    // Another FerroLB node (say, the previous owner still announcing) or our own echo is not.
    assert!(
        announcer
            .conflict(
                &name("eth0"),
                &advertisement(v6(10), OTHER_NODE_MAC),
                &ferrolb
            )
            .is_none()
    );
    assert!(
        announcer
            .conflict(&name("eth0"), &advertisement(v6(10), ETH1_MAC), &ferrolb)
            .is_none()
    );
    // Nor a claim on an IP we do not answer for.
    assert!(
        announcer
            .conflict(
                &name("eth0"),
                &advertisement(v6(11), STRANGER_MAC),
                &ferrolb
            )
            .is_none()
    );
}

#[test]
fn conflicts_are_defended_at_most_once_per_defend_interval() {
    let start = Instant::now();
    let mut announcer = announcer(start);
    let ip = IpAddr::V6(v6(10));
    announcer.assign([(ip, on(&["eth0"]))].into(), start);
    for offset in [0, 500, 1000] {
        announcer.due(start + Duration::from_millis(offset));
    }
    let conflict_at = start + Duration::from_secs(5);
    assert!(announcer.defend(ip, conflict_at));
    assert_eq!(announcer.next_wakeup(), Some(conflict_at));
    assert_eq!(announcer.due(conflict_at).len(), 1, "one unsolicited NA");
    assert_eq!(announcer.next_wakeup(), None, "one round, not a new burst");
    assert!(!announcer.defend(ip, conflict_at + Duration::from_secs(9)));
    assert!(announcer.defend(ip, conflict_at + DEFEND_INTERVAL));
    assert!(
        !announcer.defend(IpAddr::V6(v6(11)), conflict_at),
        "not ours to defend"
    );
}

proptest! {
    /// Whatever is owned and asked, an answer is only ever for an owned IP on an assigned
    /// interface, and carries that interface's MAC.
    #[test]
    fn answers_only_for_what_is_assigned(
        owned in prop::collection::btree_map((0u8..6, any::<bool>()), prop::collection::btree_set(0usize..3, 0..3), 0..6),
        asked in (0u8..6, any::<bool>(), 0usize..3),
    ) {
        let interfaces = ["eth0", "eth1", "eth2"];
        let start = Instant::now();
        let mut announcer = announcer(start);
        let ip_of = |last: u8, six: bool| if six { IpAddr::V6(v6(u16::from(last))) } else { IpAddr::V4(v4(last)) };
        let assignments: BTreeMap<IpAddr, Assignment> = owned
            .iter()
            .map(|(&(last, six), set)| (ip_of(last, six), Assignment {
                interfaces: set.iter().map(|&i| name(interfaces[i])).collect(),
                gratuitous_interval: None,
            }))
            .collect();
        announcer.assign(assignments.clone(), start);
        let (last, six, which) = asked;
        let ip = ip_of(last, six);
        let interface = name(interfaces[which]);
        let inbound = match ip {
            IpAddr::V4(v4) => arp_request(v4, MacAddr::BROADCAST),
            IpAddr::V6(v6) => solicitation(v6),
        };
        let answered = announcer.answer(&interface, &inbound).is_some();
        // eth2 is never up.
        let expected = which < 2 && assignments.get(&ip).is_some_and(|a| a.interfaces.contains(&interface));
        prop_assert_eq!(answered, expected);
    }
}

#[derive(Clone, Debug)]
enum Step {
    Assign(BTreeMap<(u8, bool), BTreeSet<usize>>),
    Links(BTreeSet<usize>),
    Defend(u8, bool),
    Wait(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::collection::btree_map(
            (0u8..4, any::<bool>()),
            prop::collection::btree_set(0usize..3, 0..3),
            0..4
        )
        .prop_map(Step::Assign),
        prop::collection::btree_set(0usize..3, 0..4).prop_map(Step::Links),
        (0u8..4, any::<bool>()).prop_map(|(last, six)| Step::Defend(last, six)),
        (0u64..3000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Through any sequence of ownership, link and conflict changes, every frame sent
    /// announces an IP owned at that moment, on an interface assigned to it and up, with that
    /// interface's MAC.
    #[test]
    fn only_owned_ips_are_announced_on_assigned_up_interfaces(steps in prop::collection::vec(arb_step(), 1..40)) {
        let interfaces = ["eth0", "eth1", "eth2"];
        let mac_of = |i: usize| MacAddr([0x02, 0, 0, 0, 1, i as u8]);
        let ip_of = |last: u8, six: bool| if six { IpAddr::V6(v6(u16::from(last))) } else { IpAddr::V4(v4(last)) };
        let mut now = Instant::now();
        let mut announcer = Announcer::new(BurstPolicy::default());
        let mut owned: BTreeMap<IpAddr, BTreeSet<InterfaceName>> = BTreeMap::new();
        let mut up: BTreeMap<InterfaceName, MacAddr> = BTreeMap::new();
        for step in steps {
            match step {
                Step::Assign(assignments) => {
                    owned = assignments
                        .iter()
                        .map(|(&(last, six), set)| (ip_of(last, six), set.iter().map(|&i| name(interfaces[i])).collect()))
                        .collect();
                    announcer.assign(
                        owned
                            .iter()
                            .map(|(ip, set)| (*ip, Assignment { interfaces: set.clone(), gratuitous_interval: Some(Duration::from_secs(2)) }))
                            .collect(),
                        now,
                    );
                }
                Step::Links(set) => {
                    up = set.iter().map(|&i| (name(interfaces[i]), mac_of(i))).collect();
                    announcer.set_links(up.clone(), now);
                }
                Step::Defend(last, six) => {
                    let defended = announcer.defend(ip_of(last, six), now);
                    prop_assert!(!defended || owned.contains_key(&ip_of(last, six)));
                }
                Step::Wait(ms) => now += Duration::from_millis(ms),
            }
            for outgoing in announcer.due(now) {
                let claim = parse_frame(&outgoing.frame).ok().and_then(|inbound| inbound.claim());
                let Some(claim) = claim else {
                    return Err(TestCaseError::fail("sent a frame that claims nothing"));
                };
                prop_assert!(owned.get(&claim.ip).is_some_and(|set| set.contains(&outgoing.interface)));
                prop_assert_eq!(up.get(&outgoing.interface), Some(&claim.mac));
            }
        }
    }
}
