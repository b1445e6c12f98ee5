//! The Internet checksum (RFC 1071) as ICMPv6 uses it, over the IPv6 pseudo-header
//! (RFC 8200 section 8.1).

use std::net::Ipv6Addr;

const NEXT_HEADER_ICMPV6: u8 = 58;

/// The checksum to store in an ICMPv6 message whose checksum field is zero. Over a message whose
/// checksum field is filled in, the result is zero exactly when that checksum is right.
pub fn icmpv6(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    // Messages longer than u32::MAX bytes cannot reach here (they would not fit a frame), but
    // saturate rather than wrap so the function stays total.
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut sum = add_words(0, &source.octets());
    sum = add_words(sum, &destination.octets());
    sum = add_words(sum, &length.to_be_bytes());
    sum = add_words(sum, &[0, 0, 0, NEXT_HEADER_ICMPV6]);
    sum = add_words(sum, message);
    !fold(sum)
}

/// Adds big-endian 16-bit words to a running sum; an odd last byte is padded with zero.
fn add_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds carries back in: one's complement addition.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_1071_example_sums_fold_with_carries() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 after folding.
        assert_eq!(
            fold(add_words(
                0,
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
            )),
            0xddf2
        );
    }

    #[test]
    fn odd_lengths_pad_with_a_zero_byte() {
        assert_eq!(add_words(0, &[0x12]), 0x1200);
        assert_eq!(add_words(0, &[0x00, 0x01, 0x12]), 0x1201);
    }

    #[test]
    fn a_filled_in_checksum_verifies_to_zero() {
        let source: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let destination: Ipv6Addr = "ff02::1".parse().unwrap();
        let mut message = vec![136, 0, 0, 0, 0x20, 0, 0, 0, 1, 2, 3, 4, 5];
        let checksum = icmpv6(source, destination, &message);
        message[2..4].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(icmpv6(source, destination, &message), 0);
        message[12] ^= 1;
        assert_ne!(icmpv6(source, destination, &message), 0);
    }
}
