//! The heartbeat's bytes: what a speaker sends on each announcing network every interval, and
//! the checks a received one must pass before it counts. Layout (all integers big-endian), and
//! why each field is there, in `docs/heartbeat-protocol.md`:
//!
//! ```text
//!  0  2  magic "FH"                   20  8  node id
//!  2  1  version (1)                  28  8  sent at, ms since the Unix epoch (sender's clock)
//!  3  1  kind: 1 heartbeat, 2 goodbye 36  1  suspects (n, at most 32)
//!  4  1  flags: bit 0 api-reachable   37  1  reported (m, at most 32)
//!  5  1  reserved                     38  8n suspected node ids, then 8m reported node ids
//!  6  2  key id                       ..  16 tag: the first 16 bytes of HMAC-SHA-256 of
//!  8  8  incarnation                         everything before it
//! 16  4  sequence
//! ```
//!
//! Senders write zero in the reserved byte and the unused flag bits, and receivers ignore them
//! (they are still covered by the tag), so a later version can use them without breaking this
//! one. Decoding never trusts a length it has not checked against the buffer, and the tag is
//! compared in constant time, so a forger learns nothing from timing.

use ring::hmac;
use subtle::ConstantTimeEq;

pub const MAGIC: [u8; 2] = *b"FH";
pub const VERSION: u8 = 1;
/// Bytes of the tag kept from HMAC-SHA-256 (RFC 2104 allows truncation to half or more).
pub const TAG_LEN: usize = 16;
/// Node ids one list may carry. More than this many suspected peers at once means the network
/// is in pieces; the list then carries the first ones and the receivers' own timers do the rest.
pub const MAX_LISTED: usize = 32;
const HEADER_LEN: usize = 38;
/// The longest valid heartbeat.
pub const MAX_LEN: usize = HEADER_LEN + 2 * MAX_LISTED * 8 + TAG_LEN;
/// The shortest: no lists.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;

/// A node, as heartbeats name it: a fixed hash of its Kubernetes name (see [`super::node_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Heartbeat,
    /// The sender stopped answering and is leaving (SIGTERM): count it dead at once.
    Goodbye,
}

/// One heartbeat's content, before the tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub kind: Kind,
    /// The sender reached the API server recently; informational (metrics, troubleshooting).
    pub api_reachable: bool,
    pub key_id: u16,
    pub node: NodeId,
    /// Grows with each start of the sender's process (its start time, wall clock, in
    /// microseconds): heartbeats of an earlier run are replays.
    pub incarnation: u64,
    /// Grows with each heartbeat the process sends, on any network.
    pub sequence: u32,
    /// When it was sent, by the sender's wall clock: bounds how old a replay can be.
    pub sent_unix_ms: u64,
    /// Peers the sender has not heard from for the suspect time.
    pub suspects: Vec<NodeId>,
    /// Peers that others suspect, as the sender heard it: how a suspicion reaches a node that
    /// cannot hear the suspecting peer.
    pub reported: Vec<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than the fields it declares")]
    Truncated,
    #[error("longer than any heartbeat")]
    Oversized,
    #[error("not a heartbeat (magic)")]
    NotAHeartbeat,
    #[error("protocol version {0} (this speaker speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown kind {0}")]
    UnknownKind(u8),
    #[error("a node list longer than {MAX_LISTED}")]
    ListTooLong,
    #[error("bytes after the tag")]
    TrailingBytes,
    #[error("key id {0} is not in the heartbeat key Secret")]
    UnknownKey(u16),
    #[error("the tag does not match: another key, or a forged or damaged packet")]
    BadTag,
}

impl DecodeError {
    /// The metric label of this reason.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::Oversized => "oversized",
            DecodeError::NotAHeartbeat => "not_a_heartbeat",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::ListTooLong => "list_too_long",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::UnknownKey(_) => "unknown_key",
            DecodeError::BadTag => "bad_tag",
        }
    }
}

/// Writes `heartbeat` tagged with `key` (whose id is `heartbeat.key_id`). Lists longer than
/// [`MAX_LISTED`] are cut there.
pub fn encode(heartbeat: &Heartbeat, key: &hmac::Key) -> Vec<u8> {
    let suspects = &heartbeat.suspects[..heartbeat.suspects.len().min(MAX_LISTED)];
    let reported = &heartbeat.reported[..heartbeat.reported.len().min(MAX_LISTED)];
    let mut bytes =
        Vec::with_capacity(HEADER_LEN + 8 * (suspects.len() + reported.len()) + TAG_LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.push(VERSION);
    bytes.push(match heartbeat.kind {
        Kind::Heartbeat => 1,
        Kind::Goodbye => 2,
    });
    bytes.push(u8::from(heartbeat.api_reachable));
    bytes.push(0);
    bytes.extend_from_slice(&heartbeat.key_id.to_be_bytes());
    bytes.extend_from_slice(&heartbeat.incarnation.to_be_bytes());
    bytes.extend_from_slice(&heartbeat.sequence.to_be_bytes());
    bytes.extend_from_slice(&heartbeat.node.0.to_be_bytes());
    bytes.extend_from_slice(&heartbeat.sent_unix_ms.to_be_bytes());
    // Both lengths are at most MAX_LISTED (32), so they fit a byte.
    bytes.push(suspects.len() as u8);
    bytes.push(reported.len() as u8);
    for id in suspects.iter().chain(reported) {
        bytes.extend_from_slice(&id.0.to_be_bytes());
    }
    let tag = hmac::sign(key, &bytes);
    bytes.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
    bytes
}

/// The key id a packet claims, so the receiver can pick the key before [`decode`]. Checks only
/// what is needed to read it.
pub fn key_id(packet: &[u8]) -> Result<u16, DecodeError> {
    check_frame(packet)?;
    Ok(u16::from_be_bytes([packet[6], packet[7]]))
}

/// Parses and authenticates `packet` with `key`, which the caller chose by [`key_id`] (`None`:
/// no such key).
pub fn decode(packet: &[u8], key: Option<&hmac::Key>) -> Result<Heartbeat, DecodeError> {
    check_frame(packet)?;
    let kind = match packet[3] {
        1 => Kind::Heartbeat,
        2 => Kind::Goodbye,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let suspects_len = usize::from(packet[36]);
    let reported_len = usize::from(packet[37]);
    if suspects_len > MAX_LISTED || reported_len > MAX_LISTED {
        return Err(DecodeError::ListTooLong);
    }
    let body_len = HEADER_LEN + 8 * (suspects_len + reported_len);
    let total = body_len + TAG_LEN;
    if packet.len() < total {
        return Err(DecodeError::Truncated);
    }
    if packet.len() > total {
        return Err(DecodeError::TrailingBytes);
    }
    let key_id = u16::from_be_bytes([packet[6], packet[7]]);
    let key = key.ok_or(DecodeError::UnknownKey(key_id))?;
    let expected = hmac::sign(key, &packet[..body_len]);
    let matches: bool = expected.as_ref()[..TAG_LEN]
        .ct_eq(&packet[body_len..total])
        .into();
    if !matches {
        return Err(DecodeError::BadTag);
    }
    let ids = |from: usize, count: usize| -> Vec<NodeId> {
        packet[from..from + 8 * count]
            .chunks_exact(8)
            .map(|chunk| NodeId(be_u64(chunk)))
            .collect()
    };
    Ok(Heartbeat {
        kind,
        api_reachable: packet[4] & 1 == 1,
        key_id,
        incarnation: be_u64(&packet[8..16]),
        sequence: u32::from_be_bytes([packet[16], packet[17], packet[18], packet[19]]),
        node: NodeId(be_u64(&packet[20..28])),
        sent_unix_ms: be_u64(&packet[28..36]),
        suspects: ids(HEADER_LEN, suspects_len),
        reported: ids(HEADER_LEN + 8 * suspects_len, reported_len),
    })
}

fn check_frame(packet: &[u8]) -> Result<(), DecodeError> {
    if packet.len() > MAX_LEN {
        return Err(DecodeError::Oversized);
    }
    if packet.len() < 2 || packet[..2] != MAGIC {
        return Err(DecodeError::NotAHeartbeat);
    }
    if packet.len() < 3 {
        return Err(DecodeError::Truncated);
    }
    if packet[2] != VERSION {
        return Err(DecodeError::UnsupportedVersion(packet[2]));
    }
    if packet.len() < MIN_LEN {
        return Err(DecodeError::Truncated);
    }
    Ok(())
}

/// Callers pass exactly 8 bytes.
fn be_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[byte; 32])
    }

    fn sample() -> Heartbeat {
        Heartbeat {
            kind: Kind::Heartbeat,
            api_reachable: true,
            key_id: 3,
            node: NodeId(0x0102_0304_0506_0708),
            incarnation: 1_790_000_000_000_000,
            sequence: 42,
            sent_unix_ms: 1_790_000_000_123,
            suspects: vec![NodeId(7)],
            reported: vec![NodeId(8), NodeId(9)],
        }
    }

    #[test]
    fn reserved_bits_are_ignored_but_authenticated() {
        let mut bytes = encode(&sample(), &key(1));
        bytes[4] |= 0b1111_1110;
        bytes[5] = 0xff;
        let body = bytes.len() - TAG_LEN;
        let tag = hmac::sign(&key(1), &bytes[..body]);
        bytes[body..].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        assert_eq!(decode(&bytes, Some(&key(1))), Ok(sample()));
        bytes[5] = 0x7f;
        assert_eq!(decode(&bytes, Some(&key(1))), Err(DecodeError::BadTag));
    }

    #[test]
    fn a_heartbeat_survives_the_round_trip() {
        let bytes = encode(&sample(), &key(1));
        assert_eq!(bytes.len(), HEADER_LEN + 3 * 8 + TAG_LEN);
        assert_eq!(key_id(&bytes), Ok(3));
        assert_eq!(decode(&bytes, Some(&key(1))), Ok(sample()));
    }

    #[test]
    fn a_plain_heartbeat_fits_a_minimum_ethernet_frame() {
        let plain = Heartbeat {
            suspects: vec![],
            reported: vec![],
            ..sample()
        };
        assert_eq!(encode(&plain, &key(1)).len(), MIN_LEN);
        // With its Ethernet header: what 100 peers at 75 ms cost a node (the budget is 100 kB/s).
        assert_eq!(14 + MIN_LEN, 68);
    }

    #[test]
    fn another_key_or_any_changed_bit_is_refused() {
        let bytes = encode(&sample(), &key(1));
        assert_eq!(decode(&bytes, Some(&key(2))), Err(DecodeError::BadTag));
        assert_eq!(decode(&bytes, None), Err(DecodeError::UnknownKey(3)));
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            assert!(decode(&damaged, Some(&key(1))).is_err(), "byte {index}");
        }
    }

    #[test]
    fn malformed_packets_say_why() {
        let bytes = encode(&sample(), &key(1));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1], Some(&key(1))),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&bytes[..10], Some(&key(1))),
            Err(DecodeError::Truncated)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer, Some(&key(1))),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(
            decode(&[0u8; MAX_LEN + 1], None),
            Err(DecodeError::Oversized)
        );
        assert_eq!(
            decode(b"GET / HTTP/1.1", None),
            Err(DecodeError::NotAHeartbeat)
        );
        let mut version = bytes.clone();
        version[2] = 9;
        assert_eq!(
            decode(&version, None),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let mut kind = bytes.clone();
        kind[3] = 7;
        assert_eq!(decode(&kind, None), Err(DecodeError::UnknownKind(7)));
        let mut long_list = bytes;
        long_list[36] = 33;
        assert_eq!(decode(&long_list, None), Err(DecodeError::ListTooLong));
    }

    #[test]
    fn lists_are_cut_at_the_limit() {
        let crowded = Heartbeat {
            suspects: (0..40).map(NodeId).collect(),
            ..sample()
        };
        let decoded =
            decode(&encode(&crowded, &key(1)), Some(&key(1))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.suspects.len(), MAX_LISTED);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = key_id(&bytes);
            let _ = decode(&bytes, Some(&key(1)));
        }

        #[test]
        fn any_heartbeat_round_trips(
            goodbye in any::<bool>(), api in any::<bool>(), key_id in any::<u16>(), node in any::<u64>(),
            incarnation in any::<u64>(), sequence in any::<u32>(), sent_unix_ms in any::<u64>(),
            suspects in proptest::collection::vec(any::<u64>(), 0..=MAX_LISTED),
            reported in proptest::collection::vec(any::<u64>(), 0..=MAX_LISTED),
        ) {
            let heartbeat = Heartbeat {
                kind: if goodbye { Kind::Goodbye } else { Kind::Heartbeat },
                api_reachable: api, key_id, node: NodeId(node), incarnation, sequence, sent_unix_ms,
                suspects: suspects.into_iter().map(NodeId).collect(),
                reported: reported.into_iter().map(NodeId).collect(),
            };
            let bytes = encode(&heartbeat, &key(5));
            prop_assert!(bytes.len() <= MAX_LEN);
            prop_assert_eq!(decode(&bytes, Some(&key(5))), Ok(heartbeat));
        }
    }
}
