//! Holds this node's Lease `ferrolb-speaker-<node>`: creates it, renews it every renew interval
//! with an update that carries the resourceVersion read last (on a conflict it reads the Lease
//! again and retries), republishes the interfaces annotation when it changes, and deletes the
//! Lease on shutdown so peers take over at once.
//!
//! Each successful renewal is reported with the instant its request was sent: the self-fence
//! counts the renew deadline from then, never from when the answer arrived.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use tokio::sync::{mpsc, watch};

use crate::cluster::lease::lease_name;
use crate::election::INTERFACES_ANNOTATION;

/// The label every speaker Lease carries; the speakers watch Leases with this selector.
pub const LEASE_LABEL: (&str, &str) = ("app.kubernetes.io/component", "speaker");

/// The selector matching [`LEASE_LABEL`].
pub fn lease_selector() -> String {
    format!("{}={}", LEASE_LABEL.0, LEASE_LABEL.1)
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

pub struct Renewer {
    api: Api<Lease>,
    node: String,
    name: String,
    renew_interval: Duration,
    lease_duration: Duration,
    /// The Lease as last read or written.
    current: Option<Lease>,
}

impl Renewer {
    pub fn new(
        api: Api<Lease>,
        node: &str,
        renew_interval: Duration,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api,
            node: node.to_owned(),
            name: lease_name(node),
            renew_interval,
            lease_duration,
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
        spec.lease_duration_seconds =
            Some(i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX));
        spec.renew_time = Some(now);
        lease
    }

    /// One renewal (or the creation). Conflicts are retried a few times after a fresh read.
    pub async fn renew(&mut self, interfaces: &str) -> Result<(), kube::Error> {
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

    /// Deletes the Lease: peers see this speaker gone at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        self.current = None;
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Renews every renew interval, and at once when the interfaces change, until `stop` turns
    /// true; then deletes the Lease. Reports each success's send instant on `renewed`.
    pub async fn run(
        mut self,
        mut interfaces: watch::Receiver<String>,
        renewed: mpsc::UnboundedSender<Result<Instant, String>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.renew_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = ticker.tick() => {}
                changed = interfaces.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
            let annotation = interfaces.borrow_and_update().clone();
            let sent_at = Instant::now();
            // A renewal that takes longer than the renew interval is as good as failed: the
            // fence counts from `sent_at` anyway, and the next tick tries again.
            let outcome =
                match tokio::time::timeout(self.renew_interval, self.renew(&annotation)).await {
                    Ok(Ok(())) => Ok(sent_at),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => {
                        self.current = None;
                        Err("timed out".to_owned())
                    }
                };
            if renewed.send(outcome).is_err() {
                break;
            }
        }
        if let Err(error) = tokio::time::timeout(Duration::from_secs(5), self.release())
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("timed out".into())))
        {
            tracing::warn!(%error, "deleting the Lease failed; peers take over when it expires");
        } else {
            tracing::info!(lease = %self.name, "Lease deleted");
        }
    }
}
