//! The controller's view of the cluster and what it decides to write, without any I/O.
//!
//! Watch events update the caches and mark Services dirty; [`State::step`] turns that into
//! [`Action`]s. After a (re)list or a change of leader, every allocation is rebuilt from Service
//! status before anything new is allocated, holders first, so restarts never move an IP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_crds::ip_address_pool::condition;
use ferrolb_crds::{IPAddressPool, IPAddressPoolStatus, IpFamily};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::jiff::Timestamp;

use crate::allocator::{Allocator, ExistingAssignment, ServiceKey, join_ips};
use crate::pools::{self, PoolAssessment};
use crate::service::{
    allocated_from_pool, allocation_request, qualifies, service_key, status_addresses, status_is,
};

/// Event reasons on Services.
pub mod reason {
    pub const IP_ALLOCATED: &str = "IPAllocated";
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    pub const CLEAR_ASSIGNMENT: &str = "ClearAssignment";
    pub const POOL_CHANGED: &str = "PoolChanged";
    /// A pool became usable again after being reported not Ready.
    pub const POOL_READY: &str = "PoolReady";
}

/// A write the controller wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set status.loadBalancer.ingress to exactly these IPs (none: remove it).
    ServiceStatus {
        service: ServiceKey,
        addresses: Vec<IpAddr>,
    },
    /// Set (or remove) the ip-allocated-from-pool annotation.
    ServicePoolAnnotation {
        service: ServiceKey,
        pool: Option<String>,
    },
    ServiceEvent {
        service: ServiceKey,
        warning: bool,
        reason: &'static str,
        message: String,
    },
    PoolStatus {
        pool: String,
        status: IPAddressPoolStatus,
    },
    /// An event on the pool: a Warning with the Ready condition's reason when the pool stops being
    /// Ready or its problem changes, a Normal one when it is Ready again.
    PoolEvent {
        pool: String,
        warning: bool,
        reason: String,
        message: String,
    },
    /// Count a failed allocation in the metrics.
    AllocationFailure { metric_reason: &'static str },
}

/// The event a pool's new Ready condition calls for: a Warning when the pool is not Ready and
/// says something it has not said before, a Normal event when it is Ready after not being so.
fn pool_event(
    assessment: &PoolAssessment,
    current: Option<&IPAddressPoolStatus>,
    last_event: Option<&(String, String)>,
) -> Option<Action> {
    let readiness = &assessment.readiness;
    let current_ready = current
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY))
        .map(|c| (c.status == "True", c.reason.as_str(), c.message.as_str()));
    let said = |reason: &str, message: &str| {
        last_event.is_some_and(|(r, m)| r == reason && m == message)
            || current_ready.is_some_and(|(_, r, m)| r == reason && m == message)
    };
    if !readiness.ready {
        if said(readiness.reason, &readiness.message) {
            return None;
        }
        return Some(Action::PoolEvent {
            pool: assessment.name.clone(),
            warning: true,
            reason: readiness.reason.to_owned(),
            message: readiness.message.clone(),
        });
    }
    let was_not_ready = matches!(current_ready, Some((false, _, _)))
        || last_event.is_some_and(|(r, _)| r != reason::POOL_READY);
    if !was_not_ready || said(reason::POOL_READY, &readiness.message) {
        return None;
    }
    Some(Action::PoolEvent {
        pool: assessment.name.clone(),
        warning: false,
        reason: reason::POOL_READY.to_owned(),
        message: readiness.message.clone(),
    })
}

/// Caches, allocator and pending work.
#[derive(Debug, Default)]
pub struct State {
    lb_class: Option<String>,
    services: HashMap<ServiceKey, Service>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    pools: BTreeMap<String, IPAddressPool>,
    assessments: Vec<PoolAssessment>,
    allocator: Allocator,
    /// Qualifying Services without addresses, retried whenever an address is freed.
    pending: BTreeSet<ServiceKey>,
    last_failure: HashMap<ServiceKey, String>,
    dirty: BTreeSet<ServiceKey>,
    pools_changed: bool,
    rebuild_needed: bool,
    /// An address was freed or a holder's sharing changed: waiting Services may now fit.
    retry_pending: bool,
    /// The Ready condition (reason, message) each pool's last event reported, so that a status
    /// write that failed and is retried does not repeat the event.
    pool_events: HashMap<String, (String, String)>,
}

fn created(service: &Service) -> Option<i64> {
    service
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

impl State {
    pub fn new(lb_class: Option<String>) -> Self {
        Self {
            lb_class,
            rebuild_needed: true,
            ..Default::default()
        }
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    pub fn pool(&self, name: &str) -> Option<&IPAddressPool> {
        self.pools.get(name)
    }

    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    pub fn assessments(&self) -> &[PoolAssessment] {
        &self.assessments
    }

    pub fn has_work(&self) -> bool {
        self.rebuild_needed || self.pools_changed || !self.dirty.is_empty()
    }

    /// Whether the next step rebuilds every allocation from Service status.
    pub fn rebuild_requested(&self) -> bool {
        self.rebuild_needed
    }

    /// Everything is recomputed from the caches and Service status at the next step.
    pub fn request_rebuild(&mut self) {
        self.rebuild_needed = true;
    }

    /// Retry a Service later (a write failed).
    pub fn retry(&mut self, key: ServiceKey) {
        self.dirty.insert(key);
    }

    pub fn apply_service(&mut self, service: Service) {
        if let Some(key) = service_key(&service) {
            self.services.insert(key.clone(), service);
            self.dirty.insert(key);
        }
    }

    /// Records what a write returned, unless the cache already holds something newer.
    pub fn written_service(&mut self, service: Service) {
        let Some(key) = service_key(&service) else {
            return;
        };
        let newer = |a: &Service, b: &Service| {
            let version = |s: &Service| {
                s.metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            matches!((version(a), version(b)), (Some(x), Some(y)) if x > y)
        };
        match self.services.get(&key) {
            Some(cached) if !newer(&service, cached) => {}
            _ => {
                self.services.insert(key, service);
            }
        }
    }

    pub fn delete_service(&mut self, service: &Service) {
        if let Some(key) = service_key(service) {
            self.services.remove(&key);
            self.dirty.insert(key);
        }
    }

    pub fn replace_services(&mut self, services: Vec<Service>) {
        self.services = services
            .into_iter()
            .filter_map(|s| service_key(&s).map(|k| (k, s)))
            .collect();
        self.rebuild_needed = true;
    }

    pub fn apply_pool(&mut self, pool: IPAddressPool) {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let spec_changed = self.pools.get(&name).is_none_or(|old| {
            old.spec != pool.spec
                || old.metadata.creation_timestamp != pool.metadata.creation_timestamp
        });
        self.pools.insert(name, pool);
        // Our own status writes come back as events; only spec changes matter.
        self.pools_changed |= spec_changed;
    }

    pub fn delete_pool(&mut self, pool: &IPAddressPool) {
        if let Some(name) = &pool.metadata.name {
            self.pools.remove(name);
            self.pools_changed = true;
        }
    }

    pub fn replace_pools(&mut self, pools: Vec<IPAddressPool>) {
        self.pools = pools
            .into_iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
            .collect();
        self.rebuild_needed = true;
    }

    pub fn apply_namespace(&mut self, namespace: &Namespace) {
        let Some(name) = namespace.metadata.name.clone() else {
            return;
        };
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        if self.namespaces.get(&name) != Some(&labels) {
            self.namespaces.insert(name.clone(), labels);
            self.dirty.extend(
                self.services
                    .keys()
                    .filter(|k| k.namespace == name)
                    .cloned(),
            );
        }
    }

    pub fn delete_namespace(&mut self, namespace: &Namespace) {
        if let Some(name) = &namespace.metadata.name {
            self.namespaces.remove(name);
        }
    }

    pub fn replace_namespaces(&mut self, namespaces: Vec<Namespace>) {
        self.namespaces = namespaces
            .into_iter()
            .filter_map(|n| {
                let labels = n.metadata.labels.unwrap_or_default();
                n.metadata.name.map(|name| (name, labels))
            })
            .collect();
        self.rebuild_needed = true;
    }

    /// Decides every write due now.
    pub fn step(&mut self, now: Timestamp) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.rebuild_needed {
            self.rebuild(&mut actions);
        } else {
            if self.pools_changed {
                self.update_pools(&mut actions);
            }
            let dirty = std::mem::take(&mut self.dirty);
            // Services whose status already holds IPs are replayed before anyone gets new ones.
            let (holders, others): (Vec<ServiceKey>, Vec<ServiceKey>) =
                dirty.into_iter().partition(|k| {
                    self.services
                        .get(k)
                        .is_some_and(|s| !status_addresses(s).is_empty())
                });
            for key in holders.iter().chain(&others) {
                self.process_service(key, &mut actions);
            }
        }
        if std::mem::take(&mut self.retry_pending) {
            let mut waiting: Vec<ServiceKey> = self.pending.iter().cloned().collect();
            waiting.sort_by_key(|k| (self.services.get(k).and_then(created), k.clone()));
            for key in waiting {
                self.process_service(&key, &mut actions);
            }
            self.retry_pending = false;
        }
        self.pool_status_actions(now, &mut actions);
        actions
    }

    fn rebuild(&mut self, actions: &mut Vec<Action>) {
        self.rebuild_needed = false;
        self.pools_changed = false;
        self.dirty.clear();
        self.pending.clear();
        self.assessments = pools::assess(&self.pools.values().cloned().collect::<Vec<_>>());
        self.allocator = Allocator::new(self.assessments.iter().filter_map(|a| a.config.clone()));
        let mut existing = Vec::new();
        for (key, service) in &self.services {
            if !qualifies(service, self.lb_class.as_deref()) {
                continue;
            }
            let addresses = status_addresses(service);
            if addresses.is_empty() {
                continue;
            }
            let labels = self
                .namespaces
                .get(&key.namespace)
                .cloned()
                .unwrap_or_default();
            if let Ok(request) = allocation_request(service, key.clone(), &labels) {
                existing.push(ExistingAssignment {
                    request,
                    addresses,
                    created: created(service),
                });
            }
        }
        self.allocator.restore_all(existing);
        let mut keys: Vec<&ServiceKey> = self.services.keys().collect();
        keys.sort_by_key(|k| {
            (
                self.allocator.assignment(k).is_none(),
                self.services.get(*k).and_then(created),
                (*k).clone(),
            )
        });
        let keys: Vec<ServiceKey> = keys.into_iter().cloned().collect();
        for key in &keys {
            self.process_service(key, actions);
        }
    }

    fn update_pools(&mut self, actions: &mut Vec<Action>) {
        self.pools_changed = false;
        self.assessments = pools::assess(&self.pools.values().cloned().collect::<Vec<_>>());
        let changes = self
            .allocator
            .set_pools(self.assessments.iter().filter_map(|a| a.config.clone()));
        for moved in changes.rehomed {
            let service = moved.assignment.request.service.clone();
            actions.push(Action::ServiceEvent {
                service: service.clone(),
                warning: false,
                reason: reason::POOL_CHANGED,
                message: format!(
                    "kept {}, now from pool {} instead of pool {}: {}",
                    join_ips(&moved.assignment.addresses),
                    moved.assignment.pool,
                    moved.from,
                    moved.reason
                ),
            });
            // Processing it rewrites the pool annotation; the addresses stay.
            self.dirty.insert(service);
        }
        for (assignment, why) in changes.dropped {
            let service = assignment.request.service.clone();
            actions.push(Action::ServiceEvent {
                service: service.clone(),
                warning: false,
                reason: reason::CLEAR_ASSIGNMENT,
                message: format!(
                    "released {} from pool {}: {why}",
                    join_ips(&assignment.addresses),
                    assignment.pool
                ),
            });
            self.dirty.insert(service);
            self.retry_pending = true;
        }
        // A new or grown pool may serve Services that are waiting.
        self.dirty.extend(self.pending.iter().cloned());
    }

    fn clear_service(&self, service: &Service, key: &ServiceKey, actions: &mut Vec<Action>) {
        if !status_is(service, &[]) {
            actions.push(Action::ServiceStatus {
                service: key.clone(),
                addresses: Vec::new(),
            });
        }
        if allocated_from_pool(service).is_some() {
            actions.push(Action::ServicePoolAnnotation {
                service: key.clone(),
                pool: None,
            });
        }
    }

    fn fail(
        &mut self,
        key: &ServiceKey,
        message: String,
        metric_reason: &'static str,
        actions: &mut Vec<Action>,
    ) {
        if self.last_failure.get(key) != Some(&message) {
            self.last_failure.insert(key.clone(), message.clone());
            actions.push(Action::ServiceEvent {
                service: key.clone(),
                warning: true,
                reason: reason::ALLOCATION_FAILED,
                message,
            });
            actions.push(Action::AllocationFailure { metric_reason });
        }
    }

    fn process_service(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        let Some(service) = self.services.get(key).cloned() else {
            self.retry_pending |= self.allocator.release(key).is_some();
            self.pending.remove(key);
            self.last_failure.remove(key);
            return;
        };
        if !qualifies(&service, self.lb_class.as_deref()) {
            let held = self.allocator.release(key);
            self.pending.remove(key);
            self.last_failure.remove(key);
            if let Some(held) = &held {
                self.retry_pending = true;
                actions.push(Action::ServiceEvent {
                    service: key.clone(),
                    warning: false,
                    reason: reason::CLEAR_ASSIGNMENT,
                    message: format!(
                        "released {} from pool {}: the Service is no longer a LoadBalancer of this controller's class",
                        join_ips(&held.addresses),
                        held.pool
                    ),
                });
            }
            // Only what we wrote is ours to remove: another implementation may serve this class.
            if held.is_some() || allocated_from_pool(&service).is_some() {
                self.clear_service(&service, key, actions);
            }
            return;
        }
        let labels = self
            .namespaces
            .get(&key.namespace)
            .cloned()
            .unwrap_or_default();
        let request = match allocation_request(&service, key.clone(), &labels) {
            Ok(request) => request,
            Err(error) => {
                if let Some(held) = self.allocator.release(key) {
                    self.retry_pending = true;
                    actions.push(Action::ServiceEvent {
                        service: key.clone(),
                        warning: false,
                        reason: reason::CLEAR_ASSIGNMENT,
                        message: format!(
                            "released {} from pool {}: the request is invalid",
                            join_ips(&held.addresses),
                            held.pool
                        ),
                    });
                }
                self.pending.remove(key);
                self.fail(key, error.to_string(), "invalid_request", actions);
                self.clear_service(&service, key, actions);
                return;
            }
        };
        let mut replay_failure = None;
        if self.allocator.assignment(key).is_none() {
            let held = status_addresses(&service);
            if !held.is_empty()
                && let Err(error) = self.allocator.restore(&request, &held)
            {
                replay_failure = Some(format!("cleared {}: {error}", join_ips(&held)));
            }
        }
        let sharing_before = self
            .allocator
            .assignment(key)
            .map(|a| a.request.sharing.clone());
        let reconciliation = self.allocator.reconcile(&request);
        if let (Some(before), Ok(after)) = (&sharing_before, &reconciliation.outcome)
            && *before != after.request.sharing
        {
            // A holder that now allows sharing (or serves other ports) may make room.
            self.retry_pending = true;
        }
        if let Some((old, why)) = &reconciliation.cleared {
            self.retry_pending = true;
            actions.push(Action::ServiceEvent {
                service: key.clone(),
                warning: false,
                reason: reason::CLEAR_ASSIGNMENT,
                message: format!(
                    "released {} from pool {}: {why}",
                    join_ips(&old.addresses),
                    old.pool
                ),
            });
        } else if let Some(message) = replay_failure {
            actions.push(Action::ServiceEvent {
                service: key.clone(),
                warning: false,
                reason: reason::CLEAR_ASSIGNMENT,
                message,
            });
        }
        match reconciliation.outcome {
            Ok(assignment) => {
                self.pending.remove(key);
                self.last_failure.remove(key);
                if reconciliation.newly_allocated {
                    actions.push(Action::ServiceEvent {
                        service: key.clone(),
                        warning: false,
                        reason: reason::IP_ALLOCATED,
                        message: format!(
                            "assigned {} from pool {}",
                            join_ips(&assignment.addresses),
                            assignment.pool
                        ),
                    });
                }
                if allocated_from_pool(&service) != Some(&*assignment.pool) {
                    actions.push(Action::ServicePoolAnnotation {
                        service: key.clone(),
                        pool: Some(assignment.pool.to_string()),
                    });
                }
                if !status_is(&service, &assignment.addresses) {
                    actions.push(Action::ServiceStatus {
                        service: key.clone(),
                        addresses: assignment.addresses,
                    });
                }
            }
            Err(error) => {
                self.pending.insert(key.clone());
                self.fail(key, error.to_string(), error.metric_reason(), actions);
                self.clear_service(&service, key, actions);
            }
        }
    }

    fn pool_status_actions(&mut self, now: Timestamp, actions: &mut Vec<Action>) {
        for assessment in &self.assessments {
            let current = self
                .pools
                .get(&assessment.name)
                .and_then(|p| p.status.as_ref());
            let desired = pools::desired_status(assessment, &self.allocator, current, now);
            if current != Some(&desired) {
                if let Some(event) =
                    pool_event(assessment, current, self.pool_events.get(&assessment.name))
                {
                    if let Action::PoolEvent {
                        pool,
                        reason,
                        message,
                        ..
                    } = &event
                    {
                        self.pool_events
                            .insert(pool.clone(), (reason.clone(), message.clone()));
                    }
                    actions.push(event);
                }
                actions.push(Action::PoolStatus {
                    pool: assessment.name.clone(),
                    status: desired,
                });
            }
        }
        let pools = &self.pools;
        self.pool_events.retain(|name, _| pools.contains_key(name));
    }

    /// Total usable and in-use addresses per pool and family, for the metrics.
    pub fn pool_usage(
        &self,
    ) -> Vec<(
        String,
        IpFamily,
        ferrolb_crds::AddressCount,
        ferrolb_crds::AddressCount,
    )> {
        let mut out = Vec::new();
        for assessment in &self.assessments {
            let (Some(declared), Some(config)) = (&assessment.declared, &assessment.config) else {
                continue;
            };
            for family in IpFamily::BOTH {
                if declared.has_family(family) {
                    out.push((
                        assessment.name.clone(),
                        family,
                        config
                            .addresses
                            .usable_count(family, config.avoid_buggy_ips),
                        self.allocator.in_use(&assessment.name, family),
                    ));
                }
            }
        }
        out
    }

    /// Records that a pool status write landed, so it is not written again.
    pub fn written_pool_status(&mut self, pool: &str, status: IPAddressPoolStatus) {
        if let Some(cached) = self.pools.get_mut(pool) {
            cached.status = Some(status);
        }
    }
}

#[cfg(test)]
mod tests;
