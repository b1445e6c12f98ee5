//! IPv6 Neighbor Discovery (RFC 4861): Neighbor Solicitations to answer and Neighbor
//! Advertisements to send or to watch for conflicts.

use std::net::{IpAddr, Ipv6Addr};

use super::{
    Claim, ETHERNET_HEADER_LEN, ETHERTYPE_IPV6, EthernetHeader, Inbound, MacAddr, ParseError,
    array, byte, checksum, ethernet_frame, pad_frame,
};

pub const IPV6_HEADER_LEN: usize = 40;
/// Type, code, checksum, 4 bytes of flags/reserved and the 16-byte target address.
pub const NDP_MESSAGE_LEN: usize = 24;
const NEXT_HEADER_ICMPV6: u8 = 58;
const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// RFC 4861 sections 7.1.1 and 7.1.2: 255 proves the sender is on the link, since any router on
/// the way would have decremented it. Sent messages use it too (section 7.2.4).
const HOP_LIMIT: u8 = 255;
const OPTION_SOURCE_LINK_LAYER: u8 = 1;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;
/// ff02::1, where unsolicited advertisements and answers to duplicate address detection go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// "Who has `target`?"
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    pub ethernet: EthernetHeader,
    /// Unspecified (::) for duplicate address detection.
    pub source: Ipv6Addr,
    /// The target's solicited-node group, or the target itself for unreachability detection.
    pub destination: Ipv6Addr,
    pub target: Ipv6Addr,
    pub source_link_layer: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// Duplicate address detection (RFC 4862 section 5.4): a host asking before it takes
    /// `target`, which cannot receive a unicast answer.
    pub fn is_duplicate_address_detection(&self) -> bool {
        self.source.is_unspecified()
    }

    /// Where a unicast answer goes: the source link-layer option, or without it the frame's
    /// Ethernet source (RFC 4861 section 7.2.4 sends the answer to the solicitation's source; a
    /// unicast unreachability probe may omit the option, as the sender already has our address).
    pub fn reply_mac(&self) -> MacAddr {
        self.source_link_layer.unwrap_or(self.ethernet.source)
    }

    pub fn claim(&self) -> Option<Claim> {
        match (
            self.is_duplicate_address_detection(),
            self.source_link_layer,
        ) {
            (false, Some(mac)) => Some(Claim {
                ip: IpAddr::V6(self.source),
                mac,
            }),
            _ => None,
        }
    }
}

/// "`target` is at `target_link_layer`."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    pub ethernet: EthernetHeader,
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub target: Ipv6Addr,
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target_link_layer: Option<MacAddr>,
}

impl NeighborAdvertisement {
    /// Without a target link-layer option the advertiser is the frame's sender.
    pub fn claim(&self) -> Claim {
        Claim {
            ip: IpAddr::V6(self.target),
            mac: self.target_link_layer.unwrap_or(self.ethernet.source),
        }
    }
}

/// ff02::1:ffXX:XXXX, the group whose members are asked for `address` (RFC 4291 section 2.7.1).
pub fn solicited_node_group(address: Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

pub fn is_solicited_node_group(address: Ipv6Addr) -> bool {
    address.octets()[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// Parses the IPv6 payload of a frame whose Ethernet header is already read. Only a Neighbor
/// Solicitation or Advertisement directly in the IPv6 header is accepted: Neighbor Discovery
/// messages do not carry extension headers in practice, and skipping them would widen what a
/// forged frame can reach.
pub(super) fn parse(ethernet: EthernetHeader, payload: &[u8]) -> Result<Inbound, ParseError> {
    if byte(payload, 0)? >> 4 != 6 {
        return Err(ParseError::NotIpv6);
    }
    let payload_len = usize::from(u16::from_be_bytes(array(payload, 4)?));
    let next_header = byte(payload, 6)?;
    let hop_limit = byte(payload, 7)?;
    let source = Ipv6Addr::from(array::<16>(payload, 8)?);
    let destination = Ipv6Addr::from(array::<16>(payload, 24)?);
    if next_header != NEXT_HEADER_ICMPV6 {
        return Err(ParseError::NotIcmpv6(next_header));
    }
    // The payload length, not the frame, bounds the message: Ethernet padding follows it.
    let message = payload
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or(ParseError::Truncated)?;
    let message_type = byte(message, 0)?;
    if message_type != TYPE_NEIGHBOR_SOLICITATION && message_type != TYPE_NEIGHBOR_ADVERTISEMENT {
        return Err(ParseError::NotNeighborDiscovery(message_type));
    }
    // RFC 4861 7.1.1 / 7.1.2 validity checks, common to both messages.
    if hop_limit != HOP_LIMIT {
        return Err(ParseError::HopLimitNot255(hop_limit));
    }
    let code = byte(message, 1)?;
    if code != 0 {
        return Err(ParseError::NonZeroCode(code));
    }
    if message.len() < NDP_MESSAGE_LEN {
        return Err(ParseError::Truncated);
    }
    if checksum::icmpv6(source, destination, message) != 0 {
        return Err(ParseError::BadChecksum);
    }
    if source.is_multicast() {
        return Err(ParseError::MulticastSource);
    }
    let target = Ipv6Addr::from(array::<16>(message, 8)?);
    if target.is_multicast() {
        return Err(ParseError::MulticastTarget);
    }
    let options = parse_options(message.get(NDP_MESSAGE_LEN..).unwrap_or_default())?;
    if message_type == TYPE_NEIGHBOR_SOLICITATION {
        if source.is_unspecified() {
            if options.source_link_layer.is_some() {
                return Err(ParseError::UnspecifiedSourceWithLinkLayerAddress);
            }
            if !is_solicited_node_group(destination) {
                return Err(ParseError::UnspecifiedSourceNotToSolicitedNode);
            }
        }
        Ok(Inbound::NeighborSolicitation(NeighborSolicitation {
            ethernet,
            source,
            destination,
            target,
            source_link_layer: options.source_link_layer,
        }))
    } else {
        let flags = byte(message, 4)?;
        let solicited = flags & FLAG_SOLICITED != 0;
        if solicited && destination.is_multicast() {
            return Err(ParseError::SolicitedAdvertisementToMulticast);
        }
        Ok(Inbound::NeighborAdvertisement(NeighborAdvertisement {
            ethernet,
            source,
            destination,
            target,
            router: flags & FLAG_ROUTER != 0,
            solicited,
            override_flag: flags & FLAG_OVERRIDE != 0,
            target_link_layer: options.target_link_layer,
        }))
    }
}

#[derive(Default)]
struct LinkLayerOptions {
    source_link_layer: Option<MacAddr>,
    target_link_layer: Option<MacAddr>,
}

/// Walks the options (RFC 4861 section 4.6): each is type, length in units of 8 bytes, data.
/// A zero length or an option running past the end invalidates the whole message (section
/// 7.1.1); unknown options are skipped (section 4.6). The first link-layer option of each kind
/// counts.
fn parse_options(mut options: &[u8]) -> Result<LinkLayerOptions, ParseError> {
    let mut found = LinkLayerOptions::default();
    while !options.is_empty() {
        let [kind, units] = array(options, 0).map_err(|_| ParseError::OptionPastEnd)?;
        if units == 0 {
            return Err(ParseError::ZeroLengthOption);
        }
        let len = usize::from(units) * 8;
        let option = options.get(..len).ok_or(ParseError::OptionPastEnd)?;
        if kind == OPTION_SOURCE_LINK_LAYER || kind == OPTION_TARGET_LINK_LAYER {
            // Ethernet's link-layer address option is exactly 8 bytes (RFC 2464 section 6).
            if units != 1 {
                return Err(ParseError::BadLinkLayerOption);
            }
            let mac = MacAddr(array(option, 2)?);
            if !mac.is_unicast() {
                return Err(ParseError::InvalidLinkLayerAddress);
            }
            let slot = if kind == OPTION_SOURCE_LINK_LAYER {
                &mut found.source_link_layer
            } else {
                &mut found.target_link_layer
            };
            slot.get_or_insert(mac);
        }
        options = options.get(len..).unwrap_or_default();
    }
    Ok(found)
}

/// The answer to `solicitation` for its target, from `our_mac` (RFC 4861 section 7.2.4):
/// Router clear, Override set, with our link-layer address as the target option. Duplicate
/// address detection is answered to all-nodes with Solicited clear, since its sender has no
/// address yet; any other solicitation unicast to its sender with Solicited set.
pub fn solicited_advertisement(solicitation: &NeighborSolicitation, our_mac: MacAddr) -> Vec<u8> {
    if solicitation.is_duplicate_address_detection() {
        advertisement(
            MacAddr::ipv6_multicast(ALL_NODES),
            ALL_NODES,
            solicitation.target,
            our_mac,
            false,
        )
    } else {
        advertisement(
            solicitation.reply_mac(),
            solicitation.source,
            solicitation.target,
            our_mac,
            true,
        )
    }
}

/// An unsolicited advertisement of `target` at `our_mac` to all-nodes, Override set, so that
/// neighbors replace any cached address at once (RFC 4861 section 7.2.6).
pub fn unsolicited_advertisement(target: Ipv6Addr, our_mac: MacAddr) -> Vec<u8> {
    advertisement(
        MacAddr::ipv6_multicast(ALL_NODES),
        ALL_NODES,
        target,
        our_mac,
        false,
    )
}

fn advertisement(
    ethernet_destination: MacAddr,
    ip_destination: Ipv6Addr,
    target: Ipv6Addr,
    our_mac: MacAddr,
    solicited: bool,
) -> Vec<u8> {
    // The advertised address is the source: it is the address this node answers for.
    let ip_source = target;
    let flags = FLAG_OVERRIDE | if solicited { FLAG_SOLICITED } else { 0 };
    let mut message = Vec::with_capacity(NDP_MESSAGE_LEN + 8);
    message.extend_from_slice(&[TYPE_NEIGHBOR_ADVERTISEMENT, 0, 0, 0, flags, 0, 0, 0]);
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[OPTION_TARGET_LINK_LAYER, 1]);
    message.extend_from_slice(&our_mac.octets());
    let sum = checksum::icmpv6(ip_source, ip_destination, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());

    let total = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + message.len();
    let mut frame = ethernet_frame(ethernet_destination, our_mac, ETHERTYPE_IPV6, total);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    // 32 bytes always fits in u16.
    frame.extend_from_slice(
        &u16::try_from(message.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&[NEXT_HEADER_ICMPV6, HOP_LIMIT]);
    frame.extend_from_slice(&ip_source.octets());
    frame.extend_from_slice(&ip_destination.octets());
    frame.extend_from_slice(&message);
    pad_frame(&mut frame);
    frame
}
