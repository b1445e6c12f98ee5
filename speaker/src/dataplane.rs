//! The packet sockets of the interfaces this node announces on, opened and closed as that set
//! changes.
//!
//! Each socket is read by an OS thread of its own, which answers requests right where it reads
//! them, from the latest [`Snapshot`] the main loop published: a reply costs no hop through the
//! async runtime or the main loop, and the runtime never waits on a read. The decision is
//! [`Snapshot::handle_frame`], the same pure code the state uses. Only what changes state (a
//! conflict) is passed on to the main loop; counters are updated in place.
//!
//! The ARP sockets' kernel filters pass only ARP about the IPv4 addresses the published
//! snapshot owns, and follow it on every publication: a node reads the requests it may answer,
//! not every broadcast on the LAN. The snapshot still decides; the filter only ever passes more.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ferrolb_crds::InterfaceName;
use socket2::Socket;
use tokio::sync::mpsc;

use crate::announcer::Conflict;
use crate::bpf::Link;
use crate::kernel_arp::{KernelArpResponder, wanted_entries};
use crate::metrics::FrameCounters;
use crate::packet::filter::{ARP_AND_NEIGHBOR_DISCOVERY, BpfInstruction, arp_for_addresses};
use crate::packet::{ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::packet_socket::{
    MulticastMemberships, RECEIVE_BUFFER_LEN, ReadOutcome, attach_program, open_blocking,
    read_frame,
};
use crate::speaker_state::Snapshot;
use crate::thread_priority::set_current_thread_nice;

/// Conflicts waiting for the main loop. Past this, new ones are dropped: the first of a burst
/// already triggers the defence and the event, and a flood of forged claims must not grow memory.
pub const CONFLICT_QUEUE_LEN: usize = 256;

/// How long a reader waits for a frame before looking whether it should stop: the longest a
/// deselected interface's socket stays open (it answers nothing meanwhile).
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// A conflict a reader saw, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictSeen {
    pub conflict: Conflict,
    pub at: Instant,
}

/// The snapshot the readers answer from; replaced whole, never changed in place, so a reader
/// decides each frame from one consistent view.
#[derive(Debug, Default)]
pub struct Published(RwLock<Arc<Snapshot>>);

impl Published {
    pub fn publish(&self, snapshot: Snapshot) {
        // The lock guards a pointer swap that cannot panic half-way: a poisoned lock still
        // holds a whole snapshot.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What an ARP socket's kernel filter lets through to its reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArpFilter {
    /// ARP whose sender or target is one of these addresses.
    Addresses(BTreeSet<Ipv4Addr>),
    /// All ARP: more addresses than a filter holds, or a narrower filter failed to attach.
    All,
}

/// The narrowest filter passing ARP about the owned `addresses`, and its program.
struct WantedArpFilter {
    /// What it was built for: with too many addresses the filter is `All`, which says nothing
    /// about them, and it is rebuilt only when they change.
    addresses: BTreeSet<Ipv4Addr>,
    filter: ArpFilter,
    program: Vec<BpfInstruction>,
}

impl WantedArpFilter {
    fn new(addresses: BTreeSet<Ipv4Addr>) -> Self {
        let (filter, program) = match arp_for_addresses(&addresses) {
            Ok(program) => (ArpFilter::Addresses(addresses.clone()), program),
            Err(error) => {
                tracing::info!(%error, "the ARP sockets pass all ARP");
                (ArpFilter::All, ARP_AND_NEIGHBOR_DISCOVERY.to_vec())
            }
        };
        Self {
            addresses,
            filter,
            program,
        }
    }
}

struct InterfaceSockets {
    index: u32,
    arp: Arc<Socket>,
    /// What `arp`'s attached filter passes.
    arp_filter: ArpFilter,
    ipv6: Arc<Socket>,
    stop: Arc<AtomicBool>,
    /// The in-kernel ARP responder's attachment here, while it has one.
    kernel_arp: Option<Link>,
}

impl InterfaceSockets {
    /// Attaches `program` (which passes `filter`) to the ARP socket. On failure the socket is
    /// opened to all ARP rather than left with a filter that may miss owned addresses; the
    /// next publication tries again.
    fn filter_arp(&mut self, name: &InterfaceName, filter: &ArpFilter, program: &[BpfInstruction]) {
        match attach_program(&self.arp, program) {
            Ok(()) => self.arp_filter = filter.clone(),
            Err(error) => {
                tracing::warn!(interface = %name, %error, "attaching the ARP filter failed, passing all ARP");
                if attach_program(&self.arp, &ARP_AND_NEIGHBOR_DISCOVERY).is_ok() {
                    self.arp_filter = ArpFilter::All;
                }
            }
        }
    }
}

impl Drop for InterfaceSockets {
    fn drop(&mut self) {
        // The readers hold the sockets too; they close them when they see this.
        self.stop.store(true, Ordering::Release);
    }
}

pub struct DataPlane {
    interfaces: BTreeMap<InterfaceName, InterfaceSockets>,
    published: Arc<Published>,
    /// The filter every ARP socket should have for the published snapshot.
    arp_filter: WantedArpFilter,
    counters: FrameCounters,
    conflicts: mpsc::Sender<ConflictSeen>,
    memberships: MulticastMemberships,
    reader_priority: ReaderPriority,
    /// Answers plain ARP requests in the kernel, where it could be loaded.
    kernel_arp: Option<KernelArpResponder>,
}

/// The nice value reader threads set for themselves, and whether failing to has been logged.
#[derive(Clone, Debug)]
struct ReaderPriority {
    nice: i32,
    failure_logged: Arc<AtomicBool>,
}

impl ReaderPriority {
    /// Called by each reader thread as it starts. Without the privilege the reader runs at the
    /// process's priority: slower to answer on a busy node, so said once, but not an error.
    fn apply(&self) {
        if let Err(error) = set_current_thread_nice(self.nice)
            && !self.failure_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                nice = self.nice,
                %error,
                "cannot set the packet readers' nice value (lowering it needs CAP_SYS_NICE); \
                 on a busy node replies may wait behind other work"
            );
        }
    }
}

impl DataPlane {
    /// Answers nothing until [`DataPlane::publish`] is called. Conflicts the readers see come
    /// out of the returned receiver. Reader threads run at nice value `reader_nice`. With
    /// `kernel_arp`, plain ARP requests are answered in the kernel where the responder loads
    /// (see [`crate::kernel_arp`]); where it does not, the readers answer them, as without.
    pub fn new(
        counters: FrameCounters,
        reader_nice: i32,
        kernel_arp: bool,
    ) -> io::Result<(Self, mpsc::Receiver<ConflictSeen>)> {
        let (sender, receiver) = mpsc::channel(CONFLICT_QUEUE_LEN);
        let kernel_arp = if kernel_arp {
            match KernelArpResponder::load() {
                Ok(responder) => {
                    tracing::info!("answering ARP requests in the kernel (tcx)");
                    Some(responder)
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "cannot load the in-kernel ARP responder (it needs Linux 6.6 or later, \
                         CAP_BPF and CAP_NET_ADMIN); the packet readers answer ARP"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok((
            Self {
                interfaces: BTreeMap::new(),
                published: Arc::new(Published::default()),
                arp_filter: WantedArpFilter::new(BTreeSet::new()),
                counters,
                conflicts: sender,
                memberships: MulticastMemberships::new()?,
                reader_priority: ReaderPriority {
                    nice: reader_nice,
                    failure_logged: Arc::new(AtomicBool::new(false)),
                },
                kernel_arp,
            },
            receiver,
        ))
    }

    /// What the readers answer from, from the next frame on; the ARP filters follow.
    pub fn publish(&mut self, snapshot: Snapshot) {
        let addresses = snapshot.answering.ipv4_addresses();
        self.publish_to_kernel(&snapshot);
        self.published.publish(snapshot);
        if self.arp_filter.addresses != addresses {
            self.arp_filter = WantedArpFilter::new(addresses);
        }
        let wanted = &self.arp_filter;
        for (name, sockets) in &mut self.interfaces {
            if sockets.arp_filter != wanted.filter {
                sockets.filter_arp(name, &wanted.filter, &wanted.program);
            }
        }
    }

    /// Brings the in-kernel responder's answers and fence to `snapshot`, on the interfaces it
    /// is attached to. If that fails it is detached everywhere, since its map may then hold an
    /// answer the snapshot no longer gives; the readers answer from then on.
    fn publish_to_kernel(&mut self, snapshot: &Snapshot) {
        let Some(responder) = &mut self.kernel_arp else {
            return;
        };
        let interfaces = &self.interfaces;
        let wanted = wanted_entries(snapshot, |name| {
            interfaces
                .get(name)
                .filter(|sockets| sockets.kernel_arp.is_some())
                .map(|sockets| sockets.index)
        });
        if let Err(error) = responder.publish(wanted, snapshot.fenced_from) {
            tracing::error!(
                %error,
                "updating the in-kernel ARP responder failed; detaching it, the packet readers answer ARP"
            );
            for sockets in self.interfaces.values_mut() {
                sockets.kernel_arp = None;
            }
            self.kernel_arp = None;
        }
    }

    /// Whether the in-kernel ARP responder answers on `interface`.
    pub fn kernel_arp_attached(&self, interface: &InterfaceName) -> bool {
        self.interfaces
            .get(interface)
            .is_some_and(|sockets| sockets.kernel_arp.is_some())
    }

    /// ARP replies sent in the kernel so far (none: no in-kernel responder).
    pub fn kernel_arp_replies(&self) -> Option<u64> {
        self.kernel_arp
            .as_ref()
            .and_then(|responder| responder.replies().ok())
    }

    /// What the ARP socket on `interface` passes now (none: not listening there).
    pub fn arp_filter(&self, interface: &InterfaceName) -> Option<&ArpFilter> {
        self.interfaces
            .get(interface)
            .map(|sockets| &sockets.arp_filter)
    }

    /// The snapshot the readers use now.
    pub fn published(&self) -> Arc<Snapshot> {
        self.published.current()
    }

    /// Listens on exactly the `wanted` interfaces (name and kernel index): opens sockets on new
    /// ones, closes the rest, and reopens any whose index changed (the link was recreated).
    /// Returns the interfaces that could not be opened; they are tried again next time.
    pub fn listen_on(
        &mut self,
        wanted: &BTreeMap<InterfaceName, u32>,
    ) -> Vec<(InterfaceName, io::Error)> {
        let before = self.interfaces.len();
        self.interfaces
            .retain(|name, sockets| wanted.get(name) == Some(&sockets.index));
        if self.interfaces.len() != before {
            // Closed interfaces' answers go before any new attachment, which might reuse an
            // interface index they were keyed by.
            self.publish_to_kernel(&self.published.current());
        }
        let mut failures = Vec::new();
        for (name, &index) in wanted {
            if self.interfaces.contains_key(name) {
                continue;
            }
            match self.open(name, index) {
                Ok(sockets) => {
                    self.interfaces.insert(name.clone(), sockets);
                }
                Err(error) => failures.push((name.clone(), error)),
            }
        }
        // New attachments answer from the current snapshot at once, not from the next one.
        self.publish_to_kernel(&self.published.current());
        failures
    }

    fn open(&self, name: &InterfaceName, index: u32) -> io::Result<InterfaceSockets> {
        let sockets = InterfaceSockets {
            index,
            arp: Arc::new(open_blocking(
                index,
                ETHERTYPE_ARP,
                &self.arp_filter.program,
                READ_TIMEOUT,
            )?),
            arp_filter: self.arp_filter.filter.clone(),
            ipv6: Arc::new(open_blocking(
                index,
                ETHERTYPE_IPV6,
                &ARP_AND_NEIGHBOR_DISCOVERY,
                READ_TIMEOUT,
            )?),
            stop: Arc::new(AtomicBool::new(false)),
            kernel_arp: self.kernel_arp.as_ref().and_then(|responder| {
                responder
                    .attach(index)
                    .inspect_err(|error| {
                        tracing::warn!(interface = %name, %error, "cannot attach the in-kernel ARP responder; the packet reader answers ARP there");
                    })
                    .ok()
            }),
        };
        for socket in [&sockets.arp, &sockets.ipv6] {
            let reader = Reader {
                interface: name.clone(),
                socket: socket.clone(),
                published: self.published.clone(),
                counters: self.counters.clone(),
                conflicts: self.conflicts.clone(),
                stop: sockets.stop.clone(),
                priority: self.reader_priority.clone(),
            };
            // On failure `sockets` is dropped, which stops a reader already started.
            std::thread::Builder::new()
                .name(format!("rx-{name}"))
                .spawn(move || reader.run())?;
        }
        Ok(sockets)
    }

    pub fn listening(&self) -> BTreeSet<InterfaceName> {
        self.interfaces.keys().cloned().collect()
    }

    /// Joins exactly these solicited-node groups, per interface listened on.
    pub fn join_groups(
        &mut self,
        groups: &BTreeMap<InterfaceName, BTreeSet<Ipv6Addr>>,
    ) -> Vec<io::Error> {
        let wanted = groups
            .iter()
            .filter_map(|(name, groups)| {
                let index = self.interfaces.get(name)?.index;
                Some(groups.iter().map(move |group| (index, *group)))
            })
            .flatten()
            .collect();
        self.memberships.reconcile(&wanted)
    }

    /// Sends a frame we built on `interface`, through the socket of its EtherType, without
    /// waiting: called from the async runtime, where a full transmit queue must not block.
    pub fn send(&self, interface: &InterfaceName, frame: &[u8]) -> io::Result<()> {
        let sockets = self.interfaces.get(interface).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("not listening on {interface}"),
            )
        })?;
        let socket = if frame.get(12..14) == Some(&ETHERTYPE_ARP.to_be_bytes()[..]) {
            &sockets.arp
        } else {
            &sockets.ipv6
        };
        send_whole(socket, frame, libc::MSG_DONTWAIT)
    }
}

fn send_whole(socket: &Socket, frame: &[u8], flags: libc::c_int) -> io::Result<()> {
    let sent = socket.send_with_flags(frame, flags)?;
    if sent == frame.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", frame.len()),
        ))
    }
}

/// One socket's reading thread.
struct Reader {
    interface: InterfaceName,
    socket: Arc<Socket>,
    published: Arc<Published>,
    counters: FrameCounters,
    conflicts: mpsc::Sender<ConflictSeen>,
    stop: Arc<AtomicBool>,
    priority: ReaderPriority,
}

impl Reader {
    fn run(self) {
        self.priority.apply();
        let interface = &self.interface;
        let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
        while !self.stop.load(Ordering::Acquire) {
            let len = match read_frame(&self.socket, &mut buffer, interface, "frames") {
                ReadOutcome::Frame(len) => len,
                ReadOutcome::Again => continue,
                ReadOutcome::Gone => return,
            };
            let now = Instant::now();
            // Deselected while this frame was read: the interface is no longer ours to answer on.
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let frame = buffer.get(..len).unwrap_or_default();
            let outcome = self.published.current().handle_frame(interface, frame, now);
            if outcome.request {
                self.counters.requests.count(frame);
            }
            if let Some(error) = outcome.dropped {
                self.counters.dropped(error);
            }
            if let Some(reply) = outcome.reply {
                // Blocking is fine here: this thread serves only this socket.
                match send_whole(&self.socket, &reply, 0) {
                    Ok(()) => self.counters.replies.count(&reply),
                    Err(error) => {
                        tracing::debug!(%interface, %error, "sending a reply failed");
                    }
                }
            }
            if let Some(conflict) = outcome.conflict {
                match self.conflicts.try_send(ConflictSeen { conflict, at: now }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(%interface, "conflict queue full, conflict dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}
