//! The speaker's BGP sessions run by a test, outside the speaker: each a
//! [`SessionHandle`] on a thread inside the node's network namespace (sockets belong to the
//! namespace they are opened in), driven by commands, with every report kept. For tests and
//! benchmarks of sessions against real routers without Kubernetes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_speaker::bgp::advertisement::PeerRoutes;
use ferrolb_speaker::bgp::{self, Families, Family};
use ferrolb_speaker::bgp_connection::ConnectionConfig;
use ferrolb_speaker::bgp_session_task::{SessionHandle, SessionReport, SessionSpec};
use ferrolb_speaker::probe::enter_netns;
use tokio::sync::mpsc;

type Report = (
    String,
    ferrolb_speaker::bgp_session_task::SessionId,
    SessionReport,
);

/// A session from `my_asn` to the router at `peer` (`peer_asn`), as the tests run them: hold
/// time 9 s, connect retries from 200 ms backing off to 1 s, one attempt at most 2 s, the peer's
/// address family only, from the address the kernel picks, no password, TTL 1, no BFD. Callers
/// change what their test is about.
pub fn session_spec(my_asn: u32, peer_asn: u32, router_id: Ipv4Addr, peer: IpAddr) -> SessionSpec {
    let mut fsm = bgp::Config::new(my_asn, peer_asn, router_id);
    fsm.hold_time = Duration::from_secs(9);
    fsm.connect_time = Duration::from_secs(2);
    fsm.backoff.initial = Duration::from_millis(200);
    fsm.backoff.cap = Duration::from_secs(1);
    let mut families = Families::NONE;
    families.insert(if peer.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    });
    fsm.families = families;
    SessionSpec {
        fsm,
        connection: ConnectionConfig {
            peer: SocketAddr::new(peer, 179),
            source: None,
            password: Vec::new(),
            ttl: 1,
            timeout: Duration::from_secs(2),
        },
        bfd: None,
    }
}

/// What the session thread is told.
pub enum Command {
    Start(String, Box<SessionSpec>, Arc<PeerRoutes>),
    Routes(String, Arc<PeerRoutes>),
    Stop(String, std_mpsc::Sender<()>),
}

/// Our side: sessions on a thread inside the node's namespace.
pub struct SessionThread {
    commands: mpsc::UnboundedSender<Command>,
    reports: std_mpsc::Receiver<Report>,
    latest: BTreeMap<String, SessionReport>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SessionThread {
    pub fn start(netns: &str) -> anyhow::Result<Self> {
        let (commands, mut commands_rx) = mpsc::unbounded_channel::<Command>();
        let (reports_tx, reports) = std_mpsc::channel();
        let netns = netns.to_owned();
        let thread = std::thread::spawn(move || {
            if let Err(error) = enter_netns(&netns) {
                eprintln!("the session thread cannot enter {netns}: {error}");
                return;
            }
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let forward = tokio::spawn(async move {
                    while let Some(report) = rx.recv().await {
                        if reports_tx.send(report).is_err() {
                            break;
                        }
                    }
                });
                let mut sessions: BTreeMap<String, SessionHandle> = BTreeMap::new();
                let mut next = 0;
                while let Some(command) = commands_rx.recv().await {
                    match command {
                        Command::Start(name, spec, routes) => {
                            next += 1;
                            let handle =
                                SessionHandle::start(name.clone(), next, *spec, routes, tx.clone());
                            sessions.insert(name, handle);
                        }
                        Command::Routes(name, routes) => {
                            if let Some(session) = sessions.get(&name) {
                                session.set_routes(routes);
                            }
                        }
                        Command::Stop(name, done) => {
                            if let Some(session) = sessions.remove(&name) {
                                session.stop().await;
                            }
                            let _ = done.send(());
                        }
                    }
                }
                for (_, session) in sessions {
                    session.stop().await;
                }
                drop(tx);
                let _ = forward.await;
            });
        });
        Ok(Self {
            commands,
            reports,
            latest: BTreeMap::new(),
            thread: Some(thread),
        })
    }

    pub fn send(&self, command: Command) -> anyhow::Result<()> {
        self.commands
            .send(command)
            .ok()
            .context("the session thread has ended")
    }

    /// Stops one session (withdraw, Cease, close) and waits for it.
    pub fn stop(&self, name: &str) -> anyhow::Result<()> {
        let (done, stopped) = std_mpsc::channel();
        self.send(Command::Stop(name.to_owned(), done))?;
        stopped
            .recv_timeout(Duration::from_secs(5))
            .context("the session did not stop within 5 s")
    }

    /// The latest report of each session.
    pub fn latest(&mut self) -> &BTreeMap<String, SessionReport> {
        self.drain();
        &self.latest
    }

    fn drain(&mut self) {
        while let Ok((name, _, report)) = self.reports.try_recv() {
            self.latest.insert(name, report);
        }
    }

    /// Waits until `name`'s latest report satisfies `check`.
    pub fn wait(
        &mut self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&SessionReport) -> bool,
    ) -> anyhow::Result<SessionReport> {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if let Some(report) = self.latest.get(name).filter(|r| check(r)) {
                return Ok(report.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name}: not {what} within {within:?}; last report {:?}",
                    self.latest.get(name)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SessionThread {
    fn drop(&mut self) {
        let (replacement, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.commands, replacement));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
