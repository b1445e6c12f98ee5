//! FerroLB's manifests against an API server (the double, or the real cluster named by
//! FERROLB_TEST_KUBECONFIG): the CRDs install and become established, `kubectl apply -k config/`
//! passes a client dry run, the API server itself refuses invalid objects with FerroLB's messages,
//! and `kubectl get` shows the printer columns.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};
use ferrolb_tests::harness::TestCluster;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// kubectl with the cluster's kubeconfig but no namespace of the test's: the manifests name
/// their own namespace.
fn kubectl(cluster: &TestCluster, args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

fn kubectl_ok(cluster: &TestCluster, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
    let output = kubectl(cluster, args, input)?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn pool_yaml(name: &str, addresses: &[&str]) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec:\n  addresses: [{}]\n",
        addresses
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

// kubectl runs blocking; the in-process double needs other threads to answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_install_and_the_api_server_enforces_the_schema() -> anyhow::Result<()> {
    TestCluster::run("deploy", |cluster| async move {
        let crds = config_dir().join("crds");
        let crds = crds.to_string_lossy();
        kubectl_ok(&cluster, &["apply", "--server-side", "--force-conflicts", "-f", &crds], None)?;
        for crd in ["ipaddresspools", "l2advertisements", "servicel2statuses"] {
            kubectl_ok(
                &cluster,
                &["wait", "--for=condition=Established", "--timeout=30s", &format!("crd/{crd}.ferrolb.io")],
                None,
            )?;
        }
        let config = config_dir();
        let dry_run = kubectl_ok(
            &cluster,
            &["apply", "--dry-run=client", "-k", &config.to_string_lossy()],
            None,
        )?;
        for object in [
            "namespace/ferrolb-system",
            "deployment.apps/ferrolb-controller",
            "daemonset.apps/ferrolb-speaker",
            "clusterrole.rbac.authorization.k8s.io/ferrolb-speaker",
        ] {
            assert!(dry_run.contains(object), "{object} missing from:\n{dry_run}");
        }

        // Cluster-scoped test objects are named after the test's namespace so that a run on a
        // real cluster cannot touch anything else.
        let good = format!("{}-good", cluster.namespace);
        let bad = format!("{}-bad", cluster.namespace);
        let applied = kubectl_ok(
            &cluster,
            &["apply", "-f", "-"],
            Some(&pool_yaml(&good, &["198.51.100.0/28", "2001:db8:1::/120"])),
        );
        let refused = kubectl(
            &cluster,
            &["apply", "-f", "-"],
            Some(&pool_yaml(&bad, &["198.51.100.1-2001:db8:1::1", "198.51.100.7/24", "lan"])),
        );
        // The API server's CEL budget does not afford ordering two addresses: a reversed range
        // is accepted here and flagged by the controller (controller_e2e).
        let reversed = format!("{}-reversed", cluster.namespace);
        let accepted = kubectl(
            &cluster,
            &["apply", "-f", "-"],
            Some(&pool_yaml(&reversed, &["198.51.100.40-198.51.100.32"])),
        );
        let table = kubectl_ok(&cluster, &["get", "ipaddresspools", &good], None);
        let short = kubectl_ok(&cluster, &["get", "ipp", &good, "-o", "jsonpath={.spec.autoAssign}"], None);
        let _ = kubectl(&cluster, &["delete", "ipaddresspools", &good, &bad, &reversed, "--ignore-not-found"], None);

        applied?;
        let refused = refused?;
        assert!(!refused.status.success(), "an invalid pool was accepted");
        let message = String::from_utf8_lossy(&refused.stderr);
        for expected in [
            "range start 198.51.100.1 and end 2001:db8:1::1 are of different families; write one range per family",
            "198.51.100.7/24 has host bits set; write the network address of the prefix",
            "lan is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)",
        ] {
            assert!(message.contains(expected), "{expected} missing from: {message}");
        }
        let accepted = accepted?;
        assert!(accepted.status.success(), "{}", String::from_utf8_lossy(&accepted.stderr));
        let table = table?;
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAME", "ADDRESSES", "AUTO-ASSIGN", "ASSIGNED", "AVAILABLE", "READY", "AGE"] {
            assert!(header.contains(column), "{column} missing from:\n{table}");
        }
        assert_eq!(short?, "true", "autoAssign defaults to true");

        let header = kubectl_ok(&cluster, &["get", "l2advertisements"], None)
            .map(|t| t.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        // An empty list prints no header; ask for the columns through a real object instead.
        if header.is_empty() {
            let name = format!("{}-adv", cluster.namespace);
            let adv = format!(
                "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {name}\nspec:\n  interfaces: [eth1]\n  gratuitousInterval: 30s\n"
            );
            kubectl_ok(&cluster, &["apply", "-f", "-"], Some(&adv))?;
            let table = kubectl_ok(&cluster, &["get", "l2adv", &name], None);
            let _ = kubectl(&cluster, &["delete", "l2adv", &name], None);
            let table = table?;
            for column in ["IPADDRESSPOOLS", "INTERFACES", "NODE SELECTORS", "GRATUITOUS INTERVAL"] {
                assert!(table.contains(column), "{column} missing from:\n{table}");
            }
            assert!(table.contains("30s") && table.contains("eth1"), "{table}");
        }
        Ok(())
    })
    .await
}
