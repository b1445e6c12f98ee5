//! The heartbeat's periods, derived from three settings so that they always nest the way the
//! safety argument in `docs/heartbeat-protocol.md` needs.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatTiming {
    /// How often a speaker sends a heartbeat on each network.
    pub interval: Duration,
    /// How late a send may be before it counts as missed: the sender's scheduling delay.
    pub jitter: Duration,
    /// The longest a heartbeat takes from one speaker's loop to another's, on the wire and in
    /// the receiver's queue.
    pub max_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatTimingError {
    #[error("the heartbeat interval must be at least 10 ms (was {0:?})")]
    IntervalTooShort(Duration),
    #[error("the heartbeat interval must be at most 10 s (was {0:?})")]
    IntervalTooLong(Duration),
    #[error("the jitter allowance ({jitter:?}) must be shorter than the interval ({interval:?})")]
    JitterTooLong {
        jitter: Duration,
        interval: Duration,
    },
    #[error("the delay allowance ({max_delay:?}) must be shorter than the interval ({interval:?})")]
    DelayTooLong {
        max_delay: Duration,
        interval: Duration,
    },
}

impl HeartbeatTiming {
    /// 75 ms heartbeats with 20 ms of jitter and 20 ms of delay: a dead node is replaced 285 ms
    /// after its last heartbeat arrived (a client sees 210-285 ms without an answer), one lost
    /// heartbeat goes unnoticed, and 100 peers cost a node about 90 kB/s. The allowances are
    /// generous for a LAN and a speaker at raised priority: there the delay is well under a
    /// millisecond and the loop is a few milliseconds late at most.
    pub const DEFAULT: HeartbeatTiming = HeartbeatTiming {
        interval: Duration::from_millis(75),
        jitter: Duration::from_millis(20),
        max_delay: Duration::from_millis(20),
    };

    pub fn new(
        interval: Duration,
        jitter: Duration,
        max_delay: Duration,
    ) -> Result<Self, HeartbeatTimingError> {
        if interval < Duration::from_millis(10) {
            return Err(HeartbeatTimingError::IntervalTooShort(interval));
        }
        if interval > Duration::from_secs(10) {
            return Err(HeartbeatTimingError::IntervalTooLong(interval));
        }
        if jitter >= interval {
            return Err(HeartbeatTimingError::JitterTooLong { jitter, interval });
        }
        if max_delay >= interval {
            return Err(HeartbeatTimingError::DelayTooLong {
                max_delay,
                interval,
            });
        }
        Ok(Self {
            interval,
            jitter,
            max_delay,
        })
    }

    /// How long after its last heartbeat was sent a speaker keeps answering: one interval and
    /// the jitter, so a working loop is never fenced between two sends.
    pub fn fence(&self) -> Duration {
        self.interval + self.jitter
    }

    /// How long a peer may stay unheard before it is suspected (and told so): two intervals
    /// and the jitter, so one lost heartbeat raises no suspicion.
    pub fn suspect_after(&self) -> Duration {
        2 * self.interval + self.jitter
    }

    /// How long a peer may stay unheard before it counts as dead. Its suspicion reaches it
    /// within `max_delay` and fences it at once; if it stalled just then, its own fence falls
    /// by `fence` later. Either way it is silent by now.
    pub fn dead_after(&self) -> Duration {
        self.suspect_after() + self.max_delay + self.fence()
    }

    /// How long a suspicion that only others raised must stand before this node believes it:
    /// the suspicion travels to the suspect through at most one relay (two delays), and a
    /// suspect that stalled just then is fenced by its own fence.
    pub fn report_grace(&self) -> Duration {
        2 * self.max_delay + self.fence()
    }

    /// How long a speaker stays silent after it (re)joins: starting, waking from a stall, or no
    /// longer suspected. Its first heartbeat must reach every peer, which then gives back what
    /// it took over, before it answers again.
    pub fn rejoin(&self) -> Duration {
        2 * self.max_delay
    }

    /// How long a speaker waits between two steps of its loop before it counts as having
    /// stalled, and distrusts every absence it would otherwise conclude from.
    pub fn stall(&self) -> Duration {
        self.fence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_give_the_documented_periods() {
        let timing = HeartbeatTiming::DEFAULT;
        let ms = Duration::from_millis;
        assert_eq!(timing.fence(), ms(95));
        assert_eq!(timing.suspect_after(), ms(170));
        assert_eq!(timing.dead_after(), ms(285));
        assert_eq!(timing.report_grace(), ms(135));
        assert_eq!(timing.rejoin(), ms(40));
        assert_eq!(HeartbeatTiming::new(ms(75), ms(20), ms(20)), Ok(timing));
    }

    #[test]
    fn settings_that_cannot_nest_are_refused() {
        let ms = Duration::from_millis;
        assert!(HeartbeatTiming::new(ms(5), ms(1), ms(1)).is_err());
        assert!(HeartbeatTiming::new(ms(100), ms(100), ms(1)).is_err());
        assert!(HeartbeatTiming::new(ms(100), ms(1), ms(100)).is_err());
        assert!(HeartbeatTiming::new(Duration::from_secs(11), ms(1), ms(1)).is_err());
    }

    #[test]
    fn the_periods_nest() {
        let timing = HeartbeatTiming::DEFAULT;
        assert!(timing.interval < timing.fence());
        assert!(timing.fence() < timing.suspect_after());
        assert!(timing.suspect_after() + timing.max_delay + timing.fence() <= timing.dead_after());
    }
}
