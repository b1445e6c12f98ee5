//! The speaker lab shared by `speaker_e2e` and the `speaker` bench: three nodes and a client in
//! network namespaces on one LAN, the API server double in this process on the management
//! network, real `ferrolb-speaker` processes in the node namespaces, kube-proxy emulated with
//! nftables and `ferrolb-hello` answering with its node's name.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_crds::heartbeat_key::{self, HeartbeatKeys};
use ferrolb_crds::{IPAddressPool, L2Advertisement, ServiceL2Status};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::probe::{Probe, ProbeConfig, double_answers};
use ferrolb_tests::apiserver::{ApiServerConfig, ApiServerHandle};
use ferrolb_tests::bird::Neighbor;
use ferrolb_tests::components::Component;
use ferrolb_tests::netlab::{Host, NetLab, Role};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub const NS: &str = "shop";
pub const SYSTEM: &str = "ferrolb-system";
pub const VIP4: &str = "198.51.100.200";
pub const VIP6: &str = "2001:db8:1::200";
pub const VIP4_WEB: &str = "198.51.100.201";
pub const HELLO_PORT: u16 = 8080;
/// Room for the bench's 1,000 owned IPs: 2001:db8:1::1:0 to 2001:db8:1::1:3ff.
pub const BULK_V6_POOL: &str = "2001:db8:1::1:0/118";

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `ferrolb-speaker`, built on first use. The nested cargo gets none of the `CARGO_PKG_*`-style
/// variables cargo sets for this test: build scripts that watch them (ring's) would otherwise
/// rebuild half the dependency tree on every run.
pub fn speaker_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut command = Command::new(cargo);
            command
                .args([
                    "build",
                    "-p",
                    "ferrolb-speaker",
                    "-p",
                    "ferrolb-tests",
                    "--bin",
                    "ferrolb-speaker",
                    "--bin",
                    "ferrolb-hello",
                ])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
            for (key, _) in std::env::vars() {
                if (key.starts_with("CARGO_") || key.starts_with("RUSTC") || key == "OUT_DIR")
                    && !matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR")
                {
                    command.env_remove(key);
                }
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            if exe.components().any(|c| c.as_os_str() == "release") {
                command.arg("--release");
            }
            let status = command.status().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("building ferrolb-speaker failed: {status}"));
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let deps = exe.parent().ok_or("no test directory")?;
            let profile = if deps.ends_with("deps") {
                deps.parent().ok_or("no profile directory")?
            } else {
                deps
            };
            Ok(profile.join("ferrolb-speaker"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// `ferrolb-hello` next to the speaker (tests get it as CARGO_BIN_EXE_ferrolb-hello; benches
/// do not, so it is built with the speaker).
pub fn hello_binary() -> anyhow::Result<PathBuf> {
    Ok(speaker_binary()?.with_file_name("ferrolb-hello"))
}

pub struct Cluster {
    pub lab: NetLab,
    pub nodes: Vec<Host>,
    pub client: Host,
    pub api: ApiServerHandle,
    pub kube: Client,
    pub speakers: BTreeMap<String, Component>,
    /// Flags every speaker gets (timings).
    pub speaker_args: Vec<String>,
    _hello: Vec<Component>,
}

pub async fn create<K>(api: &Api<K>, object: Value) -> anyhow::Result<()>
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

impl Cluster {
    /// BIRD's neighbors for the lab's nodes, all in `asn`: per node, one over IPv4 when
    /// `ipv4_bfd` is given and one over IPv6 when `ipv6_bfd` is, with BFD where it says true.
    pub fn bird_neighbors(
        &self,
        asn: u32,
        ipv4_bfd: Option<bool>,
        ipv6_bfd: Option<bool>,
    ) -> Vec<Neighbor> {
        let mut neighbors = Vec::new();
        for node in &self.nodes {
            let name = node.name.replace('-', "_");
            let families = [
                ("v4", IpAddr::V4(node.lan_ipv4), ipv4_bfd),
                ("v6", IpAddr::V6(node.lan_ipv6), ipv6_bfd),
            ];
            for (suffix, address, bfd) in families {
                if let Some(bfd) = bfd {
                    neighbors.push(Neighbor {
                        name: format!("{name}_{suffix}"),
                        address,
                        asn,
                        password: None,
                        bfd,
                        local: None,
                    });
                }
            }
        }
        neighbors
    }

    /// With the default heartbeat timings.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    pub async fn start_with(speaker_args: &[&str]) -> anyhow::Result<Self> {
        let mut lab = NetLab::new()?;
        let mut nodes = Vec::new();
        for name in ["node-a", "node-b", "node-c"] {
            nodes.push(lab.add_host(name, Role::Node)?);
        }
        let client = lab.add_host("client", Role::Client)?;
        let api = ApiServerHandle::start(
            std::net::SocketAddr::from((lab.management_gateway(), 0)),
            ApiServerConfig::default(),
        )
        .await?;
        let kube = api.client()?;
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
        // What the controller creates on its first start: the heartbeat key.
        let secrets: Api<Secret> = Api::namespaced(kube.clone(), SYSTEM);
        let data: BTreeMap<String, ByteString> = HeartbeatKeys::generate_data()?
            .into_iter()
            .map(|(name, value)| (name, ByteString(value)))
            .collect();
        create(
            &secrets,
            json!({"metadata": {"name": heartbeat_key::SECRET_NAME, "namespace": SYSTEM},
                   "data": data}),
        )
        .await?;
        let node_api: Api<Node> = Api::all(kube.clone());
        for node in &nodes {
            create(
                &node_api,
                json!({"metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}}}),
            )
            .await?;
        }
        create(
            &Api::<IPAddressPool>::all(kube.clone()),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                   "metadata": {"name": "lan"},
                   "spec": {"addresses": ["198.51.100.200-198.51.100.250", "2001:db8:1::200/124",
                                         BULK_V6_POOL]}}),
        )
        .await?;
        create(
            &Api::<L2Advertisement>::all(kube.clone()),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
                   "metadata": {"name": "lan"}, "spec": {}}),
        )
        .await?;
        let mut hello = Vec::new();
        for node in &nodes {
            let mut command = node.command(hello_binary()?.to_str().context("path")?);
            command.args([&format!("[::]:{HELLO_PORT}"), node.name.as_str()]);
            hello.push(Component::spawn(&format!("hello-{}", node.name), command)?);
            for vip in [VIP4, VIP6, VIP4_WEB] {
                node.forward_service(vip.parse()?, 80, HELLO_PORT)?;
            }
        }
        let mut cluster = Self {
            lab,
            nodes,
            client,
            api,
            kube,
            speakers: BTreeMap::new(),
            speaker_args: speaker_args.iter().map(|a| a.to_string()).collect(),
            _hello: hello,
        };
        for name in ["node-a", "node-b", "node-c"] {
            cluster.start_speaker(name)?;
        }
        for name in ["node-a", "node-b", "node-c"] {
            cluster.wait_lease(name).await?;
        }
        Ok(cluster)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.nodes.iter().find(|h| h.name == name).unwrap()
    }

    /// `ferrolb_speaker_kernel_arp_replies_total` of `node`'s speaker, once it is above zero
    /// or `within` has passed (the speaker refreshes it a few times per renew interval).
    pub async fn kernel_arp_replies(&self, node: &str, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let replies = self
                .host(node)
                .run("curl", &["-sf", "-m2", "http://127.0.0.1:7473/metrics"])
                .ok()
                .filter(|output| output.status.success())
                .and_then(|output| {
                    String::from_utf8_lossy(&output.stdout)
                        .lines()
                        .find(|l| l.starts_with("ferrolb_speaker_kernel_arp_replies_total "))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .unwrap_or(0);
            if replies > 0 || Instant::now() > deadline {
                return replies;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn node_of_mac(&self, mac: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|h| h.lan_mac.eq_ignore_ascii_case(mac))
            .map(|h| h.name.clone())
    }

    pub fn start_speaker(&mut self, name: &str) -> anyhow::Result<()> {
        let host = self.host(name).clone();
        let speaker = speaker_binary()?;
        let speaker = speaker.to_str().context("path")?;
        // FERROLB_TEST_SPEAKER_WRAPPER runs the speakers under a profiler (`heaptrack`, say).
        let mut command = match std::env::var("FERROLB_TEST_SPEAKER_WRAPPER") {
            Ok(wrapper) => {
                let mut command = host.command(&wrapper);
                command.arg(speaker);
                command
            }
            Err(_) => host.command(speaker),
        };
        command
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .env("NODE_NAME", name)
            .env("POD_NAMESPACE", SYSTEM)
            // FERROLB_TEST_SPEAKER_LOG sets the speakers' filter, to trace a failing run.
            .env(
                "RUST_LOG",
                std::env::var("FERROLB_TEST_SPEAKER_LOG")
                    .unwrap_or_else(|_| "info,kube=warn".to_owned()),
            )
            .args(["--metrics-bind-address", "127.0.0.1:7473"])
            .args(&self.speaker_args);
        let component = Component::spawn(&format!("speaker-{name}"), command)?;
        self.speakers.insert(name.to_owned(), component);
        Ok(())
    }

    pub fn probe(&self, targets: &[&str]) -> anyhow::Result<Probe> {
        Ok(Probe::start(ProbeConfig {
            netns: self.client.netns.clone(),
            interface: self.client.lan_interface.clone(),
            mac: self
                .client
                .lan_mac
                .parse::<MacAddr>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            ipv4: self.client.lan_ipv4,
            ipv6: self.client.lan_ipv6,
            targets: targets
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()?,
            interval: Duration::from_millis(20),
            sender_tags: Vec::new(),
        })?)
    }

    pub async fn service(&self, name: &str, ips: &[&str], spec: Value) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.kube.clone(), NS);
        let mut full =
            json!({"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": HELLO_PORT}]});
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(extra.clone());
        }
        create(
            &services,
            json!({"metadata": {"name": name, "namespace": NS}, "spec": full}),
        )
        .await?;
        let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        services
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
            )
            .await?;
        Ok(())
    }

    pub async fn delete_service(&self, name: &str) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.kube.clone(), NS);
        services.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// The client's curl of `url`, if it answered.
    pub fn curl(&self, url: &str) -> Option<String> {
        let output = self
            .client
            .run("curl", &["-s", "-g", "--max-time", "1", url])
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// The node whose MAC the client's kernel has for `vip`.
    pub fn neighbour(&self, vip: &str) -> Option<String> {
        let output = self
            .client
            .run("ip", &["neigh", "show", vip, "dev", "lan0"])
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        self.node_of_mac(words.next()?)
    }

    pub fn url(vip: &str) -> String {
        match vip.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("http://[{vip}]/"),
            _ => format!("http://{vip}/"),
        }
    }

    /// Waits until curl reaches `node` (any node when None) through `vip` and the client's
    /// neighbour entry names that node; returns it.
    pub async fn wait_owner(
        &self,
        vip: &str,
        expect: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = (None, None);
        while Instant::now() < deadline {
            let answered = self.curl(&Self::url(vip));
            let neighbour = self.neighbour(vip);
            if let (Some(a), Some(n)) = (&answered, &neighbour)
                && a == n
                && expect(a)
            {
                return Ok(a.clone());
            }
            last = (answered, neighbour);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{vip}: curl answered {:?}, neighbour {:?}", last.0, last.1)
    }

    /// Waits until nobody answers for `vip` (its neighbour entry fails).
    pub async fn wait_unanswered(&self, vip: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let _ = self.client.run("ip", &["neigh", "flush", "dev", "lan0"]);
            if self.curl(&Self::url(vip)).is_none() && self.neighbour(vip).is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{vip} is still answered")
    }

    pub async fn status_node(&self, service: &str) -> Option<String> {
        let statuses: Api<ServiceL2Status> = Api::namespaced(self.kube.clone(), NS);
        let object = statuses.get_opt(service).await.ok()??;
        Some(object.status?.node)
    }

    pub async fn wait_status(&self, service: &str, node: &str) -> anyhow::Result<ServiceL2Status> {
        let statuses: Api<ServiceL2Status> = Api::namespaced(self.kube.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(object)) = statuses.get_opt(service).await
                && object.status.as_ref().is_some_and(|s| s.node == node)
            {
                return Ok(object);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "ServiceL2Status {service} names {:?}, not {node}",
            self.status_node(service).await
        )
    }

    pub async fn label_node(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
    ) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.kube.clone());
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
            )
            .await?;
        Ok(())
    }

    pub async fn set_advertisement(&self, spec: Value) -> anyhow::Result<()> {
        let api: Api<L2Advertisement> = Api::all(self.kube.clone());
        api.patch(
            "lan",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?;
        Ok(())
    }

    pub async fn wait_lease(&self, node: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.lease_exists(node).await? {
            if Instant::now() > deadline {
                let output = self
                    .speakers
                    .get(node)
                    .map(|speaker| speaker.output())
                    .unwrap_or_default();
                bail!("no Lease for {node}; its speaker's output:\n{output}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits for an event on Service `service` whose note contains `text`; returns its type.
    pub async fn wait_event(&self, service: &str, text: &str) -> anyhow::Result<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.kube.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for event in events.list(&Default::default()).await?.items {
                let about = event.regarding.as_ref().and_then(|r| r.name.as_deref());
                if about == Some(service) && event.note.as_deref().is_some_and(|n| n.contains(text))
                {
                    return Ok(event.type_.unwrap_or_default());
                }
            }
            if Instant::now() > deadline {
                bail!("no event about {service} saying {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn lease_exists(&self, node: &str) -> anyhow::Result<bool> {
        let leases: Api<Lease> = Api::namespaced(self.kube.clone(), SYSTEM);
        Ok(leases
            .get_opt(&format!("ferrolb-speaker-{node}"))
            .await?
            .is_some())
    }

    /// Stops every process and removes the lab.
    pub async fn stop(self) {
        drop(self.speakers);
        drop(self.lab);
        self.api.shutdown().await;
    }

    pub async fn finish(self, probe: Probe) -> anyhow::Result<()> {
        let heard = probe.heard();
        let rounds = probe.sent().len();
        probe.stop()?;
        let doubles = double_answers(&heard);
        assert!(
            doubles.is_empty(),
            "two nodes answered in one round: {:?}",
            &doubles[..doubles.len().min(5)]
        );
        assert!(rounds > 50, "the probe sent only {rounds} rounds");
        let answers = heard.iter().filter(|h| h.solicited).count();
        assert!(answers > 0, "the probe heard no answer");
        let mut breakdown: BTreeMap<(IpAddr, bool), usize> = BTreeMap::new();
        for h in &heard {
            *breakdown.entry((h.ip, h.solicited)).or_default() += 1;
        }
        eprintln!(
            "probe: {rounds} rounds, {answers} solicited answers, none doubled; by (ip, solicited): {breakdown:?}"
        );
        self.stop().await;
        Ok(())
    }
}

/// Whether this kernel has tcx (Linux 6.6 or later), which the in-kernel ARP responder needs.
pub fn kernel_has_tcx() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    ferrolb_speaker::kernel_arp::release_has_tcx(&release)
}
