//! FerroLB's own binaries as real processes in end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args([
                "build",
                "--bin",
                "ferrolb-controller",
                "--bin",
                "ferrolb-speaker",
            ])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build of the FerroLB binaries failed: {status}"
            ))
        }
    });
    if let Err(message) = built {
        bail!("{message}");
    }
    let path = target_profile_dir()?.join(name);
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
        let _ = std::fs::remove_file(&self.log);
    }
}
