//! Which speakers are alive, judged only by when this node saw their Lease change.
//!
//! A Lease's `renewTime` is written by another node's clock, so it is never compared with ours:
//! a speaker counts as alive while this node has seen its Lease change (a new resourceVersion)
//! within the lease duration, measured on this node's monotonic clock. A Lease seen for the
//! first time counts as just changed: that errs towards thinking a dead node alive for one
//! duration, which delays a takeover but never makes two nodes answer for one IP.
//!
//! "Within the duration" is measured up to the last moment this node's view is known to be
//! current, which is when it last saw its *own* Lease change arrive through the same watch,
//! rather than up to now. Watch events arrive in write order, so once our own renewal, written
//! after a peer's deadline, has arrived, a renewal by that peer before its deadline would have
//! arrived first. A watch that silently stalls therefore freezes every peer alive (which is
//! safe: believing too many nodes alive can only make this node claim less) instead of making
//! it take over IPs whose owner is still answering. The price is up to one renew interval of
//! extra failover time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What the watch reported about one speaker's Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent<'a> {
    /// The Lease exists; `version` is its resourceVersion. `held` is false when the speaker
    /// gave it up (no holder), which makes it dead at once.
    Seen { version: &'a str, held: bool },
    /// The Lease was deleted: the speaker gave it up or the node is gone.
    Deleted,
}

#[derive(Clone, Debug)]
struct Observation {
    version: String,
    held: bool,
    changed_at: Instant,
}

/// Lease observations for every other speaker.
#[derive(Clone, Debug)]
pub struct Liveness {
    lease_duration: Duration,
    nodes: BTreeMap<String, Observation>,
    /// Our own Lease: its last version, and when a change of it last arrived.
    own: Option<(String, Instant)>,
}

impl Liveness {
    pub fn new(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            nodes: BTreeMap::new(),
            own: None,
        }
    }

    /// This node's own Lease arrived through the watch with `version`: the view is current
    /// as of `now` if the version is new.
    pub fn observe_own(&mut self, version: &str, now: Instant) {
        if self.own.as_ref().is_none_or(|(seen, _)| seen != version) {
            self.own = Some((version.to_owned(), now));
        }
    }

    /// When the watch was last known to be current.
    pub fn current_as_of(&self) -> Option<Instant> {
        self.own.as_ref().map(|(_, at)| *at)
    }

    /// Records what the watch said about `node`'s Lease at `now`.
    pub fn observe(&mut self, node: &str, event: LeaseEvent<'_>, now: Instant) {
        match event {
            LeaseEvent::Deleted => {
                self.nodes.remove(node);
            }
            LeaseEvent::Seen { version, held } => match self.nodes.get_mut(node) {
                // A relist re-delivers unchanged Leases: that is not a renewal.
                Some(seen) if seen.version == version => seen.held = held,
                Some(seen) => {
                    seen.version = version.to_owned();
                    seen.held = held;
                    seen.changed_at = now;
                }
                None => {
                    self.nodes.insert(
                        node.to_owned(),
                        Observation {
                            version: version.to_owned(),
                            held,
                            changed_at: now,
                        },
                    );
                }
            },
        }
    }

    /// Whether `node` counts alive. Until this node has seen its own Lease, nobody expires.
    pub fn is_alive(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|seen| self.counts_alive(seen))
    }

    /// Every speaker counted alive.
    pub fn alive(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|(_, seen)| self.counts_alive(seen))
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// The earliest moment at which a live speaker could be found dead, given news of our own
    /// Lease by then: a hint for when to expect a takeover, not a timer that expires anyone.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter(|seen| self.counts_alive(seen))
            .filter_map(|seen| seen.changed_at.checked_add(self.lease_duration))
            .min()
    }

    fn counts_alive(&self, seen: &Observation) -> bool {
        let current_as_of = self.current_as_of().unwrap_or(seen.changed_at);
        seen.held && current_as_of.saturating_duration_since(seen.changed_at) < self.lease_duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(3);

    fn seen(version: &str) -> LeaseEvent<'_> {
        LeaseEvent::Seen {
            version,
            held: true,
        }
    }

    fn secs(start: Instant, seconds: f64) -> Instant {
        start + Duration::from_secs_f64(seconds)
    }

    #[test]
    fn a_lease_counts_for_one_duration_after_each_change() {
        let start = Instant::now();
        let mut liveness = Liveness::new(DURATION);
        liveness.observe("node-a", seen("1"), start);
        liveness.observe_own("10", secs(start, 2.999));
        assert!(liveness.is_alive("node-a"));
        liveness.observe_own("11", secs(start, 3.0));
        assert!(!liveness.is_alive("node-a"));
        liveness.observe("node-a", seen("2"), secs(start, 3.5));
        assert!(liveness.is_alive("node-a"));
        liveness.observe_own("12", secs(start, 6.4));
        assert!(liveness.is_alive("node-a"));
        liveness.observe_own("13", secs(start, 6.5));
        assert!(!liveness.is_alive("node-a"));
    }

    #[test]
    fn a_stalled_watch_expires_nobody() {
        let start = Instant::now();
        let mut liveness = Liveness::new(DURATION);
        liveness.observe_own("10", start);
        liveness.observe("node-a", seen("1"), start);
        // No news at all, not even of our own Lease: the view is stale, not the peer dead.
        assert!(liveness.is_alive("node-a"));
        // Our own Lease arriving again without a new version is no news either.
        liveness.observe_own("10", secs(start, 10.0));
        assert!(liveness.is_alive("node-a"));
        assert_eq!(liveness.current_as_of(), Some(start));
        liveness.observe_own("11", secs(start, 10.0));
        assert!(!liveness.is_alive("node-a"));
    }

    #[test]
    fn seeing_the_same_version_again_is_not_a_renewal() {
        let start = Instant::now();
        let mut liveness = Liveness::new(DURATION);
        liveness.observe("node-a", seen("7"), start);
        liveness.observe("node-a", seen("7"), secs(start, 2.0));
        liveness.observe_own("10", secs(start, 3.0));
        assert!(!liveness.is_alive("node-a"));
    }

    #[test]
    fn a_released_or_deleted_lease_is_dead_at_once() {
        let start = Instant::now();
        let mut liveness = Liveness::new(DURATION);
        liveness.observe("node-a", seen("1"), start);
        liveness.observe("node-b", seen("1"), start);
        liveness.observe(
            "node-a",
            LeaseEvent::Seen {
                version: "2",
                held: false,
            },
            start,
        );
        liveness.observe("node-b", LeaseEvent::Deleted, start);
        assert!(liveness.alive().is_empty());
        // Taking it again revives it.
        liveness.observe("node-a", seen("3"), start);
        assert!(liveness.is_alive("node-a"));
    }

    #[test]
    fn unknown_nodes_are_dead() {
        assert!(!Liveness::new(DURATION).is_alive("node-a"));
    }

    #[test]
    fn next_expiry_is_the_earliest_live_lease_end() {
        let start = Instant::now();
        let mut liveness = Liveness::new(DURATION);
        assert_eq!(liveness.next_expiry(), None);
        liveness.observe("node-a", seen("1"), start);
        liveness.observe("node-b", seen("1"), secs(start, 1.0));
        assert_eq!(liveness.next_expiry(), Some(start + DURATION));
        liveness.observe_own("10", start + DURATION);
        assert_eq!(liveness.next_expiry(), Some(secs(start, 4.0)));
        assert_eq!(liveness.alive().into_iter().collect::<Vec<_>>(), ["node-b"]);
    }
}
