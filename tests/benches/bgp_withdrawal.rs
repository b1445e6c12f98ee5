//! How soon a router withdraws a node's routes when the node is lost, with BFD at 100 ms × 3
//! and without (hold time 3 s): the speaker's BGP session (the task the speaker runs) against
//! BIRD 2 in a router namespace, the node's loss made by dropping every packet in the node's
//! namespace (a power cut: no FIN, no NOTIFICATION, no BFD Down).
//!
//! Per round: the session comes up and BIRD holds the route; the node goes silent; the time until
//! BIRD no longer holds the route is the withdrawal time. Prints medians over the rounds.
//!
//! Run: `cargo bench -p ferrolb-tests --bench bgp_withdrawal` (root, BIRD 2). Targets: with BFD
//! ≤ 0.5 s, without ≤ the hold time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use ferrolb_speaker::bfd::Timers;
use ferrolb_speaker::bgp::State;
use ferrolb_speaker::bgp::advertisement::{AdvertisedAttributes, PeerRoutes};
use ferrolb_speaker::bgp_session_task::SessionSpec;
use ferrolb_tests::bgp_sessions::{Command, SessionThread, session_spec};
use ferrolb_tests::bird::{self, Bird, Neighbor, RouterConfig};
use ferrolb_tests::netlab::run;
use ferrolb_tests::router_link::{IPV4, RouterLink};

const ROUNDS: usize = 7;
const HOLD_TIME: u16 = 3;
const PREFIX: &str = "198.51.100.200/32";

struct Mode {
    name: &'static str,
    bfd: bool,
    target: Duration,
}

fn spec(bfd: bool) -> SessionSpec {
    let mut spec = session_spec(64513, 64512, IPV4.node.parse().unwrap(), IPV4.router_ip());
    spec.fsm.hold_time = Duration::from_secs(u64::from(HOLD_TIME));
    spec.bfd = bfd
        .then(|| Timers::new(Duration::from_millis(100), Duration::from_millis(100), 3).unwrap());
    spec
}

/// Every packet into or out of the node's namespace dropped, or let through again.
fn silence(netns: &str, silent: bool) -> anyhow::Result<()> {
    if silent {
        run(
            "ip",
            &[
                "netns",
                "exec",
                netns,
                "nft",
                "add table inet loss; add chain inet loss in { type filter hook input priority -300; policy drop; }; add chain inet loss out { type filter hook output priority -300; policy drop; }",
            ],
        )?;
    } else {
        run(
            "ip",
            &["netns", "exec", netns, "nft", "delete table inet loss"],
        )?;
    }
    Ok(())
}

fn has_route(bird: &Bird) -> anyhow::Result<bool> {
    Ok(!bird.routes_for(PREFIX)?.is_empty())
}

fn wait(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if check()? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("not {what} within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn measure(link: &RouterLink, mode: &Mode) -> anyhow::Result<Vec<Duration>> {
    let config = bird::render(&RouterConfig {
        router_id: IPV4.router.parse()?,
        asn: 64512,
        local_v4: Some(IPV4.router_ip()),
        local_v6: None,
        neighbors: vec![Neighbor {
            name: "node".into(),
            address: IPV4.node_ip(),
            asn: 64513,
            password: None,
            bfd: mode.bfd,
            local: None,
        }],
        hold_time: HOLD_TIME,
        bfd: mode.bfd.then_some((100, 100, 3)),
    })?;
    let bird = Bird::start(&link.router, &config)?;
    let mut node = SessionThread::start(&link.node)?;
    let routes: Arc<PeerRoutes> = Arc::new(
        [(PREFIX.parse()?, Arc::new(AdvertisedAttributes::default()))]
            .into_iter()
            .collect(),
    );
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        node.send(Command::Start(
            format!("round{round}"),
            Box::new(spec(mode.bfd)),
            routes.clone(),
        ))?;
        node.wait(
            &format!("round{round}"),
            Duration::from_secs(30),
            "Established",
            |r| {
                r.state == State::Established
                    && (!mode.bfd || r.bfd == Some(ferrolb_crds::bgp_session_state::BfdState::Up))
            },
        )?;
        wait("holding the route", Duration::from_secs(10), || {
            has_route(&bird)
        })?;
        if mode.bfd {
            // BIRD's side of BFD must be Up too, or it would not act on it.
            wait("BIRD's BFD Up", Duration::from_secs(10), || {
                Ok(bird.birdc("show bfd sessions")?.contains(" Up "))
            })?;
        }
        silence(&link.node, true)?;
        let withdrawn = wait(
            "withdrawn",
            Duration::from_secs(u64::from(HOLD_TIME) * 3),
            || Ok(!has_route(&bird)?),
        )?;
        times.push(withdrawn);
        silence(&link.node, false)?;
        let _ = node.stop(&format!("round{round}"));
        // BIRD back to waiting for the next session.
        wait("BIRD idle", Duration::from_secs(10), || {
            Ok(bird
                .protocols()?
                .iter()
                .all(|p| !p.info.starts_with("Established")))
        })?;
    }
    Ok(times)
}

fn main() -> anyhow::Result<()> {
    if !ferrolb_tests::harness::root_available("bgp_withdrawal")? {
        return Ok(());
    }
    if bird::version().is_none() {
        println!("SKIPPED bgp_withdrawal: BIRD 2 is not installed");
        return Ok(());
    }
    let link = RouterLink::new("bgpwd")?;
    let modes = [
        Mode {
            name: "BFD 100 ms x 3",
            bfd: true,
            target: Duration::from_millis(500),
        },
        Mode {
            name: "hold time 3 s, no BFD",
            bfd: false,
            target: Duration::from_secs(u64::from(HOLD_TIME)),
        },
    ];
    println!("withdrawal at BIRD after the node goes silent ({ROUNDS} rounds each)");
    for mode in &modes {
        let mut times = measure(&link, mode)?;
        let median = median(&mut times);
        println!(
            "  {}: median {:.0} ms, min {:.0} ms, max {:.0} ms (target <= {:.0} ms)",
            mode.name,
            median.as_secs_f64() * 1000.0,
            times[0].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0,
            mode.target.as_secs_f64() * 1000.0
        );
        ensure!(
            median <= mode.target,
            "{}: median {median:?} over the target",
            mode.name
        );
    }
    Ok(())
}
