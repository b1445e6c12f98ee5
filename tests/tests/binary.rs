//! The `ferrolb-apiserver` binary serves and writes a usable kubeconfig.
//! Runs the binary itself, so it does not depend on FERROLB_TEST_KUBECONFIG.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

#[tokio::test]
async fn binary_serves_and_writes_kubeconfig() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ferrolb-apiserver-bin-{}", std::process::id()));
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()?;
    let outcome = async {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(line.contains("listening on http://127.0.0.1:"), "{line}");
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        let client = Client::try_from(config)?;
        let version = client.apiserver_version().await?;
        assert_eq!(version.major, "1");
        let namespaces: Api<Namespace> = Api::all(client);
        namespaces.get("kube-system").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // SIGTERM (by the child's own pid) lets the server clean up after itself.
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !terminated {
        child.kill()?;
    }
    let status = child.wait()?;
    assert!(
        !terminated || status.success(),
        "the server exits cleanly on SIGTERM: {status}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
