//! Network-namespace "hosts" for end-to-end tests: a LAN bridge (198.51.100.0/24,
//! 2001:db8:1::/64) that nodes and clients share, and a management network (a /28 of
//! 203.0.113.0/24) that links the nodes to the API server running in the test process.
//!
//! Every link and namespace is created by the lab and removed when it is dropped, even when the
//! test fails. The bridges live in the lab's own "switch" namespace, so no test packet reaches
//! the machine's own interfaces; the only thing in the root namespace is one veth holding the
//! management gateway address, so the test process can serve the API to the nodes.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2; `nft` for kube-proxy emulation.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// How many labs can run at once: the management /24 is cut into this many /28s.
const SLOTS: u8 = 16;
const LOCK_DIR: &str = "/run/ferrolb-netlab";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("all {SLOTS} management subnets are in use")]
    NoFreeSlot,
    #[error("lock file: {0}")]
    Lock(io::Error),
    #[error("a lab holds at most 12 hosts")]
    TooManyHosts,
}

/// Runs a command to completion; its failure is an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn ip(args: &[&str]) -> Result<Output, LabError> {
    run("ip", args)
}

/// An exclusive claim on one management /28, held through a file lock so that concurrent test
/// processes never configure the same gateway address.
struct Slot {
    index: u8,
    _lock: File,
}

impl Slot {
    fn claim() -> Result<Self, LabError> {
        std::fs::create_dir_all(LOCK_DIR).map_err(LabError::Lock)?;
        for index in 0..SLOTS {
            let file = File::create(format!("{LOCK_DIR}/slot-{index}")).map_err(LabError::Lock)?;
            if file.try_lock().is_ok() {
                // A previous holder that died left its root-namespace veth behind.
                let _ = ip(&["link", "del", &root_link_name(index)]);
                return Ok(Self { index, _lock: file });
            }
        }
        Err(LabError::NoFreeSlot)
    }
}

fn root_link_name(slot: u8) -> String {
    format!("flbmgmt{slot}")
}

/// What a host in the lab is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A Kubernetes node: on the LAN and on the management network.
    Node,
    /// A LAN client: on the LAN only.
    Client,
}

/// A network namespace standing for one machine.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub role: Role,
    /// The LAN interface inside the namespace, and its addresses.
    pub lan_interface: String,
    pub lan_mac: String,
    pub lan_ipv4: Ipv4Addr,
    pub lan_ipv6: Ipv6Addr,
    /// The management interface and address, for nodes.
    pub management_interface: Option<String>,
    pub management_ipv4: Option<Ipv4Addr>,
}

impl Host {
    /// A command that runs inside this host's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// Runs a command inside the host to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, LabError> {
        let mut all = vec!["netns", "exec", &self.netns, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Brings one of the host's interfaces up or down.
    pub fn set_link(&self, interface: &str, up: bool) -> Result<(), LabError> {
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            interface,
            if up { "up" } else { "down" },
        ])
        .map(drop)
    }
}

impl Host {
    /// Emulates kube-proxy for a LoadBalancer Service: TCP traffic arriving for `vip:port` is
    /// redirected to `local_port` on this host, as kube-proxy's DNAT to a local endpoint would.
    /// The VIP itself is not configured on any interface, as on a real node.
    pub fn forward_service(&self, vip: IpAddr, port: u16, local_port: u16) -> Result<(), LabError> {
        let family = match vip {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        };
        let _ = self.run("nft", &["add", "table", "inet", "kubeproxy"]);
        let _ = self.run(
            "nft",
            &["add chain inet kubeproxy prerouting { type nat hook prerouting priority dstnat; }"],
        );
        self.run(
            "nft",
            &[&format!(
                "add rule inet kubeproxy prerouting {family} daddr {vip} tcp dport {port} redirect to :{local_port}"
            )],
        )
        .map(drop)
    }
}

/// A set of hosts on one LAN, torn down on drop.
pub struct NetLab {
    id: String,
    slot: Slot,
    switch: String,
    hosts: Vec<Host>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl NetLab {
    /// Creates the switch (LAN and management bridges) and the management gateway.
    pub fn new() -> Result<Self, LabError> {
        remove_stale_labs();
        let slot = Slot::claim()?;
        let id = format!(
            "flb-{}-{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{id}-switch");
        let lab = Self {
            id,
            slot,
            switch,
            hosts: Vec::new(),
        };
        lab.build_switch()?;
        Ok(lab)
    }

    fn build_switch(&self) -> Result<(), LabError> {
        let sw = self.switch.as_str();
        ip(&["netns", "add", sw])?;
        for bridge in ["lan", "mgmt"] {
            ip(&["-n", sw, "link", "add", bridge, "type", "bridge"])?;
            // Forward at once: the default 15 s of listening would hide every failover.
            ip(&[
                "-n",
                sw,
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ])?;
            ip(&["-n", sw, "link", "set", bridge, "up"])?;
        }
        let root = root_link_name(self.slot.index);
        ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", "gateway", "netns", sw,
        ])?;
        ip(&["-n", sw, "link", "set", "gateway", "master", "mgmt"])?;
        ip(&["-n", sw, "link", "set", "gateway", "up"])?;
        let gateway = format!("{}/28", self.management_gateway());
        ip(&["addr", "add", &gateway, "dev", &root])?;
        ip(&["link", "set", &root, "up"])?;
        Ok(())
    }

    /// The address in the test process's namespace that nodes reach over the management network:
    /// bind the API server here.
    pub fn management_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, self.slot.index * 16 + 1)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Adds a host. Hosts get LAN addresses 198.51.100.(10 + n) and 2001:db8:1::(10 + n) in the
    /// order they are added; nodes also get 203.0.113.(slot*16 + 2 + n) on the management network.
    pub fn add_host(&mut self, name: &str, role: Role) -> Result<Host, LabError> {
        let n = u8::try_from(self.hosts.len()).map_err(|_| LabError::TooManyHosts)?;
        if n >= 12 {
            return Err(LabError::TooManyHosts);
        }
        let netns = format!("{}-{name}", self.id);
        ip(&["netns", "add", &netns])?;
        let host_result = self.wire_host(name, &netns, role, n);
        if host_result.is_err() {
            let _ = ip(&["netns", "del", &netns]);
        }
        let host = host_result?;
        self.hosts.push(host.clone());
        Ok(host)
    }

    fn wire_host(&self, name: &str, netns: &str, role: Role, n: u8) -> Result<Host, LabError> {
        let sw = self.switch.as_str();
        let in_ns = |args: &[&str]| -> Result<Output, LabError> {
            let mut all = vec!["netns", "exec", netns];
            all.extend_from_slice(args);
            ip(&all)
        };
        // Addresses must be usable at once: no duplicate address detection delay.
        in_ns(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])?;
        in_ns(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        ip(&["-n", netns, "link", "set", "lo", "up"])?;

        let lan_port = format!("lan-{n}");
        let lan_mac = format!("02:fe:00:00:{:02x}:{:02x}", self.slot.index, 10 + n);
        ip(&[
            "-n", sw, "link", "add", &lan_port, "type", "veth", "peer", "name", "lan0", "netns",
            netns,
        ])?;
        ip(&["-n", sw, "link", "set", &lan_port, "master", "lan"])?;
        ip(&["-n", sw, "link", "set", &lan_port, "up"])?;
        ip(&["-n", netns, "link", "set", "lan0", "address", &lan_mac])?;
        let lan_ipv4 = Ipv4Addr::new(198, 51, 100, 10 + n);
        let lan_ipv6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(10 + n));
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{lan_ipv4}/24"),
            "dev",
            "lan0",
        ])?;
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{lan_ipv6}/64"),
            "dev",
            "lan0",
            "nodad",
        ])?;
        ip(&["-n", netns, "link", "set", "lan0", "up"])?;

        let (management_interface, management_ipv4) = match role {
            Role::Client => (None, None),
            Role::Node => {
                let port = format!("mgmt-{n}");
                ip(&[
                    "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "mgmt0",
                    "netns", netns,
                ])?;
                ip(&["-n", sw, "link", "set", &port, "master", "mgmt"])?;
                ip(&["-n", sw, "link", "set", &port, "up"])?;
                let address = Ipv4Addr::new(203, 0, 113, self.slot.index * 16 + 2 + n);
                ip(&[
                    "-n",
                    netns,
                    "addr",
                    "add",
                    &format!("{address}/28"),
                    "dev",
                    "mgmt0",
                ])?;
                ip(&["-n", netns, "link", "set", "mgmt0", "up"])?;
                (Some("mgmt0".to_owned()), Some(address))
            }
        };
        Ok(Host {
            name: name.to_owned(),
            netns: netns.to_owned(),
            role,
            lan_interface: "lan0".to_owned(),
            lan_mac,
            lan_ipv4,
            lan_ipv6,
            management_interface,
            management_ipv4,
        })
    }
}

/// Kills what runs in a namespace and deletes it.
fn remove_namespace(netns: &str) {
    if let Ok(output) = ip(&["netns", "pids", netns]) {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = ip(&["netns", "del", netns]);
}

/// Deletes namespaces of labs whose test process is gone (a test killed before its drop ran).
fn remove_stale_labs() {
    let Ok(output) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("flb-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for host in &self.hosts {
            remove_namespace(&host.netns);
        }
        remove_namespace(&self.switch);
        let _ = ip(&["link", "del", &root_link_name(self.slot.index)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_reach_each_other_and_the_gateway_and_everything_goes_on_drop() {
        let test = "hosts_reach_each_other_and_the_gateway_and_everything_goes_on_drop";
        if !crate::harness::root_available(test).unwrap() {
            return;
        }
        let mut lab = NetLab::new().unwrap();
        let a = lab.add_host("a", Role::Node).unwrap();
        let c = lab.add_host("c", Role::Client).unwrap();
        c.run("ping", &["-c1", "-W2", &a.lan_ipv4.to_string()])
            .unwrap();
        c.run("ping", &["-6", "-c1", "-W2", &a.lan_ipv6.to_string()])
            .unwrap();
        a.run(
            "ping",
            &["-c1", "-W2", &lab.management_gateway().to_string()],
        )
        .unwrap();
        // The client is not on the management network.
        assert!(
            c.run(
                "ping",
                &["-c1", "-W1", &lab.management_gateway().to_string()]
            )
            .is_err()
        );
        // kube-proxy emulation: the client reaches a server on the node through a VIP once the
        // client knows where the VIP lives (here a static neighbour entry stands in for ARP).
        let vip: IpAddr = "198.51.100.200".parse().unwrap();
        a.forward_service(vip, 80, 8080).unwrap();
        let mut server = a
            .command("python3")
            .args(["-m", "http.server", "8080", "--bind", "0.0.0.0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.run(
            "ip",
            &[
                "neigh",
                "replace",
                "198.51.100.200",
                "lladdr",
                &a.lan_mac,
                "dev",
                "lan0",
            ],
        )
        .unwrap();
        let mut reached = false;
        for _ in 0..50 {
            if c.run("curl", &["-sf", "-m1", "http://198.51.100.200/"])
                .is_ok()
            {
                reached = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = server.kill();
        let _ = server.wait();
        assert!(reached, "VIP not forwarded to the node's server");
        let namespaces = [a.netns.clone(), c.netns.clone()];
        let root_link = root_link_name(lab.slot.index);
        drop(lab);
        let listed = String::from_utf8(ip(&["netns", "list"]).unwrap().stdout).unwrap();
        for ns in namespaces {
            assert!(!listed.contains(&ns), "{ns} left behind");
        }
        assert!(ip(&["link", "show", &root_link]).is_err());
    }
}
