//! The BFD Control packet (RFC 5880 §4.1): parsed with the reception checks of §6.8.6 that need
//! no session state, and built.
//!
//! Authentication (the A bit, §4.2–§4.4) is not supported: such packets are refused with
//! [`ParseError::AuthenticationUnsupported`], and built packets never carry it. The checks that
//! need the session (Your Discriminator naming this session) are in [`super::session`].

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// The protocol version this module speaks (§4.1).
pub const VERSION: u8 = 1;
/// The mandatory section of a Control packet, which is all this implementation sends.
pub const CONTROL_PACKET_LEN: usize = 24;
/// The shortest Length a packet with the A bit may declare: the mandatory section and the
/// two-byte Auth Type and Auth Len of the authentication section (§6.8.6).
pub const AUTHENTICATED_MIN_LEN: usize = 26;

const FLAG_POLL: u8 = 0x20;
const FLAG_FINAL: u8 = 0x10;
const FLAG_CONTROL_PLANE_INDEPENDENT: u8 = 0x08;
const FLAG_AUTHENTICATION: u8 = 0x04;
const FLAG_DEMAND: u8 = 0x02;
const FLAG_MULTIPOINT: u8 = 0x01;

/// A session state as Control packets carry it (§4.1, "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    AdminDown,
    Down,
    Init,
    Up,
}

impl SessionState {
    /// The two-bit code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }

    /// The state of a two-bit code; only the low two bits are read.
    pub const fn from_code(code: u8) -> Self {
        match code & 0b11 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AdminDown => "AdminDown",
            Self::Down => "Down",
            Self::Init => "Init",
            Self::Up => "Up",
        })
    }
}

/// The local system's reason for the last change in session state (§4.1, "Diag"): five bits,
/// 0 to 8 assigned, 9 to 31 reserved. Reserved codes a peer sends are kept as they are, not
/// refused: §6.8.6 does not discard them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Diagnostic(u8);

impl Diagnostic {
    pub const NONE: Self = Self(0);
    pub const CONTROL_DETECTION_TIME_EXPIRED: Self = Self(1);
    pub const ECHO_FUNCTION_FAILED: Self = Self(2);
    pub const NEIGHBOR_SIGNALED_SESSION_DOWN: Self = Self(3);
    pub const FORWARDING_PLANE_RESET: Self = Self(4);
    pub const PATH_DOWN: Self = Self(5);
    pub const CONCATENATED_PATH_DOWN: Self = Self(6);
    pub const ADMINISTRATIVELY_DOWN: Self = Self(7);
    pub const REVERSE_CONCATENATED_PATH_DOWN: Self = Self(8);

    /// The diagnostic of a code; `None` past the five bits the field has.
    pub const fn new(code: u8) -> Option<Self> {
        if code <= 0x1f { Some(Self(code)) } else { None }
    }

    pub const fn code(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "No Diagnostic",
            1 => "Control Detection Time Expired",
            2 => "Echo Function Failed",
            3 => "Neighbor Signaled Session Down",
            4 => "Forwarding Plane Reset",
            5 => "Path Down",
            6 => "Concatenated Path Down",
            7 => "Administratively Down",
            8 => "Reverse Concatenated Path Down",
            code => return write!(f, "reserved diagnostic {code}"),
        };
        f.write_str(name)
    }
}

/// A BFD Control packet without authentication. The Multipoint bit is always clear (§6.8.6
/// discards packets with it) and so not represented; nor is the Length, which is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: SessionState,
    /// The Poll (P) bit: the sender asks for a packet with the Final bit in answer (§6.5).
    pub poll: bool,
    /// The Final (F) bit: this packet answers a Poll.
    pub final_bit: bool,
    /// The C bit: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// The D bit: the sender wishes to run in Demand mode.
    pub demand: bool,
    /// Detect Mult: the sender's detection time is this many of its negotiated intervals.
    pub detect_mult: u8,
    pub my_discriminator: NonZeroU32,
    /// Zero until the sender has heard from the receiver.
    pub your_discriminator: u32,
    /// Desired Min TX Interval, in microseconds.
    pub desired_min_tx_us: u32,
    /// Required Min RX Interval, in microseconds.
    pub required_min_rx_us: u32,
    /// Required Min Echo RX Interval, in microseconds; zero: no Echo packets, please.
    pub required_min_echo_rx_us: u32,
}

impl ControlPacket {
    /// The packet on the wire: the 24-byte mandatory section, Version 1, A and M clear.
    pub fn to_bytes(&self) -> [u8; CONTROL_PACKET_LEN] {
        let mut bytes = [0u8; CONTROL_PACKET_LEN];
        bytes[0] = (VERSION << 5) | self.diagnostic.code();
        let mut flags = self.state.code() << 6;
        for (set, flag) in [
            (self.poll, FLAG_POLL),
            (self.final_bit, FLAG_FINAL),
            (
                self.control_plane_independent,
                FLAG_CONTROL_PLANE_INDEPENDENT,
            ),
            (self.demand, FLAG_DEMAND),
        ] {
            if set {
                flags |= flag;
            }
        }
        bytes[1] = flags;
        bytes[2] = self.detect_mult;
        bytes[3] = CONTROL_PACKET_LEN as u8;
        bytes[4..8].copy_from_slice(&self.my_discriminator.get().to_be_bytes());
        bytes[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        bytes[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        bytes[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        bytes[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        bytes
    }

    pub fn desired_min_tx(&self) -> Duration {
        Duration::from_micros(u64::from(self.desired_min_tx_us))
    }

    pub fn required_min_rx(&self) -> Duration {
        Duration::from_micros(u64::from(self.required_min_rx_us))
    }
}

/// Why a datagram is not a Control packet this system accepts (§6.8.6, in the order the checks
/// are made there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a {received}-byte datagram is shorter than the 24-byte BFD Control packet")]
    Truncated { received: usize },
    #[error("BFD version {0}, not 1")]
    UnsupportedVersion(u8),
    #[error("Length field {length} below the minimum of {minimum}")]
    LengthTooSmall { length: u8, minimum: usize },
    #[error("Length field {length} exceeds the {payload}-byte UDP payload")]
    LengthBeyondPayload { length: u8, payload: usize },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("the Multipoint bit is set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Your Discriminator is zero in state {state} (allowed only in Down and AdminDown)")]
    ZeroYourDiscriminator { state: SessionState },
    #[error("the Authentication Present bit is set, and authentication is not supported")]
    AuthenticationUnsupported,
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_be_bytes(word)
}

/// Parses one UDP payload as a Control packet, with every check of §6.8.6 that needs no session.
/// Bytes past the declared Length are ignored.
pub fn parse(payload: &[u8]) -> Result<ControlPacket, ParseError> {
    let Some(&first) = payload.first() else {
        return Err(ParseError::Truncated { received: 0 });
    };
    let version = first >> 5;
    if version != VERSION {
        return Err(ParseError::UnsupportedVersion(version));
    }
    if payload.len() < CONTROL_PACKET_LEN {
        return Err(ParseError::Truncated {
            received: payload.len(),
        });
    }
    let flags = payload[1];
    let authenticated = flags & FLAG_AUTHENTICATION != 0;
    let length = payload[3];
    let minimum = if authenticated {
        AUTHENTICATED_MIN_LEN
    } else {
        CONTROL_PACKET_LEN
    };
    if usize::from(length) < minimum {
        return Err(ParseError::LengthTooSmall { length, minimum });
    }
    if usize::from(length) > payload.len() {
        return Err(ParseError::LengthBeyondPayload {
            length,
            payload: payload.len(),
        });
    }
    let detect_mult = payload[2];
    if detect_mult == 0 {
        return Err(ParseError::ZeroDetectMult);
    }
    if flags & FLAG_MULTIPOINT != 0 {
        return Err(ParseError::Multipoint);
    }
    let my_discriminator =
        NonZeroU32::new(be_u32(payload, 4)).ok_or(ParseError::ZeroMyDiscriminator)?;
    let your_discriminator = be_u32(payload, 8);
    let state = SessionState::from_code(flags >> 6);
    if your_discriminator == 0 && !matches!(state, SessionState::Down | SessionState::AdminDown) {
        return Err(ParseError::ZeroYourDiscriminator { state });
    }
    // §6.8.6: the A bit set while no authentication is in use for the session (here: never).
    if authenticated {
        return Err(ParseError::AuthenticationUnsupported);
    }
    Ok(ControlPacket {
        diagnostic: Diagnostic(first & 0x1f),
        state,
        poll: flags & FLAG_POLL != 0,
        final_bit: flags & FLAG_FINAL != 0,
        control_plane_independent: flags & FLAG_CONTROL_PLANE_INDEPENDENT != 0,
        demand: flags & FLAG_DEMAND != 0,
        detect_mult,
        my_discriminator,
        your_discriminator,
        desired_min_tx_us: be_u32(payload, 12),
        required_min_rx_us: be_u32(payload, 16),
        required_min_echo_rx_us: be_u32(payload, 20),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_packet() -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::NONE,
            state: SessionState::Up,
            poll: false,
            final_bit: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: NonZeroU32::new(0x0102_0304).unwrap(),
            your_discriminator: 0x0a0b_0c0d,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 200_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn builds_the_mandatory_section_bit_for_bit() {
        let mut packet = up_packet();
        packet.diagnostic = Diagnostic::CONTROL_DETECTION_TIME_EXPIRED;
        packet.poll = true;
        assert_eq!(
            packet.to_bytes(),
            [
                0x21, 0xe0, 3, 24, // version 1, diag 1; Up, P; mult; length
                1, 2, 3, 4, // my discriminator
                0x0a, 0x0b, 0x0c, 0x0d, // your discriminator
                0x00, 0x01, 0x86, 0xa0, // 100,000 µs
                0x00, 0x03, 0x0d, 0x40, // 200,000 µs
                0, 0, 0, 0,
            ]
        );
        let mut flags = up_packet();
        flags.state = SessionState::Init;
        flags.final_bit = true;
        flags.control_plane_independent = true;
        flags.demand = true;
        assert_eq!(flags.to_bytes()[1], 0x80 | 0x10 | 0x08 | 0x02);
    }

    #[test]
    fn parses_what_it_builds() {
        for state in [
            SessionState::AdminDown,
            SessionState::Down,
            SessionState::Init,
            SessionState::Up,
        ] {
            let mut packet = up_packet();
            packet.state = state;
            packet.final_bit = true;
            packet.diagnostic = Diagnostic::new(31).unwrap();
            assert_eq!(parse(&packet.to_bytes()), Ok(packet));
        }
        assert_eq!(up_packet().desired_min_tx(), Duration::from_millis(100));
        assert_eq!(up_packet().required_min_rx(), Duration::from_millis(200));
    }

    #[test]
    fn accepts_padding_after_the_declared_length() {
        let mut bytes = up_packet().to_bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 8]);
        assert_eq!(parse(&bytes), Ok(up_packet()));
        // A Length longer than 24 without authentication is not a reason to discard either.
        bytes[3] = 32;
        assert_eq!(parse(&bytes), Ok(up_packet()));
    }

    fn with(change: impl FnOnce(&mut [u8; CONTROL_PACKET_LEN])) -> Vec<u8> {
        let mut bytes = up_packet().to_bytes();
        change(&mut bytes);
        bytes.to_vec()
    }

    #[test]
    fn refuses_every_packet_section_6_8_6_discards() {
        assert_eq!(parse(&[]), Err(ParseError::Truncated { received: 0 }));
        assert_eq!(
            parse(&up_packet().to_bytes()[..23]),
            Err(ParseError::Truncated { received: 23 })
        );
        assert_eq!(
            parse(&with(|b| b[0] = (2 << 5) | 1)),
            Err(ParseError::UnsupportedVersion(2))
        );
        assert_eq!(
            parse(&with(|b| b[0] = 0)),
            Err(ParseError::UnsupportedVersion(0))
        );
        assert_eq!(
            parse(&with(|b| b[3] = 23)),
            Err(ParseError::LengthTooSmall {
                length: 23,
                minimum: 24
            })
        );
        assert_eq!(
            parse(&with(|b| b[3] = 25)),
            Err(ParseError::LengthBeyondPayload {
                length: 25,
                payload: 24
            })
        );
        assert_eq!(parse(&with(|b| b[2] = 0)), Err(ParseError::ZeroDetectMult));
        assert_eq!(parse(&with(|b| b[1] |= 0x01)), Err(ParseError::Multipoint));
        assert_eq!(
            parse(&with(|b| b[4..8].fill(0))),
            Err(ParseError::ZeroMyDiscriminator)
        );
        for (state, code) in [(SessionState::Init, 2), (SessionState::Up, 3)] {
            assert_eq!(
                parse(&with(|b| {
                    b[1] = code << 6;
                    b[8..12].fill(0);
                })),
                Err(ParseError::ZeroYourDiscriminator { state })
            );
        }
        for code in [0, 1] {
            let packet = parse(&with(|b| {
                b[1] = code << 6;
                b[8..12].fill(0);
            }))
            .unwrap();
            assert_eq!(packet.your_discriminator, 0);
        }
    }

    #[test]
    fn refuses_authentication_with_its_own_reason() {
        // The A bit with the 24-byte Length: too short for an authentication section.
        assert_eq!(
            parse(&with(|b| b[1] |= 0x04)),
            Err(ParseError::LengthTooSmall {
                length: 24,
                minimum: 26
            })
        );
        let mut bytes = with(|b| {
            b[1] |= 0x04;
            b[3] = 28;
        });
        // Simple Password (type 1), length 4, one password byte, padding.
        bytes.extend_from_slice(&[1, 4, 1, b'x']);
        assert_eq!(parse(&bytes), Err(ParseError::AuthenticationUnsupported));
        let error = ParseError::AuthenticationUnsupported.to_string();
        assert!(error.contains("authentication is not supported"), "{error}");
    }

    #[test]
    fn checks_run_in_the_order_of_section_6_8_6() {
        // Everything wrong at once: the version is reported.
        let bytes = with(|b| {
            b[0] = 0;
            b[2] = 0;
            b[1] = 0xff;
            b[4..12].fill(0);
        });
        assert_eq!(parse(&bytes), Err(ParseError::UnsupportedVersion(0)));
        let bytes = with(|b| {
            b[2] = 0;
            b[1] |= 0x01;
        });
        assert_eq!(parse(&bytes), Err(ParseError::ZeroDetectMult));
    }

    #[test]
    fn names_states_and_diagnostics() {
        assert_eq!(SessionState::AdminDown.to_string(), "AdminDown");
        assert_eq!(
            Diagnostic::CONTROL_DETECTION_TIME_EXPIRED.to_string(),
            "Control Detection Time Expired"
        );
        assert_eq!(
            Diagnostic::NEIGHBOR_SIGNALED_SESSION_DOWN.to_string(),
            "Neighbor Signaled Session Down"
        );
        assert_eq!(
            Diagnostic::ADMINISTRATIVELY_DOWN.to_string(),
            "Administratively Down"
        );
        assert_eq!(
            Diagnostic::new(9).unwrap().to_string(),
            "reserved diagnostic 9"
        );
        assert_eq!(Diagnostic::new(32), None);
        for code in 0..4 {
            assert_eq!(SessionState::from_code(code).code(), code);
        }
    }
}
