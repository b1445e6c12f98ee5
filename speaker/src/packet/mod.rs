//! ARP and NDP over Ethernet, without I/O: parsing received frames into typed messages and
//! building the frames the speaker sends.
//!
//! Parsing validates everything RFC 826 and RFC 4861 (sections 7.1.1 and 7.1.2) ask a receiver to
//! check, and rejects — never panics on — anything else, so a frame that reaches the announcer
//! is one it may safely act on. Which of those messages to answer (owned IPs, selected
//! interfaces) is the announcer's decision, not this module's.

pub mod arp;
pub mod arp_responder;
pub mod checksum;
pub mod ebpf;
pub mod filter;
pub mod mac;
pub mod ndp;

use std::net::IpAddr;

pub use arp::{ArpAnnouncement, ArpAnnouncementKind, ArpRequest};
pub use mac::MacAddr;
pub use ndp::{NeighborAdvertisement, NeighborSolicitation};

pub const ETHERNET_HEADER_LEN: usize = 14;
/// The shortest Ethernet frame without its FCS; shorter frames are padded to it (IEEE 802.3).
pub const MIN_FRAME_LEN: usize = 60;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The Ethernet II header of a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetHeader {
    pub destination: MacAddr,
    pub source: MacAddr,
    pub ethertype: u16,
}

/// A received ARP or NDP message the speaker may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Who has `target_ip`? Answered when the IP is owned here.
    ArpRequest(ArpRequest),
    /// An ARP reply or gratuitous ARP: someone says where an IPv4 address is.
    ArpAnnouncement(ArpAnnouncement),
    /// Who has this IPv6 address? Answered when the target is owned here.
    NeighborSolicitation(NeighborSolicitation),
    /// Someone says where an IPv6 address is.
    NeighborAdvertisement(NeighborAdvertisement),
}

/// A station's statement that an IP address is at a MAC address. One about an IP this node owns,
/// from a MAC that is not a FerroLB node's, is an address conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claim {
    pub ip: IpAddr,
    pub mac: MacAddr,
}

impl Inbound {
    /// What the message says about where an address is, if anything (RFC 5227 section 2.4:
    /// a request's sender fields claim an address as much as a reply does).
    pub fn claim(&self) -> Option<Claim> {
        match self {
            Inbound::ArpRequest(request) => request.claim(),
            Inbound::ArpAnnouncement(announcement) => Some(announcement.claim()),
            Inbound::NeighborSolicitation(solicitation) => solicitation.claim(),
            Inbound::NeighborAdvertisement(advertisement) => Some(advertisement.claim()),
        }
    }

    /// The Ethernet source of the frame it came in.
    pub fn ethernet_source(&self) -> MacAddr {
        match self {
            Inbound::ArpRequest(m) => m.ethernet.source,
            Inbound::ArpAnnouncement(m) => m.ethernet.source,
            Inbound::NeighborSolicitation(m) => m.ethernet.source,
            Inbound::NeighborAdvertisement(m) => m.ethernet.source,
        }
    }
}

/// Why a received frame is not acted upon. Most are expected (other traffic that slipped past the
/// socket filter); the rest are malformed or forged frames, counted but never answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    #[error("frame ends before its headers do")]
    Truncated,
    #[error("ethertype {0:#06x} is neither ARP nor IPv6")]
    UnsupportedEthertype(u16),
    #[error("Ethernet source is a group or zero address")]
    InvalidEthernetSource,
    #[error("ARP hardware type, protocol type or address lengths are not Ethernet/IPv4")]
    NotEthernetIpv4Arp,
    #[error("ARP operation {0} is neither request nor reply")]
    UnsupportedArpOperation(u16),
    #[error("ARP sender hardware address is a group or zero address")]
    InvalidArpSender,
    #[error("ARP reply without a sender IP address")]
    ArpReplyWithoutSenderIp,
    #[error("IP version is not 6")]
    NotIpv6,
    #[error("IPv6 next header {0} is not ICMPv6")]
    NotIcmpv6(u8),
    #[error("ICMPv6 type {0} is not a neighbor solicitation or advertisement")]
    NotNeighborDiscovery(u8),
    #[error("hop limit {0} is not 255: the message crossed a router (RFC 4861 7.1)")]
    HopLimitNot255(u8),
    #[error("ICMPv6 code {0} is not 0")]
    NonZeroCode(u8),
    #[error("ICMPv6 checksum does not match")]
    BadChecksum,
    #[error("IPv6 source is a multicast address")]
    MulticastSource,
    #[error("target address is a multicast address")]
    MulticastTarget,
    #[error("an NDP option has length zero")]
    ZeroLengthOption,
    #[error("an NDP option runs past the end of the message")]
    OptionPastEnd,
    #[error("link-layer address option is not 8 bytes, as Ethernet's is")]
    BadLinkLayerOption,
    #[error("link-layer address option carries a group or zero address")]
    InvalidLinkLayerAddress,
    #[error("solicitation from the unspecified address carries a source link-layer address")]
    UnspecifiedSourceWithLinkLayerAddress,
    #[error("solicitation from the unspecified address is not sent to a solicited-node group")]
    UnspecifiedSourceNotToSolicitedNode,
    #[error("advertisement to a multicast address has the Solicited flag set")]
    SolicitedAdvertisementToMulticast,
}

impl ParseError {
    /// A stable snake_case name, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::UnsupportedEthertype(_) => "unsupported_ethertype",
            ParseError::InvalidEthernetSource => "invalid_ethernet_source",
            ParseError::NotEthernetIpv4Arp => "not_ethernet_ipv4_arp",
            ParseError::UnsupportedArpOperation(_) => "unsupported_arp_operation",
            ParseError::InvalidArpSender => "invalid_arp_sender",
            ParseError::ArpReplyWithoutSenderIp => "arp_reply_without_sender_ip",
            ParseError::NotIpv6 => "not_ipv6",
            ParseError::NotIcmpv6(_) => "not_icmpv6",
            ParseError::NotNeighborDiscovery(_) => "not_neighbor_discovery",
            ParseError::HopLimitNot255(_) => "hop_limit_not_255",
            ParseError::NonZeroCode(_) => "nonzero_code",
            ParseError::BadChecksum => "bad_checksum",
            ParseError::MulticastSource => "multicast_source",
            ParseError::MulticastTarget => "multicast_target",
            ParseError::ZeroLengthOption => "zero_length_option",
            ParseError::OptionPastEnd => "option_past_end",
            ParseError::BadLinkLayerOption => "bad_link_layer_option",
            ParseError::InvalidLinkLayerAddress => "invalid_link_layer_address",
            ParseError::UnspecifiedSourceWithLinkLayerAddress => {
                "unspecified_source_with_link_layer_address"
            }
            ParseError::UnspecifiedSourceNotToSolicitedNode => {
                "unspecified_source_not_to_solicited_node"
            }
            ParseError::SolicitedAdvertisementToMulticast => "solicited_advertisement_to_multicast",
        }
    }
}

/// Parses a received Ethernet frame (without FCS; trailing padding is allowed).
pub fn parse_frame(frame: &[u8]) -> Result<Inbound, ParseError> {
    let (ethernet, payload) = parse_ethernet(frame)?;
    if !ethernet.source.is_unicast() {
        return Err(ParseError::InvalidEthernetSource);
    }
    match ethernet.ethertype {
        ETHERTYPE_ARP => arp::parse(ethernet, payload),
        ETHERTYPE_IPV6 => ndp::parse(ethernet, payload),
        other => Err(ParseError::UnsupportedEthertype(other)),
    }
}

fn parse_ethernet(frame: &[u8]) -> Result<(EthernetHeader, &[u8]), ParseError> {
    let header = EthernetHeader {
        destination: MacAddr(array(frame, 0)?),
        source: MacAddr(array(frame, 6)?),
        ethertype: u16::from_be_bytes(array(frame, 12)?),
    };
    let payload = frame
        .get(ETHERNET_HEADER_LEN..)
        .ok_or(ParseError::Truncated)?;
    Ok((header, payload))
}

/// Starts a frame with an Ethernet header; the caller appends the payload and then calls
/// [`pad_frame`].
fn ethernet_frame(
    destination: MacAddr,
    source: MacAddr,
    ethertype: u16,
    capacity: usize,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(capacity.max(MIN_FRAME_LEN));
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// Pads to the Ethernet minimum ourselves rather than trust every driver to.
fn pad_frame(frame: &mut Vec<u8>) {
    if frame.len() < MIN_FRAME_LEN {
        frame.resize(MIN_FRAME_LEN, 0);
    }
}

/// `N` bytes at `at`, or `Truncated`.
fn array<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], ParseError> {
    let end = at.checked_add(N).ok_or(ParseError::Truncated)?;
    buf.get(at..end)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ParseError::Truncated)
}

fn byte(buf: &[u8], at: usize) -> Result<u8, ParseError> {
    buf.get(at).copied().ok_or(ParseError::Truncated)
}

#[cfg(test)]
mod tests;
