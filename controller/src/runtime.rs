//! The controller process: watches, leader election, and carrying out [`Action`]s against the API.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_crds::{BGPAdvertisement, BGPPeer, IPAddressPool, IPAddressPoolStatus};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde_json::Value;
use tokio::sync::watch;

use crate::allocator::ServiceKey;
use crate::bgp_config::{BgpAction, BgpKind, BgpObjects};
use crate::cli::{Args, LogFormat};
use crate::http::{self, Health};
use crate::leader::{LeaderElector, Timing};
use crate::metrics::Metrics;
use crate::service::{pool_annotation_patch, status_patch};
use crate::state::{Action, State, reason};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// Most watch events folded into one step, so a burst costs one pass over the pending work.
const MAX_BATCH: usize = 1024;
/// API writes in flight at once.
const WRITE_CONCURRENCY: usize = 32;
/// Wait before retrying writes that failed.
const RETRY_DELAY: Duration = Duration::from_secs(2);

enum Input {
    Service(watcher::Event<Service>),
    Pool(watcher::Event<IPAddressPool>),
    Namespace(watcher::Event<Namespace>),
    BgpPeer(watcher::Event<BGPPeer>),
    BgpAdvertisement(watcher::Event<BGPAdvertisement>),
    WatchError(&'static str, watcher::Error),
}

/// Objects received since the last `Init`, applied together at `InitDone`.
struct Relist<K> {
    buffer: Option<Vec<K>>,
    synced: bool,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self {
            buffer: None,
            synced: false,
        }
    }
}

impl<K> Relist<K> {
    /// Feeds an event; returns the complete list when a (re)list finishes.
    fn feed(&mut self, event: watcher::Event<K>) -> Result<Option<Vec<K>>, watcher::Event<K>> {
        match event {
            watcher::Event::Init => {
                self.buffer = Some(Vec::new());
                Ok(None)
            }
            watcher::Event::InitApply(object) => {
                self.buffer.get_or_insert_with(Vec::new).push(object);
                Ok(None)
            }
            watcher::Event::InitDone => {
                self.synced = true;
                Ok(Some(self.buffer.take().unwrap_or_default()))
            }
            other => Err(other),
        }
    }
}

fn watch_stream<K>(
    api: Api<K>,
    wrap: fn(watcher::Event<K>) -> Input,
    resource: &'static str,
) -> BoxStream<'static, Input>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, watcher::Config::default())
        .modify(ferrolb_crds::cache::trim_metadata::<K>)
        .default_backoff()
        .map(move |item| match item {
            Ok(event) => wrap(event),
            Err(error) => Input::WatchError(resource, error),
        })
        .boxed()
}

/// What one write sets. At most one write per slot is in flight, and a slot waiting to be written
/// holds only the latest desired value, so an older value never lands after a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Status(ServiceKey),
    Annotation(ServiceKey),
    /// Events are records, not states: each one is its own slot.
    Event(u64),
    Pool(String),
    Bgp(BgpKind, String),
}

impl Slot {
    /// Lower first: the status is what users wait for; pool status, the annotation and events
    /// must not hold it up.
    fn priority(&self) -> usize {
        match self {
            Slot::Status(_) => 0,
            Slot::Pool(_) | Slot::Bgp(..) => 1,
            Slot::Annotation(_) => 2,
            Slot::Event(_) => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Write {
    Status(Vec<IpAddr>),
    Annotation(Option<String>),
    Event {
        /// What the event is about, for the log line if publishing fails.
        subject: String,
        reference: ObjectReference,
        warning: bool,
        reason: String,
        /// The events.k8s.io `action`: what FerroLB was doing.
        action: &'static str,
        message: String,
    },
    PoolStatus(IPAddressPoolStatus),
    BgpStatus(Value),
}

/// What a write came back with.
enum WriteOutcome {
    Service(Box<Service>),
    RetryService(ServiceKey),
    PoolStatus(String, IPAddressPoolStatus),
    Nothing,
}

/// The queue between [`State`] and the API: allocation keeps consuming watch events while writes
/// are in flight, instead of waiting for a whole step's writes before reading the next events.
#[derive(Default)]
struct WriteQueue {
    queues: [VecDeque<Slot>; 4],
    /// Latest desired value per slot not yet started.
    desired: HashMap<Slot, Write>,
    /// The value each started write is setting.
    in_flight: HashMap<Slot, Write>,
    next_event: u64,
}

impl WriteQueue {
    fn push(&mut self, slot: Slot, write: Write) {
        if self.in_flight.get(&slot) == Some(&write) {
            // What is being written already; a different value queued before it is now stale.
            self.desired.remove(&slot);
            return;
        }
        if self.desired.insert(slot.clone(), write).is_none() {
            self.queues[slot.priority()].push_back(slot);
        }
    }

    fn push_event(&mut self, write: Write) {
        self.next_event += 1;
        self.push(Slot::Event(self.next_event), write);
    }

    /// The next write to start, if a slot is free.
    fn next(&mut self) -> Option<(Slot, Write)> {
        for queue in &mut self.queues {
            while let Some(slot) = queue.pop_front() {
                // A slot still in flight is queued again when that write finishes.
                if self.in_flight.contains_key(&slot) {
                    continue;
                }
                if let Some(write) = self.desired.remove(&slot) {
                    self.in_flight.insert(slot.clone(), write.clone());
                    return Some((slot, write));
                }
            }
        }
        None
    }

    fn finished(&mut self, slot: &Slot) {
        self.in_flight.remove(slot);
        if self.desired.contains_key(slot) {
            self.queues[slot.priority()].push_front(slot.clone());
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Forgets every write not yet started (they were decided from state about to be rebuilt, or
    /// by a replica that is no longer leader).
    fn drop_queued(&mut self) {
        self.desired.clear();
        for queue in &mut self.queues {
            queue.clear();
        }
    }
}

/// What a write needs of the controller, cheap to clone into each write's future.
#[derive(Clone)]
struct Writer {
    client: Client,
    reporter: Reporter,
    health: Arc<Health>,
}

type WriteFuture = BoxFuture<'static, (Slot, WriteOutcome)>;

/// Connects [`State`] to the cluster.
pub struct Controller {
    client: Client,
    writer: Writer,
    health: Arc<Health>,
    queue: WriteQueue,
    /// Services whose write failed, retried together after [`RETRY_DELAY`].
    retries: BTreeSet<ServiceKey>,
    retry_at: Option<Instant>,
    state: State,
    services: Relist<Service>,
    pools: Relist<IPAddressPool>,
    namespaces: Relist<Namespace>,
    bgp_peers: Relist<BGPPeer>,
    bgp_advertisements: Relist<BGPAdvertisement>,
    bgp: BgpObjects,
    known_pools: Vec<String>,
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// A merge patch of the whole status, with explicit nulls so that fields no longer reported go away.
pub fn pool_status_patch(status: &IPAddressPoolStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        for field in [
            "observedGeneration",
            "conditions",
            "assignedIPv4",
            "assignedIPv6",
            "availableIPv4",
            "availableIPv6",
            "assigned",
            "available",
        ] {
            fields.entry(field).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

impl Controller {
    pub fn new(
        client: Client,
        lb_class: Option<String>,
        identity: &str,
        health: Arc<Health>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Self {
            writer: Writer {
                client: client.clone(),
                reporter,
                health: health.clone(),
            },
            client,
            health,
            queue: WriteQueue::default(),
            retries: BTreeSet::new(),
            retry_at: None,
            state: State::new(lb_class),
            services: Relist::default(),
            pools: Relist::default(),
            namespaces: Relist::default(),
            bgp_peers: Relist::default(),
            bgp_advertisements: Relist::default(),
            bgp: BgpObjects::default(),
            known_pools: Vec::new(),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.health.metrics
    }

    fn synced(&self) -> bool {
        self.services.synced && self.pools.synced && self.namespaces.synced
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Service(event) => match self.services.feed(event) {
                Ok(Some(all)) => self.state.replace_services(all),
                Ok(None) => {}
                Err(watcher::Event::Apply(s)) => self.state.apply_service(s),
                Err(watcher::Event::Delete(s)) => self.state.delete_service(&s),
                Err(_) => {}
            },
            Input::BgpPeer(event) => match self.bgp_peers.feed(event) {
                Ok(Some(all)) => self.bgp.replace_peers(all),
                Ok(None) => {}
                Err(watcher::Event::Apply(p)) => self.bgp.apply_peer(p),
                Err(watcher::Event::Delete(p)) => self.bgp.delete_peer(&p),
                Err(_) => {}
            },
            Input::BgpAdvertisement(event) => match self.bgp_advertisements.feed(event) {
                Ok(Some(all)) => self.bgp.replace_advertisements(all),
                Ok(None) => {}
                Err(watcher::Event::Apply(a)) => self.bgp.apply_advertisement(a),
                Err(watcher::Event::Delete(a)) => self.bgp.delete_advertisement(&a),
                Err(_) => {}
            },
            Input::Pool(event) => match self.pools.feed(event) {
                // Advertisements are judged against the pools: judge them again after any change.
                Ok(Some(all)) => {
                    self.bgp.mark_dirty();
                    self.state.replace_pools(all)
                }
                Ok(None) => {}
                Err(watcher::Event::Apply(p)) => {
                    self.bgp.mark_dirty();
                    self.state.apply_pool(p)
                }
                Err(watcher::Event::Delete(p)) => {
                    self.bgp.mark_dirty();
                    self.state.delete_pool(&p)
                }
                Err(_) => {}
            },
            Input::Namespace(event) => match self.namespaces.feed(event) {
                Ok(Some(all)) => self.state.replace_namespaces(all),
                Ok(None) => {}
                Err(watcher::Event::Apply(n)) => self.state.apply_namespace(&n),
                Err(watcher::Event::Delete(n)) => self.state.delete_namespace(&n),
                Err(_) => {}
            },
            Input::WatchError(resource, error) => {
                tracing::warn!(resource, %error, "watch failed; retrying with backoff");
                self.metrics().api_error(resource, "watch");
            }
        }
    }

    /// Runs until `shutdown` completes. Writes only while `leader` says so.
    pub async fn run(
        mut self,
        mut leader: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut inputs: SelectAll<BoxStream<'static, Input>> = futures::stream::select_all([
            watch_stream(
                Api::<Service>::all(self.client.clone()),
                Input::Service,
                "services",
            ),
            watch_stream(
                Api::<IPAddressPool>::all(self.client.clone()),
                Input::Pool,
                "ipaddresspools",
            ),
            watch_stream(
                Api::<Namespace>::all(self.client.clone()),
                Input::Namespace,
                "namespaces",
            ),
            watch_stream(
                Api::<BGPPeer>::all(self.client.clone()),
                Input::BgpPeer,
                "bgppeers",
            ),
            watch_stream(
                Api::<BGPAdvertisement>::all(self.client.clone()),
                Input::BgpAdvertisement,
                "bgpadvertisements",
            ),
        ]);
        let mut writes: FuturesUnordered<WriteFuture> = FuturesUnordered::new();
        let mut is_leader = *leader.borrow_and_update();
        tracing::info!(leader = is_leader, "controller started");
        tokio::pin!(shutdown);
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            let retry_at = self.retry_at.unwrap_or(far);
            tokio::select! {
                () = &mut shutdown => break,
                changed = leader.changed() => {
                    changed.context("leader election stopped")?;
                    let now_leader = *leader.borrow_and_update();
                    if now_leader && !is_leader {
                        tracing::info!("became leader; rebuilding allocations from Service status");
                        self.state.request_rebuild();
                        self.bgp.mark_dirty();
                    } else if !now_leader && is_leader {
                        tracing::warn!("lost leadership; no longer writing");
                        // Only the leader writes: abandon everything queued or in flight.
                        self.queue = WriteQueue::default();
                        writes = FuturesUnordered::new();
                        self.retries.clear();
                        self.retry_at = None;
                        self.clear_pool_metrics();
                    }
                    is_leader = now_leader;
                }
                input = inputs.next() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    for _ in 0..MAX_BATCH {
                        match inputs.next().now_or_never() {
                            Some(Some(more)) => self.handle(more),
                            _ => break,
                        }
                    }
                }
                Some((slot, outcome)) = writes.next(), if !writes.is_empty() => {
                    self.finished(&slot, outcome);
                    while let Some(Some((slot, outcome))) = writes.next().now_or_never() {
                        self.finished(&slot, outcome);
                    }
                }
                () = tokio::time::sleep_until(retry_at.into()) => {
                    self.retry_at = None;
                    for key in std::mem::take(&mut self.retries) {
                        self.state.retry(key);
                    }
                }
            }
            self.health.ready.store(self.synced(), Ordering::Relaxed);
            if !is_leader {
                continue;
            }
            // A rebuild reads allocations back from Service status: it waits until every write
            // in flight has landed in the cache, or it could hand an address being written to
            // another Service.
            let rebuild_blocked = self.state.rebuild_requested() && self.queue.in_flight() > 0;
            if self.synced() && self.state.has_work() && !rebuild_blocked {
                let started = Instant::now();
                if self.state.rebuild_requested() {
                    self.queue.drop_queued();
                }
                let actions = self.state.step(Timestamp::now());
                self.enqueue(actions);
                self.update_pool_metrics();
                self.metrics()
                    .reconcile_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            // BGP objects are judged once the pools they name are known and after every
            // allocation step, so the pool assessments are current.
            if self.pools.synced && self.bgp.has_work() && !self.state.has_work() {
                let actions = self.bgp.step(self.state.assessments(), Timestamp::now());
                self.enqueue_bgp(actions);
            }
            while self.queue.in_flight() < WRITE_CONCURRENCY {
                let Some((slot, write)) = self.queue.next() else {
                    break;
                };
                writes.push(self.writer.clone().perform(slot, write).boxed());
            }
        }
        tracing::info!("controller stopping");
        Ok(())
    }

    fn update_pool_metrics(&mut self) {
        let usage = self.state.pool_usage();
        let names: Vec<String> = self
            .state
            .assessments()
            .iter()
            .map(|a| a.name.clone())
            .collect();
        for gone in self.known_pools.iter().filter(|p| !names.contains(p)) {
            self.health.metrics.remove_pool(gone);
        }
        for (pool, family, total, in_use) in usage {
            self.health.metrics.set_pool(&pool, family, total, in_use);
        }
        for assessment in self.state.assessments() {
            let readiness = &assessment.readiness;
            self.health
                .metrics
                .set_pool_ready(&assessment.name, readiness.ready, readiness.reason);
        }
        self.known_pools = names;
    }

    /// A replica that is not the leader exports no pool series: only the leader's are current,
    /// and alerts take the maximum over replicas.
    fn clear_pool_metrics(&mut self) {
        for pool in std::mem::take(&mut self.known_pools) {
            self.health.metrics.remove_pool(&pool);
        }
    }

    fn enqueue_bgp(&mut self, actions: Vec<BgpAction>) {
        for action in actions {
            match action {
                BgpAction::Status { kind, name, patch } => {
                    self.queue
                        .push(Slot::Bgp(kind, name), Write::BgpStatus(patch));
                }
                BgpAction::Event {
                    kind,
                    name,
                    reference,
                    warning,
                    reason: event_reason,
                    message,
                } => {
                    let kind = kind.as_str();
                    if warning {
                        tracing::warn!(kind, name, reason = event_reason, "{message}");
                    } else {
                        tracing::info!(kind, name, reason = event_reason, "{message}");
                    }
                    self.queue.push_event(Write::Event {
                        subject: format!("{kind} {name}"),
                        reference,
                        warning,
                        reason: event_reason.to_owned(),
                        action: "Validate",
                        message,
                    });
                }
            }
        }
    }

    /// Turns a step's actions into queued writes (latest value per slot wins).
    fn enqueue(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::ServiceStatus { service, addresses } => {
                    self.queue
                        .push(Slot::Status(service), Write::Status(addresses));
                }
                Action::ServicePoolAnnotation { service, pool } => {
                    self.queue
                        .push(Slot::Annotation(service), Write::Annotation(pool));
                }
                Action::ServiceEvent {
                    service,
                    warning,
                    reason: event_reason,
                    message,
                } => {
                    if warning {
                        tracing::warn!(service = %service, reason = event_reason, "{message}");
                    } else {
                        tracing::info!(service = %service, reason = event_reason, "{message}");
                    }
                    let Some(object) = self.state.service(&service) else {
                        continue;
                    };
                    let reference = object.object_ref(&());
                    let action = match event_reason {
                        reason::CLEAR_ASSIGNMENT => "Release",
                        _ => "Allocate",
                    };
                    self.queue.push_event(Write::Event {
                        subject: format!("service {service}"),
                        reference,
                        warning,
                        reason: event_reason.to_owned(),
                        action,
                        message,
                    });
                }
                Action::PoolEvent {
                    pool,
                    warning,
                    reason: event_reason,
                    message,
                } => {
                    if warning {
                        tracing::warn!(pool, reason = event_reason, "{message}");
                    } else {
                        tracing::info!(pool, reason = event_reason, "{message}");
                    }
                    let Some(object) = self.state.pool(&pool) else {
                        continue;
                    };
                    self.queue.push_event(Write::Event {
                        subject: format!("pool {pool}"),
                        reference: object.object_ref(&()),
                        warning,
                        reason: event_reason,
                        action: "Validate",
                        message,
                    });
                }
                Action::PoolStatus { pool, status } => {
                    self.queue.push(Slot::Pool(pool), Write::PoolStatus(status));
                }
                Action::AllocationFailure { metric_reason } => {
                    self.metrics().allocation_failed(metric_reason);
                }
            }
        }
    }

    fn finished(&mut self, slot: &Slot, outcome: WriteOutcome) {
        self.queue.finished(slot);
        match outcome {
            WriteOutcome::Service(mut written) => {
                ferrolb_crds::cache::trim_metadata(written.as_mut());
                self.state.written_service(*written);
            }
            WriteOutcome::RetryService(service) => {
                // The allocator keeps the address for this Service meanwhile, so nobody else
                // gets it; the retry writes whatever is desired by then.
                self.retries.insert(service);
                self.retry_at
                    .get_or_insert_with(|| Instant::now() + RETRY_DELAY);
            }
            WriteOutcome::PoolStatus(pool, status) => {
                self.state.written_pool_status(&pool, status);
            }
            WriteOutcome::Nothing => {}
        }
    }
}

impl Writer {
    fn metrics(&self) -> &Metrics {
        &self.health.metrics
    }

    async fn perform(self, slot: Slot, write: Write) -> (Slot, WriteOutcome) {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let outcome = match (&slot, write) {
            (Slot::Status(service), Write::Status(addresses)) => {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace);
                let patch = Patch::Merge(status_patch(&addresses));
                match api.patch_status(&service.name, &params, &patch).await {
                    Ok(written) => WriteOutcome::Service(Box::new(written)),
                    Err(error) if is_not_found(&error) => WriteOutcome::Nothing,
                    Err(error) => {
                        tracing::warn!(service = %service, %error, "writing Service status failed");
                        self.metrics().api_error("services/status", "patch");
                        WriteOutcome::RetryService(service.clone())
                    }
                }
            }
            (Slot::Annotation(service), Write::Annotation(pool)) => {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace);
                let patch = Patch::Merge(pool_annotation_patch(pool.as_deref()));
                match api.patch(&service.name, &params, &patch).await {
                    Ok(written) => WriteOutcome::Service(Box::new(written)),
                    Err(error) if is_not_found(&error) => WriteOutcome::Nothing,
                    Err(error) => {
                        tracing::warn!(service = %service, %error, "writing the pool annotation failed");
                        self.metrics().api_error("services", "patch");
                        WriteOutcome::RetryService(service.clone())
                    }
                }
            }
            (
                Slot::Event(_),
                Write::Event {
                    subject,
                    reference,
                    warning,
                    reason: event_reason,
                    action,
                    message,
                },
            ) => {
                let event = KubeEvent {
                    type_: if warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event_reason,
                    note: Some(message),
                    action: action.to_owned(),
                    secondary: None,
                };
                // A Recorder folds events with the same reason into a series that keeps the
                // first note; a fresh one per event keeps every note exact (State already drops
                // repeats).
                let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%subject, %error, "publishing an event failed");
                    self.metrics().api_error("events", "create");
                }
                WriteOutcome::Nothing
            }
            (Slot::Pool(pool), Write::PoolStatus(status)) => {
                let api: Api<IPAddressPool> = Api::all(self.client.clone());
                let patch = Patch::Merge(pool_status_patch(&status));
                match api.patch_status(pool, &params, &patch).await {
                    Ok(_) => WriteOutcome::PoolStatus(pool.clone(), status),
                    Err(error) if is_not_found(&error) => WriteOutcome::Nothing,
                    Err(error) => {
                        // The next step compares against the unchanged cache and writes again.
                        tracing::warn!(pool, %error, "writing pool status failed");
                        self.metrics().api_error("ipaddresspools/status", "patch");
                        WriteOutcome::Nothing
                    }
                }
            }
            (Slot::Bgp(kind, name), Write::BgpStatus(patch)) => {
                let (result, resource) = match kind {
                    BgpKind::Peer => {
                        let api: Api<BGPPeer> = Api::all(self.client.clone());
                        let written = api.patch_status(name, &params, &Patch::Merge(&patch)).await;
                        (written.map(drop), "bgppeers/status")
                    }
                    BgpKind::Advertisement => {
                        let api: Api<BGPAdvertisement> = Api::all(self.client.clone());
                        let written = api.patch_status(name, &params, &Patch::Merge(&patch)).await;
                        (written.map(drop), "bgpadvertisements/status")
                    }
                };
                match result {
                    Ok(()) => {}
                    Err(error) if is_not_found(&error) => {}
                    Err(error) => {
                        // The watch brings the unchanged object back, and it is judged again.
                        tracing::warn!(kind = kind.as_str(), name, %error, "writing status failed");
                        self.metrics().api_error(resource, "patch");
                    }
                }
                WriteOutcome::Nothing
            }
            // Slots and writes are built in pairs by `enqueue`.
            _ => WriteOutcome::Nothing,
        };
        (slot, outcome)
    }
}

/// Text or JSON logs, filtered by RUST_LOG (default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the controller");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

/// Who this replica is in the Lease and in events.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "ferrolb-controller".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The whole process: logging, HTTP endpoints, leader election and the controller loop.
pub async fn run(args: Args) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let client = Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG, have ~/.kube/config, or run in a cluster")?;
    let health = Arc::new(Health::new(Metrics::new()));
    let listener = http::bind(args.metrics_bind_address).await?;
    let server = tokio::spawn(http::serve(listener, health.clone()));
    if !args.heartbeat_key_namespace.is_empty() {
        let secrets = Api::namespaced(client.clone(), &args.heartbeat_key_namespace);
        tokio::spawn(crate::heartbeat_key::keep_ensuring(
            secrets,
            args.heartbeat_key_namespace.clone(),
        ));
    }
    let identity = identity();
    let controller = Controller::new(client.clone(), args.lb_class.clone(), &identity, health);
    let result = if args.leader_elect {
        let leases: Api<Lease> = Api::namespaced(client, &args.lease_namespace);
        let election =
            LeaderElector::new(leases, &args.lease_name, &identity, Timing::default()).start();
        let result = controller
            .run(election.leader.clone(), shutdown_signal())
            .await;
        // Release the Lease so a standby takes over now rather than at expiry.
        election.step_down().await;
        result
    } else {
        let (_always_leader, leader) = watch::channel(true);
        controller.run(leader, shutdown_signal()).await
    };
    server.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::AddressCount;
    use ferrolb_crds::ip_address_pool::FamilyCounts;

    #[test]
    fn pool_status_patch_removes_fields_no_longer_reported() {
        let mut status = IPAddressPoolStatus::default();
        status.set_counts(
            FamilyCounts {
                ipv4: Some(AddressCount::new(1)),
                ipv6: None,
            },
            FamilyCounts {
                ipv4: Some(AddressCount::new(3)),
                ipv6: None,
            },
        );
        let patch = pool_status_patch(&status);
        assert_eq!(patch["status"]["assignedIPv4"], "1");
        assert_eq!(patch["status"]["assignedIPv6"], Value::Null);
        assert!(
            patch["status"]
                .as_object()
                .unwrap()
                .contains_key("availableIPv6")
        );
    }

    #[test]
    fn a_relist_replaces_everything_at_init_done() {
        let mut relist: Relist<u32> = Relist::default();
        assert!(matches!(relist.feed(watcher::Event::Init), Ok(None)));
        assert!(matches!(
            relist.feed(watcher::Event::InitApply(1)),
            Ok(None)
        ));
        assert!(matches!(
            relist.feed(watcher::Event::InitApply(2)),
            Ok(None)
        ));
        assert_eq!(
            relist.feed(watcher::Event::InitDone).ok().flatten(),
            Some(vec![1, 2])
        );
        assert!(relist.synced);
        assert!(matches!(
            relist.feed(watcher::Event::Apply(3)),
            Err(watcher::Event::Apply(3))
        ));
    }
}
