//! The rendezvous (highest random weight) hash that picks the owner of an announcement group.
//!
//! Every speaker must compute the same score for the same (group, node) in any process and any
//! FerroLB version, so the hash is fully specified here rather than left to `std`'s randomly
//! keyed hasher:
//!
//! - function: SipHash-1-3, 64-bit output, keys [`KEY_0`] and [`KEY_1`];
//! - message: the bytes of [`DOMAIN`], then the group key's family byte (4 or 6), then its
//!   address in network byte order (4 or 16 bytes), then the node name's UTF-8 bytes. The node
//!   name is the only part of variable length and comes last, so no two inputs share a message.
//!
//! The winner is the live candidate with the highest score; equal scores (practically never)
//! go to the greater node name. Changing any of this moves IPs between nodes during a rolling
//! upgrade: do it only with a new [`DOMAIN`] version and an upgrade note.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

/// Separates this use of the hash from any other, and versions it.
pub const DOMAIN: &[u8] = b"ferrolb.io/l2-owner/v1\0";
/// "ferrolb1" and "l2-owner" as big-endian integers: fixed, public keys. Secrecy is not the
/// point; agreement between processes is.
pub const KEY_0: u64 = 0x6665_7272_6f6c_6231;
pub const KEY_1: u64 = 0x6c32_2d6f_776e_6572;

/// How strongly `node` wants the group whose key is `group_key`.
pub fn score(group_key: IpAddr, node: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(KEY_0, KEY_1);
    hasher.write(&message(group_key, node));
    hasher.finish()
}

fn message(group_key: IpAddr, node: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 17 + node.len());
    message.extend_from_slice(DOMAIN);
    match group_key {
        IpAddr::V4(v4) => {
            message.push(4);
            message.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            message.push(6);
            message.extend_from_slice(&v6.octets());
        }
    }
    message.extend_from_slice(node.as_bytes());
    message
}

/// The winner among `candidates` for `group_key`: highest score, then greatest name.
pub fn winner<'a>(
    group_key: IpAddr,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by_key(|node| (score(group_key, node), *node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_encoding_is_the_documented_one() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let mut expected = DOMAIN.to_vec();
        expected.extend_from_slice(&[4, 198, 51, 100, 7]);
        expected.extend_from_slice(b"node-a");
        assert_eq!(message(v4, "node-a"), expected);

        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let mut expected = DOMAIN.to_vec();
        expected.push(6);
        expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(b"node-a");
        assert_eq!(message(v6, "node-a"), expected);
    }

    /// Pinned values: if this test fails, owners move on upgrade. See the module documentation.
    #[test]
    fn scores_are_stable_across_versions() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let pinned = [
            (score(v4, "node-a"), PINNED_V4_A),
            (score(v4, "node-b"), PINNED_V4_B),
            (score(v6, "node-a"), PINNED_V6_A),
        ];
        for (computed, expected) in pinned {
            assert_eq!(computed, expected, "computed {computed:#018x}");
        }
    }

    const PINNED_V4_A: u64 = 0x88b5_ec55_15fc_d9ac;
    const PINNED_V4_B: u64 = 0xf3eb_7507_1742_a5d4;
    const PINNED_V6_A: u64 = 0x1af9_3ac6_68f1_eeca;

    /// SipHash-1-3 with all-zero keys, as an independent implementation publishes it.
    #[test]
    fn siphash_1_3_matches_independent_vectors() {
        let vectors: [(&[u8], u64); 3] = [
            (b"", 0xd1fb_a762_150c_532c),
            (b"siphash", 0x8264_ceec_cb16_bcbe),
            (b"digest-sip_hash", 0xce31_007e_3413_0c0a),
        ];
        for (input, digest) in vectors {
            let mut hasher = SipHasher13::new_with_keys(0, 0);
            hasher.write(input);
            assert_eq!(hasher.finish(), digest, "{input:?}");
        }
    }

    #[test]
    fn ties_go_to_the_greater_name_and_empty_has_no_winner() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(winner(v4, []), None);
        assert_eq!(winner(v4, ["only"]), Some("only"));
    }
}
