//! The speaker core: joining, failover without overlap, goodbye, status and conflicts, with
//! heartbeats handed between speakers directly (the protocol itself is tested against
//! interleavings in `crate::heartbeat`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::{AddressSet, InterfaceName, L2AdvertisementSpec};

use super::*;
use crate::heartbeat::Kind;
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

const TIMING: HeartbeatTiming = HeartbeatTiming::DEFAULT;

fn published(node: &str) -> Vec<PublishedInterface> {
    vec![PublishedInterface {
        name: eth0(),
        mac: mac_of(node),
        is_virtual: false,
        subnets: vec!["198.51.100.2/24".parse().unwrap()],
    }]
}

/// A speaker on `node` that knows node-a and node-b, with one Service to announce.
fn speaker(node: &str, now: Instant) -> SpeakerState {
    let mut state = SpeakerState::new(node, TIMING, BurstPolicy::default());
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
    for name in ["node-a", "node-b"] {
        state.registered(name, &published(name), now);
    }
    state
}

/// A speaker alone on its LAN: only its own registration.
fn lonely(now: Instant) -> SpeakerState {
    let mut state = speaker("node-a", now);
    state.unregistered("node-b", now);
    state
}

/// Steps `state` and sends what is due, returning the heartbeats it sent.
fn beat(state: &mut SpeakerState, sequence: &mut u32, now: Instant) -> Vec<Heartbeat> {
    if !state.step_heartbeats(now) {
        return Vec::new();
    }
    let mut sent = Vec::new();
    for (interface, outgoing) in state.outgoing_heartbeats(now) {
        *sequence += 1;
        sent.push(Heartbeat {
            kind: Kind::Heartbeat,
            api_reachable: true,
            key_id: 1,
            node: node_id(&state.node),
            incarnation: 1,
            sequence: *sequence,
            sent_unix_ms: 0,
            suspects: outgoing.suspects,
            reported: outgoing.reported,
        });
        state.heartbeat_sent(&interface, now);
    }
    sent
}

/// Runs a lonely speaker's heartbeats until it may answer; returns when that was.
fn join_alone(state: &mut SpeakerState, start: Instant) -> Instant {
    let mut sequence = 0;
    for ms in 0..2_000u64 {
        let now = start + Duration::from_millis(ms);
        beat(state, &mut sequence, now);
        if state.needs_recompute(now) {
            state.recompute(now);
        }
        if state.may_answer(now) && !state.announced().is_empty() {
            return now;
        }
    }
    panic!("never joined");
}

/// Two speakers handing heartbeats to each other with a delay; a crashed one keeps answering
/// from its last snapshot (as its kernel would) until that fences itself.
struct Pair {
    speakers: [SpeakerState; 2],
    sequences: [u32; 2],
    running: [bool; 2],
    snapshots: [Snapshot; 2],
    in_flight: Vec<(Instant, usize, Heartbeat)>,
    delay: Duration,
}

impl Pair {
    fn new(start: Instant, delay: Duration) -> Self {
        Pair {
            speakers: [speaker("node-a", start), speaker("node-b", start)],
            sequences: [0, 0],
            running: [true, true],
            snapshots: [Snapshot::empty(), Snapshot::empty()],
            in_flight: Vec::new(),
            delay,
        }
    }

    fn tick(&mut self, now: Instant) {
        for (arrival, to, heartbeat) in std::mem::take(&mut self.in_flight) {
            if arrival > now {
                self.in_flight.push((arrival, to, heartbeat));
            } else if self.running[to] {
                self.speakers[to].heartbeat_received(&eth0(), &heartbeat, now);
            }
        }
        for index in 0..2 {
            if !self.running[index] {
                continue;
            }
            let state = &mut self.speakers[index];
            if state.needs_recompute(now) {
                state.recompute(now);
            }
            for heartbeat in beat(state, &mut self.sequences[index], now) {
                self.in_flight
                    .push((now + self.delay, 1 - index, heartbeat));
            }
            self.snapshots[index] = self.speakers[index].snapshot(now);
        }
    }

    fn answering(&self, now: Instant) -> [bool; 2] {
        let request = who_has(ANNOUNCED);
        [0, 1].map(|i| {
            self.snapshots[i]
                .handle_frame(&eth0(), &request, now)
                .reply
                .is_some()
        })
    }

    /// Runs for `ms`, checking every millisecond; returns when each answered last and first.
    fn run(&mut self, start: Instant, from_ms: u64, ms: u64) -> [(Option<u64>, Option<u64>); 2] {
        let mut seen = [(None, None); 2];
        for at in from_ms..from_ms + ms {
            let now = start + Duration::from_millis(at);
            self.tick(now);
            let answering = self.answering(now);
            assert!(!(answering[0] && answering[1]), "both answer at {at} ms");
            for index in 0..2 {
                if answering[index] {
                    seen[index].0.get_or_insert(at);
                    seen[index].1 = Some(at);
                }
            }
        }
        seen
    }

    fn owner(&self) -> usize {
        self.speakers
            .iter()
            .position(|s| !s.announced().is_empty())
            .expect("someone owns the IP")
    }
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
fn nothing_is_answered_before_joining() {
    let now = Instant::now();
    let mut state = lonely(now);
    assert!(state.recompute(now).is_empty());
    assert!(!answers(&mut state, now));
    // Joined once its first heartbeat went out and the rejoin time has passed.
    let joined = join_alone(&mut state, now);
    assert_eq!(joined - now, TIMING.rejoin());
    assert!(answers(&mut state, joined));
    assert_eq!(
        state.announced().keys().copied().collect::<Vec<_>>(),
        [IpAddr::V4(ANNOUNCED)]
    );
}

#[test]
fn a_peer_that_never_speaks_is_waited_for_until_it_counts_dead() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    let joined = join_alone(&mut state, now);
    assert!(joined - now >= TIMING.dead_after(), "{:?}", joined - now);
    assert!(joined - now <= TIMING.dead_after() + Duration::from_millis(2));
}

#[test]
fn ips_without_owner_counts_covered_ips_no_live_node_may_announce() {
    let now = Instant::now();
    let mut state = lonely(now);
    let now = join_alone(&mut state, now);
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
    // Silent (no heartbeat for long: a stall): this speaker elects nothing and reports nothing.
    let later = now + Duration::from_secs(1);
    state.step_heartbeats(later);
    state.recompute(later);
    assert!(!state.may_answer(later));
    assert_eq!(state.ips_without_owner(), 0);
}

/// The owner crashes: its kernel answers until the fence of its last heartbeat, the peer takes
/// over once it counts the owner dead, and at no millisecond do both answer.
#[test]
fn failover_never_has_two_nodes_answering() {
    let start = Instant::now();
    let mut pair = Pair::new(start, TIMING.max_delay);
    pair.run(start, 0, 1_000);
    let owner = pair.owner();
    pair.running[owner] = false;
    let seen = pair.run(start, 1_000, 1_000);
    let silent_from = seen[owner].1.map_or(1_000, |last| last + 1);
    let takeover = seen[1 - owner].0.expect("taken over");
    assert!(silent_from <= 1_000 + TIMING.fence().as_millis() as u64);
    // Dead `dead_after` after the last heartbeat arrived, which left before the crash.
    let bound = 1_000 + (TIMING.max_delay + TIMING.dead_after()).as_millis() as u64;
    assert!(
        takeover > silent_from && takeover <= bound,
        "taken over at {takeover} ms"
    );
    assert_eq!(
        pair.speakers[1 - owner].take_detections().len(),
        1,
        "one detection, for the histogram"
    );
}

/// SIGTERM: silent at once; the goodbye hands over as soon as it arrives.
#[test]
fn a_goodbye_hands_over_at_once() {
    let start = Instant::now();
    let mut pair = Pair::new(start, TIMING.max_delay);
    pair.run(start, 0, 1_000);
    let owner = pair.owner();
    let at = start + Duration::from_millis(1_000);
    let (lost, goodbyes) = pair.speakers[owner].release(at);
    assert_eq!(lost, [OwnershipChange::Lost(IpAddr::V4(ANNOUNCED))]);
    assert!(!answers(&mut pair.speakers[owner], at));
    pair.snapshots[owner] = pair.speakers[owner].snapshot(at);
    pair.running[owner] = false;
    for (_, outgoing) in goodbyes {
        pair.in_flight.push((
            at + pair.delay,
            1 - owner,
            Heartbeat {
                kind: Kind::Goodbye,
                api_reachable: true,
                key_id: 1,
                node: node_id(["node-a", "node-b"][owner]),
                incarnation: 1,
                sequence: u32::MAX,
                sent_unix_ms: 0,
                suspects: outgoing.suspects,
                reported: outgoing.reported,
            },
        ));
    }
    let seen = pair.run(start, 1_000, 500);
    assert_eq!(seen[owner], (None, None));
    let takeover = seen[1 - owner].0.expect("taken over");
    assert_eq!(takeover, 1_000 + pair.delay.as_millis() as u64);
    assert!(pair.speakers[owner].recompute(at).is_empty());
    assert!(pair.speakers[owner].due(at).is_empty());
}

#[test]
fn only_changes_that_matter_call_for_a_new_election() {
    let start = Instant::now();
    let mut pair = Pair::new(start, Duration::from_millis(1));
    pair.run(start, 0, 1_000);
    let now = start + Duration::from_millis(1_000);
    let state = &mut pair.speakers[0];
    assert!(
        !state.needs_recompute(now),
        "routine heartbeats change nothing"
    );
    // A peer publishing other interfaces does.
    state.registered("node-b", &[], now);
    assert!(state.needs_recompute(now));
    state.recompute(now);
    assert!(!state.needs_recompute(now));
    // So does a peer found dead.
    pair.running[1] = false;
    let mut recomputed_at = None;
    for ms in 1..1_000u64 {
        let now = now + Duration::from_millis(ms);
        if pair.speakers[0].needs_recompute(now) && recomputed_at.is_none() {
            recomputed_at = Some(ms);
        }
        pair.tick(now);
    }
    assert!(recomputed_at.is_some_and(|ms| ms as u128 <= TIMING.dead_after().as_millis()));
}

#[test]
fn a_sender_not_yet_registered_is_listed_until_it_is() {
    let now = Instant::now();
    let mut state = lonely(now);
    let now = join_alone(&mut state, now);
    let newcomer = node_id("node-b");
    assert!(
        state.unknown_sender(&eth0(), newcomer, now),
        "listed at once"
    );
    let listed = state.outgoing_heartbeats(now);
    assert!(listed[0].1.suspects.contains(&newcomer));
    // Its registration arrives: it counts as just heard, and is no longer listed.
    state.registered("node-b", &published("node-b"), now);
    assert!(
        !state.outgoing_heartbeats(now)[0]
            .1
            .suspects
            .contains(&newcomer)
    );
    assert_eq!(state.name_of(newcomer), Some("node-b"));
    assert_eq!(state.live_peers(now), 1);
}

#[test]
fn the_owner_reports_its_status_and_bursts() {
    let now = Instant::now();
    let mut state = lonely(now);
    let now = join_alone(&mut state, now);
    let statuses = state.statuses();
    let status = statuses.values().next().unwrap();
    assert_eq!(status.node, "node-a");
    assert_eq!(status.service_name, "web");
    assert_eq!(status.ips, ["198.51.100.7"]);
    assert_eq!(status.interfaces, [eth0()]);
    assert_eq!(state.due(now).len(), 2);
    assert!(
        state
            .next_deadline(now)
            .is_some_and(|at| at <= now + BurstPolicy::default().spacing)
    );
}

#[test]
fn frames_are_parsed_counted_and_checked_for_conflicts() {
    let start = Instant::now();
    let mut state = lonely(start);
    let now = join_alone(&mut state, start);
    assert_eq!(
        state.handle_frame(&eth0(), &[0; 10], now).dropped,
        Some(ParseError::Truncated)
    );
    // The takeover burst is over before the conflict comes.
    let mut sequence = 100;
    let mut later = now;
    for ms in 0..1_500u64 {
        later = now + Duration::from_millis(ms);
        beat(&mut state, &mut sequence, later);
        state.due(later);
    }
    let stranger = state.handle_frame(
        &eth0(),
        &arp::gratuitous_reply(ANNOUNCED, STRANGER_MAC),
        later,
    );
    assert_eq!(stranger.conflict.map(|c| c.claim.mac), Some(STRANGER_MAC));
    // The address is defended with an immediate announcement round.
    assert_eq!(state.next_deadline(later), Some(later));
    assert_eq!(state.due(later).len(), 2);
    // Nothing that has passed is a deadline (the quiet time after joining ended long ago).
    assert!(state.next_deadline(later).is_some_and(|at| at > later));
    state.registered("node-b", &published("node-b"), later);
    let peer = state.handle_frame(
        &eth0(),
        &arp::gratuitous_reply(ANNOUNCED, mac_of("node-b")),
        later,
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
    let start = Instant::now();
    let mut state = lonely(start);
    let now = join_alone(&mut state, start);
    let snapshot = state.snapshot(now);
    let request = who_has(ANNOUNCED);
    let from_snapshot = snapshot.handle_frame(&eth0(), &request, now);
    assert!(from_snapshot.request);
    assert!(from_snapshot.reply.is_some());
    assert_eq!(from_snapshot, state.handle_frame(&eth0(), &request, now));
    let unowned = who_has(Ipv4Addr::new(198, 51, 100, 8));
    assert_eq!(snapshot.handle_frame(&eth0(), &unowned, now).reply, None);
    let eth1 = InterfaceName::new("eth1").unwrap();
    assert_eq!(snapshot.handle_frame(&eth1, &request, now).reply, None);
    // The fence falls `fence` after the last heartbeat was sent (at `start`, then every
    // interval); nobody publishes anything meanwhile.
    let fence = snapshot.fenced_from.expect("a fence");
    assert!(fence > now && fence <= now + TIMING.fence());
    let just_before = fence - Duration::from_millis(1);
    assert!(
        snapshot
            .handle_frame(&eth0(), &request, just_before)
            .reply
            .is_some()
    );
    let fenced = snapshot.handle_frame(&eth0(), &request, fence);
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
    // SIGTERM: the snapshot taken after the release answers nothing at all.
    state.release(now);
    let released = state.snapshot(now);
    assert!(released.answering.is_empty());
    assert_eq!(released.handle_frame(&eth0(), &request, now).reply, None);
    assert_eq!(
        Snapshot::empty().handle_frame(&eth0(), &request, now).reply,
        None
    );
}

/// Two networks: suspected on one, the owner keeps answering on the other only.
#[test]
fn a_node_answers_only_on_the_networks_where_it_counts_itself() {
    let start = Instant::now();
    let mut state = lonely(start);
    let eth1 = InterfaceName::new("eth1").unwrap();
    let mut interfaces = published("node-a");
    interfaces.push(PublishedInterface {
        name: eth1.clone(),
        mac: MacAddr([0x02, 0, 0, 0, 1, 0x0a]),
        is_virtual: false,
        subnets: vec!["198.51.100.130/25".parse().unwrap()],
    });
    state.registered("node-a", &interfaces, start);
    state.set_advertisements(vec![L2AdvertisementSpec {
        interfaces: vec![eth0(), eth1.clone()],
        ..Default::default()
    }]);
    state.set_links(
        [
            (eth0(), mac_of("node-a")),
            (eth1.clone(), MacAddr([0x02, 0, 0, 0, 1, 0x0a])),
        ]
        .into(),
        start,
    );
    let now = join_alone(&mut state, start);
    assert_eq!(
        state.announced()[&IpAddr::V4(ANNOUNCED)],
        [eth0(), eth1.clone()].into()
    );
    // A peer (that may announce nothing itself) hears node-a on eth0 but not on eth1, and
    // says so there.
    state.registered("node-b", &[], now);
    for (interface, suspects, sequence) in [
        (eth0(), vec![], 1),
        (eth1.clone(), vec![node_id("node-a")], 2),
    ] {
        state.heartbeat_received(
            &interface,
            &Heartbeat {
                kind: Kind::Heartbeat,
                api_reachable: true,
                key_id: 1,
                node: node_id("node-b"),
                incarnation: 1,
                sequence,
                sent_unix_ms: 0,
                suspects,
                reported: vec![],
            },
            now,
        );
    }
    assert!(state.needs_recompute(now));
    state.recompute(now);
    assert_eq!(state.announced()[&IpAddr::V4(ANNOUNCED)], [eth0()].into());
}

#[test]
fn heartbeats_go_only_where_a_pool_could_be_announced() {
    let now = Instant::now();
    let mut state = speaker("node-a", now);
    let veth = InterfaceName::new("veth7f3a").unwrap();
    let mut interfaces = published("node-a");
    interfaces.push(PublishedInterface {
        name: veth.clone(),
        mac: MacAddr([0x02, 0, 0, 0, 2, 0x0a]),
        is_virtual: true,
        subnets: vec![],
    });
    state.registered("node-a", &interfaces, now);
    state.set_links(
        [
            (eth0(), mac_of("node-a")),
            (veth.clone(), MacAddr([0x02, 0, 0, 0, 2, 0x0a])),
        ]
        .into(),
        now,
    );
    state.take_networks_changed();
    let networks = |state: &SpeakerState| state.heartbeat_interfaces().cloned().collect::<Vec<_>>();
    // A pod's veth: no pool's subnet, and virtual, so never announced on.
    assert_eq!(networks(&state), [eth0()]);
    // An advertisement that names it makes it a network.
    state.set_advertisements(vec![L2AdvertisementSpec {
        interfaces: vec![veth.clone()],
        ..Default::default()
    }]);
    state.step_heartbeats(now);
    assert!(state.take_networks_changed());
    assert_eq!(networks(&state), [veth]);
    // Without pools nothing is announced anywhere, and nothing heartbeats.
    state.set_pools(Vec::new());
    state.step_heartbeats(now);
    assert!(state.take_networks_changed());
    assert!(networks(&state).is_empty());
    assert!(!state.take_networks_changed());
}

mod failover_property {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whenever the owner crashes, with any delay up to the allowance, the two never
        /// answer at once, and the peer takes over within the dead time after the owner's last
        /// heartbeat arrived.
        #[test]
        fn two_nodes_never_answer_at_once(crash_ms in 500u64..900, delay_ms in 0u64..=25) {
            let start = Instant::now();
            let mut pair = Pair::new(start, Duration::from_millis(delay_ms));
            pair.run(start, 0, crash_ms);
            let owner = pair.owner();
            pair.running[owner] = false;
            let seen = pair.run(start, crash_ms, 700);
            let takeover = seen[1 - owner].0;
            let latest = crash_ms + delay_ms + TIMING.dead_after().as_millis() as u64;
            prop_assert!(takeover.is_some_and(|t| t <= latest), "takeover {:?}, latest {}", takeover, latest);
        }
    }
}

/// node-a and node-b, with `excluded` carrying the exclude-from-external-load-balancers label.
fn nodes_excluding(excluded: &str) -> [NodeFacts; 2] {
    ["node-a", "node-b"].map(|name| NodeFacts {
        name: name.into(),
        labels: if name == excluded {
            [(
                crate::election::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.to_owned(),
                String::new(),
            )]
            .into()
        } else {
            BTreeMap::new()
        },
        ..Default::default()
    })
}

/// The owner gets excluded; the new owner learns it through its watch first and the old one
/// `skew` later. Never both answer: the new owner waits for the old one to stop.
#[test]
fn a_live_owner_is_given_time_to_stop_before_its_ip_is_taken() {
    let start = Instant::now();
    let mut pair = Pair::new(start, TIMING.max_delay);
    pair.run(start, 0, 1_000);
    let owner = pair.owner();
    let excluded = ["node-a", "node-b"][owner];
    pair.speakers[1 - owner].set_nodes(nodes_excluding(excluded));
    pair.run(start, 1_000, 30);
    pair.speakers[owner].set_nodes(nodes_excluding(excluded));
    let seen = pair.run(start, 1_030, 1_000);
    assert_eq!(seen[owner].0, None, "the excluded owner stopped");
    let takeover = seen[1 - owner].0.expect("taken over");
    let grace = HANDOVER_GRACE.as_millis() as u64;
    assert!(
        (1_000 + grace..1_000 + grace + 5).contains(&takeover),
        "taken over at {takeover} ms, once the grace had passed"
    );
}

/// An old owner whose watch lags past the grace does not leave the IP unanswered: the new
/// owner answers once the grace has passed, until the old one hears and stops.
#[test]
fn a_handover_slower_than_the_grace_is_still_made() {
    let start = Instant::now();
    let mut pair = Pair::new(start, TIMING.max_delay);
    pair.run(start, 0, 1_000);
    let owner = pair.owner();
    pair.speakers[1 - owner].set_nodes(nodes_excluding(["node-a", "node-b"][owner]));
    let grace = HANDOVER_GRACE.as_millis() as u64;
    let mut taken = None;
    for at in 1_000..1_000 + grace + 100 {
        let now = start + Duration::from_millis(at);
        pair.tick(now);
        if pair.answering(now)[1 - owner] {
            taken.get_or_insert(at);
        }
    }
    assert!(taken.is_some_and(|at| at >= 1_000 + grace), "{taken:?}");
}
