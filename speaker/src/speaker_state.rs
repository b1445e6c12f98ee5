//! Everything one speaker knows, and what it announces because of it: the pure core that the
//! Kubernetes watches, the Lease renewer, rtnetlink and the packet sockets drive.
//!
//! Its one safety rule: whatever the caller forgets to do, this speaker answers nothing once its
//! self-fence has fallen ([`SpeakerState::handle_frame`] checks the fence on every frame, not
//! only when owners are recomputed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use ferrolb_crds::{InterfaceName, L2AdvertisementSpec, ServiceL2StatusStatus};

use crate::announcer::{
    Announcer, Answering, Assignment, BurstPolicy, Conflict, Outgoing, OwnershipChange,
};
use crate::cluster::lease::LeaseObservation;
use crate::election::{
    ClusterView, Election, LeaseEvent, LeaseTiming, Liveness, NodeFacts, PoolFacts,
    PublishedInterface, SelfFence, ServiceFacts, ServiceId, gratuitous_interval,
};
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
    liveness: Liveness,
    fence: SelfFence,
    /// Node facts from the API, without interfaces (those come from the Leases).
    nodes: BTreeMap<String, NodeFacts>,
    published: BTreeMap<String, Vec<PublishedInterface>>,
    pools: Vec<PoolFacts>,
    advertisements: Vec<L2AdvertisementSpec>,
    services: BTreeMap<ServiceId, ServiceFacts>,
    election: Election,
    announcer: Announcer,
    /// What the last recompute was based on, to tell whether another would change anything.
    inputs_changed: bool,
    computed_alive: BTreeSet<String>,
    computed_may_answer: bool,
}

impl SpeakerState {
    pub fn new(node: &str, timing: LeaseTiming, burst: BurstPolicy) -> Self {
        Self {
            node: node.to_owned(),
            liveness: Liveness::new(timing.lease_duration),
            fence: SelfFence::new(timing.renew_deadline),
            nodes: BTreeMap::new(),
            published: BTreeMap::new(),
            pools: Vec::new(),
            advertisements: Vec::new(),
            services: BTreeMap::new(),
            election: Election::default(),
            announcer: Announcer::new(burst),
            inputs_changed: true,
            computed_alive: BTreeSet::new(),
            computed_may_answer: false,
        }
    }

    // ---- inputs; call `recompute` after a batch of them ----

    /// A speaker Lease was seen (this node's own included: its interfaces come from it too).
    pub fn lease_seen(&mut self, lease: &LeaseObservation, now: Instant) {
        if self.published.get(&lease.node) != Some(&lease.interfaces) {
            self.published
                .insert(lease.node.clone(), lease.interfaces.clone());
            self.inputs_changed = true;
        }
        if lease.node == self.node {
            self.liveness.observe_own(&lease.version, now);
        } else {
            let event = LeaseEvent::Seen {
                version: &lease.version,
                held: lease.held,
            };
            self.liveness.observe(&lease.node, event, now);
        }
    }

    pub fn lease_deleted(&mut self, node: &str, now: Instant) {
        self.inputs_changed |= self.published.remove(node).is_some();
        self.liveness.observe(node, LeaseEvent::Deleted, now);
    }

    /// A renewal of this node's Lease, sent at `sent_at`, succeeded.
    pub fn renewed(&mut self, sent_at: Instant) {
        self.fence.renewed(sent_at);
    }

    /// This speaker gives its Lease up (SIGTERM): it stops answering at once.
    pub fn release(&mut self) -> Vec<OwnershipChange> {
        self.fence.released();
        self.announcer.withdraw_all()
    }

    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeFacts>) {
        self.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        self.inputs_changed = true;
    }

    pub fn set_pools(&mut self, pools: Vec<PoolFacts>) {
        self.pools = pools;
        self.inputs_changed = true;
    }

    pub fn set_advertisements(&mut self, advertisements: Vec<L2AdvertisementSpec>) {
        self.advertisements = advertisements;
        self.inputs_changed = true;
    }

    pub fn set_services(&mut self, services: impl IntoIterator<Item = ServiceFacts>) {
        self.services = services.into_iter().map(|s| (s.id.clone(), s)).collect();
        self.inputs_changed = true;
    }

    /// This node's interfaces that are up, with their MACs (from rtnetlink).
    pub fn set_links(&mut self, links: BTreeMap<InterfaceName, MacAddr>, now: Instant) {
        self.announcer.set_links(links, now);
    }

    // ---- decisions ----

    /// Whether [`SpeakerState::recompute`] could change anything: an input changed, or the set
    /// of live peers, or the fence. Every speaker renews every second, so most Lease events
    /// change nothing, and an election over a large cluster is worth skipping.
    pub fn needs_recompute(&self, now: Instant) -> bool {
        self.inputs_changed
            || self.fence.may_answer(now) != self.computed_may_answer
            || self.liveness.alive() != self.computed_alive
    }

    /// Re-elects owners and updates what this node announces.
    pub fn recompute(&mut self, now: Instant) -> Vec<OwnershipChange> {
        self.inputs_changed = false;
        self.computed_alive = self.liveness.alive();
        self.computed_may_answer = self.fence.may_answer(now);
        if !self.computed_may_answer {
            self.election = Election::default();
            return self.announcer.withdraw_all();
        }
        let mut alive = self.computed_alive.clone();
        alive.insert(self.node.clone());
        let nodes: Vec<NodeFacts> = self
            .nodes
            .values()
            .map(|node| NodeFacts {
                interfaces: self.published.get(&node.name).cloned().unwrap_or_default(),
                ..node.clone()
            })
            .collect();
        let services: Vec<ServiceFacts> = self.services.values().cloned().collect();
        self.election = Election::run(ClusterView {
            nodes: &nodes,
            alive: &alive,
            pools: &self.pools,
            advertisements: &self.advertisements,
            services: &services,
        });
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
        self.announcer.assign(owned, now)
    }

    /// When to call [`SpeakerState::recompute`] and [`SpeakerState::due`] next without news:
    /// a peer's Lease running out, this node's fence, or a gratuitous round.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        [
            self.liveness.next_expiry().filter(|at| *at > now),
            self.fence
                .fenced_from()
                .filter(|_| self.fence.may_answer(now)),
            self.announcer.next_wakeup(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Gratuitous frames due at `now`; none once fenced.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        if !self.fence.may_answer(now) {
            self.announcer.withdraw_all();
            return Vec::new();
        }
        self.announcer.due(now)
    }

    /// A frame received on `interface` at `now`: decided as the packet readers decide from a
    /// [`Snapshot`] taken now, plus what that decision changes here (a conflict schedules a
    /// defence; a fallen fence withdraws everything).
    pub fn handle_frame(
        &mut self,
        interface: &InterfaceName,
        frame: &[u8],
        now: Instant,
    ) -> FrameOutcome {
        let outcome = self.snapshot().handle_frame(interface, frame, now);
        if outcome.dropped.is_none() && !self.fence.may_answer(now) {
            self.announcer.withdraw_all();
        }
        if let Some(conflict) = &outcome.conflict {
            self.conflict_seen(conflict, now);
        }
        outcome
    }

    /// A packet reader saw `conflict` at `now`: one announcement round wins the neighbours
    /// back, at most once per [`crate::announcer::DEFEND_INTERVAL`], and only while the IP is
    /// still ours.
    pub fn conflict_seen(&mut self, conflict: &Conflict, now: Instant) -> bool {
        self.fence.may_answer(now) && self.announcer.defend(conflict.claim.ip, now)
    }

    /// What this node may answer, frozen for the packet readers. It carries the fence instant,
    /// so readers go silent on time even if nobody publishes a newer one.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            fenced_from: self.fence.fenced_from(),
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

    /// Other speakers counted alive now.
    pub fn live_peers(&self) -> usize {
        self.liveness
            .alive()
            .into_iter()
            .filter(|node| *node != self.node)
            .count()
    }

    /// IPs that should be announced but have no live candidate node, as of the last
    /// [`SpeakerState::recompute`]; every unfenced speaker computes the same number. 0 while
    /// fenced: a fenced speaker elects nothing.
    pub fn ips_without_owner(&self) -> usize {
        self.election.ips_without_owner().len()
    }

    /// Whether this speaker's fence lets it answer at `now`.
    pub fn may_answer(&self, now: Instant) -> bool {
        self.fence.may_answer(now)
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
                        service_name: id.name.clone(),
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
