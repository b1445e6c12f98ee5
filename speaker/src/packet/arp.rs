//! ARP for IPv4 over Ethernet (RFC 826), with the probe and announcement forms of RFC 5227.

use std::net::{IpAddr, Ipv4Addr};

use super::{
    Claim, ETHERTYPE_ARP, EthernetHeader, Inbound, MacAddr, ParseError, array, ethernet_frame,
    pad_frame,
};

/// The ARP payload for Ethernet and IPv4: 8 bytes of header and two 10-byte address pairs.
pub const ARP_LEN: usize = 28;
const HARDWARE_ETHERNET: u16 = 1;
const PROTOCOL_IPV4: u16 = 0x0800;
const OPERATION_REQUEST: u16 = 1;
const OPERATION_REPLY: u16 = 2;

/// "Who has `target_ip`? Tell `sender_ip`."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    pub ethernet: EthernetHeader,
    pub sender_mac: MacAddr,
    /// 0.0.0.0 in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl ArpRequest {
    /// An RFC 5227 probe: a host checking, before it uses `target_ip`, that nobody else does.
    pub fn is_probe(&self) -> bool {
        self.sender_ip.is_unspecified()
    }

    /// Whether it was sent to the broadcast address or straight to `our_mac` (a cache refresh);
    /// RFC 826 answers both, and a request to another station's MAC is not ours to answer.
    pub fn is_addressed_to(&self, our_mac: MacAddr) -> bool {
        self.ethernet.destination.is_broadcast() || self.ethernet.destination == our_mac
    }

    pub fn claim(&self) -> Option<Claim> {
        (!self.is_probe()).then_some(Claim {
            ip: IpAddr::V4(self.sender_ip),
            mac: self.sender_mac,
        })
    }
}

/// How a station announced an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpAnnouncementKind {
    /// An ARP reply, solicited or gratuitous.
    Reply,
    /// A request for the sender's own address (RFC 5227 section 2.3 "ARP Announcement").
    GratuitousRequest,
}

/// A station saying `sender_ip` is at `sender_mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpAnnouncement {
    pub ethernet: EthernetHeader,
    pub kind: ArpAnnouncementKind,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpAnnouncement {
    pub fn claim(&self) -> Claim {
        Claim {
            ip: IpAddr::V4(self.sender_ip),
            mac: self.sender_mac,
        }
    }
}

/// Parses the ARP payload of a frame whose Ethernet header is already read.
pub(super) fn parse(ethernet: EthernetHeader, payload: &[u8]) -> Result<Inbound, ParseError> {
    let hardware = u16::from_be_bytes(array(payload, 0)?);
    let protocol = u16::from_be_bytes(array(payload, 2)?);
    let [hardware_len, protocol_len] = array(payload, 4)?;
    // RFC 826: a receiver that does not speak this hardware/protocol pair discards the packet.
    if hardware != HARDWARE_ETHERNET
        || protocol != PROTOCOL_IPV4
        || hardware_len != 6
        || protocol_len != 4
    {
        return Err(ParseError::NotEthernetIpv4Arp);
    }
    let operation = u16::from_be_bytes(array(payload, 6)?);
    let sender_mac = MacAddr(array(payload, 8)?);
    let sender_ip = Ipv4Addr::from(array::<4>(payload, 14)?);
    let target_mac = MacAddr(array(payload, 18)?);
    let target_ip = Ipv4Addr::from(array::<4>(payload, 24)?);
    if !sender_mac.is_unicast() {
        return Err(ParseError::InvalidArpSender);
    }
    match operation {
        OPERATION_REQUEST if sender_ip == target_ip => {
            Ok(Inbound::ArpAnnouncement(ArpAnnouncement {
                ethernet,
                kind: ArpAnnouncementKind::GratuitousRequest,
                sender_mac,
                sender_ip,
                target_mac,
                target_ip,
            }))
        }
        OPERATION_REQUEST => Ok(Inbound::ArpRequest(ArpRequest {
            ethernet,
            sender_mac,
            sender_ip,
            target_ip,
        })),
        OPERATION_REPLY if sender_ip.is_unspecified() => Err(ParseError::ArpReplyWithoutSenderIp),
        OPERATION_REPLY => Ok(Inbound::ArpAnnouncement(ArpAnnouncement {
            ethernet,
            kind: ArpAnnouncementKind::Reply,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        })),
        other => Err(ParseError::UnsupportedArpOperation(other)),
    }
}

/// The reply to `request`, from `our_mac`: "`request.target_ip` is at `our_mac`", sent to the
/// requester's hardware address as RFC 826 says (not the Ethernet source, which a bridge or
/// proxy may have rewritten).
pub fn reply(request: &ArpRequest, our_mac: MacAddr) -> Vec<u8> {
    frame(
        request.sender_mac,
        our_mac,
        OPERATION_REPLY,
        (our_mac, request.target_ip),
        (request.sender_mac, request.sender_ip),
    )
}

/// A gratuitous ARP in request form (RFC 5227 section 2.3 announcement): broadcast, sender and
/// target IP both `ip`, target hardware address zero.
pub fn gratuitous_request(ip: Ipv4Addr, our_mac: MacAddr) -> Vec<u8> {
    frame(
        MacAddr::BROADCAST,
        our_mac,
        OPERATION_REQUEST,
        (our_mac, ip),
        (MacAddr::ZERO, ip),
    )
}

/// A gratuitous ARP in reply form, broadcast: some hosts and switches update their caches only
/// from replies, others only from requests, so the speaker sends both.
pub fn gratuitous_reply(ip: Ipv4Addr, our_mac: MacAddr) -> Vec<u8> {
    frame(
        MacAddr::BROADCAST,
        our_mac,
        OPERATION_REPLY,
        (our_mac, ip),
        (MacAddr::BROADCAST, ip),
    )
}

fn frame(
    destination: MacAddr,
    source: MacAddr,
    operation: u16,
    (sender_mac, sender_ip): (MacAddr, Ipv4Addr),
    (target_mac, target_ip): (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut frame = ethernet_frame(
        destination,
        source,
        ETHERTYPE_ARP,
        super::ETHERNET_HEADER_LEN + ARP_LEN,
    );
    frame.extend_from_slice(&HARDWARE_ETHERNET.to_be_bytes());
    frame.extend_from_slice(&PROTOCOL_IPV4.to_be_bytes());
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&operation.to_be_bytes());
    frame.extend_from_slice(&sender_mac.octets());
    frame.extend_from_slice(&sender_ip.octets());
    frame.extend_from_slice(&target_mac.octets());
    frame.extend_from_slice(&target_ip.octets());
    pad_frame(&mut frame);
    frame
}
