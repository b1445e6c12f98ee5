//! One BFD session in Asynchronous mode (RFC 5880 §6.2, §6.8), without I/O or clocks: the
//! caller feeds it [`Input`]s with the time they happened and carries out the [`Action`]s it
//! returns (send this packet, arm that timer, report this state change). Randomness enters only
//! as the [`Jitter`] of each periodic transmission, so every run is reproducible.
//!
//! Not implemented, by design: Demand mode of our own and the Echo function (we always ask the
//! peer for no Echo packets), authentication (refused in [`super::packet::parse`]) and the
//! Passive role (we always start sending).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use super::packet::{ControlPacket, Diagnostic, SessionState};

/// §6.8.3: while the session is not Up, Desired Min TX Interval is at least one second, so that
/// sessions that are down cost little.
pub const SLOW_DESIRED_MIN_TX_US: u32 = 1_000_000;

/// A session's configured timing: what we would like to send at, what we can receive at, and
/// how many missed packets make the peer dead to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    desired_min_tx_us: u32,
    required_min_rx_us: u32,
    detect_mult: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimersError {
    /// Intervals travel as 32-bit microseconds, and zero is reserved for Desired Min TX (and
    /// would mean "send me nothing" for Required Min RX, which leaves nothing to detect with).
    #[error("{what} of {value:?} is outside 1 µs to 4294.967295 s")]
    IntervalOutOfRange { what: &'static str, value: Duration },
    #[error("the detect multiplier must be at least 1")]
    ZeroDetectMult,
}

fn interval_micros(what: &'static str, value: Duration) -> Result<u32, TimersError> {
    u32::try_from(value.as_micros())
        .ok()
        .filter(|&micros| micros > 0)
        .ok_or(TimersError::IntervalOutOfRange { what, value })
}

fn micros(value: u32) -> Duration {
    Duration::from_micros(u64::from(value))
}

impl Timers {
    /// Intervals are kept in whole microseconds, as the packets carry them.
    pub fn new(
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_mult: u8,
    ) -> Result<Self, TimersError> {
        if detect_mult == 0 {
            return Err(TimersError::ZeroDetectMult);
        }
        Ok(Self {
            desired_min_tx_us: interval_micros(
                "desired minimum transmit interval",
                desired_min_tx,
            )?,
            required_min_rx_us: interval_micros(
                "required minimum receive interval",
                required_min_rx,
            )?,
            detect_mult,
        })
    }

    pub fn desired_min_tx(&self) -> Duration {
        micros(self.desired_min_tx_us)
    }

    pub fn required_min_rx(&self) -> Duration {
        micros(self.required_min_rx_us)
    }

    pub fn detect_mult(&self) -> u8 {
        self.detect_mult
    }
}

/// Where, within the window §6.8.7 allows, the next periodic transmission goes: the interval is
/// cut by a random 0 to 25 % (10 to 25 % when the local detect multiplier is 1, so that one late
/// packet cannot by itself reach the detection time), so that sessions started together do not
/// stay in step. The caller draws it; the session only applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jitter(u16);

impl Jitter {
    /// 75 % of the interval.
    pub const SHORTEST: Self = Self(0);
    /// Just under 100 % of the interval (90 % with a detect multiplier of 1).
    pub const LONGEST: Self = Self(u16::MAX);

    /// A jitter from 16 random bits.
    pub const fn new(random: u16) -> Self {
        Self(random)
    }

    /// The time to the next periodic transmission for a negotiated `interval`.
    pub fn apply(self, interval: Duration, detect_mult: u8) -> Duration {
        let span_percent: u128 = if detect_mult == 1 { 15 } else { 25 };
        let nanos = interval.as_nanos();
        let scaled = nanos * 75 / 100 + nanos * span_percent * u128::from(self.0) / (100 * 65_536);
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
    }
}

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A Control packet from the peer, already checked by [`super::packet::parse`] and received
    /// with TTL 255 from the peer's address to ours.
    Received(ControlPacket),
    /// The transmit timer ([`Action::SetTransmitTimer`]) ran out; `jitter` places the one after.
    TransmitTimer { jitter: Jitter },
    /// The detection timer ([`Action::SetDetectionTimer`]) ran out.
    DetectionTimer,
    /// Take the session down administratively (§6.8.16): the peer is told, nothing is detected.
    AdminDown,
    /// Enable a session taken down with [`Input::AdminDown`].
    AdminUp,
    /// New configured timing (§6.8.3): an Up session announces it with a Poll Sequence.
    SetTimers(Timers),
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer now.
    Send(ControlPacket),
    /// The session state changed.
    StateChanged(StateChange),
    /// Replace the transmit timer: deliver [`Input::TransmitTimer`] at this time (at once if it
    /// has passed); `None`: no periodic transmission for now.
    SetTransmitTimer(Option<Instant>),
    /// Replace the detection timer: deliver [`Input::DetectionTimer`] at this time; `None`:
    /// nothing to detect (no packet heard since the last expiry).
    SetDetectionTimer(Option<Instant>),
    /// A received packet was dropped, for this reason (for the logs; nothing else to do).
    Discarded(Discard),
}

/// A session state change, with why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub from: SessionState,
    pub to: SessionState,
    /// The local diagnostic set with the change (what our packets now carry).
    pub diagnostic: Diagnostic,
    /// The state the peer last reported.
    pub remote_state: SessionState,
}

impl StateChange {
    /// Whether this change means the path to the peer failed, so that a client protocol (BGP)
    /// should act: a session going from Up to Down, unless the peer took it down
    /// administratively, which RFC 5882 §3.2 says must not be taken as a failure.
    pub fn is_path_failure(&self) -> bool {
        self.from == SessionState::Up
            && self.to == SessionState::Down
            && self.remote_state != SessionState::AdminDown
    }
}

/// Why a received packet was dropped by the session (the session-free checks are in
/// [`super::packet::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("Your Discriminator {received} is not this session's {expected}")]
    WrongDiscriminator { received: u32, expected: NonZeroU32 },
    #[error("the session is AdminDown")]
    AdminDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    Idle,
    /// Our periodic packets carry the Poll bit until a packet with Final arrives. `again`: the
    /// parameters changed after this sequence began, so the Final may answer the older values
    /// and another sequence must follow.
    Active {
        again: bool,
    },
}

/// The state of one session: the variables of §6.8.1 and the two timers.
#[derive(Debug, Clone)]
pub struct Session {
    timers: Timers,
    state: SessionState,
    remote_state: SessionState,
    local_discriminator: NonZeroU32,
    remote_discriminator: u32,
    diagnostic: Diagnostic,
    remote_min_rx_us: u32,
    remote_desired_min_tx_us: u32,
    /// `None` until the first packet: no detection time is defined before it.
    remote_detect_mult: Option<u8>,
    remote_demand: bool,
    poll: Poll,
    /// The Desired Min TX our transmissions follow: an increase waits for the peer's Final
    /// (§6.8.3), so that its detection time grows before our interval does.
    desired_min_tx_in_use_us: u32,
    /// The Required Min RX our detection time follows: a decrease waits for the peer's Final,
    /// so that we do not time the peer out on an interval it has not heard of yet.
    required_min_rx_in_use_us: u32,
    last_received: Option<Instant>,
    /// The last periodic transmission and the jitter drawn with it: the next one is placed from
    /// them, also when the interval changes in between.
    last_periodic: Option<(Instant, Jitter)>,
    transmit_deadline: Option<Instant>,
    detection_deadline: Option<Instant>,
}

impl Session {
    /// A session in state Down that has sent nothing yet; [`Session::start`] sends the first
    /// packet. The discriminator must be unique among this system's sessions.
    pub fn new(timers: Timers, local_discriminator: NonZeroU32) -> Self {
        Self {
            timers,
            state: SessionState::Down,
            remote_state: SessionState::Down,
            local_discriminator,
            remote_discriminator: 0,
            diagnostic: Diagnostic::NONE,
            // §6.8.1: one microsecond until the peer says otherwise.
            remote_min_rx_us: 1,
            remote_desired_min_tx_us: 0,
            remote_detect_mult: None,
            remote_demand: false,
            poll: Poll::Idle,
            desired_min_tx_in_use_us: timers.desired_min_tx_us.max(SLOW_DESIRED_MIN_TX_US),
            required_min_rx_in_use_us: timers.required_min_rx_us,
            last_received: None,
            last_periodic: None,
            transmit_deadline: None,
            detection_deadline: None,
        }
    }

    /// Sends the first packet and arms the transmit timer.
    pub fn start(&mut self, now: Instant, jitter: Jitter) -> Vec<Action> {
        let mut actions = Vec::new();
        self.transmit_periodic(now, jitter, &mut actions);
        self.finish(actions)
    }

    /// Applies one input that happened at `now`. Timer inputs that arrive before the armed time
    /// (a timer the caller failed to replace) are ignored.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Received(packet) => self.receive(&packet, now, &mut actions),
            Input::TransmitTimer { jitter } => {
                if self.transmit_deadline.is_some_and(|at| at <= now) {
                    self.transmit_periodic(now, jitter, &mut actions);
                }
            }
            Input::DetectionTimer => {
                if self.detection_deadline.is_some_and(|at| at <= now) {
                    self.detection_time_expired(&mut actions);
                }
            }
            Input::AdminDown => {
                if self.state != SessionState::AdminDown {
                    self.change_state(
                        SessionState::AdminDown,
                        Diagnostic::ADMINISTRATIVELY_DOWN,
                        &mut actions,
                    );
                    self.send_now(&mut actions);
                }
            }
            Input::AdminUp => {
                if self.state == SessionState::AdminDown {
                    self.change_state(SessionState::Down, Diagnostic::NONE, &mut actions);
                    self.send_now(&mut actions);
                }
            }
            Input::SetTimers(timers) => {
                let before = self.announced();
                self.timers = timers;
                self.retune(before);
            }
        }
        self.finish(actions)
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The state the peer last reported (Down before it said anything).
    pub fn remote_state(&self) -> SessionState {
        self.remote_state
    }

    pub fn diagnostic(&self) -> Diagnostic {
        self.diagnostic
    }

    pub fn local_discriminator(&self) -> NonZeroU32 {
        self.local_discriminator
    }

    /// The peer's discriminator; zero until it is heard, and again after a detection time of
    /// silence.
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discriminator
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Whether a Poll Sequence is under way.
    pub fn polling(&self) -> bool {
        matches!(self.poll, Poll::Active { .. })
    }

    /// The nominal interval between periodic transmissions (§6.8.2): the slower of what we wish
    /// to send at and what the peer can receive at. Zero when the peer asked for none.
    pub fn transmit_interval(&self) -> Duration {
        micros(self.desired_min_tx_in_use_us.max(self.remote_min_rx_us))
    }

    /// The detection time (§6.8.4): the peer's multiplier times the slower of what we can
    /// receive at and what the peer wishes to send at. `None` before the peer is heard.
    pub fn detection_time(&self) -> Option<Duration> {
        let mult = self.remote_detect_mult?;
        let interval = self
            .required_min_rx_in_use_us
            .max(self.remote_desired_min_tx_us);
        Some(micros(interval) * u32::from(mult))
    }

    pub fn transmit_deadline(&self) -> Option<Instant> {
        self.transmit_deadline
    }

    pub fn detection_deadline(&self) -> Option<Instant> {
        self.detection_deadline
    }

    /// The Desired Min TX Interval our packets carry: the configured one, slowed to one second
    /// while the session is not Up (§6.8.3).
    fn announced_desired_min_tx_us(&self) -> u32 {
        if self.state == SessionState::Up {
            self.timers.desired_min_tx_us
        } else {
            self.timers.desired_min_tx_us.max(SLOW_DESIRED_MIN_TX_US)
        }
    }

    /// The two intervals our packets announce.
    fn announced(&self) -> (u32, u32) {
        (
            self.announced_desired_min_tx_us(),
            self.timers.required_min_rx_us,
        )
    }

    /// Brings the intervals in use in line with what we announce, after the state or the
    /// configuration changed (§6.8.3).
    fn retune(&mut self, (desired_before, required_before): (u32, u32)) {
        let (desired, required) = self.announced();
        if self.state != SessionState::Up {
            // Outside Up nothing waits for the peer's confirmation: our state change itself
            // tells it (and the packet saying so goes out at once).
            self.poll = Poll::Idle;
            self.desired_min_tx_in_use_us = desired;
            self.required_min_rx_in_use_us = required;
            return;
        }
        if (desired, required) == (desired_before, required_before) {
            return;
        }
        self.poll = match self.poll {
            Poll::Idle => Poll::Active { again: false },
            Poll::Active { .. } => Poll::Active { again: true },
        };
        // Sending faster and detecting more slowly are safe at once; the opposite waits.
        self.desired_min_tx_in_use_us = self.desired_min_tx_in_use_us.min(desired);
        self.required_min_rx_in_use_us = self.required_min_rx_in_use_us.max(required);
    }

    fn end_poll(&mut self, again: bool) {
        if again {
            self.poll = Poll::Active { again: false };
        } else {
            self.poll = Poll::Idle;
            (
                self.desired_min_tx_in_use_us,
                self.required_min_rx_in_use_us,
            ) = self.announced();
        }
    }

    /// §6.8.6, from the point where a packet has passed the session-free checks.
    fn receive(&mut self, packet: &ControlPacket, now: Instant, actions: &mut Vec<Action>) {
        if packet.your_discriminator != 0
            && packet.your_discriminator != self.local_discriminator.get()
        {
            actions.push(Action::Discarded(Discard::WrongDiscriminator {
                received: packet.your_discriminator,
                expected: self.local_discriminator,
            }));
            return;
        }
        self.remote_discriminator = packet.my_discriminator.get();
        self.remote_state = packet.state;
        self.remote_demand = packet.demand;
        self.remote_min_rx_us = packet.required_min_rx_us;
        self.remote_desired_min_tx_us = packet.desired_min_tx_us;
        self.remote_detect_mult = Some(packet.detect_mult);
        self.last_received = Some(now);
        if packet.final_bit
            && let Poll::Active { again } = self.poll
        {
            self.end_poll(again);
        }
        if self.state == SessionState::AdminDown {
            actions.push(Action::Discarded(Discard::AdminDown));
            return;
        }
        use SessionState::{AdminDown, Down, Init, Up};
        let next = match (self.state, packet.state) {
            (Init | Up, AdminDown) | (Up, Down) => {
                Some((Down, Diagnostic::NEIGHBOR_SIGNALED_SESSION_DOWN))
            }
            (Down, Down) => Some((Init, Diagnostic::NONE)),
            (Down, Init) | (Init, Init | Up) => Some((Up, Diagnostic::NONE)),
            _ => None,
        };
        if let Some((to, diagnostic)) = next {
            self.change_state(to, diagnostic, actions);
        }
        if packet.poll {
            // §6.8.7: answered at once, whatever the timers; Poll and Final never together.
            actions.push(Action::Send(self.control_packet(false, true)));
        } else if next.is_some() {
            self.send_now(actions);
        }
    }

    fn detection_time_expired(&mut self, actions: &mut Vec<Action>) {
        // §6.8.1: a detection time of silence forgets the peer's discriminator; the next
        // packet from it (in Down, with ours zeroed too) starts a new handshake.
        self.remote_discriminator = 0;
        self.last_received = None;
        if matches!(self.state, SessionState::Init | SessionState::Up) {
            self.change_state(
                SessionState::Down,
                Diagnostic::CONTROL_DETECTION_TIME_EXPIRED,
                actions,
            );
            self.send_now(actions);
        }
    }

    fn change_state(
        &mut self,
        to: SessionState,
        diagnostic: Diagnostic,
        actions: &mut Vec<Action>,
    ) {
        let before = self.announced();
        let from = self.state;
        self.state = to;
        self.diagnostic = diagnostic;
        self.retune(before);
        actions.push(Action::StateChanged(StateChange {
            from,
            to,
            diagnostic,
            remote_state: self.remote_state,
        }));
    }

    /// A packet outside the periodic schedule, so that the peer learns of a state change at
    /// once rather than up to a (slow, not-Up) interval later.
    fn send_now(&self, actions: &mut Vec<Action>) {
        actions.push(Action::Send(self.control_packet(self.polling(), false)));
    }

    /// §6.8.7: no periodic packets when the peer asked for none (Required Min RX zero), nor
    /// while it runs Demand mode in a session Up on both sides.
    fn sends_periodically(&self) -> bool {
        let peer_in_demand = self.remote_demand
            && self.state == SessionState::Up
            && self.remote_state == SessionState::Up;
        self.remote_min_rx_us != 0 && !peer_in_demand
    }

    fn transmit_periodic(&mut self, now: Instant, jitter: Jitter, actions: &mut Vec<Action>) {
        if self.sends_periodically() {
            actions.push(Action::Send(self.control_packet(self.polling(), false)));
        }
        self.last_periodic = Some((now, jitter));
    }

    fn control_packet(&self, poll: bool, final_bit: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.diagnostic,
            state: self.state,
            poll,
            final_bit,
            // Our BFD runs in the speaker, beside BGP: it shares fate with the control plane.
            control_plane_independent: false,
            demand: false,
            detect_mult: self.timers.detect_mult,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx_us: self.announced_desired_min_tx_us(),
            required_min_rx_us: self.timers.required_min_rx_us,
            required_min_echo_rx_us: 0,
        }
    }

    /// Re-derives both timers and reports the ones that moved.
    fn finish(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        let transmit = match self.last_periodic {
            Some((at, jitter)) if self.sends_periodically() => {
                at.checked_add(jitter.apply(self.transmit_interval(), self.timers.detect_mult))
            }
            _ => None,
        };
        if transmit != self.transmit_deadline {
            self.transmit_deadline = transmit;
            actions.push(Action::SetTransmitTimer(transmit));
        }
        let detection = self
            .last_received
            .zip(self.detection_time())
            .and_then(|(at, time)| at.checked_add(time));
        if detection != self.detection_deadline {
            self.detection_deadline = detection;
            actions.push(Action::SetDetectionTimer(detection));
        }
        actions
    }
}
