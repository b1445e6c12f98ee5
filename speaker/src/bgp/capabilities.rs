//! What this speaker offers in its OPEN (RFC 5492 capabilities) and what a session ends up with
//! once the peer's OPEN is in: hold time, keepalive interval, 4-octet AS numbers, the address
//! families both sides carry, route refresh and the peer's graceful restart.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::IpNet;

use super::codec::{CAPABILITY_MULTIPROTOCOL, Capability, GracefulRestart, Open};

/// The address families FerroLB advertises: unicast IPv4 (/32 routes) and IPv6 (/128 routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    /// The family a prefix is carried in.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "IPv4 unicast",
            Family::Ipv6Unicast => "IPv6 unicast",
        })
    }
}

/// A set of [`Family`]s, as plain flags (the shape configuration has).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Families {
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
}

impl Families {
    pub const BOTH: Families = Families {
        ipv4_unicast: true,
        ipv6_unicast: true,
    };
    pub const NONE: Families = Families {
        ipv4_unicast: false,
        ipv6_unicast: false,
    };

    pub fn contains(self, family: Family) -> bool {
        match family {
            Family::Ipv4Unicast => self.ipv4_unicast,
            Family::Ipv6Unicast => self.ipv6_unicast,
        }
    }

    pub fn insert(&mut self, family: Family) {
        match family {
            Family::Ipv4Unicast => self.ipv4_unicast = true,
            Family::Ipv6Unicast => self.ipv6_unicast = true,
        }
    }

    pub fn intersection(self, other: Families) -> Families {
        Families {
            ipv4_unicast: self.ipv4_unicast && other.ipv4_unicast,
            ipv6_unicast: self.ipv6_unicast && other.ipv6_unicast,
        }
    }

    pub fn is_empty(self) -> bool {
        !self.ipv4_unicast && !self.ipv6_unicast
    }

    pub fn iter(self) -> impl Iterator<Item = Family> {
        Family::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

/// The peer's graceful restart capability (RFC 4724): how long it keeps our routes when our
/// session drops, and for which families its own forwarding survives its restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerGracefulRestart {
    pub restart_time: Duration,
    /// The R bit: the peer has just restarted.
    pub restarting: bool,
    /// The families listed, each with its F bit (forwarding state preserved).
    pub families: Vec<(Family, bool)>,
}

/// What a session runs with once both OPENs are exchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// min(ours, theirs); zero means neither keepalives nor a hold timer (RFC 4271 §4.2).
    pub hold_time: Duration,
    /// How often we send KEEPALIVE; `None` when the hold time is zero.
    pub keepalive_time: Option<Duration>,
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH carries 4-byte ASNs.
    pub four_octet_as: bool,
    /// The families both sides carry: the only ones we send routes in.
    pub families: Families,
    /// The peer accepts ROUTE-REFRESH (RFC 2918). We always offer it: the peer may ask us.
    pub route_refresh: bool,
    pub peer_graceful_restart: Option<PeerGracefulRestart>,
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// The peer is in another AS: AS_PATH carries our ASN and LOCAL_PREF is not sent.
    pub ebgp: bool,
}

/// The capabilities of our OPEN: multiprotocol for each configured family (RFC 4760), route
/// refresh (RFC 2918), 4-octet AS (RFC 6793) and, only when configured, graceful restart
/// (RFC 4724).
///
/// Graceful restart lists our families with the F bit set: while the speaker restarts, the node
/// keeps forwarding traffic for its IPs, so the router may keep our routes for `restart_time`.
/// The R bit stays clear: we never defer our initial UPDATEs waiting for the peer's End-of-RIB.
pub fn offered(
    local_asn: u32,
    families: Families,
    graceful_restart: Option<Duration>,
) -> Vec<Capability> {
    let mut capabilities: Vec<Capability> =
        families.iter().map(Capability::Multiprotocol).collect();
    capabilities.push(Capability::RouteRefresh);
    capabilities.push(Capability::FourOctetAs(local_asn));
    if let Some(restart_time) = graceful_restart {
        capabilities.push(Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            // Capped by the 12-bit field; configuration is validated to fit.
            restart_time_secs: u16::try_from(restart_time.as_secs())
                .unwrap_or(MAX_RESTART_TIME_SECS)
                .min(MAX_RESTART_TIME_SECS),
            families: families.iter().map(|family| (family, true)).collect(),
        }));
    }
    capabilities
}

/// The restart time field of the graceful restart capability has 12 bits.
pub const MAX_RESTART_TIME_SECS: u16 = 4095;

/// The families a peer's OPEN announces. Without any multiprotocol capability a peer carries
/// IPv4 unicast only, implicitly (RFC 4760 §1).
pub fn peer_families(open: &Open) -> Families {
    let mut families = Families::NONE;
    let mut any_multiprotocol = false;
    for capability in &open.capabilities {
        match capability {
            Capability::Multiprotocol(family) => {
                any_multiprotocol = true;
                families.insert(*family);
            }
            Capability::Other {
                code: CAPABILITY_MULTIPROTOCOL,
            } => any_multiprotocol = true,
            _ => {}
        }
    }
    if !any_multiprotocol {
        families.ipv4_unicast = true;
    }
    families
}

/// What the peer's OPEN says beyond its identity, intersected with what we offered.
pub struct PeerOffer {
    pub four_octet_as: bool,
    pub families: Families,
    pub route_refresh: bool,
    pub graceful_restart: Option<PeerGracefulRestart>,
}

/// Reads the capabilities of the peer's OPEN against the families we offered.
pub fn peer_offer(open: &Open, ours: Families) -> PeerOffer {
    let mut offer = PeerOffer {
        four_octet_as: false,
        families: peer_families(open).intersection(ours),
        route_refresh: false,
        graceful_restart: None,
    };
    for capability in &open.capabilities {
        match capability {
            Capability::FourOctetAs(_) => offer.four_octet_as = true,
            Capability::RouteRefresh => offer.route_refresh = true,
            Capability::GracefulRestart(gr) => {
                offer.graceful_restart = Some(PeerGracefulRestart {
                    restart_time: Duration::from_secs(u64::from(gr.restart_time_secs)),
                    restarting: gr.restarting,
                    families: gr.families.clone(),
                });
            }
            _ => {}
        }
    }
    offer
}

/// The negotiated hold time and keepalive interval, from our hold time, our configured
/// keepalive (if any, shorter than our hold time) and the peer's hold time in seconds.
///
/// Unconfigured, the keepalive is a third of the negotiated hold time (RFC 4271 §4.4). A
/// configured keepalive is kept as is while the negotiated hold time is ours; when the peer
/// lowers the hold time, the keepalive shrinks in proportion (at least 1 s), so it stays as far
/// inside the hold time as the operator chose.
pub fn negotiate_hold(
    ours: Duration,
    keepalive: Option<Duration>,
    peer_hold_secs: u16,
) -> (Duration, Option<Duration>) {
    let ours = Duration::from_secs(ours.as_secs());
    let hold = ours.min(Duration::from_secs(u64::from(peer_hold_secs)));
    if hold.is_zero() {
        return (Duration::ZERO, None);
    }
    let keepalive = match keepalive {
        None => hold / 3,
        Some(configured) if hold == ours => configured,
        Some(configured) => configured
            .mul_f64(hold.as_secs_f64() / ours.as_secs_f64())
            .max(Duration::from_secs(1)),
    };
    (hold, Some(keepalive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with(capabilities: Vec<Capability>) -> Open {
        Open {
            asn: 64512,
            hold_time_secs: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities,
        }
    }

    #[test]
    fn graceful_restart_is_offered_only_when_configured() {
        let without = offered(64512, Families::BOTH, None);
        assert!(
            !without
                .iter()
                .any(|c| matches!(c, Capability::GracefulRestart(_)))
        );
        let with = offered(64512, Families::BOTH, Some(Duration::from_secs(120)));
        assert!(with.contains(&Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            restart_time_secs: 120,
            families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, true)],
        })));
    }

    #[test]
    fn offers_multiprotocol_for_configured_families_route_refresh_and_four_octet_as() {
        let caps = offered(
            4_200_000_000,
            Families {
                ipv4_unicast: false,
                ipv6_unicast: true,
            },
            None,
        );
        assert_eq!(
            caps,
            vec![
                Capability::Multiprotocol(Family::Ipv6Unicast),
                Capability::RouteRefresh,
                Capability::FourOctetAs(4_200_000_000),
            ]
        );
    }

    #[test]
    fn a_peer_without_multiprotocol_carries_ipv4_unicast_only() {
        assert_eq!(
            peer_families(&open_with(vec![])),
            Families {
                ipv4_unicast: true,
                ipv6_unicast: false
            }
        );
        assert_eq!(
            peer_families(&open_with(vec![Capability::Multiprotocol(
                Family::Ipv6Unicast
            )])),
            Families {
                ipv4_unicast: false,
                ipv6_unicast: true
            }
        );
    }

    #[test]
    fn families_are_those_both_sides_carry() {
        let open = open_with(vec![
            Capability::Multiprotocol(Family::Ipv4Unicast),
            Capability::Multiprotocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
        ]);
        let offer = peer_offer(
            &open,
            Families {
                ipv4_unicast: true,
                ipv6_unicast: false,
            },
        );
        assert_eq!(
            offer.families,
            Families {
                ipv4_unicast: true,
                ipv6_unicast: false
            }
        );
        assert!(offer.route_refresh);
        assert!(!offer.four_octet_as);
    }

    #[test]
    fn hold_time_is_the_minimum_and_keepalive_a_third_at_most() {
        let s = Duration::from_secs;
        assert_eq!(negotiate_hold(s(90), None, 180), (s(90), Some(s(30))));
        assert_eq!(negotiate_hold(s(90), None, 9), (s(9), Some(s(3))));
        assert_eq!(negotiate_hold(s(90), Some(s(10)), 90), (s(90), Some(s(10))));
        assert_eq!(negotiate_hold(s(90), Some(s(60)), 90), (s(90), Some(s(60))));
        assert_eq!(negotiate_hold(s(90), Some(s(60)), 45), (s(45), Some(s(30))));
        assert_eq!(negotiate_hold(s(90), Some(s(1)), 3), (s(3), Some(s(1))));
        // Fractions of a second are dropped, as in the OPEN.
        assert_eq!(
            negotiate_hold(Duration::from_millis(9500), None, 90),
            (s(9), Some(s(3)))
        );
        assert_eq!(negotiate_hold(s(90), None, 0), (Duration::ZERO, None));
        assert_eq!(
            negotiate_hold(Duration::ZERO, None, 90),
            (Duration::ZERO, None)
        );
    }
}
