//! FRRouting in the lab's network namespaces, as the routers FerroLB's BGP mode talks to:
//! zebra, bfdd and bgpd, each started in the foreground inside one namespace with its own
//! configuration file, pid file, log file, vty socket directory and zebra API socket, all in a
//! private working directory, so that instances in other namespaces (or an FRR this machine
//! runs itself) never share a socket or a file with it. No daemon listens on a TCP vty port.
//!
//! Every daemon started here is killed when its [`Frr`] is dropped, even when the test fails;
//! the working directory goes with it. [`Frr::vtysh`] talks to the daemons; for bfdd,
//! [`Frr::bfd_peers`] reads `show bfd peers json` and [`render_bfd`] writes its configuration.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::keepalived::{Workdir, send_signal};

/// Where Debian's frr package installs the daemons.
pub const DAEMON_DIR: &str = "/usr/lib/frr";
/// The shell that talks to the daemons, from PATH.
pub const VTYSH: &str = "vtysh";
/// The user the daemons drop to (they refuse to run as a root outside the vty group).
const FRR_USER: &str = "frr";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const VTYSH_TIMEOUT: Duration = Duration::from_secs(10);

/// An FRR daemon this module can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// The routing manager the others register with (interfaces, routes to the kernel).
    Zebra,
    Bfdd,
    Bgpd,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Self::Zebra => "zebra",
            Self::Bfdd => "bfdd",
            Self::Bgpd => "bgpd",
        }
    }

    pub fn program(self) -> PathBuf {
        Path::new(DAEMON_DIR).join(self.name())
    }
}

/// Why FRR with `daemons` cannot run here (to report the test skipped), or `None` when it can.
pub fn unavailable(daemons: &[Daemon]) -> Option<String> {
    for daemon in daemons {
        let program = daemon.program();
        if !program.is_file() {
            return Some(format!("no FRR {} at {}", daemon.name(), program.display()));
        }
    }
    let vtysh = Command::new(VTYSH)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if vtysh.is_err() {
        return Some(format!("no {VTYSH} on PATH"));
    }
    if user_ids(FRR_USER).is_err() {
        return Some(format!(
            "no `{FRR_USER}` user for the FRR daemons to run as"
        ));
    }
    None
}

/// One daemon to start: its configuration text and any further command-line arguments (for
/// bgpd, say, `-l <address>` to listen on the lab address only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    pub daemon: Daemon,
    pub config: String,
    pub args: Vec<String>,
}

impl DaemonSpec {
    pub fn new(daemon: Daemon, config: impl Into<String>) -> Self {
        Self {
            daemon,
            config: config.into(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
}

#[derive(Debug)]
struct Running {
    daemon: Daemon,
    log: PathBuf,
    /// `ip netns exec` executes the daemon in place: this is the daemon itself.
    child: Child,
}

/// FRR daemons running in one network namespace.
#[derive(Debug)]
pub struct Frr {
    netns: String,
    running: Vec<Running>,
    workdir: Workdir,
}

fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let output = Command::new("id").args([flag, user]).output()?;
        if !output.status.success() {
            bail!("no user {user}");
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// Runs `command` to completion within `timeout`, killing it past that.
fn output_within(command: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child.wait_with_output()?)
}

impl Frr {
    /// Starts `daemons` in `netns` in the order given (zebra, when wanted, first: the others
    /// connect to it), each once its predecessor's vty socket is up; returns when all are.
    pub fn start(netns: &str, daemons: &[DaemonSpec]) -> anyhow::Result<Self> {
        if let Some(position) = daemons.iter().position(|d| d.daemon == Daemon::Zebra)
            && position != 0
        {
            bail!("zebra must be started first");
        }
        let workdir = Workdir::new()?;
        // The daemons create their sockets and pid files after dropping to the frr user.
        let (uid, gid) = user_ids(FRR_USER)?;
        std::os::unix::fs::chown(workdir.path(), Some(uid), Some(gid))
            .context("handing the FRR working directory to the frr user")?;
        let mut frr = Self {
            netns: netns.to_owned(),
            running: Vec::new(),
            workdir,
        };
        for spec in daemons {
            frr.start_daemon(spec)?;
        }
        Ok(frr)
    }

    fn start_daemon(&mut self, spec: &DaemonSpec) -> anyhow::Result<()> {
        let name = spec.daemon.name();
        let dir = self.workdir.path();
        let config = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&config, &spec.config)?;
        let mut args = vec![
            "--vty_socket".to_owned(),
            path_arg(dir)?,
            "--pid_file".to_owned(),
            path_arg(&dir.join(format!("{name}.pid")))?,
            "--config_file".to_owned(),
            path_arg(&config)?,
            "--socket".to_owned(),
            path_arg(&self.zebra_socket())?,
            "--log".to_owned(),
            format!("file:{}", path_arg(&log)?),
            // No TCP vty: only the socket in the working directory.
            "--vty_port".to_owned(),
            "0".to_owned(),
        ];
        if spec.daemon == Daemon::Bfdd {
            args.push("--bfdctl".to_owned());
            args.push(path_arg(&dir.join("bfdd.sock"))?);
        }
        args.extend(spec.args.iter().cloned());
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.out")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(spec.daemon.program())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {name} in {}", self.netns))?;
        self.running.push(Running {
            daemon: spec.daemon,
            log,
            child,
        });
        self.wait_ready(spec.daemon)
    }

    /// Waits until the daemon's vty socket (and, for zebra, its API socket) exists.
    fn wait_ready(&mut self, daemon: Daemon) -> anyhow::Result<()> {
        let vty = self.workdir.path().join(format!("{}.vty", daemon.name()));
        let zserv = self.zebra_socket();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.running.iter_mut().find(|r| r.daemon == daemon) {
                Some(running) => running.child.try_wait()?,
                None => bail!("{} was not started", daemon.name()),
            };
            if let Some(status) = exited {
                bail!(
                    "{} in {} exited at start ({status}):\n{}",
                    daemon.name(),
                    self.netns,
                    self.output(daemon)
                );
            }
            if vty.exists() && (daemon != Daemon::Zebra || zserv.exists()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} in {} not ready within {START_TIMEOUT:?}:\n{}",
                    daemon.name(),
                    self.netns,
                    self.output(daemon)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn zebra_socket(&self) -> PathBuf {
        self.workdir.path().join("zserv.api")
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The working directory: configurations, logs, pid files and sockets.
    pub fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self, daemon: Daemon) -> Option<u32> {
        self.running
            .iter()
            .find(|r| r.daemon == daemon)
            .map(|r| r.child.id())
    }

    /// Sends `signal` (a name: `STOP`, `CONT`, `KILL`) to one daemon.
    pub fn signal(&self, daemon: Daemon, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(daemon)
            .with_context(|| format!("{} is not running", daemon.name()))?;
        send_signal(signal, &[pid])
    }

    /// Runs vtysh with one `-c` per command, against this instance's daemons only; fails with
    /// its output when a command fails.
    pub fn vtysh(&self, commands: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(VTYSH);
        command.arg("--vty_socket").arg(self.workdir.path());
        for line in commands {
            command.args(["-c", line]);
        }
        let output = output_within(&mut command, VTYSH_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "vtysh {commands:?} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    /// Runs one `show … json` command and parses what it prints.
    pub fn vtysh_json(&self, command: &str) -> anyhow::Result<serde_json::Value> {
        let text = self.vtysh(&[command])?;
        serde_json::from_str(&text).with_context(|| format!("`{command}` printed {text:?}"))
    }

    /// Enters `configure terminal` and runs `lines` there, in order.
    pub fn configure(&self, lines: &[&str]) -> anyhow::Result<()> {
        let mut commands = vec!["configure terminal"];
        commands.extend_from_slice(lines);
        self.vtysh(&commands).map(drop)
    }

    /// bfdd's sessions (`show bfd peers json`).
    pub fn bfd_peers(&self) -> anyhow::Result<Vec<BfdPeerState>> {
        let value = self.vtysh_json("show bfd peers json")?;
        Ok(serde_json::from_value(value)?)
    }

    /// bfdd's session with `peer`, if it has one.
    pub fn bfd_peer(&self, peer: IpAddr) -> anyhow::Result<Option<BfdPeerState>> {
        Ok(self.bfd_peers()?.into_iter().find(|p| p.peer == peer))
    }

    /// What the daemon logged so far (its log file, then what it printed).
    pub fn log(&self, daemon: Daemon) -> String {
        let file = self
            .running
            .iter()
            .find(|r| r.daemon == daemon)
            .and_then(|r| std::fs::read_to_string(&r.log).ok())
            .unwrap_or_default();
        format!("{file}{}", self.output(daemon))
    }

    fn output(&self, daemon: Daemon) -> String {
        let path = self.workdir.path().join(format!("{}.out", daemon.name()));
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        // The clients first, zebra last, so none logs its loss as an error worth reading.
        for running in self.running.iter_mut().rev() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
        if std::thread::panicking() {
            for running in &self.running {
                eprintln!(
                    "--- FRR {} in {} ---\n{}",
                    running.daemon.name(),
                    self.netns,
                    self.log(running.daemon)
                );
            }
        }
    }
}

/// One session as `show bfd peers json` reports it (intervals in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BfdPeerState {
    pub peer: IpAddr,
    pub local: Option<IpAddr>,
    /// `up`, `down`, `init` or `shutdown` (administratively down here).
    pub status: String,
    /// Why bfdd last changed the state (`ok`, `control detection time expired`, …).
    pub diagnostic: String,
    /// The diagnostic the peer (FerroLB) last sent.
    pub remote_diagnostic: String,
    /// bfdd's discriminator.
    pub id: u32,
    /// The peer's discriminator (0 until heard).
    pub remote_id: u32,
    pub receive_interval: u32,
    pub transmit_interval: u32,
    pub detect_multiplier: u32,
    pub remote_receive_interval: u32,
    pub remote_transmit_interval: u32,
    pub remote_detect_multiplier: u32,
}

/// One `peer` block of bfdd's configuration: a single-hop session from `local` to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdPeerConfig {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub transmit_interval: Duration,
    pub receive_interval: Duration,
    pub detect_multiplier: u8,
}

/// bfdd's intervals, in whole milliseconds (FRR 8 takes 10 ms to 60 s).
fn bfd_interval(what: &str, interval: Duration) -> anyhow::Result<u128> {
    let millis = interval.as_millis();
    if !interval.subsec_nanos().is_multiple_of(1_000_000) || !(10..=60_000).contains(&millis) {
        bail!("bfdd's {what} is 10 ms to 60 s in whole milliseconds, not {interval:?}");
    }
    Ok(millis)
}

/// bfdd's configuration for `peers`, one `peer` block each, nothing else.
pub fn render_bfd(peers: &[BfdPeerConfig]) -> anyhow::Result<String> {
    let mut text = String::new();
    writeln!(text, "! Rendered by ferrolb-tests (tests/src/frr.rs).")?;
    writeln!(text, "bfd")?;
    for peer in peers {
        if peer.peer.is_ipv4() != peer.local.is_ipv4() {
            bail!(
                "peer {} and local {} differ in family",
                peer.peer,
                peer.local
            );
        }
        if !(2..=255).contains(&peer.detect_multiplier) {
            bail!(
                "bfdd's detect-multiplier is 2 to 255, not {}",
                peer.detect_multiplier
            );
        }
        let transmit = bfd_interval("transmit-interval", peer.transmit_interval)?;
        let receive = bfd_interval("receive-interval", peer.receive_interval)?;
        writeln!(text, " peer {} local-address {}", peer.peer, peer.local)?;
        writeln!(text, "  transmit-interval {transmit}")?;
        writeln!(text, "  receive-interval {receive}")?;
        writeln!(text, "  detect-multiplier {}", peer.detect_multiplier)?;
        writeln!(text, " !")?;
    }
    writeln!(text, "!")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> BfdPeerConfig {
        BfdPeerConfig {
            peer: "198.51.100.2".parse().unwrap(),
            local: "198.51.100.1".parse().unwrap(),
            transmit_interval: Duration::from_millis(100),
            receive_interval: Duration::from_millis(300),
            detect_multiplier: 3,
        }
    }

    #[test]
    fn renders_bfd_peers() {
        let mut v6 = peer();
        v6.peer = "2001:db8:1::2".parse().unwrap();
        v6.local = "2001:db8:1::1".parse().unwrap();
        assert_eq!(
            render_bfd(&[peer(), v6]).unwrap(),
            "! Rendered by ferrolb-tests (tests/src/frr.rs).
bfd
 peer 198.51.100.2 local-address 198.51.100.1
  transmit-interval 100
  receive-interval 300
  detect-multiplier 3
 !
 peer 2001:db8:1::2 local-address 2001:db8:1::1
  transmit-interval 100
  receive-interval 300
  detect-multiplier 3
 !
!
"
        );
    }

    #[test]
    fn refuses_what_bfdd_would_not_take() {
        let mut bad = peer();
        bad.transmit_interval = Duration::from_micros(100_500);
        assert!(render_bfd(&[bad]).is_err());
        bad.transmit_interval = Duration::from_millis(5);
        assert!(render_bfd(&[bad]).is_err());
        let mut bad = peer();
        bad.detect_multiplier = 1;
        assert!(render_bfd(&[bad]).is_err());
        let mut bad = peer();
        bad.local = "2001:db8:1::1".parse().unwrap();
        assert!(render_bfd(&[bad]).is_err());
    }

    #[test]
    fn reads_bfdd_json() {
        let text = r#"[{"multihop":false,"peer":"198.51.100.2","local":"198.51.100.1",
            "vrf":"default","id":343119119,"remote-id":7,"passive-mode":false,"status":"up",
            "uptime":3,"diagnostic":"ok","remote-diagnostic":"ok","receive-interval":100,
            "transmit-interval":100,"echo-receive-interval":50,"echo-transmit-interval":0,
            "detect-multiplier":3,"remote-receive-interval":100,"remote-transmit-interval":100,
            "remote-echo-receive-interval":0,"remote-detect-multiplier":3,"rtt-min":0,
            "rtt-avg":0,"rtt-max":0}]"#;
        let peers: Vec<BfdPeerState> = serde_json::from_str(text).unwrap();
        assert_eq!(peers[0].status, "up");
        assert_eq!(peers[0].remote_id, 7);
        assert_eq!(peers[0].local, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(peers[0].remote_transmit_interval, 100);
    }
}
