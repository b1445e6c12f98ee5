//! Prometheus metrics of the speaker.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_crds::InterfaceName;
use prometheus_client::registry::Registry;

use crate::announcer::OwnershipChange;
use crate::heartbeat_transport::HeartbeatCounters;
use crate::packet::ParseError;

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}

/// Every metric the speaker exports.
pub struct Metrics {
    pub registry: Registry,
    frames_dropped: Family<Labels, Counter>,
    requests_received: Family<Labels, Counter>,
    replies_sent: Family<Labels, Counter>,
    kernel_arp_replies: Counter,
    gratuitous_sent: Family<Labels, Counter>,
    conflicts: Family<Labels, Counter>,
    ownership_changes: Family<Labels, Counter>,
    announced_ips: Gauge,
    live_peers: Gauge,
    fenced: Gauge,
    ips_without_owner: Gauge,
    peers_alive: Family<Labels, Gauge>,
    bgp_session_up: Family<Labels, Gauge>,
    bgp_advertised_prefixes: Family<Labels, Gauge>,
    bgp_updates_sent: Family<Labels, Gauge>,
    detection_seconds: Histogram,
    round_late_seconds: Histogram,
    /// Heartbeats sent, received and rejected; shared with the heartbeat readers.
    pub heartbeat: HeartbeatCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// "arp" or "ndp", from the EtherType of a frame we built.
fn protocol(frame: &[u8]) -> &'static str {
    match frame.get(12..14) {
        Some([0x08, 0x06]) => "arp",
        _ => "ndp",
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferrolb_speaker");
        let metrics = Self {
            frames_dropped: Family::default(),
            requests_received: Family::default(),
            replies_sent: Family::default(),
            kernel_arp_replies: Counter::default(),
            gratuitous_sent: Family::default(),
            conflicts: Family::default(),
            ownership_changes: Family::default(),
            announced_ips: Gauge::default(),
            live_peers: Gauge::default(),
            fenced: Gauge::default(),
            ips_without_owner: Gauge::default(),
            peers_alive: Family::default(),
            bgp_session_up: Family::default(),
            bgp_advertised_prefixes: Family::default(),
            bgp_updates_sent: Family::default(),
            // 50 ms to 3.2 s: the default dead time is 300 ms.
            detection_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 7)),
            // 1 ms to 256 ms: the default jitter allowance is 25 ms.
            round_late_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 9)),
            heartbeat: HeartbeatCounters::default(),
            registry: Registry::default(),
        };
        registry.register(
            "frames_dropped",
            "Received frames not acted on, by reason",
            metrics.frames_dropped.clone(),
        );
        registry.register(
            "requests_received",
            "ARP requests and Neighbor Solicitations read on announcing interfaces, by protocol (ARP only about addresses this node owns: the kernel filters the rest)",
            metrics.requests_received.clone(),
        );
        registry.register(
            "replies_sent",
            "ARP replies and solicited Neighbor Advertisements sent, by protocol",
            metrics.replies_sent.clone(),
        );
        registry.register(
            "kernel_arp_replies",
            "ARP replies sent by the in-kernel responder, whose requests never reach the packet readers (not in requests_received or replies_sent)",
            metrics.kernel_arp_replies.clone(),
        );
        registry.register(
            "gratuitous_sent",
            "Gratuitous ARP and unsolicited Neighbor Advertisements sent, by protocol",
            metrics.gratuitous_sent.clone(),
        );
        registry.register(
            "ip_conflicts",
            "ARP/NDP messages claiming an announced IP for a MAC of no FerroLB node, by interface",
            metrics.conflicts.clone(),
        );
        registry.register(
            "ownership_changes",
            "IPs gained or lost by this node",
            metrics.ownership_changes.clone(),
        );
        registry.register(
            "announced_ips",
            "IPs this node answers for",
            metrics.announced_ips.clone(),
        );
        registry.register(
            "live_peers",
            "Other speakers counted alive from their heartbeats, on any network",
            metrics.live_peers.clone(),
        );
        registry.register(
            "fenced",
            "1 while this speaker may not answer on any network (not yet joined, suspected by a peer, or its heartbeat loop late), else 0",
            metrics.fenced.clone(),
        );
        registry.register(
            "ips_without_owner",
            "IPs that an L2Advertisement covers and a Service holds, with no live candidate node: nobody answers for them (every speaker computes the same number; 0 while fenced)",
            metrics.ips_without_owner.clone(),
        );
        registry.register(
            "peers_alive",
            "Other speakers counted alive from their heartbeats, by interface",
            metrics.peers_alive.clone(),
        );
        registry.register(
            "peer_detection_seconds",
            "How long a peer had been unheard when this node counted it dead (a goodbye: about 0)",
            metrics.detection_seconds.clone(),
        );
        registry.register(
            "heartbeat_round_late_seconds",
            "How much later than one interval after the previous round each round of heartbeats went out (past the jitter allowance, this node stops answering until the next)",
            metrics.round_late_seconds.clone(),
        );
        registry.register(
            "bgp_session_up",
            "1 while this node's BGP session with the peer is Established, else 0",
            metrics.bgp_session_up.clone(),
        );
        registry.register(
            "bgp_advertised_prefixes",
            "Prefixes this node advertises to the BGP peer",
            metrics.bgp_advertised_prefixes.clone(),
        );
        registry.register(
            "bgp_updates_sent",
            "UPDATE messages sent to the BGP peer since its session settings last changed",
            metrics.bgp_updates_sent.clone(),
        );
        metrics.heartbeat.register(&mut registry);
        Self {
            registry,
            ..metrics
        }
    }

    pub fn set_peers_alive(&self, by_interface: &BTreeMap<InterfaceName, usize>) {
        // Interfaces that went away drop out rather than freeze at their last value.
        self.peers_alive.clear();
        for (interface, alive) in by_interface {
            self.peers_alive
                .get_or_create(&label("interface", interface.as_str()))
                .set(as_gauge(*alive));
        }
    }

    pub fn bgp_session(&self, peer: &str, report: &crate::bgp_session_task::SessionReport) {
        let labels = label("peer", peer);
        let up = report.state == crate::bgp::State::Established;
        self.bgp_session_up
            .get_or_create(&labels)
            .set(i64::from(up));
        self.bgp_advertised_prefixes
            .get_or_create(&labels)
            .set(as_gauge(report.advertised));
        self.bgp_updates_sent
            .get_or_create(&labels)
            .set(i64::try_from(report.updates_sent).unwrap_or(i64::MAX));
    }

    pub fn heartbeat_round_late(&self, late: Duration) {
        self.round_late_seconds.observe(late.as_secs_f64());
    }

    pub fn peer_detected_dead(&self, unheard: Duration) {
        self.detection_seconds.observe(unheard.as_secs_f64());
    }

    pub fn frame_dropped(&self, error: ParseError) {
        self.frames_dropped
            .get_or_create(&label("reason", error.reason()))
            .inc();
    }

    /// The counters the packet readers update, resolved once: a label lookup allocates, and
    /// they count every request.
    pub fn frame_counters(&self) -> FrameCounters {
        // Each guard `get_or_create` returns holds the family's lock until its statement ends:
        // a second lookup in the same statement would wait for it forever.
        let by_protocol = |family: &Family<Labels, Counter>| {
            let arp = family.get_or_create(&label("protocol", "arp")).clone();
            let ndp = family.get_or_create(&label("protocol", "ndp")).clone();
            ProtocolCounters { arp, ndp }
        };
        FrameCounters {
            requests: by_protocol(&self.requests_received),
            replies: by_protocol(&self.replies_sent),
            dropped: self.frames_dropped.clone(),
        }
    }

    pub fn reply_sent(&self, frame: &[u8]) {
        self.replies_sent
            .get_or_create(&label("protocol", protocol(frame)))
            .inc();
    }

    pub fn gratuitous_sent(&self, frame: &[u8]) {
        self.gratuitous_sent
            .get_or_create(&label("protocol", protocol(frame)))
            .inc();
    }

    pub fn conflict(&self, interface: &str) {
        self.conflicts
            .get_or_create(&label("interface", interface))
            .inc();
    }

    pub fn ownership_changed(&self, changes: &[OwnershipChange]) {
        for change in changes {
            let kind = match change {
                OwnershipChange::Gained(_) => "gained",
                OwnershipChange::Lost(_) => "lost",
            };
            self.ownership_changes
                .get_or_create(&label("change", kind))
                .inc();
        }
    }

    /// The in-kernel responder's reply count, read from its map: the counter follows it.
    pub fn kernel_arp_replies(&self, total: u64) {
        let counted = self.kernel_arp_replies.get();
        if total > counted {
            self.kernel_arp_replies.inc_by(total - counted);
        }
    }

    pub fn set_state(&self, announced_ips: usize, live_peers: usize, fenced: bool) {
        self.announced_ips.set(as_gauge(announced_ips));
        self.live_peers.set(as_gauge(live_peers));
        self.fenced.set(i64::from(fenced));
    }

    pub fn set_ips_without_owner(&self, count: usize) {
        self.ips_without_owner.set(as_gauge(count));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One counter per protocol.
#[derive(Clone, Debug, Default)]
pub struct ProtocolCounters {
    pub arp: Counter,
    pub ndp: Counter,
}

impl ProtocolCounters {
    /// Counts `frame` (a request received or a reply built) under its protocol.
    pub fn count(&self, frame: &[u8]) {
        match protocol(frame) {
            "arp" => self.arp.inc(),
            _ => self.ndp.inc(),
        };
    }
}

/// Counters shared with the packet readers (clones update the same atomics). The default is
/// unregistered, for tests.
#[derive(Clone, Debug, Default)]
pub struct FrameCounters {
    pub requests: ProtocolCounters,
    pub replies: ProtocolCounters,
    dropped: Family<Labels, Counter>,
}

impl FrameCounters {
    pub fn dropped(&self, error: ParseError) {
        self.dropped
            .get_or_create(&label("reason", error.reason()))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::packet::{MacAddr, arp, ndp};

    #[test]
    fn metrics_are_exported_under_the_speaker_prefix() {
        let metrics = Metrics::new();
        let mac = MacAddr([0x02, 0, 0, 0, 0, 1]);
        metrics.frame_dropped(ParseError::HopLimitNot255(64));
        metrics.reply_sent(&arp::gratuitous_reply("198.51.100.1".parse().unwrap(), mac));
        metrics.gratuitous_sent(&ndp::unsolicited_advertisement(
            "2001:db8::1".parse().unwrap(),
            mac,
        ));
        metrics.conflict("eth0");
        let counters = metrics.frame_counters();
        counters.requests.count(&arp::gratuitous_request(
            "198.51.100.1".parse().unwrap(),
            mac,
        ));
        counters
            .replies
            .count(&arp::gratuitous_reply("198.51.100.1".parse().unwrap(), mac));
        counters.dropped(ParseError::BadChecksum);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        metrics.ownership_changed(&[OwnershipChange::Gained(ip), OwnershipChange::Lost(ip)]);
        metrics.set_state(3, 2, true);
        metrics.set_ips_without_owner(4);
        let text = metrics.encode();
        for expected in [
            r#"ferrolb_speaker_frames_dropped_total{reason="hop_limit_not_255"} 1"#,
            r#"ferrolb_speaker_replies_sent_total{protocol="arp"} 2"#,
            r#"ferrolb_speaker_requests_received_total{protocol="arp"} 1"#,
            r#"ferrolb_speaker_requests_received_total{protocol="ndp"} 0"#,
            r#"ferrolb_speaker_frames_dropped_total{reason="bad_checksum"} 1"#,
            r#"ferrolb_speaker_gratuitous_sent_total{protocol="ndp"} 1"#,
            r#"ferrolb_speaker_ip_conflicts_total{interface="eth0"} 1"#,
            r#"ferrolb_speaker_ownership_changes_total{change="gained"} 1"#,
            "ferrolb_speaker_announced_ips 3",
            "ferrolb_speaker_live_peers 2",
            "ferrolb_speaker_fenced 1",
            "ferrolb_speaker_ips_without_owner 4",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn every_drop_reason_is_distinct() {
        let reasons = [
            ParseError::Truncated,
            ParseError::UnsupportedEthertype(0),
            ParseError::InvalidEthernetSource,
            ParseError::NotEthernetIpv4Arp,
            ParseError::UnsupportedArpOperation(0),
            ParseError::InvalidArpSender,
            ParseError::ArpReplyWithoutSenderIp,
            ParseError::NotIpv6,
            ParseError::NotIcmpv6(0),
            ParseError::NotNeighborDiscovery(0),
            ParseError::HopLimitNot255(0),
            ParseError::NonZeroCode(0),
            ParseError::BadChecksum,
            ParseError::MulticastSource,
            ParseError::MulticastTarget,
            ParseError::ZeroLengthOption,
            ParseError::OptionPastEnd,
            ParseError::BadLinkLayerOption,
            ParseError::InvalidLinkLayerAddress,
            ParseError::UnspecifiedSourceWithLinkLayerAddress,
            ParseError::UnspecifiedSourceNotToSolicitedNode,
            ParseError::SolicitedAdvertisementToMulticast,
        ];
        let distinct: std::collections::BTreeSet<&str> =
            reasons.iter().map(|r| r.reason()).collect();
        assert_eq!(distinct.len(), reasons.len());
    }
}
