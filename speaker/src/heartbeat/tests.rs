//! The heartbeat protocol against interleavings: several speakers exchange heartbeats through a
//! simulated LAN that delays (up to the allowance), loses and cuts them, while speakers stall,
//! crash and restart. What every speaker would answer is what its in-kernel responder was last
//! told (a stalled or crashed process keeps answering until its fence falls), and at no
//! millisecond may two speakers answer for one IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::election::rendezvous;

const IPS: u8 = 8;
const RUN_MS: u64 = 5_000;

#[derive(Clone, Debug)]
enum Fault {
    /// The process stops running (its loop, its sends, its reads) for a while.
    Stall {
        node: usize,
        at_ms: u64,
        for_ms: u64,
    },
    /// SIGKILL: nothing runs again, what the kernel was told stays until its fence.
    Crash { node: usize, at_ms: u64 },
    /// A crashed node's speaker starts again (a new incarnation, knowing nothing).
    Restart { node: usize, at_ms: u64 },
    /// Heartbeats from one node stop reaching another (one direction).
    Cut {
        from: usize,
        to: usize,
        at_ms: u64,
        for_ms: u64,
    },
    /// SIGTERM: silent at once, then a goodbye.
    Leave { node: usize, at_ms: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Running,
    StalledUntil(u64),
    Crashed,
}

struct Speaker {
    name: String,
    membership: Membership,
    run: Run,
    incarnation: u64,
    /// What the in-kernel responder answers: until when, and which IPs.
    published: (Option<Instant>, BTreeSet<IpAddr>),
    send_now: bool,
    /// How late (up to the jitter allowance) its next due heartbeat goes out, and since when
    /// one has been due.
    late_ms: u64,
    due_since: Option<u64>,
    sequence: u32,
}

struct Lan {
    start: Instant,
    names: Vec<String>,
    ids: BTreeSet<NodeId>,
    speakers: Vec<Speaker>,
    in_flight: Vec<(u64, usize, Heartbeat)>,
    rng: u64,
    loss_per_mille: u64,
    cuts: Vec<(usize, usize, u64, u64)>,
    /// The last millisecond each IP was answered by someone, for the liveness check.
    answered_at: BTreeMap<IpAddr, u64>,
    longest_dark: BTreeMap<IpAddr, u64>,
    /// A node the others learn of from the API only at the given millisecond: until then its
    /// heartbeats reach them as from an unknown sender.
    unknown_until: Option<(usize, u64)>,
}

fn ip(index: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + index))
}

impl Lan {
    fn new(nodes: usize, seed: u64, loss_per_mille: u64) -> Self {
        let start = Instant::now();
        let names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
        let ids = names.iter().map(|name| node_id(name)).collect();
        let mut lan = Lan {
            start,
            names: names.clone(),
            ids,
            speakers: Vec::new(),
            in_flight: Vec::new(),
            rng: seed | 1,
            loss_per_mille,
            cuts: Vec::new(),
            answered_at: BTreeMap::new(),
            longest_dark: BTreeMap::new(),
            unknown_until: None,
        };
        for index in 0..nodes {
            let speaker = lan.fresh_speaker(index, 1, 0);
            lan.speakers.push(speaker);
        }
        lan
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn fresh_speaker(&self, index: usize, incarnation: u64, now_ms: u64) -> Speaker {
        let mut membership = Membership::new(node_id(&self.names[index]), HeartbeatTiming::DEFAULT);
        membership.set_known(&self.ids, self.at(now_ms));
        Speaker {
            name: self.names[index].clone(),
            membership,
            run: Run::Running,
            incarnation,
            published: (None, BTreeSet::new()),
            send_now: false,
            late_ms: 0,
            due_since: None,
            sequence: 0,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: reproducible from the proptest seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn apply(&mut self, fault: &Fault, now_ms: u64) {
        match *fault {
            Fault::Stall { node, for_ms, .. } => {
                if self.speakers[node].run == Run::Running {
                    self.speakers[node].run = Run::StalledUntil(now_ms + for_ms);
                }
            }
            Fault::Crash { node, .. } => self.speakers[node].run = Run::Crashed,
            Fault::Restart { node, .. } => {
                if self.speakers[node].run == Run::Crashed {
                    let incarnation = self.speakers[node].incarnation + 1;
                    let published = self.speakers[node].published.clone();
                    let mut speaker = self.fresh_speaker(node, incarnation, now_ms);
                    // The kernel keeps what the crashed process told it until the new one
                    // overwrites it.
                    speaker.published = published;
                    self.speakers[node] = speaker;
                }
            }
            Fault::Cut {
                from, to, for_ms, ..
            } => self.cuts.push((from, to, now_ms, now_ms + for_ms)),
            Fault::Leave { node, .. } => {
                if self.speakers[node].run == Run::Running {
                    let now = self.at(now_ms);
                    // Silent first, then the goodbye; the process then exits.
                    self.speakers[node].published = (None, BTreeSet::new());
                    let outgoing = self.speakers[node].membership.leave(now);
                    self.broadcast(node, Kind::Goodbye, outgoing, now_ms);
                    self.speakers[node].run = Run::Crashed;
                }
            }
        }
    }

    fn broadcast(&mut self, from: usize, kind: Kind, outgoing: Outgoing, now_ms: u64) {
        self.speakers[from].sequence += 1;
        let speaker = &self.speakers[from];
        let heartbeat = Heartbeat {
            kind,
            api_reachable: true,
            key_id: 1,
            node: node_id(&speaker.name),
            incarnation: speaker.incarnation,
            sequence: speaker.sequence,
            sent_unix_ms: now_ms,
            suspects: outgoing.suspects,
            reported: outgoing.reported,
        };
        let max_delay = HeartbeatTiming::DEFAULT.max_delay.as_millis() as u64;
        for to in 0..self.speakers.len() {
            if to == from {
                continue;
            }
            let cut = self
                .cuts
                .iter()
                .any(|&(f, t, start, end)| f == from && t == to && (start..end).contains(&now_ms));
            let lost = self.random() % 1000 < self.loss_per_mille;
            if cut || lost {
                continue;
            }
            // Half at the allowance: the worst case is the interesting one.
            let delay = if self.random().is_multiple_of(2) {
                max_delay
            } else {
                self.random() % (max_delay + 1)
            };
            self.in_flight.push((now_ms + delay, to, heartbeat.clone()));
        }
    }

    /// Node `node` has never run, starts at `start_ms`, and the others learn of it only at
    /// `known_at_ms` (its registration reaches them through the API that late).
    fn join_late(&mut self, node: usize, start_ms: u64, known_at_ms: u64) -> Vec<Fault> {
        self.speakers[node].run = Run::Crashed;
        let others: BTreeSet<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|id| *id != node_id(&self.names[node]))
            .collect();
        let start = self.at(0);
        for (index, speaker) in self.speakers.iter_mut().enumerate() {
            if index != node {
                speaker.membership.set_known(&others, start);
            }
        }
        self.unknown_until = Some((node, known_at_ms));
        vec![Fault::Restart {
            node,
            at_ms: start_ms,
        }]
    }

    fn tick(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        if let Some((node, known_at)) = self.unknown_until
            && now_ms == known_at
        {
            for (index, speaker) in self.speakers.iter_mut().enumerate() {
                if index != node {
                    speaker.membership.set_known(&self.ids, now);
                }
            }
        }
        for speaker in &mut self.speakers {
            if let Run::StalledUntil(until) = speaker.run
                && now_ms >= until
            {
                speaker.run = Run::Running;
            }
        }
        // A speaker's loop reads its socket before or after its timer step, in either order.
        let reads_first: Vec<bool> = (0..self.speakers.len())
            .map(|_| self.random().is_multiple_of(2))
            .collect();
        self.deliver(now_ms, |index| reads_first[index]);
        for index in 0..self.speakers.len() {
            if self.speakers[index].run != Run::Running {
                continue;
            }
            let due = self.speakers[index].membership.step(now);
            let jitter = HeartbeatTiming::DEFAULT.jitter.as_millis() as u64;
            let late_ms = self.random() % (jitter + 1);
            let speaker = &mut self.speakers[index];
            // A due heartbeat leaves up to the jitter allowance late (its loop was busy).
            let due_since = *speaker.due_since.get_or_insert(now_ms);
            let late_enough = now_ms - due_since >= speaker.late_ms;
            if !due {
                speaker.due_since = None;
            }
            if (due && late_enough) || speaker.send_now {
                let outgoing = speaker.membership.outgoing(now);
                self.broadcast(index, Kind::Heartbeat, outgoing, now_ms);
                let speaker = &mut self.speakers[index];
                speaker.membership.sent(now);
                speaker.send_now = false;
                speaker.due_since = None;
                speaker.late_ms = late_ms;
            }
            self.publish(index, now);
        }
        self.deliver(now_ms, |index| !reads_first[index]);
        for index in 0..self.speakers.len() {
            if self.speakers[index].run == Run::Running && self.speakers[index].send_now {
                let outgoing = self.speakers[index].membership.outgoing(now);
                self.broadcast(index, Kind::Heartbeat, outgoing, now_ms);
                let speaker = &mut self.speakers[index];
                speaker.membership.sent(now);
                speaker.send_now = false;
            }
            if self.speakers[index].run == Run::Running {
                self.publish(index, now);
            }
        }
    }

    /// Hands the heartbeats that have arrived to the running speakers `now_reading` picks; a
    /// stalled speaker's socket queues them until it runs again.
    fn deliver(&mut self, now_ms: u64, now_reading: impl Fn(usize) -> bool) {
        let now = self.at(now_ms);
        let mut waiting = Vec::new();
        for (arrival, to, heartbeat) in std::mem::take(&mut self.in_flight) {
            let speaker = &mut self.speakers[to];
            if speaker.run == Run::Crashed {
                continue;
            }
            if arrival > now_ms || speaker.run != Run::Running || !now_reading(to) {
                waiting.push((arrival, to, heartbeat));
                continue;
            }
            let unknown = self.unknown_until.is_some_and(|(node, known_at)| {
                node != to && now_ms < known_at && heartbeat.node == node_id(&self.names[node])
            });
            let send_now = if unknown {
                speaker.membership.heard_unknown(heartbeat.node, now)
            } else {
                speaker.membership.receive(&heartbeat, now)
            };
            if send_now {
                speaker.send_now = true;
            }
        }
        self.in_flight = waiting;
    }

    fn publish(&mut self, index: usize, now: Instant) {
        let speaker = &self.speakers[index];
        let alive = speaker.membership.alive(now);
        let mut candidates: Vec<&str> = self
            .names
            .iter()
            .filter(|name| alive.contains(&node_id(name)))
            .map(String::as_str)
            .collect();
        candidates.push(&speaker.name);
        let owned = (0..IPS)
            .map(ip)
            .filter(|ip| rendezvous::winner(*ip, candidates.iter().copied()) == Some(&speaker.name))
            .collect();
        let until = speaker.membership.answer_until(now);
        self.speakers[index].published = (until, owned);
    }

    /// Who answers for each IP at `now_ms`, as the kernel of every node would.
    fn answering(&self, now_ms: u64) -> BTreeMap<IpAddr, Vec<&str>> {
        let now = self.at(now_ms);
        let mut answering: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
        for speaker in &self.speakers {
            let (until, owned) = &speaker.published;
            if until.is_some_and(|until| now < until) {
                for ip in owned {
                    answering.entry(*ip).or_default().push(&speaker.name);
                }
            }
        }
        answering
    }

    /// Runs `faults` (sorted by time); panics naming the millisecond two speakers answer for
    /// one IP.
    fn run(&mut self, faults: &[Fault]) {
        self.run_for(faults, RUN_MS);
    }

    fn run_for(&mut self, faults: &[Fault], run_ms: u64) {
        for now_ms in 0..run_ms {
            for fault in faults.iter().filter(|fault| fault_at(fault) == now_ms) {
                self.apply(fault, now_ms);
            }
            self.tick(now_ms);
            let answering = self.answering(now_ms);
            for (ip, nodes) in &answering {
                assert!(
                    nodes.len() <= 1,
                    "at {now_ms} ms {ip} is answered by {nodes:?}; faults {faults:?}"
                );
            }
            let answered: BTreeSet<IpAddr> = answering.into_keys().collect();
            for index in 0..IPS {
                let ip = ip(index);
                if answered.contains(&ip) {
                    let last = self.answered_at.insert(ip, now_ms).unwrap_or(now_ms);
                    let dark = now_ms - last;
                    let longest = self.longest_dark.entry(ip).or_default();
                    *longest = (*longest).max(dark);
                }
            }
        }
    }
}

fn fault_at(fault: &Fault) -> u64 {
    match *fault {
        Fault::Stall { at_ms, .. }
        | Fault::Crash { at_ms, .. }
        | Fault::Restart { at_ms, .. }
        | Fault::Cut { at_ms, .. }
        | Fault::Leave { at_ms, .. } => at_ms,
    }
}

fn fault(nodes: usize) -> impl Strategy<Value = Fault> {
    let node = 0..nodes;
    let at = 500..RUN_MS - 1_000;
    prop_oneof![
        (node.clone(), at.clone(), 20..1_500u64).prop_map(|(node, at_ms, for_ms)| Fault::Stall {
            node,
            at_ms,
            for_ms
        }),
        (node.clone(), at.clone()).prop_map(|(node, at_ms)| Fault::Crash { node, at_ms }),
        (node.clone(), at.clone()).prop_map(|(node, at_ms)| Fault::Restart { node, at_ms }),
        (node.clone(), at.clone()).prop_map(|(node, at_ms)| Fault::Leave { node, at_ms }),
        (node.clone(), 1..nodes, at, 50..3_000u64).prop_map(
            move |(from, offset, at_ms, for_ms)| {
                Fault::Cut {
                    from,
                    to: (from + offset) % nodes,
                    at_ms,
                    for_ms,
                }
            }
        ),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, u64, u64, Vec<Fault>)> {
    (3..=4usize).prop_flat_map(|nodes| {
        (
            Just(nodes),
            any::<u64>(),
            prop_oneof![Just(0u64), Just(5), Just(20)],
            proptest::collection::vec(fault(nodes), 0..8),
        )
    })
}

/// At most one cut at a time: two opposite cuts with no third node to relay are a partition,
/// where each side answers for itself by design (see the protocol file).
fn one_cut(faults: &[Fault]) -> bool {
    faults
        .iter()
        .filter(|f| matches!(f, Fault::Cut { .. }))
        .count()
        <= 1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_two_speakers_ever_answer_for_one_ip((nodes, seed, loss, mut faults) in scenario()) {
        prop_assume!(one_cut(&faults));
        faults.sort_by_key(fault_at);
        Lan::new(nodes, seed, loss).run(&faults);
    }
}

#[test]
fn a_crashed_owner_is_replaced_within_the_dead_time() {
    let mut lan = Lan::new(3, 7, 0);
    lan.run(&[Fault::Crash {
        node: 0,
        at_ms: 2_000,
    }]);
    let timing = HeartbeatTiming::DEFAULT;
    // Its fence fell `fence` after its last heartbeat was sent; a peer took over `dead_after`
    // after it arrived (up to `max_delay` later), and answered at its next step (1 ms here).
    let bound = (timing.dead_after() - timing.fence() + timing.max_delay).as_millis() as u64 + 2;
    for (ip, dark) in &lan.longest_dark {
        assert!(*dark <= bound, "{ip} dark for {dark} ms (bound {bound})");
    }
    assert_eq!(
        lan.longest_dark.len(),
        usize::from(IPS),
        "every IP was answered"
    );
}

#[test]
fn a_goodbye_hands_over_within_a_delay() {
    let mut lan = Lan::new(3, 11, 0);
    lan.run(&[Fault::Leave {
        node: 1,
        at_ms: 2_000,
    }]);
    let max_delay = HeartbeatTiming::DEFAULT.max_delay.as_millis() as u64;
    for (ip, dark) in &lan.longest_dark {
        assert!(*dark <= max_delay + 2, "{ip} dark for {dark} ms");
    }
}

#[test]
fn a_one_way_cut_fences_the_node_that_cannot_be_heard() {
    let mut lan = Lan::new(3, 5, 0);
    lan.run(&[Fault::Cut {
        from: 0,
        to: 1,
        at_ms: 1_000,
        for_ms: 3_000,
    }]);
    let now = lan.at(3_000);
    let speaker = &lan.speakers[0];
    assert_eq!(speaker.membership.answer_until(now), None);
    // Healed at 4 s: node-0 answers again.
    assert!(
        lan.speakers[0]
            .membership
            .answer_until(lan.at(RUN_MS - 1))
            .is_some()
    );
}

#[test]
fn a_suspect_that_stalls_as_its_suspicion_arrives_is_silent_before_the_takeover() {
    // node-1 stops hearing node-0 at 1 s and suspects it 175 ms after the last heartbeat it
    // heard; node-0 stalls at every moment around the suspicion's arrival, so its last
    // heartbeat (and fence) may be as late as possible without it ever reading the suspicion.
    for offset in (0..100).step_by(3) {
        let mut lan = Lan::new(3, 1 + offset, 0);
        lan.run_for(
            &[
                Fault::Cut {
                    from: 0,
                    to: 1,
                    at_ms: 1_000,
                    for_ms: 1_500,
                },
                Fault::Stall {
                    node: 0,
                    at_ms: 1_100 + offset,
                    for_ms: 1_000,
                },
            ],
            2_300,
        );
    }
}

#[test]
fn a_lonely_speaker_answers_for_everything_it_can() {
    // Both peers crash: the survivor hears nobody and takes every IP.
    let mut lan = Lan::new(3, 3, 0);
    lan.run(&[
        Fault::Crash {
            node: 1,
            at_ms: 1_000,
        },
        Fault::Crash {
            node: 2,
            at_ms: 1_000,
        },
    ]);
    let answering = lan.answering(RUN_MS - 1);
    assert_eq!(answering.len(), usize::from(IPS));
    assert!(answering.values().all(|nodes| nodes == &["node-0"]));
}

#[test]
fn a_node_its_peers_do_not_know_yet_stays_silent_until_they_do() {
    // node-3 starts at 1 s; the others learn of it from the API between 20 ms and 1.5 s
    // later. Its heartbeats arrive from an unknown sender until then, which its peers list, so
    // it answers nothing that they still give to someone else, and it takes its share after.
    for (seed, known_after_ms) in [(1u64, 20u64), (2, 90), (3, 180), (4, 400), (5, 1_500)] {
        let mut lan = Lan::new(4, seed, 0);
        let faults = lan.join_late(3, 1_000, 1_000 + known_after_ms);
        lan.run_for(&faults, 3_500);
        let answering = lan.answering(3_499);
        assert!(
            answering.values().any(|nodes| nodes == &["node-3"]),
            "node-3 answers once known (after {known_after_ms} ms): {answering:?}"
        );
    }
}

#[test]
fn the_next_deadline_is_the_next_heartbeat_even_long_after_joining() {
    // A speaker that wakes only for its deadlines: it must wake for every heartbeat (a gap
    // longer than the stall time would count as a stall), and for a silent peer's death.
    let start = Instant::now();
    let timing = HeartbeatTiming::DEFAULT;
    let ids: BTreeSet<NodeId> = ["node-0", "node-1"].map(node_id).into();
    let mut membership = Membership::new(node_id("node-0"), timing);
    membership.set_known(&ids, start);
    let mut now = start;
    let mut steps = 0;
    while now < start + Duration::from_secs(2) {
        if membership.step(now) {
            membership.sent(now);
        }
        let next = membership.next_deadline(now).expect("a deadline");
        assert!(next > now);
        assert!(next - now <= timing.interval, "woke {:?} later", next - now);
        now = next;
        steps += 1;
    }
    assert!(steps < 200, "{steps} steps: it spins");
    assert!(
        membership.alive(now).is_empty(),
        "the silent peer counts dead"
    );
    assert!(
        membership.answer_until(now).is_some(),
        "and this node answers alone"
    );
}
