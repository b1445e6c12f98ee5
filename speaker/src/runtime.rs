//! The speaker process: Kubernetes watches, the Lease renewer, rtnetlink and the conflicts the
//! packet readers see, all feeding one [`SpeakerState`] in one task, which publishes what the
//! readers answer from (a [`crate::speaker_state::Snapshot`]) whenever it may have changed.
//!
//! Requests are answered by the readers themselves ([`crate::dataplane`]), so neither this loop
//! nor the API server is on the path of a reply. Everything that talks to the API (Lease
//! renewal, ServiceL2Status writes, events) runs in its own task; the snapshot carries the fence
//! instant, so answers still stop a renew deadline after the last renewal sent even if this loop
//! is stuck.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_crds::service_class::qualifies;
use ferrolb_crds::{IPAddressPool, InterfaceName, L2Advertisement};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use crate::announcer::{BurstPolicy, Conflict, OwnershipChange};
use crate::cli::Args;
use crate::cluster::{lease, node, service};
use crate::dataplane::{ConflictSeen, DataPlane};
use crate::election::{LeaseTiming, PoolFacts, ServiceId};
use crate::heap::HeapTrimmer;
use crate::http::{self, Health};
use crate::interfaces::{LinkState, announcing_links, publishable};
use crate::metrics::Metrics;
use crate::netlink::LinkMonitor;
use crate::renewer::{Renewer, lease_selector};
use crate::speaker_state::SpeakerState;
use crate::statuses::{Desired, DesiredStatuses, StatusWriter};

/// At most one conflict event per IP in this interval.
const CONFLICT_EVENT_INTERVAL: Duration = Duration::from_secs(10);

enum Input {
    Lease(Box<watcher::Event<Lease>>),
    Node(Box<watcher::Event<Node>>),
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Pool(Box<watcher::Event<IPAddressPool>>),
    Advertisement(Box<watcher::Event<L2Advertisement>>),
    WatchError(&'static str, watcher::Error),
}

fn watch_stream<K>(
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(watcher::Event<K>) -> Input,
    resource: &'static str,
) -> BoxStream<'static, Input>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, config)
        .modify(ferrolb_crds::cache::trim_metadata::<K>)
        .default_backoff()
        .map(move |item| match item {
            Ok(event) => wrap(event),
            Err(error) => Input::WatchError(resource, error),
        })
        .boxed()
}

/// A cache of one kind, keyed by namespace/name, replaced whole at the end of each (re)list.
struct Store<K> {
    objects: BTreeMap<(String, String), K>,
    relist: Option<BTreeMap<(String, String), K>>,
    synced: bool,
}

impl<K: Resource> Store<K> {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }

    fn key(object: &K) -> (String, String) {
        (
            object.meta().namespace.clone().unwrap_or_default(),
            object.meta().name.clone().unwrap_or_default(),
        )
    }

    /// Applies an event; true when the contents may have changed.
    fn apply(&mut self, event: watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(Self::key(&object), object);
                false
            }
            watcher::Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
            watcher::Event::Apply(object) => {
                self.objects.insert(Self::key(&object), object);
                true
            }
            watcher::Event::Delete(object) => {
                self.objects.remove(&Self::key(&object));
                true
            }
        }
    }
}

struct Speaker {
    node: String,
    client: Client,
    reporter: Reporter,
    lb_class: Option<String>,
    health: Arc<Health>,
    state: SpeakerState,
    dataplane: DataPlane,
    links: Vec<LinkState>,
    leases: Store<Lease>,
    nodes: Store<Node>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    interfaces_tx: watch::Sender<String>,
    statuses_tx: watch::Sender<DesiredStatuses>,
    /// When the first renewal succeeded: nothing is announced for one renew interval after it,
    /// so the previous owners of this node's IPs see its Lease and stop first.
    first_renewal: Option<Instant>,
    startup_hold: Duration,
    /// Links changed since the last step (sockets to reopen).
    links_changed: bool,
    last_conflict_event: HashMap<IpAddr, Instant>,
}

impl Speaker {
    fn synced(&self) -> bool {
        self.leases.synced
            && self.nodes.synced
            && self.services.synced
            && self.slices.synced
            && self.pools.synced
            && self.advertisements.synced
    }

    fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Lease(event) => self.lease_event(*event, now),
            Input::Node(event) => {
                if self.nodes.apply(*event) {
                    let facts = self
                        .nodes
                        .objects
                        .values()
                        .filter_map(|n| node::node_facts(n, Vec::new()));
                    self.state.set_nodes(facts.collect::<Vec<_>>());
                }
            }
            Input::Service(event) => {
                if self.services.apply(*event) {
                    self.update_services();
                }
            }
            Input::Slice(event) => {
                if self.slices.apply(*event) {
                    self.update_services();
                }
            }
            Input::Pool(event) => {
                if self.pools.apply(*event) {
                    let pools = self
                        .pools
                        .objects
                        .values()
                        .filter_map(|pool| {
                            let addresses = match pool.spec.address_set() {
                                Ok(set) => set,
                                Err(errors) => {
                                    tracing::warn!(pool = %pool.name_any(), ?errors, "pool addresses unreadable");
                                    return None;
                                }
                            };
                            Some(PoolFacts {
                                name: pool.name_any(),
                                labels: pool.labels().clone(),
                                addresses,
                            })
                        })
                        .collect();
                    self.state.set_pools(pools);
                }
            }
            Input::Advertisement(event) => {
                if self.advertisements.apply(*event) {
                    let specs = self
                        .advertisements
                        .objects
                        .values()
                        .map(|a| a.spec.clone())
                        .collect();
                    self.state.set_advertisements(specs);
                }
            }
            Input::WatchError(resource, error) => {
                tracing::warn!(resource, %error, "watch failed; retrying with backoff");
            }
        }
    }

    fn lease_event(&mut self, event: watcher::Event<Lease>, now: Instant) {
        match &event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                if let Some(seen) = lease::observe(object) {
                    if let Some(error) = &seen.interfaces_error {
                        tracing::debug!(node = %seen.node, %error, "speaker Lease without usable interfaces");
                    }
                    self.state.lease_seen(&seen, now);
                }
            }
            watcher::Event::Delete(object) => {
                if let Some(seen) = lease::observe(object) {
                    self.state.lease_deleted(&seen.node, now);
                }
            }
            watcher::Event::InitDone => {
                // Those missing from the relist are gone.
                let relisted = self.leases.relist.as_ref();
                for key in self.leases.objects.keys() {
                    if !relisted.is_some_and(|r| r.contains_key(key))
                        && let Some(node) = key.1.strip_prefix(lease::LEASE_PREFIX)
                    {
                        self.state.lease_deleted(node, now);
                    }
                }
            }
            watcher::Event::Init => {}
        }
        self.leases.apply(event);
    }

    fn update_services(&mut self) {
        let mut slices: BTreeMap<ServiceId, Vec<EndpointSlice>> = BTreeMap::new();
        for slice in self.slices.objects.values() {
            if let Some(id) = service::slice_service(slice) {
                slices.entry(id).or_default().push(slice.clone());
            }
        }
        let lb_class = self.lb_class.as_deref();
        let facts: Vec<_> = self
            .services
            .objects
            .values()
            .filter(|s| qualifies(s, lb_class))
            .filter_map(|s| {
                let id = ServiceId {
                    namespace: s.namespace()?,
                    name: s.name_any(),
                };
                service::service_facts(s, slices.get(&id).map(Vec::as_slice).unwrap_or(&[]))
            })
            .collect();
        self.state.set_services(facts);
    }

    async fn refresh_links(&mut self, monitor: &LinkMonitor, now: Instant) {
        match monitor.links().await {
            Ok(links) => {
                self.links = links;
                let annotation =
                    crate::election::node_interfaces::render_annotation(&publishable(&self.links));
                self.interfaces_tx.send_if_modified(|current| {
                    let changed = *current != annotation;
                    *current = annotation;
                    changed
                });
                self.state.set_links(announcing_links(&self.links), now);
                self.links_changed = true;
            }
            Err(error) => tracing::warn!(%error, "reading links failed"),
        }
    }

    /// Re-elects if anything changed, then opens sockets, sends what is due and publishes.
    fn step(&mut self, now: Instant) {
        if !self.synced()
            || self
                .first_renewal
                .is_none_or(|at| now < at + self.startup_hold)
        {
            return;
        }
        let mut changed = std::mem::take(&mut self.links_changed);
        if self.state.needs_recompute(now) {
            let changes = self.state.recompute(now);
            // Before sockets change, so no reader answers from an older ownership.
            self.publish_snapshot();
            self.ownership_changed(&changes);
            changed = true;
        }
        if changed {
            self.reconcile_sockets_and_statuses(now);
        }
        for outgoing in self.state.due(now) {
            match self.dataplane.send(&outgoing.interface, &outgoing.frame) {
                Ok(()) => self.health.metrics.gratuitous_sent(&outgoing.frame),
                Err(error) => {
                    tracing::debug!(interface = %outgoing.interface, %error, "sending a gratuitous frame failed");
                }
            }
        }
    }

    /// Sockets and groups for what is announced now; metrics; the statuses to write.
    fn reconcile_sockets_and_statuses(&mut self, now: Instant) {
        let announced = self.state.announced();
        let wanted: BTreeMap<InterfaceName, u32> = announced
            .values()
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|name| {
                let link = self.links.iter().find(|l| l.name == name.as_str())?;
                Some((name.clone(), link.index))
            })
            .collect();
        for (interface, error) in self.dataplane.listen_on(&wanted) {
            tracing::warn!(%interface, %error, "cannot open packet sockets");
        }
        for error in self
            .dataplane
            .join_groups(&self.state.solicited_node_groups())
        {
            tracing::warn!(%error, "joining a solicited-node group failed");
        }
        let may_answer = self.state.may_answer(now);
        self.health.metrics.set_state(
            if may_answer { announced.len() } else { 0 },
            self.state.live_peers(),
            !may_answer,
        );
        self.health
            .metrics
            .set_ips_without_owner(self.state.ips_without_owner());
        let desired = self.desired_statuses();
        self.statuses_tx.send_if_modified(|current| {
            let changed = *current != desired;
            *current = desired;
            changed
        });
    }

    fn desired_statuses(&self) -> DesiredStatuses {
        self.state
            .statuses()
            .into_iter()
            .filter_map(|(id, status)| {
                let key = (id.namespace.clone(), id.name.clone());
                let uid = self.services.objects.get(&key)?.metadata.uid.clone()?;
                Some((
                    id,
                    Desired {
                        service_uid: uid,
                        status,
                    },
                ))
            })
            .collect()
    }

    fn services_with(&self, ip: IpAddr) -> Vec<Service> {
        self.services
            .objects
            .values()
            .filter(|s| qualifies(s, self.lb_class.as_deref()))
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .is_some_and(|ingress| {
                        ingress
                            .iter()
                            .any(|i| i.ip.as_deref().and_then(|t| t.parse().ok()) == Some(ip))
                    })
            })
            .cloned()
            .collect()
    }

    fn ownership_changed(&mut self, changes: &[OwnershipChange]) {
        if changes.is_empty() {
            return;
        }
        self.health.metrics.ownership_changed(changes);
        let announced = self.state.announced();
        for change in changes {
            let (ip, reason, note) = match change {
                OwnershipChange::Gained(ip) => {
                    let interfaces: Vec<String> = announced
                        .get(ip)
                        .into_iter()
                        .flatten()
                        .map(|i| i.to_string())
                        .collect();
                    let note = format!(
                        "announcing {ip} from {} on {}",
                        self.node,
                        interfaces.join(", ")
                    );
                    (*ip, "Announcing", note)
                }
                OwnershipChange::Lost(ip) => (
                    *ip,
                    "Withdrawn",
                    format!("{} stopped announcing {ip}", self.node),
                ),
            };
            tracing::info!(%ip, reason, "{note}");
            for object in self.services_with(ip) {
                self.publish(&object, EventType::Normal, reason, note.clone());
            }
        }
    }

    fn conflict(&mut self, conflict: &Conflict, now: Instant) {
        self.health.metrics.conflict(conflict.interface.as_str());
        let ip = conflict.claim.ip;
        if self
            .last_conflict_event
            .get(&ip)
            .is_some_and(|at| now.duration_since(*at) < CONFLICT_EVENT_INTERVAL)
        {
            return;
        }
        self.last_conflict_event.insert(ip, now);
        let note = format!(
            "{} on {} claims {ip}, which {} announces: another host uses this address",
            conflict.claim.mac, conflict.interface, self.node
        );
        tracing::warn!(%ip, "{note}");
        for object in self.services_with(ip) {
            self.publish(&object, EventType::Warning, "IPConflict", note.clone());
        }
    }

    /// Publishes an event in the background (only `create` is granted: a fresh Recorder each).
    fn publish(&self, object: &Service, type_: EventType, reason: &str, note: String) {
        let reference = object.object_ref(&());
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Announce".to_owned(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "publishing an event failed");
            }
        });
    }

    /// What the packet readers answer from: the fence, owned IPs, links and FerroLB MACs.
    /// Rebuilt whole after every wake-up of the loop (a few per renew interval); readers keep
    /// the previous one until the swap.
    fn publish_snapshot(&mut self) {
        self.dataplane.publish(self.state.snapshot());
        // Read here, at the loop's pace, rather than per scrape: one map read per wake-up.
        if let Some(replies) = self.dataplane.kernel_arp_replies() {
            self.health.metrics.kernel_arp_replies(replies);
        }
    }

    fn conflict_seen(&mut self, seen: &ConflictSeen) {
        self.state.conflict_seen(&seen.conflict, seen.at);
        self.conflict(&seen.conflict, seen.at);
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the speaker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
}

fn watches(client: &Client, namespace: &str) -> SelectAll<BoxStream<'static, Input>> {
    let mut inputs = SelectAll::new();
    inputs.push(watch_stream(
        Api::<Lease>::namespaced(client.clone(), namespace),
        watcher::Config::default().labels(&lease_selector()),
        |event| Input::Lease(Box::new(event)),
        "leases",
    ));
    inputs.push(watch_stream(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        // Candidacy reads labels and conditions; the image list is most of a real Node.
        |event| {
            Input::Node(Box::new(event.modify(|node| {
                if let Some(status) = &mut node.status {
                    status.images = None;
                }
            })))
        },
        "nodes",
    ));
    inputs.push(watch_stream(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        |event| Input::Service(Box::new(event)),
        "services",
    ));
    inputs.push(watch_stream(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        |event| Input::Slice(Box::new(event)),
        "endpointslices",
    ));
    inputs.push(watch_stream(
        Api::<IPAddressPool>::all(client.clone()),
        watcher::Config::default(),
        |event| Input::Pool(Box::new(event)),
        "ipaddresspools",
    ));
    inputs.push(watch_stream(
        Api::<L2Advertisement>::all(client.clone()),
        watcher::Config::default(),
        |event| Input::Advertisement(Box::new(event)),
        "l2advertisements",
    ));
    inputs
}

/// The whole process, until SIGTERM.
pub async fn run(args: Args, timing: LeaseTiming) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG, have ~/.kube/config, or run in a cluster")?;
    let health = Arc::new(Health::new(Metrics::new()));
    let listener = http::bind(args.metrics_bind_address).await?;
    let server = tokio::spawn(http::serve(listener, health.clone()));
    let mut monitor = LinkMonitor::open().context("opening rtnetlink")?;
    let (dataplane, mut conflicts) = DataPlane::new(
        health.metrics.frame_counters(),
        args.reader_nice,
        args.kernel_arp,
    )
    .context("opening the data plane")?;

    let (interfaces_tx, interfaces_rx) = watch::channel(String::from("[]"));
    let (statuses_tx, statuses_rx) = watch::channel(DesiredStatuses::new());
    let (renewed_tx, mut renewed_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut speaker = Speaker {
        node: args.node_name.clone(),
        client: client.clone(),
        reporter: Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(args.node_name.clone()),
        },
        lb_class: args.lb_class.clone(),
        health: health.clone(),
        state: SpeakerState::new(&args.node_name, timing, BurstPolicy::default()),
        dataplane,
        links: Vec::new(),
        leases: Store::new(),
        nodes: Store::new(),
        services: Store::new(),
        slices: Store::new(),
        pools: Store::new(),
        advertisements: Store::new(),
        interfaces_tx,
        statuses_tx,
        first_renewal: None,
        startup_hold: timing.renew_interval,
        links_changed: true,
        last_conflict_event: HashMap::new(),
    };
    // Publish the interfaces from the first renewal on.
    speaker.refresh_links(&monitor, Instant::now()).await;

    let renewer = Renewer::new(
        Api::namespaced(client.clone(), &args.namespace),
        &args.node_name,
        timing.renew_interval,
        timing.lease_duration,
    );
    let renewer = tokio::spawn(renewer.run(interfaces_rx, renewed_tx, stop_rx));
    let writer = tokio::spawn(StatusWriter::new(client.clone(), &args.node_name).run(statuses_rx));
    let mut inputs = watches(&client, &args.namespace);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut renew_failures = 0u32;
    // The loop wakes at least once per renewal, so trims keep their pace.
    let mut heap = HeapTrimmer::new(Instant::now());

    loop {
        let now = Instant::now();
        let deadline = speaker
            .state
            .next_deadline(now)
            .into_iter()
            .chain(
                speaker
                    .first_renewal
                    .map(|at| at + speaker.startup_hold)
                    .filter(|at| *at > now),
            )
            .min()
            .unwrap_or(now + Duration::from_secs(60));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(seen) = conflicts.recv() => {
                speaker.conflict_seen(&seen);
                while let Ok(seen) = conflicts.try_recv() {
                    speaker.conflict_seen(&seen);
                }
            }
            Some(outcome) = renewed_rx.recv() => match outcome {
                Ok(sent_at) => {
                    if renew_failures > 0 {
                        tracing::info!(failures = renew_failures, "Lease renewed again");
                    }
                    renew_failures = 0;
                    speaker.state.renewed(sent_at);
                    speaker.first_renewal.get_or_insert(sent_at);
                }
                Err(error) => {
                    renew_failures += 1;
                    tracing::warn!(%error, failures = renew_failures, "renewing the Lease failed");
                }
            },
            Some(input) = inputs.next() => {
                let now = Instant::now();
                speaker.handle(input, now);
                // Fold a burst of events into one election.
                for _ in 0..1024 {
                    match futures::FutureExt::now_or_never(inputs.next()) {
                        Some(Some(input)) => speaker.handle(input, now),
                        _ => break,
                    }
                }
            }
            changed = monitor.changed() => {
                if changed {
                    speaker.refresh_links(&monitor, Instant::now()).await;
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
        speaker.step(Instant::now());
        speaker.publish_snapshot();
        heap.maybe_trim(Instant::now());
        health.ready.store(
            speaker.synced() && speaker.first_renewal.is_some(),
            Ordering::Relaxed,
        );
    }

    // Stop answering first (the readers too), then give the Lease up so a peer takes over at
    // once.
    let lost = speaker.state.release();
    speaker.publish_snapshot();
    speaker.ownership_changed(&lost);
    health.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = renewer.await;
    // Remove this node's ServiceL2Statuses; the new owners write theirs.
    speaker.statuses_tx.send_replace(DesiredStatuses::new());
    drop(speaker);
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_replaces_its_contents_at_the_end_of_a_relist() {
        let named = |name: &str| Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut store = Store::<Node>::new();
        assert!(store.apply(watcher::Event::Apply(named("a"))));
        assert!(!store.apply(watcher::Event::Init));
        assert!(!store.apply(watcher::Event::InitApply(named("b"))));
        assert_eq!(store.objects.len(), 1);
        assert!(store.apply(watcher::Event::InitDone));
        assert!(store.synced);
        let names: Vec<_> = store.objects.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(names, ["b"]);
    }
}
