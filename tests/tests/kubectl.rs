//! kubectl against the double (or the real cluster named by
//! FERROLB_TEST_KUBECONFIG): get (server-side tables), -o yaml/json, describe,
//! create -f, apply (client- and server-side), patch --subresource=status,
//! delete and get -w.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferrolb_tests::harness::{TestCluster, kubectl_available};
use serde_json::Value;

const SERVICE_YAML: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_create_get_describe_patch_delete() -> anyhow::Result<()> {
    if !kubectl_available("kubectl_create_get_describe_patch_delete")? {
        return Ok(());
    }
    TestCluster::run("kubectl-basic", |cluster| async move {
        let out = cluster.kubectl_ok(&["create", "-f", "-"], Some(SERVICE_YAML))?;
        assert!(out.contains("service/web created"), "{out}");

        let table = cluster.kubectl_ok(&["get", "services"], None)?;
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] {
            assert!(header.contains(column), "{table}");
        }
        assert!(table.contains("LoadBalancer"), "{table}");
        if !cluster.is_real() {
            // A real cluster may run a load-balancer controller that fills it in.
            assert!(table.contains("<pending>"), "{table}");
        }

        let json_text = cluster.kubectl_ok(&["get", "service", "web", "-o", "json"], None)?;
        let service: Value = serde_json::from_str(&json_text)?;
        assert_eq!(service["spec"]["ports"][0]["protocol"], "TCP");
        let uid = service["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let yaml_text = cluster.kubectl_ok(&["get", "svc", "web", "-o", "yaml"], None)?;
        assert!(yaml_text.contains("kind: Service"));

        let event = format!(
            r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"web.announce"}},
            "involvedObject":{{"apiVersion":"v1","kind":"Service","name":"web","namespace":"{ns}","uid":"{uid}"}},
            "reason":"IPAllocated","message":"Assigned IP 198.51.100.40","type":"Normal",
            "source":{{"component":"ferrolb-controller"}},"count":1,
            "firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z"}}"#,
            ns = cluster.namespace
        );
        cluster.kubectl_ok(&["create", "-f", "-"], Some(&event))?;

        let status_patch = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"198.51.100.40","ipMode":"VIP"}]}}}"#;
        cluster.kubectl_ok(&["patch", "service", "web", "--subresource=status", "--type=merge", "-p", status_patch], None)?;
        let table = cluster.kubectl_ok(&["get", "svc", "web"], None)?;
        assert!(table.contains("198.51.100.40"), "{table}");

        let described = cluster.kubectl_ok(&["describe", "service", "web"], None)?;
        assert!(described.contains("LoadBalancer Ingress:") && described.contains("198.51.100.40"), "{described}");
        assert!(described.contains("IPAllocated"), "describe lists the service's events: {described}");

        let invalid = cluster.kubectl(&["patch", "service", "web", "--subresource=status", "--type=merge",
            "-p", r#"{"status":{"loadBalancer":{"ingress":[{"ip":"nope"}]}}}"#])?;
        assert!(!invalid.status.success());
        assert!(String::from_utf8_lossy(&invalid.stderr).contains("must be a valid IP address"));

        cluster.kubectl_ok(&["delete", "service", "web"], None)?;
        let gone = cluster.kubectl(&["get", "service", "web"])?;
        assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_apply_client_and_server_side() -> anyhow::Result<()> {
    if !kubectl_available("kubectl_apply_client_and_server_side")? {
        return Ok(());
    }
    TestCluster::run("kubectl-apply", |cluster| async move {
        let out = cluster.kubectl_ok(&["apply", "-f", "-"], Some(SERVICE_YAML))?;
        assert!(out.contains("created"), "{out}");
        let out = cluster.kubectl_ok(&["apply", "-f", "-"], Some(SERVICE_YAML))?;
        assert!(out.contains("unchanged"), "{out}");
        let changed = SERVICE_YAML.replace("targetPort: 8080", "targetPort: 9090");
        let out = cluster.kubectl_ok(&["apply", "-f", "-"], Some(&changed))?;
        assert!(out.contains("configured"), "{out}");
        let target = cluster.kubectl_ok(
            &[
                "get",
                "svc",
                "web",
                "-o",
                "jsonpath={.spec.ports[0].targetPort}",
            ],
            None,
        )?;
        assert_eq!(target, "9090");
        let node_port = cluster.kubectl_ok(
            &[
                "get",
                "svc",
                "web",
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
            None,
        )?;
        assert!(
            !node_port.is_empty(),
            "client-side apply keeps the allocated nodePort"
        );

        let out = cluster.kubectl_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&changed.replace("app: web", "app: web2")),
        )?;
        assert!(out.contains("serverside-applied"), "{out}");
        let selector = cluster.kubectl_ok(
            &["get", "svc", "web", "-o", "jsonpath={.spec.selector.app}"],
            None,
        )?;
        assert_eq!(selector, "web2");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_shows_crd_printer_columns() -> anyhow::Result<()> {
    if !kubectl_available("kubectl_shows_crd_printer_columns")? {
        return Ok(());
    }
    TestCluster::run("kubectl-crd", |cluster| async move {
        let group = unique_group(&cluster.namespace);
        let crd = serde_json::to_string(&widget_crd(&group))?;
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(&crd))?;
        let outcome = (|| {
            cluster.kubectl_ok(&["wait", "--for=condition=Established", "--timeout=30s", &format!("crd/widgets.{group}")], None)?;
            let widget = format!(
                "{{\"apiVersion\":\"{group}/v1\",\"kind\":\"Widget\",\"metadata\":{{\"name\":\"w1\"}},\"spec\":{{\"size\":7}}}}"
            );
            // The first apply may race discovery on a real cluster; retry briefly.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match cluster.kubectl_ok(&["apply", "-f", "-"], Some(&widget)) {
                    Ok(_) => break,
                    Err(err) if Instant::now() < deadline => {
                        let _ = err;
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(err) => return Err(err),
                }
            }
            cluster.kubectl_ok(&["patch", &format!("widgets.{group}"), "w1", "--subresource=status", "--type=merge",
                "-p", r#"{"status":{"phase":"Ready"}}"#], None)?;
            let table = cluster.kubectl_ok(&["get", &format!("widgets.{group}")], None)?;
            let mut lines = table.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            assert_eq!(header, vec!["NAME", "SIZE", "PHASE"], "{table}");
            let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
            assert_eq!(row, vec!["w1", "7", "Ready"], "{table}");
            let rejected = cluster.kubectl(&["patch", &format!("widgets.{group}"), "w1", "--type=merge", "-p", r#"{"spec":{"size":70}}"#])?;
            assert!(String::from_utf8_lossy(&rejected.stderr).contains("size must not exceed maxSize"));
            Ok::<_, anyhow::Error>(())
        })();
        cluster.kubectl_ok(&["delete", "crd", &format!("widgets.{group}")], None)?;
        outcome
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_get_watch_streams_changes() -> anyhow::Result<()> {
    if !kubectl_available("kubectl_get_watch_streams_changes")? {
        return Ok(());
    }
    TestCluster::run("kubectl-watch", |cluster| async move {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path())
            .args(["--namespace", &cluster.namespace, "get", "configmaps", "-w", "--request-timeout=20s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Give kubectl time to establish its watch before changing things.
        std::thread::sleep(Duration::from_millis(1500));
        // `kubectl create configmap` would send protobuf, which the double does not speak.
        let config_map = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"watched"},"data":{"a":"b"}}"#;
        cluster.kubectl_ok(&["create", "-f", "-"], Some(config_map))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match line_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.starts_with("watched");
                    seen.push(line);
                    if found {
                        break;
                    }
                }
                Err(_) => continue,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = reader.join();
        assert!(seen.iter().any(|l| l.starts_with("watched")), "kubectl get -w printed {seen:?}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_applies_the_project_manifests() -> anyhow::Result<()> {
    if !kubectl_available("kubectl_applies_the_project_manifests")? {
        return Ok(());
    }
    TestCluster::run("kubectl-manifests", |cluster| async move {
        if !cluster.only_on_double("applying config/", "it would install FerroLB cluster-wide") {
            return Ok(());
        }
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let samples = config.join("samples");
        if !config.join("kustomization.yaml").exists() || !samples.exists() {
            println!(
                "SKIPPED kubectl_applies_the_project_manifests: no config/ kustomization or samples"
            );
            return Ok(());
        }
        let config = config.to_string_lossy().into_owned();
        let out = cluster.kubectl_any_namespace_ok(&["apply", "-k", &config], None)?;
        assert!(
            out.contains(
                "customresourcedefinition.apiextensions.k8s.io/ipaddresspools.ferrolb.io created"
            ),
            "{out}"
        );
        let samples = samples.to_string_lossy().into_owned();
        let out =
            cluster.kubectl_any_namespace_ok(&["apply", "-n", "default", "-f", &samples], None)?;
        assert!(
            out.contains("ipaddresspool.ferrolb.io/lan created"),
            "{out}"
        );
        // The pool's CEL rules run in the double: an entry with host bits is refused.
        let pools = cluster
            .kubectl_any_namespace_ok(&["get", "ipaddresspools", "lan", "-o", "json"], None)?;
        let mut pool: serde_json::Value = serde_json::from_str(&pools)?;
        pool["spec"]["addresses"] = serde_json::json!(["198.51.100.250/24"]);
        let rejected =
            cluster.kubectl_with_input(&["replace", "-f", "-"], Some(&pool.to_string()))?;
        assert!(!rejected.status.success());
        let stderr = String::from_utf8_lossy(&rejected.stderr);
        assert!(
            stderr.contains("198.51.100.250/24 has host bits set"),
            "{stderr}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_imperative_create_commands() -> anyhow::Result<()> {
    if !kubectl_available("kubectl_imperative_create_commands")? {
        return Ok(());
    }
    TestCluster::run("kubectl-imperative", |cluster| async move {
        // These send protobuf bodies.
        cluster.kubectl_ok(&["create", "configmap", "cm1", "--from-literal=a=b"], None)?;
        cluster.kubectl_ok(
            &[
                "create",
                "secret",
                "generic",
                "s1",
                "--from-literal=pw=hunter2",
            ],
            None,
        )?;
        cluster.kubectl_ok(
            &["create", "service", "loadbalancer", "lb", "--tcp=80:8080"],
            None,
        )?;
        let data = cluster.kubectl_ok(
            &["get", "configmap", "cm1", "-o", "jsonpath={.data.a}"],
            None,
        )?;
        assert_eq!(data, "b");
        let secret =
            cluster.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.pw}"], None)?;
        assert_eq!(secret, "aHVudGVyMg==");
        let service = cluster.kubectl_ok(&["get", "service", "lb", "-o", "json"], None)?;
        let service: serde_json::Value = serde_json::from_str(&service)?;
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
        assert!(service["spec"]["ports"][0]["nodePort"].as_u64().is_some());
        assert!(service["spec"].get("externalName").is_none());
        let namespace = format!("{}-extra", cluster.namespace);
        cluster.kubectl_ok(&["create", "namespace", &namespace], None)?;
        cluster.kubectl_ok(&["delete", "namespace", &namespace], None)?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_describe_lists_events_published_through_events_v1() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    use kube::Resource as _;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    if !kubectl_available("kubectl_describe_lists_events_published_through_events_v1")? {
        return Ok(());
    }
    TestCluster::run("kubectl-events", |cluster| async move {
        cluster.kubectl_ok(&["create", "-f", "-"], Some(SERVICE_YAML))?;
        let services: kube::Api<Service> =
            kube::Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let reference = services.get("web").await?.object_ref(&());
        // As the controller publishes: events.k8s.io/v1 through kube-rs.
        let recorder = Recorder::new(
            cluster.client.clone(),
            Reporter {
                controller: "ferrolb-controller".into(),
                instance: Some("ferrolb-controller-test".into()),
            },
        );
        let event = Event {
            type_: EventType::Normal,
            reason: "IPAllocated".into(),
            note: Some("Assigned IP 198.51.100.41".into()),
            action: "Allocate".into(),
            secondary: None,
        };
        recorder.publish(&event, &reference).await?;

        // kubectl describe lists the Service's events through core v1.
        let described = cluster.kubectl_ok(&["describe", "service", "web"], None)?;
        let events = described.split("Events:").nth(1).unwrap_or_default();
        let line = events
            .lines()
            .find(|l| l.contains("IPAllocated"))
            .ok_or_else(|| anyhow::anyhow!("describe lists no IPAllocated event: {described}"))?;
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.first(), Some(&"Normal"), "{line}");
        assert_eq!(cells.get(1), Some(&"IPAllocated"), "{line}");
        assert!(
            cells.contains(&"ferrolb-controller"),
            "From is the reporting controller: {line}"
        );
        assert!(
            line.trim_end().ends_with("Assigned IP 198.51.100.41"),
            "{line}"
        );

        // Publishing it again grows a series, which describe counts.
        recorder.publish(&event, &reference).await?;
        let described = cluster.kubectl_ok(&["describe", "service", "web"], None)?;
        let events = described.split("Events:").nth(1).unwrap_or_default();
        assert!(
            events
                .lines()
                .any(|l| l.contains("IPAllocated") && l.contains("(x2 over")),
            "{described}"
        );

        // Both Event APIs print the same table.
        for resource in ["events", "events.events.k8s.io"] {
            let table = cluster.kubectl_ok(&["get", resource], None)?;
            let header: Vec<&str> = table
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            assert_eq!(
                header,
                vec!["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                "{table}"
            );
            let row = table
                .lines()
                .find(|l| l.contains("IPAllocated"))
                .ok_or_else(|| anyhow::anyhow!("kubectl get {resource}: {table}"))?;
            assert!(
                row.contains("Normal") && row.contains("service/web"),
                "{row}"
            );
            assert!(
                row.trim_end().ends_with("Assigned IP 198.51.100.41"),
                "{row}"
            );
        }
        let wide = cluster.kubectl_ok(&["get", "events", "-o", "wide"], None)?;
        let header = wide.lines().next().unwrap_or_default();
        for column in ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"] {
            assert!(header.contains(column), "{wide}");
        }
        let row = wide
            .lines()
            .find(|l| l.contains("IPAllocated"))
            .unwrap_or_default();
        assert!(
            row.contains("ferrolb-controller, ferrolb-controller-test"),
            "{wide}"
        );
        assert!(
            row.split_whitespace().any(|cell| cell == "2"),
            "the series count: {wide}"
        );
        Ok(())
    })
    .await
}
