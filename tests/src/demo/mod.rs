//! `scripts/demo`: FerroLB at work in one command. Three node namespaces and a client on one LAN,
//! the API server double, the controller and a speaker per node; the project's samples applied
//! as a user would; the client's curl through the VIP over IPv4 and IPv6; the events and the
//! ServiceL2Status; then the owner node lost and the failover as the client saw it.
//!
//! Every process and namespace is owned by a value here and removed when it drops, so the demo
//! cleans up on success, on failure and on Ctrl-C alike.

pub mod failover;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::probe::{Probe, ProbeConfig};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::apiserver::{ApiServerConfig, ApiServerHandle};
use crate::components::{self, Component, ControllerProcess};
use crate::netlab::{Host, NetLab, Role};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const SYSTEM_NAMESPACE: &str = "ferrolb-system";
/// Where the samples put the Service.
const SERVICE_NAMESPACE: &str = "default";
const SERVICE: &str = "hello";
/// The node-local port `ferrolb-hello` listens on, behind the kube-proxy emulation.
const HELLO_PORT: u16 = 8080;
const STEPS: usize = 6;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run every step once and return, instead of staying up until Ctrl-C.
    pub once: bool,
    /// The repository root (for `config/`).
    pub repo: PathBuf,
    /// Use the binaries next to the demo's own as they are, without asking cargo.
    pub prebuilt: bool,
}

/// The programs the demo runs besides its own.
struct Binaries {
    controller: PathBuf,
    speaker: PathBuf,
    hello: PathBuf,
}

impl Binaries {
    fn find(prebuilt: bool) -> anyhow::Result<Self> {
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            if prebuilt {
                let exe = std::env::current_exe()?;
                let path = exe
                    .parent()
                    .context("the demo binary has no directory")?
                    .join(name);
                if !path.exists() {
                    bail!(
                        "{} is missing: build it first (scripts/demo does)",
                        path.display()
                    );
                }
                Ok(path)
            } else {
                components::binary(name)
            }
        };
        Ok(Self {
            controller: find("ferrolb-controller")?,
            speaker: find("ferrolb-speaker")?,
            hello: find("ferrolb-hello")?,
        })
    }
}

/// Numbered progress lines, each with the time since the demo started.
struct Progress {
    started: Instant,
    step: usize,
}

impl Progress {
    fn step(&mut self, text: &str) {
        self.step += 1;
        println!(
            "\n[{}/{STEPS}] {text}  (t = {:.1} s)",
            self.step,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Everything the demo runs; dropping it stops the processes, then removes the namespaces.
struct Lab {
    speakers: Vec<(String, Component)>,
    controller: Option<ControllerProcess>,
    hello: Vec<Component>,
    nodes: Vec<Host>,
    client: Host,
    net: NetLab,
    api: ApiServerHandle,
}

fn require_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["ip", "nft", "curl", "kubectl"]
        .into_iter()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "the demo needs {} (Debian: iproute2, nftables, curl, kubernetes-client)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs the demo; an error is a step that did not happen as it should.
pub async fn run(options: Options) -> anyhow::Result<()> {
    require_tools()?;
    let binaries = Binaries::find(options.prebuilt)?;
    let mut progress = Progress {
        started: Instant::now(),
        step: 0,
    };
    let mut lab = Lab::start(&binaries, &options.repo, &mut progress).await?;
    let outcome = lab.show(&options, &mut progress).await;
    if let (Ok(lost), false) = (&outcome, options.once) {
        lab.bring_back(&binaries, lost)?;
        lab.print_commands();
        wait_for_stop().await;
    }
    println!("\nCleaning up: stopping the processes, removing the namespaces.");
    lab.stop().await;
    outcome.map(drop)
}

async fn wait_for_stop() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

impl Lab {
    async fn start(
        binaries: &Binaries,
        repo: &Path,
        progress: &mut Progress,
    ) -> anyhow::Result<Self> {
        progress.step("Three nodes and a client on one LAN (network namespaces), the Kubernetes API server double, FerroLB's controller and a speaker per node");
        let mut net = NetLab::new().context("building the network namespaces")?;
        let mut nodes = Vec::new();
        for name in NODES {
            nodes.push(net.add_host(name, Role::Node)?);
        }
        let client = net.add_host("client", Role::Client)?;
        let api = ApiServerHandle::start(
            std::net::SocketAddr::from((net.management_gateway(), 0)),
            ApiServerConfig::default(),
        )
        .await?;
        let mut lab = Self {
            speakers: Vec::new(),
            controller: None,
            hello: Vec::new(),
            nodes,
            client,
            net,
            api,
        };
        for node in &lab.nodes {
            println!(
                "  {:<7} {} {} (MAC {})",
                node.name, node.lan_ipv4, node.lan_ipv6, node.lan_mac
            );
        }
        println!(
            "  {:<7} {} {} (MAC {})",
            lab.client.name, lab.client.lan_ipv4, lab.client.lan_ipv6, lab.client.lan_mac
        );
        let crds = repo.join("config/crds");
        lab.kubectl(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
        lab.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd",
            "--all",
        ])?;
        let kube = lab.api.client()?;
        let namespaces: Api<Namespace> = Api::all(kube.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": SYSTEM_NAMESPACE}}))?,
            )
            .await?;
        let node_api: Api<Node> = Api::all(kube);
        for node in &lab.nodes {
            let object = json!({"metadata": {"name": node.name, "labels": {
                "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"}}});
            node_api
                .create(&PostParams::default(), &serde_json::from_value(object)?)
                .await?;
        }
        for node in &lab.nodes {
            let mut command = node.command(&binaries.hello.to_string_lossy());
            command.args([&format!("[::]:{HELLO_PORT}"), node.name.as_str()]);
            lab.hello
                .push(Component::spawn(&format!("hello-{}", node.name), command)?);
        }
        for name in NODES {
            lab.start_speaker(binaries, name)?;
        }
        // As on a cluster: the controller creates the heartbeat key the speakers wait for.
        let key_namespace = format!("--heartbeat-key-namespace={SYSTEM_NAMESPACE}");
        let mut controller = ControllerProcess::spawn_program(
            &binaries.controller,
            lab.api.kubeconfig_path(),
            None,
            &[key_namespace.as_str()],
            &[],
        )?;
        controller.wait_ready(Duration::from_secs(20))?;
        lab.controller = Some(controller);
        Ok(lab)
    }

    fn node(&self, name: &str) -> anyhow::Result<&Host> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    fn node_of_mac(&self, mac: MacAddr) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.lan_mac.parse::<MacAddr>().ok() == Some(mac))
            .map(|n| n.name.clone())
    }

    fn start_speaker(&mut self, binaries: &Binaries, name: &str) -> anyhow::Result<()> {
        let host = self.node(name)?.clone();
        let mut command = host.command(&binaries.speaker.to_string_lossy());
        command
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .env("NODE_NAME", name)
            .env("POD_NAMESPACE", SYSTEM_NAMESPACE)
            .env("RUST_LOG", "info,kube=warn")
            .args(["--metrics-bind-address", "127.0.0.1:7473"]);
        let speaker = Component::spawn(&format!("speaker-{name}"), command)?;
        self.speakers.push((name.to_owned(), speaker));
        Ok(())
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.api.kubeconfig_path())
            .args(args);
        command
    }

    /// Runs kubectl; its output, or an error with what it printed.
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .kubectl_command(args)
            .output()
            .context("running kubectl")?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Prints a kubectl command and what it shows, as a user would see it.
    fn show_kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        println!("  $ kubectl {}", args.join(" "));
        let text = self.kubectl(args)?;
        for line in text.lines() {
            println!("    {line}");
        }
        Ok(text)
    }

    async fn service_ips(&self, timeout: Duration) -> anyhow::Result<Vec<IpAddr>> {
        let services: Api<Service> = Api::namespaced(self.api.client()?, SERVICE_NAMESPACE);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(service) = services.get_opt(SERVICE).await? {
                let ips: Vec<IpAddr> = service
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.ip.as_deref()?.parse().ok())
                    .collect();
                if !ips.is_empty() {
                    return Ok(ips);
                }
            }
            if Instant::now() > deadline {
                bail!("Service {SERVICE} got no external IP within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(v4) => format!("http://{v4}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]/"),
        }
    }

    /// The node that answered the client's curl of `ip`, once one does.
    async fn curl_until(
        &self,
        ip: IpAddr,
        accept: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self
                .client
                .run("curl", &["-s", "-g", "--max-time", "1", &Self::url(ip)]);
            if let Ok(output) = output {
                let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                if !answer.is_empty() && accept(&answer) {
                    return Ok(answer);
                }
            }
            if Instant::now() > deadline {
                bail!("the client's curl of {ip} got no answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The demo's steps after the lab is up; returns the node that was lost.
    async fn show(&self, options: &Options, progress: &mut Progress) -> anyhow::Result<String> {
        progress.step("The samples, applied as a user would: an IPAddressPool, an L2Advertisement and a LoadBalancer Service");
        let samples = options.repo.join("config/samples");
        self.show_kubectl(&["apply", "-f", &samples.to_string_lossy()])?;
        let ips = self.service_ips(Duration::from_secs(20)).await?;
        // kube-proxy's part: each node forwards the Service's traffic to its local backend.
        for node in &self.nodes {
            for &ip in &ips {
                node.forward_service(ip, 80, HELLO_PORT)?;
            }
        }
        self.show_kubectl(&["get", "svc", SERVICE, "-n", SERVICE_NAMESPACE])?;

        progress.step("The client reaches the Service through its external IPs");
        let mut owner = None;
        for &ip in &ips {
            let node = self
                .curl_until(ip, |_| true, Duration::from_secs(20))
                .await?;
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            println!(
                "  client$ curl {}  ->  answered by {node}  ({family}, first answer {:.1} s after the demo started)",
                Self::url(ip),
                progress.elapsed().as_secs_f64()
            );
            if ip.is_ipv4() {
                owner = Some(node);
            }
        }
        let owner = owner.context("the sample Service has no IPv4 address")?;
        let vip4 = ips
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .context("no IPv4 VIP")?;

        progress.step("What FerroLB reports: the controller's events on the Service, and which node announces it");
        let described =
            self.show_kubectl(&["describe", "svc", SERVICE, "-n", SERVICE_NAMESPACE])?;
        if !described.contains("IPAllocated") {
            bail!("kubectl describe svc shows no IPAllocated event");
        }
        let statuses =
            self.show_kubectl(&["get", "l2status", "-n", SERVICE_NAMESPACE, "-o", "wide"])?;
        if !statuses.contains(&owner) {
            bail!("no ServiceL2Status names {owner}, the node that answered");
        }

        progress.step(&format!("Losing the owner, {owner}: its speaker is killed and its LAN link cut, while the client asks who has {vip4} every 10 ms"));
        let probe = Probe::start(ProbeConfig {
            netns: self.client.netns.clone(),
            interface: self.client.lan_interface.clone(),
            mac: self
                .client
                .lan_mac
                .parse::<MacAddr>()
                .map_err(|e| anyhow::anyhow!("client MAC: {e:?}"))?,
            ipv4: self.client.lan_ipv4,
            ipv6: self.client.lan_ipv6,
            targets: vec![vip4],
            interval: Duration::from_millis(10),
            sender_tags: Vec::new(),
        })?;
        // A second of answers before the loss, for the timeline.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let old_mac: MacAddr = self
            .node(&owner)?
            .lan_mac
            .parse()
            .map_err(|e| anyhow::anyhow!("{owner} MAC: {e:?}"))?;
        let lost_at = Instant::now();
        if let Some((_, speaker)) = self.speakers.iter().find(|(name, _)| *name == owner) {
            speaker.signal("KILL")?;
        }
        let old_host = self.node(&owner)?;
        old_host.set_link(&old_host.lan_interface, false)?;
        let new_owner = self
            .curl_until(vip4, |n| n != owner, Duration::from_secs(30))
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let heard = probe.heard();
        probe.stop()?;
        let seen = failover::analyse(&heard, old_mac, lost_at);
        let gap = seen
            .gap_ms()
            .context("the client saw no reply from a new owner")?;
        let new_name = seen
            .new
            .and_then(|mac| self.node_of_mac(mac))
            .unwrap_or_else(|| "an unknown MAC".to_owned());
        println!("  The client's view of {vip4}:");
        println!(
            "    {:>9.0} ms  last ARP reply from {owner}",
            seen.last_old_ms.unwrap_or(f64::NAN)
        );
        println!("    {:>9.0} ms  {owner} lost", 0.0);
        if let Some(at) = seen.first_gratuitous_ms {
            println!("    {at:>9.0} ms  {new_name} announces {vip4} (gratuitous ARP)");
        }
        println!(
            "    {:>9.0} ms  first ARP reply from {new_name}",
            seen.first_new_ms.unwrap_or(f64::NAN)
        );
        println!(
            "  Failover: {gap:.0} ms without an answer; {new_name} owns {vip4} now; {} rounds with two answering nodes.",
            seen.double_answers
        );
        println!(
            "  (Default timings: a lost node is replaced 285 ms after its last heartbeat; a speaker that stops cleanly says goodbye and hands over at once.)"
        );
        let rows: Vec<(String, MacAddr)> = self
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.lan_mac.parse().ok()?)))
            .collect();
        let after = Duration::from_secs_f64((gap / 1e3).max(0.0)) + Duration::from_secs(1);
        print!(
            "  Who answered, every 100 ms (#: answered):\n{}",
            failover::timeline(
                &heard,
                lost_at,
                &rows,
                Duration::from_secs(1),
                after,
                Duration::from_millis(100)
            )
        );
        if seen.double_answers > 0 {
            bail!("two nodes answered in {} rounds", seen.double_answers);
        }
        if new_owner != new_name {
            bail!("curl reached {new_owner}, but ARP named {new_name}");
        }

        progress.step(&format!(
            "The client reaches {new_owner} now, and the ServiceL2Status says so"
        ));
        println!(
            "  client$ curl {}  ->  answered by {new_owner}",
            Self::url(vip4)
        );
        let statuses_api: Api<ferrolb_crds::ServiceL2Status> =
            Api::namespaced(self.api.client()?, SERVICE_NAMESPACE);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let names_new = statuses_api
                .get_opt(SERVICE)
                .await?
                .and_then(|s| s.status)
                .is_some_and(|s| s.node == new_owner);
            if names_new {
                break;
            }
            if Instant::now() > deadline {
                bail!("the ServiceL2Status does not name {new_owner}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.show_kubectl(&["get", "l2status", "-n", SERVICE_NAMESPACE, "-o", "wide"])?;
        Ok(owner)
    }

    /// Restores the lost node (link up, a new speaker), so that all three nodes are there to
    /// look at.
    fn bring_back(&mut self, binaries: &Binaries, lost: &str) -> anyhow::Result<()> {
        let host = self.node(lost)?.clone();
        host.set_link(&host.lan_interface, true)?;
        self.speakers.retain(|(name, _)| name != lost);
        self.start_speaker(binaries, lost)?;
        println!(
            "
{lost} is back: link up, speaker restarted."
        );
        Ok(())
    }

    fn print_commands(&self) {
        let kubeconfig = self.api.kubeconfig_path().display();
        let client = &self.client.netns;
        println!(
            "\nFerroLB is running. Look around (as root), Ctrl-C ends the demo and cleans up:"
        );
        println!("  kubectl --kubeconfig {kubeconfig} get svc,ipp,l2adv,l2status -A");
        println!(
            "  kubectl --kubeconfig {kubeconfig} describe svc {SERVICE} -n {SERVICE_NAMESPACE}"
        );
        println!("  ip netns exec {client} curl -s http://<EXTERNAL-IP>/");
        println!("  ip netns exec {client} ip neigh");
        for node in &self.nodes {
            println!(
                "  ip netns exec {} curl -s 127.0.0.1:7473/metrics | grep ferrolb_speaker_announced   # {}",
                node.netns, node.name
            );
        }
        if let Some(controller) = &self.controller {
            println!(
                "  curl -s {}/metrics | grep ferrolb_controller_pool",
                controller.metrics_address
            );
        }
    }

    async fn stop(self) {
        let Self {
            speakers,
            controller,
            hello,
            nodes,
            client,
            net,
            api,
        } = self;
        drop(speakers);
        drop(controller);
        drop(hello);
        drop((nodes, client, net));
        api.shutdown().await;
    }
}
