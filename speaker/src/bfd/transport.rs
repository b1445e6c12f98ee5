//! BFD over UDP for single hops (RFC 5881): the sockets and their options, nothing else.
//!
//! - Control packets go to UDP port 3784 ([`CONTROL_PORT`]), from a source port in 49152–65535
//!   that stays the same for the whole session (§4), with TTL / Hop Limit 255 (§5).
//! - Received packets must arrive with TTL / Hop Limit 255 (§5: with no authentication, that
//!   proves the sender is on the link): the receive socket asks the kernel for it
//!   (IP_RECVTTL / IPV6_RECVHOPLIMIT) and [`receive`] reports it with each datagram.
//! - Both sockets are bound to the session's local address, so that packets leave from it and
//!   only packets sent to it are read.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The destination port of single-hop Control packets (§4).
pub const CONTROL_PORT: u16 = 3784;
/// Where the source port of a session's packets must lie (§4).
pub const SOURCE_PORTS: RangeInclusive<u16> = 49152..=65535;
/// The only TTL / Hop Limit single-hop packets are sent and accepted with (§5).
pub const REQUIRED_TTL: u8 = 255;
/// DSCP CS6 (network control), so that BFD is not queued behind the traffic it protects.
const TRAFFIC_CLASS_CS6: u32 = 0xc0;
/// Longer than any Control packet (24 bytes, 52 with the longest authentication section): a
/// datagram that does not fit is not one and is reported truncated.
pub const RECEIVE_BUFFER_LEN: usize = 128;

fn domain(ip: IpAddr) -> Domain {
    match ip {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    }
}

/// The socket that receives a local address's Control packets: bound to `local` (port
/// [`CONTROL_PORT`] in service), non-blocking, reporting each datagram's TTL / Hop Limit.
pub fn bind_receiver(local: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(domain(local.ip()), Type::DGRAM, Some(Protocol::UDP))?;
    match local.ip() {
        IpAddr::V4(_) => set_int_option(&socket, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?,
        IpAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_recv_hoplimit_v6(true)?;
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(local))?;
    Ok(socket.into())
}

/// The socket a session sends from: bound to `local` and a free port of [`SOURCE_PORTS`]
/// (tried from `first_port` on, wrapping round), TTL / Hop Limit 255, DSCP CS6, non-blocking.
pub fn bind_sender(local: IpAddr, first_port: u16) -> io::Result<UdpSocket> {
    let socket = Socket::new(domain(local), Type::DGRAM, Some(Protocol::UDP))?;
    match local {
        IpAddr::V4(_) => {
            socket.set_ttl_v4(u32::from(REQUIRED_TTL))?;
            socket.set_tos_v4(TRAFFIC_CLASS_CS6)?;
        }
        IpAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_unicast_hops_v6(u32::from(REQUIRED_TTL))?;
            socket.set_tclass_v6(TRAFFIC_CLASS_CS6)?;
        }
    }
    socket.set_nonblocking(true)?;
    let (low, high) = (*SOURCE_PORTS.start(), *SOURCE_PORTS.end());
    let count = u32::from(high - low) + 1;
    let offset = u32::from(first_port.clamp(low, high) - low);
    for step in 0..count {
        let port = u32::from(low) + (offset + step) % count;
        let port = u16::try_from(port).unwrap_or(low);
        match socket.bind(&SockAddr::from(SocketAddr::new(local, port))) {
            Ok(()) => return Ok(socket.into()),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free BFD source port on {local} in {low}-{high}"),
    ))
}

/// One datagram read by [`receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub len: usize,
    pub source: SocketAddr,
    /// The TTL (IPv4) or Hop Limit (IPv6) it arrived with; `None` if the kernel did not say.
    pub ttl: Option<u8>,
    /// Longer than the buffer: not a BFD Control packet.
    pub truncated: bool,
}

/// Room for one IP_TTL or IPV6_HOPLIMIT control message and then some, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuffer([u8; 64]);

/// Reads one queued datagram from a socket made by [`bind_receiver`] without blocking
/// (`WouldBlock` when none is queued).
#[allow(unsafe_code)]
pub fn receive(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<Datagram> {
    let mut control = ControlBuffer([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: every pointer in the message header points into `iov`, `buffer`, `control` or
    // the address storage that `try_init` provides, all of which outlive the call, with their
    // true lengths; the kernel writes at most that much into each and reports the address
    // length it wrote, which `try_init` takes on.
    let ((len, control_len, flags), source) = unsafe {
        SockAddr::try_init(|storage, storage_len| {
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_name = storage.cast();
            header.msg_namelen = *storage_len;
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.0.as_mut_ptr().cast();
            header.msg_controllen = control.0.len() as _;
            let read = libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_DONTWAIT);
            let len = usize::try_from(read).map_err(|_| io::Error::last_os_error())?;
            *storage_len = header.msg_namelen;
            Ok((len, header.msg_controllen as usize, header.msg_flags))
        })
    }?;
    let source = source
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP source address"))?;
    let control = control.0.get(..control_len).unwrap_or(&control.0);
    Ok(Datagram {
        len: len.min(buffer.len()),
        source,
        ttl: ttl_from_control(control),
        truncated: flags & libc::MSG_TRUNC != 0,
    })
}

fn native_usize(bytes: &[u8], at: usize) -> Option<usize> {
    let bytes = bytes.get(at..at + size_of::<usize>())?;
    Some(usize::from_ne_bytes(bytes.try_into().ok()?))
}

fn native_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let bytes = bytes.get(at..at + 4)?;
    Some(i32::from_ne_bytes(bytes.try_into().ok()?))
}

/// The TTL or Hop Limit among the control messages `recvmsg` returned, read as the kernel lays
/// them out (`cmsghdr`: length, level, type, then the data at the next `size_t` boundary).
pub fn ttl_from_control(control: &[u8]) -> Option<u8> {
    let align = |len: usize| len.div_ceil(size_of::<usize>()) * size_of::<usize>();
    let header_len = align(size_of::<libc::cmsghdr>());
    let mut at = 0;
    while at + header_len <= control.len() {
        let message_len = native_usize(control, at)?;
        if message_len < header_len {
            return None;
        }
        let level = native_i32(control, at + size_of::<usize>())?;
        let kind = native_i32(control, at + size_of::<usize>() + 4)?;
        let data = control.get(at + header_len..at + message_len)?;
        let is_ttl = (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
            || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT);
        if is_ttl {
            // Both are an `int` holding 0 to 255.
            let value = native_i32(data, 0)?;
            return u8::try_from(value).ok();
        }
        at += align(message_len);
    }
    None
}

fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    crate::sockopt::set_option(socket, level, name, &value)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use super::*;

    fn control_message(level: i32, kind: i32, value: i32) -> Vec<u8> {
        let header = size_of::<libc::cmsghdr>().div_ceil(size_of::<usize>()) * size_of::<usize>();
        let mut bytes = (header + 4).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&level.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.resize(header, 0);
        bytes.extend_from_slice(&value.to_ne_bytes());
        bytes.resize(
            bytes.len().div_ceil(size_of::<usize>()) * size_of::<usize>(),
            0,
        );
        bytes
    }

    #[test]
    fn finds_the_ttl_among_control_messages() {
        let ttl = control_message(libc::IPPROTO_IP, libc::IP_TTL, 255);
        assert_eq!(ttl_from_control(&ttl), Some(255));
        let hops = control_message(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, 64);
        let mut both = control_message(libc::IPPROTO_IP, libc::IP_TOS, 0xc0);
        both.extend_from_slice(&hops);
        assert_eq!(ttl_from_control(&both), Some(64));
        assert_eq!(ttl_from_control(&[]), None);
        assert_eq!(ttl_from_control(&ttl[..ttl.len() - 8]), None, "cut short");
        let mut zero_length = ttl.clone();
        zero_length[..size_of::<usize>()].fill(0);
        assert_eq!(ttl_from_control(&zero_length), None);
        assert_eq!(
            ttl_from_control(&control_message(libc::IPPROTO_IP, libc::IP_TTL, 300)),
            None
        );
    }

    /// Waits (bounded) for one datagram on a non-blocking socket.
    fn receive_one(socket: &UdpSocket) -> Datagram {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buffer = [0u8; RECEIVE_BUFFER_LEN];
        loop {
            match receive(socket.as_fd(), &mut buffer) {
                Ok(datagram) => return datagram,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "nothing received");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("receive: {error}"),
            }
        }
    }

    fn round_trip(local: IpAddr) {
        let receiver = bind_receiver(SocketAddr::new(local, 0)).unwrap();
        let destination = receiver.local_addr().unwrap();
        let sender = bind_sender(local, 60_000).unwrap();
        let source = sender.local_addr().unwrap();
        assert!(SOURCE_PORTS.contains(&source.port()), "{source}");
        sender.send_to(&[1, 2, 3], destination).unwrap();
        let datagram = receive_one(&receiver);
        assert_eq!(datagram.source, source);
        assert_eq!(datagram.ttl, Some(REQUIRED_TTL));
        assert_eq!((datagram.len, datagram.truncated), (3, false));

        // A plain socket sends with the default TTL, which the receiver reports as it is.
        let plain = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        match local {
            IpAddr::V4(_) => plain.set_ttl(64).unwrap(),
            IpAddr::V6(_) => socket2::SockRef::from(&plain)
                .set_unicast_hops_v6(64)
                .unwrap(),
        }
        plain.send_to(&[0; 200], destination).unwrap();
        let datagram = receive_one(&receiver);
        assert_eq!(datagram.ttl, Some(64));
        assert_eq!(datagram.len, RECEIVE_BUFFER_LEN);
        assert!(datagram.truncated);
    }

    #[test]
    fn sends_with_ttl_255_from_a_bfd_source_port_and_reports_the_ttl_received() {
        round_trip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
            round_trip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }

    #[test]
    fn source_ports_wrap_round_and_stay_in_range() {
        let first = bind_sender(IpAddr::V4(Ipv4Addr::LOCALHOST), 65_535).unwrap();
        let port = first.local_addr().unwrap().port();
        assert!(SOURCE_PORTS.contains(&port));
        // The same start again: the port is taken, the next free one (wrapping) is used.
        let second = bind_sender(IpAddr::V4(Ipv4Addr::LOCALHOST), port).unwrap();
        let next = second.local_addr().unwrap().port();
        assert_ne!(next, port);
        assert!(SOURCE_PORTS.contains(&next));
        // Below the range: clamped into it.
        let low = bind_sender(IpAddr::V4(Ipv4Addr::LOCALHOST), 1).unwrap();
        assert!(SOURCE_PORTS.contains(&low.local_addr().unwrap().port()));
    }
}
