//! The controller as a real process against the API server double (or the real cluster named by
//! FERROLB_TEST_KUBECONFIG): every way a Service asks for addresses, pool choice, sharing,
//! dual stack, pool changes and status, restarts, and bursts under injected API faults.
//!
//! Each test function shares one cluster and one controller between several cases to keep the
//! suite fast. On a real cluster, pools are named after the test's namespace and only serve that
//! namespace, the controller serves a loadBalancerClass of the test's own, and checks that need
//! the double (faults, counters, exact pool status while other controllers may run) are skipped
//! with the reason printed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferrolb_crds::IPAddressPool;
use ferrolb_tests::components::ControllerProcess;
use ferrolb_tests::harness::{TestCluster, eventually, kubectl_available};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const POOL_ANNOTATION: &str = "ferrolb.io/ip-allocated-from-pool";

/// One test's cluster, controller and helpers.
struct Lab {
    cluster: Arc<TestCluster>,
    /// The loadBalancerClass the controller serves: one of the test's own on a real cluster.
    class: Option<String>,
    services: Api<Service>,
    pools: Api<IPAddressPool>,
    events: Api<Event>,
    controller: Option<ControllerProcess>,
    created_pools: Vec<String>,
}

impl Lab {
    async fn start(cluster: Arc<TestCluster>) -> anyhow::Result<Self> {
        Self::start_after(cluster, |_| {}).await
    }

    /// Like [`Self::start`], running `before_controller` once the CRDs are installed.
    async fn start_after(
        cluster: Arc<TestCluster>,
        before_controller: impl FnOnce(&TestCluster),
    ) -> anyhow::Result<Self> {
        if !kubectl_available("controller e2e")? {
            bail!("kubectl is needed to install the CRDs");
        }
        cluster.install_ferrolb_crds()?;
        before_controller(&cluster);
        let class = cluster
            .is_real()
            .then(|| format!("e2e.ferrolb.io/{}", cluster.namespace));
        let mut lab = Self {
            services: Api::namespaced(cluster.client.clone(), &cluster.namespace),
            pools: Api::all(cluster.client.clone()),
            events: Api::namespaced(cluster.client.clone(), &cluster.namespace),
            cluster,
            class,
            controller: None,
            created_pools: Vec::new(),
        };
        lab.start_controller()?;
        Ok(lab)
    }

    fn start_controller(&mut self) -> anyhow::Result<()> {
        let mut controller =
            ControllerProcess::spawn(self.cluster.kubeconfig_path(), self.class.as_deref())?;
        controller.wait_ready(WAIT)?;
        self.controller = Some(controller);
        Ok(())
    }

    fn stop_controller(&mut self) -> anyhow::Result<()> {
        match self.controller.take() {
            Some(controller) => controller.stop(),
            None => Ok(()),
        }
    }

    fn ns(&self) -> &str {
        &self.cluster.namespace
    }

    /// A cluster-scoped name of this test's own.
    fn pool_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.cluster.namespace)
    }

    /// Creates a pool; `spec` is merged over `{addresses}`. Unless the spec says otherwise, the
    /// pool serves only this test's namespace, so that on a real cluster no other Service can
    /// take its addresses.
    async fn pool(
        &mut self,
        suffix: &str,
        addresses: &[&str],
        spec: Value,
    ) -> anyhow::Result<String> {
        let name = self.pool_name(suffix);
        let mut full = json!({"addresses": addresses});
        merge(&mut full, spec);
        if full.get("serviceAllocation").is_none() {
            full["serviceAllocation"] = json!({"namespaces": [self.ns()]});
        }
        let object: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": name},
            "spec": full,
        }))?;
        self.pools.create(&PostParams::default(), &object).await?;
        self.created_pools.push(name.clone());
        Ok(name)
    }

    async fn patch_pool(&self, name: &str, patch: Value) -> anyhow::Result<()> {
        self.pools
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn delete_pool(&self, name: &str) -> anyhow::Result<()> {
        self.pools.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    async fn delete_all_pools(&self) {
        for name in &self.created_pools {
            let _ = self.pools.delete(name, &DeleteParams::default()).await;
        }
    }

    /// A LoadBalancer Service serving TCP 80, of the controller's class; `extra` is merged in.
    fn service_json(&self, name: &str, extra: Value) -> Value {
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
        merge(&mut object, extra);
        object
    }

    async fn service(&self, name: &str, extra: Value) -> anyhow::Result<()> {
        let object: Service = serde_json::from_value(self.service_json(name, extra))?;
        self.services
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating Service {name}"))?;
        Ok(())
    }

    async fn patch_service(&self, name: &str, patch: Value) -> anyhow::Result<()> {
        self.services
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn delete_service(&self, name: &str) -> anyhow::Result<()> {
        self.services.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// The ingress IPs once the Service has at least one.
    async fn wait_ips(&self, name: &str) -> anyhow::Result<Vec<String>> {
        eventually(WAIT, || async {
            let service = self.services.get(name).await?;
            let ips = ingress_ips(&service);
            Ok((!ips.is_empty()).then_some(ips))
        })
        .await
        .with_context(|| format!("Service {name} got no IP"))
    }

    /// Waits until the Service's ingress is exactly `expected` (empty: none).
    async fn wait_exact_ips(&self, name: &str, expected: &[&str]) -> anyhow::Result<Service> {
        eventually(WAIT, || async {
            let service = self.services.get(name).await?;
            Ok((ingress_ips(&service) == expected).then_some(service))
        })
        .await
        .with_context(|| format!("Service {name} never had exactly {expected:?}"))
    }

    /// Waits until the Service names `pool` as the pool its IPs came from. The controller
    /// writes status before this annotation, so an IP can be visible a moment earlier.
    async fn wait_pool_annotation(&self, name: &str, pool: &str) -> anyhow::Result<Service> {
        eventually(WAIT, || async {
            let service = self.services.get(name).await?;
            Ok((annotation(&service, POOL_ANNOTATION) == Some(pool)).then_some(service))
        })
        .await
        .with_context(|| format!("Service {name} never named pool {pool}"))
    }

    /// Waits for an event on the Service with this reason whose note contains `text`.
    async fn wait_event(
        &self,
        service: &str,
        event_reason: &str,
        text: &str,
    ) -> anyhow::Result<Event> {
        let found = eventually(WAIT, || async {
            let events = self.events.list(&ListParams::default()).await?;
            Ok(events.items.into_iter().find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service)
                    && e.reason.as_deref() == Some(event_reason)
                    && e.note.as_deref().is_some_and(|n| n.contains(text))
            }))
        })
        .await;
        match found {
            Ok(event) => Ok(event),
            Err(_) => {
                let notes = self.event_notes(service).await?;
                bail!("no {event_reason} event containing {text:?} on {service}; it has {notes:#?}")
            }
        }
    }

    async fn event_notes(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let events = self.events.list(&ListParams::default()).await?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service))
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                )
            })
            .collect())
    }

    /// A Warning AllocationFailed event with `text`, and no IP.
    async fn expect_refused(&self, service: &str, text: &str) -> anyhow::Result<()> {
        let event = self.wait_event(service, "AllocationFailed", text).await?;
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
        let current = self.services.get(service).await?;
        assert!(
            ingress_ips(&current).is_empty(),
            "{service} refused yet has an IP: {current:?}"
        );
        Ok(())
    }

    /// Every ingress IP of every Service in the namespace, by Service.
    async fn all_ips(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let list = self.services.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress_ips(s)))
            .filter(|(_, ips)| !ips.is_empty())
            .collect())
    }

    async fn pool_status(&self, name: &str) -> anyhow::Result<Value> {
        let pool = self.pools.get_status(name).await?;
        Ok(serde_json::to_value(&pool)?["status"].clone())
    }

    /// Whether exact pool status can be checked: on a real cluster other controllers (other
    /// tests', or an installed FerroLB) write the status of every pool too.
    fn exact_pool_status(&self) -> bool {
        self.cluster.only_on_double(
            "exact pool status",
            "every running controller writes every pool's status",
        )
    }

    /// Waits until the pool's status matches every field of `expected`.
    async fn wait_pool_status(&self, name: &str, expected: Value) -> anyhow::Result<Value> {
        let result = eventually(WAIT, || async {
            let status = self.pool_status(name).await?;
            Ok(contains(&status, &expected).then_some(status))
        })
        .await;
        match result {
            Ok(status) => Ok(status),
            Err(_) => bail!(
                "pool {name} status never matched {expected}; it is {}",
                self.pool_status(name).await?
            ),
        }
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        self.stop_controller()?;
        self.delete_all_pools().await;
        Ok(())
    }
}

fn ingress_ips(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// JSON merge patch semantics, for building objects.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Whether every field of `expected` is in `actual` with the same value (objects recursively;
/// a list of conditions matches when each expected condition's fields match one of them).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|a| contains(a, value))),
        (Value::Array(actual), Value::Array(expected)) if expected.iter().all(Value::is_object) => {
            expected
                .iter()
                .all(|e| actual.iter().any(|a| contains(a, e)))
        }
        (Value::String(actual), Value::String(expected)) if expected.starts_with('~') => {
            actual.contains(&expected[1..])
        }
        _ => actual == expected,
    }
}

fn ip_in(ip: &str, first: &str, last: &str) -> bool {
    let (Ok(ip), Ok(first), Ok(last)) = (
        ip.parse::<std::net::IpAddr>(),
        first.parse::<std::net::IpAddr>(),
        last.parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    first <= ip && ip <= last
}

// kubectl (CRD install) runs blocking; the in-process double needs other threads to answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_requests_annotations_classes_and_type_changes() -> anyhow::Result<()> {
    TestCluster::run("ctl-requests", |cluster| async move {
        let mut lab = Lab::start(cluster).await?;
        let ns = lab.ns().to_owned();
        let main = lab.pool("main", &["198.51.100.0/27"], json!({})).await?;
        let manual = lab.pool("manual", &["198.51.100.32/28"], json!({"autoAssign": false})).await?;
        let gold = lab
            .pool(
                "gold",
                &["198.51.100.48/28"],
                json!({"autoAssign": false, "serviceAllocation": {"namespaces": [ns], "serviceSelectors": [{"matchLabels": {"tier": "gold"}}]}}),
            )
            .await?;
        let elsewhere = lab
            .pool(
                "elsewhere",
                &["198.51.100.64/28"],
                json!({"serviceAllocation": {"namespaces": [format!("{ns}-other")]}}),
            )
            .await?;
        let missing = lab.pool_name("missing");
        let ips_annotation = |ips: &str| json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": ips}}});
        let pool_annotation = |pool: &str| json!({"metadata": {"annotations": {"ferrolb.io/address-pool": pool}}});

        lab.service("annotated", ips_annotation("198.51.100.5")).await?;
        lab.service("alias", json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "198.51.100.6"}}})).await?;
        lab.service("legacy-alias", json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "198.51.100.9"}}})).await?;
        lab.service("spec-field", json!({"spec": {"loadBalancerIP": "198.51.100.7"}})).await?;
        lab.service("both", json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "198.51.100.8"}}, "spec": {"loadBalancerIP": "198.51.100.8"}})).await?;
        lab.service("unparsable", ips_annotation("198.51.100.x")).await?;
        lab.service("two-v4", ips_annotation("198.51.100.10,198.51.100.11")).await?;
        lab.service("outside-named", json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "198.51.100.33", "ferrolb.io/address-pool": main}}})).await?;
        lab.service("outside-all", ips_annotation("198.51.100.200")).await?;
        lab.service("manual", pool_annotation(&manual)).await?;
        lab.service("metallb-pool", json!({"metadata": {"annotations": {"metallb.io/address-pool": manual}}})).await?;
        lab.service("not-here", pool_annotation(&elsewhere)).await?;
        lab.service("unlabelled", pool_annotation(&gold)).await?;
        lab.service("labelled", json!({"metadata": {"labels": {"tier": "gold"}, "annotations": {"ferrolb.io/address-pool": gold}}})).await?;
        lab.service("unknown-pool", pool_annotation(&missing)).await?;

        for (name, ip) in [("annotated", "198.51.100.5"), ("alias", "198.51.100.6"), ("legacy-alias", "198.51.100.9"), ("spec-field", "198.51.100.7")] {
            lab.wait_exact_ips(name, &[ip]).await?;
            let service = lab.wait_pool_annotation(name, &main).await?;
            let ingress = &service.status.as_ref().unwrap().load_balancer.as_ref().unwrap().ingress.as_ref().unwrap()[0];
            assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"), "{name}");
            let event = lab.wait_event(name, "IPAllocated", &format!("assigned {ip} from pool {main}")).await?;
            assert_eq!(event.type_.as_deref(), Some("Normal"));
        }
        lab.expect_refused("both", "both ferrolb.io/loadBalancerIPs and spec.loadBalancerIP are set").await?;
        lab.expect_refused("unparsable", "ferrolb.io/loadBalancerIPs: \"198.51.100.x\" is not an IP address").await?;
        lab.expect_refused("two-v4", "holds two IPv4 addresses; at most one per family").await?;
        lab.expect_refused("outside-named", &format!("198.51.100.33 is not in pool {main}")).await?;
        lab.expect_refused("outside-all", "198.51.100.200 is in no pool").await?;
        lab.expect_refused("not-here", &format!("pool {elsewhere} does not allow Services in namespace {ns}")).await?;
        lab.expect_refused("unlabelled", &format!("pool {gold} does not allow Services in namespace {ns} with these labels")).await?;
        lab.expect_refused("unknown-pool", &format!("pool {missing} does not exist")).await?;
        for (name, pool, first, last) in [("manual", &manual, "198.51.100.32", "198.51.100.47"), ("metallb-pool", &manual, "198.51.100.32", "198.51.100.47"), ("labelled", &gold, "198.51.100.48", "198.51.100.63")] {
            let ips = lab.wait_ips(name).await?;
            assert!(ips.len() == 1 && ip_in(&ips[0], first, last), "{name}: {ips:?}");
            lab.wait_pool_annotation(name, pool).await?;
        }

        // A Service that asked wrongly gets its IP once the request is fixed.
        lab.patch_service("two-v4", ips_annotation("198.51.100.10")).await?;
        lab.wait_exact_ips("two-v4", &["198.51.100.10"]).await?;

        // Another class is someone else's: never touched. A plain Service, created after it,
        // gets an auto-assigned IP from the only auto-assigning pool of the namespace; by then
        // the controller has seen the other-class Service too.
        lab.service("other-class", json!({"spec": {"loadBalancerClass": format!("example.com/other-{ns}")}})).await?;
        lab.service("plain", json!({})).await?;
        let plain = lab.wait_ips("plain").await?;
        assert!(ip_in(&plain[0], "198.51.100.0", "198.51.100.31"), "{plain:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let other = lab.services.get("other-class").await?;
        assert!(ingress_ips(&other).is_empty() && annotation(&other, POOL_ANNOTATION).is_none(), "{other:?}");
        assert!(lab.event_notes("other-class").await?.is_empty());

        // Type changes: ClusterIP -> LoadBalancer gets an IP; back to ClusterIP releases it.
        let mut cluster_ip = lab.service_json("became-lb", json!({"spec": {"type": "ClusterIP"}}));
        if let Some(spec) = cluster_ip["spec"].as_object_mut() {
            spec.remove("loadBalancerClass");
        }
        lab.services.create(&PostParams::default(), &serde_json::from_value(cluster_ip)?).await?;
        let mut to_lb = json!({"spec": {"type": "LoadBalancer"}});
        if let Some(class) = &lab.class {
            to_lb["spec"]["loadBalancerClass"] = json!(class);
        }
        lab.patch_service("became-lb", to_lb).await?;
        let ips = lab.wait_ips("became-lb").await?;
        lab.patch_service("became-lb", json!({"spec": {"type": "ClusterIP"}})).await?;
        let service = lab.wait_exact_ips("became-lb", &[]).await?;
        let service = if annotation(&service, POOL_ANNOTATION).is_some() {
            eventually(WAIT, || async {
                let s = lab.services.get("became-lb").await?;
                Ok(annotation(&s, POOL_ANNOTATION).is_none().then_some(s))
            })
            .await?
        } else {
            service
        };
        assert!(annotation(&service, POOL_ANNOTATION).is_none());
        lab.wait_event("became-lb", "ClearAssignment", &format!("released {}", ips[0])).await?;

        // Nobody got an IP twice.
        let all = lab.all_ips().await?;
        let unique: BTreeSet<&String> = all.values().flatten().collect();
        assert_eq!(unique.len(), all.values().map(Vec::len).sum::<usize>(), "{all:?}");
        lab.finish().await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_choice_sharing_and_dual_stack() -> anyhow::Result<()> {
    TestCluster::run("ctl-choice", |cluster| async move {
        let mut lab = Lab::start(cluster).await?;
        let ns = lab.ns().to_owned();
        // Namespace labels reach the controller through its namespace watch.
        let namespaces: Api<Namespace> = Api::all(lab.cluster.client.clone());
        namespaces
            .patch(&ns, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"e2e-lab": "choice"}}})))
            .await?;
        let first = lab.pool("first", &["198.51.100.100-198.51.100.103"], json!({"serviceAllocation": {"priority": 1, "namespaces": [ns]}})).await?;
        let later = lab.pool("later", &["198.51.100.104-198.51.100.107"], json!({"serviceAllocation": {"priority": 5, "namespaces": [ns]}})).await?;
        let manual = lab.pool("manual", &["198.51.100.96-198.51.100.99"], json!({"autoAssign": false, "serviceAllocation": {"priority": 0, "namespaces": [ns]}})).await?;
        let selected = lab
            .pool(
                "selected",
                &["198.51.100.108-198.51.100.111"],
                json!({"serviceAllocation": {"priority": 0,
                    "namespaceSelectors": [{"matchLabels": {"e2e-lab": "choice"}}],
                    "serviceSelectors": [{"matchLabels": {"app": "picked"}}]}}),
            )
            .await?;
        let buggy = lab.pool("buggy", &["198.51.100.254/31"], json!({"autoAssign": false, "avoidBuggyIPs": true})).await?;
        let dual = lab.pool("dual", &["198.51.100.120/30", "2001:db8:1::/126"], json!({"autoAssign": false})).await?;
        let shared = lab.pool("shared", &["198.51.100.124/30"], json!({"autoAssign": false})).await?;
        let pool_annotation = |pool: &str| json!({"metadata": {"annotations": {"ferrolb.io/address-pool": pool}}});

        // Priority: the four addresses of the first pool, then the later one; never the
        // manual pool although it has the best priority.
        for i in 0..4 {
            lab.service(&format!("p{i}"), json!({})).await?;
        }
        for i in 0..4 {
            let ips = lab.wait_ips(&format!("p{i}")).await?;
            assert!(ip_in(&ips[0], "198.51.100.100", "198.51.100.103"), "p{i}: {ips:?}");
        }
        lab.service("p4", json!({})).await?;
        let ips = lab.wait_ips("p4").await?;
        assert!(ip_in(&ips[0], "198.51.100.104", "198.51.100.107"), "p4: {ips:?}");
        lab.wait_pool_annotation("p4", &later).await?;
        // Namespace selector plus Service selector, at priority 0.
        lab.service("picked", json!({"spec": {"selector": {"app": "picked"}}, "metadata": {"labels": {"app": "picked"}}})).await?;
        let ips = lab.wait_ips("picked").await?;
        assert!(ip_in(&ips[0], "198.51.100.108", "198.51.100.111"), "picked: {ips:?}");
        lab.wait_pool_annotation("picked", &selected).await?;
        let _ = first;

        // avoidBuggyIPs: .255 is never given, and asking for it is refused.
        lab.service("buggy-auto", pool_annotation(&buggy)).await?;
        lab.wait_exact_ips("buggy-auto", &["198.51.100.254"]).await?;
        lab.service("buggy-asked", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": buggy, "ferrolb.io/loadBalancerIPs": "198.51.100.255"}}})).await?;
        lab.expect_refused("buggy-asked", &format!("198.51.100.255 ends in .0 or .255 and pool {buggy} avoids such addresses")).await?;

        // Dual stack.
        let families = lab.cluster.service_families().await?;
        if families.len() < 2 {
            println!("skipping the dual-stack cases: this cluster's Services are {families:?} only (single_stack_clusters_get_only_their_family covers it)");
        } else {
        lab.service("v6-only", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": dual}}, "spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}})).await?;
        let ips = lab.wait_ips("v6-only").await?;
        assert!(ips.len() == 1 && ip_in(&ips[0], "2001:db8:1::", "2001:db8:1::3"), "v6-only: {ips:?}");
        lab.service("require-dual", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": dual}}, "spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}})).await?;
        let ips = lab.wait_ips("require-dual").await?;
        assert!(ips.len() == 2 && ip_in(&ips[0], "198.51.100.120", "198.51.100.123") && ip_in(&ips[1], "2001:db8:1::", "2001:db8:1::3"), "require-dual: {ips:?}");
        lab.service("require-dual-v4-pool", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": manual}}, "spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}})).await?;
        lab.expect_refused("require-dual-v4-pool", &format!("pool {manual} has no IPv6 addresses")).await?;
        lab.service("require-dual-nowhere", json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}})).await?;
        lab.expect_refused("require-dual-nowhere", "no pool that serves this Service has free IPv4 and IPv6 addresses").await?;
        lab.service("prefer-dual", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": manual}}, "spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}})).await?;
        let ips = lab.wait_ips("prefer-dual").await?;
        assert!(ips.len() == 1 && ip_in(&ips[0], "198.51.100.96", "198.51.100.99"), "prefer-dual: {ips:?}");
        }

        // Sharing one requested IP.
        let sharing = |key: &str, port: u16, extra: Value| {
            let mut value = json!({
                "metadata": {"annotations": {"ferrolb.io/address-pool": shared, "ferrolb.io/loadBalancerIPs": "198.51.100.124", "ferrolb.io/allow-shared-ip": key}},
                "spec": {"ports": [{"name": "p", "port": port, "protocol": "TCP"}]},
            });
            merge(&mut value, extra);
            value
        };
        lab.service("share-a", sharing("k1", 80, json!({}))).await?;
        lab.wait_exact_ips("share-a", &["198.51.100.124"]).await?;
        lab.service("share-b", sharing("k1", 443, json!({}))).await?;
        lab.wait_exact_ips("share-b", &["198.51.100.124"]).await?;
        lab.service("share-other-key", sharing("k2", 8080, json!({}))).await?;
        lab.expect_refused("share-other-key", "with a different sharing key").await?;
        lab.service("share-same-port", sharing("k1", 80, json!({}))).await?;
        lab.expect_refused("share-same-port", "which already serves TCP/80").await?;
        lab.service("share-local", sharing("k1", 9090, json!({"spec": {"externalTrafficPolicy": "Local"}}))).await?;
        lab.expect_refused("share-local", "with a different externalTrafficPolicy").await?;
        lab.service("share-no-key", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": shared, "ferrolb.io/loadBalancerIPs": "198.51.100.124"}}, "spec": {"ports": [{"name": "p", "port": 9191, "protocol": "TCP"}]}})).await?;
        lab.expect_refused("share-no-key", "this Service has no sharing key").await?;
        lab.finish().await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_lifecycle_status_and_restart() -> anyhow::Result<()> {
    TestCluster::run("ctl-lifecycle", |cluster| async move {
        let mut lab = Lab::start(cluster).await?;
        let ns = lab.ns().to_owned();
        // A one-address pool, two Services: the second waits, then reuses the address.
        let one = lab.pool("one", &["198.51.100.150/32"], json!({"serviceAllocation": {"priority": 0, "namespaces": [ns]}})).await?;
        lab.service("holder", json!({})).await?;
        lab.wait_exact_ips("holder", &["198.51.100.150"]).await?;
        lab.service("waiter", json!({})).await?;
        lab.expect_refused("waiter", "no pool that serves this Service has a free IPv4 address").await?;
        if lab.exact_pool_status() {
            lab.wait_pool_status(&one, json!({
                "assignedIPv4": "1", "availableIPv4": "0", "assigned": "IPv4 1",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Valid"}],
            })).await?;
        }
        lab.delete_service("holder").await?;
        lab.wait_exact_ips("waiter", &["198.51.100.150"]).await?;

        // Overlap: the later pool loses the common address and says which pool it overlaps.
        let over = lab.pool("over", &["198.51.100.150/31"], json!({})).await?;
        if lab.exact_pool_status() {
            lab.wait_pool_status(&over, json!({
                "assignedIPv4": "0", "availableIPv4": "1",
                "conditions": [{"type": "Ready", "status": "False", "reason": "Overlap", "message": format!("~overlap pool {one}")}],
            })).await?;
        }
        lab.delete_pool(&over).await?;

        // Shrink: the Service whose address is gone moves, with the reason; the other stays.
        let grow = lab.pool("grow", &["198.51.100.160/30"], json!({"serviceAllocation": {"priority": 1, "namespaces": [ns]}})).await?;
        lab.service("g1", json!({})).await?;
        let g1 = lab.wait_ips("g1").await?.remove(0);
        lab.service("g2", json!({})).await?;
        let g2 = lab.wait_ips("g2").await?.remove(0);
        assert_ne!(g1, g2);
        lab.patch_pool(&grow, json!({"spec": {"addresses": [format!("{g1}/32"), "198.51.100.168/30"]}})).await?;
        lab.wait_event("g2", "ClearAssignment", &format!("released {g2} from pool {grow}")).await?;
        let moved = eventually(WAIT, || async {
            let ips = ingress_ips(&lab.services.get("g2").await?);
            Ok(ips.first().filter(|ip| ip_in(ip, "198.51.100.168", "198.51.100.171")).cloned())
        }).await.context("g2 was not re-assigned inside the shrunk pool")?;
        lab.wait_exact_ips("g1", &[&g1]).await?;
        if lab.exact_pool_status() {
            lab.wait_pool_status(&grow, json!({"assignedIPv4": "2", "availableIPv4": "3"})).await?;
        }

        // Rename: a new pool with the same addresses, then the old one deleted. The new pool
        // covers both addresses once the old one is gone, so the Services keep their exact IPs
        // and only the pool annotation changes, with a Normal event saying so.
        let g2 = moved;
        let renamed = lab.pool("renamed", &[&format!("{g1}/32"), "198.51.100.168/30"], json!({"serviceAllocation": {"priority": 2, "namespaces": [ns]}})).await?;
        lab.delete_pool(&grow).await?;
        for (name, ip) in [("g1", &g1), ("g2", &g2)] {
            eventually(WAIT, || async {
                let s = lab.services.get(name).await?;
                Ok((annotation(&s, POOL_ANNOTATION) == Some(renamed.as_str())).then_some(()))
            }).await.with_context(|| format!("{name} did not move to the renamed pool"))?;
            lab.wait_exact_ips(name, &[ip.as_str()]).await?;
            lab.wait_event(name, "PoolChanged", &format!("kept {ip}, now from pool {renamed} instead of pool {grow}: pool {grow} was deleted")).await?;
        }
        // Split: a new pool for part of the range (an overlap loser while the renamed pool still
        // holds it), then the renamed pool shrinks to g1's address; g2 keeps its IP in the new pool.
        let split = lab.pool("split", &["198.51.100.168/30"], json!({"serviceAllocation": {"priority": 3, "namespaces": [ns]}})).await?;
        lab.patch_pool(&renamed, json!({"spec": {"addresses": [format!("{g1}/32")]}})).await?;
        for (name, pool, ip) in [("g1", &renamed, &g1), ("g2", &split, &g2)] {
            eventually(WAIT, || async {
                let s = lab.services.get(name).await?;
                Ok((annotation(&s, POOL_ANNOTATION) == Some(pool.as_str())).then_some(()))
            }).await.with_context(|| format!("{name} is not in pool {pool} after the split"))?;
            lab.wait_exact_ips(name, &[ip.as_str()]).await?;
        }
        lab.wait_event("g2", "PoolChanged", &format!("kept {g2}, now from pool {split} instead of pool {renamed}: pool {renamed} no longer contains {g2}")).await?;
        if lab.exact_pool_status() {
            lab.wait_pool_status(&split, json!({"assignedIPv4": "1", "availableIPv4": "3",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Valid"}]})).await?;
        }

        // Restart with existing assignments: nothing moves.
        let before = lab.all_ips().await?;
        lab.stop_controller()?;
        lab.start_controller()?;
        lab.service("after-restart", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": split}}})).await?;
        lab.wait_ips("after-restart").await?;
        let mut after = lab.all_ips().await?;
        after.remove("after-restart");
        assert_eq!(before, after, "IPs moved across a restart");

        // Delete: the Services of a deleted pool lose their IPs, with the reason.
        lab.delete_pool(&split).await?;
        lab.wait_exact_ips("g2", &[]).await?;
        lab.wait_event("g2", "ClearAssignment", &format!("pool {split} was deleted")).await?;
        lab.finish().await
    })
    .await
}

/// The sample Service of config/samples, with the sample pool's two families, as the README
/// deploys it.
fn sample_service(name: &str, pool: &str, class: Option<&str>) -> anyhow::Result<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/service.yaml"
    );
    let text = std::fs::read_to_string(path)?;
    let mut service = text
        .split("\n---\n")
        .map(serde_saphyr::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|doc| doc["kind"] == "Service")
        .context("config/samples/service.yaml has no Service")?;
    service["metadata"] = json!({"name": name, "annotations": {"ferrolb.io/address-pool": pool}});
    if let Some(class) = class {
        service["spec"]["loadBalancerClass"] = json!(class);
    }
    Ok(service)
}

/// What a cluster of one stack does with each family policy: the API server defaults and
/// refuses, and the controller hands out only the families the Service has, so that a
/// single-stack cluster never gets an address kube-proxy does not program. On the double this
/// runs on an IPv4-only, an IPv6-only and a dual-stack cluster; on a real cluster, on the stack it
/// has.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_stack_clusters_get_only_their_family() -> anyhow::Result<()> {
    use ferrolb_tests::apiserver::{ApiServerConfig, ServiceStack};
    let stacks: &[ServiceStack] =
        if std::env::var_os(ferrolb_tests::harness::REAL_CLUSTER_ENV).is_some() {
            &[ServiceStack::DualStack]
        } else {
            &[
                ServiceStack::IPv4,
                ServiceStack::IPv6,
                ServiceStack::DualStack,
            ]
        };
    for &stack in stacks {
        let config = ApiServerConfig {
            service_stack: stack,
            ..ApiServerConfig::default()
        };
        TestCluster::run_with("ctl-stack", config, |cluster| async move {
            let families = cluster.service_families().await?;
            println!("cluster Services: {families:?}");
            let mut lab = Lab::start(cluster).await?;
            let dual = families.len() == 2;
            let primary = families.first().cloned().unwrap_or_default();
            let other = if primary == "IPv4" { "IPv6" } else { "IPv4" };
            let v4 = ("198.51.100.176", "198.51.100.183");
            let v6 = ("2001:db8:1::b0", "2001:db8:1::b7");
            let in_family = |ip: &str, family: &str| {
                let (first, last) = if family == "IPv4" { v4 } else { v6 };
                ip_in(ip, first, last)
            };
            let pool = lab.pool("stack", &["198.51.100.176/29", "2001:db8:1::b0/125"], json!({})).await?;

            // The sample Service (PreferDualStack) gets every family of the cluster, no more.
            let sample: Service = serde_json::from_value(sample_service("sample", &pool, lab.class.as_deref())?)?;
            lab.services.create(&PostParams::default(), &sample).await?;
            let ips = lab.wait_ips("sample").await?;
            let service = lab.services.get("sample").await?;
            let service_families = service.spec.as_ref().and_then(|s| s.ip_families.clone()).unwrap_or_default();
            assert_eq!(service_families, families, "the API server gives PreferDualStack the cluster's families");
            if dual {
                lab.wait_exact_ips("sample", &[&ips[0], ips.get(1).map(String::as_str).unwrap_or("<none>")]).await?;
                assert!(ips.len() == 2 && in_family(&ips[0], &families[0]) && in_family(&ips[1], &families[1]), "sample: {ips:?}");
            } else {
                // No second address turns up later either.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let ips = ingress_ips(&lab.services.get("sample").await?);
                assert!(ips.len() == 1 && in_family(&ips[0], &primary), "sample on a {primary} cluster: {ips:?}");
            }

            // No policy: SingleStack of the cluster's default family.
            lab.service("default", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": pool}}})).await?;
            let ips = lab.wait_ips("default").await?;
            assert!(ips.len() == 1 && in_family(&ips[0], &primary), "default: {ips:?}");

            // RequireDualStack, and the other family alone: only a dual-stack cluster has them.
            let require = lab.service("require", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": pool}}, "spec": {"ipFamilyPolicy": "RequireDualStack"}})).await;
            let other_only = lab.service("other", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": pool}}, "spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": [other]}})).await;
            if dual {
                require?;
                other_only?;
                let ips = lab.wait_ips("require").await?;
                assert_eq!(ips.len(), 2, "require: {ips:?}");
                let ips = lab.wait_ips("other").await?;
                assert!(ips.len() == 1 && in_family(&ips[0], other), "other: {ips:?}");
            } else {
                let refused = format!("{:#}", require.err().context("RequireDualStack accepted on a single-stack cluster")?);
                assert!(refused.contains("this cluster is not configured for dual-stack services"), "{refused}");
                let refused = format!("{:#}", other_only.err().context("the other family accepted on a single-stack cluster")?);
                assert!(refused.contains("not configured on this cluster"), "{refused}");
            }

            // A pool without the Service's family serves it nothing, and says so.
            let only_other = lab.pool("only-other", &[if other == "IPv4" { "198.51.100.184/30" } else { "2001:db8:1::b8/126" }], json!({"autoAssign": false})).await?;
            lab.service("wrong-pool", json!({"metadata": {"annotations": {"ferrolb.io/address-pool": only_other}}})).await?;
            lab.expect_refused("wrong-pool", &format!("pool {only_other} has no {primary} addresses")).await?;
            lab.finish().await
        })
        .await?;
    }
    Ok(())
}

/// Entries the API server accepts but the controller refuses (the CEL cost budget cannot order
/// a range's ends) take only their own addresses out of the pool: Ready=False within 2 s with a
/// message naming each entry and its fix, a Warning event on the pool, no address of theirs ever
/// assigned, and the other entries still serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_entries_in_error_are_flagged_and_never_assigned() -> anyhow::Result<()> {
    TestCluster::run("ctl-badpool", |cluster| async move {
        let mut lab = Lab::start(cluster).await?;
        let created = std::time::Instant::now();
        let pool = lab
            .pool("bad", &["198.51.100.200/31", "198.51.100.215-198.51.100.208"], json!({}))
            .await?;
        let expected_message = "spec.addresses[1]: range start 198.51.100.215 is after its end 198.51.100.208; write 198.51.100.208-198.51.100.215";
        let status = eventually(Duration::from_secs(2), || async {
            let status = lab.pool_status(&pool).await?;
            let flagged = contains(&status, &json!({"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidAddresses", "message": format!("~{expected_message}")}]}));
            Ok(flagged.then_some(status))
        })
        .await
        .with_context(|| format!("pool {pool} was not flagged within 2 s"))?;
        println!("flagged in {:?}: {status}", created.elapsed());

        // A Warning event on the pool (cluster-scoped: its events live in "default").
        let pool_events: Api<Event> = Api::namespaced(lab.cluster.client.clone(), "default");
        let event = eventually(WAIT, || async {
            let events = pool_events
                .list(&ListParams::default().fields(&format!("regarding.name={pool}")))
                .await?;
            Ok(events.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("InvalidAddresses")
                    && e.note.as_deref().is_some_and(|n| n.contains(expected_message))
            }))
        })
        .await
        .context("no InvalidAddresses event on the pool")?;
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
        assert_eq!(
            event.regarding.as_ref().and_then(|r| r.kind.as_deref()),
            Some("IPAddressPool")
        );

        // Nothing of the reversed range is handed out, even when asked for by address.
        lab.service("asks", json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "198.51.100.210"}}}))
            .await?;
        lab.expect_refused("asks", "198.51.100.210 is in no pool").await?;
        // The valid entry still serves, until it is used up.
        for name in ["first", "second", "third"] {
            lab.service(name, json!({})).await?;
        }
        let mut assigned = Vec::new();
        for name in ["first", "second"] {
            assigned.extend(lab.wait_ips(name).await?);
        }
        assigned.sort();
        assert_eq!(assigned, ["198.51.100.200", "198.51.100.201"]);
        lab.expect_refused("third", "no pool that serves this Service has a free IPv4 address")
            .await?;

        // Fixed: Ready again, and the range's addresses become available.
        lab.patch_pool(&pool, json!({"spec": {"addresses": ["198.51.100.200/31", "198.51.100.208-198.51.100.215"]}}))
            .await?;
        lab.wait_pool_status(&pool, json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Valid"}]}))
            .await?;
        let third = lab.wait_ips("third").await?;
        assert!(ip_in(&third[0], "198.51.100.208", "198.51.100.215"), "{third:?}");
        lab.finish().await
    })
    .await
}

/// The group of each resource the double counts (it records plural/subresource, not the group).
fn group_of(resource: &str) -> Option<&'static str> {
    match resource.split('/').next()? {
        "services" | "namespaces" => Some(""),
        "ipaddresspools" | "l2advertisements" | "servicel2statuses" | "bgppeers"
        | "bgpadvertisements" => Some("ferrolb.io"),
        // kube-rs's Recorder writes events.k8s.io/v1 Events; the count cannot tell them from v1.
        "events" => Some("events.k8s.io"),
        "leases" => Some("coordination.k8s.io"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_under_api_faults_keeps_ips_unique_and_uses_only_granted_verbs() -> anyhow::Result<()>
{
    TestCluster::run("ctl-faults", |cluster| async move {
        if cluster
            .double_or_skip(
                "burst_under_api_faults",
                "needs fault injection and request counters",
            )
            .is_none()
        {
            return Ok(());
        }
        // Count from here on: installing the CRDs is not the controller's doing.
        let mut lab = Lab::start_after(cluster.clone(), |cluster| {
            if let Some(double) = &cluster.double {
                double.counters().reset();
            }
        })
        .await?;
        let double = cluster.double.as_ref().context("double")?;
        lab.pool("burst", &["198.51.100.0/24"], json!({})).await?;
        const SERVICES: usize = 120;
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..8 {
            let services = lab.services.clone();
            let objects: Vec<Service> = (0..SERVICES)
                .filter(|i| i % 8 == writer)
                .map(|i| serde_json::from_value(lab.service_json(&format!("burst-{i}"), json!({}))))
                .collect::<Result<_, _>>()?;
            writers.spawn(async move {
                for object in objects {
                    services.create(&PostParams::default(), &object).await?;
                }
                anyhow::Ok(())
            });
        }
        double
            .faults()
            .add_error_rule(ferrolb_tests::apiserver::ErrorRule::new(500, 0.2).for_verb("patch"));
        for round in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if round % 2 == 0 {
                double.faults().force_gone_on_next_watch();
            }
            double.faults().close_all_watches();
        }
        while let Some(result) = writers.join_next().await {
            result??;
        }
        let first = eventually(Duration::from_secs(30), || async {
            let all = lab.all_ips().await?;
            Ok((all.len() == SERVICES).then_some(all))
        })
        .await
        .context("not every Service got an IP under faults")?;
        double.faults().clear();
        let unique: BTreeSet<&String> = first.values().flatten().collect();
        assert_eq!(unique.len(), SERVICES, "an IP was given twice: {first:?}");
        // Dropped watches and a forced relist after the burst move nothing.
        double.faults().force_gone_on_next_watch();
        double.faults().close_all_watches();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            lab.all_ips().await?,
            first,
            "an IP moved after watches were dropped"
        );

        // Every request seen since the CRDs were installed, less what this test itself sends
        // (it creates Services and pools and lists Services and events), must be granted to
        // the controller. The double counts every client together, so verbs the test itself
        // uses on a resource are not attributed.
        let test_own: BTreeSet<(&str, &str)> =
            [("create", "services"), ("create", "ipaddresspools")].into();
        let mut refused = Vec::new();
        for ((verb, resource), count) in double.counters().snapshot() {
            if test_own.contains(&(verb.as_str(), resource.as_str())) {
                continue;
            }
            let allowed = group_of(&resource).is_some_and(|group| {
                ferrolb_crds::permissions::CONTROLLER.allows(group, &resource, &verb, None)
            });
            if !allowed {
                refused.push(format!("{verb} {resource} ×{count}"));
            }
        }
        assert!(
            refused.is_empty(),
            "requests outside the controller's RBAC: {refused:?}"
        );
        assert!(double.counters().get("patch", "services/status") >= SERVICES as u64);
        lab.finish().await
    })
    .await
}

/// Waits until the cluster-scoped object's status matches `expected`.
async fn wait_status<K>(api: &Api<K>, name: &str, expected: &Value) -> anyhow::Result<Value>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let result = eventually(WAIT, || async {
        let status = serde_json::to_value(api.get_status(name).await?)?["status"].clone();
        Ok(contains(&status, expected).then_some(status))
    })
    .await;
    match result {
        Ok(status) => Ok(status),
        Err(_) => {
            let status = serde_json::to_value(api.get_status(name).await?)?["status"].clone();
            bail!("{name} status never matched {expected}; it is {status}")
        }
    }
}

/// An event on a cluster-scoped object (their events live in "default").
async fn wait_cluster_event(
    cluster: &TestCluster,
    name: &str,
    event_reason: &str,
    text: &str,
) -> anyhow::Result<Event> {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    eventually(WAIT, || async {
        let list = events
            .list(&ListParams::default().fields(&format!("regarding.name={name}")))
            .await?;
        Ok(list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(event_reason)
                && e.note.as_deref().is_some_and(|n| n.contains(text))
        }))
    })
    .await
    .with_context(|| format!("no {event_reason} event containing {text:?} on {name}"))
}

/// What the schema cannot refuse about BGP objects, because it spans objects: an advertisement
/// naming a pool or peer that does not exist, an aggregate wider than its pool, a second peer
/// for the same router and nodes. Each gets Ready=False with the reason and a Warning event;
/// a fix gets Ready=True and a Normal event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bgp_objects_get_conditions_and_events_for_what_cel_cannot_refuse() -> anyhow::Result<()> {
    use ferrolb_crds::{BGPAdvertisement, BGPPeer};
    TestCluster::run("ctl-bgpcheck", |cluster| async move {
        let mut lab = Lab::start(cluster).await?;
        let peers: Api<BGPPeer> = Api::all(lab.cluster.client.clone());
        let advertisements: Api<BGPAdvertisement> = Api::all(lab.cluster.client.clone());
        let pool_name = lab.pool_name("bgp");
        let peer_name = lab.pool_name("tor");
        let twin_name = lab.pool_name("tor-twin");
        let adv_name = lab.pool_name("adv");
        let outcome = async {
            let adv: BGPAdvertisement = serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
                "metadata": {"name": adv_name},
                "spec": {"ipAddressPools": [pool_name], "peers": [peer_name], "aggregationLength": 25},
            }))?;
            advertisements.create(&PostParams::default(), &adv).await?;
            let message = format!("pool {pool_name} does not exist; BGPPeer {peer_name} does not exist");
            wait_status(&advertisements, &adv_name, &json!({"conditions": [{"type": "Ready",
                "status": "False", "reason": "UnknownPool", "message": message}]})).await?;
            let event = wait_cluster_event(&lab.cluster, &adv_name, "UnknownPool", &message).await?;
            anyhow::ensure!(event.type_.as_deref() == Some("Warning"), "{event:?}");

            // The pool and the peer appear: valid, with a Normal event.
            lab.pool("bgp", &["198.51.100.128/25"], json!({})).await?;
            let peer = |name: &str| -> anyhow::Result<BGPPeer> {
                Ok(serde_json::from_value(json!({
                    "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
                    "metadata": {"name": name},
                    "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.254",
                             "peerPort": 1179},
                }))?)
            };
            peers.create(&PostParams::default(), &peer(&peer_name)?).await?;
            wait_status(&advertisements, &adv_name, &json!({"conditions": [{"type": "Ready",
                "status": "True", "reason": "Valid"}]})).await?;
            wait_cluster_event(&lab.cluster, &adv_name, "Valid", "is valid again").await?;
            wait_status(&peers, &peer_name, &json!({"conditions": [{"type": "Ready",
                "status": "True", "reason": "Valid"}]})).await?;

            // An aggregate wider than the pool.
            advertisements
                .patch(&adv_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"aggregationLength": 24}})))
                .await?;
            let wide = format!("aggregationLength 24 does not fit pool {pool_name}");
            wait_status(&advertisements, &adv_name, &json!({"conditions": [{"type": "Ready",
                "status": "False", "reason": "AggregationLengthTooShort", "message": format!("~{wide}")}]})).await?;
            wait_cluster_event(&lab.cluster, &adv_name, "AggregationLengthTooShort", &wide).await?;

            // A second peer for the same router and nodes.
            tokio::time::sleep(Duration::from_secs(1)).await; // creation timestamps are seconds
            peers.create(&PostParams::default(), &peer(&twin_name)?).await?;
            let duplicate = format!("BGPPeer {peer_name} (older) already peers with 198.51.100.254 port 1179");
            wait_status(&peers, &twin_name, &json!({"conditions": [{"type": "Ready",
                "status": "False", "reason": "DuplicatePeer", "message": format!("~{duplicate}")}]})).await?;
            wait_cluster_event(&lab.cluster, &twin_name, "DuplicatePeer", &duplicate).await?;
            anyhow::Ok(())
        }
        .await;
        // The harness deletes them too (they are named after the test's namespace); deleting
        // here keeps them from being judged by the next test's controller.
        for name in [&peer_name, &twin_name] {
            let _ = peers.delete(name, &DeleteParams::default()).await;
        }
        let _ = advertisements.delete(&adv_name, &DeleteParams::default()).await;
        outcome?;
        lab.finish().await
    })
    .await
}
