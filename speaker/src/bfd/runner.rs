//! Runs BFD sessions over the network: each [`BfdSession`] is a Tokio task that drives one
//! [`Session`] with real packets and timers and publishes its state through a `watch` channel.
//!
//! Every session sends from a socket of its own (its own source port, RFC 5881 §4). Receiving
//! is shared: only one socket can own port 3784 on a local address, so the sessions of one local
//! address (say, BGP to two routers on one LAN) share a listener that reads the packets, checks
//! TTL and format and hands each to the session of the peer that sent it. A listener lives as
//! long as a session uses it, and belongs to the network namespace it was opened in.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::packet::{self, ControlPacket, Diagnostic, SessionState};
use super::session::{Action, Input, Jitter, Session, StateChange, Timers};
use super::transport::{self, CONTROL_PORT, RECEIVE_BUFFER_LEN, REQUIRED_TTL, SOURCE_PORTS};

/// Packets waiting for a session that is busy: at 100 ms intervals, many seconds' worth. A
/// flood beyond it is dropped rather than queued without bound.
const SESSION_QUEUE: usize = 64;
/// Binding port 3784 again right after the last session of an address stopped can find the old
/// listener's socket still open for a moment (its task is dropped on the runtime's next turn).
const BIND_ATTEMPTS: u32 = 20;
const BIND_RETRY: Duration = Duration::from_millis(10);
/// After an unexpected receive error, so that a persistent one does not spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a session runs between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    /// Our address on the link to the peer: packets leave from it and are received on it.
    pub local: IpAddr,
    pub peer: IpAddr,
    pub timers: Timers,
    /// The UDP port Control packets are sent to and received on: [`CONTROL_PORT`] (3784) but
    /// in tests, which may not own it.
    pub control_port: u16,
}

impl BfdConfig {
    pub fn new(local: IpAddr, peer: IpAddr, timers: Timers) -> Self {
        Self {
            local,
            peer,
            timers,
            control_port: CONTROL_PORT,
        }
    }
}

/// A session's state as the BGP glue watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdStatus {
    pub state: SessionState,
    /// Our diagnostic: why the session last changed state.
    pub diagnostic: Diagnostic,
    /// When the session entered `state`.
    pub since: Instant,
    /// The change that led here; `None` for the Down a session starts in. A BGP session should
    /// be torn down when this is a path failure ([`StateChange::is_path_failure`]).
    pub change: Option<StateChange>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("BFD local address {local} and peer {peer} are of different address families")]
    MixedFamilies { local: IpAddr, peer: IpAddr },
    #[error("{address} cannot be a BFD session address (unspecified, multicast or broadcast)")]
    UnusableAddress { address: IpAddr },
    #[error(
        "{address} is IPv6 link-local, which needs an interface; BFD sessions take global addresses only"
    )]
    LinkLocal { address: IpAddr },
    #[error("a BFD session from {local} to {peer} already runs")]
    AlreadyRunning { local: IpAddr, peer: IpAddr },
    #[error("opening the BFD {role} socket on {local}: {source}")]
    Socket {
        role: &'static str,
        local: IpAddr,
        source: io::Error,
    },
}

enum Command {
    Input(Input),
    /// Send AdminDown, then stop; answered once the packet is out.
    Shutdown(oneshot::Sender<()>),
}

/// One running session. Dropping it stops the task at once, silently: the peer notices within
/// its detection time, as it would if this node died. [`BfdSession::shutdown`] tells it first.
pub struct BfdSession {
    config: BfdConfig,
    local_discriminator: NonZeroU32,
    status: watch::Receiver<BfdStatus>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    /// Unregisters from the listener when the session is dropped.
    _route: Route,
}

impl BfdSession {
    /// Opens the sockets in the calling thread's network namespace and starts the session's
    /// task on the current Tokio runtime. The session starts Down and sends at once.
    pub async fn start(config: BfdConfig) -> Result<Self, StartError> {
        check_addresses(config.local, config.peer)?;
        let listener = listener_for(config.local, config.control_port).await?;
        let (inbound_tx, inbound) = mpsc::channel(SESSION_QUEUE);
        let route = Route::register(listener, config, inbound_tx)?;
        let first_port = *SOURCE_PORTS.start() + (random_u16() % 16_384);
        let socket = transport::bind_sender(config.local, first_port)
            .and_then(UdpSocket::from_std)
            .map_err(|source| StartError::Socket {
                role: "sending",
                local: config.local,
                source,
            })?;
        let local_discriminator = next_discriminator();
        let session = Session::new(config.timers, local_discriminator);
        let (status_tx, status) = watch::channel(BfdStatus {
            state: session.state(),
            diagnostic: session.diagnostic(),
            since: Instant::now(),
            change: None,
        });
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            session,
            socket,
            peer: SocketAddr::new(config.peer, config.control_port),
            status: status_tx,
            transmit_at: None,
            detection_at: None,
        };
        let task = tokio::spawn(driver.run(inbound, commands_rx));
        Ok(Self {
            config,
            local_discriminator,
            status,
            commands,
            task,
            _route: route,
        })
    }

    /// A receiver of the session's state; `changed()` wakes on every state change.
    pub fn status(&self) -> watch::Receiver<BfdStatus> {
        self.status.clone()
    }

    pub fn config(&self) -> &BfdConfig {
        &self.config
    }

    /// The My Discriminator of our packets (what the peer shows as the remote id).
    pub fn local_discriminator(&self) -> NonZeroU32 {
        self.local_discriminator
    }

    /// Takes the session administratively down (AdminDown, the peer told) or enables it again.
    pub fn set_admin_down(&self, down: bool) {
        let input = if down {
            Input::AdminDown
        } else {
            Input::AdminUp
        };
        // The task only ends with the session; a send failure means it panicked, already logged.
        let _ = self.commands.send(Command::Input(input));
    }

    /// New intervals and multiplier; an Up session negotiates them with a Poll Sequence.
    pub fn set_timers(&self, timers: Timers) {
        let _ = self.commands.send(Command::Input(Input::SetTimers(timers)));
    }

    /// Stops the session after telling the peer it goes AdminDown, so that the peer does not
    /// take it for a failure (RFC 5882 §3.2): for a BGPPeer that no longer wants BFD, or a
    /// speaker shutting down.
    pub async fn shutdown(self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = sent.await;
        }
    }
}

impl Drop for BfdSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check_addresses(local: IpAddr, peer: IpAddr) -> Result<(), StartError> {
    if local.is_ipv4() != peer.is_ipv4() {
        return Err(StartError::MixedFamilies { local, peer });
    }
    for address in [local, peer] {
        let unusable = address.is_unspecified()
            || address.is_multicast()
            || matches!(address, IpAddr::V4(v4) if v4.is_broadcast());
        if unusable {
            return Err(StartError::UnusableAddress { address });
        }
        if matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            return Err(StartError::LinkLocal { address });
        }
    }
    Ok(())
}

/// The task of one session.
struct Driver {
    session: Session,
    socket: UdpSocket,
    peer: SocketAddr,
    status: watch::Sender<BfdStatus>,
    transmit_at: Option<Instant>,
    detection_at: Option<Instant>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<ControlPacket>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let actions = self.session.start(Instant::now(), random_jitter());
        self.perform(actions).await;
        loop {
            let input = tokio::select! {
                // Packets first: one that is already here counts, however late we look.
                biased;
                packet = inbound.recv() => match packet {
                    Some(packet) => Input::Received(packet),
                    None => return,
                },
                command = commands.recv() => match command {
                    Some(Command::Input(input)) => input,
                    Some(Command::Shutdown(done)) => {
                        let actions = self.session.handle(Input::AdminDown, Instant::now());
                        self.perform(actions).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                () = sleep_until(self.detection_at) => Input::DetectionTimer,
                () = sleep_until(self.transmit_at) => Input::TransmitTimer { jitter: random_jitter() },
            };
            let actions = self.session.handle(input, Instant::now());
            self.perform(actions).await;
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(packet) => {
                    if let Err(error) = self.socket.send_to(&packet.to_bytes(), self.peer).await {
                        // The link is down or the route gone: detection times tell the story.
                        tracing::debug!(peer = %self.peer, %error, "sending a BFD packet failed");
                    }
                }
                Action::StateChanged(change) => {
                    tracing::info!(
                        peer = %self.peer.ip(),
                        from = %change.from,
                        to = %change.to,
                        diagnostic = %change.diagnostic,
                        remote_state = %change.remote_state,
                        "BFD session state changed"
                    );
                    self.status.send_replace(BfdStatus {
                        state: change.to,
                        diagnostic: change.diagnostic,
                        since: Instant::now(),
                        change: Some(change),
                    });
                }
                Action::SetTransmitTimer(at) => self.transmit_at = at,
                Action::SetDetectionTimer(at) => self.detection_at = at,
                Action::Discarded(reason) => {
                    tracing::debug!(peer = %self.peer.ip(), %reason, "BFD packet discarded");
                }
            }
        }
    }
}

type Routes = Mutex<BTreeMap<IpAddr, mpsc::Sender<ControlPacket>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which listener: a local address in one network namespace (`/proc/thread-self/ns/net`'s
/// device and inode), so that threads in different namespaces never share a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ListenerKey {
    netns: (u64, u64),
    local: SocketAddr,
}

fn current_netns() -> (u64, u64) {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|metadata| (metadata.dev(), metadata.ino()))
        .unwrap_or((0, 0))
}

static LISTENERS: Mutex<BTreeMap<ListenerKey, Weak<Listener>>> = Mutex::new(BTreeMap::new());

/// The receive socket of one local address and the task that reads it.
struct Listener {
    key: ListenerKey,
    routes: Arc<Routes>,
    reader: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.reader.abort();
        let mut listeners = lock(&LISTENERS);
        if listeners
            .get(&self.key)
            .is_some_and(|entry| entry.strong_count() == 0)
        {
            listeners.remove(&self.key);
        }
    }
}

async fn listener_for(local: IpAddr, port: u16) -> Result<Arc<Listener>, StartError> {
    let key = ListenerKey {
        netns: current_netns(),
        local: SocketAddr::new(local, port),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        {
            let mut listeners = lock(&LISTENERS);
            if let Some(listener) = listeners.get(&key).and_then(Weak::upgrade) {
                return Ok(listener);
            }
            let bound = transport::bind_receiver(key.local).and_then(UdpSocket::from_std);
            match bound {
                Ok(socket) => {
                    let routes = Arc::new(Routes::default());
                    let reader = tokio::spawn(read_packets(socket, Arc::clone(&routes)));
                    let listener = Arc::new(Listener {
                        key,
                        routes,
                        reader,
                    });
                    listeners.insert(key, Arc::downgrade(&listener));
                    return Ok(listener);
                }
                Err(error)
                    if error.kind() == io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {}
                Err(source) => {
                    return Err(StartError::Socket {
                        role: "receiving",
                        local,
                        source,
                    });
                }
            }
        }
        tokio::time::sleep(BIND_RETRY).await;
    }
}

/// A session's entry in its listener.
struct Route {
    listener: Arc<Listener>,
    peer: IpAddr,
}

impl Route {
    fn register(
        listener: Arc<Listener>,
        config: BfdConfig,
        inbound: mpsc::Sender<ControlPacket>,
    ) -> Result<Self, StartError> {
        {
            let mut routes = lock(&listener.routes);
            if routes.contains_key(&config.peer) {
                return Err(StartError::AlreadyRunning {
                    local: config.local,
                    peer: config.peer,
                });
            }
            routes.insert(config.peer, inbound);
        }
        Ok(Self {
            listener,
            peer: config.peer,
        })
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.listener.routes).remove(&self.peer);
    }
}

/// Reads one local address's Control packets and hands each to its peer's session. What is
/// dropped here is dropped for a reason the debug log names.
async fn read_packets(socket: UdpSocket, routes: Arc<Routes>) {
    let mut buffer = [0u8; RECEIVE_BUFFER_LEN];
    loop {
        let received = socket
            .async_io(Interest::READABLE, || {
                transport::receive(socket.as_fd(), &mut buffer)
            })
            .await;
        let datagram = match received {
            Ok(datagram) => datagram,
            Err(error) => {
                tracing::debug!(%error, "reading BFD packets failed");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        let source = datagram.source;
        if datagram.ttl != Some(REQUIRED_TTL) {
            // RFC 5881 §5: only a packet from the link itself arrives with TTL 255.
            tracing::debug!(%source, ttl = ?datagram.ttl, "BFD packet discarded: TTL is not 255");
            continue;
        }
        if datagram.truncated {
            tracing::debug!(%source, "BFD packet discarded: longer than any Control packet");
            continue;
        }
        let packet = match packet::parse(&buffer[..datagram.len]) {
            Ok(packet) => packet,
            Err(reason) => {
                tracing::debug!(%source, %reason, "BFD packet discarded");
                continue;
            }
        };
        let session = lock(&routes).get(&source.ip()).cloned();
        match session {
            Some(session) => {
                if session.try_send(packet).is_err() {
                    tracing::debug!(%source, "BFD packet discarded: its session is not keeping up");
                }
            }
            None => tracing::debug!(%source, "BFD packet discarded: no session with this peer"),
        }
    }
}

fn random_u64() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    // Each RandomState has fresh keys: SipHash under them is random enough for jitter and
    // discriminators, without a dependency.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

fn random_u16() -> u16 {
    u16::try_from(random_u64() >> 48).unwrap_or_default()
}

fn random_jitter() -> Jitter {
    Jitter::new(random_u16())
}

/// Unique among this process's sessions (RFC 5880 §6.3), from a random start so that a
/// restarted speaker does not reuse its predecessor's.
fn next_discriminator() -> NonZeroU32 {
    static NEXT: LazyLock<AtomicU32> =
        LazyLock::new(|| AtomicU32::new(u32::try_from(random_u64() >> 32).unwrap_or(1)));
    loop {
        if let Some(discriminator) = NonZeroU32::new(NEXT.fetch_add(1, Ordering::Relaxed)) {
            return discriminator;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn timers() -> Timers {
        Timers::new(Duration::from_millis(20), Duration::from_millis(20), 3).unwrap()
    }

    fn loopback(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// A port free on the loopback addresses the test uses (not 3784, which the machine's own
    /// BFD may hold).
    fn free_port(addresses: &[u8]) -> u16 {
        for _ in 0..100 {
            let probe = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 1), 0)).unwrap();
            let port = probe.local_addr().unwrap().port();
            drop(probe);
            let free = addresses.iter().all(|&last| {
                std::net::UdpSocket::bind(SocketAddr::new(loopback(last), port)).is_ok()
            });
            if free {
                return port;
            }
        }
        panic!("no free port");
    }

    fn config(local: u8, peer: u8, port: u16) -> BfdConfig {
        BfdConfig {
            control_port: port,
            ..BfdConfig::new(loopback(local), loopback(peer), timers())
        }
    }

    async fn wait_for(
        status: &mut watch::Receiver<BfdStatus>,
        state: SessionState,
        within: Duration,
    ) -> BfdStatus {
        let found = tokio::time::timeout(within, status.wait_for(|s| s.state == state)).await;
        let status = found
            .unwrap_or_else(|_| panic!("not {state} within {within:?}"))
            .unwrap();
        *status
    }

    #[tokio::test]
    async fn sessions_on_loopback_come_up_share_a_listener_and_detect_a_silent_peer() {
        let port = free_port(&[21, 22, 23]);
        // Two sessions from .21 share its listener; .22 and .23 each answer one of them.
        let to_22 = BfdSession::start(config(21, 22, port)).await.unwrap();
        let to_23 = BfdSession::start(config(21, 23, port)).await.unwrap();
        let from_22 = BfdSession::start(config(22, 21, port)).await.unwrap();
        let from_23 = BfdSession::start(config(23, 21, port)).await.unwrap();
        let within = Duration::from_secs(10);
        let mut watches = [
            to_22.status(),
            to_23.status(),
            from_22.status(),
            from_23.status(),
        ];
        for watch in &mut watches {
            wait_for(watch, SessionState::Up, within).await;
        }
        assert!(matches!(
            BfdSession::start(config(21, 22, port)).await,
            Err(StartError::AlreadyRunning { .. })
        ));

        // .22 falls silent: .21 declares it down after the detection time (3 × 20 ms).
        let silenced = Instant::now();
        drop(from_22);
        let down = wait_for(&mut watches[0], SessionState::Down, Duration::from_secs(2)).await;
        let change = down.change.unwrap();
        assert_eq!(down.diagnostic, Diagnostic::CONTROL_DETECTION_TIME_EXPIRED);
        assert!(change.is_path_failure());
        assert!(
            down.since.duration_since(silenced) < Duration::from_millis(500),
            "detected after {:?}",
            down.since.duration_since(silenced)
        );
        // The other session of the shared listener is untouched.
        assert_eq!(watches[1].borrow().state, SessionState::Up);

        // .23 leaves politely: AdminDown, which is no path failure.
        from_23.shutdown().await;
        let down = wait_for(&mut watches[1], SessionState::Down, Duration::from_secs(2)).await;
        let change = down.change.unwrap();
        assert_eq!(down.diagnostic, Diagnostic::NEIGHBOR_SIGNALED_SESSION_DOWN);
        assert_eq!(change.remote_state, SessionState::AdminDown);
        assert!(!change.is_path_failure());

        // Administratively down and up again, on our side.
        to_22.set_admin_down(true);
        wait_for(
            &mut watches[0],
            SessionState::AdminDown,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(
            watches[0].borrow().diagnostic,
            Diagnostic::ADMINISTRATIVELY_DOWN
        );
        to_22.set_admin_down(false);
        wait_for(&mut watches[0], SessionState::Down, Duration::from_secs(1)).await;
        drop((to_22, to_23));
        // The listener went with its last session: the address can be listened on again.
        let again = BfdSession::start(config(21, 22, port)).await.unwrap();
        assert_eq!(again.status().borrow().state, SessionState::Down);
    }

    #[tokio::test]
    async fn refuses_addresses_it_cannot_run_between() {
        let v6: IpAddr = "2001:db8:1::1".parse().unwrap();
        let cases = [
            (loopback(1), v6),
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), loopback(2)),
            (loopback(1), "224.0.0.1".parse().unwrap()),
            ("fe80::1".parse().unwrap(), v6),
        ];
        for (local, peer) in cases {
            let result = BfdSession::start(BfdConfig::new(local, peer, timers())).await;
            let error = result.err().unwrap();
            assert!(!matches!(error, StartError::Socket { .. }), "{error}");
        }
        // An address this machine does not have cannot be bound.
        let absent = BfdConfig {
            control_port: free_port(&[1]),
            ..BfdConfig::new("198.51.100.254".parse().unwrap(), loopback(1), timers())
        };
        assert!(matches!(
            BfdSession::start(absent).await,
            Err(StartError::Socket { .. })
        ));
    }

    #[test]
    fn discriminators_are_unique_and_never_zero() {
        let drawn: std::collections::BTreeSet<u32> =
            (0..1000).map(|_| next_discriminator().get()).collect();
        assert_eq!(drawn.len(), 1000);
        let jitters: std::collections::BTreeSet<u16> = (0..100).map(|_| random_u16()).collect();
        assert!(jitters.len() > 50, "jitter hardly varies: {jitters:?}");
    }
}
