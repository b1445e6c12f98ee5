//! The classic BPF program attached to each packet socket, so the kernel hands the speaker only
//! ARP and ICMPv6 Neighbor Solicitations/Advertisements instead of every frame on the link.
//!
//! It is deliberately loose (it does not check hop limit, checksum or options): the parser does
//! that. The property that matters, tested below, is that it passes every frame the parser
//! accepts. It reads the ICMPv6 type at a fixed offset, so like the parser it passes only
//! messages with no IPv6 extension headers.

/// One instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jump_true: u8,
    pub jump_false: u8,
    pub k: u32,
}

const LOAD_HALF_ABSOLUTE: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LOAD_BYTE_ABSOLUTE: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K

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
                JUMP_IF_EQUAL => {
                    let jump = if accumulator == instruction.k {
                        instruction.jump_true
                    } else {
                        instruction.jump_false
                    };
                    pc += usize::from(jump);
                }
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
}
