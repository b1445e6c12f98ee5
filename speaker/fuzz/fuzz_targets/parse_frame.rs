//! Any bytes from the wire: parsing must never panic, and whatever it accepts must be safe to
//! answer (answers are built and parsed back).
#![no_main]

use ferrolb_speaker::packet::{self, Inbound, MacAddr};
use libfuzzer_sys::fuzz_target;

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

fuzz_target!(|frame: &[u8]| {
    let Ok(inbound) = packet::parse_frame(frame) else {
        return;
    };
    let _ = inbound.claim();
    let reply = match inbound {
        // Nobody owns 0.0.0.0, so the announcer never answers for it.
        Inbound::ArpRequest(request) if request.target_ip.is_unspecified() => return,
        Inbound::ArpRequest(request) => packet::arp::reply(&request, OUR_MAC),
        Inbound::NeighborSolicitation(solicitation) => {
            packet::ndp::solicited_advertisement(&solicitation, OUR_MAC)
        }
        Inbound::ArpAnnouncement(_) | Inbound::NeighborAdvertisement(_) => return,
    };
    assert!(packet::parse_frame(&reply).is_ok(), "our own reply does not parse");
});
