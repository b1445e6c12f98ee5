//! The speaker end to end in the lab of `speaker_lab`. A probe in the client namespace asks who has each VIP every 20 ms throughout and
//! checks that no two nodes ever answer the same round.
//!
//! Needs root (network namespaces); skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod speaker_lab;

use std::time::{Duration, Instant};

use ferrolb_tests::harness::root_available;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use speaker_lab::{Cluster, NS, VIP4, VIP4_WEB, VIP6, create};

/// Announcing both families, the ServiceL2Status, and every way ownership moves: SIGKILL (at
/// lease expiry), SIGTERM (at once), and a node cut off from the API (self-fence first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_announce_and_hand_over_without_double_answers() -> anyhow::Result<()> {
    if !root_available("speakers_announce_and_hand_over_without_double_answers")? {
        return Ok(());
    }
    let mut cluster = Cluster::start().await?;
    let probe = cluster.probe(&[VIP4, VIP6])?;
    cluster
        .service(
            "web",
            &[VIP4, VIP6],
            json!({"ipFamilyPolicy": "PreferDualStack"}),
        )
        .await?;
    let owner = cluster
        .wait_owner(VIP4, |_| true, Duration::from_secs(15))
        .await?;
    let owner6 = cluster
        .wait_owner(VIP6, |_| true, Duration::from_secs(5))
        .await?;
    assert_eq!(owner, owner6, "both families of one Service move together");
    let status = cluster.wait_status("web", &owner).await?;
    let status_body = status.status.clone().unwrap_or_default();
    assert_eq!(status_body.service_name, "web");
    assert_eq!(status_body.interfaces.len(), 1);
    assert_eq!(status_body.interfaces[0].as_str(), "lan0");
    let reference = &status.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (reference.kind.as_str(), reference.controller),
        ("Service", Some(true))
    );
    eprintln!("web is announced from {owner}");
    let before = (
        probe.sent().len(),
        probe.heard().iter().filter(|h| h.solicited).count(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = (
        probe.sent().len(),
        probe.heard().iter().filter(|h| h.solicited).count(),
    );
    // The owner answered those ARP requests in the kernel (the reader still saw the NDP, and
    // sees the conflicting claim below).
    if speaker_lab::kernel_has_tcx() {
        let kernel_replies = cluster
            .kernel_arp_replies(&owner, Duration::from_secs(3))
            .await;
        assert!(
            kernel_replies > 0,
            "the in-kernel responder answered on {owner}: {kernel_replies} replies"
        );
    } else {
        eprintln!("no tcx on this kernel (before 6.6): the packet readers answered ARP");
    }
    let note = format!("announcing {VIP4} from {owner} on lan0");
    assert_eq!(cluster.wait_event("web", &note).await?, "Normal");
    // A host on the LAN claims the VIP: a Warning event says so.
    let claim = ferrolb_speaker::packet::arp::gratuitous_reply(
        VIP4.parse()?,
        cluster
            .client
            .lan_mac
            .parse()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    ferrolb_speaker::probe::send_in_netns(&cluster.client.netns, "lan0", vec![claim])?;
    let conflict = format!("claims {VIP4}");
    assert_eq!(cluster.wait_event("web", &conflict).await?, "Warning");
    let (rounds, answers) = (after.0 - before.0, after.1 - before.1);
    eprintln!("steady state: {rounds} rounds, {answers} answers in 1 s");
    assert!(
        answers * 2 >= rounds * 2,
        "the owner answers most requests for both families: {answers} of {}",
        rounds * 2
    );

    // SIGKILL: its heartbeats stop; another node takes over.
    let killed = owner.clone();
    cluster.speakers[&killed].signal("KILL")?;
    let started = Instant::now();
    let second = cluster
        .wait_owner(VIP4, |n| n != killed, Duration::from_secs(10))
        .await?;
    eprintln!(
        "SIGKILL of {killed}: {second} answers after {:?}",
        started.elapsed()
    );
    cluster.wait_status("web", &second).await?;
    cluster.start_speaker(&killed)?;
    // The restarted speaker wins its IPs back (the hash is the same).
    let back = cluster
        .wait_owner(VIP4, |n| n == killed, Duration::from_secs(10))
        .await?;
    assert_eq!(back, killed);
    let before = (
        probe.sent().len(),
        probe
            .heard()
            .iter()
            .filter(|h| {
                h.solicited
                    && h.mac
                        .to_string()
                        .eq_ignore_ascii_case(&cluster.host(&killed).lan_mac)
            })
            .count(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = (
        probe.sent().len(),
        probe
            .heard()
            .iter()
            .filter(|h| {
                h.solicited
                    && h.mac
                        .to_string()
                        .eq_ignore_ascii_case(&cluster.host(&killed).lan_mac)
            })
            .count(),
    );
    eprintln!(
        "after restart: {} rounds, {} answers from {killed} in 1 s",
        after.0 - before.0,
        after.1 - before.1
    );

    // SIGTERM: the owner says goodbye and deletes its registration; a peer takes over at once.
    cluster.speakers[&killed].signal("TERM")?;
    let started = Instant::now();
    let mut component = cluster.speakers.remove(&killed).unwrap();
    assert!(
        component.wait_exit(Duration::from_secs(5))?,
        "SIGTERM ends the speaker"
    );
    assert!(
        !cluster.lease_exists(&killed).await?,
        "SIGTERM deletes the registration"
    );
    let third = cluster
        .wait_owner(VIP4, |n| n != killed, Duration::from_secs(10))
        .await?;
    let handover = started.elapsed();
    eprintln!("SIGTERM of {killed}: {third} answers after {handover:?}");
    cluster.wait_status("web", &third).await?;
    cluster.start_speaker(&killed)?;
    cluster
        .wait_owner(VIP4, |n| n == killed, Duration::from_secs(10))
        .await?;

    // Cut off from the API: liveness travels on the LAN, so nothing moves.
    let host = cluster.host(&killed).clone();
    host.set_link("mgmt0", false)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = cluster
        .wait_owner(VIP4, |_| true, Duration::from_secs(2))
        .await?;
    assert_eq!(still, killed, "an owner cut off from the API keeps its IPs");
    host.set_link("mgmt0", true)?;
    cluster.finish(probe).await
}

/// externalTrafficPolicy Local, node selectors, interfaces and the exclude label decide where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_honour_policy_selectors_interfaces_and_exclusion() -> anyhow::Result<()> {
    if !root_available("speakers_honour_policy_selectors_interfaces_and_exclusion")? {
        return Ok(());
    }
    let cluster = Cluster::start().await?;
    let probe = cluster.probe(&[VIP4, VIP4_WEB])?;
    cluster
        .service("local", &[VIP4], json!({"externalTrafficPolicy": "Local"}))
        .await?;
    // No endpoint yet: nobody may announce.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .wait_unanswered(VIP4, Duration::from_secs(3))
        .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.kube.clone(), NS);
    let slice = |node: &str| {
        json!({"metadata": {"name": "local-x", "namespace": NS,
                            "labels": {"kubernetes.io/service-name": "local"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["198.51.100.99"], "nodeName": node,
                              "conditions": {"ready": true}}]})
    };
    create(&slices, slice("node-b")).await?;
    cluster
        .wait_owner(VIP4, |n| n == "node-b", Duration::from_secs(10))
        .await?;
    slices
        .replace(
            "local-x",
            &PostParams::default(),
            &serde_json::from_value({
                let mut s = slice("node-c");
                s["metadata"]["resourceVersion"] =
                    json!(slices.get("local-x").await?.metadata.resource_version);
                s
            })?,
        )
        .await?;
    cluster
        .wait_owner(VIP4, |n| n == "node-c", Duration::from_secs(10))
        .await?;
    cluster.wait_status("local", "node-c").await?;
    cluster.delete_service("local").await?;
    slices.delete("local-x", &DeleteParams::default()).await?;

    // Cluster policy: the L2Advertisement's node selector picks node-a only.
    cluster.service("web", &[VIP4_WEB], json!({})).await?;
    let first = cluster
        .wait_owner(VIP4_WEB, |_| true, Duration::from_secs(10))
        .await?;
    cluster.label_node("node-a", "zone", Some("a")).await?;
    cluster
        .set_advertisement(json!({"nodeSelectors": [{"matchLabels": {"zone": "a"}}]}))
        .await?;
    cluster
        .wait_owner(VIP4_WEB, |n| n == "node-a", Duration::from_secs(10))
        .await?;
    // The exclude label takes node-a out: nobody is left.
    cluster
        .label_node(
            "node-a",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            Some(""),
        )
        .await?;
    cluster
        .wait_unanswered(VIP4_WEB, Duration::from_secs(5))
        .await?;
    cluster
        .label_node(
            "node-a",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            None,
        )
        .await?;
    cluster
        .wait_owner(VIP4_WEB, |n| n == "node-a", Duration::from_secs(10))
        .await?;
    // Interfaces: one no node has means nobody announces; lan0 brings it back.
    cluster
        .set_advertisement(json!({"nodeSelectors": null, "interfaces": ["eth9"]}))
        .await?;
    cluster
        .wait_unanswered(VIP4_WEB, Duration::from_secs(5))
        .await?;
    cluster
        .set_advertisement(json!({"interfaces": ["lan0"]}))
        .await?;
    let last = cluster
        .wait_owner(VIP4_WEB, |_| true, Duration::from_secs(10))
        .await?;
    assert_eq!(last, first, "the same owner as before any selector");
    cluster.finish(probe).await
}
