//! Heartbeats on the wire: Ethernet frames of EtherType [`ETHERTYPE_HEARTBEAT`] to the group
//! [`HEARTBEAT_GROUP`], sent and read on every interface where the speaker could announce
//! (`docs/heartbeat-protocol.md`).
//!
//! Each interface has a packet socket and a reader thread of its own. The reader runs every
//! check a frame must pass (shape, key, tag, freshness and sequence, known sender) before the
//! frame goes anywhere, so a forged or replayed frame never reaches the speaker's loop nor takes
//! a place in the queue genuine heartbeats share: a flood of them costs one HMAC each and a
//! counter. The kernel filter drops what cannot be a heartbeat before the reader wakes.
//!
//! The decision is `Checks::judge`, pure apart from the replay guard it updates; the rest is
//! sockets and threads.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ferrolb_crds::InterfaceName;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use socket2::Socket;
use tokio::sync::mpsc;

use crate::heartbeat::wire::{self, DecodeError, Heartbeat, NodeId};
use crate::heartbeat::{HeartbeatTiming, Replay, ReplayGuard};
use crate::heartbeat_keys::{KeyRing, SharedKeys, current_keys};
use crate::heartbeat_queue::{AcceptedQueue, NewsFilter};
use crate::packet::MacAddr;
use crate::packet::filter::BpfInstruction;
use crate::packet_socket::{ReadOutcome, open_blocking, read_frame, read_queued_frame};
use crate::sockopt::set_option;
use crate::thread_priority::set_current_thread_nice;

/// IEEE 802 local experimental EtherType 1.
pub const ETHERTYPE_HEARTBEAT: u16 = 0x88b5;

/// A locally administered multicast address: joined, so NICs pass it up, and left alone by
/// every host that has not joined it.
pub const HEARTBEAT_GROUP: MacAddr = MacAddr([0x03, 0x00, 0x5e, 0xfe, 0x4c, 0x42]);

pub const ETHERNET_HEADER_LEN: usize = 14;

/// How far a heartbeat's sent time may be from this node's wall clock.
pub const FRESHNESS: Duration = Duration::from_secs(5);

/// Notices waiting for the loop. They only feed logs, events and metrics, so a full queue drops.
pub const NOTICE_QUEUE_LEN: usize = 256;

/// At most one notice of a kind about one node per reader in this interval.
pub const NOTICE_INTERVAL: Duration = Duration::from_millis(50);

/// Frames a reader takes from its socket before it hands what it accepted to the loop.
const BATCH_LIMIT: usize = 64;

/// The longest a reader gathers heartbeats, whatever the delay allowance.
const MAX_GATHERING_WINDOW: Duration = Duration::from_millis(5);

/// How long a reader waits for a frame before looking whether it should stop.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// Room for over a thousand queued frames per socket: the burst a flood builds up while the
/// reader works through it, so that genuine heartbeats behind it wait instead of being dropped.
/// The default (about 200 kB) holds a few hundred.
const RECEIVE_BUFFER_BYTES: usize = 1 << 20;

/// Notice rate limits remembered per reader: claimed node ids are unauthenticated, so a flood
/// of random ones must not grow memory.
const NOTICE_LIMITS_KEPT: usize = 1024;

/// `PACKET_MULTICAST` in `sk_buff.pkt_type`: a frame to a group address.
const PACKET_MULTICAST: u32 = 2;

/// The frame carrying `payload` from `source` to the heartbeat group.
pub fn ethernet_frame(source: MacAddr, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETHERNET_HEADER_LEN + payload.len());
    frame.extend_from_slice(&HEARTBEAT_GROUP.octets());
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&ETHERTYPE_HEARTBEAT.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The sender and payload of a frame addressed to the heartbeat group with the heartbeat
/// EtherType; `None` for any other frame.
pub fn split_frame(frame: &[u8]) -> Option<(MacAddr, &[u8])> {
    let (header, payload) = frame.split_at_checked(ETHERNET_HEADER_LEN)?;
    if header[..6] != HEARTBEAT_GROUP.octets()
        || header[12..14] != ETHERTYPE_HEARTBEAT.to_be_bytes()
    {
        return None;
    }
    let mut source = [0; 6];
    source.copy_from_slice(&header[6..12]);
    Some((MacAddr(source), payload))
}

/// The node a heartbeat claims to come from, before its tag is checked: for saying whose key
/// failed, never for deciding anything.
pub fn claimed_node(packet: &[u8]) -> Option<NodeId> {
    wire::key_id(packet).ok()?;
    let bytes: [u8; 8] = packet.get(20..28)?.try_into().ok()?;
    Some(NodeId(u64::from_be_bytes(bytes)))
}

const LOAD_LENGTH: u16 = 0x80; // BPF_LD | BPF_W | BPF_LEN
const LOAD_WORD_ABSOLUTE: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LOAD_HALF_ABSOLUTE: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JUMP_IF_GREATER: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JUMP_IF_GREATER_OR_EQUAL: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K
/// SKF_AD_OFF + SKF_AD_PKTTYPE: loads the frame's `pkt_type` instead of packet bytes.
const PACKET_TYPE: u32 = 0xffff_f000 + 4;

const fn op(code: u16, jump_true: u8, jump_false: u8, k: u32) -> BpfInstruction {
    BpfInstruction {
        code,
        jump_true,
        jump_false,
        k,
    }
}

const fn as_u32(value: usize) -> u32 {
    // Frame lengths are a few hundred bytes.
    value as u32
}

const GROUP_HIGH: u32 = u32::from_be_bytes([
    HEARTBEAT_GROUP.0[0],
    HEARTBEAT_GROUP.0[1],
    HEARTBEAT_GROUP.0[2],
    HEARTBEAT_GROUP.0[3],
]);
const GROUP_LOW: u32 = u16::from_be_bytes([HEARTBEAT_GROUP.0[4], HEARTBEAT_GROUP.0[5]]) as u32;

/// Passes frames to the group, of the heartbeat EtherType, as long as some heartbeat can be.
/// It also requires the kernel to have classed the frame as multicast: a frame tagged for a
/// VLAN this host has no interface for arrives untagged on the parent interface's sockets
/// marked "other host", and a heartbeat from another VLAN must not count on this one. Jumps
/// are relative to the next instruction; 12 is the rejection.
pub const HEARTBEAT_FILTER: [BpfInstruction; 13] = [
    /* 0 */ op(LOAD_LENGTH, 0, 0, 0),
    /* 1 */
    op(
        JUMP_IF_GREATER_OR_EQUAL,
        0,
        10,
        as_u32(ETHERNET_HEADER_LEN + wire::MIN_LEN),
    ),
    /* 2 */
    op(
        JUMP_IF_GREATER,
        9,
        0,
        as_u32(ETHERNET_HEADER_LEN + wire::MAX_LEN),
    ),
    /* 3 */ op(LOAD_WORD_ABSOLUTE, 0, 0, 0),
    /* 4 */ op(JUMP_IF_EQUAL, 0, 7, GROUP_HIGH),
    /* 5 */ op(LOAD_HALF_ABSOLUTE, 0, 0, 4),
    /* 6 */ op(JUMP_IF_EQUAL, 0, 5, GROUP_LOW),
    /* 7 */ op(LOAD_HALF_ABSOLUTE, 0, 0, 12),
    /* 8 */ op(JUMP_IF_EQUAL, 0, 3, ETHERTYPE_HEARTBEAT as u32),
    /* 9 */ op(LOAD_WORD_ABSOLUTE, 0, 0, PACKET_TYPE),
    /* 10 */ op(JUMP_IF_EQUAL, 0, 1, PACKET_MULTICAST),
    /* 11 */ op(RETURN, 0, 0, u32::MAX),
    /* 12 */ op(RETURN, 0, 0, 0),
];

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}

/// The heartbeat counters, shared by the readers (received, rejected) and the speaker's loop
/// (sent).
#[derive(Clone, Default)]
pub struct HeartbeatCounters {
    received: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
}

impl HeartbeatCounters {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "heartbeats_received",
            "Heartbeats accepted from known peers (authenticated, fresh, not replayed), by interface",
            self.received.clone(),
        );
        registry.register(
            "heartbeats_rejected",
            "Frames to the heartbeat group that were dropped, by reason (shape, no_keys, unknown_key, bad_tag, clock, replayed, unknown_node, queue_full)",
            self.rejected.clone(),
        );
        registry.register(
            "heartbeats_sent",
            "Heartbeats sent, by interface",
            self.sent.clone(),
        );
    }

    pub fn sent(&self, interface: &str) {
        self.sent
            .get_or_create(&label("interface", interface))
            .inc();
    }

    pub fn sent_count(&self, interface: &str) -> u64 {
        count(&self.sent, &label("interface", interface))
    }

    pub fn received_count(&self, interface: &str) -> u64 {
        count(&self.received, &label("interface", interface))
    }

    pub fn rejected_count(&self, reason: &str) -> u64 {
        count(&self.rejected, &label("reason", reason))
    }
}

fn count(family: &Family<Labels, Counter>, labels: &Labels) -> u64 {
    family.get(labels).map_or(0, |counter| counter.get())
}

/// A heartbeat that passed every check, from a node the speaker knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub interface: InterfaceName,
    /// When the reader read it, on this node's monotonic clock.
    pub at: Instant,
    pub source_mac: MacAddr,
    pub heartbeat: Heartbeat,
}

/// Something worth a log line or an event, about a frame that was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A frame whose tag did not verify, or whose key id is not in the Secret: a node with
    /// another key (a rotation gone wrong) or a forger. `claimed` is unauthenticated.
    AuthenticationFailed {
        interface: InterfaceName,
        claimed: NodeId,
        key_id: u16,
    },
    /// An authenticated heartbeat of a known node, outside the freshness bound: its clock (or
    /// this node's) is off, and it cannot be counted alive.
    Clock {
        interface: InterfaceName,
        node: NodeId,
    },
    /// An authenticated, fresh heartbeat of a node the API does not list as a peer.
    UnknownSender {
        interface: InterfaceName,
        node: NodeId,
    },
}

#[derive(Debug)]
pub struct Receivers {
    pub accepted: AcceptedQueue,
    pub notices: mpsc::Receiver<Notice>,
}

/// A notice before it is given its interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Concern {
    AuthenticationFailed { claimed: NodeId, key_id: u16 },
    Clock(NodeId),
    UnknownSender(NodeId),
}

impl Concern {
    /// What rate limits it: one notice per kind and node, whatever the key id.
    fn limit_key(self) -> (u8, NodeId) {
        match self {
            Concern::AuthenticationFailed { claimed, .. } => (0, claimed),
            Concern::Clock(node) => (1, node),
            Concern::UnknownSender(node) => (2, node),
        }
    }

    fn on(self, interface: &InterfaceName) -> Notice {
        let interface = interface.clone();
        match self {
            Concern::AuthenticationFailed { claimed, key_id } => Notice::AuthenticationFailed {
                interface,
                claimed,
                key_id,
            },
            Concern::Clock(node) => Notice::Clock { interface, node },
            Concern::UnknownSender(node) => Notice::UnknownSender { interface, node },
        }
    }
}

/// What becomes of one frame.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Sent by this node on another of its interfaces on the same LAN.
    Own,
    Accepted {
        source_mac: MacAddr,
        heartbeat: Heartbeat,
    },
    Rejected {
        reason: &'static str,
        concern: Option<Concern>,
    },
}

impl Verdict {
    fn rejected(reason: &'static str) -> Self {
        Verdict::Rejected {
            reason,
            concern: None,
        }
    }
}

/// Everything a frame is checked against.
struct Checks<'a, Known: Fn(NodeId) -> bool> {
    own_macs: &'a BTreeSet<MacAddr>,
    keys: Option<&'a KeyRing>,
    is_known: Known,
    guard: &'a Mutex<ReplayGuard>,
    now_unix_ms: u64,
    now: Instant,
}

impl<Known: Fn(NodeId) -> bool> Checks<'_, Known> {
    /// Nothing unauthenticated reaches the replay guard. The guard sees unknown senders too,
    /// so that only a fresh heartbeat of one raises a notice, not a recording of it.
    fn judge(&self, frame: &[u8]) -> Verdict {
        let Some((source_mac, packet)) = split_frame(frame) else {
            return Verdict::rejected(DecodeError::NotAHeartbeat.reason());
        };
        if self.own_macs.contains(&source_mac) {
            return Verdict::Own;
        }
        let key_id = match wire::key_id(packet) {
            Ok(key_id) => key_id,
            Err(error) => return Verdict::rejected(error.reason()),
        };
        let Some(keys) = self.keys else {
            return Verdict::rejected("no_keys");
        };
        let heartbeat = match wire::decode(packet, keys.key(key_id)) {
            Ok(heartbeat) => heartbeat,
            Err(error @ (DecodeError::BadTag | DecodeError::UnknownKey(_))) => {
                return Verdict::Rejected {
                    reason: error.reason(),
                    concern: claimed_node(packet)
                        .map(|claimed| Concern::AuthenticationFailed { claimed, key_id }),
                };
            }
            Err(error) => return Verdict::rejected(error.reason()),
        };
        let replay = self
            .guard
            .lock()
            // The guard's state is whole after any panic: each check updates one entry.
            .unwrap_or_else(PoisonError::into_inner)
            .check(&heartbeat, self.now_unix_ms, self.now);
        let known = (self.is_known)(heartbeat.node);
        match replay {
            Ok(()) if known => Verdict::Accepted {
                source_mac,
                heartbeat,
            },
            Ok(()) => Verdict::Rejected {
                reason: "unknown_node",
                concern: Some(Concern::UnknownSender(heartbeat.node)),
            },
            Err(error @ (Replay::Stale { .. } | Replay::FromTheFuture { .. })) => {
                Verdict::Rejected {
                    reason: error.reason(),
                    concern: known.then_some(Concern::Clock(heartbeat.node)),
                }
            }
            Err(error) => Verdict::rejected(error.reason()),
        }
    }
}

/// At most one notice per kind and node per [`NOTICE_INTERVAL`], and a bounded memory of them.
struct NoticeLimiter {
    last: BTreeMap<(u8, NodeId), Instant>,
    pruned: Option<Instant>,
}

impl NoticeLimiter {
    fn new() -> Self {
        Self {
            last: BTreeMap::new(),
            pruned: None,
        }
    }

    fn allow(&mut self, concern: Concern, now: Instant) -> bool {
        let key = concern.limit_key();
        let recent = |at: &Instant| now.saturating_duration_since(*at) < NOTICE_INTERVAL;
        match self.last.get(&key) {
            Some(at) if recent(at) => return false,
            Some(_) => {}
            None if self.last.len() >= NOTICE_LIMITS_KEPT => {
                // Pruning walks the whole map, so at most once an interval: in a flood of
                // made-up node ids the rest are dropped, which is what a limit is for.
                if self.pruned.is_some_and(|at| recent(&at)) {
                    return false;
                }
                self.pruned = Some(now);
                self.last.retain(|_, at| recent(at));
                if self.last.len() >= NOTICE_LIMITS_KEPT {
                    return false;
                }
            }
            None => {}
        }
        self.last.insert(key, now);
        true
    }
}

fn unix_ms(now: SystemTime) -> u64 {
    // Before 1970 every heartbeat is from the future: refused as the clock problem it is.
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// What every reader shares with the transport.
struct Shared {
    keys: SharedKeys,
    known: RwLock<BTreeSet<NodeId>>,
    own_macs: RwLock<BTreeSet<MacAddr>>,
    /// One for all readers: a sender numbers its heartbeats across all its networks, so the
    /// same number on two of them is a replay.
    guard: Mutex<ReplayGuard>,
    counters: HeartbeatCounters,
    accepted: AcceptedQueue,
    notices: mpsc::Sender<Notice>,
    nice: i32,
    nice_failure_logged: AtomicBool,
    timing: HeartbeatTiming,
}

impl Shared {
    /// Without the privilege the reader runs at the process's priority: heartbeats wait behind
    /// other work on a busy node, so said once, but not an error.
    fn apply_priority(&self) {
        if let Err(error) = set_current_thread_nice(self.nice)
            && !self.nice_failure_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                nice = self.nice,
                %error,
                "cannot set the heartbeat readers' nice value (lowering it needs CAP_SYS_NICE)"
            );
        }
    }
}

struct Listener {
    ifindex: u32,
    mac: MacAddr,
    socket: Arc<Socket>,
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The reader holds the socket too and closes it when it sees this, within a read
        // timeout; it delivers nothing read after it.
        self.stop.store(true, Ordering::Release);
    }
}

/// The heartbeat sockets of the interfaces the speaker publishes.
pub struct HeartbeatTransport {
    listeners: BTreeMap<InterfaceName, Listener>,
    shared: Arc<Shared>,
}

impl HeartbeatTransport {
    /// Listens nowhere until [`HeartbeatTransport::reconcile`]; readers run at nice value
    /// `reader_nice`, and gather and pass on heartbeats as `timing` allows (see
    /// [`gathering_window`] and [`AcceptedQueue`]).
    pub fn new(
        keys: SharedKeys,
        counters: HeartbeatCounters,
        reader_nice: i32,
        timing: HeartbeatTiming,
    ) -> (Self, Receivers) {
        let accepted = AcceptedQueue::default();
        let (notice_sender, notices) = mpsc::channel(NOTICE_QUEUE_LEN);
        let shared = Arc::new(Shared {
            keys,
            known: RwLock::default(),
            own_macs: RwLock::default(),
            guard: Mutex::new(ReplayGuard::new(FRESHNESS)),
            counters,
            accepted: accepted.clone(),
            notices: notice_sender,
            nice: reader_nice,
            nice_failure_logged: AtomicBool::new(false),
            timing,
        });
        (
            Self {
                listeners: BTreeMap::new(),
                shared,
            },
            Receivers { accepted, notices },
        )
    }

    /// Listens on exactly the `wanted` interfaces (kernel index and own MAC): opens new ones,
    /// closes the rest, and reopens any whose index changed (the link was recreated). Returns
    /// the interfaces that could not be opened; they are tried again next time.
    pub fn reconcile(
        &mut self,
        wanted: &BTreeMap<InterfaceName, (u32, MacAddr)>,
    ) -> Vec<(InterfaceName, io::Error)> {
        // Before any socket opens: a frame of this node's own arriving on a new one is not a
        // peer's.
        *self
            .shared
            .own_macs
            .write()
            .unwrap_or_else(PoisonError::into_inner) =
            wanted.values().map(|&(_, mac)| mac).collect();
        self.listeners.retain(|name, listener| {
            wanted
                .get(name)
                .is_some_and(|&(index, _)| index == listener.ifindex)
        });
        let mut failures = Vec::new();
        for (name, &(ifindex, mac)) in wanted {
            if let Some(listener) = self.listeners.get_mut(name) {
                listener.mac = mac;
                continue;
            }
            match self.open(name, ifindex, mac) {
                Ok(listener) => {
                    self.listeners.insert(name.clone(), listener);
                }
                Err(error) => failures.push((name.clone(), error)),
            }
        }
        failures
    }

    fn open(&self, name: &InterfaceName, ifindex: u32, mac: MacAddr) -> io::Result<Listener> {
        let socket = open_blocking(
            ifindex,
            ETHERTYPE_HEARTBEAT,
            &HEARTBEAT_FILTER,
            READ_TIMEOUT,
        )?;
        join_group(&socket, ifindex)?;
        if let Err(error) = raise_receive_buffer(&socket) {
            tracing::debug!(interface = %name, %error, "cannot raise the heartbeat socket's receive buffer");
        }
        let listener = Listener {
            ifindex,
            mac,
            socket: Arc::new(socket),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let reader = Reader {
            interface: name.clone(),
            socket: listener.socket.clone(),
            stop: listener.stop.clone(),
            shared: self.shared.clone(),
        };
        // On failure `listener` is dropped and closes the socket.
        std::thread::Builder::new()
            .name(format!("hb-{name}"))
            .spawn(move || reader.run())?;
        Ok(listener)
    }

    pub fn listening(&self) -> BTreeSet<InterfaceName> {
        self.listeners.keys().cloned().collect()
    }

    /// Sends `payload` (an encoded heartbeat) on `interface` from its own MAC, without waiting:
    /// called from the async loop, where a full transmit queue must not block (it fails with
    /// `WouldBlock` instead).
    pub fn send(&self, interface: &InterfaceName, payload: &[u8]) -> io::Result<()> {
        let listener = self.listeners.get(interface).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no heartbeat socket on {interface}"),
            )
        })?;
        let frame = ethernet_frame(listener.mac, payload);
        let sent = listener
            .socket
            .send_with_flags(&frame, libc::MSG_DONTWAIT)?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", frame.len()),
            ))
        }
    }

    /// The nodes whose heartbeats count: the peers the API lists. Others are dropped.
    pub fn set_known(&self, nodes: BTreeSet<NodeId>) {
        *self
            .shared
            .known
            .write()
            .unwrap_or_else(PoisonError::into_inner) = nodes;
    }
}

/// Joins [`HEARTBEAT_GROUP`] on the interface, so its NIC's multicast filter passes the
/// heartbeats up; the membership goes with the socket.
fn join_group(socket: &Socket, ifindex: u32) -> io::Result<()> {
    let mut address = [0u8; 8];
    address[..6].copy_from_slice(&HEARTBEAT_GROUP.octets());
    let request = libc::packet_mreq {
        mr_ifindex: libc::c_int::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
        })?,
        mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
        mr_alen: 6,
        mr_address: address,
    };
    set_option(
        socket,
        libc::SOL_PACKET,
        libc::PACKET_ADD_MEMBERSHIP,
        &request,
    )
}

/// SO_RCVBUFFORCE past the system limit where the speaker may (CAP_NET_ADMIN), SO_RCVBUF up to
/// that limit where not.
fn raise_receive_buffer(socket: &Socket) -> io::Result<()> {
    let bytes = libc::c_int::try_from(RECEIVE_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
    set_option(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
        .or_else(|_| socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES))
}

/// One socket's reading thread.
struct Reader {
    interface: InterfaceName,
    socket: Arc<Socket>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

/// What a reader keeps between frames.
struct ReaderState {
    /// Resolved once: a label lookup allocates, and a flood is counted frame by frame.
    received: Counter,
    rejected: BTreeMap<&'static str, Counter>,
    limiter: NoticeLimiter,
    news_filter: NewsFilter,
    /// Accepted since the last hand-over to the loop.
    batch: Vec<Accepted>,
    /// Whether one of them is news, for which the loop wakes at once.
    news: bool,
}

impl Reader {
    /// Waits for a frame, takes every frame queued behind it (up to [`BATCH_LIMIT`]) and hands
    /// the accepted ones to the loop together; then, if the queue was empty, rests for the
    /// gathering window before waiting again. The loop so wakes once per window rather than
    /// once per peer's heartbeat, and a heartbeat waits at most the window: a part of the delay
    /// allowance (see [`gathering_window`]). Under a flood the queue never empties, and the
    /// reader never rests.
    fn run(self) {
        self.shared.apply_priority();
        let interface = &self.interface;
        let mut state = ReaderState {
            received: self
                .shared
                .counters
                .received
                .get_or_create_owned(&label("interface", interface.as_str())),
            rejected: BTreeMap::new(),
            limiter: NoticeLimiter::new(),
            news_filter: NewsFilter::new(self.shared.timing.fence()),
            batch: Vec::with_capacity(BATCH_LIMIT),
            news: false,
        };
        let gathering = gathering_window(&self.shared.timing);
        // One byte more than any heartbeat frame, so that a longer one shows as oversized
        // rather than cut to a length that might parse.
        let mut buffer = vec![0; ETHERNET_HEADER_LEN + wire::MAX_LEN + 1];
        while !self.stop.load(Ordering::Acquire) {
            let len = match read_frame(&self.socket, &mut buffer, interface, "heartbeats") {
                ReadOutcome::Frame(len) => len,
                ReadOutcome::Again => continue,
                ReadOutcome::Gone => return,
            };
            self.judge(buffer.get(..len).unwrap_or_default(), &mut state);
            let mut emptied = false;
            for _ in 1..BATCH_LIMIT {
                match read_queued_frame(&self.socket, &mut buffer, interface, "heartbeats") {
                    ReadOutcome::Frame(len) => {
                        self.judge(buffer.get(..len).unwrap_or_default(), &mut state);
                    }
                    ReadOutcome::Again => {
                        emptied = true;
                        break;
                    }
                    ReadOutcome::Gone => return,
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            self.hand_over(&mut state);
            if emptied {
                std::thread::sleep(gathering);
            }
        }
    }

    /// Runs every check on one frame read now; accepted heartbeats join the batch.
    fn judge(&self, frame: &[u8], state: &mut ReaderState) {
        let now = Instant::now();
        let keys = current_keys(&self.shared.keys);
        let own_macs = self
            .shared
            .own_macs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let checks = Checks {
            own_macs: &own_macs,
            keys: keys.as_deref(),
            is_known: |node| {
                self.shared
                    .known
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&node)
            },
            guard: &self.shared.guard,
            now_unix_ms: unix_ms(SystemTime::now()),
            now,
        };
        let verdict = checks.judge(frame);
        drop(own_macs);
        match verdict {
            Verdict::Own => {}
            Verdict::Accepted {
                source_mac,
                heartbeat,
            } => {
                state.news |= state.news_filter.is_news(&heartbeat, now);
                state.batch.push(Accepted {
                    interface: self.interface.clone(),
                    at: now,
                    source_mac,
                    heartbeat,
                });
            }
            Verdict::Rejected { reason, concern } => {
                reject(&mut state.rejected, &self.shared.counters, reason);
                if let Some(concern) = concern
                    && state.limiter.allow(concern, now)
                {
                    // A full queue drops the notice: they only feed logs and events.
                    let _ = self.shared.notices.try_send(concern.on(&self.interface));
                }
            }
        }
    }

    /// Queues the batch for the loop, waking it if there is news.
    fn hand_over(&self, state: &mut ReaderState) {
        let count = state.batch.len();
        let dropped = self
            .shared
            .accepted
            .push(&mut state.batch, std::mem::take(&mut state.news));
        state.received.inc_by((count - dropped) as u64);
        for _ in 0..dropped {
            reject(&mut state.rejected, &self.shared.counters, "queue_full");
        }
    }
}

/// How long a reader gathers heartbeats before it hands them over: a quarter of the delay
/// allowance, at most 5 ms. Waiting there is delay the periods already allow for, and with 100
/// peers at 75 ms it folds about seven heartbeats into each wake of the loop.
pub fn gathering_window(timing: &HeartbeatTiming) -> Duration {
    (timing.max_delay / 4).min(MAX_GATHERING_WINDOW)
}

fn reject(
    cache: &mut BTreeMap<&'static str, Counter>,
    counters: &HeartbeatCounters,
    reason: &'static str,
) {
    cache
        .entry(reason)
        .or_insert_with(|| {
            counters
                .rejected
                .get_or_create_owned(&label("reason", reason))
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::Kind;
    use ferrolb_crds::heartbeat_key::HeartbeatKeys;

    const NOW_MS: u64 = 1_790_000_000_000;
    const PEER: NodeId = NodeId(0x0a0b);
    const STRANGER: NodeId = NodeId(0x0c0d);
    const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const OWN_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    fn ring(entries: &[(&str, &[u8])]) -> KeyRing {
        KeyRing::new(&HeartbeatKeys::from_data(entries.iter().copied()).unwrap()).unwrap()
    }

    fn keys() -> KeyRing {
        ring(&[("key-1", &[1; 32]), ("key-2", &[2; 32]), ("active", b"1")])
    }

    fn heartbeat(node: NodeId, sequence: u32) -> Heartbeat {
        Heartbeat {
            kind: Kind::Heartbeat,
            api_reachable: true,
            key_id: 1,
            node,
            incarnation: 7,
            sequence,
            sent_unix_ms: NOW_MS,
            suspects: vec![],
            reported: vec![],
        }
    }

    fn signed(heartbeat: &Heartbeat, with: &KeyRing) -> Vec<u8> {
        ethernet_frame(PEER_MAC, &wire::encode(heartbeat, with.signing_key()))
    }

    /// Judges frames one after another against one replay guard, as a reader does.
    struct Judge {
        keys: Option<KeyRing>,
        own_macs: BTreeSet<MacAddr>,
        guard: Mutex<ReplayGuard>,
        now_unix_ms: u64,
    }

    impl Judge {
        fn new() -> Self {
            Self {
                keys: Some(keys()),
                own_macs: [OWN_MAC].into(),
                guard: Mutex::new(ReplayGuard::new(FRESHNESS)),
                now_unix_ms: NOW_MS,
            }
        }

        fn judge(&self, frame: &[u8]) -> Verdict {
            Checks {
                own_macs: &self.own_macs,
                keys: self.keys.as_ref(),
                is_known: |node| node == PEER,
                guard: &self.guard,
                now_unix_ms: self.now_unix_ms,
                now: Instant::now(),
            }
            .judge(frame)
        }
    }

    fn rejected(reason: &'static str, concern: Option<Concern>) -> Verdict {
        Verdict::Rejected { reason, concern }
    }

    #[test]
    fn frames_carry_the_payload_to_the_group_and_back() {
        let frame = ethernet_frame(PEER_MAC, b"payload");
        assert_eq!(&frame[..6], &HEARTBEAT_GROUP.octets());
        assert_eq!(&frame[6..12], &PEER_MAC.octets());
        assert_eq!(&frame[12..14], &[0x88, 0xb5]);
        assert_eq!(split_frame(&frame), Some((PEER_MAC, &b"payload"[..])));
        assert_eq!(split_frame(&frame[..14]), Some((PEER_MAC, &b""[..])));
        assert_eq!(split_frame(&frame[..13]), None);
        let mut unicast = frame.clone();
        unicast[..6].copy_from_slice(&OWN_MAC.octets());
        assert_eq!(split_frame(&unicast), None);
        let mut other_type = frame;
        other_type[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(split_frame(&other_type), None);
        assert!(HEARTBEAT_GROUP.is_multicast());
    }

    #[test]
    fn the_claimed_node_is_read_only_from_a_heartbeat_shaped_packet() {
        let packet = wire::encode(&heartbeat(PEER, 1), keys().signing_key());
        assert_eq!(claimed_node(&packet), Some(PEER));
        assert_eq!(claimed_node(&packet[..wire::MIN_LEN - 1]), None);
        assert_eq!(claimed_node(b"FH"), None);
        assert_eq!(claimed_node(&[0; 60]), None);
    }

    #[test]
    fn a_genuine_heartbeat_of_a_known_peer_is_accepted_once() {
        let judge = Judge::new();
        let frame = signed(&heartbeat(PEER, 1), &keys());
        assert_eq!(
            judge.judge(&frame),
            Verdict::Accepted {
                source_mac: PEER_MAC,
                heartbeat: heartbeat(PEER, 1)
            }
        );
        assert_eq!(judge.judge(&frame), rejected("replayed", None));
        // A key that is in the Secret but not the active one verifies too (rotation).
        let with_key_2 = Heartbeat {
            key_id: 2,
            ..heartbeat(PEER, 2)
        };
        let frame = ethernet_frame(PEER_MAC, &wire::encode(&with_key_2, keys().key(2).unwrap()));
        assert!(matches!(judge.judge(&frame), Verdict::Accepted { .. }));
    }

    #[test]
    fn another_key_or_an_unknown_key_id_names_the_claimed_node() {
        let judge = Judge::new();
        let other = ring(&[("key-1", &[9; 32]), ("active", b"1")]);
        assert_eq!(
            judge.judge(&signed(&heartbeat(PEER, 1), &other)),
            rejected(
                "bad_tag",
                Some(Concern::AuthenticationFailed {
                    claimed: PEER,
                    key_id: 1
                })
            )
        );
        let unknown_id = Heartbeat {
            key_id: 9,
            ..heartbeat(STRANGER, 1)
        };
        assert_eq!(
            judge.judge(&ethernet_frame(
                PEER_MAC,
                &wire::encode(&unknown_id, other.signing_key())
            )),
            rejected(
                "unknown_key",
                Some(Concern::AuthenticationFailed {
                    claimed: STRANGER,
                    key_id: 9
                })
            )
        );
        // Forgeries never reached the replay guard: the genuine first heartbeat still counts.
        assert!(matches!(
            judge.judge(&signed(&heartbeat(PEER, 1), &keys())),
            Verdict::Accepted { .. }
        ));
    }

    #[test]
    fn malformed_frames_are_counted_by_their_decode_reason() {
        let judge = Judge::new();
        let listed = Heartbeat {
            suspects: vec![NodeId(1), NodeId(2), NodeId(3)],
            ..heartbeat(PEER, 1)
        };
        let whole = signed(&listed, &keys());
        assert_eq!(
            judge.judge(&whole[..whole.len() - 8]),
            rejected("truncated", None)
        );
        let mut longer = whole.clone();
        longer.push(0);
        assert_eq!(judge.judge(&longer), rejected("trailing_bytes", None));
        let mut version = whole.clone();
        version[14 + 2] = 2;
        assert_eq!(judge.judge(&version), rejected("unsupported_version", None));
        assert_eq!(
            judge.judge(&ethernet_frame(PEER_MAC, &[0; wire::MAX_LEN + 1])),
            rejected("oversized", None)
        );
        let mut elsewhere = whole;
        elsewhere[..6].copy_from_slice(&PEER_MAC.octets());
        assert_eq!(judge.judge(&elsewhere), rejected("not_a_heartbeat", None));
    }

    #[test]
    fn without_keys_nothing_is_accepted_and_own_frames_are_ignored() {
        let mut judge = Judge::new();
        let frame = signed(&heartbeat(PEER, 1), &keys());
        judge.keys = None;
        assert_eq!(judge.judge(&frame), rejected("no_keys", None));
        assert_eq!(judge.judge(b"short"), rejected("not_a_heartbeat", None));
        judge.keys = Some(keys());
        let mut own = frame;
        own[6..12].copy_from_slice(&OWN_MAC.octets());
        assert_eq!(judge.judge(&own), Verdict::Own);
    }

    #[test]
    fn stale_heartbeats_raise_a_clock_notice_for_known_nodes_only() {
        let mut judge = Judge::new();
        judge.now_unix_ms = NOW_MS + 6_000;
        assert_eq!(
            judge.judge(&signed(&heartbeat(PEER, 1), &keys())),
            rejected("clock", Some(Concern::Clock(PEER)))
        );
        assert_eq!(
            judge.judge(&signed(&heartbeat(STRANGER, 1), &keys())),
            rejected("clock", None)
        );
        judge.now_unix_ms = NOW_MS - 6_000;
        assert_eq!(
            judge.judge(&signed(&heartbeat(PEER, 2), &keys())),
            rejected("clock", Some(Concern::Clock(PEER)))
        );
    }

    #[test]
    fn unknown_senders_are_named_once_per_heartbeat_and_not_for_replays() {
        let judge = Judge::new();
        let frame = signed(&heartbeat(STRANGER, 1), &keys());
        assert_eq!(
            judge.judge(&frame),
            rejected("unknown_node", Some(Concern::UnknownSender(STRANGER)))
        );
        assert_eq!(judge.judge(&frame), rejected("replayed", None));
    }

    #[test]
    fn notices_are_limited_per_kind_and_node() {
        let mut limiter = NoticeLimiter::new();
        let start = Instant::now();
        let clock = Concern::Clock(PEER);
        assert!(limiter.allow(clock, start));
        assert!(!limiter.allow(clock, start + Duration::from_millis(49)));
        assert!(limiter.allow(Concern::UnknownSender(PEER), start));
        assert!(limiter.allow(Concern::Clock(STRANGER), start));
        let forged = |key_id| Concern::AuthenticationFailed {
            claimed: PEER,
            key_id,
        };
        assert!(limiter.allow(forged(1), start));
        assert!(!limiter.allow(forged(2), start), "any key id, one node");
        assert!(limiter.allow(clock, start + NOTICE_INTERVAL));
    }

    #[test]
    fn made_up_node_ids_cannot_grow_the_limiter() {
        let mut limiter = NoticeLimiter::new();
        let start = Instant::now();
        let forged = |id| Concern::AuthenticationFailed {
            claimed: NodeId(id),
            key_id: 1,
        };
        let allowed = (0..10_000u64)
            .filter(|&id| limiter.allow(forged(id), start))
            .count();
        assert_eq!(allowed, NOTICE_LIMITS_KEPT);
        assert_eq!(limiter.last.len(), NOTICE_LIMITS_KEPT);
        // Once the interval has passed the old entries go and new nodes are named again.
        let later = start + NOTICE_INTERVAL;
        assert!(limiter.allow(forged(20_000), later));
        assert!(limiter.last.len() <= NOTICE_LIMITS_KEPT);
    }

    #[test]
    fn the_wall_clock_is_read_in_milliseconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS);
        assert_eq!(unix_ms(at), NOW_MS);
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    /// The kernel checks a program when it is attached (jumps in range, a return at the end);
    /// any socket will do for that, so this needs no privilege. What it passes is checked on
    /// real links in `tests/tests/heartbeat_transport.rs`.
    #[test]
    fn the_kernel_accepts_the_filter() {
        let socket = Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        crate::packet_socket::attach_program(&socket, &HEARTBEAT_FILTER).unwrap();
        assert_eq!(GROUP_HIGH, 0x0300_5efe);
        assert_eq!(GROUP_LOW, 0x4c42);
        // Every jump lands on an instruction, and rejections on the final return.
        for (at, instruction) in HEARTBEAT_FILTER.iter().enumerate() {
            if instruction.code & 0x07 == 0x05 {
                for jump in [instruction.jump_true, instruction.jump_false] {
                    assert!(at + 1 + usize::from(jump) < HEARTBEAT_FILTER.len(), "{at}");
                }
            }
        }
    }

    #[test]
    fn counters_are_registered_and_read_by_label() {
        let counters = HeartbeatCounters::default();
        let mut registry = Registry::with_prefix("ferrolb_speaker");
        counters.register(&mut registry);
        counters.sent("eth0");
        counters.sent("eth0");
        let mut cache = BTreeMap::new();
        reject(&mut cache, &counters, "bad_tag");
        reject(&mut cache, &counters, "bad_tag");
        assert_eq!(counters.sent_count("eth0"), 2);
        assert_eq!(counters.rejected_count("bad_tag"), 2);
        assert_eq!(counters.rejected_count("replayed"), 0);
        assert_eq!(counters.received_count("eth0"), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"ferrolb_speaker_heartbeats_rejected_total{reason="bad_tag"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrolb_speaker_heartbeats_sent_total{interface="eth0"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn sending_needs_an_open_interface() {
        let (transport, _receivers) = HeartbeatTransport::new(
            SharedKeys::default(),
            HeartbeatCounters::default(),
            0,
            HeartbeatTiming::DEFAULT,
        );
        let eth0 = InterfaceName::new("eth0").unwrap();
        let error = transport.send(&eth0, b"x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(transport.listening().is_empty());
    }
}
