//! The BGP session state machine of RFC 4271 §8, for one peer, without I/O: the glue feeds it
//! [`Input`]s with the time, and carries out the [`Action`]s it returns (connect, send, close,
//! arm timers, report).
//!
//! This speaker only initiates connections, as MetalLB's does: it never listens, so there is no
//! connection collision to resolve (RFC 4271 §6.8) and the passive half of the FSM is left out.
//! That changes what two states mean: **Active** is "waiting for the connect-retry delay before
//! the next attempt" (no listening socket is open), and **Idle** is "administratively stopped":
//! after an error the session goes to Active and retries by itself, with exponential backoff
//! ([`super::backoff`]).
//!
//! Received UPDATEs are validated (RFC 4271 §6.3: a malformed one ends the session with its
//! NOTIFICATION) and otherwise ignored: the speaker only advertises. For the same reason the
//! "treat-as-withdraw" handling of RFC 7606 is not needed: there are no received routes to
//! withdraw.
//!
//! Timers are armed with [`Action::StartTimer`] and [`Action::StopTimer`]; the session also
//! remembers their deadlines ([`Session::next_timer`]) and ignores an expiry that is not due,
//! so a late or duplicate timer event from the glue is harmless.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::{Backoff, BackoffConfig, Jitter};
use super::capabilities::{self, Families, Family, MAX_RESTART_TIME_SECS, Negotiated};
use super::codec::{
    self, DecodeContext, HeaderError, Message, Notification, Open, error_code, subcode,
};
use super::rib_out::{RibOut, RouteTable};
use super::update_packing::{self, SessionEncoding};

/// The hold time while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_SENT_HOLD_TIME: Duration = Duration::from_secs(240);

/// The smallest non-zero hold time (RFC 4271 §4.2).
pub const MIN_HOLD_TIME: Duration = Duration::from_secs(3);

/// One peer's session settings, in plain types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub local_asn: u32,
    pub peer_asn: u32,
    pub router_id: Ipv4Addr,
    /// Zero: no keepalives and no hold timer; otherwise 3 s to 65535 s. Fractions of a second
    /// are dropped (the OPEN carries whole seconds).
    pub hold_time: Duration,
    /// Shorter than `hold_time`, at least 1 s. Default: a third of the negotiated hold time.
    /// See [`capabilities::negotiate_hold`] for a peer that lowers the hold time.
    pub keepalive_time: Option<Duration>,
    /// How long one TCP connect attempt may take.
    pub connect_time: Duration,
    pub families: Families,
    /// Offer graceful restart (RFC 4724) with this restart time (at most 4095 s).
    pub graceful_restart: Option<Duration>,
    /// Send an End-of-RIB marker per family after the initial routes (RFC 4724 §2: needed by a
    /// peer doing graceful restart for us, and it speeds up convergence anyway).
    pub send_end_of_rib: bool,
    pub backoff: BackoffConfig,
}

impl Config {
    /// A session with the usual defaults: hold time 90 s, connect timeout 10 s, both families,
    /// no graceful restart, End-of-RIB sent.
    pub fn new(local_asn: u32, peer_asn: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_asn,
            peer_asn,
            router_id,
            hold_time: Duration::from_secs(90),
            keepalive_time: None,
            connect_time: Duration::from_secs(10),
            families: Families::BOTH,
            graceful_restart: None,
            send_end_of_rib: true,
            backoff: BackoffConfig::default(),
        }
    }

    /// External BGP: the peer is in another AS.
    pub fn ebgp(&self) -> bool {
        self.local_asn != self.peer_asn
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.local_asn == 0 || self.peer_asn == 0 {
            return Err(ConfigError::ZeroAsn);
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::ZeroRouterId);
        }
        let hold = Duration::from_secs(self.hold_time.as_secs());
        if !self.hold_time.is_zero()
            && (hold < MIN_HOLD_TIME || hold.as_secs() > u64::from(u16::MAX))
        {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if let Some(keepalive) = self.keepalive_time
            && (keepalive < Duration::from_secs(1) || (!hold.is_zero() && keepalive >= hold))
        {
            return Err(ConfigError::KeepaliveTime { keepalive, hold });
        }
        if self.connect_time.is_zero() {
            return Err(ConfigError::ConnectTime);
        }
        if self.families.is_empty() {
            return Err(ConfigError::NoFamily);
        }
        if let Some(restart) = self.graceful_restart
            && restart.as_secs() > u64::from(MAX_RESTART_TIME_SECS)
        {
            return Err(ConfigError::RestartTime(restart));
        }
        let backoff = self.backoff;
        if backoff.initial.is_zero() || backoff.cap < backoff.initial {
            return Err(ConfigError::Backoff);
        }
        Ok(())
    }
}

/// A configuration the session cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("AS number 0 is reserved (RFC 7607)")]
    ZeroAsn,
    #[error("the router ID must not be 0.0.0.0")]
    ZeroRouterId,
    #[error("hold time {0:?} must be 0 or from 3 s to 65535 s")]
    HoldTime(Duration),
    #[error(
        "keepalive time {keepalive:?} must be at least 1 s and shorter than hold time {hold:?}"
    )]
    KeepaliveTime { keepalive: Duration, hold: Duration },
    #[error("connect time must be above 0")]
    ConnectTime,
    #[error("at least one address family must be enabled")]
    NoFamily,
    #[error("graceful restart time {0:?} exceeds 4095 s")]
    RestartTime(Duration),
    #[error("connect retry backoff must start above 0 and cap at or above its start")]
    Backoff,
}

/// The states of RFC 4271 §8.2.2 (see the module comment for what Idle and Active mean here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    /// A TCP connection is up in this state.
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// The session's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// The wait before the next connect attempt (backoff).
    ConnectRetry,
    Hold,
    Keepalive,
    /// The limit on one connect attempt.
    Connect,
}

impl TimerKind {
    pub const ALL: [TimerKind; 4] = [
        TimerKind::ConnectRetry,
        TimerKind::Hold,
        TimerKind::Keepalive,
        TimerKind::Connect,
    ];

    fn index(self) -> usize {
        match self {
            TimerKind::ConnectRetry => 0,
            TimerKind::Hold => 1,
            TimerKind::Keepalive => 2,
            TimerKind::Connect => 3,
        }
    }
}

/// What happens to the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    ManualStart,
    /// Administrative stop: Cease/Administrative Shutdown is sent if connected, then Idle.
    ManualStop,
    TcpConnected,
    TcpConnectFailed(String),
    TcpClosed,
    /// One whole message, as [`codec::split_frame`] delimited it.
    Received(&'a [u8]),
    /// [`codec::split_frame`] rejected the header: the stream cannot be read further.
    FramingError(HeaderError),
    TimerExpired(TimerKind),
}

/// What the glue must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer (port 179), then report TcpConnected or
    /// TcpConnectFailed.
    Connect,
    SendMessage(Vec<u8>),
    /// Close the connection (or abandon the connect attempt) after sending what came before.
    CloseConnection,
    /// Arm the timer to fire after the duration, replacing any earlier arming.
    StartTimer(TimerKind, Duration),
    StopTimer(TimerKind),
    StateChanged {
        from: State,
        to: State,
    },
    Established {
        negotiated: Negotiated,
    },
    /// The session, or an attempt at one, ended. `was_established` tells a lost session from a
    /// failed attempt.
    SessionDown {
        error: SessionError,
        was_established: bool,
    },
    /// The peer asked for our routes of this family again; they are being resent.
    RouteRefreshRequested(Family),
}

/// Why a session ended, classified for the status the glue writes and the events it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// The TCP connection could not be made (refused, unreachable, timed out).
    PeerUnreachable { reason: String },
    /// The peer closed the TCP connection without a NOTIFICATION.
    ConnectionClosed,
    /// Nothing came from the peer within the hold time (we sent Hold Timer Expired).
    HoldTimerExpired { hold_time: Duration },
    /// The peer's OPEN has another AS than configured (we sent Bad Peer AS).
    WrongAsn { expected: u32, received: u32 },
    /// The peer answered our OPEN with Bad Peer AS: its configuration expects another AS of us.
    PeerRejectedAsn { local_asn: u32 },
    /// We rejected the peer's OPEN: unsupported version, unacceptable hold time, bad BGP
    /// identifier. `subcode` is the OPEN Message Error subcode sent.
    OpenRejected { subcode: u8, detail: String },
    /// A message from the peer failed to decode or validate; `sent` is the NOTIFICATION's
    /// code and subcode, if one was sent.
    MalformedMessage {
        detail: String,
        sent: Option<(u8, u8)>,
    },
    /// The peer sent a message the state does not allow (we sent an FSM Error).
    UnexpectedMessage { state: State, message: &'static str },
    /// The peer sent a NOTIFICATION.
    PeerNotification {
        code: u8,
        subcode: u8,
        /// The operator's text of an administrative Cease (RFC 9003).
        communication: Option<String>,
    },
    /// ManualStop.
    AdministrativeStop,
    /// A message of ours could not be encoded (a bug or an unchecked configuration).
    Internal(String),
}

impl SessionError {
    /// A stable CamelCase reason for Kubernetes events and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::PeerUnreachable { .. } => "BGPPeerUnreachable",
            SessionError::ConnectionClosed => "BGPConnectionClosed",
            SessionError::HoldTimerExpired { .. } => "BGPHoldTimerExpired",
            SessionError::WrongAsn { .. } | SessionError::PeerRejectedAsn { .. } => "BGPWrongASN",
            SessionError::OpenRejected { .. } => "BGPOpenRejected",
            SessionError::MalformedMessage { .. } => "BGPMalformedMessage",
            SessionError::UnexpectedMessage { .. } => "BGPUnexpectedMessage",
            SessionError::PeerNotification { .. } => "BGPPeerNotification",
            SessionError::AdministrativeStop => "BGPSessionStopped",
            SessionError::Internal(_) => "BGPInternalError",
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::PeerUnreachable { reason } => {
                write!(f, "cannot connect to the peer: {reason}")
            }
            SessionError::ConnectionClosed => f.write_str("the peer closed the TCP connection"),
            SessionError::HoldTimerExpired { hold_time } => write!(
                f,
                "nothing received from the peer within the hold time ({} s)",
                hold_time.as_secs()
            ),
            SessionError::WrongAsn { expected, received } => write!(
                f,
                "the peer says it is AS {received}, but AS {expected} is configured for it"
            ),
            SessionError::PeerRejectedAsn { local_asn } => write!(
                f,
                "peer sent OPEN Message Error/Bad Peer AS: it expects another AS than ours \
                 ({local_asn}) for this node"
            ),
            SessionError::OpenRejected { detail, .. } => {
                write!(f, "rejected the peer's OPEN: {detail}")
            }
            SessionError::MalformedMessage { detail, sent } => {
                write!(f, "malformed message from the peer: {detail}")?;
                if let Some((code, subcode)) = sent {
                    write!(f, " (sent {})", codec::describe(*code, *subcode))?;
                }
                Ok(())
            }
            SessionError::UnexpectedMessage { state, message } => write!(
                f,
                "the peer sent {message} in state {state} (sent Finite State Machine Error)"
            ),
            SessionError::PeerNotification {
                code,
                subcode,
                communication,
            } => {
                write!(f, "peer sent {}", codec::describe(*code, *subcode))?;
                if let Some(text) = communication {
                    write!(f, ": {text:?}")?;
                }
                Ok(())
            }
            SessionError::AdministrativeStop => f.write_str("session stopped administratively"),
            SessionError::Internal(detail) => write!(f, "internal error: {detail}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// One peer's session.
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    timers: [Option<Instant>; 4],
    backoff: Backoff,
    negotiated: Option<Negotiated>,
    rib_out: Option<RibOut>,
    /// The routes to advertise; `None` until the glue first says, so that End-of-RIB is never
    /// sent before the real table (a peer doing graceful restart would drop our routes).
    desired: Option<Arc<RouteTable>>,
    end_of_rib_sent: bool,
    last_error: Option<SessionError>,
}

impl Session {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            backoff: Backoff::new(config.backoff),
            config,
            state: State::Idle,
            timers: [None; 4],
            negotiated: None,
            rib_out: None,
            desired: None,
            end_of_rib_sent: false,
            last_error: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// What the current session negotiated: set from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the last session or attempt ended.
    pub fn last_error(&self) -> Option<&SessionError> {
        self.last_error.as_ref()
    }

    /// What the peer has from us; `None` unless Established.
    pub fn rib_out(&self) -> Option<&RibOut> {
        self.rib_out.as_ref()
    }

    /// When `kind` fires, if armed.
    pub fn timer_deadline(&self, kind: TimerKind) -> Option<Instant> {
        self.timers[kind.index()]
    }

    /// The earliest armed timer: a glue that prefers one sleep to four timers waits for this.
    pub fn next_timer(&self) -> Option<(TimerKind, Instant)> {
        TimerKind::ALL
            .into_iter()
            .filter_map(|kind| self.timer_deadline(kind).map(|at| (kind, at)))
            .min_by_key(|(_, at)| *at)
    }

    /// The routes to advertise from now on. Once Established, the difference is sent at once;
    /// the first call after the session came up also sends End-of-RIB.
    pub fn set_routes(&mut self, desired: impl Into<Arc<RouteTable>>) -> Vec<Action> {
        self.desired = Some(desired.into());
        let mut actions = Vec::new();
        self.advertise(&mut actions);
        actions
    }

    /// Feeds one input at `now`; `jitter` scales the connect-retry and keepalive timers started
    /// by it (RFC 4271 §10).
    pub fn handle(&mut self, input: Input<'_>, now: Instant, jitter: Jitter) -> Vec<Action> {
        let mut step = Step {
            session: self,
            now,
            jitter,
            actions: Vec::new(),
        };
        step.input(input);
        step.actions
    }

    fn advertise(&mut self, actions: &mut Vec<Action>) {
        let (Some(rib_out), Some(desired), Some(negotiated)) = (
            self.rib_out.as_mut(),
            self.desired.as_ref(),
            self.negotiated.as_ref(),
        ) else {
            return;
        };
        actions.extend(
            rib_out
                .reconcile(desired)
                .into_iter()
                .map(Action::SendMessage),
        );
        if self.config.send_end_of_rib && !self.end_of_rib_sent {
            for family in negotiated.families.iter() {
                if let Ok(marker) = update_packing::end_of_rib(family) {
                    actions.push(Action::SendMessage(marker));
                }
            }
        }
        self.end_of_rib_sent = true;
    }
}

/// One input being handled: the session, the time, and the actions so far.
struct Step<'s> {
    session: &'s mut Session,
    now: Instant,
    jitter: Jitter,
    actions: Vec<Action>,
}

impl Step<'_> {
    fn input(&mut self, input: Input<'_>) {
        let state = self.session.state;
        match input {
            Input::ManualStart => {
                if state == State::Idle {
                    self.session.backoff.reset();
                    self.connect();
                }
            }
            Input::ManualStop => self.manual_stop(),
            Input::TcpConnected => match state {
                State::Connect => self.connected(),
                // A connect attempt we gave up on completed after all.
                State::Idle | State::Active => self.actions.push(Action::CloseConnection),
                _ => {}
            },
            Input::TcpConnectFailed(reason) => {
                if state == State::Connect {
                    self.fail(SessionError::PeerUnreachable { reason }, None, false);
                }
            }
            Input::TcpClosed => match state {
                State::Connect => self.fail(
                    SessionError::PeerUnreachable {
                        reason: "the connection closed while connecting".to_owned(),
                    },
                    None,
                    false,
                ),
                s if s.is_connected() => self.fail(SessionError::ConnectionClosed, None, true),
                _ => {}
            },
            Input::Received(frame) => {
                if state.is_connected() {
                    self.received(frame);
                }
            }
            Input::FramingError(error) => {
                if state.is_connected() {
                    let notification = error.notification();
                    self.fail(
                        SessionError::MalformedMessage {
                            detail: error.to_string(),
                            sent: Some((notification.code, notification.subcode)),
                        },
                        Some(notification),
                        true,
                    );
                }
            }
            Input::TimerExpired(kind) => self.timer_expired(kind),
        }
    }

    fn set_state(&mut self, to: State) {
        let from = self.session.state;
        if from != to {
            self.session.state = to;
            self.actions.push(Action::StateChanged { from, to });
        }
    }

    fn start_timer(&mut self, kind: TimerKind, after: Duration) {
        self.session.timers[kind.index()] = Some(self.now + after);
        self.actions.push(Action::StartTimer(kind, after));
    }

    fn stop_timer(&mut self, kind: TimerKind) {
        if self.session.timers[kind.index()].take().is_some() {
            self.actions.push(Action::StopTimer(kind));
        }
    }

    fn send(&mut self, message: Vec<u8>) {
        self.actions.push(Action::SendMessage(message));
    }

    fn connect(&mut self) {
        self.actions.push(Action::Connect);
        self.start_timer(TimerKind::Connect, self.session.config.connect_time);
        self.set_state(State::Connect);
    }

    fn connected(&mut self) {
        self.stop_timer(TimerKind::Connect);
        let config = &self.session.config;
        let open = Open {
            asn: config.local_asn,
            hold_time_secs: u16::try_from(config.hold_time.as_secs()).unwrap_or(u16::MAX),
            router_id: config.router_id,
            capabilities: capabilities::offered(
                config.local_asn,
                config.families,
                config.graceful_restart,
            ),
        };
        match codec::encode_open(&open) {
            Ok(bytes) => {
                self.send(bytes);
                self.start_timer(TimerKind::Hold, OPEN_SENT_HOLD_TIME);
                self.set_state(State::OpenSent);
            }
            Err(error) => self.fail(SessionError::Internal(error.to_string()), None, true),
        }
    }

    fn manual_stop(&mut self) {
        let state = self.session.state;
        if state == State::Idle {
            return;
        }
        if state.is_connected() {
            self.send(codec::encode_notification(&Notification::new(
                error_code::CEASE,
                subcode::ADMINISTRATIVE_SHUTDOWN,
                Vec::new(),
            )));
        }
        if state != State::Active {
            self.actions.push(Action::CloseConnection);
        }
        for kind in TimerKind::ALL {
            self.stop_timer(kind);
        }
        self.end_session();
        self.session.backoff.reset();
        self.set_state(State::Idle);
        self.report_down(
            SessionError::AdministrativeStop,
            state == State::Established,
        );
    }

    /// Ends the session or attempt after an error: NOTIFICATION (if connected), close, and a
    /// retry after the backoff delay from Active.
    fn fail(&mut self, error: SessionError, notification: Option<Notification>, close: bool) {
        let state = self.session.state;
        if let Some(notification) = notification
            && state.is_connected()
        {
            self.send(codec::encode_notification(&notification));
        }
        if close {
            self.actions.push(Action::CloseConnection);
        }
        for kind in [TimerKind::Connect, TimerKind::Hold, TimerKind::Keepalive] {
            self.stop_timer(kind);
        }
        self.end_session();
        let delay = self.session.backoff.next_delay(self.now, self.jitter);
        self.start_timer(TimerKind::ConnectRetry, delay);
        self.set_state(State::Active);
        self.report_down(error, state == State::Established);
    }

    fn end_session(&mut self) {
        self.session.negotiated = None;
        self.session.rib_out = None;
        self.session.end_of_rib_sent = false;
    }

    fn report_down(&mut self, error: SessionError, was_established: bool) {
        self.session.last_error = Some(error.clone());
        self.actions.push(Action::SessionDown {
            error,
            was_established,
        });
    }

    fn timer_expired(&mut self, kind: TimerKind) {
        // Only a due, armed timer counts: the glue may deliver an expiry late or twice.
        match self.session.timers[kind.index()] {
            Some(deadline) if self.now >= deadline => {}
            _ => return,
        }
        self.session.timers[kind.index()] = None;
        let state = self.session.state;
        match (kind, state) {
            (TimerKind::ConnectRetry, State::Active) => self.connect(),
            (TimerKind::Connect, State::Connect) => {
                let after = self.session.config.connect_time;
                self.fail(
                    SessionError::PeerUnreachable {
                        reason: format!("no TCP connection within {} s", after.as_secs_f64()),
                    },
                    None,
                    true,
                );
            }
            (TimerKind::Hold, s) if s.is_connected() => {
                let hold_time = self
                    .session
                    .negotiated
                    .as_ref()
                    .map_or(OPEN_SENT_HOLD_TIME, |n| n.hold_time);
                self.fail(
                    SessionError::HoldTimerExpired { hold_time },
                    Some(Notification::new(
                        error_code::HOLD_TIMER_EXPIRED,
                        0,
                        Vec::new(),
                    )),
                    true,
                );
            }
            (TimerKind::Keepalive, State::OpenConfirm | State::Established) => {
                self.send(codec::encode_keepalive());
                self.start_keepalive_timer();
            }
            _ => {}
        }
    }

    fn start_keepalive_timer(&mut self) {
        if let Some(interval) = self
            .session
            .negotiated
            .as_ref()
            .and_then(|n| n.keepalive_time)
        {
            let jittered = self.jitter.apply(interval);
            self.start_timer(TimerKind::Keepalive, jittered);
        }
    }

    fn restart_hold_timer(&mut self) {
        if let Some(negotiated) = &self.session.negotiated
            && !negotiated.hold_time.is_zero()
        {
            let hold = negotiated.hold_time;
            self.start_timer(TimerKind::Hold, hold);
        }
    }

    fn received(&mut self, frame: &[u8]) {
        let context = DecodeContext {
            four_octet_as: self
                .session
                .negotiated
                .as_ref()
                .is_some_and(|n| n.four_octet_as),
            ebgp: self.session.config.ebgp(),
        };
        let message = match codec::decode(frame, context) {
            Ok(message) => message,
            Err(malformed) => {
                let sent = malformed.notification.as_ref().map(|n| (n.code, n.subcode));
                let error = match &malformed.notification {
                    // The codec rejected the OPEN itself (version, parameters).
                    Some(n) if n.code == error_code::OPEN_MESSAGE => SessionError::OpenRejected {
                        subcode: n.subcode,
                        detail: malformed.detail.clone(),
                    },
                    _ => SessionError::MalformedMessage {
                        detail: malformed.detail.clone(),
                        sent,
                    },
                };
                return self.fail(error, malformed.notification, true);
            }
        };
        if let Message::Notification(notification) = &message {
            return self.peer_notification(notification);
        }
        match self.session.state {
            State::OpenSent => match message {
                Message::Open(open) => self.open_received(&open),
                other => self.unexpected(other.kind(), subcode::UNEXPECTED_IN_OPEN_SENT),
            },
            State::OpenConfirm => match message {
                Message::Keepalive => self.established(),
                other => self.unexpected(other.kind(), subcode::UNEXPECTED_IN_OPEN_CONFIRM),
            },
            State::Established => match message {
                Message::Keepalive | Message::Update(_) => self.restart_hold_timer(),
                Message::RouteRefresh(refresh) => {
                    self.restart_hold_timer();
                    self.route_refresh(refresh.family(), refresh.subtype);
                }
                other => self.unexpected(other.kind(), subcode::UNEXPECTED_IN_ESTABLISHED),
            },
            _ => {}
        }
    }

    fn peer_notification(&mut self, notification: &Notification) {
        let error = if (notification.code, notification.subcode)
            == (error_code::OPEN_MESSAGE, subcode::BAD_PEER_AS)
        {
            SessionError::PeerRejectedAsn {
                local_asn: self.session.config.local_asn,
            }
        } else {
            SessionError::PeerNotification {
                code: notification.code,
                subcode: notification.subcode,
                communication: notification.shutdown_communication(),
            }
        };
        self.fail(error, None, true);
    }

    fn unexpected(&mut self, message: &'static str, fsm_subcode: u8) {
        let state = self.session.state;
        self.fail(
            SessionError::UnexpectedMessage { state, message },
            Some(Notification::new(error_code::FSM, fsm_subcode, Vec::new())),
            true,
        );
    }

    /// A good OPEN from the peer moves to OpenConfirm; a bad one ends the attempt.
    fn open_received(&mut self, open: &Open) {
        let negotiated = match check_open(&self.session.config, open) {
            Ok(negotiated) => negotiated,
            Err((error, notification)) => return self.fail(error, Some(notification), true),
        };
        let hold_time = negotiated.hold_time;
        self.send(codec::encode_keepalive());
        self.session.negotiated = Some(negotiated);
        if hold_time.is_zero() {
            self.stop_timer(TimerKind::Hold);
        } else {
            self.start_timer(TimerKind::Hold, hold_time);
            self.start_keepalive_timer();
        }
        self.set_state(State::OpenConfirm);
    }

    fn established(&mut self) {
        self.restart_hold_timer();
        let Some(negotiated) = self.session.negotiated.clone() else {
            return self.fail(
                SessionError::Internal("OpenConfirm without a negotiated session".into()),
                None,
                true,
            );
        };
        self.session.backoff.established(self.now);
        self.session.rib_out = Some(RibOut::new(SessionEncoding::new(
            self.session.config.local_asn,
            &negotiated,
        )));
        self.session.end_of_rib_sent = false;
        self.set_state(State::Established);
        self.actions.push(Action::Established { negotiated });
        self.session.advertise(&mut self.actions);
    }

    /// A ROUTE-REFRESH for a family we carry resends that family's routes (RFC 2918 §4);
    /// other families and enhanced route refresh markers (not offered) are ignored.
    fn route_refresh(&mut self, family: Option<Family>, subtype: u8) {
        let Some(family) = family else { return };
        let negotiated = self
            .session
            .negotiated
            .as_ref()
            .is_some_and(|n| n.families.contains(family));
        if subtype != 0 || !negotiated {
            return;
        }
        self.actions.push(Action::RouteRefreshRequested(family));
        if let Some(rib_out) = self.session.rib_out.as_mut() {
            rib_out.forget_family(family);
        }
        self.session.advertise(&mut self.actions);
    }
}

/// Checks the peer's OPEN in RFC 4271 §6.2 order (the codec already checked the version and the
/// optional parameters) and negotiates the session.
fn check_open(config: &Config, open: &Open) -> Result<Negotiated, (SessionError, Notification)> {
    let reject = |subcode: u8, detail: String| {
        (
            SessionError::OpenRejected { subcode, detail },
            Notification::new(error_code::OPEN_MESSAGE, subcode, Vec::new()),
        )
    };
    if open.asn != config.peer_asn {
        return Err((
            SessionError::WrongAsn {
                expected: config.peer_asn,
                received: open.asn,
            },
            Notification::new(error_code::OPEN_MESSAGE, subcode::BAD_PEER_AS, Vec::new()),
        ));
    }
    if matches!(open.hold_time_secs, 1 | 2) {
        return Err(reject(
            subcode::UNACCEPTABLE_HOLD_TIME,
            format!(
                "hold time {} s (must be 0 or at least 3 s)",
                open.hold_time_secs
            ),
        ));
    }
    if open.router_id.is_unspecified() {
        return Err(reject(
            subcode::BAD_BGP_IDENTIFIER,
            "BGP identifier 0.0.0.0".to_owned(),
        ));
    }
    if !config.ebgp() && open.router_id == config.router_id {
        // RFC 6286 §2.1: identifiers must differ within an AS (they may across ASes).
        return Err(reject(
            subcode::BAD_BGP_IDENTIFIER,
            format!(
                "BGP identifier {} is ours, and both are in AS {}",
                open.router_id, config.local_asn
            ),
        ));
    }
    let offer = capabilities::peer_offer(open, config.families);
    let (hold_time, keepalive_time) =
        capabilities::negotiate_hold(config.hold_time, config.keepalive_time, open.hold_time_secs);
    Ok(Negotiated {
        hold_time,
        keepalive_time,
        four_octet_as: offer.four_octet_as,
        families: offer.families,
        route_refresh: offer.route_refresh,
        peer_graceful_restart: offer.graceful_restart,
        peer_asn: open.asn,
        peer_router_id: open.router_id,
        ebgp: config.ebgp(),
    })
}

#[cfg(test)]
mod tests;
