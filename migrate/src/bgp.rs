//! MetalLB's BGP configuration: `BGPPeer`, `BGPAdvertisement`, `Community`, `BFDProfile`, and the
//! BGP parts of the legacy ConfigMap (`peers`, `bgp-communities`, `bfd-profiles`, a BGP pool's
//! `bgp-advertisements`).
//!
//! FerroLB's BGPPeer and BGPAdvertisement use MetalLB's field names, so most fields are copied
//! (and checked with FerroLB's own checks); [`crate::convert`] does it. FerroLB has no Community
//! or BFDProfile objects: a community alias is replaced by its value in each advertisement that
//! uses it, and a BFD profile's timers are written into each peer that names it.

use crate::metallb::Spelling;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpKind {
    Peer,
    Advertisement,
    Community,
    BfdProfile,
}

impl BgpKind {
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "BGPPeer" => BgpKind::Peer,
            "BGPAdvertisement" => BgpKind::Advertisement,
            "Community" => BgpKind::Community,
            "BFDProfile" => BgpKind::BfdProfile,
            _ => return None,
        })
    }
}

/// The BGP fields as the resources spell them, and as the legacy ConfigMap does.
const LEGACY_SPELLINGS: [(&str, &str); 23] = [
    ("myASN", "my-asn"),
    ("peerASN", "peer-asn"),
    ("peerAddress", "peer-address"),
    ("sourceAddress", "source-address"),
    ("peerPort", "peer-port"),
    ("holdTime", "hold-time"),
    ("keepaliveTime", "keepalive-time"),
    ("routerID", "router-id"),
    ("nodeSelectors", "node-selectors"),
    ("password", "password"),
    ("bfdProfile", "bfd-profile"),
    ("ebgpMultiHop", "ebgp-multihop"),
    ("receiveInterval", "receive-interval"),
    ("transmitInterval", "transmit-interval"),
    ("detectMultiplier", "detect-multiplier"),
    ("echoInterval", "echo-interval"),
    ("echoMode", "echo-mode"),
    ("passiveMode", "passive-mode"),
    ("minimumTtl", "minimum-ttl"),
    ("aggregationLength", "aggregation-length"),
    ("aggregationLengthV6", "aggregation-length-v6"),
    ("localPref", "localpref"),
    ("communities", "communities"),
];

/// A BGP field (named as the resources name it) in `spelling`.
pub fn spelled(spelling: Spelling, field: &str) -> String {
    match spelling {
        Spelling::Camel => field.to_owned(),
        Spelling::Kebab => LEGACY_SPELLINGS
            .iter()
            .find(|(camel, _)| *camel == field)
            .map_or_else(|| field.to_owned(), |(_, kebab)| (*kebab).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_fields_are_spelled_as_the_configmap_spells_them() {
        assert_eq!(spelled(Spelling::Kebab, "myASN"), "my-asn");
        assert_eq!(spelled(Spelling::Kebab, "ebgpMultiHop"), "ebgp-multihop");
        assert_eq!(spelled(Spelling::Kebab, "localPref"), "localpref");
        assert_eq!(spelled(Spelling::Camel, "localPref"), "localPref");
        assert_eq!(BgpKind::from_kind("BFDProfile"), Some(BgpKind::BfdProfile));
        assert_eq!(BgpKind::from_kind("Pod"), None);
    }
}
