//! The speaker in the network-namespace lab (see `tests/tests/speaker_lab`), as a LAN client sees
//! it. Needs root. Run with `cargo bench -p ferrolb-tests --bench speaker`; takes a few minutes
//! once built and prints (failover gaps are the `failover` bench's):
//!
//! - ARP reply latency p50/p99 at 1,000 and at 10,000 requests/s, for the VIP (the speaker)
//!   beside the owner node's own address (its kernel), in the same rounds, each reply timed from
//!   the request it answers (told apart by their sender addresses);
//! - API writes per second of three speakers announcing 1,000 IPs (none once settled: the
//!   registrations change only with the links), from the double's request counters;
//! - the speakers' resident memory with those 1,000 IPs, and what it is made of.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/speaker_lab/mod.rs"]
mod speaker_lab;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::ServiceL2Status;
use ferrolb_speaker::probe::Heard;
use futures::StreamExt;
use kube::Api;
use serde_json::json;
use speaker_lab::{Cluster, NS, VIP4, is_root};

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index.min(values.len() - 1)]
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
        sender_tags: Vec::new(),
    })
}

/// 64 unused LAN addresses the latency probe's requests come from in turn, so each reply says
/// which request it answers (198.51.100.128 to .191: no host, pool or VIP of the lab).
fn sender_tags() -> Vec<Ipv4Addr> {
    (128..192).map(|n| Ipv4Addr::new(198, 51, 100, n)).collect()
}

/// ARP reply latency at `rate` requests/s for the VIP (the speaker) and the owner's node address
/// (its kernel), asked in the same rounds; each reply timed from the request it answers.
async fn latency(cluster: &Cluster, owner: &str, rate: u32, seconds: u64) -> anyhow::Result<()> {
    let node_ip = IpAddr::V4(cluster.host(owner).lan_ipv4);
    let vip: IpAddr = VIP4.parse()?;
    let targets = vec![vip, node_ip];
    let probe = ferrolb_speaker::probe::Probe::start(ferrolb_speaker::probe::ProbeConfig {
        targets: targets.clone(),
        interval: Duration::from_secs(1) / rate,
        sender_tags: sender_tags(),
        ..probe_config(cluster)?
    })?;
    // Warm-up: neighbour entries for the tag addresses, caches, the readers' first wake-ups.
    // Nothing is cleared after it: a reply's round indexes the probe's whole send log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measured_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Heard first: every answer read then has its request in the send logs read after.
    let heard: Vec<Heard> = probe
        .heard()
        .into_iter()
        .filter(|h| h.at >= measured_from)
        .collect();
    let sent: Vec<Instant> = probe
        .sent()
        .into_iter()
        .filter(|at| *at >= measured_from)
        .collect();
    let frames_sent = probe.frames_sent();
    probe.stop()?;
    let elapsed = match (sent.first(), sent.last()) {
        (Some(first), Some(last)) => (*last - *first).as_secs_f64(),
        _ => f64::NAN,
    };
    // Per IP, microseconds from each request to its answer: at the wire (the kernel's arrival
    // stamp at the client) and as the probe's thread read it.
    let mut at_wire: BTreeMap<IpAddr, Vec<f64>> = BTreeMap::new();
    let mut as_read: BTreeMap<IpAddr, Vec<f64>> = BTreeMap::new();
    for h in heard.iter().filter(|h| h.solicited) {
        let (Some(round), Some(target)) = (h.answers, targets.iter().position(|t| *t == h.ip))
        else {
            continue;
        };
        let Some(index) = usize::try_from(round)
            .ok()
            .and_then(|r| r.checked_sub(1))
            .map(|r| r * targets.len() + target)
        else {
            continue;
        };
        let Some(sent) = frames_sent.get(index).filter(|s| s.at >= measured_from) else {
            continue;
        };
        as_read
            .entry(h.ip)
            .or_default()
            .push(h.at.saturating_duration_since(sent.at).as_secs_f64() * 1e6);
        if let Some(wire) = h.arrived.and_then(|a| a.duration_since(sent.wall).ok()) {
            at_wire
                .entry(h.ip)
                .or_default()
                .push(wire.as_secs_f64() * 1e6);
        }
    }
    println!(
        "ARP load {rate}/s: {} requests per IP in {elapsed:.1} s ({:.0}/s)",
        sent.len(),
        sent.len() as f64 / elapsed
    );
    for (view, by_ip) in [("at the wire", &at_wire), ("as read", &as_read)] {
        let mut figures = BTreeMap::new();
        for (ip, who) in [(vip, "speaker (VIP)"), (node_ip, "kernel (node address)")] {
            let values = by_ip.get(&ip).cloned().unwrap_or_default();
            let (p50, p99) = (
                percentile(values.clone(), 0.5),
                percentile(values.clone(), 0.99),
            );
            figures.insert(who, (p50, p99));
            println!(
                "ARP reply latency {view:<11} at {rate:>5}/s {who:<22} p50 {p50:7.0} us  p99 {p99:7.0} us  ({} of {} answered)",
                values.len(),
                sent.len()
            );
        }
        if let (Some(s), Some(k)) = (
            figures.get("speaker (VIP)"),
            figures.get("kernel (node address)"),
        ) {
            println!(
                "ARP reply latency {view:<11} at {rate:>5}/s ratio speaker/kernel: p50 {:.1}x, p99 {:.1}x (target: p99 within 2x)",
                s.0 / k.0,
                s.1 / k.1
            );
        }
    }
    Ok(())
}

/// The bulk of the 1,000 owned IPs: 2001:db8:1::1:0 and up (the lab's `BULK_V6_POOL`).
fn bulk_v6(n: u16) -> String {
    format!("2001:db8:1::1:{n:x}")
}

async fn latency_writes_and_memory() -> anyhow::Result<()> {
    let cluster = Cluster::start_with(&[]).await?;
    cluster.service("web", &[VIP4], json!({})).await?;
    let owner = cluster
        .wait_owner(VIP4, |_| true, Duration::from_secs(15))
        .await?;
    latency(&cluster, &owner, 1_000, 5).await?;
    latency(&cluster, &owner, 10_000, 5).await?;

    // API writes once settled, with 1,000 IPs owned across the three speakers: "web", 50 more
    // IPv4 Services and 949 IPv6 ones.
    let mut ips: Vec<String> = (201..=250).map(|n| format!("198.51.100.{n}")).collect();
    ips.extend((0..949).map(bulk_v6));
    let total = ips.len() + 1;
    let created = Instant::now();
    futures::stream::iter(ips.iter().enumerate())
        .map(|(n, ip)| {
            let cluster = &cluster;
            async move {
                // One family each: the double's IPv4 Service range is too small for 1,000.
                let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
                cluster
                    .service(
                        &format!("many-{n}"),
                        &[ip.as_str()],
                        json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": [family]}),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    println!(
        "{} Services created in {:.1} s",
        ips.len(),
        created.elapsed().as_secs_f64()
    );
    let statuses: Api<ServiceL2Status> = Api::namespaced(cluster.kube.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = statuses.list(&Default::default()).await?.items.len();
        if have >= total {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {have} of {total} Services got a ServiceL2Status");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{total} ServiceL2Statuses written {:.1} s after the first Service was created",
        created.elapsed().as_secs_f64()
    );
    let mut owned = 0;
    for name in cluster.speakers.keys() {
        let metrics = cluster
            .host(name)
            .run("curl", &["-sf", "-m2", "http://127.0.0.1:7473/metrics"])
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
        let announced = metrics
            .as_deref()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("ferrolb_speaker_announced_ips "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .unwrap_or(0);
        owned += announced;
        println!("speaker {name} announces {announced} IPs");
    }
    println!("IPs announced by the three speakers: {owned} (of {total})");
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
        "API writes with 3 speakers, {total} IPs announced: {rate:.2}/s = {:.3} per node per second (target at most 0.1); by verb and resource: {:?}",
        rate / 3.0,
        counts
            .iter()
            .filter(|((verb, _), _)| !matches!(verb.as_str(), "watch"))
            .collect::<Vec<_>>()
    );
    for (name, speaker) in &cluster.speakers {
        let status = std::fs::read_to_string(format!("/proc/{}/status", speaker.pid()))?;
        let field = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or("?")
                .trim_start_matches(key)
                .trim()
                .to_owned()
        };
        println!(
            "speaker RSS on {name} with {total} IPs in the cluster: {} (peak {}; anonymous {}, file {}; {} threads)",
            field("VmRSS:"),
            field("VmHWM:"),
            field("RssAnon:"),
            field("RssFile:"),
            field("Threads:")
        );
    }
    if let Some(speaker) = cluster.speakers.values().next() {
        println!(
            "speaker memory by mapping (kB resident): {}",
            resident_by_mapping(speaker.pid())?
        );
    }
    cluster.stop().await;
    Ok(())
}

/// Resident memory per kind of mapping, largest first: what an RSS figure is made of.
fn resident_by_mapping(pid: u32) -> anyhow::Result<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            current = fields
                .get(5)
                .map(|path| path.rsplit('/').next().unwrap_or(path).to_owned())
                .unwrap_or_else(|| "anonymous".to_owned());
        } else if fields.first() == Some(&"Rss:") {
            let kb = fields.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            *by_name.entry(current.clone()).or_default() += kb;
        }
    }
    let mut sorted: Vec<(String, u64)> = by_name.into_iter().filter(|(_, kb)| *kb > 0).collect();
    sorted.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    Ok(sorted
        .iter()
        .map(|(name, kb)| format!("{name} {kb}"))
        .collect::<Vec<_>>()
        .join(", "))
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
    // `cargo bench --bench speaker -- latency` runs only that part (failover has its own
    // bench: `--bench failover`).
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    runtime.block_on(async {
        if wanted("latency") {
            latency_writes_and_memory().await?;
        }
        Ok(())
    })
}
