//! Everything one speaker knows, and what it announces because of it: the pure core that the
//! Kubernetes watches, the heartbeats, rtnetlink and the packet sockets drive.
//!
//! Liveness is what the heartbeats say, per network ([`crate::heartbeat`]); the API server
//! supplies the registered speakers and every candidate fact. Its one safety rule: whatever
//! the caller forgets to do, this speaker answers nothing once the fence of its last heartbeat
//! has fallen ([`Snapshot::handle_frame`] checks it on every frame, and the in-kernel
//! responder has the same instant), so a stalled loop goes silent on time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_crds::{InterfaceName, L2AdvertisementSpec, ServiceL2StatusStatus};

use crate::announcer::{
    Announcer, Answering, Assignment, BurstPolicy, Conflict, Outgoing, OwnershipChange,
};
use crate::election::{
    Alive, ClusterView, Election, NodeFacts, PoolFacts, PublishedInterface, ServiceFacts,
    ServiceId, Services, candidate_interfaces, gratuitous_interval,
};
use crate::heartbeat::{self, Heartbeat, HeartbeatTiming, Membership, NodeId, node_id};
use crate::packet::{Inbound, MacAddr, ParseError, parse_frame};

/// What became of one received frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameOutcome {
    pub reply: Option<Vec<u8>>,
    pub conflict: Option<Conflict>,
    /// Why it was not understood, for a drop counter.
    pub dropped: Option<ParseError>,
    /// An ARP request or Neighbor Solicitation (answered or not), for a request counter.
    pub request: bool,
}

/// An immutable view of what this node answers, taken by [`SpeakerState::snapshot`] and shared
/// with the threads that read the packet sockets, so a request is answered where it is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Nothing is answered from this instant on (none: nothing at all).
    pub fenced_from: Option<Instant>,
    pub answering: Answering,
}

impl Snapshot {
    /// Answers nothing: before the first publication and after SIGTERM.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn may_answer(&self, now: Instant) -> bool {
        self.fenced_from.is_some_and(|fence| now < fence)
    }

    /// Decides about one frame received on `interface` at `now`; changes nothing.
    pub fn handle_frame(
        &self,
        interface: &InterfaceName,
        frame: &[u8],
        now: Instant,
    ) -> FrameOutcome {
        let inbound = match parse_frame(frame) {
            Ok(inbound) => inbound,
            Err(error) => {
                return FrameOutcome {
                    dropped: Some(error),
                    ..Default::default()
                };
            }
        };
        let request = matches!(
            inbound,
            Inbound::ArpRequest(_) | Inbound::NeighborSolicitation(_)
        );
        // Checked on every frame, with the reader's own clock: a stuck publisher cannot keep
        // a fenced node answering.
        if !self.may_answer(now) {
            return FrameOutcome {
                request,
                ..Default::default()
            };
        }
        FrameOutcome {
            reply: self.answering.answer(interface, &inbound),
            conflict: self.answering.conflict(interface, &inbound),
            dropped: None,
            request,
        }
    }
}

#[derive(Debug)]
pub struct SpeakerState {
    node: String,
    me: NodeId,
    timing: HeartbeatTiming,
    /// What this node hears on each interface it heartbeats on: the announcing links on which
    /// it could announce some pool's IPs ([`candidate_interfaces`]).
    networks: BTreeMap<InterfaceName, Membership>,
    /// This node's links that are up, with their MACs.
    links: BTreeMap<InterfaceName, MacAddr>,
    /// The facts the networks derive from changed since they were last brought up to date.
    networks_stale: bool,
    /// The set of networks changed since [`Self::take_networks_changed`].
    networks_changed: bool,
    /// The other registered speakers, by the id their heartbeats carry.
    names: BTreeMap<NodeId, String>,
    /// Node facts from the API, without interfaces (those come from the registrations).
    nodes: BTreeMap<String, NodeFacts>,
    published: BTreeMap<String, Vec<PublishedInterface>>,
    pools: Vec<PoolFacts>,
    advertisements: Vec<L2AdvertisementSpec>,
    services: Services,
    election: Election,
    announcer: Announcer,
    /// What the last recompute was based on, to tell whether another would change anything.
    inputs_changed: bool,
    computed_presence: BTreeMap<InterfaceName, BTreeSet<String>>,
    computed_presence_ids: Option<Vec<(bool, BTreeSet<NodeId>)>>,
    /// How long each peer found dead since the last call to `take_detections` had been
    /// unheard: the detection time.
    detections: Vec<Duration>,
    /// Said goodbye (SIGTERM): never answers again.
    released: bool,
    /// IPs this node won from a peer that still counts alive, with when it may start
    /// answering for them ([`HANDOVER_GRACE`]).
    pending_handovers: BTreeMap<IpAddr, Instant>,
}

/// How long a node waits before answering for an IP that a live peer answered for. A change of
/// inputs (an endpoint moving, a label, a selector) reaches each speaker through its own watch,
/// some milliseconds apart; the old owner stops as soon as it hears, and this wait lets it hear
/// first, so two nodes never answer at once. A dead or departed owner is not waited for.
pub const HANDOVER_GRACE: Duration = Duration::from_millis(200);

impl SpeakerState {
    pub fn new(node: &str, timing: HeartbeatTiming, burst: BurstPolicy) -> Self {
        Self {
            node: node.to_owned(),
            me: node_id(node),
            timing,
            networks: BTreeMap::new(),
            links: BTreeMap::new(),
            networks_stale: false,
            networks_changed: false,
            names: BTreeMap::new(),
            nodes: BTreeMap::new(),
            published: BTreeMap::new(),
            pools: Vec::new(),
            advertisements: Vec::new(),
            services: BTreeMap::new(),
            election: Election::default(),
            announcer: Announcer::new(burst),
            inputs_changed: true,
            computed_presence: BTreeMap::new(),
            computed_presence_ids: None,
            detections: Vec::new(),
            released: false,
            pending_handovers: BTreeMap::new(),
        }
    }

    // ---- inputs; call `recompute` after a batch of them ----

    /// A speaker's registration was seen (this node's own included: its interfaces come from
    /// it too): the speaker runs on `node` with these interfaces.
    pub fn registered(&mut self, node: &str, interfaces: &[PublishedInterface], now: Instant) {
        if self.published.get(node).map(Vec::as_slice) != Some(interfaces) {
            self.published.insert(node.to_owned(), interfaces.to_vec());
            self.inputs_changed = true;
        }
        let id = node_id(node);
        if node != self.node && self.names.insert(id, node.to_owned()).is_none() {
            self.update_known(now);
        }
        if node == self.node {
            self.sync_networks(now);
        }
    }

    /// A speaker's registration is gone: it shut down, or its node left the cluster.
    pub fn unregistered(&mut self, node: &str, now: Instant) {
        self.inputs_changed |= self.published.remove(node).is_some();
        if self.names.remove(&node_id(node)).is_some() {
            self.update_known(now);
        }
        if node == self.node {
            self.sync_networks(now);
        }
    }

    fn update_known(&mut self, now: Instant) {
        let known: BTreeSet<NodeId> = self.names.keys().copied().collect();
        for membership in self.networks.values_mut() {
            membership.set_known(&known, now);
        }
    }

    /// The registered speakers, this node included once its own registration was seen.
    pub fn registered_nodes(&self) -> impl Iterator<Item = &str> {
        self.published.keys().map(String::as_str)
    }

    /// The heartbeat ids of the other registered speakers.
    pub fn registered_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.names.keys().copied()
    }

    /// Which node a heartbeat id stands for, among the registered speakers.
    pub fn name_of(&self, id: NodeId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// A heartbeat that passed authentication and the replay checks arrived on `interface`.
    /// Returns whether a heartbeat should be sent at once.
    pub fn heartbeat_received(
        &mut self,
        interface: &InterfaceName,
        heartbeat: &Heartbeat,
        now: Instant,
    ) -> bool {
        self.networks
            .get_mut(interface)
            .is_some_and(|membership| membership.receive(heartbeat, now))
    }

    /// An authenticated heartbeat from a node not registered (yet, as far as this node has
    /// seen) arrived on `interface`. Returns whether a heartbeat should be sent at once.
    pub fn unknown_sender(
        &mut self,
        interface: &InterfaceName,
        node: NodeId,
        now: Instant,
    ) -> bool {
        self.networks
            .get_mut(interface)
            .is_some_and(|membership| membership.heard_unknown(node, now))
    }

    /// A registered peer's heartbeat authenticated but is from another time (its clock is off).
    pub fn refused_in_time(&mut self, interface: &InterfaceName, node: NodeId) {
        if let Some(membership) = self.networks.get_mut(interface) {
            membership.refused_in_time(node);
        }
    }

    /// The interfaces on which this node would announce an IP it took over.
    pub fn standby_interfaces(&self) -> &BTreeSet<InterfaceName> {
        self.election.local_interfaces()
    }

    /// Whether a network is waiting to hear from its peers before this node may answer there
    /// (starting, after a stall or a suspicion): then every heartbeat matters at once.
    pub fn rejoining(&self, now: Instant) -> bool {
        self.networks
            .values()
            .any(|membership| membership.rejoining(now))
    }

    /// Advances every network to `now`; returns whether heartbeats are due.
    pub fn step_heartbeats(&mut self, now: Instant) -> bool {
        if self.networks_stale {
            self.sync_networks(now);
        }
        let mut due = false;
        for membership in self.networks.values_mut() {
            due |= membership.step(now);
        }
        due && !self.released
    }

    /// The heartbeat to send on each network now.
    pub fn outgoing_heartbeats(&self, now: Instant) -> Vec<(InterfaceName, heartbeat::Outgoing)> {
        self.networks
            .iter()
            .map(|(interface, membership)| (interface.clone(), membership.outgoing(now)))
            .collect()
    }

    /// The heartbeat for `interface` left this node at `now`.
    pub fn heartbeat_sent(&mut self, interface: &InterfaceName, now: Instant) {
        if let Some(membership) = self.networks.get_mut(interface) {
            membership.sent(now);
        }
    }

    /// SIGTERM: stops answering at once and returns the goodbye for each network, to send
    /// after the silence is published.
    pub fn release(
        &mut self,
        now: Instant,
    ) -> (
        Vec<OwnershipChange>,
        Vec<(InterfaceName, heartbeat::Outgoing)>,
    ) {
        self.released = true;
        self.election = Election::default();
        let lost = self.announcer.withdraw_all();
        let goodbyes = self
            .networks
            .iter_mut()
            .map(|(interface, membership)| (interface.clone(), membership.leave(now)))
            .collect();
        (lost, goodbyes)
    }

    /// A node's facts from the API (without interfaces).
    pub fn node(&self, name: &str) -> Option<&NodeFacts> {
        self.nodes.get(name)
    }

    pub fn pools(&self) -> &[PoolFacts] {
        &self.pools
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeFacts>) {
        self.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        self.inputs_changed = true;
        self.networks_stale = true;
    }

    pub fn set_pools(&mut self, pools: Vec<PoolFacts>) {
        self.pools = pools;
        self.inputs_changed = true;
        self.networks_stale = true;
    }

    pub fn set_advertisements(&mut self, advertisements: Vec<L2AdvertisementSpec>) {
        self.advertisements = advertisements;
        self.inputs_changed = true;
        self.networks_stale = true;
    }

    pub fn set_services(
        &mut self,
        services: impl IntoIterator<Item = impl Into<Arc<ServiceFacts>>>,
    ) {
        self.services = services
            .into_iter()
            .map(|s| {
                let s = s.into();
                (s.id.clone(), s)
            })
            .collect();
        self.inputs_changed = true;
    }

    /// One Service's facts, new or changed.
    pub fn upsert_service(&mut self, facts: impl Into<Arc<ServiceFacts>>) {
        let facts = facts.into();
        if self.services.get(&facts.id) != Some(&facts) {
            self.services.insert(facts.id.clone(), facts);
            self.inputs_changed = true;
        }
    }

    /// A Service this node no longer may announce.
    pub fn remove_service(&mut self, id: &ServiceId) {
        self.inputs_changed |= self.services.remove(id).is_some();
    }

    /// This node's interfaces that are up, with their MACs (from rtnetlink).
    pub fn set_links(&mut self, links: BTreeMap<InterfaceName, MacAddr>, now: Instant) {
        self.links = links.clone();
        self.announcer.set_links(links, now);
        self.sync_networks(now);
    }

    /// Heartbeats on exactly the links where this node could announce (from its own
    /// registration, as the election sees it): a new network starts as after a restart, a
    /// network no longer wanted is forgotten.
    fn sync_networks(&mut self, now: Instant) {
        self.networks_stale = false;
        let wanted: BTreeSet<InterfaceName> =
            match (self.nodes.get(&self.node), self.published.get(&self.node)) {
                (Some(node), Some(interfaces)) => {
                    let me = NodeFacts {
                        interfaces: interfaces.clone(),
                        ..node.clone()
                    };
                    candidate_interfaces(&me, &self.pools, &self.advertisements)
                        .into_iter()
                        .filter(|interface| self.links.contains_key(interface))
                        .collect()
                }
                _ => BTreeSet::new(),
            };
        if self.networks.keys().eq(wanted.iter()) {
            return;
        }
        // The presence compared in `needs_recompute` is by position, not by name.
        self.inputs_changed = true;
        self.networks_changed = true;
        self.networks
            .retain(|interface, _| wanted.contains(interface));
        let known: BTreeSet<NodeId> = self.names.keys().copied().collect();
        for interface in wanted {
            self.networks.entry(interface).or_insert_with(|| {
                let mut membership = Membership::new(self.me, self.timing);
                membership.set_known(&known, now);
                membership
            });
        }
    }

    /// Whether the interfaces to heartbeat on changed since the last call.
    pub fn take_networks_changed(&mut self) -> bool {
        std::mem::take(&mut self.networks_changed)
    }

    /// The interfaces this node heartbeats on.
    pub fn heartbeat_interfaces(&self) -> impl Iterator<Item = &InterfaceName> {
        self.networks.keys()
    }

    // ---- decisions ----

    /// Who counts alive on each network as of `now`, this node included where it may answer.
    fn presence(&self, now: Instant) -> BTreeMap<InterfaceName, BTreeSet<String>> {
        self.networks
            .iter()
            .map(|(interface, membership)| {
                let mut heard: BTreeSet<String> = membership
                    .alive(now)
                    .into_iter()
                    .filter_map(|id| self.names.get(&id).cloned())
                    .collect();
                if !self.released && membership.permitted(now) {
                    heard.insert(self.node.clone());
                }
                (interface.clone(), heard)
            })
            .collect()
    }

    /// Who counts alive on each network, by heartbeat id (this node: whether it may answer):
    /// [`Self::presence`] without the names, cheap enough for every wake-up.
    fn presence_ids(&self, now: Instant) -> Vec<(bool, BTreeSet<NodeId>)> {
        self.networks
            .values()
            .map(|membership| {
                let mut alive = membership.alive(now);
                alive.retain(|id| self.names.contains_key(id));
                (!self.released && membership.permitted(now), alive)
            })
            .collect()
    }

    /// Whether [`SpeakerState::recompute`] could change anything: an input changed, or who
    /// counts alive where. Most heartbeats change nothing, and an election over a large
    /// cluster is worth skipping.
    pub fn needs_recompute(&self, now: Instant) -> bool {
        self.inputs_changed
            || self.pending_handovers.values().any(|&at| at <= now)
            || self.computed_presence_ids.as_ref() != Some(&self.presence_ids(now))
    }

    /// Re-elects owners and updates what this node announces.
    pub fn recompute(&mut self, now: Instant) -> Vec<OwnershipChange> {
        self.inputs_changed = false;
        let presence = self.presence(now);
        for (interface, heard) in &self.computed_presence {
            let Some(membership) = self.networks.get(interface) else {
                continue;
            };
            let now_heard = presence.get(interface);
            for node in heard.iter().filter(|node| **node != self.node) {
                if now_heard.is_none_or(|now_heard| !now_heard.contains(node))
                    && let Some(unheard) = membership.unheard_for(node_id(node), now)
                {
                    tracing::info!(peer = %node, %interface, ?unheard, "peer no longer counts alive");
                    self.detections.push(unheard);
                }
            }
        }
        self.computed_presence = presence;
        self.computed_presence_ids = Some(self.presence_ids(now));
        let present_somewhere = self
            .computed_presence
            .values()
            .any(|heard| heard.contains(&self.node));
        if !present_somewhere {
            self.election = Election::default();
            self.pending_handovers.clear();
            return self.announcer.withdraw_all();
        }
        let nodes: Vec<NodeFacts> = self
            .nodes
            .values()
            .map(|node| NodeFacts {
                interfaces: self.published.get(&node.name).cloned().unwrap_or_default(),
                ..node.clone()
            })
            .collect();
        let previous = Election::run(ClusterView {
            nodes: &nodes,
            alive: Alive::Heard {
                local: &self.node,
                by_interface: &self.computed_presence,
            },
            pools: &self.pools,
            advertisements: &self.advertisements,
            services: &self.services,
        });
        let previous = std::mem::replace(&mut self.election, previous);
        let owned = match nodes.iter().find(|n| n.name == self.node) {
            Some(me) => self
                .election
                .owned_by(&self.node)
                .into_iter()
                .map(|(ip, interfaces)| {
                    let interval = gratuitous_interval(ip, me, &self.pools, &self.advertisements);
                    (
                        ip,
                        Assignment {
                            interfaces,
                            gratuitous_interval: interval,
                        },
                    )
                })
                .collect(),
            None => BTreeMap::new(),
        };
        let owned = self.defer_live_handovers(owned, &previous, now);
        self.announcer.assign(owned, now)
    }

    /// `owned` without the IPs newly taken from a peer that still counts alive, until
    /// [`HANDOVER_GRACE`] has passed since this node first saw them won.
    fn defer_live_handovers(
        &mut self,
        mut owned: BTreeMap<IpAddr, Assignment>,
        previous: &Election,
        now: Instant,
    ) -> BTreeMap<IpAddr, Assignment> {
        self.pending_handovers
            .retain(|ip, _| owned.contains_key(ip));
        let answered: BTreeSet<IpAddr> = self.announcer.owned().map(|(ip, _)| ip).collect();
        for ip in owned.keys().filter(|ip| !answered.contains(ip)) {
            let from_live_peer = previous.owner_of(*ip).is_some_and(|owner| {
                owner != self.node
                    && self
                        .computed_presence
                        .values()
                        .any(|heard| heard.contains(owner))
            });
            if from_live_peer {
                self.pending_handovers
                    .entry(*ip)
                    .or_insert(now + HANDOVER_GRACE);
            }
        }
        self.pending_handovers.retain(|_, at| *at > now);
        owned.retain(|ip, _| !self.pending_handovers.contains_key(ip));
        owned
    }

    /// How long each peer found dead since the last call had gone unheard.
    pub fn take_detections(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.detections)
    }

    /// When to call [`SpeakerState::step_heartbeats`], [`SpeakerState::recompute`] and
    /// [`SpeakerState::due`] next without news: a heartbeat due, a peer's suspicion or death,
    /// this node's fence, or a gratuitous round.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.networks
            .values()
            .filter_map(|membership| membership.next_deadline(now))
            .chain(self.fenced_from(now))
            .chain(self.announcer.next_wakeup())
            .chain(self.pending_handovers.values().copied())
            .min()
    }

    /// Until when this node may answer at all, as far as it knows at `now` (none: not now).
    /// Each network allows it only within the fence of the last heartbeat sent there, and the
    /// election leaves out the networks whose rules forbid it, so the latest instant any
    /// network allows is the fence for every answer.
    pub fn fenced_from(&self, now: Instant) -> Option<Instant> {
        if self.released {
            return None;
        }
        self.networks
            .values()
            .filter_map(|membership| membership.answer_until(now))
            .max()
    }

    /// Gratuitous frames due at `now`; none while fenced. A fence that falls for a moment (a
    /// late heartbeat) keeps what is owned: peers still count this node alive, and answering
    /// resumes with the next heartbeat. What the rules forbid is withdrawn by the election.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        if !self.may_answer(now) {
            return Vec::new();
        }
        self.announcer.due(now)
    }

    /// A frame received on `interface` at `now`: decided as the packet readers decide from a
    /// [`Snapshot`] taken now, plus what that decision changes here (a conflict schedules a
    /// defence).
    pub fn handle_frame(
        &mut self,
        interface: &InterfaceName,
        frame: &[u8],
        now: Instant,
    ) -> FrameOutcome {
        let outcome = self.snapshot(now).handle_frame(interface, frame, now);
        if let Some(conflict) = &outcome.conflict {
            self.conflict_seen(conflict, now);
        }
        outcome
    }

    /// A packet reader saw `conflict` at `now`: one announcement round wins the neighbours
    /// back, at most once per [`crate::announcer::DEFEND_INTERVAL`], and only while the IP is
    /// still ours.
    pub fn conflict_seen(&mut self, conflict: &Conflict, now: Instant) -> bool {
        self.may_answer(now) && self.announcer.defend(conflict.claim.ip, now)
    }

    /// What this node may answer, frozen for the packet readers. It carries the fence instant,
    /// so readers go silent on time even if nobody publishes a newer one.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            fenced_from: self.fenced_from(now),
            answering: self.announcer.answering(self.ferrolb_macs()),
        }
    }

    /// The MACs of every FerroLB node's published interfaces: announcements from these are a
    /// handover, not a conflict.
    pub fn ferrolb_macs(&self) -> BTreeSet<MacAddr> {
        self.published
            .values()
            .flatten()
            .map(|interface| interface.mac)
            .collect()
    }

    /// The IPs this node answers for now, with their interfaces.
    pub fn announced(&self) -> BTreeMap<IpAddr, BTreeSet<InterfaceName>> {
        self.announcer
            .owned()
            .map(|(ip, interfaces)| (ip, interfaces.clone()))
            .collect()
    }

    /// Other speakers counted alive on some network at `now`.
    pub fn live_peers(&self, now: Instant) -> usize {
        self.networks
            .values()
            .flat_map(|membership| membership.alive(now))
            .filter(|id| self.names.contains_key(id))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Registered speakers counted alive on each network at `now`.
    pub fn peers_alive_by_interface(&self, now: Instant) -> BTreeMap<InterfaceName, usize> {
        self.networks
            .iter()
            .map(|(interface, membership)| {
                let alive = membership
                    .alive(now)
                    .into_iter()
                    .filter(|id| self.names.contains_key(id))
                    .count();
                (interface.clone(), alive)
            })
            .collect()
    }

    /// IPs that should be announced but have no live candidate node, as of the last
    /// [`SpeakerState::recompute`]; every unfenced speaker computes the same number. 0 while
    /// fenced: a fenced speaker elects nothing.
    pub fn ips_without_owner(&self) -> usize {
        self.election.ips_without_owner().len()
    }

    /// Whether this speaker may answer on some network at `now`.
    pub fn may_answer(&self, now: Instant) -> bool {
        self.fenced_from(now).is_some_and(|fence| now < fence)
    }

    /// The solicited-node multicast groups of the IPv6 addresses announced, per interface.
    pub fn solicited_node_groups(&self) -> BTreeMap<InterfaceName, BTreeSet<std::net::Ipv6Addr>> {
        self.announcer.solicited_node_groups()
    }

    /// The ServiceL2Status of every Service whose IPs this node announces.
    pub fn statuses(&self) -> BTreeMap<ServiceId, ServiceL2StatusStatus> {
        let mut statuses = BTreeMap::new();
        for group in self.election.groups() {
            let Some(owner) = group.owner.as_ref().filter(|o| o.node == self.node) else {
                continue;
            };
            for id in &group.services {
                let Some(service) = self.services.get(id) else {
                    continue;
                };
                let interfaces: BTreeSet<InterfaceName> = service
                    .ips
                    .iter()
                    .filter_map(|ip| owner.interfaces.get(ip))
                    .flatten()
                    .cloned()
                    .collect();
                statuses.insert(
                    id.clone(),
                    ServiceL2StatusStatus {
                        node: self.node.clone(),
                        service_name: id.name.to_string(),
                        interfaces: interfaces.into_iter().collect(),
                        ips: service.ips.iter().map(IpAddr::to_string).collect(),
                    },
                );
            }
        }
        statuses
    }
}

#[cfg(test)]
mod tests;
