//! Two `ferrolb-controller` replicas with `--leader-elect` against the API server double (or the
//! real cluster named by FERROLB_TEST_KUBECONFIG): one Lease holder at a time, only the holder
//! writes, a SIGTERM hands the Lease over at once, a SIGKILL hands it over once it expires, and
//! no assigned IP moves through either.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferrolb_crds::IPAddressPool;
use ferrolb_tests::components::ControllerProcess;
use ferrolb_tests::harness::{TestCluster, eventually, kubectl_available};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
/// The controller's leader Lease lasts 15 s; a standby looks every second.
const EXPIRY_TAKEOVER: Duration = Duration::from_secs(25);
/// A released Lease is taken at the standby's next look.
const HANDOVER: Duration = Duration::from_secs(5);

struct Replicas {
    cluster: std::sync::Arc<TestCluster>,
    class: Option<String>,
    lease_name: String,
    leases: Api<Lease>,
    services: Api<Service>,
    events: Api<Event>,
}

impl Replicas {
    /// Starts a replica named `name`; its identity in the Lease and in events is `name-<pid>`.
    fn start(&self, name: &str) -> anyhow::Result<(ControllerProcess, String)> {
        let mut replica = ControllerProcess::spawn_with(
            self.cluster.kubeconfig_path(),
            self.class.as_deref(),
            &[
                "--leader-elect",
                "--lease-namespace",
                &self.cluster.namespace,
                "--lease-name",
                &self.lease_name,
            ],
            &[("POD_NAME", name)],
        )?;
        replica.wait_ready(WAIT)?;
        let identity = format!("{name}-{}", replica.component.pid());
        Ok((replica, identity))
    }

    async fn holder(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .leases
            .get_opt(&self.lease_name)
            .await?
            .and_then(|lease| lease.spec?.holder_identity))
    }

    /// Waits until `identity` holds the Lease; returns how long that took.
    async fn wait_holder(&self, identity: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        eventually(timeout, || async {
            Ok((self.holder().await?.as_deref() == Some(identity)).then_some(()))
        })
        .await
        .with_context(|| format!("{identity} did not take the Lease {}", self.lease_name))?;
        Ok(started.elapsed())
    }

    async fn service(&self, name: &str) -> anyhow::Result<String> {
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        });
        if let Some(class) = &self.class {
            object["spec"]["loadBalancerClass"] = json!(class);
        }
        self.services
            .create(&PostParams::default(), &serde_json::from_value(object)?)
            .await?;
        eventually(WAIT, || async {
            let service = self.services.get(name).await?;
            Ok(service
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|ingress| ingress.first().and_then(|i| i.ip.clone())))
        })
        .await
        .with_context(|| format!("{name} got no IP"))
    }

    async fn ip_of(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .services
            .get(name)
            .await?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|ingress| ingress.first().and_then(|i| i.ip.clone())))
    }

    /// The replicas that reported `IPAllocated` for the Service `name`.
    async fn allocation_reporters(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let events = self.events.list(&ListParams::default()).await?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("IPAllocated")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .filter_map(|e| e.reporting_instance)
            .collect())
    }

    /// Waits until the only replica that reported allocating `name` is `identity`.
    async fn wait_reported_only_by(&self, name: &str, identity: &str) -> anyhow::Result<()> {
        let reporters = eventually(WAIT, || async {
            let reporters = self.allocation_reporters(name).await?;
            Ok((!reporters.is_empty()).then_some(reporters))
        })
        .await
        .with_context(|| format!("no IPAllocated event for {name}"))?;
        if reporters.iter().any(|r| r != identity) {
            bail!(
                "{name}: IPAllocated reported by {reporters:?}, expected only the leader {identity}"
            );
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_writes_and_hands_over_without_moving_ips() {
    TestCluster::run("controller-leader", |cluster| async move {
        if !kubectl_available("controller leader election")? {
            bail!("kubectl is needed to install the CRDs");
        }
        cluster.install_ferrolb_crds()?;
        let ns = cluster.namespace.clone();
        let pools: Api<IPAddressPool> = Api::all(cluster.client.clone());
        let pool_name = format!("{ns}-leader");
        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": pool_name},
            "spec": {"addresses": ["198.51.100.40/29"], "serviceAllocation": {"namespaces": [ns]}},
        }))?;
        pools.create(&PostParams::default(), &pool).await?;
        let replicas = Replicas {
            class: cluster
                .is_real()
                .then(|| format!("e2e.ferrolb.io/{}", cluster.namespace)),
            lease_name: format!("ferrolb-controller-{ns}"),
            leases: Api::namespaced(cluster.client.clone(), &ns),
            services: Api::namespaced(cluster.client.clone(), &ns),
            events: Api::namespaced(cluster.client.clone(), &ns),
            cluster: cluster.clone(),
        };
        let outcome = async {
            // Two replicas: exactly one takes the Lease, and only it writes.
            let (a, a_id) = replicas.start("replica-a")?;
            let (b, b_id) = replicas.start("replica-b")?;
            let leader_id = eventually(WAIT, || async {
                Ok(replicas
                    .holder()
                    .await?
                    .filter(|h| *h == a_id || *h == b_id))
            })
            .await
            .context("neither replica took the Lease")?;
            let (leader, follower, follower_id) = if leader_id == a_id {
                (a, b, b_id)
            } else {
                (b, a, a_id)
            };
            let first = replicas.service("first").await?;
            replicas.wait_reported_only_by("first", &leader_id).await?;

            // SIGTERM: the leader releases the Lease and the standby takes it at once.
            let stopped = Instant::now();
            leader.stop()?;
            let handover = replicas.wait_holder(&follower_id, HANDOVER).await?;
            println!(
                "SIGTERM hand-over: {:?} after the leader exited ({:?} after SIGTERM)",
                handover,
                stopped.elapsed()
            );
            let second = replicas.service("second").await?;
            replicas
                .wait_reported_only_by("second", &follower_id)
                .await?;
            assert_ne!(first, second);
            assert_eq!(
                replicas.ip_of("first").await?.as_deref(),
                Some(first.as_str())
            );

            // SIGKILL: the Lease is not released; a new standby takes it once it expires.
            let (standby, standby_id) = replicas.start("replica-c")?;
            let mut killed = follower;
            killed.component.signal("KILL")?;
            killed.component.wait_exit(Duration::from_secs(5))?;
            let takeover = replicas.wait_holder(&standby_id, EXPIRY_TAKEOVER).await?;
            println!("SIGKILL take-over after Lease expiry: {takeover:?}");
            let third = replicas.service("third").await?;
            replicas.wait_reported_only_by("third", &standby_id).await?;
            for (name, ip) in [("first", &first), ("second", &second)] {
                assert_eq!(
                    replicas.ip_of(name).await?.as_deref(),
                    Some(ip.as_str()),
                    "{name} moved across the hand-over"
                );
            }
            assert!(third != first && third != second, "{third} given twice");
            standby.stop()?;
            anyhow::Ok(())
        }
        .await;
        let _ = pools.delete(&pool_name, &DeleteParams::default()).await;
        outcome
    })
    .await
    .unwrap();
}
