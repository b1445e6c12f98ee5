//! Makes sure the speakers' heartbeat key Secret exists: created with a random key on first
//! start, never overwritten. A Secret that exists but is unusable is reported, not replaced:
//! it may be an operator's rotation in progress, and replacing it would split the cluster into
//! speakers with the old key and speakers with the new one.

use std::time::Duration;

use ferrolb_crds::heartbeat_key::{HeartbeatKeys, SECRET_NAME};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// What was found or done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySecret {
    Created,
    Present,
    /// Present but unusable, with the reason (the speakers refuse it too).
    Unusable(String),
}

/// One attempt: reads the Secret, and creates it when it is missing.
pub async fn ensure(secrets: &Api<Secret>) -> anyhow::Result<KeySecret> {
    if let Some(existing) = secrets.get_opt(SECRET_NAME).await? {
        let data = existing.data.unwrap_or_default();
        let entries = data
            .iter()
            .map(|(name, value)| (name.as_str(), value.0.as_slice()));
        return Ok(match HeartbeatKeys::from_data(entries) {
            Ok(_) => KeySecret::Present,
            Err(error) => KeySecret::Unusable(error.to_string()),
        });
    }
    let data = HeartbeatKeys::generate_data()?
        .into_iter()
        .map(|(name, value)| (name, ByteString(value)))
        .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_owned()),
            labels: Some(
                [
                    ("app.kubernetes.io/name".to_owned(), "ferrolb".to_owned()),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        "speaker".to_owned(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(KeySecret::Created),
        // Another replica was first: its key stands.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(KeySecret::Present),
        Err(error) => Err(error.into()),
    }
}

/// Retries [`ensure`] until it succeeds, with a growing pause (1 s up to 60 s), logging each
/// outcome once.
pub async fn keep_ensuring(secrets: Api<Secret>, namespace: String) {
    let mut pause = Duration::from_secs(1);
    loop {
        match ensure(&secrets).await {
            Ok(KeySecret::Created) => {
                tracing::info!(%namespace, secret = SECRET_NAME, "created the heartbeat key Secret with a random key");
                return;
            }
            Ok(KeySecret::Present) => {
                tracing::debug!(%namespace, secret = SECRET_NAME, "heartbeat key Secret present");
                return;
            }
            Ok(KeySecret::Unusable(reason)) => {
                tracing::error!(%namespace, secret = SECRET_NAME, %reason, "the heartbeat key Secret is unusable and left as it is; fix it, or delete it to get a new random key");
                return;
            }
            Err(error) => {
                tracing::warn!(%namespace, secret = SECRET_NAME, error = %format!("{error:#}"), retry_in = ?pause, "could not ensure the heartbeat key Secret");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}
