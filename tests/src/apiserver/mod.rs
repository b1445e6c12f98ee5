//! An in-memory double of the Kubernetes API server.
//!
//! Start it with [`ApiServerHandle::start`]; point kube-rs at
//! [`ApiServerHandle::client`] or kubectl at [`ApiServerHandle::kubeconfig_path`];
//! inject faults with [`ApiServerHandle::faults`] and read request counters
//! with [`ApiServerHandle::counters`].
//!
//! # Where it differs from kube-apiserver, on purpose
//!
//! - Replies are JSON only. Request bodies are JSON or YAML; protobuf bodies
//!   are decoded only for the v1 Namespace, ConfigMap, Secret and Service
//!   fields kubectl's imperative `create` commands set (see [`protobuf`]);
//!   any other protobuf body gets 415.
//! - No TLS, no authentication or authorization, no admission webhooks, no
//!   dry run (`dryRun` is refused with 400 rather than written for real).
//! - Discovery is served in the legacy format only; clients asking for
//!   aggregated discovery fall back, as they do with older servers.
//!   `/openapi/v3` is an empty index and `/openapi/v2` an empty document, so
//!   kubectl skips client-side schema validation.
//! - Lists always come from the latest state: `resourceVersion` and
//!   `resourceVersionMatch` on lists are ignored, and continue tokens are
//!   positions, not snapshots.
//! - Strategic merge patch and server-side apply are approximations; see
//!   [`patch`] and [`apply`] (no field-ownership conflicts, no `Update`
//!   managedFields entries).
//! - Deletion is immediate apart from finalizers: no graceful deletion, and
//!   namespaces and CRDs take their contents with them at once instead of
//!   going through Terminating. Owner cascades are background-style only
//!   (`Orphan` is honoured, `Foreground` behaves like `Background`).
//! - All served versions of a CRD share one storage; there is no conversion
//!   beyond rewriting `apiVersion`, and no scale subresource. Custom
//!   resources are checked against the schema (types, required, enum,
//!   bounds, maxLength), defaulted, pruned and validated with their
//!   `x-kubernetes-validations` CEL rules via kube-cel; other OpenAPI
//!   keywords (pattern, formats, oneOf, ...) are not enforced.
//! - Events are served as core `v1` and `events.k8s.io/v1` from one storage,
//!   converted and validated per API as kube-apiserver does (see [`events`]),
//!   but they never expire (kube-apiserver drops them after `--event-ttl`,
//!   one hour by default).
//! - CRD rules are type-checked and their static cost estimated as
//!   kube-apiserver v1.36 does ([`cel_cost`]); over-budget CRDs get the
//!   server's 422 causes. Compile errors name no line and column, and a CEL
//!   function the estimator does not model is refused with an internal
//!   error naming it rather than costed by guess.
//! - Every new namespace gets the `default` ServiceAccount and an empty
//!   `kube-root-ca.crt` ConfigMap at once (kube-controller-manager adds them
//!   a moment later, and the bundle holds the cluster's CA; the double serves
//!   plain HTTP and has none).

pub mod apply;
pub mod cel_cost;
pub mod crd;
pub mod error;
pub mod events;
pub mod faults;
pub mod metrics;
pub mod objects;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod service;
pub mod store;
pub mod table;
pub mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

pub use faults::{ErrorRule, Faults};
pub use metrics::RequestCounters;
pub use service::ServiceStack;
use store::StoreState;

/// Tunables of the double.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Number of changes kept for watches that resume from a resourceVersion;
    /// older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Events buffered per watch before a slow watch is ended with 410.
    pub watch_buffer: usize,
    /// The service IP families, as kube-apiserver's `--service-cluster-ip-range` sets them:
    /// Services are defaulted and refused the way a cluster of that stack does.
    pub service_stack: ServiceStack,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            watch_buffer: 65_536,
            service_stack: ServiceStack::default(),
        }
    }
}

/// State shared by all request handlers.
pub struct Shared {
    pub state: Mutex<StoreState>,
    pub faults: Faults,
    pub counters: RequestCounters,
    /// Watch events sent to clients, by event type (ADDED, MODIFIED, DELETED, BOOKMARK,
    /// ERROR) and resource.
    pub watch_events: RequestCounters,
    pub config: ApiServerConfig,
    pub address: SocketAddr,
}

/// A running double; dropping it stops the server.
pub struct ApiServerHandle {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ApiServerHandle {
    /// Starts serving on `address` (port 0 picks a free port) and writes a
    /// kubeconfig for it into a fresh temporary directory.
    pub async fn start(address: SocketAddr, config: ApiServerConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let bound = listener.local_addr()?;
        let mut state = StoreState::new(config.history_limit, config.watch_buffer);
        state.allocators = service::ServiceAllocators::new(config.service_stack);
        objects::seed(&mut state);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Faults::default(),
            counters: RequestCounters::default(),
            watch_events: RequestCounters::default(),
            config,
            address: bound,
        });
        let kubeconfig = std::env::temp_dir()
            .join(format!(
                "ferrolb-apiserver-{}-{}",
                std::process::id(),
                bound.port()
            ))
            .join("kubeconfig");
        write_kubeconfig(&kubeconfig, &format!("http://{bound}"))?;
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
            });
            if let Err(err) = serve.await {
                eprintln!("ferrolb-apiserver: server error: {err}");
            }
        });
        Ok(Self {
            shared,
            kubeconfig,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.address)
    }

    /// Path of a kubeconfig whose current context points at this double.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube-rs client for this double.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let url = self.url().parse()?;
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube-rs client that does not retry 429/503 replies, to observe
    /// injected errors as they are sent.
    pub fn client_without_retries(&self) -> anyhow::Result<kube::Client> {
        let url = self.url().parse()?;
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn counters(&self) -> &RequestCounters {
        &self.shared.counters
    }

    /// Watch events delivered to clients, keyed (event type, resource) instead of (verb,
    /// resource): each counted once it is handed to the client's stream.
    pub fn watch_events(&self) -> &RequestCounters {
        &self.shared.watch_events
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes how many changes are kept for resuming watches.
    pub fn set_history_limit(&self, limit: usize) {
        self.state().set_history_limit(limit);
    }

    /// Forgets the watch history: every older resourceVersion becomes Gone.
    pub fn compact_history(&self) {
        self.state().compact_all();
    }

    pub fn current_resource_version(&self) -> u64 {
        self.state().current_resource_version()
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        self.shared.faults.close_all_watches();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl Drop for ApiServerHandle {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.kubeconfig.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes a kubeconfig whose only context points at `server_url`.
pub fn write_kubeconfig(path: &Path, server_url: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrolb-double\n  cluster:\n    server: {server_url}\ncontexts:\n- name: ferrolb-double\n  context:\n    cluster: ferrolb-double\n    user: ferrolb-double\n    namespace: default\ncurrent-context: ferrolb-double\nusers:\n- name: ferrolb-double\n  user:\n    token: ferrolb-double\n"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
