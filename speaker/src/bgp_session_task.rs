//! One BGP session as a Tokio task: drives a [`bgp::Session`] with a real TCP connection and
//! timers, advertises the routes it is given with this node's address on the connection as the
//! next hop, runs BFD beside it when the peer asks for it, and reports every change.
//!
//! The session's own deadlines ([`bgp::Session::next_timer`]) are the only timers: the
//! StartTimer and StopTimer actions need no bookkeeping here.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferrolb_crds::Community;
use ferrolb_crds::bgp_session_state::BfdState;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::bfd::packet::SessionState as BfdPacketState;
use crate::bfd::runner::{BfdConfig, BfdSession, BfdStatus};
use crate::bfd::session::Timers;
use crate::bgp::advertisement::{AdvertisedAttributes, PeerRoutes};
use crate::bgp::codec::MAX_MESSAGE_LEN;
use crate::bgp::{
    self, Action, Input, Jitter, LargeCommunity, NextHop, RouteAttributes, SessionError, State,
    split_frame,
};
use crate::bgp_connection::{self, ConnectionConfig};

/// A write that does not drain in this time means a peer that stopped reading: the
/// connection is given up (its hold timer would end it later anyway).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop may take to withdraw, send Cease and close before the task is dropped.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything one session runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    pub fsm: bgp::Config,
    pub connection: ConnectionConfig,
    pub bfd: Option<Timers>,
}

/// Why the session last failed, for BGPSessionState and the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedError {
    /// A stable CamelCase reason (BGPWrongASN, BGPHoldTimerExpired, ...).
    pub reason: &'static str,
    pub text: String,
    pub at: SystemTime,
}

/// What the session reports after every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionReport {
    pub state: State,
    pub since: SystemTime,
    pub local_address: Option<IpAddr>,
    pub last_error: Option<ReportedError>,
    /// Bumped on every new error, so that the same error twice still shows as news.
    pub errors: u64,
    pub advertised: usize,
    pub hold_time_seconds: Option<u16>,
    pub bfd: Option<BfdState>,
    /// UPDATE messages sent since the task started.
    pub updates_sent: u64,
}

impl SessionReport {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Idle,
            since: SystemTime::now(),
            local_address: None,
            last_error: None,
            errors: 0,
            advertised: 0,
            hold_time_seconds: None,
            bfd: None,
            updates_sent: 0,
        }
    }
}

/// Tells a session's reports from those of the session it replaced (still stopping).
pub type SessionId = u64;

/// What sessions send: the peer, the session, its report.
pub type Reports = mpsc::UnboundedSender<(String, SessionId, SessionReport)>;

/// A running session.
pub struct SessionHandle {
    id: SessionId,
    spec: SessionSpec,
    routes: watch::Sender<Arc<PeerRoutes>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Starts the session on the current runtime; every report goes to `reports` with `peer`
    /// and `id`.
    pub fn start(
        peer: String,
        id: SessionId,
        spec: SessionSpec,
        routes: Arc<PeerRoutes>,
        reports: Reports,
    ) -> Self {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop_tx, stop_rx) = oneshot::channel();
        let driver = Driver::new(peer, id, spec.clone(), routes_rx, reports);
        let task = tokio::spawn(driver.run(stop_rx));
        Self {
            id,
            spec,
            routes: routes_tx,
            stop: Some(stop_tx),
            task,
        }
    }

    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn set_routes(&self, routes: Arc<PeerRoutes>) {
        self.routes.send_if_modified(|current| {
            let changed = **current != *routes;
            if changed {
                *current = routes;
            }
            changed
        });
    }

    /// Withdraws everything, sends NOTIFICATION Cease, closes, and waits for the task (at most
    /// [`STOP_TIMEOUT`]).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

fn jitter() -> Jitter {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    Jitter::from_random(hasher.finish() as u32)
}

struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    local: SocketAddr,
    buffer: Vec<u8>,
}

type Connecting = std::pin::Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

struct Driver {
    peer: String,
    id: SessionId,
    spec: SessionSpec,
    session: Option<bgp::Session>,
    routes: watch::Receiver<Arc<PeerRoutes>>,
    reports: Reports,
    report: SessionReport,
    connection: Option<Connection>,
    connecting: Option<Connecting>,
    bfd: Option<(BfdSession, watch::Receiver<BfdStatus>)>,
}

/// The routes of `routes` in the family of `local`, with `local` as their next hop; prefixes
/// with the same attributes share them, so they pack into the same UPDATEs.
pub fn route_table(routes: &PeerRoutes, local: IpAddr) -> BTreeMap<IpNet, Arc<RouteAttributes>> {
    let next_hop = match local {
        IpAddr::V4(v4) => NextHop::V4(v4),
        IpAddr::V6(v6) => NextHop::V6 {
            global: v6,
            link_local: None,
        },
    };
    let mut shared: HashMap<&AdvertisedAttributes, Arc<RouteAttributes>> = HashMap::new();
    routes
        .iter()
        .filter(|(prefix, _)| matches!(prefix, IpNet::V4(_)) == local.is_ipv4())
        .map(|(prefix, advertised)| {
            let attributes = shared
                .entry(advertised)
                .or_insert_with(|| Arc::new(attributes_of(advertised, next_hop)))
                .clone();
            (*prefix, attributes)
        })
        .collect()
}

fn attributes_of(advertised: &AdvertisedAttributes, next_hop: NextHop) -> RouteAttributes {
    let standard = advertised.communities.iter().filter_map(|c| match c {
        Community::Standard(value) => Some(*value),
        Community::Large { .. } => None,
    });
    let large = advertised.communities.iter().filter_map(|c| match c {
        Community::Standard(_) => None,
        Community::Large {
            global_admin,
            local_data1,
            local_data2,
        } => Some(LargeCommunity {
            global_admin: *global_admin,
            local_data1: *local_data1,
            local_data2: *local_data2,
        }),
    });
    RouteAttributes::new(next_hop)
        .with_local_pref(advertised.local_pref)
        .with_communities(standard)
        .with_large_communities(large)
}

fn bfd_state(state: BfdPacketState) -> BfdState {
    match state {
        BfdPacketState::AdminDown => BfdState::AdminDown,
        BfdPacketState::Down => BfdState::Down,
        BfdPacketState::Init => BfdState::Init,
        BfdPacketState::Up => BfdState::Up,
    }
}

async fn read_some(connection: &mut Option<Connection>) -> std::io::Result<usize> {
    match connection {
        Some(connection) => {
            if connection.buffer.capacity() - connection.buffer.len() < MAX_MESSAGE_LEN {
                connection.buffer.reserve(MAX_MESSAGE_LEN);
            }
            connection.reader.read_buf(&mut connection.buffer).await
        }
        None => std::future::pending().await,
    }
}

async fn connected(connecting: &mut Option<Connecting>) -> std::io::Result<TcpStream> {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn bfd_changed(bfd: &mut Option<(BfdSession, watch::Receiver<BfdStatus>)>) -> BfdStatus {
    match bfd {
        Some((_, status)) => {
            if status.changed().await.is_err() {
                return std::future::pending().await;
            }
            *status.borrow_and_update()
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn new(
        peer: String,
        id: SessionId,
        spec: SessionSpec,
        routes: watch::Receiver<Arc<PeerRoutes>>,
        reports: Reports,
    ) -> Self {
        Self {
            peer,
            id,
            spec,
            session: None,
            routes,
            reports,
            report: SessionReport::new(),
            connection: None,
            connecting: None,
            bfd: None,
        }
    }

    fn publish(&self) {
        let _ = self
            .reports
            .send((self.peer.clone(), self.id, self.report.clone()));
    }

    fn failed(&mut self, reason: &'static str, text: String) {
        tracing::warn!(peer = %self.peer, reason, "{text}");
        self.report.last_error = Some(ReportedError {
            reason,
            text,
            at: SystemTime::now(),
        });
        self.report.errors += 1;
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let session = match bgp::Session::new(self.spec.fsm.clone()) {
            Ok(session) => session,
            Err(error) => {
                self.failed("InvalidSpec", error.to_string());
                self.publish();
                let _ = stop.await;
                return;
            }
        };
        self.session = Some(session);
        let actions = self.input(Input::ManualStart);
        self.carry_out(actions).await;
        loop {
            let timer = self.session.as_ref().and_then(bgp::Session::next_timer);
            let actions = tokio::select! {
                biased;
                _ = &mut stop => break,
                result = connected(&mut self.connecting) => {
                    self.connecting = None;
                    match result {
                        Ok(stream) => match self.adopt(stream) {
                            Ok(()) => self.input(Input::TcpConnected),
                            Err(error) => self.input(Input::TcpConnectFailed(error.to_string())),
                        },
                        Err(error) => self.input(Input::TcpConnectFailed(error.to_string())),
                    }
                }
                read = read_some(&mut self.connection) => match read {
                    Ok(0) | Err(_) => {
                        self.drop_connection().await;
                        self.input(Input::TcpClosed)
                    }
                    Ok(_) => self.frames(),
                },
                changed = self.routes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.advertise()
                }
                status = bfd_changed(&mut self.bfd) => self.bfd_status(status).await,
                () = sleep_until(timer.map(|(_, at)| at)) => match timer {
                    Some((kind, _)) => self.input(Input::TimerExpired(kind)),
                    None => Vec::new(),
                },
            };
            self.carry_out(actions).await;
        }
        self.stop().await;
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Action> {
        match self.session.as_mut() {
            Some(session) => session.handle(input, Instant::now(), jitter()),
            None => Vec::new(),
        }
    }

    fn adopt(&mut self, stream: TcpStream) -> std::io::Result<()> {
        let local = stream.local_addr()?;
        let (reader, writer) = stream.into_split();
        self.connection = Some(Connection {
            reader,
            writer,
            local,
            buffer: Vec::with_capacity(MAX_MESSAGE_LEN),
        });
        self.report.local_address = Some(local.ip());
        Ok(())
    }

    /// Feeds every whole message read so far to the session.
    fn frames(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(mut buffer) = self
            .connection
            .as_mut()
            .map(|c| std::mem::take(&mut c.buffer))
        else {
            return actions;
        };
        let mut at = 0;
        loop {
            match split_frame(&buffer[at..]) {
                Ok(Some(length)) => {
                    let message = &buffer[at..at + length];
                    at += length;
                    if let Some(session) = self.session.as_mut() {
                        actions.extend(session.handle(
                            Input::Received(message),
                            Instant::now(),
                            jitter(),
                        ));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    at = buffer.len();
                    actions.extend(self.input(Input::FramingError(error)));
                    break;
                }
            }
            if actions.iter().any(|a| matches!(a, Action::CloseConnection)) {
                at = buffer.len();
                break;
            }
        }
        buffer.drain(..at);
        if let Some(connection) = self.connection.as_mut() {
            connection.buffer = buffer;
        }
        actions
    }

    fn advertise(&mut self) -> Vec<Action> {
        let routes = self.routes.borrow_and_update().clone();
        let Some(local) = self.connection.as_ref().map(|c| c.local.ip()) else {
            return Vec::new();
        };
        match self.session.as_mut() {
            Some(session) => session.set_routes(route_table(&routes, local)),
            None => Vec::new(),
        }
    }

    async fn bfd_status(&mut self, status: BfdStatus) -> Vec<Action> {
        self.report.bfd = Some(bfd_state(status.state));
        if !status.change.is_some_and(|c| c.is_path_failure()) {
            self.publish();
            return Vec::new();
        }
        let established = self
            .session
            .as_ref()
            .is_some_and(|s| s.state() == State::Established);
        if !established {
            self.publish();
            return Vec::new();
        }
        // RFC 5882 §4.2: the forwarding path is gone, so is the session, at once.
        self.failed(
            "BGPBFDDown",
            format!(
                "BFD declared the path to the peer down ({:?}): session closed",
                status.diagnostic
            ),
        );
        self.drop_connection().await;
        self.input(Input::TcpClosed)
    }

    async fn start_bfd(&mut self) {
        let (Some(timers), Some(local)) = (
            self.spec.bfd,
            self.connection.as_ref().map(|c| c.local.ip()),
        ) else {
            return;
        };
        if self.bfd.is_some() {
            return;
        }
        match BfdSession::start(BfdConfig::new(
            local,
            self.spec.connection.peer.ip(),
            timers,
        ))
        .await
        {
            Ok(session) => {
                let status = session.status();
                self.report.bfd = Some(bfd_state(status.borrow().state));
                self.bfd = Some((session, status));
            }
            Err(error) => self.failed("BGPBFDFailed", format!("cannot start BFD: {error}")),
        }
    }

    async fn stop_bfd(&mut self) {
        if let Some((session, _)) = self.bfd.take() {
            session.shutdown().await;
        }
        if self.spec.bfd.is_some() {
            self.report.bfd = Some(BfdState::Down);
        }
    }

    async fn drop_connection(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ = tokio::time::timeout(Duration::from_millis(200), connection.writer.shutdown())
                .await;
        }
        self.connecting = None;
    }

    /// Carries out `actions` and whatever they lead to, then reports.
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        let mut changed = false;
        while let Some(action) = queue.pop_front() {
            changed = true;
            match action {
                Action::Connect => {
                    let config = self.spec.connection.clone();
                    self.connecting =
                        Some(Box::pin(
                            async move { bgp_connection::connect(&config).await },
                        ));
                }
                Action::SendMessage(bytes) => {
                    let Some(connection) = self.connection.as_mut() else {
                        continue;
                    };
                    let written =
                        tokio::time::timeout(WRITE_TIMEOUT, connection.writer.write_all(&bytes))
                            .await;
                    if !matches!(written, Ok(Ok(()))) {
                        self.drop_connection().await;
                        queue.extend(self.input(Input::TcpClosed));
                    } else if bytes.get(18) == Some(&2) {
                        self.report.updates_sent += 1;
                    }
                }
                Action::CloseConnection => self.drop_connection().await,
                Action::StartTimer(..) | Action::StopTimer(_) => {}
                Action::StateChanged { to, .. } => {
                    tracing::info!(peer = %self.peer, state = %to, "BGP session state");
                    self.report.state = to;
                    self.report.since = SystemTime::now();
                    if !to.is_connected() {
                        self.report.hold_time_seconds = None;
                        self.report.local_address = None;
                        self.stop_bfd().await;
                    }
                    if to == State::OpenSent {
                        self.start_bfd().await;
                    }
                }
                Action::Established { negotiated } => {
                    self.report.hold_time_seconds =
                        u16::try_from(negotiated.hold_time.as_secs()).ok();
                    queue.extend(self.advertise());
                }
                Action::SessionDown { error, .. } => self.session_down(&error),
                Action::RouteRefreshRequested(family) => {
                    tracing::info!(peer = %self.peer, ?family, "the peer asked for our routes again");
                }
            }
        }
        if changed {
            self.report.advertised = self
                .session
                .as_ref()
                .and_then(bgp::Session::rib_out)
                .map_or(0, |rib| rib.sent().len());
            self.publish();
        }
    }

    fn session_down(&mut self, error: &SessionError) {
        if matches!(error, SessionError::AdministrativeStop) {
            return;
        }
        // A BFD teardown already said why; the closed connection it caused is not news.
        if matches!(error, SessionError::ConnectionClosed)
            && self.report.last_error.as_ref().is_some_and(|e| {
                e.reason == "BGPBFDDown" && e.at.elapsed().is_ok_and(|d| d < Duration::from_secs(1))
            })
        {
            return;
        }
        let mut text = error.to_string();
        if matches!(error, SessionError::PeerUnreachable { .. })
            && !self.spec.connection.password.is_empty()
        {
            text.push_str(
                " (a TCP MD5 password is set: a router with another password, or none, drops the \
                 connection silently)",
            );
        }
        self.failed(error.reason(), text);
    }

    /// Withdraws every route, says Cease and closes.
    async fn stop(&mut self) {
        let withdraw = match self.session.as_mut() {
            Some(session) => session.set_routes(BTreeMap::new()),
            None => Vec::new(),
        };
        self.carry_out(withdraw).await;
        let actions = self.input(Input::ManualStop);
        self.carry_out(actions).await;
        self.drop_connection().await;
        self.stop_bfd().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_the_local_address_as_next_hop_and_share_equal_attributes() {
        let mut routes = PeerRoutes::new();
        let tagged = Arc::new(AdvertisedAttributes {
            communities: Vec::from([
                Community::Standard(64512 << 16 | 100),
                Community::Large {
                    global_admin: 64512,
                    local_data1: 1,
                    local_data2: 2,
                },
            ]),
            local_pref: Some(200),
        });
        routes.insert("198.51.100.200/32".parse().unwrap(), tagged.clone());
        routes.insert("198.51.100.201/32".parse().unwrap(), tagged);
        routes.insert("2001:db8:1::200/128".parse().unwrap(), Arc::default());
        let local: IpAddr = "198.51.100.10".parse().unwrap();
        let table = route_table(&routes, local);
        assert_eq!(table.len(), 2, "only the session's family");
        let first = &table[&"198.51.100.200/32".parse::<IpNet>().unwrap()];
        let second = &table[&"198.51.100.201/32".parse::<IpNet>().unwrap()];
        assert!(Arc::ptr_eq(first, second));
        assert_eq!(
            first.next_hop(),
            NextHop::V4("198.51.100.10".parse().unwrap())
        );
        assert_eq!(first.communities(), [64512 << 16 | 100]);
        assert_eq!(first.large_communities().len(), 1);
        assert_eq!(first.local_pref(), Some(200));
        let v6 = route_table(&routes, "2001:db8:1::10".parse().unwrap());
        assert_eq!(v6.len(), 1);
    }
}
