//! Any bytes from a BGP peer: framing and decoding must never panic, and fed to an Established
//! session, a malformed message must be answered with a NOTIFICATION and the close (except a
//! malformed NOTIFICATION, which RFC 4271 §6.4 says not to answer).
//!
//! When the first byte is odd the rest is read as records (type, body length, body) and each is
//! given a valid marker and length, so the fuzzer spends its time in the message bodies rather
//! than on the 16-byte marker.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Instant;

use ferrolb_speaker::bgp::codec::{self, Capability, DecodeContext, Message, Open};
use ferrolb_speaker::bgp::{Action, Config, Family, Input, Jitter, Session, State};
use libfuzzer_sys::fuzz_target;

const LOCAL_ASN: u32 = 64512;
const PEER_ASN: u32 = 64513;

fn established(now: Instant) -> Session {
    let mut session =
        Session::new(Config::new(LOCAL_ASN, PEER_ASN, Ipv4Addr::new(10, 0, 0, 1))).unwrap();
    let open = codec::encode_open(&Open {
        asn: PEER_ASN,
        hold_time_secs: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        capabilities: vec![
            Capability::Multiprotocol(Family::Ipv4Unicast),
            Capability::Multiprotocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(PEER_ASN),
        ],
    })
    .unwrap();
    let keepalive = codec::encode_keepalive();
    for input in [
        Input::ManualStart,
        Input::TcpConnected,
        Input::Received(&open),
        Input::Received(&keepalive),
    ] {
        session.handle(input, now, Jitter::NONE);
    }
    assert_eq!(session.state(), State::Established);
    session
}

fn sent_notification(actions: &[Action]) -> bool {
    actions.iter().any(|action| {
        matches!(action, Action::SendMessage(bytes)
            if matches!(codec::decode(bytes, CONTEXT), Ok(Message::Notification(_))))
    })
}

const CONTEXT: DecodeContext = DecodeContext {
    four_octet_as: true,
    ebgp: true,
};

/// Each (type, length, body) record as a message with a correct header.
fn framed(mut records: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    while let [kind, len, rest @ ..] = records {
        let body = &rest[..usize::from(*len).min(rest.len())];
        stream.extend_from_slice(&[0xff; 16]);
        stream.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
        stream.push(*kind);
        stream.extend_from_slice(body);
        records = &rest[body.len()..];
    }
    stream
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stream = if mode & 1 == 1 {
        framed(rest)
    } else {
        rest.to_vec()
    };
    let input = stream.as_slice();
    for four_octet_as in [false, true] {
        for ebgp in [false, true] {
            let _ = codec::decode(
                input,
                DecodeContext {
                    four_octet_as,
                    ebgp,
                },
            );
        }
    }

    let now = Instant::now();
    let mut session = established(now);
    let mut rest = input;
    while session.state() == State::Established {
        match codec::split_frame(rest) {
            Ok(None) => break,
            Ok(Some(len)) => {
                let (frame, tail) = rest.split_at(len);
                rest = tail;
                let malformed = codec::decode(frame, CONTEXT).is_err();
                let actions = session.handle(Input::Received(frame), now, Jitter::NONE);
                if malformed {
                    assert!(actions.contains(&Action::CloseConnection), "{actions:?}");
                    assert_eq!(session.state(), State::Active);
                    // RFC 4271 §6.4: a NOTIFICATION is not answered with one.
                    if frame[18] != 3 {
                        assert!(sent_notification(&actions), "{actions:?}");
                    }
                }
            }
            Err(error) => {
                let actions = session.handle(Input::FramingError(error), now, Jitter::NONE);
                assert!(sent_notification(&actions), "{actions:?}");
                assert!(actions.contains(&Action::CloseConnection));
                break;
            }
        }
    }
});
