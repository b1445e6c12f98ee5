//! Any bytes as a heartbeat: decoding must never panic, whatever it accepts must encode back to
//! the same bytes (apart from the reserved bits, which receivers ignore), and feeding it to the replay guard and a membership must not panic either.
//! The input's first byte picks whether the fuzzer's bytes are tagged with the right key, so the
//! paths past authentication are reached too.
#![no_main]

use std::collections::BTreeSet;
use std::time::Instant;

use ferrolb_speaker::heartbeat::{self, HeartbeatTiming, Membership, ReplayGuard, wire};
use libfuzzer_sys::fuzz_target;
use ring::hmac;

fuzz_target!(|input: &[u8]| {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
    let Some((&sign, rest)) = input.split_first() else {
        return;
    };
    let mut packet = rest.to_vec();
    if sign & 1 == 1 && packet.len() >= wire::TAG_LEN {
        // Re-tag the body with the right key: the parser past the tag check gets fuzzed too.
        let body = packet.len() - wire::TAG_LEN;
        let tag = hmac::sign(&key, &packet[..body]);
        packet[body..].copy_from_slice(&tag.as_ref()[..wire::TAG_LEN]);
    }
    let _ = wire::key_id(&packet);
    let Ok(decoded) = wire::decode(&packet, Some(&key)) else {
        return;
    };
    let reencoded = wire::encode(&decoded, &key);
    let mut expected = packet.clone();
    expected[4] &= 1;
    expected[5] = 0;
    let body = packet.len() - wire::TAG_LEN;
    assert_eq!(
        reencoded[..body],
        expected[..body],
        "accepted bytes do not re-encode"
    );
    assert_eq!(wire::decode(&reencoded, Some(&key)), Ok(decoded.clone()));
    let now = Instant::now();
    let mut guard = ReplayGuard::new(std::time::Duration::from_secs(5));
    let _ = guard.check(&decoded, decoded.sent_unix_ms, now);
    let me = heartbeat::node_id("node-a");
    let mut membership = Membership::new(me, HeartbeatTiming::DEFAULT);
    membership.set_known(&BTreeSet::from([me, decoded.node]), now);
    membership.step(now);
    membership.receive(&decoded, now);
    let _ = membership.outgoing(now);
    let _ = membership.answer_until(now);
    let _ = membership.alive(now);
});
