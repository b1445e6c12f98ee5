//! The Services and EndpointSlices as the speaker needs them, kept as facts rather than whole
//! objects and updated one watch event at a time: with 10,000 Services, a copy of each object
//! would cost tens of megabytes, and rebuilding every Service's facts on every event would cost
//! a full pass per event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ferrolb_crds::service_class::qualifies;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;

use super::service::{endpoint_nodes, load_balancer, slice_service};
use crate::election::{ServiceFacts, ServiceId};

/// What a watch event changed, for the election's copy of the facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicesChanged {
    Nothing,
    /// These Services' facts changed (or they are gone: [`ServiceIndex::facts`] says which).
    Some(BTreeSet<ServiceId>),
    /// A relist ended: every Service's facts may have changed.
    All,
}

/// One Service this node may announce: a LoadBalancer Service of FerroLB's class with an IP.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceEntry {
    uid: Arc<str>,
    /// Its facts without endpoints; those come from the slices. Shared with the election for
    /// Services whose facts need no endpoints.
    facts: Arc<ServiceFacts>,
}

/// The nodes with endpoints in one EndpointSlice, and whose slice it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SliceEntry {
    service: ServiceId,
    nodes: BTreeSet<String>,
}

type SliceKey = (String, String);

#[derive(Debug)]
pub struct ServiceIndex {
    lb_class: Option<String>,
    services: BTreeMap<ServiceId, ServiceEntry>,
    services_relist: Option<BTreeMap<ServiceId, ServiceEntry>>,
    services_synced: bool,
    slices: BTreeMap<SliceKey, SliceEntry>,
    slices_relist: Option<BTreeMap<SliceKey, SliceEntry>>,
    slices_synced: bool,
    /// The slices of each Service, to gather its endpoints without a pass over all slices.
    slices_of: BTreeMap<ServiceId, BTreeSet<SliceKey>>,
    /// One string per namespace, for the ids of all its Services.
    namespaces: BTreeSet<Arc<str>>,
}

impl ServiceIndex {
    /// Keeps the Services of `lb_class` (none: FerroLB's default class).
    pub fn new(lb_class: Option<String>) -> Self {
        Self {
            lb_class,
            services: BTreeMap::new(),
            services_relist: None,
            services_synced: false,
            slices: BTreeMap::new(),
            slices_relist: None,
            slices_synced: false,
            slices_of: BTreeMap::new(),
            namespaces: BTreeSet::new(),
        }
    }

    /// Both watches have listed everything once.
    pub fn synced(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    fn entry(&mut self, service: &Service) -> Option<(ServiceId, ServiceEntry)> {
        if !qualifies(service, self.lb_class.as_deref()) {
            return None;
        }
        let mut facts = load_balancer(service)?;
        facts.id.namespace = self.shared_namespace(&facts.id.namespace);
        let uid = service.metadata.uid.as_deref().unwrap_or_default().into();
        Some((
            facts.id.clone(),
            ServiceEntry {
                uid,
                facts: Arc::new(facts),
            },
        ))
    }

    fn shared_namespace(&mut self, namespace: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.namespaces.get(&**namespace) {
            return Arc::clone(known);
        }
        self.namespaces.insert(Arc::clone(namespace));
        Arc::clone(namespace)
    }

    /// Forgets the namespaces no Service id holds any more.
    fn forget_unused_namespaces(&mut self) {
        self.namespaces
            .retain(|namespace| Arc::strong_count(namespace) > 1);
    }

    fn id_of(service: &Service) -> Option<ServiceId> {
        Some(ServiceId {
            namespace: service.metadata.namespace.as_deref()?.into(),
            name: service.metadata.name.as_deref()?.into(),
        })
    }

    pub fn service_event(&mut self, event: Event<Service>) -> ServicesChanged {
        match event {
            Event::Init => {
                self.services_relist = Some(BTreeMap::new());
                ServicesChanged::Nothing
            }
            Event::InitApply(service) => {
                if let Some((id, entry)) = self.entry(&service) {
                    self.services_relist
                        .get_or_insert_with(BTreeMap::new)
                        .insert(id, entry);
                }
                ServicesChanged::Nothing
            }
            Event::InitDone => {
                self.services = self.services_relist.take().unwrap_or_default();
                self.services_synced = true;
                self.forget_unused_namespaces();
                ServicesChanged::All
            }
            Event::Apply(service) => {
                let Some(id) = Self::id_of(&service) else {
                    return ServicesChanged::Nothing;
                };
                // Keyed by the entry's own id: its strings are the interned namespace and the
                // facts' name, where `id` would be a second copy of both.
                let before = match self.entry(&service) {
                    Some((key, entry)) => self.services.insert(key, entry),
                    None => self.services.remove(&id),
                };
                let after = self.services.get(&id);
                if before.as_ref() == after {
                    ServicesChanged::Nothing
                } else {
                    ServicesChanged::Some([id].into())
                }
            }
            Event::Delete(service) => match Self::id_of(&service) {
                Some(id) if self.services.remove(&id).is_some() => {
                    self.forget_unused_namespaces();
                    ServicesChanged::Some([id].into())
                }
                _ => ServicesChanged::Nothing,
            },
        }
    }

    fn slice_entry(slice: &EndpointSlice) -> Option<(SliceKey, SliceEntry)> {
        let key = (
            slice.metadata.namespace.clone()?,
            slice.metadata.name.clone()?,
        );
        Some((
            key,
            SliceEntry {
                service: slice_service(slice)?,
                nodes: endpoint_nodes(slice),
            },
        ))
    }

    pub fn slice_event(&mut self, event: Event<EndpointSlice>) -> ServicesChanged {
        match event {
            Event::Init => {
                self.slices_relist = Some(BTreeMap::new());
                ServicesChanged::Nothing
            }
            Event::InitApply(slice) => {
                if let Some((key, entry)) = Self::slice_entry(&slice) {
                    self.slices_relist
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, entry);
                }
                ServicesChanged::Nothing
            }
            Event::InitDone => {
                self.slices = self.slices_relist.take().unwrap_or_default();
                self.slices_of.clear();
                for (key, entry) in &self.slices {
                    self.slices_of
                        .entry(entry.service.clone())
                        .or_default()
                        .insert(key.clone());
                }
                self.slices_synced = true;
                ServicesChanged::All
            }
            Event::Apply(slice) => {
                let Some(key) = Self::slice_key(&slice) else {
                    return ServicesChanged::Nothing;
                };
                let mut changed = BTreeSet::new();
                let before = self.remove_slice(&key);
                let after = Self::slice_entry(&slice).map(|(_, entry)| entry);
                if before == after {
                    if let Some(entry) = before {
                        self.insert_slice(key, entry);
                    }
                    return ServicesChanged::Nothing;
                }
                changed.extend(before.map(|entry| entry.service));
                if let Some(entry) = after {
                    changed.insert(entry.service.clone());
                    self.insert_slice(key, entry);
                }
                self.affecting(changed)
            }
            Event::Delete(slice) => {
                let removed = Self::slice_key(&slice).and_then(|key| self.remove_slice(&key));
                match removed {
                    Some(entry) => self.affecting([entry.service].into()),
                    None => ServicesChanged::Nothing,
                }
            }
        }
    }

    fn slice_key(slice: &EndpointSlice) -> Option<SliceKey> {
        Some((
            slice.metadata.namespace.clone()?,
            slice.metadata.name.clone()?,
        ))
    }

    fn insert_slice(&mut self, key: SliceKey, entry: SliceEntry) {
        self.slices_of
            .entry(entry.service.clone())
            .or_default()
            .insert(key.clone());
        self.slices.insert(key, entry);
    }

    fn remove_slice(&mut self, key: &SliceKey) -> Option<SliceEntry> {
        let entry = self.slices.remove(key)?;
        if let Some(keys) = self.slices_of.get_mut(&entry.service) {
            keys.remove(key);
            if keys.is_empty() {
                self.slices_of.remove(&entry.service);
            }
        }
        Some(entry)
    }

    /// Endpoints matter only to the Services this node may announce.
    fn affecting(&self, services: BTreeSet<ServiceId>) -> ServicesChanged {
        let services: BTreeSet<ServiceId> = services
            .into_iter()
            .filter(|id| self.services.contains_key(id))
            .collect();
        if services.is_empty() {
            ServicesChanged::Nothing
        } else {
            ServicesChanged::Some(services)
        }
    }

    /// A Service's facts, endpoints included; none when it is not one this node may announce.
    pub fn facts(&self, id: &ServiceId) -> Option<Arc<ServiceFacts>> {
        let entry = self.services.get(id)?;
        // Only the Local policy reads the endpoints; the others share the index's facts.
        if !entry.facts.local_traffic_policy {
            return Some(Arc::clone(&entry.facts));
        }
        let mut facts = (*entry.facts).clone();
        facts.endpoint_nodes = self
            .slices_of
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|key| self.slices.get(key))
            .flat_map(|slice| slice.nodes.iter().cloned())
            .collect();
        Some(Arc::new(facts))
    }

    /// Every Service's facts.
    pub fn all_facts(&self) -> impl Iterator<Item = Arc<ServiceFacts>> + '_ {
        self.services.keys().filter_map(|id| self.facts(id))
    }

    pub fn uid(&self, id: &ServiceId) -> Option<&Arc<str>> {
        self.services
            .get(id)
            .map(|entry| &entry.uid)
            .filter(|uid| !uid.is_empty())
    }

    /// What an event about the Service refers to.
    pub fn reference(&self, id: &ServiceId) -> Option<ObjectReference> {
        Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(id.namespace.to_string()),
            name: Some(id.name.to_string()),
            uid: Some(self.uid(id)?.to_string()),
            ..Default::default()
        })
    }

    /// The Services holding `ip`.
    pub fn services_with(&self, ip: std::net::IpAddr) -> impl Iterator<Item = &ServiceId> + '_ {
        self.services
            .iter()
            .filter(move |(_, entry)| entry.facts.ips.contains(&ip))
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::Endpoint;
    use kube::api::ObjectMeta;

    use super::super::service::SERVICE_NAME_LABEL;
    use super::*;

    fn service(name: &str, policy: &str, ip: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                external_traffic_policy: Some(policy.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ip.into_iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        }
    }

    fn slice(name: &str, service: &str, nodes: &[&str]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            endpoints: nodes
                .iter()
                .map(|node| Endpoint {
                    node_name: Some(node.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn id(name: &str) -> ServiceId {
        ServiceId {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn synced() -> ServiceIndex {
        let mut index = ServiceIndex::new(None);
        for event in [Event::Init, Event::InitDone] {
            index.service_event(event);
        }
        for event in [Event::Init, Event::InitDone] {
            index.slice_event(event);
        }
        assert!(index.synced());
        index
    }

    #[test]
    fn only_load_balancer_services_with_an_ip_are_kept_and_each_event_names_its_service() {
        let mut index = synced();
        let changed = index.service_event(Event::Apply(service("web", "Cluster", None)));
        assert_eq!(changed, ServicesChanged::Nothing, "no IP yet");
        let changed = index.service_event(Event::Apply(service(
            "web",
            "Cluster",
            Some("198.51.100.7"),
        )));
        assert_eq!(changed, ServicesChanged::Some([id("web")].into()));
        assert_eq!(index.uid(&id("web")).map(|uid| &**uid), Some("uid-web"));
        let ip = "198.51.100.7".parse().unwrap();
        assert_eq!(index.services_with(ip).collect::<Vec<_>>(), [&id("web")]);
        let reference = index.reference(&id("web")).unwrap();
        assert_eq!(reference.uid.as_deref(), Some("uid-web"));
        assert_eq!(reference.kind.as_deref(), Some("Service"));
        // The same again changes nothing; deleting removes it.
        let again = service("web", "Cluster", Some("198.51.100.7"));
        assert_eq!(
            index.service_event(Event::Apply(again.clone())),
            ServicesChanged::Nothing
        );
        assert_eq!(
            index.service_event(Event::Delete(again)),
            ServicesChanged::Some([id("web")].into())
        );
        assert!(index.facts(&id("web")).is_none());
    }

    #[test]
    fn endpoints_follow_the_slices_of_local_policy_services() {
        let mut index = synced();
        index.service_event(Event::Apply(service(
            "local",
            "Local",
            Some("198.51.100.8"),
        )));
        index.service_event(Event::Apply(service(
            "cluster",
            "Cluster",
            Some("198.51.100.9"),
        )));
        let changed = index.slice_event(Event::Apply(slice("local-1", "local", &["node-a"])));
        assert_eq!(changed, ServicesChanged::Some([id("local")].into()));
        index.slice_event(Event::Apply(slice("local-2", "local", &["node-b"])));
        assert_eq!(
            index.facts(&id("local")).unwrap().endpoint_nodes,
            ["node-a", "node-b"].map(String::from).into()
        );
        // A slice of a Service this node does not announce changes nothing.
        let other = index.slice_event(Event::Apply(slice("x", "unknown", &["node-a"])));
        assert_eq!(other, ServicesChanged::Nothing);
        // The Cluster policy keeps no endpoints, and its facts are the index's own, shared
        // rather than copied; a Local Service's are built with its endpoints.
        index.slice_event(Event::Apply(slice("cluster-1", "cluster", &["node-a"])));
        let cluster = index.facts(&id("cluster")).unwrap();
        assert!(cluster.endpoint_nodes.is_empty());
        assert!(Arc::ptr_eq(&cluster, &index.facts(&id("cluster")).unwrap()));
        assert!(!Arc::ptr_eq(
            &index.facts(&id("local")).unwrap(),
            &index.facts(&id("local")).unwrap()
        ));
        // A slice moving to another node, then gone.
        index.slice_event(Event::Apply(slice("local-1", "local", &["node-c"])));
        assert_eq!(
            index.facts(&id("local")).unwrap().endpoint_nodes,
            ["node-b", "node-c"].map(String::from).into()
        );
        let gone = index.slice_event(Event::Delete(slice("local-2", "local", &[])));
        assert_eq!(gone, ServicesChanged::Some([id("local")].into()));
        assert_eq!(
            index.facts(&id("local")).unwrap().endpoint_nodes,
            ["node-c"].map(String::from).into()
        );
    }

    #[test]
    fn a_relist_replaces_everything_at_its_end() {
        let mut index = synced();
        index.service_event(Event::Apply(service(
            "old",
            "Cluster",
            Some("198.51.100.7"),
        )));
        assert_eq!(index.service_event(Event::Init), ServicesChanged::Nothing);
        index.service_event(Event::InitApply(service(
            "new",
            "Cluster",
            Some("198.51.100.8"),
        )));
        assert!(
            index.facts(&id("old")).is_some(),
            "kept until the relist ends"
        );
        assert_eq!(index.service_event(Event::InitDone), ServicesChanged::All);
        let ids: Vec<ServiceId> = index.all_facts().map(|f| f.id.clone()).collect();
        assert_eq!(ids, [id("new")]);
    }

    #[test]
    fn services_of_one_namespace_share_its_name_until_none_is_left() {
        let mut index = synced();
        for (name, ip) in [("web", "198.51.100.7"), ("api", "198.51.100.8")] {
            index.service_event(Event::Apply(service(name, "Cluster", Some(ip))));
        }
        let web = index.facts(&id("web")).unwrap();
        let api = index.facts(&id("api")).unwrap();
        assert!(Arc::ptr_eq(&web.id.namespace, &api.id.namespace));
        drop((web, api));
        for name in ["web", "api"] {
            index.service_event(Event::Delete(service(
                name,
                "Cluster",
                Some("198.51.100.7"),
            )));
        }
        assert!(index.namespaces.is_empty());
    }
}
