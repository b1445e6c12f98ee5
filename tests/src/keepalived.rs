//! keepalived (VRRP) in the lab's network namespaces, as the baseline FerroLB's failover is
//! compared with (`tests/benches/failover.rs`): renders a one-instance VRRP configuration,
//! starts keepalived inside a namespace, finds its processes (the parent and its VRRP child) and
//! stops them.
//!
//! Every process started here is stopped when its [`Keepalived`] is dropped, even when the test
//! fails; the files live in a [`Workdir`] that is removed on drop.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The program run, from PATH.
pub const PROGRAM: &str = "keepalived";

/// The first line of `keepalived --version` (e.g. `Keepalived v2.2.7 (01/16,2022)`), or `None`
/// when keepalived cannot be run here.
pub fn version() -> Option<String> {
    let output = Command::new(PROGRAM)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    // keepalived prints its version on stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    text.lines()
        .find(|l| l.starts_with("Keepalived"))
        .map(|l| l.trim().to_owned())
}

/// The VRRP protocol version an instance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpVersion {
    /// RFC 3768: IPv4 only, advertisement interval in whole seconds (keepalived's default).
    V2,
    /// RFC 5798: advertisement interval in centiseconds.
    V3,
}

/// One VRRP instance and the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstance {
    /// The instance's name in the configuration (`vrrp_instance <name>`).
    pub name: String,
    /// `router_id` in `global_defs`: names the node in keepalived's logs.
    pub router_id: String,
    /// The interface the advertisements go out on and the VIPs are added to.
    pub interface: String,
    /// The VRID, the same on every node of the group (1 to 255).
    pub virtual_router_id: u8,
    /// 1 to 254; the highest live one is master (255 is reserved for the address owner).
    pub priority: u8,
    pub version: VrrpVersion,
    /// Between advertisements (`advert_int`).
    pub advert_interval: Duration,
    /// The virtual addresses, each with its prefix length.
    pub virtual_ips: Vec<(IpAddr, u8)>,
}

/// `advert_int` as keepalived reads it: seconds, with a fraction only for VRRPv3 (centiseconds).
fn advert_int(version: VrrpVersion, interval: Duration) -> anyhow::Result<String> {
    let millis = interval.as_millis();
    match version {
        VrrpVersion::V2 => {
            if !millis.is_multiple_of(1000) || !(1..=255).contains(&(millis / 1000)) {
                bail!("VRRPv2 advertises every 1 to 255 whole seconds, not {interval:?}");
            }
            Ok((millis / 1000).to_string())
        }
        VrrpVersion::V3 => {
            if !interval.subsec_nanos().is_multiple_of(10_000_000)
                || !(10..=40_950).contains(&millis)
            {
                bail!(
                    "VRRPv3 advertises every 10 ms to 40.95 s in whole centiseconds, not {interval:?}"
                );
            }
            let centis = millis / 10;
            let (whole, fraction) = (centis / 100, centis % 100);
            Ok(match fraction {
                0 => whole.to_string(),
                f if f.is_multiple_of(10) => format!("{whole}.{}", f / 10),
                f => format!("{whole}.{f:02}"),
            })
        }
    }
}

/// A word keepalived's parser takes as one token, with nothing in it that could open a block,
/// a comment or a second statement.
fn check_word(what: &str, word: &str) -> anyhow::Result<()> {
    if word.is_empty()
        || !word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        bail!("{what} {word:?} must be a non-empty word of letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// The keepalived configuration for `instance` alone: one `vrrp_instance`, starting as BACKUP
/// (the highest priority takes over once the master-down timer runs out, and preempts a lower
/// master when it comes back), no authentication, no scripts.
pub fn render(instance: &VrrpInstance) -> anyhow::Result<String> {
    check_word("instance name", &instance.name)?;
    check_word("router_id", &instance.router_id)?;
    check_word("interface", &instance.interface)?;
    if instance.virtual_router_id == 0 {
        bail!("virtual_router_id must be 1 to 255");
    }
    if !(1..=254).contains(&instance.priority) {
        bail!(
            "priority must be 1 to 254, not {} (255 is the address owner's)",
            instance.priority
        );
    }
    if instance.virtual_ips.is_empty() {
        bail!("a VRRP instance needs at least one virtual IP");
    }
    let ipv6 = instance.virtual_ips.iter().any(|(ip, _)| ip.is_ipv6());
    if ipv6 && instance.virtual_ips.iter().any(|(ip, _)| ip.is_ipv4()) {
        bail!("one VRRP instance carries one address family");
    }
    if ipv6 && instance.version == VrrpVersion::V2 {
        bail!("VRRPv2 is IPv4 only");
    }
    for (ip, prefix) in &instance.virtual_ips {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if *prefix > max {
            bail!("{ip}/{prefix}: prefix longer than {max}");
        }
    }
    let advert = advert_int(instance.version, instance.advert_interval)?;
    let mut text = String::new();
    writeln!(
        text,
        "# Rendered by ferrolb-tests (tests/src/keepalived.rs)."
    )?;
    writeln!(text, "global_defs {{")?;
    writeln!(text, "    router_id {}", instance.router_id)?;
    writeln!(text, "}}")?;
    writeln!(text)?;
    writeln!(text, "vrrp_instance {} {{", instance.name)?;
    writeln!(text, "    state BACKUP")?;
    writeln!(text, "    interface {}", instance.interface)?;
    writeln!(text, "    virtual_router_id {}", instance.virtual_router_id)?;
    writeln!(text, "    priority {}", instance.priority)?;
    let version = match instance.version {
        VrrpVersion::V2 => 2,
        VrrpVersion::V3 => 3,
    };
    writeln!(text, "    version {version}")?;
    writeln!(text, "    advert_int {advert}")?;
    writeln!(text, "    virtual_ipaddress {{")?;
    for (ip, prefix) in &instance.virtual_ips {
        writeln!(text, "        {ip}/{prefix} dev {}", instance.interface)?;
    }
    writeln!(text, "    }}")?;
    writeln!(text, "}}")?;
    Ok(text)
}

/// A private temporary directory for configurations, pid files and logs; removed on drop.
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
}

static WORKDIR_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Workdir {
    pub fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "ferrolb-lab-{}-{}",
            std::process::id(),
            WORKDIR_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Sends `signal` (a name: `TERM`, `KILL`) to every pid in one kill(1) call, so that several
/// processes get it within microseconds of each other.
pub fn send_signal(signal: &str, pids: &[u32]) -> anyhow::Result<()> {
    if pids.is_empty() {
        bail!("no process to send SIG{signal} to");
    }
    let mut command = Command::new("kill");
    command.arg(format!("-{signal}"));
    command.args(pids.iter().map(u32::to_string));
    let status = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kill -{signal} {pids:?} failed: {status}");
    }
    Ok(())
}

/// keepalived running in one network namespace: the VRRP subsystem only, in the foreground
/// (`--dont-fork`, so the process started is keepalived's parent), logging to a file, with its
/// own configuration and pid files so that instances in other namespaces do not clash.
#[derive(Debug)]
pub struct Keepalived {
    netns: String,
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Keepalived {
    /// Writes `config` to `<dir>/<name>.conf`, checks it inside the namespace (`--config-test`)
    /// and starts keepalived there; returns once the parent and its VRRP child both run.
    pub fn start(netns: &str, dir: &Path, name: &str, config: &str) -> anyhow::Result<Self> {
        check_word("instance file name", name)?;
        let config_path = dir.join(format!("{name}.conf"));
        let pid = dir.join(format!("{name}.pid"));
        let vrrp_pid = dir.join(format!("{name}-vrrp.pid"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&config_path, config)?;
        // keepalived refuses to start while a pid file names a live keepalived.
        let _ = std::fs::remove_file(&pid);
        let _ = std::fs::remove_file(&vrrp_pid);
        let path = |p: &Path| p.to_str().map(str::to_owned).context("non-UTF-8 path");
        let (config_arg, pid_arg, vrrp_pid_arg) =
            (path(&config_path)?, path(&pid)?, path(&vrrp_pid)?);
        let test = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                PROGRAM,
                "--config-test",
                "--use-file",
            ])
            .arg(&config_arg)
            .stdin(Stdio::null())
            .output()
            .context("running keepalived --config-test")?;
        if !test.status.success() {
            bail!(
                "keepalived rejects {}: {}{}",
                config_path.display(),
                String::from_utf8_lossy(&test.stderr).trim(),
                String::from_utf8_lossy(&test.stdout).trim()
            );
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, PROGRAM])
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
                "--use-file",
                &config_arg,
                "--pid",
                &pid_arg,
                "--vrrp_pid",
                &vrrp_pid_arg,
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting keepalived in {netns}"))?;
        let mut keepalived = Self {
            netns: netns.to_owned(),
            name: name.to_owned(),
            config: config_path,
            log,
            child,
        };
        keepalived.wait_running(Duration::from_secs(10))?;
        Ok(keepalived)
    }

    /// Waits until the parent and the VRRP child both run.
    fn wait_running(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "keepalived {} in {} exited at start ({status}):\n{}",
                    self.name,
                    self.netns,
                    self.log()
                );
            }
            if self.pids().len() >= 2 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "keepalived {} in {} did not start its VRRP child within {timeout:?}:\n{}",
                    self.name,
                    self.netns,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The parent's pid (the process started: `ip netns exec` executes keepalived in place).
    pub fn parent_pid(&self) -> u32 {
        self.child.id()
    }

    /// Every live keepalived process of this instance: the processes in the namespace whose
    /// command is keepalived with this instance's configuration file (the parent and its VRRP
    /// child; zombies are not in any namespace any more and are not listed).
    pub fn pids(&self) -> Vec<u32> {
        let Ok(output) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        let config = self.config.to_string_lossy();
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .filter(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                comm.trim() == PROGRAM
                    && cmdline
                        .split(|b| *b == 0)
                        .any(|arg| arg == config.as_bytes())
            })
            .collect()
    }

    /// Sends `signal` to the parent only (on TERM it stops the VRRP child, which sends a
    /// priority-0 advertisement and removes the VIPs).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        send_signal(signal, &[self.parent_pid()])
    }

    /// The pids to SIGKILL to kill this instance without a goodbye: the VRRP child first, the
    /// parent last. keepalived's children ask for SIGTERM when their parent dies
    /// (PR_SET_PDEATHSIG), and a VRRP child that got that SIGTERM before its own SIGKILL could
    /// still send its priority-0 advertisement.
    pub fn kill_order(&self) -> Vec<u32> {
        let parent = self.parent_pid();
        let mut pids: Vec<u32> = self.pids().into_iter().filter(|p| *p != parent).collect();
        if self.pids().contains(&parent) {
            pids.push(parent);
        }
        pids
    }

    /// SIGKILLs the VRRP child and the parent in one kill(1) call (see [`Self::kill_order`]);
    /// returns the pids killed. Neither can clean up: the VIPs stay on the interface, and its
    /// kernel keeps answering ARP for them.
    pub fn kill_all(&self) -> anyhow::Result<Vec<u32>> {
        let pids = self.kill_order();
        send_signal("KILL", &pids)?;
        Ok(pids)
    }

    /// How many priority-0 advertisements (a master's goodbye) this instance logged receiving.
    pub fn goodbyes_heard(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("received priority 0"))
            .count()
    }

    /// Waits until every process of this instance is gone (the parent reaped); returns whether
    /// they went within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let parent_gone = self.child.try_wait()?.is_some();
            if parent_gone && self.pids().is_empty() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What keepalived logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let pids = self.pids();
        if !pids.is_empty() {
            let _ = send_signal("KILL", &pids);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- keepalived {} in {} ---\n{}",
                self.name,
                self.netns,
                self.log()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(version: VrrpVersion, advert_interval: Duration) -> VrrpInstance {
        VrrpInstance {
            name: "VI_FLB".to_owned(),
            router_id: "node-a".to_owned(),
            interface: "lan0".to_owned(),
            virtual_router_id: 51,
            priority: 150,
            version,
            advert_interval,
            virtual_ips: vec![("198.51.100.200".parse().unwrap(), 32)],
        }
    }

    #[test]
    fn renders_one_vrrp_instance() {
        let text = render(&instance(VrrpVersion::V2, Duration::from_secs(1))).unwrap();
        assert_eq!(
            text,
            "# Rendered by ferrolb-tests (tests/src/keepalived.rs).
global_defs {
    router_id node-a
}

vrrp_instance VI_FLB {
    state BACKUP
    interface lan0
    virtual_router_id 51
    priority 150
    version 2
    advert_int 1
    virtual_ipaddress {
        198.51.100.200/32 dev lan0
    }
}
"
        );
    }

    #[test]
    fn vrrpv3_advertises_in_centiseconds() {
        let advert = |ms| {
            render(&instance(VrrpVersion::V3, Duration::from_millis(ms)))
                .unwrap()
                .lines()
                .find(|l| l.trim_start().starts_with("advert_int"))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(advert(100), "advert_int 0.1");
        assert_eq!(advert(10), "advert_int 0.01");
        assert_eq!(advert(250), "advert_int 0.25");
        assert_eq!(advert(1000), "advert_int 1");
        assert_eq!(advert(1500), "advert_int 1.5");
        let text = render(&instance(VrrpVersion::V3, Duration::from_millis(100))).unwrap();
        assert!(text.contains("\n    version 3\n"), "{text}");
        let mut v6 = instance(VrrpVersion::V3, Duration::from_millis(100));
        v6.virtual_ips = vec![("2001:db8:1::200".parse().unwrap(), 128)];
        assert!(
            render(&v6)
                .unwrap()
                .contains("        2001:db8:1::200/128 dev lan0\n")
        );
    }

    #[test]
    fn refuses_what_keepalived_would_misread() {
        // VRRPv2 has whole seconds only; keepalived would round 100 ms to 1 s.
        assert!(render(&instance(VrrpVersion::V2, Duration::from_millis(100))).is_err());
        assert!(render(&instance(VrrpVersion::V3, Duration::from_millis(5))).is_err());
        assert!(render(&instance(VrrpVersion::V3, Duration::from_millis(105))).is_err());
        assert!(render(&instance(VrrpVersion::V3, Duration::from_secs(41))).is_err());
        let mut bad = instance(VrrpVersion::V2, Duration::from_secs(1));
        bad.priority = 255;
        assert!(render(&bad).is_err());
        bad.priority = 0;
        assert!(render(&bad).is_err());
        let mut bad = instance(VrrpVersion::V2, Duration::from_secs(1));
        bad.interface = "lan0 }\nglobal_defs {".to_owned();
        assert!(render(&bad).is_err());
        let mut bad = instance(VrrpVersion::V2, Duration::from_secs(1));
        bad.virtual_ips = vec![("2001:db8:1::200".parse().unwrap(), 128)];
        assert!(render(&bad).is_err(), "VRRPv2 carries IPv4 only");
        bad.virtual_ips.clear();
        assert!(render(&bad).is_err());
        let mut bad = instance(VrrpVersion::V3, Duration::from_secs(1));
        bad.virtual_ips
            .push(("2001:db8:1::200".parse().unwrap(), 128));
        assert!(render(&bad).is_err(), "one family per instance");
        let mut bad = instance(VrrpVersion::V2, Duration::from_secs(1));
        bad.virtual_ips = vec![("198.51.100.200".parse().unwrap(), 33)];
        assert!(render(&bad).is_err());
    }
}
