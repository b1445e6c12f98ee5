//! The speaker process: Kubernetes watches, the heartbeats, rtnetlink and the conflicts the
//! packet readers see, all feeding one [`SpeakerState`] in one task, which sends this node's
//! heartbeats and publishes what the readers answer from (a
//! [`crate::speaker_state::Snapshot`]) whenever it may have changed.
//!
//! Requests are answered by the readers themselves ([`crate::dataplane`]), so neither this loop
//! nor the API server is on the path of a reply. Everything that talks to the API (the
//! registration, ServiceL2Status writes, events) runs in its own task. Heartbeats are sent by
//! this loop, after it has acted on every heartbeat it read: the snapshot carries the fence of
//! the last one sent, so a stuck loop stops answering a fence after its last heartbeat, before
//! any peer can count it dead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_crds::{
    BGPAdvertisement, BGPPeer, BGPSessionState, BGPSessionStateStatus, IPAddressPool,
    InterfaceName, L2Advertisement, ServiceBGPStatus,
};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use crate::announcer::{BurstPolicy, Conflict, OwnershipChange};
use crate::bgp::advertisement::{AdvertisementFacts, BgpView, PeerFacts};
use crate::bgp_session_task::{SessionId, SessionReport};
use crate::bgp_speaker::{BgpEvent, BgpInputs, BgpSpeaker, NodeAddresses, Passwords};
use crate::cli::Args;
use crate::cluster::service_index::{ServiceIndex, ServicesChanged};
use crate::cluster::{lease, node};
use crate::dataplane::{ConflictSeen, DataPlane};
use crate::election::PoolFacts;
use crate::event_queue::EventQueue;
use crate::heap::HeapTrimmer;
use crate::heartbeat::{self, Heartbeat, HeartbeatTiming, Kind, NodeId, node_id, wire};
use crate::heartbeat_keys::{KeyRing, SharedKeys, watch_keys};
use crate::heartbeat_transport::{HeartbeatTransport, Notice, Receivers};
use crate::http::{self, Health};
use crate::interfaces::{LinkState, announcing_links, publishable};
use crate::metrics::Metrics;
use crate::netlink::LinkMonitor;
use crate::registration::{Registration, lease_selector};
use crate::speaker_state::SpeakerState;
use crate::statuses::{
    Desired, DesiredObjects, DesiredSender, DesiredStatuses, ObjectKey, ServiceRoutes,
    StatusWriter, keep_unchanged,
};
use crate::thread_priority::set_current_thread_nice;

/// At most one conflict event per IP in this interval.
const CONFLICT_EVENT_INTERVAL: Duration = Duration::from_secs(10);
/// At most one event (and log line) per node about heartbeats failing authentication or
/// arriving from another time, in this interval.
const HEARTBEAT_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Nothing is announced for this long after this node's own registration arrived through its
/// watch, so peers that hear its heartbeats but do not know it yet (see
/// `Membership::heard_unknown`) have their watches catch up even where heartbeats are cut one
/// way.
const STARTUP_HOLD: Duration = Duration::from_secs(1);
/// How often the gauges are refreshed (besides after every election).
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// A BGP reconcile reads every Service: after one that took `t`, the next waits `t` times
/// this (at most [`BGP_COALESCE_MAX`]), so reconciles take at most a fifth of the time and a
/// burst of thousands of Service events is folded into a few passes. With few Services a
/// reconcile takes microseconds and nothing waits.
const BGP_COALESCE_FACTOR: u32 = 4;
const BGP_COALESCE_MAX: Duration = Duration::from_millis(200);
/// A goodbye is sent this many times (a lost one costs its peers the dead time).
const GOODBYE_COPIES: usize = 2;

enum Input {
    Lease(Box<watcher::Event<Lease>>),
    Node(Box<watcher::Event<Node>>),
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Pool(Box<watcher::Event<IPAddressPool>>),
    Advertisement(Box<watcher::Event<L2Advertisement>>),
    BgpPeer(Box<watcher::Event<BGPPeer>>),
    BgpAdvertisement(Box<watcher::Event<BGPAdvertisement>>),
    WatchError(&'static str, watcher::Error),
}

/// What this node's heartbeats carry besides the lists: who sends them, and in which run.
struct HeartbeatSender {
    me: NodeId,
    incarnation: u64,
    sequence: u32,
}

impl HeartbeatSender {
    fn new(node: &str) -> Self {
        Self {
            me: node_id(node),
            incarnation: u64::try_from(unix_micros()).unwrap_or(u64::MAX),
            sequence: 0,
        }
    }

    fn frame(
        &mut self,
        keys: &KeyRing,
        kind: Kind,
        api_reachable: bool,
        outgoing: heartbeat::Outgoing,
    ) -> Vec<u8> {
        self.sequence = self.sequence.wrapping_add(1);
        let heartbeat = Heartbeat {
            kind,
            api_reachable,
            key_id: keys.signing_id(),
            node: self.me,
            incarnation: self.incarnation,
            sequence: self.sequence,
            sent_unix_ms: u64::try_from(unix_micros() / 1000).unwrap_or(u64::MAX),
            suspects: outgoing.suspects,
            reported: outgoing.reported,
        };
        wire::encode(&heartbeat, keys.signing_key())
    }
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros())
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
    events: EventQueue,
    health: Arc<Health>,
    state: SpeakerState,
    dataplane: DataPlane,
    links: Vec<LinkState>,
    leases: Store<Lease>,
    nodes: Store<Node>,
    services: ServiceIndex,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    bgp_peers: Store<BGPPeer>,
    bgp_advertisements: Store<BGPAdvertisement>,
    bgp: BgpSpeaker,
    /// Something BGP mode reads changed since it was last reconciled.
    bgp_dirty: bool,
    /// The next reconcile waits until then ([`BGP_COALESCE_FACTOR`]).
    bgp_not_before: Instant,
    passwords: Passwords,
    password_secrets_tx: watch::Sender<BTreeSet<String>>,
    session_states_tx: DesiredSender<BGPSessionStateStatus>,
    bgp_statuses_tx: DesiredSender<ServiceRoutes>,
    namespace: String,
    interfaces_tx: watch::Sender<String>,
    statuses_tx: DesiredSender<ferrolb_crds::ServiceL2StatusStatus>,
    /// When this node's own registration first arrived through its watch: nothing is announced
    /// until [`STARTUP_HOLD`] after it.
    registered_at: Option<Instant>,
    /// Links changed since the last step (sockets to reopen).
    links_changed: bool,
    last_conflict_event: HashMap<IpAddr, Instant>,
    transport: HeartbeatTransport,
    keys: SharedKeys,
    sender: HeartbeatSender,
    /// A heartbeat should go out at once (a new suspicion to relay).
    send_now: bool,
    /// The last registration write succeeded and no watch has failed since: what heartbeats
    /// say as api-reachable.
    registration_ok: bool,
    watch_failing: bool,
    last_heartbeat_warning: HashMap<(NodeId, &'static str), Instant>,
    timing: HeartbeatTiming,
    /// When heartbeats last went out, to measure how late the next round is.
    last_round: Option<Instant>,
    /// What the readers answer from may have changed since it was last published: a heartbeat
    /// moved the fence, or the links changed (an election publishes at once). Most wake-ups
    /// are a peer's heartbeat that changes nothing, and publishing costs map updates.
    snapshot_dirty: bool,
}

impl Speaker {
    fn synced(&self) -> bool {
        self.leases.synced
            && self.nodes.synced
            && self.services.synced()
            && self.pools.synced
            && self.advertisements.synced
    }

    fn bgp_synced(&self) -> bool {
        self.nodes.synced
            && self.services.synced()
            && self.pools.synced
            && self.bgp_peers.synced
            && self.bgp_advertisements.synced
    }

    fn handle(&mut self, input: Input, now: Instant) {
        self.watch_failing = matches!(input, Input::WatchError(..));
        if !matches!(
            input,
            Input::Lease(_)
                | Input::Advertisement(_)
                | Input::Service(_)
                | Input::Slice(_)
                | Input::WatchError(..)
        ) {
            self.bgp_dirty = true;
        }
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
                    self.update_registrations(now);
                }
            }
            Input::Service(event) => {
                let changed = self.services.service_event(*event);
                self.services_changed(changed);
            }
            Input::Slice(event) => {
                let changed = self.services.slice_event(*event);
                self.services_changed(changed);
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
            Input::BgpPeer(event) => {
                self.bgp_peers.apply(*event);
                let secrets = BgpSpeaker::password_secrets(&self.peer_facts());
                self.password_secrets_tx.send_if_modified(|current| {
                    let changed = *current != secrets;
                    *current = secrets;
                    changed
                });
            }
            Input::BgpAdvertisement(event) => {
                self.bgp_advertisements.apply(*event);
            }
            Input::WatchError(resource, error) => {
                tracing::warn!(resource, %error, "watch failed; retrying with backoff");
            }
        }
    }

    fn peer_facts(&self) -> Vec<PeerFacts> {
        self.bgp_peers
            .objects
            .values()
            .map(|peer| PeerFacts {
                name: peer.name_any(),
                order: (
                    peer.metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(0, |t| t.0.as_second()),
                    peer.name_any(),
                ),
                spec: peer.spec.clone(),
            })
            .collect()
    }

    /// This node's addresses for the default router ID: the Node's, then its links'.
    fn node_addresses(&self) -> NodeAddresses {
        let node_ipv4 = self
            .nodes
            .objects
            .get(&(String::new(), self.node.clone()))
            .and_then(|node| node.status.as_ref())
            .and_then(|status| status.addresses.as_ref())
            .map(|addresses| {
                let of = |kind: &'static str| {
                    addresses
                        .iter()
                        .filter(move |a| a.type_ == kind)
                        .filter_map(|a| a.address.parse::<std::net::Ipv4Addr>().ok())
                };
                of("InternalIP").chain(of("ExternalIP")).collect()
            })
            .unwrap_or_default();
        NodeAddresses {
            node_ipv4,
            links: self
                .links
                .iter()
                .filter(|link| link.up)
                .flat_map(|link| link.addresses.iter().copied())
                .collect(),
        }
    }

    /// BGP mode: sessions, routes, and what they report, brought in line with the watches.
    fn reconcile_bgp(&mut self, now: Instant) {
        if !self.bgp_dirty || !self.bgp_synced() || now < self.bgp_not_before {
            return;
        }
        self.bgp_dirty = false;
        let started = Instant::now();
        let peers = self.peer_facts();
        let advertisements: Vec<AdvertisementFacts> = self
            .bgp_advertisements
            .objects
            .values()
            .map(|a| AdvertisementFacts {
                name: a.name_any(),
                spec: a.spec.clone(),
            })
            .collect();
        let addresses = self.node_addresses();
        let node = self.state.node(&self.node).cloned();
        let view = node.as_ref().map(|node| BgpView {
            node,
            peers: &peers,
            advertisements: &advertisements,
            pools: self.state.pools(),
            services: self.state.services(),
        });
        let events = self.bgp.reconcile(BgpInputs {
            view,
            addresses: &addresses,
            passwords: &self.passwords,
        });
        for event in events {
            self.publish_bgp_event(event);
        }
        self.update_service_bgp_statuses();
        self.update_session_states();
        let took = started.elapsed();
        self.bgp_not_before = Instant::now() + (took * BGP_COALESCE_FACTOR).min(BGP_COALESCE_MAX);
    }

    /// The ServiceBGPStatuses follow the decision and which sessions are Established.
    fn update_service_bgp_statuses(&mut self) {
        let previous = self.bgp_statuses_tx.current();
        let statuses = self
            .bgp
            .service_statuses(|id| self.services.uid(id).cloned(), &previous);
        drop(previous);
        self.bgp_statuses_tx.set(statuses);
    }

    fn update_session_states(&mut self) {
        let Some(uid) = self
            .nodes
            .objects
            .get(&(String::new(), self.node.clone()))
            .and_then(|node| node.metadata.uid.clone())
        else {
            return;
        };
        let previous = self.session_states_tx.current();
        let states = self.bgp.session_states(&self.namespace, &uid, &previous);
        drop(previous);
        self.session_states_tx.set(states);
    }

    fn session_report(
        &mut self,
        peer: &str,
        session: SessionId,
        report: SessionReport,
        now: Instant,
    ) {
        if self.bgp.is_current(peer, session) {
            self.health.metrics.bgp_session(peer, &report);
        }
        if let Some(event) = self.bgp.report(peer, session, report, now) {
            self.publish_bgp_event(event);
        }
    }

    fn publish_bgp_event(&self, event: BgpEvent) {
        match event {
            BgpEvent::Session {
                warning,
                reason,
                note,
                ..
            } => {
                let type_ = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                self.publish_on_node(&self.node, type_, &reason, "BGP", note);
            }
            BgpEvent::Service {
                service,
                reason,
                note,
            } => {
                tracing::info!(service = %format!("{}/{}", service.namespace, service.name), reason, "{note}");
                if let Some(reference) = self.services.reference(&service) {
                    self.publish(reference, EventType::Normal, reason, note);
                }
            }
        }
    }

    fn lease_event(&mut self, event: watcher::Event<Lease>, now: Instant) {
        if self.leases.apply(event) {
            self.update_registrations(now);
        }
    }

    /// The registered speakers: a held registration Lease of a node that exists. A Lease left
    /// behind by a node that was deleted registers nobody.
    fn update_registrations(&mut self, now: Instant) {
        if !self.leases.synced {
            return;
        }
        let mut registered = BTreeSet::new();
        for object in self.leases.objects.values() {
            let Some(seen) = lease::observe(object) else {
                continue;
            };
            if let Some(error) = &seen.interfaces_error {
                tracing::debug!(node = %seen.node, %error, "speaker registration without usable interfaces");
            }
            let exists = self
                .nodes
                .objects
                .contains_key(&(String::new(), seen.node.clone()));
            if !seen.held || !(exists || seen.node == self.node) {
                continue;
            }
            if seen.node == self.node {
                self.registered_at.get_or_insert(now);
            }
            self.state.registered(&seen.node, &seen.interfaces, now);
            registered.insert(seen.node);
        }
        let gone: Vec<String> = self
            .state
            .registered_nodes()
            .filter(|node| !registered.contains(*node))
            .map(str::to_owned)
            .collect();
        for node in gone {
            self.state.unregistered(&node, now);
        }
        self.transport
            .set_known(self.state.registered_ids().collect());
    }

    /// The election's copy of the Services' facts, brought up to date with what changed.
    fn services_changed(&mut self, changed: ServicesChanged) {
        match changed {
            ServicesChanged::Nothing => return,
            ServicesChanged::Some(ids) => {
                for id in ids {
                    match self.services.facts(&id) {
                        Some(facts) => self.state.upsert_service(facts),
                        None => self.state.remove_service(&id),
                    }
                }
            }
            ServicesChanged::All => self.state.set_services(self.services.all_facts()),
        }
        self.bgp_dirty = true;
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
                // Also when the set of names is the same: a recreated link has a new index.
                self.state.take_networks_changed();
                self.reconcile_heartbeat_sockets();
                self.links_changed = true;
                self.snapshot_dirty = true;
            }
            Err(error) => tracing::warn!(%error, "reading links failed"),
        }
    }

    /// Opens heartbeat sockets on exactly the networks the state heartbeats on.
    fn reconcile_heartbeat_sockets(&mut self) {
        let announcing = announcing_links(&self.links);
        let wanted = self
            .state
            .heartbeat_interfaces()
            .filter_map(|name| {
                let mac = announcing.get(name)?;
                let link = self.links.iter().find(|l| l.name == name.as_str())?;
                Some((name.clone(), (link.index, *mac)))
            })
            .collect();
        for (interface, error) in self.transport.reconcile(&wanted) {
            tracing::warn!(%interface, %error, "cannot open the heartbeat socket");
        }
    }

    /// Steps the heartbeats; re-elects if anything changed, then opens sockets, sends what is
    /// due and publishes; then sends the heartbeats that are due, so the fence moves forward
    /// only once everything read so far has been acted on.
    fn step(&mut self, now: Instant) {
        let keys = self.keys.read().ok().and_then(|keys| keys.clone());
        // Before the registrations are read every sender is unknown, and listing them all would
        // silence them: this node joins only once it knows who is who.
        let heartbeating = keys.is_some() && self.leases.synced && self.nodes.synced;
        let due = heartbeating && self.state.step_heartbeats(now);
        if self.state.take_networks_changed() {
            self.reconcile_heartbeat_sockets();
        }
        let announcing = self.synced()
            && self
                .registered_at
                .is_some_and(|at| now >= at + STARTUP_HOLD);
        if announcing {
            let mut changed = std::mem::take(&mut self.links_changed);
            if self.state.needs_recompute(now) {
                let changes = self.state.recompute(now);
                // Before sockets change, so no reader answers from an older ownership.
                self.publish_snapshot(now);
                self.ownership_changed(&changes);
                changed = true;
            }
            for detection in self.state.take_detections() {
                self.health.metrics.peer_detected_dead(detection);
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
        if let Some(keys) = keys.filter(|_| due || (heartbeating && self.send_now)) {
            self.send_now = false;
            if let Some(last) = self.last_round {
                let late = now.saturating_duration_since(last + self.timing.interval);
                self.health.metrics.heartbeat_round_late(late);
                if late > self.timing.jitter {
                    tracing::debug!(?late, "heartbeats sent later than the jitter allowance");
                }
            }
            self.last_round = Some(now);
            let api_reachable = self.registration_ok && !self.watch_failing;
            for (interface, outgoing) in self.state.outgoing_heartbeats(now) {
                let frame = self
                    .sender
                    .frame(&keys, Kind::Heartbeat, api_reachable, outgoing);
                match self.transport.send(&interface, &frame) {
                    Ok(()) => {
                        self.state.heartbeat_sent(&interface, Instant::now());
                        // The fence moved forward.
                        self.snapshot_dirty = true;
                        self.health.metrics.heartbeat.sent(interface.as_str());
                    }
                    Err(error) => {
                        tracing::debug!(%interface, %error, "sending a heartbeat failed");
                    }
                }
            }
        }
    }

    /// SIGTERM: silent first (readers and kernel), then a goodbye on every network.
    fn leave(&mut self) {
        let now = Instant::now();
        let (lost, goodbyes) = self.state.release(now);
        self.publish_snapshot(now);
        self.ownership_changed(&lost);
        let keys = self.keys.read().ok().and_then(|keys| keys.clone());
        let Some(keys) = keys else {
            return;
        };
        for _ in 0..GOODBYE_COPIES {
            for (interface, outgoing) in &goodbyes {
                let frame =
                    self.sender
                        .frame(&keys, Kind::Goodbye, self.registration_ok, outgoing.clone());
                if let Err(error) = self.transport.send(interface, &frame) {
                    tracing::debug!(%interface, %error, "sending a goodbye failed");
                }
            }
        }
        tracing::info!(networks = goodbyes.len(), "said goodbye on the LAN");
    }

    /// A heartbeat notice from the readers: an unknown sender to list, a peer's clock, or a
    /// frame that failed authentication (a Warning event on the claimed node, rate-limited).
    fn notice(&mut self, notice: Notice, now: Instant) {
        match notice {
            Notice::UnknownSender { interface, node } => {
                if self.state.unknown_sender(&interface, node, now) {
                    self.send_now = true;
                }
            }
            Notice::Clock { interface, node } => {
                self.state.refused_in_time(&interface, node);
                if self.heartbeat_warning_due(node, "clock", now) {
                    let name = self
                        .state
                        .name_of(node)
                        .unwrap_or("an unknown node")
                        .to_owned();
                    let note = format!(
                        "heartbeats signed for {name} on {interface} are authentic but their send time is more than 5 s from {}'s clock: they are not counted. Either the nodes' clocks differ (synchronise them with NTP), or someone replays old recordings of {name}'s heartbeats",
                        self.node
                    );
                    tracing::warn!(peer = %name, %interface, "{note}");
                    self.publish_on_node(
                        &name,
                        EventType::Warning,
                        "HeartbeatClockSkew",
                        "Heartbeat",
                        note,
                    );
                }
            }
            Notice::AuthenticationFailed {
                interface,
                claimed,
                key_id,
            } => {
                if self.heartbeat_warning_due(claimed, "auth", now) {
                    let name = self.state.name_of(claimed).map(str::to_owned);
                    let who = name
                        .clone()
                        .unwrap_or_else(|| format!("node id {:016x}", claimed.0));
                    let note = format!(
                        "heartbeats on {interface} claiming to come from {who} (key id {key_id}) fail authentication at {}: they are ignored. If {who} is a FerroLB node, its key differs from this node's: check the Secret {} and that every speaker has loaded its keys",
                        self.node,
                        ferrolb_crds::heartbeat_key::SECRET_NAME
                    );
                    tracing::warn!(claimed = %who, %interface, key_id, "{note}");
                    if let Some(name) = name {
                        self.publish_on_node(
                            &name,
                            EventType::Warning,
                            "HeartbeatAuthenticationFailed",
                            "Heartbeat",
                            note,
                        );
                    }
                }
            }
        }
    }

    fn heartbeat_warning_due(&mut self, node: NodeId, kind: &'static str, now: Instant) -> bool {
        let last = self.last_heartbeat_warning.get(&(node, kind));
        if last.is_some_and(|at| now.duration_since(*at) < HEARTBEAT_WARNING_INTERVAL) {
            return false;
        }
        self.last_heartbeat_warning.insert((node, kind), now);
        true
    }

    /// An event about the Node `node`, published in the background.
    fn publish_on_node(
        &self,
        node: &str,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let Some(object) = self.nodes.objects.get(&(String::new(), node.to_owned())) else {
            return;
        };
        let reference = object.object_ref(&());
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        self.events.publish(event, reference);
    }

    /// Sockets and groups for what is announced now; metrics; the statuses to write.
    fn reconcile_sockets_and_statuses(&mut self, now: Instant) {
        let announced = self.state.announced();
        // Also where this node would take over: opening a packet socket waits for the kernel
        // (an RCU grace period per bind, tens of milliseconds), which a takeover must not.
        let wanted: BTreeMap<InterfaceName, u32> = announced
            .values()
            .flatten()
            .chain(self.state.standby_interfaces())
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
        self.update_gauges(now);
        self.health
            .metrics
            .set_ips_without_owner(self.state.ips_without_owner());
        let desired = self.desired_statuses();
        self.statuses_tx.set(desired);
    }

    fn update_gauges(&self, now: Instant) {
        // Read here, at the gauges' pace, rather than per scrape.
        if let Some(replies) = self.dataplane.kernel_arp_replies() {
            self.health.metrics.kernel_arp_replies(replies);
        }
        let may_answer = self.state.may_answer(now);
        let announced = if may_answer {
            self.state.announced().len()
        } else {
            0
        };
        self.health
            .metrics
            .set_state(announced, self.state.live_peers(now), !may_answer);
        self.health
            .metrics
            .set_peers_alive(&self.state.peers_alive_by_interface(now));
    }

    fn desired_statuses(&self) -> DesiredStatuses {
        let previous = self.statuses_tx.current();
        self.state
            .statuses()
            .into_iter()
            .filter_map(|(id, status)| {
                let uid = self.services.uid(&id)?;
                let desired =
                    Desired::owned_by_service(Arc::clone(&id.name), Arc::clone(uid), status);
                let key = ObjectKey {
                    namespace: id.namespace,
                    name: id.name,
                };
                Some(keep_unchanged(&previous, key, desired))
            })
            .collect()
    }

    /// What events about `ip` refer to: the Services holding it.
    fn services_with(&self, ip: IpAddr) -> Vec<ObjectReference> {
        self.services
            .services_with(ip)
            .filter_map(|id| self.services.reference(id))
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
            for reference in self.services_with(ip) {
                self.publish(reference, EventType::Normal, reason, note.clone());
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
        for reference in self.services_with(ip) {
            self.publish(reference, EventType::Warning, "IPConflict", note.clone());
        }
    }

    /// Publishes an event in the background.
    fn publish(&self, reference: ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Announce".to_owned(),
            secondary: None,
        };
        self.events.publish(event, reference);
    }

    /// What the packet readers answer from: the fence, owned IPs, links and FerroLB MACs.
    /// Rebuilt whole after every wake-up of the loop (a few per renew interval); readers keep
    /// the previous one until the swap.
    fn publish_snapshot(&mut self, now: Instant) {
        self.snapshot_dirty = false;
        self.dataplane.publish(self.state.snapshot(now));
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
    inputs.push(watch_stream(
        Api::<BGPPeer>::all(client.clone()),
        watcher::Config::default(),
        |event| Input::BgpPeer(Box::new(event)),
        "bgppeers",
    ));
    inputs.push(watch_stream(
        Api::<BGPAdvertisement>::all(client.clone()),
        watcher::Config::default(),
        |event| Input::BgpAdvertisement(Box::new(event)),
        "bgpadvertisements",
    ));
    inputs
}

/// The whole process, until SIGTERM.
pub async fn run(args: Args, timing: HeartbeatTiming) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG, have ~/.kube/config, or run in a cluster")?;
    // The loop sends the heartbeats: it gets the readers' priority (best effort, as theirs).
    if let Err(error) = set_current_thread_nice(args.reader_nice) {
        tracing::warn!(nice = args.reader_nice, %error, "cannot set the main loop's nice value; heartbeats may be late on a busy node");
    }
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
    let keys = SharedKeys::default();
    let (keys_changed_tx, _keys_changed) = watch::channel(0u64);
    let key_watch = tokio::spawn(watch_keys(
        client.clone(),
        args.namespace.clone(),
        keys.clone(),
        keys_changed_tx,
    ));
    let (transport, receivers) = HeartbeatTransport::new(
        keys.clone(),
        health.metrics.heartbeat.clone(),
        args.reader_nice,
        timing,
    );
    let Receivers {
        accepted,
        mut notices,
    } = receivers;

    let (interfaces_tx, interfaces_rx) = watch::channel(String::from("[]"));
    let (statuses_tx, statuses_rx) = DesiredSender::channel();
    let (written_tx, mut written_rx) = mpsc::unbounded_channel();
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let (password_secrets_tx, password_secrets_rx) = watch::channel(BTreeSet::new());
    let (passwords_tx, mut passwords_rx) = mpsc::unbounded_channel();
    let (session_states_tx, session_states_rx) = DesiredSender::channel();
    let (bgp_statuses_tx, bgp_statuses_rx) = DesiredSender::channel();
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut speaker = Speaker {
        node: args.node_name.clone(),
        events: EventQueue::start(
            client.clone(),
            Reporter {
                controller: "ferrolb-speaker".into(),
                instance: Some(args.node_name.clone()),
            },
        ),
        health: health.clone(),
        state: SpeakerState::new(&args.node_name, timing, BurstPolicy::default()),
        dataplane,
        links: Vec::new(),
        leases: Store::new(),
        nodes: Store::new(),
        services: ServiceIndex::new(args.lb_class.clone()),
        pools: Store::new(),
        advertisements: Store::new(),
        bgp_peers: Store::new(),
        bgp_advertisements: Store::new(),
        bgp: BgpSpeaker::new(&args.node_name, reports_tx),
        bgp_dirty: true,
        bgp_not_before: Instant::now(),
        passwords: Passwords::new(),
        password_secrets_tx,
        session_states_tx,
        bgp_statuses_tx,
        namespace: args.namespace.clone(),
        interfaces_tx,
        statuses_tx,
        registered_at: None,
        links_changed: true,
        last_conflict_event: HashMap::new(),
        transport,
        keys,
        sender: HeartbeatSender::new(&args.node_name),
        send_now: false,
        registration_ok: false,
        watch_failing: false,
        last_heartbeat_warning: HashMap::new(),
        timing,
        last_round: None,
        snapshot_dirty: true,
    };
    // Publish the interfaces from the first registration on.
    speaker.refresh_links(&monitor, Instant::now()).await;

    let registration = Registration::new(
        Api::namespaced(client.clone(), &args.namespace),
        &args.node_name,
    );
    let registration = tokio::spawn(registration.run(interfaces_rx, written_tx, stop_rx));
    let writers = [
        tokio::spawn(
            StatusWriter::<ferrolb_crds::ServiceL2Status>::new(
                client.clone(),
                &args.node_name,
                &args.namespace,
            )
            .run(statuses_rx),
        ),
        tokio::spawn(
            StatusWriter::<ServiceBGPStatus>::new(client.clone(), &args.node_name, &args.namespace)
                .run(bgp_statuses_rx),
        ),
        tokio::spawn(
            StatusWriter::<BGPSessionState>::new(client.clone(), &args.node_name, &args.namespace)
                .run(session_states_rx),
        ),
    ];
    let password_reader = tokio::spawn(crate::bgp_passwords::follow(
        Api::namespaced(client.clone(), &args.namespace),
        password_secrets_rx,
        passwords_tx,
    ));
    let mut inputs = watches(&client, &args.namespace);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut write_failures = 0u32;
    // The loop wakes at least once per heartbeat interval, so trims keep their pace.
    let mut heap = HeapTrimmer::new(Instant::now());
    let mut next_gauges = Instant::now();

    loop {
        let now = Instant::now();
        let deadline = speaker
            .state
            .next_deadline(now)
            .into_iter()
            .chain(
                speaker
                    .registered_at
                    .map(|at| at + STARTUP_HOLD)
                    .filter(|at| *at > now),
            )
            // Heartbeats that are no news do not wake the loop, and a loop that stepped
            // nothing for the stall time distrusts every absence: it steps at least twice as
            // often, so only a real stall of the process counts as one.
            .chain([now + timing.stall() / 2])
            .chain(
                (speaker.bgp_dirty && speaker.bgp_not_before > now)
                    .then_some(speaker.bgp_not_before),
            )
            .min()
            .unwrap_or(now + timing.interval);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // The heartbeats themselves are taken below, after every wake.
            () = accepted.news() => {}
            Some(notice) = notices.recv() => speaker.notice(notice, Instant::now()),
            Some(seen) = conflicts.recv() => {
                speaker.conflict_seen(&seen);
                while let Ok(seen) = conflicts.try_recv() {
                    speaker.conflict_seen(&seen);
                }
            }
            Some((peer, session, report)) = reports_rx.recv() => {
                let now = Instant::now();
                let established: BTreeSet<String> =
                    speaker.bgp.established_peers().into_iter().map(str::to_owned).collect();
                speaker.session_report(&peer, session, report, now);
                while let Ok((peer, session, report)) = reports_rx.try_recv() {
                    speaker.session_report(&peer, session, report, now);
                }
                if speaker.bgp.established_peers().into_iter().ne(established.iter().map(String::as_str)) {
                    speaker.update_service_bgp_statuses();
                }
                speaker.update_session_states();
            }
            Some(passwords) = passwords_rx.recv() => {
                if speaker.passwords != passwords {
                    speaker.passwords = passwords;
                    speaker.bgp_dirty = true;
                }
            }
            Some(outcome) = written_rx.recv() => match outcome {
                Ok(()) => {
                    if write_failures > 0 {
                        tracing::info!(failures = write_failures, "registration written again");
                    }
                    write_failures = 0;
                    speaker.registration_ok = true;
                }
                Err(error) => {
                    write_failures += 1;
                    speaker.registration_ok = false;
                    tracing::warn!(%error, failures = write_failures, "writing the registration failed; retrying");
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
        // Everything read so far, at the times it was read, before anything is decided or sent.
        for heard in accepted.take() {
            if speaker
                .state
                .heartbeat_received(&heard.interface, &heard.heartbeat, heard.at)
            {
                speaker.send_now = true;
            }
        }
        let now = Instant::now();
        speaker.step(now);
        speaker.reconcile_bgp(now);
        accepted.set_eager(speaker.state.rejoining(now));
        if speaker.snapshot_dirty {
            speaker.publish_snapshot(now);
        }
        if now >= next_gauges {
            speaker.update_gauges(now);
            next_gauges = now + GAUGE_INTERVAL;
        }
        heap.maybe_trim(now);
        health.ready.store(
            speaker.synced() && speaker.registered_at.is_some(),
            Ordering::Relaxed,
        );
    }

    // Stop answering first (the readers too), then say goodbye so peers take over at once;
    // withdraw every BGP route and close the sessions with Cease.
    speaker.leave();
    speaker.bgp.shutdown().await;
    password_reader.abort();
    health.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = registration.await;
    key_watch.abort();
    // Remove this node's ServiceL2Statuses (the new owners write theirs), its
    // ServiceBGPStatuses and BGPSessionStates (its sessions are closed).
    speaker.statuses_tx.set(DesiredStatuses::new());
    speaker.bgp_statuses_tx.set(DesiredObjects::new());
    speaker.session_states_tx.set(DesiredObjects::new());
    drop(speaker);
    let _ = tokio::time::timeout(Duration::from_secs(3), futures::future::join_all(writers)).await;
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
