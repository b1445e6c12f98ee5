//! The conversion: MetalLB objects in, FerroLB objects and a report out. No I/O.
//!
//! It runs in three steps, because names are only known once every object has been seen:
//! each MetalLB object becomes a draft (and report lines for its own fields); the drafts get
//! their cluster-wide FerroLB names; then references between objects are resolved and the
//! objects judged together (overlapping pools, selectors that now reach other namespaces,
//! aggregation lengths that do not fit a pool). BGP community aliases and BFD profiles are
//! resolved in the last step too, as they may come after the objects that use them.

mod address;
mod bgp;
mod fields;
mod names;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ferrolb_crds::addresses::AddressSet;
use ferrolb_crds::{
    BGPAdvertisement, BGPPeer, IPAddressPool, IPAddressPoolSpec, L2Advertisement,
    L2AdvertisementSpec, LabelSelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use address::{AddressOutcome, convert_address};
pub use fields::convert_selector;
pub use names::{cluster_names, object_name};

use crate::bgp::BgpKind;
use crate::input::Document;
use crate::metallb::{self, Kind, Metadata, ProtocolPool, parse};
use crate::report::{Entry, ObjectRef, Outcome, Report, Written, join, quote};
use crate::schema::CrdSchema;
use address::convert_addresses;
use fields::{
    Kept, convert_allocation, convert_interfaces, convert_selectors, flag, metadata_lines,
    not_readable,
};
use names::{fit, is_object_name};

/// FerroLB objects and what became of every MetalLB field.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    pub pools: Vec<IPAddressPool>,
    /// L2Advertisements.
    pub advertisements: Vec<L2Advertisement>,
    pub peers: Vec<BGPPeer>,
    pub bgp_advertisements: Vec<BGPAdvertisement>,
    pub report: Report,
}

impl Conversion {
    pub fn written(&self) -> Written {
        Written {
            pools: self.pools.len(),
            advertisements: self.advertisements.len(),
            peers: self.peers.len(),
            bgp_advertisements: self.bgp_advertisements.len(),
        }
    }

    /// The objects as multi-document YAML, pools and peers before the advertisements, so that
    /// `kubectl apply` creates what the advertisements name before them.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        let mut documents = Vec::new();
        for pool in &self.pools {
            documents.push(serde_saphyr::to_string(pool)?);
        }
        for advertisement in &self.advertisements {
            documents.push(serde_saphyr::to_string(advertisement)?);
        }
        for peer in &self.peers {
            documents.push(serde_saphyr::to_string(peer)?);
        }
        for advertisement in &self.bgp_advertisements {
            documents.push(serde_saphyr::to_string(advertisement)?);
        }
        Ok(documents
            .iter()
            .map(|d| format!("---\n{}", d.trim_end_matches('\n')))
            .collect::<Vec<_>>()
            .join("\n")
            + if documents.is_empty() { "" } else { "\n" })
    }
}

/// Converts every document, in order.
pub fn convert(documents: &[Document]) -> Conversion {
    let mut converter = Converter::default();
    for document in documents {
        converter.document(document);
    }
    converter.finish()
}

/// What a draft object shares: where it came from and what it is called.
#[derive(Debug, Clone)]
struct Common {
    source: ObjectRef,
    namespace: Option<String>,
    /// How MetalLB (and Services' annotations) refer to it.
    metallb_name: String,
    /// The name asked for in FerroLB, before collisions.
    wanted: String,
    /// The field the name came from, for the line about it.
    name_field: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    name: String,
    /// Made for a legacy pool or peer, rather than written by the user as a named object.
    generated: bool,
    lines: Report,
    /// Lines about the object among the others, known only at the end.
    late_lines: Report,
    name_line: Option<Entry>,
    /// Lines about references to other objects, resolved at the end but shown in field order:
    /// each after the first so many of `lines`.
    ref_lines: Vec<(usize, Entry)>,
    /// Where an L2Advertisement's pool references go among its lines.
    refs_at: usize,
    dropped: bool,
}

#[derive(Debug, Clone)]
struct PoolDraft {
    common: Common,
    spec: IPAddressPoolSpec,
    /// The field each of `spec.addresses` came from.
    entry_fields: Vec<String>,
}

#[derive(Debug, Clone)]
struct PoolRef {
    field: String,
    name: String,
}

#[derive(Debug, Clone)]
struct AdvertisementDraft {
    common: Common,
    spec: L2AdvertisementSpec,
    pool_refs: Vec<PoolRef>,
    /// Which pool the generated advertisement of a legacy pool announces.
    for_pool: Option<usize>,
    /// Whether MetalLB's advertisement chose its pools at all (names or selectors).
    chose_pools: bool,
}

enum Part {
    Lines(Report),
    Pool(usize),
    Advertisement(usize),
    Peer(usize),
    BgpAdvertisement(usize),
    /// A Community object or the legacy ConfigMap's `bgp-communities`.
    Aliases(usize),
    BfdProfile(usize),
}

#[derive(Default)]
struct Converter {
    parts: Vec<Part>,
    pools: Vec<PoolDraft>,
    advertisements: Vec<AdvertisementDraft>,
    peers: Vec<bgp::PeerDraft>,
    bgp_advertisements: Vec<bgp::BgpAdvertisementDraft>,
    aliases: Vec<bgp::AliasSet>,
    bfd_profiles: Vec<bgp::BfdProfileDraft>,
    /// Pools MetalLB defined that are not carried over, by namespace and name.
    lost_pools: HashSet<(Option<String>, String)>,
    /// The same for BGPPeers.
    lost_peers: HashSet<(Option<String>, String)>,
}

impl Converter {
    fn document(&mut self, document: &Document) {
        let value = &document.value;
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let metadata_value = value.get("metadata").cloned().unwrap_or(Value::Null);
        let metadata: Result<Metadata, String> = if metadata_value.is_null() {
            Ok(Metadata::default())
        } else {
            parse(&metadata_value)
        };
        let (namespace, name) = match &metadata {
            Ok(m) => (m.namespace.clone(), m.name.clone()),
            Err(_) => (None, None),
        };
        let shown_kind = if kind.is_empty() { "(no kind)" } else { kind };
        let object = ObjectRef::new(
            shown_kind,
            namespace.as_deref(),
            name.as_deref().unwrap_or("(no name)"),
        );
        let mut lines = Report::default();
        let is_metallb = metallb::group_of(api_version) == metallb::API_GROUP;
        let is_legacy = kind == "ConfigMap"
            && api_version == "v1"
            && name.as_deref() == Some(metallb::LEGACY_CONFIGMAP_NAME)
            && value
                .pointer(&format!("/data/{}", metallb::LEGACY_CONFIGMAP_KEY))
                .is_some();
        if !is_metallb && !is_legacy {
            let detail = if kind == "Service" && api_version == "v1" {
                "FerroLB reads a Service's MetalLB annotations as they are; nothing to convert"
                    .to_owned()
            } else {
                format!(
                    "not MetalLB configuration (apiVersion {api_version:?}); skipped, from {}",
                    document.origin
                )
            };
            lines.push(&object, "", Outcome::Note, detail);
            self.parts.push(Part::Lines(lines));
            return;
        }
        let metadata = match metadata {
            Ok(metadata) => metadata,
            Err(error) => {
                lines.push(
                    &object,
                    "metadata",
                    Outcome::NotCarriedOver,
                    format!("does not read as Kubernetes metadata ({error}); the whole object is left out"),
                );
                self.parts.push(Part::Lines(lines));
                return;
            }
        };
        let Some(name) = name else {
            lines.push(
                &object,
                "metadata.name",
                Outcome::NotCarriedOver,
                format!(
                    "is missing; the whole object is left out (from {})",
                    document.origin
                ),
            );
            self.parts.push(Part::Lines(lines));
            return;
        };
        if is_legacy {
            self.legacy_config(&object, namespace, value);
            return;
        }
        let Some(kind) = Kind::from_kind(kind) else {
            lines.push(
                &object,
                "",
                Outcome::NotCarriedOver,
                format!("{api_version} {shown_kind} is not a MetalLB kind this tool knows"),
            );
            self.parts.push(Part::Lines(lines));
            return;
        };
        for key in value.as_object().into_iter().flat_map(|o| o.keys()) {
            if !matches!(
                key.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            ) {
                lines.push(
                    &object,
                    key.as_str(),
                    Outcome::NotCarriedOver,
                    format!("{}: not a field of a MetalLB object", quote(&value[key])),
                );
            }
        }
        let spec = value.get("spec").cloned().unwrap_or(Value::Null);
        let spec = if spec.is_null() {
            Value::Object(Default::default())
        } else {
            spec
        };
        match kind {
            Kind::IpAddressPool => {
                self.ip_address_pool(&object, lines, &metadata, &name, &spec);
            }
            Kind::L2Advertisement => {
                self.l2_advertisement(&object, lines, &metadata, &name, &spec);
            }
            Kind::AddressPool => {
                let kept = metadata_lines(&object, &metadata, &mut lines);
                match ProtocolPool::from_address_pool_spec(&spec, &name) {
                    Ok(pool) => {
                        self.parts.push(Part::Lines(lines));
                        self.protocol_pool(&object, namespace, pool, "spec", "metadata.name", kept);
                    }
                    Err(error) => {
                        not_readable(&object, &mut lines, "spec", &error);
                        self.parts.push(Part::Lines(lines));
                        self.lost_pools.insert((namespace, name));
                    }
                }
            }
            Kind::Bgp(BgpKind::Peer) => self.bgp_peer(&object, lines, &metadata, &name, &spec),
            Kind::Bgp(BgpKind::Advertisement) => {
                self.bgp_advertisement(&object, lines, &metadata, &name, &spec);
            }
            Kind::Bgp(BgpKind::Community) => self.community(&object, lines, &metadata, &spec),
            Kind::Bgp(BgpKind::BfdProfile) => {
                self.bfd_profile(&object, lines, &metadata, &name, &spec);
            }
            Kind::Status => {
                lines.push(
                    &object,
                    "",
                    Outcome::Note,
                    "MetalLB's status, not configuration; FerroLB writes its own",
                );
                self.parts.push(Part::Lines(lines));
            }
        }
    }

    fn ip_address_pool(
        &mut self,
        object: &ObjectRef,
        mut lines: Report,
        metadata: &Metadata,
        name: &str,
        spec: &Value,
    ) {
        let namespace = metadata.namespace.clone();
        let spec: metallb::IpAddressPoolSpec = match parse(spec) {
            Ok(spec) => spec,
            Err(error) => {
                not_readable(object, &mut lines, "spec", &error);
                self.parts.push(Part::Lines(lines));
                self.lost_pools.insert((namespace, name.to_owned()));
                return;
            }
        };
        let kept = metadata_lines(object, metadata, &mut lines);
        let (addresses, entry_fields) =
            convert_addresses(object, "spec.addresses", &spec.addresses, &mut lines);
        let auto_assign = flag(object, "spec.autoAssign", spec.auto_assign, &mut lines);
        let avoid_buggy_ips = flag(
            object,
            "spec.avoidBuggyIPs",
            spec.avoid_buggy_ips,
            &mut lines,
        );
        let allocation = spec
            .service_allocation
            .as_ref()
            .map(|allocation| convert_allocation(object, allocation, &mut lines))
            .transpose();
        for (field, value) in &spec.unknown {
            lines.push(
                object,
                join("spec", field),
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB's IPAddressPool has no such field",
                    quote(value)
                ),
            );
        }
        let allocation = match allocation {
            Ok(allocation) => allocation.flatten(),
            Err(why) => {
                lines.push(object, "", Outcome::NotCarriedOver, why);
                self.parts.push(Part::Lines(lines));
                self.lost_pools.insert((namespace, name.to_owned()));
                return;
            }
        };
        if addresses.is_empty() {
            lines.push(
                object,
                "",
                Outcome::NotCarriedOver,
                "has no address entry FerroLB accepts; the whole pool is left out",
            );
            self.parts.push(Part::Lines(lines));
            self.lost_pools.insert((namespace, name.to_owned()));
            return;
        }
        let draft = PoolDraft {
            common: Common::new(object, namespace, name, name, "metadata.name", kept, lines),
            spec: IPAddressPoolSpec {
                addresses,
                auto_assign: auto_assign.unwrap_or(true),
                avoid_buggy_ips: avoid_buggy_ips.unwrap_or(false),
                service_allocation: allocation,
            },
            entry_fields,
        };
        self.parts.push(Part::Pool(self.pools.len()));
        self.pools.push(draft);
    }

    fn l2_advertisement(
        &mut self,
        object: &ObjectRef,
        mut lines: Report,
        metadata: &Metadata,
        name: &str,
        spec: &Value,
    ) {
        let spec: metallb::L2AdvertisementSpec = match parse(spec) {
            Ok(spec) => spec,
            Err(error) => {
                not_readable(object, &mut lines, "spec", &error);
                self.parts.push(Part::Lines(lines));
                return;
            }
        };
        let kept = metadata_lines(object, metadata, &mut lines);
        let refs_at = lines.entries.len();
        let schema = CrdSchema::l2_advertisement();
        let pool_refs = spec
            .ip_address_pools
            .iter()
            .enumerate()
            .map(|(index, pool)| PoolRef {
                field: format!("spec.ipAddressPools[{index}]"),
                name: pool.clone(),
            })
            .collect();
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
        let interfaces = convert_interfaces(object, &spec.interfaces, &mut lines);
        for (index, selector) in spec.service_selectors.iter().enumerate() {
            lines.push(
                object,
                format!("spec.serviceSelectors[{index}]"),
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB has no per-Service advertisements; it announces every Service of the advertisement's pools",
                    quote(selector)
                ),
            );
        }
        for (index, preference) in spec.preferred_node_selectors.iter().enumerate() {
            lines.push(
                object,
                format!("spec.preferredNodeSelectors[{index}]"),
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB has no node preferences; it elects the announcing node among the selected nodes itself",
                    quote(preference)
                ),
            );
        }
        for (field, value) in &spec.unknown {
            lines.push(
                object,
                join("spec", field),
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB's L2Advertisement has no such field",
                    quote(value)
                ),
            );
        }
        let lost = [
            (!spec.node_selectors.is_empty() && node_selectors.is_empty())
                .then_some("every node selector"),
            (!spec.interfaces.is_empty() && interfaces.is_empty()).then_some("every interface"),
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
        let mut common = Common::new(
            object,
            metadata.namespace.clone(),
            name,
            name,
            "metadata.name",
            kept,
            lines,
        );
        common.refs_at = refs_at;
        let draft = AdvertisementDraft {
            common,
            spec: L2AdvertisementSpec {
                ip_address_pools: Vec::new(),
                ip_address_pool_selectors: pool_selectors,
                node_selectors,
                interfaces,
                gratuitous_interval: None,
            },
            pool_refs,
            for_pool: None,
            chose_pools: !spec.ip_address_pools.is_empty()
                || !spec.ip_address_pool_selectors.is_empty(),
        };
        self.parts
            .push(Part::Advertisement(self.advertisements.len()));
        self.advertisements.push(draft);
    }

    fn legacy_config(&mut self, object: &ObjectRef, namespace: Option<String>, value: &Value) {
        let mut lines = Report::default();
        let base = format!("data.{}", metallb::LEGACY_CONFIGMAP_KEY);
        let text = value
            .pointer(&format!("/data/{}", metallb::LEGACY_CONFIGMAP_KEY))
            .and_then(Value::as_str);
        let config = match text.map(metallb::LegacyConfig::parse) {
            Some(Ok(config)) => config,
            Some(Err(error)) => {
                lines.push(
                    object,
                    base,
                    Outcome::NotCarriedOver,
                    format!("is not a MetalLB configuration: {error}"),
                );
                self.parts.push(Part::Lines(lines));
                return;
            }
            None => {
                lines.push(
                    object,
                    base,
                    Outcome::NotCarriedOver,
                    "is not text; MetalLB reads its configuration as YAML text",
                );
                self.parts.push(Part::Lines(lines));
                return;
            }
        };
        if let Some(data) = value.get("data").and_then(Value::as_object) {
            for key in data.keys().filter(|k| *k != metallb::LEGACY_CONFIGMAP_KEY) {
                lines.push(
                    object,
                    format!("data.{key}"),
                    Outcome::Note,
                    "is not read by MetalLB; ignored",
                );
            }
        }
        self.parts.push(Part::Lines(lines));
        for (index, pool) in config.address_pools.iter().enumerate() {
            let field = format!("{base}.address-pools[{index}]");
            match ProtocolPool::from_legacy(pool) {
                Ok(pool) => {
                    let kept = Kept {
                        labels: BTreeMap::new(),
                        annotations: BTreeMap::new(),
                    };
                    let name_field = format!("{field}.name");
                    self.protocol_pool(object, namespace.clone(), pool, &field, &name_field, kept);
                }
                Err(error) => {
                    let mut lines = Report::default();
                    not_readable(object, &mut lines, &field, &error);
                    self.parts.push(Part::Lines(lines));
                }
            }
        }
        self.legacy_bgp(object, namespace, &base, &config);
        let mut lines = Report::default();
        for (field, value) in &config.unknown {
            lines.push(
                object,
                join(&base, field),
                Outcome::NotCarriedOver,
                format!(
                    "{}: not part of MetalLB's configuration this tool knows",
                    quote(value)
                ),
            );
        }
        self.parts.push(Part::Lines(lines));
    }

    /// A pool that names its protocol: from the legacy ConfigMap (`field` is its place there) or
    /// an AddressPool resource (`field` is `spec`).
    fn protocol_pool(
        &mut self,
        object: &ObjectRef,
        namespace: Option<String>,
        pool: ProtocolPool,
        field: &str,
        name_field: &str,
        kept: Kept,
    ) {
        let mut lines = Report::default();
        let spelling = pool.spelling;
        let Some(metallb_name) = pool.name.clone().filter(|n| !n.is_empty()) else {
            lines.push(
                object,
                join(field, "name"),
                Outcome::NotCarriedOver,
                "is missing, which MetalLB refuses too; the whole pool is left out",
            );
            self.parts.push(Part::Lines(lines));
            return;
        };
        let wanted = object_name(&metallb_name);
        let addresses_field = join(field, &spelling.field("addresses"));
        let (addresses, entry_fields) =
            convert_addresses(object, &addresses_field, &pool.addresses, &mut lines);
        let auto_assign = flag(
            object,
            &join(field, &spelling.field("auto-assign")),
            pool.auto_assign,
            &mut lines,
        );
        let avoid_buggy_ips = flag(
            object,
            &join(field, &spelling.field("avoid-buggy-ips")),
            pool.avoid_buggy_ips,
            &mut lines,
        );
        let protocol_field = join(field, "protocol");
        let layer2 = pool.protocol.as_deref() == Some("layer2");
        let is_bgp = pool.protocol.as_deref() == Some("bgp");
        let advertisements_field = join(field, &spelling.field("bgp-advertisements"));
        match pool.protocol.as_deref() {
            Some("layer2") => {}
            // With no advertisements listed, the protocol line is the name line of the one
            // MetalLB made by default.
            Some("bgp") if pool.bgp_advertisements.is_empty() => {}
            Some("bgp") => lines.push(
                object,
                protocol_field.clone(),
                Outcome::Converted,
                format!(
                    "\"bgp\": each of {advertisements_field} becomes a BGPAdvertisement of the pool"
                ),
            ),
            Some(other) => lines.push(
                object,
                protocol_field.clone(),
                Outcome::NotCarriedOver,
                format!(
                    "{other:?} is neither \"layer2\" nor \"bgp\", which MetalLB refuses too; the pool is written without an advertisement"
                ),
            ),
            None => lines.push(
                object,
                protocol_field.clone(),
                Outcome::NotCarriedOver,
                "is missing, which MetalLB refuses too; the pool is written without an advertisement",
            ),
        }
        if !is_bgp {
            for (index, advertisement) in pool.bgp_advertisements.iter().enumerate() {
                lines.push(
                    object,
                    format!("{advertisements_field}[{index}]"),
                    Outcome::NotCarriedOver,
                    format!(
                        "{}: the pool is not announced with BGP, so MetalLB ignored it too",
                        quote(advertisement)
                    ),
                );
            }
        }
        for (key, value) in &pool.unknown {
            lines.push(
                object,
                join(field, key),
                Outcome::NotCarriedOver,
                format!("{}: not a field of a MetalLB address pool", quote(value)),
            );
        }
        if addresses.is_empty() {
            lines.push(
                object,
                field,
                Outcome::NotCarriedOver,
                "has no address entry FerroLB accepts; the whole pool is left out",
            );
            self.parts.push(Part::Lines(lines));
            self.lost_pools.insert((namespace, metallb_name));
            return;
        }
        let pool_index = self.pools.len();
        self.pools.push(PoolDraft {
            common: Common::new(
                object,
                namespace.clone(),
                &metallb_name,
                &wanted,
                name_field,
                kept,
                lines,
            ),
            spec: IPAddressPoolSpec {
                addresses,
                auto_assign: auto_assign.unwrap_or(true),
                avoid_buggy_ips: avoid_buggy_ips.unwrap_or(false),
                service_allocation: None,
            },
            entry_fields,
        });
        self.parts.push(Part::Pool(pool_index));
        if is_bgp {
            self.pool_bgp_advertisements(
                object,
                namespace.clone(),
                pool_index,
                &protocol_field,
                &advertisements_field,
                spelling,
                &pool.bgp_advertisements,
            );
        }
        if layer2 {
            let mut common = Common::new(
                object,
                namespace,
                &metallb_name,
                &wanted,
                &protocol_field,
                Kept {
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                },
                Report::default(),
            );
            common.generated = true;
            self.parts
                .push(Part::Advertisement(self.advertisements.len()));
            self.advertisements.push(AdvertisementDraft {
                common,
                spec: L2AdvertisementSpec::default(),
                pool_refs: Vec::new(),
                for_pool: Some(pool_index),
                chose_pools: true,
            });
        }
    }

    fn finish(mut self) -> Conversion {
        self.drop_duplicates();
        self.drop_duplicate_bgp_objects();
        self.name_pools();
        self.name_advertisements();
        self.name_peers();
        self.name_bgp_advertisements();
        self.resolve_pool_refs();
        self.resolve_bgp_refs();
        self.resolve_bfd_profiles();
        self.resolve_communities();
        let pools = self.build_pools();
        let advertisements = self.build_advertisements();
        let peers = self.build_peers();
        let bgp_advertisements = self.build_bgp_advertisements();
        self.judge_overlaps(&pools);
        self.judge_reach(&pools, &advertisements, &bgp_advertisements);
        self.judge_aggregation(&pools, &bgp_advertisements);
        let mut report = Report::default();
        for part in std::mem::take(&mut self.parts) {
            let common = match part {
                Part::Lines(lines) => {
                    report.extend(lines);
                    continue;
                }
                Part::Aliases(i) => {
                    report.extend(self.aliases[i].render());
                    continue;
                }
                Part::BfdProfile(i) => {
                    report.extend(self.bfd_profiles[i].render());
                    continue;
                }
                Part::Pool(i) => &mut self.pools[i].common,
                Part::Advertisement(i) => &mut self.advertisements[i].common,
                Part::Peer(i) => &mut self.peers[i].common,
                Part::BgpAdvertisement(i) => &mut self.bgp_advertisements[i].common,
            };
            report.entries.extend(common.name_line.take());
            let mut ref_lines = std::mem::take(&mut common.ref_lines);
            // Stable: references to the same place keep their order.
            ref_lines.sort_by_key(|(at, _)| *at);
            let mut ref_lines = ref_lines.into_iter().peekable();
            for (index, line) in std::mem::take(&mut common.lines)
                .entries
                .into_iter()
                .enumerate()
            {
                while let Some((_, entry)) = ref_lines.next_if(|(at, _)| *at <= index) {
                    report.entries.push(entry);
                }
                report.entries.push(line);
            }
            report.entries.extend(ref_lines.map(|(_, entry)| entry));
            report.extend(std::mem::take(&mut common.late_lines));
        }
        Conversion {
            pools: pools.into_iter().map(|(_, pool)| pool).collect(),
            advertisements: advertisements.into_iter().map(|(_, a)| a).collect(),
            peers: peers.into_iter().map(|(_, peer)| peer).collect(),
            bgp_advertisements: bgp_advertisements.into_iter().map(|(_, a)| a).collect(),
            report,
        }
    }

    /// The same MetalLB object twice (a file given twice, a pool in both the legacy ConfigMap and
    /// a resource): the first definition is the one converted.
    fn drop_duplicates(&mut self) {
        let mut seen: HashMap<(Option<String>, String), ObjectRef> = HashMap::new();
        for pool in &mut self.pools {
            let key = (
                pool.common.namespace.clone(),
                pool.common.metallb_name.clone(),
            );
            if let Some(first) = seen.get(&key) {
                pool.common.dropped = true;
                let detail = format!(
                    "defines pool {:?} a second time (first in {first}); only the first is carried over",
                    pool.common.metallb_name
                );
                pool.common
                    .lines
                    .push(&pool.common.source, "", Outcome::NotCarriedOver, detail);
            } else {
                seen.insert(key, pool.common.source.clone());
            }
        }
        let mut seen: HashMap<(Option<String>, String), ObjectRef> = HashMap::new();
        for index in 0..self.advertisements.len() {
            let for_dropped_pool = self.advertisements[index]
                .for_pool
                .is_some_and(|pool| self.pools[pool].common.dropped);
            let advertisement = &mut self.advertisements[index];
            if for_dropped_pool {
                advertisement.common.dropped = true;
                continue;
            }
            if advertisement.common.generated {
                continue;
            }
            let key = (
                advertisement.common.namespace.clone(),
                advertisement.common.metallb_name.clone(),
            );
            if let Some(first) = seen.get(&key) {
                advertisement.common.dropped = true;
                let detail = format!(
                    "is defined a second time (first in {first}); only the first is carried over"
                );
                advertisement.common.lines.push(
                    &advertisement.common.source,
                    "",
                    Outcome::NotCarriedOver,
                    detail,
                );
            } else {
                seen.insert(key, advertisement.common.source.clone());
            }
        }
    }

    fn name_pools(&mut self) {
        let live: Vec<usize> = (0..self.pools.len())
            .filter(|&i| !self.pools[i].common.dropped)
            .collect();
        let wanted: Vec<(Option<String>, String)> = live
            .iter()
            .map(|&i| {
                let c = &self.pools[i].common;
                (c.namespace.clone(), c.wanted.clone())
            })
            .collect();
        let names = cluster_names(&wanted);
        for (&i, name) in live.iter().zip(names) {
            let others: Vec<String> = live
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| &self.pools[j].common)
                .filter(|c| c.wanted == self.pools[i].common.wanted)
                .filter_map(|c| c.namespace.clone())
                .filter(|ns| Some(ns) != self.pools[i].common.namespace.as_ref())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let common = &mut self.pools[i].common;
            common.name = name;
            common.name_line = Some(name_line(common, "IPAddressPool", &others));
        }
    }

    fn name_advertisements(&mut self) {
        let (generated, written): (Vec<usize>, Vec<usize>) = (0..self.advertisements.len())
            .filter(|&i| !self.advertisements[i].common.dropped)
            .partition(|&i| self.advertisements[i].common.generated);
        let wanted: Vec<(Option<String>, String)> = written
            .iter()
            .map(|&i| {
                let c = &self.advertisements[i].common;
                (c.namespace.clone(), c.wanted.clone())
            })
            .collect();
        let names = cluster_names(&wanted);
        let mut taken: HashSet<String> = names.iter().cloned().collect();
        for (&i, name) in written.iter().zip(names) {
            let others: Vec<String> = written
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| &self.advertisements[j].common)
                .filter(|c| c.wanted == self.advertisements[i].common.wanted)
                .filter_map(|c| c.namespace.clone())
                .filter(|ns| Some(ns) != self.advertisements[i].common.namespace.as_ref())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let common = &mut self.advertisements[i].common;
            common.name = name;
            common.name_line = Some(name_line(common, "L2Advertisement", &others));
        }
        // A generated advertisement is called after its pool, and yields to the user's own.
        for i in generated {
            let Some(pool) = self.advertisements[i].for_pool else {
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
            let common = &mut self.advertisements[i].common;
            common.name_line = Some(Entry {
                object: common.source.clone(),
                field: common.name_field.clone(),
                detail: format!(
                    "\"layer2\" becomes L2Advertisement {name:?}, announcing IPAddressPool {pool:?} from every node and interface, as MetalLB did"
                ),
                outcome: Outcome::Converted,
            });
            common.name = name;
        }
    }

    /// The pools references can name.
    fn pool_targets(&self) -> Targets {
        let mut targets = Targets::new("IPAddressPool", "pool", self.lost_pools.clone());
        for pool in self.pools.iter().filter(|p| !p.common.dropped) {
            targets.add(&pool.common);
        }
        targets
    }

    fn resolve_pool_refs(&mut self) {
        let targets = self.pool_targets();
        let schema = CrdSchema::l2_advertisement();
        for index in 0..self.advertisements.len() {
            if self.advertisements[index].common.dropped {
                continue;
            }
            if let Some(pool) = self.advertisements[index].for_pool {
                let name = self.pools[pool].common.name.clone();
                self.advertisements[index].spec.ip_address_pools = vec![name];
                continue;
            }
            let advertisement = &mut self.advertisements[index];
            let c = &mut advertisement.common;
            let at = c.refs_at;
            let names = targets.resolve(
                c,
                &advertisement.pool_refs,
                at,
                schema,
                "spec.ipAddressPools",
                "L2Advertisements",
            );
            if !advertisement.pool_refs.is_empty()
                && names.is_empty()
                && advertisement.spec.ip_address_pool_selectors.is_empty()
            {
                c.dropped = true;
                c.push_ref(
                    at,
                    "",
                    Outcome::NotCarriedOver,
                    "every pool it names is lost, and without them it would announce every pool; the whole advertisement is left out",
                );
            }
            advertisement.spec.ip_address_pools = names;
        }
    }

    fn build_pools(&mut self) -> Vec<(usize, IPAddressPool)> {
        let schema = CrdSchema::ip_address_pool();
        let mut built = Vec::new();
        for (index, draft) in self.pools.iter_mut().enumerate() {
            if draft.common.dropped {
                continue;
            }
            let mut pool = IPAddressPool::new(&draft.common.name, draft.spec.clone());
            pool.metadata = draft.common.object_meta();
            let problems = schema.check(
                "spec",
                &serde_json::to_value(&pool.spec).unwrap_or_default(),
            );
            if let Some(why) = draft.common.refused(&problems) {
                draft
                    .common
                    .lines
                    .push(&draft.common.source, "", Outcome::NotCarriedOver, why);
                draft.common.dropped = true;
                continue;
            }
            built.push((index, pool));
        }
        built
    }

    fn build_advertisements(&mut self) -> Vec<(usize, L2Advertisement)> {
        let schema = CrdSchema::l2_advertisement();
        let mut built = Vec::new();
        for (index, draft) in self.advertisements.iter_mut().enumerate() {
            if draft.common.dropped {
                continue;
            }
            if draft.for_pool.is_some_and(|p| self.pools[p].common.dropped) {
                continue;
            }
            let mut advertisement = L2Advertisement::new(&draft.common.name, draft.spec.clone());
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

    /// FerroLB gives addresses two pools claim to the older one only; created together, that is
    /// the one `kubectl apply` creates first, which is the first in the output.
    fn judge_overlaps(&mut self, pools: &[(usize, IPAddressPool)]) {
        let sets: Vec<AddressSet> = pools
            .iter()
            .map(|(_, pool)| pool.spec.address_set().unwrap_or_default())
            .collect();
        for (later, (draft_index, pool)) in pools.iter().enumerate() {
            for (entry_index, entry) in pool.spec.addresses.iter().enumerate() {
                let Ok(range) = entry.parse() else { continue };
                let entry_set = AddressSet::from_ranges([range]);
                let conflict = (0..later).find_map(|earlier| {
                    sets[earlier]
                        .first_common(&entry_set)
                        .map(|ip| (earlier, ip))
                });
                if let Some((earlier, ip)) = conflict {
                    let draft = &mut self.pools[*draft_index];
                    let field = draft.entry_fields[entry_index].clone();
                    let other = &pools[earlier].1;
                    let detail = format!(
                        "{:?} overlaps IPAddressPool {:?} (first common address {ip}); MetalLB refuses overlapping pools, and FerroLB gives such addresses to the older pool only, so this pool does not get them",
                        entry.0,
                        other.metadata.name.as_deref().unwrap_or_default()
                    );
                    draft.common.late_lines.push(
                        &draft.common.source,
                        field,
                        Outcome::NotCarriedOver,
                        detail,
                    );
                }
            }
        }
    }

    /// Cluster-scoped advertisements see every pool, where MetalLB's saw those of their own
    /// namespace; and a pool no advertisement selects is assigned but never announced.
    fn judge_reach(
        &mut self,
        pools: &[(usize, IPAddressPool)],
        advertisements: &[(usize, L2Advertisement)],
        bgp_advertisements: &[(usize, BGPAdvertisement)],
    ) {
        for (draft_index, advertisement) in advertisements {
            let draft = &self.advertisements[*draft_index];
            if draft.for_pool.is_some() {
                continue;
            }
            let spec = &advertisement.spec;
            let line = self.reach_line(
                pools,
                &draft.common.namespace,
                draft.chose_pools,
                &spec.ip_address_pools,
                &spec.ip_address_pool_selectors,
            );
            let draft = &mut self.advertisements[*draft_index];
            if let Some((field, detail)) = line {
                let source = draft.common.source.clone();
                draft
                    .common
                    .late_lines
                    .push(&source, field, Outcome::Changed, detail);
            }
        }
        for (draft_index, advertisement) in bgp_advertisements {
            let draft = &self.bgp_advertisements[*draft_index];
            if draft.for_pool.is_some() {
                continue;
            }
            let spec = &advertisement.spec;
            let line = self.reach_line(
                pools,
                &draft.common.namespace,
                draft.chose_pools,
                &spec.ip_address_pools,
                &spec.ip_address_pool_selectors,
            );
            let draft = &mut self.bgp_advertisements[*draft_index];
            if let Some((field, detail)) = line {
                let source = draft.common.source.clone();
                draft
                    .common
                    .late_lines
                    .push(&source, field, Outcome::Changed, detail);
            }
        }
        for (pool_index, pool) in pools {
            let labels = pool.metadata.labels.clone().unwrap_or_default();
            let name = pool.metadata.name.as_deref().unwrap_or_default();
            let announced = advertisements
                .iter()
                .any(|(_, a)| a.spec.selects_pool(name, &labels))
                || bgp_advertisements
                    .iter()
                    .any(|(_, a)| a.spec.selects_pool(name, &labels));
            let draft = &mut self.pools[*pool_index];
            if !announced {
                draft.common.late_lines.push(
                    &draft.common.source,
                    "",
                    Outcome::Note,
                    format!("no L2Advertisement or BGPAdvertisement in the input selects IPAddressPool {name:?}: FerroLB assigns its addresses but announces them nowhere"),
                );
            }
        }
    }

    /// The line for an advertisement of `namespace` that now also reaches pools converted from
    /// other namespaces, if it does.
    fn reach_line(
        &self,
        pools: &[(usize, IPAddressPool)],
        namespace: &Option<String>,
        chose_pools: bool,
        named: &[String],
        selectors: &[LabelSelector],
    ) -> Option<(&'static str, String)> {
        let reached: Vec<String> = pools
            .iter()
            .filter(|(pool_index, _)| self.pools[*pool_index].common.namespace != *namespace)
            .filter(|(_, pool)| {
                let labels = pool.metadata.labels.clone().unwrap_or_default();
                (named.is_empty() && selectors.is_empty())
                    || selectors.iter().any(|s| s.matches(&labels))
            })
            .map(|(pool_index, pool)| {
                let namespace = self.pools[*pool_index].common.namespace.as_deref();
                format!(
                    "{:?} (from {})",
                    pool.metadata.name.as_deref().unwrap_or_default(),
                    namespace
                        .map(|n| format!("namespace {n}"))
                        .unwrap_or_else(|| "no namespace".to_owned())
                )
            })
            .collect();
        if reached.is_empty() {
            return None;
        }
        let (field, how) = if chose_pools {
            ("spec.ipAddressPoolSelectors", "selects")
        } else {
            ("spec", "names no pools, so announces every pool, including")
        };
        Some((
            field,
            format!(
                "{how} IPAddressPools converted from other namespaces: {}; FerroLB's objects are cluster-scoped, MetalLB's saw their own namespace only",
                reached.join(", ")
            ),
        ))
    }
}

impl Common {
    fn new(
        source: &ObjectRef,
        namespace: Option<String>,
        metallb_name: &str,
        wanted: &str,
        name_field: &str,
        kept: Kept,
        lines: Report,
    ) -> Self {
        Self {
            source: source.clone(),
            namespace,
            metallb_name: metallb_name.to_owned(),
            wanted: wanted.to_owned(),
            name_field: name_field.to_owned(),
            labels: kept.labels,
            annotations: kept.annotations,
            name: wanted.to_owned(),
            generated: false,
            lines,
            late_lines: Report::default(),
            name_line: None,
            ref_lines: Vec::new(),
            refs_at: 0,
            dropped: false,
        }
    }

    /// A line about a reference, shown after the first `at` of `lines`.
    fn push_ref(
        &mut self,
        at: usize,
        field: impl Into<String>,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        let entry = Entry {
            object: self.source.clone(),
            field: field.into(),
            detail: detail.into(),
            outcome,
        };
        self.ref_lines.push((at, entry));
    }

    fn object_meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
            ..ObjectMeta::default()
        }
    }

    /// Why the built object cannot be written: it breaks FerroLB's schema, or its name is no
    /// object name. Should never happen; it is the last check before writing.
    fn refused(&self, problems: &[String]) -> Option<String> {
        let mut problems = problems.to_vec();
        if !is_object_name(&self.name) {
            problems.push(format!("{:?} is not an object name", self.name));
        }
        (!problems.is_empty()).then(|| {
            format!(
                "FerroLB's schema refuses the converted object ({}); the object is left out",
                problems.join("; ")
            )
        })
    }
}

/// The objects of one kind that references (an advertisement's pools or peers) can name.
struct Targets {
    kind: &'static str,
    noun: &'static str,
    by_metallb_name: HashMap<(Option<String>, String), String>,
    by_name: HashMap<String, Option<String>>,
    /// Objects MetalLB had that are not carried over, by namespace and name.
    lost: HashSet<(Option<String>, String)>,
}

impl Targets {
    fn new(
        kind: &'static str,
        noun: &'static str,
        lost: HashSet<(Option<String>, String)>,
    ) -> Self {
        Self {
            kind,
            noun,
            by_metallb_name: HashMap::new(),
            by_name: HashMap::new(),
            lost,
        }
    }

    fn add(&mut self, c: &Common) {
        if !c.generated {
            self.by_metallb_name.insert(
                (c.namespace.clone(), c.metallb_name.clone()),
                c.name.clone(),
            );
        }
        self.by_name.insert(c.name.clone(), c.namespace.clone());
    }

    /// The FerroLB names `refs` (made in `c`'s namespace) stand for, with a line for each at
    /// `at`; `list` is the list's place in FerroLB's schema, `holders` the kind holding it.
    fn resolve(
        &self,
        c: &mut Common,
        refs: &[PoolRef],
        at: usize,
        schema: &CrdSchema,
        list: &str,
        holders: &str,
    ) -> Vec<String> {
        let (kind, noun) = (self.kind, self.noun);
        let max = schema.max_items(list);
        let mut names: Vec<String> = Vec::new();
        for reference in refs {
            let key = (c.namespace.clone(), reference.name.clone());
            let (name, outcome, detail) = match self.by_metallb_name.get(&key) {
                Some(name) if *name == reference.name => {
                    (name.clone(), Outcome::Converted, String::new())
                }
                Some(name) => (
                    name.clone(),
                    Outcome::Changed,
                    format!("now names {kind} {name:?}, as the {noun} was renamed"),
                ),
                None if !schema
                    .check(&format!("{list}[]"), &Value::from(reference.name.clone()))
                    .is_empty() =>
                {
                    c.push_ref(
                        at,
                        reference.field.clone(),
                        Outcome::NotCarriedOver,
                        format!("{:?} is not a {noun} name FerroLB accepts", reference.name),
                    );
                    continue;
                }
                None if self.lost.contains(&key) => (
                    reference.name.clone(),
                    Outcome::Converted,
                    format!(
                        "names a {noun} that is not carried over (see its lines); kept as written"
                    ),
                ),
                None => match self.by_name.get(&reference.name) {
                    Some(other_namespace) => (
                        reference.name.clone(),
                        Outcome::Changed,
                        format!(
                            "names no {noun} of its own namespace, but FerroLB's names are cluster-wide: it now selects the {noun} of that name from {}",
                            other_namespace
                                .as_deref()
                                .map(|n| format!("namespace {n}"))
                                .unwrap_or_else(|| "no namespace".to_owned())
                        ),
                    ),
                    None => (
                        reference.name.clone(),
                        Outcome::Converted,
                        format!("names no {noun} in the input; kept as written"),
                    ),
                },
            };
            let shown = format!("{:?}", reference.name);
            let detail = if detail.is_empty() {
                shown
            } else {
                format!("{shown} {detail}")
            };
            if names.contains(&name) {
                c.push_ref(
                    at,
                    reference.field.clone(),
                    Outcome::Changed,
                    format!("{detail}; listed twice, written once"),
                );
                continue;
            }
            if let Some(max) = max.filter(|max| names.len() >= *max) {
                c.push_ref(
                    at,
                    reference.field.clone(),
                    Outcome::NotCarriedOver,
                    format!("{detail}; FerroLB's {holders} name at most {max} {noun}s"),
                );
                continue;
            }
            c.push_ref(at, reference.field.clone(), outcome, detail);
            names.push(name);
        }
        names
    }
}

fn name_line(common: &Common, kind: &str, other_namespaces: &[String]) -> Entry {
    let metallb = &common.metallb_name;
    let name = &common.name;
    let (outcome, detail) = if *name == *metallb {
        let detail = match common.namespace {
            Some(_) => format!("{metallb:?} becomes the cluster-scoped {kind} {name:?}"),
            None => format!("{metallb:?}"),
        };
        (Outcome::Converted, detail)
    } else {
        let why = if !other_namespaces.is_empty() {
            let (noun, verb) = if other_namespaces.len() == 1 {
                ("namespace", "has")
            } else {
                ("namespaces", "have")
            };
            format!(
                "{noun} {} {verb} an {kind} {:?} too, and FerroLB's {kind}s are cluster-scoped",
                other_namespaces.join(", "),
                common.wanted
            )
        } else if common.wanted != *metallb {
            "Kubernetes object names are lower case, of letters, digits, '-' and '.'".to_owned()
        } else {
            format!("another FerroLB {kind} is called {:?}", common.wanted)
        };
        let services = if kind == "IPAddressPool" {
            format!(
                "; Services that request the pool by name (metallb.io/address-pool: {metallb}) must name {name:?} instead"
            )
        } else {
            String::new()
        };
        (
            Outcome::Changed,
            format!("{metallb:?} becomes {kind} {name:?}: {why}{services}"),
        )
    };
    Entry {
        object: common.source.clone(),
        field: common.name_field.clone(),
        detail,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use address::tests::metallb_entry;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc(value: Value) -> Document {
        Document {
            origin: "test".to_owned(),
            value,
        }
    }

    fn pool(namespace: &str, name: &str, addresses: &[&str]) -> Document {
        doc(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"addresses": addresses},
        }))
    }

    fn lines(conversion: &Conversion) -> Vec<String> {
        conversion
            .report
            .entries
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn has_line(conversion: &Conversion, needle: &str) -> bool {
        lines(conversion).iter().any(|l| l.contains(needle))
    }

    #[test]
    fn a_pool_becomes_a_cluster_scoped_pool_with_its_fields() {
        let conversion = convert(&[doc(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lan", "namespace": "metallb-system", "labels": {"site": "a"}},
            "spec": {
                "addresses": ["198.51.100.0/24", "2001:db8:1::/64"],
                "autoAssign": false, "avoidBuggyIPs": true,
                "serviceAllocation": {"priority": 5, "namespaces": ["shop"],
                    "serviceSelectors": [{"matchLabels": {"expose": "lan"}}]},
            },
        }))]);
        assert_eq!(conversion.pools.len(), 1);
        let pool = &conversion.pools[0];
        assert_eq!(pool.metadata.name.as_deref(), Some("lan"));
        assert_eq!(pool.metadata.namespace, None);
        assert!(!pool.spec.auto_assign && pool.spec.avoid_buggy_ips);
        let allocation = pool.spec.service_allocation.as_ref().unwrap();
        assert_eq!(allocation.priority, Some(5));
        assert_eq!(allocation.namespaces, ["shop"]);
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn priority_zero_is_no_priority() {
        let conversion = convert(&[doc(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lan", "namespace": "metallb-system"},
            "spec": {"addresses": ["198.51.100.0/24"], "serviceAllocation": {"priority": 0}},
        }))]);
        assert_eq!(conversion.pools[0].spec.service_allocation, None);
        assert!(has_line(
            &conversion,
            "priority 0 is MetalLB's \"no priority\""
        ));
    }

    #[test]
    fn the_same_pool_name_in_two_namespaces_is_renamed_and_references_follow() {
        let advertisement = |namespace: &str| {
            doc(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "adv", "namespace": namespace},
                "spec": {"ipAddressPools": ["lan"]},
            }))
        };
        let conversion = convert(&[
            pool("site-a", "lan", &["198.51.100.0/25"]),
            pool("site-b", "lan", &["198.51.100.128/25"]),
            advertisement("site-a"),
            advertisement("site-b"),
        ]);
        let names: Vec<_> = conversion
            .pools
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["site-a-lan", "site-b-lan"]);
        let advertised: Vec<_> = conversion
            .advertisements
            .iter()
            .map(|a| {
                (
                    a.metadata.name.clone().unwrap(),
                    a.spec.ip_address_pools.clone(),
                )
            })
            .collect();
        assert_eq!(
            advertised,
            [
                ("site-a-adv".to_owned(), vec!["site-a-lan".to_owned()]),
                ("site-b-adv".to_owned(), vec!["site-b-lan".to_owned()])
            ]
        );
        assert!(has_line(
            &conversion,
            "IPAddressPool site-a/lan: metadata.name \"lan\" becomes IPAddressPool \"site-a-lan\": namespace site-b has an IPAddressPool \"lan\" too"
        ));
        assert!(conversion.report.complete());
    }

    #[test]
    fn overlapping_pools_are_reported_on_the_later_one() {
        let conversion = convert(&[
            pool("metallb-system", "a", &["198.51.100.0/24"]),
            pool("metallb-system", "b", &["198.51.100.128/25"]),
        ]);
        assert!(has_line(
            &conversion,
            "IPAddressPool metallb-system/b: spec.addresses[0] \"198.51.100.128/25\" overlaps IPAddressPool \"a\" (first common address 198.51.100.128)"
        ));
        assert!(!conversion.report.complete());
    }

    #[test]
    fn losing_every_selector_never_widens_an_advertisement() {
        let conversion = convert(&[doc(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "adv", "namespace": "metallb-system"},
            "spec": {"nodeSelectors": [{"matchExpressions": [{"key": "zone", "operator": "In"}]}]},
        }))]);
        assert!(conversion.advertisements.is_empty());
        assert!(has_line(&conversion, "spec.nodeSelectors[0]"));
        assert!(has_line(&conversion, "every node selector is lost"));
    }

    #[test]
    fn legacy_pools_get_an_advertisement_of_their_protocol() {
        let config = "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [198.51.100.0/25]\n- name: Edge_Pool\n  protocol: bgp\n  addresses: [198.51.100.128/25]\n  bgp-advertisements:\n  - aggregation-length: 32\npeers:\n- peer-address: 203.0.113.1\n  peer-asn: 64501\n  my-asn: 64500\n";
        let conversion = convert(&[doc(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config", "namespace": "metallb-system"},
            "data": {"config": config},
        }))]);
        let names: Vec<_> = conversion
            .pools
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["lan", "edge-pool"]);
        assert_eq!(conversion.advertisements.len(), 1);
        assert_eq!(conversion.advertisements[0].spec.ip_address_pools, ["lan"]);
        assert_eq!(conversion.bgp_advertisements.len(), 1);
        assert_eq!(
            conversion.bgp_advertisements[0].spec.ip_address_pools,
            ["edge-pool"]
        );
        assert_eq!(conversion.peers.len(), 1);
        assert_eq!(conversion.peers[0].spec.peer_address, "203.0.113.1");
        assert!(has_line(
            &conversion,
            "data.config.peers[0] becomes BGPPeer \"203.0.113.1\", named after its address (converted)"
        ));
        assert!(conversion.report.complete(), "{:#?}", lines(&conversion));
    }

    #[test]
    fn an_advertisement_made_for_a_legacy_pool_yields_its_name_to_the_users_own() {
        let conversion = convert(&[
            doc(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "config", "namespace": "metallb-system"},
                "data": {"config": "address-pools:\n- name: office\n  protocol: layer2\n  addresses: [198.51.100.0/24]\n"},
            })),
            doc(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "office", "namespace": "metallb-system"},
                "spec": {"ipAddressPools": ["office"], "interfaces": ["eth1"]},
            })),
        ]);
        let advertisements: Vec<_> = conversion
            .advertisements
            .iter()
            .map(|a| {
                (
                    a.metadata.name.clone().unwrap(),
                    a.spec.ip_address_pools.clone(),
                )
            })
            .collect();
        assert_eq!(
            advertisements,
            [
                ("office-2".to_owned(), vec!["office".to_owned()]),
                ("office".to_owned(), vec!["office".to_owned()])
            ]
        );
    }

    #[test]
    fn unrelated_objects_are_noted_not_lost() {
        let conversion = convert(&[doc(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
        )]);
        assert!(conversion.report.complete());
        assert_eq!(conversion.report.count(Outcome::Note), 1);
    }

    #[test]
    fn output_is_multi_document_yaml_of_ferrolbs_types() {
        let conversion = convert(&[pool("metallb-system", "lan", &["198.51.100.0/24"])]);
        let yaml = conversion.to_yaml().unwrap();
        assert!(
            yaml.starts_with("---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\n"),
            "{yaml}"
        );
        let back: Vec<IPAddressPool> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(back, conversion.pools);
    }

    proptest! {
        #[test]
        fn converted_pools_are_accepted_and_overlaps_are_never_silent(
            pools in prop::collection::vec(prop::collection::vec(metallb_entry(), 0..4), 1..5)
        ) {
            let documents: Vec<Document> = pools
                .iter()
                .enumerate()
                .map(|(i, entries)| {
                    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
                    pool("metallb-system", &format!("p{i}"), &entries)
                })
                .collect();
            let conversion = convert(&documents);
            let sets: Vec<AddressSet> = conversion.pools.iter().map(|p| p.spec.address_set().unwrap()).collect();
            for (i, pool) in conversion.pools.iter().enumerate() {
                prop_assert!(CrdSchema::ip_address_pool().check("spec", &serde_json::to_value(&pool.spec).unwrap()).is_empty());
                let overlapping = sets[..i].iter().any(|earlier| earlier.first_common(&sets[i]).is_some());
                let name = pool.metadata.name.clone().unwrap();
                let prefix = format!("IPAddressPool metallb-system/{name}: spec.addresses");
                let reported = lines(&conversion).iter().any(|l| l.starts_with(&prefix) && l.contains(" overlaps "));
                prop_assert_eq!(overlapping, reported);
            }
        }

        #[test]
        fn arbitrary_documents_never_panic(value in arbitrary_json()) {
            let _ = convert(&[doc(value)]);
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9./: -]{0,12}".prop_map(Value::from),
            metallb_entry().prop_map(Value::from),
        ];
        let tree = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "addresses",
                        "autoAssign",
                        "serviceAllocation",
                        "priority",
                        "namespaces",
                        "namespaceSelectors",
                        "matchLabels",
                        "matchExpressions",
                        "key",
                        "operator",
                        "values",
                        "ipAddressPools",
                        "nodeSelectors",
                        "interfaces",
                        "name",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (
            prop::sample::select(vec![
                "IPAddressPool",
                "L2Advertisement",
                "AddressPool",
                "BGPPeer",
                "ConfigMap",
            ]),
            tree,
        )
            .prop_map(|(kind, spec)| {
                let api_version = if kind == "ConfigMap" {
                    "v1"
                } else {
                    "metallb.io/v1beta1"
                };
                json!({
                    "apiVersion": api_version, "kind": kind,
                    "metadata": {"name": "config", "namespace": "metallb-system"},
                    "spec": spec.clone(),
                    "data": {"config": serde_json::to_string(&spec).unwrap_or_default()},
                })
            })
    }
}
