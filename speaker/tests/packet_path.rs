//! The whole packet path on a real link: AF_PACKET sockets with the BPF filter on a veth pair,
//! the parser, the announcer's answers and its gratuitous burst.
//!
//! Needs root and changes links, so it is ignored by default; run it inside a throwaway network
//! namespace:
//!
//! ```sh
//! ip netns add ferrolb-test
//! ip netns exec ferrolb-test cargo test -p ferrolb-speaker --test packet_path -- --ignored
//! ip netns del ferrolb-test
//! ```

// A test: failing loudly on the first surprise is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{VethPair, ip};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::InterfaceName;
use ferrolb_speaker::announcer::{Announcer, Assignment, BurstPolicy};
use ferrolb_speaker::packet::ndp::solicited_node_group;
use ferrolb_speaker::packet::{
    ArpAnnouncementKind, ETHERTYPE_ARP, ETHERTYPE_IPV6, Inbound, MacAddr, checksum, parse_frame,
};
use ferrolb_speaker::packet_socket::{
    MulticastMemberships, PacketSocket, RECEIVE_BUFFER_LEN, interface_index,
};

const SPEAKER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x01]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x02]);
const ANNOUNCED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const ANNOUNCED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&MacAddr::BROADCAST.octets());
    frame.extend_from_slice(&CLIENT_MAC.octets());
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC.octets());
    frame.extend_from_slice(&CLIENT_V4.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

fn neighbor_solicitation(target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node_group(target);
    let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[1, 1]);
    message.extend_from_slice(&CLIENT_MAC.octets());
    let sum = checksum::icmpv6(CLIENT_V6, group, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&MacAddr::ipv6_multicast(group).octets());
    frame.extend_from_slice(&CLIENT_MAC.octets());
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, message.len() as u8, 58, 255]);
    frame.extend_from_slice(&CLIENT_V6.octets());
    frame.extend_from_slice(&group.octets());
    frame.extend_from_slice(&message);
    frame
}

/// The next frame on `socket` that parses and satisfies `wanted`, skipping the kernel's own
/// traffic (router solicitations, MLD, duplicate address detection of link-local addresses).
async fn receive_matching(socket: &PacketSocket, wanted: impl Fn(&Inbound) -> bool) -> Inbound {
    let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .expect("timed out waiting for a frame")
            .unwrap();
        if let Ok(inbound) = parse_frame(&buffer[..len])
            && wanted(&inbound)
        {
            return inbound;
        }
    }
}

#[tokio::test]
#[ignore = "needs root; run in a throwaway network namespace (see the module documentation)"]
async fn arp_and_ndp_are_answered_over_a_veth_pair() {
    let suffix = std::process::id() % 100_000;
    let (speaker_link, client_link) = (format!("flbs{suffix}"), format!("flbc{suffix}"));
    let _cleanup = VethPair::create(&speaker_link, &client_link);
    ip(&[
        "link",
        "set",
        &speaker_link,
        "address",
        &SPEAKER_MAC.to_string(),
        "up",
    ]);
    ip(&[
        "link",
        "set",
        &client_link,
        "address",
        &CLIENT_MAC.to_string(),
        "up",
    ]);

    let speaker_name = InterfaceName::new(&speaker_link).unwrap();
    let speaker_index = interface_index(&speaker_name).unwrap();
    let client_index = interface_index(&InterfaceName::new(&client_link).unwrap()).unwrap();
    let speaker_arp = PacketSocket::open(speaker_index, ETHERTYPE_ARP).unwrap();
    let speaker_ipv6 = PacketSocket::open(speaker_index, ETHERTYPE_IPV6).unwrap();
    let client_arp = PacketSocket::open(client_index, ETHERTYPE_ARP).unwrap();
    let client_ipv6 = PacketSocket::open(client_index, ETHERTYPE_IPV6).unwrap();

    let now = Instant::now();
    let mut announcer = Announcer::new(BurstPolicy {
        count: 1,
        spacing: Duration::from_millis(100),
    });
    announcer.set_links([(speaker_name.clone(), SPEAKER_MAC)].into(), now);
    let assignment = Assignment {
        interfaces: [speaker_name.clone()].into(),
        gratuitous_interval: None,
    };
    announcer.assign(
        [
            (IpAddr::V4(ANNOUNCED_V4), assignment.clone()),
            (IpAddr::V6(ANNOUNCED_V6), assignment),
        ]
        .into(),
        now,
    );
    let mut memberships = MulticastMemberships::new().unwrap();
    let groups: BTreeSet<(u32, Ipv6Addr)> = announcer
        .solicited_node_groups()
        .values()
        .flatten()
        .map(|group| (speaker_index, *group))
        .collect();
    assert!(memberships.reconcile(&groups).is_empty());

    // Gaining the IPs: gratuitous ARP (both forms) and an unsolicited NA reach the client.
    for outgoing in announcer.due(now) {
        let socket = if outgoing.frame[12..14] == ETHERTYPE_ARP.to_be_bytes() {
            &speaker_arp
        } else {
            &speaker_ipv6
        };
        socket.send(&outgoing.frame).await.unwrap();
    }
    for kind in [
        ArpAnnouncementKind::GratuitousRequest,
        ArpAnnouncementKind::Reply,
    ] {
        receive_matching(&client_arp, |inbound| {
            matches!(inbound, Inbound::ArpAnnouncement(a)
                if a.kind == kind && a.sender_ip == ANNOUNCED_V4 && a.sender_mac == SPEAKER_MAC)
        })
        .await;
    }
    receive_matching(&client_ipv6, |inbound| {
        matches!(inbound, Inbound::NeighborAdvertisement(na)
            if na.target == ANNOUNCED_V6 && na.override_flag && !na.solicited)
    })
    .await;

    // ARP: a broadcast request is answered to the client.
    client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
    let request = receive_matching(
        &speaker_arp,
        |inbound| matches!(inbound, Inbound::ArpRequest(r) if r.target_ip == ANNOUNCED_V4),
    )
    .await;
    let reply = announcer.answer(&speaker_name, &request).expect("answered");
    speaker_arp.send(&reply).await.unwrap();
    receive_matching(&client_arp, |inbound| {
        matches!(inbound, Inbound::ArpAnnouncement(a)
            if a.sender_ip == ANNOUNCED_V4 && a.sender_mac == SPEAKER_MAC && a.target_mac == CLIENT_MAC)
    })
    .await;

    // NDP: a multicast solicitation is answered unicast with Solicited set.
    client_ipv6
        .send(&neighbor_solicitation(ANNOUNCED_V6))
        .await
        .unwrap();
    let solicitation = receive_matching(
        &speaker_ipv6,
        |inbound| matches!(inbound, Inbound::NeighborSolicitation(ns) if ns.target == ANNOUNCED_V6),
    )
    .await;
    let reply = announcer
        .answer(&speaker_name, &solicitation)
        .expect("answered");
    speaker_ipv6.send(&reply).await.unwrap();
    receive_matching(&client_ipv6, |inbound| {
        matches!(inbound, Inbound::NeighborAdvertisement(na)
            if na.target == ANNOUNCED_V6 && na.solicited && na.destination == CLIENT_V6)
    })
    .await;

    // An address not announced is not answered.
    client_arp
        .send(&arp_request(Ipv4Addr::new(198, 51, 100, 99)))
        .await
        .unwrap();
    let request = receive_matching(&speaker_arp, |inbound| {
        matches!(inbound, Inbound::ArpRequest(r) if r.target_ip == Ipv4Addr::new(198, 51, 100, 99))
    })
    .await;
    assert!(announcer.answer(&speaker_name, &request).is_none());
}

/// Waits up to `within` for a frame satisfying `wanted`; none: nothing of the kind came.
async fn maybe_receive(
    socket: &PacketSocket,
    within: Duration,
    wanted: impl Fn(&Inbound) -> bool,
) -> Option<Inbound> {
    tokio::time::timeout(within, receive_matching(socket, wanted))
        .await
        .ok()
}

/// The nice values of this process's reader threads for `interface` (named `rx-<interface>`,
/// cut to the kernel's 15 characters), from /proc.
fn reader_thread_nices(interface: &str) -> Vec<i64> {
    let name: String = format!("rx-{interface}").chars().take(15).collect();
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        // Fields after the parenthesised name; nice is field 19 of the whole line.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        nices.push(after_name.split(' ').nth(16).unwrap().parse().unwrap());
    }
    nices
}

/// Packet sockets open on the interface with this index, from /proc/net/packet.
fn packet_sockets_on(index: u32) -> usize {
    std::fs::read_to_string("/proc/net/packet")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(4) == Some(index.to_string().as_str()))
        .count()
}

/// The data plane answers by itself from the published snapshot: requests are answered
/// without anyone handling them, reading survives the link going down and up again, a fallen
/// fence silences it even though nobody publishes anything new, conflicts are passed on, NS with
/// a hop limit other than 255 are dropped, and deselecting the interface closes its sockets.
#[tokio::test]
#[ignore = "needs root; run in a throwaway network namespace (see the module documentation)"]
async fn the_data_plane_answers_fences_itself_and_survives_a_link_flap() {
    use ferrolb_speaker::dataplane::{ArpFilter, DataPlane};
    use ferrolb_speaker::metrics::FrameCounters;
    use ferrolb_speaker::packet::arp;
    use ferrolb_speaker::speaker_state::Snapshot;

    let suffix = std::process::id() % 100_000;
    let (speaker_link, client_link) = (format!("flbd{suffix}"), format!("flbe{suffix}"));
    let _cleanup = VethPair::create(&speaker_link, &client_link);
    ip(&[
        "link",
        "set",
        &speaker_link,
        "address",
        &SPEAKER_MAC.to_string(),
        "up",
    ]);
    ip(&[
        "link",
        "set",
        &client_link,
        "address",
        &CLIENT_MAC.to_string(),
        "up",
    ]);
    let speaker_name = InterfaceName::new(&speaker_link).unwrap();
    let speaker_index = interface_index(&speaker_name).unwrap();
    let client_index = interface_index(&InterfaceName::new(&client_link).unwrap()).unwrap();
    let client_arp = PacketSocket::open(client_index, ETHERTYPE_ARP).unwrap();
    let client_ipv6 = PacketSocket::open(client_index, ETHERTYPE_IPV6).unwrap();

    let now = Instant::now();
    let mut announcer = Announcer::new(BurstPolicy::default());
    announcer.set_links([(speaker_name.clone(), SPEAKER_MAC)].into(), now);
    let assignment = Assignment {
        interfaces: [speaker_name.clone()].into(),
        gratuitous_interval: None,
    };
    announcer.assign(
        [
            (IpAddr::V4(ANNOUNCED_V4), assignment.clone()),
            (IpAddr::V6(ANNOUNCED_V6), assignment),
        ]
        .into(),
        now,
    );
    let answering = |fenced_from| Snapshot {
        fenced_from: Some(fenced_from),
        answering: announcer.answering(BTreeSet::new()),
    };
    let counters = FrameCounters::default();
    let (mut dataplane, mut conflicts) = DataPlane::new(counters.clone(), -10, false).unwrap();
    assert!(
        dataplane
            .listen_on(&[(speaker_name.clone(), speaker_index)].into())
            .is_empty()
    );
    assert!(
        dataplane
            .join_groups(&announcer.solicited_node_groups())
            .is_empty()
    );
    let is_reply = |inbound: &Inbound| {
        matches!(inbound, Inbound::ArpAnnouncement(a)
            if a.sender_ip == ANNOUNCED_V4 && a.sender_mac == SPEAKER_MAC && a.target_mac == CLIENT_MAC)
    };
    let is_advertisement = |inbound: &Inbound| {
        matches!(inbound, Inbound::NeighborAdvertisement(na)
            if na.target == ANNOUNCED_V6 && na.solicited && na.destination == CLIENT_V6)
    };

    // Nothing is published yet: nothing is answered.
    client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
    assert!(
        maybe_receive(&client_arp, Duration::from_millis(300), is_reply)
            .await
            .is_none()
    );

    dataplane.publish(answering(Instant::now() + Duration::from_secs(60)));
    for round in 0..2 {
        client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
        receive_matching(&client_arp, is_reply).await;
        if round == 0 {
            ip(&["link", "set", &speaker_link, "down"]);
            ip(&["link", "set", &speaker_link, "up"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    client_ipv6
        .send(&neighbor_solicitation(ANNOUNCED_V6))
        .await
        .unwrap();
    receive_matching(&client_ipv6, is_advertisement).await;
    let mut low_hop_limit = neighbor_solicitation(ANNOUNCED_V6);
    low_hop_limit[21] = 64;
    client_ipv6.send(&low_hop_limit).await.unwrap();
    assert!(
        maybe_receive(&client_ipv6, Duration::from_millis(300), is_advertisement)
            .await
            .is_none(),
        "a solicitation with hop limit 64 is answered"
    );
    // An address not announced is not answered.
    client_arp
        .send(&arp_request(Ipv4Addr::new(198, 51, 100, 99)))
        .await
        .unwrap();
    assert!(
        maybe_receive(&client_arp, Duration::from_millis(300), |inbound| {
            matches!(inbound, Inbound::ArpAnnouncement(a) if a.sender_mac == SPEAKER_MAC)
        })
        .await
        .is_none()
    );
    assert_eq!(counters.replies.arp.get(), 2);
    assert_eq!(counters.replies.ndp.get(), 1);
    // The readers run at the nice value asked for when this process may raise priorities (root
    // with CAP_SYS_NICE); in a sandbox without it they keep the process's own and still answer.
    let may_raise = std::thread::spawn(|| {
        ferrolb_speaker::thread_priority::set_current_thread_nice(-10).is_ok()
    })
    .join()
    .unwrap();
    let expected = if may_raise {
        -10
    } else {
        i64::from(ferrolb_speaker::thread_priority::current_thread_nice().unwrap())
    };
    let reader_nices = reader_thread_nices(&speaker_link);
    assert_eq!(
        reader_nices,
        vec![expected, expected],
        "ARP and IPv6 readers"
    );

    // Only the two requests for the announced address reached the reader: the kernel filter
    // dropped the one sent before anything was owned and the one for .99.
    assert_eq!(counters.requests.arp.get(), 2);
    assert_eq!(
        dataplane.arp_filter(&speaker_name),
        Some(&ArpFilter::Addresses([ANNOUNCED_V4].into()))
    );

    // A stranger claims the address: the conflict reaches the receiver.
    client_arp
        .send(&arp::gratuitous_reply(ANNOUNCED_V4, CLIENT_MAC))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), conflicts.recv())
        .await
        .expect("a conflict")
        .expect("channel open");
    assert_eq!(seen.conflict.claim.mac, CLIENT_MAC);
    assert_eq!(seen.conflict.interface, speaker_name);

    // The fence falls in 200 ms and nobody publishes again: answers stop by themselves.
    dataplane.publish(answering(Instant::now() + Duration::from_millis(200)));
    tokio::time::sleep(Duration::from_millis(250)).await;
    client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
    assert!(
        maybe_receive(&client_arp, Duration::from_millis(300), is_reply)
            .await
            .is_none(),
        "answered after the fence fell"
    );

    // Ownership moves to another address: the filter follows, so the new address is answered
    // and requests for the old one no longer reach the reader.
    let moved_v4 = Ipv4Addr::new(198, 51, 100, 11);
    let mut moved = Announcer::new(BurstPolicy::default());
    moved.set_links([(speaker_name.clone(), SPEAKER_MAC)].into(), now);
    moved.assign(
        [(
            IpAddr::V4(moved_v4),
            Assignment {
                interfaces: [speaker_name.clone()].into(),
                gratuitous_interval: None,
            },
        )]
        .into(),
        now,
    );
    dataplane.publish(Snapshot {
        fenced_from: Some(Instant::now() + Duration::from_secs(60)),
        answering: moved.answering(BTreeSet::new()),
    });
    assert_eq!(
        dataplane.arp_filter(&speaker_name),
        Some(&ArpFilter::Addresses([moved_v4].into()))
    );
    let requests_before = counters.requests.arp.get();
    client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
    client_arp.send(&arp_request(moved_v4)).await.unwrap();
    receive_matching(&client_arp, |inbound| {
        matches!(inbound, Inbound::ArpAnnouncement(a) if a.sender_ip == moved_v4 && a.sender_mac == SPEAKER_MAC)
    })
    .await;
    // Read in order: had the first request passed, it would have been counted before the reply.
    assert_eq!(counters.requests.arp.get(), requests_before + 1);

    // More addresses than a filter holds: the socket passes all ARP, and owned addresses are
    // still answered. The 1,999 extra addresses are placeholders from 0.0.0.0/8, which no frame
    // here ever carries.
    let mut many: Vec<Ipv4Addr> = (1..2_000u32).map(Ipv4Addr::from).collect();
    many.push(ANNOUNCED_V4);
    let mut crowded = Announcer::new(BurstPolicy::default());
    crowded.set_links([(speaker_name.clone(), SPEAKER_MAC)].into(), now);
    crowded.assign(
        many.iter()
            .map(|ip| {
                let assignment = Assignment {
                    interfaces: [speaker_name.clone()].into(),
                    gratuitous_interval: None,
                };
                (IpAddr::V4(*ip), assignment)
            })
            .collect(),
        now,
    );
    dataplane.publish(Snapshot {
        fenced_from: Some(Instant::now() + Duration::from_secs(60)),
        answering: crowded.answering(BTreeSet::new()),
    });
    assert_eq!(dataplane.arp_filter(&speaker_name), Some(&ArpFilter::All));
    client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
    receive_matching(&client_arp, is_reply).await;

    // Not listening any more: sends fail, the sockets close, nothing is answered.
    dataplane.publish(answering(Instant::now() + Duration::from_secs(60)));
    assert_eq!(packet_sockets_on(speaker_index), 2);
    assert!(dataplane.listen_on(&Default::default()).is_empty());
    assert!(dataplane.listening().is_empty());
    assert!(
        dataplane
            .send(&speaker_name, &arp_request(ANNOUNCED_V4))
            .is_err()
    );
    client_arp.send(&arp_request(ANNOUNCED_V4)).await.unwrap();
    assert!(
        maybe_receive(&client_arp, Duration::from_millis(300), is_reply)
            .await
            .is_none(),
        "answered on a deselected interface"
    );
    assert_eq!(packet_sockets_on(speaker_index), 0, "sockets still open");
}
