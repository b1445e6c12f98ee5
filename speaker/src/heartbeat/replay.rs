//! Refuses authenticated heartbeats that were sent before: a copy of a genuine heartbeat carries
//! a valid tag, so only its place in the sender's sequence gives it away.
//!
//! A heartbeat is new when its incarnation is the sender's current one and its sequence number
//! was not seen within the last [`WINDOW`] numbers (heartbeats of one process on several
//! networks may arrive out of order), or when it starts a newer incarnation. Its sent time must
//! also lie within the freshness bound of this node's wall clock: that is what stops the replay
//! of a recording to a speaker that has just started and remembers no sequence yet, and what
//! lets a node whose clock went backwards come back with a lower incarnation once its old one
//! has gone quiet for that long.
//!
//! Only heartbeats whose tag verified reach this guard, so forged packets cannot move it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{Heartbeat, NodeId};

/// Sequence numbers tracked behind the highest one seen.
pub const WINDOW: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("sent {age_ms} ms ago by the sender's clock, more than the freshness bound")]
    Stale { age_ms: u64 },
    #[error(
        "sent {ahead_ms} ms in the future by the sender's clock, more than the freshness bound"
    )]
    FromTheFuture { ahead_ms: u64 },
    #[error("an earlier incarnation of a sender that is running")]
    EarlierIncarnation,
    #[error("a sequence number already seen")]
    Repeated,
}

impl Replay {
    pub fn reason(self) -> &'static str {
        match self {
            Replay::Stale { .. } | Replay::FromTheFuture { .. } => "clock",
            Replay::EarlierIncarnation | Replay::Repeated => "replayed",
        }
    }
}

#[derive(Clone, Debug)]
struct Sequence {
    incarnation: u64,
    highest: u32,
    /// Bit i: `highest - i` was seen.
    seen: u64,
    last_accepted: Instant,
}

#[derive(Clone, Debug)]
pub struct ReplayGuard {
    freshness: Duration,
    senders: BTreeMap<NodeId, Sequence>,
}

impl ReplayGuard {
    pub fn new(freshness: Duration) -> Self {
        Self {
            freshness,
            senders: BTreeMap::new(),
        }
    }

    /// Accepts `heartbeat` (and remembers it) or says why it is a replay. `now_unix_ms` is this
    /// node's wall clock, `now` its monotonic one.
    pub fn check(
        &mut self,
        heartbeat: &Heartbeat,
        now_unix_ms: u64,
        now: Instant,
    ) -> Result<(), Replay> {
        let bound = u64::try_from(self.freshness.as_millis()).unwrap_or(u64::MAX);
        if let Some(age_ms) = now_unix_ms.checked_sub(heartbeat.sent_unix_ms)
            && age_ms > bound
        {
            return Err(Replay::Stale { age_ms });
        }
        if let Some(ahead_ms) = heartbeat.sent_unix_ms.checked_sub(now_unix_ms)
            && ahead_ms > bound
        {
            return Err(Replay::FromTheFuture { ahead_ms });
        }
        let fresh = Sequence {
            incarnation: heartbeat.incarnation,
            highest: heartbeat.sequence,
            seen: 1,
            last_accepted: now,
        };
        let Some(known) = self.senders.get_mut(&heartbeat.node) else {
            self.senders.insert(heartbeat.node, fresh);
            return Ok(());
        };
        if heartbeat.incarnation != known.incarnation {
            let quiet = now.saturating_duration_since(known.last_accepted) > self.freshness;
            if heartbeat.incarnation > known.incarnation || quiet {
                *known = fresh;
                return Ok(());
            }
            return Err(Replay::EarlierIncarnation);
        }
        if heartbeat.sequence > known.highest {
            let shift = heartbeat.sequence - known.highest;
            known.seen = if shift >= 64 { 0 } else { known.seen << shift } | 1;
            known.highest = heartbeat.sequence;
        } else {
            let behind = known.highest - heartbeat.sequence;
            if behind >= WINDOW || known.seen & (1 << behind) != 0 {
                return Err(Replay::Repeated);
            }
            known.seen |= 1 << behind;
        }
        known.last_accepted = now;
        Ok(())
    }

    /// Forgets a node that left the cluster.
    pub fn forget(&mut self, node: NodeId) {
        self.senders.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::wire::Kind;

    const NOW_MS: u64 = 1_790_000_000_000;

    fn heartbeat(incarnation: u64, sequence: u32) -> Heartbeat {
        Heartbeat {
            kind: Kind::Heartbeat,
            api_reachable: true,
            key_id: 1,
            node: NodeId(1),
            incarnation,
            sequence,
            sent_unix_ms: NOW_MS,
            suspects: vec![],
            reported: vec![],
        }
    }

    #[test]
    fn each_sequence_number_counts_once_even_out_of_order() {
        let now = Instant::now();
        let mut guard = ReplayGuard::new(Duration::from_secs(5));
        for sequence in [5, 7, 6, 100, 99, 37] {
            assert_eq!(
                guard.check(&heartbeat(1, sequence), NOW_MS, now),
                Ok(()),
                "{sequence}"
            );
        }
        for sequence in [5, 7, 100, 99, 37, 36] {
            assert_eq!(
                guard.check(&heartbeat(1, sequence), NOW_MS, now),
                Err(Replay::Repeated),
                "{sequence}"
            );
        }
        assert_eq!(guard.check(&heartbeat(1, 38), NOW_MS, now), Ok(()));
    }

    #[test]
    fn a_new_incarnation_starts_over_and_the_old_one_is_refused_while_the_new_one_speaks() {
        let now = Instant::now();
        let mut guard = ReplayGuard::new(Duration::from_secs(5));
        assert_eq!(guard.check(&heartbeat(1, 900), NOW_MS, now), Ok(()));
        assert_eq!(guard.check(&heartbeat(2, 1), NOW_MS, now), Ok(()));
        assert_eq!(
            guard.check(&heartbeat(1, 901), NOW_MS, now),
            Err(Replay::EarlierIncarnation)
        );
        // Once the current incarnation has been quiet past the freshness bound, a lower one
        // is a restart with a clock set back (a replay that old would be stale).
        let later = now + Duration::from_secs(6);
        let restarted = Heartbeat {
            sent_unix_ms: NOW_MS + 6_000,
            ..heartbeat(1, 1)
        };
        assert_eq!(guard.check(&restarted, NOW_MS + 6_000, later), Ok(()));
    }

    #[test]
    fn heartbeats_outside_the_freshness_bound_are_refused() {
        let now = Instant::now();
        let mut guard = ReplayGuard::new(Duration::from_secs(5));
        assert_eq!(
            guard.check(&heartbeat(1, 1), NOW_MS + 5_001, now),
            Err(Replay::Stale { age_ms: 5_001 })
        );
        assert_eq!(
            guard.check(&heartbeat(1, 1), NOW_MS - 5_001, now),
            Err(Replay::FromTheFuture { ahead_ms: 5_001 })
        );
        assert_eq!(guard.check(&heartbeat(1, 1), NOW_MS + 5_000, now), Ok(()));
    }

    #[test]
    fn a_large_jump_clears_the_window() {
        let now = Instant::now();
        let mut guard = ReplayGuard::new(Duration::from_secs(5));
        assert_eq!(guard.check(&heartbeat(1, 1), NOW_MS, now), Ok(()));
        assert_eq!(guard.check(&heartbeat(1, u32::MAX), NOW_MS, now), Ok(()));
        assert_eq!(
            guard.check(&heartbeat(1, 1), NOW_MS, now),
            Err(Replay::Repeated)
        );
        assert_eq!(
            guard.check(&heartbeat(1, u32::MAX - 1), NOW_MS, now),
            Ok(())
        );
    }
}
