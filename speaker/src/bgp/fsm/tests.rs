//! The session state machine: every transition and error path with hand-written inputs, then
//! random input sequences against the invariants the glue relies on.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::bgp::capabilities::PeerGracefulRestart;
use crate::bgp::codec::{Capability, GracefulRestart, RouteRefresh};
use crate::bgp::update_packing::{NextHop, RouteAttributes};

const LOCAL_ASN: u32 = 64512;
const PEER_ASN: u32 = 64513;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn config() -> Config {
    Config::new(LOCAL_ASN, PEER_ASN, ROUTER_ID)
}

fn peer_capabilities() -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(Family::Ipv4Unicast),
        Capability::Multiprotocol(Family::Ipv6Unicast),
        Capability::RouteRefresh,
        Capability::FourOctetAs(PEER_ASN),
    ]
}

fn open_bytes(
    asn: u32,
    hold_time_secs: u16,
    router_id: Ipv4Addr,
    caps: Vec<Capability>,
) -> Vec<u8> {
    codec::encode_open(&Open {
        asn,
        hold_time_secs,
        router_id,
        capabilities: caps,
    })
    .unwrap()
}

fn peer_open(hold_time_secs: u16) -> Vec<u8> {
    open_bytes(PEER_ASN, hold_time_secs, PEER_ID, peer_capabilities())
}

fn keepalive() -> Vec<u8> {
    codec::encode_keepalive()
}

fn notification(code: u8, subcode: u8, data: Vec<u8>) -> Vec<u8> {
    codec::encode_notification(&Notification::new(code, subcode, data))
}

/// A session and a clock.
struct Peer {
    session: Session,
    now: Instant,
}

impl Peer {
    fn new(config: Config) -> Self {
        Self {
            session: Session::new(config).unwrap(),
            now: Instant::now(),
        }
    }

    fn step(&mut self, input: Input<'_>) -> Vec<Action> {
        self.session.handle(input, self.now, Jitter::NONE)
    }

    fn receive(&mut self, bytes: &[u8]) -> Vec<Action> {
        self.step(Input::Received(bytes))
    }

    /// Moves the clock to the timer's deadline and fires it.
    fn fire(&mut self, kind: TimerKind) -> Vec<Action> {
        let deadline = self
            .session
            .timer_deadline(kind)
            .unwrap_or_else(|| panic!("{kind:?} not armed"));
        self.now = self.now.max(deadline);
        self.step(Input::TimerExpired(kind))
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn reach_open_sent(&mut self) {
        self.step(Input::ManualStart);
        self.step(Input::TcpConnected);
        assert_eq!(self.session.state(), State::OpenSent);
    }

    fn reach_open_confirm(&mut self, peer_hold: u16) {
        self.reach_open_sent();
        self.receive(&peer_open(peer_hold));
        assert_eq!(self.session.state(), State::OpenConfirm);
    }

    fn reach_established(&mut self) -> Vec<Action> {
        self.reach_open_confirm(90);
        let actions = self.receive(&keepalive());
        assert_eq!(self.session.state(), State::Established);
        actions
    }
}

fn decode_sent(bytes: &[u8]) -> Message {
    codec::decode(
        bytes,
        DecodeContext {
            four_octet_as: true,
            ebgp: true,
        },
    )
    .unwrap()
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::SendMessage(bytes) => Some(decode_sent(bytes)),
            _ => None,
        })
        .collect()
}

fn sent_notification(actions: &[Action]) -> Option<(u8, u8, Vec<u8>)> {
    sent(actions).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some((n.code, n.subcode, n.data)),
        _ => None,
    })
}

fn session_down(actions: &[Action]) -> Option<(SessionError, bool)> {
    actions.iter().find_map(|action| match action {
        Action::SessionDown {
            error,
            was_established,
        } => Some((error.clone(), *was_established)),
        _ => None,
    })
}

fn negotiated_of(actions: &[Action]) -> Option<Negotiated> {
    actions.iter().find_map(|action| match action {
        Action::Established { negotiated } => Some(negotiated.clone()),
        _ => None,
    })
}

/// Asserts the teardown after an error: the NOTIFICATION (if any) before the close, the retry
/// timer, Active.
fn assert_failed_to_active(peer: &Peer, actions: &[Action], delay: Duration) {
    let close = actions
        .iter()
        .position(|a| *a == Action::CloseConnection)
        .expect("closes the connection");
    assert!(
        actions[close..]
            .iter()
            .all(|a| !matches!(a, Action::SendMessage(_))),
        "nothing is sent after the close: {actions:?}"
    );
    assert!(actions.contains(&Action::StartTimer(TimerKind::ConnectRetry, delay)));
    assert_eq!(peer.session.state(), State::Active);
    assert_eq!(peer.session.negotiated(), None);
    assert!(peer.session.rib_out().is_none());
}

#[test]
fn happy_path_to_established_and_keepalive_exchange() {
    let mut peer = Peer::new(config());
    assert_eq!(
        peer.step(Input::ManualStart),
        vec![
            Action::Connect,
            Action::StartTimer(TimerKind::Connect, s(10)),
            Action::StateChanged {
                from: State::Idle,
                to: State::Connect
            },
        ]
    );

    let actions = peer.step(Input::TcpConnected);
    assert_eq!(actions[0], Action::StopTimer(TimerKind::Connect));
    let Message::Open(open) = decode_sent(match &actions[1] {
        Action::SendMessage(bytes) => bytes,
        other => panic!("{other:?}"),
    }) else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn, LOCAL_ASN);
    assert_eq!(open.hold_time_secs, 90);
    assert_eq!(open.router_id, ROUTER_ID);
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(Family::Ipv4Unicast),
            Capability::Multiprotocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(LOCAL_ASN),
        ]
    );
    assert_eq!(
        actions[2..],
        [
            Action::StartTimer(TimerKind::Hold, OPEN_SENT_HOLD_TIME),
            Action::StateChanged {
                from: State::Connect,
                to: State::OpenSent
            },
        ]
    );

    let actions = peer.receive(&peer_open(90));
    assert_eq!(
        actions,
        vec![
            Action::SendMessage(keepalive()),
            Action::StartTimer(TimerKind::Hold, s(90)),
            Action::StartTimer(TimerKind::Keepalive, s(30)),
            Action::StateChanged {
                from: State::OpenSent,
                to: State::OpenConfirm
            },
        ]
    );

    let actions = peer.receive(&keepalive());
    let negotiated = Negotiated {
        hold_time: s(90),
        keepalive_time: Some(s(30)),
        four_octet_as: true,
        families: Families::BOTH,
        route_refresh: true,
        peer_graceful_restart: None,
        peer_asn: PEER_ASN,
        peer_router_id: PEER_ID,
        ebgp: true,
    };
    assert_eq!(
        actions,
        vec![
            Action::StartTimer(TimerKind::Hold, s(90)),
            Action::StateChanged {
                from: State::OpenConfirm,
                to: State::Established
            },
            Action::Established {
                negotiated: negotiated.clone()
            },
        ]
    );
    assert_eq!(peer.session.negotiated(), Some(&negotiated));

    // Our keepalives, at the keepalive interval.
    peer.advance(s(29));
    assert!(
        peer.step(Input::TimerExpired(TimerKind::Keepalive))
            .is_empty()
    );
    assert_eq!(
        peer.fire(TimerKind::Keepalive),
        vec![
            Action::SendMessage(keepalive()),
            Action::StartTimer(TimerKind::Keepalive, s(30)),
        ]
    );
    // The peer's keepalives and UPDATEs restart the hold timer.
    assert_eq!(
        peer.receive(&keepalive()),
        vec![Action::StartTimer(TimerKind::Hold, s(90))]
    );
    let end_of_rib = update_packing::end_of_rib(Family::Ipv4Unicast).unwrap();
    assert_eq!(
        peer.receive(&end_of_rib),
        vec![Action::StartTimer(TimerKind::Hold, s(90))]
    );
    assert_eq!(
        peer.session.timer_deadline(TimerKind::Hold),
        Some(peer.now + s(90))
    );
}

#[test]
fn graceful_restart_is_offered_only_when_enabled() {
    let mut peer = Peer::new(Config {
        graceful_restart: Some(s(120)),
        ..config()
    });
    peer.step(Input::ManualStart);
    let Some(Message::Open(open)) = sent(&peer.step(Input::TcpConnected)).into_iter().next() else {
        panic!("no OPEN");
    };
    assert!(
        open.capabilities
            .contains(&Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                restart_time_secs: 120,
                families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, true)],
            }))
    );

    let mut peer = Peer::new(config());
    peer.step(Input::ManualStart);
    let Some(Message::Open(open)) = sent(&peer.step(Input::TcpConnected)).into_iter().next() else {
        panic!("no OPEN");
    };
    assert!(
        !open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart(_)))
    );
}

#[test]
fn the_peers_graceful_restart_is_reported() {
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let mut caps = peer_capabilities();
    caps.push(Capability::GracefulRestart(GracefulRestart {
        restarting: true,
        restart_time_secs: 300,
        families: vec![(Family::Ipv4Unicast, false)],
    }));
    peer.receive(&open_bytes(PEER_ASN, 90, PEER_ID, caps));
    let negotiated = negotiated_of(&peer.receive(&keepalive())).unwrap();
    assert_eq!(
        negotiated.peer_graceful_restart,
        Some(PeerGracefulRestart {
            restart_time: s(300),
            restarting: true,
            families: vec![(Family::Ipv4Unicast, false)],
        })
    );
}

#[test]
fn wrong_peer_asn_is_rejected_with_bad_peer_as() {
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let actions = peer.receive(&open_bytes(65000, 90, PEER_ID, vec![]));
    assert_eq!(sent_notification(&actions), Some((2, 2, vec![])));
    assert_failed_to_active(&peer, &actions, s(1));
    let (error, was_established) = session_down(&actions).unwrap();
    assert_eq!(
        error,
        SessionError::WrongAsn {
            expected: PEER_ASN,
            received: 65000
        }
    );
    assert!(!was_established);
    assert_eq!(error.reason(), "BGPWrongASN");
    assert_eq!(
        error.to_string(),
        "the peer says it is AS 65000, but AS 64513 is configured for it"
    );
}

#[test]
fn a_four_octet_peer_asn_without_the_capability_shows_as_as_trans() {
    let mut peer = Peer::new(Config::new(LOCAL_ASN, 4_200_000_000, ROUTER_ID));
    peer.reach_open_sent();
    // Without the 4-octet AS capability the OPEN can only say AS_TRANS: that is not the
    // configured ASN.
    let actions = peer.receive(&open_bytes(4_200_000_000, 90, PEER_ID, vec![]));
    let Some((SessionError::WrongAsn { received, .. }, _)) = session_down(&actions) else {
        panic!("{actions:?}");
    };
    assert_eq!(received, u32::from(codec::AS_TRANS));
}

#[test]
fn the_peer_rejecting_our_asn_is_a_wrong_asn_too() {
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let actions = peer.receive(&notification(2, 2, vec![]));
    assert_eq!(
        sent_notification(&actions),
        None,
        "no NOTIFICATION answers one"
    );
    assert_failed_to_active(&peer, &actions, s(1));
    let (error, _) = session_down(&actions).unwrap();
    assert_eq!(
        error,
        SessionError::PeerRejectedAsn {
            local_asn: LOCAL_ASN
        }
    );
    assert_eq!(error.reason(), "BGPWrongASN");
    assert!(
        error
            .to_string()
            .contains("peer sent OPEN Message Error/Bad Peer AS")
    );
}

#[test]
fn hold_timer_expiry_in_established_sends_hold_timer_expired() {
    let mut peer = Peer::new(config());
    peer.reach_established();
    peer.advance(s(60));
    peer.receive(&keepalive());
    // Not yet: the keepalive at 60 s moved the deadline.
    peer.advance(s(89));
    assert!(peer.step(Input::TimerExpired(TimerKind::Hold)).is_empty());
    let actions = peer.fire(TimerKind::Hold);
    assert_eq!(sent_notification(&actions), Some((4, 0, vec![])));
    assert_failed_to_active(&peer, &actions, s(1));
    assert!(actions.contains(&Action::StopTimer(TimerKind::Keepalive)));
    let (error, was_established) = session_down(&actions).unwrap();
    assert_eq!(error, SessionError::HoldTimerExpired { hold_time: s(90) });
    assert!(was_established);
    assert_eq!(error.reason(), "BGPHoldTimerExpired");
    assert_eq!(
        error.to_string(),
        "nothing received from the peer within the hold time (90 s)"
    );
}

#[test]
fn hold_timer_in_open_sent_is_four_minutes() {
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    assert_eq!(
        peer.session.timer_deadline(TimerKind::Hold),
        Some(peer.now + s(240))
    );
    let actions = peer.fire(TimerKind::Hold);
    assert_eq!(sent_notification(&actions), Some((4, 0, vec![])));
    assert_eq!(
        session_down(&actions).unwrap().0,
        SessionError::HoldTimerExpired { hold_time: s(240) }
    );
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    for (ours, theirs) in [(90, 0), (0, 90), (0, 0)] {
        let mut peer = Peer::new(Config {
            hold_time: s(ours),
            ..config()
        });
        peer.reach_open_sent();
        let actions = peer.receive(&peer_open(theirs));
        assert!(actions.contains(&Action::StopTimer(TimerKind::Hold)));
        assert!(!actions.iter().any(|a| matches!(a, Action::StartTimer(..))));
        let actions = peer.receive(&keepalive());
        let negotiated = negotiated_of(&actions).unwrap();
        assert_eq!(negotiated.hold_time, Duration::ZERO);
        assert_eq!(negotiated.keepalive_time, None);
        assert_eq!(peer.session.next_timer(), None, "{ours}/{theirs}");
        // Hours later, still up.
        peer.advance(s(36_000));
        assert!(peer.step(Input::TimerExpired(TimerKind::Hold)).is_empty());
        assert_eq!(peer.session.state(), State::Established);
    }
}

#[test]
fn negotiated_hold_time_is_the_smaller() {
    let mut peer = Peer::new(config());
    peer.reach_open_confirm(30);
    let negotiated = negotiated_of(&peer.receive(&keepalive())).unwrap();
    assert_eq!(negotiated.hold_time, s(30));
    assert_eq!(negotiated.keepalive_time, Some(s(10)));

    let mut peer = Peer::new(Config {
        hold_time: s(9),
        keepalive_time: Some(s(2)),
        ..config()
    });
    peer.reach_open_confirm(180);
    let negotiated = negotiated_of(&peer.receive(&keepalive())).unwrap();
    assert_eq!(negotiated.hold_time, s(9));
    assert_eq!(negotiated.keepalive_time, Some(s(2)));
}

#[test]
fn hold_time_one_or_two_is_unacceptable() {
    for hold in [1, 2] {
        let mut peer = Peer::new(config());
        peer.reach_open_sent();
        let actions = peer.receive(&peer_open(hold));
        assert_eq!(sent_notification(&actions), Some((2, 6, vec![])));
        assert_failed_to_active(&peer, &actions, s(1));
        let (error, _) = session_down(&actions).unwrap();
        assert_eq!(error.reason(), "BGPOpenRejected");
        assert!(error.to_string().contains(&format!("hold time {hold} s")));
    }
}

#[test]
fn bad_bgp_identifiers_are_rejected() {
    // 0.0.0.0 on any session.
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let actions = peer.receive(&open_bytes(PEER_ASN, 90, Ipv4Addr::UNSPECIFIED, vec![]));
    assert_eq!(sent_notification(&actions), Some((2, 3, vec![])));

    // Our own identifier on iBGP.
    let mut peer = Peer::new(Config::new(LOCAL_ASN, LOCAL_ASN, ROUTER_ID));
    peer.reach_open_sent();
    let actions = peer.receive(&open_bytes(LOCAL_ASN, 90, ROUTER_ID, vec![]));
    assert_eq!(sent_notification(&actions), Some((2, 3, vec![])));
    assert!(matches!(
        session_down(&actions).unwrap().0,
        SessionError::OpenRejected { subcode: 3, .. }
    ));

    // ... but allowed on eBGP (RFC 6286).
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    peer.receive(&open_bytes(PEER_ASN, 90, ROUTER_ID, vec![]));
    assert_eq!(peer.session.state(), State::OpenConfirm);
}

#[test]
fn an_unsupported_version_is_rejected() {
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let mut open = peer_open(90);
    open[19] = 3;
    let actions = peer.receive(&open);
    // Data: the version we support, 2 octets.
    assert_eq!(sent_notification(&actions), Some((2, 1, vec![0, 4])));
    assert!(matches!(
        session_down(&actions).unwrap().0,
        SessionError::OpenRejected { subcode: 1, .. }
    ));
}

#[test]
fn header_errors_send_message_header_errors() {
    let mut bad_marker = keepalive();
    bad_marker[3] = 0;
    let mut bad_type = keepalive();
    bad_type[18] = 7;
    let mut bad_length = keepalive();
    bad_length[16..18].copy_from_slice(&18u16.to_be_bytes());
    for (bytes, expected) in [
        (bad_marker, (1, 1, vec![])),
        (bad_type, (1, 3, vec![7])),
        (bad_length, (1, 2, vec![0, 18])),
    ] {
        // Through split_frame, as the glue does.
        let error = codec::split_frame(&bytes).unwrap_err();
        let mut peer = Peer::new(config());
        peer.reach_established();
        let actions = peer.step(Input::FramingError(error));
        assert_eq!(sent_notification(&actions), Some(expected.clone()));
        assert_failed_to_active(&peer, &actions, s(1));
        assert_eq!(
            session_down(&actions).unwrap().0.reason(),
            "BGPMalformedMessage"
        );
        // And straight to decode: the same answer.
        let mut peer = Peer::new(config());
        peer.reach_established();
        let actions = peer.receive(&bytes);
        assert_eq!(sent_notification(&actions), Some(expected));
    }
}

#[test]
fn a_malformed_update_ends_the_session_and_backs_off() {
    let mut peer = Peer::new(config());
    peer.reach_established();
    // ORIGIN with value 7.
    let update = [
        &[0xff; 16][..],
        &[0, 31, 2],
        &[0, 0, 0, 4, 0x40, 1, 1, 7],
        &[24, 198, 51, 100],
    ]
    .concat();
    let actions = peer.receive(&update);
    let (code, subcode, _) = sent_notification(&actions).unwrap();
    assert_eq!(code, 3);
    assert!(subcode != 0);
    assert_failed_to_active(&peer, &actions, s(1));
    let (error, was_established) = session_down(&actions).unwrap();
    assert!(was_established);
    assert_eq!(error.reason(), "BGPMalformedMessage");
    assert!(
        error
            .to_string()
            .starts_with("malformed message from the peer: ")
    );

    // The next failure waits longer; after the retry fires, a new attempt starts.
    let actions = peer.fire(TimerKind::ConnectRetry);
    assert_eq!(actions[0], Action::Connect);
    let actions = peer.step(Input::TcpConnectFailed("connection refused".into()));
    assert!(actions.contains(&Action::StartTimer(TimerKind::ConnectRetry, s(2))));
}

#[test]
fn an_update_with_a_truncated_attribute_list_is_malformed_attribute_list() {
    let mut peer = Peer::new(config());
    peer.reach_established();
    // Path attribute length 10, but only 4 octets follow.
    let update = [&[0xff; 16][..], &[0, 27, 2], &[0, 0, 0, 10, 0x40, 1, 1, 0]].concat();
    let actions = peer.receive(&update);
    assert_eq!(
        sent_notification(&actions).map(|n| (n.0, n.1)),
        Some((3, 1))
    );
}

#[test]
fn a_received_notification_ends_the_session_with_a_readable_reason() {
    let mut peer = Peer::new(config());
    peer.reach_established();
    let text = b"maintenance";
    let mut data = vec![u8::try_from(text.len()).unwrap()];
    data.extend_from_slice(text);
    let actions = peer.receive(&notification(6, 2, data));
    assert_eq!(sent_notification(&actions), None);
    assert_failed_to_active(&peer, &actions, s(1));
    let (error, was_established) = session_down(&actions).unwrap();
    assert!(was_established);
    assert_eq!(error.reason(), "BGPPeerNotification");
    assert_eq!(
        error.to_string(),
        "peer sent Cease/Administrative Shutdown: \"maintenance\""
    );
    assert_eq!(peer.session.last_error(), Some(&error));

    let mut peer = Peer::new(config());
    peer.reach_established();
    let actions = peer.receive(&notification(4, 0, vec![]));
    assert_eq!(
        session_down(&actions).unwrap().0.to_string(),
        "peer sent Hold Timer Expired"
    );
}

#[test]
fn a_malformed_notification_closes_without_answering() {
    let mut peer = Peer::new(config());
    peer.reach_established();
    let short = [&[0xff; 16][..], &[0, 20, 3, 6]].concat();
    let actions = peer.receive(&short);
    assert_eq!(sent_notification(&actions), None);
    assert_failed_to_active(&peer, &actions, s(1));
}

#[test]
fn manual_stop_sends_cease_then_closes() {
    let mut peer = Peer::new(config());
    peer.reach_established();
    let actions = peer.step(Input::ManualStop);
    let Action::SendMessage(bytes) = &actions[0] else {
        panic!("{actions:?}");
    };
    assert_eq!(
        decode_sent(bytes),
        Message::Notification(Notification::new(6, 2, vec![]))
    );
    assert_eq!(actions[1], Action::CloseConnection);
    assert!(actions.contains(&Action::StopTimer(TimerKind::Hold)));
    assert!(actions.contains(&Action::StopTimer(TimerKind::Keepalive)));
    assert!(actions.contains(&Action::StateChanged {
        from: State::Established,
        to: State::Idle
    }));
    assert_eq!(
        session_down(&actions),
        Some((SessionError::AdministrativeStop, true))
    );
    assert_eq!(peer.session.state(), State::Idle);
    assert_eq!(peer.session.next_timer(), None);
    // Stopped stays stopped.
    assert!(peer.step(Input::ManualStop).is_empty());
    assert!(
        peer.step(Input::TimerExpired(TimerKind::ConnectRetry))
            .is_empty()
    );
}

#[test]
fn manual_stop_while_connecting_or_waiting() {
    let mut peer = Peer::new(config());
    peer.step(Input::ManualStart);
    let actions = peer.step(Input::ManualStop);
    assert_eq!(
        sent(&actions),
        vec![],
        "no NOTIFICATION without a connection"
    );
    assert!(actions.contains(&Action::CloseConnection));
    assert_eq!(peer.session.state(), State::Idle);

    let mut peer = Peer::new(config());
    peer.step(Input::ManualStart);
    peer.step(Input::TcpConnectFailed("refused".into()));
    let actions = peer.step(Input::ManualStop);
    assert!(!actions.contains(&Action::CloseConnection));
    assert!(actions.contains(&Action::StopTimer(TimerKind::ConnectRetry)));
    assert_eq!(peer.session.state(), State::Idle);
    // A late connection from the abandoned attempt is closed.
    assert_eq!(
        peer.step(Input::TcpConnected),
        vec![Action::CloseConnection]
    );
}

#[test]
fn connect_failures_wait_in_active_with_growing_delays() {
    let mut peer = Peer::new(config());
    peer.step(Input::ManualStart);
    let actions = peer.step(Input::TcpConnectFailed("connection refused".into()));
    assert_eq!(
        actions,
        vec![
            Action::StopTimer(TimerKind::Connect),
            Action::StartTimer(TimerKind::ConnectRetry, s(1)),
            Action::StateChanged {
                from: State::Connect,
                to: State::Active
            },
            Action::SessionDown {
                error: SessionError::PeerUnreachable {
                    reason: "connection refused".into()
                },
                was_established: false,
            },
        ]
    );
    let (error, _) = session_down(&actions).unwrap();
    assert_eq!(error.reason(), "BGPPeerUnreachable");
    assert_eq!(
        error.to_string(),
        "cannot connect to the peer: connection refused"
    );

    let mut delays = Vec::new();
    for _ in 0..8 {
        let actions = peer.fire(TimerKind::ConnectRetry);
        assert_eq!(actions[0], Action::Connect);
        assert_eq!(peer.session.state(), State::Connect);
        // The attempt times out.
        let actions = peer.fire(TimerKind::Connect);
        assert!(actions.contains(&Action::CloseConnection));
        assert!(matches!(
            session_down(&actions).unwrap().0,
            SessionError::PeerUnreachable { .. }
        ));
        delays.push(
            peer.session
                .timer_deadline(TimerKind::ConnectRetry)
                .unwrap()
                - peer.now,
        );
    }
    assert_eq!(
        delays,
        [s(2), s(4), s(8), s(16), s(32), s(60), s(60), s(60)]
    );
}

#[test]
fn backoff_resets_once_a_session_stayed_up_for_a_minute() {
    let mut peer = Peer::new(config());
    peer.step(Input::ManualStart);
    for _ in 0..3 {
        peer.step(Input::TcpConnectFailed("refused".into()));
        peer.fire(TimerKind::ConnectRetry);
    }
    // Up for 10 s, then closed: still backing off (8 s next).
    peer.step(Input::TcpConnected);
    peer.receive(&peer_open(90));
    peer.receive(&keepalive());
    peer.advance(s(10));
    let actions = peer.step(Input::TcpClosed);
    assert!(actions.contains(&Action::StartTimer(TimerKind::ConnectRetry, s(8))));
    assert_eq!(
        session_down(&actions),
        Some((SessionError::ConnectionClosed, true))
    );
    // Up for 60 s: back to 1 s.
    peer.fire(TimerKind::ConnectRetry);
    peer.step(Input::TcpConnected);
    peer.receive(&peer_open(90));
    peer.receive(&keepalive());
    for _ in 0..2 {
        peer.advance(s(30));
        peer.receive(&keepalive());
    }
    let actions = peer.step(Input::TcpClosed);
    assert!(actions.contains(&Action::StartTimer(TimerKind::ConnectRetry, s(1))));
}

#[test]
fn jitter_shortens_retry_and_keepalive_timers() {
    let mut session = Session::new(config()).unwrap();
    let now = Instant::now();
    let jitter = Jitter::new(0.8);
    session.handle(Input::ManualStart, now, jitter);
    let actions = session.handle(Input::TcpConnectFailed("refused".into()), now, jitter);
    assert!(actions.contains(&Action::StartTimer(
        TimerKind::ConnectRetry,
        Duration::from_millis(800)
    )));
    let later = now + s(1);
    session.handle(Input::TimerExpired(TimerKind::ConnectRetry), later, jitter);
    session.handle(Input::TcpConnected, later, jitter);
    let actions = session.handle(Input::Received(&peer_open(90)), later, jitter);
    assert!(actions.contains(&Action::StartTimer(TimerKind::Keepalive, s(24))));
    // The hold timer is not jittered: it is the peer's deadline.
    assert!(actions.contains(&Action::StartTimer(TimerKind::Hold, s(90))));
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let update = update_packing::end_of_rib(Family::Ipv4Unicast).unwrap();
    // UPDATE in OpenSent.
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let actions = peer.receive(&update);
    assert_eq!(sent_notification(&actions), Some((5, 1, vec![])));
    let (error, _) = session_down(&actions).unwrap();
    assert_eq!(
        error,
        SessionError::UnexpectedMessage {
            state: State::OpenSent,
            message: "UPDATE"
        }
    );
    assert_eq!(error.reason(), "BGPUnexpectedMessage");
    // OPEN in OpenConfirm.
    let mut peer = Peer::new(config());
    peer.reach_open_confirm(90);
    let actions = peer.receive(&peer_open(90));
    assert_eq!(sent_notification(&actions), Some((5, 2, vec![])));
    // OPEN in Established.
    let mut peer = Peer::new(config());
    peer.reach_established();
    let actions = peer.receive(&peer_open(90));
    assert_eq!(sent_notification(&actions), Some((5, 3, vec![])));
    // KEEPALIVE in OpenSent.
    let mut peer = Peer::new(config());
    peer.reach_open_sent();
    let actions = peer.receive(&keepalive());
    assert_eq!(sent_notification(&actions), Some((5, 1, vec![])));
}

#[test]
fn the_connection_closing_ends_the_session() {
    for up_to in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut peer = Peer::new(config());
        match up_to {
            State::OpenSent => peer.reach_open_sent(),
            State::OpenConfirm => peer.reach_open_confirm(90),
            _ => {
                peer.reach_established();
            }
        }
        let actions = peer.step(Input::TcpClosed);
        assert_failed_to_active(&peer, &actions, s(1));
        assert_eq!(
            session_down(&actions),
            Some((SessionError::ConnectionClosed, up_to == State::Established))
        );
        assert_eq!(
            session_down(&actions).unwrap().0.reason(),
            "BGPConnectionClosed"
        );
    }
}

#[test]
fn stale_inputs_are_ignored() {
    let mut peer = Peer::new(config());
    for input in [
        Input::TcpClosed,
        Input::TcpConnectFailed("late".into()),
        Input::Received(&keepalive()),
        Input::TimerExpired(TimerKind::Hold),
        Input::FramingError(HeaderError::BadMessageType(9)),
    ] {
        assert!(peer.step(input).is_empty());
    }
    peer.reach_established();
    // A second connect outcome and timers that are not armed change nothing.
    assert!(peer.step(Input::TcpConnected).is_empty());
    assert!(peer.step(Input::TcpConnectFailed("late".into())).is_empty());
    assert!(
        peer.step(Input::TimerExpired(TimerKind::ConnectRetry))
            .is_empty()
    );
    assert!(
        peer.step(Input::TimerExpired(TimerKind::Connect))
            .is_empty()
    );
    assert!(peer.step(Input::ManualStart).is_empty());
    assert_eq!(peer.session.state(), State::Established);
}

fn routes(prefixes: &[&str]) -> BTreeMap<IpNet, Arc<RouteAttributes>> {
    let v4 = Arc::new(RouteAttributes::new(NextHop::V4(ROUTER_ID)));
    let v6 = Arc::new(RouteAttributes::new(NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    }));
    prefixes
        .iter()
        .map(|p| {
            let prefix: IpNet = p.parse().unwrap();
            let attributes = if prefix.addr().is_ipv4() { &v4 } else { &v6 };
            (prefix, Arc::clone(attributes))
        })
        .collect()
}

fn updates(actions: &[Action]) -> Vec<codec::Update> {
    sent(actions)
        .into_iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

#[test]
fn the_initial_table_and_end_of_rib_follow_establishment() {
    let mut peer = Peer::new(config());
    // Routes known before the session: sent as it comes up.
    assert!(
        peer.session
            .set_routes(routes(&["198.51.100.1/32", "2001:db8:1::1/128"]))
            .is_empty()
    );
    let actions = peer.reach_established();
    let sent_updates = updates(&actions);
    assert_eq!(sent_updates.len(), 4);
    assert_eq!(
        sent_updates[0].announced,
        vec!["198.51.100.1/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        sent_updates[1].announced,
        vec!["2001:db8:1::1/128".parse::<IpNet>().unwrap()]
    );
    assert_eq!(sent_updates[2].end_of_rib, Some(Family::Ipv4Unicast));
    assert_eq!(sent_updates[3].end_of_rib, Some(Family::Ipv6Unicast));
    // The Established action comes before the UPDATEs.
    let established = actions
        .iter()
        .position(|a| matches!(a, Action::Established { .. }))
        .unwrap();
    let first_send = actions
        .iter()
        .position(|a| matches!(a, Action::SendMessage(_)))
        .unwrap();
    assert!(established < first_send);

    // Later changes: only the difference, no End-of-RIB.
    let actions = peer
        .session
        .set_routes(routes(&["198.51.100.1/32", "198.51.100.2/32"]));
    let sent_updates = updates(&actions);
    assert_eq!(sent_updates.len(), 2);
    assert_eq!(
        sent_updates[0].withdrawn,
        vec!["2001:db8:1::1/128".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        sent_updates[1].announced,
        vec!["198.51.100.2/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(peer.session.rib_out().unwrap().sent().len(), 2);
}

#[test]
fn end_of_rib_waits_for_the_routes_and_can_be_turned_off() {
    let mut peer = Peer::new(config());
    let actions = peer.reach_established();
    assert!(
        updates(&actions).is_empty(),
        "no End-of-RIB before the table is known"
    );
    let actions = peer.session.set_routes(BTreeMap::new());
    let markers: Vec<_> = updates(&actions)
        .into_iter()
        .map(|u| u.end_of_rib)
        .collect();
    assert_eq!(
        markers,
        vec![Some(Family::Ipv4Unicast), Some(Family::Ipv6Unicast)]
    );

    let mut peer = Peer::new(Config {
        send_end_of_rib: false,
        ..config()
    });
    peer.session.set_routes(routes(&["198.51.100.1/32"]));
    let actions = peer.reach_established();
    let sent_updates = updates(&actions);
    assert_eq!(sent_updates.len(), 1);
    assert_eq!(sent_updates[0].end_of_rib, None);
}

#[test]
fn a_new_session_resends_everything() {
    let mut peer = Peer::new(config());
    peer.session.set_routes(routes(&["198.51.100.1/32"]));
    peer.reach_established();
    peer.step(Input::TcpClosed);
    peer.fire(TimerKind::ConnectRetry);
    peer.step(Input::TcpConnected);
    peer.receive(&peer_open(90));
    let sent_updates = updates(&peer.receive(&keepalive()));
    assert_eq!(
        sent_updates.len(),
        3,
        "the route and both End-of-RIB markers"
    );
}

#[test]
fn route_refresh_resends_the_family() {
    let mut peer = Peer::new(config());
    peer.session
        .set_routes(routes(&["198.51.100.1/32", "2001:db8:1::1/128"]));
    peer.reach_established();
    let request = codec::encode_route_refresh(&RouteRefresh::request(Family::Ipv6Unicast)).unwrap();
    let actions = peer.receive(&request);
    assert!(actions.contains(&Action::RouteRefreshRequested(Family::Ipv6Unicast)));
    let sent_updates = updates(&actions);
    assert_eq!(sent_updates.len(), 1);
    assert_eq!(
        sent_updates[0].announced,
        vec!["2001:db8:1::1/128".parse::<IpNet>().unwrap()]
    );
    // A family that was not negotiated is ignored.
    let mut peer = Peer::new(Config {
        families: Families {
            ipv4_unicast: true,
            ipv6_unicast: false,
        },
        ..config()
    });
    peer.reach_established();
    let actions = peer.receive(&request);
    assert_eq!(actions, vec![Action::StartTimer(TimerKind::Hold, s(90))]);
}

#[test]
fn only_the_families_both_sides_carry_are_sent() {
    let mut peer = Peer::new(config());
    peer.session
        .set_routes(routes(&["198.51.100.1/32", "2001:db8:1::1/128"]));
    peer.reach_open_sent();
    // A peer with no multiprotocol capability carries IPv4 unicast only.
    peer.receive(&open_bytes(
        PEER_ASN,
        90,
        PEER_ID,
        vec![Capability::FourOctetAs(PEER_ASN)],
    ));
    let actions = peer.receive(&keepalive());
    let negotiated = negotiated_of(&actions).unwrap();
    assert_eq!(
        negotiated.families,
        Families {
            ipv4_unicast: true,
            ipv6_unicast: false
        }
    );
    let sent_updates = updates(&actions);
    assert_eq!(sent_updates.len(), 2, "the IPv4 route and its End-of-RIB");
    let rib = peer.session.rib_out().unwrap();
    assert_eq!(
        rib.unsendable()[&"2001:db8:1::1/128".parse::<IpNet>().unwrap()],
        update_packing::Unsendable::FamilyNotNegotiated(Family::Ipv6Unicast)
    );
}

#[test]
fn ibgp_sessions_send_local_pref_and_an_empty_as_path() {
    let mut peer = Peer::new(Config::new(LOCAL_ASN, LOCAL_ASN, ROUTER_ID));
    peer.session.set_routes(routes(&["198.51.100.1/32"]));
    peer.reach_open_sent();
    peer.receive(&open_bytes(
        LOCAL_ASN,
        90,
        PEER_ID,
        vec![Capability::FourOctetAs(LOCAL_ASN)],
    ));
    let actions = peer.receive(&keepalive());
    assert!(!negotiated_of(&actions).unwrap().ebgp);
    let sent_updates = updates(&actions);
    assert_eq!(sent_updates[0].attributes.as_path, Some(vec![]));
    assert_eq!(
        sent_updates[0].attributes.local_pref,
        Some(update_packing::DEFAULT_LOCAL_PREF)
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let cases = [
        Config {
            hold_time: s(2),
            ..config()
        },
        Config {
            hold_time: Duration::from_millis(2900),
            ..config()
        },
        Config {
            hold_time: s(65536),
            ..config()
        },
        Config {
            keepalive_time: Some(s(90)),
            ..config()
        },
        Config {
            keepalive_time: Some(Duration::from_millis(500)),
            ..config()
        },
        Config {
            keepalive_time: Some(Duration::ZERO),
            ..config()
        },
        Config {
            local_asn: 0,
            ..config()
        },
        Config {
            router_id: Ipv4Addr::UNSPECIFIED,
            ..config()
        },
        Config {
            families: Families::NONE,
            ..config()
        },
        Config {
            graceful_restart: Some(s(5000)),
            ..config()
        },
        Config {
            connect_time: Duration::ZERO,
            ..config()
        },
    ];
    for case in cases {
        assert!(Session::new(case.clone()).is_err(), "{case:?}");
    }
    assert!(
        Session::new(Config {
            hold_time: Duration::ZERO,
            keepalive_time: Some(s(10)),
            ..config()
        })
        .is_ok()
    );
}

#[test]
fn every_error_has_a_stable_reason_and_an_operator_message() {
    let errors = [
        (
            SessionError::PeerUnreachable {
                reason: "no route to host".into(),
            },
            "BGPPeerUnreachable",
            "cannot connect to the peer: no route to host",
        ),
        (
            SessionError::ConnectionClosed,
            "BGPConnectionClosed",
            "the peer closed the TCP connection",
        ),
        (
            SessionError::OpenRejected {
                subcode: 6,
                detail: "hold time 1 s (must be 0 or at least 3 s)".into(),
            },
            "BGPOpenRejected",
            "rejected the peer's OPEN: hold time 1 s (must be 0 or at least 3 s)",
        ),
        (
            SessionError::MalformedMessage {
                detail: "bad message length 18".into(),
                sent: Some((1, 2)),
            },
            "BGPMalformedMessage",
            "malformed message from the peer: bad message length 18 (sent Message Header \
             Error/Bad Message Length)",
        ),
        (
            SessionError::PeerNotification {
                code: 2,
                subcode: 6,
                communication: None,
            },
            "BGPPeerNotification",
            "peer sent OPEN Message Error/Unacceptable Hold Time",
        ),
        (
            SessionError::AdministrativeStop,
            "BGPSessionStopped",
            "session stopped administratively",
        ),
        (
            SessionError::Internal("x".into()),
            "BGPInternalError",
            "internal error: x",
        ),
    ];
    for (error, reason, message) in errors {
        assert_eq!(error.reason(), reason);
        assert_eq!(error.to_string(), message);
    }
}

// Random input sequences.

#[derive(Clone, Debug)]
enum Event {
    Start,
    Stop,
    Connected,
    ConnectFailed,
    Closed,
    /// A peer OPEN: right or wrong ASN, a hold time, maybe no capabilities.
    Open {
        right_asn: bool,
        hold: u16,
        capabilities: bool,
    },
    Keepalive,
    Notification(u8, u8),
    Update,
    RouteRefresh,
    Garbage(Vec<u8>),
    /// A valid message with one byte changed.
    Corrupted {
        which: u8,
        at: usize,
        value: u8,
    },
    Framing,
    /// Move the clock to this timer's deadline (if armed) and fire it.
    Fire(TimerKind),
    /// Fire a timer without moving the clock.
    FireEarly(TimerKind),
    Advance(u64),
    SetRoutes(u8),
}

fn timer_kind() -> impl Strategy<Value = TimerKind> {
    prop_oneof![
        Just(TimerKind::ConnectRetry),
        Just(TimerKind::Hold),
        Just(TimerKind::Keepalive),
        Just(TimerKind::Connect),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let hold = prop_oneof![
        Just(0u16),
        Just(1),
        Just(2),
        Just(3),
        Just(30),
        Just(90),
        Just(300)
    ];
    prop_oneof![
        1 => Just(Event::Start),
        1 => Just(Event::Stop),
        3 => Just(Event::Connected),
        1 => Just(Event::ConnectFailed),
        1 => Just(Event::Closed),
        3 => (any::<bool>(), hold, any::<bool>()).prop_map(|(right_asn, hold, capabilities)| {
            Event::Open {
                right_asn: right_asn || hold % 2 == 0,
                hold,
                capabilities,
            }
        }),
        3 => Just(Event::Keepalive),
        1 => (1u8..8, 0u8..12).prop_map(|(c, s)| Event::Notification(c, s)),
        1 => Just(Event::Update),
        1 => Just(Event::RouteRefresh),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Event::Garbage),
        1 => (0u8..4, 0usize..64, any::<u8>())
            .prop_map(|(which, at, value)| Event::Corrupted { which, at, value }),
        1 => Just(Event::Framing),
        2 => timer_kind().prop_map(Event::Fire),
        1 => timer_kind().prop_map(Event::FireEarly),
        1 => (0u64..200).prop_map(Event::Advance),
        1 => (0u8..4).prop_map(Event::SetRoutes),
    ]
}

fn valid_message(which: u8) -> Vec<u8> {
    match which {
        0 => peer_open(90),
        1 => keepalive(),
        2 => {
            let route = RouteAttributes::new(NextHop::V4(PEER_ID)).with_communities([7]);
            let encoding = SessionEncoding {
                local_asn: PEER_ASN,
                ebgp: true,
                four_octet_as: true,
                families: Families::BOTH,
            };
            let prefix: IpNet = "203.0.113.0/24".parse().unwrap();
            update_packing::pack_announcements([(prefix, &route)], &encoding)
                .messages
                .remove(0)
        }
        _ => codec::encode_route_refresh(&RouteRefresh::request(Family::Ipv4Unicast)).unwrap(),
    }
}

/// The timers each state may and must have armed.
fn check_invariants(session: &Session) -> Result<(), TestCaseError> {
    let armed = |kind| session.timer_deadline(kind).is_some();
    match session.state() {
        State::Idle => prop_assert_eq!(session.next_timer(), None),
        State::Connect => {
            prop_assert!(armed(TimerKind::Connect));
            prop_assert!(
                !armed(TimerKind::ConnectRetry)
                    && !armed(TimerKind::Hold)
                    && !armed(TimerKind::Keepalive)
            );
        }
        State::Active => {
            prop_assert!(armed(TimerKind::ConnectRetry));
            prop_assert!(
                !armed(TimerKind::Connect)
                    && !armed(TimerKind::Hold)
                    && !armed(TimerKind::Keepalive)
            );
        }
        State::OpenSent => {
            prop_assert!(armed(TimerKind::Hold));
            prop_assert!(session.negotiated().is_none());
        }
        State::OpenConfirm | State::Established => {
            let negotiated = session.negotiated();
            prop_assert!(negotiated.is_some());
            let hold = negotiated.map(|n| n.hold_time).unwrap_or_default();
            prop_assert_eq!(armed(TimerKind::Hold), !hold.is_zero());
            prop_assert_eq!(armed(TimerKind::Keepalive), !hold.is_zero());
            prop_assert!(!armed(TimerKind::Connect) && !armed(TimerKind::ConnectRetry));
        }
    }
    prop_assert_eq!(
        session.rib_out().is_some(),
        session.state() == State::Established
    );
    if !matches!(session.state(), State::OpenConfirm | State::Established) {
        prop_assert!(session.negotiated().is_none());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_inputs_keep_the_session_consistent(events in proptest::collection::vec(event(), 1..60)) {
        let mut peer = Peer::new(Config { keepalive_time: None, ..config() });
        let mut last_open_hold: Option<u16> = None;
        for event in events {
            let state_before = peer.session.state();
            let mut malformed_in_connected = false;
            // The bytes fed as one received message, if any.
            let mut bytes = Vec::new();
            let actions = match event {
                Event::Start => peer.step(Input::ManualStart),
                Event::Stop => peer.step(Input::ManualStop),
                Event::Connected => peer.step(Input::TcpConnected),
                Event::ConnectFailed => peer.step(Input::TcpConnectFailed("refused".into())),
                Event::Closed => peer.step(Input::TcpClosed),
                Event::Open { right_asn, hold, capabilities } => {
                    let asn = if right_asn { PEER_ASN } else { 65000 };
                    let caps = if capabilities { peer_capabilities() } else { vec![] };
                    if state_before == State::OpenSent {
                        last_open_hold = Some(hold);
                    }
                    bytes = open_bytes(asn, hold, PEER_ID, caps);
                    peer.receive(&bytes)
                }
                Event::Keepalive => peer.receive(&keepalive()),
                Event::Notification(c, s) => peer.receive(&notification(c, s, vec![])),
                Event::Update => peer.receive(&valid_message(2)),
                Event::RouteRefresh => peer.receive(&valid_message(3)),
                Event::Garbage(garbage) => {
                    bytes = garbage;
                    match codec::split_frame(&bytes) {
                        Ok(Some(len)) => { bytes.truncate(len); peer.receive(&bytes) }
                        Ok(None) => { bytes.clear(); Vec::new() }
                        Err(error) => {
                            bytes.clear();
                            malformed_in_connected = state_before.is_connected();
                            peer.step(Input::FramingError(error))
                        }
                    }
                }
                Event::Corrupted { which, at, value } => {
                    bytes = valid_message(which);
                    let at = at % bytes.len();
                    bytes[at] = value;
                    match codec::split_frame(&bytes) {
                        Ok(Some(len)) if len == bytes.len() => peer.receive(&bytes),
                        Ok(_) => { bytes.clear(); Vec::new() }
                        Err(error) => {
                            bytes.clear();
                            malformed_in_connected = state_before.is_connected();
                            peer.step(Input::FramingError(error))
                        }
                    }
                }
                Event::Framing => {
                    malformed_in_connected = state_before.is_connected();
                    peer.step(Input::FramingError(HeaderError::ConnectionNotSynchronized))
                }
                Event::Fire(kind) => match peer.session.timer_deadline(kind) {
                    Some(_) => peer.fire(kind),
                    None => peer.step(Input::TimerExpired(kind)),
                },
                Event::FireEarly(kind) => peer.step(Input::TimerExpired(kind)),
                Event::Advance(secs) => { peer.advance(s(secs)); Vec::new() }
                Event::SetRoutes(n) => {
                    let all = ["198.51.100.1/32", "198.51.100.2/32", "2001:db8:1::1/128"];
                    peer.session.set_routes(routes(&all[..usize::from(n).min(all.len())]))
                }
            };

            // StateChanged chains from the state before to the state after.
            let mut state = state_before;
            for action in &actions {
                if let Action::StateChanged { from, to } = action {
                    prop_assert_eq!(*from, state);
                    prop_assert_ne!(from, to);
                    state = *to;
                }
            }
            prop_assert_eq!(state, peer.session.state());

            // Nothing is sent after a close, and everything sent is a valid message.
            if let Some(close) = actions.iter().position(|a| *a == Action::CloseConnection) {
                prop_assert!(actions[close..].iter().all(|a| !matches!(a, Action::SendMessage(_))));
            }
            for action in &actions {
                if let Action::SendMessage(message) = action {
                    prop_assert!(message.len() <= codec::MAX_MESSAGE_LEN);
                    let four_octet_as = peer.session.negotiated().is_none_or(|n| n.four_octet_as);
                    let decoded = codec::decode(message, DecodeContext { four_octet_as, ebgp: true });
                    prop_assert!(decoded.is_ok(), "we sent an invalid message: {:?}", decoded);
                }
            }

            // A malformed message in a connected state is answered with a NOTIFICATION
            // (unless it was itself a NOTIFICATION) and ends the connection.
            if !bytes.is_empty() && state_before.is_connected() && codec::decode(&bytes, DecodeContext { four_octet_as: true, ebgp: true }).is_err() {
                let was_notification = bytes.get(18) == Some(&3) && codec::split_frame(&bytes).is_ok();
                malformed_in_connected = !was_notification;
                prop_assert!(actions.contains(&Action::CloseConnection));
            }
            if malformed_in_connected {
                prop_assert!(sent_notification(&actions).is_some(), "{actions:?}");
                prop_assert_eq!(peer.session.state(), State::Active);
            }

            // An Established session's hold time is min(ours, the peer's).
            if let Some(negotiated) = negotiated_of(&actions) {
                let peer_hold = last_open_hold.unwrap_or(u16::MAX);
                prop_assert_eq!(negotiated.hold_time, s(u64::from(peer_hold).min(90)));
                prop_assert!(peer_hold == 0 || peer_hold >= 3);
            }

            check_invariants(&peer.session)?;
        }
    }
}
