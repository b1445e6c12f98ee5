//! BGP messages as bytes and back, through the `rustbgpd-wire` crate (why that crate:
//! `docs/bgp-codec.md`). This is the only module that names the crate's types: the rest of
//! [`crate::bgp`] speaks the small message types below, so a codec upgrade or swap stays here.
//!
//! Nothing here writes or parses the wire format itself; it converts between our types and the
//! codec's, and maps the codec's decode errors to the NOTIFICATION (RFC 4271 §6) the session must
//! send, correcting the few the codec maps for a different purpose (a malformed NOTIFICATION
//! gets no NOTIFICATION back; a message shorter than its type's minimum is a header error).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustbgpd_wire as wire;

use super::capabilities::Family;

/// The largest BGP message without the Extended Messages capability (RFC 4271 §4.1), which we
/// do not offer.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Marker, length and type.
pub const HEADER_LEN: usize = 19;

/// The AS number a 2-octet AS field carries for an ASN above 65535 (RFC 6793).
pub const AS_TRANS: u16 = wire::constants::AS_TRANS;

/// Well-known communities (RFC 1997).
pub const NO_EXPORT: u32 = wire::COMMUNITY_NO_EXPORT;
pub const NO_ADVERTISE: u32 = wire::COMMUNITY_NO_ADVERTISE;

/// NOTIFICATION error codes (RFC 4271 §4.5) and the subcodes this speaker sends.
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
}

/// NOTIFICATION subcodes (RFC 4271 §4.5, RFC 4486, RFC 6608).
pub mod subcode {
    pub use rustbgpd_wire::notification::cease_subcode::ADMINISTRATIVE_SHUTDOWN;
    pub use rustbgpd_wire::notification::header_subcode::{
        BAD_MESSAGE_LENGTH, BAD_MESSAGE_TYPE, CONNECTION_NOT_SYNCHRONIZED,
    };
    pub use rustbgpd_wire::notification::open_subcode::{
        BAD_BGP_IDENTIFIER, BAD_PEER_AS, UNACCEPTABLE_HOLD_TIME, UNSUPPORTED_VERSION,
    };
    pub use rustbgpd_wire::notification::update_subcode::MALFORMED_ATTRIBUTE_LIST;
    /// Finite State Machine Error subcodes (RFC 6608).
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// The capability code of multiprotocol extensions (RFC 4760).
pub const CAPABILITY_MULTIPROTOCOL: u8 = 1;

/// One BGP message, decoded or to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message's name as RFC 4271 writes it, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }
}

/// An OPEN. `asn` is the speaker's real ASN: the 4-octet AS capability's when present, else the
/// 2-octet field; encoding writes AS_TRANS in the 2-octet field for an ASN above 65535.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub asn: u32,
    pub hold_time_secs: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

/// The capabilities the session reads or offers; any other arrives as [`Capability::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    FourOctetAs(u32),
    GracefulRestart(GracefulRestart),
    /// Any other capability, multiprotocol for other families included, by code.
    Other {
        code: u8,
    },
}

/// The graceful restart capability (RFC 4724), unicast families only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit.
    pub restarting: bool,
    /// At most 4095.
    pub restart_time_secs: u16,
    /// Each family with its F bit (forwarding state preserved).
    pub families: Vec<(Family, bool)>,
}

/// A NOTIFICATION: error code, subcode and data (RFC 4271 §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode,
            data,
        }
    }

    /// The code and subcode in RFC words: "Cease/Administrative Shutdown",
    /// "OPEN Message Error/Bad Peer AS", "Hold Timer Expired".
    pub fn description(&self) -> String {
        describe(self.code, self.subcode)
    }

    /// The operator's message of an administrative Cease (RFC 9003), when it carries a
    /// well-formed one.
    pub fn shutdown_communication(&self) -> Option<String> {
        let message = self.to_wire();
        wire::notification::extract_shutdown_communication(&message)
            .ok()
            .flatten()
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    }

    fn to_wire(&self) -> wire::NotificationMessage {
        wire::NotificationMessage::new(
            wire::NotificationCode::from_u8(self.code),
            self.subcode,
            Bytes::copy_from_slice(&self.data),
        )
    }
}

/// "Code/Subcode" in RFC words; the code alone where subcode 0 means "unspecific".
pub fn describe(code: u8, subcode: u8) -> String {
    let code_name = wire::NotificationCode::from_u8(code).to_string();
    let subcode_name =
        wire::notification::description(wire::NotificationCode::from_u8(code), subcode);
    if subcode == 0 {
        code_name
    } else if subcode_name.starts_with("Unknown") {
        format!("{code_name}/subcode {subcode}")
    } else {
        format!("{code_name}/{subcode_name}")
    }
}

/// A ROUTE-REFRESH (RFC 2918): which family the peer wants again. Subtype 0 is a plain request;
/// others are enhanced route refresh markers (RFC 7313), which we do not offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub safi: u8,
    pub subtype: u8,
}

impl RouteRefresh {
    pub fn request(family: Family) -> Self {
        let (afi, safi) = afi_safi(family);
        Self {
            afi: afi as u16,
            safi: safi as u8,
            subtype: 0,
        }
    }

    /// The family asked for, if it is one of ours.
    pub fn family(&self) -> Option<Family> {
        match (self.afi, self.safi) {
            (1, 1) => Some(Family::Ipv4Unicast),
            (2, 1) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
}

/// An UPDATE as decoded. We ignore the routes peers send us; this is what validation saw, and what
/// the tests read back from our own UPDATEs. IPv4 body and MP_(UN)REACH_NLRI prefixes are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<IpNet>,
    pub announced: Vec<IpNet>,
    pub attributes: PathAttributes,
    /// The UPDATE is an End-of-RIB marker (RFC 4724 §2) for this family.
    pub end_of_rib: Option<Family>,
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

/// A large community (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

/// The next hop of MP_REACH_NLRI: a global address and, for IPv6, optionally the link-local one
/// (RFC 2545 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MpNextHop {
    pub global: IpAddr,
    pub link_local: Option<Ipv6Addr>,
}

/// The path attributes we send or read. AS_PATH is the ASNs of its AS_SEQUENCE segments in order
/// (we never send AS_SET, RFC 9774 deprecates it). Other attributes are dropped when decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<Vec<u32>>,
    pub next_hop: Option<Ipv4Addr>,
    pub mp_next_hop: Option<MpNextHop>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
}

/// What goes into one UPDATE this speaker sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateParts {
    /// The Withdrawn Routes field.
    pub withdrawn: Vec<Ipv4Net>,
    /// MP_UNREACH_NLRI for IPv6 unicast; `Some` and empty is the IPv6 End-of-RIB marker.
    pub mp_unreach_v6: Option<Vec<Ipv6Net>>,
    /// Path attributes; MP_REACH_NLRI is built from `mp_next_hop` and `mp_reach_v6`.
    pub attributes: Option<PathAttributes>,
    /// The NLRI field.
    pub nlri: Vec<Ipv4Net>,
    /// IPv6 unicast prefixes announced in MP_REACH_NLRI.
    pub mp_reach_v6: Vec<Ipv6Net>,
}

/// Decoding context the peer's OPEN fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeContext {
    /// AS_PATH carries 4-octet ASNs (both sides sent the capability).
    pub four_octet_as: bool,
    /// The peer is external: UPDATE validation applies eBGP rules.
    pub ebgp: bool,
}

/// A message the codec could not encode (our own data was out of range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode BGP message: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

/// A message header that cannot start a message (RFC 4271 §6.1): the byte stream is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The marker is not all ones.
    ConnectionNotSynchronized,
    BadMessageLength(u16),
    BadMessageType(u8),
}

impl HeaderError {
    /// The NOTIFICATION to send before closing (data: the bad length or type, RFC 4271 §6.1).
    pub fn notification(&self) -> Notification {
        match *self {
            HeaderError::ConnectionNotSynchronized => Notification::new(
                error_code::MESSAGE_HEADER,
                subcode::CONNECTION_NOT_SYNCHRONIZED,
                Vec::new(),
            ),
            HeaderError::BadMessageLength(length) => Notification::new(
                error_code::MESSAGE_HEADER,
                subcode::BAD_MESSAGE_LENGTH,
                length.to_be_bytes().to_vec(),
            ),
            HeaderError::BadMessageType(kind) => Notification::new(
                error_code::MESSAGE_HEADER,
                subcode::BAD_MESSAGE_TYPE,
                vec![kind],
            ),
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::ConnectionNotSynchronized => f.write_str("bad message marker"),
            HeaderError::BadMessageLength(length) => write!(f, "bad message length {length}"),
            HeaderError::BadMessageType(kind) => write!(f, "unknown message type {kind}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// A message that failed to decode or validate, with the NOTIFICATION RFC 4271 §6 prescribes.
/// `notification` is `None` for a malformed NOTIFICATION: the connection just closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedMessage {
    pub notification: Option<Notification>,
    pub detail: String,
}

impl fmt::Display for MalformedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for MalformedMessage {}

/// Where the next message in `buf` ends: `Ok(Some(len))` when `buf[..len]` holds a whole
/// message, `Ok(None)` when more bytes are needed, `Err` when the header is bad (send its
/// NOTIFICATION and close: nothing after it can be framed).
pub fn split_frame(buf: &[u8]) -> Result<Option<usize>, HeaderError> {
    match wire::peek_message_length(buf, MAX_MESSAGE_LEN as u16) {
        Ok(Some(length)) if buf.len() >= usize::from(length) => Ok(Some(usize::from(length))),
        Ok(_) => Ok(None),
        Err(error) => Err(header_error(&error).unwrap_or(HeaderError::ConnectionNotSynchronized)),
    }
}

fn header_error(error: &wire::DecodeError) -> Option<HeaderError> {
    match error {
        wire::DecodeError::InvalidMarker => Some(HeaderError::ConnectionNotSynchronized),
        wire::DecodeError::InvalidLength { length } => Some(HeaderError::BadMessageLength(*length)),
        wire::DecodeError::UnknownMessageType(kind) => Some(HeaderError::BadMessageType(*kind)),
        wire::DecodeError::InvalidKeepaliveLength { length } => {
            Some(HeaderError::BadMessageLength(*length))
        }
        _ => None,
    }
}

/// The smallest message of each type (RFC 4271 §4, RFC 2918 §3): anything shorter is a header
/// error, Bad Message Length.
fn minimum_length(kind: u8) -> usize {
    match kind {
        1 => 29,
        2 => 23,
        3 => 21,
        5 => 23,
        _ => HEADER_LEN,
    }
}

/// Decodes one whole message, as [`split_frame`] delimited it, and validates it. An UPDATE is
/// checked against RFC 4271 §6.3 (attribute flags, lengths, mandatory attributes, next hop).
pub fn decode(frame: &[u8], context: DecodeContext) -> Result<Message, MalformedMessage> {
    let length = match split_frame(frame) {
        Err(error) => return Err(from_header_error(error)),
        Ok(Some(length)) if length == frame.len() => length,
        // A frame shorter or longer than its length field: the length is wrong for what came.
        Ok(_) => {
            let declared = frame
                .get(16..18)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            return Err(from_header_error(HeaderError::BadMessageLength(declared)));
        }
    };
    let kind = frame.get(18).copied().unwrap_or(0);
    if length < minimum_length(kind) {
        let mut error = from_header_error(HeaderError::BadMessageLength(length as u16));
        if kind == 3 {
            // RFC 4271 §6.4: an error in a NOTIFICATION cannot be reported with a NOTIFICATION.
            error.notification = None;
        }
        return Err(error);
    }
    let mut bytes = Bytes::copy_from_slice(frame);
    let message = wire::decode_message(&mut bytes, MAX_MESSAGE_LEN as u16)
        .map_err(|error| from_decode_error(&error, kind))?;
    match message {
        wire::Message::Open(open) => Ok(Message::Open(open_from_wire(&open))),
        wire::Message::Update(update) => Ok(Message::Update(update_from_wire(&update, context)?)),
        wire::Message::Notification(notification) => Ok(Message::Notification(Notification {
            code: notification.code.as_u8(),
            subcode: notification.subcode,
            data: notification.data.to_vec(),
        })),
        wire::Message::Keepalive => Ok(Message::Keepalive),
        wire::Message::RouteRefresh(refresh) => Ok(Message::RouteRefresh(RouteRefresh {
            afi: refresh.afi_raw,
            safi: refresh.safi_raw,
            subtype: refresh.subtype_raw,
        })),
        _ => Err(from_header_error(HeaderError::BadMessageType(kind))),
    }
}

fn from_header_error(error: HeaderError) -> MalformedMessage {
    MalformedMessage {
        notification: Some(error.notification()),
        detail: error.to_string(),
    }
}

fn from_decode_error(error: &wire::DecodeError, kind: u8) -> MalformedMessage {
    let detail = format!("malformed {}: {error}", kind_name(kind));
    if kind == 3 {
        // RFC 4271 §6.4: no NOTIFICATION answers a NOTIFICATION.
        return MalformedMessage {
            notification: None,
            detail,
        };
    }
    let (code, subcode, data) = error.to_notification();
    MalformedMessage {
        notification: Some(Notification::new(code.as_u8(), subcode, data.to_vec())),
        detail,
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "OPEN",
        2 => "UPDATE",
        3 => "NOTIFICATION",
        4 => "KEEPALIVE",
        5 => "ROUTE-REFRESH",
        _ => "message",
    }
}

fn update_error(subcode: u8, data: Vec<u8>, detail: String) -> MalformedMessage {
    MalformedMessage {
        notification: Some(Notification::new(error_code::UPDATE_MESSAGE, subcode, data)),
        detail: format!("malformed UPDATE: {detail}"),
    }
}

fn family_of(afi: wire::Afi, safi: wire::Safi) -> Option<Family> {
    match (afi, safi) {
        (wire::Afi::Ipv4, wire::Safi::Unicast) => Some(Family::Ipv4Unicast),
        (wire::Afi::Ipv6, wire::Safi::Unicast) => Some(Family::Ipv6Unicast),
        _ => None,
    }
}

fn afi_safi(family: Family) -> (wire::Afi, wire::Safi) {
    match family {
        Family::Ipv4Unicast => (wire::Afi::Ipv4, wire::Safi::Unicast),
        Family::Ipv6Unicast => (wire::Afi::Ipv6, wire::Safi::Unicast),
    }
}

fn open_from_wire(open: &wire::OpenMessage) -> Open {
    let capabilities = open
        .capabilities
        .iter()
        .map(|capability| match capability {
            wire::Capability::MultiProtocol { afi, safi } => family_of(*afi, *safi).map_or(
                Capability::Other {
                    code: CAPABILITY_MULTIPROTOCOL,
                },
                Capability::Multiprotocol,
            ),
            wire::Capability::RouteRefresh => Capability::RouteRefresh,
            wire::Capability::FourOctetAs { asn } => Capability::FourOctetAs(*asn),
            wire::Capability::GracefulRestart {
                restart_state,
                restart_time,
                families,
                ..
            } => Capability::GracefulRestart(GracefulRestart {
                restarting: *restart_state,
                restart_time_secs: *restart_time,
                families: families
                    .iter()
                    .filter_map(|f| {
                        family_of(f.afi, f.safi).map(|family| (family, f.forwarding_preserved))
                    })
                    .collect(),
            }),
            other => Capability::Other { code: other.code() },
        })
        .collect();
    Open {
        asn: open.four_byte_as(),
        hold_time_secs: open.hold_time,
        router_id: open.bgp_identifier,
        capabilities,
    }
}

fn prefix_from_wire(prefix: &wire::Prefix) -> Option<IpNet> {
    match prefix {
        wire::Prefix::V4(p) => Ipv4Net::new(p.addr, p.len).ok().map(IpNet::V4),
        wire::Prefix::V6(p) => Ipv6Net::new(p.addr, p.len).ok().map(IpNet::V6),
    }
}

fn update_from_wire(
    update: &wire::UpdateMessage,
    context: DecodeContext,
) -> Result<Update, MalformedMessage> {
    let parsed = update
        .parse(context.four_octet_as, false, &[])
        .map_err(|error| from_decode_error(&error, 2))?;
    let mp_announced = parsed.attributes.iter().any(|attribute| {
        matches!(attribute, wire::PathAttribute::MpReachNlri(mp) if !mp.announced.is_empty())
    });
    let body_announced = !parsed.announced.is_empty();
    wire::validate::validate_update_attributes(
        &parsed.attributes,
        body_announced || mp_announced,
        body_announced,
        context.ebgp,
    )
    .map_err(|error| {
        update_error(
            error.subcode,
            error.data,
            wire::notification::description(wire::NotificationCode::UpdateMessage, error.subcode)
                .to_owned(),
        )
    })?;

    let invalid_prefix = || {
        update_error(
            wire::notification::update_subcode::INVALID_NETWORK_FIELD,
            Vec::new(),
            "prefix length out of range".to_owned(),
        )
    };
    let mut out = Update::default();
    for entry in &parsed.withdrawn {
        out.withdrawn.push(
            Ipv4Net::new(entry.prefix.addr, entry.prefix.len)
                .map(IpNet::V4)
                .map_err(|_| invalid_prefix())?,
        );
    }
    for entry in &parsed.announced {
        out.announced.push(
            Ipv4Net::new(entry.prefix.addr, entry.prefix.len)
                .map(IpNet::V4)
                .map_err(|_| invalid_prefix())?,
        );
    }
    let mut only_unreach_of: Option<Family> = None;
    let attribute_count = parsed.attributes.len();
    for attribute in &parsed.attributes {
        let attributes = &mut out.attributes;
        match attribute {
            wire::PathAttribute::Origin(origin) => {
                attributes.origin = Some(match origin {
                    wire::Origin::Igp => Origin::Igp,
                    wire::Origin::Egp => Origin::Egp,
                    wire::Origin::Incomplete => Origin::Incomplete,
                });
            }
            wire::PathAttribute::AsPath(path) => {
                attributes.as_path = Some(
                    path.segments
                        .iter()
                        .flat_map(|segment| match segment {
                            wire::AsPathSegment::AsSequence(asns)
                            | wire::AsPathSegment::AsSet(asns) => asns.iter().copied(),
                        })
                        .collect(),
                );
            }
            wire::PathAttribute::NextHop(next_hop) => attributes.next_hop = Some(*next_hop),
            wire::PathAttribute::LocalPref(local_pref) => {
                attributes.local_pref = Some(*local_pref);
            }
            wire::PathAttribute::Communities(values)
            | wire::PathAttribute::CommunitiesPartial(values) => {
                attributes.communities.clone_from(values);
            }
            wire::PathAttribute::LargeCommunities(values)
            | wire::PathAttribute::LargeCommunitiesPartial(values) => {
                attributes.large_communities = values
                    .iter()
                    .map(|c| LargeCommunity {
                        global_admin: c.global_admin,
                        local_data1: c.local_data1,
                        local_data2: c.local_data2,
                    })
                    .collect();
            }
            wire::PathAttribute::MpReachNlri(mp) => {
                attributes.mp_next_hop = Some(MpNextHop {
                    global: mp.next_hop,
                    link_local: mp.link_local_next_hop,
                });
                for entry in &mp.announced {
                    out.announced
                        .push(prefix_from_wire(&entry.prefix).ok_or_else(invalid_prefix)?);
                }
            }
            wire::PathAttribute::MpUnreachNlri(mp) => {
                if attribute_count == 1 && mp.withdrawn.is_empty() {
                    only_unreach_of = family_of(mp.afi, mp.safi);
                }
                for entry in &mp.withdrawn {
                    out.withdrawn
                        .push(prefix_from_wire(&entry.prefix).ok_or_else(invalid_prefix)?);
                }
            }
            _ => {}
        }
    }
    let empty_body = update.withdrawn_routes.is_empty() && update.nlri.is_empty();
    out.end_of_rib = if empty_body && update.path_attributes.is_empty() {
        Some(Family::Ipv4Unicast)
    } else if empty_body {
        only_unreach_of
    } else {
        None
    };
    Ok(out)
}

fn encode(message: &wire::Message) -> Result<Vec<u8>, EncodeError> {
    wire::encode_message(message)
        .map(Vec::from)
        .map_err(|error| EncodeError(error.to_string()))
}

/// Encodes an OPEN (version 4).
pub fn encode_open(open: &Open) -> Result<Vec<u8>, EncodeError> {
    let capabilities = open
        .capabilities
        .iter()
        .map(|capability| match capability {
            Capability::Multiprotocol(family) => {
                let (afi, safi) = afi_safi(*family);
                wire::Capability::MultiProtocol { afi, safi }
            }
            Capability::RouteRefresh => wire::Capability::RouteRefresh,
            Capability::FourOctetAs(asn) => wire::Capability::FourOctetAs { asn: *asn },
            Capability::GracefulRestart(gr) => wire::Capability::GracefulRestart {
                restart_state: gr.restarting,
                notification: false,
                restart_time: gr.restart_time_secs,
                families: gr
                    .families
                    .iter()
                    .map(|(family, forwarding_preserved)| {
                        let (afi, safi) = afi_safi(*family);
                        wire::GracefulRestartFamily {
                            afi,
                            safi,
                            forwarding_preserved: *forwarding_preserved,
                        }
                    })
                    .collect(),
            },
            Capability::Other { code } => wire::Capability::Unknown {
                code: *code,
                data: Bytes::new(),
            },
        })
        .collect();
    encode(&wire::Message::Open(wire::OpenMessage {
        version: 4,
        my_as: u16::try_from(open.asn).unwrap_or(AS_TRANS),
        hold_time: open.hold_time_secs,
        bgp_identifier: open.router_id,
        capabilities,
    }))
}

/// A KEEPALIVE.
pub fn encode_keepalive() -> Vec<u8> {
    encode(&wire::Message::Keepalive).unwrap_or_default()
}

/// Encodes a NOTIFICATION, its data cut to fit one message (RFC 4271 allows the data to be
/// shortened; it is diagnostic).
pub fn encode_notification(notification: &Notification) -> Vec<u8> {
    let mut notification = notification.clone();
    notification.data.truncate(MAX_MESSAGE_LEN - HEADER_LEN - 2);
    encode(&wire::Message::Notification(notification.to_wire())).unwrap_or_default()
}

/// Encodes a ROUTE-REFRESH request.
pub fn encode_route_refresh(refresh: &RouteRefresh) -> Result<Vec<u8>, EncodeError> {
    encode(&wire::Message::RouteRefresh(wire::RouteRefreshMessage {
        afi_raw: refresh.afi,
        subtype_raw: refresh.subtype,
        safi_raw: refresh.safi,
        orf: None,
    }))
}

fn update_to_wire(
    parts: &UpdateParts,
    four_octet_as: bool,
) -> Result<wire::UpdateMessage, EncodeError> {
    // Attributes in ascending type code order, as RFC 4271 §5 recommends.
    let mut attributes = Vec::new();
    let no_attributes = PathAttributes::default();
    let given = parts.attributes.as_ref().unwrap_or(&no_attributes);
    if let Some(origin) = given.origin {
        attributes.push(wire::PathAttribute::Origin(match origin {
            Origin::Igp => wire::Origin::Igp,
            Origin::Egp => wire::Origin::Egp,
            Origin::Incomplete => wire::Origin::Incomplete,
        }));
    }
    if let Some(as_path) = &given.as_path {
        let segments = if as_path.is_empty() {
            Vec::new()
        } else {
            vec![wire::AsPathSegment::AsSequence(as_path.clone())]
        };
        attributes.push(wire::PathAttribute::AsPath(wire::AsPath { segments }));
    }
    if let Some(next_hop) = given.next_hop {
        attributes.push(wire::PathAttribute::NextHop(next_hop));
    }
    if let Some(local_pref) = given.local_pref {
        attributes.push(wire::PathAttribute::LocalPref(local_pref));
    }
    if !given.communities.is_empty() {
        attributes.push(wire::PathAttribute::Communities(given.communities.clone()));
    }
    if !parts.mp_reach_v6.is_empty() {
        let next_hop = given
            .mp_next_hop
            .ok_or_else(|| EncodeError("IPv6 NLRI without an MP_REACH_NLRI next hop".into()))?;
        attributes.push(wire::PathAttribute::MpReachNlri(Box::new(
            wire::MpReachNlri {
                afi: wire::Afi::Ipv6,
                safi: wire::Safi::Unicast,
                next_hop: next_hop.global,
                link_local_next_hop: next_hop.link_local,
                announced: parts
                    .mp_reach_v6
                    .iter()
                    .map(|prefix| nlri_entry_v6(*prefix))
                    .collect(),
                flowspec_announced: Vec::new(),
                evpn_announced: Vec::new(),
                bgpls_announced: Vec::new(),
                vpn_announced: Vec::new(),
                labeled_announced: Vec::new(),
                rtc_announced: Vec::new(),
            },
        )));
    }
    if let Some(withdrawn) = &parts.mp_unreach_v6 {
        attributes.push(wire::PathAttribute::MpUnreachNlri(Box::new(
            wire::MpUnreachNlri {
                afi: wire::Afi::Ipv6,
                safi: wire::Safi::Unicast,
                withdrawn: withdrawn
                    .iter()
                    .map(|prefix| nlri_entry_v6(*prefix))
                    .collect(),
                flowspec_withdrawn: Vec::new(),
                evpn_withdrawn: Vec::new(),
                bgpls_withdrawn: Vec::new(),
                vpn_withdrawn: Vec::new(),
                labeled_withdrawn: Vec::new(),
                rtc_withdrawn: Vec::new(),
            },
        )));
    }
    if !given.large_communities.is_empty() {
        attributes.push(wire::PathAttribute::LargeCommunities(
            given
                .large_communities
                .iter()
                .map(|c| wire::LargeCommunity::new(c.global_admin, c.local_data1, c.local_data2))
                .collect(),
        ));
    }
    let v4 = |prefixes: &[Ipv4Net]| -> Vec<wire::Ipv4NlriEntry> {
        prefixes
            .iter()
            .map(|prefix| wire::Ipv4NlriEntry {
                path_id: 0,
                prefix: wire::Ipv4Prefix::new(prefix.addr(), prefix.prefix_len()),
            })
            .collect()
    };
    wire::UpdateMessage::try_build(
        &v4(&parts.nlri),
        &v4(&parts.withdrawn),
        &attributes,
        four_octet_as,
        false,
        wire::Ipv4UnicastMode::Body,
    )
    .map_err(|error| EncodeError(error.to_string()))
}

fn nlri_entry_v6(prefix: Ipv6Net) -> wire::NlriEntry {
    wire::NlriEntry {
        path_id: 0,
        prefix: wire::Prefix::V6(wire::Ipv6Prefix::new(prefix.addr(), prefix.prefix_len())),
    }
}

/// The encoded size of the UPDATE `parts` makes, header included.
pub fn update_len(parts: &UpdateParts, four_octet_as: bool) -> Result<usize, EncodeError> {
    update_to_wire(parts, four_octet_as).map(|update| update.encoded_len())
}

/// Encodes one UPDATE; fails when it would exceed [`MAX_MESSAGE_LEN`].
pub fn encode_update(parts: &UpdateParts, four_octet_as: bool) -> Result<Vec<u8>, EncodeError> {
    encode(&wire::Message::Update(update_to_wire(
        parts,
        four_octet_as,
    )?))
}

/// The bytes one prefix takes in an NLRI or Withdrawn Routes field, as the codec encodes it.
pub fn nlri_len(prefix: &IpNet) -> usize {
    let mut buf = Vec::new();
    match prefix {
        IpNet::V4(p) => {
            wire::nlri::encode_nlri(&[wire::Ipv4Prefix::new(p.addr(), p.prefix_len())], &mut buf)
        }
        IpNet::V6(p) => wire::nlri::encode_ipv6_nlri(
            &[wire::Ipv6Prefix::new(p.addr(), p.prefix_len())],
            &mut buf,
        ),
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: DecodeContext = DecodeContext {
        four_octet_as: true,
        ebgp: true,
    };

    fn sample_open() -> Open {
        Open {
            asn: 4_200_000_001,
            hold_time_secs: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::Multiprotocol(Family::Ipv4Unicast),
                Capability::Multiprotocol(Family::Ipv6Unicast),
                Capability::RouteRefresh,
                Capability::FourOctetAs(4_200_000_001),
                Capability::GracefulRestart(GracefulRestart {
                    restarting: false,
                    restart_time_secs: 120,
                    families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, true)],
                }),
            ],
        }
    }

    #[test]
    fn open_round_trips_with_capabilities_and_as_trans() {
        let open = sample_open();
        let bytes = encode_open(&open).unwrap();
        // The 2-octet AS field carries AS_TRANS for a 4-octet ASN.
        assert_eq!(&bytes[20..22], &AS_TRANS.to_be_bytes());
        assert_eq!(split_frame(&bytes), Ok(Some(bytes.len())));
        assert_eq!(decode(&bytes, CONTEXT), Ok(Message::Open(open)));
    }

    #[test]
    fn keepalive_notification_and_route_refresh_round_trip() {
        let keepalive = encode_keepalive();
        assert_eq!(keepalive.len(), HEADER_LEN);
        assert_eq!(decode(&keepalive, CONTEXT), Ok(Message::Keepalive));

        let cease = Notification::new(6, 2, vec![4, b'b', b'y', b'e', b'!']);
        let bytes = encode_notification(&cease);
        assert_eq!(
            decode(&bytes, CONTEXT),
            Ok(Message::Notification(cease.clone()))
        );
        assert_eq!(cease.shutdown_communication().as_deref(), Some("bye!"));
        assert_eq!(cease.description(), "Cease/Administrative Shutdown");

        let refresh = RouteRefresh::request(Family::Ipv6Unicast);
        let bytes = encode_route_refresh(&refresh).unwrap();
        assert_eq!(decode(&bytes, CONTEXT), Ok(Message::RouteRefresh(refresh)));
        assert_eq!(refresh.family(), Some(Family::Ipv6Unicast));
    }

    #[test]
    fn descriptions_read_like_the_rfc() {
        assert_eq!(describe(2, 2), "OPEN Message Error/Bad Peer AS");
        assert_eq!(describe(4, 0), "Hold Timer Expired");
        assert_eq!(
            describe(3, 1),
            "UPDATE Message Error/Malformed Attribute List"
        );
        assert_eq!(describe(6, 99), "Cease/subcode 99");
    }

    #[test]
    fn update_with_every_attribute_round_trips() {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(vec![4_200_000_001]),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            mp_next_hop: Some(MpNextHop {
                global: "2001:db8::1".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap()),
            }),
            local_pref: Some(100),
            communities: vec![65000 << 16 | 7, NO_EXPORT],
            large_communities: vec![LargeCommunity {
                global_admin: 1,
                local_data1: 2,
                local_data2: 3,
            }],
        };
        let parts = UpdateParts {
            withdrawn: vec!["198.51.100.9/32".parse().unwrap()],
            mp_unreach_v6: None,
            attributes: Some(attributes.clone()),
            nlri: vec!["198.51.100.7/32".parse().unwrap()],
            mp_reach_v6: vec!["2001:db8:1::7/128".parse().unwrap()],
        };
        let bytes = encode_update(&parts, true).unwrap();
        assert_eq!(update_len(&parts, true), Ok(bytes.len()));
        let Ok(Message::Update(update)) = decode(&bytes, CONTEXT) else {
            panic!("not an UPDATE");
        };
        assert_eq!(update.attributes, attributes);
        assert_eq!(
            update.announced,
            vec![
                "198.51.100.7/32".parse::<IpNet>().unwrap(),
                "2001:db8:1::7/128".parse().unwrap()
            ]
        );
        assert_eq!(
            update.withdrawn,
            vec!["198.51.100.9/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(update.end_of_rib, None);
    }

    #[test]
    fn end_of_rib_markers_decode_as_such() {
        let v4 = encode_update(&UpdateParts::default(), true).unwrap();
        assert_eq!(v4.len(), 23);
        let v6 = encode_update(
            &UpdateParts {
                mp_unreach_v6: Some(Vec::new()),
                ..UpdateParts::default()
            },
            true,
        )
        .unwrap();
        for (bytes, family) in [(v4, Family::Ipv4Unicast), (v6, Family::Ipv6Unicast)] {
            let Ok(Message::Update(update)) = decode(&bytes, CONTEXT) else {
                panic!("not an UPDATE");
            };
            assert_eq!(update.end_of_rib, Some(family));
        }
    }

    #[test]
    fn nlri_lengths_are_one_octet_plus_the_address_octets_the_prefix_covers() {
        for (prefix, len) in [
            ("198.51.100.1/32", 5),
            ("198.51.100.0/24", 4),
            ("0.0.0.0/0", 1),
            ("2001:db8::1/128", 17),
            ("2001:db8::/33", 6),
        ] {
            assert_eq!(nlri_len(&prefix.parse().unwrap()), len, "{prefix}");
        }
    }

    #[test]
    fn header_errors_map_to_rfc_4271_section_6_1() {
        let mut bad_marker = encode_keepalive();
        bad_marker[0] = 0;
        assert_eq!(
            split_frame(&bad_marker),
            Err(HeaderError::ConnectionNotSynchronized)
        );
        let mut bad_length = encode_keepalive();
        bad_length[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            split_frame(&bad_length),
            Err(HeaderError::BadMessageLength(5000))
        );
        let mut bad_type = encode_keepalive();
        bad_type[18] = 9;
        assert_eq!(split_frame(&bad_type), Err(HeaderError::BadMessageType(9)));
        let n = HeaderError::BadMessageType(9).notification();
        assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
        assert_eq!(split_frame(&bad_type[..10]), Ok(None));
    }

    #[test]
    fn short_messages_are_bad_message_length() {
        // A 19-byte OPEN passes framing but is shorter than any OPEN.
        let mut open = encode_keepalive();
        open[18] = 1;
        let error = decode(&open, CONTEXT).unwrap_err();
        let n = error.notification.unwrap();
        assert_eq!((n.code, n.subcode), (1, 2));
        // A KEEPALIVE with a body.
        let mut keepalive = encode_keepalive();
        keepalive.push(0);
        keepalive[16..18].copy_from_slice(&20u16.to_be_bytes());
        let n = decode(&keepalive, CONTEXT)
            .unwrap_err()
            .notification
            .unwrap();
        assert_eq!((n.code, n.subcode), (1, 2));
    }

    #[test]
    fn malformed_update_attributes_carry_their_subcode() {
        // ORIGIN 5 is not a valid origin: Invalid ORIGIN Attribute.
        let parts = UpdateParts {
            attributes: Some(PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(vec![64512]),
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                ..PathAttributes::default()
            }),
            nlri: vec!["198.51.100.7/32".parse().unwrap()],
            ..UpdateParts::default()
        };
        let mut bytes = encode_update(&parts, true).unwrap();
        // Header 19, withdrawn length 2, attributes length 2, then ORIGIN: flags, type, len, value.
        assert_eq!(bytes[23..26], [0x40, 1, 1]);
        bytes[26] = 5;
        let n = decode(&bytes, CONTEXT).unwrap_err().notification.unwrap();
        assert_eq!((n.code, n.subcode), (3, 6));

        // No NEXT_HOP for body NLRI: Missing Well-known Attribute.
        let mut missing = parts.clone();
        if let Some(a) = missing.attributes.as_mut() {
            a.next_hop = None;
        }
        let bytes = encode_update(&missing, true).unwrap();
        let n = decode(&bytes, CONTEXT).unwrap_err().notification.unwrap();
        assert_eq!((n.code, n.subcode), (3, 3));
    }

    #[test]
    fn a_malformed_notification_gets_no_notification_back() {
        let mut bytes = encode_notification(&Notification::new(6, 2, Vec::new()));
        bytes.truncate(20);
        bytes[16..18].copy_from_slice(&20u16.to_be_bytes());
        let error = decode(&bytes, CONTEXT).unwrap_err();
        assert_eq!(error.notification, None);
    }

    #[test]
    fn frames_whose_length_disagrees_with_the_header_are_rejected() {
        let mut bytes = encode_keepalive();
        bytes.push(0);
        let n = decode(&bytes, CONTEXT).unwrap_err().notification.unwrap();
        assert_eq!((n.code, n.subcode), (1, 2));
    }
}
