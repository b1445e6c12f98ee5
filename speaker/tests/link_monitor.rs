//! rtnetlink on a real namespace: the dump sees links with their addresses, and a carrier loss
//! arrives as an event after which the link reads as down.
//!
//! Needs root and changes links, so it is ignored by default; run it inside a throwaway network
//! namespace:
//!
//! ```sh
//! ip netns add ferrolb-test
//! ip netns exec ferrolb-test cargo test -p ferrolb-speaker --test link_monitor -- --ignored
//! ip netns del ferrolb-test
//! ```

// A test: failing loudly on the first surprise is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{VethPair, ip};
use std::time::Duration;

use ferrolb_speaker::interfaces::{LinkState, publishable};
use ferrolb_speaker::netlink::LinkMonitor;
use ferrolb_speaker::packet::MacAddr;

const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x02, 0x01]);

async fn find(monitor: &LinkMonitor, name: &str) -> LinkState {
    monitor
        .links()
        .await
        .unwrap()
        .into_iter()
        .find(|link| link.name == name)
        .expect("link listed")
}

/// Waits for events until the link satisfies `wanted`.
async fn wait_for(
    monitor: &mut LinkMonitor,
    name: &str,
    wanted: impl Fn(&LinkState) -> bool,
) -> LinkState {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let link = find(monitor, name).await;
            if wanted(&link) {
                return link;
            }
            assert!(monitor.changed().await, "subscription closed");
        }
    })
    .await
    .expect("timed out waiting for the link")
}

#[tokio::test]
#[ignore = "needs root; run in a throwaway network namespace (see the module documentation)"]
async fn links_addresses_and_carrier_are_followed() {
    let mut monitor = LinkMonitor::open().unwrap();
    let suffix = std::process::id() % 100_000;
    let (ours, peer) = (format!("flbm{suffix}"), format!("flbp{suffix}"));
    let _cleanup = VethPair::create(&ours, &peer);
    ip(&["link", "set", &ours, "address", &MAC.to_string()]);
    ip(&["addr", "add", "198.51.100.5/24", "dev", &ours]);
    ip(&["addr", "add", "2001:db8::5/64", "dev", &ours, "nodad"]);
    ip(&["link", "set", &ours, "up"]);
    ip(&["link", "set", &peer, "up"]);

    let link = wait_for(&mut monitor, &ours, |link| {
        link.up && link.addresses.len() >= 2
    })
    .await;
    assert_eq!(link.mac, Some(MAC));
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert!(link.ethernet_with_arp);
    let published = publishable(std::slice::from_ref(&link));
    assert_eq!(published.len(), 1);
    let subnets: Vec<String> = published[0].subnets.iter().map(|s| s.to_string()).collect();
    assert_eq!(subnets, ["198.51.100.5/24", "2001:db8::5/64"]);

    // The peer going down takes our carrier: the link no longer counts as up.
    ip(&["link", "set", &peer, "down"]);
    let link = wait_for(&mut monitor, &ours, |link| !link.up).await;
    assert!(publishable(&[link]).is_empty());
}
