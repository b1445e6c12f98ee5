//! Raw AF_PACKET sockets: one per selected interface and protocol, read without blocking the
//! async runtime, plus the IPv6 multicast memberships that let solicitations reach them.
//!
//! One socket per EtherType (ARP, IPv6) rather than one for every protocol: the kernel hands
//! ETH_P_ALL sockets this host's own outgoing frames too, but protocol sockets only what
//! arrives. The BPF filter then drops everything but ARP and Neighbor Discovery in the kernel.
//! Opening needs CAP_NET_RAW.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use ferrolb_crds::InterfaceName;
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::packet::filter::{ARP_AND_NEIGHBOR_DISCOVERY, BpfInstruction};
use crate::packet::{ETHERTYPE_ARP, ETHERTYPE_IPV6};

/// The largest frame read: anything longer is not ARP or NDP the speaker answers.
pub const RECEIVE_BUFFER_LEN: usize = 9216;

/// The EtherTypes the speaker listens to.
pub const PROTOCOLS: [u16; 2] = [ETHERTYPE_ARP, ETHERTYPE_IPV6];

/// A datagram socket that sends and receives whole Ethernet frames on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    socket: AsyncFd<Socket>,
}

impl PacketSocket {
    /// Opens a socket for `ethertype` frames on the interface with index `ifindex`, filtered to
    /// ARP and Neighbor Discovery. Must be called within a Tokio runtime.
    pub fn open(ifindex: u32, ethertype: u16) -> io::Result<Self> {
        let protocol = Protocol::from(i32::from(ethertype.to_be()));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))?;
        // Filter before binding, so no unfiltered frame is ever queued.
        attach_program(&socket, &ARP_AND_NEIGHBOR_DISCOVERY)?;
        bind_to_interface(&socket, ifindex, ethertype)?;
        Self::from_socket(socket)
    }

    /// Wraps an already opened datagram socket (tests use a Unix socket pair).
    #[allow(unsafe_code)]
    pub fn from_socket(socket: Socket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // SAFETY: a `Socket` owns its descriptor, always reports that same descriptor, and
        // closes it only when dropped, which happens only when the `AsyncFd` holding it is.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|error| error.into_parts().1)?;
        Ok(Self { socket })
    }

    /// Waits for the next frame and copies it into `buffer`, returning its length.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.socket.readable().await?;
            let read = |socket: &AsyncFd<Socket>| {
                // `Read` is implemented for `&Socket`: reading needs no exclusive access.
                let mut reader: &Socket = socket.get_ref();
                reader.read(buffer)
            };
            match ready.try_io(read) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one whole frame.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.socket.writable().await?;
            match ready.try_io(|socket| socket.get_ref().send(frame)) {
                Ok(Ok(sent)) if sent == frame.len() => return Ok(()),
                Ok(Ok(sent)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("sent {sent} of {} bytes", frame.len()),
                    ));
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Opens a blocking socket like [`PacketSocket::open`] but filtered by `program`, for a thread
/// of its own: reads wait at most `read_timeout` (then fail with `WouldBlock`), so the thread
/// can notice it should stop.
pub fn open_blocking(
    ifindex: u32,
    ethertype: u16,
    program: &[BpfInstruction],
    read_timeout: Duration,
) -> io::Result<Socket> {
    let protocol = Protocol::from(i32::from(ethertype.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))?;
    attach_program(&socket, program)?;
    bind_to_interface(&socket, ifindex, ethertype)?;
    socket.set_read_timeout(Some(read_timeout))?;
    Ok(socket)
}

/// What a reader thread does after a blocking read of a packet socket.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A frame of this many bytes is in the buffer.
    Frame(usize),
    /// Nothing yet (the read timed out or was interrupted, or the link is down): read again.
    Again,
    /// The link was deleted: a new one with this name gets a new socket, so the reader ends.
    Gone,
}

/// Reads one frame into `buffer`, logging what is worth a line (`what` names the reader's
/// frames, for the logs). An unexpected error is logged and retried after a pause rather than
/// spinning.
pub fn read_frame(
    socket: &Socket,
    buffer: &mut [u8],
    interface: &InterfaceName,
    what: &str,
) -> ReadOutcome {
    // `Read` is implemented for `&Socket`: other threads send on it meanwhile.
    let mut reader = socket;
    read_outcome(reader.read(buffer), interface, what)
}

/// Like [`read_frame`], but takes only a frame already queued: `Again` when there is none.
#[allow(unsafe_code)]
pub fn read_queued_frame(
    socket: &Socket,
    buffer: &mut [u8],
    interface: &InterfaceName,
    what: &str,
) -> ReadOutcome {
    // SAFETY: the kernel writes at most `buffer.len()` bytes into `buffer`, which stays
    // borrowed for the call.
    let read = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let result = usize::try_from(read).map_err(|_| io::Error::last_os_error());
    read_outcome(result, interface, what)
}

fn read_outcome(result: io::Result<usize>, interface: &InterfaceName, what: &str) -> ReadOutcome {
    match result {
        Ok(len) => ReadOutcome::Frame(len),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            ReadOutcome::Again
        }
        Err(error) if matches!(error.raw_os_error(), Some(libc::ENXIO | libc::ENODEV)) => {
            tracing::info!(%interface, %error, "interface gone, stopped reading {what}");
            ReadOutcome::Gone
        }
        // Reported once when the link goes down; the socket works again when it is up.
        Err(error) if error.raw_os_error() == Some(libc::ENETDOWN) => {
            tracing::debug!(%interface, "interface went down ({what})");
            ReadOutcome::Again
        }
        Err(error) => {
            tracing::warn!(%interface, %error, "reading {what} failed");
            std::thread::sleep(Duration::from_millis(100));
            ReadOutcome::Again
        }
    }
}

/// Replaces the socket's filter; frames already queued stay queued.
pub fn attach_program(socket: &Socket, program: &[BpfInstruction]) -> io::Result<()> {
    socket.attach_filter(&socket_filter(program))
}

fn socket_filter(program: &[BpfInstruction]) -> Vec<SockFilter> {
    program
        .iter()
        .map(
            |&BpfInstruction {
                 code,
                 jump_true,
                 jump_false,
                 k,
             }| { SockFilter::new(code, jump_true, jump_false, k) },
        )
        .collect()
}

/// Binds to one interface and EtherType with a `sockaddr_ll`, which socket2 cannot build
/// without raw access to the address storage.
#[allow(unsafe_code)]
fn bind_to_interface(socket: &Socket, ifindex: u32, ethertype: u16) -> io::Result<()> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` is a `sockaddr_storage`, large and aligned enough for any
    // socket address, and all-zero bytes are a valid `sockaddr_ll`.
    let address: &mut libc::sockaddr_ll = unsafe { storage.view_as() };
    address.sll_family = libc::AF_PACKET as libc::c_ushort;
    address.sll_protocol = ethertype.to_be();
    address.sll_ifindex = ifindex;
    let length = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .map_err(|_| io::Error::other("sockaddr_ll length"))?;
    // SAFETY: the storage holds a fully initialised `sockaddr_ll` of exactly `length` bytes.
    let address = unsafe { SockAddr::new(storage, length) };
    socket.bind(&address)
}

/// The kernel's index of a network interface.
pub fn interface_index(interface: &InterfaceName) -> io::Result<u32> {
    // InterfaceName admits no '/' and no "." or "..", so this path stays inside /sys/class/net.
    let path = format!("/sys/class/net/{}/ifindex", interface.as_str());
    let text = std::fs::read_to_string(&path)
        .map_err(|error| io::Error::new(error.kind(), format!("{path}: {error}")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {text:?}")))
}

/// Solicited-node multicast memberships, held through an IPv6 UDP socket: joining a group
/// makes the kernel program the NIC's multicast filter, so solicitations for announced
/// addresses reach the packet sockets (RFC 4861 section 7.2.1).
#[derive(Debug)]
pub struct MulticastMemberships {
    socket: UdpSocket,
    joined: BTreeSet<(u32, Ipv6Addr)>,
}

impl MulticastMemberships {
    pub fn new() -> io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
        Ok(Self {
            socket,
            joined: BTreeSet::new(),
        })
    }

    /// Joins and leaves groups so that exactly `wanted` (interface index, group) are joined.
    /// Returns the failures; a group that failed to join is tried again on the next call.
    pub fn reconcile(&mut self, wanted: &BTreeSet<(u32, Ipv6Addr)>) -> Vec<io::Error> {
        let (to_join, to_leave) = membership_changes(&self.joined, wanted);
        let mut errors = Vec::new();
        for (ifindex, group) in to_leave {
            // Leaving fails only if the interface vanished, which left the group anyway.
            if let Err(error) = self.socket.leave_multicast_v6(&group, ifindex) {
                errors.push(error);
            }
            self.joined.remove(&(ifindex, group));
        }
        for (ifindex, group) in to_join {
            match self.socket.join_multicast_v6(&group, ifindex) {
                Ok(()) => {
                    self.joined.insert((ifindex, group));
                }
                Err(error) => errors.push(error),
            }
        }
        errors
    }
}

type Memberships = BTreeSet<(u32, Ipv6Addr)>;

/// What to join and what to leave to go from `joined` to `wanted`.
fn membership_changes(joined: &Memberships, wanted: &Memberships) -> (Memberships, Memberships) {
    (
        wanted.difference(joined).copied().collect(),
        joined.difference(wanted).copied().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{MacAddr, arp, parse_frame};

    #[tokio::test]
    async fn frames_cross_a_datagram_socket_whole_and_without_blocking() {
        let (left, right) = Socket::pair(Domain::UNIX, Type::DGRAM, None).unwrap();
        let (left, right) = (
            PacketSocket::from_socket(left).unwrap(),
            PacketSocket::from_socket(right).unwrap(),
        );
        let mac = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
        let frames = [
            arp::gratuitous_request("198.51.100.10".parse().unwrap(), mac),
            arp::gratuitous_reply("198.51.100.11".parse().unwrap(), mac),
        ];
        // The reader waits first: recv must yield to the runtime, not block it.
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
            for _ in 0..2 {
                let len = right.recv(&mut buffer).await.unwrap();
                received.push(buffer[..len].to_vec());
            }
            received
        });
        tokio::task::yield_now().await;
        for frame in &frames {
            left.send(frame).await.unwrap();
        }
        let received = reader.await.unwrap();
        assert_eq!(received, frames);
        assert!(parse_frame(&received[0]).is_ok());
    }

    #[test]
    fn the_filter_program_keeps_every_instruction() {
        assert_eq!(
            socket_filter(&ARP_AND_NEIGHBOR_DISCOVERY).len(),
            ARP_AND_NEIGHBOR_DISCOVERY.len()
        );
    }

    /// The kernel checks a program when it is attached (every jump in range, a return at the
    /// end, the length cap); any socket will do for that, so this needs no privilege.
    #[test]
    fn the_kernel_accepts_the_largest_arp_program() {
        use crate::packet::filter::{MAX_INSTRUCTIONS, arp_for_addresses};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        let start = u32::from(std::net::Ipv4Addr::new(198, 51, 96, 0));
        let mut addresses = BTreeSet::new();
        let mut largest = None;
        for index in 0..4096 {
            addresses.insert(std::net::Ipv4Addr::from(start + index));
            match arp_for_addresses(&addresses) {
                Ok(program) => largest = Some(program),
                Err(_) => break,
            }
        }
        let largest = largest.unwrap();
        assert!(largest.len() > MAX_INSTRUCTIONS - 16, "{}", largest.len());
        attach_program(&socket, &largest).unwrap();
        attach_program(&socket, &arp_for_addresses(&BTreeSet::new()).unwrap()).unwrap();
    }

    #[test]
    fn unknown_interfaces_have_no_index() {
        let missing = InterfaceName::new("nosuchif0").unwrap();
        let error = interface_index(&missing).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("nosuchif0"));
    }

    #[test]
    fn memberships_change_by_difference() {
        let group = |last: u16| Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, last);
        let joined: Memberships = [(2, group(1)), (2, group(2))].into();
        let wanted: Memberships = [(2, group(2)), (3, group(2))].into();
        let (join, leave) = membership_changes(&joined, &wanted);
        assert_eq!(join, [(3, group(2))].into());
        assert_eq!(leave, [(2, group(1))].into());
    }
}
