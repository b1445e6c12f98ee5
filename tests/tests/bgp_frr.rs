//! The speaker's BGP sessions against FRR's bgpd, without Kubernetes (the session task the
//! speaker runs per peer, on a thread inside a node namespace; FRR in a router namespace; one veth
//! between them, 198.51.100.0/24 and 2001:db8:1::/64 only).
//!
//! - With the TCP MD5 password FRR has for the node (RFC 2385, TCP_MD5SIG), the session reaches
//!   Established and FRR installs our route.
//! - With a wrong password FRR drops our segments: the session never comes up, and its report
//!   says why it may be (peer unreachable, a password is set).
//! - IPv6 over MP-BGP reaches FRR with our IPv6 address as next hop.
//!
//! Needs root and FRR (zebra, bgpd, vtysh); skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use ferrolb_speaker::bgp::State;
use ferrolb_speaker::bgp::advertisement::{AdvertisedAttributes, PeerRoutes};
use ferrolb_speaker::bgp_session_task::SessionSpec;
use ferrolb_tests::bgp_sessions::{Command, SessionThread, session_spec};
use ferrolb_tests::frr::{self, Daemon, DaemonSpec, Frr};
use ferrolb_tests::harness::{root_available, skip};
use ferrolb_tests::netlab::run;
use ferrolb_tests::router_link::{IPV4, IPV6, NODE_LINK, RouterLink};
use serde_json::Value;

const TEST: &str = "md5_sessions_with_frr_come_up_only_with_the_right_password";
/// The node's second address: the source of the session with the wrong password.
const WRONG_SOURCE: &str = "198.51.100.3";
const PASSWORD: &str = "s3cret-bgp";

fn spec(peer: IpAddr, source: Option<IpAddr>, password: &str) -> SessionSpec {
    let mut spec = session_spec(64513, 64512, IPV4.node.parse().unwrap(), peer);
    spec.connection.source = source;
    spec.connection.password = password.as_bytes().to_vec();
    spec
}

fn routes(prefix: &str) -> Arc<PeerRoutes> {
    Arc::new(
        [(
            prefix.parse().unwrap(),
            Arc::new(AdvertisedAttributes {
                communities: Vec::new(),
                local_pref: None,
            }),
        )]
        .into_iter()
        .collect(),
    )
}

fn bgpd_config() -> String {
    format!(
        "router bgp 64512
 bgp router-id {router}
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {node} remote-as 64513
 neighbor {node} password {PASSWORD}
 neighbor {node} timers 3 9
 neighbor {wrong} remote-as 64513
 neighbor {wrong} password {PASSWORD}
 neighbor {node6} remote-as 64513
 address-family ipv6 unicast
  neighbor {node6} activate
 exit-address-family
",
        router = IPV4.router,
        node = IPV4.node,
        wrong = WRONG_SOURCE,
        node6 = IPV6.node,
    )
}

/// The paths FRR holds for `prefix` in `family` ("ipv4" or "ipv6"), from its JSON.
fn frr_paths(router: &Frr, family: &str, prefix: &str) -> anyhow::Result<Vec<Value>> {
    let table = router.vtysh_json(&format!("show bgp {family} unicast json"))?;
    Ok(table["routes"][prefix]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn wait_frr(
    router: &Frr,
    family: &str,
    prefix: &str,
    within: Duration,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let paths = frr_paths(router, family, prefix)?;
        if !paths.is_empty() {
            return Ok(paths);
        }
        if Instant::now() > deadline {
            bail!(
                "FRR has no {prefix} within {within:?}:\n{}\n{}",
                router.vtysh(&["show bgp summary"]).unwrap_or_default(),
                router.log(Daemon::Bgpd)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn md5_sessions_with_frr_come_up_only_with_the_right_password() -> anyhow::Result<()> {
    if !root_available(TEST)? {
        return Ok(());
    }
    if let Some(missing) = frr::unavailable(&[Daemon::Zebra, Daemon::Bgpd]) {
        return skip(TEST, &missing);
    }
    let link = RouterLink::new("bgpfrr")?;
    run(
        "ip",
        &[
            "-n",
            &link.node,
            "addr",
            "add",
            &format!("{WRONG_SOURCE}/24"),
            "dev",
            NODE_LINK,
        ],
    )?;
    let router = Frr::start(
        &link.router,
        &[
            DaemonSpec::new(Daemon::Zebra, ""),
            DaemonSpec::new(Daemon::Bgpd, bgpd_config()),
        ],
    )?;
    let mut node = SessionThread::start(&link.node)?;
    let v4 = "198.51.100.200/32";
    let v6 = "2001:db8:1::200/128";
    node.send(Command::Start(
        "md5".into(),
        Box::new(spec(IPV4.router_ip(), None, PASSWORD)),
        routes(v4),
    ))?;
    node.send(Command::Start(
        "wrong".into(),
        Box::new(spec(
            IPV4.router_ip(),
            Some(WRONG_SOURCE.parse()?),
            "not-the-password",
        )),
        routes("198.51.100.201/32"),
    ))?;
    node.send(Command::Start(
        "v6".into(),
        Box::new(spec(IPV6.router_ip(), None, "")),
        routes(v6),
    ))?;

    let report = node.wait("md5", Duration::from_secs(30), "Established", |r| {
        r.state == State::Established
    })?;
    println!("MD5 session Established from {:?}", report.local_address);
    let paths = wait_frr(&router, "ipv4", v4, Duration::from_secs(15))?;
    let next_hop = paths[0]["nexthops"][0]["ip"].as_str().unwrap_or_default();
    ensure!(next_hop == IPV4.node, "{paths:?}");
    let paths = wait_frr(&router, "ipv6", v6, Duration::from_secs(15))?;
    let next_hop = paths[0]["nexthops"][0]["ip"].as_str().unwrap_or_default();
    ensure!(next_hop == IPV6.node, "{paths:?}");

    // The wrong password: FRR drops the SYNs, so each attempt times out, never Established.
    let report = node.wait(
        "wrong",
        Duration::from_secs(20),
        "failed with a password hint",
        |r| {
            r.last_error
                .as_ref()
                .is_some_and(|e| e.reason == "BGPPeerUnreachable")
        },
    )?;
    let error = report.last_error.clone().unwrap();
    ensure!(error.text.contains("TCP MD5"), "{error:?}");
    std::thread::sleep(Duration::from_secs(3));
    let latest = node.latest()["wrong"].clone();
    ensure!(latest.state != State::Established, "{latest:?}");
    ensure!(
        frr_paths(&router, "ipv4", "198.51.100.201/32")?.is_empty(),
        "a session without the right password must not advertise"
    );
    println!("wrong password: {} ({})", error.text, error.reason);
    Ok(())
}
