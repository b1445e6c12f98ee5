//! The heartbeat protocol (`docs/heartbeat-protocol.md`) end to end, in the lab of
//! `speaker_lab`: three nodes and a client on one LAN bridge, real `ferrolb-speaker` processes,
//! the API server double on the management network. A probe in the client namespace asks who
//! has each VIP every 20 ms throughout, and every scenario counts the MACs that answer: no
//! round may have two, except where the protocol document says two answer (heartbeats cut
//! while ARP passes).
//!
//! - [`api_outage_and_node_loss`]: every node cut off from the API server for 10 s; the owner
//!   lost during another outage; the owner lost with the API up.
//! - [`partitions`]: a node cut off from the API server alone; a node that hears no peer
//!   (heartbeats dropped both ways on its LAN interface, ARP passing); the LAN split in two.
//! - [`keys_forgeries_and_replays`]: a key rotation; heartbeats tagged with a wrong key; a flood
//!   of replayed and forged frames.
//!
//! The tests take turns, one lab at a time: they bound gaps of a few hundred milliseconds on
//! small machines. Needs root (network namespaces), and nft with the netdev egress hook (Linux
//! 5.16, nftables 1.0.1; Debian package `nftables`, which the lab needs anyway) for cutting
//! heartbeats; what cannot run prints `SKIPPED <why>` (a failure when FERROLB_REQUIRE_ALL_TESTS
//! is set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod speaker_lab;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::IpAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use ferrolb_crds::heartbeat_key::{HeartbeatKeys, SECRET_NAME};
use ferrolb_speaker::heartbeat::{Heartbeat, Kind, NodeId, node_id, wire};
use ferrolb_speaker::heartbeat_keys::KeyRing;
use ferrolb_speaker::heartbeat_transport::{
    ETHERTYPE_HEARTBEAT, HEARTBEAT_FILTER, ethernet_frame, split_frame,
};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::packet::filter::BpfInstruction;
use ferrolb_speaker::packet_socket::open_blocking;
use ferrolb_speaker::probe::{Heard, Probe, double_answers, enter_netns, index_of, send_in_netns};
use ferrolb_tests::harness::{root_available, skip};
use ferrolb_tests::netlab::Host;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use speaker_lab::{Cluster, SYSTEM, VIP4, VIP6};

/// The longest a VIP may go unanswered while nothing fails.
const PROBE_GAP: Duration = Duration::from_millis(300);
/// The longest failover gap after a node is lost (the dead time is 300 ms; the bench's target
/// median is 0.3 s, this bound leaves room for a noisy machine).
const FAILOVER: Duration = Duration::from_secs(1);
/// After a partition heals, each VIP has one owner again within this.
const HEAL: Duration = Duration::from_secs(2);
/// "Settled": over the last SETTLE_WINDOW each VIP was answered by one MAC, SETTLE_ANSWERS
/// times at least (of 25 requests).
const SETTLE_WINDOW: Duration = Duration::from_millis(500);
const SETTLE_ANSWERS: usize = 12;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the whole cluster is cut off from the API server (the failover bench does 60 s).
const OUTAGE: Duration = Duration::from_secs(10);
const AFTER_OUTAGE: Duration = Duration::from_secs(3);
/// The extra single-VIP Services of the partition test, beside `web` (VIP4 and VIP6): enough
/// owners that every node has some and none has all.
const PARTITION_VIPS: [&str; 5] = [
    "198.51.100.201",
    "198.51.100.202",
    "198.51.100.203",
    "198.51.100.204",
    "198.51.100.205",
];
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The nftables table that cuts a node's heartbeats.
const CUT_TABLE: &str = "ferrolb_heartbeat_cut";
/// The second LAN bridge a split moves hosts to (in the lab's switch namespace).
const SPLIT_BRIDGE: &str = "lan-split";
/// Where kube-rs' Recorder puts events about cluster-scoped objects such as Nodes.
const NODE_EVENTS_NAMESPACE: &str = "default";

/// One lab at a time: a second one would share the two cores and the gaps measured here.
static TAKE_TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// What the client heard
// ---------------------------------------------------------------------------------------------

fn ips(texts: &[&str]) -> anyhow::Result<Vec<IpAddr>> {
    texts
        .iter()
        .map(|t| t.parse().with_context(|| format!("{t} is not an IP")))
        .collect()
}

fn mac_of(host: &Host) -> anyhow::Result<MacAddr> {
    host.lan_mac
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", host.lan_mac))
}

/// The node a MAC belongs to (the MAC itself when none).
fn who(cluster: &Cluster, mac: MacAddr) -> String {
    cluster
        .node_of_mac(&mac.to_string())
        .unwrap_or_else(|| mac.to_string())
}

fn earlier(at: Instant, by: Duration) -> Instant {
    at.checked_sub(by).unwrap_or(at)
}

/// Solicited answers in [from, to], by IP and MAC.
fn answerers(
    heard: &[Heard],
    from: Instant,
    to: Instant,
) -> BTreeMap<IpAddr, BTreeMap<MacAddr, usize>> {
    let mut seen: BTreeMap<IpAddr, BTreeMap<MacAddr, usize>> = BTreeMap::new();
    for h in heard
        .iter()
        .filter(|h| h.solicited && h.at >= from && h.at <= to)
    {
        *seen.entry(h.ip).or_default().entry(h.mac).or_default() += 1;
    }
    seen
}

fn named(cluster: &Cluster, macs: &BTreeMap<MacAddr, usize>) -> BTreeMap<String, usize> {
    macs.iter().map(|(m, n)| (who(cluster, *m), *n)).collect()
}

/// The longest stretch of [from, to] without a solicited answer for `ip`, and where it began.
fn longest_gap(heard: &[Heard], ip: IpAddr, from: Instant, to: Instant) -> (Duration, Instant) {
    let mut points = vec![from];
    let mut answers: Vec<Instant> = heard
        .iter()
        .filter(|h| h.solicited && h.ip == ip && h.at >= from && h.at <= to)
        .map(|h| h.at)
        .collect();
    answers.sort();
    points.extend(answers);
    points.push(to);
    points
        .windows(2)
        .map(|pair| (pair[1].saturating_duration_since(pair[0]), pair[0]))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((Duration::ZERO, from))
}

/// Rounds in [from, to] in which two MACs answered one IP.
fn doubles_in(heard: &[Heard], from: Instant, to: Instant) -> Vec<(u64, IpAddr, Vec<MacAddr>)> {
    let window: Vec<Heard> = heard
        .iter()
        .filter(|h| h.at >= from && h.at <= to)
        .copied()
        .collect();
    double_answers(&window)
}

/// Over [from, to]: each IP answered by its owner in `owners` alone, never by two MACs in one
/// round, and never unanswered for PROBE_GAP. Returns the longest gap.
fn check_steady(
    cluster: &Cluster,
    heard: &[Heard],
    owners: &BTreeMap<IpAddr, MacAddr>,
    from: Instant,
    to: Instant,
    what: &str,
) -> anyhow::Result<Duration> {
    let seen = answerers(heard, from, to);
    let mut longest = Duration::ZERO;
    for (ip, owner) in owners {
        let macs = seen.get(ip).cloned().unwrap_or_default();
        ensure!(
            macs.keys().eq([owner]),
            "{what}: {ip} should be answered by {} alone; answers by node: {:?}",
            who(cluster, *owner),
            named(cluster, &macs)
        );
        let (gap, at) = longest_gap(heard, *ip, from, to);
        ensure!(
            gap < PROBE_GAP,
            "{what}: {ip} went unanswered for {gap:?}, from {:?} into the {:?} window",
            at.saturating_duration_since(from),
            to.saturating_duration_since(from)
        );
        longest = longest.max(gap);
    }
    let doubles = doubles_in(heard, from, to);
    ensure!(
        doubles.is_empty(),
        "{what}: two nodes answered in one round: {:?}",
        &doubles[..doubles.len().min(5)]
    );
    Ok(longest)
}

/// Waits until each of `ips` has been answered by one MAC alone over the last SETTLE_WINDOW;
/// returns them.
async fn settle(
    cluster: &Cluster,
    probe: &Probe,
    ips: &[IpAddr],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<IpAddr, MacAddr>> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        let seen = answerers(&probe.heard(), earlier(now, SETTLE_WINDOW), now);
        let owners: BTreeMap<IpAddr, MacAddr> = ips
            .iter()
            .filter_map(|ip| match seen.get(ip)?.iter().collect::<Vec<_>>()[..] {
                [(mac, count)] if *count >= SETTLE_ANSWERS => Some((*ip, *mac)),
                _ => None,
            })
            .collect();
        if owners.len() == ips.len() {
            return Ok(owners);
        }
        if now > deadline {
            let seen: BTreeMap<IpAddr, BTreeMap<String, usize>> = seen
                .iter()
                .map(|(ip, macs)| (*ip, named(cluster, macs)))
                .collect();
            bail!(
                "not settled within {timeout:?}: answers in the last {SETTLE_WINDOW:?} by IP and node: {seen:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// For `ip`, lost by `old` at `at`: the first answer of another MAC after `at`, and the gap
/// from `old`'s last answer before it.
fn failover(heard: &[Heard], ip: IpAddr, old: MacAddr, at: Instant) -> Option<(Duration, Heard)> {
    let first = heard
        .iter()
        .filter(|h| h.solicited && h.ip == ip && h.mac != old && h.at > at)
        .min_by_key(|h| h.at)?;
    let last_old = heard
        .iter()
        .filter(|h| h.solicited && h.ip == ip && h.mac == old && h.at < first.at)
        .map(|h| h.at)
        .max()?;
    Some((first.at - last_old, *first))
}

/// Waits until another MAC than `old` has answered each of `ips` after `at`; returns when the
/// last of them did.
async fn wait_takeover(
    probe: &Probe,
    ips: &[IpAddr],
    old: MacAddr,
    at: Instant,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = at + timeout;
    loop {
        let heard = probe.heard();
        let firsts: Vec<Instant> = ips
            .iter()
            .filter_map(|ip| failover(&heard, *ip, old, at).map(|(_, h)| h.at))
            .collect();
        if firsts.len() == ips.len() {
            return Ok(firsts.into_iter().max().unwrap_or(at));
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} IPs were taken over within {timeout:?}",
                firsts.len(),
                ips.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each IP's failover after `old` was lost at `at`: the gap is below FAILOVER, one MAC takes
/// over each IP and none answers twice with the old one. Returns the new owners.
fn check_failover(
    cluster: &Cluster,
    heard: &[Heard],
    ips: &[IpAddr],
    old: MacAddr,
    at: Instant,
    what: &str,
) -> anyhow::Result<BTreeMap<IpAddr, MacAddr>> {
    let mut owners = BTreeMap::new();
    for ip in ips {
        let (gap, first) = failover(heard, *ip, old, at)
            .with_context(|| format!("{what}: {ip} not taken over"))?;
        eprintln!(
            "{what}: {ip} failed over from {} to {} with a gap of {gap:?} ({:?} after the fault)",
            who(cluster, old),
            who(cluster, first.mac),
            first.at - at
        );
        ensure!(
            gap < FAILOVER,
            "{what}: {ip} was unanswered for {gap:?} (bound {FAILOVER:?})"
        );
        owners.insert(*ip, first.mac);
    }
    let doubles = doubles_in(heard, earlier(at, Duration::from_secs(1)), Instant::now());
    ensure!(
        doubles.is_empty(),
        "{what}: two nodes answered in one round: {:?}",
        &doubles[..doubles.len().min(5)]
    );
    Ok(owners)
}

/// Over the HEAL after `healed`: how long after it any other MAC than the owner answered, and
/// the longest gap. Fails when another MAC still answered at the end of it.
fn check_healed(
    heard: &[Heard],
    owners: &BTreeMap<IpAddr, MacAddr>,
    healed: Instant,
    what: &str,
) -> anyhow::Result<()> {
    let end = healed + HEAL;
    let mut settled_after = Duration::ZERO;
    let mut longest = Duration::ZERO;
    for (ip, owner) in owners {
        let last_other = heard
            .iter()
            .filter(|h| h.solicited && h.ip == *ip && h.mac != *owner && h.at >= healed)
            .map(|h| h.at.saturating_duration_since(healed))
            .max()
            .unwrap_or_default();
        settled_after = settled_after.max(last_other);
        longest = longest.max(longest_gap(heard, *ip, healed, end).0);
    }
    let doubled = doubles_in(heard, healed, end).len();
    eprintln!(
        "{what}: every VIP answered by its owner alone {settled_after:?} after healing; \
         {doubled} rounds answered twice and a longest gap of {longest:?} in the {HEAL:?} after it"
    );
    ensure!(
        settled_after < HEAL,
        "{what}: VIPs still answered by another node {settled_after:?} after healing"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The speakers' metrics and logs
// ---------------------------------------------------------------------------------------------

/// One scrape of a speaker's /metrics (read inside its node's namespace).
struct Scrape(String);

impl Scrape {
    fn of(host: &Host) -> anyhow::Result<Self> {
        let output = host
            .run("curl", &["-sf", "-m2", "http://127.0.0.1:7473/metrics"])
            .with_context(|| format!("scraping the speaker on {}", host.name))?;
        Ok(Self(String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    /// The sum of the series of `name` with the label `key="value"` (0 when there is none:
    /// counters appear at their first increment).
    fn value(&self, name: &str, (key, value): (&str, &str)) -> f64 {
        let wanted = format!("{key}=\"{value}\"");
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, number) = line.rsplit_once(' ')?;
                let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.trim_end_matches('}').split(',').any(|l| l == wanted))
                    .then(|| number.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    /// The value of an unlabelled series, if the speaker has it.
    fn value_of(&self, name: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            (series == name).then(|| number.parse().ok()).flatten()
        })
    }

    fn rejected(&self, reason: &str) -> f64 {
        self.value(
            "ferrolb_speaker_heartbeats_rejected_total",
            ("reason", reason),
        )
    }

    fn received(&self) -> f64 {
        self.value(
            "ferrolb_speaker_heartbeats_received_total",
            ("interface", "lan0"),
        )
    }

    fn peers_alive(&self) -> f64 {
        self.value("ferrolb_speaker_peers_alive", ("interface", "lan0"))
    }
}

fn scrape_all(cluster: &Cluster) -> anyhow::Result<BTreeMap<String, Scrape>> {
    NODES
        .iter()
        .map(|name| Ok(((*name).to_owned(), Scrape::of(cluster.host(name))?)))
        .collect()
}

/// Waits until `condition` holds for every node's scrape; fails with the values seen.
async fn wait_metrics(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&str, &Scrape) -> bool,
) -> anyhow::Result<BTreeMap<String, Scrape>> {
    let deadline = Instant::now() + timeout;
    loop {
        // A speaker that has just been started may not serve /metrics yet.
        let scrapes = match scrape_all(cluster) {
            Ok(scrapes) => scrapes,
            Err(error) if Instant::now() < deadline => {
                eprintln!("{what}: {error:#}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let failing: Vec<&String> = scrapes
            .iter()
            .filter(|(name, scrape)| !condition(name, scrape))
            .map(|(name, _)| name)
            .collect();
        if failing.is_empty() {
            return Ok(scrapes);
        }
        if Instant::now() > deadline {
            bail!("{what}: not on {failing:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Text without the terminal colour codes tracing writes.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Waits until every speaker's latest "heartbeat keys loaded" line names `ids` (as logged,
/// e.g. "[1, 2]") and `active`.
async fn wait_keys_loaded(
    cluster: &Cluster,
    ids: &str,
    active: u16,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let (ids, active) = (format!("ids={ids}"), format!(" active={active}"));
    loop {
        let pending: Vec<(&String, String)> = cluster
            .speakers
            .iter()
            .filter_map(|(name, speaker)| {
                let log = strip_ansi(&speaker.output());
                let last = log
                    .lines()
                    .rfind(|l| l.contains("heartbeat keys loaded"))
                    .unwrap_or_default()
                    .to_owned();
                (!(last.contains(&ids) && last.contains(&active))).then_some((name, last))
            })
            .collect();
        if pending.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("speakers without keys {ids}{active} after {timeout:?}: {pending:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of every speaker's log, for a failing scenario.
fn dump_logs(cluster: &Cluster) {
    for (name, speaker) in &cluster.speakers {
        let log = strip_ansi(&speaker.output());
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "--- speaker on {name}, last {} lines ---\n{}",
            tail.len(),
            tail.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

type Action = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

/// Runs `actions` on threads of their own released together; returns the moment of release.
fn at_once(actions: Vec<Action>) -> anyhow::Result<Instant> {
    let barrier = Arc::new(Barrier::new(actions.len() + 1));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let released = std::thread::scope(|scope| {
        for action in actions {
            let (barrier, errors) = (barrier.clone(), errors.clone());
            scope.spawn(move || {
                barrier.wait();
                if let Err(error) = action() {
                    errors.lock().unwrap().push(format!("{error:#}"));
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let errors = errors.lock().unwrap();
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(released)
}

fn link_action(host: &Host, interface: &str, up: bool) -> Action {
    let (host, interface) = (host.clone(), interface.to_owned());
    Box::new(move || Ok(host.set_link(&interface, up)?))
}

/// `interface` of every host in `hosts` up or down at the same instant.
fn set_links_at_once(hosts: &[Host], interface: &str, up: bool) -> anyhow::Result<Instant> {
    at_once(
        hosts
            .iter()
            .map(|host| link_action(host, interface, up))
            .collect(),
    )
}

/// The node is lost: its speaker SIGKILLed and `interfaces` set down at the same instant.
fn lose_node(cluster: &Cluster, node: &str, interfaces: &[&str]) -> anyhow::Result<Instant> {
    let pid = cluster
        .speakers
        .get(node)
        .with_context(|| format!("no speaker on {node}"))?
        .pid();
    let mut actions: Vec<Action> = vec![Box::new(move || {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -KILL {pid} failed");
        Ok(())
    })];
    let host = cluster.host(node);
    actions.extend(interfaces.iter().map(|i| link_action(host, i, false)));
    at_once(actions)
}

/// Brings a lost node back: links up, its LAN IPv6 address again (it goes with the link), and
/// a new speaker; waits until it has rejoined (every speaker counts both peers alive on the LAN
/// and it is not fenced), and its startup hold is over.
async fn restore_node(cluster: &mut Cluster, node: &str) -> anyhow::Result<()> {
    if let Some(mut old) = cluster.speakers.remove(node) {
        old.wait_exit(Duration::from_secs(5))?;
    }
    let host = cluster.host(node).clone();
    host.set_link("lan0", true)?;
    host.set_link("mgmt0", true)?;
    host.run(
        "ip",
        &[
            "addr",
            "replace",
            &format!("{}/64", host.lan_ipv6),
            "dev",
            "lan0",
            "nodad",
        ],
    )?;
    cluster.start_speaker(node)?;
    wait_metrics(
        cluster,
        &format!("{node} rejoined"),
        Duration::from_secs(15),
        |name, s| {
            s.peers_alive() == 2.0
                && (name != node || s.value_of("ferrolb_speaker_fenced") == Some(0.0))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

/// Drops heartbeats to and from `host` on its switch port, both ways, as a filter in the network
/// would (the host's own sends succeed); everything else passes.
fn cut_heartbeats(cluster: &Cluster, host: &str) -> anyhow::Result<()> {
    let (switch, port) = (switch_netns(cluster)?, lan_port(cluster, host)?);
    ferrolb_tests::netlab::run(
        "ip",
        &[
            "netns",
            "exec",
            &switch,
            "nft",
            &format!(
                "add table netdev {CUT_TABLE}; \
                 add chain netdev {CUT_TABLE} in {{ type filter hook ingress device {port} priority 0; policy accept; }}; \
                 add chain netdev {CUT_TABLE} out {{ type filter hook egress device {port} priority 0; policy accept; }}; \
                 add rule netdev {CUT_TABLE} in ether type 0x88b5 drop; \
                 add rule netdev {CUT_TABLE} out ether type 0x88b5 drop"
            ),
        ],
    )?;
    Ok(())
}

fn heal_heartbeats(cluster: &Cluster) -> anyhow::Result<()> {
    let switch = switch_netns(cluster)?;
    ferrolb_tests::netlab::run(
        "ip",
        &[
            "netns", "exec", &switch, "nft", "delete", "table", "netdev", CUT_TABLE,
        ],
    )?;
    Ok(())
}

/// Whether this machine's nft can cut heartbeats (the netdev egress hook), tried on `host`'s
/// port.
fn can_cut_heartbeats(cluster: &Cluster, host: &str) -> Result<(), String> {
    match cut_heartbeats(cluster, host) {
        Ok(()) => heal_heartbeats(cluster).map_err(|e| format!("{e:#}")),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// The lab's switch namespace, where the LAN bridge and the hosts' ports are: hosts are
/// `<lab>-<name>`, the switch `<lab>-switch` (`NetLab`).
fn switch_netns(cluster: &Cluster) -> anyhow::Result<String> {
    let client = &cluster.client;
    let lab = client
        .netns
        .strip_suffix(&format!("-{}", client.name))
        .with_context(|| format!("{} is not <lab>-{}", client.netns, client.name))?;
    Ok(format!("{lab}-switch"))
}

/// A host's port on the switch: `lan-<n>`, n its place in the lab.
fn lan_port(cluster: &Cluster, host: &str) -> anyhow::Result<String> {
    let n = cluster
        .lab
        .hosts()
        .iter()
        .position(|h| h.name == host)
        .with_context(|| format!("no host {host}"))?;
    Ok(format!("lan-{n}"))
}

/// Moves the switch ports of `hosts` to `bridge` at the same instant.
fn move_ports(cluster: &Cluster, hosts: &[&str], bridge: &str) -> anyhow::Result<Instant> {
    let switch = switch_netns(cluster)?;
    let mut actions: Vec<Action> = Vec::new();
    for host in hosts {
        let (switch, port, bridge) = (switch.clone(), lan_port(cluster, host)?, bridge.to_owned());
        let shown =
            ferrolb_tests::netlab::run("ip", &["-n", &switch, "-o", "link", "show", &port])?;
        ensure!(
            String::from_utf8_lossy(&shown.stdout).contains(" master "),
            "{port} in {switch} is on no bridge"
        );
        actions.push(Box::new(move || {
            ferrolb_tests::netlab::run(
                "ip",
                &["-n", &switch, "link", "set", &port, "master", &bridge],
            )?;
            Ok(())
        }));
    }
    at_once(actions)
}

/// Splits the LAN: `hosts` move to a bridge of their own, out of reach of the rest.
fn split_lan(cluster: &Cluster, hosts: &[&str]) -> anyhow::Result<Instant> {
    let switch = switch_netns(cluster)?;
    let run = |args: &[&str]| ferrolb_tests::netlab::run("ip", args).map(drop);
    if run(&["-n", &switch, "link", "show", SPLIT_BRIDGE]).is_err() {
        run(&["-n", &switch, "link", "add", SPLIT_BRIDGE, "type", "bridge"])?;
        run(&[
            "-n",
            &switch,
            "link",
            "set",
            SPLIT_BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        run(&["-n", &switch, "link", "set", SPLIT_BRIDGE, "up"])?;
    }
    move_ports(cluster, hosts, SPLIT_BRIDGE)
}

fn heal_lan(cluster: &Cluster, hosts: &[&str]) -> anyhow::Result<Instant> {
    move_ports(cluster, hosts, "lan")
}

// ---------------------------------------------------------------------------------------------
// Heartbeats on the client's side of the LAN
// ---------------------------------------------------------------------------------------------

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// xorshift64: the forged bytes need no more than to differ.
struct Noise(u64);

impl Noise {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A key ring with one random key of id `id`, active: a key no speaker has.
fn wrong_keys(id: u16) -> anyhow::Result<KeyRing> {
    let random = HeartbeatKeys::generate_data()?;
    let key = random.get("key-1").context("no generated key")?;
    let (name, active) = (format!("key-{id}"), id.to_string());
    let entries: [(&str, &[u8]); 2] = [(&name, key), ("active", active.as_bytes())];
    Ok(KeyRing::new(&HeartbeatKeys::from_data(entries)?)?)
}

/// A heartbeat claiming to come from `node`, fresh by the clock, listing `suspects`.
fn claim(node: NodeId, key_id: u16, sequence: u32, suspects: Vec<NodeId>) -> Heartbeat {
    let now = unix_ms();
    Heartbeat {
        kind: Kind::Heartbeat,
        api_reachable: true,
        key_id,
        node,
        incarnation: now * 1000,
        sequence,
        sent_unix_ms: now,
        suspects,
        reported: vec![],
    }
}

/// Heartbeat frames the client hears on its LAN interface, until it has `per_sender` from each
/// of `senders` or `within` has passed.
fn capture_heartbeats(
    client: &Host,
    senders: &[MacAddr],
    per_sender: usize,
    within: Duration,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let (netns, interface) = (client.netns.clone(), client.lan_interface.clone());
    let senders = senders.to_vec();
    std::thread::spawn(move || -> anyhow::Result<Vec<Vec<u8>>> {
        enter_netns(&netns)?;
        let index = index_of(&interface)?;
        let socket = open_blocking(
            index,
            ETHERTYPE_HEARTBEAT,
            &HEARTBEAT_FILTER,
            Duration::from_millis(50),
        )?;
        let mut by_sender: BTreeMap<MacAddr, Vec<Vec<u8>>> = BTreeMap::new();
        let mut buffer = vec![0u8; 2048];
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if senders
                .iter()
                .all(|s| by_sender.get(s).is_some_and(|f| f.len() >= per_sender))
            {
                break;
            }
            let len = match (&socket).read(&mut buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            let frame = buffer[..len].to_vec();
            if let Some((source, _)) = split_frame(&frame) {
                let kept = by_sender.entry(source).or_default();
                if kept.len() < per_sender {
                    kept.push(frame);
                }
            }
        }
        let missing: Vec<String> = senders
            .iter()
            .filter(|s| by_sender.get(s).is_none_or(|f| f.len() < per_sender))
            .map(MacAddr::to_string)
            .collect();
        ensure!(
            missing.is_empty(),
            "no {per_sender} heartbeats from {missing:?} within {within:?}"
        );
        Ok(by_sender.into_values().flatten().collect())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the capturing thread panicked"))?
}

/// Sends `frames` as they are from `client`'s LAN interface, `per_second` of them, on an
/// absolute schedule. Returns how many the kernel refused (a full queue) and how long it took.
async fn flood(
    client: &Host,
    frames: Vec<Vec<u8>>,
    per_second: u32,
) -> anyhow::Result<(usize, Duration)> {
    let (netns, interface) = (client.netns.clone(), client.lan_interface.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, Duration)> {
        enter_netns(&netns)?;
        let index = index_of(&interface)?;
        // Receives nothing: it only sends.
        let drop_all = [BpfInstruction {
            code: 0x06,
            jump_true: 0,
            jump_false: 0,
            k: 0,
        }];
        let socket = open_blocking(
            index,
            ETHERTYPE_HEARTBEAT,
            &drop_all,
            Duration::from_millis(100),
        )?;
        let started = Instant::now();
        let mut refused = 0;
        for (i, frame) in frames.iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / f64::from(per_second));
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
            if socket.send(frame).is_err() {
                refused += 1;
            }
        }
        Ok((refused, started.elapsed()))
    })
    .await?
}

// ---------------------------------------------------------------------------------------------
// 1. An API outage, and nodes lost
// ---------------------------------------------------------------------------------------------

/// The API server unreachable from every node: owners keep answering (no heartbeat depends on
/// it) during and after; a node lost meanwhile is replaced within the dead time, from the facts
/// each speaker last read; and a node lost with the API up, the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_and_node_loss() -> anyhow::Result<()> {
    if !root_available("api_outage_and_node_loss")? {
        return Ok(());
    }
    let _turn = TAKE_TURNS.lock().await;
    let mut cluster = Cluster::start().await?;
    let probe = cluster.probe(&[VIP4, VIP6])?;
    let outcome = outage_and_node_loss(&mut cluster, &probe).await;
    if outcome.is_err() {
        dump_logs(&cluster);
    }
    outcome?;
    cluster.finish(probe).await
}

async fn outage_and_node_loss(cluster: &mut Cluster, probe: &Probe) -> anyhow::Result<()> {
    cluster
        .service(
            "web",
            &[VIP4, VIP6],
            json!({"ipFamilyPolicy": "PreferDualStack"}),
        )
        .await?;
    let vips = ips(&[VIP4, VIP6])?;
    let owners = settle(cluster, probe, &vips, SETTLE_TIMEOUT).await?;
    let owner = owners[&vips[0]];
    ensure!(
        owners.values().all(|mac| *mac == owner),
        "both families of one Service have one owner: {owners:?}"
    );
    let owner_name = who(cluster, owner);
    eprintln!("web ({VIP4}, {VIP6}) is answered from {owner_name}");
    let nodes = cluster.nodes.clone();

    // Every node cut off from the API server: nothing changes on the LAN.
    let start = set_links_at_once(&nodes, "mgmt0", false)?;
    tokio::time::sleep(OUTAGE).await;
    let end = set_links_at_once(&nodes, "mgmt0", true)?;
    tokio::time::sleep(AFTER_OUTAGE).await;
    let heard = probe.heard();
    let during = check_steady(
        cluster,
        &heard,
        &owners,
        start,
        end,
        "during the API outage",
    )?;
    let after = check_steady(
        cluster,
        &heard,
        &owners,
        end,
        Instant::now(),
        "after the API outage",
    )?;
    eprintln!(
        "API outage of {OUTAGE:?}: {owner_name} answered throughout; longest gap {during:?} \
         during it, {after:?} in the {AFTER_OUTAGE:?} after"
    );

    // Another outage, and the owner node lost during it: the others take over from what they
    // last read.
    let start = set_links_at_once(&nodes, "mgmt0", false)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost_at = lose_node(cluster, &owner_name, &["lan0"])?;
    let taken = wait_takeover(probe, &vips, owner, lost_at, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = Instant::now();
    let heard = probe.heard();
    check_steady(
        cluster,
        &heard,
        &owners,
        start,
        lost_at,
        "in the second outage, before the owner was lost",
    )?;
    let what = "owner lost during the API outage";
    let new_owners = check_failover(cluster, &heard, &vips, owner, lost_at, what)?;
    let successor = new_owners[&vips[0]];
    ensure!(
        new_owners.values().all(|mac| *mac == successor),
        "{what}: both families move together: {new_owners:?}"
    );
    let longest = check_steady(
        cluster,
        &heard,
        &new_owners,
        taken,
        end,
        "after the takeover in the outage",
    )?;
    eprintln!(
        "{what}: {} answers; longest gap after the takeover {longest:?}",
        who(cluster, successor)
    );
    for host in nodes.iter().filter(|h| h.name != owner_name) {
        host.set_link("mgmt0", true)?;
    }
    restore_node(cluster, &owner_name).await?;
    let owners = settle(cluster, probe, &vips, SETTLE_TIMEOUT).await?;
    eprintln!(
        "{owner_name} restored; {} answers",
        who(cluster, owners[&vips[0]])
    );

    // Node loss with the API up: SIGKILL, LAN and management links down at once.
    let owner = owners[&vips[0]];
    let owner_name = who(cluster, owner);
    let lost_at = lose_node(cluster, &owner_name, &["lan0", "mgmt0"])?;
    let taken = wait_takeover(probe, &vips, owner, lost_at, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heard = probe.heard();
    let what = "node lost";
    let new_owners = check_failover(cluster, &heard, &vips, owner, lost_at, what)?;
    check_steady(
        cluster,
        &heard,
        &new_owners,
        taken,
        Instant::now(),
        "after the node loss",
    )?;
    restore_node(cluster, &owner_name).await?;
    let owners = settle(cluster, probe, &vips, SETTLE_TIMEOUT).await?;
    eprintln!(
        "{owner_name} restored; {} answers",
        who(cluster, owners[&vips[0]])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Partitions
// ---------------------------------------------------------------------------------------------

/// A node cut off from the API server alone; a node whose heartbeats are cut both ways while
/// ARP passes; the LAN split in two. Double answers are allowed only where the protocol
/// document says both sides answer, and for HEAL after each partition heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions() -> anyhow::Result<()> {
    const TEST: &str = "partitions";
    if !root_available(TEST)? {
        return Ok(());
    }
    let _turn = TAKE_TURNS.lock().await;
    let mut cluster = Cluster::start().await?;
    let mut targets = vec![VIP4, VIP6];
    targets.extend(PARTITION_VIPS);
    let probe = cluster.probe(&targets)?;
    let mut allowed = Vec::new();
    let outcome = partition_scenarios(&mut cluster, &probe, &targets, &mut allowed, TEST).await;
    if outcome.is_err() {
        dump_logs(&cluster);
    }
    outcome?;
    // Outside the windows allowed, no round had two answering MACs.
    let heard = probe.heard();
    let rounds = probe.sent().len();
    probe.stop()?;
    let outside: Vec<Heard> = heard
        .iter()
        .filter(|h| {
            !allowed
                .iter()
                .any(|(from, to)| h.at >= *from && h.at <= *to)
        })
        .copied()
        .collect();
    let doubles = double_answers(&outside);
    assert!(
        doubles.is_empty(),
        "two nodes answered in one round outside the documented windows: {:?}",
        &doubles[..doubles.len().min(5)]
    );
    eprintln!(
        "probe: {rounds} rounds, {} solicited answers; none doubled outside the {} documented windows",
        heard.iter().filter(|h| h.solicited).count(),
        allowed.len()
    );
    cluster.stop().await;
    Ok(())
}

async fn partition_scenarios(
    cluster: &mut Cluster,
    probe: &Probe,
    targets: &[&str],
    allowed: &mut Vec<(Instant, Instant)>,
    test: &str,
) -> anyhow::Result<()> {
    cluster
        .service(
            "web",
            &[VIP4, VIP6],
            json!({"ipFamilyPolicy": "PreferDualStack"}),
        )
        .await?;
    for (n, vip) in PARTITION_VIPS.iter().enumerate() {
        cluster
            .service(&format!("shop-{n}"), &[vip], json!({}))
            .await?;
    }
    let vips = ips(targets)?;
    let owners = settle(cluster, probe, &vips, SETTLE_TIMEOUT).await?;
    let layout: BTreeMap<String, usize> = owners.values().fold(BTreeMap::new(), |mut m, mac| {
        *m.entry(who(cluster, *mac)).or_default() += 1;
        m
    });
    eprintln!("VIPs per owner: {layout:?}");

    // (c) A node that hears its peers but not the API server: nothing moves.
    let x = who(cluster, owners[&vips[0]]);
    let host = cluster.host(&x).clone();
    let down = Instant::now();
    host.set_link("mgmt0", false)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let up = Instant::now();
    host.set_link("mgmt0", true)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heard = probe.heard();
    let what = format!("{x} cut off from the API server");
    let during = check_steady(cluster, &heard, &owners, down, up, &what)?;
    let after = check_steady(cluster, &heard, &owners, up, Instant::now(), "after it")?;
    eprintln!("{what} for 5 s: nothing moved; longest gap {during:?}, {after:?} in the 2 s after");

    // (a) A node that hears no peer: its heartbeats dropped both ways, ARP passing.
    match can_cut_heartbeats(cluster, "node-c") {
        Err(reason) => skip(
            &format!("{test} (a node that hears no peer)"),
            &format!(
                "nft cannot drop heartbeats on a switch port (netdev ingress and egress hooks: Linux 5.16, nftables 1.0.1; Debian package nftables): {reason}"
            ),
        )?,
        Ok(()) => {
            let window = isolated_node(cluster, probe, &vips).await?;
            allowed.push(window);
        }
    }

    // (b) The LAN split in two: node-a and the client on one side, node-b and node-c on the
    // other.
    let owners = settle(cluster, probe, &vips, SETTLE_TIMEOUT).await?;
    let far = ["node-b", "node-c"];
    let split = split_lan(cluster, &far)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // node-a counts both peers dead, node-b and node-c count node-a dead.
    wait_metrics(
        cluster,
        "peers alive during the split",
        Duration::from_secs(2),
        |name, s| s.peers_alive() == if name == "node-a" { 0.0 } else { 1.0 },
    )
    .await?;
    let healed = heal_lan(cluster, &far)?;
    let heard = probe.heard();
    let near = mac_of(cluster.host("node-a"))?;
    // The client reaches node-a's half only, and node-a answers for every IP, as the half
    // without node-a does for its own clients (it has none here).
    for (ip, owner) in owners.iter().filter(|(_, owner)| **owner != near) {
        let (gap, first) = failover(&heard, *ip, *owner, split)
            .with_context(|| format!("{ip} not taken over by node-a after the split"))?;
        eprintln!(
            "LAN split: {ip} moved from {} to {} with a gap of {gap:?}",
            who(cluster, *owner),
            who(cluster, first.mac)
        );
        ensure!(
            first.mac == near && gap < FAILOVER,
            "LAN split: {ip} answered by {} after {gap:?}",
            who(cluster, first.mac)
        );
    }
    let on_near_side: BTreeMap<IpAddr, MacAddr> = vips.iter().map(|ip| (*ip, near)).collect();
    let longest = check_steady(
        cluster,
        &heard,
        &on_near_side,
        split + FAILOVER,
        healed,
        "during the LAN split",
    )?;
    let doubles = doubles_in(&heard, split, healed);
    ensure!(
        doubles.is_empty(),
        "LAN split: the client heard both halves: {:?}",
        &doubles[..doubles.len().min(5)]
    );
    eprintln!(
        "LAN split: node-a answered every VIP alone from {FAILOVER:?} on; longest gap {longest:?}"
    );
    tokio::time::sleep(HEAL + Duration::from_secs(1)).await;
    let heard = probe.heard();
    check_healed(&heard, &owners, healed, "LAN split healed")?;
    check_steady(
        cluster,
        &heard,
        &owners,
        healed + HEAL,
        Instant::now(),
        "after the LAN split healed",
    )?;
    allowed.push((healed, healed + HEAL));
    Ok(())
}

/// Cuts the heartbeats of a node that owns some VIPs but not all, checks what the document
/// says, heals; returns the window in which two answers are documented.
async fn isolated_node(
    cluster: &Cluster,
    probe: &Probe,
    vips: &[IpAddr],
) -> anyhow::Result<(Instant, Instant)> {
    let owners = settle(cluster, probe, vips, SETTLE_TIMEOUT).await?;
    let owned = |name: &str| {
        let mac = mac_of(cluster.host(name)).ok();
        owners.values().filter(|m| Some(**m) == mac).count()
    };
    let x = ["node-c", "node-a", "node-b"]
        .into_iter()
        .find(|name| (1..owners.len()).contains(&owned(name)))
        .context("no node owns some VIPs but not all")?;
    let x_mac = mac_of(cluster.host(x))?;
    cut_heartbeats(cluster, x)?;
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // x counts its peers dead; they count x dead.
    wait_metrics(
        cluster,
        &format!("peers alive with {x}'s heartbeats cut"),
        Duration::from_secs(2),
        |name, s| s.peers_alive() == if name == x { 0.0 } else { 1.0 },
    )
    .await?;
    let heard = probe.heard();
    let now = Instant::now();
    heal_heartbeats(cluster)?;
    let healed = Instant::now();
    // As the document says: x hears no peer, so it counts them all dead and answers for every
    // IP it is a candidate for (all of them here), as keepalived's backup does; it cannot tell
    // "everyone died" from "my receive path died". The others count x dead and share its IPs.
    // ARP passes, so the client hears both sides: two answers for every VIP, which is why the
    // document says to keep the heartbeat path open.
    let seen = answerers(&heard, cut + FAILOVER, now);
    for (ip, owner) in &owners {
        let macs = seen.get(ip).cloned().unwrap_or_default();
        let others: Vec<&MacAddr> = macs.keys().filter(|m| **m != x_mac).collect();
        ensure!(
            macs.contains_key(&x_mac)
                && others.len() == 1
                && (*owner == x_mac || *others[0] == *owner),
            "{x} hearing no peer: {ip} (owner {}) should be answered by {x} and one other node; answers by node: {:?}",
            who(cluster, *owner),
            named(cluster, &macs)
        );
    }
    let doubled = doubles_in(&heard, cut, now).len();
    eprintln!(
        "{x} hearing no peer: {x} and the owner among the others answered every VIP, as \
         documented ({doubled} rounds answered twice in {:?})",
        now - cut
    );
    tokio::time::sleep(HEAL + Duration::from_secs(1)).await;
    let heard = probe.heard();
    let what = format!("{x}'s heartbeats restored");
    check_healed(&heard, &owners, healed, &what)?;
    check_steady(
        cluster,
        &heard,
        &owners,
        healed + HEAL,
        Instant::now(),
        &what,
    )?;
    Ok((cut, healed + HEAL))
}

// ---------------------------------------------------------------------------------------------
// 3, 4, 5. Keys, forgeries and replays
// ---------------------------------------------------------------------------------------------

/// A key rotation without a gap; heartbeats tagged with a key no speaker has; a flood of
/// replayed and forged frames. Nothing moves, and each refusal is counted by its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_forgeries_and_replays() -> anyhow::Result<()> {
    if !root_available("keys_forgeries_and_replays")? {
        return Ok(());
    }
    let _turn = TAKE_TURNS.lock().await;
    let cluster = Cluster::start().await?;
    let probe = cluster.probe(&[VIP4, VIP6])?;
    let outcome = keys_and_forgeries(&cluster, &probe).await;
    if outcome.is_err() {
        dump_logs(&cluster);
    }
    outcome?;
    cluster.finish(probe).await
}

async fn keys_and_forgeries(cluster: &Cluster, probe: &Probe) -> anyhow::Result<()> {
    cluster
        .service(
            "web",
            &[VIP4, VIP6],
            json!({"ipFamilyPolicy": "PreferDualStack"}),
        )
        .await?;
    let vips = ips(&[VIP4, VIP6])?;
    let owners = settle(cluster, probe, &vips, SETTLE_TIMEOUT).await?;
    eprintln!("web is answered from {}", who(cluster, owners[&vips[0]]));
    let active = rotate_keys(cluster, probe, &owners).await?;
    wrong_key(cluster, probe, &owners, active).await?;
    forged_and_replayed_flood(cluster, probe, &owners, active).await
}

fn encoded(bytes: Vec<u8>) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(ByteString(bytes))?)
}

/// Adds key-2, waits until every speaker has it, makes it active, removes key-1: no gap, no
/// owner change, no heartbeat refused, and heartbeats keep arriving. Returns the new active id.
async fn rotate_keys(
    cluster: &Cluster,
    probe: &Probe,
    owners: &BTreeMap<IpAddr, MacAddr>,
) -> anyhow::Result<u16> {
    let secrets: Api<Secret> = Api::namespaced(cluster.kube.clone(), SYSTEM);
    let patch = |data: Value| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    SECRET_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "data": data })),
                )
                .await
        }
    };
    let refused = |s: &Scrape| s.rejected("bad_tag") + s.rejected("unknown_key");
    wait_keys_loaded(cluster, "[1]", 1, Instant::now(), Duration::from_secs(5)).await?;
    let start = Instant::now();
    let mut samples = vec![scrape_all(cluster)?];
    let new_key = HeartbeatKeys::generate_data()?
        .remove("key-1")
        .context("no generated key")?;
    let at = Instant::now();
    patch(json!({ "key-2": encoded(new_key)? })).await?;
    let added = wait_keys_loaded(cluster, "[1, 2]", 1, at, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    samples.push(scrape_all(cluster)?);
    let at = Instant::now();
    patch(json!({ "active": encoded(b"2".to_vec())? })).await?;
    let switched = wait_keys_loaded(cluster, "[1, 2]", 2, at, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    samples.push(scrape_all(cluster)?);
    let at = Instant::now();
    patch(json!({ "key-1": null })).await?;
    let removed = wait_keys_loaded(cluster, "[2]", 2, at, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    samples.push(scrape_all(cluster)?);
    let end = Instant::now();
    eprintln!(
        "key rotation: every speaker had logged key-2 {added:?} after the patch was sent, \
         signing with it {switched:?} after, key-1 gone {removed:?} after"
    );
    for name in NODES {
        let received: Vec<f64> = samples.iter().map(|s| s[name].received()).collect();
        ensure!(
            received.windows(2).all(|pair| pair[1] > pair[0] + 5.0),
            "key rotation: {name} stopped receiving heartbeats: received after each step {received:?}"
        );
        let first = refused(&samples[0][name]);
        let last = refused(&samples[samples.len() - 1][name]);
        ensure!(
            last == first,
            "key rotation: {name} refused {} heartbeats (bad_tag, unknown_key)",
            last - first
        );
        eprintln!(
            "key rotation: {name} received {received:?} heartbeats after each step, refused none"
        );
    }
    // What the speakers send now carries key id 2.
    let senders: Vec<MacAddr> = cluster
        .nodes
        .iter()
        .map(mac_of)
        .collect::<anyhow::Result<_>>()?;
    let captured = capture_heartbeats(&cluster.client, &senders, 1, Duration::from_secs(3))?;
    for frame in &captured {
        let (_, payload) = split_frame(frame).context("not a heartbeat frame")?;
        ensure!(
            wire::key_id(payload) == Ok(2),
            "a heartbeat after the rotation carries key id {:?}",
            wire::key_id(payload)
        );
    }
    let longest = check_steady(cluster, &probe.heard(), owners, start, end, "key rotation")?;
    eprintln!("key rotation: no owner change; longest gap {longest:?}");
    Ok(2)
}

/// Heartbeats claiming to be node-c, tagged with a key no speaker has, listing the other nodes
/// as suspects (which, accepted, would silence them): counted as bad_tag, a Warning event on
/// Node node-c, and nothing moves.
async fn wrong_key(
    cluster: &Cluster,
    probe: &Probe,
    owners: &BTreeMap<IpAddr, MacAddr>,
    active: u16,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let before = scrape_all(cluster)?;
    let wrong = wrong_keys(active)?;
    let client_mac = mac_of(&cluster.client)?;
    let claimed = node_id("node-c");
    let suspects = vec![node_id("node-a"), node_id("node-b")];
    const FORGED: u32 = 20;
    for sequence in 1..=FORGED {
        let heartbeat = claim(claimed, active, sequence, suspects.clone());
        let frame = ethernet_frame(client_mac, &wire::encode(&heartbeat, wrong.signing_key()));
        send_in_netns(&cluster.client.netns, "lan0", vec![frame])?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = wait_metrics(
        cluster,
        "bad_tag counted for the wrong key",
        Duration::from_secs(5),
        |name, s| s.rejected("bad_tag") >= before[name].rejected("bad_tag") + f64::from(FORGED),
    )
    .await?;
    let counted: BTreeMap<&str, f64> = NODES
        .iter()
        .map(|n| {
            (
                *n,
                after[*n].rejected("bad_tag") - before[*n].rejected("bad_tag"),
            )
        })
        .collect();
    eprintln!("wrong key: {FORGED} forged heartbeats sent, bad_tag counted {counted:?}");
    // The Warning: Node is cluster-scoped, so kube-rs' Recorder publishes in "default".
    let events: Api<Event> = Api::namespaced(cluster.kube.clone(), NODE_EVENTS_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reporters = loop {
        let reporters: BTreeSet<String> = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("HeartbeatAuthenticationFailed")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("Node") && r.name.as_deref() == Some("node-c")
                    })
            })
            .filter_map(|e| e.reporting_instance)
            .collect();
        if reporters.len() >= 2 || Instant::now() > deadline {
            break reporters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "wrong key: HeartbeatAuthenticationFailed Warnings about Node node-c reported by {reporters:?}"
    );
    for peer in ["node-a", "node-b"] {
        ensure!(
            reporters.contains(peer),
            "no HeartbeatAuthenticationFailed Warning about Node node-c from {peer} in namespace {NODE_EVENTS_NAMESPACE}; reported by {reporters:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let longest = check_steady(
        cluster,
        &probe.heard(),
        owners,
        start,
        Instant::now(),
        "forged heartbeats of node-c",
    )?;
    wait_metrics(
        cluster,
        "both peers alive",
        Duration::from_secs(1),
        |_, s| s.peers_alive() == 2.0,
    )
    .await?;
    eprintln!("wrong key: nothing moved; longest gap {longest:?}");
    Ok(())
}

/// Real heartbeats captured from the client's side replayed thousands of times (as captured,
/// and from the client's MAC so they reach their own sender too), then again once older than
/// the freshness bound; thousands of forged frames (random tags, unknown key ids, truncated,
/// trailing bytes, oversized, garbage). Nothing moves and the refusals are counted.
async fn forged_and_replayed_flood(
    cluster: &Cluster,
    probe: &Probe,
    owners: &BTreeMap<IpAddr, MacAddr>,
    active: u16,
) -> anyhow::Result<()> {
    const REPLAYS: usize = 3_000;
    const FORGED_EACH: usize = 750;
    const STALE_REPLAYS: usize = 600;
    const PER_SECOND: u32 = 2_500;
    let client_mac = mac_of(&cluster.client)?;
    let senders: Vec<MacAddr> = cluster
        .nodes
        .iter()
        .map(mac_of)
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    let before = scrape_all(cluster)?;
    let captured = capture_heartbeats(&cluster.client, &senders, 2, Duration::from_secs(3))?;
    let captured_at = Instant::now();
    let resourced = |frame: &Vec<u8>| {
        let mut frame = frame.clone();
        frame[6..12].copy_from_slice(&client_mac.octets());
        frame
    };
    // Replays first, well within the freshness bound of the capture.
    let mut frames: Vec<Vec<u8>> = (0..REPLAYS)
        .map(|i| {
            let frame = &captured[i % captured.len()];
            if i % 2 == 0 {
                frame.clone()
            } else {
                resourced(frame)
            }
        })
        .collect();
    let mut noise = Noise::new();
    let wrong = wrong_keys(active)?;
    let ids: Vec<NodeId> = NODES.iter().map(|n| node_id(n)).collect();
    let mut forged = Vec::new();
    for i in 0..FORGED_EACH {
        let node = ids[i % ids.len()];
        let others: Vec<NodeId> = ids.iter().copied().filter(|id| *id != node).collect();
        let sequence = noise.next() as u32;
        // A random tag, claiming a real node and listing the others.
        let mut payload = wire::encode(
            &claim(node, active, sequence, others.clone()),
            wrong.signing_key(),
        );
        let tag_at = payload.len() - wire::TAG_LEN;
        payload[tag_at..].copy_from_slice(&noise.bytes(wire::TAG_LEN));
        forged.push(payload);
        // A key id the Secret does not have.
        let unknown = claim(node, active + 7, sequence, others.clone());
        forged.push(wire::encode(&unknown, wrong.signing_key()));
        // Lists declared but cut short (still long enough for the kernel filter).
        let whole = wire::encode(
            &claim(node, active, sequence, others.clone()),
            wrong.signing_key(),
        );
        forged.push(whole[..whole.len() - 10].to_vec());
        // Bytes after the tag.
        let mut longer = wire::encode(&claim(node, active, sequence, vec![]), wrong.signing_key());
        longer.extend_from_slice(&noise.bytes(8));
        forged.push(longer);
        // Longer than any heartbeat: the kernel filter drops it before the reader wakes.
        let mut oversized = b"FH\x01\x01".to_vec();
        oversized.extend_from_slice(&noise.bytes(wire::MAX_LEN + 40));
        forged.push(oversized);
        // Not a heartbeat at all.
        forged.push(noise.bytes(60 + (i % 200)));
    }
    let forged_count = forged.len();
    frames.extend(
        forged
            .into_iter()
            .map(|payload| ethernet_frame(client_mac, &payload)),
    );
    let total = frames.len();
    let flooding = flood(&cluster.client, frames, PER_SECOND);
    let sample = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        scrape_all(cluster)
    };
    let (flooded, during) = tokio::join!(flooding, sample);
    let (refused, took) = flooded?;
    let during = during?;
    // The same recordings once older than the freshness bound (5 s).
    let stale_from = captured_at + Duration::from_millis(5_500);
    tokio::time::sleep(stale_from.saturating_duration_since(Instant::now())).await;
    let stale: Vec<Vec<u8>> = (0..STALE_REPLAYS)
        .map(|i| resourced(&captured[i % captured.len()]))
        .collect();
    let (stale_refused, _) = flood(&cluster.client, stale, PER_SECOND).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = scrape_all(cluster)?;
    let end = Instant::now();
    eprintln!(
        "flood: {REPLAYS} replays of {} captured heartbeats and {forged_count} forged frames in \
         {took:?} ({PER_SECOND}/s), then {STALE_REPLAYS} replays older than 5 s; the client's \
         kernel refused {}",
        captured.len(),
        refused + stale_refused
    );
    let reasons = [
        "replayed",
        "clock",
        "bad_tag",
        "unknown_key",
        "truncated",
        "trailing_bytes",
        "not_a_heartbeat",
        "oversized",
        "unknown_node",
        "queue_full",
    ];
    for name in NODES {
        let grew = |reason: &str| after[name].rejected(reason) - before[name].rejected(reason);
        let counted: Vec<String> = reasons.iter().map(|r| format!("{r} {}", grew(r))).collect();
        let received = after[name].received() - before[name].received();
        eprintln!(
            "flood: {name} rejected {}; received {received} genuine heartbeats; {} peers alive during it",
            counted.join(", "),
            during[name].peers_alive()
        );
        // Replays as captured are dropped by their sender as its own; each other copy counts.
        ensure!(
            grew("replayed") >= (REPLAYS / 2) as f64,
            "flood: {name} counted {} replays of {REPLAYS}",
            grew("replayed")
        );
        ensure!(
            grew("clock") >= (STALE_REPLAYS / 2) as f64,
            "flood: {name} counted {} stale replays of {STALE_REPLAYS}",
            grew("clock")
        );
        for reason in ["bad_tag", "unknown_key", "truncated", "trailing_bytes"] {
            ensure!(
                grew(reason) >= (FORGED_EACH / 2) as f64,
                "flood: {name} counted {} {reason} of {FORGED_EACH}",
                grew(reason)
            );
        }
        ensure!(
            grew("queue_full") == 0.0,
            "flood: genuine heartbeats of {name} found the queue full"
        );
        // 2 peers, at least 10 heartbeats a second each (75 ms, up to 25 ms late), for the whole
        // flood, less a margin.
        let expected = 2.0 * 10.0 * (end - start).as_secs_f64() * 0.7;
        ensure!(
            received >= expected,
            "flood: {name} received {received} genuine heartbeats in {:?}, fewer than {expected}",
            end - start
        );
        ensure!(
            during[name].peers_alive() == 2.0 && after[name].peers_alive() == 2.0,
            "flood: {name} counted {} and {} peers alive during and after it",
            during[name].peers_alive(),
            after[name].peers_alive()
        );
    }
    let longest = check_steady(cluster, &probe.heard(), owners, start, end, "flood")?;
    eprintln!("flood: {total} frames, no owner change, longest gap {longest:?}");
    Ok(())
}
