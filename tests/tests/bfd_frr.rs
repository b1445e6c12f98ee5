//! FerroLB's BFD against FRR's bfdd, as a top-of-rack router would run it: two network
//! namespaces joined by one veth pair (198.51.100.0/24 and 2001:db8:1::/64 only, nothing routed
//! anywhere else), the "router" running zebra and bfdd with one single-hop peer per address
//! family at 100 ms × 3, the "node" running our sessions (`ferrolb_speaker::bfd`) on a thread
//! inside its namespace.
//!
//! Over IPv4 and IPv6: the sessions come Up on both sides and settle on 100 ms; a peer that FRR
//! shuts down administratively takes ours Down as no path failure; the router's link going down
//! takes ours Down by detection time; our session dropped (a dead node) is detected by FRR
//! within its detection time, and one shut down politely is seen as AdminDown by FRR.
//!
//! Needs root and FRR (zebra, bfdd, vtysh); skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use ferrolb_speaker::bfd::{BfdConfig, BfdSession, BfdStatus, Diagnostic, SessionState, Timers};
use ferrolb_speaker::probe::enter_netns;
use ferrolb_tests::frr::{self, BfdPeerConfig, BfdPeerState, Daemon, DaemonSpec, Frr};
use ferrolb_tests::harness::{root_available, skip};
use ferrolb_tests::router_link::{IPV4, IPV6, LinkFamily as Family, RouterLink};
use tokio::sync::{mpsc, watch};

const TEST: &str = "bfd_sessions_with_frr_come_up_and_detect_failures_both_ways";
const INTERVAL: Duration = Duration::from_millis(100);
const MULTIPLIER: u8 = 3;
/// What each side must detect the other's failure within (the detection time is 300 ms).
const DETECTION_BOUND: Duration = Duration::from_secs(1);
/// Down to Up takes a slow (1 s, RFC 5880 §6.8.3) exchange or two.
const COME_UP: Duration = Duration::from_secs(15);

fn timers() -> Timers {
    Timers::new(INTERVAL, INTERVAL, MULTIPLIER).unwrap()
}

enum NodeCommand {
    /// Drop the session: it stops without a word, as a dead node would.
    Drop(usize),
    /// Shut the session down politely (AdminDown first).
    Shutdown(usize),
}

/// Our side: one session per family, run by a thread inside the node's namespace (sockets
/// belong to the namespace they are opened in). Stopped and joined on drop.
struct Node {
    commands: Option<mpsc::UnboundedSender<NodeCommand>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    statuses: [watch::Receiver<BfdStatus>; 2],
    discriminators: [u32; 2],
}

type Ready = ([watch::Receiver<BfdStatus>; 2], [u32; 2]);

impl Node {
    fn start(netns: &str) -> anyhow::Result<Self> {
        let (ready_tx, ready) = std_mpsc::channel::<Ready>();
        let (commands, mut commands_rx) = mpsc::unbounded_channel();
        let netns = netns.to_owned();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            enter_netns(&netns).context("entering the node's namespace")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut sessions = Vec::new();
                for family in [IPV4, IPV6] {
                    let config = BfdConfig::new(family.node_ip(), family.router_ip(), timers());
                    let session = BfdSession::start(config)
                        .await
                        .with_context(|| format!("starting the {} session", family.name))?;
                    sessions.push(Some(session));
                }
                let status = |i: usize| sessions[i].as_ref().map(BfdSession::status);
                let discriminator =
                    |i: usize| sessions[i].as_ref().map(|s| s.local_discriminator().get());
                let ready = (
                    [status(0).unwrap(), status(1).unwrap()],
                    [discriminator(0).unwrap(), discriminator(1).unwrap()],
                );
                ready_tx.send(ready)?;
                while let Some(command) = commands_rx.recv().await {
                    match command {
                        NodeCommand::Drop(index) => drop(sessions[index].take()),
                        NodeCommand::Shutdown(index) => {
                            if let Some(session) = sessions[index].take() {
                                session.shutdown().await;
                            }
                        }
                    }
                }
                Ok(())
            })
        });
        match ready.recv_timeout(Duration::from_secs(10)) {
            Ok((statuses, discriminators)) => Ok(Self {
                commands: Some(commands),
                thread: Some(thread),
                statuses,
                discriminators,
            }),
            Err(_) => {
                drop(commands);
                match thread.join() {
                    Ok(Err(error)) => Err(error.context("the node's BFD did not start")),
                    Ok(Ok(())) => bail!("the node's BFD thread ended before starting"),
                    Err(_) => bail!("the node's BFD thread panicked"),
                }
            }
        }
    }

    fn status(&self, family: Family) -> BfdStatus {
        *self.statuses[family.index].borrow()
    }

    /// Waits (bounded) until our session of `family` is in `state`.
    fn wait_state(
        &self,
        family: Family,
        state: SessionState,
        within: Duration,
    ) -> anyhow::Result<BfdStatus> {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status(family);
            if status.state == state {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "our {} session not {state} within {within:?}: {status:?}",
                    family.name
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn send(&self, command: NodeCommand) -> anyhow::Result<()> {
        self.commands
            .as_ref()
            .context("node stopped")?
            .send(command)
            .map_err(|_| anyhow::anyhow!("the node's BFD thread is gone"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop, which drops the sessions.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("the node's BFD thread failed: {error:#}"),
                Err(_) => eprintln!("the node's BFD thread panicked"),
            }
        }
    }
}

/// Polls bfdd (bounded) until its session with our `family` address satisfies `check`; returns
/// the session and when it was seen so.
fn wait_frr(
    router: &Frr,
    family: Family,
    within: Duration,
    what: &str,
    check: impl Fn(&BfdPeerState) -> bool,
) -> anyhow::Result<(BfdPeerState, Instant)> {
    let deadline = Instant::now() + within;
    let mut last = None;
    for _ in 0..10_000 {
        let peer = router.bfd_peer(family.node_ip())?;
        let seen = Instant::now();
        if let Some(peer) = peer {
            if check(&peer) {
                return Ok((peer, seen));
            }
            last = Some(peer);
        }
        if seen > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!(
        "FRR's {} session not {what} within {within:?}: {last:?}",
        family.name
    )
}

/// Both sides Up for `family`, FRR knowing our discriminator and our 100 ms × 3.
fn wait_up_both_sides(router: &Frr, node: &Node, family: Family) -> anyhow::Result<()> {
    node.wait_state(family, SessionState::Up, COME_UP)?;
    let ours = node.discriminators[family.index];
    let millis = u32::try_from(INTERVAL.as_millis()).unwrap();
    // Up first; the Poll Sequence that moves from 1 s to 100 ms follows within an interval.
    wait_frr(router, family, COME_UP, "up at 100 ms", |peer| {
        peer.status == "up"
            && peer.remote_id == ours
            && peer.remote_transmit_interval == millis
            && peer.remote_receive_interval == millis
            && peer.remote_detect_multiplier == u32::from(MULTIPLIER)
    })?;
    Ok(())
}

fn frr_peer_block(family: Family) -> String {
    format!("peer {} local-address {}", family.node, family.router)
}

#[test]
fn bfd_sessions_with_frr_come_up_and_detect_failures_both_ways() -> anyhow::Result<()> {
    if !root_available(TEST)? {
        return Ok(());
    }
    if let Some(reason) = frr::unavailable(&[Daemon::Zebra, Daemon::Bfdd]) {
        return skip(TEST, &reason);
    }
    let link = RouterLink::new("bfd")?;
    let peers: Vec<BfdPeerConfig> = [IPV4, IPV6]
        .iter()
        .map(|family| BfdPeerConfig {
            peer: family.node_ip(),
            local: family.router_ip(),
            transmit_interval: INTERVAL,
            receive_interval: INTERVAL,
            detect_multiplier: MULTIPLIER,
        })
        .collect();
    let router = Frr::start(
        &link.router,
        &[
            DaemonSpec::new(Daemon::Zebra, "! no configuration\n"),
            DaemonSpec::new(Daemon::Bfdd, frr::render_bfd(&peers)?),
        ],
    )?;
    let node = Node::start(&link.node)?;
    let result = scenario(&link, &router, &node);
    if result.is_err() {
        eprintln!("--- FRR bfdd ---\n{}", router.log(Daemon::Bfdd));
    }
    drop(node);
    drop(router);
    drop(link);
    result
}

fn scenario(link: &RouterLink, router: &Frr, node: &Node) -> anyhow::Result<()> {
    // Up on both sides, both families, at the configured rate.
    let started = Instant::now();
    for family in [IPV4, IPV6] {
        wait_up_both_sides(router, node, family)?;
        println!(
            "{}: Up on both sides after {:?}",
            family.name,
            started.elapsed()
        );
    }

    // FRR takes its IPv4 peer down administratively: ours goes Down at once, as no failure.
    let asked = Instant::now();
    router.configure(&["bfd", &frr_peer_block(IPV4), "shutdown"])?;
    let down = node.wait_state(IPV4, SessionState::Down, DETECTION_BOUND)?;
    let change = down.change.context("a change")?;
    ensure!(change.remote_state == SessionState::AdminDown, "{change:?}");
    ensure!(down.diagnostic == Diagnostic::NEIGHBOR_SIGNALED_SESSION_DOWN);
    ensure!(!change.is_path_failure());
    println!(
        "IPv4: FRR's administrative shutdown seen after {:?}",
        down.since.duration_since(asked)
    );
    ensure!(
        node.status(IPV6).state == SessionState::Up,
        "IPv6 untouched"
    );
    router.configure(&["bfd", &frr_peer_block(IPV4), "no shutdown"])?;
    wait_up_both_sides(router, node, IPV4)?;

    // The router's link goes down: nothing arrives, and ours detect it by time alone.
    let cut = Instant::now();
    link.set_router_link(false)?;
    for family in [IPV4, IPV6] {
        let down = node.wait_state(family, SessionState::Down, DETECTION_BOUND * 2)?;
        let detected = down.since.duration_since(cut);
        println!(
            "{}: router's link down detected after {detected:?}",
            family.name
        );
        ensure!(
            down.diagnostic == Diagnostic::CONTROL_DETECTION_TIME_EXPIRED,
            "{down:?}"
        );
        ensure!(down.change.is_some_and(|c| c.is_path_failure()));
        ensure!(
            detected < DETECTION_BOUND,
            "{} took {detected:?}",
            family.name
        );
        // At least the detection time less one interval passed since the last packet.
        ensure!(
            detected >= Duration::from_millis(150),
            "{detected:?}: too early"
        );
    }
    link.set_router_link(true)?;
    for family in [IPV4, IPV6] {
        wait_up_both_sides(router, node, family)?;
    }

    // Our IPv4 session dies without a word: FRR detects it within its detection time.
    let died = Instant::now();
    node.send(NodeCommand::Drop(IPV4.index))?;
    let (peer, seen) = wait_frr(router, IPV4, DETECTION_BOUND * 2, "down", |peer| {
        peer.status == "down"
    })?;
    let detected = seen.duration_since(died);
    println!("IPv4: FRR saw our session die after at most {detected:?}");
    ensure!(
        peer.diagnostic == "control detection time expired",
        "{peer:?}"
    );
    ensure!(detected < DETECTION_BOUND, "FRR took {detected:?}");

    // Our IPv6 session says goodbye: FRR sees AdminDown at once.
    let left = Instant::now();
    node.send(NodeCommand::Shutdown(IPV6.index))?;
    let (peer, seen) = wait_frr(router, IPV6, DETECTION_BOUND * 2, "down", |peer| {
        peer.status == "down"
    })?;
    println!(
        "IPv6: FRR saw our AdminDown after at most {:?}",
        seen.duration_since(left)
    );
    ensure!(
        peer.remote_diagnostic == "administratively down",
        "{peer:?}"
    );
    ensure!(seen.duration_since(left) < DETECTION_BOUND);
    Ok(())
}
