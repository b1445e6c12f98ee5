//! MetalLB's BGP objects as FerroLB's: BGPPeers (from the resource and the legacy ConfigMap's
//! `peers`) and BGPAdvertisements (from the resource and a BGP pool's `bgp-advertisements`).
//! FerroLB has no Community or BFDProfile objects, so those are written into what uses them: a
//! community alias becomes its value in each advertisement, a profile's timers the `bfd` of each
//! peer that names it. Both are resolved at the end, as they may come after their users.
//!
//! Two choices decide what is left out. A peer is written only as MetalLB ran it: one in a VRF
//! would peer from the wrong routing table, so it is left out. An advertisement is written only
//! with every community it attaches: without a no-export or no-advertise the routes would reach
//! further than they did, so one whose community cannot be carried is left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use ferrolb_crds::bgp_advertisement::{Community, MAX_COMMUNITIES};
use ferrolb_crds::bgp_peer::{BgpDuration, DEFAULT_BFD_INTERVAL_MS, DEFAULT_DETECT_MULTIPLIER};
use ferrolb_crds::bgp_peer::{DEFAULT_PASSWORD_KEY, PasswordSecret};
use ferrolb_crds::permissions::SYSTEM_NAMESPACE;
use ferrolb_crds::{BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, BfdSettings};
use ferrolb_crds::{IPAddressPool, addresses::AddressSet};
use serde_json::Value;

use super::fields::{Kept, convert_selectors, convert_selectors_at, flag, metadata_lines};
use super::names::{cluster_names, fit, is_object_name};
use super::{Common, Converter, Part, PoolRef, Targets, name_line};
use crate::bgp::spelled;
use crate::metallb::{self, Metadata, Spelling, parse};
use crate::report::{Entry, ObjectRef, Outcome, Report, join, quote, quote_field};
use crate::schema::CrdSchema;

/// The longest transmitInterval × detectMultiplier FerroLB's schema allows, in ms.
const MAX_BFD_DETECTION_MS: u64 = 600_000;

/// Where a BGP object's fields are in the MetalLB object, and how they are spelled there.
struct Place {
    base: String,
    spelling: Spelling,
}

impl Place {
    fn new(base: &str, spelling: Spelling) -> Self {
        Self {
            base: base.to_owned(),
            spelling,
        }
    }

    /// The place of `field` (named as the resources name it).
    fn at(&self, field: &str) -> String {
        join(&self.base, &spelled(self.spelling, field))
    }
}

fn no_metadata() -> Kept {
    Kept {
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    }
}

#[derive(Debug, Clone)]
pub(super) struct PeerDraft {
    pub(super) common: Common,
    spec: BGPPeerSpec,
    bfd_profile: Option<ProfileRef>,
}

/// A peer's `bfdProfile`, and where its line goes.
#[derive(Debug, Clone)]
struct ProfileRef {
    field: String,
    name: String,
    at: usize,
}

#[derive(Debug, Clone)]
pub(super) struct BgpAdvertisementDraft {
    pub(super) common: Common,
    spec: BGPAdvertisementSpec,
    pool_refs: Vec<PoolRef>,
    pools_at: usize,
    peer_refs: Vec<PoolRef>,
    peers_at: usize,
    communities: Vec<PoolRef>,
    communities_at: usize,
    /// Which pool the advertisement made for a legacy BGP pool advertises.
    pub(super) for_pool: Option<usize>,
    /// Made for a legacy BGP pool that listed no advertisements: MetalLB's default one.
    default_for_pool: bool,
    pub(super) chose_pools: bool,
}

/// Community aliases: a Community object, or the legacy ConfigMap's `bgp-communities`.
#[derive(Debug, Clone)]
pub(super) struct AliasSet {
    source: ObjectRef,
    namespace: Option<String>,
    lines: Report,
    entries: Vec<AliasEntry>,
}

#[derive(Debug, Clone)]
struct AliasEntry {
    field: String,
    alias: String,
    value: String,
    parsed: Result<Community, String>,
    /// The BGPAdvertisements it is written into.
    used_by: BTreeSet<String>,
    duplicate_of: Option<ObjectRef>,
}

/// A BFDProfile, or an entry of the legacy ConfigMap's `bfd-profiles`.
#[derive(Debug, Clone)]
pub(super) struct BfdProfileDraft {
    source: ObjectRef,
    namespace: Option<String>,
    name: String,
    lines: Vec<ProfileLine>,
    /// The timers, if FerroLB accepts them all.
    settings: Option<BfdSettings>,
    /// The BGPPeers they are written into.
    used_by: BTreeSet<String>,
    /// Whether a converted peer names it (and so needs to hear why it is not carried over).
    named_by_a_peer: bool,
    duplicate_of: Option<ObjectRef>,
}

#[derive(Debug, Clone)]
enum ProfileLine {
    /// A timer written into each peer that uses the profile.
    Carried {
        field: String,
        value: u64,
    },
    Fixed(Entry),
}

/// The attributes of an advertisement that MetalLB's resource and its pools' entries share.
struct Attributes {
    aggregation_length: u8,
    aggregation_length_v6: u8,
    local_pref: Option<u32>,
    communities: Vec<PoolRef>,
    communities_at: usize,
}

/// A legacy peer's name: its address, made an object name ("2001:db8::1" → "2001-db8--1").
fn legacy_peer_name(address: Option<&str>) -> String {
    let mapped: String = address
        .unwrap_or_default()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = fit(
        mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric()),
        "",
    );
    if is_object_name(&name) {
        name
    } else {
        "peer".to_owned()
    }
}

fn duration(
    object: &ObjectRef,
    field: String,
    text: Option<&str>,
    lines: &mut Report,
) -> Result<Option<BgpDuration>, ()> {
    let Some(text) = text else { return Ok(None) };
    match BgpDuration::from_str(text) {
        Ok(value) if value.to_string() == text => {
            lines.push(object, field, Outcome::Converted, format!("{text:?}"));
            Ok(Some(value))
        }
        Ok(value) => {
            lines.push(
                object,
                field,
                Outcome::Changed,
                format!("{text:?} is written \"{value}\""),
            );
            Ok(Some(value))
        }
        Err(error) => {
            lines.push(
                object,
                field,
                Outcome::NotCarriedOver,
                format!("{error}, which MetalLB refuses too"),
            );
            Err(())
        }
    }
}

fn asn(object: &ObjectRef, field: String, value: u64, lines: &mut Report) -> Result<u32, ()> {
    match u32::try_from(value) {
        Ok(asn) => {
            lines.push(object, field, Outcome::Converted, asn.to_string());
            Ok(asn)
        }
        Err(_) => {
            lines.push(
                object,
                field,
                Outcome::NotCarriedOver,
                format!("{value} is larger than 4294967295, the largest AS number"),
            );
            Err(())
        }
    }
}

fn text_field(object: &ObjectRef, field: String, value: &Option<String>, lines: &mut Report) {
    if let Some(value) = value {
        lines.push(object, field, Outcome::Converted, format!("{value:?}"));
    }
}

impl Converter {
    pub(super) fn bgp_peer(
        &mut self,
        object: &ObjectRef,
        mut lines: Report,
        metadata: &Metadata,
        name: &str,
        spec: &Value,
    ) {
        let namespace = metadata.namespace.clone();
        let spec: metallb::BgpPeerSpec = match parse(spec) {
            Ok(spec) => spec,
            Err(error) => {
                super::fields::not_readable(object, &mut lines, "spec", &error);
                self.parts.push(Part::Lines(lines));
                self.lost_peers.insert((namespace, name.to_owned()));
                return;
            }
        };
        let kept = metadata_lines(object, metadata, &mut lines);
        let place = Place::new("spec", Spelling::Camel);
        self.peer(object, namespace, lines, &place, &spec, Some(name), kept);
    }

    /// A peer, from the resource (`name` is the object's) or the legacy ConfigMap (no name).
    #[allow(clippy::too_many_arguments)]
    fn peer(
        &mut self,
        object: &ObjectRef,
        namespace: Option<String>,
        mut lines: Report,
        place: &Place,
        spec: &metallb::BgpPeerSpec,
        name: Option<&str>,
        kept: Kept,
    ) {
        // A resource's line is about the object; a legacy peer's names its entry.
        let leave_out = |this: &mut Self, mut lines: Report, refused: Option<String>| {
            let (field, detail) = match (name, refused) {
                (Some(_), None) => (String::new(), "the whole peer is left out".to_owned()),
                (Some(_), Some(why)) => (
                    String::new(),
                    format!("FerroLB refuses it ({why}); the whole peer is left out"),
                ),
                (None, None) => (place.base.clone(), "is left out".to_owned()),
                (None, Some(why)) => (
                    place.base.clone(),
                    format!("is left out: FerroLB refuses it ({why})"),
                ),
            };
            lines.push(object, field, Outcome::NotCarriedOver, detail);
            this.parts.push(Part::Lines(lines));
            if let Some(name) = name {
                this.lost_peers.insert((namespace.clone(), name.to_owned()));
            }
        };
        // What decides that the session cannot be run as MetalLB ran it comes first, alone.
        if let Some(vrf) = spec.vrf.as_deref().filter(|v| !v.is_empty()) {
            lines.push(
                object,
                place.at("vrf"),
                Outcome::NotCarriedOver,
                format!("{vrf:?}: FerroLB has no VRF support, and without it the session would run over the default routing table instead of this VRF's"),
            );
            return leave_out(self, lines, None);
        }
        if let Some(interface) = &spec.interface {
            lines.push(
                object,
                place.at("interface"),
                Outcome::NotCarriedOver,
                format!("{interface:?}: FerroLB has no BGP unnumbered peering; it needs the router's peerAddress"),
            );
            return leave_out(self, lines, None);
        }
        let mut fatal = false;
        let my_asn = match spec.my_asn {
            Some(value) => asn(object, place.at("myASN"), value, &mut lines).ok(),
            None => {
                lines.push(
                    object,
                    place.at("myASN"),
                    Outcome::NotCarriedOver,
                    "is missing, which MetalLB refuses too",
                );
                None
            }
        };
        fatal |= my_asn.is_none();
        let peer_asn = match (spec.peer_asn, spec.dynamic_asn.as_deref()) {
            (Some(value), dynamic) => {
                let peer_asn = asn(object, place.at("peerASN"), value, &mut lines).ok();
                if let Some(dynamic) = dynamic {
                    lines.push(
                        object,
                        place.at("dynamicASN"),
                        Outcome::NotCarriedOver,
                        format!("{dynamic:?}: MetalLB refuses dynamicASN together with peerASN; peerASN is written"),
                    );
                }
                peer_asn
            }
            (None, Some("internal")) => {
                if let Some(my_asn) = my_asn {
                    lines.push(
                        object,
                        place.at("dynamicASN"),
                        Outcome::Changed,
                        format!("\"internal\" is written peerASN {my_asn}, the nodes' own AS: the router of an iBGP session is in it"),
                    );
                }
                my_asn
            }
            (None, Some("external")) => {
                lines.push(
                    object,
                    place.at("dynamicASN"),
                    Outcome::NotCarriedOver,
                    "\"external\": FerroLB needs the router's AS number in peerASN, where MetalLB accepted any AS but the nodes' own",
                );
                None
            }
            (None, Some(other)) => {
                lines.push(
                    object,
                    place.at("dynamicASN"),
                    Outcome::NotCarriedOver,
                    format!("{other:?} is neither \"internal\" nor \"external\", which MetalLB refuses too"),
                );
                None
            }
            (None, None) => {
                lines.push(
                    object,
                    place.at("peerASN"),
                    Outcome::NotCarriedOver,
                    "is missing, which MetalLB refuses too",
                );
                None
            }
        };
        fatal |= peer_asn.is_none();
        if spec.peer_address.is_none() {
            lines.push(
                object,
                place.at("peerAddress"),
                Outcome::NotCarriedOver,
                "is missing, which MetalLB refuses too",
            );
            fatal = true;
        }
        text_field(
            object,
            place.at("peerAddress"),
            &spec.peer_address,
            &mut lines,
        );
        let peer_port = match spec.peer_port {
            None => ferrolb_crds::bgp_peer::DEFAULT_PEER_PORT,
            Some(port) => match u16::try_from(port).ok().filter(|p| *p != 0) {
                Some(port) => {
                    lines.push(
                        object,
                        place.at("peerPort"),
                        Outcome::Converted,
                        port.to_string(),
                    );
                    port
                }
                None => {
                    lines.push(
                        object,
                        place.at("peerPort"),
                        Outcome::NotCarriedOver,
                        format!("{port} is not a TCP port, which MetalLB refuses too"),
                    );
                    fatal = true;
                    0
                }
            },
        };
        text_field(
            object,
            place.at("sourceAddress"),
            &spec.source_address,
            &mut lines,
        );
        let hold_time = duration(
            object,
            place.at("holdTime"),
            spec.hold_time.as_deref(),
            &mut lines,
        );
        let keepalive_time = duration(
            object,
            place.at("keepaliveTime"),
            spec.keepalive_time.as_deref(),
            &mut lines,
        );
        let connect_time = match spec.connect_time.as_deref().map(BgpDuration::from_str) {
            None => Ok(None),
            Some(Ok(value)) => {
                lines.push(
                    object,
                    place.at("connectTime"),
                    Outcome::Changed,
                    format!("\"{value}\": MetalLB retried at this interval; FerroLB backs off from 1s up to it"),
                );
                Ok(Some(value))
            }
            Some(Err(error)) => {
                lines.push(
                    object,
                    place.at("connectTime"),
                    Outcome::NotCarriedOver,
                    format!("{error}, which MetalLB refuses too"),
                );
                Err(())
            }
        };
        text_field(object, place.at("routerID"), &spec.router_id, &mut lines);
        let ebgp_multi_hop = flag(
            object,
            &place.at("ebgpMultiHop"),
            spec.ebgp_multi_hop,
            &mut lines,
        );
        let graceful_restart = flag(
            object,
            &place.at("enableGracefulRestart"),
            spec.enable_graceful_restart,
            &mut lines,
        );
        let schema = CrdSchema::bgp_peer();
        let node_selectors = convert_selectors_at(
            object,
            schema,
            "spec.nodeSelectors",
            &place.at("nodeSelectors"),
            &spec.node_selectors,
            &mut lines,
        );
        if !spec.node_selectors.is_empty() && node_selectors.is_empty() {
            lines.push(
                object,
                place.at("nodeSelectors"),
                Outcome::NotCarriedOver,
                "every node selector is lost, and without them every node would peer with the router",
            );
            fatal = true;
        }
        let password_secret = self.password_secret(object, place, spec, &namespace, &mut lines);
        let bfd_profile = spec
            .bfd_profile
            .clone()
            .filter(|p| !p.is_empty())
            .map(|profile| ProfileRef {
                field: place.at("bfdProfile"),
                name: profile,
                at: lines.entries.len(),
            });
        for (field, mp) in [
            ("disableMP", spec.disable_mp),
            ("dualStackAddressFamily", spec.dual_stack_address_family),
        ] {
            if let Some(mp) = mp {
                lines.push(
                    object,
                    place.at(field),
                    Outcome::NotCarriedOver,
                    format!("{mp}: FerroLB has no such setting; a session carries the address families (IPv4, IPv6 unicast) both sides offer (RFC 4760)"),
                );
            }
        }
        if spec.vrf.is_some() {
            lines.push(
                object,
                place.at("vrf"),
                Outcome::Converted,
                "\"\": the default routing table, which FerroLB uses",
            );
        }
        let unknown_reason = match name {
            Some(_) => "FerroLB's BGPPeer has no such field",
            None => "not a field of a MetalLB peer",
        };
        for (field, value) in &spec.unknown {
            lines.push(
                object,
                join(&place.base, field),
                Outcome::NotCarriedOver,
                format!("{}: {unknown_reason}", quote_field(field, value)),
            );
        }
        let (
            Some(my_asn),
            Some(peer_asn),
            Some(peer_address),
            Ok(hold),
            Ok(keepalive),
            Ok(connect),
        ) = (
            my_asn,
            peer_asn,
            spec.peer_address.clone(),
            hold_time,
            keepalive_time,
            connect_time,
        )
        else {
            return leave_out(self, lines, None);
        };
        if fatal {
            return leave_out(self, lines, None);
        }
        let peer_spec = BGPPeerSpec {
            my_asn,
            peer_asn,
            peer_address: peer_address.clone(),
            peer_port,
            source_address: spec.source_address.clone(),
            hold_time: hold.unwrap_or(BgpDuration(ferrolb_crds::bgp_peer::DEFAULT_HOLD_TIME)),
            keepalive_time: keepalive,
            connect_time: connect,
            ebgp_multi_hop: ebgp_multi_hop.unwrap_or(false),
            router_id: spec.router_id.clone(),
            password_secret,
            node_selectors,
            bfd: None,
            enable_graceful_restart: graceful_restart.unwrap_or(false),
        };
        if let Err(errors) = peer_spec.settings() {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return leave_out(self, lines, Some(errors.join("; ")));
        }
        let (metallb_name, wanted, name_field) = match name {
            Some(name) => (name.to_owned(), name.to_owned(), "metadata.name".to_owned()),
            None => {
                let wanted = legacy_peer_name(Some(&peer_address));
                (wanted.clone(), wanted, place.base.clone())
            }
        };
        let mut common = Common::new(
            object,
            namespace,
            &metallb_name,
            &wanted,
            &name_field,
            kept,
            lines,
        );
        common.generated = name.is_none();
        self.parts.push(Part::Peer(self.peers.len()));
        self.peers.push(PeerDraft {
            common,
            spec: peer_spec,
            bfd_profile,
        });
    }

    /// `password` and `passwordSecret`: FerroLB reads passwords only from Secrets in its own
    /// namespace, and a password is never shown.
    fn password_secret(
        &self,
        object: &ObjectRef,
        place: &Place,
        spec: &metallb::BgpPeerSpec,
        namespace: &Option<String>,
        lines: &mut Report,
    ) -> Option<PasswordSecret> {
        if spec.password.as_deref().is_some_and(|p| !p.is_empty()) {
            lines.push(
                object,
                place.at("password"),
                Outcome::NotCarriedOver,
                format!("(redacted): FerroLB takes the password only from a Secret: put it in a Secret in {SYSTEM_NAMESPACE} (kubectl -n {SYSTEM_NAMESPACE} create secret generic NAME --from-literal={DEFAULT_PASSWORD_KEY}=…) and set passwordSecret.name to NAME; until then the session runs without TCP MD5, which a router that expects it refuses"),
            );
        }
        let reference = spec.password_secret.as_ref()?;
        let field = place.at("passwordSecret");
        for (key, value) in &reference.unknown {
            lines.push(
                object,
                join(&field, key),
                Outcome::NotCarriedOver,
                format!(
                    "{}: not a field of a Secret reference",
                    quote_field(key, value)
                ),
            );
        }
        let Some(name) = reference.name.clone().filter(|name| is_object_name(name)) else {
            lines.push(
                object,
                join(&field, "name"),
                Outcome::NotCarriedOver,
                format!(
                    "{}: no Secret has that name; the peer is written without a password",
                    quote(&Value::from(reference.name.clone()))
                ),
            );
            return None;
        };
        let secret_namespace = reference
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| namespace.clone())
            .unwrap_or_else(|| "metallb-system".to_owned());
        if secret_namespace == SYSTEM_NAMESPACE {
            lines.push(
                object,
                field,
                Outcome::Converted,
                format!("{name:?}, key {DEFAULT_PASSWORD_KEY:?}"),
            );
        } else {
            lines.push(
                object,
                field,
                Outcome::Changed,
                format!("{name:?} is written {{name: {name}, key: {DEFAULT_PASSWORD_KEY}}}; FerroLB reads it from {SYSTEM_NAMESPACE}, so copy Secret {secret_namespace}/{name} there"),
            );
        }
        Some(PasswordSecret {
            name,
            key: DEFAULT_PASSWORD_KEY.to_owned(),
        })
    }

    pub(super) fn bgp_advertisement(
        &mut self,
        object: &ObjectRef,
        mut lines: Report,
        metadata: &Metadata,
        name: &str,
        spec: &Value,
    ) {
        let spec: metallb::BgpAdvertisementSpec = match parse(spec) {
            Ok(spec) => spec,
            Err(error) => {
                super::fields::not_readable(object, &mut lines, "spec", &error);
                self.parts.push(Part::Lines(lines));
                return;
            }
        };
        let kept = metadata_lines(object, metadata, &mut lines);
        let schema = CrdSchema::bgp_advertisement();
        let refs = |field: &str, names: &[String]| -> Vec<PoolRef> {
            names
                .iter()
                .enumerate()
                .map(|(index, name)| PoolRef {
                    field: format!("{field}[{index}]"),
                    name: name.clone(),
                })
                .collect()
        };
        let pools_at = lines.entries.len();
        let pool_refs = refs("spec.ipAddressPools", &spec.ip_address_pools);
        let pool_selectors = convert_selectors(
            object,
            schema,
            "spec.ipAddressPoolSelectors",
            &spec.ip_address_pool_selectors,
            &mut lines,
        );
        let node_selectors = convert_selectors(
            object,
            schema,
            "spec.nodeSelectors",
            &spec.node_selectors,
            &mut lines,
        );
        let peers_at = lines.entries.len();
        let peer_refs = refs("spec.peers", &spec.peers);
        let place = Place::new("spec", Spelling::Camel);
        let attributes = attributes(object, &place, &spec, &mut lines);
        for (field, value) in &spec.unknown {
            lines.push(
                object,
                join("spec", field),
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB's BGPAdvertisement has no such field",
                    quote_field(field, value)
                ),
            );
        }
        let lost = [
            (!spec.node_selectors.is_empty() && node_selectors.is_empty())
                .then_some("every node selector"),
            (!spec.ip_address_pool_selectors.is_empty()
                && spec.ip_address_pools.is_empty()
                && pool_selectors.is_empty())
            .then_some("every pool selector"),
        ];
        if let Some(what) = lost.into_iter().flatten().next() {
            lines.push(
                object,
                "",
                Outcome::NotCarriedOver,
                format!(
                    "{what} is lost, and without them the advertisement would reach further than in MetalLB; the whole advertisement is left out"
                ),
            );
            self.parts.push(Part::Lines(lines));
            return;
        }
        let Some(attributes) = attributes else {
            lines.push(
                object,
                "",
                Outcome::NotCarriedOver,
                "the routes would differ from MetalLB's; the whole advertisement is left out",
            );
            self.parts.push(Part::Lines(lines));
            return;
        };
        let common = Common::new(
            object,
            metadata.namespace.clone(),
            name,
            name,
            "metadata.name",
            kept,
            lines,
        );
        self.parts
            .push(Part::BgpAdvertisement(self.bgp_advertisements.len()));
        self.bgp_advertisements.push(BgpAdvertisementDraft {
            common,
            spec: BGPAdvertisementSpec {
                ip_address_pools: Vec::new(),
                ip_address_pool_selectors: pool_selectors,
                node_selectors,
                peers: Vec::new(),
                aggregation_length: attributes.aggregation_length,
                aggregation_length_v6: attributes.aggregation_length_v6,
                local_pref: attributes.local_pref,
                communities: Vec::new(),
            },
            pool_refs,
            pools_at,
            peer_refs,
            peers_at,
            communities: attributes.communities,
            communities_at: attributes.communities_at,
            for_pool: None,
            default_for_pool: false,
            chose_pools: !spec.ip_address_pools.is_empty()
                || !spec.ip_address_pool_selectors.is_empty(),
        });
    }

    /// A legacy BGP pool's `bgp-advertisements` (or AddressPool's `bgpAdvertisements`), each
    /// advertising that pool; none listed is MetalLB's one default advertisement.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pool_bgp_advertisements(
        &mut self,
        object: &ObjectRef,
        namespace: Option<String>,
        pool_index: usize,
        protocol_field: &str,
        field: &str,
        spelling: Spelling,
        entries: &[Value],
    ) {
        let pool = &self.pools[pool_index].common;
        let (metallb_name, wanted) = (pool.metallb_name.clone(), pool.wanted.clone());
        let push = |this: &mut Self,
                    name_field: &str,
                    lines: Report,
                    attributes: Attributes,
                    default_for_pool: bool| {
            let mut common = Common::new(
                object,
                namespace.clone(),
                &metallb_name,
                &wanted,
                name_field,
                no_metadata(),
                lines,
            );
            common.generated = true;
            this.parts
                .push(Part::BgpAdvertisement(this.bgp_advertisements.len()));
            this.bgp_advertisements.push(BgpAdvertisementDraft {
                common,
                spec: BGPAdvertisementSpec {
                    aggregation_length: attributes.aggregation_length,
                    aggregation_length_v6: attributes.aggregation_length_v6,
                    local_pref: attributes.local_pref,
                    ..BGPAdvertisementSpec::default()
                },
                pool_refs: Vec::new(),
                pools_at: 0,
                peer_refs: Vec::new(),
                peers_at: 0,
                communities: attributes.communities,
                communities_at: attributes.communities_at,
                for_pool: Some(pool_index),
                default_for_pool,
                chose_pools: true,
            });
        };
        if entries.is_empty() {
            let defaults = Attributes {
                aggregation_length: 32,
                aggregation_length_v6: 128,
                local_pref: None,
                communities: Vec::new(),
                communities_at: 0,
            };
            push(self, protocol_field, Report::default(), defaults, true);
            return;
        }
        for (index, entry) in entries.iter().enumerate() {
            let entry_field = format!("{field}[{index}]");
            let mut lines = Report::default();
            let spec = match metallb::BgpAdvertisementSpec::from_pool_entry(entry, spelling) {
                Ok(spec) => spec,
                Err(error) => {
                    lines.push(
                        object,
                        entry_field,
                        Outcome::NotCarriedOver,
                        format!("does not read as MetalLB's ({error}); it is left out"),
                    );
                    self.parts.push(Part::Lines(lines));
                    continue;
                }
            };
            let place = Place::new(&entry_field, spelling);
            let attributes = attributes(object, &place, &spec, &mut lines);
            for (key, value) in &spec.unknown {
                lines.push(
                    object,
                    join(&entry_field, key),
                    Outcome::NotCarriedOver,
                    format!(
                        "{}: not a field of a MetalLB BGP advertisement",
                        quote_field(key, value)
                    ),
                );
            }
            match attributes {
                Some(attributes) => push(self, &entry_field, lines, attributes, false),
                None => {
                    lines.push(
                        object,
                        entry_field,
                        Outcome::NotCarriedOver,
                        "is left out: the routes would differ from MetalLB's",
                    );
                    self.parts.push(Part::Lines(lines));
                }
            }
        }
    }

    pub(super) fn community(
        &mut self,
        object: &ObjectRef,
        mut lines: Report,
        metadata: &Metadata,
        spec: &Value,
    ) {
        let spec: metallb::CommunitySpec = match parse(spec) {
            Ok(spec) => spec,
            Err(error) => {
                super::fields::not_readable(object, &mut lines, "spec", &error);
                self.parts.push(Part::Lines(lines));
                return;
            }
        };
        let mut entries = Vec::new();
        for (index, alias) in spec.communities.iter().enumerate() {
            let field = format!("spec.communities[{index}]");
            for (key, value) in &alias.unknown {
                lines.push(
                    object,
                    join(&field, key),
                    Outcome::NotCarriedOver,
                    format!(
                        "{}: not a field of a MetalLB community alias",
                        quote_field(key, value)
                    ),
                );
            }
            let (Some(name), Some(value)) = (&alias.name, &alias.value) else {
                lines.push(
                    object,
                    field,
                    Outcome::NotCarriedOver,
                    "needs both name and value, which MetalLB requires too; no advertisement can use it",
                );
                continue;
            };
            entries.push(AliasEntry::new(field, name, value));
        }
        for (field, value) in &spec.unknown {
            lines.push(
                object,
                join("spec", field),
                Outcome::NotCarriedOver,
                format!(
                    "{}: not a field of a MetalLB Community",
                    quote_field(field, value)
                ),
            );
        }
        if entries.is_empty() && lines.entries.is_empty() {
            lines.push(object, "", Outcome::Note, "defines no communities");
        }
        self.parts.push(Part::Aliases(self.aliases.len()));
        self.aliases.push(AliasSet {
            source: object.clone(),
            namespace: metadata.namespace.clone(),
            lines,
            entries,
        });
    }

    pub(super) fn bfd_profile(
        &mut self,
        object: &ObjectRef,
        mut lines: Report,
        metadata: &Metadata,
        name: &str,
        spec: &Value,
    ) {
        let spec: metallb::BfdProfileSpec = match parse(spec) {
            Ok(spec) => spec,
            Err(error) => {
                super::fields::not_readable(object, &mut lines, "spec", &error);
                self.parts.push(Part::Lines(lines));
                return;
            }
        };
        self.parts.push(Part::Lines(lines));
        let place = Place::new("spec", Spelling::Camel);
        let draft = BfdProfileDraft::new(object, metadata.namespace.clone(), name, &place, &spec);
        self.parts.push(Part::BfdProfile(self.bfd_profiles.len()));
        self.bfd_profiles.push(draft);
    }

    /// The legacy ConfigMap's `peers`, `bgp-communities` and `bfd-profiles`, under `base`.
    pub(super) fn legacy_bgp(
        &mut self,
        object: &ObjectRef,
        namespace: Option<String>,
        base: &str,
        config: &metallb::LegacyConfig,
    ) {
        for (index, value) in config.peers.iter().enumerate() {
            let field = format!("{base}.peers[{index}]");
            match metallb::BgpPeerSpec::from_legacy(value) {
                Ok(spec) => {
                    let place = Place::new(&field, Spelling::Kebab);
                    let lines = Report::default();
                    self.peer(
                        object,
                        namespace.clone(),
                        lines,
                        &place,
                        &spec,
                        None,
                        no_metadata(),
                    );
                }
                Err(error) => {
                    let mut lines = Report::default();
                    lines.push(
                        object,
                        field,
                        Outcome::NotCarriedOver,
                        format!("does not read as MetalLB's ({error}); it is left out"),
                    );
                    self.parts.push(Part::Lines(lines));
                }
            }
        }
        if !config.bgp_communities.is_empty() {
            let mut lines = Report::default();
            let mut entries = Vec::new();
            for (alias, value) in &config.bgp_communities {
                let field = format!("{base}.bgp-communities.{alias}");
                match value.as_str() {
                    Some(text) => entries.push(AliasEntry::new(field, alias, text)),
                    None => lines.push(
                        object,
                        field,
                        Outcome::NotCarriedOver,
                        format!(
                            "{} is not text such as \"65535:65281\", which MetalLB refuses too",
                            quote(value)
                        ),
                    ),
                }
            }
            self.parts.push(Part::Aliases(self.aliases.len()));
            self.aliases.push(AliasSet {
                source: object.clone(),
                namespace: namespace.clone(),
                lines,
                entries,
            });
        }
        for (index, value) in config.bfd_profiles.iter().enumerate() {
            let field = format!("{base}.bfd-profiles[{index}]");
            let mut lines = Report::default();
            match metallb::BfdProfileSpec::from_legacy(value) {
                Ok((Some(name), spec)) if !name.is_empty() => {
                    let place = Place::new(&field, Spelling::Kebab);
                    let draft =
                        BfdProfileDraft::new(object, namespace.clone(), &name, &place, &spec);
                    self.parts.push(Part::BfdProfile(self.bfd_profiles.len()));
                    self.bfd_profiles.push(draft);
                }
                Ok(_) => {
                    lines.push(
                        object,
                        join(&field, "name"),
                        Outcome::NotCarriedOver,
                        "is missing, which MetalLB refuses too; no peer can use the profile",
                    );
                    self.parts.push(Part::Lines(lines));
                }
                Err(error) => {
                    lines.push(
                        object,
                        field,
                        Outcome::NotCarriedOver,
                        format!("does not read as MetalLB's: {error}; no peer can use the profile"),
                    );
                    self.parts.push(Part::Lines(lines));
                }
            }
        }
    }

    /// The same BGPPeer or BGPAdvertisement twice: the first is converted. An advertisement
    /// made for a pool that is dropped goes with it.
    pub(super) fn drop_duplicate_bgp_objects(&mut self) {
        let mut seen: HashMap<(Option<String>, String), ObjectRef> = HashMap::new();
        for common in self.peers.iter_mut().map(|p| &mut p.common) {
            drop_if_seen(&mut seen, common);
        }
        let mut seen: HashMap<(Option<String>, String), ObjectRef> = HashMap::new();
        for index in 0..self.bgp_advertisements.len() {
            let for_dropped_pool = self.bgp_advertisements[index]
                .for_pool
                .is_some_and(|pool| self.pools[pool].common.dropped);
            let common = &mut self.bgp_advertisements[index].common;
            if for_dropped_pool {
                common.dropped = true;
                continue;
            }
            drop_if_seen(&mut seen, common);
        }
        let mut seen: HashMap<(Option<String>, String), ObjectRef> = HashMap::new();
        for profile in &mut self.bfd_profiles {
            let key = (profile.namespace.clone(), profile.name.clone());
            match seen.get(&key) {
                Some(first) => profile.duplicate_of = Some(first.clone()),
                None => {
                    seen.insert(key, profile.source.clone());
                }
            }
        }
    }

    pub(super) fn name_peers(&mut self) {
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|&i| !self.peers[i].common.dropped)
            .collect();
        let wanted: Vec<(Option<String>, String)> = live
            .iter()
            .map(|&i| {
                let c = &self.peers[i].common;
                (c.namespace.clone(), c.wanted.clone())
            })
            .collect();
        let names = cluster_names(&wanted);
        for (&i, name) in live.iter().zip(names) {
            let others: Vec<String> = live
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| &self.peers[j].common)
                .filter(|c| c.wanted == self.peers[i].common.wanted)
                .filter_map(|c| c.namespace.clone())
                .filter(|ns| Some(ns) != self.peers[i].common.namespace.as_ref())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let common = &mut self.peers[i].common;
            common.name = name;
            common.name_line = Some(if common.generated {
                let renamed = if common.name == common.wanted {
                    String::new()
                } else {
                    format!(" (another BGPPeer is called {:?})", common.wanted)
                };
                Entry {
                    object: common.source.clone(),
                    field: common.name_field.clone(),
                    detail: format!(
                        "becomes BGPPeer {:?}, named after its address{renamed}",
                        common.name
                    ),
                    outcome: Outcome::Converted,
                }
            } else {
                name_line(common, "BGPPeer", &others)
            });
        }
    }

    pub(super) fn name_bgp_advertisements(&mut self) {
        let (generated, written): (Vec<usize>, Vec<usize>) = (0..self.bgp_advertisements.len())
            .filter(|&i| !self.bgp_advertisements[i].common.dropped)
            .partition(|&i| self.bgp_advertisements[i].common.generated);
        let wanted: Vec<(Option<String>, String)> = written
            .iter()
            .map(|&i| {
                let c = &self.bgp_advertisements[i].common;
                (c.namespace.clone(), c.wanted.clone())
            })
            .collect();
        let names = cluster_names(&wanted);
        let mut taken: BTreeSet<String> = names.iter().cloned().collect();
        for (&i, name) in written.iter().zip(names) {
            let others: Vec<String> = written
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| &self.bgp_advertisements[j].common)
                .filter(|c| c.wanted == self.bgp_advertisements[i].common.wanted)
                .filter_map(|c| c.namespace.clone())
                .filter(|ns| Some(ns) != self.bgp_advertisements[i].common.namespace.as_ref())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let common = &mut self.bgp_advertisements[i].common;
            common.name = name;
            common.name_line = Some(name_line(common, "BGPAdvertisement", &others));
        }
        // An advertisement made for a pool is called after it, and yields to the user's own.
        for i in generated {
            let Some(pool) = self.bgp_advertisements[i].for_pool else {
                continue;
            };
            let pool = self.pools[pool].common.name.clone();
            let mut name = pool.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = fit(&pool, &format!("-{n}"));
                n += 1;
            }
            taken.insert(name.clone());
            let draft = &mut self.bgp_advertisements[i];
            let detail = if draft.default_for_pool {
                format!(
                    "\"bgp\" becomes BGPAdvertisement {name:?}, advertising IPAddressPool {pool:?} from every node to every BGPPeer with MetalLB's defaults, as MetalLB did for a pool that lists no advertisements"
                )
            } else {
                format!(
                    "becomes BGPAdvertisement {name:?}, advertising IPAddressPool {pool:?} from every node to every BGPPeer, as MetalLB did"
                )
            };
            let common = &mut draft.common;
            common.name_line = Some(Entry {
                object: common.source.clone(),
                field: common.name_field.clone(),
                detail,
                outcome: Outcome::Converted,
            });
            common.name = name;
        }
    }

    /// An advertisement's pools and peers, by their FerroLB names.
    pub(super) fn resolve_bgp_refs(&mut self) {
        let pools = self.pool_targets();
        let mut peers = Targets::new("BGPPeer", "peer", self.lost_peers.clone());
        for peer in self.peers.iter().filter(|p| !p.common.dropped) {
            peers.add(&peer.common);
        }
        let schema = CrdSchema::bgp_advertisement();
        for index in 0..self.bgp_advertisements.len() {
            if self.bgp_advertisements[index].common.dropped {
                continue;
            }
            if let Some(pool) = self.bgp_advertisements[index].for_pool {
                let name = self.pools[pool].common.name.clone();
                self.bgp_advertisements[index].spec.ip_address_pools = vec![name];
                continue;
            }
            let draft = &mut self.bgp_advertisements[index];
            let c = &mut draft.common;
            let pool_names = pools.resolve(
                c,
                &draft.pool_refs,
                draft.pools_at,
                schema,
                "spec.ipAddressPools",
                "BGPAdvertisements",
            );
            let peer_names = peers.resolve(
                c,
                &draft.peer_refs,
                draft.peers_at,
                schema,
                "spec.peers",
                "BGPAdvertisements",
            );
            let at = c.lines.entries.len();
            if !draft.pool_refs.is_empty()
                && pool_names.is_empty()
                && draft.spec.ip_address_pool_selectors.is_empty()
            {
                c.dropped = true;
                c.push_ref(
                    at,
                    "",
                    Outcome::NotCarriedOver,
                    "every pool it names is lost, and without them it would advertise every pool; the whole advertisement is left out",
                );
            } else if !draft.peer_refs.is_empty() && peer_names.is_empty() {
                c.dropped = true;
                c.push_ref(
                    at,
                    "",
                    Outcome::NotCarriedOver,
                    "every peer it names is lost, and without them it would advertise to every peer; the whole advertisement is left out",
                );
            }
            draft.spec.ip_address_pools = pool_names;
            draft.spec.peers = peer_names;
        }
    }

    /// Each peer's `bfdProfile` becomes its `bfd`. A peer whose profile is not carried over is
    /// kept without BFD: its session works, only failures are noticed later.
    pub(super) fn resolve_bfd_profiles(&mut self) {
        let mut by_name: HashMap<(Option<String>, String), usize> = HashMap::new();
        for (index, profile) in self.bfd_profiles.iter().enumerate() {
            if profile.duplicate_of.is_none() {
                by_name.insert((profile.namespace.clone(), profile.name.clone()), index);
            }
        }
        for peer in self.peers.iter_mut().filter(|p| !p.common.dropped) {
            let Some(reference) = peer.bfd_profile.clone() else {
                continue;
            };
            let without_bfd = format!(
                "the peer is written without BFD, so the router notices a failed node only when the hold time ({}) runs out; set its bfd by hand",
                peer.spec.hold_time
            );
            let key = (peer.common.namespace.clone(), reference.name.clone());
            let Some(&index) = by_name.get(&key) else {
                peer.common.push_ref(
                    reference.at,
                    reference.field,
                    Outcome::NotCarriedOver,
                    format!(
                        "{:?} names no BFDProfile in the input; {without_bfd}",
                        reference.name
                    ),
                );
                continue;
            };
            let profile = &mut self.bfd_profiles[index];
            let with_bfd = BGPPeerSpec {
                bfd: profile.settings,
                ..peer.spec.clone()
            };
            match (profile.settings, with_bfd.settings()) {
                (Some(bfd), Ok(_)) => {
                    peer.common.push_ref(
                        reference.at,
                        reference.field,
                        Outcome::Changed,
                        format!(
                            "{:?} is written as bfd {{receiveInterval: {}, transmitInterval: {}, detectMultiplier: {}}} from {}: FerroLB has no BFDProfile objects",
                            reference.name,
                            bfd.receive_interval,
                            bfd.transmit_interval,
                            bfd.detect_multiplier,
                            profile.source
                        ),
                    );
                    peer.spec = with_bfd;
                    profile.used_by.insert(peer.common.name.clone());
                }
                _ => peer.common.push_ref(
                    reference.at,
                    reference.field,
                    Outcome::NotCarriedOver,
                    format!(
                        "{:?}: {} cannot be carried over (see its lines); {without_bfd}",
                        reference.name, profile.source
                    ),
                ),
            }
        }
        // A profile nobody could use is still reported as used, to say why it is not carried.
        for peer in self.peers.iter().filter(|p| !p.common.dropped) {
            if let Some(reference) = &peer.bfd_profile {
                let key = (peer.common.namespace.clone(), reference.name.clone());
                if let Some(&index) = by_name.get(&key) {
                    self.bfd_profiles[index].named_by_a_peer = true;
                }
            }
        }
    }

    /// Each advertisement's communities, aliases replaced by their values. An advertisement
    /// that would lose one is left out.
    pub(super) fn resolve_communities(&mut self) {
        let mut by_alias: HashMap<(Option<String>, String), (usize, usize)> = HashMap::new();
        for set_index in 0..self.aliases.len() {
            for entry_index in 0..self.aliases[set_index].entries.len() {
                let set = &self.aliases[set_index];
                let key = (
                    set.namespace.clone(),
                    set.entries[entry_index].alias.clone(),
                );
                match by_alias.get(&key) {
                    Some(&(first, _)) => {
                        let first = self.aliases[first].source.clone();
                        self.aliases[set_index].entries[entry_index].duplicate_of = Some(first);
                    }
                    None => {
                        by_alias.insert(key, (set_index, entry_index));
                    }
                }
            }
        }
        let max = MAX_COMMUNITIES as usize;
        for draft in self
            .bgp_advertisements
            .iter_mut()
            .filter(|a| !a.common.dropped)
        {
            let at = draft.communities_at;
            let mut communities: Vec<Community> = Vec::new();
            let mut used = Vec::new();
            let mut lost = false;
            for reference in &draft.communities {
                let text = &reference.name;
                let key = (draft.common.namespace.clone(), text.clone());
                let resolved = match by_alias.get(&key) {
                    Some(&(set_index, entry_index)) => {
                        let set = &self.aliases[set_index];
                        let entry = &set.entries[entry_index];
                        match &entry.parsed {
                            Ok(community) => {
                                used.push((set_index, entry_index));
                                Ok((
                                    *community,
                                    Outcome::Changed,
                                    format!(
                                        "{text:?} is an alias ({}): written \"{community}\"",
                                        set.source
                                    ),
                                ))
                            }
                            Err(_) => Err(format!(
                                "{text:?} is an alias whose value cannot be carried over (see the lines of {})",
                                set.source
                            )),
                        }
                    }
                    None => match Community::from_str(text) {
                        Ok(community) if community.to_string() == *text => {
                            Ok((community, Outcome::Converted, format!("{text:?}")))
                        }
                        Ok(community) => Ok((
                            community,
                            Outcome::Changed,
                            format!("{text:?} is written \"{community}\", its well-known name"),
                        )),
                        Err(error) => Err(format!(
                            "names no Community alias in the input, and {error}"
                        )),
                    },
                };
                match resolved {
                    Err(why) => {
                        lost = true;
                        draft.common.push_ref(
                            at,
                            reference.field.clone(),
                            Outcome::NotCarriedOver,
                            why,
                        );
                    }
                    Ok((community, _, detail)) if communities.contains(&community) => {
                        draft.common.push_ref(
                            at,
                            reference.field.clone(),
                            Outcome::Changed,
                            format!("{detail}; listed twice, written once"),
                        );
                    }
                    Ok((_, _, detail)) if communities.len() >= max => {
                        lost = true;
                        draft.common.push_ref(
                            at,
                            reference.field.clone(),
                            Outcome::NotCarriedOver,
                            format!("{detail}; FerroLB attaches at most {max} communities"),
                        );
                    }
                    Ok((community, outcome, detail)) => {
                        draft
                            .common
                            .push_ref(at, reference.field.clone(), outcome, detail);
                        communities.push(community);
                    }
                }
            }
            if lost {
                draft.common.dropped = true;
                let end = draft.common.lines.entries.len();
                let why = "a community it attaches cannot be carried over, and without it the routes could travel further than in MetalLB (a lost no-export or no-advertise lets them leave the AS)";
                // A pool's advertisement is one entry of the ConfigMap or AddressPool: name it.
                let (field, detail) = if draft.common.generated {
                    (
                        draft.common.name_field.clone(),
                        format!("is left out: {why}"),
                    )
                } else {
                    (
                        String::new(),
                        format!("{why}; the whole advertisement is left out"),
                    )
                };
                draft
                    .common
                    .push_ref(end, field, Outcome::NotCarriedOver, detail);
                continue;
            }
            draft.spec.communities = communities;
            for (set_index, entry_index) in used {
                self.aliases[set_index].entries[entry_index]
                    .used_by
                    .insert(draft.common.name.clone());
            }
        }
    }

    pub(super) fn build_peers(&mut self) -> Vec<(usize, BGPPeer)> {
        let schema = CrdSchema::bgp_peer();
        let mut built = Vec::new();
        for (index, draft) in self.peers.iter_mut().enumerate() {
            if draft.common.dropped {
                continue;
            }
            let mut peer = BGPPeer::new(&draft.common.name, draft.spec.clone());
            peer.metadata = draft.common.object_meta();
            let mut problems = schema.check(
                "spec",
                &serde_json::to_value(&peer.spec).unwrap_or_default(),
            );
            if let Err(errors) = peer.spec.settings() {
                problems.extend(errors.iter().map(ToString::to_string));
            }
            if let Some(why) = draft.common.refused(&problems) {
                draft
                    .common
                    .lines
                    .push(&draft.common.source, "", Outcome::NotCarriedOver, why);
                draft.common.dropped = true;
                continue;
            }
            built.push((index, peer));
        }
        built
    }

    pub(super) fn build_bgp_advertisements(&mut self) -> Vec<(usize, BGPAdvertisement)> {
        let schema = CrdSchema::bgp_advertisement();
        let mut built = Vec::new();
        for (index, draft) in self.bgp_advertisements.iter_mut().enumerate() {
            if draft.common.dropped || draft.for_pool.is_some_and(|p| self.pools[p].common.dropped)
            {
                continue;
            }
            let mut advertisement = BGPAdvertisement::new(&draft.common.name, draft.spec.clone());
            advertisement.metadata = draft.common.object_meta();
            let problems = schema.check(
                "spec",
                &serde_json::to_value(&advertisement.spec).unwrap_or_default(),
            );
            if let Some(why) = draft.common.refused(&problems) {
                draft
                    .common
                    .lines
                    .push(&draft.common.source, "", Outcome::NotCarriedOver, why);
                draft.common.dropped = true;
                continue;
            }
            built.push((index, advertisement));
        }
        built
    }

    /// An aggregate must hold only its pool's addresses; MetalLB refuses one that does not, and
    /// FerroLB advertises nothing of that pool with such an advertisement.
    pub(super) fn judge_aggregation(
        &mut self,
        pools: &[(usize, IPAddressPool)],
        advertisements: &[(usize, BGPAdvertisement)],
    ) {
        for (draft_index, advertisement) in advertisements {
            for (_, pool) in pools {
                let name = pool.metadata.name.as_deref().unwrap_or_default();
                let labels = pool.metadata.labels.clone().unwrap_or_default();
                if !advertisement.spec.selects_pool(name, &labels) {
                    continue;
                }
                let addresses: AddressSet = pool.spec.address_set().unwrap_or_default();
                if let Some(problem) = advertisement.spec.aggregation_problem(name, &addresses) {
                    let common = &mut self.bgp_advertisements[*draft_index].common;
                    let source = common.source.clone();
                    common.late_lines.push(
                        &source,
                        "",
                        Outcome::NotCarriedOver,
                        format!("{problem}; MetalLB refuses this too, and FerroLB advertises nothing of that pool with this advertisement"),
                    );
                }
            }
        }
    }
}

fn drop_if_seen(seen: &mut HashMap<(Option<String>, String), ObjectRef>, common: &mut Common) {
    if common.generated {
        return;
    }
    let key = (common.namespace.clone(), common.metallb_name.clone());
    match seen.get(&key) {
        Some(first) => {
            common.dropped = true;
            let detail = format!(
                "is defined a second time (first in {first}); only the first is carried over"
            );
            let source = common.source.clone();
            common
                .lines
                .push(&source, "", Outcome::NotCarriedOver, detail);
        }
        None => {
            seen.insert(key, common.source.clone());
        }
    }
}

/// Aggregation lengths, localPref and communities, or None if one cannot be written as MetalLB
/// had it (the routes would differ).
fn attributes(
    object: &ObjectRef,
    place: &Place,
    spec: &metallb::BgpAdvertisementSpec,
    lines: &mut Report,
) -> Option<Attributes> {
    let mut fine = true;
    let mut length = |field: &str, value: Option<i64>, max: u8| -> u8 {
        let Some(value) = value else { return max };
        match u8::try_from(value).ok().filter(|v| *v <= max) {
            Some(length) => {
                lines.push(
                    object,
                    place.at(field),
                    Outcome::Converted,
                    length.to_string(),
                );
                length
            }
            None => {
                lines.push(
                    object,
                    place.at(field),
                    Outcome::NotCarriedOver,
                    format!(
                        "{value} is not a prefix length of 0 to {max}, which MetalLB refuses too"
                    ),
                );
                fine = false;
                max
            }
        }
    };
    let aggregation_length = length("aggregationLength", spec.aggregation_length, 32);
    let aggregation_length_v6 = length("aggregationLengthV6", spec.aggregation_length_v6, 128);
    let local_pref = match spec.local_pref.map(u32::try_from) {
        None => None,
        Some(Ok(value)) => {
            lines.push(
                object,
                place.at("localPref"),
                Outcome::Converted,
                value.to_string(),
            );
            Some(value)
        }
        Some(Err(_)) => {
            lines.push(
                object,
                place.at("localPref"),
                Outcome::NotCarriedOver,
                format!(
                    "{} is larger than 4294967295, which MetalLB refuses too",
                    spec.local_pref.unwrap_or_default()
                ),
            );
            fine = false;
            None
        }
    };
    let communities_at = lines.entries.len();
    let field = place.at("communities");
    let communities = spec
        .communities
        .iter()
        .enumerate()
        .map(|(index, text)| PoolRef {
            field: format!("{field}[{index}]"),
            name: text.clone(),
        })
        .collect();
    fine.then_some(Attributes {
        aggregation_length,
        aggregation_length_v6,
        local_pref,
        communities,
        communities_at,
    })
}

impl AliasEntry {
    fn new(field: String, alias: &str, value: &str) -> Self {
        Self {
            field,
            alias: alias.to_owned(),
            value: value.to_owned(),
            parsed: Community::from_str(value).map_err(|e| e.to_string()),
            used_by: BTreeSet::new(),
            duplicate_of: None,
        }
    }
}

/// `"a", "b"`, for lines naming the objects something was written into.
fn names(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl AliasSet {
    pub(super) fn render(&self) -> Report {
        let mut report = self.lines.clone();
        for entry in &self.entries {
            let shown = format!("{:?} = {:?}", entry.alias, entry.value);
            let (outcome, detail) = match (&entry.duplicate_of, &entry.parsed) {
                (Some(first), _) => (
                    Outcome::NotCarriedOver,
                    format!(
                        "{shown} defines the alias a second time (first in {first}); only the first is used"
                    ),
                ),
                (None, _) if entry.used_by.is_empty() => (
                    Outcome::Note,
                    match &entry.parsed {
                        Ok(_) => format!(
                            "{shown}: no BGPAdvertisement in the input uses it; nothing to carry over"
                        ),
                        Err(error) => {
                            format!("{shown}: {error}; no BGPAdvertisement in the input uses it")
                        }
                    },
                ),
                (None, Ok(community)) => (
                    Outcome::Converted,
                    format!(
                        "{shown}: written \"{community}\" into BGPAdvertisement {}: FerroLB has no Community objects",
                        names(&entry.used_by)
                    ),
                ),
                (None, Err(error)) => (Outcome::NotCarriedOver, format!("{shown}: {error}")),
            };
            report.push(&self.source, entry.field.clone(), outcome, detail);
        }
        report
    }
}

impl BfdProfileDraft {
    fn new(
        object: &ObjectRef,
        namespace: Option<String>,
        name: &str,
        place: &Place,
        spec: &metallb::BfdProfileSpec,
    ) -> Self {
        let mut lines = Vec::new();
        let mut fixed = |field: String, outcome: Outcome, detail: String| {
            lines.push(ProfileLine::Fixed(Entry {
                object: object.clone(),
                field,
                detail,
                outcome,
            }));
        };
        let mut fine = true;
        let mut timer = |lines: &mut Vec<ProfileLine>,
                         field: &str,
                         value: Option<u64>,
                         range: std::ops::RangeInclusive<u64>,
                         default: u64|
         -> u64 {
            let Some(value) = value else { return default };
            if range.contains(&value) {
                lines.push(ProfileLine::Carried {
                    field: place.at(field),
                    value,
                });
            } else {
                lines.push(ProfileLine::Fixed(Entry {
                    object: object.clone(),
                    field: place.at(field),
                    detail: format!(
                        "{value} is outside {} to {}, which MetalLB refuses too",
                        range.start(),
                        range.end()
                    ),
                    outcome: Outcome::NotCarriedOver,
                }));
                fine = false;
            }
            value
        };
        let mut timers = Vec::new();
        let receive = timer(
            &mut timers,
            "receiveInterval",
            spec.receive_interval,
            10..=60000,
            DEFAULT_BFD_INTERVAL_MS.into(),
        );
        let transmit = timer(
            &mut timers,
            "transmitInterval",
            spec.transmit_interval,
            10..=60000,
            DEFAULT_BFD_INTERVAL_MS.into(),
        );
        let multiplier = timer(
            &mut timers,
            "detectMultiplier",
            spec.detect_multiplier,
            2..=255,
            DEFAULT_DETECT_MULTIPLIER.into(),
        );
        if fine && transmit * multiplier > MAX_BFD_DETECTION_MS {
            timers.push(ProfileLine::Fixed(Entry {
                object: object.clone(),
                field: place.base.clone(),
                detail: format!("transmitInterval × detectMultiplier is {} ms; FerroLB allows at most 10 minutes", transmit * multiplier),
                outcome: Outcome::NotCarriedOver,
            }));
            fine = false;
        }
        let settings = match (
            u32::try_from(receive),
            u32::try_from(transmit),
            u8::try_from(multiplier),
        ) {
            (Ok(receive_interval), Ok(transmit_interval), Ok(detect_multiplier)) if fine => {
                Some(BfdSettings {
                    receive_interval,
                    transmit_interval,
                    detect_multiplier,
                })
            }
            _ => None,
        };
        let echo = spec.echo_mode == Some(true);
        match spec.echo_mode {
            Some(true) => fixed(
                place.at("echoMode"),
                Outcome::NotCarriedOver,
                "true: FerroLB's BFD has no echo function (RFC 5880 §6.4); it detects a failure from control packets at transmitInterval".to_owned(),
            ),
            Some(false) => fixed(
                place.at("echoMode"),
                Outcome::Converted,
                "false: FerroLB's BFD has no echo function".to_owned(),
            ),
            None => {}
        }
        if let Some(interval) = spec.echo_interval {
            if echo {
                fixed(
                    place.at("echoInterval"),
                    Outcome::NotCarriedOver,
                    format!("{interval}: FerroLB's BFD has no echo function"),
                );
            } else {
                fixed(
                    place.at("echoInterval"),
                    Outcome::Note,
                    format!("{interval}: used only with echoMode, which is off"),
                );
            }
        }
        match spec.passive_mode {
            Some(true) => fixed(
                place.at("passiveMode"),
                Outcome::NotCarriedOver,
                "true: FerroLB's BFD always starts the session itself (active role, RFC 5880 §6.1) instead of waiting for the router".to_owned(),
            ),
            Some(false) => fixed(
                place.at("passiveMode"),
                Outcome::Converted,
                "false: FerroLB's BFD starts the session itself too".to_owned(),
            ),
            None => {}
        }
        if let Some(ttl) = spec.minimum_ttl {
            fixed(
                place.at("minimumTtl"),
                Outcome::Note,
                format!(
                    "{ttl}: applies to multi-hop BFD only; FerroLB's BFD is single-hop (RFC 5881), where packets must arrive with TTL 255"
                ),
            );
        }
        for (field, value) in &spec.unknown {
            fixed(
                join(&place.base, field),
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB has no such BFD setting",
                    quote_field(field, value)
                ),
            );
        }
        timers.extend(lines);
        Self {
            source: object.clone(),
            namespace,
            name: name.to_owned(),
            lines: timers,
            settings,
            used_by: BTreeSet::new(),
            named_by_a_peer: false,
            duplicate_of: None,
        }
    }

    pub(super) fn render(&self) -> Report {
        let mut report = Report::default();
        if let Some(first) = &self.duplicate_of {
            report.push(
                &self.source,
                "",
                Outcome::NotCarriedOver,
                format!(
                    "defines BFDProfile {:?} a second time (first in {first}); only the first is used",
                    self.name
                ),
            );
            return report;
        }
        if !self.named_by_a_peer {
            report.push(
                &self.source,
                "",
                Outcome::Note,
                format!(
                    "no BGPPeer in the input names BFD profile {:?}; nothing to carry over",
                    self.name
                ),
            );
            return report;
        }
        for line in &self.lines {
            match line {
                // The peers that name a refused profile say so; its good values go nowhere.
                ProfileLine::Carried { field, value } if self.used_by.is_empty() => report.push(
                    &self.source,
                    field.clone(),
                    Outcome::Note,
                    format!("{value}: written nowhere, as no peer could take the profile"),
                ),
                ProfileLine::Carried { field, value } => report.push(
                    &self.source,
                    field.clone(),
                    Outcome::Converted,
                    format!(
                        "{value}: written into the bfd of BGPPeer {}: FerroLB has no BFDProfile objects",
                        names(&self.used_by)
                    ),
                ),
                ProfileLine::Fixed(entry) => report.entries.push(entry.clone()),
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::super::convert;
    use super::*;
    use crate::convert::Conversion;
    use crate::input::Document;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc(value: Value) -> Document {
        Document {
            origin: "test".to_owned(),
            value,
        }
    }

    fn object(version: &str, kind: &str, namespace: &str, name: &str, spec: Value) -> Document {
        doc(json!({
            "apiVersion": format!("metallb.io/{version}"), "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
    }

    fn peer(name: &str, spec: Value) -> Document {
        object("v1beta2", "BGPPeer", "metallb-system", name, spec)
    }

    fn advertisement(name: &str, spec: Value) -> Document {
        object("v1beta1", "BGPAdvertisement", "metallb-system", name, spec)
    }

    fn pool(namespace: &str, name: &str, addresses: &[&str]) -> Document {
        object(
            "v1beta1",
            "IPAddressPool",
            namespace,
            name,
            json!({"addresses": addresses}),
        )
    }

    fn legacy(config: &str) -> Document {
        doc(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config", "namespace": "metallb-system"},
            "data": {"config": config},
        }))
    }

    fn lines(conversion: &Conversion) -> Vec<String> {
        conversion
            .report
            .entries
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[track_caller]
    fn assert_line(conversion: &Conversion, needle: &str) {
        let lines = lines(conversion);
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle:?} missing from {lines:#?}"
        );
    }

    /// What every written BGP object must pass: FerroLB's schema, and a peer its checks too.
    fn assert_accepted(conversion: &Conversion) {
        for peer in &conversion.peers {
            let spec = serde_json::to_value(&peer.spec).unwrap();
            assert_eq!(
                CrdSchema::bgp_peer().check("spec", &spec),
                Vec::<String>::new()
            );
            assert!(peer.spec.settings().is_ok(), "{peer:?}");
        }
        for advertisement in &conversion.bgp_advertisements {
            let spec = serde_json::to_value(&advertisement.spec).unwrap();
            assert_eq!(
                CrdSchema::bgp_advertisement().check("spec", &spec),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn a_peer_carries_every_field_ferrolb_has() {
        let conversion = convert(&[doc(json!({
            "apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
            "metadata": {"name": "tor-a", "namespace": "metallb-system", "labels": {"rack": "r1"}},
            "spec": {
                "myASN": 64500, "peerASN": 4_200_000_000u32, "peerAddress": "2001:db8:1::1",
                "peerPort": 1179, "sourceAddress": "2001:db8:1::10", "holdTime": "1m30s",
                "keepaliveTime": "30s", "connectTime": "10s", "routerID": "198.51.100.7",
                "ebgpMultiHop": true, "enableGracefulRestart": true,
                "nodeSelectors": [{"matchLabels": {"rack": "r1"}}],
                "passwordSecret": {"name": "tor-a-md5", "namespace": "metallb-system"},
                "vrf": "",
            },
        }))]);
        assert_accepted(&conversion);
        let [peer] = &conversion.peers[..] else {
            panic!("{:#?}", lines(&conversion))
        };
        let spec = &peer.spec;
        assert_eq!(peer.metadata.name.as_deref(), Some("tor-a"));
        assert_eq!(peer.metadata.labels.as_ref().unwrap()["rack"], "r1");
        assert_eq!((spec.my_asn, spec.peer_asn), (64500, 4_200_000_000));
        assert_eq!(spec.peer_address, "2001:db8:1::1");
        assert_eq!(spec.peer_port, 1179);
        assert_eq!(spec.source_address.as_deref(), Some("2001:db8:1::10"));
        assert_eq!(spec.hold_time.to_string(), "90s");
        assert_eq!(
            spec.keepalive_time.map(|k| k.to_string()).as_deref(),
            Some("30s")
        );
        assert_eq!(
            spec.connect_time.map(|c| c.to_string()).as_deref(),
            Some("10s")
        );
        assert_eq!(spec.router_id.as_deref(), Some("198.51.100.7"));
        assert!(spec.ebgp_multi_hop && spec.enable_graceful_restart);
        assert_eq!(spec.node_selectors.len(), 1);
        assert_eq!(
            spec.password_secret,
            Some(PasswordSecret {
                name: "tor-a-md5".into(),
                key: "password".into()
            })
        );
        assert_eq!(spec.bfd, None);
        assert_line(
            &conversion,
            "spec.holdTime \"1m30s\" is written \"90s\" (changed)",
        );
        assert_line(
            &conversion,
            "spec.passwordSecret \"tor-a-md5\" is written {name: tor-a-md5, key: password}; FerroLB reads it from ferrolb-system, so copy Secret metallb-system/tor-a-md5 there (changed)",
        );
        assert_line(&conversion, "spec.connectTime \"10s\": MetalLB retried");
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn v1beta1_node_selectors_read_as_label_selectors() {
        let conversion = convert(&[object(
            "v1beta1",
            "BGPPeer",
            "metallb-system",
            "router",
            json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1",
                "nodeSelectors": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]}]}),
        )]);
        assert_accepted(&conversion);
        assert_eq!(
            conversion.peers[0].spec.node_selectors[0].to_string(),
            "kubernetes.io/hostname in (n1,n2)"
        );
    }

    #[test]
    fn a_password_is_never_shown_nor_written() {
        let conversion = convert(&[peer(
            "router",
            json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1",
                "password": "hunter2-secret"}),
        )]);
        let report = conversion.report.render(conversion.written());
        let yaml = conversion.to_yaml().unwrap();
        assert!(
            !report.contains("hunter2") && !yaml.contains("hunter2"),
            "{report}{yaml}"
        );
        assert_line(
            &conversion,
            "spec.password (redacted): FerroLB takes the password only from a Secret: put it in a Secret in ferrolb-system",
        );
        assert_eq!(conversion.peers[0].spec.password_secret, None);
        assert!(!conversion.report.complete());
    }

    #[test]
    fn a_bfd_profile_is_written_into_the_peers_that_name_it() {
        let conversion = convert(&[
            peer(
                "router",
                json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1",
                    "bfdProfile": "fast"}),
            ),
            object(
                "v1beta1",
                "BFDProfile",
                "metallb-system",
                "fast",
                json!({"receiveInterval": 100, "transmitInterval": 200, "detectMultiplier": 5,
                    "echoMode": true, "echoInterval": 50, "passiveMode": false, "minimumTtl": 10}),
            ),
        ]);
        assert_accepted(&conversion);
        assert_eq!(
            conversion.peers[0].spec.bfd,
            Some(BfdSettings {
                receive_interval: 100,
                transmit_interval: 200,
                detect_multiplier: 5
            })
        );
        assert_line(
            &conversion,
            "BGPPeer metallb-system/router: spec.bfdProfile \"fast\" is written as bfd {receiveInterval: 100, transmitInterval: 200, detectMultiplier: 5} from BFDProfile metallb-system/fast",
        );
        assert_line(
            &conversion,
            "BFDProfile metallb-system/fast: spec.receiveInterval 100: written into the bfd of BGPPeer \"router\"",
        );
        assert_line(
            &conversion,
            "BFDProfile metallb-system/fast: spec.echoMode true: FerroLB's BFD has no echo function",
        );
        assert_line(
            &conversion,
            "spec.minimumTtl 10: applies to multi-hop BFD only",
        );
        // Defaults are MetalLB's, written out.
        let defaults = convert(&[
            peer(
                "router",
                json!({"myASN": 1, "peerASN": 2, "peerAddress": "203.0.113.1", "bfdProfile": "d"}),
            ),
            object("v1beta1", "BFDProfile", "metallb-system", "d", json!({})),
        ]);
        assert_eq!(defaults.peers[0].spec.bfd, Some(BfdSettings::default()));
        assert!(defaults.report.complete(), "{:#?}", lines(&defaults));
    }

    #[test]
    fn a_peer_whose_bfd_profile_is_lost_is_kept_without_bfd() {
        let router = peer(
            "router",
            json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1",
                "bfdProfile": "fast"}),
        );
        let missing = convert(std::slice::from_ref(&router));
        assert_eq!(missing.peers.len(), 1);
        assert_eq!(missing.peers[0].spec.bfd, None);
        assert_line(
            &missing,
            "spec.bfdProfile \"fast\" names no BFDProfile in the input; the peer is written without BFD, so the router notices a failed node only when the hold time (90s) runs out",
        );
        let refused = convert(&[
            router,
            object(
                "v1beta1",
                "BFDProfile",
                "metallb-system",
                "fast",
                json!({"receiveInterval": 5}),
            ),
        ]);
        assert_eq!(refused.peers[0].spec.bfd, None);
        assert_line(
            &refused,
            "BFDProfile metallb-system/fast: spec.receiveInterval 5 is outside 10 to 60000, which MetalLB refuses too (not carried over)",
        );
        assert_line(
            &refused,
            "spec.bfdProfile \"fast\": BFDProfile metallb-system/fast cannot be carried over (see its lines)",
        );
    }

    #[test]
    fn a_peer_in_a_vrf_is_left_out_and_advertisements_keep_its_name() {
        let conversion = convert(&[
            peer(
                "red",
                json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1", "vrf": "red"}),
            ),
            advertisement("to-red", json!({"peers": ["red"]})),
        ]);
        assert!(conversion.peers.is_empty());
        assert_line(
            &conversion,
            "BGPPeer metallb-system/red: spec.vrf \"red\": FerroLB has no VRF support",
        );
        assert_line(
            &conversion,
            "BGPPeer metallb-system/red: the whole peer is left out (not carried over)",
        );
        // Dropping the name would make the advertisement go to every peer.
        assert_eq!(conversion.bgp_advertisements[0].spec.peers, ["red"]);
        assert_line(
            &conversion,
            "spec.peers[0] \"red\" names a peer that is not carried over (see its lines); kept as written",
        );
    }

    #[test]
    fn dynamic_asn_internal_is_the_nodes_own_and_external_cannot_be_written() {
        let internal = convert(&[peer(
            "ibgp",
            json!({"myASN": 64500, "dynamicASN": "internal", "peerAddress": "203.0.113.1"}),
        )]);
        assert_eq!(internal.peers[0].spec.peer_asn, 64500);
        let external = convert(&[peer(
            "ebgp",
            json!({"myASN": 64500, "dynamicASN": "external", "peerAddress": "203.0.113.1"}),
        )]);
        assert!(external.peers.is_empty());
        assert_line(
            &external,
            "spec.dynamicASN \"external\": FerroLB needs the router's AS number",
        );
    }

    #[test]
    fn peers_ferrolb_refuses_are_left_out_with_the_reason() {
        let conversion = convert(&[
            peer(
                "loopback",
                json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "127.0.0.1"}),
            ),
            peer(
                "timers",
                json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1",
                    "holdTime": "9s", "keepaliveTime": "9s"}),
            ),
            peer(
                "narrow",
                json!({"myASN": 64500, "peerASN": 64501, "peerAddress": "203.0.113.1",
                    "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "In"}]}]}),
            ),
        ]);
        assert!(conversion.peers.is_empty(), "{:#?}", conversion.peers);
        assert_line(
            &conversion,
            "BGPPeer metallb-system/loopback: FerroLB refuses it (peerAddress \"127.0.0.1\" is not a routable IP address)",
        );
        assert_line(
            &conversion,
            "keepaliveTime 9s must be at least 1s and shorter than holdTime 9s",
        );
        assert_line(
            &conversion,
            "every node selector is lost, and without them every node would peer with the router",
        );
    }

    #[test]
    fn community_aliases_are_replaced_by_their_values() {
        let conversion = convert(&[
            pool("metallb-system", "edge", &["198.51.100.0/24"]),
            advertisement(
                "edge",
                json!({"ipAddressPools": ["edge"], "communities":
                    ["keep-inside", "64512:100", "65535:65281", "large:64512:1:2", "64512:100"]}),
            ),
            // Aliases may come after the advertisements that use them.
            object(
                "v1beta1",
                "Community",
                "metallb-system",
                "aliases",
                json!({"communities": [
                    {"name": "keep-inside", "value": "65535:65282"},
                    {"name": "unused", "value": "1:1"},
                ]}),
            ),
        ]);
        assert_accepted(&conversion);
        let written: Vec<String> = conversion.bgp_advertisements[0]
            .spec
            .communities
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            written,
            ["no-advertise", "64512:100", "no-export", "large:64512:1:2"]
        );
        assert_line(
            &conversion,
            "spec.communities[0] \"keep-inside\" is an alias (Community metallb-system/aliases): written \"no-advertise\" (changed)",
        );
        assert_line(
            &conversion,
            "spec.communities[2] \"65535:65281\" is written \"no-export\", its well-known name (changed)",
        );
        assert_line(
            &conversion,
            "spec.communities[4] \"64512:100\"; listed twice, written once (changed)",
        );
        assert_line(
            &conversion,
            "Community metallb-system/aliases: spec.communities[0] \"keep-inside\" = \"65535:65282\": written \"no-advertise\" into BGPAdvertisement \"edge\"",
        );
        assert_line(
            &conversion,
            "spec.communities[1] \"unused\" = \"1:1\": no BGPAdvertisement in the input uses it; nothing to carry over (note)",
        );
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn an_advertisement_that_would_lose_a_community_is_left_out() {
        let conversion = convert(&[
            advertisement("edge", json!({"communities": ["no-export-please"]})),
            advertisement("bad-alias", json!({"communities": ["broken"]})),
            object(
                "v1beta1",
                "Community",
                "metallb-system",
                "aliases",
                json!({"communities": [{"name": "broken", "value": "70000:1"}]}),
            ),
        ]);
        assert!(conversion.bgp_advertisements.is_empty());
        assert_line(
            &conversion,
            "BGPAdvertisement metallb-system/edge: spec.communities[0] names no Community alias in the input, and \"no-export-please\" is not a community",
        );
        assert_line(
            &conversion,
            "a lost no-export or no-advertise lets them leave the AS); the whole advertisement is left out (not carried over)",
        );
        assert_line(
            &conversion,
            "Community metallb-system/aliases: spec.communities[0] \"broken\" = \"70000:1\": \"70000:1\" is not a community",
        );
    }

    #[test]
    fn renamed_pools_and_peers_are_followed_by_advertisements() {
        let in_namespace = |namespace: &str| {
            vec![
                pool(
                    namespace,
                    "lan",
                    &[if namespace == "site-a" {
                        "198.51.100.0/25"
                    } else {
                        "198.51.100.128/25"
                    }],
                ),
                object(
                    "v1beta2",
                    "BGPPeer",
                    namespace,
                    "tor",
                    json!({"myASN": 64500, "peerASN": 64501, "peerAddress":
                        if namespace == "site-a" { "203.0.113.1" } else { "203.0.113.2" }}),
                ),
                object(
                    "v1beta1",
                    "BGPAdvertisement",
                    namespace,
                    "adv",
                    json!({"ipAddressPools": ["lan"], "peers": ["tor"], "aggregationLength": 25}),
                ),
            ]
        };
        let mut documents = in_namespace("site-a");
        documents.extend(in_namespace("site-b"));
        let conversion = convert(&documents);
        assert_accepted(&conversion);
        let written: Vec<(String, Vec<String>, Vec<String>)> = conversion
            .bgp_advertisements
            .iter()
            .map(|a| {
                (
                    a.metadata.name.clone().unwrap(),
                    a.spec.ip_address_pools.clone(),
                    a.spec.peers.clone(),
                )
            })
            .collect();
        assert_eq!(
            written,
            [
                (
                    "site-a-adv".into(),
                    vec!["site-a-lan".into()],
                    vec!["site-a-tor".into()]
                ),
                (
                    "site-b-adv".into(),
                    vec!["site-b-lan".into()],
                    vec!["site-b-tor".into()]
                ),
            ]
        );
        assert_line(
            &conversion,
            "BGPAdvertisement site-a/adv: spec.ipAddressPools[0] \"lan\" now names IPAddressPool \"site-a-lan\", as the pool was renamed (changed)",
        );
        assert_line(
            &conversion,
            "BGPAdvertisement site-b/adv: spec.peers[0] \"tor\" now names BGPPeer \"site-b-tor\", as the peer was renamed (changed)",
        );
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn aggregates_larger_than_the_pool_are_reported() {
        let conversion = convert(&[
            pool("metallb-system", "small", &["198.51.100.0/25"]),
            advertisement("wide", json!({"aggregationLength": 24})),
        ]);
        assert_line(
            &conversion,
            "BGPAdvertisement metallb-system/wide: aggregationLength 24 does not fit pool small",
        );
        assert!(!conversion.report.complete());
    }

    #[test]
    fn losing_every_selector_never_widens_a_bgp_advertisement() {
        let conversion = convert(&[advertisement(
            "narrow",
            json!({"nodeSelectors": [{"matchLabel": {"rack": "r1"}}]}),
        )]);
        assert!(conversion.bgp_advertisements.is_empty());
        assert_line(&conversion, "every node selector is lost");
    }

    #[test]
    fn the_legacy_configmap_becomes_peers_and_advertisements() {
        let config = r#"
peers:
- peer-address: 203.0.113.1
  peer-asn: 64501
  my-asn: 64500
  peer-port: 1179
  hold-time: 120s
  keepalive-time: 40s
  router-id: 198.51.100.201
  source-address: 203.0.113.10
  ebgp-multihop: yes
  bfd-profile: slow
  node-selectors:
  - match-labels:
      rack: frontend
    match-expressions:
    - key: zone
      operator: In
      values: [a]
- peer-address: 2001:db8:1::1
  peer-asn: 64500
  my-asn: 64500
bfd-profiles:
- name: slow
  receive-interval: 1000
  transmit-interval: 1000
  detect-multiplier: 4
bgp-communities:
  inside: 65535:65282
address-pools:
- name: edge
  protocol: bgp
  addresses: [198.51.100.0/24]
  bgp-advertisements:
  - aggregation-length: 24
    localpref: 100
    communities: [inside]
  - aggregation-length: 32
- name: plain
  protocol: bgp
  addresses: [2001:db8:2::/64]
"#;
        let conversion = convert(&[legacy(config)]);
        assert_accepted(&conversion);
        let peers: Vec<&str> = conversion
            .peers
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(peers, ["203.0.113.1", "2001-db8-1--1"]);
        let spec = &conversion.peers[0].spec;
        assert_eq!(
            (spec.peer_port, spec.hold_time.to_string()),
            (1179, "120s".into())
        );
        assert_eq!(
            spec.keepalive_time.map(|k| k.to_string()).as_deref(),
            Some("40s")
        );
        assert_eq!(spec.router_id.as_deref(), Some("198.51.100.201"));
        assert_eq!(spec.source_address.as_deref(), Some("203.0.113.10"));
        assert!(spec.ebgp_multi_hop);
        assert_eq!(
            spec.node_selectors[0].to_string(),
            "rack=frontend,zone in (a)"
        );
        assert_eq!(
            spec.bfd,
            Some(BfdSettings {
                receive_interval: 1000,
                transmit_interval: 1000,
                detect_multiplier: 4
            })
        );
        // Name, pools, aggregation length, localPref, communities.
        let advertisements: Vec<String> = conversion
            .bgp_advertisements
            .iter()
            .map(|a| {
                format!(
                    "{} {:?} /{} {:?} {:?}",
                    a.metadata.name.as_deref().unwrap(),
                    a.spec.ip_address_pools,
                    a.spec.aggregation_length,
                    a.spec.local_pref,
                    a.spec
                        .communities
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            advertisements,
            [
                "edge [\"edge\"] /24 Some(100) [\"no-advertise\"]",
                "edge-2 [\"edge\"] /32 None []",
                "plain [\"plain\"] /32 None []",
            ]
        );
        assert_line(
            &conversion,
            "data.config.address-pools[1].protocol \"bgp\" becomes BGPAdvertisement \"plain\", advertising IPAddressPool \"plain\" from every node to every BGPPeer with MetalLB's defaults",
        );
        assert_line(
            &conversion,
            "data.config.peers[0].hold-time \"120s\" (converted)",
        );
        assert_line(
            &conversion,
            "data.config.bfd-profiles[0].receive-interval 1000: written into the bfd of BGPPeer \"203.0.113.1\"",
        );
        assert_line(
            &conversion,
            "data.config.bgp-communities.inside \"inside\" = \"65535:65282\": written \"no-advertise\" into BGPAdvertisement \"edge\"",
        );
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn an_address_pool_resource_spells_its_advertisements_in_camel_case() {
        let conversion = convert(&[object(
            "v1beta1",
            "AddressPool",
            "metallb-system",
            "edge",
            json!({"protocol": "bgp", "addresses": ["198.51.100.0/24"],
                "bgpAdvertisements": [{"aggregationLength": 32, "localPref": 50}]}),
        )]);
        assert_eq!(conversion.bgp_advertisements[0].spec.local_pref, Some(50));
        assert_line(
            &conversion,
            "AddressPool metallb-system/edge: spec.bgpAdvertisements[0].localPref 50 (converted)",
        );
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn unused_profiles_and_aliases_are_notes() {
        let conversion = convert(&[
            object(
                "v1beta1",
                "BFDProfile",
                "metallb-system",
                "fast",
                json!({"echoMode": true}),
            ),
            object(
                "v1beta1",
                "Community",
                "metallb-system",
                "c",
                json!({"communities": []}),
            ),
        ]);
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
        assert_eq!(conversion.report.count(Outcome::Note), 2);
    }

    fn bgp_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0u64..5_000_000_000).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "203.0.113.1",
                "2001:db8::1",
                "127.0.0.1",
                "fe80::1",
                "0.0.0.0",
                "90s",
                "0s",
                "3s",
                "1m",
                "500ms",
                "x",
                "",
                "internal",
                "external",
                "fast",
                "64512:100",
                "no-export",
                "large:1:2:3",
                "70000:1",
                "alias",
                "lan",
                "red",
                "In",
                "Exists",
                "rack",
                "metallb-system",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "myASN",
                        "peerASN",
                        "dynamicASN",
                        "peerAddress",
                        "sourceAddress",
                        "peerPort",
                        "holdTime",
                        "keepaliveTime",
                        "connectTime",
                        "routerID",
                        "ebgpMultiHop",
                        "enableGracefulRestart",
                        "nodeSelectors",
                        "password",
                        "passwordSecret",
                        "name",
                        "namespace",
                        "bfdProfile",
                        "vrf",
                        "disableMP",
                        "matchLabels",
                        "matchExpressions",
                        "key",
                        "operator",
                        "values",
                        "ipAddressPools",
                        "peers",
                        "aggregationLength",
                        "aggregationLengthV6",
                        "localPref",
                        "communities",
                        "value",
                        "receiveInterval",
                        "transmitInterval",
                        "detectMultiplier",
                        "echoMode",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn legacy_value() -> impl Strategy<Value = Value> {
        let peer = (
            prop::sample::select(vec!["203.0.113.1", "2001:db8::1", "::1", "bad"]),
            0u64..70000,
            0u64..70000,
            prop::sample::select(vec!["90s", "2s", "x"]),
            any::<bool>(),
        )
            .prop_map(|(address, peer_asn, my_asn, hold, bfd)| {
                let mut peer = json!({"peer-address": address, "peer-asn": peer_asn,
                    "my-asn": my_asn, "hold-time": hold});
                if bfd {
                    peer["bfd-profile"] = json!("p");
                }
                peer
            });
        (
            prop::collection::vec(peer, 0..3),
            prop::collection::vec(
                (0i64..40, prop::sample::select(vec!["64512:1", "c", "bad"])).prop_map(
                    |(length, community)| {
                        json!({"aggregation-length": length, "communities": [community]})
                    },
                ),
                0..3,
            ),
            1u64..100_000,
        )
            .prop_map(|(peers, advertisements, interval)| {
                json!({
                    "peers": peers,
                    "bfd-profiles": [{"name": "p", "receive-interval": interval}],
                    "bgp-communities": {"c": "65535:65281"},
                    "address-pools": [{"name": "edge", "protocol": "bgp",
                        "addresses": ["198.51.100.0/24"], "bgp-advertisements": advertisements}],
                })
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bgp_documents_never_panic_and_what_is_written_is_accepted(
            documents in prop::collection::vec(
                (prop::sample::select(vec!["BGPPeer", "BGPAdvertisement", "Community", "BFDProfile"]),
                 prop::sample::select(vec!["v1beta1", "v1beta2"]),
                 prop::sample::select(vec!["a", "b", "fast", "alias"]),
                 bgp_value()),
                1..6,
            ),
            config in legacy_value(),
        ) {
            // A password no other value contains, to check it is shown nowhere.
            let password = json!("pw-never-shown");
            let mut inputs: Vec<Document> = documents
                .into_iter()
                .map(|(kind, version, name, mut spec)| {
                    if let Some(fields) = spec.as_object_mut() {
                        fields.insert("password".into(), password.clone());
                    }
                    object(version, kind, "metallb-system", name, spec)
                })
                .collect();
            let mut config = config;
            for peer in config["peers"].as_array_mut().into_iter().flatten() {
                peer["password"] = password.clone();
            }
            inputs.push(pool("metallb-system", "lan", &["198.51.100.0/25"]));
            inputs.push(legacy(&serde_json::to_string(&config).unwrap()));
            let conversion = convert(&inputs);
            for peer in &conversion.peers {
                prop_assert!(peer.spec.settings().is_ok(), "{:?}", peer);
                let spec = serde_json::to_value(&peer.spec).unwrap();
                prop_assert!(CrdSchema::bgp_peer().check("spec", &spec).is_empty(), "{:?}", spec);
            }
            for advertisement in &conversion.bgp_advertisements {
                let spec = serde_json::to_value(&advertisement.spec).unwrap();
                prop_assert!(CrdSchema::bgp_advertisement().check("spec", &spec).is_empty(), "{:?}", spec);
            }
            let rendered = conversion.report.render(conversion.written());
            let yaml = conversion.to_yaml().unwrap();
            prop_assert!(!rendered.contains("never-shown") && !yaml.contains("never-shown"), "{}", rendered);
            let written: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
            prop_assert_eq!(written.len(), conversion.pools.len() + conversion.advertisements.len()
                + conversion.peers.len() + conversion.bgp_advertisements.len());
        }
    }
}
