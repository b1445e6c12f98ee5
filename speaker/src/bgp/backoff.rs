//! How long the session waits before connecting again after a failure: exponential backoff from
//! 1 s, doubling to a cap (60 s by default), so an unreachable or misconfigured router is not
//! hammered, yet a router back from a reboot is reached within a minute.
//!
//! The delay returns to its start only after a session has stayed Established for
//! `stable_after` (60 s by default): a peer that accepts the OPEN and then resets the session
//! every few seconds (a flapping session) keeps backing off instead of being retried at 1 s
//! forever.
//!
//! Jitter (RFC 4271 §10) comes from the caller as a [`Jitter`] factor, so this stays
//! deterministic and testable.

use std::time::{Duration, Instant};

/// A random factor in [0.75, 1.0] the caller draws per timer (RFC 4271 §10: timers are jittered
/// so that peers do not synchronize).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Jitter(f64);

impl Jitter {
    /// No jitter: the full delay.
    pub const NONE: Jitter = Jitter(1.0);
    pub const MIN: f64 = 0.75;

    /// `factor` clamped into [0.75, 1.0]; NaN counts as 1.0.
    pub fn new(factor: f64) -> Jitter {
        if factor.is_nan() {
            return Jitter::NONE;
        }
        Jitter(factor.clamp(Self::MIN, 1.0))
    }

    /// Maps a uniformly random `u32` onto [0.75, 1.0], for a caller holding a plain RNG.
    pub fn from_random(random: u32) -> Jitter {
        Jitter::new(Self::MIN + (1.0 - Self::MIN) * f64::from(random) / f64::from(u32::MAX))
    }

    pub fn factor(self) -> f64 {
        self.0
    }

    pub fn apply(self, delay: Duration) -> Duration {
        delay.mul_f64(self.0)
    }
}

/// The backoff's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub cap: Duration,
    /// How long a session must stay Established for the delay to return to `initial`.
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// The connect-retry delay of one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    config: BackoffConfig,
    next: Duration,
    established_at: Option<Instant>,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            next: config.initial,
            established_at: None,
        }
    }

    /// The delay before the next attempt, jittered, and the following one doubled up to the cap.
    /// A session that had been Established for `stable_after` first resets the sequence.
    pub fn next_delay(&mut self, now: Instant, jitter: Jitter) -> Duration {
        if let Some(since) = self.established_at.take()
            && now.saturating_duration_since(since) >= self.config.stable_after
        {
            self.next = self.config.initial;
        }
        let delay = self.next.min(self.config.cap);
        self.next = delay.saturating_mul(2).min(self.config.cap);
        jitter.apply(delay)
    }

    /// The session reached Established at `now`.
    pub fn established(&mut self, now: Instant) {
        self.established_at = Some(now);
    }

    /// Back to the start (an administrative stop and start is a fresh beginning).
    pub fn reset(&mut self) {
        self.next = self.config.initial;
        self.established_at = None;
    }

    /// The unjittered delay the next failure will wait (for status and tests).
    pub fn peek(&self) -> Duration {
        self.next.min(self.config.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_from_one_second_to_the_cap() {
        let now = Instant::now();
        let mut backoff = Backoff::new(BackoffConfig::default());
        let delays: Vec<_> = (0..9)
            .map(|_| backoff.next_delay(now, Jitter::NONE))
            .collect();
        assert_eq!(
            delays,
            [S(1), S(2), S(4), S(8), S(16), S(32), S(60), S(60), S(60)]
        );
    }

    #[test]
    fn resets_only_after_a_stable_session() {
        let start = Instant::now();
        let mut backoff = Backoff::new(BackoffConfig::default());
        for _ in 0..4 {
            backoff.next_delay(start, Jitter::NONE);
        }
        // Established for 10 s, then down: still backing off.
        backoff.established(start);
        assert_eq!(backoff.next_delay(start + S(10), Jitter::NONE), S(16));
        // Established for 60 s: back to 1 s.
        backoff.established(start + S(20));
        assert_eq!(backoff.next_delay(start + S(80), Jitter::NONE), S(1));
        assert_eq!(backoff.next_delay(start + S(81), Jitter::NONE), S(2));
    }

    #[test]
    fn jitter_shortens_by_at_most_a_quarter() {
        let now = Instant::now();
        let mut backoff = Backoff::new(BackoffConfig::default());
        assert_eq!(
            backoff.next_delay(now, Jitter::new(0.5)),
            Duration::from_millis(750)
        );
        assert_eq!(Jitter::new(2.0), Jitter::NONE);
        assert_eq!(Jitter::new(f64::NAN), Jitter::NONE);
        assert_eq!(Jitter::from_random(0).factor(), 0.75);
        assert_eq!(Jitter::from_random(u32::MAX).factor(), 1.0);
    }

    #[test]
    fn reset_starts_over() {
        let now = Instant::now();
        let mut backoff = Backoff::new(BackoffConfig {
            initial: S(2),
            cap: S(10),
            stable_after: S(30),
        });
        assert_eq!(backoff.next_delay(now, Jitter::NONE), S(2));
        assert_eq!(backoff.next_delay(now, Jitter::NONE), S(4));
        backoff.reset();
        assert_eq!(backoff.peek(), S(2));
    }
}
