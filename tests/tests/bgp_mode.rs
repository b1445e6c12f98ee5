//! BGP mode end to end: the speaker lab's three nodes (`speaker_lab`: API server double, real
//! `ferrolb-speaker` processes, kube-proxy emulated, `ferrolb-hello` answering with its node's
//! name) peer with a router on their LAN (the lab's client namespace, 198.51.100.13 and
//! 2001:db8:1::13) that forwards for a client behind it (an uplink of its own, 203.0.113.248/30
//! and 2001:db8:2::/64, inside the two namespaces only).
//!
//! With BIRD 2 as the router: sessions over IPv4 (with BFD 100 ms × 3) and IPv6 (hold time 3 s)
//! Established from all three nodes; the VIPs in BIRD and in the router's FIB with three ECMP next
//! hops and the advertisement's communities; curl from the client through the router; the
//! ServiceBGPStatuses and BGPSessionStates; externalTrafficPolicy Local advertised by the
//! endpoint's node only; deleting the Service withdraws it; a speaker's SIGTERM withdraws its
//! next hop within 1 s; a node lost on the LAN is withdrawn within 1 s with BFD and within the hold
//! time without.
//!
//! With FRR as the router: sessions from three nodes, ECMP, curl, and TCP MD5 from a Secret (the
//! right password Established, a wrong one shown in BGPSessionState).
//!
//! Needs root, BIRD 2 and FRR; skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod speaker_lab;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use ferrolb_crds::{
    BGPAdvertisement, BGPPeer, BGPSessionState, IPAddressPool, ServiceBGPStatus,
    bgp_session_state::SessionState,
};
use ferrolb_tests::bird::{self, Bird, RouterConfig};
use ferrolb_tests::frr::{self, Daemon, DaemonSpec, Frr};
use ferrolb_tests::harness::{root_available, skip};
use ferrolb_tests::netlab::{Host, run};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use serde_json::{Value, json};
use speaker_lab::{Cluster, HELLO_PORT, NS, SYSTEM, create};

const NODE_ASN: u32 = 64513;
const ROUTER_ASN: u32 = 64512;
const WEB4: &str = "198.51.100.100";
const WEB6: &str = "2001:db8:1::2:1";
const LOCAL4: &str = "198.51.100.101";
const OTHER4: &str = "198.51.100.102";
const UPLINK_ROUTER4: &str = "203.0.113.249";
const UPLINK_CLIENT4: &str = "203.0.113.250";
const UPLINK_ROUTER6: &str = "2001:db8:2::1";
const UPLINK_CLIENT6: &str = "2001:db8:2::2";
const HOLD_SECONDS: u64 = 3;

/// The client behind the router: a namespace joined to the router's by one veth.
struct Outside {
    netns: String,
}

impl Outside {
    fn new(router: &Host) -> anyhow::Result<Self> {
        let outside = Self {
            netns: format!("{}-outside", router.netns),
        };
        run("ip", &["netns", "add", &outside.netns])?;
        run(
            "ip",
            &[
                "-n",
                &router.netns,
                "link",
                "add",
                "up0",
                "type",
                "veth",
                "peer",
                "name",
                "up0",
                "netns",
                &outside.netns,
            ],
        )?;
        for (netns, v4, v6) in [
            (&router.netns, UPLINK_ROUTER4, UPLINK_ROUTER6),
            (&outside.netns, UPLINK_CLIENT4, UPLINK_CLIENT6),
        ] {
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", netns.as_str()];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            exec(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
            exec(&["ip", "addr", "add", &format!("{v4}/30"), "dev", "up0"])?;
            exec(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "up0",
                "nodad",
            ])?;
            exec(&["ip", "link", "set", "up0", "up"])?;
        }
        let in_router = |args: &[&str]| {
            let mut all = vec!["netns", "exec", router.netns.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        in_router(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        in_router(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        run(
            "ip",
            &[
                "-n",
                &outside.netns,
                "route",
                "add",
                "default",
                "via",
                UPLINK_ROUTER4,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &outside.netns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                UPLINK_ROUTER6,
            ],
        )?;
        Ok(outside)
    }

    fn curl(&self, ip: &str) -> Option<String> {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let output = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sf",
                "-m2",
                &format!("http://{host}:80/"),
            ],
        )
        .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// Routes back to the client from every node, through the router.
fn route_back(cluster: &Cluster) -> anyhow::Result<()> {
    let router = &cluster.client;
    for node in &cluster.nodes {
        node.run(
            "ip",
            &[
                "route",
                "add",
                "203.0.113.248/30",
                "via",
                &router.lan_ipv4.to_string(),
            ],
        )?;
        node.run(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "2001:db8:2::/64",
                "via",
                &router.lan_ipv6.to_string(),
            ],
        )?;
        for vip in [WEB4, WEB6, LOCAL4, OTHER4] {
            node.forward_service(vip.parse()?, 80, HELLO_PORT)?;
        }
    }
    Ok(())
}

async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("not {what} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The routed pool, and layer 2 kept to the lab's own pool.
async fn routed_pool(cluster: &Cluster) -> anyhow::Result<()> {
    cluster
        .set_advertisement(json!({"ipAddressPools": ["lan"]}))
        .await?;
    create(
        &Api::<IPAddressPool>::all(cluster.kube.clone()),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "routed"},
               "spec": {"addresses": ["198.51.100.100-198.51.100.149", "2001:db8:1::2:0/112"]}}),
    )
    .await?;
    create(
        &Api::<BGPAdvertisement>::all(cluster.kube.clone()),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "routed"},
               "spec": {"ipAddressPools": ["routed"],
                        "communities": ["64512:100", "large:64512:1:2"]}}),
    )
    .await?;
    Ok(())
}

async fn peer(cluster: &Cluster, name: &str, spec: Value) -> anyhow::Result<()> {
    create(
        &Api::<BGPPeer>::all(cluster.kube.clone()),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await
}

/// The BGPSessionStates of `peer`, by node.
async fn session_states(
    cluster: &Cluster,
    peer: &str,
) -> anyhow::Result<Vec<ferrolb_crds::BGPSessionStateStatus>> {
    let api: Api<BGPSessionState> = Api::namespaced(cluster.kube.clone(), SYSTEM);
    let params = kube::api::ListParams::default().labels(&format!(
        "{}={peer}",
        ferrolb_crds::bgp_session_state::PEER_LABEL
    ));
    Ok(api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.status)
        .collect())
}

async fn wait_established(cluster: &Cluster, peer: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("3 BGPSessionStates of {peer} Established"),
        Duration::from_secs(30),
        || async {
            let states = session_states(cluster, peer).await?;
            Ok(
                (states.len() == 3 && states.iter().all(|s| s.state == SessionState::Established))
                    .then_some(()),
            )
        },
    )
    .await
}

fn bird_next_hops(bird: &Bird, prefix: &str) -> anyhow::Result<BTreeSet<IpAddr>> {
    Ok(bird
        .routes_for(prefix)?
        .iter()
        .flat_map(|r| r.next_hops.iter().copied())
        .collect())
}

async fn wait_bird_hops(
    bird: &Bird,
    prefix: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&BTreeSet<IpAddr>) -> bool,
) -> anyhow::Result<(BTreeSet<IpAddr>, Duration)> {
    let started = Instant::now();
    wait_for(&format!("{prefix} {what} at BIRD"), within, || async {
        let hops = bird_next_hops(bird, prefix)?;
        Ok(check(&hops).then(|| (hops, started.elapsed())))
    })
    .await
}

fn node_addresses(cluster: &Cluster, v6: bool) -> BTreeSet<IpAddr> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            if v6 {
                IpAddr::V6(n.lan_ipv6)
            } else {
                IpAddr::V4(n.lan_ipv4)
            }
        })
        .collect()
}

fn bird_config(cluster: &Cluster) -> anyhow::Result<String> {
    let neighbors = cluster.bird_neighbors(NODE_ASN, Some(true), Some(false));
    bird::render(&RouterConfig {
        router_id: cluster.client.lan_ipv4,
        asn: ROUTER_ASN,
        local_v4: Some(IpAddr::V4(cluster.client.lan_ipv4)),
        local_v6: Some(IpAddr::V6(cluster.client.lan_ipv6)),
        neighbors,
        hold_time: HOLD_SECONDS as u16,
        bfd: Some((100, 100, 3)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_mode_with_bird_ecmp_local_policy_withdrawal_and_failures() -> anyhow::Result<()> {
    let test = "bgp_mode_with_bird_ecmp_local_policy_withdrawal_and_failures";
    if !root_available(test)? {
        return Ok(());
    }
    if bird::version().is_none() {
        return skip(test, "BIRD 2 is not installed (apt-get install bird2)");
    }
    let mut cluster = Cluster::start().await?;
    let result = with_bird(&mut cluster).await;
    if result.is_err() {
        for (name, speaker) in &cluster.speakers {
            eprintln!("--- speaker {name}:\n{}", speaker.output());
        }
    }
    cluster.stop().await;
    result
}

async fn with_bird(cluster: &mut Cluster) -> anyhow::Result<()> {
    let outside = Outside::new(&cluster.client)?;
    route_back(cluster)?;
    let bird = Bird::start(&cluster.client.netns, &bird_config(cluster)?)?;
    routed_pool(cluster).await?;
    peer(
        cluster,
        "router-v4",
        json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN,
               "peerAddress": cluster.client.lan_ipv4.to_string(), "holdTime": "9s",
               "connectTime": "2s",
               "bfd": {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}}),
    )
    .await?;
    peer(
        cluster,
        "router-v6",
        json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN,
               "peerAddress": cluster.client.lan_ipv6.to_string(),
               "holdTime": format!("{HOLD_SECONDS}s"), "connectTime": "2s"}),
    )
    .await?;
    wait_established(cluster, "router-v4").await?;
    wait_established(cluster, "router-v6").await?;
    let up = bird
        .protocols()?
        .into_iter()
        .filter(|p| p.info.starts_with("Established"))
        .count();
    ensure!(up == 6, "BIRD: {up} sessions Established, wanted 6");

    // ECMP from all three nodes, with the communities, in BIRD and the router's FIB.
    cluster.service("web", &[WEB4, WEB6], json!({})).await?;
    for (vip, v6) in [(WEB4, false), (WEB6, true)] {
        let prefix = format!("{vip}/{}", if v6 { 128 } else { 32 });
        let wanted = node_addresses(cluster, v6);
        wait_bird_hops(
            &bird,
            &prefix,
            Duration::from_secs(10),
            "from 3 nodes",
            |h| *h == wanted,
        )
        .await?;
        for route in bird.routes_for(&prefix)? {
            ensure!(route.communities == ["(64512,100)"], "{route:?}");
            ensure!(route.large_communities == ["(64512, 1, 2)"], "{route:?}");
            ensure!(route.as_path == NODE_ASN.to_string(), "{route:?}");
        }
        let fib = cluster
            .client
            .run("ip", &[if v6 { "-6" } else { "-4" }, "route", "show", vip])?;
        let fib = String::from_utf8_lossy(&fib.stdout).into_owned();
        ensure!(
            fib.matches("nexthop").count() == 3,
            "the router's FIB should hold 3 next hops for {vip}:\n{fib}"
        );
        let answer = wait_for(&format!("curl {vip}"), Duration::from_secs(10), || async {
            Ok(outside.curl(vip).filter(|a| !a.is_empty()))
        })
        .await?;
        ensure!(answer.starts_with("node-"), "{vip} answered {answer:?}");
        println!("{vip}: 3 ECMP next hops at BIRD and in the FIB; curl from outside: {answer}");
    }
    let statuses: Api<ServiceBGPStatus> = Api::namespaced(cluster.kube.clone(), NS);
    let advertising = wait_for(
        "3 ServiceBGPStatuses of web",
        Duration::from_secs(10),
        || async {
            let nodes: BTreeSet<String> = statuses
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .filter_map(|s| s.status)
                .filter(|s| s.service_name == "web" && s.prefixes.len() == 2 && s.peers.len() == 2)
                .map(|s| s.node)
                .collect();
            Ok((nodes.len() == 3).then_some(nodes))
        },
    )
    .await?;
    println!("ServiceBGPStatus of web from {advertising:?}");

    // externalTrafficPolicy Local: only the endpoint's node advertises.
    cluster
        .service(
            "local",
            &[LOCAL4],
            json!({"externalTrafficPolicy": "Local"}),
        )
        .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.kube.clone(), NS);
    create(
        &slices,
        json!({"metadata": {"name": "local-x", "namespace": NS,
                            "labels": {"kubernetes.io/service-name": "local"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["198.51.100.99"], "nodeName": "node-b",
                              "conditions": {"ready": true}}]}),
    )
    .await?;
    let node_b = IpAddr::V4(cluster.host("node-b").lan_ipv4);
    wait_bird_hops(
        &bird,
        &format!("{LOCAL4}/32"),
        Duration::from_secs(10),
        "from node-b only",
        |h| h.len() == 1 && h.contains(&node_b),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(bird_next_hops(&bird, &format!("{LOCAL4}/32"))? == BTreeSet::from([node_b]));
    println!("eTP Local: {LOCAL4} only from node-b");

    // Deleting a Service withdraws its routes.
    cluster.delete_service("web").await?;
    let (_, gone) = wait_bird_hops(
        &bird,
        &format!("{WEB4}/32"),
        Duration::from_secs(5),
        "withdrawn",
        BTreeSet::is_empty,
    )
    .await?;
    wait_bird_hops(
        &bird,
        &format!("{WEB6}/128"),
        Duration::from_secs(5),
        "withdrawn",
        |h| h.is_empty(),
    )
    .await?;
    println!("Service deleted: withdrawn at BIRD within {gone:?}");

    // SIGTERM: the speaker withdraws its routes before it exits.
    cluster.service("other", &[OTHER4], json!({})).await?;
    let prefix = format!("{OTHER4}/32");
    let all4 = node_addresses(cluster, false);
    wait_bird_hops(
        &bird,
        &prefix,
        Duration::from_secs(10),
        "from 3 nodes",
        |h| *h == all4,
    )
    .await?;
    let node_c = IpAddr::V4(cluster.host("node-c").lan_ipv4);
    let signalled = Instant::now();
    cluster
        .speakers
        .get("node-c")
        .context("no speaker on node-c")?
        .signal("TERM")?;
    wait_bird_hops(
        &bird,
        &prefix,
        Duration::from_secs(3),
        "without node-c",
        |h| h.len() == 2 && !h.contains(&node_c),
    )
    .await?;
    let withdrawn = signalled.elapsed();
    println!("SIGTERM of node-c's speaker: its next hop withdrawn after {withdrawn:?}");
    ensure!(
        withdrawn < Duration::from_secs(1),
        "SIGTERM withdrawal took {withdrawn:?}"
    );

    // Node loss: node-a's LAN link goes down. IPv4 has BFD (100 ms x 3), IPv6 only the 3 s
    // hold time.
    let node_a4 = IpAddr::V4(cluster.host("node-a").lan_ipv4);
    let node_a6 = IpAddr::V6(cluster.host("node-a").lan_ipv6);
    cluster.service("web6", &[WEB6], json!({})).await?;
    let prefix6 = format!("{WEB6}/128");
    wait_bird_hops(
        &bird,
        &prefix6,
        Duration::from_secs(10),
        "from node-a",
        |h| h.contains(&node_a6),
    )
    .await?;
    let lost = Instant::now();
    cluster.host("node-a").set_link("lan0", false)?;
    wait_bird_hops(
        &bird,
        &prefix,
        Duration::from_secs(3),
        "without node-a",
        |h| !h.contains(&node_a4),
    )
    .await?;
    let with_bfd = lost.elapsed();
    wait_bird_hops(
        &bird,
        &prefix6,
        Duration::from_secs(HOLD_SECONDS + 3),
        "without node-a",
        |h| !h.contains(&node_a6),
    )
    .await?;
    let with_hold = lost.elapsed();
    println!("node-a lost: withdrawn after {with_bfd:?} with BFD, {with_hold:?} by hold time");
    ensure!(with_bfd < Duration::from_secs(1), "with BFD: {with_bfd:?}");
    ensure!(
        with_hold <= Duration::from_secs(HOLD_SECONDS) + Duration::from_millis(500),
        "by hold time: {with_hold:?}"
    );
    // node-a's speaker lives on: with its sessions down it advertises to nobody, and says so.
    wait_for(
        "no ServiceBGPStatus from node-a",
        Duration::from_secs(HOLD_SECONDS + 5),
        || async {
            let from_a = statuses
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .filter_map(|s| s.status)
                .filter(|s| s.node == "node-a")
                .count();
            Ok((from_a == 0).then_some(()))
        },
    )
    .await?;
    println!("node-a, its sessions down, keeps no ServiceBGPStatus");
    cluster.host("node-a").set_link("lan0", true)?;
    drop(bird);
    drop(outside);
    Ok(())
}

fn frr_config(cluster: &Cluster) -> String {
    let mut text = format!(
        "router bgp {ROUTER_ASN}\n bgp router-id {}\n no bgp ebgp-requires-policy\n timers bgp 3 9\n",
        cluster.client.lan_ipv4
    );
    for node in &cluster.nodes {
        text.push_str(&format!(
            " neighbor {} remote-as {NODE_ASN}\n neighbor {} password right-one\n",
            node.lan_ipv4, node.lan_ipv4
        ));
        text.push_str(&format!(
            " neighbor {} remote-as {NODE_ASN}\n neighbor {} password other-one\n",
            node.lan_ipv6, node.lan_ipv6
        ));
    }
    text.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n");
    text.push_str(" address-family ipv6 unicast\n  maximum-paths 8\n");
    for node in &cluster.nodes {
        text.push_str(&format!("  neighbor {} activate\n", node.lan_ipv6));
    }
    text.push_str(" exit-address-family\n");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_mode_with_frr_ecmp_and_md5_passwords_from_secrets() -> anyhow::Result<()> {
    let test = "bgp_mode_with_frr_ecmp_and_md5_passwords_from_secrets";
    if !root_available(test)? {
        return Ok(());
    }
    if let Some(missing) = frr::unavailable(&[Daemon::Zebra, Daemon::Bgpd]) {
        return skip(test, &missing);
    }
    let mut cluster = Cluster::start().await?;
    let result = with_frr(&mut cluster).await;
    if result.is_err() {
        for (name, speaker) in &cluster.speakers {
            eprintln!("--- speaker {name}:\n{}", speaker.output());
        }
    }
    cluster.stop().await;
    result
}

async fn with_frr(cluster: &mut Cluster) -> anyhow::Result<()> {
    let outside = Outside::new(&cluster.client)?;
    route_back(cluster)?;
    let router = Frr::start(
        &cluster.client.netns,
        &[
            DaemonSpec::new(Daemon::Zebra, ""),
            DaemonSpec::new(Daemon::Bgpd, frr_config(cluster)),
        ],
    )?;
    routed_pool(cluster).await?;
    let secrets: Api<Secret> = Api::namespaced(cluster.kube.clone(), SYSTEM);
    create(
        &secrets,
        json!({"metadata": {"name": "bgp-auth", "namespace": SYSTEM},
               "stringData": {"password": "right-one", "wrong": "not-the-one"}}),
    )
    .await?;
    peer(
        cluster,
        "frr-v4",
        json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN,
               "peerAddress": cluster.client.lan_ipv4.to_string(), "holdTime": "9s",
               "connectTime": "2s", "passwordSecret": {"name": "bgp-auth"}}),
    )
    .await?;
    peer(
        cluster,
        "frr-v6",
        json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN,
               "peerAddress": cluster.client.lan_ipv6.to_string(), "holdTime": "9s",
               "connectTime": "2s", "passwordSecret": {"name": "bgp-auth", "key": "wrong"}}),
    )
    .await?;
    wait_established(cluster, "frr-v4").await?;
    cluster.service("web", &[WEB4], json!({})).await?;
    let hops = wait_for(
        "3 ECMP next hops at FRR",
        Duration::from_secs(15),
        || async {
            let routes = router.vtysh_json(&format!("show ip route {WEB4}/32 json"))?;
            let hops: BTreeSet<String> = routes[format!("{WEB4}/32")]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["nexthops"].as_array().cloned().unwrap_or_default())
                .filter_map(|h| h["ip"].as_str().map(str::to_owned))
                .collect();
            Ok((hops.len() == 3).then_some(hops))
        },
    )
    .await?;
    let answer = wait_for("curl through FRR", Duration::from_secs(10), || async {
        Ok(outside.curl(WEB4).filter(|a| !a.is_empty()))
    })
    .await?;
    ensure!(answer.starts_with("node-"), "{answer:?}");
    println!("FRR: {WEB4} via {hops:?} (MD5 sessions); curl from outside: {answer}");

    // The wrong password: never Established, and the session state says why it may be.
    let states = wait_for("frr-v6 failing", Duration::from_secs(20), || async {
        let states = session_states(cluster, "frr-v6").await?;
        Ok(
            (states.len() == 3 && states.iter().all(|s| s.last_error.contains("TCP MD5")))
                .then_some(states),
        )
    })
    .await?;
    ensure!(
        states.iter().all(|s| s.state != SessionState::Established),
        "{states:?}"
    );
    println!("wrong password: {}", states[0].last_error);
    drop(router);
    drop(outside);
    Ok(())
}
