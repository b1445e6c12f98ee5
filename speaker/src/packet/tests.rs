//! Parsing and building ARP/NDP frames, including every malformed shape we reject.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::ndp::{ALL_NODES, solicited_node_group};
use super::*;

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const OTHER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x03]);
const OWNED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

fn owned_v6() -> Ipv6Addr {
    "2001:db8::10".parse().unwrap()
}
fn peer_v6() -> Ipv6Addr {
    "2001:db8::20".parse().unwrap()
}

// ---------- frame builders for received traffic ----------

struct ArpFields {
    destination: MacAddr,
    hardware: u16,
    protocol: u16,
    lengths: [u8; 2],
    operation: u16,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
}

impl Default for ArpFields {
    fn default() -> Self {
        Self {
            destination: MacAddr::BROADCAST,
            hardware: 1,
            protocol: 0x0800,
            lengths: [6, 4],
            operation: 1,
            sender_mac: PEER_MAC,
            sender_ip: PEER_V4,
            target_mac: MacAddr::ZERO,
            target_ip: OWNED_V4,
        }
    }
}

fn arp_frame(f: ArpFields) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&f.destination.octets());
    frame.extend_from_slice(&PEER_MAC.octets());
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&f.hardware.to_be_bytes());
    frame.extend_from_slice(&f.protocol.to_be_bytes());
    frame.extend_from_slice(&f.lengths);
    frame.extend_from_slice(&f.operation.to_be_bytes());
    frame.extend_from_slice(&f.sender_mac.octets());
    frame.extend_from_slice(&f.sender_ip.octets());
    frame.extend_from_slice(&f.target_mac.octets());
    frame.extend_from_slice(&f.target_ip.octets());
    frame
}

struct Icmpv6Fields {
    ethernet_destination: MacAddr,
    ethernet_source: MacAddr,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    hop_limit: u8,
    next_header: u8,
    message: Vec<u8>,
    fix_checksum: bool,
}

fn solicitation_message(target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(options);
    message
}

fn advertisement_message(flags: u8, target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let mut message = vec![136, 0, 0, 0, flags, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(options);
    message
}

fn link_layer_option(kind: u8, mac: MacAddr) -> Vec<u8> {
    let mut option = vec![kind, 1];
    option.extend_from_slice(&mac.octets());
    option
}

/// A multicast solicitation for our address from the peer, with its source link-layer option.
fn solicitation() -> Icmpv6Fields {
    Icmpv6Fields {
        ethernet_destination: MacAddr::ipv6_multicast(solicited_node_group(owned_v6())),
        ethernet_source: PEER_MAC,
        source: peer_v6(),
        destination: solicited_node_group(owned_v6()),
        hop_limit: 255,
        next_header: 58,
        message: solicitation_message(owned_v6(), &link_layer_option(1, PEER_MAC)),
        fix_checksum: true,
    }
}

fn icmpv6_frame(mut f: Icmpv6Fields) -> Vec<u8> {
    if f.fix_checksum && f.message.len() >= 4 {
        f.message[2..4].fill(0);
        let sum = checksum::icmpv6(f.source, f.destination, &f.message);
        f.message[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let mut frame = Vec::new();
    frame.extend_from_slice(&f.ethernet_destination.octets());
    frame.extend_from_slice(&f.ethernet_source.octets());
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(f.message.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[f.next_header, f.hop_limit]);
    frame.extend_from_slice(&f.source.octets());
    frame.extend_from_slice(&f.destination.octets());
    frame.extend_from_slice(&f.message);
    frame
}

fn parse_solicitation(frame: &[u8]) -> NeighborSolicitation {
    match parse_frame(frame) {
        Ok(Inbound::NeighborSolicitation(ns)) => ns,
        other => panic!("expected a solicitation, got {other:?}"),
    }
}

fn parse_advertisement(frame: &[u8]) -> NeighborAdvertisement {
    match parse_frame(frame) {
        Ok(Inbound::NeighborAdvertisement(na)) => na,
        other => panic!("expected an advertisement, got {other:?}"),
    }
}

fn parse_arp_request(frame: &[u8]) -> ArpRequest {
    match parse_frame(frame) {
        Ok(Inbound::ArpRequest(request)) => request,
        other => panic!("expected an ARP request, got {other:?}"),
    }
}

fn parse_arp_announcement(frame: &[u8]) -> ArpAnnouncement {
    match parse_frame(frame) {
        Ok(Inbound::ArpAnnouncement(announcement)) => announcement,
        other => panic!("expected an ARP announcement, got {other:?}"),
    }
}

/// Hop limit of a built IPv6 frame.
fn hop_limit(frame: &[u8]) -> u8 {
    frame[ETHERNET_HEADER_LEN + 7]
}

// ---------- ARP ----------

#[test]
fn broadcast_arp_request_parses_with_every_field() {
    let request = parse_arp_request(&arp_frame(ArpFields::default()));
    assert_eq!(request.sender_mac, PEER_MAC);
    assert_eq!(request.sender_ip, PEER_V4);
    assert_eq!(request.target_ip, OWNED_V4);
    assert_eq!(request.ethernet.source, PEER_MAC);
    assert!(request.is_addressed_to(OUR_MAC));
    assert!(!request.is_probe());
    assert_eq!(
        request.claim(),
        Some(Claim {
            ip: IpAddr::V4(PEER_V4),
            mac: PEER_MAC
        })
    );
}

#[test]
fn unicast_arp_request_is_addressed_only_to_its_destination() {
    let request = parse_arp_request(&arp_frame(ArpFields {
        destination: OUR_MAC,
        ..Default::default()
    }));
    assert!(request.is_addressed_to(OUR_MAC));
    assert!(!request.is_addressed_to(OTHER_MAC));
}

#[test]
fn arp_reply_tells_the_requester_hardware_address_where_the_target_is() {
    let request = parse_arp_request(&arp_frame(ArpFields::default()));
    let reply = arp::reply(&request, OUR_MAC);
    assert_eq!(reply.len(), MIN_FRAME_LEN);
    assert_eq!(&reply[0..6], &PEER_MAC.octets(), "Ethernet destination");
    assert_eq!(&reply[6..12], &OUR_MAC.octets(), "Ethernet source");
    let announcement = parse_arp_announcement(&reply);
    assert_eq!(announcement.kind, ArpAnnouncementKind::Reply);
    assert_eq!(announcement.sender_mac, OUR_MAC);
    assert_eq!(announcement.sender_ip, OWNED_V4);
    assert_eq!(announcement.target_mac, PEER_MAC);
    assert_eq!(announcement.target_ip, PEER_V4);
}

#[test]
fn arp_probe_is_a_request_without_a_claim() {
    let request = parse_arp_request(&arp_frame(ArpFields {
        sender_ip: Ipv4Addr::UNSPECIFIED,
        ..Default::default()
    }));
    assert!(request.is_probe());
    assert_eq!(Inbound::ArpRequest(request).claim(), None);
    let reply = arp::reply(&request, OUR_MAC);
    let announcement = parse_arp_announcement(&reply);
    assert_eq!(announcement.sender_ip, OWNED_V4);
    assert_eq!(announcement.target_ip, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn gratuitous_arp_forms_parse_back_as_announcements() {
    let request = arp::gratuitous_request(OWNED_V4, OUR_MAC);
    let reply = arp::gratuitous_reply(OWNED_V4, OUR_MAC);
    for (frame, kind) in [
        (&request, ArpAnnouncementKind::GratuitousRequest),
        (&reply, ArpAnnouncementKind::Reply),
    ] {
        assert_eq!(frame.len(), MIN_FRAME_LEN);
        assert_eq!(&frame[0..6], &MacAddr::BROADCAST.octets());
        let announcement = parse_arp_announcement(frame);
        assert_eq!(announcement.kind, kind);
        assert_eq!(announcement.sender_ip, OWNED_V4);
        assert_eq!(announcement.target_ip, OWNED_V4);
        assert_eq!(
            announcement.claim(),
            Claim {
                ip: IpAddr::V4(OWNED_V4),
                mac: OUR_MAC
            }
        );
    }
    // RFC 5227 2.3: the request form's target hardware address is zero.
    assert_eq!(&request[32..38], &[0; 6]);
}

#[test]
fn someone_elses_gratuitous_arp_is_a_claim_not_a_question() {
    let frame = arp_frame(ArpFields {
        sender_mac: OTHER_MAC,
        sender_ip: OWNED_V4,
        target_ip: OWNED_V4,
        ..Default::default()
    });
    let inbound = parse_frame(&frame).unwrap();
    assert!(matches!(inbound, Inbound::ArpAnnouncement(_)));
    assert_eq!(
        inbound.claim(),
        Some(Claim {
            ip: IpAddr::V4(OWNED_V4),
            mac: OTHER_MAC
        })
    );
}

#[test]
fn arp_of_other_hardware_or_protocols_is_rejected() {
    let cases = [
        ArpFields {
            hardware: 6,
            ..Default::default()
        },
        ArpFields {
            protocol: 0x86dd,
            ..Default::default()
        },
        ArpFields {
            lengths: [8, 4],
            ..Default::default()
        },
        ArpFields {
            lengths: [6, 16],
            ..Default::default()
        },
    ];
    for fields in cases {
        assert_eq!(
            parse_frame(&arp_frame(fields)),
            Err(ParseError::NotEthernetIpv4Arp)
        );
    }
}

#[test]
fn arp_operations_other_than_request_and_reply_are_rejected() {
    for operation in [0, 3, 4, 8, 0xffff] {
        assert_eq!(
            parse_frame(&arp_frame(ArpFields {
                operation,
                ..Default::default()
            })),
            Err(ParseError::UnsupportedArpOperation(operation))
        );
    }
}

#[test]
fn arp_from_group_or_zero_hardware_addresses_is_rejected() {
    for sender_mac in [
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        MacAddr([0x03, 0, 0, 0, 0, 1]),
    ] {
        assert_eq!(
            parse_frame(&arp_frame(ArpFields {
                sender_mac,
                ..Default::default()
            })),
            Err(ParseError::InvalidArpSender)
        );
    }
    let mut frame = arp_frame(ArpFields::default());
    frame[6..12].copy_from_slice(&MacAddr::BROADCAST.octets());
    assert_eq!(parse_frame(&frame), Err(ParseError::InvalidEthernetSource));
}

#[test]
fn arp_reply_without_sender_ip_is_rejected() {
    assert_eq!(
        parse_frame(&arp_frame(ArpFields {
            operation: 2,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            ..Default::default()
        })),
        Err(ParseError::ArpReplyWithoutSenderIp)
    );
}

#[test]
fn padded_arp_frames_parse() {
    let mut frame = arp_frame(ArpFields::default());
    frame.resize(MIN_FRAME_LEN, 0);
    parse_arp_request(&frame);
}

#[test]
fn other_ethertypes_are_rejected() {
    let mut frame = arp_frame(ArpFields::default());
    for ethertype in [0x0800u16, 0x8100, 0x88cc] {
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        assert_eq!(
            parse_frame(&frame),
            Err(ParseError::UnsupportedEthertype(ethertype))
        );
    }
}

// ---------- NDP ----------

#[test]
fn multicast_solicitation_is_answered_unicast_to_its_link_layer_option() {
    let ns = parse_solicitation(&icmpv6_frame(solicitation()));
    assert_eq!(ns.target, owned_v6());
    assert_eq!(ns.source, peer_v6());
    assert_eq!(ns.source_link_layer, Some(PEER_MAC));
    assert!(!ns.is_duplicate_address_detection());

    let reply = ndp::solicited_advertisement(&ns, OUR_MAC);
    assert_eq!(&reply[0..6], &PEER_MAC.octets());
    assert_eq!(hop_limit(&reply), 255);
    // Parsing it back checks hop limit, checksum and option validity.
    let na = parse_advertisement(&reply);
    assert_eq!(na.source, owned_v6());
    assert_eq!(na.destination, peer_v6());
    assert_eq!(na.target, owned_v6());
    assert!(!na.router);
    assert!(na.solicited);
    assert!(na.override_flag);
    assert_eq!(na.target_link_layer, Some(OUR_MAC));
}

#[test]
fn unicast_probe_without_link_layer_option_is_answered_to_the_ethernet_source() {
    let ns = parse_solicitation(&icmpv6_frame(Icmpv6Fields {
        ethernet_destination: OUR_MAC,
        ethernet_source: OTHER_MAC,
        destination: owned_v6(),
        message: solicitation_message(owned_v6(), &[]),
        ..solicitation()
    }));
    assert_eq!(ns.source_link_layer, None);
    assert_eq!(ns.claim(), None);
    let reply = ndp::solicited_advertisement(&ns, OUR_MAC);
    assert_eq!(&reply[0..6], &OTHER_MAC.octets());
    let na = parse_advertisement(&reply);
    assert!(na.solicited);
    assert_eq!(na.destination, peer_v6());
}

#[test]
fn duplicate_address_detection_is_answered_to_all_nodes_unsolicited() {
    let ns = parse_solicitation(&icmpv6_frame(Icmpv6Fields {
        source: Ipv6Addr::UNSPECIFIED,
        message: solicitation_message(owned_v6(), &[]),
        ..solicitation()
    }));
    assert!(ns.is_duplicate_address_detection());
    assert_eq!(ns.claim(), None);
    let reply = ndp::solicited_advertisement(&ns, OUR_MAC);
    assert_eq!(&reply[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    let na = parse_advertisement(&reply);
    assert_eq!(na.destination, ALL_NODES);
    assert!(!na.solicited);
    assert!(na.override_flag);
    assert!(!na.router);
}

#[test]
fn duplicate_address_detection_with_a_link_layer_option_is_rejected() {
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            source: Ipv6Addr::UNSPECIFIED,
            ..solicitation()
        })),
        Err(ParseError::UnspecifiedSourceWithLinkLayerAddress)
    );
}

#[test]
fn duplicate_address_detection_not_to_a_solicited_node_group_is_rejected() {
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            source: Ipv6Addr::UNSPECIFIED,
            destination: owned_v6(),
            message: solicitation_message(owned_v6(), &[]),
            ..solicitation()
        })),
        Err(ParseError::UnspecifiedSourceNotToSolicitedNode)
    );
}

#[test]
fn unsolicited_advertisement_goes_to_all_nodes_with_override() {
    let frame = ndp::unsolicited_advertisement(owned_v6(), OUR_MAC);
    assert_eq!(&frame[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(&frame[6..12], &OUR_MAC.octets());
    assert_eq!(hop_limit(&frame), 255);
    let na = parse_advertisement(&frame);
    assert_eq!(na.destination, ALL_NODES);
    assert_eq!(na.source, owned_v6());
    assert!(na.override_flag && !na.solicited && !na.router);
    assert_eq!(
        na.claim(),
        Claim {
            ip: IpAddr::V6(owned_v6()),
            mac: OUR_MAC
        }
    );
}

#[test]
fn advertisement_without_target_option_claims_for_its_ethernet_source() {
    let na = parse_advertisement(&icmpv6_frame(Icmpv6Fields {
        ethernet_destination: OUR_MAC,
        ethernet_source: OTHER_MAC,
        destination: peer_v6(),
        message: advertisement_message(0x60, owned_v6(), &[]),
        ..solicitation()
    }));
    assert_eq!(
        na.claim(),
        Claim {
            ip: IpAddr::V6(owned_v6()),
            mac: OTHER_MAC
        }
    );
}

#[test]
fn solicited_advertisement_to_a_multicast_group_is_rejected() {
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            destination: ALL_NODES,
            message: advertisement_message(0x60, owned_v6(), &[]),
            ..solicitation()
        })),
        Err(ParseError::SolicitedAdvertisementToMulticast)
    );
}

#[test]
fn ndp_whose_hop_limit_is_not_255_is_rejected() {
    for hop_limit in [0, 1, 64, 254] {
        for message in [
            solicitation_message(owned_v6(), &[]),
            advertisement_message(0x20, owned_v6(), &[]),
        ] {
            assert_eq!(
                parse_frame(&icmpv6_frame(Icmpv6Fields {
                    hop_limit,
                    message,
                    ..solicitation()
                })),
                Err(ParseError::HopLimitNot255(hop_limit))
            );
        }
    }
}

#[test]
fn ndp_with_a_bad_checksum_is_rejected() {
    let mut frame = icmpv6_frame(solicitation());
    let checksum_at = ETHERNET_HEADER_LEN + 40 + 2;
    frame[checksum_at] ^= 0x01;
    assert_eq!(parse_frame(&frame), Err(ParseError::BadChecksum));
    // A flipped bit in the pseudo-header (the source address) is caught too.
    let mut frame = icmpv6_frame(solicitation());
    frame[ETHERNET_HEADER_LEN + 8 + 15] ^= 0x01;
    assert_eq!(parse_frame(&frame), Err(ParseError::BadChecksum));
}

#[test]
fn ndp_with_a_nonzero_code_is_rejected() {
    let mut message = solicitation_message(owned_v6(), &[]);
    message[1] = 1;
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message,
            ..solicitation()
        })),
        Err(ParseError::NonZeroCode(1))
    );
}

#[test]
fn zero_length_ndp_option_is_rejected() {
    let options = [
        &link_layer_option(1, PEER_MAC)[..],
        &[14, 0, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message: solicitation_message(owned_v6(), &options),
            ..solicitation()
        })),
        Err(ParseError::ZeroLengthOption)
    );
}

#[test]
fn ndp_option_running_past_the_end_is_rejected() {
    for options in [
        vec![14, 2, 0, 0, 0, 0, 0, 0],
        vec![1],
        link_layer_option(1, PEER_MAC)[..7].to_vec(),
    ] {
        assert_eq!(
            parse_frame(&icmpv6_frame(Icmpv6Fields {
                message: solicitation_message(owned_v6(), &options),
                ..solicitation()
            })),
            Err(ParseError::OptionPastEnd),
            "{options:?}"
        );
    }
}

#[test]
fn link_layer_options_must_be_one_ethernet_address() {
    let mut long = link_layer_option(1, PEER_MAC);
    long[1] = 2;
    long.extend_from_slice(&[0; 8]);
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message: solicitation_message(owned_v6(), &long),
            ..solicitation()
        })),
        Err(ParseError::BadLinkLayerOption)
    );
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message: solicitation_message(owned_v6(), &link_layer_option(1, MacAddr::BROADCAST)),
            ..solicitation()
        })),
        Err(ParseError::InvalidLinkLayerAddress)
    );
}

#[test]
fn unknown_ndp_options_are_skipped() {
    let options = [
        &[14, 1, 9, 9, 9, 9, 9, 9][..],
        &link_layer_option(1, PEER_MAC),
    ]
    .concat();
    let ns = parse_solicitation(&icmpv6_frame(Icmpv6Fields {
        message: solicitation_message(owned_v6(), &options),
        ..solicitation()
    }));
    assert_eq!(ns.source_link_layer, Some(PEER_MAC));
}

#[test]
fn solicitation_for_a_multicast_target_is_rejected() {
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message: solicitation_message(ALL_NODES, &[]),
            ..solicitation()
        })),
        Err(ParseError::MulticastTarget)
    );
}

#[test]
fn ndp_from_a_multicast_source_is_rejected() {
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            source: ALL_NODES,
            message: solicitation_message(owned_v6(), &[]),
            ..solicitation()
        })),
        Err(ParseError::MulticastSource)
    );
}

#[test]
fn other_ipv6_traffic_is_rejected() {
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            next_header: 17,
            ..solicitation()
        })),
        Err(ParseError::NotIcmpv6(17))
    );
    let mut echo = solicitation_message(owned_v6(), &[]);
    echo[0] = 128;
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message: echo,
            ..solicitation()
        })),
        Err(ParseError::NotNeighborDiscovery(128))
    );
    let mut frame = icmpv6_frame(solicitation());
    frame[ETHERNET_HEADER_LEN] = 0x40;
    assert_eq!(parse_frame(&frame), Err(ParseError::NotIpv6));
}

#[test]
fn ndp_message_shorter_than_its_fixed_part_is_rejected() {
    let message = solicitation_message(owned_v6(), &[])[..20].to_vec();
    assert_eq!(
        parse_frame(&icmpv6_frame(Icmpv6Fields {
            message,
            ..solicitation()
        })),
        Err(ParseError::Truncated)
    );
}

#[test]
fn ethernet_padding_after_the_ipv6_payload_is_ignored() {
    let mut frame = icmpv6_frame(Icmpv6Fields {
        message: solicitation_message(owned_v6(), &[]),
        ..solicitation()
    });
    frame.extend_from_slice(&[0xaa; 12]);
    let ns = parse_solicitation(&frame);
    assert_eq!(ns.target, owned_v6());
}

#[test]
fn solicited_node_groups_are_recognised() {
    let group = solicited_node_group("2001:db8::12:3456".parse().unwrap());
    assert_eq!(group, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
    assert!(ndp::is_solicited_node_group(group));
    assert!(!ndp::is_solicited_node_group(ALL_NODES));
}

// ---------- truncation and arbitrary input ----------

fn valid_frames() -> Vec<Vec<u8>> {
    vec![
        arp_frame(ArpFields::default()),
        arp::gratuitous_request(OWNED_V4, OUR_MAC),
        icmpv6_frame(solicitation()),
        ndp::unsolicited_advertisement(owned_v6(), OUR_MAC),
    ]
}

#[test]
fn every_truncation_of_a_valid_frame_is_rejected() {
    for frame in valid_frames() {
        assert!(parse_frame(&frame).is_ok());
        // The bytes a frame needs: Ethernet + ARP, or Ethernet + IPv6 header + payload length.
        let needed = match u16::from_be_bytes([frame[12], frame[13]]) {
            ETHERTYPE_ARP => ETHERNET_HEADER_LEN + arp::ARP_LEN,
            _ => {
                ETHERNET_HEADER_LEN
                    + ndp::IPV6_HEADER_LEN
                    + usize::from(u16::from_be_bytes([frame[18], frame[19]]))
            }
        };
        for len in 0..needed {
            assert!(
                parse_frame(&frame[..len]).is_err(),
                "accepted {len} of {needed} bytes"
            );
        }
    }
}

#[test]
fn built_frames_meet_the_ethernet_minimum() {
    for frame in valid_frames() {
        assert!(frame.len() >= 42);
    }
    assert!(arp::gratuitous_reply(OWNED_V4, OUR_MAC).len() >= MIN_FRAME_LEN);
    assert!(ndp::unsolicited_advertisement(owned_v6(), OUR_MAC).len() >= MIN_FRAME_LEN);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_frame(&bytes);
    }

    #[test]
    fn arbitrary_arp_and_ipv6_payloads_never_panic(
        ipv6 in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let mut frame = Vec::new();
        frame.extend_from_slice(&OUR_MAC.octets());
        frame.extend_from_slice(&PEER_MAC.octets());
        frame.extend_from_slice(&if ipv6 { ETHERTYPE_IPV6 } else { ETHERTYPE_ARP }.to_be_bytes());
        frame.extend_from_slice(&body);
        let _ = parse_frame(&frame);
    }

    /// Corrupting a valid NDP frame anywhere after its Ethernet header either leaves it rejected
    /// or yields a message that still passed every check (hop limit 255 among them).
    #[test]
    fn corrupted_ndp_frames_never_panic_and_keep_hop_limit_255(
        which in 0usize..2,
        at in 0usize..200,
        value in any::<u8>(),
    ) {
        let mut frame = if which == 0 {
            icmpv6_frame(solicitation())
        } else {
            ndp::unsolicited_advertisement(owned_v6(), OUR_MAC)
        };
        let at = ETHERNET_HEADER_LEN + at % (frame.len() - ETHERNET_HEADER_LEN);
        frame[at] = value;
        if parse_frame(&frame).is_ok() {
            prop_assert_eq!(hop_limit(&frame), 255);
        }
    }

    /// Whatever the addresses, what we build parses back as what we meant.
    #[test]
    fn built_frames_parse_back(
        v4 in any::<u32>(),
        v6 in any::<u128>(),
        mac_tail in any::<[u8; 5]>(),
    ) {
        let mac = MacAddr([0x02, mac_tail[0], mac_tail[1], mac_tail[2], mac_tail[3], mac_tail[4]]);
        let v4 = Ipv4Addr::from(v4);
        let v6 = Ipv6Addr::from(v6);
        if !v4.is_unspecified() {
            let announcement = match parse_frame(&arp::gratuitous_reply(v4, mac)) {
                Ok(Inbound::ArpAnnouncement(a)) => a,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(announcement.sender_ip, v4);
        }
        match parse_frame(&ndp::unsolicited_advertisement(v6, mac)) {
            Ok(Inbound::NeighborAdvertisement(na)) => {
                prop_assert_eq!(na.target, v6);
                prop_assert_eq!(na.target_link_layer, Some(mac));
            }
            Err(ParseError::MulticastTarget | ParseError::MulticastSource) => prop_assert!(v6.is_multicast()),
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }
}
