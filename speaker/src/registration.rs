//! This node's registration: the Lease `ferrolb-speaker-<node>`, held by the node name, with
//! the node's interfaces in an annotation. It is written when the speaker starts and whenever
//! the interfaces change (an update that carries the resourceVersion read last; on a conflict
//! it reads the Lease again and retries), and deleted on shutdown.
//!
//! It is not renewed: liveness travels in the heartbeats, so a registration changes only with
//! the node's links, and the watch every speaker keeps on the registrations carries no
//! periodic traffic (API load stays flat in time and linear in nodes). A failed write is
//! retried with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use tokio::sync::{mpsc, watch};

use crate::cluster::lease::lease_name;
use crate::election::INTERFACES_ANNOTATION;

/// The label every registration carries; the speakers watch Leases with this selector.
pub const LEASE_LABEL: (&str, &str) = ("app.kubernetes.io/component", "speaker");

/// The selector matching [`LEASE_LABEL`].
pub fn lease_selector() -> String {
    format!("{}={}", LEASE_LABEL.0, LEASE_LABEL.1)
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// The first retry of a failed write, doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A write that takes longer than this is given up and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Registration {
    api: Api<Lease>,
    node: String,
    name: String,
    /// The Lease as last read or written.
    current: Option<Lease>,
}

impl Registration {
    pub fn new(api: Api<Lease>, node: &str) -> Self {
        Self {
            api,
            node: node.to_owned(),
            name: lease_name(node),
            current: None,
        }
    }

    fn desired(&self, base: Option<&Lease>, interfaces: &str) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut lease = base.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: None,
        });
        let labels = lease.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(LEASE_LABEL.0.to_owned(), LEASE_LABEL.1.to_owned());
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(INTERFACES_ANNOTATION.to_owned(), interfaces.to_owned());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.node.as_str()) {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.node.clone());
        // Held until deleted: no duration runs out.
        spec.lease_duration_seconds = None;
        spec.renew_time = Some(now);
        lease
    }

    /// One write (or the creation). Conflicts are retried a few times after a fresh read.
    pub async fn write(&mut self, interfaces: &str) -> Result<(), kube::Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if self.current.is_none() {
                self.current = self.api.get_opt(&self.name).await?;
            }
            let result = match &self.current {
                None => {
                    let lease = self.desired(None, interfaces);
                    self.api.create(&PostParams::default(), &lease).await
                }
                Some(current) => {
                    let lease = self.desired(Some(current), interfaces);
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await
                }
            };
            match result {
                Ok(lease) => {
                    self.current = Some(lease);
                    return Ok(());
                }
                // Someone else wrote it (or it was created or deleted meanwhile): read it again.
                Err(error)
                    if (is_status(&error, 409) || is_status(&error, 404)) && attempts < 3 =>
                {
                    self.current = None;
                }
                Err(error) => {
                    self.current = None;
                    return Err(error);
                }
            }
        }
    }

    /// Deletes the registration: this speaker is gone.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        self.current = None;
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Writes the registration now and whenever the interfaces change, retrying failures with
    /// backoff, until `stop` turns true; then deletes it. Reports each write's outcome on
    /// `written` (whether the API server is reachable, as far as this node knows).
    pub async fn run(
        mut self,
        mut interfaces: watch::Receiver<String>,
        written: mpsc::UnboundedSender<Result<(), String>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut pending = true;
        let mut retry = RETRY_MIN;
        loop {
            if *stop.borrow() {
                break;
            }
            if pending {
                let annotation = interfaces.borrow_and_update().clone();
                let outcome =
                    match tokio::time::timeout(WRITE_TIMEOUT, self.write(&annotation)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(_) => {
                            self.current = None;
                            Err("timed out".to_owned())
                        }
                    };
                pending = outcome.is_err();
                if written.send(outcome).is_err() {
                    break;
                }
            }
            let wait = if pending {
                retry
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                changed = interfaces.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    pending = true;
                    retry = RETRY_MIN;
                }
                () = tokio::time::sleep(wait) => {
                    if pending {
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        if let Err(error) = tokio::time::timeout(Duration::from_secs(5), self.release())
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("timed out".into())))
        {
            tracing::warn!(%error, "deleting the registration Lease failed; the next start rewrites it");
        } else {
            tracing::info!(lease = %self.name, "registration Lease deleted");
        }
    }
}
