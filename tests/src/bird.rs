//! BIRD 2 as the BGP router of the end-to-end tests and benchmarks: renders a router
//! configuration (one BGP protocol per node, optional TCP MD5 and BFD, routes merged into
//! multipath kernel routes so the router's FIB shows the ECMP next hops), starts `bird` inside a
//! network namespace with its own control socket and pid file, and reads its state back through
//! `birdc`: protocol states, and the routes with their BGP attributes.
//!
//! The process is stopped when the [`Bird`] is dropped, even when the test fails.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::keepalived::Workdir;

pub const PROGRAM: &str = "bird";
pub const CLIENT: &str = "birdc";

/// `bird --version` (e.g. `BIRD version 2.0.12`), or `None` when BIRD cannot run here.
pub fn version() -> Option<String> {
    let output = Command::new(PROGRAM)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    // BIRD prints its version on stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    text.lines()
        .find(|l| l.starts_with("BIRD version"))
        .map(|l| l.trim().to_owned())
}

/// One node the router peers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// The protocol's name in BIRD (letters, digits, `_`).
    pub name: String,
    pub address: IpAddr,
    pub asn: u32,
    pub password: Option<String>,
    pub bfd: bool,
    /// The router's address for this session, when not its `local_v4`/`local_v6` (a second
    /// session from the same node, to a second router address).
    pub local: Option<IpAddr>,
}

/// The router's side of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub router_id: std::net::Ipv4Addr,
    pub asn: u32,
    /// The router's own address towards the nodes, per family.
    pub local_v4: Option<IpAddr>,
    pub local_v6: Option<IpAddr>,
    pub neighbors: Vec<Neighbor>,
    /// Hold time offered to the nodes, in seconds (BIRD's default is 240).
    pub hold_time: u16,
    /// BFD intervals in ms and multiplier, when any neighbor has BFD.
    pub bfd: Option<(u32, u32, u8)>,
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("{name:?} is not a BIRD protocol name");
    }
    Ok(())
}

/// The BIRD configuration for `router`.
pub fn render(router: &RouterConfig) -> anyhow::Result<String> {
    let mut text = String::new();
    writeln!(text, "router id {};", router.router_id)?;
    writeln!(text, "log stderr all;")?;
    writeln!(text, "protocol device {{ scan time 1; }}")?;
    // Equal routes from several nodes become one multipath kernel route: the FIB forwards by
    // ECMP, and `ip route` shows every next hop.
    for (name, family) in [("kernel4", "ipv4"), ("kernel6", "ipv6")] {
        writeln!(
            text,
            "protocol kernel {name} {{ {family} {{ export all; }}; merge paths on; }}"
        )?;
    }
    if let Some((rx, tx, multiplier)) = router.bfd {
        writeln!(
            text,
            "protocol bfd {{ interface \"*\" {{ min rx interval {rx} ms; min tx interval {tx} ms; multiplier {multiplier}; }}; }}"
        )?;
    }
    for neighbor in &router.neighbors {
        check_name(&neighbor.name)?;
        let (local, family) = if neighbor.address.is_ipv4() {
            (router.local_v4, "ipv4")
        } else {
            (router.local_v6, "ipv6")
        };
        let local = neighbor
            .local
            .or(local)
            .with_context(|| format!("no local {family} address for neighbor {}", neighbor.name))?;
        if neighbor
            .local
            .is_some_and(|l| l.is_ipv4() != neighbor.address.is_ipv4())
        {
            bail!(
                "neighbor {}: local address of another family",
                neighbor.name
            );
        }
        writeln!(text, "protocol bgp {} {{", neighbor.name)?;
        writeln!(text, "  local {local} as {};", router.asn)?;
        writeln!(text, "  neighbor {} as {};", neighbor.address, neighbor.asn)?;
        writeln!(text, "  hold time {};", router.hold_time)?;
        // Connect attempts come from the nodes; retry quickly when one is refused.
        writeln!(text, "  connect retry time 1; error wait time 1, 5;")?;
        if let Some(password) = &neighbor.password {
            if password.contains('"') || password.contains('\\') {
                bail!("passwords with quotes or backslashes are not rendered");
            }
            writeln!(text, "  password \"{password}\";")?;
        }
        if neighbor.bfd {
            writeln!(text, "  bfd on;")?;
        }
        if neighbor.asn == router.asn {
            // iBGP is multihop (next hops resolved through an IGP table) unless told otherwise:
            // the nodes are on the router's LAN.
            writeln!(text, "  direct;")?;
        }
        writeln!(text, "  {family} {{ import all; export none; }};")?;
        writeln!(text, "}}")?;
    }
    Ok(text)
}

/// A BGP protocol's state line of `show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolState {
    pub name: String,
    /// `up`, `start`, `down`.
    pub state: String,
    /// `Established`, `Active`, `Connect`, ... and any error after it.
    pub info: String,
}

/// The BGP protocols of `show protocols` output.
pub fn parse_protocols(text: &str) -> Vec<ProtocolState> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 || fields[1] != "BGP" {
                return None;
            }
            Some(ProtocolState {
                name: fields[0].to_owned(),
                state: fields[3].to_owned(),
                info: fields
                    .get(5..)
                    .map(|rest| rest.join(" "))
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// One route of `show route all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    /// The protocol (node) it was learnt from.
    pub protocol: String,
    pub next_hops: Vec<IpAddr>,
    pub as_path: String,
    pub local_pref: Option<u32>,
    /// As BIRD prints them: `(64512,100)`.
    pub communities: Vec<String>,
    /// As BIRD prints them: `(64512, 1, 2)`.
    pub large_communities: Vec<String>,
}

/// Splits BIRD's `(a,b) (c,d)` attribute text into its parenthesised items.
fn parenthesised(text: &str) -> Vec<String> {
    text.split(')')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("{})", s.trim_start()))
        .collect()
}

/// The routes of `show route all` output, every table. Each path of a prefix is its own route
/// (the best one first).
pub fn parse_routes(text: &str) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        if line.starts_with("Table") || line.trim().is_empty() || line.starts_with("BIRD") {
            continue;
        }
        let trimmed = line.trim();
        let route_line = !line.starts_with(char::is_whitespace) || trimmed.starts_with("unicast ");
        if route_line {
            // "<prefix>  unicast [<protocol> <time>] * (100) [AS64512i]", or a further path of
            // the same prefix: "                     unicast [<protocol> ...".
            let mut fields = trimmed.split_whitespace();
            let first = fields.next().unwrap_or_default();
            if first != "unicast" {
                prefix = first.to_owned();
            }
            let protocol = trimmed
                .split_once('[')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            routes.push(Route {
                prefix: prefix.clone(),
                protocol,
                ..Default::default()
            });
            continue;
        }
        let Some(route) = routes.last_mut() else {
            continue;
        };
        if let Some(rest) = trimmed.strip_prefix("via ") {
            if let Some(hop) = rest.split_whitespace().next().and_then(|h| h.parse().ok()) {
                route.next_hops.push(hop);
            }
        } else if let Some(rest) = trimmed.strip_prefix("BGP.as_path:") {
            route.as_path = rest.trim().to_owned();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.local_pref:") {
            route.local_pref = rest.trim().parse().ok();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.large_community:") {
            route.large_communities = parenthesised(rest);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.community:") {
            route.communities = parenthesised(rest);
        }
    }
    routes
}

/// The `Neighbor ID:` of `show protocols all <name>` output.
pub fn parse_neighbor_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Neighbor ID:"))
        .map(|id| id.trim().to_owned())
}

/// The (address, state) pairs of `show bfd sessions` output.
pub fn parse_bfd_sessions(text: &str) -> Vec<(IpAddr, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?.parse().ok()?;
            let _interface = fields.next()?;
            Some((address, fields.next()?.to_owned()))
        })
        .collect()
}

/// BIRD running in one network namespace, in the foreground, with its own socket and pid file.
#[derive(Debug)]
pub struct Bird {
    netns: String,
    socket: PathBuf,
    log: PathBuf,
    child: Child,
    _workdir: Workdir,
}

impl Bird {
    /// Checks `config` (`bird -p`) and starts BIRD with it in `netns`; returns once its control
    /// socket answers.
    pub fn start(netns: &str, config: &str) -> anyhow::Result<Self> {
        let workdir = Workdir::new()?;
        let dir = workdir.path();
        let config_path = dir.join("bird.conf");
        let socket = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        std::fs::write(&config_path, config)?;
        let text = |p: &Path| p.to_str().map(str::to_owned).context("non-UTF-8 path");
        let check = Command::new(PROGRAM)
            .args(["-p", "-c", &text(&config_path)?])
            .stdin(Stdio::null())
            .output()
            .context("running bird -p")?;
        if !check.status.success() {
            bail!(
                "BIRD refused its configuration: {}\n{config}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let child = Command::new("ip")
            .args(["netns", "exec", netns, PROGRAM, "-f", "-c"])
            .arg(&config_path)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting bird")?;
        let mut bird = Self {
            netns: netns.to_owned(),
            socket,
            log,
            child,
            _workdir: workdir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if bird.birdc("show status").is_ok() {
                return Ok(bird);
            }
            if let Some(status) = bird.child.try_wait()? {
                bail!("bird exited with {status}:\n{}", bird.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "bird's control socket did not answer within 10 s:\n{}",
                    bird.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// One birdc command's output.
    pub fn birdc(&self, command: &str) -> anyhow::Result<String> {
        let output = Command::new(CLIENT)
            .arg("-s")
            .arg(&self.socket)
            .args(command.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .context("running birdc")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        // `show route <prefix>` of a prefix BIRD does not hold fails with this: an empty answer.
        if !output.status.success() && !stdout.contains("Network not found") {
            bail!(
                "birdc {command}: {}{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    pub fn protocols(&self) -> anyhow::Result<Vec<ProtocolState>> {
        Ok(parse_protocols(&self.birdc("show protocols")?))
    }

    pub fn routes(&self) -> anyhow::Result<Vec<Route>> {
        Ok(parse_routes(&self.birdc("show route all")?))
    }

    /// The paths BIRD holds for `prefix` (e.g. `198.51.100.10/32`), that prefix exactly.
    pub fn routes_for(&self, prefix: &str) -> anyhow::Result<Vec<Route>> {
        // `show route <prefix>` asks for that network only: quick enough to poll every 20 ms.
        Ok(
            parse_routes(&self.birdc(&format!("show route {prefix} all"))?)
                .into_iter()
                .filter(|r| r.prefix == prefix)
                .collect(),
        )
    }

    /// `show protocols all <name>`: the protocol's details (neighbor ID, last error, ...).
    pub fn protocol_details(&self, name: &str) -> anyhow::Result<String> {
        check_name(name)?;
        self.birdc(&format!("show protocols all {name}"))
    }

    /// The BGP identifier the neighbor of protocol `name` sent, once it has.
    pub fn neighbor_id(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(parse_neighbor_id(&self.protocol_details(name)?))
    }

    /// BFD sessions of `show bfd sessions`: (neighbor address, state).
    pub fn bfd_sessions(&self) -> anyhow::Result<Vec<(IpAddr, String)>> {
        Ok(parse_bfd_sessions(&self.birdc("show bfd sessions")?))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- bird in {} ---\n{}", self.netns, self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PROTOCOLS: &str = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     13:37:28.258  
kernel4    Kernel     master4    up     13:37:28.258  
node1      BGP        ---        up     13:37:32.019  Established   
node2      BGP        ---        start  13:37:32.107  Active        Socket: Connection refused
";

    const ROUTES: &str = "BIRD 2.0.12 ready.
Table master4:
198.51.100.10/32     unicast [node1 13:37:32.107] * (100) [AS64512i]
\tvia 198.51.100.11 on fl-r0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64512
\tBGP.next_hop: 198.51.100.11
\tBGP.local_pref: 100
\tBGP.community: (64512,100) (65535,65281)
\tBGP.large_community: (64512, 1, 2)
                     unicast [node2 13:37:33.001] (100) [AS64512i]
\tvia 198.51.100.12 on fl-r0
\tType: BGP univ
\tBGP.as_path: 64512

Table master6:
2001:db8:1::10/128   unicast [node1v6 13:37:34.277] * (100) [AS64512i]
\tvia 2001:db8:1::11 on fl-r0
\tType: BGP univ
\tBGP.next_hop: 2001:db8:1::11 fe80::4091:73ff:fe6f:38e9
";

    #[test]
    fn protocol_states_are_read() {
        let states = parse_protocols(PROTOCOLS);
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].info, "Established");
        assert_eq!(states[1].state, "start");
        assert_eq!(states[1].info, "Active Socket: Connection refused");
    }

    #[test]
    fn routes_carry_every_path_and_attribute() {
        let routes = parse_routes(ROUTES);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].prefix, "198.51.100.10/32");
        assert_eq!(routes[0].protocol, "node1");
        assert_eq!(routes[0].local_pref, Some(100));
        assert_eq!(routes[0].communities, ["(64512,100)", "(65535,65281)"]);
        assert_eq!(routes[0].large_communities, ["(64512, 1, 2)"]);
        assert_eq!(routes[1].prefix, "198.51.100.10/32");
        assert_eq!(routes[1].protocol, "node2");
        assert_eq!(
            routes[1].next_hops,
            ["198.51.100.12".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(routes[2].prefix, "2001:db8:1::10/128");
        assert_eq!(
            routes[2].next_hops,
            ["2001:db8:1::11".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn neighbor_ids_and_bfd_sessions_are_read() {
        let details = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
node_a4    BGP        ---        up     10:00:01.000  Established
  BGP state:          Established
    Neighbor address: 198.51.100.10
    Neighbor AS:      64513
    Local AS:         64512
    Neighbor ID:      198.51.100.10
";
        assert_eq!(parse_neighbor_id(details).as_deref(), Some("198.51.100.10"));
        let bfd = "BIRD 2.0.12 ready.
bfd1:
IP address                Interface  State      Since         Interval  Timeout
198.51.100.10             lan0       Up         10:00:02.000    0.100    0.300
2001:db8:1::10            lan0       Down       10:00:01.000    1.000    0.000
";
        assert_eq!(
            parse_bfd_sessions(bfd),
            [
                ("198.51.100.10".parse().unwrap(), "Up".to_owned()),
                ("2001:db8:1::10".parse().unwrap(), "Down".to_owned())
            ]
        );
    }

    #[test]
    fn configurations_name_every_neighbor_with_its_options() {
        let text = render(&RouterConfig {
            router_id: "198.51.100.1".parse().unwrap(),
            asn: 64513,
            local_v4: Some("198.51.100.1".parse().unwrap()),
            local_v6: None,
            neighbors: vec![Neighbor {
                name: "node1".into(),
                address: "198.51.100.11".parse().unwrap(),
                asn: 64512,
                password: Some("s3cret".into()),
                bfd: true,
                local: None,
            }],
            hold_time: 9,
            bfd: Some((100, 100, 3)),
        })
        .unwrap();
        assert!(text.contains("neighbor 198.51.100.11 as 64512;"));
        assert!(text.contains("password \"s3cret\";"));
        assert!(text.contains("bfd on;"));
        assert!(text.contains("min rx interval 100 ms"));
        assert!(!text.contains("direct;"), "eBGP is direct already");
        let ibgp = render(&RouterConfig {
            router_id: "198.51.100.1".parse().unwrap(),
            asn: 64513,
            local_v4: Some("198.51.100.1".parse().unwrap()),
            local_v6: None,
            neighbors: vec![Neighbor {
                name: "ibgp".into(),
                address: "198.51.100.11".parse().unwrap(),
                asn: 64513,
                password: None,
                bfd: false,
                local: Some("198.51.100.2".parse().unwrap()),
            }],
            hold_time: 9,
            bfd: None,
        })
        .unwrap();
        assert!(ibgp.contains("local 198.51.100.2 as 64513;"), "{ibgp}");
        assert!(ibgp.contains("direct;"), "{ibgp}");
        let v6 = RouterConfig {
            router_id: "198.51.100.1".parse().unwrap(),
            asn: 64513,
            local_v4: None,
            local_v6: None,
            neighbors: vec![Neighbor {
                name: "n".into(),
                address: "2001:db8:1::11".parse().unwrap(),
                asn: 1,
                password: None,
                bfd: false,
                local: None,
            }],
            hold_time: 9,
            bfd: None,
        };
        assert!(
            render(&v6).is_err(),
            "a v6 neighbor needs a local v6 address"
        );
    }

    #[test]
    fn rendered_configurations_parse_in_bird() {
        if version().is_none() {
            crate::harness::skip(
                "rendered_configurations_parse_in_bird",
                "bird is not installed (.ci/run installs bird2)",
            )
            .unwrap();
            return;
        }
        let config = render(&RouterConfig {
            router_id: "198.51.100.1".parse().unwrap(),
            asn: 64513,
            local_v4: Some("198.51.100.1".parse().unwrap()),
            local_v6: Some("2001:db8:1::1".parse().unwrap()),
            neighbors: vec![
                Neighbor {
                    name: "node1".into(),
                    address: "198.51.100.11".parse().unwrap(),
                    asn: 64512,
                    password: Some("s3cret".into()),
                    bfd: true,
                    local: None,
                },
                Neighbor {
                    name: "node1v6".into(),
                    address: "2001:db8:1::11".parse().unwrap(),
                    asn: 64512,
                    password: None,
                    bfd: false,
                    local: None,
                },
                Neighbor {
                    name: "node1ibgp".into(),
                    address: "198.51.100.11".parse().unwrap(),
                    asn: 64513,
                    password: None,
                    bfd: false,
                    local: Some("198.51.100.2".parse().unwrap()),
                },
            ],
            hold_time: 9,
            bfd: Some((100, 100, 3)),
        })
        .unwrap();
        let dir = Workdir::new().unwrap();
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, &config).unwrap();
        let output = Command::new(PROGRAM)
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}\n{config}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
