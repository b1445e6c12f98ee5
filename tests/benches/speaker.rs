//! The speaker in the network-namespace lab (see `tests/tests/speaker_lab`), as a LAN client sees
//! it. Needs root. Run with `cargo bench -p ferrolb-tests --bench speaker`; takes about three
//! minutes and prints:
//!
//! - failover gaps (old owner's last ARP reply to the new owner's first, the client asking every
//!   10 ms), medians of RUNS runs, after SIGKILL and after SIGTERM, at the default timings (1 s
//!   renew, 3 s lease) and with a 1 s lease (250 ms renew);
//! - ARP reply latency p50/p99 at 1,000 requests/s, for the VIP (the speaker) beside the owner
//!   node's own address (its kernel), in the same run;
//! - API writes per second of three speakers announcing 50 Services (should be nodes / renew
//!   interval: only Lease renewals once settled), from the double's request counters;
//! - the speakers' resident memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/speaker_lab/mod.rs"]
mod speaker_lab;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_crds::ServiceL2Status;
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::probe::{Heard, double_answers};
use kube::Api;
use serde_json::json;
use speaker_lab::{Cluster, NS, VIP4, is_root};

const RUNS: usize = 10;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index.min(values.len() - 1)]
}

fn mac_of(cluster: &Cluster, node: &str) -> MacAddr {
    cluster.host(node).lan_mac.parse().unwrap()
}

/// Gap from `old`'s last solicited reply to the first solicited reply from anyone else.
fn gap(heard: &[Heard], old: MacAddr) -> Option<Duration> {
    let last_old = heard
        .iter()
        .filter(|h| h.solicited && h.mac == old)
        .map(|h| h.at)
        .max()?;
    let first_new = heard
        .iter()
        .filter(|h| h.solicited && h.mac != old && h.at > last_old)
        .map(|h| h.at)
        .min()?;
    Some(first_new - last_old)
}

async fn failover(label: &str, lease_ms: f64, args: &[&str]) -> anyhow::Result<()> {
    let mut cluster = Cluster::start_with(args).await?;
    cluster.service("web", &[VIP4], json!({})).await?;
    let owner = cluster
        .wait_owner(VIP4, |_| true, Duration::from_secs(15))
        .await?;
    let probe = ferrolb_speaker::probe::Probe::start(probe_config(&cluster)?)?;
    for signal in ["KILL", "TERM"] {
        let mut gaps = Vec::new();
        let mut doubled = 0;
        for _ in 0..RUNS {
            probe.clear();
            tokio::time::sleep(Duration::from_millis(300)).await;
            cluster.speakers[&owner].signal(signal)?;
            cluster
                .wait_owner(VIP4, |n| n != owner, Duration::from_secs(15))
                .await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let heard = probe.heard();
            doubled += double_answers(&heard).len();
            match gap(&heard, mac_of(&cluster, &owner)) {
                Some(gap) => gaps.push(gap.as_secs_f64() * 1e3),
                None => {
                    let mut by_mac: BTreeMap<String, usize> = BTreeMap::new();
                    for h in heard.iter().filter(|h| h.solicited) {
                        *by_mac.entry(h.mac.to_string()).or_default() += 1;
                    }
                    println!(
                        "  no gap measured (old owner {owner} at {}): {} rounds, solicited answers by MAC {by_mac:?}",
                        mac_of(&cluster, &owner),
                        probe.sent().len()
                    );
                }
            }
            let mut old = cluster.speakers.remove(&owner).unwrap();
            old.wait_exit(Duration::from_secs(5))?;
            drop(old);
            cluster.start_speaker(&owner)?;
            cluster
                .wait_owner(VIP4, |n| n == owner, Duration::from_secs(15))
                .await?;
        }
        let median_gap = median(gaps.clone());
        println!(
            "failover after SIG{signal:<4} {label:<28} median gap {median_gap:8.1} ms = {:.2} x lease  (min {:.1}, max {:.1}, {} runs, {doubled} rounds with two answerers)",
            median_gap / lease_ms,
            gaps.iter().copied().fold(f64::INFINITY, f64::min),
            gaps.iter().copied().fold(0.0, f64::max),
            gaps.len(),
        );
    }
    probe.stop()?;
    cluster.stop().await;
    Ok(())
}

fn probe_config(cluster: &Cluster) -> anyhow::Result<ferrolb_speaker::probe::ProbeConfig> {
    Ok(ferrolb_speaker::probe::ProbeConfig {
        netns: cluster.client.netns.clone(),
        interface: cluster.client.lan_interface.clone(),
        mac: cluster
            .client
            .lan_mac
            .parse()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ipv4: cluster.client.lan_ipv4,
        ipv6: cluster.client.lan_ipv6,
        targets: vec![VIP4.parse()?],
        interval: Duration::from_millis(10),
    })
}

/// Reply latency at 1,000 requests/s (each reply timed from the last request sent before it).
async fn latency_writes_and_memory() -> anyhow::Result<()> {
    let cluster = Cluster::start_with(&[]).await?;
    cluster.service("web", &[VIP4], json!({})).await?;
    let owner = cluster
        .wait_owner(VIP4, |_| true, Duration::from_secs(15))
        .await?;
    let node_ip = IpAddr::V4(cluster.host(&owner).lan_ipv4);
    let vip: IpAddr = VIP4.parse()?;
    let probe = ferrolb_speaker::probe::Probe::start(ferrolb_speaker::probe::ProbeConfig {
        targets: vec![vip, node_ip],
        interval: Duration::from_millis(1),
        ..probe_config(&cluster)?
    })?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = probe.sent();
    let heard = probe.heard();
    probe.stop()?;
    let seconds = match (sent.first(), sent.last()) {
        (Some(first), Some(last)) => (*last - *first).as_secs_f64(),
        _ => f64::NAN,
    };
    let mut by_ip: BTreeMap<IpAddr, Vec<f64>> = BTreeMap::new();
    for h in heard.iter().filter(|h| h.solicited) {
        let Some(at) = usize::try_from(h.round).ok().and_then(|r| r.checked_sub(1)) else {
            continue;
        };
        let Some(sent_at) = sent.get(at) else {
            continue;
        };
        by_ip
            .entry(h.ip)
            .or_default()
            .push(h.at.saturating_duration_since(*sent_at).as_secs_f64() * 1e6);
    }
    println!(
        "ARP load: {} requests per IP in {seconds:.1} s ({:.0}/s)",
        sent.len(),
        sent.len() as f64 / seconds
    );
    let mut p50s = BTreeMap::new();
    for (ip, who) in [(vip, "speaker (VIP)"), (node_ip, "kernel (node address)")] {
        let values = by_ip.get(&ip).cloned().unwrap_or_default();
        let (p50, p99) = (
            percentile(values.clone(), 0.5),
            percentile(values.clone(), 0.99),
        );
        p50s.insert(who, (p50, p99));
        println!(
            "ARP reply latency {who:<22} p50 {p50:7.0} us  p99 {p99:7.0} us  ({} of {} answered)",
            values.len(),
            sent.len()
        );
    }
    if let (Some(s), Some(k)) = (p50s.get("speaker (VIP)"), p50s.get("kernel (node address)")) {
        println!(
            "ARP reply latency ratio speaker/kernel: p50 {:.1}x, p99 {:.1}x",
            s.0 / k.0,
            s.1 / k.1
        );
    }

    // API writes once settled, with many IPs owned.
    for n in 1..50 {
        let ip = format!("198.51.100.{}", 200 + n);
        cluster
            .service(&format!("many-{n}"), &[&ip], json!({}))
            .await?;
    }
    let statuses: Api<ServiceL2Status> = Api::namespaced(cluster.kube.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while statuses.list(&Default::default()).await?.items.len() < 50 {
        if Instant::now() > deadline {
            anyhow::bail!("not every Service got a ServiceL2Status");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.api.counters().reset();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let counts = cluster.api.counters().snapshot();
    let writes: u64 = counts
        .iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|(_, n)| n)
        .sum();
    let rate = writes as f64 / window.as_secs_f64();
    println!(
        "API writes with 3 speakers, 50 Services announced: {rate:.2}/s (expected 3 nodes / 1 s renew = 3.00/s, ratio {:.2}); by verb and resource: {:?}",
        rate / 3.0,
        counts
            .iter()
            .filter(|((verb, _), _)| !matches!(verb.as_str(), "watch"))
            .collect::<Vec<_>>()
    );
    for (name, speaker) in &cluster.speakers {
        let status = std::fs::read_to_string(format!("/proc/{}/status", speaker.pid()))?;
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap_or("VmRSS: ?")
            .trim_start_matches("VmRSS:")
            .trim()
            .to_owned();
        println!("speaker RSS on {name}: {rss}");
    }
    cluster.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !is_root() {
        println!("SKIPPED: the speaker bench needs root for network namespaces");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        latency_writes_and_memory().await?;
        failover(
            "(1 s lease, 250 ms renew)",
            1000.0,
            &["--lease-renew", "250ms", "--lease-duration", "1s"],
        )
        .await?;
        failover("(defaults: 3 s lease, 1 s renew)", 3000.0, &[]).await?;
        Ok(())
    })
}
