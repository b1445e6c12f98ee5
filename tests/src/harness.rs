//! One switch for every conformance test: the in-process double by default,
//! or the real cluster named by `FERROLB_TEST_KUBECONFIG`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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
    let mut prefix: String = format!("{TEST_OBJECT_PREFIX}{sanitized}");
    prefix.truncate(63 - suffix.len() - 1);
    format!("{}-{suffix}", prefix.trim_end_matches('-'))
}

impl TestCluster {
    /// Starts the double on 127.0.0.1:0, or connects to the real cluster when
    /// `FERROLB_TEST_KUBECONFIG` is set; either way creates a fresh namespace.
    pub async fn start(test_name: &str) -> anyhow::Result<Self> {
        Self::start_with(test_name, Self::default_double_config()).await
    }

    fn default_double_config() -> ApiServerConfig {
        ApiServerConfig {
            bookmark_interval: Duration::from_millis(500),
            ..ApiServerConfig::default()
        }
    }

    /// Like [`Self::start`], with a double configured as `config` (a real cluster is what it is).
    pub async fn start_with(test_name: &str, config: ApiServerConfig) -> anyhow::Result<Self> {
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

    /// The Service IP families of the cluster, default first, as the API server shows them: a
    /// PreferDualStack Service gets every family the cluster has.
    pub async fn service_families(&self) -> anyhow::Result<Vec<String>> {
        use k8s_openapi::api::core::v1::Service;
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let probe: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "stack-probe"},
            "spec": {"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]},
        }))?;
        let created = services.create(&PostParams::default(), &probe).await?;
        let _ = services
            .delete("stack-probe", &DeleteParams::default())
            .await;
        Ok(created.spec.and_then(|s| s.ip_families).unwrap_or_default())
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
        for crd in [
            "ipaddresspools",
            "l2advertisements",
            "servicel2statuses",
            "bgppeers",
            "bgpadvertisements",
            "bgpsessionstates",
            "servicebgpstatuses",
        ] {
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

    /// Deletes what the test made in the cluster (its namespace, and the cluster-scoped FerroLB
    /// objects named after it) and stops the double.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let scoped = delete_cluster_scoped_objects(&self.client, |name| {
            name == self.namespace || name.starts_with(&format!("{}-", self.namespace))
        })
        .await;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let deleted = namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await;
        if let Some(double) = self.double {
            double.shutdown().await;
        }
        match deleted {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
        scoped
    }

    /// Runs `body`, then cleans up whether it succeeded, failed or panicked.
    ///
    /// On a real cluster the tests run one at a time, across threads and test binaries: they
    /// share the cluster-scoped pools and advertisements, and every controller a test starts
    /// judges every pool, so two at once would see each other's objects.
    pub async fn run<F, Fut>(test_name: &str, body: F) -> anyhow::Result<()>
    where
        F: FnOnce(Arc<TestCluster>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        Self::run_with(test_name, Self::default_double_config(), body).await
    }

    /// [`Self::run`] with a double configured as `config` (on a real cluster `config` has no
    /// effect).
    pub async fn run_with<F, Fut>(
        test_name: &str,
        config: ApiServerConfig,
        body: F,
    ) -> anyhow::Result<()>
    where
        F: FnOnce(Arc<TestCluster>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        use futures::FutureExt as _;
        let _serial = RealClusterTurn::take().await?;
        let cluster = Arc::new(Self::start_with(test_name, config).await?);
        if cluster.is_real() {
            sweep_stale_test_objects(&cluster.client).await;
        }
        let outcome = tokio::time::timeout(
            Duration::from_secs(120),
            std::panic::AssertUnwindSafe(body(cluster.clone())).catch_unwind(),
        )
        .await;
        let cleaned = match Arc::try_unwrap(cluster) {
            Ok(cluster) => cluster.cleanup().await,
            Err(_) => Err(anyhow::anyhow!(
                "{test_name} kept a reference to its TestCluster; its namespace was not deleted"
            )),
        };
        match outcome {
            Ok(Ok(result)) => result?,
            Ok(Err(panic)) => {
                if let Err(error) = cleaned {
                    eprintln!("cleaning up after the panic failed too: {error:#}");
                }
                std::panic::resume_unwind(panic)
            }
            Err(_) => bail!("{test_name} timed out after 120s"),
        }
        cleaned
    }
}

/// Prefix of every namespace, and of every cluster-scoped object, a test creates.
pub const TEST_OBJECT_PREFIX: &str = "ft-";

/// How old a test's leftovers must be before another run deletes them: no test runs this long.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// Deletes the IPAddressPools, L2Advertisements, BGPPeers and BGPAdvertisements whose names
/// `owned` accepts. A cluster
/// without FerroLB's CRDs has none; that is not an error.
async fn delete_cluster_scoped_objects(
    client: &Client,
    owned: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    async fn delete_owned<K>(client: &Client, owned: &dyn Fn(&str) -> bool) -> anyhow::Result<()>
    where
        K: kube::Resource<Scope = kube::core::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(client.clone());
        let listed = match api.list_metadata(&Default::default()).await {
            Ok(listed) => listed,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        for object in listed.items {
            let Some(name) = object.metadata.name.as_deref().filter(|n| owned(n)) else {
                continue;
            };
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
    let pools = delete_owned::<ferrolb_crds::IPAddressPool>(client, &owned).await;
    let advertisements = delete_owned::<ferrolb_crds::L2Advertisement>(client, &owned).await;
    let peers = delete_owned::<ferrolb_crds::BGPPeer>(client, &owned).await;
    let bgp_advertisements = delete_owned::<ferrolb_crds::BGPAdvertisement>(client, &owned).await;
    // Test CRDs are `<plural>.<namespace>.ferrolb.test`.
    let crds = delete_owned::<CustomResourceDefinition>(client, &|name: &str| {
        name.strip_suffix(".ferrolb.test")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(_, group_namespace)| owned(group_namespace))
    })
    .await;
    pools
        .and(advertisements)
        .and(peers)
        .and(bgp_advertisements)
        .and(crds)
}

/// Removes what killed runs left on a real cluster: test namespaces and cluster-scoped test
/// objects older than [`STALE_AFTER`]. Best effort; a failure is printed, not fatal.
async fn sweep_stale_test_objects(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Ok(listed) = namespaces.list_metadata(&Default::default()).await else {
        return;
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let stale: Vec<String> = listed
        .items
        .iter()
        .filter(|ns| {
            ns.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| now.duration_since(t.0).as_secs() > STALE_AFTER.as_secs() as i64)
        })
        .filter_map(|ns| ns.metadata.name.clone())
        .filter(|name| name.starts_with(TEST_OBJECT_PREFIX))
        .collect();
    for name in &stale {
        println!("deleting namespace {name}, left by an earlier run");
        let _ = namespaces.delete(name, &DeleteParams::background()).await;
    }
    let owned = |name: &str| stale.iter().any(|ns| name.starts_with(ns.as_str()));
    if let Err(error) = delete_cluster_scoped_objects(client, owned).await {
        println!("could not delete an earlier run's pools and advertisements: {error:#}");
    }
}

/// One test's turn on the real cluster: an exclusive lock on a file every test process opens,
/// held until dropped. On the double every test has its own server and this is a no-op.
struct RealClusterTurn(Option<std::fs::File>);

impl RealClusterTurn {
    async fn take() -> anyhow::Result<Self> {
        if std::env::var_os(REAL_CLUSTER_ENV).is_none() {
            return Ok(Self(None));
        }
        let path = std::env::temp_dir().join("ferrolb-real-cluster-tests.lock");
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await??;
        Ok(Self(Some(file)))
    }
}

impl Drop for RealClusterTurn {
    fn drop(&mut self) {
        if let Some(file) = &self.0 {
            let _ = file.unlock();
        }
    }
}

/// Set where every prerequisite of every test is installed (`.ci/run` sets it): a test that
/// would be skipped fails instead, so that no test passes there without having run.
pub const REQUIRE_ALL_ENV: &str = "FERROLB_REQUIRE_ALL_TESTS";

/// Reports that `test` cannot run here: prints `SKIPPED <test>: <reason>` and returns `Ok`,
/// or fails when [`REQUIRE_ALL_ENV`] is set.
pub fn skip(test: &str, reason: &str) -> anyhow::Result<()> {
    if std::env::var_os(REQUIRE_ALL_ENV).is_some() {
        bail!("{test} cannot run: {reason} ({REQUIRE_ALL_ENV} is set, so that is a failure)");
    }
    println!("SKIPPED {test}: {reason}");
    Ok(())
}

/// Whether a kubectl binary can be run. When it cannot, the test is skipped with the reason
/// (see [`skip`]): `Ok(false)`.
pub fn kubectl_available(test: &str) -> anyhow::Result<bool> {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip(test, "no kubectl on PATH")?;
    }
    Ok(found)
}

/// Whether this process runs as root, which network-namespace tests need. When not, the test is
/// skipped with the reason (see [`skip`]): `Ok(false)`.
pub fn root_available(test: &str) -> anyhow::Result<bool> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        skip(test, "needs root for network namespaces")?;
    }
    Ok(root)
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
