//! The session state machine: every transition of RFC 5880 §6.8.6, the timers of §6.8.2–§6.8.4,
//! Poll/Final, jitter and AdminDown, then properties of packets and of two sessions wired to
//! each other.

use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::packet::{self, CONTROL_PACKET_LEN, ControlPacket, Diagnostic, SessionState};
use super::session::{
    Action, Discard, Input, Jitter, SLOW_DESIRED_MIN_TX_US, Session, StateChange, Timers,
    TimersError,
};

use SessionState::{AdminDown, Down, Init, Up};

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn at(ms: u64) -> Instant {
    *BASE + Duration::from_millis(ms)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn timers(tx_ms: u64, rx_ms: u64, mult: u8) -> Timers {
    Timers::new(ms(tx_ms), ms(rx_ms), mult).unwrap()
}

const OURS: u32 = 0x1111;
const THEIRS: u32 = 0x2222;

fn discriminator(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap()
}

/// Our session: 100 ms / 100 ms / 3, started at 0.
fn started() -> Session {
    let mut session = Session::new(timers(100, 100, 3), discriminator(OURS));
    session.start(at(0), Jitter::LONGEST);
    session
}

/// What the peer sends: its own 100 ms / 100 ms / 3 (1 s while not Up, as §6.8.3 asks).
fn from_peer(state: SessionState) -> ControlPacket {
    let slow = !matches!(state, Up);
    ControlPacket {
        diagnostic: Diagnostic::NONE,
        state,
        poll: false,
        final_bit: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: discriminator(THEIRS),
        your_discriminator: if matches!(state, Down | AdminDown) {
            0
        } else {
            OURS
        },
        desired_min_tx_us: if slow { 1_000_000 } else { 100_000 },
        required_min_rx_us: 100_000,
        required_min_echo_rx_us: 0,
    }
}

fn sent(actions: &[Action]) -> Vec<ControlPacket> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(packet) => Some(*packet),
            _ => None,
        })
        .collect()
}

fn changes(actions: &[Action]) -> Vec<StateChange> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::StateChanged(change) => Some(*change),
            _ => None,
        })
        .collect()
}

fn receive(session: &mut Session, packet: ControlPacket, now_ms: u64) -> Vec<Action> {
    session.handle(Input::Received(packet), at(now_ms))
}

/// Our session brought into `state` by the peer's packets (or by administration).
fn in_state(state: SessionState) -> Session {
    let mut session = started();
    match state {
        AdminDown => {
            session.handle(Input::AdminDown, at(1));
        }
        Down => {}
        Init => {
            receive(&mut session, from_peer(Down), 1);
        }
        Up => {
            receive(&mut session, from_peer(Down), 1);
            receive(&mut session, from_peer(Up), 2);
        }
    }
    assert_eq!(session.state(), state);
    session
}

#[test]
fn every_transition_of_the_state_table() {
    let signaled = Diagnostic::NEIGHBOR_SIGNALED_SESSION_DOWN;
    // (ours, received) -> (ours after, its diagnostic if it changed)
    let table = [
        ((AdminDown, AdminDown), (AdminDown, None)),
        ((AdminDown, Down), (AdminDown, None)),
        ((AdminDown, Init), (AdminDown, None)),
        ((AdminDown, Up), (AdminDown, None)),
        ((Down, AdminDown), (Down, None)),
        ((Down, Down), (Init, Some(Diagnostic::NONE))),
        ((Down, Init), (Up, Some(Diagnostic::NONE))),
        ((Down, Up), (Down, None)),
        ((Init, AdminDown), (Down, Some(signaled))),
        ((Init, Down), (Init, None)),
        ((Init, Init), (Up, Some(Diagnostic::NONE))),
        ((Init, Up), (Up, Some(Diagnostic::NONE))),
        ((Up, AdminDown), (Down, Some(signaled))),
        ((Up, Down), (Down, Some(signaled))),
        ((Up, Init), (Up, None)),
        ((Up, Up), (Up, None)),
    ];
    for ((ours, received), (after, diagnostic)) in table {
        let mut session = in_state(ours);
        let mut packet = from_peer(received);
        packet.your_discriminator = OURS;
        let actions = receive(&mut session, packet, 10);
        assert_eq!(session.state(), after, "{ours} receiving {received}");
        let changed = changes(&actions);
        match diagnostic {
            None => assert!(
                changed.is_empty(),
                "{ours} receiving {received}: {changed:?}"
            ),
            Some(diagnostic) => {
                assert_eq!(
                    changed,
                    [StateChange {
                        from: ours,
                        to: after,
                        diagnostic,
                        remote_state: received,
                    }],
                    "{ours} receiving {received}"
                );
                assert_eq!(session.diagnostic(), diagnostic);
                // The peer hears of the change at once, not a slow interval later.
                let packets = sent(&actions);
                assert_eq!(packets.len(), 1, "{ours} receiving {received}");
                assert_eq!(
                    (packets[0].state, packets[0].diagnostic),
                    (after, diagnostic)
                );
            }
        }
        if ours == AdminDown {
            assert!(actions.contains(&Action::Discarded(Discard::AdminDown)));
            assert!(sent(&actions).is_empty());
        }
    }
}

#[test]
fn three_way_handshake_between_two_sessions() {
    let mut a = Session::new(timers(100, 100, 3), discriminator(1));
    let mut b = Session::new(timers(100, 100, 3), discriminator(2));
    let first_a = sent(&a.start(at(0), Jitter::SHORTEST));
    let first_b = sent(&b.start(at(0), Jitter::SHORTEST));
    assert_eq!(first_a.len(), 1);
    assert_eq!((first_a[0].state, first_a[0].your_discriminator), (Down, 0));
    assert_eq!(first_a[0].my_discriminator, discriminator(1));

    // A hears B's Down: Init, and says so at once with B's discriminator.
    let a_init = sent(&a.handle(Input::Received(first_b[0]), at(1)));
    assert_eq!(a.state(), Init);
    assert_eq!(a.remote_discriminator(), 2);
    assert_eq!((a_init[0].state, a_init[0].your_discriminator), (Init, 2));
    // B, still Down, hears A's Init: Up.
    let b_up = sent(&b.handle(Input::Received(a_init[0]), at(2)));
    assert_eq!(b.state(), Up);
    assert_eq!((b_up[0].state, b_up[0].your_discriminator), (Up, 1));
    // A hears Up: Up.
    a.handle(Input::Received(b_up[0]), at(3));
    assert_eq!(a.state(), Up);
    // B's Down packet from before, arriving late, would now take A down: the state table.
    assert_eq!(a.local_discriminator(), discriminator(1));
}

#[test]
fn a_packet_for_another_discriminator_is_discarded_and_changes_nothing() {
    let mut session = in_state(Init);
    let mut packet = from_peer(Up);
    packet.your_discriminator = OURS + 1;
    packet.required_min_rx_us = 5;
    let actions = receive(&mut session, packet, 10);
    assert_eq!(
        actions,
        [Action::Discarded(Discard::WrongDiscriminator {
            received: OURS + 1,
            expected: discriminator(OURS),
        })]
    );
    assert_eq!(session.state(), Init);
    assert_eq!(session.transmit_interval(), ms(1000));
}

#[test]
fn a_session_not_up_announces_and_sends_at_one_second_at_least() {
    let mut session = Session::new(timers(100, 100, 3), discriminator(OURS));
    let actions = session.start(at(0), Jitter::LONGEST);
    let first = sent(&actions)[0];
    assert_eq!(first.desired_min_tx_us, SLOW_DESIRED_MIN_TX_US);
    assert_eq!(first.required_min_rx_us, 100_000);
    assert_eq!((first.detect_mult, first.required_min_echo_rx_us), (3, 0));
    assert!(!first.control_plane_independent && !first.demand && !first.poll);
    // The peer's Required Min RX is one microsecond until it speaks (§6.8.1).
    assert_eq!(session.transmit_interval(), ms(1000));
    let next = Jitter::LONGEST.apply(ms(1000), 3);
    assert!(actions.contains(&Action::SetTransmitTimer(Some(at(0) + next))));
    assert_eq!(session.detection_time(), None, "nothing heard yet");
    // A peer that can only receive every 2 s is sent to every 2 s.
    let mut packet = from_peer(Down);
    packet.required_min_rx_us = 2_000_000;
    receive(&mut session, packet, 10);
    assert_eq!(session.transmit_interval(), ms(2000));
    assert_eq!(
        session.transmit_deadline(),
        Some(at(0) + Jitter::LONGEST.apply(ms(2000), 3))
    );
    // Configuring a slower rate than a second is kept as it is.
    let mut slow = Session::new(timers(3000, 100, 3), discriminator(OURS));
    let packet = sent(&slow.start(at(0), Jitter::SHORTEST))[0];
    assert_eq!(packet.desired_min_tx(), ms(3000));
}

#[test]
fn detection_time_is_their_multiplier_times_the_slower_of_our_rx_and_their_tx() {
    let mut session = started();
    let mut packet = from_peer(Down);
    packet.detect_mult = 5;
    packet.desired_min_tx_us = 300_000;
    let actions = receive(&mut session, packet, 10);
    assert_eq!(session.detection_time(), Some(ms(1500)));
    assert!(actions.contains(&Action::SetDetectionTimer(Some(at(10) + ms(1500)))));
    // Their transmissions faster than we can receive: our Required Min RX counts.
    packet.desired_min_tx_us = 50_000;
    receive(&mut session, packet, 20);
    assert_eq!(session.detection_time(), Some(ms(500)));
    assert_eq!(session.detection_deadline(), Some(at(20) + ms(500)));
    // Each packet restarts the timer.
    receive(&mut session, packet, 400);
    assert_eq!(session.detection_deadline(), Some(at(900)));
}

/// Up at 2 ms, with the Poll that announces 100 ms answered at 3 ms.
fn up_and_settled() -> Session {
    let mut session = in_state(Up);
    let mut final_packet = from_peer(Up);
    final_packet.final_bit = true;
    receive(&mut session, final_packet, 3);
    assert!(!session.polling());
    session
}

#[test]
fn going_up_announces_the_configured_interval_with_a_poll() {
    let mut session = in_state(Init);
    let actions = receive(&mut session, from_peer(Up), 5);
    assert_eq!(session.state(), Up);
    assert!(session.polling());
    let announced = sent(&actions)[0];
    assert!(announced.poll && !announced.final_bit);
    assert_eq!(announced.desired_min_tx(), ms(100));
    // Faster at once (§6.8.3 only holds back a slower rate).
    assert_eq!(session.transmit_interval(), ms(100));
    assert_eq!(session.detection_time(), Some(ms(300)));
    // Periodic packets carry the Poll bit until the Final comes.
    let deadline = session.transmit_deadline().unwrap();
    let periodic = sent(&session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        deadline,
    ));
    assert!(periodic[0].poll);
    let mut final_packet = from_peer(Up);
    final_packet.final_bit = true;
    let actions = session.handle(Input::Received(final_packet), deadline + ms(1));
    assert!(!session.polling());
    assert!(sent(&actions).is_empty(), "a Final needs no answer");
    let later = session.transmit_deadline().unwrap();
    let periodic = sent(&session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        later,
    ));
    assert!(!periodic[0].poll);
}

#[test]
fn a_poll_is_answered_at_once_with_final_and_never_with_poll() {
    let mut session = in_state(Up);
    assert!(session.polling(), "our own poll is under way");
    let deadline = session.transmit_deadline();
    let mut poll = from_peer(Up);
    poll.poll = true;
    let actions = receive(&mut session, poll, 10);
    let answers = sent(&actions);
    assert_eq!(answers.len(), 1);
    assert!(answers[0].final_bit && !answers[0].poll);
    assert_eq!(answers[0].state, Up);
    // Outside the schedule: the periodic timer is not moved by it.
    assert_eq!(session.transmit_deadline(), deadline);
    // A Poll while Down is answered too, with the new state.
    let mut session = started();
    let mut poll = from_peer(Down);
    poll.poll = true;
    let answers = sent(&receive(&mut session, poll, 10));
    assert_eq!(answers.len(), 1);
    assert!(answers[0].final_bit && !answers[0].poll);
    assert_eq!(answers[0].state, Init);
}

#[test]
fn a_slower_transmit_rate_waits_for_the_final() {
    let mut session = up_and_settled();
    let actions = session.handle(Input::SetTimers(timers(500, 100, 3)), at(10));
    assert!(session.polling());
    assert!(
        sent(&actions).is_empty(),
        "the Poll rides on the periodic packets"
    );
    assert_eq!(session.transmit_interval(), ms(100), "still the old rate");
    let deadline = session.transmit_deadline().unwrap();
    let periodic = sent(&session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        deadline,
    ));
    assert!(periodic[0].poll);
    assert_eq!(periodic[0].desired_min_tx(), ms(500));
    let mut final_packet = from_peer(Up);
    final_packet.final_bit = true;
    session.handle(Input::Received(final_packet), deadline + ms(1));
    assert_eq!(session.transmit_interval(), ms(500));
    assert_eq!(
        session.transmit_deadline(),
        Some(deadline + Jitter::SHORTEST.apply(ms(500), 3))
    );
}

#[test]
fn a_faster_receive_rate_waits_for_the_final_and_a_slower_one_does_not() {
    let mut session = up_and_settled();
    let mut fast_peer = from_peer(Up);
    fast_peer.desired_min_tx_us = 10_000;
    receive(&mut session, fast_peer, 5);
    assert_eq!(session.detection_time(), Some(ms(300)));
    session.handle(Input::SetTimers(timers(100, 20, 3)), at(10));
    assert!(session.polling());
    assert_eq!(
        session.detection_time(),
        Some(ms(300)),
        "old Required Min RX"
    );
    let mut final_packet = fast_peer;
    final_packet.final_bit = true;
    receive(&mut session, final_packet, 20);
    assert_eq!(session.detection_time(), Some(ms(60)));
    // Slower: the detection time grows at once.
    session.handle(Input::SetTimers(timers(100, 200, 3)), at(30));
    assert_eq!(session.detection_time(), Some(ms(600)));
    assert!(session.polling());
}

#[test]
fn a_change_during_a_poll_needs_a_poll_of_its_own() {
    let mut session = up_and_settled();
    session.handle(Input::SetTimers(timers(500, 100, 3)), at(10));
    session.handle(Input::SetTimers(timers(800, 100, 3)), at(11));
    let mut final_packet = from_peer(Up);
    final_packet.final_bit = true;
    // This Final may answer the Poll that announced 500 ms: another Poll follows.
    receive(&mut session, final_packet, 20);
    assert!(session.polling());
    assert_eq!(session.transmit_interval(), ms(100));
    receive(&mut session, final_packet, 30);
    assert!(!session.polling());
    assert_eq!(session.transmit_interval(), ms(800));
    // Setting what is already announced needs no Poll.
    session.handle(Input::SetTimers(timers(800, 100, 3)), at(40));
    assert!(!session.polling());
    // A new multiplier needs none either; the next packets carry it.
    session.handle(Input::SetTimers(timers(800, 100, 5)), at(50));
    assert!(!session.polling());
    let deadline = session.transmit_deadline().unwrap();
    let periodic = sent(&session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        deadline,
    ));
    assert_eq!(periodic[0].detect_mult, 5);
}

#[test]
fn jitter_stays_within_75_to_100_percent_and_below_90_with_multiplier_1() {
    let interval = ms(100);
    assert_eq!(Jitter::SHORTEST.apply(interval, 3), ms(75));
    assert_eq!(Jitter::SHORTEST.apply(interval, 1), ms(75));
    for random in (0..=u16::MAX).step_by(97).chain([u16::MAX]) {
        let jitter = Jitter::new(random);
        let three = jitter.apply(interval, 3);
        assert!(three >= ms(75) && three < ms(100), "{random}: {three:?}");
        let one = jitter.apply(interval, 1);
        assert!(one >= ms(75) && one < ms(90), "{random}: {one:?}");
    }
    assert!(Jitter::LONGEST.apply(interval, 3) > Duration::from_micros(99_990));
    assert!(Jitter::LONGEST.apply(interval, 1) > Duration::from_micros(89_990));
    // Large intervals do not overflow.
    let long = Duration::from_micros(u64::from(u32::MAX));
    assert!(Jitter::LONGEST.apply(long, 3) < long);
}

#[test]
fn periodic_packets_follow_the_jittered_interval() {
    let mut session = up_and_settled();
    let deadline = session.transmit_deadline().unwrap();
    let jitter = Jitter::new(12_345);
    let actions = session.handle(Input::TransmitTimer { jitter }, deadline);
    assert_eq!(sent(&actions).len(), 1);
    let next = deadline + jitter.apply(ms(100), 3);
    assert!(actions.contains(&Action::SetTransmitTimer(Some(next))));
    // A timer that fires early (one the caller failed to replace) does nothing.
    let early = session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        next - ms(1),
    );
    assert!(early.is_empty());
    let early = session.handle(Input::DetectionTimer, at(4));
    assert!(early.is_empty());
    assert_eq!(session.state(), Up);
}

#[test]
fn silence_for_the_detection_time_takes_an_up_session_down() {
    let mut session = up_and_settled();
    let deadline = session.detection_deadline().unwrap();
    assert_eq!(deadline, at(3) + ms(300));
    let actions = session.handle(Input::DetectionTimer, deadline);
    assert_eq!(session.state(), Down);
    assert_eq!(
        session.diagnostic(),
        Diagnostic::CONTROL_DETECTION_TIME_EXPIRED
    );
    let change = changes(&actions)[0];
    assert!(change.is_path_failure());
    assert_eq!(session.remote_discriminator(), 0);
    assert!(actions.contains(&Action::SetDetectionTimer(None)));
    let told = sent(&actions)[0];
    assert_eq!((told.state, told.your_discriminator), (Down, 0));
    assert_eq!(told.diagnostic, Diagnostic::CONTROL_DETECTION_TIME_EXPIRED);
    assert_eq!(told.desired_min_tx_us, SLOW_DESIRED_MIN_TX_US);
    assert_eq!(session.transmit_interval(), ms(1000));
    assert!(!session.polling());
}

#[test]
fn silence_in_init_takes_the_session_down_and_in_down_only_forgets_the_peer() {
    let mut session = in_state(Init);
    let deadline = session.detection_deadline().unwrap();
    let actions = session.handle(Input::DetectionTimer, deadline);
    assert_eq!(session.state(), Down);
    assert!(!changes(&actions)[0].is_path_failure(), "it never was Up");

    let mut session = started();
    receive(&mut session, from_peer(AdminDown), 1);
    assert_eq!(session.remote_discriminator(), THEIRS);
    let deadline = session.detection_deadline().unwrap();
    let actions = session.handle(Input::DetectionTimer, deadline);
    assert_eq!(session.state(), Down);
    assert!(changes(&actions).is_empty() && sent(&actions).is_empty());
    assert_eq!(session.remote_discriminator(), 0);
    assert_eq!(session.detection_deadline(), None);
}

#[test]
fn admin_down_tells_the_peer_ignores_it_and_admin_up_starts_over() {
    let mut session = up_and_settled();
    let actions = session.handle(Input::AdminDown, at(10));
    assert_eq!(session.state(), AdminDown);
    assert_eq!(session.diagnostic(), Diagnostic::ADMINISTRATIVELY_DOWN);
    let change = changes(&actions)[0];
    assert_eq!((change.from, change.to), (Up, AdminDown));
    assert!(!change.is_path_failure());
    let told = sent(&actions)[0];
    assert_eq!(told.state, AdminDown);
    assert_eq!(told.diagnostic, Diagnostic::ADMINISTRATIVELY_DOWN);
    assert!(session.handle(Input::AdminDown, at(11)).is_empty());
    // Packets go on, slowly, saying AdminDown (§6.8.16: at least a detection time).
    assert_eq!(session.transmit_interval(), ms(1000));
    let deadline = session.transmit_deadline().unwrap();
    let periodic = sent(&session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        deadline,
    ));
    assert_eq!(periodic[0].state, AdminDown);
    // The peer's packets change nothing, and silence takes nothing down.
    let actions = receive(&mut session, from_peer(Down), 12);
    assert!(actions.contains(&Action::Discarded(Discard::AdminDown)));
    assert!(changes(&actions).is_empty() && sent(&actions).is_empty());
    let actions = session.handle(Input::DetectionTimer, session.detection_deadline().unwrap());
    assert!(changes(&actions).is_empty());
    assert_eq!(session.state(), AdminDown);

    let actions = session.handle(Input::AdminUp, at(5000));
    assert_eq!(session.state(), Down);
    assert_eq!(session.diagnostic(), Diagnostic::NONE);
    assert_eq!(sent(&actions)[0].state, Down);
    assert!(session.handle(Input::AdminUp, at(5001)).is_empty());
    receive(&mut session, from_peer(Down), 5002);
    assert_eq!(session.state(), Init);
}

#[test]
fn the_peer_going_admin_down_is_no_path_failure() {
    let mut session = up_and_settled();
    let mut packet = from_peer(AdminDown);
    packet.diagnostic = Diagnostic::ADMINISTRATIVELY_DOWN;
    let change = changes(&receive(&mut session, packet, 10))[0];
    assert_eq!(
        change.diagnostic,
        Diagnostic::NEIGHBOR_SIGNALED_SESSION_DOWN
    );
    assert_eq!(change.remote_state, AdminDown);
    assert!(!change.is_path_failure());
    let mut session = up_and_settled();
    let change = changes(&receive(&mut session, from_peer(Down), 10))[0];
    assert!(change.is_path_failure());
}

#[test]
fn no_periodic_packets_when_the_peer_asks_for_none_or_runs_demand_mode() {
    let mut session = up_and_settled();
    let mut demand = from_peer(Up);
    demand.demand = true;
    let actions = receive(&mut session, demand, 10);
    assert!(actions.contains(&Action::SetTransmitTimer(None)));
    assert_eq!(session.transmit_deadline(), None);
    // A Poll is still answered.
    demand.poll = true;
    assert_eq!(sent(&receive(&mut session, demand, 20)).len(), 1);
    // Out of Demand mode: the schedule resumes where it was due.
    receive(&mut session, from_peer(Up), 30);
    assert!(session.transmit_deadline().is_some());

    let mut session = started();
    let mut none = from_peer(Down);
    none.required_min_rx_us = 0;
    receive(&mut session, none, 10);
    assert_eq!(session.transmit_deadline(), None);
    let silent = session.handle(
        Input::TransmitTimer {
            jitter: Jitter::SHORTEST,
        },
        at(5000),
    );
    assert!(sent(&silent).is_empty());
}

#[test]
fn timers_are_checked() {
    assert_eq!(
        Timers::new(ms(100), ms(100), 0),
        Err(TimersError::ZeroDetectMult)
    );
    assert!(matches!(
        Timers::new(Duration::ZERO, ms(100), 3),
        Err(TimersError::IntervalOutOfRange { .. })
    ));
    assert!(matches!(
        Timers::new(ms(100), Duration::from_nanos(999), 3),
        Err(TimersError::IntervalOutOfRange { .. })
    ));
    assert!(matches!(
        Timers::new(ms(100), Duration::from_secs(4295), 3),
        Err(TimersError::IntervalOutOfRange { .. })
    ));
    let timers = timers(100, 250, 3);
    assert_eq!(
        (
            timers.desired_min_tx(),
            timers.required_min_rx(),
            timers.detect_mult()
        ),
        (ms(100), ms(250), 3)
    );
}

// Properties.

fn control_packet() -> impl Strategy<Value = ControlPacket> {
    (
        (0u8..32, 0u8..4, any::<[bool; 4]>(), 1u8..=255),
        (
            1u32..,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (diagnostic, state, [poll, final_bit, independent, demand], detect_mult),
                numbers,
            )| {
                let (my, your, tx, rx, echo) = numbers;
                let state = SessionState::from_code(state);
                ControlPacket {
                    diagnostic: Diagnostic::new(diagnostic).unwrap(),
                    state,
                    poll,
                    final_bit,
                    control_plane_independent: independent,
                    demand,
                    detect_mult,
                    my_discriminator: discriminator(my),
                    // Zero is only valid in Down and AdminDown.
                    your_discriminator: if matches!(state, Init | Up) && your == 0 {
                        1
                    } else {
                        your
                    },
                    desired_min_tx_us: tx,
                    required_min_rx_us: rx,
                    required_min_echo_rx_us: echo,
                }
            },
        )
}

/// A small deterministic generator for the jitter of simulated sessions.
struct SplitMix(u64);

impl SplitMix {
    fn jitter(&mut self) -> Jitter {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Jitter::new(u16::try_from((z ^ (z >> 31)) >> 48).unwrap())
    }
}

/// Two sessions joined by a link with a fixed latency each way, run event by event.
struct Link {
    sessions: [Session; 2],
    latency: [Duration; 2],
    random: SplitMix,
    /// Packets on the way: when, to which session, what.
    in_flight: Vec<(Instant, usize, ControlPacket)>,
    /// Sessions started: packets to one not yet started are lost.
    running: [bool; 2],
    /// A session whose packets are no longer sent.
    silenced: Option<usize>,
    last_delivered: [Option<Instant>; 2],
    changes: Vec<(Instant, usize, StateChange)>,
    now: Instant,
}

impl Link {
    fn perform(&mut self, from: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(packet) if self.silenced != Some(from) => {
                    let arrival = self.now + self.latency[from];
                    self.in_flight.push((arrival, 1 - from, packet));
                }
                Action::StateChanged(change) => self.changes.push((self.now, from, change)),
                _ => {}
            }
        }
    }

    /// Runs the next event; false if there is none before `until`.
    fn step(&mut self, until: Instant) -> bool {
        let deliveries = self.in_flight.iter().map(|(when, _, _)| *when);
        let timers = self
            .sessions
            .iter()
            .flat_map(|s| [s.transmit_deadline(), s.detection_deadline()])
            .flatten();
        let Some(next) = deliveries.chain(timers).min() else {
            return false;
        };
        // A deadline already past (a schedule moved back by a faster interval) fires at once.
        let now = next.max(self.now);
        if now > until {
            return false;
        }
        self.now = now;
        // Arrivals first: a packet that arrives as the timer runs out is in time.
        if let Some(index) = self.in_flight.iter().position(|(when, _, _)| *when == next) {
            let (_, to, packet) = self.in_flight.remove(index);
            if !self.running[to] {
                return true;
            }
            self.last_delivered[to] = Some(now);
            let actions = self.sessions[to].handle(Input::Received(packet), now);
            self.perform(to, actions);
            return true;
        }
        for index in 0..2 {
            if self.sessions[index].detection_deadline() == Some(next) {
                let actions = self.sessions[index].handle(Input::DetectionTimer, now);
                self.perform(index, actions);
                return true;
            }
            if self.sessions[index].transmit_deadline() == Some(next) {
                let jitter = self.random.jitter();
                let actions = self.sessions[index].handle(Input::TransmitTimer { jitter }, now);
                self.perform(index, actions);
                return true;
            }
        }
        unreachable!("an event at {next:?} that nobody handles");
    }

    fn run_until(&mut self, until: Instant, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..1_000_000 {
            if done(self) || !self.step(until) {
                return;
            }
        }
        panic!("the simulation does not settle");
    }
}

fn timing() -> impl Strategy<Value = Timers> {
    (10u64..=1000, 10u64..=1000, 1u8..=5).prop_map(|(tx, rx, mult)| timers(tx, rx, mult))
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = packet::parse(&bytes);
    }

    #[test]
    fn parse_never_panics_on_near_misses(
        packet in control_packet(),
        changes in proptest::collection::vec((0usize..CONTROL_PACKET_LEN, any::<u8>()), 0..4),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = packet.to_bytes().to_vec();
        for (at, value) in changes {
            bytes[at] = value;
        }
        bytes.extend_from_slice(&tail);
        if let Ok(parsed) = packet::parse(&bytes) {
            // Whatever is accepted is a packet we could have built.
            prop_assert_eq!(packet::parse(&parsed.to_bytes()), Ok(parsed));
        }
    }

    #[test]
    fn built_packets_parse_back(packet in control_packet()) {
        prop_assert_eq!(packet::parse(&packet.to_bytes()), Ok(packet));
    }

    #[test]
    fn any_packet_in_any_state_leaves_a_consistent_session(
        state in 0u8..4,
        packets in proptest::collection::vec(control_packet(), 1..6),
    ) {
        let mut session = in_state(SessionState::from_code(state));
        for (n, mut packet) in packets.into_iter().enumerate() {
            if n % 2 == 0 {
                packet.your_discriminator = OURS;
            }
            let now = at(10 + n as u64);
            for action in session.handle(Input::Received(packet), now) {
                if let Action::Send(sent) = action {
                    prop_assert!(!(sent.poll && sent.final_bit));
                    prop_assert_eq!(packet::parse(&sent.to_bytes()), Ok(sent));
                }
            }
        }
    }

    /// Two sessions with any timing come Up, stay Up with the negotiated intervals (also when
    /// one side changes its timing meanwhile), and when one falls silent the other declares it Down exactly one detection time after the last
    /// packet it heard.
    #[test]
    fn wired_sessions_come_up_and_detect_silence_after_exactly_the_detection_time(
        timing_a in timing(),
        timing_b in timing(),
        latency in (0u64..=5, 0u64..=5),
        b_starts_after in 0u64..2000,
        seed in any::<u64>(),
        silenced in 0usize..2,
        retimed in proptest::option::of((0usize..2, timing())),
    ) {
        let mut link = Link {
            sessions: [
                Session::new(timing_a, discriminator(0xa)),
                Session::new(timing_b, discriminator(0xb)),
            ],
            latency: [ms(latency.0), ms(latency.1)],
            random: SplitMix(seed),
            in_flight: Vec::new(),
            running: [true, false],
            silenced: None,
            last_delivered: [None; 2],
            changes: Vec::new(),
            now: at(0),
        };
        let jitter = link.random.jitter();
        let actions = link.sessions[0].start(at(0), jitter);
        link.perform(0, actions);
        // B starts later: its first packets find A's session already running.
        link.run_until(at(b_starts_after), |_| false);
        link.now = at(b_starts_after);
        link.running[1] = true;
        let jitter = link.random.jitter();
        let actions = link.sessions[1].start(link.now, jitter);
        link.perform(1, actions);

        let both_up = |link: &Link| link.sessions.iter().all(|s| s.state() == Up);
        link.run_until(at(b_starts_after + 10_000), both_up);
        prop_assert!(both_up(&link), "not Up: {:?}", link.changes);

        let up_at = link.now;
        let changes_before = link.changes.len();
        // One side may change its timing while Up: the Poll Sequence must not cost the session.
        if let Some((who, timers)) = retimed {
            let actions = link.sessions[who].handle(Input::SetTimers(timers), up_at);
            link.perform(who, actions);
        }
        link.run_until(up_at + ms(10_000), |_| false);
        prop_assert!(
            link.changes.len() == changes_before,
            "left Up: {:?}",
            &link.changes[changes_before..]
        );
        for (ours, theirs) in [(0, 1), (1, 0)] {
            let (me, peer) = (&link.sessions[ours], &link.sessions[theirs]);
            prop_assert!(!me.polling());
            let mine = me.timers();
            let their = peer.timers();
            prop_assert_eq!(
                me.transmit_interval(),
                mine.desired_min_tx().max(their.required_min_rx())
            );
            prop_assert_eq!(
                me.detection_time(),
                Some(mine.required_min_rx().max(their.desired_min_tx()) * u32::from(their.detect_mult()))
            );
        }

        let listener = 1 - silenced;
        link.silenced = Some(silenced);
        let expected = link.sessions[listener].detection_time().unwrap();
        let listener_down = |link: &Link| link.sessions[listener].state() != Up;
        link.run_until(link.now + expected * 3, listener_down);
        prop_assert_eq!(link.sessions[listener].state(), Down);
        let (down_at, who, change) = *link.changes.last().unwrap();
        prop_assert_eq!(who, listener);
        prop_assert_eq!(change.diagnostic, Diagnostic::CONTROL_DETECTION_TIME_EXPIRED);
        prop_assert!(change.is_path_failure());
        let last_heard = link.last_delivered[listener].unwrap();
        prop_assert_eq!(down_at, last_heard + expected);
    }
}
