//! `--from-cluster`: MetalLB's objects through the Kubernetes API, as the documents files would
//! have given. A cluster without MetalLB's CRDs simply has none of them.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, ListParams, TypeMeta};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::error::DiscoveryError;
use kube::{Api, Client, ResourceExt};

use crate::input::Document;
use crate::metallb;

/// Long enough for a large cluster's list calls, short enough not to hang on a black-holed API.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load a kubeconfig: {0}")]
    Config(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
    #[error("cannot list {what}: {cause}")]
    List { what: String, cause: String },
}

/// What the cluster holds, and remarks for the user (such as "no MetalLB CRDs").
pub struct ClusterObjects {
    pub documents: Vec<Document>,
    pub remarks: Vec<String>,
}

pub async fn read(options: &ClusterOptions) -> Result<ClusterObjects, ClusterError> {
    match tokio::time::timeout(TIMEOUT, read_unbounded(options)).await {
        Ok(result) => result,
        Err(_) => Err(ClusterError::Unreachable(format!(
            "no answer within {}s",
            TIMEOUT.as_secs()
        ))),
    }
}

async fn client(options: &ClusterOptions) -> Result<Client, ClusterError> {
    let config_error = |e: &dyn std::error::Error| ClusterError::Config(with_causes(e));
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&options.kubeconfig, &options.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&e))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                .await
                .map_err(|e| config_error(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&kube_options)
            .await
            .map_err(|e| config_error(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| config_error(&e))?,
    };
    Client::try_from(config).map_err(|e| config_error(&e))
}

async fn read_unbounded(options: &ClusterOptions) -> Result<ClusterObjects, ClusterError> {
    let client = client(options).await?;
    let mut documents = Vec::new();
    let mut remarks = Vec::new();
    match kube::discovery::group(&client, metallb::API_GROUP).await {
        Ok(group) => {
            for kind in metallb::CONFIGURATION_KINDS {
                if let Some((resource, _)) = group.recommended_kind(kind) {
                    documents.extend(list_kind(&client, &resource).await?);
                }
            }
        }
        Err(kube::Error::Discovery(DiscoveryError::MissingApiGroup(_))) => remarks.push(format!(
            "the cluster serves no {} resources (MetalLB's CRDs are not installed)",
            metallb::API_GROUP
        )),
        Err(error) => return Err(ClusterError::Unreachable(with_causes(&error))),
    }
    documents.extend(legacy_configmaps(&client).await?);
    Ok(ClusterObjects { documents, remarks })
}

async fn list_kind(client: &Client, resource: &ApiResource) -> Result<Vec<Document>, ClusterError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let listed = match api.list(&ListParams::default()).await {
        Ok(listed) => listed,
        // Removed between discovery and listing: none of them.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
        Err(error) => {
            return Err(ClusterError::List {
                what: format!("{} {}", resource.api_version, resource.plural),
                cause: with_causes(&error),
            });
        }
    };
    let mut documents = Vec::new();
    for mut object in listed.items {
        // List items of some servers leave out their type; the conversion needs it.
        object.types.get_or_insert_with(|| TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        let origin = format!(
            "the cluster's {} {}/{}",
            resource.kind,
            object.namespace().unwrap_or_default(),
            object.name_any()
        );
        if let Ok(value) = serde_json::to_value(&object) {
            documents.push(Document { origin, value });
        }
    }
    Ok(documents)
}

/// The ConfigMaps MetalLB v0.12 and before read, in whatever namespace MetalLB ran.
async fn legacy_configmaps(client: &Client) -> Result<Vec<Document>, ClusterError> {
    let api: Api<ConfigMap> = Api::all(client.clone());
    let params =
        ListParams::default().fields(&format!("metadata.name={}", metallb::LEGACY_CONFIGMAP_NAME));
    let listed = api
        .list(&params)
        .await
        .map_err(|error| ClusterError::List {
            what: format!("ConfigMaps named {}", metallb::LEGACY_CONFIGMAP_NAME),
            cause: with_causes(&error),
        })?;
    let mut documents = Vec::new();
    for mut configmap in listed.items {
        let is_metallbs = configmap
            .data
            .as_ref()
            .is_some_and(|data| data.contains_key(metallb::LEGACY_CONFIGMAP_KEY));
        if !is_metallbs {
            continue;
        }
        configmap.metadata.managed_fields = None;
        let origin = format!(
            "the cluster's ConfigMap {}/{}",
            configmap.namespace().unwrap_or_default(),
            configmap.name_any()
        );
        let mut value = serde_json::to_value(&configmap).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("apiVersion".into(), "v1".into());
            object.insert("kind".into(), "ConfigMap".into());
        }
        documents.push(Document { origin, value });
    }
    Ok(documents)
}

/// An error with the errors beneath it: kube's own message for a refused connection is only
/// "client error (Connect)"; the cause says which.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
