//! The controller creates the speakers' heartbeat key Secret with a random key when it is
//! missing, keeps it across restarts, and never overwrites one an operator wrote, even an
//! unusable one. On the double, or on the real cluster of FERROLB_TEST_KUBECONFIG (in the test's
//! own namespace).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use anyhow::{Context as _, bail};
use ferrolb_crds::heartbeat_key::{HeartbeatKeys, KEY_LEN, SECRET_NAME};
use ferrolb_tests::components::ControllerProcess;
use ferrolb_tests::harness::{TestCluster, eventually, kubectl_available};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

const WAIT: Duration = Duration::from_secs(20);

fn keys_of(secret: &Secret) -> anyhow::Result<HeartbeatKeys> {
    let data = secret.data.clone().unwrap_or_default();
    Ok(HeartbeatKeys::from_data(
        data.iter()
            .map(|(name, value)| (name.as_str(), value.0.as_slice())),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_creates_the_key_once_and_never_overwrites_it() {
    TestCluster::run("heartbeat-key", |cluster| async move {
        // kubectl installs the CRDs the controller watches; without it this test is SKIPPED.
        if !kubectl_available("the heartbeat key Secret")? {
            return Ok(());
        }
        cluster.install_ferrolb_crds()?;
        let ns = cluster.namespace.clone();
        let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
        // A class of the test's own: on a real cluster this controller touches no Service.
        let class = format!("e2e.ferrolb.io/{ns}");
        let start = || -> anyhow::Result<ControllerProcess> {
            let mut controller = ControllerProcess::spawn_with(
                cluster.kubeconfig_path(),
                Some(&class),
                &["--heartbeat-key-namespace", &ns],
                &[],
            )?;
            controller.wait_ready(WAIT)?;
            Ok(controller)
        };

        // Missing: created with one random key, active.
        let controller = start()?;
        let created = eventually(WAIT, || async { Ok(secrets.get_opt(SECRET_NAME).await?) })
            .await
            .context("the controller did not create the heartbeat key Secret")?;
        let keys = keys_of(&created)?;
        assert_eq!(keys.active, 1);
        assert_eq!(keys.active_key().len(), KEY_LEN);
        assert_eq!(created.type_.as_deref(), Some("Opaque"));

        // A restart keeps it: same key, same object.
        controller.stop()?;
        let controller = start()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after_restart = secrets.get(SECRET_NAME).await?;
        assert_eq!(
            keys_of(&after_restart)?,
            keys,
            "the key changed across a restart"
        );
        assert_eq!(
            after_restart.metadata.uid, created.metadata.uid,
            "the Secret was replaced"
        );
        controller.stop()?;

        // An operator's Secret, even one the speakers cannot use, is left as it is.
        secrets
            .delete(SECRET_NAME, &DeleteParams::default())
            .await?;
        eventually(WAIT, || async {
            Ok(secrets.get_opt(SECRET_NAME).await?.is_none().then_some(()))
        })
        .await?;
        let broken = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET_NAME.to_owned()),
                ..Default::default()
            },
            data: Some([("active".to_owned(), ByteString(b"7".to_vec()))].into()),
            ..Default::default()
        };
        let written = secrets.create(&PostParams::default(), &broken).await?;
        let controller = start()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let left = secrets.get(SECRET_NAME).await?;
        controller.stop()?;
        if left.metadata.uid != written.metadata.uid || left.data != broken.data {
            bail!("the controller replaced an operator's heartbeat key Secret");
        }
        assert!(keys_of(&left).is_err());
        Ok(())
    })
    .await
    .unwrap();
}
