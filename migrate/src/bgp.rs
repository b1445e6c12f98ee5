//! MetalLB's BGP configuration: `BGPPeer`, `BGPAdvertisement`, `Community`, `BFDProfile`, and the
//! BGP parts of the legacy ConfigMap.
//!
//! FerroLB has no BGP mode yet, so every field is reported as not carried over. FerroLB's BGP
//! resources are to use MetalLB's kinds and field names; once they exist, converting one is
//! copying its `spec` into FerroLB's type (with FerroLB's checks, and pool names mapped as
//! [`crate::convert`] maps them for L2Advertisements) in [`convert`], which then returns the
//! object instead of only reporting it.

use serde_json::Value;

use crate::report::{ObjectRef, Report};

/// Why none of it is carried over.
pub const NO_BGP_MODE: &str = "FerroLB has no BGP mode yet";

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

/// Converts one BGP resource; today that is reporting each of its fields.
pub fn convert(_kind: BgpKind, object: &ObjectRef, spec: &Value, report: &mut Report) {
    report.not_carried_fields(object, "spec", spec, NO_BGP_MODE);
}

/// The BGP sections of the legacy ConfigMap (`peers`, `bgp-communities`, `bfd-profiles`), each
/// under `base` (`data.config`).
pub fn convert_legacy_sections(
    object: &ObjectRef,
    base: &str,
    peers: &[Value],
    communities: &serde_json::Map<String, Value>,
    bfd_profiles: &[Value],
    report: &mut Report,
) {
    for (index, peer) in peers.iter().enumerate() {
        report.not_carried_fields(object, &format!("{base}.peers[{index}]"), peer, NO_BGP_MODE);
    }
    if !communities.is_empty() {
        let communities = Value::Object(communities.clone());
        report.not_carried_fields(
            object,
            &format!("{base}.bgp-communities"),
            &communities,
            NO_BGP_MODE,
        );
    }
    for (index, profile) in bfd_profiles.iter().enumerate() {
        report.not_carried_fields(
            object,
            &format!("{base}.bfd-profiles[{index}]"),
            profile,
            NO_BGP_MODE,
        );
    }
}

/// A protocol pool's `bgp-advertisements` (legacy ConfigMap, AddressPool resource), under
/// `field`.
pub fn convert_pool_advertisements(
    object: &ObjectRef,
    field: &str,
    advertisements: &[Value],
    report: &mut Report,
) {
    for (index, advertisement) in advertisements.iter().enumerate() {
        report.not_carried_fields(
            object,
            &format!("{field}[{index}]"),
            advertisement,
            NO_BGP_MODE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcome;
    use serde_json::json;

    #[test]
    fn every_field_of_a_peer_is_reported() {
        let object = ObjectRef::new("BGPPeer", Some("metallb-system"), "router");
        let mut report = Report::default();
        convert(
            BgpKind::Peer,
            &object,
            &json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1"}),
            &mut report,
        );
        assert_eq!(report.count(Outcome::NotCarriedOver), 3);
        assert_eq!(
            report.entries[2].to_string(),
            "BGPPeer metallb-system/router: spec.peerAddress \"203.0.113.1\": FerroLB has no BGP mode yet (not carried over)"
        );
    }
}
