//! `ferrolb-migrate` against an API server (the double, or the real cluster named by
//! FERROLB_TEST_KUBECONFIG): what it writes for every fixture of `migrate/tests/fixtures` is
//! accepted by FerroLB's CRD schemas and CEL rules and stored as written, and `--from-cluster`
//! reads MetalLB's objects (from MetalLB-like CRDs, on the double only) and the legacy ConfigMap.
//! BGPPeers and BGPAdvertisements are compared after the API server's defaulting, and deleted
//! after each case (the harness cleans up pools and L2Advertisements only).
//! (An unreachable API and a missing kubeconfig are fixtures of `migrate/tests/fixtures`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use ferrolb_tests::components::binary;
use ferrolb_tests::harness::{TestCluster, kubectl_available};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrate/tests/fixtures")
}

struct Migrated {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn migrate(args: &[&str], input: Option<&str>) -> anyhow::Result<Migrated> {
    let mut child = Command::new(binary("ferrolb-migrate")?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ferrolb-migrate")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    if let Some(input) = input {
        stdin.write_all(input.as_bytes())?;
    }
    drop(stdin);
    let output = child.wait_with_output()?;
    Ok(Migrated {
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
        code: output.status.code(),
    })
}

/// The fixture's MetalLB objects with every name (and namespace) prefixed by the test's
/// namespace, so that every FerroLB object made from them, renamed or not, is named after it and
/// the harness deletes it on a real cluster.
fn named_after(prefix: &str, text: &str) -> anyhow::Result<String> {
    let documents: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(text)?]
    } else {
        serde_saphyr::from_multiple(text)?
    };
    let mut out = Vec::new();
    for mut document in documents.into_iter().filter(|d| !d.is_null()) {
        rename(prefix, &mut document)?;
        out.push(serde_saphyr::to_string(&document)?);
    }
    Ok(out.join("---\n"))
}

fn prefixed(prefix: &str, value: &mut Value) {
    if let Some(text) = value.as_str() {
        *value = Value::from(format!("{prefix}-{text}"));
    }
}

fn rename(prefix: &str, document: &mut Value) -> anyhow::Result<()> {
    if let Some(items) = document.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            rename(prefix, item)?;
        }
        return Ok(());
    }
    let api_version = document["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let is_legacy = document["kind"] == "ConfigMap" && document["metadata"]["name"] == "config";
    if !api_version.starts_with("metallb.io/") && !is_legacy {
        return Ok(());
    }
    if let Some(metadata) = document.get_mut("metadata") {
        prefixed(prefix, &mut metadata["namespace"]);
        if !is_legacy {
            prefixed(prefix, &mut metadata["name"]);
        }
    }
    // References to other objects follow their names: pools, peers, BFD profiles.
    for list in ["/spec/ipAddressPools", "/spec/peers"] {
        if let Some(names) = document.pointer_mut(list).and_then(Value::as_array_mut) {
            names.iter_mut().for_each(|name| prefixed(prefix, name));
        }
    }
    if let Some(profile) = document.pointer_mut("/spec/bfdProfile") {
        prefixed(prefix, profile);
    }
    if let Some(config) = document.pointer_mut("/data/config") {
        let mut legacy: Value = serde_saphyr::from_str(config.as_str().unwrap_or_default())?;
        for pool in legacy["address-pools"].as_array_mut().into_iter().flatten() {
            prefixed(prefix, &mut pool["name"]);
        }
        *config = Value::from(serde_saphyr::to_string(&legacy)?);
    }
    Ok(())
}

fn plural(kind: &str) -> anyhow::Result<&'static str> {
    Ok(match kind {
        "IPAddressPool" => "ipaddresspools.ferrolb.io",
        "L2Advertisement" => "l2advertisements.ferrolb.io",
        "BGPPeer" => "bgppeers.ferrolb.io",
        "BGPAdvertisement" => "bgpadvertisements.ferrolb.io",
        other => bail!("ferrolb-migrate wrote a {other}"),
    })
}

/// Applies what ferrolb-migrate wrote and checks each object is stored with that spec and those
/// labels; returns the objects.
fn apply_and_check(cluster: &TestCluster, written: &str) -> anyhow::Result<Vec<Value>> {
    cluster.kubectl_any_namespace_ok(&["apply", "-f", "-"], Some(written))?;
    let objects: Vec<Value> = serde_saphyr::from_multiple(written)?;
    for object in &objects {
        let name = object["metadata"]["name"].as_str().context("no name")?;
        let kind = object["kind"].as_str().context("no kind")?;
        let stored: Value = serde_json::from_str(
            &cluster.kubectl_any_namespace_ok(&["get", plural(kind)?, name, "-o", "json"], None)?,
        )?;
        assert_eq!(
            defaulted(kind, &stored["spec"])?,
            defaulted(kind, &object["spec"])?,
            "{kind} {name}"
        );
        assert_eq!(
            stored["metadata"]["labels"], object["metadata"]["labels"],
            "{kind} {name}"
        );
    }
    Ok(objects)
}

/// A spec with FerroLB's defaults filled in, as the API server fills them in from the schema:
/// the BGP types leave defaults out when writing (peerPort 179, holdTime 90s, aggregationLength
/// 32), the stored object has them.
fn defaulted(kind: &str, spec: &Value) -> anyhow::Result<Value> {
    Ok(match kind {
        "BGPPeer" => serde_json::to_value(serde_json::from_value::<ferrolb_crds::BGPPeerSpec>(
            spec.clone(),
        )?)?,
        "BGPAdvertisement" => serde_json::to_value(serde_json::from_value::<
            ferrolb_crds::BGPAdvertisementSpec,
        >(spec.clone())?)?,
        _ => spec.clone(),
    })
}

/// Deletes the BGP objects a case wrote: the harness's cleanup knows pools and L2Advertisements
/// only, and a legacy peer is named after its address, not the test.
fn delete_bgp_objects(cluster: &TestCluster, objects: &[Value]) -> anyhow::Result<()> {
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if matches!(kind, "BGPPeer" | "BGPAdvertisement") {
            let name = object["metadata"]["name"].as_str().context("no name")?;
            cluster.kubectl_any_namespace_ok(
                &["delete", plural(kind)?, name, "--ignore-not-found"],
                None,
            )?;
        }
    }
    Ok(())
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

// kubectl runs blocking; the in-process double needs other threads to answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_ferrolb_migrate_writes_the_api_server_accepts() -> anyhow::Result<()> {
    if !kubectl_available("what_ferrolb_migrate_writes_the_api_server_accepts")? {
        return Ok(());
    }
    TestCluster::run("migrate-apply", |cluster| async move {
        cluster.install_ferrolb_crds()?;
        for crd in ["bgppeers", "bgpadvertisements"] {
            cluster.kubectl_any_namespace_ok(
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    &format!("crd/{crd}.ferrolb.io"),
                ],
                None,
            )?;
        }
        let ns = cluster.namespace.clone();
        let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        cases.sort();
        let mut applied = 0;
        for case in cases {
            let Some(input) = ["input.yaml", "input.json"]
                .into_iter()
                .map(|name| case.join(name))
                .find(|path| path.exists())
            else {
                continue;
            };
            let expected_code: i32 = std::fs::read_to_string(case.join("exit-code"))?
                .trim()
                .parse()?;
            if expected_code == 2 {
                continue;
            }
            let input = named_after(&ns, &std::fs::read_to_string(&input)?)?;
            let run = migrate(&["-"], Some(&input))?;
            assert_eq!(run.code, Some(expected_code), "{case:?}:\n{}", run.stderr);
            if run.stdout.is_empty() {
                continue;
            }
            let objects = apply_and_check(&cluster, &run.stdout)
                .with_context(|| format!("{case:?}:\n{}", run.stdout))?;
            applied += objects.len();
            let name = case
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match name.as_str() {
                "written-differently" => {
                    let pool = find(&objects, "IPAddressPool", &format!("{ns}-lan"));
                    assert_eq!(
                        pool["spec"]["addresses"],
                        json!([
                            "198.51.100.0/24",
                            "2001:db8:1::10-2001:db8:1::20",
                            "2001:db8:1::/64"
                        ])
                    );
                    assert!(
                        pool["spec"]
                            .get("serviceAllocation")
                            .is_none_or(|a| a.get("priority").is_none())
                    );
                }
                "namespace-collision" => {
                    let advertisement =
                        find(&objects, "L2Advertisement", &format!("{ns}-site-a-{ns}-l2"));
                    assert_eq!(
                        advertisement["spec"]["ipAddressPools"],
                        json!([format!("{ns}-site-a-{ns}-lan")])
                    );
                }
                "legacy-configmap" => {
                    let advertisement = find(&objects, "L2Advertisement", &format!("{ns}-office"));
                    assert_eq!(
                        advertisement["spec"]["ipAddressPools"],
                        json!([format!("{ns}-office")])
                    );
                    find(&objects, "IPAddressPool", &format!("{ns}-edge"));
                    let bgp = find(&objects, "BGPAdvertisement", &format!("{ns}-edge"));
                    assert_eq!(bgp["spec"]["ipAddressPools"], json!([format!("{ns}-edge")]));
                    assert_eq!(bgp["spec"]["communities"], json!(["no-advertise"]));
                    let peer = find(&objects, "BGPPeer", "203.0.113.1");
                    assert_eq!(peer["spec"]["peerASN"], json!(64501));
                }
                "bgp" => {
                    let peer = find(&objects, "BGPPeer", &format!("{ns}-tor"));
                    assert_eq!(peer["spec"]["bfd"]["detectMultiplier"], json!(3));
                    assert_eq!(peer["spec"]["passwordSecret"], json!({"name": "tor-md5"}));
                    let advertisement = find(&objects, "BGPAdvertisement", &format!("{ns}-edge"));
                    assert_eq!(
                        advertisement["spec"]["peers"],
                        json!([format!("{ns}-router"), format!("{ns}-tor")])
                    );
                }
                _ => {}
            }
            delete_bgp_objects(&cluster, &objects)?;
        }
        assert!(applied >= 20, "only {applied} objects were applied");
        Ok(())
    })
    .await
}

/// A minimal namespaced `metallb.io` CRD: the objects' specs are kept as they come.
fn metallb_crd(kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.metallb.io")},
        "spec": {
            "group": "metallb.io",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
            "versions": [{
                "name": "v1beta1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn from_cluster_reads_metallbs_objects_and_legacy_configmap() -> anyhow::Result<()> {
    if !kubectl_available("from_cluster_reads_metallbs_objects_and_legacy_configmap")? {
        return Ok(());
    }
    TestCluster::run("migrate-from-cluster", |cluster| async move {
        if !cluster.only_on_double(
            "ferrolb-migrate --from-cluster",
            "it installs metallb.io CRDs, which would change the cluster for everyone",
        ) {
            return Ok(());
        }
        let kubeconfig = cluster.kubeconfig_path().to_string_lossy().into_owned();
        let from_cluster = || migrate(&["--from-cluster", "--kubeconfig", &kubeconfig], None);

        // No MetalLB CRDs: nothing of that kind, which is no error.
        let run = from_cluster()?;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(run.stdout, "");
        assert!(run.stderr.contains("the cluster serves no metallb.io resources"), "{}", run.stderr);

        let crds = [
            metallb_crd("IPAddressPool", "ipaddresspools"),
            metallb_crd("L2Advertisement", "l2advertisements"),
        ];
        for crd in &crds {
            cluster.kubectl_any_namespace_ok(&["apply", "-f", "-"], Some(&crd.to_string()))?;
        }
        for plural in ["ipaddresspools", "l2advertisements"] {
            cluster.kubectl_any_namespace_ok(
                &["wait", "--for=condition=Established", "--timeout=30s", &format!("crd/{plural}.metallb.io")],
                None,
            )?;
        }
        let ns = &cluster.namespace;
        let objects = format!(
            r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lan
  namespace: {ns}
  labels:
    site: office
spec:
  addresses:
  - 198.51.100.7/24
  - 2001:db8:1::10 - 2001:db8:1::20
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: lan
  namespace: {ns}
spec:
  ipAddressPools: [lan]
  interfaces: [eth1]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config
  namespace: {ns}
data:
  config: |
    address-pools:
    - name: lab
      protocol: layer2
      addresses: [2001:db8:1::f0/124]
"#
        );
        cluster.kubectl_any_namespace_ok(&["apply", "-f", "-"], Some(&objects))?;

        let run = from_cluster()?;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        for line in [
            format!("IPAddressPool {ns}/lan: spec.addresses[0] \"198.51.100.7/24\" has host bits set; MetalLB uses the whole network, FerroLB requires it written so: \"198.51.100.0/24\" (changed)"),
            format!("IPAddressPool {ns}/lan: metadata.labels.site \"office\" (converted)"),
            format!("L2Advertisement {ns}/lan: spec.interfaces[0] \"eth1\" (converted)"),
            format!("ConfigMap {ns}/config: data.config.address-pools[0].protocol \"layer2\" becomes L2Advertisement \"lab\", announcing IPAddressPool \"lab\" from every node and interface, as MetalLB did (converted)"),
        ] {
            assert!(run.stderr.lines().any(|l| l == line), "{line}\nmissing from:\n{}", run.stderr);
        }
        // The server's fields (uid, resourceVersion, managedFields, last-applied) stay behind.
        assert!(!run.stdout.contains("resourceVersion") && !run.stdout.contains("last-applied"), "{}", run.stdout);

        cluster.install_ferrolb_crds()?;
        let written = apply_and_check(&cluster, &run.stdout)?;
        let pool = find(&written, "IPAddressPool", "lan");
        assert_eq!(pool["spec"]["addresses"], json!(["198.51.100.0/24", "2001:db8:1::10-2001:db8:1::20"]));
        assert_eq!(find(&written, "L2Advertisement", "lan")["spec"]["interfaces"], json!(["eth1"]));
        assert_eq!(find(&written, "L2Advertisement", "lab")["spec"]["ipAddressPools"], json!(["lab"]));
        find(&written, "IPAddressPool", "lab");
        Ok(())
    })
    .await
}
