//! Any bytes as a BFD Control packet: parsing must never panic, whatever it accepts must build
//! back to a packet that parses the same, and feeding it to a session in any state (then letting
//! its timers run) must not panic either, nor make it send a packet that does not parse.
//! The input's first byte picks the session's state and timers; the rest is the datagram.
#![no_main]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use ferrolb_speaker::bfd::{self, Action, Input, Jitter, Session, SessionState, Timers};
use libfuzzer_sys::fuzz_target;

const OURS: u32 = 0x1111;

fn check_sent(actions: &[Action]) {
    for action in actions {
        if let Action::Send(packet) = action {
            assert!(
                !(packet.poll && packet.final_bit),
                "Poll and Final together"
            );
            assert_eq!(bfd::packet::parse(&packet.to_bytes()), Ok(*packet));
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&setup, datagram)) = input.split_first() else {
        return;
    };
    let Ok(packet) = bfd::packet::parse(datagram) else {
        return;
    };
    assert_eq!(bfd::packet::parse(&packet.to_bytes()), Ok(packet));

    let interval = Duration::from_millis(10 * u64::from(setup >> 4) + 1);
    let Ok(timers) = Timers::new(interval, interval, (setup & 0x03) + 1) else {
        return;
    };
    let Some(ours) = NonZeroU32::new(OURS) else {
        return;
    };
    let start = Instant::now();
    let mut session = Session::new(timers, ours);
    check_sent(&session.start(start, Jitter::new(u16::from(setup))));
    // Bring the session into the state the setup byte asks for, with a well-formed peer.
    let mut peer = packet;
    peer.your_discriminator = OURS;
    match (setup >> 2) & 0x03 {
        0 => check_sent(&session.handle(Input::AdminDown, start)),
        1 => {}
        2 => {
            peer.state = SessionState::Down;
            check_sent(&session.handle(Input::Received(peer), start));
        }
        _ => {
            peer.state = SessionState::Down;
            check_sent(&session.handle(Input::Received(peer), start));
            peer.state = SessionState::Up;
            check_sent(&session.handle(Input::Received(peer), start));
        }
    }
    let now = start + Duration::from_millis(1);
    check_sent(&session.handle(Input::Received(packet), now));
    for _ in 0..4 {
        let deadlines = [session.transmit_deadline(), session.detection_deadline()];
        let Some(next) = deadlines.into_iter().flatten().min() else {
            break;
        };
        check_sent(&session.handle(
            Input::TransmitTimer {
                jitter: Jitter::LONGEST,
            },
            next,
        ));
        check_sent(&session.handle(Input::DetectionTimer, next));
    }
});
