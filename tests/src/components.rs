//! FerroLB's own binaries as real processes in end-to-end tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The workspace's target directory, found from the running test binary
/// (`target/<profile>/deps/<test>`).
fn target_profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test binary has no directory")?;
    let profile = if deps.ends_with("deps") {
        deps.parent().context("no profile directory")?
    } else {
        deps
    };
    Ok(profile.to_path_buf())
}

/// The path of a FerroLB binary (`ferrolb-controller`, `ferrolb-speaker`), built on first use
/// so that `cargo test -p ferrolb-tests` works without a workspace build.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    // Each binary is built once per test process, and only when asked for: a test of one
    // component does not wait for the other's build.
    static BUILT: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let profile_dir = target_profile_dir()?;
    let built = {
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        built
            .entry(name.to_owned())
            .or_insert_with(|| {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
                let mut command = Command::new(cargo);
                command.args(["build", "--bin", name]);
                // Benchmarks run from target/release: build the binaries they will find there.
                if profile_dir.ends_with("release") {
                    command.arg("--release");
                }
                let status = command
                    .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|e| e.to_string())?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("cargo build of {name} failed: {status}"))
                }
            })
            .clone()
    };
    if let Err(message) = built {
        bail!("{message}");
    }
    let path = profile_dir.join(name);
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// A running component. Killed when dropped; its output is kept in a log file so a failing test
/// can show it.
pub struct Component {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Component {
    /// Starts `command` with its stdout and stderr going to a log file.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!(
            "ferrolb-{name}-{}-{}.log",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(false)
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output());
        }
        // FERROLB_TEST_KEEP_LOGS keeps every component's log, to study a run that passed.
        if std::env::var_os("FERROLB_TEST_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it first, which
/// the component then reports as a bind error).
pub fn free_local_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `ferrolb-controller` as a process against the API server of `kubeconfig`, serving /readyz and
/// /metrics on a free local port.
pub struct ControllerProcess {
    pub component: Component,
    pub metrics_address: std::net::SocketAddr,
}

impl ControllerProcess {
    /// Starts the controller; `lb_class` restricts it to Services of that class (use a class of
    /// the test's own on a real cluster so it cannot touch anything else).
    pub fn spawn(kubeconfig: &Path, lb_class: Option<&str>) -> anyhow::Result<Self> {
        Self::spawn_with(kubeconfig, lb_class, &[], &[])
    }

    /// Like [`Self::spawn`], with extra flags and environment variables (e.g. `--leader-elect`
    /// and `POD_NAME`, which names the replica in the Lease and in events).
    pub fn spawn_with(
        kubeconfig: &Path,
        lb_class: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_program(
            &binary("ferrolb-controller")?,
            kubeconfig,
            lb_class,
            args,
            env,
        )
    }

    /// Like [`Self::spawn_with`], running the controller binary at `program`.
    pub fn spawn_program(
        program: &Path,
        kubeconfig: &Path,
        lb_class: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_local_port()?;
        let metrics_address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(program);
        command
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env_remove("FERROLB_LB_CLASS")
            .env_remove("FERROLB_LEADER_ELECT")
            .arg("--metrics-bind-address")
            .arg(metrics_address.to_string());
        if let Some(class) = lb_class {
            command.arg("--lb-class").arg(class);
        }
        // Tests keep out of ferrolb-system (on a real cluster it may be a real installation's):
        // a test that wants the heartbeat key Secret names its own namespace.
        if !args
            .iter()
            .any(|arg| arg.starts_with("--heartbeat-key-namespace"))
        {
            command.arg("--heartbeat-key-namespace=");
        }
        command.args(args).envs(env.iter().copied());
        let component = Component::spawn("ferrolb-controller", command)?;
        Ok(Self {
            component,
            metrics_address,
        })
    }

    /// Polls /readyz until it answers 200 (caches synced), at most `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if matches!(http_get(self.metrics_address, "/readyz"), Ok((200, _))) {
                return Ok(started.elapsed());
            }
            if self.component.child.try_wait()?.is_some() {
                bail!(
                    "ferrolb-controller exited before it was ready:\n{}",
                    self.component.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "ferrolb-controller not ready within {timeout:?}:\n{}",
            self.component.output()
        )
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.component.signal("TERM")?;
        if !self.component.wait_exit(Duration::from_secs(10))? {
            bail!("ferrolb-controller did not exit within 10s of SIGTERM");
        }
        Ok(())
    }
}

/// A plain HTTP/1.1 GET; returns the status code and body.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Peak and current resident memory of a process in KiB (VmHWM, VmRSS from /proc).
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}
