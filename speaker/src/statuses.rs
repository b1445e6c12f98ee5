//! Writes the status objects this node reports through (ServiceL2Status for what it announces,
//! ServiceBGPStatus for what it advertises, BGPSessionState for its BGP sessions) and deletes
//! those it wrote and no longer wants. Each kind has its own writer task, so API latency never
//! delays an ARP answer or a BGP session.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::bgp_session_state::NODE_LABEL;
use ferrolb_crds::{
    BGPSessionState, BGPSessionStateSpec, BGPSessionStateStatus, ServiceBGPStatus,
    ServiceBGPStatusSpec, ServiceBGPStatusStatus, ServiceL2Status, ServiceL2StatusSpec,
    ServiceL2StatusStatus,
};
use ipnet::IpNet;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use smallvec::SmallVec;
use tokio::sync::watch;

use crate::bgp::advertisement::ServicePrefixes;

pub const FIELD_MANAGER: &str = "ferrolb-speaker";
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Objects per page when listing leftovers, and the most pages read (a bound on the loop:
/// 2,000 pages are a million objects).
const LIST_PAGE: u32 = 500;
const MAX_LIST_PAGES: usize = 2_000;

/// A status kind this node writes: objects with an empty spec whose status names the node.
pub trait NodeStatus:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    type Status: Clone + Debug + PartialEq + Hash + Serialize + Send + Sync + 'static;
    /// The status as the speaker keeps it until written: it must serialize as `Status` does.
    type Desired: Clone + Debug + PartialEq + Hash + Serialize + Send + Sync + 'static;
    /// Leftovers are listed in the speakers' namespace by the node label (the kind lives
    /// there), rather than in every namespace.
    const IN_SYSTEM_NAMESPACE: bool;

    fn empty(metadata: ObjectMeta) -> Self;
    fn written(&self) -> Option<&Self::Status>;
    fn node_of(status: &Self::Status) -> &str;
}

impl NodeStatus for ServiceL2Status {
    type Status = ServiceL2StatusStatus;
    type Desired = ServiceL2StatusStatus;
    const IN_SYSTEM_NAMESPACE: bool = false;

    fn empty(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            spec: ServiceL2StatusSpec {},
            status: None,
        }
    }
    fn written(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn node_of(status: &Self::Status) -> &str {
        &status.node
    }
}

impl NodeStatus for ServiceBGPStatus {
    type Status = ServiceBGPStatusStatus;
    type Desired = ServiceRoutes;
    const IN_SYSTEM_NAMESPACE: bool = false;

    fn empty(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            spec: ServiceBGPStatusSpec {},
            status: None,
        }
    }
    fn written(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn node_of(status: &Self::Status) -> &str {
        &status.node
    }
}

impl NodeStatus for BGPSessionState {
    type Status = BGPSessionStateStatus;
    type Desired = BGPSessionStateStatus;
    const IN_SYSTEM_NAMESPACE: bool = true;

    fn empty(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            spec: BGPSessionStateSpec {},
            status: None,
        }
    }
    fn written(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn node_of(status: &Self::Status) -> &str {
        &status.node
    }
}

/// Where an object lives. Shared strings: a Service's status is keyed by its namespace and
/// (for layer 2) its name, and the writer keeps the key of everything it wrote.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// What this node should have written as one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired<S> {
    /// The object goes with its owner (the Service, or the Node for a session state).
    pub owner: Owner,
    pub labels: BTreeMap<String, String>,
    pub status: S,
}

impl<S> Desired<S> {
    pub fn owned_by_service(
        name: impl Into<Arc<str>>,
        uid: impl Into<Arc<str>>,
        status: S,
    ) -> Self {
        Self {
            owner: owner(OwnerKind::Service, name, uid),
            labels: BTreeMap::new(),
            status,
        }
    }
}

/// The kinds of object that own what the speaker writes, all of the core API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    Service,
    Node,
}

impl OwnerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::Node => "Node",
        }
    }
}

/// An object's owner, to be made its controller. Kept as shared strings and turned into an
/// OwnerReference only when written: there is one per Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: Arc<str>,
    pub uid: Arc<str>,
}

impl Owner {
    pub fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: self.kind.name().into(),
            name: self.name.to_string(),
            uid: self.uid.to_string(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }
}

pub fn owner(kind: OwnerKind, name: impl Into<Arc<str>>, uid: impl Into<Arc<str>>) -> Owner {
    Owner {
        kind,
        name: name.into(),
        uid: uid.into(),
    }
}

/// A ServiceBGPStatus's status as this node keeps it: the strings shared with the Service's id
/// and the BGP decision, the prefixes as prefixes. Serializes as [`ServiceBGPStatusStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRoutes {
    #[serde(serialize_with = "shared_str")]
    pub node: Arc<str>,
    #[serde(serialize_with = "shared_str")]
    pub service_name: Arc<str>,
    #[serde(skip_serializing_if = "is_empty", serialize_with = "each")]
    pub peers: Arc<[String]>,
    #[serde(
        skip_serializing_if = "SmallVec::is_empty",
        serialize_with = "each_as_text"
    )]
    pub prefixes: ServicePrefixes,
}

fn shared_str<S: serde::Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

fn is_empty(items: &Arc<[String]>) -> bool {
    items.is_empty()
}

fn each<S: serde::Serializer>(items: &Arc<[String]>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter())
}

fn each_as_text<S: serde::Serializer>(items: &[IpNet], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().map(ToString::to_string))
}

/// Each object shared: a rebuilt set reuses the objects that did not change (see
/// [`keep_unchanged`]), so the set the writer is still working through, the one
/// waiting in the channel and a new one cost one copy of each object rather than three.
pub type DesiredObjects<S> = BTreeMap<ObjectKey, Arc<Desired<S>>>;

/// The desired objects as a writer receives them: shared, not copied (with thousands of
/// Services each copy would cost megabytes).
pub type DesiredReceiver<S> = watch::Receiver<Arc<DesiredObjects<S>>>;

/// The runtime's end of a writer's channel.
pub struct DesiredSender<S>(watch::Sender<Arc<DesiredObjects<S>>>);

impl<S: PartialEq> DesiredSender<S> {
    pub fn channel() -> (Self, DesiredReceiver<S>) {
        let (sender, receiver) = watch::channel(Arc::new(DesiredObjects::new()));
        (Self(sender), receiver)
    }

    /// The set the writer was last given.
    pub fn current(&self) -> Arc<DesiredObjects<S>> {
        Arc::clone(&self.0.borrow())
    }

    /// Replaces the desired objects when they differ, which wakes the writer.
    pub fn set(&self, desired: DesiredObjects<S>) {
        self.0.send_if_modified(|current| {
            let changed = **current != desired;
            if changed {
                *current = Arc::new(desired);
            }
            changed
        });
    }
}

/// `key`'s entry for a set replacing `previous`: the previous one when `desired` equals it (its
/// key and object shared), else a new one.
pub fn keep_unchanged<S: PartialEq>(
    previous: &DesiredObjects<S>,
    key: ObjectKey,
    desired: Desired<S>,
) -> (ObjectKey, Arc<Desired<S>>) {
    match previous.get_key_value(&key) {
        Some((known, object)) if **object == desired => (known.clone(), Arc::clone(object)),
        _ => (key, Arc::new(desired)),
    }
}

/// What identifies a written status: a hash rather than a copy, since a copy of every status
/// written would double the memory the desired ones take.
fn fingerprint<S: Hash>(status: &S) -> u64 {
    let mut hasher = DefaultHasher::new();
    status.hash(&mut hasher);
    hasher.finish()
}
/// The ServiceL2Statuses, one per announced Service, named after it.
pub type DesiredStatuses = DesiredObjects<ServiceL2StatusStatus>;

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

pub struct StatusWriter<K: NodeStatus> {
    client: Client,
    node: String,
    system_namespace: String,
    /// What was written, by [`fingerprint`]; an adopted leftover has none to compare.
    written: BTreeMap<ObjectKey, Option<u64>>,
    kind: PhantomData<K>,
}

impl<K: NodeStatus> StatusWriter<K> {
    /// `system_namespace` is where the speakers run (where kinds that live there are listed).
    pub fn new(client: Client, node: &str, system_namespace: &str) -> Self {
        Self {
            client,
            node: node.to_owned(),
            system_namespace: system_namespace.to_owned(),
            written: BTreeMap::new(),
            kind: PhantomData,
        }
    }

    fn api(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn write(
        &self,
        key: &ObjectKey,
        desired: &Desired<K::Desired>,
    ) -> Result<(), kube::Error> {
        let api = self.api(&key.namespace);
        let object = K::empty(ObjectMeta {
            name: Some(key.name.to_string()),
            namespace: Some(key.namespace.to_string()),
            owner_references: Some(vec![desired.owner.reference()]),
            labels: (!desired.labels.is_empty()).then(|| desired.labels.clone()),
            ..Default::default()
        });
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(error) if is_status(&error, 409) => {}
            Err(error) => return Err(error),
        }
        let patch = json!({ "status": desired.status });
        api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Deletes the object if this node is still the one it names; never another node's.
    async fn remove(&self, key: &ObjectKey) -> Result<(), kube::Error> {
        let api = self.api(&key.namespace);
        let Some(current) = api.get_opt(&key.name).await? else {
            return Ok(());
        };
        if current.written().map(K::node_of) != Some(self.node.as_str()) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.meta().resource_version.clone(),
                uid: current.meta().uid.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or rewritten by the new owner since it was read: leave it.
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Those that name this node, from an earlier run of this speaker.
    async fn adopt_leftovers(&mut self) -> Result<(), kube::Error> {
        let (api, params): (Api<K>, _) = if K::IN_SYSTEM_NAMESPACE {
            (
                self.api(&self.system_namespace),
                ListParams::default().labels(&format!(
                    "{NODE_LABEL}={}",
                    ferrolb_crds::bgp_session_state::label_value(&self.node)
                )),
            )
        } else {
            (Api::all(self.client.clone()), ListParams::default())
        };
        // In pages: with every node's status of every Service, one list could be huge.
        let mut params = params.limit(LIST_PAGE);
        for _ in 0..MAX_LIST_PAGES {
            let page = api.list(&params).await?;
            for object in &page.items {
                let (Some(namespace), Some(name)) =
                    (object.meta().namespace.clone(), object.meta().name.clone())
                else {
                    continue;
                };
                if object.written().map(K::node_of) != Some(self.node.as_str()) {
                    continue;
                }
                self.written.insert(
                    ObjectKey {
                        namespace: namespace.into(),
                        name: name.into(),
                    },
                    None,
                );
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(())
    }

    /// One pass; true when everything was written.
    async fn reconcile(&mut self, desired: &DesiredObjects<K::Desired>) -> bool {
        let mut complete = true;
        for (key, want) in desired {
            let fingerprint = fingerprint(&want.status);
            if self.written.get(key).copied().flatten() == Some(fingerprint) {
                continue;
            }
            match self.write(key, want).await {
                Ok(()) => {
                    self.written.insert(key.clone(), Some(fingerprint));
                }
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), object = %format!("{}/{}", key.namespace, key.name), %error, "writing a status object failed");
                    complete = false;
                }
            }
        }
        let stale: Vec<ObjectKey> = self
            .written
            .keys()
            .filter(|key| !desired.contains_key(*key))
            .cloned()
            .collect();
        for key in stale {
            match self.remove(&key).await {
                Ok(()) => {
                    self.written.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), object = %format!("{}/{}", key.namespace, key.name), %error, "deleting a stale status object failed");
                    complete = false;
                }
            }
        }
        complete
    }

    /// Follows `desired` until it closes, and leaves nothing behind once it was emptied.
    pub async fn run(mut self, mut desired: DesiredReceiver<K::Desired>) {
        let mut adopted = false;
        loop {
            if !adopted {
                match self.adopt_leftovers().await {
                    Ok(()) => adopted = true,
                    Err(error) => {
                        tracing::warn!(kind = %K::kind(&()), %error, "listing leftover status objects failed");
                    }
                }
            }
            let wanted = desired.borrow_and_update().clone();
            let complete = adopted && self.reconcile(&wanted).await;
            if complete {
                if desired.changed().await.is_err() {
                    return;
                }
            } else {
                tokio::select! {
                    changed = desired.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_routes_are_written_as_a_service_bgp_status_status() {
        let routes = ServiceRoutes {
            node: "node-a".into(),
            service_name: "web".into(),
            peers: Arc::from(["tor-a".to_owned(), "tor-b".to_owned()]),
            prefixes: [
                "198.51.100.200/32".parse().unwrap(),
                "2001:db8:1::200/128".parse().unwrap(),
            ]
            .into_iter()
            .collect(),
        };
        let written = ServiceBGPStatusStatus {
            node: "node-a".into(),
            service_name: "web".into(),
            peers: vec!["tor-a".into(), "tor-b".into()],
            prefixes: vec!["198.51.100.200/32".into(), "2001:db8:1::200/128".into()],
        };
        assert_eq!(
            serde_json::to_value(&routes).unwrap(),
            serde_json::to_value(&written).unwrap()
        );
        let empty = ServiceRoutes {
            peers: Arc::from([]),
            prefixes: ServicePrefixes::new(),
            ..routes
        };
        let empty_written = ServiceBGPStatusStatus {
            peers: Vec::new(),
            prefixes: Vec::new(),
            ..written
        };
        assert_eq!(
            serde_json::to_value(&empty).unwrap(),
            serde_json::to_value(&empty_written).unwrap()
        );
    }

    #[test]
    fn an_owner_is_written_as_the_controlling_reference() {
        let reference = owner(OwnerKind::Service, "web", "uid-1").reference();
        assert_eq!(reference.kind, "Service");
        assert_eq!(reference.name, "web");
        assert_eq!(reference.uid, "uid-1");
        assert_eq!(reference.controller, Some(true));
    }
}
