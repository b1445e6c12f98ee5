//! The speaker's API writers against the API server double, without privileges: the
//! registration Lease (create, update with resourceVersion, recovery from a conflicting write,
//! no periodic writes, delete) and
//! the ServiceL2Status writer (create with an ownerReference, status patch, deleting only its own).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_crds::{ServiceL2Status, ServiceL2StatusStatus};
use ferrolb_speaker::registration::Registration;
use ferrolb_speaker::statuses::{Desired, DesiredSender, DesiredStatuses, ObjectKey, StatusWriter};
use ferrolb_tests::apiserver::{ApiServerConfig, ApiServerHandle};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use serde_json::json;
use tokio::sync::watch;

async fn double() -> ApiServerHandle {
    ApiServerHandle::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ApiServerConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_registration_is_created_rewritten_after_conflicts_and_deleted() {
    let api = double().await;
    let client = api.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "ferrolb-system"}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "ferrolb-system");
    let mut registration = Registration::new(leases.clone(), "node-a");
    registration.write("[]").await.unwrap();
    let first = leases.get("ferrolb-speaker-node-a").await.unwrap();
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
    assert_eq!(spec.lease_duration_seconds, None, "held until deleted");
    assert_eq!(
        first.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"],
        "speaker"
    );
    // Someone else writes the Lease: the next write gets 409, reads again and succeeds.
    leases
        .patch(
            "ferrolb-speaker-node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"other": "writer"}}})),
        )
        .await
        .unwrap();
    let text = r#"[{"name":"lan0","mac":"02:00:00:00:00:01","subnets":["198.51.100.5/24"]}]"#;
    registration.write(text).await.unwrap();
    let second = leases.get("ferrolb-speaker-node-a").await.unwrap();
    assert_ne!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(
        second.metadata.annotations.as_ref().unwrap()["ferrolb.io/interfaces"],
        text
    );
    assert_eq!(second.metadata.labels.as_ref().unwrap()["other"], "writer");
    assert!(api.counters().get("update", "leases") >= 2);
    registration.release().await.unwrap();
    assert!(
        leases
            .get_opt("ferrolb-speaker-node-a")
            .await
            .unwrap()
            .is_none()
    );
    // Releasing twice is harmless.
    registration.release().await.unwrap();
}

/// Liveness travels in heartbeats: the registration is written at start and when the
/// interfaces change, never on a timer, and deleted when the speaker stops.
#[tokio::test]
async fn the_registration_is_written_only_when_the_interfaces_change() {
    let api = double().await;
    let client = api.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "ferrolb-system"}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "ferrolb-system");
    let (interfaces_tx, interfaces_rx) = watch::channel(String::from("[]"));
    let (written_tx, mut written_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(Registration::new(leases.clone(), "node-a").run(
        interfaces_rx,
        written_tx,
        stop_rx,
    ));
    assert_eq!(written_rx.recv().await, Some(Ok(())));
    let writes = |api: &ApiServerHandle| {
        api.counters().get("create", "leases") + api.counters().get("update", "leases")
    };
    let after_start = writes(&api);
    assert_eq!(after_start, 1);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(writes(&api), after_start, "no periodic writes");
    let text = r#"[{"name":"lan0","mac":"02:00:00:00:00:01","subnets":["198.51.100.5/24"]}]"#;
    interfaces_tx.send_replace(text.to_owned());
    assert_eq!(written_rx.recv().await, Some(Ok(())));
    assert_eq!(writes(&api), after_start + 1);
    let lease = leases.get("ferrolb-speaker-node-a").await.unwrap();
    assert_eq!(
        lease.metadata.annotations.unwrap()["ferrolb.io/interfaces"],
        text
    );
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        leases
            .get_opt("ferrolb-speaker-node-a")
            .await
            .unwrap()
            .is_none()
    );
}

async fn wait<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn statuses_are_written_owned_and_only_this_nodes_are_deleted() {
    let api = double().await;
    let client = api.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &ServiceL2Status::crd())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let mut uids = Vec::new();
    for name in ["web", "db"] {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let created = services
            .create(&PostParams::default(), &service)
            .await
            .unwrap();
        uids.push(created.metadata.uid.unwrap());
    }
    let statuses: Api<ServiceL2Status> = Api::namespaced(client.clone(), "shop");
    wait(|| async { statuses.list(&Default::default()).await.is_ok() }).await;

    let desired = |name: &str, uid: &str| {
        (
            ObjectKey {
                namespace: "shop".into(),
                name: name.into(),
            },
            Arc::new(Desired::owned_by_service(
                name,
                uid,
                ServiceL2StatusStatus {
                    node: "node-a".into(),
                    service_name: name.into(),
                    interfaces: vec![ferrolb_crds::InterfaceName::new("lan0").unwrap()],
                    ips: vec!["198.51.100.200".into()],
                },
            )),
        )
    };
    let both: DesiredStatuses = [desired("web", &uids[0]), desired("db", &uids[1])].into();
    let (sender, receiver) = DesiredSender::channel();
    sender.set(both);
    let writer = tokio::spawn(
        StatusWriter::<ServiceL2Status>::new(client.clone(), "node-a", "ferrolb-system")
            .run(receiver),
    );
    wait(|| async {
        statuses
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|s| s.node == "node-a"))
            .count()
            == 2
    })
    .await;
    let web = statuses.get("web").await.unwrap();
    let owner = &web.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Service", "web", uids[0].as_str())
    );
    assert_eq!(owner.controller, Some(true));

    // Another node took "db" over and rewrote its status: node-a must not delete it.
    statuses
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"node": "node-b"}})),
        )
        .await
        .unwrap();
    sender.set(DesiredStatuses::new());
    wait(|| async { statuses.get_opt("web").await.unwrap().is_none() }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = statuses.get("db").await.unwrap();
    assert_eq!(db.status.unwrap().node, "node-b");
    drop(sender);
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .unwrap()
        .unwrap();
}
