//! Conformance suite for the API server double, through kube-rs.
//!
//! Every test also runs against a real cluster when FERROLB_TEST_KUBECONFIG
//! names a kubeconfig; checks that need the double say so and are skipped there.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ferrolb_tests::harness::{TestCluster, eventually};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Service};
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};

fn config_map(name: &str, labels: &[(&str, &str)]) -> anyhow::Result<ConfigMap> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value"}
    }))?)
}

fn service(name: &str, spec: Value) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

/// The names among `items` that this test created. Every namespace of a real cluster also
/// holds what its controllers put there (ConfigMaps such as kube-root-ca.crt, the default
/// ServiceAccount), so tests never assume a new namespace is empty.
fn own_names<K: kube::Resource>(items: &[K], created: &[&str]) -> Vec<String> {
    names(items)
        .into_iter()
        .filter(|n| created.contains(&n.as_str()))
        .collect()
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn well_known_namespaces_exist() -> anyhow::Result<()> {
    TestCluster::run("namespaces", |cluster| async move {
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace = namespaces.get(name).await?;
            assert_eq!(
                namespace.status.and_then(|s| s.phase).as_deref(),
                Some("Active")
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn discovery_lists_builtin_and_custom_types() -> anyhow::Result<()> {
    TestCluster::run("discovery", |cluster| async move {
        let group = unique_group(&cluster.namespace);
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(widget_crd(&group))?,
        )
        .await?;
        let crd_name = format!("widgets.{group}");
        let outcome = async {
            eventually(Duration::from_secs(20), || async {
                let crd = crds.get(&crd_name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            })
            .await?;
            let discovery = kube::Discovery::new(cluster.client.clone()).run().await?;
            let mut found = Vec::new();
            for api_group in discovery.groups() {
                for (resource, capabilities) in api_group.recommended_resources() {
                    found.push((
                        resource.group.clone(),
                        resource.plural.clone(),
                        capabilities,
                    ));
                }
            }
            let find = |group: &str, plural: &str| {
                found
                    .iter()
                    .find(|(g, p, _)| g == group && p == plural)
                    .map(|(_, _, caps)| caps.clone())
            };
            let services = find("", "services").ok_or_else(|| anyhow::anyhow!("no services"))?;
            assert!(
                services
                    .subresources
                    .iter()
                    .any(|(r, _)| r.plural == "services/status" || r.plural == "status")
            );
            assert!(find("coordination.k8s.io", "leases").is_some());
            assert!(find("discovery.k8s.io", "endpointslices").is_some());
            assert!(find("events.k8s.io", "events").is_some());
            let widgets = find(&group, "widgets").ok_or_else(|| anyhow::anyhow!("no widgets"))?;
            assert_eq!(widgets.scope, kube::discovery::Scope::Namespaced);
            Ok::<_, anyhow::Error>(())
        }
        .await;
        crds.delete(&crd_name, &DeleteParams::default()).await?;
        outcome
    })
    .await
}

#[tokio::test]
async fn crud_namespaced_and_cluster_scoped() -> anyhow::Result<()> {
    TestCluster::run("crud", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let created = maps
            .create(&PostParams::default(), &config_map("first", &[])?)
            .await?;
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        let rv: u64 = created
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default()
            .parse()?;
        assert!(rv > 0);

        let err = expect_code(
            maps.create(&PostParams::default(), &config_map("first", &[])?)
                .await,
            409,
        )?;
        assert_eq!(api_reason(&err), "AlreadyExists");

        let err = expect_code(maps.get("missing").await, 404)?;
        assert_eq!(api_reason(&err), "NotFound");
        if let kube::Error::Api(status) = &err {
            assert_eq!(
                status.details.as_ref().map(|d| d.name.as_str()),
                Some("missing")
            );
            assert_eq!(
                status.details.as_ref().map(|d| d.kind.as_str()),
                Some("configmaps")
            );
        }

        let mut changed = created.clone();
        changed.data = Some(BTreeMap::from([("key".to_string(), "new".to_string())]));
        let replaced = maps
            .replace("first", &PostParams::default(), &changed)
            .await?;
        assert_eq!(replaced.data, changed.data);
        let new_rv: u64 = replaced
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default()
            .parse()?;
        assert!(new_rv > rv, "resourceVersion must grow");

        maps.delete("first", &DeleteParams::default()).await?;
        expect_code(maps.get("first").await, 404)?;

        // A cluster-scoped type: namespaces.
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        let extra = format!("{}-x", cluster.namespace);
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(extra.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        assert!(
            namespaces
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(extra.as_str()))
        );
        namespaces.delete(&extra, &DeleteParams::default()).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn stale_resource_version_conflicts() -> anyhow::Result<()> {
    TestCluster::run("conflict", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let original = maps
            .create(&PostParams::default(), &config_map("cm", &[])?)
            .await?;
        let mut first = original.clone();
        first.data = Some(BTreeMap::from([("key".into(), "one".into())]));
        maps.replace("cm", &PostParams::default(), &first).await?;
        let mut stale = original.clone();
        stale.data = Some(BTreeMap::from([("key".into(), "two".into())]));
        let err = expect_code(
            maps.replace("cm", &PostParams::default(), &stale).await,
            409,
        )?;
        assert_eq!(api_reason(&err), "Conflict");
        assert!(api_message(&err).contains("the object has been modified"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn generate_name_and_generation() -> anyhow::Result<()> {
    TestCluster::run("generation", |cluster| async move {
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let mut svc = service("", json!({"ports": [{"port": 80}]}))?;
        svc.metadata.name = None;
        svc.metadata.generate_name = Some("web-".into());
        let created = services.create(&PostParams::default(), &svc).await?;
        let name = created.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        // Core types carry no generation on kube-apiserver (custom resources do; see
        // custom_resources_follow_their_crd), and a spec change does not add one.
        assert_eq!(created.metadata.generation, None);
        let respecced = services
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}})),
            )
            .await?;
        assert_eq!(respecced.metadata.generation, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn label_and_field_selectors() -> anyhow::Result<()> {
    TestCluster::run("selectors", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        for (name, labels) in [
            ("a", vec![("app", "web"), ("tier", "front")]),
            ("b", vec![("app", "db")]),
            ("c", vec![("app", "cache"), ("tier", "back")]),
        ] {
            maps.create(&PostParams::default(), &config_map(name, &labels)?).await?;
        }
        for (selector, expected) in [
            ("app=web", vec!["a"]),
            ("app==db", vec!["b"]),
            ("app!=web", vec!["b", "c"]),
            ("app in (web,cache)", vec!["a", "c"]),
            ("app notin (web,cache)", vec!["b"]),
            ("tier", vec!["a", "c"]),
            ("!tier", vec!["b"]),
            ("tier,app!=cache", vec!["a"]),
        ] {
            let listed = maps.list(&ListParams::default().labels(selector)).await?;
            assert_eq!(own_names(&listed.items, &["a", "b", "c"]), expected, "labelSelector {selector}");
        }
        let by_name = maps.list(&ListParams::default().fields("metadata.name=b")).await?;
        assert_eq!(names(&by_name.items), vec!["b"]);
        let by_namespace = maps
            .list(&ListParams::default().fields(&format!("metadata.namespace={}", cluster.namespace)).labels("app"))
            .await?;
        assert_eq!(by_namespace.items.len(), 3);

        let events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        for (name, object) in [("e1", "svc-a"), ("e2", "svc-b")] {
            let event: CoreEvent = serde_json::from_value(json!({
                "metadata": {"name": name},
                "involvedObject": {"kind": "Service", "name": object, "namespace": cluster.namespace},
                "reason": "Test", "message": "hello", "type": "Normal",
            }))?;
            events.create(&PostParams::default(), &event).await?;
        }
        let selected = events
            .list(&ListParams::default().fields("involvedObject.name=svc-b,involvedObject.kind=Service"))
            .await?;
        assert_eq!(names(&selected.items), vec!["e2"]);
        expect_code(maps.list(&ListParams::default().fields("data.key=value")).await, 400)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() -> anyhow::Result<()> {
    TestCluster::run("paging", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        for i in 0..5 {
            maps.create(
                &PostParams::default(),
                &config_map(&format!("page-{i}"), &[("paging", "yes")])?,
            )
            .await?;
        }
        let mut seen = Vec::new();
        let mut params = ListParams::default().labels("paging").limit(2);
        for _ in 0..5 {
            let page = maps.list(&params).await?;
            assert!(page.items.len() <= 2);
            seen.extend(names(&page.items));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_reports_changes_in_order() -> anyhow::Result<()> {
    TestCluster::run("watch", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let start = maps.list(&ListParams::default()).await?;
        let from = start.metadata.resource_version.unwrap_or_default();
        let stream = maps
            .watch(&WatchParams::default().timeout(10), &from)
            .await?;
        let mut stream = stream.boxed();
        let created = maps
            .create(&PostParams::default(), &config_map("w", &[])?)
            .await?;
        maps.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"key": "2"}})),
        )
        .await?;
        maps.delete("w", &DeleteParams::default()).await?;
        let mut kinds = Vec::new();
        let mut versions = Vec::new();
        while kinds.len() < 3 {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await??;
            // A real cluster's controllers add their own ConfigMaps to a new namespace, maybe
            // after the list: only "w" is this test's.
            let about_w = |o: &ConfigMap| o.metadata.name.as_deref() == Some("w");
            match next {
                Some(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o))
                    if !about_w(&o) => {}
                Some(WatchEvent::Added(o)) => {
                    kinds.push("ADDED");
                    versions.push(o.metadata.resource_version);
                }
                Some(WatchEvent::Modified(o)) => {
                    kinds.push("MODIFIED");
                    versions.push(o.metadata.resource_version);
                }
                Some(WatchEvent::Deleted(o)) => {
                    kinds.push("DELETED");
                    versions.push(o.metadata.resource_version);
                }
                Some(WatchEvent::Bookmark(_)) => {}
                Some(WatchEvent::Error(status)) => anyhow::bail!("watch error: {status:?}"),
                None => anyhow::bail!("watch ended early"),
            }
        }
        assert_eq!(kinds, vec!["ADDED", "MODIFIED", "DELETED"]);
        assert_eq!(versions[0], created.metadata.resource_version);
        let numbers: Vec<u64> = versions
            .iter()
            .filter_map(|v| v.as_ref()?.parse().ok())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_from_compacted_version_is_gone() -> anyhow::Result<()> {
    TestCluster::run("gone", |cluster| async move {
        let Some(double) = cluster.double_or_skip(
            "watch_from_compacted_version_is_gone",
            "compaction on a real cluster takes minutes",
        ) else {
            return Ok(());
        };
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let old = maps
            .create(&PostParams::default(), &config_map("old", &[])?)
            .await?;
        double.set_history_limit(2);
        for i in 0..5 {
            maps.create(&PostParams::default(), &config_map(&format!("n{i}"), &[])?)
                .await?;
        }
        let from = old.metadata.resource_version.unwrap_or_default();
        let mut stream = maps
            .watch(&WatchParams::default().timeout(5), &from)
            .await?
            .boxed();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await??;
        match first {
            Some(WatchEvent::Error(status)) => {
                assert_eq!(status.code, 410);
                assert_eq!(status.reason, "Expired");
            }
            other => anyhow::bail!("expected a 410 ERROR event, got {other:?}"),
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_sends_bookmarks_when_asked() -> anyhow::Result<()> {
    TestCluster::run("bookmarks", |cluster| async move {
        if !cluster.only_on_double(
            "bookmark timing",
            "real clusters send bookmarks about once a minute",
        ) {
            return Ok(());
        }
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        maps.create(&PostParams::default(), &config_map("b", &[])?)
            .await?;
        let list = maps.list(&ListParams::default()).await?;
        let from: u64 = list.metadata.resource_version.unwrap_or_default().parse()?;
        let params = WatchParams::default().timeout(10);
        assert!(params.bookmarks, "kube-rs asks for bookmarks by default");
        let mut stream = maps.watch(&params, &from.to_string()).await?.boxed();
        let bookmark = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(event) = stream.try_next().await? {
                if let WatchEvent::Bookmark(b) = event {
                    return Ok::<_, anyhow::Error>(Some(b));
                }
            }
            Ok(None)
        })
        .await??;
        let bookmark = bookmark.ok_or_else(|| anyhow::anyhow!("no bookmark"))?;
        let at: u64 = bookmark.metadata.resource_version.parse()?;
        assert!(at >= from);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_bookmark() -> anyhow::Result<()> {
    TestCluster::run("streaming", |cluster| async move {
        if !cluster.only_on_double(
            "sendInitialEvents",
            "the WatchList feature gate may be off on a real cluster",
        ) {
            return Ok(());
        }
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        for name in ["s1", "s2"] {
            maps.create(&PostParams::default(), &config_map(name, &[])?)
                .await?;
        }
        let config = watcher::Config::default().streaming_lists();
        let mut events = watcher(maps.clone(), config).boxed();
        let mut initial = Vec::new();
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.try_next().await? {
                match event {
                    watcher::Event::InitApply(o) => {
                        let name = o.metadata.name.unwrap_or_default();
                        if ["s1", "s2"].contains(&name.as_str()) {
                            initial.push(name);
                        }
                    }
                    watcher::Event::InitDone => return Ok::<_, anyhow::Error>(true),
                    _ => {}
                }
            }
            Ok(false)
        })
        .await??;
        assert!(done);
        initial.sort();
        assert_eq!(initial, vec!["s1", "s2"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn finalizers_hold_deletion() -> anyhow::Result<()> {
    TestCluster::run("finalizers", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let mut cm = config_map("held", &[])?;
        cm.metadata.finalizers = Some(vec!["ferrolb.test/hold".into()]);
        maps.create(&PostParams::default(), &cm).await?;
        maps.delete("held", &DeleteParams::default()).await?;
        let pending = maps.get("held").await?;
        assert!(pending.metadata.deletion_timestamp.is_some());
        maps.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
        eventually(Duration::from_secs(10), || async {
            Ok(maps.get_opt("held").await?.is_none().then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn owner_deletion_cascades_to_dependents() -> anyhow::Result<()> {
    TestCluster::run("gc", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let owner = maps
            .create(&PostParams::default(), &config_map("owner", &[])?)
            .await?;
        let mut dependent = config_map("dependent", &[])?;
        dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.clone().unwrap_or_default(),
        }))?]);
        maps.create(&PostParams::default(), &dependent).await?;
        maps.delete("owner", &DeleteParams::background()).await?;
        eventually(Duration::from_secs(30), || async {
            Ok(maps.get_opt("dependent").await?.is_none().then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() -> anyhow::Result<()> {
    TestCluster::run("status", |cluster| async move {
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        services
            .create(&PostParams::default(), &service("lb", json!({"type": "LoadBalancer", "ports": [{"port": 80}]}))?)
            .await?;
        let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.20", "ipMode": "VIP"}]}},
                             "spec": {"sessionAffinity": "ClientIP"}});
        let after_status = services
            .patch_status("lb", &PatchParams::default(), &Patch::Merge(ingress.clone()))
            .await?;
        let spec = after_status.spec.clone().unwrap_or_default();
        assert_eq!(spec.session_affinity.as_deref(), Some("None"), "status writes ignore spec");
        let ingress_ip = |svc: &Service| {
            svc.status.as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first())
                .and_then(|i| i.ip.clone())
        };
        assert_eq!(ingress_ip(&after_status).as_deref(), Some("198.51.100.20"));

        let main = services
            .patch("lb", &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.99"}]}}})))
            .await?;
        assert_eq!(ingress_ip(&main).as_deref(), Some("198.51.100.20"), "main writes ignore status");
        assert_eq!(main.metadata.generation, None, "Services carry no generation");

        let status_apply = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.21", "ipMode": "Proxy"}]}}});
        let applied = services
            .patch_status("lb", &PatchParams::apply("ferrolb-test").force(), &Patch::Apply(status_apply))
            .await?;
        assert_eq!(ingress_ip(&applied).as_deref(), Some("198.51.100.21"), "server-side apply on /status");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn patch_kinds_merge_json_strategic_and_apply() -> anyhow::Result<()> {
    TestCluster::run("patch", |cluster| async move {
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        services
            .create(
                &PostParams::default(),
                &service(
                    "p",
                    json!({"ports": [{"name": "http", "port": 80}], "selector": {"app": "p"}}),
                )?,
            )
            .await?;
        let merged = services
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})),
            )
            .await?;
        assert_eq!(
            merged
                .metadata
                .labels
                .unwrap_or_default()
                .get("m")
                .map(String::as_str),
            Some("1")
        );

        let json_patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"j": "1"}}
        ]))?;
        let patched = services
            .patch("p", &PatchParams::default(), &Patch::Json::<()>(json_patch))
            .await?;
        assert_eq!(
            patched
                .metadata
                .annotations
                .unwrap_or_default()
                .get("j")
                .map(String::as_str),
            Some("1")
        );
        let failing: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/type", "value": "NodePort"}
        ]))?;
        expect_code(
            services
                .patch("p", &PatchParams::default(), &Patch::Json::<()>(failing))
                .await,
            422,
        )?;

        let strategic = services
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"ports": [{"name": "https", "port": 443}]}})),
            )
            .await?;
        let ports: Vec<i32> = strategic
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect();
        // kube-apiserver puts the patch's new item before the ones it already had.
        assert_eq!(ports, vec![443, 80], "strategic merge merges ports by port");

        let apply = PatchParams::apply("ferrolb-test").force();
        let applied = services
            .patch(
                "p",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "p", "labels": {"applied": "yes", "extra": "1"}}})),
            )
            .await?;
        let labels = applied.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("applied").map(String::as_str), Some("yes"));
        assert_eq!(
            labels.get("m").map(String::as_str),
            Some("1"),
            "other owners' fields stay"
        );
        let reapplied = services
            .patch(
                "p",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "p", "labels": {"applied": "yes"}}})),
            )
            .await?;
        let labels = reapplied.metadata.labels.unwrap_or_default();
        assert!(
            !labels.contains_key("extra"),
            "a field dropped from the applied config is removed"
        );

        let created = services
            .patch(
                "p2",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "p2"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}})),
            )
            .await?;
        assert!(
            created.spec.and_then(|s| s.cluster_ip).is_some(),
            "apply creates missing objects"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn service_defaults_and_allocations() -> anyhow::Result<()> {
    TestCluster::run("svc-defaults", |cluster| async move {
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let plain = services
            .create(&PostParams::default(), &service("plain", json!({"ports": [{"port": 80}]}))?)
            .await?;
        let spec = plain.spec.clone().unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
        assert_eq!(spec.ip_families.as_ref().map(Vec::len), Some(1));
        let port = spec.ports.clone().unwrap_or_default().first().cloned().unwrap_or_default();
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.target_port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80)));
        assert!(port.node_port.is_none());
        if cluster.only_on_double("service CIDR check", "a real cluster has its own service CIDR") {
            assert!(spec.cluster_ip.unwrap_or_default().starts_with("203.0.113."));
        }

        let local = services
            .create(&PostParams::default(), &service("local", json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 443}]}))?)
            .await?;
        let spec = local.spec.clone().unwrap_or_default();
        assert_eq!(spec.allocate_load_balancer_node_ports, Some(true));
        let node_port = spec.ports.unwrap_or_default().first().and_then(|p| p.node_port).unwrap_or_default();
        assert!((30000..=32767).contains(&node_port), "{node_port}");
        assert!(spec.health_check_node_port.is_some());

        let clash = service("clash", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}))?;
        let err = expect_code(services.create(&PostParams::default(), &clash).await, 422)?;
        assert!(api_message(&err).contains("already allocated"), "{}", api_message(&err));

        let headless = services
            .create(&PostParams::default(), &service("headless", json!({"clusterIP": "None", "selector": {"app": "h"}, "ports": [{"port": 80}]}))?)
            .await?;
        let spec = headless.spec.unwrap_or_default();
        assert_eq!(spec.cluster_ips, Some(vec!["None".to_string()]));

        let no_ports = services
            .create(&PostParams::default(), &service("noports", json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}))?)
            .await?;
        let spec = no_ports.spec.unwrap_or_default();
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert!(spec.ports.unwrap_or_default().iter().all(|p| p.node_port.is_none()));

        services
            .patch_status("local", &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.30"}]}}})))
            .await?;
        let retyped = services
            .patch("local", &PatchParams::default(), &Patch::Merge(json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null}})))
            .await?;
        let spec = retyped.spec.unwrap_or_default();
        assert!(spec.ports.unwrap_or_default().iter().all(|p| p.node_port.is_none()), "nodePorts dropped");
        let ingress = retyped.status.and_then(|s| s.load_balancer).and_then(|lb| lb.ingress).unwrap_or_default();
        assert!(ingress.is_empty(), "status.loadBalancer dropped");

        if cluster.only_on_double("allocation release", "node ports may be taken by other tenants") {
            services.delete("plain", &DeleteParams::default()).await?;
            let reused = services
                .create(&PostParams::default(), &service("reuse", json!({"clusterIP": plain.spec.and_then(|s| s.cluster_ip), "type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}))?)
                .await?;
            assert!(reused.spec.is_some(), "released clusterIP and nodePort can be requested again");
            let dual = services
                .create(&PostParams::default(), &service("dual", json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}))?)
                .await?;
            let ips = dual.spec.and_then(|s| s.cluster_ips).unwrap_or_default();
            assert_eq!(ips.len(), 2);
            assert!(ips[1].starts_with("2001:db8:ffff::"), "{ips:?}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn invalid_load_balancer_status_and_annotations_are_rejected() -> anyhow::Result<()> {
    TestCluster::run("svc-invalid", |cluster| async move {
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        services
            .create(
                &PostParams::default(),
                &service(
                    "lb",
                    json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
                )?,
            )
            .await?;
        for (ingress, field) in [
            (
                json!({"ip": "not-an-ip"}),
                "status.loadBalancer.ingress[0].ip",
            ),
            (
                json!({"hostname": "lb.example.com", "ipMode": "VIP"}),
                "status.loadBalancer.ingress[0].ipMode",
            ),
            (
                json!({"ip": "198.51.100.1", "ipMode": "Direct"}),
                "status.loadBalancer.ingress[0].ipMode",
            ),
        ] {
            let patch = json!({"status": {"loadBalancer": {"ingress": [ingress]}}});
            let err = expect_code(
                services
                    .patch_status("lb", &PatchParams::default(), &Patch::Merge(patch))
                    .await,
                422,
            )?;
            assert_eq!(api_reason(&err), "Invalid");
            if let kube::Error::Api(status) = &err {
                let causes = status
                    .details
                    .as_ref()
                    .map(|d| d.causes.clone())
                    .unwrap_or_default();
                assert!(causes.iter().any(|c| c.field == field), "{causes:?}");
            }
        }
        let bad_key = json!({"metadata": {"annotations": {"bad key!": "x"}}});
        expect_code(
            services
                .patch("lb", &PatchParams::default(), &Patch::Merge(bad_key))
                .await,
            422,
        )?;
        let huge =
            json!({"metadata": {"annotations": {"ferrolb.test/huge": "x".repeat(300 * 1024)}}});
        expect_code(
            services
                .patch("lb", &PatchParams::default(), &Patch::Merge(huge))
                .await,
            422,
        )?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn custom_resources_follow_their_crd() -> anyhow::Result<()> {
    TestCluster::run("crd", |cluster| async move {
        let group = unique_group(&cluster.namespace);
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(widget_crd(&group))?,
        )
        .await?;
        let crd_name = format!("widgets.{group}");
        let outcome = async {
            let resource = widget_resource(&group);
            let widgets: Api<DynamicObject> =
                Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
            // A real cluster needs a moment to start serving a new CRD.
            let created = eventually(Duration::from_secs(20), || async {
                let widget = dynamic(
                    json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
                    "metadata": {"name": "w1"}, "spec": {"size": 3, "unknownField": true}}),
                )?;
                match widgets.create(&PostParams::default(), &widget).await {
                    Ok(created) => Ok(Some(created)),
                    Err(err) if api_code(&err) == Some(404) => Ok(None),
                    Err(err) => Err(err.into()),
                }
            })
            .await?;
            assert_eq!(
                created.data["spec"]["maxSize"], 10,
                "schema default applied"
            );
            assert!(
                created.data["spec"].get("unknownField").is_none(),
                "unknown field pruned"
            );

            let strict = PatchParams::default().validation_strict();
            let unknown = widgets
                .patch(
                    "w1",
                    &strict,
                    &Patch::Merge(json!({"spec": {"unknownField": 1}})),
                )
                .await;
            // kube-apiserver checks a patch after applying it: 422 on the field "patch".
            let err = expect_code(unknown, 422)?;
            assert!(
                api_message(&err)
                    .contains("strict decoding error: unknown field \"spec.unknownField\""),
                "{}",
                api_message(&err)
            );
            assert_eq!(api_reason(&err), "Invalid");

            let too_big = widgets
                .patch(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"size": 30}})),
                )
                .await;
            let err = expect_code(too_big, 422)?;
            assert!(
                api_message(&err).contains("size must not exceed maxSize"),
                "{}",
                api_message(&err)
            );
            let bad_enum = widgets
                .patch(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"color": "green"}})),
                )
                .await;
            expect_code(bad_enum, 422)?;
            let wrong_type = widgets
                .patch(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"size": "big"}})),
                )
                .await;
            expect_code(wrong_type, 422)?;

            let with_status = widgets
                .patch_status(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"size": 1}})),
                )
                .await?;
            assert_eq!(with_status.data["status"]["phase"], "Ready");
            assert_eq!(
                with_status.data["spec"]["size"], 3,
                "status writes ignore spec"
            );
            assert_eq!(with_status.metadata.generation, Some(1));
            let respecced = widgets
                .patch(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"size": 4}, "status": {"phase": "Lost"}})),
                )
                .await?;
            assert_eq!(
                respecced.data["status"]["phase"], "Ready",
                "main writes ignore status"
            );
            assert_eq!(respecced.metadata.generation, Some(2));
            let labelled = widgets
                .patch(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
                )
                .await?;
            assert_eq!(
                labelled.metadata.generation,
                Some(2),
                "metadata changes keep generation"
            );
            Ok::<_, anyhow::Error>(())
        }
        .await;
        crds.delete(&crd_name, &DeleteParams::default()).await?;
        outcome?;
        if cluster.only_on_double(
            "CRD removal cascade",
            "a real cluster removes CRs asynchronously",
        ) {
            let resource = widget_resource(&group);
            let widgets: Api<DynamicObject> =
                Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
            expect_code(widgets.get("w1").await, 404)?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watcher_recovers_from_closed_watches_and_forced_gone() -> anyhow::Result<()> {
    TestCluster::run("faults-watch", |cluster| async move {
        let Some(double) = cluster.double_or_skip(
            "watcher_recovers_from_closed_watches_and_forced_gone",
            "needs fault injection",
        ) else {
            return Ok(());
        };
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let watched = maps.clone();
        let watch_task = tokio::spawn(async move {
            let mut events = watcher(watched, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event {
                    let _ = seen_tx.send(o.metadata.name.unwrap_or_default());
                }
            }
        });
        let mut expected = Vec::new();
        for round in 0..3 {
            for i in 0..5 {
                let name = format!("r{round}-{i}");
                maps.create(&PostParams::default(), &config_map(&name, &[])?)
                    .await?;
                expected.push(name);
            }
            match round {
                0 => double.faults().close_all_watches(),
                1 => {
                    double.faults().force_gone_on_next_watch();
                    double.faults().close_all_watches();
                }
                _ => {}
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let all_seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(name) = seen_rx.recv().await {
                seen.insert(name);
                if expected.iter().all(|n| seen.contains(n)) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        watch_task.abort();
        assert!(all_seen, "watcher missed events; saw {seen:?}");
        assert!(
            double.counters().get("watch", "configmaps") >= 3,
            "watches were restarted"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn injected_errors_latency_and_write_rejection() -> anyhow::Result<()> {
    use ferrolb_tests::apiserver::ErrorRule;
    TestCluster::run("faults-errors", |cluster| async move {
        let Some(double) = cluster.double_or_skip(
            "injected_errors_latency_and_write_rejection",
            "needs fault injection",
        ) else {
            return Ok(());
        };
        let retrying: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let maps: Api<ConfigMap> =
            Api::namespaced(double.client_without_retries()?, &cluster.namespace);
        maps.create(&PostParams::default(), &config_map("f", &[])?)
            .await?;
        for code in [429u16, 500, 503] {
            double.faults().add_error_rule(
                ErrorRule::new(code, 1.0)
                    .for_verb("get")
                    .for_resource("configmaps"),
            );
            let err = expect_code(maps.get("f").await, code)?;
            if let kube::Error::Api(status) = &err {
                assert_eq!(
                    status.status,
                    Some(kube::core::response::StatusSummary::Failure)
                );
                if code != 500 {
                    let retry_after = status.details.as_ref().map(|d| d.retry_after_seconds);
                    assert_eq!(retry_after, Some(1), "{code} carries retryAfterSeconds");
                }
            }
            double.faults().clear_error_rules();
        }
        double
            .faults()
            .add_error_rule(ErrorRule::new(500, 0.5).for_verb("list"));
        let mut failures = 0;
        for _ in 0..10 {
            if maps.list(&ListParams::default()).await.is_err() {
                failures += 1;
            }
        }
        assert_eq!(failures, 5, "half the lists fail");
        double.faults().clear();

        // kube-rs retries 503 by itself: every other get failing goes unnoticed.
        let mut rule = ErrorRule::new(503, 0.5).for_verb("get");
        rule.retry_after_seconds = 0;
        double.faults().add_error_rule(rule);
        for _ in 0..4 {
            retrying.get("f").await?;
        }
        double.faults().clear();

        double
            .faults()
            .reject_writes_for(Duration::from_millis(300));
        expect_code(
            maps.create(&PostParams::default(), &config_map("g", &[])?)
                .await,
            503,
        )?;
        assert!(maps.get("f").await.is_ok(), "reads still work");
        tokio::time::sleep(Duration::from_millis(350)).await;
        maps.create(&PostParams::default(), &config_map("g", &[])?)
            .await?;

        double.faults().set_latency(Duration::from_millis(200));
        let started = std::time::Instant::now();
        maps.get("f").await?;
        assert!(started.elapsed() >= Duration::from_millis(200));
        double.faults().clear();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn counters_track_verbs_and_resources() -> anyhow::Result<()> {
    TestCluster::run("counters", |cluster| async move {
        let Some(double) = cluster.double_or_skip(
            "counters_track_verbs_and_resources",
            "needs the double's counters",
        ) else {
            return Ok(());
        };
        let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        double.counters().reset();
        let lease: Lease = serde_json::from_value(
            json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
        )?;
        leases.create(&PostParams::default(), &lease).await?;
        let current = leases.get("leader").await?;
        leases
            .replace("leader", &PostParams::default(), &current)
            .await?;
        leases
            .patch(
                "leader",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": "b"}})),
            )
            .await?;
        leases.list(&ListParams::default()).await?;
        leases.delete("leader", &DeleteParams::default()).await?;
        services
            .create(
                &PostParams::default(),
                &service(
                    "s",
                    json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
                )?,
            )
            .await?;
        services
            .patch_status(
                "s",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.5"}]}}}),
                ),
            )
            .await?;
        let counters = double.counters();
        for verb in ["create", "get", "update", "patch", "list", "delete"] {
            assert_eq!(counters.get(verb, "leases"), 1, "{verb} leases");
        }
        assert_eq!(counters.get("patch", "services/status"), 1);
        assert_eq!(counters.get("watch", "leases"), 0);
        let metrics = reqwest_free_get(&double.url(), "/metrics").await?;
        assert!(
            metrics
                .contains("apiserver_request_total{verb=\"patch\",resource=\"services/status\"} 1"),
            "{metrics}"
        );
        Ok(())
    })
    .await
}

/// A plain HTTP GET without pulling an HTTP client crate into the tests.
async fn reqwest_free_get(base: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn delete_collection_by_label() -> anyhow::Result<()> {
    TestCluster::run("deletecollection", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        for (name, group) in [("x1", "doomed"), ("x2", "doomed"), ("x3", "kept")] {
            maps.create(
                &PostParams::default(),
                &config_map(name, &[("group", group)])?,
            )
            .await?;
        }
        maps.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("group=doomed"),
        )
        .await?;
        let left = eventually(Duration::from_secs(10), || async {
            let left = maps.list(&ListParams::default().labels("group")).await?;
            Ok((left.items.len() == 1).then_some(left))
        })
        .await?;
        assert_eq!(names(&left.items), vec!["x3"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn other_builtin_types_round_trip() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Node, Secret};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::events::v1::Event as EventsEvent;
    TestCluster::run("builtins", |cluster| async move {
        let client = cluster.client.clone();
        let ns = cluster.namespace.as_str();
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.51.100.50"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))?;
        slices.create(&PostParams::default(), &slice).await?;
        let listed = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?;
        assert_eq!(names(&listed.items), vec!["web-abc"]);

        let events: Api<EventsEvent> = Api::namespaced(client.clone(), ns);
        let event: EventsEvent = serde_json::from_value(json!({
            "metadata": {"name": "ev1"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "ferrolb.test/controller", "reportingInstance": "ferrolb-test-1",
            "action": "Allocate", "reason": "IPAllocated", "type": "Normal", "note": "ok",
            "regarding": {"kind": "Service", "name": "web", "namespace": ns, "apiVersion": "v1"}
        }))?;
        events.create(&PostParams::default(), &event).await?;
        assert_eq!(
            events.get("ev1").await?.reason.as_deref(),
            Some("IPAllocated")
        );

        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))?;
        let stored = secrets.create(&PostParams::default(), &secret).await?;
        let value = stored
            .data
            .unwrap_or_default()
            .get("k")
            .map(|b| b.0.clone());
        assert_eq!(
            value.as_deref(),
            Some(&b"v"[..]),
            "stringData folds into data"
        );
        assert!(stored.string_data.is_none());
        secrets.delete("s", &DeleteParams::default()).await?;

        if cluster.only_on_double(
            "Node create",
            "registering a fake Node on a real cluster is intrusive",
        ) {
            let nodes: Api<Node> = Api::all(client.clone());
            let node: Node = serde_json::from_value(
                json!({"metadata": {"name": "node-a", "labels": {"zone": "a"}}}),
            )?;
            nodes.create(&PostParams::default(), &node).await?;
            let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "198.51.100.60"}]}});
            let patched = nodes
                .patch_status("node-a", &PatchParams::default(), &Patch::Merge(ready))
                .await?;
            assert_eq!(
                patched
                    .status
                    .and_then(|s| s.addresses)
                    .unwrap_or_default()
                    .len(),
                1
            );
            nodes.delete("node-a", &DeleteParams::default()).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn raw_watch_with_numeric_flag_and_timeout() -> anyhow::Result<()> {
    TestCluster::run("rawwatch", |cluster| async move {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        maps.create(&PostParams::default(), &config_map("present", &[])?)
            .await?;
        let uri = format!(
            "/api/v1/namespaces/{}/configmaps?watch=1&timeoutSeconds=1",
            cluster.namespace
        );
        let request = axum::http::Request::get(uri).body(Vec::new())?;
        let started = std::time::Instant::now();
        let text = cluster.client.request_text(request).await?;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timeoutSeconds ends the watch"
        );
        let events: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let added: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "ADDED")
            .filter_map(|e| e["object"]["metadata"]["name"].as_str())
            .filter(|name| *name == "present")
            .collect();
        assert_eq!(
            added,
            vec!["present"],
            "a watch without resourceVersion starts with the current state"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn malformed_requests_get_status_errors() -> anyhow::Result<()> {
    TestCluster::run("malformed", |cluster| async move {
        let resource = kube::discovery::ApiResource::erase::<Service>(&());
        let services: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
        let bad_ports = dynamic(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bad"}, "spec": {"ports": [5]}}))?;
        let err = services
            .create(&PostParams::default(), &bad_ports)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("a port that is not an object was accepted"))?;
        let code = api_code(&err).unwrap_or_default();
        assert!((400..500).contains(&code), "{err}");

        let uri = format!("/api/v1/namespaces/{}/configmaps", cluster.namespace);
        let request = axum::http::Request::post(uri)
            .header("Content-Type", "application/json")
            .body(b"{not json".to_vec())?;
        let err = cluster
            .client
            .request_text(request)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("invalid JSON was accepted"))?;
        assert_eq!(api_code(&err), Some(400), "{err}");
        if let kube::Error::Api(status) = &err {
            assert_eq!(
                status.status,
                Some(kube::core::response::StatusSummary::Failure)
            );
        }

        let apply = PatchParams::apply("ferrolb-test");
        let err = services
            .patch(
                "weird",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": "x"})),
            )
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("metadata that is not an object was accepted"))?;
        // kube-apiserver answers this one with a 500 ("failed to create typed patch object");
        // what matters is that it is refused and nothing changes.
        let code = api_code(&err).unwrap_or_default();
        assert!((400..600).contains(&code), "{err}");
        expect_code(services.get("weird").await, 404)?;
        Ok(())
    })
    .await
}

// Events: one storage behind core v1 and events.k8s.io/v1, as in kube-apiserver.

fn raw_events(cluster: &TestCluster, core: bool) -> Api<DynamicObject> {
    let resource = if core {
        kube::discovery::ApiResource::erase::<CoreEvent>(&())
    } else {
        kube::discovery::ApiResource::erase::<EventsV1Event>(&())
    };
    Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
}

/// An Event as served, as JSON (data and metadata side by side).
async fn served_event(cluster: &TestCluster, core: bool, name: &str) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(
        raw_events(cluster, core).get(name).await?,
    )?)
}

/// Absent or null, as Go serializes unset fields.
fn unset(object: &Value, field: &str) -> bool {
    object.get(field).is_none_or(Value::is_null)
}

fn cause_fields(err: &kube::Error) -> Vec<String> {
    match err {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A valid new-style Event about `regarding` (a Service of that name).
fn new_style_event(name: &str, namespace: &str, regarding: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "reportingController": "ferrolb.test/controller",
        "reportingInstance": "ferrolb-test-1",
        "action": "Allocate", "reason": "IPAllocated", "type": "Normal",
        "note": "Assigned 198.51.100.7",
        "regarding": {"apiVersion": "v1", "kind": "Service", "name": regarding, "namespace": namespace},
    })
}

/// A valid old-style Event about `regarding` (a Service of that name).
fn old_style_event(name: &str, namespace: &str, regarding: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": regarding, "namespace": namespace},
        "reason": "Synced", "message": "synced the old way", "type": "Normal",
        "source": {"component": "ferrolb-legacy", "host": "node-a"},
        "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
    })
}

#[tokio::test]
async fn events_written_as_events_v1_read_as_core() -> anyhow::Result<()> {
    TestCluster::run("events-v1-to-core", |cluster| async move {
        let ns = cluster.namespace.as_str();
        let events: Api<EventsV1Event> = Api::namespaced(cluster.client.clone(), ns);
        let written = json!({
            "metadata": {"name": "web.allocated", "labels": {"ferrolb.test/case": "v1-to-core"}},
            "eventTime": "2026-01-02T03:04:05.123456Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-02T03:09:05.654321Z"},
            "reportingController": "ferrolb.test/controller",
            "reportingInstance": "ferrolb-test-1",
            "action": "Allocate", "reason": "IPAllocated", "type": "Warning",
            "note": "Assigned 198.51.100.7",
            "regarding": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": ns,
                          "uid": "5b0c3f7e-1111-4000-8000-000000000001", "resourceVersion": "42",
                          "fieldPath": "spec.ports{http}"},
            "related": {"apiVersion": "v1", "kind": "ConfigMap", "name": "pool", "namespace": ns},
        });
        let created = events
            .create(
                &PostParams::default(),
                &serde_json::from_value(written.clone())?,
            )
            .await?;

        let core = served_event(&cluster, true, "web.allocated").await?;
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["kind"], "Event");
        assert_eq!(
            core["metadata"]["uid"].as_str(),
            created.metadata.uid.as_deref()
        );
        assert_eq!(
            core["metadata"]["resourceVersion"].as_str(),
            created.metadata.resource_version.as_deref(),
            "one object, one resourceVersion"
        );
        assert_eq!(core["metadata"]["labels"], written["metadata"]["labels"]);
        assert_eq!(core["involvedObject"], written["regarding"]);
        assert_eq!(core["related"], written["related"]);
        assert_eq!(core["message"], written["note"]);
        assert_eq!(core["reportingComponent"], written["reportingController"]);
        assert_eq!(core["reportingInstance"], written["reportingInstance"]);
        for same in ["eventTime", "series", "action", "reason", "type"] {
            assert_eq!(core[same], written[same], "{same}");
        }
        // The deprecated fields were not written, and nothing fills them in:
        // not the series (count, lastTimestamp), not the reporter (source).
        for deprecated in ["count", "firstTimestamp", "lastTimestamp"] {
            assert!(unset(&core, deprecated), "{deprecated}: {core}");
        }
        assert!(core.pointer("/source/component").is_none(), "{core}");
        assert!(core.pointer("/source/host").is_none(), "{core}");

        // The core list has it too, and the typed core client reads it.
        let core_events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), ns);
        let listed = core_events.list(&ListParams::default()).await?;
        assert!(names(&listed.items).contains(&"web.allocated".to_string()));

        // Read back through events.k8s.io/v1, it is what was written.
        let again = served_event(&cluster, false, "web.allocated").await?;
        for field in [
            "eventTime",
            "series",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "type",
            "note",
            "regarding",
            "related",
        ] {
            assert_eq!(again[field], written[field], "{field}");
        }
        for deprecated in [
            "deprecatedCount",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
        ] {
            assert!(unset(&again, deprecated), "{deprecated}: {again}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn events_written_as_core_read_as_events_v1() -> anyhow::Result<()> {
    TestCluster::run("events-core-to-v1", |cluster| async move {
        let ns = cluster.namespace.as_str();
        let core_events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), ns);
        let written = json!({
            "metadata": {"name": "web.synced"},
            "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": ns,
                               "uid": "5b0c3f7e-2222-4000-8000-000000000002",
                               "fieldPath": "spec.ports{http}"},
            "related": {"apiVersion": "v1", "kind": "ConfigMap", "name": "pool", "namespace": ns},
            "reason": "Synced", "message": "synced the old way", "type": "Normal",
            "source": {"component": "ferrolb-legacy", "host": "node-a"},
            "count": 3,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:05:00Z",
            "action": "Sync",
            "reportingComponent": "ferrolb.test/legacy", "reportingInstance": "legacy-1",
        });
        let created = core_events
            .create(&PostParams::default(), &serde_json::from_value(written.clone())?)
            .await?;

        let served = served_event(&cluster, false, "web.synced").await?;
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        assert_eq!(served["metadata"]["uid"].as_str(), created.metadata.uid.as_deref());
        assert_eq!(served["regarding"], written["involvedObject"]);
        assert_eq!(served["related"], written["related"]);
        assert_eq!(served["note"], written["message"]);
        assert_eq!(served["deprecatedSource"], written["source"]);
        assert_eq!(served["deprecatedCount"], written["count"]);
        assert_eq!(served["deprecatedFirstTimestamp"], written["firstTimestamp"]);
        assert_eq!(served["deprecatedLastTimestamp"], written["lastTimestamp"]);
        assert_eq!(served["reportingController"], written["reportingComponent"]);
        assert_eq!(served["reportingInstance"], written["reportingInstance"]);
        for same in ["action", "reason", "type"] {
            assert_eq!(served[same], written[same], "{same}");
        }
        // An old-style Event has no eventTime, and its count is no series.
        assert!(unset(&served, "eventTime"), "{served}");
        assert!(unset(&served, "series"), "{served}");
        for core_only in ["involvedObject", "message", "source", "count", "reportingComponent"] {
            assert!(served.get(core_only).is_none(), "{core_only}: {served}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn events_validation_depends_on_the_api() -> anyhow::Result<()> {
    TestCluster::run("events-validation", |cluster| async move {
        let ns = cluster.namespace.as_str();
        let events: Api<EventsV1Event> = Api::namespaced(cluster.client.clone(), ns);
        let core_events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), ns);
        let post = PostParams::default();

        let mut refusals: Vec<(Value, &str)> = Vec::new();
        let mut bare = new_style_event("bare", ns, "web");
        bare.as_object_mut().map(|o| o.remove("eventTime"));
        refusals.push((bare, "eventTime"));
        for (field, cause) in [
            ("reportingController", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
            ("type", "type"),
        ] {
            let mut event = new_style_event("unreported", ns, "web");
            event.as_object_mut().map(|o| o.remove(field));
            refusals.push((event, cause));
        }
        let mut elsewhere = new_style_event("elsewhere", ns, "web");
        elsewhere["regarding"]["namespace"] = Value::Null;
        refusals.push((elsewhere, "involvedObject.namespace"));
        // The deprecated fields are for reading old Events, not writing new ones.
        for (field, value, cause) in [
            ("deprecatedCount", json!(2), "count"),
            ("deprecatedSource", json!({"component": "x"}), "source"),
            ("deprecatedFirstTimestamp", json!("2026-01-01T00:00:00Z"), "firstTimestamp"),
        ] {
            let mut event = new_style_event("deprecated", ns, "web");
            event[field] = value;
            refusals.push((event, cause));
        }
        let mut short_series = new_style_event("short", ns, "web");
        short_series["series"] = json!({"count": 1, "lastObservedTime": "2026-01-02T03:04:05.123456Z"});
        refusals.push((short_series, "series.count"));
        for (body, cause) in refusals {
            let err = expect_code(
                events.create(&post, &serde_json::from_value(body.clone())?).await,
                422,
            )?;
            assert!(cause_fields(&err).iter().any(|f| f == cause), "{cause}: {err} for {body}");
        }

        // Core v1 takes old-style Events as they come, but a new-style one
        // (with eventTime) must still say who reported it.
        let mut half_new = old_style_event("half-new", ns, "web");
        half_new["eventTime"] = json!("2026-01-02T03:04:05.123456Z");
        let err = expect_code(
            core_events.create(&post, &serde_json::from_value(half_new)?).await,
            422,
        )?;
        assert!(cause_fields(&err).iter().any(|f| f == "reportingComponent"), "{err}");
        let mut other_namespace = old_style_event("other-ns", ns, "web");
        other_namespace["involvedObject"]["namespace"] = json!("kube-system");
        let err = expect_code(
            core_events.create(&post, &serde_json::from_value(other_namespace)?).await,
            422,
        )?;
        assert!(cause_fields(&err).iter().any(|f| f == "involvedObject.namespace"), "{err}");
        core_events
            .create(&post, &serde_json::from_value(old_style_event("old", ns, "web"))?)
            .await?;

        // Through events.k8s.io/v1 an Event only grows its series ...
        events
            .create(&post, &serde_json::from_value(new_style_event("rules", ns, "web"))?)
            .await?;
        let patch = PatchParams::default();
        let err = expect_code(
            events
                .patch("rules", &patch, &Patch::Merge(json!({"note": "changed"})))
                .await,
            422,
        )?;
        assert!(cause_fields(&err).iter().any(|f| f == "message"), "{err}");
        let grown = events
            .patch(
                "rules",
                &patch,
                &Patch::Merge(json!({"series": {"count": 2, "lastObservedTime": "2026-01-02T03:10:00.000000Z"}})),
            )
            .await?;
        assert_eq!(grown.series.map(|s| s.count), Some(2));
        // ... while core v1 changes what it likes, for both to see.
        core_events
            .patch("rules", &patch, &Patch::Merge(json!({"message": "changed through core"})))
            .await?;
        assert_eq!(
            events.get("rules").await?.note.as_deref(),
            Some("changed through core")
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn events_field_selectors_on_both_apis() -> anyhow::Result<()> {
    TestCluster::run("events-selectors", |cluster| async move {
        let ns = cluster.namespace.as_str();
        let events: Api<EventsV1Event> = Api::namespaced(cluster.client.clone(), ns);
        let core_events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), ns);
        let post = PostParams::default();
        let mut a = new_style_event("sel-a", ns, "svc-a");
        a["regarding"]["uid"] = json!("5b0c3f7e-3333-4000-8000-00000000000a");
        a["reportingController"] = json!("ferrolb.test/one");
        events.create(&post, &serde_json::from_value(a)?).await?;
        let mut b = old_style_event("sel-b", ns, "svc-b");
        b["type"] = json!("Warning");
        b["reason"] = json!("Beta");
        core_events.create(&post, &serde_json::from_value(b)?).await?;
        let mut c = new_style_event("sel-c", ns, "cm-c");
        c["regarding"]["kind"] = json!("ConfigMap");
        c["reportingController"] = json!("ferrolb.test/two");
        events.create(&post, &serde_json::from_value(c)?).await?;
        let ours = ["sel-a", "sel-b", "sel-c"];
        let only_ours = |listed: Vec<String>| -> Vec<String> {
            listed.into_iter().filter(|n| ours.contains(&n.as_str())).collect()
        };

        let describe_style = format!(
            "involvedObject.name=svc-a,involvedObject.namespace={ns},involvedObject.kind=Service,involvedObject.uid=5b0c3f7e-3333-4000-8000-00000000000a"
        );
        for (selector, expected) in [
            ("involvedObject.name=svc-a", vec!["sel-a"]),
            ("involvedObject.kind=Service", vec!["sel-a", "sel-b"]),
            ("involvedObject.apiVersion=v1,involvedObject.kind!=Service", vec!["sel-c"]),
            (describe_style.as_str(), vec!["sel-a"]),
            ("reason=IPAllocated", vec!["sel-a", "sel-c"]),
            ("type=Warning", vec!["sel-b"]),
            ("type!=Warning", vec!["sel-a", "sel-c"]),
            ("reportingComponent=ferrolb.test/one", vec!["sel-a"]),
            // source is source.component, or the reporter for new-style Events.
            ("source=ferrolb-legacy", vec!["sel-b"]),
            ("source=ferrolb.test/two", vec!["sel-c"]),
            ("metadata.name=sel-b", vec!["sel-b"]),
        ] {
            let listed = core_events.list(&ListParams::default().fields(selector)).await?;
            assert_eq!(only_ours(names(&listed.items)), expected, "core {selector}");
        }
        for (selector, expected) in [
            ("regarding.name=svc-b", vec!["sel-b"]),
            ("regarding.kind=ConfigMap", vec!["sel-c"]),
            (&format!("regarding.namespace={ns},regarding.kind=Service") as &str, vec!["sel-a", "sel-b"]),
            ("regarding.uid=5b0c3f7e-3333-4000-8000-00000000000a", vec!["sel-a"]),
            ("reportingController=ferrolb.test/two", vec!["sel-c"]),
            ("reason=Beta", vec!["sel-b"]),
            ("type=Normal", vec!["sel-a", "sel-c"]),
            ("source=ferrolb-legacy", vec!["sel-b"]),
            ("metadata.name=sel-a", vec!["sel-a"]),
        ] {
            let listed = events.list(&ListParams::default().fields(selector)).await?;
            assert_eq!(only_ours(names(&listed.items)), expected, "events.k8s.io {selector}");
        }
        // Each API takes its own field names only.
        for bad in ["regarding.name=svc-a", "note=x", "involvedObject.bogus=x"] {
            expect_code(core_events.list(&ListParams::default().fields(bad)).await, 400)?;
        }
        for bad in ["involvedObject.name=svc-a", "reportingComponent=x", "note=x"] {
            expect_code(events.list(&ListParams::default().fields(bad)).await, 400)?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn events_watches_see_writes_through_either_api() -> anyhow::Result<()> {
    TestCluster::run("events-watch", |cluster| async move {
        let ns = cluster.namespace.as_str();
        let events: Api<EventsV1Event> = Api::namespaced(cluster.client.clone(), ns);
        let core_events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), ns);
        let from = core_events
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let mut core_stream = core_events
            .watch(&WatchParams::default().fields("involvedObject.name=watched").timeout(20), &from)
            .await?
            .boxed();
        let mut new_stream = events
            .watch(&WatchParams::default().fields("regarding.name=watched").timeout(20), &from)
            .await?
            .boxed();

        let post = PostParams::default();
        let patch = PatchParams::default();
        events
            .create(&post, &serde_json::from_value(new_style_event("w-new", ns, "watched"))?)
            .await?;
        events
            .create(&post, &serde_json::from_value(new_style_event("w-elsewhere", ns, "unwatched"))?)
            .await?;
        events
            .patch(
                "w-new",
                &patch,
                &Patch::Merge(json!({"series": {"count": 2, "lastObservedTime": "2026-01-02T03:10:00.000000Z"}})),
            )
            .await?;
        core_events
            .create(&post, &serde_json::from_value(old_style_event("w-old", ns, "watched"))?)
            .await?;
        core_events
            .patch("w-old", &patch, &Patch::Merge(json!({"message": "changed the old way"})))
            .await?;
        core_events.delete("w-new", &DeleteParams::default()).await?;
        events.delete("w-old", &DeleteParams::default()).await?;
        let expected = vec![
            ("ADDED", "w-new"),
            ("MODIFIED", "w-new"),
            ("ADDED", "w-old"),
            ("MODIFIED", "w-old"),
            ("DELETED", "w-new"),
            ("DELETED", "w-old"),
        ];

        // (type, name, message as the API names it, series count)
        let mut through_core: Vec<(&str, String, Option<String>, Option<i32>)> = Vec::new();
        while through_core.len() < expected.len() {
            let next = tokio::time::timeout(Duration::from_secs(15), core_stream.try_next()).await??;
            let (kind, event) = match next {
                Some(WatchEvent::Added(e)) => ("ADDED", e),
                Some(WatchEvent::Modified(e)) => ("MODIFIED", e),
                Some(WatchEvent::Deleted(e)) => ("DELETED", e),
                Some(WatchEvent::Bookmark(_)) => continue,
                Some(WatchEvent::Error(status)) => anyhow::bail!("watch error: {status:?}"),
                None => anyhow::bail!("core watch ended early after {through_core:?}"),
            };
            let count = event.series.as_ref().and_then(|s| s.count);
            through_core.push((kind, event.metadata.name.unwrap_or_default(), event.message, count));
        }
        let mut through_v1: Vec<(&str, String, Option<String>, Option<i32>)> = Vec::new();
        while through_v1.len() < expected.len() {
            let next = tokio::time::timeout(Duration::from_secs(15), new_stream.try_next()).await??;
            let (kind, event) = match next {
                Some(WatchEvent::Added(e)) => ("ADDED", e),
                Some(WatchEvent::Modified(e)) => ("MODIFIED", e),
                Some(WatchEvent::Deleted(e)) => ("DELETED", e),
                Some(WatchEvent::Bookmark(_)) => continue,
                Some(WatchEvent::Error(status)) => anyhow::bail!("watch error: {status:?}"),
                None => anyhow::bail!("events.k8s.io watch ended early after {through_v1:?}"),
            };
            let count = event.series.as_ref().map(|s| s.count);
            through_v1.push((kind, event.metadata.name.unwrap_or_default(), event.note, count));
        }
        for seen in [&through_core, &through_v1] {
            let order: Vec<(&str, &str)> = seen.iter().map(|(k, n, _, _)| (*k, n.as_str())).collect();
            assert_eq!(order, expected, "{seen:?}");
            let new_note = Some("Assigned 198.51.100.7".to_string());
            assert_eq!(seen[0].2, new_note, "written as note, seen either way");
            assert_eq!(seen[1].3, Some(2), "the series");
            assert_eq!(seen[2].2.as_deref(), Some("synced the old way"));
            assert_eq!(seen[3].2.as_deref(), Some("changed the old way"));
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn events_deleted_through_one_api_are_gone_from_the_other() -> anyhow::Result<()> {
    TestCluster::run("events-delete", |cluster| async move {
        let ns = cluster.namespace.as_str();
        let events: Api<EventsV1Event> = Api::namespaced(cluster.client.clone(), ns);
        let core_events: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), ns);
        let post = PostParams::default();
        events
            .create(
                &post,
                &serde_json::from_value(new_style_event("d-new", ns, "web"))?,
            )
            .await?;
        core_events
            .create(
                &post,
                &serde_json::from_value(old_style_event("d-old", ns, "web"))?,
            )
            .await?;
        // One object: creating it again through the other API conflicts.
        expect_code(
            core_events
                .create(
                    &post,
                    &serde_json::from_value(old_style_event("d-new", ns, "web"))?,
                )
                .await,
            409,
        )?;
        core_events
            .delete("d-new", &DeleteParams::default())
            .await?;
        events.delete("d-old", &DeleteParams::default()).await?;
        for name in ["d-new", "d-old"] {
            expect_code(events.get(name).await, 404)?;
            expect_code(core_events.get(name).await, 404)?;
        }

        for i in 0..3 {
            events
                .create(
                    &post,
                    &serde_json::from_value(new_style_event(&format!("dc-{i}"), ns, "swept"))?,
                )
                .await?;
        }
        events
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().fields("regarding.name=swept"),
            )
            .await?;
        let left = eventually(Duration::from_secs(10), || async {
            let left = core_events
                .list(&ListParams::default().fields("involvedObject.name=swept"))
                .await?;
            Ok(left.items.is_empty().then_some(left))
        })
        .await?;
        assert!(left.items.is_empty());
        Ok(())
    })
    .await
}
