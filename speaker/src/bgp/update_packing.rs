//! Our routes as the fewest UPDATE messages: one attribute set per UPDATE with as many NLRI as
//! fit in 4096 bytes (RFC 4271 §4.1), withdrawals packed the same way, and the End-of-RIB marker
//! per family (RFC 4724 §2).
//!
//! IPv4 prefixes travel in the NLRI and Withdrawn Routes fields with NEXT_HOP; IPv6 prefixes in
//! MP_REACH_NLRI (next hop global plus optional link-local, RFC 2545) and MP_UNREACH_NLRI
//! (RFC 4760). Families never share an UPDATE, and withdrawals never share one with
//! announcements: that costs at most one message per family and keeps every UPDATE simple for
//! the routers that read them.
//!
//! Sizes come from the codec: the bytes an attribute set takes are measured on an UPDATE
//! carrying one prefix, each prefix's bytes with [`codec::nlri_len`], and every message built is
//! encoded by the codec, which refuses anything over 4096 bytes (a chunk it refuses is split in
//! two; the bound below makes that a safeguard that never triggers).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::capabilities::{Families, Family, Negotiated};
use super::codec::{
    self, EncodeError, LargeCommunity, MAX_MESSAGE_LEN, MpNextHop, Origin, PathAttributes,
    UpdateParts,
};

/// LOCAL_PREF sent to internal peers when the advertisement sets none: RFC 4271 §5.1.5 requires
/// the attribute on iBGP, and 100 is the value routers assume when it is missing.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Where traffic for a route goes: this node's address in the route's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// For IPv6 the link-local address is added when the peer is on the same link (RFC 2545 §3).
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

impl NextHop {
    pub fn family(&self) -> Family {
        match self {
            NextHop::V4(_) => Family::Ipv4Unicast,
            NextHop::V6 { .. } => Family::Ipv6Unicast,
        }
    }
}

/// The attributes of one of our routes, independent of the session: ORIGIN and AS_PATH follow
/// from the session ([`SessionEncoding`]), LOCAL_PREF is only sent to internal peers.
/// Communities are kept sorted and without duplicates, so equal sets compare equal and routes
/// sharing them pack into the same UPDATEs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAttributes {
    next_hop: NextHop,
    local_pref: Option<u32>,
    communities: Vec<u32>,
    large_communities: Vec<LargeCommunity>,
}

impl RouteAttributes {
    pub fn new(next_hop: NextHop) -> Self {
        Self {
            next_hop,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }

    pub fn with_local_pref(mut self, local_pref: Option<u32>) -> Self {
        self.local_pref = local_pref;
        self
    }

    /// Standard communities (RFC 1997), e.g. [`codec::NO_EXPORT`], [`codec::NO_ADVERTISE`].
    pub fn with_communities(mut self, communities: impl IntoIterator<Item = u32>) -> Self {
        self.communities = communities.into_iter().collect();
        self.communities.sort_unstable();
        self.communities.dedup();
        self
    }

    /// Large communities (RFC 8092).
    pub fn with_large_communities(
        mut self,
        communities: impl IntoIterator<Item = LargeCommunity>,
    ) -> Self {
        self.large_communities = communities.into_iter().collect();
        self.large_communities.sort_unstable();
        self.large_communities.dedup();
        self
    }

    pub fn next_hop(&self) -> NextHop {
        self.next_hop
    }

    pub fn local_pref(&self) -> Option<u32> {
        self.local_pref
    }

    pub fn communities(&self) -> &[u32] {
        &self.communities
    }

    pub fn large_communities(&self) -> &[LargeCommunity] {
        &self.large_communities
    }
}

/// What a session fixes about the UPDATEs sent on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEncoding {
    pub local_asn: u32,
    pub ebgp: bool,
    pub four_octet_as: bool,
    /// The families negotiated: routes of any other are not sent.
    pub families: Families,
}

impl SessionEncoding {
    pub fn new(local_asn: u32, negotiated: &Negotiated) -> Self {
        Self {
            local_asn,
            ebgp: negotiated.ebgp,
            four_octet_as: negotiated.four_octet_as,
            families: negotiated.families,
        }
    }
}

/// The path attributes a route carries on a session: ORIGIN IGP; AS_PATH our ASN for eBGP,
/// empty for iBGP; NEXT_HOP (IPv4) or the MP_REACH_NLRI next hop (IPv6); LOCAL_PREF on iBGP
/// only (it is meaningless across ASes and MetalLB drops it too); the communities.
pub fn path_attributes(route: &RouteAttributes, session: &SessionEncoding) -> PathAttributes {
    let (next_hop, mp_next_hop) = match route.next_hop {
        NextHop::V4(address) => (Some(address), None),
        NextHop::V6 { global, link_local } => (
            None,
            Some(MpNextHop {
                global: IpAddr::V6(global),
                link_local,
            }),
        ),
    };
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(if session.ebgp {
            vec![session.local_asn]
        } else {
            Vec::new()
        }),
        next_hop,
        mp_next_hop,
        local_pref: if session.ebgp {
            None
        } else {
            Some(route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
        },
        communities: route.communities.clone(),
        large_communities: route.large_communities.clone(),
    }
}

/// Why a desired route is not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsendable {
    /// The peer did not negotiate the route's family.
    FamilyNotNegotiated(Family),
    /// The next hop is not of the prefix's family (an IPv4 prefix with an IPv6 next hop).
    NextHopFamilyMismatch,
    /// The attribute set alone (too many communities) leaves no room for a prefix in 4096 bytes.
    AttributesTooLarge,
    /// The codec refused the message.
    Encoding(String),
}

impl fmt::Display for Unsendable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsendable::FamilyNotNegotiated(family) => {
                write!(f, "the peer did not negotiate {family}")
            }
            Unsendable::NextHopFamilyMismatch => {
                f.write_str("the next hop is not of the prefix's address family")
            }
            Unsendable::AttributesTooLarge => f.write_str(
                "the route's attributes (communities) do not fit in one 4096-byte UPDATE",
            ),
            Unsendable::Encoding(error) => write!(f, "cannot encode the UPDATE: {error}"),
        }
    }
}

/// Announcements packed: the UPDATEs, and the routes that could not go in any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packed {
    pub messages: Vec<Vec<u8>>,
    pub unsendable: Vec<(IpNet, Unsendable)>,
}

/// Packs announcements: routes with equal attributes share UPDATEs.
pub fn pack_announcements<'a>(
    routes: impl IntoIterator<Item = (IpNet, &'a RouteAttributes)>,
    session: &SessionEncoding,
) -> Packed {
    let mut packed = Packed::default();
    let mut groups: BTreeMap<&RouteAttributes, (Vec<Ipv4Net>, Vec<Ipv6Net>)> = BTreeMap::new();
    for (prefix, route) in routes {
        let family = Family::of(&prefix);
        if !session.families.contains(family) {
            packed
                .unsendable
                .push((prefix, Unsendable::FamilyNotNegotiated(family)));
            continue;
        }
        if route.next_hop.family() != family {
            packed
                .unsendable
                .push((prefix, Unsendable::NextHopFamilyMismatch));
            continue;
        }
        let group = groups.entry(route).or_default();
        match prefix {
            IpNet::V4(p) => group.0.push(p),
            IpNet::V6(p) => group.1.push(p),
        }
    }
    for (route, (v4, v6)) in groups {
        let attributes = path_attributes(route, session);
        let v4_parts = |chunk: &[Ipv4Net]| UpdateParts {
            attributes: Some(attributes.clone()),
            nlri: chunk.to_vec(),
            ..UpdateParts::default()
        };
        let v6_parts = |chunk: &[Ipv6Net]| UpdateParts {
            attributes: Some(attributes.clone()),
            mp_reach_v6: chunk.to_vec(),
            ..UpdateParts::default()
        };
        pack_family(&v4, IpNet::V4, v4_parts, 0, session, &mut packed);
        // MP_REACH_NLRI switches to a 2-octet length once it exceeds 255 bytes.
        pack_family(&v6, IpNet::V6, v6_parts, 1, session, &mut packed);
    }
    packed
}

/// Packs withdrawals: IPv4 in Withdrawn Routes, IPv6 in MP_UNREACH_NLRI.
pub fn pack_withdrawals(
    prefixes: impl IntoIterator<Item = IpNet>,
    session: &SessionEncoding,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for prefix in prefixes {
        match prefix {
            IpNet::V4(p) => v4.push(p),
            IpNet::V6(p) => v6.push(p),
        }
    }
    let mut packed = Packed::default();
    let v4_parts = |chunk: &[Ipv4Net]| UpdateParts {
        withdrawn: chunk.to_vec(),
        ..UpdateParts::default()
    };
    let v6_parts = |chunk: &[Ipv6Net]| UpdateParts {
        mp_unreach_v6: Some(chunk.to_vec()),
        ..UpdateParts::default()
    };
    pack_family(&v4, IpNet::V4, v4_parts, 0, session, &mut packed);
    pack_family(&v6, IpNet::V6, v6_parts, 1, session, &mut packed);
    match packed.unsendable.into_iter().next() {
        Some((_, reason)) => Err(EncodeError(reason.to_string())),
        None => Ok(packed.messages),
    }
}

/// The End-of-RIB marker of `family`: an empty UPDATE (IPv4) or one with an empty
/// MP_UNREACH_NLRI (IPv6).
pub fn end_of_rib(family: Family) -> Result<Vec<u8>, EncodeError> {
    let parts = match family {
        Family::Ipv4Unicast => UpdateParts::default(),
        Family::Ipv6Unicast => UpdateParts {
            mp_unreach_v6: Some(Vec::new()),
            ..UpdateParts::default()
        },
    };
    codec::encode_update(&parts, true)
}

/// Packs `prefixes` (all of one family, in order) into UPDATEs made by `parts`. `slack` is the
/// extra header octet the prefixes' attribute may need once long.
fn pack_family<P: Copy>(
    prefixes: &[P],
    to_net: impl Fn(P) -> IpNet,
    parts: impl Fn(&[P]) -> UpdateParts,
    slack: usize,
    session: &SessionEncoding,
    packed: &mut Packed,
) {
    let Some(&first) = prefixes.first() else {
        return;
    };
    let mark_all = |packed: &mut Packed, reason: Unsendable| {
        packed
            .unsendable
            .extend(prefixes.iter().map(|p| (to_net(*p), reason.clone())));
    };
    // The bytes of an UPDATE with these attributes, less its one prefix.
    let base = match codec::update_len(&parts(&[first]), session.four_octet_as) {
        Ok(len) => len.saturating_sub(codec::nlri_len(&to_net(first))),
        Err(error) => return mark_all(packed, Unsendable::Encoding(error.0)),
    };
    let budget = MAX_MESSAGE_LEN.saturating_sub(base + slack);
    let mut start = 0;
    while start < prefixes.len() {
        let mut used = 0;
        let mut end = start;
        while let Some(prefix) = prefixes.get(end) {
            let len = codec::nlri_len(&to_net(*prefix));
            if used + len > budget {
                break;
            }
            used += len;
            end += 1;
        }
        if end == start {
            // Not even one prefix fits next to these attributes.
            return mark_all(packed, Unsendable::AttributesTooLarge);
        }
        encode_splitting(&prefixes[start..end], &to_net, &parts, session, packed);
        start = end;
    }
}

/// Encodes one chunk, halving it while the codec refuses it (a safeguard: the budget keeps
/// every chunk within 4096 bytes).
fn encode_splitting<P: Copy>(
    chunk: &[P],
    to_net: &impl Fn(P) -> IpNet,
    parts: &impl Fn(&[P]) -> UpdateParts,
    session: &SessionEncoding,
    packed: &mut Packed,
) {
    match codec::encode_update(&parts(chunk), session.four_octet_as) {
        Ok(message) => packed.messages.push(message),
        Err(error) if chunk.len() <= 1 => packed.unsendable.extend(
            chunk
                .iter()
                .map(|p| (to_net(*p), Unsendable::Encoding(error.0.clone()))),
        ),
        Err(_) => {
            let (left, right) = chunk.split_at(chunk.len() / 2);
            encode_splitting(left, to_net, parts, session, packed);
            encode_splitting(right, to_net, parts, session, packed);
        }
    }
}

#[cfg(test)]
mod tests;
