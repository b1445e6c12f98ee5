//! The deployable manifests under config/: generated parts in sync with the code, every document
//! well formed for its kind, and the security settings the speaker and controller rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on bad fixtures

use std::path::{Path, PathBuf};

use ferrolb_crds::manifests::all_files;
use ferrolb_crds::permissions::{CONTROLLER, SPEAKER};
use ferrolb_crds::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Parses `doc` as `T` and checks nothing was lost on the way, so a misspelled field fails.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value, path: &Path) -> T {
    let parsed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let again = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        &again,
        doc,
        "{}: unknown or misspelled fields",
        path.display()
    );
    parsed
}

#[test]
fn generated_manifests_are_in_sync_with_the_code() {
    for file in all_files().unwrap() {
        let path = config_dir().join(&file.path);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == file.content,
            "{} is stale: run `cargo run -p ferrolb-crds --bin crdgen`",
            path.display()
        );
    }
}

#[test]
fn every_manifest_is_well_formed_for_its_kind() {
    let mut files = Vec::new();
    yaml_files(&config_dir(), &mut files);
    assert!(files.len() >= 12, "found only {files:?}");
    for path in &files {
        if path.ends_with("kustomization.yaml") {
            continue;
        }
        if path
            .strip_prefix(config_dir())
            .unwrap()
            .starts_with("monitoring")
        {
            // Prometheus rule files and their promtool tests, not Kubernetes objects
            // (scripts/check-operations checks them with promtool).
            for doc in documents(path) {
                assert!(
                    doc["groups"].is_array() || doc["rule_files"].is_array(),
                    "{}: neither a rules file nor a rules test",
                    path.display()
                );
            }
            continue;
        }
        let docs = documents(path);
        assert!(!docs.is_empty(), "{} is empty", path.display());
        for doc in &docs {
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: unnamed object",
                path.display()
            );
            match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
                (Some("v1"), Some("Namespace")) => drop(typed::<Namespace>(doc, path)),
                (Some("v1"), Some("ServiceAccount")) => drop(typed::<ServiceAccount>(doc, path)),
                (Some("v1"), Some("Service")) => {
                    drop(typed::<k8s_openapi::api::core::v1::Service>(doc, path))
                }
                (Some("apps/v1"), Some("Deployment")) => drop(typed::<Deployment>(doc, path)),
                (Some("apps/v1"), Some("DaemonSet")) => drop(typed::<DaemonSet>(doc, path)),
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                    drop(typed::<ClusterRole>(doc, path))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                    drop(typed::<ClusterRoleBinding>(doc, path))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => {
                    drop(typed::<Role>(doc, path))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                    drop(typed::<RoleBinding>(doc, path))
                }
                (Some("apiextensions.k8s.io/v1"), Some("CustomResourceDefinition")) => {
                    drop(typed::<CustomResourceDefinition>(doc, path))
                }
                (Some("ferrolb.io/v1beta1"), Some("IPAddressPool")) => {
                    let pool: IPAddressPool = typed(doc, path);
                    assert!(pool.spec.address_set().is_ok(), "{}", path.display());
                }
                (Some("ferrolb.io/v1beta1"), Some("L2Advertisement")) => {
                    drop(typed::<L2Advertisement>(doc, path))
                }
                (Some("ferrolb.io/v1beta1"), Some("BGPPeer")) => {
                    let peer: BGPPeer = typed(doc, path);
                    assert!(peer.spec.settings().is_ok(), "{}", path.display());
                }
                (Some("ferrolb.io/v1beta1"), Some("BGPAdvertisement")) => {
                    drop(typed::<BGPAdvertisement>(doc, path))
                }
                // The Prometheus Operator's, in config/components/prometheus.
                (Some("monitoring.coreos.com/v1"), Some("PodMonitor" | "PrometheusRule")) => {
                    assert!(doc["spec"].is_object(), "{}: no spec", path.display());
                    assert_eq!(doc["metadata"]["namespace"], "ferrolb-system", "{doc}");
                }
                other => panic!("{}: unexpected object {other:?}", path.display()),
            }
        }
    }
}

/// Samples must pass the same CEL rules the API server will apply.
#[test]
fn samples_pass_the_schema_rules() {
    let validator = kube_cel::Validator::new();
    let schema = |crd: CustomResourceDefinition| {
        serde_json::to_value(
            &crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap()
    };
    for (file, crd) in [
        ("samples/ipaddresspool.yaml", IPAddressPool::crd()),
        ("samples/l2advertisement.yaml", L2Advertisement::crd()),
        ("samples/bgppeer.yaml", BGPPeer::crd()),
        ("samples/bgpadvertisement.yaml", BGPAdvertisement::crd()),
    ] {
        let schema = schema(crd);
        for doc in documents(&config_dir().join(file)) {
            assert!(
                validator.validate(&schema, &doc, None).is_ok(),
                "{file} breaks a rule"
            );
        }
    }
}

#[test]
fn kustomization_lists_every_deployable_file_and_builds() {
    let kustomization = documents(&config_dir().join("kustomization.yaml")).remove(0);
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut files = Vec::new();
    yaml_files(&config_dir(), &mut files);
    for path in files {
        let relative = path
            .strip_prefix(config_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Samples, the optional kustomize components and the Prometheus files are not part of
        // the base.
        if relative == "kustomization.yaml"
            || ["samples/", "components/", "monitoring/"]
                .iter()
                .any(|dir| relative.starts_with(dir))
        {
            continue;
        }
        assert!(
            listed.contains(&relative.as_str()),
            "{relative} is not in kustomization.yaml"
        );
    }
    let output = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(config_dir())
        .output()
        .expect("kubectl is needed for this test (.ci/run installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    assert_eq!(docs.len(), 20);
    for doc in docs
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
    {
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
        if !cluster_scoped.contains(&doc["kind"].as_str().unwrap()) {
            assert_eq!(doc["metadata"]["namespace"], "ferrolb-system", "{doc}");
        }
    }
}

fn workload<T: DeserializeOwned + serde::Serialize>(file: &str) -> T {
    let path = config_dir().join(file);
    typed(&documents(&path)[0], &path)
}

fn only_container(pod: &PodSpec) -> &Container {
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

#[test]
fn controller_runs_unprivileged_with_probes() {
    let deployment: Deployment = workload("controller.yaml");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(CONTROLLER.account_name().as_str())
    );
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let container = only_container(&pod);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let capabilities = security.capabilities.as_ref().unwrap();
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(capabilities.add.is_none());
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    assert!(container.resources.as_ref().unwrap().requests.is_some());
}

#[test]
fn speaker_has_host_network_and_only_net_raw_and_sys_nice() {
    let daemonset: DaemonSet = workload("speaker.yaml");
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(SPEAKER.account_name().as_str())
    );
    assert_eq!(pod.host_network, Some(true));
    let tolerated: Vec<&str> = pod
        .tolerations
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|t| t.key.as_deref())
        .collect();
    assert!(tolerated.contains(&"node-role.kubernetes.io/control-plane"));
    assert!(pod.termination_grace_period_seconds.unwrap() >= 2);
    let container = only_container(&pod);
    let capabilities = container
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(
        capabilities.add.as_deref(),
        Some(
            &[
                "NET_RAW".to_owned(),
                "BPF".to_owned(),
                "NET_ADMIN".to_owned(),
                "SYS_NICE".to_owned()
            ][..]
        )
    );
    let node_name = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME is set");
    let field = node_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
}

#[test]
fn granted_rbac_is_exactly_the_permission_list() {
    for component in [CONTROLLER, SPEAKER] {
        let path = config_dir().join(format!("rbac/{}.yaml", component.name));
        let mut granted: Vec<(String, String, String)> = Vec::new();
        for doc in documents(&path) {
            if doc["kind"] == "ClusterRole" || doc["kind"] == "Role" {
                for rule in doc["rules"].as_array().unwrap() {
                    for group in rule["apiGroups"].as_array().unwrap() {
                        for resource in rule["resources"].as_array().unwrap() {
                            for verb in rule["verbs"].as_array().unwrap() {
                                granted.push((
                                    group.as_str().unwrap().to_owned(),
                                    resource.as_str().unwrap().to_owned(),
                                    verb.as_str().unwrap().to_owned(),
                                ));
                            }
                        }
                    }
                }
            }
        }
        let mut listed: Vec<(String, String, String)> = component
            .permissions
            .iter()
            .flat_map(|p| {
                p.verbs.iter().map(|v| {
                    (
                        p.api_group.to_owned(),
                        p.resource.to_owned(),
                        (*v).to_owned(),
                    )
                })
            })
            .collect();
        granted.sort();
        listed.sort();
        assert_eq!(granted, listed, "{}", component.name);
    }
}
