//! BGP mode at scale, with real speakers: the speaker lab's three nodes (`tests/tests/speaker_lab`,
//! API server double, `ferrolb-speaker` processes) peer with two BIRD 2 routers on the LAN (the
//! lab's client namespace, 198.51.100.13, and a second one, 198.51.100.14), over IPv4 with the
//! first and IPv6 with both. Needs root and BIRD. Run with `cargo bench -p ferrolb-tests --bench
//! bgp`; prints:
//!
//! - from Service creation (the Service and its ingress IP written) to the route installed at
//!   BIRD with all three nodes as next hops: p50/p99 over one Service at a time;
//! - the time until all of 10,000 Services' routes (IPv6 /128s) are at both routers, and the
//!   UPDATE messages the speakers sent for them (their `bgp_updates_sent` metric);
//! - the speakers' resident memory with those 10,000 IPs advertised to two peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/speaker_lab/mod.rs"]
mod speaker_lab;

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_crds::{BGPAdvertisement, BGPPeer, IPAddressPool};
use ferrolb_tests::bird::{self, Bird, RouterConfig};
use ferrolb_tests::netlab::Role;
use futures::StreamExt;
use kube::Api;
use serde_json::json;
use speaker_lab::{Cluster, create, is_root};

const ONE_AT_A_TIME: usize = 40;
const SCALE: u32 = 10_000;
const NODE_ASN: u32 = 64513;
const ROUTER_ASN: u32 = 64512;

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let index = ((values.len().saturating_sub(1)) as f64 * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

fn bulk_ip(i: u32) -> Ipv6Addr {
    // Inside the pool's 2001:db8:1::2:0/112.
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 2, i as u16)
}

/// "N networks" of BIRD's `show route count`.
fn networks(bird: &Bird) -> anyhow::Result<u64> {
    let text = bird.birdc("show route count")?;
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "networks")?;
            words.get(at.checked_sub(1)?)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        .checked_add(0)
        .context("route count overflow")
}

/// The sum of `metric` over the three speakers' /metrics.
fn metric_sum(cluster: &Cluster, metric: &str) -> f64 {
    cluster
        .nodes
        .iter()
        .filter_map(|node| {
            let output = node
                .run("curl", &["-sf", "-m2", "http://127.0.0.1:7473/metrics"])
                .ok()?;
            Some(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|l| l.starts_with(metric))
                    .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                    .sum::<f64>(),
            )
        })
        .sum()
}

/// A field of /proc/<pid>/status, in KiB (VmRSS; RssAnon: heap and stacks; RssFile: the
/// binary's pages).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn router_config(
    cluster: &Cluster,
    local: (IpAddr, IpAddr),
    with_v4: bool,
) -> anyhow::Result<String> {
    let neighbors = cluster.bird_neighbors(NODE_ASN, with_v4.then_some(false), Some(false));
    let IpAddr::V4(router_id) = local.0 else {
        bail!("router ID");
    };
    bird::render(&RouterConfig {
        router_id,
        asn: ROUTER_ASN,
        local_v4: Some(local.0),
        local_v6: Some(local.1),
        neighbors,
        hold_time: 30,
        bfd: None,
    })
}

async fn bgp_objects(cluster: &Cluster, routers: &[(IpAddr, IpAddr)]) -> anyhow::Result<()> {
    // The bulk pool is advertised over BGP only: layer 2 keeps to the lab's own pool.
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
    let peers = Api::<BGPPeer>::all(cluster.kube.clone());
    let mut names = Vec::new();
    for (index, (v4, v6)) in routers.iter().enumerate() {
        let addresses: Vec<(String, IpAddr)> = if index == 0 {
            vec![
                (format!("router{index}-v4"), *v4),
                (format!("router{index}-v6"), *v6),
            ]
        } else {
            vec![(format!("router{index}-v6"), *v6)]
        };
        for (name, address) in addresses {
            create(
                &peers,
                json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
                       "metadata": {"name": name},
                       "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN,
                                "peerAddress": address.to_string(), "holdTime": "30s",
                                "connectTime": "2s"}}),
            )
            .await?;
            names.push(name);
        }
    }
    create(
        &Api::<BGPAdvertisement>::all(cluster.kube.clone()),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "routed"},
               "spec": {"ipAddressPools": ["routed"], "communities": ["64512:100"]}}),
    )
    .await?;
    Ok(())
}

fn wait<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check()? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("not {what} within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn run() -> anyhow::Result<()> {
    let mut cluster = Cluster::start().await?;
    let second = cluster.lab.add_host("router2", Role::Client)?;
    let first = cluster.client.clone();
    let routers = [
        (IpAddr::V4(first.lan_ipv4), IpAddr::V6(first.lan_ipv6)),
        (IpAddr::V4(second.lan_ipv4), IpAddr::V6(second.lan_ipv6)),
    ];
    let birds = [
        Bird::start(&first.netns, &router_config(&cluster, routers[0], true)?)?,
        Bird::start(&second.netns, &router_config(&cluster, routers[1], false)?)?,
    ];
    bgp_objects(&cluster, &routers).await?;
    wait("9 sessions Established", Duration::from_secs(60), || {
        let up: usize = birds
            .iter()
            .map(|b| {
                b.protocols()
                    .map(|p| {
                        p.iter()
                            .filter(|p| p.info.starts_with("Established"))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum();
        Ok((up == 9).then_some(()))
    })?;
    println!("9 BGP sessions Established (3 nodes: IPv4 and IPv6 to router 0, IPv6 to router 1)");

    // One Service at a time: creation to the route with all three next hops at BIRD.
    let mut latencies = Vec::new();
    for i in 0..ONE_AT_A_TIME {
        let ip = format!("198.51.100.{}", 100 + i);
        let started = Instant::now();
        cluster
            .service(&format!("one-{i}"), &[&ip], json!({}))
            .await?;
        let prefix = format!("{ip}/32");
        let elapsed = wait(
            &format!("{prefix} at BIRD"),
            Duration::from_secs(20),
            || {
                let routes = birds[0].routes_for(&prefix)?;
                let hops: std::collections::BTreeSet<IpAddr> = routes
                    .iter()
                    .flat_map(|r| r.next_hops.iter().copied())
                    .collect();
                Ok((hops.len() == 3).then(|| started.elapsed()))
            },
        )?;
        latencies.push(elapsed.as_secs_f64() * 1000.0);
    }
    println!(
        "Service creation to its route at BIRD from all 3 nodes: p50 {:.1} ms, p99 {:.1} ms ({ONE_AT_A_TIME} Services, one at a time)",
        percentile(latencies.clone(), 0.5),
        percentile(latencies, 0.99)
    );

    // 10,000 Services at once.
    let updates_before = metric_sum(&cluster, "ferrolb_speaker_bgp_updates_sent");
    let base = [networks(&birds[0])?, networks(&birds[1])?];
    let started = Instant::now();
    let creating = futures::stream::iter(0..SCALE)
        .map(|i| {
            let cluster = &cluster;
            async move {
                let ip = bulk_ip(i).to_string();
                // As a real cluster would need: a 10,000-Service cluster has no 10,000 node
                // ports, and the lab's IPv4 service range is small.
                let spec = json!({"allocateLoadBalancerNodePorts": false,
                                  "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"});
                cluster.service(&format!("bulk-{i}"), &[&ip], spec).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for result in creating {
        result?;
    }
    let created = started.elapsed();
    let all =
        wait(
            "10,000 routes at both routers",
            Duration::from_secs(600),
            || {
                let counts = [networks(&birds[0])?, networks(&birds[1])?];
                Ok((counts[0] >= base[0] + u64::from(SCALE)
                    && counts[1] >= base[1] + u64::from(SCALE))
                .then(|| started.elapsed()))
            },
        )?;
    // Let the last paths arrive from every node before counting UPDATEs.
    std::thread::sleep(Duration::from_secs(3));
    let updates = metric_sum(&cluster, "ferrolb_speaker_bgp_updates_sent") - updates_before;
    println!(
        "{SCALE} Services: written in {:.1} s; all routes at both routers {:.1} s after the first write; {updates:.0} UPDATE messages over the 6 IPv6 sessions ({:.0} per session)",
        created.as_secs_f64(),
        all.as_secs_f64(),
        updates / 6.0
    );
    let memory: Vec<String> = cluster
        .speakers
        .values()
        .map(|speaker| {
            let pid = speaker.pid();
            format!(
                "{} KiB (anon {}, file {})",
                status_kib(pid, "VmRSS:"),
                status_kib(pid, "RssAnon:"),
                status_kib(pid, "RssFile:")
            )
        })
        .collect();
    println!(
        "speaker RSS with {} IPs advertised to 2 IPv6 peers: {} (target < 30 MiB)",
        u64::from(SCALE) + ONE_AT_A_TIME as u64,
        memory.join("; ")
    );
    drop(birds);
    cluster.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !is_root() {
        println!("SKIPPED: the bgp bench needs root for network namespaces");
        return Ok(());
    }
    if bird::version().is_none() {
        println!("SKIPPED: the bgp bench needs BIRD 2 (apt-get install bird2)");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
