//! One speaker's view of its peers on one network, from the heartbeats it hears there, and
//! whether it may answer on that network itself. Pure: verified heartbeats and instants of this
//! node's monotonic clock come in; the peers counted alive, the lists to send, and the moment
//! this node must fall silent come out. The reasoning behind every rule is in
//! `docs/heartbeat-protocol.md`; the property test in `tests.rs` checks it against interleavings
//! of heartbeats, losses, delays, stalls, crashes and restarts.
//!
//! The rules, in short:
//! - a peer unheard for [`HeartbeatTiming::suspect_after`] is *suspected*, and every heartbeat
//!   this node sends lists it (the first one at once);
//! - a node that hears a peer list it, directly or relayed, stops answering at once, and answers
//!   again only [`HeartbeatTiming::rejoin`] after the last such list;
//! - a peer counts dead once unheard for [`HeartbeatTiming::dead_after`], once a goodbye from it
//!   arrives, or once others have suspected it for [`HeartbeatTiming::report_grace`];
//! - a node answers only within [`HeartbeatTiming::fence`] of its last heartbeat sent;
//! - after a start or a stall of its own loop, a node counts every known peer as just heard, and
//!   answers nothing until every peer it counts alive has spoken since, and for at least
//!   [`HeartbeatTiming::rejoin`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::timing::HeartbeatTiming;
use super::wire::{Heartbeat, Kind, NodeId};

#[derive(Clone, Debug)]
struct Peer {
    /// When its last heartbeat arrived, or when this node started trusting absence (start, a
    /// stall, or the peer becoming known): absence before that proves nothing.
    heard: Instant,
    /// Whether a heartbeat of it was ever accepted: only then are its lists acted on.
    spoke: bool,
    /// Whether one arrived since this node (re)joined: until every live peer has spoken since,
    /// this node does not know whether one of them still answers for its IPs.
    spoke_since_join: bool,
    goodbye: bool,
    /// (incarnation, sequence) of the heartbeat its lists and goodbye come from: heartbeats
    /// overtake each other, and an older one must not undo a newer suspicion.
    latest: Option<(u64, u32)>,
    /// What its latest heartbeat listed.
    suspects: BTreeSet<NodeId>,
    reported: BTreeSet<NodeId>,
}

/// A heartbeat to send now: the caller fills in key, incarnation, sequence and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub suspects: Vec<NodeId>,
    pub reported: Vec<NodeId>,
}

#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeId,
    timing: HeartbeatTiming,
    peers: BTreeMap<NodeId, Peer>,
    /// Since when (continuously) some peer's latest heartbeat has suspected each node.
    reports: BTreeMap<NodeId, Instant>,
    last_step: Option<Instant>,
    last_sent: Option<Instant>,
    /// The suspicions and reports of the last heartbeat sent: a new one is sent at once.
    last_listed: (BTreeSet<NodeId>, BTreeSet<NodeId>),
    /// Nothing is answered before this (start, stall, suspicion of this node).
    quiet_until: Option<Instant>,
    /// Whether a peer's latest heartbeat listed this node, as of the last news.
    suspected: bool,
    /// Said goodbye: never answers again.
    left: bool,
    /// Authenticated senders that are not known yet (their registration has not reached this
    /// node), and when each was last heard: they are listed as suspects, so a node that has
    /// just joined stays silent until every peer that hears it knows it.
    unknown: BTreeMap<NodeId, Instant>,
}

impl Membership {
    pub fn new(me: NodeId, timing: HeartbeatTiming) -> Self {
        Self {
            me,
            timing,
            peers: BTreeMap::new(),
            reports: BTreeMap::new(),
            last_step: None,
            last_sent: None,
            last_listed: Default::default(),
            quiet_until: None,
            suspected: false,
            left: false,
            unknown: BTreeMap::new(),
        }
    }

    pub fn timing(&self) -> HeartbeatTiming {
        self.timing
    }

    /// The nodes that may have a speaker here (from the API's node list). New ones count as
    /// just heard; ones no longer listed are forgotten.
    ///
    /// A node that becomes known after this one started stepping is a newcomer: it answers
    /// nothing until this node knows it (it is listed while unknown, rule 6 of the protocol
    /// file), so this node need not wait for it to speak before answering. Waiting would
    /// silence every speaker on the LAN whenever a node joins.
    pub fn set_known(&mut self, nodes: &BTreeSet<NodeId>, now: Instant) {
        self.peers.retain(|id, _| nodes.contains(id));
        self.unknown.retain(|id, _| !nodes.contains(id));
        let newcomer = self.last_step.is_some();
        for id in nodes.iter().filter(|id| **id != self.me) {
            self.peers.entry(*id).or_insert_with(|| Peer {
                heard: now,
                spoke: false,
                spoke_since_join: newcomer,
                goodbye: false,
                latest: None,
                suspects: BTreeSet::new(),
                reported: BTreeSet::new(),
            });
        }
    }

    /// Whether `node` is one this membership listens to (known, not this node).
    pub fn knows(&self, node: NodeId) -> bool {
        self.peers.contains_key(&node)
    }

    /// A heartbeat that passed authentication and the replay guard arrived at `now`. Returns
    /// whether a heartbeat should be sent at once (this node just learnt of a new suspicion to
    /// relay).
    pub fn receive(&mut self, heartbeat: &Heartbeat, now: Instant) -> bool {
        let dead_after = self.timing.dead_after();
        let Some(peer) = self.peers.get_mut(&heartbeat.node) else {
            return false;
        };
        // Its lists counted before this heartbeat, and still do: unless they changed, nothing
        // derived from them did, and the usual heartbeat costs no pass over the peers.
        let mut news = !(peer.spoke
            && !peer.goodbye
            && now.saturating_duration_since(peer.heard) < dead_after);
        peer.heard = peer.heard.max(now);
        peer.spoke = true;
        peer.spoke_since_join = true;
        let order = (heartbeat.incarnation, heartbeat.sequence);
        if peer.latest.is_none_or(|latest| order > latest) {
            peer.latest = Some(order);
            let goodbye = heartbeat.kind == Kind::Goodbye;
            if goodbye != peer.goodbye
                || !same_ids(&peer.suspects, &heartbeat.suspects)
                || !same_ids(&peer.reported, &heartbeat.reported)
            {
                news = true;
                peer.goodbye = goodbye;
                peer.suspects = heartbeat.suspects.iter().copied().collect();
                peer.reported = heartbeat.reported.iter().copied().collect();
            }
        }
        if !news {
            return false;
        }
        self.refresh_reports(now);
        self.note_suspicion(now);
        self.listing_grew(now)
    }

    /// An authenticated, fresh heartbeat from a node this one does not know yet arrived at
    /// `now`. This node cannot count it (it has no facts about it), so it lists it: the sender
    /// must not answer for IPs this node still gives to someone else. Returns whether a
    /// heartbeat should be sent at once.
    pub fn heard_unknown(&mut self, node: NodeId, now: Instant) -> bool {
        if node == self.me || self.peers.contains_key(&node) {
            return false;
        }
        let first = self.unknown.insert(node, now).is_none();
        first && self.listing_grew(now)
    }

    /// A peer's heartbeat authenticated but was refused as from another time (its clock is
    /// off): it is alive, but this node cannot count it, so it is suspected and told so.
    pub fn refused_in_time(&mut self, node: NodeId) {
        if let Some(peer) = self.peers.get_mut(&node) {
            peer.spoke = true;
        }
    }

    /// Advances to `now`. Returns whether a heartbeat is due.
    pub fn step(&mut self, now: Instant) -> bool {
        let stalled = self
            .last_step
            .is_none_or(|last| now.saturating_duration_since(last) > self.timing.stall());
        self.last_step = Some(now);
        if stalled {
            // Whatever was not heard during the stall may simply not have been read yet.
            for peer in self.peers.values_mut() {
                peer.heard = peer.heard.max(now);
                peer.spoke_since_join = false;
            }
            self.reports.clear();
            self.quiet_until = Some(now + self.timing.rejoin());
        }
        let dead_after = self.timing.dead_after();
        self.unknown
            .retain(|_, heard| now.saturating_duration_since(*heard) < dead_after);
        self.refresh_reports(now);
        self.note_suspicion(now);
        self.listing_grew(now)
            || self
                .last_sent
                .is_none_or(|sent| now.saturating_duration_since(sent) >= self.timing.interval)
    }

    /// The heartbeat to send now.
    pub fn outgoing(&self, now: Instant) -> Outgoing {
        let (suspects, reported) = self.listing(now);
        let mut suspects: Vec<NodeId> = suspects.into_iter().collect();
        // Peers that once spoke first: if the list must be cut, what is cut is a node that may
        // have no speaker here at all.
        suspects.sort_by_key(|id| (!self.peers.get(id).is_some_and(|peer| peer.spoke), *id));
        Outgoing {
            suspects,
            reported: reported.into_iter().collect(),
        }
    }

    /// The heartbeat from [`Self::outgoing`] left this node at `now` (its send call returned).
    pub fn sent(&mut self, now: Instant) {
        self.last_listed = self.listing(now);
        if self.last_sent.is_none_or(|last| now > last) {
            self.last_sent = Some(now);
        }
        if self.quiet_until.is_none() {
            self.quiet_until = Some(now + self.timing.rejoin());
        }
    }

    /// The peers counted alive at `now` (this node not included).
    pub fn alive(&self, now: Instant) -> BTreeSet<NodeId> {
        self.peers
            .iter()
            .filter(|(id, peer)| self.counts_alive(**id, peer, now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Until when this node may answer on this network, as far as it knows at `now` (none: not
    /// now). The in-kernel responder enforces it even if this process stalls.
    pub fn answer_until(&self, now: Instant) -> Option<Instant> {
        if !self.permitted(now) {
            return None;
        }
        let until = self.fence_until()?;
        (now < until).then_some(until)
    }

    /// Whether the rules let this node answer here at `now`, leaving out the fence of its last
    /// heartbeat: what the election needs, while the fence itself is enforced where frames are
    /// answered (so a late send costs no re-election, only silence until the next one).
    pub fn permitted(&self, now: Instant) -> bool {
        self.last_sent.is_some()
            && !self.left
            && self.quiet_until.is_some_and(|quiet| now >= quiet)
            && !self.suspected_by_a_peer(now)
            && !self.waiting_for_a_peer(now)
    }

    /// Whether this node is quiet here after (re)joining, or still waits for a peer's
    /// heartbeat before it may answer.
    pub fn rejoining(&self, now: Instant) -> bool {
        self.quiet_until.is_none_or(|quiet| now < quiet) || self.waiting_for_a_peer(now)
    }

    /// The fence of the last heartbeat sent: nothing is answered here from then on unless
    /// another is sent.
    pub fn fence_until(&self) -> Option<Instant> {
        self.last_sent.map(|sent| sent + self.timing.fence())
    }

    /// How long `node` has been unheard at `now` (from when this node started trusting its
    /// absence); none for a node not known here.
    pub fn unheard_for(&self, node: NodeId, now: Instant) -> Option<std::time::Duration> {
        self.peers
            .get(&node)
            .map(|peer| now.saturating_duration_since(peer.heard))
    }

    /// The earliest instant after `now` at which something changes without news: the next
    /// heartbeat, the end of a quiet time, a peer's suspicion or death, a report believed.
    /// When to step next. Instants already past are left out: they have happened.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let heartbeat = self.last_sent.map(|sent| sent + self.timing.interval);
        let peers = self
            .peers
            .values()
            .filter(|peer| !peer.goodbye)
            .flat_map(|peer| {
                [
                    peer.heard + self.timing.suspect_after(),
                    peer.heard + self.timing.dead_after(),
                ]
            });
        let reports = self
            .reports
            .values()
            .map(|since| *since + self.timing.report_grace());
        let unknown = self
            .unknown
            .values()
            .map(|heard| *heard + self.timing.dead_after());
        heartbeat
            .into_iter()
            .chain(self.quiet_until)
            .chain(peers)
            .chain(reports)
            .chain(unknown)
            .filter(|at| *at > now)
            .min()
    }

    /// Says goodbye: returns the heartbeat lists for it. The caller must have stopped answering
    /// before it sends it, and must not answer again.
    pub fn leave(&mut self, now: Instant) -> Outgoing {
        self.left = true;
        self.outgoing(now)
    }

    /// A suspicion of this node that ends still keeps it quiet for the rejoin time: the peers
    /// that took its IPs over must hear the end of it too.
    fn note_suspicion(&mut self, now: Instant) {
        let suspected = self.suspected_by_a_peer(now);
        if suspected || self.suspected {
            let quiet = now + self.timing.rejoin();
            self.quiet_until = Some(self.quiet_until.map_or(quiet, |until| until.max(quiet)));
        }
        self.suspected = suspected;
    }

    fn counts_alive(&self, id: NodeId, peer: &Peer, now: Instant) -> bool {
        let unheard = now.saturating_duration_since(peer.heard);
        let reported = self.reports.get(&id).is_some_and(|since| {
            now.saturating_duration_since(*since) >= self.timing.report_grace()
        });
        !peer.goodbye && unheard < self.timing.dead_after() && !reported
    }

    /// Peers whose heartbeats are recent enough to act on what they list.
    fn recent_peers(&self, now: Instant) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(move |peer| {
            peer.spoke
                && !peer.goodbye
                && now.saturating_duration_since(peer.heard) < self.timing.dead_after()
        })
    }

    /// A peer counted alive that has not spoken since this node (re)joined may still be
    /// answering for this node's IPs: its heartbeat (which lists this node until it hears it)
    /// is what tells.
    fn waiting_for_a_peer(&self, now: Instant) -> bool {
        self.peers
            .iter()
            .any(|(id, peer)| !peer.spoke_since_join && self.counts_alive(*id, peer, now))
    }

    fn suspected_by_a_peer(&self, now: Instant) -> bool {
        self.recent_peers(now)
            .any(|peer| peer.suspects.contains(&self.me) || peer.reported.contains(&self.me))
    }

    fn refresh_reports(&mut self, now: Instant) {
        let listed: BTreeSet<NodeId> = self
            .recent_peers(now)
            .flat_map(|peer| peer.suspects.iter().copied())
            .filter(|id| *id != self.me)
            .collect();
        self.reports.retain(|id, _| listed.contains(id));
        for id in listed {
            self.reports.entry(id).or_insert(now);
        }
    }

    /// What this node's heartbeat lists: the peers it suspects itself, and those others suspect.
    /// A known peer never heard is suspected too: it may be a speaker whose heartbeats cannot
    /// reach this node, and it must not answer for IPs this node would give to someone else.
    fn listing(&self, now: Instant) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let suspects = self
            .peers
            .iter()
            // A peer that said goodbye stays listed once unheard: if it comes back where this
            // node cannot hear it, the list is what silences it.
            .filter(|(_, peer)| {
                now.saturating_duration_since(peer.heard) >= self.timing.suspect_after()
            })
            .map(|(id, _)| *id)
            .chain(
                self.unknown
                    .iter()
                    .filter(|(_, heard)| {
                        now.saturating_duration_since(**heard) < self.timing.dead_after()
                    })
                    .map(|(id, _)| *id),
            )
            .collect();
        let reported = self.reports.keys().copied().collect();
        (suspects, reported)
    }

    fn listing_grew(&self, now: Instant) -> bool {
        let (suspects, reported) = self.listing(now);
        !suspects.is_subset(&self.last_listed.0) || !reported.is_subset(&self.last_listed.1)
    }
}

/// Whether a heartbeat's list names exactly the ids of `set` (lists hold at most 32).
fn same_ids(set: &BTreeSet<NodeId>, list: &[NodeId]) -> bool {
    list.iter().all(|id| set.contains(id)) && set.iter().all(|id| list.contains(id))
}
