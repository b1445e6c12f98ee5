//! Self-fencing: a speaker that cannot renew its Lease stops answering before anyone else may
//! take its IPs over.
//!
//! Other speakers count this one alive until a full lease duration after they saw its last
//! renewal, and they cannot see a renewal before this node sent it. So if this node stops
//! answering once a renew deadline (shorter than the duration) has passed since it *sent* its
//! last successful renewal, it is silent before any other node can count it dead. The
//! difference between the two is the margin for clock-rate differences and for this node's own
//! scheduling delay.

use std::time::{Duration, Instant};

/// The three periods of the Lease protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How often the Lease is renewed.
    pub renew_interval: Duration,
    /// How long after sending its last successful renewal this node keeps answering.
    pub renew_deadline: Duration,
    /// How long other nodes count this one alive after seeing a renewal.
    pub lease_duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseTimingError {
    #[error(
        "renew interval {renew_interval:?} must be positive and shorter than the renew deadline {renew_deadline:?}"
    )]
    RenewNotBeforeDeadline {
        renew_interval: Duration,
        renew_deadline: Duration,
    },
    #[error(
        "renew deadline {renew_deadline:?} must be shorter than the lease duration {lease_duration:?}, or a fenced node could still be answering when another takes over"
    )]
    DeadlineNotBeforeDuration {
        renew_deadline: Duration,
        lease_duration: Duration,
    },
}

impl LeaseTiming {
    /// `--lease-renew` 1 s, `--lease-duration` 3 s, and a renew deadline of 2 s: one missed
    /// renewal is tolerated, and a fenced node has been silent for 1 s when others take over.
    pub const DEFAULT: LeaseTiming = LeaseTiming {
        renew_interval: Duration::from_secs(1),
        renew_deadline: Duration::from_secs(2),
        lease_duration: Duration::from_secs(3),
    };

    pub fn new(
        renew_interval: Duration,
        renew_deadline: Duration,
        lease_duration: Duration,
    ) -> Result<Self, LeaseTimingError> {
        if renew_interval.is_zero() || renew_interval >= renew_deadline {
            return Err(LeaseTimingError::RenewNotBeforeDeadline {
                renew_interval,
                renew_deadline,
            });
        }
        if renew_deadline >= lease_duration {
            return Err(LeaseTimingError::DeadlineNotBeforeDuration {
                renew_deadline,
                lease_duration,
            });
        }
        Ok(Self {
            renew_interval,
            renew_deadline,
            lease_duration,
        })
    }

    /// The renew deadline for a given interval and duration: halfway between them, so that a
    /// slow renewal and the fencing margin share the slack equally.
    pub fn default_renew_deadline(renew_interval: Duration, lease_duration: Duration) -> Duration {
        renew_interval + lease_duration.saturating_sub(renew_interval) / 2
    }
}

/// Whether this speaker may answer, from the moments its successful renewals were sent.
#[derive(Clone, Debug)]
pub struct SelfFence {
    renew_deadline: Duration,
    last_renewal_sent: Option<Instant>,
}

impl SelfFence {
    /// Starts fenced: nothing is answered before the first renewal succeeds.
    pub fn new(renew_deadline: Duration) -> Self {
        Self {
            renew_deadline,
            last_renewal_sent: None,
        }
    }

    /// A renewal that was sent at `sent_at` succeeded. Pass the time the request was sent, not
    /// when the answer came: the write may have landed any time in between.
    pub fn renewed(&mut self, sent_at: Instant) {
        if self.last_renewal_sent.is_none_or(|last| sent_at > last) {
            self.last_renewal_sent = Some(sent_at);
        }
    }

    /// The Lease was given up (shutdown): fenced from now on.
    pub fn released(&mut self) {
        self.last_renewal_sent = None;
    }

    /// The moment this speaker must be silent from, unless it renews before then.
    pub fn fenced_from(&self) -> Option<Instant> {
        self.last_renewal_sent
            .and_then(|sent| sent.checked_add(self.renew_deadline))
    }

    pub fn may_answer(&self, now: Instant) -> bool {
        self.fenced_from().is_some_and(|fence| now < fence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_must_nest() {
        let s = Duration::from_secs;
        assert!(LeaseTiming::new(s(1), s(2), s(3)).is_ok());
        assert!(LeaseTiming::new(s(0), s(2), s(3)).is_err());
        assert!(LeaseTiming::new(s(2), s(2), s(3)).is_err());
        assert!(LeaseTiming::new(s(1), s(3), s(3)).is_err());
        assert_eq!(
            LeaseTiming::new(s(1), LeaseTiming::default_renew_deadline(s(1), s(3)), s(3)),
            Ok(LeaseTiming::DEFAULT)
        );
    }

    #[test]
    fn a_speaker_answers_only_within_the_deadline_of_its_last_renewal() {
        let start = Instant::now();
        let mut fence = SelfFence::new(Duration::from_secs(2));
        assert!(!fence.may_answer(start), "nothing before the first renewal");
        fence.renewed(start);
        assert!(fence.may_answer(start + Duration::from_millis(1999)));
        assert!(!fence.may_answer(start + Duration::from_secs(2)));
        fence.renewed(start + Duration::from_secs(1));
        assert!(fence.may_answer(start + Duration::from_millis(2999)));
        // A late answer to an older request does not move the fence back.
        fence.renewed(start);
        assert_eq!(fence.fenced_from(), Some(start + Duration::from_secs(3)));
        fence.released();
        assert!(!fence.may_answer(start + Duration::from_secs(1)));
    }

    #[test]
    fn the_fence_falls_before_any_other_node_counts_us_dead() {
        // Others see the renewal no earlier than it was sent and count us alive for a full
        // duration from then; we go silent a renew deadline after sending.
        let timing = LeaseTiming::DEFAULT;
        let sent = Instant::now();
        let mut fence = SelfFence::new(timing.renew_deadline);
        fence.renewed(sent);
        let earliest_takeover = sent + timing.lease_duration;
        assert!(!fence.may_answer(earliest_takeover - Duration::from_millis(500)));
    }
}
