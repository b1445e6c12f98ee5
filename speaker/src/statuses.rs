//! Writes the ServiceL2Status of every Service this node announces (one per Service, in its
//! namespace, named after it, owned by it) and deletes those this node wrote and no longer
//! announces. Runs as its own task so API latency never delays an ARP answer.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_crds::{ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::election::ServiceId;

pub const FIELD_MANAGER: &str = "ferrolb-speaker";
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What this node should have written for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub service_uid: String,
    pub status: ServiceL2StatusStatus,
}

pub type DesiredStatuses = BTreeMap<ServiceId, Desired>;

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

pub struct StatusWriter {
    client: Client,
    node: String,
    written: DesiredStatuses,
}

impl StatusWriter {
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_owned(),
            written: BTreeMap::new(),
        }
    }

    fn api(&self, namespace: &str) -> Api<ServiceL2Status> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn write(&self, id: &ServiceId, desired: &Desired) -> Result<(), kube::Error> {
        let api = self.api(&id.namespace);
        let object = ServiceL2Status {
            metadata: ObjectMeta {
                name: Some(id.name.clone()),
                namespace: Some(id.namespace.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: id.name.clone(),
                    uid: desired.service_uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..Default::default()
            },
            spec: ServiceL2StatusSpec {},
            status: None,
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(error) if is_status(&error, 409) => {}
            Err(error) => return Err(error),
        }
        let patch = json!({ "status": desired.status });
        api.patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Deletes the object if this node is still the one it names; never another node's.
    async fn remove(&self, id: &ServiceId) -> Result<(), kube::Error> {
        let api = self.api(&id.namespace);
        let Some(current) = api.get_opt(&id.name).await? else {
            return Ok(());
        };
        if current.status.as_ref().map(|s| s.node.as_str()) != Some(self.node.as_str()) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: current.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or rewritten by the new owner since it was read: leave it.
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Those that name this node, from an earlier run of this speaker.
    async fn adopt_leftovers(&mut self) -> Result<(), kube::Error> {
        let all: Api<ServiceL2Status> = Api::all(self.client.clone());
        for object in all.list(&ListParams::default()).await? {
            let (Some(namespace), Some(name)) = (
                object.metadata.namespace.clone(),
                object.metadata.name.clone(),
            ) else {
                continue;
            };
            let Some(status) = object.status.clone().filter(|s| s.node == self.node) else {
                continue;
            };
            self.written.insert(
                ServiceId { namespace, name },
                Desired {
                    service_uid: String::new(),
                    status,
                },
            );
        }
        Ok(())
    }

    /// One pass; true when everything was written.
    async fn reconcile(&mut self, desired: &DesiredStatuses) -> bool {
        let mut complete = true;
        for (id, want) in desired {
            if self.written.get(id).map(|w| &w.status) == Some(&want.status) {
                continue;
            }
            match self.write(id, want).await {
                Ok(()) => {
                    self.written.insert(id.clone(), want.clone());
                }
                Err(error) => {
                    tracing::warn!(service = %format!("{}/{}", id.namespace, id.name), %error, "writing the ServiceL2Status failed");
                    complete = false;
                }
            }
        }
        let stale: Vec<ServiceId> = self
            .written
            .keys()
            .filter(|id| !desired.contains_key(*id))
            .cloned()
            .collect();
        for id in stale {
            match self.remove(&id).await {
                Ok(()) => {
                    self.written.remove(&id);
                }
                Err(error) => {
                    tracing::warn!(service = %format!("{}/{}", id.namespace, id.name), %error, "deleting a stale ServiceL2Status failed");
                    complete = false;
                }
            }
        }
        complete
    }

    /// Follows `desired` until it closes.
    pub async fn run(mut self, mut desired: watch::Receiver<DesiredStatuses>) {
        let mut adopted = false;
        loop {
            if !adopted {
                match self.adopt_leftovers().await {
                    Ok(()) => adopted = true,
                    Err(error) => tracing::warn!(%error, "listing ServiceL2Statuses failed"),
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
