//! The speaker's BGP sessions (`ferrolb_speaker::bgp_session_task`, the task the speaker runs per
//! peer) against BIRD 2, without Kubernetes: a router and a node namespace joined by one veth
//! (198.51.100.0/24, 2001:db8:1::/64), BIRD in the router, our sessions on a thread inside the
//! node.
//!
//! - eBGP over IPv4 and (MP-BGP) IPv6 reach Established; BIRD holds our routes with this node's
//!   address as next hop, our AS path and the standard and large communities we attached.
//! - iBGP from a second source address carries LOCAL_PREF.
//! - A peer that expects another AS of us refuses the session, and the report says BGPWrongASN.
//! - 10,000 routes go out in a handful of UPDATEs, and all reach BIRD.
//! - Stopping a session (what SIGTERM does) withdraws its routes at BIRD at once.
//!
//! Needs root and BIRD 2; skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use ferrolb_crds::Community;
use ferrolb_speaker::bgp::State;
use ferrolb_speaker::bgp::advertisement::{AdvertisedAttributes, PeerRoutes};
use ferrolb_speaker::bgp_session_task::SessionSpec;
use ferrolb_tests::bgp_sessions::{Command, SessionThread, session_spec};
use ferrolb_tests::bird::{self, Bird, Neighbor, RouterConfig};
use ferrolb_tests::harness::{root_available, skip};
use ferrolb_tests::netlab::run;
use ferrolb_tests::router_link::{IPV4, IPV6, NODE_LINK, RouterLink};
use ipnet::IpNet;

const TEST: &str = "sessions_with_bird_advertise_tag_scale_and_withdraw";
const ROUTER_ASN: u32 = 64512;
const NODE_ASN: u32 = 64513;
/// The node's second IPv4 address: the source of its iBGP session.
const IBGP_SOURCE: &str = "198.51.100.3";
/// The source of the session whose AS the router does not expect.
const WRONG_AS_SOURCE: &str = "198.51.100.4";
const SCALE: u32 = 10_000;
const SETTLE: Duration = Duration::from_secs(30);

fn spec(peer: IpAddr, source: Option<IpAddr>, my_asn: u32) -> SessionSpec {
    let mut spec = session_spec(my_asn, ROUTER_ASN, Ipv4Addr::new(198, 51, 100, 2), peer);
    spec.connection.source = source;
    if my_asn == ROUTER_ASN {
        spec.connection.ttl = 255;
    }
    spec
}

fn tagged() -> Arc<AdvertisedAttributes> {
    Arc::new(AdvertisedAttributes {
        communities: Vec::from([
            Community::Standard(64512 << 16 | 100),
            Community::Large {
                global_admin: 64512,
                local_data1: 1,
                local_data2: 2,
            },
        ]),
        local_pref: Some(250),
    })
}

fn routes(prefixes: &[&str]) -> Arc<PeerRoutes> {
    let tagged = tagged();
    Arc::new(
        prefixes
            .iter()
            .map(|p| (p.parse::<IpNet>().unwrap(), Arc::clone(&tagged)))
            .collect(),
    )
}

/// 198.51.100.0/24 holds only 256 host routes, so the 10,000 are /128s inside 2001:db8:1::/64.
fn scale_routes() -> Arc<PeerRoutes> {
    let plain = Arc::new(AdvertisedAttributes::default());
    Arc::new(
        (0..SCALE)
            .map(|i| {
                let address =
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 1, (i >> 16) as u16, i as u16);
                (
                    IpNet::new(IpAddr::V6(address), 128).unwrap(),
                    Arc::clone(&plain),
                )
            })
            .collect(),
    )
}

fn wait_bird<T>(
    bird: &Bird,
    within: Duration,
    what: &str,
    check: impl Fn(&Bird) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check(bird)? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!(
                "BIRD: not {what} within {within:?}\n{}\n{}",
                bird.birdc("show protocols all").unwrap_or_default(),
                bird.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many routes BIRD's table holds, from `show route count`.
fn route_count(bird: &Bird) -> anyhow::Result<u64> {
    let text = bird.birdc("show route count")?;
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "of")?;
            words.get(at.checked_sub(1)?)?.parse::<u64>().ok()
        })
        .max()
        .context("no count in `show route count`")
}

#[test]
fn sessions_with_bird_advertise_tag_scale_and_withdraw() -> anyhow::Result<()> {
    if !root_available(TEST)? {
        return Ok(());
    }
    if bird::version().is_none() {
        return skip(TEST, "BIRD 2 is not installed (apt-get install bird2)");
    }
    let link = RouterLink::new("bgp")?;
    for extra in [IBGP_SOURCE, WRONG_AS_SOURCE] {
        run(
            "ip",
            &[
                "-n",
                &link.node,
                "addr",
                "add",
                &format!("{extra}/24"),
                "dev",
                NODE_LINK,
            ],
        )?;
    }
    let neighbor = |name: &str, address: &str, asn: u32| Neighbor {
        name: name.to_owned(),
        address: address.parse().unwrap(),
        asn,
        password: None,
        bfd: false,
        local: None,
    };
    let config = bird::render(&RouterConfig {
        router_id: "198.51.100.1".parse()?,
        asn: ROUTER_ASN,
        local_v4: Some(IPV4.router_ip()),
        local_v6: Some(IPV6.router_ip()),
        neighbors: vec![
            neighbor("node4", IPV4.node, NODE_ASN),
            neighbor("node6", IPV6.node, NODE_ASN),
            neighbor("nodeibgp", IBGP_SOURCE, ROUTER_ASN),
            // The router expects AS 64599 from this address; the node says 64513.
            neighbor("nodewrongas", WRONG_AS_SOURCE, 64599),
        ],
        hold_time: 9,
        bfd: None,
    })?;
    let bird = Bird::start(&link.router, &config)?;
    let mut node = SessionThread::start(&link.node)?;
    let result = scenario(&bird, &mut node);
    if result.is_err() {
        eprintln!("BIRD log:\n{}", bird.log());
    }
    result
}

fn scenario(bird: &Bird, node: &mut SessionThread) -> anyhow::Result<()> {
    let v4 = "198.51.100.200/32";
    let v6 = "2001:db8:1::200/128";
    let ibgp = "198.51.100.201/32";
    node.send(Command::Start(
        "node4".into(),
        Box::new(spec(IPV4.router_ip(), None, NODE_ASN)),
        routes(&[v4, v6]),
    ))?;
    node.send(Command::Start(
        "node6".into(),
        Box::new(spec(IPV6.router_ip(), None, NODE_ASN)),
        routes(&[v4, v6]),
    ))?;
    node.send(Command::Start(
        "nodeibgp".into(),
        Box::new(spec(
            IPV4.router_ip(),
            Some(IBGP_SOURCE.parse()?),
            ROUTER_ASN,
        )),
        routes(&[ibgp]),
    ))?;
    node.send(Command::Start(
        "nodewrongas".into(),
        Box::new(spec(
            IPV4.router_ip(),
            Some(WRONG_AS_SOURCE.parse()?),
            NODE_ASN,
        )),
        routes(&[]),
    ))?;
    for name in ["node4", "node6", "nodeibgp"] {
        let report = node.wait(name, SETTLE, "Established", |r| {
            r.state == State::Established && r.advertised == 1
        })?;
        println!(
            "{name}: Established from {:?}, hold time {:?} s",
            report.local_address, report.hold_time_seconds
        );
    }
    let established = wait_bird(bird, SETTLE, "Established with 3 nodes", |bird| {
        let up: Vec<String> = bird
            .protocols()?
            .into_iter()
            .filter(|p| p.info.starts_with("Established"))
            .map(|p| p.name)
            .collect();
        Ok((up.len() == 3).then_some(up))
    })?;
    println!("BIRD: Established with {established:?}");

    // Each family on its own session, with the node's address there as the next hop.
    for (prefix, next_hop) in [(v4, IPV4.node_ip()), (v6, IPV6.node_ip())] {
        let route = wait_bird(bird, SETTLE, &format!("holding {prefix}"), |bird| {
            Ok(bird.routes_for(prefix)?.into_iter().next())
        })?;
        ensure!(route.next_hops == [next_hop], "{prefix}: {route:?}");
        ensure!(route.as_path == NODE_ASN.to_string(), "{prefix}: {route:?}");
        ensure!(route.communities == ["(64512,100)"], "{prefix}: {route:?}");
        ensure!(
            route.large_communities == ["(64512, 1, 2)"],
            "{prefix}: {route:?}"
        );
        ensure!(
            route.local_pref != Some(250),
            "LOCAL_PREF must not cross an external session: {route:?}"
        );
    }
    let internal = wait_bird(bird, SETTLE, "holding the iBGP route", |bird| {
        Ok(bird.routes_for(ibgp)?.into_iter().next())
    })?;
    ensure!(internal.local_pref == Some(250), "{internal:?}");
    ensure!(internal.as_path.is_empty(), "iBGP adds no AS: {internal:?}");

    let refused = node.wait("nodewrongas", SETTLE, "refused for its AS", |r| {
        r.last_error.is_some()
    })?;
    let error = refused.last_error.unwrap();
    ensure!(error.reason == "BGPWrongASN", "{error:?}");
    println!("wrong AS: {} ({})", error.text, error.reason);

    // Scale: 10,000 /128s in few UPDATEs, all at the router.
    let before = node.latest()["node6"].updates_sent;
    let started = Instant::now();
    node.send(Command::Routes("node6".into(), scale_routes()))?;
    let report = node.wait("node6", SETTLE, "advertising 10,000 routes", |r| {
        r.advertised == SCALE as usize
    })?;
    let count = wait_bird(bird, SETTLE, "holding 10,000 routes", |bird| {
        let count = route_count(bird)?;
        Ok((count >= u64::from(SCALE)).then_some(count))
    })?;
    let updates = report.updates_sent - before;
    println!(
        "scale: {SCALE} routes at BIRD ({count} in its table) {:?} after set_routes, in {updates} UPDATE messages",
        started.elapsed()
    );
    ensure!(
        updates <= 60,
        "{updates} UPDATEs for {SCALE} prefixes: they must be packed"
    );

    // Stopping a session withdraws its routes (then says Cease): what SIGTERM does.
    let started = Instant::now();
    node.stop("node4")?;
    wait_bird(bird, Duration::from_secs(2), "withdrawing v4", |bird| {
        Ok(bird.routes_for(v4)?.is_empty().then_some(()))
    })?;
    println!(
        "stop: {v4} gone at BIRD {:?} after the stop began",
        started.elapsed()
    );
    let down = wait_bird(bird, Duration::from_secs(5), "seeing node4 close", |bird| {
        Ok(bird
            .protocols()?
            .into_iter()
            .find(|p| p.name == "node4" && !p.info.starts_with("Established")))
    })?;
    println!("BIRD after the stop: {}", down.info);
    Ok(())
}
