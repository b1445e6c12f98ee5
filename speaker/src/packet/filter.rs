//! The classic BPF program attached to each packet socket, so the kernel hands the speaker only
//! ARP and ICMPv6 Neighbor Solicitations/Advertisements instead of every frame on the link.
//!
//! It is deliberately loose (it does not check hop limit, checksum or options): the parser does
//! that. The property that matters, tested below, is that it passes every frame the parser
//! accepts. It reads the ICMPv6 type at a fixed offset, so like the parser it passes only
//! messages with no IPv6 extension headers.
//!
//! ARP sockets get a narrower program, [`arp_for_addresses`]: only ARP whose sender or target
//! address this node owns. Every node on the LAN receives every broadcast ARP request; without
//! it each speaker's reader thread would wake for every request on the link, and on a busy
//! segment those wake-ups, not the answers, would set the reply latency.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// One instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jump_true: u8,
    pub jump_false: u8,
    pub k: u32,
}

const LOAD_WORD_ABSOLUTE: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LOAD_HALF_ABSOLUTE: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LOAD_BYTE_ABSOLUTE: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const JUMP_ALWAYS: u16 = 0x05; // BPF_JMP | BPF_JA
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JUMP_IF_GREATER_OR_EQUAL: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K

/// The longest program the kernel attaches to a socket (BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// Where an ARP packet's sender and target protocol addresses are in an Ethernet frame.
const ARP_SENDER_IP_OFFSET: u32 = 14 + 14;
const ARP_TARGET_IP_OFFSET: u32 = 14 + 24;

/// Addresses compared one after another at the bottom of the search tree: more makes the tree
/// shallower and the program shorter, fewer makes a lookup shorter.
const LEAF_LEN: usize = 16;

/// Bytes of an accepted frame passed up: more than any frame on a link with a 9000-byte MTU.
const ACCEPT_LENGTH: u32 = 0x4_0000;

const fn op(code: u16, jump_true: u8, jump_false: u8, k: u32) -> BpfInstruction {
    BpfInstruction {
        code,
        jump_true,
        jump_false,
        k,
    }
}

/// Accepts ARP, and IPv6 whose next header is ICMPv6 with type 135 or 136. Jumps are relative
/// to the next instruction.
pub const ARP_AND_NEIGHBOR_DISCOVERY: [BpfInstruction; 10] = [
    /* 0 */ op(LOAD_HALF_ABSOLUTE, 0, 0, 12), // ethertype
    /* 1 */ op(JUMP_IF_EQUAL, 6, 0, 0x0806), // ARP: accept
    /* 2 */ op(JUMP_IF_EQUAL, 0, 6, 0x86dd), // not IPv6: reject
    /* 3 */ op(LOAD_BYTE_ABSOLUTE, 0, 0, 14 + 6), // IPv6 next header
    /* 4 */ op(JUMP_IF_EQUAL, 0, 4, 58), // not ICMPv6: reject
    /* 5 */ op(LOAD_BYTE_ABSOLUTE, 0, 0, 14 + 40), // ICMPv6 type
    /* 6 */ op(JUMP_IF_EQUAL, 1, 0, 135), // solicitation: accept
    /* 7 */ op(JUMP_IF_EQUAL, 0, 1, 136), // advertisement: accept, else reject
    /* 8 */ op(RETURN, 0, 0, ACCEPT_LENGTH),
    /* 9 */ op(RETURN, 0, 0, 0),
];

/// More addresses than an [`arp_for_addresses`] program can hold within [`MAX_INSTRUCTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{addresses} IPv4 addresses need a {instructions}-instruction filter, over the kernel's {MAX_INSTRUCTIONS}"
)]
pub struct TooManyAddresses {
    pub addresses: usize,
    pub instructions: usize,
}

/// Accepts only ARP frames whose sender or target protocol address is in `addresses`: the
/// requests this node answers and the claims that conflict with its own. The addresses are
/// looked up by a binary search down to [`LEAF_LEN`] compares, so a lookup stays a few dozen
/// instructions with thousands of addresses; about 2.5 instructions per address caps them at
/// some 1,600 (beyond that the caller passes all ARP).
pub fn arp_for_addresses(
    addresses: &BTreeSet<Ipv4Addr>,
) -> Result<Vec<BpfInstruction>, TooManyAddresses> {
    let sorted: Vec<u32> = addresses.iter().map(|&ip| u32::from(ip)).collect();
    let mut program = vec![
        op(LOAD_HALF_ABSOLUTE, 0, 0, 12),
        op(JUMP_IF_EQUAL, 1, 0, u32::from(super::ETHERTYPE_ARP)),
        op(RETURN, 0, 0, 0),
    ];
    for offset in [ARP_TARGET_IP_OFFSET, ARP_SENDER_IP_OFFSET] {
        // Loads are in network byte order, as `u32::from(Ipv4Addr)` is.
        program.push(op(LOAD_WORD_ABSOLUTE, 0, 0, offset));
        let start = program.len();
        emit_search(&sorted, &mut program);
        let end = program.len();
        // A miss anywhere in the tree falls through to the next address to look up.
        for (at, instruction) in program.iter_mut().enumerate().skip(start) {
            if instruction.code == JUMP_ALWAYS && instruction.k == MISS {
                instruction.k = jump_to(at, end);
            }
        }
    }
    program.push(op(RETURN, 0, 0, 0));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(TooManyAddresses {
            addresses: addresses.len(),
            instructions: program.len(),
        });
    }
    Ok(program)
}

/// A placeholder jump target, resolved once the end of the search is known. No real jump is
/// this long: programs are shorter than [`MAX_INSTRUCTIONS`].
const MISS: u32 = u32::MAX;

/// The `k` of a jump at `from` that lands on `to`: jumps count from the next instruction.
fn jump_to(from: usize, to: usize) -> u32 {
    u32::try_from(to - from - 1).unwrap_or(MISS)
}

/// Code that returns [`ACCEPT_LENGTH`] if the accumulator is one of `sorted` and otherwise
/// jumps to [`MISS`]. Conditional jumps reach at most 255 instructions, so only leaves use
/// them for more than skipping one instruction; the tree's branches jump unconditionally.
fn emit_search(sorted: &[u32], program: &mut Vec<BpfInstruction>) {
    if sorted.is_empty() {
        program.push(op(JUMP_ALWAYS, 0, 0, MISS));
    } else if sorted.len() <= LEAF_LEN {
        for (index, &value) in sorted.iter().enumerate() {
            // Past the rest of the compares and the miss jump, onto the accept.
            let to_accept = u8::try_from(sorted.len() - index).unwrap_or(u8::MAX);
            program.push(op(JUMP_IF_EQUAL, to_accept, 0, value));
        }
        program.push(op(JUMP_ALWAYS, 0, 0, MISS));
        program.push(op(RETURN, 0, 0, ACCEPT_LENGTH));
    } else {
        // Split on a multiple of the leaf length, so every leaf but the last is full.
        let leaves = sorted.len().div_ceil(LEAF_LEN);
        let (lower, upper) = sorted.split_at(leaves / 2 * LEAF_LEN);
        // At least the upper half's first: search the upper half, which follows; else jump
        // over it to the lower half.
        program.push(op(JUMP_IF_GREATER_OR_EQUAL, 1, 0, upper[0]));
        let jump_to_lower = program.len();
        program.push(op(JUMP_ALWAYS, 0, 0, 0));
        emit_search(upper, program);
        program[jump_to_lower].k = jump_to(jump_to_lower, program.len());
        emit_search(lower, program);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::packet::{MacAddr, arp, ndp, parse_frame};

    /// What the kernel does with the program: the number of bytes to pass (0 drops). A load
    /// beyond the frame drops it, as in the kernel.
    fn run(program: &[BpfInstruction], frame: &[u8]) -> u32 {
        let mut accumulator: u32 = 0;
        let mut pc = 0usize;
        loop {
            let Some(instruction) = program.get(pc) else {
                panic!("ran off the end of the program");
            };
            let at = instruction.k as usize;
            match instruction.code {
                LOAD_WORD_ABSOLUTE => match frame.get(at..at + 4) {
                    Some(bytes) => {
                        accumulator = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
                    }
                    None => return 0,
                },
                LOAD_HALF_ABSOLUTE => match frame.get(at..at + 2) {
                    Some(bytes) => {
                        accumulator = u32::from(u16::from_be_bytes([bytes[0], bytes[1]]))
                    }
                    None => return 0,
                },
                LOAD_BYTE_ABSOLUTE => match frame.get(at) {
                    Some(byte) => accumulator = u32::from(*byte),
                    None => return 0,
                },
                JUMP_IF_EQUAL | JUMP_IF_GREATER_OR_EQUAL => {
                    let taken = if instruction.code == JUMP_IF_EQUAL {
                        accumulator == instruction.k
                    } else {
                        accumulator >= instruction.k
                    };
                    let jump = if taken {
                        instruction.jump_true
                    } else {
                        instruction.jump_false
                    };
                    pc += usize::from(jump);
                }
                JUMP_ALWAYS => pc += at,
                RETURN => return instruction.k,
                other => panic!("unknown opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    #[test]
    fn passes_arp_and_neighbor_discovery() {
        let v4 = "198.51.100.10".parse().unwrap();
        let v6 = "2001:db8::10".parse().unwrap();
        for frame in [
            arp::gratuitous_request(v4, MAC),
            arp::gratuitous_reply(v4, MAC),
            ndp::unsolicited_advertisement(v6, MAC),
        ] {
            assert_eq!(run(&ARP_AND_NEIGHBOR_DISCOVERY, &frame), ACCEPT_LENGTH);
        }
        let mut solicitation = ndp::unsolicited_advertisement(v6, MAC);
        solicitation[14 + 40] = 135;
        assert_eq!(
            run(&ARP_AND_NEIGHBOR_DISCOVERY, &solicitation),
            ACCEPT_LENGTH
        );
    }

    #[test]
    fn drops_other_traffic() {
        let v6 = "2001:db8::10".parse().unwrap();
        let na = ndp::unsolicited_advertisement(v6, MAC);
        let mut echo = na.clone();
        echo[14 + 40] = 128;
        let mut udp = na.clone();
        udp[14 + 6] = 17;
        let mut ipv4 = na.clone();
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        for frame in [echo, udp, ipv4, na[..14 + 40].to_vec(), vec![], vec![0x08]] {
            assert_eq!(run(&ARP_AND_NEIGHBOR_DISCOVERY, &frame), 0);
        }
    }

    proptest! {
        #[test]
        fn passes_every_frame_the_parser_accepts(
            ethertype in prop_oneof![Just(0x0806u16), Just(0x86dd), any::<u16>()],
            body in prop::collection::vec(any::<u8>(), 0..120),
            seed_frame in 0usize..2,
            corrupt_at in any::<usize>(),
            corrupt_to in any::<u8>(),
        ) {
            let v6 = "2001:db8::10".parse().unwrap();
            let mut frames = vec![[&MAC.octets()[..], &[0x02, 0, 0, 0, 0, 2], &ethertype.to_be_bytes(), &body].concat()];
            let mut seeded = if seed_frame == 0 {
                ndp::unsolicited_advertisement(v6, MAC)
            } else {
                arp::gratuitous_request("198.51.100.10".parse().unwrap(), MAC)
            };
            let at = corrupt_at % seeded.len();
            seeded[at] = corrupt_to;
            frames.push(seeded);
            for frame in frames {
                if parse_frame(&frame).is_ok() {
                    prop_assert_eq!(run(&ARP_AND_NEIGHBOR_DISCOVERY, &frame), ACCEPT_LENGTH);
                }
            }
        }
    }
    fn arp_frame(sender: Ipv4Addr, target: Ipv4Addr, operation: u16) -> Vec<u8> {
        let mut frame = arp::gratuitous_request(sender, MAC);
        frame[20..22].copy_from_slice(&operation.to_be_bytes());
        frame[38..42].copy_from_slice(&target.octets());
        frame
    }

    fn addresses(last_octets: impl IntoIterator<Item = u8>) -> BTreeSet<Ipv4Addr> {
        last_octets
            .into_iter()
            .map(|last| Ipv4Addr::new(198, 51, 100, last))
            .collect()
    }

    #[test]
    fn arp_filter_passes_owned_targets_and_senders_only() {
        let owned = addresses([10, 11, 200]);
        let program = arp_for_addresses(&owned).unwrap();
        let ip = |last| Ipv4Addr::new(198, 51, 100, last);
        for (sender, target, passes) in [
            (ip(20), ip(10), true),
            (ip(20), ip(200), true),
            (ip(11), ip(20), true),
            (Ipv4Addr::UNSPECIFIED, ip(11), true),
            (ip(20), ip(12), false),
            (ip(20), ip(9), false),
            (Ipv4Addr::UNSPECIFIED, ip(201), false),
        ] {
            for operation in [1, 2] {
                let expected = if passes { ACCEPT_LENGTH } else { 0 };
                assert_eq!(
                    run(&program, &arp_frame(sender, target, operation)),
                    expected,
                    "{sender} asks for {target}"
                );
            }
        }
        let v6 = "2001:db8::10".parse().unwrap();
        assert_eq!(run(&program, &ndp::unsolicited_advertisement(v6, MAC)), 0);
        assert_eq!(run(&program, &arp_frame(ip(20), ip(10), 1)[..40]), 0);
    }

    #[test]
    fn arp_filter_without_addresses_passes_nothing() {
        let program = arp_for_addresses(&BTreeSet::new()).unwrap();
        let ip = Ipv4Addr::new(198, 51, 100, 10);
        assert_eq!(run(&program, &arp::gratuitous_request(ip, MAC)), 0);
    }

    #[test]
    fn arp_filter_holds_1600_addresses_and_refuses_what_does_not_fit() {
        let many = |count: u32| -> BTreeSet<Ipv4Addr> {
            (0..count)
                .map(|index| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 96, 0)) + index * 3))
                .collect()
        };
        let program = arp_for_addresses(&many(1600)).unwrap();
        assert!(program.len() <= MAX_INSTRUCTIONS);
        let error = arp_for_addresses(&many(2000)).unwrap_err();
        assert_eq!(error.addresses, 2000);
        assert!(error.instructions > MAX_INSTRUCTIONS);
    }

    proptest! {
        #[test]
        fn arp_filter_passes_exactly_the_owned_addresses(
            owned in prop::collection::btree_set(any::<u32>(), 0..400),
            probes in prop::collection::vec((any::<u32>(), any::<u32>(), any::<bool>(), any::<bool>()), 1..40),
        ) {
            let owned: BTreeSet<Ipv4Addr> = owned.into_iter().map(Ipv4Addr::from).collect();
            let program = arp_for_addresses(&owned).unwrap();
            let listed: Vec<Ipv4Addr> = owned.iter().copied().collect();
            for (sender, target, sender_owned, target_owned) in probes {
                // Half the probes use owned addresses, so hits are as likely as misses.
                let pick = |seed: u32, from_owned: bool| match listed.get(seed as usize % listed.len().max(1)) {
                    Some(&ip) if from_owned => ip,
                    _ => Ipv4Addr::from(seed),
                };
                let (sender, target) = (pick(sender, sender_owned), pick(target, target_owned));
                let passes = owned.contains(&sender) || owned.contains(&target);
                let expected = if passes { ACCEPT_LENGTH } else { 0 };
                prop_assert_eq!(run(&program, &arp_frame(sender, target, 1)), expected);
            }
        }
    }
}
