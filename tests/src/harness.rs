//! One switch for every conformance test: the in-process double by default,
//! or the real cluster named by `FERROLB_TEST_KUBECONFIG`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::apiserver::{ApiServerConfig, ApiServerHandle};

/// Environment variable naming a real cluster's kubeconfig.
pub const REAL_CLUSTER_ENV: &str = "FERROLB_TEST_KUBECONFIG";

/// Where a test runs: a client, a kubeconfig for kubectl, a namespace of its
/// own, and the double's handle unless the test runs on a real cluster.
pub struct TestCluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub double: Option<ApiServerHandle>,
}

fn unique_namespace(test_name: &str) -> String {
    let sanitized: String = test_name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let suffix = format!("{:x}{:x}", std::process::id() % 0xffff, nanos % 0xfffff);
    let mut prefix: String = format!("ft-{sanitized}");
    prefix.truncate(63 - suffix.len() - 1);
    format!("{}-{suffix}", prefix.trim_end_matches('-'))
}

impl TestCluster {
    /// Starts the double on 127.0.0.1:0, or connects to the real cluster when
    /// `FERROLB_TEST_KUBECONFIG` is set; either way creates a fresh namespace.
    pub async fn start(test_name: &str) -> anyhow::Result<Self> {
        let (client, kubeconfig, double) = match std::env::var_os(REAL_CLUSTER_ENV) {
            Some(path) => {
                let path = PathBuf::from(path);
                let kubeconfig = Kubeconfig::read_from(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let config =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await?;
                (Client::try_from(config)?, path, None)
            }
            None => {
                let config = ApiServerConfig {
                    bookmark_interval: Duration::from_millis(500),
                    ..ApiServerConfig::default()
                };
                let double =
                    ApiServerHandle::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config)
                        .await?;
                let client = double.client()?;
                let kubeconfig = double.kubeconfig_path().to_path_buf();
                (client, kubeconfig, Some(double))
            }
        };
        let namespace = unique_namespace(test_name);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut object = Namespace::default();
        object.metadata.name = Some(namespace.clone());
        namespaces.create(&PostParams::default(), &object).await?;
        Ok(Self {
            client,
            kubeconfig,
            namespace,
            double,
        })
    }

    pub fn is_real(&self) -> bool {
        self.double.is_none()
    }

    /// The double, or `None` after printing why the test is skipped.
    pub fn double_or_skip(&self, test: &str, reason: &str) -> Option<&ApiServerHandle> {
        if self.double.is_none() {
            println!("SKIPPED {test} on a real cluster: {reason}");
        }
        self.double.as_ref()
    }

    /// Whether to run a check that only the double supports; prints why not.
    pub fn only_on_double(&self, what: &str, reason: &str) -> bool {
        if self.is_real() {
            println!("skipping {what} on a real cluster: {reason}");
        }
        !self.is_real()
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl against this cluster, in the test's namespace.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_with_input(args, None)
    }

    /// Runs kubectl with `input` on its standard input (for `-f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
        self.run_kubectl(Some(&self.namespace), args, input)
    }

    /// Runs kubectl without `--namespace`, for manifests that name their own;
    /// fails unless kubectl succeeds and returns its standard output.
    pub fn kubectl_any_namespace_ok(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<String> {
        let output = self.run_kubectl(None, args, input)?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn run_kubectl(
        &self,
        namespace: Option<&str>,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<Output> {
        use std::io::Write as _;
        let mut command = std::process::Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(namespace) = namespace {
            command.arg("--namespace").arg(namespace);
        }
        command
            .args(args)
            .stdin(if input.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().context("running kubectl")?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Like [`Self::kubectl_with_input`], failing unless kubectl succeeds;
    /// returns its standard output.
    pub fn kubectl_ok(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
        let output = self.kubectl_with_input(args, input)?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Installs FerroLB's CRDs from `config/crds` (server-side apply, so a real cluster that
    /// already has them keeps them) and waits until they are served.
    pub fn install_ferrolb_crds(&self) -> anyhow::Result<()> {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crds");
        self.kubectl_any_namespace_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &crds.to_string_lossy(),
            ],
            None,
        )?;
        for crd in ["ipaddresspools", "l2advertisements", "servicel2statuses"] {
            self.kubectl_any_namespace_ok(
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    &format!("crd/{crd}.ferrolb.io"),
                ],
                None,
            )?;
        }
        Ok(())
    }

    /// Deletes the test namespace and stops the double.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let deleted = namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await;
        if let Some(double) = self.double {
            double.shutdown().await;
        }
        match deleted {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Runs `body`, then cleans up whether or not it succeeded.
    pub async fn run<F, Fut>(test_name: &str, body: F) -> anyhow::Result<()>
    where
        F: FnOnce(Arc<TestCluster>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let cluster = Arc::new(Self::start(test_name).await?);
        let outcome = tokio::time::timeout(Duration::from_secs(120), body(cluster.clone())).await;
        let cleaned = match Arc::try_unwrap(cluster) {
            Ok(cluster) => cluster.cleanup().await,
            Err(_) => bail!("{test_name} kept a reference to its TestCluster"),
        };
        match outcome {
            Ok(result) => result?,
            Err(_) => bail!("{test_name} timed out after 120s"),
        }
        cleaned
    }
}

/// Whether a kubectl binary can be run; prints why not when it cannot, so
/// kubectl tests can skip on machines without it.
pub fn kubectl_available(test: &str) -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("SKIPPED {test}: no kubectl on PATH");
    }
    found
}

/// Polls `check` until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
