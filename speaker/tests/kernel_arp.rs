//! The in-kernel ARP responder against the real kernel: the verifier accepts the program, it
//! answers exactly the requests the speaker's own reader would (checked frame by frame with
//! BPF_PROG_TEST_RUN against `arp::reply`), stops at the fence, and, attached to a veth pair
//! through the data plane, answers on the wire without the reader ever seeing the request.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN) and Linux 6.6 or later (tcx), so it is ignored by
//! default; run it inside a throwaway network namespace:
//!
//! ```sh
//! ip netns add ferrolb-test
//! ip netns exec ferrolb-test cargo test -p ferrolb-speaker --test kernel_arp -- --ignored
//! ip netns del ferrolb-test
//! ```

// A test: failing loudly on the first surprise is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{VethPair, ip};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::InterfaceName;
use ferrolb_speaker::announcer::{Announcer, Assignment, BurstPolicy};
use ferrolb_speaker::dataplane::DataPlane;
use ferrolb_speaker::kernel_arp::{KernelArpResponder, wanted_entries};
use ferrolb_speaker::metrics::FrameCounters;
use ferrolb_speaker::packet::{ETHERTYPE_ARP, Inbound, MacAddr, arp, parse_frame};
use ferrolb_speaker::packet_socket::{PacketSocket, RECEIVE_BUFFER_LEN, interface_index};
use ferrolb_speaker::speaker_state::Snapshot;

const SPEAKER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x02, 0x01]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x02, 0x02]);
const OTHER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x02, 0x03]);
const ANNOUNCED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
const ALSO_ANNOUNCED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 31);
const NOT_ANNOUNCED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 32);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 40);
/// tc verdicts.
const REDIRECTED: i32 = 7;
const NEXT: i32 = -1;

/// tcx, which the responder attaches with, came in Linux 6.6. On older kernels the speaker
/// falls back to its packet readers (tested in packet_path), and these tests say they skipped.
fn kernel_has_tcx() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let has = ferrolb_speaker::kernel_arp::release_has_tcx(&release);
    if !has {
        println!(
            "SKIPPED: Linux {} has no tcx (6.6 or later)",
            release.trim()
        );
    }
    has
}

/// An ARP request with every field chosen by the caller, padded to the minimum frame length.
fn request(
    destination: MacAddr,
    source: MacAddr,
    sender: (MacAddr, Ipv4Addr),
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&sender.0.octets());
    frame.extend_from_slice(&sender.1.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame.resize(60, 0);
    frame
}

fn plain(target: Ipv4Addr) -> Vec<u8> {
    request(MacAddr::BROADCAST, CLIENT_MAC, (CLIENT_MAC, CLIENT), target)
}

/// A snapshot answering `ips` on `interface` until `fence`.
fn snapshot(interface: &InterfaceName, ips: &[Ipv4Addr], fence: Option<Instant>) -> Snapshot {
    let now = Instant::now();
    let mut announcer = Announcer::new(BurstPolicy::default());
    announcer.set_links([(interface.clone(), SPEAKER_MAC)].into(), now);
    let assignment = Assignment {
        interfaces: [interface.clone()].into(),
        gratuitous_interval: None,
    };
    announcer.assign(
        ips.iter()
            .map(|ip| (IpAddr::V4(*ip), assignment.clone()))
            .collect(),
        now,
    );
    Snapshot {
        fenced_from: fence,
        answering: announcer.answering(BTreeSet::new()),
    }
}

#[test]
#[ignore = "needs root and Linux 6.6+; run in a throwaway network namespace (see the module documentation)"]
fn the_program_answers_exactly_what_the_reader_would() {
    if !kernel_has_tcx() {
        return;
    }
    // Test runs happen on the loopback device of this namespace.
    ip(&["link", "set", "lo", "up"]);
    let lo = InterfaceName::new("lo").unwrap();
    let lo_index = interface_index(&lo).unwrap();
    let mut responder = KernelArpResponder::load().unwrap();
    let until = Some(Instant::now() + Duration::from_secs(60));
    let answering = snapshot(&lo, &[ANNOUNCED, ALSO_ANNOUNCED], until);
    responder
        .publish(wanted_entries(&answering, |_| Some(lo_index)), until)
        .unwrap();
    assert_eq!(responder.installed(), 4, "two answers and two owned marks");

    // Answered: broadcast, unicast to our MAC, and RFC 5227 probes (sender 0.0.0.0); the
    // reply is byte for byte the one the reader would send.
    for frame in [
        plain(ANNOUNCED),
        plain(ALSO_ANNOUNCED),
        request(SPEAKER_MAC, CLIENT_MAC, (CLIENT_MAC, CLIENT), ANNOUNCED),
        request(
            MacAddr::BROADCAST,
            CLIENT_MAC,
            (CLIENT_MAC, Ipv4Addr::UNSPECIFIED),
            ANNOUNCED,
        ),
    ] {
        let Ok(Inbound::ArpRequest(parsed)) = parse_frame(&frame) else {
            panic!("the test built a frame that is not a request");
        };
        assert!(
            answering
                .answering
                .answer(&lo, &Inbound::ArpRequest(parsed))
                .is_some()
        );
        let (verdict, out) = responder.test_run(&frame, lo_index).unwrap();
        assert_eq!(verdict, REDIRECTED, "{frame:02x?}");
        assert_eq!(&out[..42], &arp::reply(&parsed, SPEAKER_MAC)[..42]);
    }

    // Handed on unchanged: everything the reader answers differently or not at all.
    let mut truncated = plain(ANNOUNCED);
    truncated.truncate(41);
    let mut reply_form = plain(ANNOUNCED);
    reply_form[21] = 2;
    let mut not_ipv4 = plain(ANNOUNCED);
    not_ipv4[16] = 0x86;
    for (why, frame) in [
        ("not answered", plain(NOT_ANNOUNCED)),
        (
            "sent to another station",
            request(OTHER_MAC, CLIENT_MAC, (CLIENT_MAC, CLIENT), ANNOUNCED),
        ),
        (
            "gratuitous request",
            request(
                MacAddr::BROADCAST,
                CLIENT_MAC,
                (CLIENT_MAC, ANNOUNCED),
                ANNOUNCED,
            ),
        ),
        (
            "sender claims an owned address (a conflict for the reader)",
            request(
                MacAddr::BROADCAST,
                CLIENT_MAC,
                (CLIENT_MAC, ALSO_ANNOUNCED),
                ANNOUNCED,
            ),
        ),
        (
            "multicast sender hardware address",
            request(
                MacAddr::BROADCAST,
                CLIENT_MAC,
                (MacAddr([0x03, 0, 0, 0, 0, 1]), CLIENT),
                ANNOUNCED,
            ),
        ),
        (
            "our own sender hardware address",
            request(
                MacAddr::BROADCAST,
                CLIENT_MAC,
                (SPEAKER_MAC, CLIENT),
                ANNOUNCED,
            ),
        ),
        (
            "our own Ethernet source",
            request(
                MacAddr::BROADCAST,
                SPEAKER_MAC,
                (CLIENT_MAC, CLIENT),
                ANNOUNCED,
            ),
        ),
        ("an ARP reply", reply_form),
        ("not IPv4 over Ethernet", not_ipv4),
        ("truncated", truncated),
    ] {
        let (verdict, out) = responder.test_run(&frame, lo_index).unwrap();
        assert_eq!(verdict, NEXT, "{why}");
        assert_eq!(out, frame, "{why}: the frame must be left as it was");
    }

    // Withdrawn: no longer answered.
    let fewer = snapshot(&lo, &[ALSO_ANNOUNCED], until);
    responder
        .publish(wanted_entries(&fewer, |_| Some(lo_index)), until)
        .unwrap();
    assert_eq!(responder.installed(), 2);
    assert_eq!(
        responder.test_run(&plain(ANNOUNCED), lo_index).unwrap().0,
        NEXT
    );
    assert_eq!(
        responder
            .test_run(&plain(ALSO_ANNOUNCED), lo_index)
            .unwrap()
            .0,
        REDIRECTED
    );

    // Fenced: the entries stay, the kernel's clock stops the answers on its own.
    let soon = Some(Instant::now() + Duration::from_millis(200));
    responder
        .publish(wanted_entries(&fewer, |_| Some(lo_index)), soon)
        .unwrap();
    assert_eq!(
        responder
            .test_run(&plain(ALSO_ANNOUNCED), lo_index)
            .unwrap()
            .0,
        REDIRECTED
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        responder
            .test_run(&plain(ALSO_ANNOUNCED), lo_index)
            .unwrap()
            .0,
        NEXT,
        "past the fence"
    );
    responder
        .publish(wanted_entries(&fewer, |_| Some(lo_index)), None)
        .unwrap();
    assert_eq!(
        responder
            .test_run(&plain(ALSO_ANNOUNCED), lo_index)
            .unwrap()
            .0,
        NEXT,
        "no fence at all"
    );
    // Test runs count their replies like real ones.
    assert_eq!(responder.replies().unwrap(), 6);
}

async fn receive_reply(socket: &PacketSocket, within: Duration) -> Option<arp::ArpAnnouncement> {
    let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .ok()?
            .unwrap();
        if let Ok(Inbound::ArpAnnouncement(reply)) = parse_frame(&buffer[..len])
            && reply.sender_ip == ANNOUNCED
        {
            return Some(reply);
        }
    }
}

#[tokio::test]
#[ignore = "needs root and Linux 6.6+; run in a throwaway network namespace (see the module documentation)"]
async fn the_data_plane_answers_in_the_kernel_on_the_wire() {
    if !kernel_has_tcx() {
        return;
    }
    let suffix = std::process::id() % 100_000;
    let (speaker_link, client_link) = (format!("flbk{suffix}"), format!("flbl{suffix}"));
    let _cleanup = VethPair::create(&speaker_link, &client_link);
    for (link, mac) in [(&speaker_link, SPEAKER_MAC), (&client_link, CLIENT_MAC)] {
        ip(&["link", "set", link, "address", &mac.to_string(), "up"]);
    }
    let speaker_name = InterfaceName::new(&speaker_link).unwrap();
    let speaker_index = interface_index(&speaker_name).unwrap();
    let client_index = interface_index(&InterfaceName::new(&client_link).unwrap()).unwrap();
    let client = PacketSocket::open(client_index, ETHERTYPE_ARP).unwrap();

    let counters = FrameCounters::default();
    let (mut dataplane, _conflicts) = DataPlane::new(counters.clone(), 0, true).unwrap();
    assert!(
        dataplane
            .listen_on(&[(speaker_name.clone(), speaker_index)].into())
            .is_empty()
    );
    assert!(dataplane.kernel_arp_attached(&speaker_name));
    let until = Some(Instant::now() + Duration::from_secs(60));
    dataplane.publish(snapshot(&speaker_name, &[ANNOUNCED], until));

    for _ in 0..3 {
        client.send(&plain(ANNOUNCED)).await.unwrap();
        let reply = receive_reply(&client, Duration::from_secs(2))
            .await
            .expect("a reply on the wire");
        assert_eq!(reply.sender_mac, SPEAKER_MAC);
        assert_eq!(reply.target_mac, CLIENT_MAC);
        assert_eq!(reply.target_ip, CLIENT);
        assert_eq!(reply.ethernet.destination, CLIENT_MAC);
    }
    assert_eq!(dataplane.kernel_arp_replies(), Some(3));
    let requests_read = counters.requests.arp.get();
    assert_eq!(
        requests_read, 0,
        "the reader never saw the answered requests"
    );

    // Withdrawn in the snapshot: nobody answers, in the kernel or in the reader.
    dataplane.publish(snapshot(&speaker_name, &[], until));
    client.send(&plain(ANNOUNCED)).await.unwrap();
    assert!(
        receive_reply(&client, Duration::from_millis(300))
            .await
            .is_none()
    );

    // Owned again, then the interface is no longer listened on: its attachment goes with its
    // sockets, and nothing answers there.
    dataplane.publish(snapshot(&speaker_name, &[ANNOUNCED], until));
    client.send(&plain(ANNOUNCED)).await.unwrap();
    assert!(
        receive_reply(&client, Duration::from_secs(2))
            .await
            .is_some()
    );
    assert!(dataplane.listen_on(&Default::default()).is_empty());
    assert!(!dataplane.kernel_arp_attached(&speaker_name));
    client.send(&plain(ANNOUNCED)).await.unwrap();
    assert!(
        receive_reply(&client, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(dataplane.kernel_arp_replies(), Some(4));
}
