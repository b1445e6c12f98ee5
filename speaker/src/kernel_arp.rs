//! The in-kernel ARP responder ([`crate::packet::arp_responder`]) loaded, attached to the
//! announcing interfaces, and kept in step with every published snapshot.
//!
//! A user-space responder answers only after the kernel wakes its reader thread; on a busy node
//! that wake-up, not the work, sets the reply latency. Answered in the kernel, as the kernel
//! answers for the node's own address, a request costs no wake-up at all. The speaker's reader
//! stays the authority for everything else (NDP, conflicts, probes of unusual form) and for
//! plain requests wherever this responder is unavailable (kernels before 6.6, no CAP_BPF) or
//! its map could not take an entry.
//!
//! Safety: the program answers only from the map, only until the fence instant in its fence
//! map, and only while the speaker holds the tcx link, which the kernel drops with the process.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use ferrolb_crds::InterfaceName;

use crate::bpf::{Link, MAP_TYPE_HASH, MAP_TYPE_PERCPU_ARRAY, Map, Program, possible_cpus};
use crate::packet::arp_responder::{AnswerKey, AnswerValue, ResponderMaps, program};
use crate::speaker_state::Snapshot;

/// Entries of the answer map: one per (IP, interface) answered and one per owned IP. Allocated
/// as used, so the bound costs nothing until reached; past it the reader answers the rest.
const MAX_ANSWER_ENTRIES: u32 = 65_536;
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_NO_PREALLOC: u32 = 1;

/// What the answer map should hold for `snapshot`, given the index of each interface listened
/// on (interfaces without one are not answered on in the kernel).
pub fn wanted_entries(
    snapshot: &Snapshot,
    ifindex_of: impl Fn(&InterfaceName) -> Option<u32>,
) -> BTreeMap<AnswerKey, AnswerValue> {
    let answering = &snapshot.answering;
    let mut entries: BTreeMap<AnswerKey, AnswerValue> = answering
        .ipv4_answers()
        .into_iter()
        .filter_map(|(ip, interface, mac)| {
            let ifindex = ifindex_of(interface).filter(|index| *index != 0)?;
            Some((AnswerKey { ifindex, ip }, AnswerValue { mac }))
        })
        .collect();
    for ip in answering.ipv4_addresses() {
        entries.insert(
            AnswerKey { ifindex: 0, ip },
            AnswerValue {
                mac: crate::packet::MacAddr::ZERO,
            },
        );
    }
    entries
}

/// Whether a kernel of this release (`uname -r`, `/proc/sys/kernel/osrelease`) has tcx, which
/// the responder attaches with: Linux 6.6 or later.
pub fn release_has_tcx(release: &str) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (6, 6)
}

/// The fence as the program compares it: CLOCK_MONOTONIC nanoseconds, given the same moment
/// `now` as an [`Instant`] and in nanoseconds. 0 (answer nothing) without a fence.
pub fn fence_nanos(fenced_from: Option<Instant>, now: Instant, now_nanos: u64) -> u64 {
    match fenced_from {
        None => 0,
        Some(fence) if fence <= now => 0,
        Some(fence) => {
            let ahead = u64::try_from((fence - now).as_nanos()).unwrap_or(u64::MAX);
            now_nanos.saturating_add(ahead)
        }
    }
}

/// CLOCK_MONOTONIC, which `bpf_ktime_get_ns` reads.
#[allow(unsafe_code)]
fn monotonic_nanos() -> io::Result<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let seconds = u64::try_from(now.tv_sec).map_err(io::Error::other)?;
    let nanos = u32::try_from(now.tv_nsec).map_err(io::Error::other)?;
    u64::try_from(Duration::new(seconds, nanos).as_nanos()).map_err(io::Error::other)
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct KernelArpResponder {
    program: Program,
    answers: Map,
    fence: Map,
    replies: Map,
    cpus: usize,
    installed: BTreeMap<AnswerKey, AnswerValue>,
    fence_installed: u64,
}

impl KernelArpResponder {
    /// Creates the maps and loads the program (CAP_BPF, or root); attaches nowhere yet.
    pub fn load() -> io::Result<Self> {
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|list| possible_cpus(&list))
            .ok_or_else(|| io::Error::other("cannot read the possible CPUs"))?;
        let answers = Map::create(
            MAP_TYPE_HASH,
            "ferrolb_answers",
            AnswerKey::LEN,
            AnswerValue::LEN,
            MAX_ANSWER_ENTRIES,
            MAP_NO_PREALLOC,
        )?;
        let fence = Map::create(MAP_TYPE_ARRAY, "ferrolb_fence", 4, 8, 1, 0)?;
        let replies = Map::create(MAP_TYPE_PERCPU_ARRAY, "ferrolb_replies", 4, 8, 1, 0)?;
        let instructions = program(ResponderMaps {
            answers: answers.fd(),
            fence: fence.fd(),
            replies: replies.fd(),
        })
        .map_err(io::Error::other)?;
        let program = Program::load_tc("ferrolb_arp", &instructions)?;
        Ok(Self {
            program,
            answers,
            fence,
            replies,
            cpus,
            installed: BTreeMap::new(),
            fence_installed: 0,
        })
    }

    /// Answers on interface `ifindex` from now on, until the link is dropped.
    pub fn attach(&self, ifindex: u32) -> io::Result<Link> {
        self.program.attach_tcx_ingress(ifindex)
    }

    /// Brings the maps to `wanted` and the fence to `fenced_from`. Withdrawals first, then the
    /// fence, then additions, so no moment answers more than the old or the new snapshot.
    /// An error leaves the maps partly updated: the caller must stop using the responder.
    pub fn publish(
        &mut self,
        wanted: BTreeMap<AnswerKey, AnswerValue>,
        fenced_from: Option<Instant>,
    ) -> io::Result<()> {
        let stale: Vec<AnswerKey> = self
            .installed
            .iter()
            .filter(|(key, value)| wanted.get(key) != Some(value))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            self.answers.delete(&key.to_bytes())?;
            self.installed.remove(&key);
        }
        let fence = fence_nanos(fenced_from, Instant::now(), monotonic_nanos()?);
        if fence != self.fence_installed {
            self.fence
                .update(&0u32.to_ne_bytes(), &fence.to_ne_bytes())?;
            self.fence_installed = fence;
        }
        let mut full = false;
        for (key, value) in wanted {
            if self.installed.contains_key(&key) || full {
                continue;
            }
            match self.answers.update(&key.to_bytes(), &value.to_bytes()) {
                Ok(()) => {
                    self.installed.insert(key, value);
                }
                // Full: the reader answers the rest; nothing is answered wrongly.
                Err(error) if error.raw_os_error() == Some(libc::E2BIG) => full = true,
                Err(error) => return Err(error),
            }
        }
        if full {
            tracing::warn!(
                entries = self.installed.len(),
                "the in-kernel ARP answer map is full; the packet readers answer the rest"
            );
        }
        Ok(())
    }

    /// Entries in the answer map now.
    pub fn installed(&self) -> usize {
        self.installed.len()
    }

    /// Replies the program has sent, over all CPUs.
    pub fn replies(&self) -> io::Result<u64> {
        let mut slots = vec![0u8; 8 * self.cpus];
        self.replies.lookup(&0u32.to_ne_bytes(), &mut slots)?;
        Ok(slots
            .chunks_exact(8)
            .map(|slot| u64::from_ne_bytes(slot.try_into().unwrap_or_default()))
            .sum())
    }

    /// Runs the program on one frame as received on `ifindex`, unattached (tests).
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> io::Result<(i32, Vec<u8>)> {
        self.program.test_run(frame, ifindex)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::announcer::{Announcer, Assignment, BurstPolicy};
    use crate::packet::MacAddr;

    #[test]
    fn entries_answer_ipv4_on_listened_interfaces_and_mark_every_owned_address() {
        let now = Instant::now();
        let (eth0, eth1, down) = (
            InterfaceName::new("eth0").unwrap(),
            InterfaceName::new("eth1").unwrap(),
            InterfaceName::new("eth2").unwrap(),
        );
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut announcer = Announcer::new(BurstPolicy::default());
        announcer.set_links([(eth0.clone(), mac), (eth1.clone(), mac)].into(), now);
        let on = |interfaces: &[&InterfaceName]| Assignment {
            interfaces: interfaces.iter().map(|i| (*i).clone()).collect(),
            gratuitous_interval: None,
        };
        let (a, b, c) = (
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
            Ipv4Addr::new(198, 51, 100, 3),
        );
        announcer.assign(
            [
                (IpAddr::V4(a), on(&[&eth0, &eth1])),
                (IpAddr::V4(b), on(&[&eth1])),
                (IpAddr::V4(c), on(&[&down])),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), on(&[&eth0])),
            ]
            .into(),
            now,
        );
        let snapshot = Snapshot {
            fenced_from: Some(now),
            answering: announcer.answering(BTreeSet::new()),
        };
        // eth1 is not listened on (no index): only eth0 answers in the kernel.
        let entries = wanted_entries(&snapshot, |name| (name == &eth0).then_some(4));
        let keys: Vec<(u32, Ipv4Addr)> = entries.keys().map(|k| (k.ifindex, k.ip)).collect();
        assert_eq!(keys, vec![(0, a), (0, b), (0, c), (4, a)]);
        assert_eq!(entries[&AnswerKey { ifindex: 4, ip: a }].mac, mac);
    }

    #[test]
    fn tcx_comes_with_linux_6_6() {
        assert!(release_has_tcx("6.18.44-fc-v782\n"));
        assert!(release_has_tcx("6.6.0"));
        assert!(release_has_tcx("7.0.1"));
        assert!(!release_has_tcx("6.5.13-generic"));
        assert!(!release_has_tcx("5.15.0-105-generic"));
        assert!(!release_has_tcx(""));
    }

    #[test]
    fn the_fence_is_carried_onto_the_monotonic_clock() {
        let now = Instant::now();
        assert_eq!(fence_nanos(None, now, 1_000), 0);
        assert_eq!(fence_nanos(Some(now), now, 1_000), 0, "fenced already");
        assert_eq!(
            fence_nanos(Some(now + Duration::from_micros(3)), now, 1_000),
            4_000
        );
    }
}
