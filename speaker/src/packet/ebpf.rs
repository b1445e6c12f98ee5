//! Extended BPF instructions and a small assembler with labels, for the in-kernel ARP responder
//! ([`super::arp_responder`]). Without I/O: it produces the bytes `bpf(BPF_PROG_LOAD)` takes.
//!
//! Hand-assembled rather than compiled from C so that building the speaker needs no clang or
//! bpf-linker; the program is short and its every branch is exercised by the kernel tests.

/// A register: r0 holds return values, r1–r5 arguments (clobbered by calls), r6–r9 survive
/// calls, r10 is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register(u8);

pub const R0: Register = Register(0);
pub const R1: Register = Register(1);
pub const R2: Register = Register(2);
pub const R3: Register = Register(3);
pub const R4: Register = Register(4);
pub const R5: Register = Register(5);
pub const R6: Register = Register(6);
pub const R7: Register = Register(7);
pub const R8: Register = Register(8);
pub const R9: Register = Register(9);
pub const FRAME: Register = Register(10);

/// Access sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Byte,
    Half,
    Word,
    Double,
}

impl Size {
    fn code(self) -> u8 {
        match self {
            Size::Word => 0x00,
            Size::Half => 0x08,
            Size::Byte => 0x10,
            Size::Double => 0x18,
        }
    }
}

/// Conditions of conditional jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Equal,
    NotEqual,
    Greater,
    GreaterOrEqual,
}

impl Condition {
    fn code(self) -> u8 {
        match self {
            Condition::Equal => 0x10,
            Condition::Greater => 0x20,
            Condition::GreaterOrEqual => 0x30,
            Condition::NotEqual => 0x50,
        }
    }
}

/// What a jump compares its register with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Immediate(i32),
    Register(Register),
}

/// Whether a comparison uses the whole 64-bit registers or their low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Bits64,
    Bits32,
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SOURCE_REGISTER: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_AND: u8 = 0x50;
const OP_MOV: u8 = 0xb0;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load whose value is a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// One 8-byte instruction, as `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub offset: i16,
    pub immediate: i32,
}

impl Instruction {
    /// The kernel's layout: code, registers (dst low nibble, src high), offset, immediate,
    /// little-endian as on every architecture the speaker is built for.
    pub fn to_bytes(self) -> [u8; 8] {
        let [o0, o1] = self.offset.to_le_bytes();
        let [i0, i1, i2, i3] = self.immediate.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | (self.src << 4),
            o0,
            o1,
            i0,
            i1,
            i2,
            i3,
        ]
    }
}

/// A jump target, placed once with [`Assembler::place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

#[derive(Debug)]
enum Item {
    Fixed(Instruction),
    Jump {
        code: u8,
        dst: u8,
        src: u8,
        immediate: i32,
        to: Label,
    },
}

/// Why a program could not be assembled: a mistake in the program's source, caught by tests.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("label {0} is used but never placed")]
    UnplacedLabel(usize),
    #[error("a jump to label {0} goes backwards or too far")]
    JumpOutOfRange(usize),
}

/// Builds a program instruction by instruction; jumps name labels, resolved by
/// [`Assembler::finish`]. Only forward jumps: the verifier rejects loops anyway.
#[derive(Debug, Default)]
pub struct Assembler {
    items: Vec<Item>,
    labels: Vec<Option<usize>>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// The next instruction is where `label` jumps to.
    pub fn place(&mut self, label: Label) {
        if let Some(slot) = self.labels.get_mut(label.0) {
            *slot = Some(self.items.len());
        }
    }

    fn push(&mut self, code: u8, dst: Register, src: Register, offset: i16, immediate: i32) {
        self.items.push(Item::Fixed(Instruction {
            code,
            dst: dst.0,
            src: src.0,
            offset,
            immediate,
        }));
    }

    /// dst = src (64 bits).
    pub fn mov(&mut self, dst: Register, src: Register) {
        self.push(CLASS_ALU64 | OP_MOV | SOURCE_REGISTER, dst, src, 0, 0);
    }

    /// dst = immediate, sign-extended to 64 bits.
    pub fn mov_immediate(&mut self, dst: Register, immediate: i32) {
        self.push(CLASS_ALU64 | OP_MOV, dst, R0, 0, immediate);
    }

    /// dst += immediate (64 bits).
    pub fn add_immediate(&mut self, dst: Register, immediate: i32) {
        self.push(CLASS_ALU64 | OP_ADD, dst, R0, 0, immediate);
    }

    /// dst = (u32) dst & immediate.
    pub fn and32_immediate(&mut self, dst: Register, immediate: i32) {
        self.push(CLASS_ALU | OP_AND, dst, R0, 0, immediate);
    }

    /// dst = *(size *)(src + offset), zero-extended.
    pub fn load(&mut self, size: Size, dst: Register, src: Register, offset: i16) {
        self.push(CLASS_LDX | MODE_MEM | size.code(), dst, src, offset, 0);
    }

    /// *(size *)(dst + offset) = src.
    pub fn store(&mut self, size: Size, dst: Register, offset: i16, src: Register) {
        self.push(CLASS_STX | MODE_MEM | size.code(), dst, src, offset, 0);
    }

    /// *(size *)(dst + offset) = immediate.
    pub fn store_immediate(&mut self, size: Size, dst: Register, offset: i16, immediate: i32) {
        self.push(
            CLASS_ST | MODE_MEM | size.code(),
            dst,
            R0,
            offset,
            immediate,
        );
    }

    /// dst = the map whose file descriptor is `fd` (a two-slot instruction).
    pub fn load_map(&mut self, dst: Register, fd: i32) {
        self.items.push(Item::Fixed(Instruction {
            code: CLASS_LD | MODE_IMM | Size::Double.code(),
            dst: dst.0,
            src: PSEUDO_MAP_FD,
            offset: 0,
            immediate: fd,
        }));
        self.items.push(Item::Fixed(Instruction {
            code: 0,
            dst: 0,
            src: 0,
            offset: 0,
            immediate: 0,
        }));
    }

    /// Calls kernel helper number `helper`; arguments in r1–r5, result in r0.
    pub fn call(&mut self, helper: i32) {
        self.push(CLASS_JMP | OP_CALL, R0, R0, 0, helper);
    }

    pub fn exit(&mut self) {
        self.push(CLASS_JMP | OP_EXIT, R0, R0, 0, 0);
    }

    pub fn jump(&mut self, to: Label) {
        self.items.push(Item::Jump {
            code: CLASS_JMP | OP_JA,
            dst: 0,
            src: 0,
            immediate: 0,
            to,
        });
    }

    /// Jumps to `to` when `register condition operand` holds.
    pub fn jump_if(
        &mut self,
        width: Width,
        register: Register,
        condition: Condition,
        operand: Operand,
        to: Label,
    ) {
        let class = match width {
            Width::Bits64 => CLASS_JMP,
            Width::Bits32 => CLASS_JMP32,
        };
        let (source, src, immediate) = match operand {
            Operand::Immediate(value) => (0, 0, value),
            Operand::Register(other) => (SOURCE_REGISTER, other.0, 0),
        };
        self.items.push(Item::Jump {
            code: class | condition.code() | source,
            dst: register.0,
            src,
            immediate,
            to,
        });
    }

    /// The instructions with every jump resolved.
    pub fn finish(self) -> Result<Vec<Instruction>, AssemblyError> {
        self.items
            .iter()
            .enumerate()
            .map(|(index, item)| match *item {
                Item::Fixed(instruction) => Ok(instruction),
                Item::Jump {
                    code,
                    dst,
                    src,
                    immediate,
                    to,
                } => {
                    let target = self
                        .labels
                        .get(to.0)
                        .copied()
                        .flatten()
                        .ok_or(AssemblyError::UnplacedLabel(to.0))?;
                    let offset = target
                        .checked_sub(index + 1)
                        .and_then(|distance| i16::try_from(distance).ok())
                        .ok_or(AssemblyError::JumpOutOfRange(to.0))?;
                    Ok(Instruction {
                        code,
                        dst,
                        src,
                        offset,
                        immediate,
                    })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_have_the_kernels_layout() {
        let mut asm = Assembler::new();
        asm.load(Size::Word, R2, R6, 76);
        asm.store_immediate(Size::Half, R2, 20, 0x0200);
        asm.mov_immediate(R0, -1);
        asm.exit();
        let bytes: Vec<[u8; 8]> = asm
            .finish()
            .unwrap()
            .into_iter()
            .map(Instruction::to_bytes)
            .collect();
        // ldxw r2, [r6+76]
        assert_eq!(bytes[0], [0x61, 0x62, 76, 0, 0, 0, 0, 0]);
        // sth [r2+20], 0x200
        assert_eq!(bytes[1], [0x6a, 0x02, 20, 0, 0x00, 0x02, 0, 0]);
        // mov64 r0, -1
        assert_eq!(bytes[2], [0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(bytes[3], [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn jumps_count_from_the_next_instruction_and_map_loads_take_two_slots() {
        let mut asm = Assembler::new();
        let end = asm.label();
        asm.jump_if(
            Width::Bits32,
            R0,
            Condition::NotEqual,
            Operand::Register(R4),
            end,
        );
        asm.load_map(R1, 7);
        asm.jump(end);
        asm.place(end);
        asm.exit();
        let program = asm.finish().unwrap();
        assert_eq!(program.len(), 5);
        // jne32 r0, r4, +3 (over the two-slot load and the jump)
        assert_eq!(program[0].to_bytes(), [0x5e, 0x40, 3, 0, 0, 0, 0, 0]);
        assert_eq!(program[1].to_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(program[2].to_bytes(), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(program[3].to_bytes(), [0x05, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn unplaced_labels_and_backward_jumps_are_errors() {
        let mut asm = Assembler::new();
        let nowhere = asm.label();
        asm.jump(nowhere);
        assert_eq!(asm.finish(), Err(AssemblyError::UnplacedLabel(0)));

        let mut asm = Assembler::new();
        let back = asm.label();
        asm.place(back);
        asm.exit();
        asm.jump(back);
        assert_eq!(asm.finish(), Err(AssemblyError::JumpOutOfRange(0)));
    }
}
