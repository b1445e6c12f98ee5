//! The in-kernel ARP responder: an eBPF program on each announcing interface's tc ingress hook
//! (tcx) that turns a plain ARP request for an IP this node answers there into the reply, in
//! place, and sends it back out of the same interface, without waking the speaker.
//!
//! The reply is the one [`super::arp::reply`] builds: to the requester's hardware address, from
//! the interface's MAC. The program answers only the plain case and hands every other frame on
//! (to the speaker's packet socket and the kernel): VLAN-tagged frames, requests not addressed
//! to broadcast or to us, gratuitous requests, senders that are not unicast or are ourselves,
//! and requests whose sender address is one we own, which the speaker must see to report the
//! conflict. Which IPs are answered where is the map [`AnswerKey`] → [`AnswerValue`]; a key with
//! interface index 0 only marks an IP as owned on some interface.

use std::net::Ipv4Addr;

use super::MacAddr;
use super::ebpf::{
    Assembler, AssemblyError, Condition, FRAME, Instruction, Label, Operand, R0, R1, R2, R3, R4,
    R5, R6, R7, R8, R9, Size, Width,
};

/// tcx verdict: let the next program, then the stack, have the frame.
const TCX_NEXT: i32 = -1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_KTIME_GET_NS: i32 = 5;
const HELPER_REDIRECT: i32 = 23;

/// Offsets in `struct __sk_buff`.
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Offsets in the frame (Ethernet header, then the 28-byte ARP packet).
const ETH_DESTINATION: i16 = 0;
const ETH_SOURCE: i16 = 6;
const ETH_TYPE: i16 = 12;
const ARP_FIXED: i16 = 14;
const ARP_OPERATION: i16 = 20;
const ARP_SENDER_MAC: i16 = 22;
const ARP_SENDER_IP: i16 = 28;
const ARP_TARGET_MAC: i16 = 32;
const ARP_TARGET_IP: i16 = 38;
const ARP_FRAME_LEN: i32 = 42;

/// Bytes 12..22 of a request frame, as little-endian loads see them: EtherType 0x0806, then
/// hardware Ethernet, protocol IPv4, lengths 6 and 4, operation request.
const ETHERTYPE_ARP_LOADED: i32 = 0x0608;
const ARP_FIXED_FIRST_LOADED: i32 = 0x0008_0100;
const ARP_FIXED_SECOND_LOADED: i32 = 0x0100_0406;
/// Operation 2 (reply), big-endian, as a little-endian half-word store writes it.
const OPERATION_REPLY_STORED: i32 = 0x0200;

/// A key of the answer map: where the request arrived and what it asks for, in the byte order
/// the program builds it (index native-endian, address as on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnswerKey {
    /// Interface index; 0 marks an owned address rather than where it is answered.
    pub ifindex: u32,
    pub ip: Ipv4Addr,
}

impl AnswerKey {
    pub const LEN: usize = 8;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut bytes = [0; Self::LEN];
        bytes[..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        bytes[4..].copy_from_slice(&self.ip.octets());
        bytes
    }
}

/// A value of the answer map: the MAC the interface answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnswerValue {
    pub mac: MacAddr,
}

impl AnswerValue {
    pub const LEN: usize = 8;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut bytes = [0; Self::LEN];
        bytes[..6].copy_from_slice(&self.mac.octets());
        bytes
    }
}

/// The maps the program reads, by file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponderMaps {
    /// Hash map [`AnswerKey`] → [`AnswerValue`].
    pub answers: i32,
    /// One-entry array: the CLOCK_MONOTONIC nanosecond from which nothing is answered (the
    /// speaker's fence), so a speaker that stops publishing goes silent on time here too.
    pub fence: i32,
    /// One-entry per-CPU array: replies sent.
    pub replies: i32,
}

/// The responder program.
pub fn program(maps: ResponderMaps) -> Result<Vec<Instruction>, AssemblyError> {
    let mut asm = Assembler::new();
    let pass = asm.label();
    let addressed_to_us = asm.label();
    let ethernet_destination_ok = asm.label();
    let send = asm.label();

    asm.mov(R6, R1);
    // A tagged frame belongs to a VLAN interface, which answers for itself.
    asm.load(Size::Word, R0, R6, SKB_VLAN_PRESENT);
    asm.jump_if(
        Width::Bits64,
        R0,
        Condition::NotEqual,
        Operand::Immediate(0),
        pass,
    );
    asm.load(Size::Word, R7, R6, SKB_IFINDEX);
    load_frame(&mut asm, pass);
    for (offset, size, expected) in [
        (ETH_TYPE, Size::Half, ETHERTYPE_ARP_LOADED),
        (ARP_FIXED, Size::Word, ARP_FIXED_FIRST_LOADED),
        (ARP_FIXED + 4, Size::Word, ARP_FIXED_SECOND_LOADED),
    ] {
        asm.load(size, R0, R2, offset);
        asm.jump_if(
            Width::Bits32,
            R0,
            Condition::NotEqual,
            Operand::Immediate(expected),
            pass,
        );
    }
    asm.load(Size::Word, R8, R2, ARP_SENDER_IP);
    asm.load(Size::Word, R0, R2, ARP_TARGET_IP);
    // Sender and target the same: a gratuitous request, an announcement, not a question.
    asm.jump_if(
        Width::Bits32,
        R0,
        Condition::Equal,
        Operand::Register(R8),
        pass,
    );
    // Answered on this interface?
    asm.store(Size::Word, FRAME, -8, R7);
    asm.store(Size::Word, FRAME, -4, R0);
    lookup_or(&mut asm, maps.answers, pass);
    asm.mov(R9, R0);
    // Past the fence (or never set: 0), the speaker's own reader decides, and says nothing.
    lookup_slot_zero_or(&mut asm, maps.fence, pass);
    asm.load(Size::Double, R7, R0, 0);
    asm.call(HELPER_KTIME_GET_NS);
    asm.jump_if(
        Width::Bits64,
        R0,
        Condition::GreaterOrEqual,
        Operand::Register(R7),
        pass,
    );
    // Does the sender claim an address we own? The speaker reports that conflict.
    asm.store_immediate(Size::Word, FRAME, -8, 0);
    asm.store(Size::Word, FRAME, -4, R8);
    lookup(&mut asm, maps.answers);
    asm.jump_if(
        Width::Bits64,
        R0,
        Condition::NotEqual,
        Operand::Immediate(0),
        pass,
    );
    // Calls clobber r1–r5: the frame pointers again.
    load_frame(&mut asm, pass);
    // Our MAC: r4 its first four bytes, r5 its last two.
    asm.load(Size::Word, R4, R9, 0);
    asm.load(Size::Half, R5, R9, 4);

    // Sent to broadcast or to us (RFC 826 answers both).
    asm.load(Size::Word, R0, R2, ETH_DESTINATION);
    asm.load(Size::Half, R1, R2, ETH_DESTINATION + 4);
    asm.jump_if(
        Width::Bits32,
        R0,
        Condition::NotEqual,
        Operand::Immediate(-1),
        addressed_to_us,
    );
    asm.jump_if(
        Width::Bits32,
        R1,
        Condition::NotEqual,
        Operand::Immediate(0xffff),
        pass,
    );
    asm.jump(ethernet_destination_ok);
    asm.place(addressed_to_us);
    asm.jump_if(
        Width::Bits32,
        R0,
        Condition::NotEqual,
        Operand::Register(R4),
        pass,
    );
    asm.jump_if(
        Width::Bits32,
        R1,
        Condition::NotEqual,
        Operand::Register(R5),
        pass,
    );
    asm.place(ethernet_destination_ok);

    // Not our own frame looped back.
    load_mac_and_pass_if_ours(&mut asm, ETH_SOURCE, pass);

    // The sender's hardware address: unicast and not ours.
    asm.load(Size::Byte, R0, R2, ARP_SENDER_MAC);
    asm.and32_immediate(R0, 1);
    asm.jump_if(
        Width::Bits32,
        R0,
        Condition::NotEqual,
        Operand::Immediate(0),
        pass,
    );
    load_mac_and_pass_if_ours(&mut asm, ARP_SENDER_MAC, pass);

    // The reply, in place: r0/r1 the requester's MAC, r8 its IP, r3 the asked-for IP.
    asm.load(Size::Word, R3, R2, ARP_TARGET_IP);
    asm.store(Size::Word, R2, ETH_DESTINATION, R0);
    asm.store(Size::Half, R2, ETH_DESTINATION + 4, R1);
    asm.store(Size::Word, R2, ARP_TARGET_MAC, R0);
    asm.store(Size::Half, R2, ARP_TARGET_MAC + 4, R1);
    asm.store(Size::Word, R2, ARP_TARGET_IP, R8);
    asm.store(Size::Word, R2, ARP_SENDER_IP, R3);
    asm.store(Size::Word, R2, ETH_SOURCE, R4);
    asm.store(Size::Half, R2, ETH_SOURCE + 4, R5);
    asm.store(Size::Word, R2, ARP_SENDER_MAC, R4);
    asm.store(Size::Half, R2, ARP_SENDER_MAC + 4, R5);
    asm.store_immediate(Size::Half, R2, ARP_OPERATION, OPERATION_REPLY_STORED);

    // Count it (this CPU's slot: no atomics needed).
    lookup_slot_zero_or(&mut asm, maps.replies, send);
    asm.load(Size::Double, R1, R0, 0);
    asm.add_immediate(R1, 1);
    asm.store(Size::Double, R0, 0, R1);
    asm.place(send);
    // Out of the interface it came in on; the helper's result is the verdict.
    asm.load(Size::Word, R1, R6, SKB_IFINDEX);
    asm.mov_immediate(R2, 0);
    asm.call(HELPER_REDIRECT);
    asm.exit();

    asm.place(pass);
    asm.mov_immediate(R0, TCX_NEXT);
    asm.exit();
    asm.finish()
}

/// r2 = start of the frame, r3 = its end; to `pass` when shorter than an ARP frame.
fn load_frame(asm: &mut Assembler, pass: Label) {
    asm.load(Size::Word, R2, R6, SKB_DATA);
    asm.load(Size::Word, R3, R6, SKB_DATA_END);
    asm.mov(R4, R2);
    asm.add_immediate(R4, ARP_FRAME_LEN);
    asm.jump_if(
        Width::Bits64,
        R4,
        Condition::Greater,
        Operand::Register(R3),
        pass,
    );
}

/// r0/r1 = the MAC at `offset` in the frame (first four bytes, last two); to `pass` when it is
/// ours (r4/r5).
fn load_mac_and_pass_if_ours(asm: &mut Assembler, offset: i16, pass: Label) {
    let not_ours = asm.label();
    asm.load(Size::Word, R0, R2, offset);
    asm.load(Size::Half, R1, R2, offset + 4);
    asm.jump_if(
        Width::Bits32,
        R0,
        Condition::NotEqual,
        Operand::Register(R4),
        not_ours,
    );
    asm.jump_if(
        Width::Bits32,
        R1,
        Condition::Equal,
        Operand::Register(R5),
        pass,
    );
    asm.place(not_ours);
}

/// r0 = the value in map `fd` for the key at frame pointer - 8; to `if_null` when absent.
fn lookup_or(asm: &mut Assembler, fd: i32, if_null: Label) {
    lookup(asm, fd);
    asm.jump_if(
        Width::Bits64,
        R0,
        Condition::Equal,
        Operand::Immediate(0),
        if_null,
    );
}

/// r0 = slot 0 of the array map `fd`; to `if_null` when absent.
fn lookup_slot_zero_or(asm: &mut Assembler, fd: i32, if_null: Label) {
    asm.store_immediate(Size::Word, FRAME, -8, 0);
    lookup_or(asm, fd, if_null);
}

/// r0 = the value in map `fd` for the key at frame pointer - 8, or null.
fn lookup(asm: &mut Assembler, fd: i32) {
    asm.load_map(R1, fd);
    asm.mov(R2, FRAME);
    asm.add_immediate(R2, -8);
    asm.call(HELPER_MAP_LOOKUP_ELEM);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_assembles_within_the_kernels_limits() {
        let program = program(ResponderMaps {
            answers: 3,
            fence: 5,
            replies: 4,
        })
        .unwrap();
        assert!(program.len() < 4096);
        // Both maps are referenced, each lookup by a two-slot load.
        let map_loads: Vec<i32> = program
            .iter()
            .filter(|i| i.code == 0x18)
            .map(|i| i.immediate)
            .collect();
        assert_eq!(map_loads, vec![3, 5, 3, 4]);
        // Every path ends in an exit.
        assert_eq!(program.last().map(|i| i.code), Some(0x95));
    }

    #[test]
    fn keys_and_values_have_the_layout_the_program_reads() {
        let key = AnswerKey {
            ifindex: 7,
            ip: Ipv4Addr::new(198, 51, 100, 10),
        };
        let bytes = key.to_bytes();
        assert_eq!(&bytes[..4], &7u32.to_ne_bytes());
        assert_eq!(&bytes[4..], &[198, 51, 100, 10]);
        let value = AnswerValue {
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
        };
        assert_eq!(value.to_bytes(), [2, 0, 0, 0, 0, 9, 0, 0]);
    }

    #[test]
    fn the_loaded_constants_are_the_request_header_bytes() {
        let header: [u8; 10] = [0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1];
        assert_eq!(
            i32::from(u16::from_le_bytes([header[0], header[1]])),
            ETHERTYPE_ARP_LOADED
        );
        assert_eq!(
            i32::from_le_bytes([header[2], header[3], header[4], header[5]]),
            ARP_FIXED_FIRST_LOADED
        );
        assert_eq!(
            i32::from_le_bytes([header[6], header[7], header[8], header[9]]),
            ARP_FIXED_SECOND_LOADED
        );
        assert_eq!(
            i32::from(u16::from_le_bytes([0, 2])),
            OPERATION_REPLY_STORED
        );
    }
}
