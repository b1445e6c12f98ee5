//! A LAN client's view of the announcements, for end-to-end tests and benchmarks: from inside a
//! network namespace, asks who has some IPs (ARP requests, Neighbor Solicitations) at a steady
//! rate and records every answer and announcement with the MAC that gave it, so a test can check
//! that no two nodes answer at once and measure failover gaps and reply latency.
//!
//! Not used by the speaker itself.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::packet::filter::ARP_AND_NEIGHBOR_DISCOVERY;
use crate::packet::ndp::solicited_node_group;
use crate::packet::{
    ArpAnnouncementKind, ETHERTYPE_ARP, ETHERTYPE_IPV6, Inbound, MIN_FRAME_LEN, MacAddr, checksum,
    parse_frame,
};
use crate::packet_socket::{PacketSocket, RECEIVE_BUFFER_LEN, open_blocking};
use socket2::Socket;

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
#[allow(unsafe_code)]
pub fn enter_netns(name: &str) -> io::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns only reads the descriptor, which `file` keeps open for the call.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of `name` in the calling thread's network namespace (sysfs would show the
/// namespace it was mounted in instead).
#[allow(unsafe_code)]
pub fn index_of(name: &str) -> io::Result<u32> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Sends `frames` on `interface` inside the namespace `netns` (from a thread of its own).
pub fn send_in_netns(netns: &str, interface: &str, frames: Vec<Vec<u8>>) -> io::Result<()> {
    let (netns, interface) = (netns.to_owned(), interface.to_owned());
    std::thread::spawn(move || {
        enter_netns(&netns)?;
        let index = index_of(&interface)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let socket = PacketSocket::open(index, ETHERTYPE_ARP)?;
            for frame in &frames {
                socket.send(frame).await?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| io::Error::other("the sending thread panicked"))?
}

/// Who has `target`? From `mac`/`ip`, broadcast.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MIN_FRAME_LEN);
    frame.extend_from_slice(&MacAddr::BROADCAST.octets());
    frame.extend_from_slice(&mac.octets());
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac.octets());
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame.resize(MIN_FRAME_LEN, 0);
    frame
}

/// A Neighbor Solicitation for `target` from `mac`/`ip`, to its solicited-node group.
pub fn neighbor_solicitation(mac: MacAddr, ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node_group(target);
    let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[1, 1]);
    message.extend_from_slice(&mac.octets());
    let sum = checksum::icmpv6(ip, group, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&MacAddr::ipv6_multicast(group).octets());
    frame.extend_from_slice(&mac.octets());
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    let length = u16::try_from(message.len()).unwrap_or(u16::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&[58, 255]);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&group.octets());
    frame.extend_from_slice(&message);
    frame
}

/// One answer or announcement seen by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub at: Instant,
    /// Requests sent before it (the round it answers).
    pub round: u64,
    pub ip: IpAddr,
    pub mac: MacAddr,
    /// A solicited answer (ARP reply to us, NA with Solicited set), not a gratuitous one.
    pub solicited: bool,
    /// The round of the request this answers, when the requests carry
    /// [`ProbeConfig::sender_tags`]: a reply comes after later requests were sent once the
    /// rate exceeds one per reply time, so `round` alone would time it from the wrong one.
    pub answers: Option<u64>,
    /// When the frame reached the client's interface, stamped by the kernel: unlike `at`, free
    /// of the delay before the probe's thread ran, so reply latencies compare the responders
    /// rather than the probe's scheduling. On the wall clock, like [`SentFrame::wall`].
    pub arrived: Option<SystemTime>,
}

/// When one request left the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentFrame {
    pub at: Instant,
    /// The same moment on the wall clock, to compare with the kernel's receive stamps.
    pub wall: SystemTime,
}

/// What the client is and asks about.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub netns: String,
    pub interface: String,
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The IPs asked about every `interval` (both families allowed).
    pub targets: Vec<IpAddr>,
    pub interval: Duration,
    /// Unused LAN addresses the ARP requests of round r come from, in turn (r - 1 modulo
    /// their number), so each reply, which goes to the sender address, says which request it
    /// answers. Empty: every request comes from `ipv4`. Replies later than this many intervals
    /// are attributed to a later round.
    pub sender_tags: Vec<Ipv4Addr>,
}

#[derive(Debug, Default)]
struct Shared {
    heard: Mutex<Vec<Heard>>,
    sent: Mutex<Vec<Instant>>,
    frames_sent: Mutex<Vec<SentFrame>>,
    stop: AtomicBool,
}

/// A running probe; stops when dropped.
pub struct Probe {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Probe {
    /// Starts asking, on a thread of its own inside the namespace.
    pub fn start(config: ProbeConfig) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || run(config, thread_shared, ready_tx));
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                shared,
                thread: Some(thread),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::other("the probe thread died")),
        }
    }

    /// Everything heard so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.shared
            .heard
            .lock()
            .map(|heard| heard.clone())
            .unwrap_or_default()
    }

    /// When each request round was sent.
    pub fn sent(&self) -> Vec<Instant> {
        self.shared
            .sent
            .lock()
            .map(|sent| sent.clone())
            .unwrap_or_default()
    }

    /// When each request was sent: for round r (from 1) and target t (its index in
    /// [`ProbeConfig::targets`]), at index (r - 1) * targets + t.
    pub fn frames_sent(&self) -> Vec<SentFrame> {
        self.shared
            .frames_sent
            .lock()
            .map(|sent| sent.clone())
            .unwrap_or_default()
    }

    /// Forgets what was heard and sent.
    pub fn clear(&self) {
        if let Ok(mut heard) = self.shared.heard.lock() {
            heard.clear();
        }
        if let Ok(mut sent) = self.shared.sent.lock() {
            sent.clear();
        }
        if let Ok(mut sent) = self.shared.frames_sent.lock() {
            sent.clear();
        }
    }

    /// Stops and reports how the thread ended.
    pub fn stop(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("the probe thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Rounds in which more than one MAC answered an IP (solicited answers only): `(round, ip,
/// MACs)`. Empty when every round had at most one answerer per IP.
pub fn double_answers(heard: &[Heard]) -> Vec<(u64, IpAddr, Vec<MacAddr>)> {
    let mut per_round: std::collections::BTreeMap<
        (u64, IpAddr),
        std::collections::BTreeSet<MacAddr>,
    > = std::collections::BTreeMap::new();
    for h in heard.iter().filter(|h| h.solicited) {
        per_round.entry((h.round, h.ip)).or_default().insert(h.mac);
    }
    per_round
        .into_iter()
        .filter(|(_, macs)| macs.len() > 1)
        .map(|((round, ip), macs)| (round, ip, macs.into_iter().collect()))
        .collect()
}

/// How long a receiving thread waits before looking whether the probe stopped.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

fn run(
    config: ProbeConfig,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    let setup = (|| {
        enter_netns(&config.netns)?;
        let index = index_of(&config.interface)?;
        Ok::<_, io::Error>((
            open_stamped(index, ETHERTYPE_ARP)?,
            open_stamped(index, ETHERTYPE_IPV6)?,
        ))
    })();
    let (arp, ipv6) = match setup {
        Ok(sockets) => {
            let _ = ready.send(Ok(()));
            sockets
        }
        Err(error) => {
            let _ = ready.send(Err(io::Error::new(error.kind(), error.to_string())));
            return Err(error);
        }
    };
    // Per target, the request of each tag (or the one untagged request).
    let requests: Vec<(bool, Vec<Vec<u8>>)> = config
        .targets
        .iter()
        .map(|target| match target {
            IpAddr::V4(v4) if !config.sender_tags.is_empty() => (
                true,
                config
                    .sender_tags
                    .iter()
                    .map(|sender| arp_request(config.mac, *sender, *v4))
                    .collect(),
            ),
            IpAddr::V4(v4) => (true, vec![arp_request(config.mac, config.ipv4, *v4)]),
            IpAddr::V6(v6) => (
                false,
                vec![neighbor_solicitation(config.mac, config.ipv6, *v6)],
            ),
        })
        .collect();
    let round = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| receive(&arp, &shared, &round, &config));
        scope.spawn(|| receive(&ipv6, &shared, &round, &config));
        precise_sleeps();
        // On an absolute schedule: a late round does not delay the ones after it.
        let mut next = Instant::now();
        let mut sent_rounds = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            sent_rounds += 1;
            round.store(sent_rounds, Ordering::Release);
            if let Ok(mut sent) = shared.sent.lock() {
                sent.push(Instant::now());
            }
            let tag = usize::try_from(sent_rounds - 1).unwrap_or(0);
            // Each round starts with the next target in turn: the first request of a round
            // meets colder caches than the rest, and no target should always be the one.
            let mut round_sent = Vec::with_capacity(requests.len());
            for k in 0..requests.len() {
                let target = (k + tag) % requests.len();
                let Some((is_arp, frames)) = requests.get(target) else {
                    continue;
                };
                let socket = if *is_arp { &arp } else { &ipv6 };
                let Some(frame) = frames.get(tag % frames.len().max(1)) else {
                    continue;
                };
                round_sent.push((
                    target,
                    SentFrame {
                        at: Instant::now(),
                        wall: SystemTime::now(),
                    },
                ));
                // A lost request is a lost sample, not the end of the probe.
                if let Err(error) = socket.send(frame) {
                    eprintln!("probe: sending a request failed: {error}");
                }
            }
            round_sent.sort_by_key(|(target, _)| *target);
            if let Ok(mut sent) = shared.frames_sent.lock() {
                sent.extend(round_sent.into_iter().map(|(_, frame)| frame));
            }
            next += config.interval;
            // Far behind (the machine stalled): start the schedule afresh rather than burst.
            let now = Instant::now();
            if now > next + config.interval * 100 {
                next = now;
            }
        }
    });
    Ok(())
}

/// Sleeps end within microseconds of their deadline instead of the default 50 us timer slack,
/// which alone is half of the 100 us between requests at 10,000 per second.
#[allow(unsafe_code)]
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
    let result = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    if result != 0 {
        eprintln!(
            "probe: setting the timer slack failed: {}",
            io::Error::last_os_error()
        );
    }
}

/// The latest round up to `sent` whose requests came from tag `tag` of `tags`.
fn tagged_round(sent: u64, tag: usize, tags: usize) -> Option<u64> {
    let (tag, tags) = (u64::try_from(tag).ok()?, u64::try_from(tags).ok()?);
    if sent == 0 || tag >= tags {
        return None;
    }
    let back = ((sent - 1) % tags + tags - tag) % tags;
    sent.checked_sub(back).filter(|round| *round > 0)
}

fn open_stamped(index: u32, ethertype: u16) -> io::Result<Socket> {
    let socket = open_blocking(index, ethertype, &ARP_AND_NEIGHBOR_DISCOVERY, READ_TIMEOUT)?;
    enable_receive_timestamps(&socket)?;
    Ok(socket)
}

/// Asks the kernel to stamp each frame on arrival (SO_TIMESTAMPNS, wall clock, nanoseconds).
#[allow(unsafe_code)]
fn enable_receive_timestamps(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int and its exact size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one frame and the kernel's arrival stamp for it, when one came with it.
#[allow(unsafe_code)]
fn read_stamped(socket: &Socket, buffer: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
    // u64s: control messages must be aligned for their headers.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header, filled in below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // size_t in glibc, socklen_t (u32) in musl; 128 bytes fit either.
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: the header points at `iov` (which points at `buffer`) and at `control`, all live
    // and exclusively borrowed for the call, with their true lengths.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut message, 0) };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    let mut arrived = None;
    // SAFETY: the kernel filled `message` and `control`; the CMSG macros walk the control
    // messages within msg_controllen, and a SCM_TIMESTAMPNS payload is one timespec, read
    // unaligned.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let stamp: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                arrived = wall_time(stamp.tv_sec, stamp.tv_nsec);
            }
            header = libc::CMSG_NXTHDR(&raw const message, header);
        }
    }
    Ok((len, arrived))
}

fn wall_time(seconds: i64, nanoseconds: i64) -> Option<SystemTime> {
    let since_epoch = Duration::new(
        u64::try_from(seconds).ok()?,
        u32::try_from(nanoseconds).ok()?,
    );
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

fn receive(socket: &Socket, shared: &Shared, round: &AtomicU64, config: &ProbeConfig) {
    let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
    while !shared.stop.load(Ordering::Relaxed) {
        let (len, arrived) = match read_stamped(socket, &mut buffer) {
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                eprintln!("probe: receiving failed: {error}");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let at = Instant::now();
        let sent = round.load(Ordering::Acquire);
        let Ok(inbound) = parse_frame(buffer.get(..len).unwrap_or_default()) else {
            continue;
        };
        if inbound.ethernet_source() == config.mac {
            continue;
        }
        let (ip, mac, solicited, answers) = match inbound {
            Inbound::ArpAnnouncement(a) => {
                let reply = a.kind == ArpAnnouncementKind::Reply;
                let tag = config.sender_tags.iter().position(|t| *t == a.target_ip);
                let answers = tag
                    .filter(|_| reply)
                    .and_then(|tag| tagged_round(sent, tag, config.sender_tags.len()));
                (
                    IpAddr::V4(a.sender_ip),
                    a.sender_mac,
                    reply && (a.target_ip == config.ipv4 || tag.is_some()),
                    answers,
                )
            }
            Inbound::NeighborAdvertisement(na) => {
                let claim = na.claim();
                (claim.ip, claim.mac, na.solicited, None)
            }
            _ => continue,
        };
        if !config.targets.contains(&ip) {
            continue;
        }
        let heard = Heard {
            at,
            round: sent,
            ip,
            mac,
            solicited,
            answers,
            arrived,
        };
        if let Ok(mut all) = shared.heard.lock() {
            all.push(heard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_requests_parse_as_requests() {
        let mac = MacAddr([0x02, 0, 0, 0, 0, 1]);
        let frame = arp_request(
            mac,
            Ipv4Addr::new(198, 51, 100, 9),
            Ipv4Addr::new(198, 51, 100, 200),
        );
        assert!(
            matches!(parse_frame(&frame), Ok(Inbound::ArpRequest(r)) if r.target_ip == Ipv4Addr::new(198, 51, 100, 200))
        );
        let target: Ipv6Addr = "2001:db8:1::200".parse().unwrap();
        let frame = neighbor_solicitation(mac, "2001:db8:1::9".parse().unwrap(), target);
        assert!(
            matches!(parse_frame(&frame), Ok(Inbound::NeighborSolicitation(ns)) if ns.target == target)
        );
    }

    #[test]
    fn tagged_replies_are_matched_to_the_latest_round_of_their_tag() {
        // Round r used tag (r - 1) % 4.
        assert_eq!(tagged_round(0, 0, 4), None);
        assert_eq!(tagged_round(1, 0, 4), Some(1));
        assert_eq!(tagged_round(1, 1, 4), None, "tag 1 not sent yet");
        assert_eq!(tagged_round(6, 1, 4), Some(6));
        assert_eq!(tagged_round(6, 0, 4), Some(5));
        assert_eq!(tagged_round(6, 2, 4), Some(3));
        assert_eq!(tagged_round(6, 3, 4), Some(4));
        assert_eq!(tagged_round(6, 4, 4), None);
    }

    #[test]
    fn frames_come_with_the_kernels_arrival_stamp() {
        let (sender, receiver) =
            Socket::pair(socket2::Domain::UNIX, socket2::Type::DGRAM, None).unwrap();
        enable_receive_timestamps(&receiver).unwrap();
        let before = SystemTime::now();
        sender.send(b"who-has").unwrap();
        let mut buffer = [0u8; 64];
        let (len, arrived) = read_stamped(&receiver, &mut buffer).unwrap();
        let after = SystemTime::now();
        assert_eq!(&buffer[..len], b"who-has");
        let arrived = arrived.expect("a receive stamp");
        assert!(
            before <= arrived && arrived <= after,
            "{before:?} {arrived:?} {after:?}"
        );
    }

    #[test]
    fn stamps_out_of_range_are_dropped() {
        assert_eq!(
            wall_time(1, 5),
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(1, 5))
        );
        assert_eq!(wall_time(-1, 0), None);
        assert_eq!(wall_time(1, -1), None);
    }

    #[test]
    fn double_answers_are_per_round_and_ip() {
        let at = Instant::now();
        let ip: IpAddr = "198.51.100.200".parse().unwrap();
        let heard = |round, mac: u8, solicited| Heard {
            at,
            round,
            ip,
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            solicited,
            answers: None,
            arrived: None,
        };
        let clean = [heard(1, 1, true), heard(2, 2, true), heard(2, 1, false)];
        assert!(double_answers(&clean).is_empty());
        let doubled = [heard(3, 1, true), heard(3, 2, true)];
        assert_eq!(double_answers(&doubled).len(), 1);
    }
}
