//! What the owner of some IPs sends and answers, without I/O: the gratuitous bursts on gaining
//! an IP, the periodic repeats of `gratuitousInterval`, the replies to ARP requests and Neighbor
//! Solicitations, and conflict detection.
//!
//! It never answers for an IP it was not assigned, nor on an interface not assigned to that IP,
//! nor on one that is down; the glue feeds it the election's result for this node (empty while
//! fenced) and the local interfaces as rtnetlink reports them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_crds::InterfaceName;

use crate::packet::ndp::solicited_node_group;
use crate::packet::{Claim, Inbound, MacAddr, arp, ndp};

/// How a newly gained IP is announced: `count` rounds, `spacing` apart. The first round goes out
/// at once so neighbours move to the new owner within a failover; the repeats cover lost frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstPolicy {
    pub count: u32,
    pub spacing: Duration,
}

impl Default for BurstPolicy {
    fn default() -> Self {
        Self {
            count: 3,
            spacing: Duration::from_millis(500),
        }
    }
}

/// Where and how often this node announces one IP it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub interfaces: BTreeSet<InterfaceName>,
    /// The shortest `gratuitousInterval` of the advertisements covering the IP, if any.
    pub gratuitous_interval: Option<Duration>,
}

/// A frame to send on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub interface: InterfaceName,
    pub frame: Vec<u8>,
}

/// What changed in the set of IPs this node answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OwnershipChange {
    Gained(IpAddr),
    Lost(IpAddr),
}

/// Someone else says an IP we answer for is theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub interface: InterfaceName,
    pub claim: Claim,
}

#[derive(Clone, Debug)]
struct Announced {
    assignment: Assignment,
    rounds_left: u32,
    next_round: Option<Instant>,
    last_defended: Option<Instant>,
}

/// RFC 5227 section 2.4 (b): defend an address at most once per this interval, so two hosts
/// that both believe they own it do not flood the link.
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Announcer {
    policy: BurstPolicy,
    ips: BTreeMap<IpAddr, Announced>,
    /// Interfaces that are up, with their MACs.
    links: BTreeMap<InterfaceName, MacAddr>,
}

impl Announcer {
    pub fn new(policy: BurstPolicy) -> Self {
        Self {
            policy,
            ips: BTreeMap::new(),
            links: BTreeMap::new(),
        }
    }

    /// The interfaces that are up and their MACs. An IP whose interface comes up, or changes
    /// MAC, is announced afresh, since neighbours may have cached something else meanwhile.
    pub fn set_links(&mut self, links: BTreeMap<InterfaceName, MacAddr>, now: Instant) {
        let changed: BTreeSet<&InterfaceName> = links
            .iter()
            .filter(|(name, mac)| self.links.get(*name) != Some(*mac))
            .map(|(name, _)| name)
            .collect();
        for announced in self.ips.values_mut() {
            if announced
                .assignment
                .interfaces
                .iter()
                .any(|i| changed.contains(i))
            {
                announced.rounds_left = self.policy.count.max(1);
                announced.next_round = Some(now);
            }
        }
        self.links = links;
    }

    /// Replaces what this node owns with `owned` (the election's result for this node).
    /// Newly gained IPs, and IPs gaining an interface, start a burst at `now`.
    pub fn assign(
        &mut self,
        owned: BTreeMap<IpAddr, Assignment>,
        now: Instant,
    ) -> Vec<OwnershipChange> {
        let mut changes: Vec<OwnershipChange> = self
            .ips
            .keys()
            .filter(|ip| !owned.contains_key(ip))
            .map(|&ip| OwnershipChange::Lost(ip))
            .collect();
        let mut next = BTreeMap::new();
        for (ip, assignment) in owned {
            let announced = match self.ips.remove(&ip) {
                Some(mut previous) => {
                    let widened = !assignment
                        .interfaces
                        .is_subset(&previous.assignment.interfaces);
                    if widened {
                        previous.rounds_left = self.policy.count.max(1);
                        previous.next_round = Some(now);
                    } else if previous.rounds_left == 0
                        && previous.assignment.gratuitous_interval != assignment.gratuitous_interval
                    {
                        previous.next_round = assignment.gratuitous_interval.map(|i| now + i);
                    }
                    previous.assignment = assignment;
                    previous
                }
                None => {
                    changes.push(OwnershipChange::Gained(ip));
                    Announced {
                        assignment,
                        rounds_left: self.policy.count.max(1),
                        next_round: Some(now),
                        last_defended: None,
                    }
                }
            };
            next.insert(ip, announced);
        }
        self.ips = next;
        changes.sort();
        changes
    }

    /// Stops answering for everything at once: fenced, shutting down, or the Lease is lost.
    pub fn withdraw_all(&mut self) -> Vec<OwnershipChange> {
        let lost = self
            .ips
            .keys()
            .map(|&ip| OwnershipChange::Lost(ip))
            .collect();
        self.ips.clear();
        lost
    }

    /// The IPs answered for and where.
    pub fn owned(&self) -> impl Iterator<Item = (IpAddr, &BTreeSet<InterfaceName>)> {
        self.ips
            .iter()
            .map(|(ip, announced)| (*ip, &announced.assignment.interfaces))
    }

    /// The gratuitous ARP and unsolicited NA due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut outgoing = Vec::new();
        for (&ip, announced) in &mut self.ips {
            if announced.next_round.is_none_or(|at| at > now) {
                continue;
            }
            for interface in &announced.assignment.interfaces {
                let Some(&mac) = self.links.get(interface) else {
                    continue;
                };
                for frame in announcement_frames(ip, mac) {
                    outgoing.push(Outgoing {
                        interface: interface.clone(),
                        frame,
                    });
                }
            }
            announced.rounds_left = announced.rounds_left.saturating_sub(1);
            // Scheduling from `now`, not from the missed deadline, so a stalled loop does not
            // catch up with a flood.
            announced.next_round = if announced.rounds_left > 0 {
                Some(now + self.policy.spacing)
            } else {
                announced.assignment.gratuitous_interval.map(|i| now + i)
            };
        }
        outgoing
    }

    /// When [`Announcer::due`] next has something to send.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.ips.values().filter_map(|a| a.next_round).min()
    }

    /// The reply to `inbound`, received on `interface`, if this node must answer it.
    pub fn answer(&self, interface: &InterfaceName, inbound: &Inbound) -> Option<Vec<u8>> {
        answer(
            self.links.get(interface).copied(),
            |ip| self.announces(ip, interface),
            inbound,
        )
    }

    /// An ARP or NDP message, received on `interface`, saying an IP we answer for is at a MAC
    /// that no FerroLB node has (RFC 5227 section 2.4 for IPv4; likewise for IPv6).
    pub fn conflict(
        &self,
        interface: &InterfaceName,
        inbound: &Inbound,
        ferrolb_macs: &BTreeSet<MacAddr>,
    ) -> Option<Conflict> {
        conflict(
            |ip| self.ips.contains_key(&ip),
            |mac| ferrolb_macs.contains(&mac) || self.links.values().any(|link| *link == mac),
            interface,
            inbound,
        )
    }

    /// What answering needs, frozen: the packet readers decide from this without waiting for
    /// the state's owner. `ferrolb_macs` are the MACs whose claims are handovers, not conflicts.
    pub fn answering(&self, ferrolb_macs: BTreeSet<MacAddr>) -> Answering {
        let mut macs = ferrolb_macs;
        macs.extend(self.links.values().copied());
        Answering {
            links: self.links.clone(),
            ips: self
                .ips
                .iter()
                .map(|(ip, announced)| (*ip, announced.assignment.interfaces.clone()))
                .collect(),
            ferrolb_macs: macs,
        }
    }

    /// After a conflict on `ip` at `now`: one immediate announcement round to win the
    /// neighbours back (RFC 5227 section 2.4 (b)), unless the address was defended within
    /// [`DEFEND_INTERVAL`]. Returns whether a round was scheduled.
    pub fn defend(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(announced) = self.ips.get_mut(&ip) else {
            return false;
        };
        let recently = announced
            .last_defended
            .is_some_and(|at| now.saturating_duration_since(at) < DEFEND_INTERVAL);
        if recently {
            return false;
        }
        announced.last_defended = Some(now);
        announced.rounds_left = announced.rounds_left.max(1);
        announced.next_round = Some(now);
        true
    }

    /// The solicited-node groups each interface must be a member of to hear solicitations for
    /// the IPv6 addresses announced on it.
    pub fn solicited_node_groups(&self) -> BTreeMap<InterfaceName, BTreeSet<Ipv6Addr>> {
        let mut groups: BTreeMap<InterfaceName, BTreeSet<Ipv6Addr>> = BTreeMap::new();
        for (ip, announced) in &self.ips {
            if let IpAddr::V6(v6) = ip {
                for interface in &announced.assignment.interfaces {
                    groups
                        .entry(interface.clone())
                        .or_default()
                        .insert(solicited_node_group(*v6));
                }
            }
        }
        groups
    }

    fn announces(&self, ip: IpAddr, interface: &InterfaceName) -> bool {
        self.ips
            .get(&ip)
            .is_some_and(|announced| announced.assignment.interfaces.contains(interface))
    }
}

/// A frozen copy of what an [`Announcer`] answers and where, for deciding about frames away
/// from it: [`Answering::answer`] and [`Answering::conflict`] decide exactly as the announcer's
/// methods of the same names do (the same functions), at the time the copy was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answering {
    links: BTreeMap<InterfaceName, MacAddr>,
    /// Hashed rather than ordered: looked up once per request, with thousands of IPs.
    ips: HashMap<IpAddr, BTreeSet<InterfaceName>>,
    /// FerroLB nodes' MACs and this node's own.
    ferrolb_macs: BTreeSet<MacAddr>,
}

impl Answering {
    pub fn answer(&self, interface: &InterfaceName, inbound: &Inbound) -> Option<Vec<u8>> {
        answer(
            self.links.get(interface).copied(),
            |ip| {
                self.ips
                    .get(&ip)
                    .is_some_and(|interfaces| interfaces.contains(interface))
            },
            inbound,
        )
    }

    pub fn conflict(&self, interface: &InterfaceName, inbound: &Inbound) -> Option<Conflict> {
        conflict(
            |ip| self.ips.contains_key(&ip),
            |mac| self.ferrolb_macs.contains(&mac),
            interface,
            inbound,
        )
    }

    /// The IPv4 addresses whose ARP matters here, on any interface: the ones answered, and the
    /// ones whose claims by others are conflicts.
    pub fn ipv4_addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.ips
            .keys()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// Every IPv4 address answered, with each interface it is answered on and that
    /// interface's MAC (interfaces without a MAC, being down, answer nothing).
    pub fn ipv4_answers(&self) -> Vec<(Ipv4Addr, &InterfaceName, MacAddr)> {
        self.ips
            .iter()
            .filter_map(|(ip, interfaces)| match ip {
                IpAddr::V4(v4) => Some((*v4, interfaces)),
                IpAddr::V6(_) => None,
            })
            .flat_map(|(ip, interfaces)| {
                interfaces.iter().filter_map(move |interface| {
                    let mac = self.links.get(interface)?;
                    Some((ip, interface, *mac))
                })
            })
            .collect()
    }

    /// How many IPs it answers for.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }
}

/// The reply to `inbound` from the interface whose MAC is `our_mac` (none: the interface is
/// down), where `announces` says which IPs are answered on that interface.
fn answer(
    our_mac: Option<MacAddr>,
    announces: impl Fn(IpAddr) -> bool,
    inbound: &Inbound,
) -> Option<Vec<u8>> {
    let our_mac = our_mac?;
    if inbound.ethernet_source() == our_mac {
        return None;
    }
    match inbound {
        Inbound::ArpRequest(request) => (request.is_addressed_to(our_mac)
            && request.sender_mac != our_mac
            && announces(IpAddr::V4(request.target_ip)))
        .then(|| arp::reply(request, our_mac)),
        Inbound::NeighborSolicitation(solicitation) => {
            let group = solicited_node_group(solicitation.target);
            // RFC 4861 7.2.3: a solicitation is for us when sent to the target's
            // solicited-node group or to the target itself.
            let to_us = (solicitation.destination == group
                && solicitation.ethernet.destination == MacAddr::ipv6_multicast(group))
                || (solicitation.destination == solicitation.target
                    && solicitation.ethernet.destination == our_mac);
            (to_us && announces(IpAddr::V6(solicitation.target)))
                .then(|| ndp::solicited_advertisement(solicitation, our_mac))
        }
        Inbound::ArpAnnouncement(_) | Inbound::NeighborAdvertisement(_) => None,
    }
}

/// A claim in `inbound` on an IP `owned` says we answer for, for a MAC that is not `friendly`.
fn conflict(
    owned: impl Fn(IpAddr) -> bool,
    friendly: impl Fn(MacAddr) -> bool,
    interface: &InterfaceName,
    inbound: &Inbound,
) -> Option<Conflict> {
    let claim = inbound.claim()?;
    (owned(claim.ip) && !friendly(claim.mac)).then(|| Conflict {
        interface: interface.clone(),
        claim,
    })
}

/// Gratuitous ARP in both forms for IPv4; one unsolicited NA for IPv6.
fn announcement_frames(ip: IpAddr, mac: MacAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => vec![
            arp::gratuitous_request(v4, mac),
            arp::gratuitous_reply(v4, mac),
        ],
        IpAddr::V6(v6) => vec![ndp::unsolicited_advertisement(v6, mac)],
    }
}

#[cfg(test)]
mod tests;
