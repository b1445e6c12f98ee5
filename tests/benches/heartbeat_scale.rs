//! What the LAN heartbeats cost and what they save: the speakers' API load as the cluster grows,
//! and one speaker's CPU and LAN bytes with 100 peers. Needs root (network namespaces); prints
//! `SKIPPED` otherwise.
//!
//! `cargo bench -p ferrolb-tests --bench heartbeat_scale [-- --only api|heartbeat]
//! [--sizes 3,10,30] [--window-seconds 30] [--windows 3] [--failovers 3] [--peers 100[,..]]
//! [--burst] [--logs]`
//!
//! The defaults take about 10 minutes once built. `--peers 10,30,100` measures several peer
//! counts one after another; `--burst` sends each interval's simulated heartbeats back to back
//! (fewer wake-ups of the speaker's loop); `--logs` prints the speakers' logs.
//!
//! Uses the release `ferrolb-speaker` (built with `cargo build --release -p ferrolb-speaker`
//! first, whatever profile this bench runs in).
//!
//! 1. API load (`api-*` lines), for each size N: N real speakers, each in a node namespace, one
//!    LoadBalancer Service per node (its ingress IP set as the controller would), against the
//!    in-process API server double. Counted from the double's request counters (writes: create,
//!    update, patch, delete) and its watch-event counters (events handed to watch streams, by
//!    resource; bookmarks apart):
//!    - start-up: from the first speaker start until every Service has a ServiceL2Status naming
//!      a running speaker and no write came for 3 s;
//!    - steady: `--windows` windows of `--window-seconds`, during which the bench itself sends
//!      no request, so every request and event counted is the speakers';
//!    - failover: SIGKILL the owner of one Service, until its ServiceL2Status names another node
//!      (takeover, through the API) and writes are quiet for 2 s; then rejoin: the killed
//!      speaker restarted, until settled again.
//!
//!    A netlab holds at most 12 hosts (its management /28), so N above 10 uses several labs
//!    whose LAN and management bridges are joined by veth pairs into one LAN and one
//!    management segment; nodes of the later labs reach the API server through their own
//!    lab's gateway (a host route), and their LAN addresses are renumbered so that every node
//!    has its own (198.51.100.10 + i, 2001:db8:1::a + i).
//! 2. Heartbeat cost (`heartbeat-cost` lines): one speaker; in another namespace on the same
//!    LAN, a thread of this process sends every interval (75 ms) an authenticated heartbeat for
//!    each of `--peers` simulated nodes (the key of the Secret, one incarnation each, growing
//!    sequences, the current time, empty lists), spread evenly over the interval. The peers'
//!    Nodes and registration Leases (interface lan0) exist in the API. Per window: the
//!    speaker's CPU (utime + stime from /proc, as % of one core), bytes/s on its lan0 (and
//!    mgmt0) from the namespace's sysfs, and from its metrics the peers counted alive and the
//!    heartbeats received and rejected, and the CPU by thread. The same speaker is measured
//!    first with no peer at all.
//!
//! Figures are medians over the windows (each window's value in brackets). Every wait is
//! bounded; the labs' namespaces are removed on any exit that runs destructors (and stale ones
//! by the next lab of any test).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use ferrolb_crds::heartbeat_key::{self, HeartbeatKeys};
use ferrolb_crds::{IPAddressPool, L2Advertisement, ServiceL2Status};
use ferrolb_speaker::heartbeat::{Heartbeat, Kind, NodeId, node_id, wire};
use ferrolb_speaker::heartbeat_keys::KeyRing;
use ferrolb_speaker::heartbeat_transport::{ETHERTYPE_HEARTBEAT, ethernet_frame};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::packet::filter::BpfInstruction;
use ferrolb_speaker::packet_socket::open_blocking;
use ferrolb_speaker::probe::{enter_netns, index_of};
use ferrolb_tests::apiserver::{ApiServerConfig, ApiServerHandle};
use ferrolb_tests::components::Component;
use ferrolb_tests::netlab::{Host, NetLab, Role, run};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const COMMAND: &str = "cargo bench -p ferrolb-tests --bench heartbeat_scale";
const NS: &str = "shop";
const SYSTEM: &str = "ferrolb-system";
const METRICS: &str = "http://127.0.0.1:7473/metrics";
/// Hosts per netlab: it refuses a 13th (the management /28 has 14 addresses, one the gateway).
const HOSTS_PER_LAB: usize = 10;
/// The simulated peers' heartbeat interval: the speakers' default.
const INTERVAL: Duration = Duration::from_millis(75);
/// No write for this long after the last one: settled (start-up, rejoin).
const QUIET: Duration = Duration::from_secs(3);
/// The same after a failover.
const FAILOVER_QUIET: Duration = Duration::from_secs(2);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

const USAGE: &str = "usage: heartbeat_scale [--only api|heartbeat] [--sizes 3,10,30] \
                     [--window-seconds 30] [--windows 3] [--failovers 3] [--peers 100[,..]] [--burst] [--logs]";

#[derive(Debug, Clone)]
struct Options {
    api: bool,
    heartbeat: bool,
    sizes: Vec<usize>,
    window: Duration,
    windows: usize,
    failovers: usize,
    /// Simulated peer counts, measured one after another (ascending).
    peers: Vec<usize>,
    /// Send each round's heartbeats back to back instead of spread over the interval.
    burst: bool,
    /// Print the speakers' logs at the end of each size's run.
    logs: bool,
}

fn parse_options(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    let mut options = Options {
        api: true,
        heartbeat: true,
        sizes: vec![3, 10, 30],
        window: Duration::from_secs(30),
        windows: 3,
        failovers: 3,
        peers: vec![100],
        burst: false,
        logs: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            // cargo bench passes --bench to harness = false binaries.
            "--bench" => {}
            "--logs" => options.logs = true,
            "--only" => match value("--only")?.as_str() {
                "api" => options.heartbeat = false,
                "heartbeat" => options.api = false,
                other => bail!("--only {other:?}; {USAGE}"),
            },
            "--sizes" => {
                options.sizes = value("--sizes")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--sizes; {USAGE}"))?;
                if options.sizes.iter().any(|n| !(2..=60).contains(n)) {
                    bail!("--sizes: each from 2 to 60 nodes");
                }
            }
            "--window-seconds" => {
                options.window = Duration::from_secs(value("--window-seconds")?.parse()?);
            }
            "--windows" => options.windows = value("--windows")?.parse::<usize>()?.max(1),
            "--failovers" => options.failovers = value("--failovers")?.parse()?,
            "--peers" => {
                options.peers = value("--peers")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--peers; {USAGE}"))?;
                options.peers.sort_unstable();
                if options.peers.iter().any(|n| !(1..=250).contains(n)) {
                    bail!("--peers: each from 1 to 250");
                }
            }
            "--burst" => options.burst = true,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(options)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn list(values: &[f64], decimals: usize) -> String {
    let each: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    format!("[{}]", each.join(" "))
}

/// The release `ferrolb-speaker`, built now: a nested cargo without the `CARGO_*`-style
/// variables cargo sets for this bench (build scripts that watch them would rebuild half the
/// dependency tree).
fn speaker_binary() -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "-p",
            "ferrolb-speaker",
            "--bin",
            "ferrolb-speaker",
        ])
        .current_dir(&workspace);
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") || key.starts_with("RUSTC") || key == "OUT_DIR")
            && !matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR")
        {
            command.env_remove(key);
        }
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p ferrolb-speaker failed: {status}");
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace.join("target"),
    };
    let binary = target.join("release").join("ferrolb-speaker");
    if !binary.exists() {
        bail!("{} was not built", binary.display());
    }
    Ok(binary)
}

async fn create<K>(api: &Api<K>, object: Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// CRDs, namespaces, the heartbeat key Secret (returned: its data), the pool and the
/// L2Advertisement: what the speaker lab sets up before its speakers start.
async fn setup_cluster(kube: &Client) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    for crd in ferrolb_crds::manifests::all_crds() {
        create(&crds, serde_json::to_value(crd)?).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Api::<L2Advertisement>::all(kube.clone())
        .list(&Default::default())
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("CRDs not served");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    for name in [NS, SYSTEM] {
        create(&namespaces, json!({"metadata": {"name": name}})).await?;
    }
    // What the controller creates on its first start.
    let key_data = HeartbeatKeys::generate_data()?;
    let data: BTreeMap<String, ByteString> = key_data
        .iter()
        .map(|(name, value)| (name.clone(), ByteString(value.clone())))
        .collect();
    create(
        &Api::<Secret>::namespaced(kube.clone(), SYSTEM),
        json!({"metadata": {"name": heartbeat_key::SECRET_NAME, "namespace": SYSTEM},
               "data": data}),
    )
    .await?;
    create(
        &Api::<IPAddressPool>::all(kube.clone()),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "lan"},
               "spec": {"addresses": ["198.51.100.200-198.51.100.250", "2001:db8:1::200/124"]}}),
    )
    .await?;
    create(
        &Api::<L2Advertisement>::all(kube.clone()),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "lan"}, "spec": {}}),
    )
    .await?;
    Ok(key_data)
}

async fn create_node(kube: &Client, name: &str) -> anyhow::Result<()> {
    create(
        &Api::<Node>::all(kube.clone()),
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
    )
    .await
}

/// The switch namespace of the lab `host` belongs to: hosts are `<lab id>-<name>`, the switch
/// `<lab id>-switch` (netlab does not expose it; joining labs needs it).
fn switch_of(host: &Host) -> anyhow::Result<String> {
    let id = host
        .netns
        .strip_suffix(&format!("-{}", host.name))
        .with_context(|| format!("namespace {} does not end in its host name", host.netns))?;
    let switch = format!("{id}-switch");
    let listed = run("ip", &["netns", "list"])?;
    if !String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(switch.as_str()))
    {
        bail!("no switch namespace {switch}");
    }
    Ok(switch)
}

/// Joins the LAN and the management bridges of two labs' switches with veth pairs.
fn join_switches(first: &str, second: &str) -> anyhow::Result<()> {
    for bridge in ["lan", "mgmt"] {
        let (here, there) = (format!("next-{bridge}"), format!("prev-{bridge}"));
        run(
            "ip",
            &[
                "-n", first, "link", "add", &here, "type", "veth", "peer", "name", &there, "netns",
                second,
            ],
        )?;
        for (switch, port) in [(first, &here), (second, &there)] {
            run("ip", &["-n", switch, "link", "set", port, "master", bridge])?;
            run("ip", &["-n", switch, "link", "set", port, "up"])?;
        }
    }
    Ok(())
}

/// Gives a host of a later lab the LAN addresses of global host number `index`.
fn renumber(host: &mut Host, index: usize) -> anyhow::Result<()> {
    let last = u8::try_from(10 + index).context("too many hosts")?;
    let ipv4 = Ipv4Addr::new(198, 51, 100, last);
    let ipv6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(last));
    if ipv4 == host.lan_ipv4 {
        return Ok(());
    }
    let interface = host.lan_interface.clone();
    let netns = host.netns.clone();
    let address = |verb: &str, address: String, extra: &[&str]| -> anyhow::Result<()> {
        let mut args = vec!["-n", &netns, "addr", verb, &address, "dev", &interface];
        args.extend_from_slice(extra);
        run("ip", &args)?;
        Ok(())
    };
    address("del", format!("{}/24", host.lan_ipv4), &[])?;
    address("del", format!("{}/64", host.lan_ipv6), &[])?;
    address("add", format!("{ipv4}/24"), &[])?;
    address("add", format!("{ipv6}/64"), &["nodad"])?;
    host.lan_ipv4 = ipv4;
    host.lan_ipv6 = ipv6;
    Ok(())
}

/// Request and watch-event counters at one moment.
#[derive(Debug, Clone, Default)]
struct Counts {
    /// (verb, resource) -> requests.
    requests: BTreeMap<(String, String), u64>,
    /// (event type, resource) -> events delivered to watch streams.
    events: BTreeMap<(String, String), u64>,
}

impl Counts {
    fn take(api: &ApiServerHandle) -> Self {
        Self {
            requests: api.counters().snapshot(),
            events: api.watch_events().snapshot(),
        }
    }

    fn since(&self, before: &Counts) -> Counts {
        let diff = |now: &BTreeMap<(String, String), u64>,
                    then: &BTreeMap<(String, String), u64>| {
            now.iter()
                .map(|(key, n)| (key.clone(), n - then.get(key).copied().unwrap_or(0).min(*n)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Counts {
            requests: diff(&self.requests, &before.requests),
            events: diff(&self.events, &before.events),
        }
    }

    fn writes_by(&self) -> BTreeMap<String, u64> {
        self.requests
            .iter()
            .filter(|((verb, _), _)| WRITE_VERBS.contains(&verb.as_str()))
            .map(|((verb, resource), n)| (format!("{verb} {resource}"), *n))
            .collect()
    }

    fn writes(&self) -> u64 {
        self.writes_by().values().sum()
    }

    fn requests_by_verb(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for ((verb, _), n) in &self.requests {
            *by.entry(verb.clone()).or_default() += n;
        }
        by
    }

    fn requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Object events (ADDED, MODIFIED, DELETED, ERROR) by "TYPE resource".
    fn events_by(&self) -> BTreeMap<String, u64> {
        self.events
            .iter()
            .filter(|((kind, _), _)| kind != "BOOKMARK")
            .map(|((kind, resource), n)| (format!("{kind} {resource}"), *n))
            .collect()
    }

    fn events(&self) -> u64 {
        self.events_by().values().sum()
    }

    fn bookmarks(&self) -> u64 {
        self.events
            .iter()
            .filter(|((kind, _), _)| kind == "BOOKMARK")
            .map(|(_, n)| n)
            .sum()
    }
}

fn show(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "{}".to_owned();
    }
    let parts: Vec<String> = map.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Whether process `pid` runs (exists and is no zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no comm in /proc/<pid>/stat")?;
    // After the comm: state is field 3, utime 14 and stime 15, so indexes 11 and 12 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()
            .context("utime/stime")
    };
    Ok(field(11)? + field(12)?)
}

/// utime + stime of each thread of `pid`, summed by thread name.
fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some((head, rest)), Some(open)) = (stat.rsplit_once(')'), stat.find('(')) else {
            continue;
        };
        let name = head.get(open + 1..).unwrap_or_default().to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        *by_name.entry(name).or_default() += ticks;
    }
    by_name
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let output = run("getconf", &["CLK_TCK"])?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// The speaker's metrics, read inside its namespace.
fn metrics(host: &Host) -> anyhow::Result<String> {
    let output = host.run("curl", &["-sf", "-m2", METRICS])?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Sum of the samples of `name` whose labels contain `labels` (empty: all).
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest),
                None => (series, ""),
            };
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (value_of_label, rest) = rest.split_once('"')?;
            let value = rest.rsplit_once(' ')?.1.parse::<f64>().ok()?;
            Some((value_of_label.to_owned(), value))
        })
        .collect()
}

// ---- part 1: API load ----

struct Cluster {
    /// Dropped first: the processes go before their namespaces.
    speakers: BTreeMap<String, Component>,
    api: ApiServerHandle,
    kube: Client,
    nodes: Vec<Host>,
    binary: PathBuf,
    /// Dropped last.
    _labs: Vec<NetLab>,
}

impl Cluster {
    async fn start(size: usize, binary: &Path) -> anyhow::Result<Self> {
        let mut labs = Vec::new();
        let mut nodes: Vec<Host> = Vec::new();
        let mut gateways = Vec::new();
        let mut switches = Vec::new();
        for lab_index in 0..size.div_ceil(HOSTS_PER_LAB) {
            let mut lab = NetLab::new()?;
            let first = lab_index * HOSTS_PER_LAB;
            for index in first..size.min(first + HOSTS_PER_LAB) {
                let mut host = lab.add_host(&format!("node-{index:02}"), Role::Node)?;
                renumber(&mut host, index)?;
                nodes.push(host);
            }
            switches.push(switch_of(&nodes[first])?);
            gateways.push(lab.management_gateway());
            labs.push(lab);
        }
        for pair in switches.windows(2) {
            join_switches(&pair[0], &pair[1])?;
        }
        // Every node reaches the API server (on the first lab's gateway) through its own lab's.
        let api_address = gateways[0];
        for (index, node) in nodes.iter().enumerate() {
            let gateway = gateways[index / HOSTS_PER_LAB];
            if gateway != api_address {
                run(
                    "ip",
                    &[
                        "-n",
                        &node.netns,
                        "route",
                        "add",
                        &format!("{api_address}/32"),
                        "via",
                        &gateway.to_string(),
                    ],
                )?;
            }
        }
        let api = ApiServerHandle::start(
            SocketAddr::from((api_address, 0)),
            ApiServerConfig::default(),
        )
        .await?;
        let kube = api.client()?;
        setup_cluster(&kube).await?;
        for node in &nodes {
            create_node(&kube, &node.name).await?;
        }
        let services: Api<Service> = Api::namespaced(kube.clone(), NS);
        for index in 0..size {
            let name = format!("svc-{index:02}");
            create(
                &services,
                json!({"metadata": {"name": name, "namespace": NS},
                       "spec": {"type": "LoadBalancer",
                                "ports": [{"port": 80, "targetPort": 8080}]}}),
            )
            .await?;
            // The controller's assignment: one IP per Service.
            let ip = format!("198.51.100.{}", 200 + index);
            services
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
                )
                .await?;
        }
        Ok(Self {
            speakers: BTreeMap::new(),
            api,
            kube,
            nodes,
            binary: binary.to_path_buf(),
            _labs: labs,
        })
    }

    fn start_speaker(&mut self, name: &str) -> anyhow::Result<()> {
        let host = self
            .nodes
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))?;
        let mut command = host.command(self.binary.to_str().context("binary path")?);
        command
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .env("NODE_NAME", name)
            .env("POD_NAMESPACE", SYSTEM)
            .env("RUST_LOG", "info,kube=warn")
            .env("FERROLB_LOG_FORMAT", "json")
            .args(["--metrics-bind-address", "127.0.0.1:7473"]);
        let component = Component::spawn(&format!("speaker-{name}"), command)?;
        self.speakers.insert(name.to_owned(), component);
        Ok(())
    }

    /// Every Service's ServiceL2Status, by Service name: the node it names.
    async fn statuses(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let api: Api<ServiceL2Status> = Api::namespaced(self.kube.clone(), NS);
        Ok(api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|object| Some((object.metadata.name?, object.status?.node)))
            .collect())
    }

    /// Whether every Service has a status naming a running speaker, and every running
    /// speaker its registration.
    async fn converged(&self, expect: Option<(&str, &str)>) -> anyhow::Result<bool> {
        for (name, speaker) in &self.speakers {
            if !running(speaker.pid()) {
                bail!(
                    "the speaker on {name} exited; its output:\n{}",
                    speaker.output()
                );
            }
        }
        let statuses = self.statuses().await?;
        if let Some((service, node)) = expect
            && statuses.get(service).map(String::as_str) != Some(node)
        {
            return Ok(false);
        }
        let all_named = (0..self.nodes.len()).all(|index| {
            statuses
                .get(&format!("svc-{index:02}"))
                .is_some_and(|node| self.speakers.contains_key(node))
        });
        if !all_named {
            return Ok(false);
        }
        let leases: Api<Lease> = Api::namespaced(self.kube.clone(), SYSTEM);
        let registered: BTreeSet<String> = leases
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|lease| lease.metadata.name)
            .collect();
        Ok(self
            .speakers
            .keys()
            .all(|name| registered.contains(&format!("ferrolb-speaker-{name}"))))
    }

    /// Waits until converged with no write for `quiet`; returns when the last write came and
    /// the counters then (`from`: where counting began).
    async fn settle(
        &self,
        from: &Counts,
        quiet: Duration,
        expect: Option<(&str, &str)>,
    ) -> anyhow::Result<(Instant, Counts)> {
        let started = Instant::now();
        let deadline = started + SETTLE_TIMEOUT;
        let mut last_change = (started, from.clone());
        // Totals since the double started: a change in them is a write.
        let mut last_writes = from.writes();
        loop {
            let now_counts = Counts::take(&self.api);
            let writes = now_counts.writes();
            let now = Instant::now();
            if writes != last_writes {
                last_writes = writes;
                last_change = (now, now_counts);
            }
            if now.duration_since(last_change.0) >= quiet && self.converged(expect).await? {
                return Ok(last_change);
            }
            if now > deadline {
                let statuses = self.statuses().await.unwrap_or_default();
                bail!(
                    "not settled within {SETTLE_TIMEOUT:?}: statuses {statuses:?}, {} writes since the start",
                    Counts::take(&self.api).since(from).writes()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Counters summed over the running speakers' metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    rounds: f64,
    late: f64,
    dead: f64,
    changes: f64,
}

impl Health {
    fn since(self, before: &Health) -> Health {
        Health {
            rounds: self.rounds - before.rounds,
            late: self.late - before.late,
            dead: self.dead - before.dead,
            changes: self.changes - before.changes,
        }
    }
}

impl Cluster {
    /// utime + stime of every running speaker, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        self.speakers
            .values()
            .filter_map(|speaker| cpu_ticks(speaker.pid()).ok())
            .sum()
    }

    fn health(&self) -> Health {
        let mut health = Health::default();
        for name in self.speakers.keys() {
            let Some(host) = self.nodes.iter().find(|h| h.name == *name) else {
                continue;
            };
            let text = metrics(host).unwrap_or_default();
            let rounds = metric(
                &text,
                "ferrolb_speaker_heartbeat_round_late_seconds_count",
                "",
            );
            health.rounds += rounds;
            health.late += rounds
                - metric(
                    &text,
                    "ferrolb_speaker_heartbeat_round_late_seconds_bucket",
                    "le=\"0.032\"",
                );
            health.dead += metric(&text, "ferrolb_speaker_peer_detection_seconds_count", "");
            health.changes += metric(&text, "ferrolb_speaker_ownership_changes_total", "");
        }
        health
    }
}

struct Failover {
    takeover: Duration,
    failover: Counts,
    failover_time: Duration,
    rejoin: Counts,
    rejoin_time: Duration,
}

async fn failover(cluster: &mut Cluster, run: usize) -> anyhow::Result<Failover> {
    let service = format!("svc-{:02}", run % cluster.nodes.len());
    let statuses = cluster.statuses().await?;
    let owner = statuses
        .get(&service)
        .cloned()
        .with_context(|| format!("{service} has no status"))?;
    let before = Counts::take(&cluster.api);
    let killed_at = Instant::now();
    let mut speaker = cluster
        .speakers
        .remove(&owner)
        .with_context(|| format!("no speaker on {owner}"))?;
    speaker.signal("KILL")?;
    if !speaker.wait_exit(Duration::from_secs(5))? {
        bail!("the speaker on {owner} outlived SIGKILL");
    }
    drop(speaker);
    let api: Api<ServiceL2Status> = Api::namespaced(cluster.kube.clone(), NS);
    let takeover = loop {
        let node = api
            .get_opt(&service)
            .await?
            .and_then(|object| object.status)
            .map(|status| status.node);
        if node.as_ref().is_some_and(|node| *node != owner) {
            break killed_at.elapsed();
        }
        if killed_at.elapsed() > TAKEOVER_TIMEOUT {
            bail!(
                "{service}: no takeover from {owner} within {TAKEOVER_TIMEOUT:?} (names {node:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (settled_at, counts) = cluster.settle(&before, FAILOVER_QUIET, None).await?;
    let failover_counts = counts.since(&before);
    let failover_time = settled_at.saturating_duration_since(killed_at);

    let before = Counts::take(&cluster.api);
    let restarted_at = Instant::now();
    cluster.start_speaker(&owner)?;
    // The same candidates as before the kill: rendezvous hashing gives it its IP back.
    let (settled_at, counts) = cluster
        .settle(&before, QUIET, Some((&service, &owner)))
        .await?;
    Ok(Failover {
        takeover,
        failover: failover_counts,
        failover_time,
        rejoin: counts.since(&before),
        rejoin_time: settled_at.saturating_duration_since(restarted_at),
    })
}

/// What one size's run measured, for the summary.
struct ApiFigures {
    size: usize,
    writes_per_node: f64,
    events_per_node: f64,
    startup_events_per_node: f64,
}

async fn api_load(size: usize, binary: &Path, options: &Options) -> anyhow::Result<ApiFigures> {
    let reproduce = format!("{COMMAND} -- --only api --sizes {size}");
    let built = Instant::now();
    let mut cluster = Cluster::start(size, binary).await?;
    let labs = size.div_ceil(HOSTS_PER_LAB);
    println!(
        "api-setup N={size}: {size} node namespaces in {labs} joined lab(s), API objects, {size} Services in {:.1} s; {} CPUs, load average {}",
        built.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );

    // Start-up.
    let before = Counts::take(&cluster.api);
    let started = Instant::now();
    let names: Vec<String> = cluster.nodes.iter().map(|h| h.name.clone()).collect();
    for name in &names {
        cluster.start_speaker(name)?;
    }
    let (settled_at, counts) = cluster.settle(&before, QUIET, None).await?;
    let startup = counts.since(&before);
    let n = size as f64;
    let owners: BTreeSet<String> = cluster.statuses().await?.into_values().collect();
    println!(
        "api-startup N={size}: settled {:.1} s after the first speaker start ({} distinct owners of {size} IPs); speaker writes {} ({:.1} per node) {}; watch events delivered {} ({:.1} per node) {}; bookmarks {}; all requests {} {} | {reproduce}",
        settled_at.duration_since(started).as_secs_f64(),
        owners.len(),
        startup.writes(),
        startup.writes() as f64 / n,
        show(&startup.writes_by()),
        startup.events(),
        startup.events() as f64 / n,
        show(&startup.events_by()),
        startup.bookmarks(),
        startup.requests(),
        show(&startup.requests_by_verb()),
    );

    // Steady windows: the bench sends nothing meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seconds = options.window.as_secs_f64();
    let mut writes = Vec::new();
    let mut events = Vec::new();
    let mut bookmarks = Vec::new();
    let mut requests = Vec::new();
    let mut detail = Counts::default();
    let mut cpu = Vec::new();
    let ticks_per_second = clock_ticks_per_second()?;
    let health_before = cluster.health();
    for _ in 0..options.windows {
        let before = Counts::take(&cluster.api);
        let ticks_before = cluster.cpu_ticks();
        let opened = Instant::now();
        tokio::time::sleep(options.window).await;
        let window = Counts::take(&cluster.api).since(&before);
        let seconds = opened.elapsed().as_secs_f64();
        cpu.push(
            cluster.cpu_ticks().saturating_sub(ticks_before) as f64 / ticks_per_second / seconds
                * 100.0,
        );
        writes.push(window.writes() as f64 / seconds);
        events.push(window.events() as f64 / seconds);
        bookmarks.push(window.bookmarks() as f64 / seconds);
        requests.push(window.requests() as f64 / seconds);
        for (key, count) in window.requests {
            *detail.requests.entry(key).or_default() += count;
        }
        for (key, count) in window.events {
            *detail.events.entry(key).or_default() += count;
        }
    }
    let health = cluster.health().since(&health_before);
    cluster.converged(None).await?;
    let per_node = |values: &[f64]| -> Vec<f64> { values.iter().map(|v| v / n).collect() };
    let writes_per_node = median(&per_node(&writes));
    let events_per_node = median(&per_node(&events));
    println!(
        "api-steady N={size}: speaker API writes per node per second median {writes_per_node:.4} {} (target <= 0.1); total {:.3}/s",
        list(&per_node(&writes), 4),
        median(&writes),
    );
    println!(
        "api-steady N={size}: watch events delivered to speakers per second median total {:.3} {}, per node {events_per_node:.4}; bookmarks per second total {:.2} {}, per node {:.3}; all speaker requests per second total {:.3} {}",
        median(&events),
        list(&events, 3),
        median(&bookmarks),
        list(&bookmarks, 2),
        median(&bookmarks) / n,
        median(&requests),
        list(&requests, 3),
    );
    println!(
        "api-steady N={size}: the speakers' CPU median {:.1}% of one core in all {} (on {} CPUs), {:.2}% per speaker; in all windows: heartbeat rounds more than 32 ms late {:.0} of {:.0}, peers counted dead {:.0}, IPs gained or lost {:.0}; load average {}",
        median(&cpu),
        list(&cpu, 1),
        std::thread::available_parallelism().map_or(0, usize::from),
        median(&cpu) / n,
        health.late,
        health.rounds,
        health.dead,
        health.changes,
        load_average(),
    );
    println!(
        "api-steady N={size}: in all {} windows of {seconds:.0} s: writes {}, events {}, requests {} | {reproduce}",
        options.windows,
        show(&detail.writes_by()),
        show(&detail.events_by()),
        show(&detail.requests_by_verb()),
    );

    // Failovers.
    let mut runs = Vec::new();
    for run in 0..options.failovers {
        let figures = failover(&mut cluster, run).await?;
        println!(
            "api-failover-run N={size} #{}: SIGKILL of an owner; takeover in the API after {:.0} ms, quiet after {:.1} s: writes {} {}, events {} {}; rejoin (restarted) settled after {:.1} s: writes {} {}, events {} {}",
            run + 1,
            figures.takeover.as_secs_f64() * 1e3,
            figures.failover_time.as_secs_f64(),
            figures.failover.writes(),
            show(&figures.failover.writes_by()),
            figures.failover.events(),
            show(&figures.failover.events_by()),
            figures.rejoin_time.as_secs_f64(),
            figures.rejoin.writes(),
            show(&figures.rejoin.writes_by()),
            figures.rejoin.events(),
            show(&figures.rejoin.events_by()),
        );
        runs.push(figures);
    }
    if !runs.is_empty() {
        let take = |f: &dyn Fn(&Failover) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
        let takeover = take(&|r| r.takeover.as_secs_f64() * 1e3);
        let failover_writes = take(&|r| r.failover.writes() as f64);
        let status_writes = take(&|r| {
            r.failover
                .writes_by()
                .iter()
                .filter(|(key, _)| key.contains("servicel2statuses"))
                .map(|(_, n)| *n as f64)
                .sum()
        });
        let event_writes = take(&|r| {
            r.failover
                .writes_by()
                .iter()
                .filter(|(key, _)| key.ends_with(" events"))
                .map(|(_, n)| *n as f64)
                .sum()
        });
        let failover_events = take(&|r| r.failover.events() as f64);
        let rejoin_writes = take(&|r| r.rejoin.writes() as f64);
        let rejoin_events = take(&|r| r.rejoin.events() as f64);
        println!(
            "api-failover N={size}: {} SIGKILLs of an owner: takeover (ServiceL2Status rewritten) median {:.0} ms {}; writes median {:.0} {} of which ServiceL2Status {:.0} {} and Events {:.0} {}; watch events delivered median {:.0} {} ({:.1} per node)",
            runs.len(),
            median(&takeover),
            list(&takeover, 0),
            median(&failover_writes),
            list(&failover_writes, 0),
            median(&status_writes),
            list(&status_writes, 0),
            median(&event_writes),
            list(&event_writes, 0),
            median(&failover_events),
            list(&failover_events, 0),
            median(&failover_events) / n,
        );
        println!(
            "api-rejoin N={size}: the killed speaker restarted: writes median {:.0} {}; watch events delivered median {:.0} {} ({:.1} per node) | {reproduce}",
            median(&rejoin_writes),
            list(&rejoin_writes, 0),
            median(&rejoin_events),
            list(&rejoin_events, 0),
            median(&rejoin_events) / n,
        );
    }
    println!(
        "api-diagnostics N={size}: {} | {reproduce}",
        diagnostics(&cluster)
    );
    if options.logs {
        for (name, speaker) in &cluster.speakers {
            println!("--- speaker {name} output ---\n{}", speaker.output());
        }
    }
    drop(cluster);
    Ok(ApiFigures {
        size,
        writes_per_node,
        events_per_node,
        startup_events_per_node: startup.events() as f64 / n,
    })
}

/// What the running speakers' logs and metrics say about the whole run: ownership changes,
/// late heartbeat rounds and peers counted dead (each kill makes every other node count one).
fn diagnostics(cluster: &Cluster) -> String {
    let (mut gained, mut lost, mut warnings) = (0, 0, 0);
    let (mut rounds, mut late, mut detections, mut slowest) = (0.0, 0.0, 0.0, 0.0f64);
    for (name, speaker) in &cluster.speakers {
        let output = speaker.output();
        gained += output.matches("\"Announcing\"").count();
        lost += output.matches("\"Withdrawn\"").count();
        warnings += output
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\""))
            .count();
        let Some(host) = cluster.nodes.iter().find(|h| h.name == *name) else {
            continue;
        };
        let text = metrics(host).unwrap_or_default();
        let count = metric(
            &text,
            "ferrolb_speaker_heartbeat_round_late_seconds_count",
            "",
        );
        rounds += count;
        late += count
            - metric(
                &text,
                "ferrolb_speaker_heartbeat_round_late_seconds_bucket",
                "le=\"0.032\"",
            );
        let dead = metric(&text, "ferrolb_speaker_peer_detection_seconds_count", "");
        detections += dead;
        slowest = slowest.max(dead);
    }
    format!(
        "running speakers logged {gained} IPs gained and {lost} lost (start-up, failovers and rejoins included) and {warnings} warnings; heartbeat rounds {rounds:.0}, of which {late:.0} more than 32 ms late; peers counted dead {detections:.0} (the most by one speaker {slowest:.0}); load average {}",
        load_average()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

// ---- part 2: heartbeat cost ----

/// One simulated peer.
#[derive(Debug, Clone)]
struct Peer {
    name: String,
    id: NodeId,
    mac: MacAddr,
}

fn peers(count: usize) -> anyhow::Result<Vec<Peer>> {
    (0..count)
        .map(|index| {
            let low = u8::try_from(index).context("too many peers")?;
            Ok(Peer {
                name: format!("peer-{index:03}"),
                id: node_id(&format!("peer-{index:03}")),
                mac: MacAddr([0x02, 0xfe, 0x0b, 0x00, 0x00, low]),
            })
        })
        .collect()
}

/// The peers' heartbeats, from a thread inside the simulator's namespace; stops when told or
/// after `limit`.
struct Simulator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Simulator {
    fn start(
        host: &Host,
        key_data: &BTreeMap<String, Vec<u8>>,
        peers: Vec<Peer>,
        limit: Duration,
        burst: bool,
    ) -> anyhow::Result<Self> {
        let keys = HeartbeatKeys::from_data(
            key_data
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
        )?;
        let ring = KeyRing::new(&keys)?;
        let (netns, interface) = (host.netns.clone(), host.lan_interface.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_sent) = (stop.clone(), sent.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let opened = (|| -> anyhow::Result<_> {
                enter_netns(&netns)?;
                let index = index_of(&interface)?;
                // Receives nothing: it only sends.
                let drop_all = [BpfInstruction {
                    code: 0x06,
                    jump_true: 0,
                    jump_false: 0,
                    k: 0,
                }];
                Ok(open_blocking(
                    index,
                    ETHERTYPE_HEARTBEAT,
                    &drop_all,
                    Duration::from_millis(100),
                )?)
            })();
            let socket = match opened {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error.to_string()));
                    return Err(error);
                }
            };
            let incarnation = unix_micros();
            let mut sequence = vec![0u32; peers.len()];
            let started = Instant::now();
            let spacing = if burst {
                Duration::ZERO
            } else {
                INTERVAL / u32::try_from(peers.len().max(1))?
            };
            let mut round_start = started;
            while !thread_stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                for (index, peer) in peers.iter().enumerate() {
                    let at = round_start + spacing * u32::try_from(index)?;
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    sequence[index] = sequence[index].wrapping_add(1);
                    let heartbeat = Heartbeat {
                        kind: Kind::Heartbeat,
                        api_reachable: true,
                        key_id: ring.signing_id(),
                        node: peer.id,
                        incarnation,
                        sequence: sequence[index],
                        sent_unix_ms: unix_micros() / 1000,
                        suspects: Vec::new(),
                        reported: Vec::new(),
                    };
                    let frame =
                        ethernet_frame(peer.mac, &wire::encode(&heartbeat, ring.signing_key()));
                    socket.send(&frame)?;
                    thread_sent.fetch_add(1, Ordering::Relaxed);
                }
                round_start += INTERVAL;
                // Far behind (the machine stalled): start the next round now, not a burst.
                if Instant::now() > round_start + INTERVAL {
                    round_start = Instant::now();
                }
            }
            Ok(())
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => bail!("the simulator's socket: {error}"),
            Err(_) => bail!("the simulator did not open its socket within 5 s"),
        }
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the simulator panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// One reading of what a window is measured from.
struct Sample {
    at: Instant,
    ticks: u64,
    threads: BTreeMap<String, u64>,
    /// (rx, tx) bytes by interface.
    bytes: BTreeMap<String, (u64, u64)>,
    received: f64,
    rejected: BTreeMap<String, f64>,
    sent: f64,
    peers_alive: BTreeMap<String, f64>,
    simulated: u64,
}

const INTERFACES: [&str; 2] = ["lan0", "mgmt0"];

fn sample(host: &Host, pid: u32, simulated: u64) -> anyhow::Result<Sample> {
    let mut paths = Vec::new();
    for interface in INTERFACES {
        for direction in ["rx", "tx"] {
            paths.push(format!(
                "/sys/class/net/{interface}/statistics/{direction}_bytes"
            ));
        }
    }
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let at = Instant::now();
    let ticks = cpu_ticks(pid)?;
    let threads = thread_ticks(pid);
    // `ip netns exec` mounts the namespace's own sysfs.
    let output = host.run("cat", &args)?;
    let numbers: Vec<u64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().parse::<u64>())
        .collect::<Result<_, _>>()?;
    let mut bytes = BTreeMap::new();
    for (index, interface) in INTERFACES.iter().enumerate() {
        let (rx, tx) = (
            numbers.get(2 * index).copied().unwrap_or(0),
            numbers.get(2 * index + 1).copied().unwrap_or(0),
        );
        bytes.insert((*interface).to_owned(), (rx, tx));
    }
    let text = metrics(host)?;
    Ok(Sample {
        at,
        ticks,
        threads,
        bytes,
        received: metric(&text, "ferrolb_speaker_heartbeats_received_total", ""),
        rejected: by_label(&text, "ferrolb_speaker_heartbeats_rejected_total", "reason"),
        sent: metric(&text, "ferrolb_speaker_heartbeats_sent_total", ""),
        peers_alive: by_label(&text, "ferrolb_speaker_peers_alive", "interface"),
        simulated,
    })
}

/// Per-window figures between two samples.
struct Window {
    cpu_percent: f64,
    /// % of one core by thread name.
    threads: BTreeMap<String, f64>,
    rx_kb: BTreeMap<String, f64>,
    tx_kb: BTreeMap<String, f64>,
    received_per_second: f64,
    sent_per_second: f64,
    rejected: BTreeMap<String, f64>,
    peers_alive_end: BTreeMap<String, f64>,
    simulated_per_second: f64,
}

fn window(first: &Sample, last: &Sample, ticks_per_second: f64) -> Window {
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    let rate = |delta: u64| delta as f64 / seconds / 1000.0;
    let mut rx_kb = BTreeMap::new();
    let mut tx_kb = BTreeMap::new();
    for (interface, (rx, tx)) in &last.bytes {
        let (rx0, tx0) = first.bytes.get(interface).copied().unwrap_or((0, 0));
        rx_kb.insert(interface.clone(), rate(rx.saturating_sub(rx0)));
        tx_kb.insert(interface.clone(), rate(tx.saturating_sub(tx0)));
    }
    let rejected = last
        .rejected
        .iter()
        .map(|(reason, n)| {
            (
                reason.clone(),
                n - first.rejected.get(reason).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let threads = last
        .threads
        .iter()
        .map(|(name, ticks)| {
            let before = first.threads.get(name).copied().unwrap_or(0);
            let share = ticks.saturating_sub(before) as f64 / ticks_per_second / seconds * 100.0;
            (name.clone(), share)
        })
        .filter(|(_, share)| *share > 0.0)
        .collect();
    Window {
        threads,
        cpu_percent: last.ticks.saturating_sub(first.ticks) as f64 / ticks_per_second / seconds
            * 100.0,
        rx_kb,
        tx_kb,
        received_per_second: (last.received - first.received) / seconds,
        sent_per_second: (last.sent - first.sent) / seconds,
        rejected,
        peers_alive_end: last.peers_alive.clone(),
        simulated_per_second: last.simulated.saturating_sub(first.simulated) as f64 / seconds,
    }
}

async fn measure_windows(
    host: &Host,
    pid: u32,
    simulator: Option<&Simulator>,
    options: &Options,
    ticks_per_second: f64,
) -> anyhow::Result<Vec<Window>> {
    let simulated = || simulator.map_or(0, Simulator::sent);
    let mut previous = sample(host, pid, simulated())?;
    let mut windows = Vec::new();
    for _ in 0..options.windows {
        tokio::time::sleep(options.window).await;
        if !running(pid) {
            bail!("the speaker exited during a window");
        }
        let next = sample(host, pid, simulated())?;
        windows.push(window(&previous, &next, ticks_per_second));
        previous = next;
    }
    Ok(windows)
}

fn report_cost(peers: usize, windows: &[Window], reproduce: &str) {
    let take = |f: &dyn Fn(&Window) -> f64| -> Vec<f64> { windows.iter().map(f).collect() };
    let cpu = take(&|w| w.cpu_percent);
    let of = |map: &BTreeMap<String, f64>, key: &str| map.get(key).copied().unwrap_or(0.0);
    let lan_rx = take(&|w| of(&w.rx_kb, "lan0"));
    let lan_tx = take(&|w| of(&w.tx_kb, "lan0"));
    let mgmt_rx = take(&|w| of(&w.rx_kb, "mgmt0"));
    let mgmt_tx = take(&|w| of(&w.tx_kb, "mgmt0"));
    let alive_lan = take(&|w| of(&w.peers_alive_end, "lan0"));
    let alive_mgmt = take(&|w| of(&w.peers_alive_end, "mgmt0"));
    let received = take(&|w| w.received_per_second);
    let sent = take(&|w| w.sent_per_second);
    let simulated = take(&|w| w.simulated_per_second);
    // Plus 0.0: an empty f64 sum is -0.0.
    let rejected_total = take(&|w| w.rejected.values().sum::<f64>() + 0.0);
    let mut threads: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for w in windows {
        for (name, share) in &w.threads {
            threads.entry(name.clone()).or_default().push(*share);
        }
    }
    let threads: Vec<String> = threads
        .iter()
        .map(|(name, shares)| format!("{name} {:.2}%", median(shares)))
        .collect();
    let mut rejected_by: BTreeMap<String, u64> = BTreeMap::new();
    for w in windows {
        for (reason, n) in &w.rejected {
            *rejected_by.entry(reason.clone()).or_default() += *n as u64;
        }
    }
    println!(
        "heartbeat-cost peers={peers}: speaker CPU median {:.2}% of one core {} (target < 2%) by thread {}; lan0 received {:.1} kB/s {} (target < 100 kB/s), sent {:.2} kB/s {} | {reproduce}",
        median(&cpu),
        list(&cpu, 2),
        threads.join(", "),
        median(&lan_rx),
        list(&lan_rx, 1),
        median(&lan_tx),
        list(&lan_tx, 2),
    );
    println!(
        "heartbeat-cost peers={peers}: peers_alive at window ends lan0 {} mgmt0 {}; heartbeats received {:.0}/s {} (simulator sent {:.0}/s), sent {:.1}/s; rejected in the windows {:.0} {} by reason {}; mgmt0 received {:.2} kB/s, sent {:.2} kB/s {}",
        list(&alive_lan, 0),
        list(&alive_mgmt, 0),
        median(&received),
        list(&received, 0),
        median(&simulated),
        median(&sent),
        median(&rejected_total),
        list(&rejected_total, 0),
        show(&rejected_by),
        median(&mgmt_rx),
        median(&mgmt_tx),
        list(&mgmt_tx, 2),
    );
}

async fn heartbeat_cost(binary: &Path, options: &Options) -> anyhow::Result<()> {
    let reproduce = format!("{COMMAND} -- --only heartbeat");
    let ticks_per_second = clock_ticks_per_second()?;
    let mut lab = NetLab::new()?;
    let node = lab.add_host("node-0", Role::Node)?;
    let simulator_host = lab.add_host("sim", Role::Client)?;
    let api = ApiServerHandle::start(
        SocketAddr::from((lab.management_gateway(), 0)),
        ApiServerConfig::default(),
    )
    .await?;
    let kube = api.client()?;
    let key_data = setup_cluster(&kube).await?;
    create_node(&kube, &node.name).await?;

    let mut command = node.command(binary.to_str().context("binary path")?);
    command
        .env("KUBECONFIG", api.kubeconfig_path())
        .env("NODE_NAME", &node.name)
        .env("POD_NAMESPACE", SYSTEM)
        .env("RUST_LOG", "info,kube=warn")
        .args(["--metrics-bind-address", "127.0.0.1:7473"]);
    let speaker = Component::spawn("speaker-node-0", command)?;
    let pid = speaker.pid();
    let leases: Api<Lease> = Api::namespaced(kube.clone(), SYSTEM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let own = loop {
        if let Some(lease) = leases.get_opt("ferrolb-speaker-node-0").await?
            && metrics(&node).is_ok()
        {
            break lease;
        }
        if Instant::now() > deadline || !running(pid) {
            bail!(
                "the speaker did not register and serve metrics; its output:\n{}",
                speaker.output()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let published = own
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ferrolb.io/interfaces"))
        .cloned()
        .unwrap_or_default();
    println!(
        "heartbeat-cost setup: the speaker publishes {published}; {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let alone = measure_windows(&node, pid, None, options, ticks_per_second).await?;
    report_cost(0, &alone, &reproduce);

    // The simulated peers: heartbeats first (unknown until registered), then their Nodes and
    // registrations, so that they are heard from the moment the speaker knows them. Each
    // count adds peers to those registered before.
    let all = peers(options.peers.iter().copied().max().unwrap_or(0))?;
    let mut registered = 0;
    for &count in &options.peers {
        let peers = all.get(..count).context("peers")?.to_vec();
        let limit = options.window * u32::try_from(options.windows + 2)? + Duration::from_secs(60);
        let simulator = Simulator::start(
            &simulator_host,
            &key_data,
            peers.clone(),
            limit,
            options.burst,
        )?;
        for (index, peer) in peers.iter().enumerate().skip(registered) {
            create_node(&kube, &peer.name).await?;
            let interfaces = json!([{
                "name": "lan0",
                "mac": peer.mac.to_string(),
                "virtual": true,
                "subnets": [format!("198.51.100.{}/24", 100 + index),
                            format!("2001:db8:1::2:{index:x}/64")],
            }]);
            create(
                &leases,
                json!({"metadata": {"name": format!("ferrolb-speaker-{}", peer.name),
                                    "namespace": SYSTEM,
                                    "labels": {"app.kubernetes.io/component": "speaker"},
                                    "annotations": {"ferrolb.io/interfaces": interfaces.to_string()}},
                       "spec": {"holderIdentity": peer.name}}),
            )
            .await?;
        }
        registered = registered.max(count);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = metrics(&node).unwrap_or_default();
            let alive = metric(&text, "ferrolb_speaker_peers_alive", "interface=\"lan0\"");
            if alive >= count as f64 {
                break;
            }
            if Instant::now() > deadline || !running(pid) {
                bail!(
                    "the speaker counts {alive} of {count} peers alive on lan0; its output:\n{}",
                    speaker.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let crowded =
            measure_windows(&node, pid, Some(&simulator), options, ticks_per_second).await?;
        let reproduce = format!(
            "{COMMAND} -- --only heartbeat --peers {count}{}",
            if options.burst { " --burst" } else { "" }
        );
        report_cost(count, &crowded, &reproduce);
        let expected = count as f64 / INTERVAL.as_secs_f64() * 68.0 / 1000.0;
        println!(
            "heartbeat-cost peers={count}: expected lan0 receive rate {expected:.1} kB/s ({count} peers x {:.1} frames/s x 68 bytes); heartbeats sent {}",
            1.0 / INTERVAL.as_secs_f64(),
            if options.burst {
                "in a burst each interval"
            } else {
                "spread evenly over each interval"
            }
        );
        simulator.stop()?;
    }
    drop(speaker);
    api.shutdown().await;
    drop(lab);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let options = parse_options(std::env::args().skip(1))?;
    if !is_root() {
        println!("SKIPPED: the heartbeat_scale bench needs root for network namespaces");
        return Ok(());
    }
    let binary = speaker_binary()?;
    println!(
        "heartbeat_scale: {COMMAND} (as root); speaker {}; options {options:?}",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    runtime.block_on(async {
        let mut figures = Vec::new();
        if options.api {
            for &size in &options.sizes {
                figures.push(api_load(size, &binary, &options).await?);
            }
        }
        if figures.len() > 1 {
            let line: Vec<String> = figures
                .iter()
                .map(|f| {
                    format!(
                        "N={}: writes/node/s {:.4}, steady events/node/s {:.4}, start-up events/node {:.1}",
                        f.size, f.writes_per_node, f.events_per_node, f.startup_events_per_node
                    )
                })
                .collect();
            println!("api-scaling: {}", line.join("; "));
        }
        if options.heartbeat {
            heartbeat_cost(&binary, &options).await?;
        }
        anyhow::Ok(())
    })?;
    println!(
        "heartbeat_scale: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
