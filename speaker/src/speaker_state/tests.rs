//! The speaker core: failover without overlap, release, status and conflicts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::{AddressSet, InterfaceName, L2AdvertisementSpec};

use super::*;
use crate::packet::{ETHERTYPE_ARP, arp};

const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x09, 0x09]);
const STRANGER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x06, 0x06]);
const ANNOUNCED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn eth0() -> InterfaceName {
    InterfaceName::new("eth0").unwrap()
}

fn mac_of(node: &str) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, if node == "node-a" { 0x0a } else { 0x0b }])
}

fn lease(node: &str, version: u32, held: bool) -> LeaseObservation {
    LeaseObservation {
        node: node.into(),
        version: version.to_string(),
        held,
        interfaces: vec![PublishedInterface {
            name: eth0(),
            mac: mac_of(node),
            is_virtual: false,
            subnets: vec!["198.51.100.2/24".parse().unwrap()],
        }],
        interfaces_error: None,
    }
}

fn speaker(node: &str, now: Instant) -> SpeakerState {
    let mut state = SpeakerState::new(node, LeaseTiming::DEFAULT, BurstPolicy::default());
    state.set_nodes(["node-a", "node-b"].map(|name| NodeFacts {
        name: name.into(),
        ..Default::default()
    }));
    state.set_pools(vec![PoolFacts {
        name: "lan".into(),
        labels: BTreeMap::new(),
        addresses: AddressSet::parse(["198.51.100.0/24"]).unwrap(),
    }]);
    state.set_advertisements(vec![L2AdvertisementSpec::default()]);
    state.set_services([ServiceFacts {
        id: ServiceId {
            namespace: "shop".into(),
            name: "web".into(),
        },
        ips: vec![IpAddr::V4(ANNOUNCED)],
        ..Default::default()
    }]);
    state.set_links([(eth0(), mac_of(node))].into(), now);
    state
}

fn who_has(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&MacAddr::BROADCAST.octets());
    frame.extend_from_slice(&PEER_MAC.octets());
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&PEER_MAC.octets());
    frame.extend_from_slice(&[198, 51, 100, 200]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

fn answers(state: &mut SpeakerState, now: Instant) -> bool {
    state
        .handle_frame(&eth0(), &who_has(ANNOUNCED), now)
        .reply
        .is_some()
}

#[test]
fn nothing_is_answered_before_the_first_renewal() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    assert!(state.recompute(now).is_empty());
    assert!(!answers(&mut state, now));
    state.renewed(now);
    assert_eq!(
        state.recompute(now),
        [OwnershipChange::Gained(IpAddr::V4(ANNOUNCED))]
    );
    assert!(answers(&mut state, now));
}

#[test]
fn ips_without_owner_counts_covered_ips_no_live_node_may_announce() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    state.renewed(now);
    state.recompute(now);
    assert_eq!(state.ips_without_owner(), 0);
    // externalTrafficPolicy: Local with no endpoint anywhere: no candidate.
    state.set_services([ServiceFacts {
        id: ServiceId {
            namespace: "shop".into(),
            name: "web".into(),
        },
        ips: vec![IpAddr::V4(ANNOUNCED)],
        local_traffic_policy: true,
        ..Default::default()
    }]);
    state.recompute(now);
    assert!(state.announced().is_empty());
    assert_eq!(state.ips_without_owner(), 1);
    // Fenced: this speaker elects nothing and reports nothing.
    let later = now + LeaseTiming::DEFAULT.lease_duration;
    state.recompute(later);
    assert!(!state.may_answer(later));
    assert_eq!(state.ips_without_owner(), 0);
}

/// The owner loses the API server: it keeps answering until its fence falls, the other node
/// takes over only after the owner's Lease ran out, and at no moment do both answer.
#[test]
fn failover_never_has_two_nodes_answering() {
    let start = Instant::now();
    let mut speakers = [speaker("node-a", start), speaker("node-b", start)];
    for state in &mut speakers {
        state.lease_seen(&lease("node-a", 1, true), start);
        state.lease_seen(&lease("node-b", 1, true), start);
        state.renewed(start);
        state.recompute(start);
    }
    let owner = speakers
        .iter()
        .position(|s| !s.announced().is_empty())
        .expect("someone owns the IP");
    let other = 1 - owner;
    let names = ["node-a", "node-b"];
    // The owner renews at 1 s and 2 s, then can no longer reach the API server.
    let last_renewal = start + Duration::from_secs(2);
    let step = Duration::from_millis(50);
    let mut takeover = None;
    let mut silent_from = None;
    let mut version = 1;
    for tick in 1..=200u32 {
        let now = start + step * tick;
        if tick % 20 == 0 {
            version += 1;
            // The survivor always renews, and the owner sees that.
            speakers[other].renewed(now);
            let survivor = lease(names[other], version, true);
            speakers[owner].lease_seen(&survivor, now);
            speakers[other].lease_seen(&survivor, now);
            if now <= last_renewal {
                speakers[owner].renewed(now);
                // The earliest the survivor could see the renewal is when it was sent.
                speakers[other].lease_seen(&lease(names[owner], version, true), now);
            }
        }
        for state in &mut speakers {
            state.recompute(now);
        }
        let (owner_answers, other_answers) = (
            answers(&mut speakers[owner], now),
            answers(&mut speakers[other], now),
        );
        assert!(
            !(owner_answers && other_answers),
            "both answer at {:?}",
            now - start
        );
        if !owner_answers && silent_from.is_none() {
            silent_from = Some(now - start);
        }
        if other_answers && takeover.is_none() {
            takeover = Some(now - start);
        }
    }
    // Fenced 2 s after its last renewal; taken over 3 s after it.
    assert_eq!(silent_from, Some(Duration::from_secs(4)));
    assert_eq!(takeover, Some(Duration::from_secs(5)));
}

/// The survivor's watch stalls while the owner keeps renewing: the survivor hears nothing, not
/// even its own renewals, so it must not conclude the owner is dead.
#[test]
fn a_stalled_watch_takes_nothing_over() {
    let start = Instant::now();
    let mut speakers = [speaker("node-a", start), speaker("node-b", start)];
    for state in &mut speakers {
        state.lease_seen(&lease("node-a", 1, true), start);
        state.lease_seen(&lease("node-b", 1, true), start);
        state.renewed(start);
        state.recompute(start);
    }
    let owner = speakers
        .iter()
        .position(|s| !s.announced().is_empty())
        .expect("someone owns the IP");
    let other = 1 - owner;
    for second in 1..=20u64 {
        let now = start + Duration::from_secs(second);
        // Both renew successfully; no watch event reaches the survivor.
        speakers[owner].renewed(now);
        speakers[other].renewed(now);
        for state in &mut speakers {
            state.recompute(now);
        }
        assert!(answers(&mut speakers[owner], now));
        assert!(
            !answers(&mut speakers[other], now),
            "took over at {second} s"
        );
    }
}

#[test]
fn only_changes_that_matter_call_for_a_new_election() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    state.lease_seen(&lease("node-b", 1, true), now);
    assert!(state.needs_recompute(now));
    state.renewed(now);
    state.recompute(now);
    assert!(!state.needs_recompute(now));
    // Routine renewals, ours and the peer's, change nothing.
    let later = now + Duration::from_secs(1);
    state.renewed(later);
    state.lease_seen(&lease("node-a", 2, true), later);
    state.lease_seen(&lease("node-b", 2, true), later);
    assert!(!state.needs_recompute(later));
    // A peer publishing other interfaces does.
    let mut moved = lease("node-b", 3, true);
    moved.interfaces.clear();
    state.lease_seen(&moved, later);
    assert!(state.needs_recompute(later));
    state.recompute(later);
    // So does a peer found dead (node-b last changed at `later`)...
    let dead = later + Duration::from_secs(3);
    state.renewed(dead);
    state.lease_seen(&lease("node-a", 3, true), dead);
    assert!(state.needs_recompute(dead));
    state.recompute(dead);
    assert!(!state.needs_recompute(dead));
    // ...and our own fence falling.
    assert!(state.needs_recompute(dead + LeaseTiming::DEFAULT.renew_deadline));
}

#[test]
fn releasing_the_lease_stops_answering_at_once() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    state.renewed(now);
    state.recompute(now);
    assert!(answers(&mut state, now));
    assert_eq!(
        state.release(),
        [OwnershipChange::Lost(IpAddr::V4(ANNOUNCED))]
    );
    assert!(!answers(&mut state, now));
    assert!(state.recompute(now).is_empty());
    assert!(state.due(now).is_empty());
}

#[test]
fn a_released_peer_lease_hands_its_ips_over_at_once() {
    let now = Instant::now();
    let mut state = speaker("node-b", now);
    state.set_services((1..=20).map(|i| ServiceFacts {
        id: ServiceId {
            namespace: "shop".into(),
            name: format!("web-{i}"),
        },
        ips: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))],
        ..Default::default()
    }));
    state.lease_seen(&lease("node-a", 1, true), now);
    state.lease_seen(&lease("node-b", 1, true), now);
    state.renewed(now);
    state.recompute(now);
    let before = state.announced().len();
    assert!(
        0 < before && before < 20,
        "the IPs are shared out: {before}"
    );
    state.lease_seen(&lease("node-a", 2, false), now);
    state.recompute(now);
    assert_eq!(state.announced().len(), 20);
}

#[test]
fn the_owner_reports_its_status_and_bursts() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    state.renewed(now);
    state.recompute(now);
    let statuses = state.statuses();
    let status = statuses.values().next().unwrap();
    assert_eq!(status.node, "node-a");
    assert_eq!(status.service_name, "web");
    assert_eq!(status.ips, ["198.51.100.7"]);
    assert_eq!(status.interfaces, [eth0()]);
    assert_eq!(state.due(now).len(), 2);
    assert_eq!(
        state.next_deadline(now),
        Some(now + BurstPolicy::default().spacing)
    );
}

#[test]
fn frames_are_parsed_counted_and_checked_for_conflicts() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    state.lease_seen(&lease("node-b", 1, true), now);
    state.renewed(now);
    state.set_nodes([NodeFacts {
        name: "node-a".into(),
        ..Default::default()
    }]);
    state.recompute(now);
    assert_eq!(
        state.handle_frame(&eth0(), &[0; 10], now).dropped,
        Some(ParseError::Truncated)
    );
    // The takeover burst is over before the conflict comes.
    for offset in [0, 500, 1000] {
        state.due(now + Duration::from_millis(offset));
    }
    let later = now + Duration::from_millis(1500);
    assert_eq!(
        state.next_deadline(later),
        Some(now + Duration::from_secs(2)),
        "the fence"
    );
    let stranger = state.handle_frame(
        &eth0(),
        &arp::gratuitous_reply(ANNOUNCED, STRANGER_MAC),
        later,
    );
    assert_eq!(stranger.conflict.map(|c| c.claim.mac), Some(STRANGER_MAC));
    // The address is defended with an immediate announcement round.
    assert_eq!(state.next_deadline(later), Some(later));
    assert_eq!(state.due(later).len(), 2);
    let peer = state.handle_frame(
        &eth0(),
        &arp::gratuitous_reply(ANNOUNCED, mac_of("node-b")),
        now,
    );
    assert_eq!(
        peer.conflict, None,
        "another FerroLB node is a handover, not a conflict"
    );
}

/// The packet readers answer from a snapshot without the state's owner: the same answers as
/// the state gives, nothing for IPs or interfaces not owned, and silence from the fence instant
/// on even if no newer snapshot is ever published.
#[test]
fn a_snapshot_answers_like_the_state_and_fences_itself() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    state.lease_seen(&lease("node-a", 1, true), now);
    state.lease_seen(&lease("node-b", 1, true), now);
    state.renewed(now);
    // node-b is alive (its MAC is a FerroLB MAC) but may not announce.
    state.set_nodes([NodeFacts {
        name: "node-a".into(),
        ..Default::default()
    }]);
    state.recompute(now);
    let snapshot = state.snapshot();
    let request = who_has(ANNOUNCED);
    let from_snapshot = snapshot.handle_frame(&eth0(), &request, now);
    assert!(from_snapshot.request);
    assert!(from_snapshot.reply.is_some());
    assert_eq!(from_snapshot, state.handle_frame(&eth0(), &request, now));
    let unowned = who_has(Ipv4Addr::new(198, 51, 100, 8));
    assert_eq!(snapshot.handle_frame(&eth0(), &unowned, now).reply, None);
    let eth1 = InterfaceName::new("eth1").unwrap();
    assert_eq!(snapshot.handle_frame(&eth1, &request, now).reply, None);
    // The fence falls 2 s after the renewal was sent; nobody publishes anything meanwhile.
    let just_before = now + Duration::from_millis(1999);
    assert!(
        snapshot
            .handle_frame(&eth0(), &request, just_before)
            .reply
            .is_some()
    );
    let fenced = snapshot.handle_frame(&eth0(), &request, now + Duration::from_secs(2));
    assert_eq!(fenced.reply, None);
    assert!(fenced.request, "still counted as a request");
    // Conflicts come from strangers only, and only while answering.
    let stranger = arp::gratuitous_reply(ANNOUNCED, STRANGER_MAC);
    assert!(
        snapshot
            .handle_frame(&eth0(), &stranger, now)
            .conflict
            .is_some()
    );
    let peer = arp::gratuitous_reply(ANNOUNCED, mac_of("node-b"));
    assert_eq!(snapshot.handle_frame(&eth0(), &peer, now).conflict, None);
    // SIGTERM: the snapshot taken after the release answers nothing at all.
    state.release();
    let released = state.snapshot();
    assert!(released.answering.is_empty());
    assert_eq!(released.handle_frame(&eth0(), &request, now).reply, None);
    assert_eq!(
        Snapshot::empty().handle_frame(&eth0(), &request, now).reply,
        None
    );
}

mod failover_property {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whenever the owner stops renewing, however late its renewals are confirmed to it or
        /// seen by its peer, the two never answer for the IP at the same moment, and the peer
        /// has taken over within a lease duration (plus its view's delay) of the last renewal.
        #[test]
        fn two_nodes_never_answer_at_once(
            renewals in 0u32..5,
            confirm_latency_ms in 0u64..900,
            observe_delay_ms in 0u64..900,
        ) {
            let start = Instant::now();
            let mut speakers = [speaker("node-a", start), speaker("node-b", start)];
            for state in &mut speakers {
                state.lease_seen(&lease("node-a", 1, true), start);
                state.lease_seen(&lease("node-b", 1, true), start);
                state.renewed(start);
                state.recompute(start);
            }
            let owner = speakers.iter().position(|s| !s.announced().is_empty()).unwrap();
            let other = 1 - owner;
            let names = ["node-a", "node-b"];
            let step = Duration::from_millis(50);
            let confirm = Duration::from_millis(confirm_latency_ms);
            let observe = Duration::from_millis(observe_delay_ms);
            let mut confirmed = 0u32;
            let mut observed = 0u32;
            let mut takeover = None;
            for tick in 1..=240u32 {
                let now = start + step * tick;
                // Renewal n (1-based) is sent at n seconds; the owner learns it succeeded
                // `confirm` later, the peer sees it `observe` later.
                while confirmed < renewals && start + Duration::from_secs(u64::from(confirmed + 1)) + confirm <= now {
                    confirmed += 1;
                    speakers[owner].renewed(start + Duration::from_secs(u64::from(confirmed)));
                }
                while observed < renewals && start + Duration::from_secs(u64::from(observed + 1)) + observe <= now {
                    observed += 1;
                    speakers[other].lease_seen(&lease(names[owner], observed + 1, true), now);
                }
                if tick % 20 == 0 {
                    // The survivor renews, and its watch delivers its own Lease back.
                    speakers[other].renewed(now);
                    speakers[other].lease_seen(&lease(names[other], 1000 + tick, true), now);
                }
                for state in &mut speakers {
                    state.recompute(now);
                }
                let owner_answers = answers(&mut speakers[owner], now);
                let other_answers = answers(&mut speakers[other], now);
                prop_assert!(!(owner_answers && other_answers), "both answer at {:?}", now - start);
                if other_answers && takeover.is_none() {
                    takeover = Some(now - start);
                }
            }
            let last_sent = Duration::from_secs(u64::from(renewals));
            // Found dead at the first sight of its own renewal after the peer's deadline.
            let latest = last_sent + observe + LeaseTiming::DEFAULT.lease_duration
                + LeaseTiming::DEFAULT.renew_interval + step;
            prop_assert!(takeover.is_some_and(|t| t <= latest), "takeover {:?}, latest {:?}", takeover, latest);
        }
    }
}
