//! Leader election through a coordination.k8s.io Lease, with only get, create and patch.
//!
//! Expiry is judged the way client-go does it, from how long the Lease has gone unchanged on
//! this replica's own clock, so clock skew between replicas does not matter. Every write carries
//! the resourceVersion it was based on, so two replicas can never both take the Lease. A replica
//! that stops clears the holder, and standbys, which look every second, take over at once instead
//! of waiting for expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::runtime::FIELD_MANAGER;

/// Timing of the election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a standby looks at the Lease.
    pub retry_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(1),
        }
    }
}

/// What this replica last saw of the Lease, and when it saw it change.
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    record: Option<(Option<String>, Option<MicroTime>)>,
    changed_at: Instant,
}

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Follow,
}

fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    observation: &mut Observation,
    now: Instant,
    lease_duration: Duration,
) -> Decision {
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let record = Some((holder.clone(), spec.and_then(|s| s.renew_time.clone())));
    if observation.record != record {
        observation.record = record;
        observation.changed_at = now;
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(lease_duration, Duration::from_secs);
    match holder {
        Some(h) if h == identity => Decision::Renew,
        None => Decision::Acquire,
        Some(_) if now.duration_since(observation.changed_at) > duration => Decision::Acquire,
        Some(_) => Decision::Follow,
    }
}

/// Runs the election in a task.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

/// A running election: whether we lead, and how to step down.
pub struct Election {
    pub leader: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Stops campaigning and, if leading, releases the Lease so a standby takes over at once.
    pub async fn step_down(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("timed out releasing the leader Lease");
        }
    }
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
        }
    }

    pub fn start(self) -> Election {
        let (leader_sender, leader) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(self.campaign(leader_sender, stopped));
        Election { leader, stop, task }
    }

    fn params() -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One round: returns whether we hold the Lease afterwards.
    async fn round(&self, observation: &mut Observation) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let lease = match self.api.get_opt(&self.name).await? {
            Some(lease) => lease,
            None => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.name.clone());
                lease.spec = Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                });
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(error) => Err(error),
                };
            }
        };
        let decision = decide(
            lease.spec.as_ref(),
            &self.identity,
            observation,
            Instant::now(),
            self.timing.lease_duration,
        );
        let version = lease.metadata.resource_version.clone();
        let spec = match decision {
            Decision::Follow => return Ok(false),
            Decision::Renew => {
                json!({"renewTime": now, "leaseDurationSeconds": self.duration_seconds()})
            }
            Decision::Acquire => {
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0)
                    .saturating_add(1);
                json!({
                    "holderIdentity": self.identity,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseDurationSeconds": self.duration_seconds(),
                    "leaseTransitions": transitions,
                })
            }
        };
        // The resourceVersion makes the patch fail with 409 if anyone wrote in between.
        let patch = json!({"metadata": {"resourceVersion": version}, "spec": spec});
        match self
            .api
            .patch(&self.name, &Self::params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn release(&self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return;
        }
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"holderIdentity": null, "renewTime": null, "acquireTime": null},
        });
        match self
            .api
            .patch(&self.name, &Self::params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(lease = self.name, "released the leader Lease"),
            Err(error) => {
                tracing::warn!(lease = self.name, %error, "releasing the leader Lease failed")
            }
        }
    }

    async fn campaign(self, leader: watch::Sender<bool>, mut stopped: oneshot::Receiver<()>) {
        let mut observation = Observation {
            record: None,
            changed_at: Instant::now(),
        };
        let mut last_renewal: Option<Instant> = None;
        loop {
            let leading = match self.round(&mut observation).await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(error) => {
                    tracing::warn!(lease = self.name, %error, "leader election round failed");
                    // Keep leading only while the last renewal is surely still valid for others.
                    last_renewal.is_some_and(|t| {
                        t.elapsed()
                            < self
                                .timing
                                .lease_duration
                                .saturating_sub(self.timing.renew_every)
                    }) && *leader.borrow()
                }
            };
            if *leader.borrow() != leading {
                tracing::info!(
                    lease = self.name,
                    identity = self.identity,
                    leading,
                    "leadership changed"
                );
                let _ = leader.send(leading);
            }
            let pause = if leading {
                self.timing.renew_every
            } else {
                self.timing.retry_every
            };
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        let _ = leader.send(false);
        self.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn decisions_follow_the_holder_and_local_expiry() {
        let start = Instant::now();
        let mut seen = Observation {
            record: None,
            changed_at: start,
        };
        let d = Duration::from_secs(15);
        assert_eq!(
            decide(Some(&spec(Some("me"), 1)), "me", &mut seen, start, d),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(None, 1)), "me", &mut seen, start, d),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), 1)), "me", &mut seen, start, d),
            Decision::Acquire
        );
        let other = spec(Some("other"), 1);
        assert_eq!(
            decide(Some(&other), "me", &mut seen, start, d),
            Decision::Follow
        );
        // Unchanged for less than the duration: still theirs, whatever the clocks say.
        let later = start + Duration::from_secs(10);
        assert_eq!(
            decide(Some(&other), "me", &mut seen, later, d),
            Decision::Follow
        );
        // A renewal resets the local timer.
        let renewed = spec(Some("other"), 11);
        assert_eq!(
            decide(Some(&renewed), "me", &mut seen, later, d),
            Decision::Follow
        );
        let much_later = later + Duration::from_secs(16);
        assert_eq!(
            decide(Some(&renewed), "me", &mut seen, much_later, d),
            Decision::Acquire
        );
    }
}
