//! Failover as a LAN client sees it, FerroLB beside keepalived (VRRP), in one run and in the same
//! network-namespace topology: the speaker lab's three nodes (node-a, node-b, node-c) and a
//! client on one LAN bridge (198.51.100.0/24), the nodes also on the management network that
//! reaches the API server double (see `tests/tests/speaker_lab`). Needs root and keepalived
//! (`apt-get install keepalived`); prints `SKIPPED <why>` without them (a failure when
//! FERROLB_REQUIRE_ALL_TESTS is set).
//!
//! `cargo bench -p ferrolb-tests --bench failover [-- --runs N] [--outage-seconds S]
//! [--only ferrolb|keepalived] [--cases sigterm,sigkill,node-loss,outage]`
//!
//! The client asks who has the VIP (198.51.100.200) every 10 ms from a raw socket. Per fault:
//!
//! - gap: from the old owner's last solicited ARP reply before the first solicited reply from
//!   another MAC, to that reply. While the old owner keeps answering (keepalived after SIGKILL
//!   leaves the VIP on the interface, so its kernel keeps answering) the gap is about one probe
//!   interval: the client sees no outage, but two nodes answer at once.
//! - takeover: from the fault to the first reply from another MAC.
//! - double-answer rounds: probe rounds answered by two MACs, from 300 ms before the fault to
//!   1 s after the takeover.
//!
//! Cases (each `--runs` times, default 10; median, p99, min and max per case):
//!
//! - `sigterm`, `sigkill`: the owner's speaker (FerroLB) or keepalived (TERM to the parent; KILL
//!   to the parent and the VRRP child in one kill(1) call);
//! - `node-loss`: that kill and the owner's LAN and management links down at the same instant;
//!   links, addresses and the process are restored before the next run;
//! - `outage` (FerroLB only, once): every node's management link down for `--outage-seconds`
//!   (default 60), the owner node lost as above halfway through; reports the longest gap between
//!   two answers during the outage and in the 10 s after it, the node-loss failover gap and the
//!   double-answer rounds of the whole window.
//!
//! FerroLB runs with the speaker's default settings (`Cluster::start_with(&[])`). keepalived
//! runs with priorities 150/100/50 on node-a/b/c, one VRRP instance on the LAN interface
//! holding the VIP, in two variants: VRRPv2 with advert_int 1 (keepalived's defaults) and
//! VRRPv3 with advert_int 0.1. Before every run the probe must hear one MAC alone answer; after
//! it the failed node is restored and, for keepalived, becomes master again (preemption).
//!
//! Output: one `failover <implementation> <case> median .. ms p99 .. ms ...` line per
//! implementation and case (and `outage ferrolb api-outage ...`), then a table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/speaker_lab/mod.rs"]
mod speaker_lab;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::probe::{Heard, Probe, ProbeConfig, double_answers};
use ferrolb_tests::keepalived::{self, Keepalived, VrrpInstance, VrrpVersion, Workdir};
use ferrolb_tests::netlab::{Host, NetLab, Role};
use serde_json::json;
use speaker_lab::{Cluster, VIP4, is_root};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// keepalived priorities of node-a, node-b and node-c.
const PRIORITIES: [u8; 3] = [150, 100, 50];
const VRID: u8 = 51;
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Probing before each fault: the old owner's last replies.
const BASELINE: Duration = Duration::from_millis(300);
/// Probing after the first reply from the new owner (double answers are counted up to here).
const AFTER_TAKEOVER: Duration = Duration::from_secs(1);
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// "Settled": in the last SETTLE_WINDOW only one MAC answered, at least SETTLE_ANSWERS times.
const SETTLE_WINDOW: Duration = Duration::from_millis(500);
const SETTLE_ANSWERS: usize = 30;
/// Probing after the API outage ends.
const AFTER_OUTAGE: Duration = Duration::from_secs(10);
const TEST: &str = "failover bench";

const USAGE: &str = "usage: failover [--runs N] [--outage-seconds S] [--only ferrolb|keepalived] \
                     [--cases sigterm,sigkill,node-loss,outage]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Sigterm,
    Sigkill,
    NodeLoss,
    Outage,
}

impl Case {
    const ALL: [Case; 4] = [Case::Sigterm, Case::Sigkill, Case::NodeLoss, Case::Outage];

    fn name(self) -> &'static str {
        match self {
            Case::Sigterm => "sigterm",
            Case::Sigkill => "sigkill",
            Case::NodeLoss => "node-loss",
            Case::Outage => "outage",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == text)
            .with_context(|| format!("unknown case {text:?}; {USAGE}"))
    }
}

#[derive(Debug)]
struct Options {
    runs: usize,
    outage: Duration,
    ferrolb: bool,
    keepalived: bool,
    cases: BTreeSet<Case>,
}

fn parse_options(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    let mut options = Options {
        runs: 10,
        outage: Duration::from_secs(60),
        ferrolb: true,
        keepalived: true,
        cases: Case::ALL.into_iter().collect(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            // cargo bench passes --bench to harness = false benches.
            "--bench" => {}
            "--runs" => {
                options.runs = value()?.parse().context("--runs")?;
                if options.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--outage-seconds" => {
                let seconds: u64 = value()?.parse().context("--outage-seconds")?;
                if !(2..=600).contains(&seconds) {
                    bail!("--outage-seconds must be 2 to 600");
                }
                options.outage = Duration::from_secs(seconds);
            }
            "--only" => match value()?.as_str() {
                "ferrolb" => options.keepalived = false,
                "keepalived" => options.ferrolb = false,
                other => bail!("--only {other:?}: ferrolb or keepalived"),
            },
            "--cases" => {
                options.cases = value()?
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(Case::parse)
                    .collect::<anyhow::Result<_>>()?;
                if options.cases.is_empty() {
                    bail!("--cases names no case; {USAGE}");
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(options)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index.min(values.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// One implementation's figures for one case.
#[derive(Debug, Clone)]
struct Summary {
    implementation: String,
    case: String,
    gaps: Vec<f64>,
    takeovers: Vec<f64>,
    runs: usize,
    /// Runs in which no other MAC answered within TAKEOVER_TIMEOUT.
    missed: usize,
    doubled: usize,
}

impl Summary {
    fn new(implementation: &str, case: &str) -> Self {
        Self {
            implementation: implementation.to_owned(),
            case: case.to_owned(),
            gaps: Vec::new(),
            takeovers: Vec::new(),
            runs: 0,
            missed: 0,
            doubled: 0,
        }
    }

    fn add(&mut self, run: &Run) {
        self.runs += 1;
        self.doubled += run.doubled;
        match (run.gap, run.takeover) {
            (Some(gap), Some(takeover)) => {
                self.gaps.push(ms(gap));
                self.takeovers.push(ms(takeover));
            }
            _ => self.missed += 1,
        }
    }

    fn min(&self) -> f64 {
        self.gaps
            .iter()
            .copied()
            .reduce(f64::min)
            .unwrap_or(f64::NAN)
    }

    fn max(&self) -> f64 {
        self.gaps
            .iter()
            .copied()
            .reduce(f64::max)
            .unwrap_or(f64::NAN)
    }

    fn print(&self) {
        println!(
            "failover {:<19} {:<16} median {:8.1} ms  p99 {:8.1} ms  min {:8.1} max {:8.1} ms  runs {}  double-answer rounds {}  takeover median {:8.1} ms  p99 {:8.1} ms  missed {}",
            self.implementation,
            self.case,
            percentile(&self.gaps, 0.5),
            percentile(&self.gaps, 0.99),
            self.min(),
            self.max(),
            self.runs,
            self.doubled,
            percentile(&self.takeovers, 0.5),
            percentile(&self.takeovers, 0.99),
            self.missed,
        );
    }
}

/// The API outage's figures.
#[derive(Debug, Clone)]
struct OutageSummary {
    seconds: u64,
    longest_during: f64,
    longest_during_besides_node_loss: f64,
    longest_after: f64,
    node_loss_gap: Option<f64>,
    doubled: usize,
}

impl OutageSummary {
    fn print(&self) {
        println!(
            "outage   {:<19} {:<16} longest gap during {:8.1} ms  besides the node loss {:8.1} ms  in the {} s after {:8.1} ms  node-loss gap {:8.1} ms  double-answer rounds {}  outage {} s",
            "ferrolb",
            "api-outage",
            self.longest_during,
            self.longest_during_besides_node_loss,
            AFTER_OUTAGE.as_secs(),
            self.longest_after,
            self.node_loss_gap.unwrap_or(f64::NAN),
            self.doubled,
            self.seconds,
        );
    }
}

fn probe_config(client: &Host) -> anyhow::Result<ProbeConfig> {
    Ok(ProbeConfig {
        netns: client.netns.clone(),
        interface: client.lan_interface.clone(),
        mac: client
            .lan_mac
            .parse()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ipv4: client.lan_ipv4,
        ipv6: client.lan_ipv6,
        targets: vec![VIP4.parse()?],
        interval: PROBE_INTERVAL,
        sender_tags: Vec::new(),
    })
}

fn mac_of(host: &Host) -> anyhow::Result<MacAddr> {
    host.lan_mac
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", host.lan_mac))
}

fn node_of(nodes: &[Host], mac: MacAddr) -> String {
    nodes
        .iter()
        .find(|h| mac_of(h).is_ok_and(|m| m == mac))
        .map(|h| h.name.clone())
        .unwrap_or_else(|| mac.to_string())
}

fn host<'a>(nodes: &'a [Host], name: &str) -> anyhow::Result<&'a Host> {
    nodes
        .iter()
        .find(|h| h.name == name)
        .with_context(|| format!("no node {name}"))
}

/// Waits until, over the last SETTLE_WINDOW, only one MAC answered (`expect`, when given) and
/// at least SETTLE_ANSWERS times; returns it.
async fn wait_settled(
    probe: &Probe,
    nodes: &[Host],
    expect: Option<MacAddr>,
    timeout: Duration,
) -> anyhow::Result<MacAddr> {
    let deadline = Instant::now() + timeout;
    let mut last = BTreeMap::new();
    loop {
        let now = Instant::now();
        let mut by_mac: BTreeMap<MacAddr, usize> = BTreeMap::new();
        for h in probe.heard().iter().filter(|h| {
            h.solicited
                && now
                    .checked_duration_since(h.at)
                    .is_some_and(|d| d <= SETTLE_WINDOW)
        }) {
            *by_mac.entry(h.mac).or_default() += 1;
        }
        if let [(mac, count)] = by_mac.iter().collect::<Vec<_>>()[..]
            && *count >= SETTLE_ANSWERS
            && expect.is_none_or(|e| e == *mac)
        {
            return Ok(*mac);
        }
        if now > deadline {
            bail!(
                "not settled{} within {timeout:?}: answers in the last {SETTLE_WINDOW:?} by node {:?}",
                expect
                    .map(|m| format!(" on {}", node_of(nodes, m)))
                    .unwrap_or_default(),
                last
            );
        }
        last = by_mac
            .iter()
            .map(|(mac, n)| (node_of(nodes, *mac), *n))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first solicited reply after `from` from a MAC other than `old`.
fn first_other(heard: &[Heard], old: MacAddr, from: Instant) -> Option<&Heard> {
    heard
        .iter()
        .filter(|h| h.solicited && h.mac != old && h.at > from)
        .min_by_key(|h| h.at)
}

/// From `old`'s last solicited reply before the first solicited reply from another MAC after
/// `from`, to that reply.
fn failover_gap(heard: &[Heard], old: MacAddr, from: Instant) -> Option<Duration> {
    let first_new = first_other(heard, old, from)?.at;
    let last_old = heard
        .iter()
        .filter(|h| h.solicited && h.mac == old && h.at < first_new)
        .map(|h| h.at)
        .max()?;
    Some(first_new - last_old)
}

/// Runs `actions` on threads of their own released together; returns the moment of release.
fn at_once(
    actions: Vec<Box<dyn FnOnce() -> anyhow::Result<()> + Send>>,
) -> anyhow::Result<Instant> {
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

fn link_action(
    host: &Host,
    interface: &str,
    up: bool,
) -> Box<dyn FnOnce() -> anyhow::Result<()> + Send> {
    let (host, interface) = (host.clone(), interface.to_owned());
    Box::new(move || Ok(host.set_link(&interface, up)?))
}

/// SIGKILLs `pids` and sets `host`'s LAN and management links down at the same instant.
fn lose_node(host: &Host, pids: Vec<u32>) -> anyhow::Result<Instant> {
    let mut actions: Vec<Box<dyn FnOnce() -> anyhow::Result<()> + Send>> = vec![
        Box::new(move || keepalived::send_signal("KILL", &pids)),
        link_action(host, &host.lan_interface, false),
    ];
    if let Some(management) = &host.management_interface {
        actions.push(link_action(host, management, false));
    }
    at_once(actions)
}

/// Brings `host`'s links back up with their addresses: IPv6 addresses go with the link
/// (keep_addr_on_down is off), IPv4 ones stay.
fn restore_links(host: &Host) -> anyhow::Result<()> {
    host.set_link(&host.lan_interface, true)?;
    if let Some(management) = &host.management_interface {
        host.set_link(management, true)?;
    }
    host.run(
        "ip",
        &[
            "addr",
            "replace",
            &format!("{}/64", host.lan_ipv6),
            "dev",
            &host.lan_interface,
            "nodad",
        ],
    )?;
    Ok(())
}

/// What one fault did, as the client saw it.
#[derive(Debug)]
struct Run {
    gap: Option<Duration>,
    takeover: Option<Duration>,
    doubled: usize,
}

/// FerroLB or keepalived in the lab.
trait Subject {
    fn label(&self) -> String;
    fn nodes(&self) -> &[Host];
    /// Injects `case` on `node`; returns when it happened.
    async fn fault(&mut self, case: Case, node: &str) -> anyhow::Result<Instant>;
    /// Undoes `case` on `node` and waits until the VIP is settled again (back on `node` when
    /// the implementation fails back).
    async fn restore(&mut self, case: Case, node: &str, probe: &Probe) -> anyhow::Result<()>;
}

async fn measure(subject: &mut impl Subject, probe: &Probe, case: Case) -> anyhow::Result<Run> {
    let old = wait_settled(probe, subject.nodes(), None, SETTLE_TIMEOUT).await?;
    let node = node_of(subject.nodes(), old);
    probe.clear();
    tokio::time::sleep(BASELINE).await;
    let fault_at = subject.fault(case, &node).await?;
    let deadline = fault_at + TAKEOVER_TIMEOUT;
    let mut taken_over = false;
    while Instant::now() < deadline {
        if first_other(&probe.heard(), old, fault_at).is_some() {
            taken_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if taken_over {
        tokio::time::sleep(AFTER_TAKEOVER).await;
    }
    let heard = probe.heard();
    let run = Run {
        gap: failover_gap(&heard, old, fault_at),
        takeover: first_other(&heard, old, fault_at).map(|h| h.at - fault_at),
        doubled: double_answers(&heard).len(),
    };
    if !taken_over {
        let mut by_mac: BTreeMap<String, usize> = BTreeMap::new();
        for h in heard.iter().filter(|h| h.solicited) {
            *by_mac.entry(node_of(subject.nodes(), h.mac)).or_default() += 1;
        }
        println!(
            "  {} {}: nobody but {node} answered within {TAKEOVER_TIMEOUT:?} of the fault; answers by node {by_mac:?}",
            subject.label(),
            case.name()
        );
    }
    subject.restore(case, &node, probe).await?;
    Ok(run)
}

/// `runs` faults of one case, then its line; an error when a run could not be set up or its
/// fault not undone (the caller prints a FAILED line and resets the subject).
async fn run_case(
    subject: &mut impl Subject,
    probe: &Probe,
    case: Case,
    runs: usize,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::new(&subject.label(), case.name());
    for _ in 0..runs {
        let run = measure(subject, probe, case).await?;
        summary.add(&run);
    }
    summary.print();
    Ok(summary)
}

struct Ferrolb {
    cluster: Cluster,
}

impl Subject for Ferrolb {
    fn label(&self) -> String {
        "ferrolb".to_owned()
    }

    fn nodes(&self) -> &[Host] {
        &self.cluster.nodes
    }

    async fn fault(&mut self, case: Case, node: &str) -> anyhow::Result<Instant> {
        let pid = self
            .cluster
            .speakers
            .get(node)
            .with_context(|| format!("no speaker on {node}"))?
            .pid();
        match case {
            Case::Sigterm | Case::Sigkill => {
                let signal = if case == Case::Sigterm {
                    "TERM"
                } else {
                    "KILL"
                };
                let at = Instant::now();
                keepalived::send_signal(signal, &[pid])?;
                Ok(at)
            }
            Case::NodeLoss | Case::Outage => lose_node(self.cluster.host(node), vec![pid]),
        }
    }

    async fn restore(&mut self, case: Case, node: &str, probe: &Probe) -> anyhow::Result<()> {
        if let Some(mut old) = self.cluster.speakers.remove(node) {
            old.wait_exit(Duration::from_secs(5))?;
        }
        if matches!(case, Case::NodeLoss | Case::Outage) {
            restore_links(self.cluster.host(node))?;
        }
        self.cluster.start_speaker(node)?;
        let mac = mac_of(self.cluster.host(node))?;
        if wait_settled(probe, self.nodes(), Some(mac), Duration::from_secs(20))
            .await
            .is_err()
        {
            let owner = wait_settled(probe, self.nodes(), None, SETTLE_TIMEOUT).await?;
            println!(
                "  ferrolb: {node} did not take the VIP back; {} holds it",
                node_of(self.nodes(), owner)
            );
        }
        Ok(())
    }
}

/// Every node's management link down for `outage`, the node answering halfway through lost
/// (its speaker SIGKILLed, its LAN link down too), then AFTER_OUTAGE of probing.
async fn ferrolb_outage(
    ferrolb: &mut Ferrolb,
    probe: &Probe,
    outage: Duration,
) -> anyhow::Result<(OutageSummary, Summary)> {
    let nodes = ferrolb.cluster.nodes.clone();
    let owner = wait_settled(probe, &nodes, None, SETTLE_TIMEOUT).await?;
    probe.clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let management = |host: &Host, up| {
        host.management_interface
            .as_deref()
            .map(|interface| link_action(host, interface, up))
    };
    let start = at_once(nodes.iter().filter_map(|h| management(h, false)).collect())?;
    tokio::time::sleep(outage / 2).await;
    let victim_mac = probe
        .heard()
        .iter()
        .filter(|h| h.solicited)
        .max_by_key(|h| h.at)
        .map_or(owner, |h| h.mac);
    let victim = node_of(&nodes, victim_mac);
    let lost_at = ferrolb.fault(Case::Outage, &victim).await?;
    tokio::time::sleep((start + outage).saturating_duration_since(Instant::now())).await;
    let end = at_once(
        nodes
            .iter()
            .filter(|h| h.name != victim)
            .filter_map(|h| management(h, true))
            .collect(),
    )?;
    tokio::time::sleep(AFTER_OUTAGE).await;
    let window_end = Instant::now();
    let heard = probe.heard();
    ferrolb.restore(Case::Outage, &victim, probe).await?;

    let mut answers: Vec<Instant> = heard
        .iter()
        .filter(|h| h.solicited && h.at >= start && h.at <= window_end)
        .map(|h| h.at)
        .collect();
    answers.sort();
    let mut points = vec![start];
    points.extend(answers);
    points.push(window_end);
    let node_loss_gap = failover_gap(&heard, victim_mac, lost_at);
    let mut summary = OutageSummary {
        seconds: outage.as_secs(),
        longest_during: 0.0,
        longest_during_besides_node_loss: 0.0,
        longest_after: 0.0,
        node_loss_gap: node_loss_gap.map(ms),
        doubled: double_answers(
            &heard
                .iter()
                .filter(|h| h.at >= start && h.at <= window_end)
                .copied()
                .collect::<Vec<_>>(),
        )
        .len(),
    };
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let length = ms(b - a);
        if a < end {
            summary.longest_during = summary.longest_during.max(length);
            // The fault takes effect a few milliseconds after it is started (a kill and two
            // link changes run as commands): the victim may still answer just after `lost_at`.
            let takes_effect_by = lost_at + Duration::from_millis(200);
            if !(a <= takes_effect_by && lost_at <= b) {
                summary.longest_during_besides_node_loss =
                    summary.longest_during_besides_node_loss.max(length);
            }
        }
        if b > end {
            summary.longest_after = summary.longest_after.max(length);
        }
    }
    summary.print();
    let mut node_loss = Summary::new("ferrolb", "outage-node-loss");
    node_loss.add(&Run {
        gap: node_loss_gap,
        takeover: first_other(&heard, victim_mac, lost_at).map(|h| h.at - lost_at),
        doubled: double_answers(
            &heard
                .iter()
                .filter(|h| h.at >= lost_at - BASELINE && h.at <= lost_at + TAKEOVER_TIMEOUT)
                .copied()
                .collect::<Vec<_>>(),
        )
        .len(),
    });
    node_loss.print();
    Ok((summary, node_loss))
}

#[derive(Default)]
struct Results {
    failovers: Vec<Summary>,
    outages: Vec<OutageSummary>,
    failures: Vec<String>,
}

impl Results {
    fn failed(&mut self, implementation: &str, case: &str, error: &anyhow::Error) {
        println!("failover {implementation:<19} {case:<16} FAILED {error:#}");
        self.failures
            .push(format!("{implementation} {case}: {error:#}"));
    }
}

async fn ferrolb(options: &Options, results: &mut Results) -> anyhow::Result<()> {
    let cluster = Cluster::start_with(&[]).await?;
    cluster.service("web", &[VIP4], json!({})).await?;
    let mut ferrolb = Ferrolb { cluster };
    let probe = Probe::start(probe_config(&ferrolb.cluster.client)?)?;
    let owner = wait_settled(&probe, ferrolb.nodes(), None, SETTLE_TIMEOUT).await?;
    println!(
        "ferrolb: {} answers for {VIP4}",
        node_of(ferrolb.nodes(), owner)
    );
    for case in [Case::Sigterm, Case::Sigkill, Case::NodeLoss] {
        if !options.cases.contains(&case) {
            continue;
        }
        match run_case(&mut ferrolb, &probe, case, options.runs).await {
            Ok(summary) => results.failovers.push(summary),
            Err(error) => {
                results.failed("ferrolb", case.name(), &error);
                reset_ferrolb(&mut ferrolb, &probe).await?;
            }
        }
    }
    if options.cases.contains(&Case::Outage) {
        match ferrolb_outage(&mut ferrolb, &probe, options.outage).await {
            Ok((outage, node_loss)) => {
                results.outages.push(outage);
                results.failovers.push(node_loss);
            }
            Err(error) => results.failed("ferrolb", "outage", &error),
        }
    }
    probe.stop()?;
    ferrolb.cluster.stop().await;
    Ok(())
}

/// After a failed case: every link up, a speaker on every node, one owner.
async fn reset_ferrolb(ferrolb: &mut Ferrolb, probe: &Probe) -> anyhow::Result<()> {
    for name in NODES {
        restore_links(ferrolb.cluster.host(name))?;
        let running = ferrolb
            .cluster
            .speakers
            .get_mut(name)
            .is_some_and(|s| !s.wait_exit(Duration::from_millis(30)).unwrap_or(true));
        if !running {
            ferrolb.cluster.speakers.remove(name);
            ferrolb.cluster.start_speaker(name)?;
        }
    }
    wait_settled(probe, ferrolb.nodes(), None, SETTLE_TIMEOUT).await?;
    Ok(())
}

/// A keepalived variant: VRRP version and advertisement interval.
#[derive(Debug, Clone, Copy)]
struct Variant {
    label: &'static str,
    version: VrrpVersion,
    advert: Duration,
}

const VARIANTS: [Variant; 2] = [
    Variant {
        label: "keepalived-v2-1s",
        version: VrrpVersion::V2,
        advert: Duration::from_secs(1),
    },
    Variant {
        label: "keepalived-v3-100ms",
        version: VrrpVersion::V3,
        advert: Duration::from_millis(100),
    },
];

/// keepalived on the lab's nodes. Fields drop in order: the processes, their files, the lab.
struct KeepalivedLab {
    variant: Variant,
    instances: BTreeMap<String, Keepalived>,
    /// Priority-0 advertisements the other nodes had logged before the fault.
    goodbyes_before: usize,
    workdir: Workdir,
    nodes: Vec<Host>,
    client: Host,
    _lab: NetLab,
}

impl KeepalivedLab {
    /// The speaker lab's hosts, in its order (so the same addresses and links), without the
    /// API server and the speakers.
    fn new() -> anyhow::Result<Self> {
        let mut lab = NetLab::new()?;
        let mut nodes = Vec::new();
        for name in NODES {
            nodes.push(lab.add_host(name, Role::Node)?);
        }
        let client = lab.add_host("client", Role::Client)?;
        Ok(Self {
            variant: VARIANTS[0],
            instances: BTreeMap::new(),
            goodbyes_before: 0,
            workdir: Workdir::new()?,
            nodes,
            client,
            _lab: lab,
        })
    }

    fn start(&mut self, node: &str) -> anyhow::Result<()> {
        let index = NODES
            .iter()
            .position(|n| *n == node)
            .with_context(|| format!("no node {node}"))?;
        let host = host(&self.nodes, node)?.clone();
        let config = keepalived::render(&VrrpInstance {
            name: "VI_FERROLB".to_owned(),
            router_id: node.to_owned(),
            interface: host.lan_interface.clone(),
            virtual_router_id: VRID,
            priority: PRIORITIES[index],
            version: self.variant.version,
            advert_interval: self.variant.advert,
            virtual_ips: vec![(VIP4.parse()?, 32)],
        })?;
        let instance = Keepalived::start(&host.netns, self.workdir.path(), node, &config)?;
        self.instances.insert(node.to_owned(), instance);
        Ok(())
    }

    /// Stops every instance (SIGTERM, then SIGKILL after 5 s) and removes any VIP left behind.
    fn stop_all(&mut self) -> anyhow::Result<()> {
        for instance in self.instances.values() {
            let _ = instance.signal("TERM");
        }
        for (_, mut instance) in std::mem::take(&mut self.instances) {
            instance.wait_exit(Duration::from_secs(5))?;
        }
        for host in &self.nodes {
            self.remove_vip(host);
        }
        Ok(())
    }

    /// Priority-0 advertisements logged by the instances on nodes other than `node`.
    fn goodbyes_heard_besides(&self, node: &str) -> usize {
        self.instances
            .iter()
            .filter(|(name, _)| *name != node)
            .map(|(_, instance)| instance.goodbyes_heard())
            .sum()
    }

    fn remove_vip(&self, host: &Host) {
        let _ = host.run(
            "ip",
            &[
                "addr",
                "del",
                &format!("{VIP4}/32"),
                "dev",
                &host.lan_interface,
            ],
        );
    }

    /// Every link up, keepalived (of the current variant) on every node, node-a master.
    async fn start_all(&mut self, probe: &Probe) -> anyhow::Result<()> {
        self.stop_all()?;
        for host in &self.nodes {
            restore_links(host)?;
        }
        for node in NODES {
            self.start(node)?;
        }
        let master = mac_of(host(&self.nodes, NODES[0])?)?;
        wait_settled(probe, &self.nodes, Some(master), SETTLE_TIMEOUT).await?;
        Ok(())
    }
}

impl Subject for KeepalivedLab {
    fn label(&self) -> String {
        self.variant.label.to_owned()
    }

    fn nodes(&self) -> &[Host] {
        &self.nodes
    }

    async fn fault(&mut self, case: Case, node: &str) -> anyhow::Result<Instant> {
        let instance = self
            .instances
            .get(node)
            .with_context(|| format!("no keepalived on {node}"))?;
        self.goodbyes_before = self.goodbyes_heard_besides(node);
        let at = Instant::now();
        match case {
            Case::Sigterm => instance.signal("TERM")?,
            Case::Sigkill => {
                let killed = instance.kill_all()?;
                if killed.len() < 2 {
                    bail!("killed {killed:?}, not keepalived's parent and VRRP child");
                }
            }
            Case::NodeLoss | Case::Outage => {
                return lose_node(host(&self.nodes, node)?, instance.kill_order());
            }
        }
        Ok(at)
    }

    async fn restore(&mut self, case: Case, node: &str, probe: &Probe) -> anyhow::Result<()> {
        let goodbyes = self.goodbyes_heard_besides(node)
            - self.goodbyes_before.min(self.goodbyes_heard_besides(node));
        match (case, goodbyes) {
            (Case::Sigterm, 0) => println!(
                "  {} sigterm: no backup logged the master's priority-0 advertisement",
                self.variant.label
            ),
            (Case::Sigterm, _) | (_, 0) => {}
            _ => println!(
                "  {} {}: a backup logged a priority-0 advertisement: the killed keepalived said goodbye",
                self.variant.label,
                case.name()
            ),
        }
        if let Some(mut old) = self.instances.remove(node) {
            // SIGTERM: keepalived sends priority 0, removes the VIP and exits within ~1 s.
            if !old.wait_exit(Duration::from_secs(5))? {
                println!(
                    "  {}: keepalived on {node} still running 5 s after the {} fault; killing it",
                    self.variant.label,
                    case.name()
                );
            }
        }
        let host = host(&self.nodes, node)?.clone();
        // After SIGKILL the VIP is still on the interface (keepalived would remove it at its
        // start too); remove it before the links come back so the node does not answer twice.
        self.remove_vip(&host);
        if matches!(case, Case::NodeLoss | Case::Outage) {
            restore_links(&host)?;
        }
        self.start(node)?;
        wait_settled(probe, &self.nodes, Some(mac_of(&host)?), SETTLE_TIMEOUT).await?;
        Ok(())
    }
}

async fn keepalived(options: &Options, results: &mut Results) -> anyhow::Result<()> {
    let mut lab = KeepalivedLab::new()?;
    let probe = Probe::start(probe_config(&lab.client)?)?;
    for variant in VARIANTS {
        lab.variant = variant;
        if let Err(error) = lab.start_all(&probe).await {
            results.failed(variant.label, "start", &error);
            continue;
        }
        for case in [Case::Sigterm, Case::Sigkill, Case::NodeLoss] {
            if !options.cases.contains(&case) {
                continue;
            }
            match run_case(&mut lab, &probe, case, options.runs).await {
                Ok(summary) => results.failovers.push(summary),
                Err(error) => {
                    results.failed(variant.label, case.name(), &error);
                    lab.start_all(&probe).await?;
                }
            }
        }
        if options.cases.contains(&Case::Outage) {
            println!(
                "failover {:<19} {:<16} n/a (keepalived does not depend on the Kubernetes API)",
                variant.label, "outage"
            );
        }
        lab.stop_all()?;
    }
    probe.stop()?;
    Ok(())
}

fn print_table(results: &Results) {
    println!();
    println!(
        "| implementation      | case             | gap median ms | gap p99 ms | min ms | max ms | takeover median ms | runs | missed | double-answer rounds |"
    );
    println!(
        "|---------------------|------------------|--------------:|-----------:|-------:|-------:|-------------------:|-----:|-------:|---------------------:|"
    );
    for s in &results.failovers {
        println!(
            "| {:<19} | {:<16} | {:>13.1} | {:>10.1} | {:>6.1} | {:>6.1} | {:>18.1} | {:>4} | {:>6} | {:>20} |",
            s.implementation,
            s.case,
            percentile(&s.gaps, 0.5),
            percentile(&s.gaps, 0.99),
            s.min(),
            s.max(),
            percentile(&s.takeovers, 0.5),
            s.runs,
            s.missed,
            s.doubled
        );
    }
    for o in &results.outages {
        println!(
            "API outage {} s (ferrolb): longest gap during {:.1} ms ({:.1} ms besides the node loss), in the {} s after {:.1} ms, node-loss gap {:.1} ms, double-answer rounds {}",
            o.seconds,
            o.longest_during,
            o.longest_during_besides_node_loss,
            AFTER_OUTAGE.as_secs(),
            o.longest_after,
            o.node_loss_gap.unwrap_or(f64::NAN),
            o.doubled
        );
    }
    for failure in &results.failures {
        println!("FAILED {failure}");
    }
}

fn main() -> anyhow::Result<()> {
    let options = parse_options(std::env::args().skip(1))?;
    if !is_root() {
        ferrolb_tests::harness::skip(TEST, "needs root for network namespaces")?;
        return Ok(());
    }
    if options.keepalived {
        match keepalived::version() {
            Some(version) => println!("keepalived: {version}"),
            None => {
                ferrolb_tests::harness::skip(
                    TEST,
                    "keepalived is not installed (apt-get install keepalived; or --only ferrolb)",
                )?;
                return Ok(());
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut results = Results::default();
    runtime.block_on(async {
        if options.ferrolb
            && let Err(error) = ferrolb(&options, &mut results).await
        {
            results.failed("ferrolb", "all", &error);
        }
        if options.keepalived
            && let Err(error) = keepalived(&options, &mut results).await
        {
            results.failed("keepalived", "all", &error);
        }
    });
    print_table(&results);
    println!(
        "failover bench took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !results.failures.is_empty() {
        bail!("{} case(s) failed", results.failures.len());
    }
    Ok(())
}
