//! From this node's links, as rtnetlink reports them, to what the speaker may announce on:
//! the interfaces published in its Lease and the MACs the announcer sends with.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::InterfaceName;
use ipnet::IpNet;

use crate::election::PublishedInterface;
use crate::packet::MacAddr;

/// One link as rtnetlink describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// IFLA_ADDRESS; None for links without a 6-byte hardware address.
    pub mac: Option<MacAddr>,
    /// IFLA_INFO_KIND ("veth", "bridge", "vxlan", ...); None for physical devices.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP) with carrier (IFF_LOWER_UP): a link without carrier cannot
    /// be heard, so announcing on it is withdrawn.
    pub up: bool,
    /// ARPHRD_ETHER, and IFF_NOARP not set: ARP and NDP over Ethernet make sense on it.
    pub ethernet_with_arp: bool,
    pub addresses: Vec<IpNet>,
}

/// Software link kinds: used for announcing only when named or on the IP's subnet, never in the
/// "any interface" fallback, where they would announce into a container or tunnel.
const VIRTUAL_KINDS: &[&str] = &[
    "veth",
    "bridge",
    "vxlan",
    "geneve",
    "wireguard",
    "ipip",
    "gre",
    "gretap",
    "ip6gre",
    "ip6tnl",
    "sit",
    "tun",
    "dummy",
    "macvlan",
    "macvtap",
    "ipvlan",
    "vrf",
    "team",
    "nlmon",
];

pub fn is_virtual(link: &LinkState) -> bool {
    link.kind
        .as_deref()
        .is_some_and(|kind| VIRTUAL_KINDS.contains(&kind))
}

/// The links to publish in the Lease: up, Ethernet with ARP, with a valid name and a unicast
/// MAC. Link-local addresses are left out: no pool holds them.
pub fn publishable(links: &[LinkState]) -> Vec<PublishedInterface> {
    let mut published: Vec<PublishedInterface> = links
        .iter()
        .filter(|link| link.up && link.ethernet_with_arp)
        .filter_map(|link| {
            let name = InterfaceName::new(&link.name).ok()?;
            let mac = link.mac.filter(|mac| mac.is_unicast())?;
            let mut subnets: Vec<IpNet> = link
                .addresses
                .iter()
                .filter(|net| !is_link_local(net.addr()))
                .copied()
                .collect();
            subnets.sort();
            subnets.dedup();
            Some(PublishedInterface {
                name,
                mac,
                is_virtual: is_virtual(link),
                subnets,
            })
        })
        .collect();
    published.sort();
    published
}

/// The announcer's view: the published links and their MACs.
pub fn announcing_links(links: &[LinkState]) -> BTreeMap<InterfaceName, MacAddr> {
    publishable(links)
        .into_iter()
        .map(|interface| (interface.name, interface.mac))
        .collect()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, kind: Option<&str>, up: bool, addresses: &[&str]) -> LinkState {
        LinkState {
            index: 1,
            name: name.into(),
            mac: Some(MacAddr([0x02, 0, 0, 0, 0, name.len() as u8])),
            kind: kind.map(String::from),
            up,
            ethernet_with_arp: true,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn only_up_ethernet_links_are_published_without_link_local_addresses() {
        let mut loopback = link("lo", None, true, &["127.0.0.1/8"]);
        loopback.ethernet_with_arp = false;
        let mut no_mac = link("wg0", Some("wireguard"), true, &[]);
        no_mac.mac = None;
        let links = [
            link(
                "eth0",
                None,
                true,
                &["198.51.100.5/24", "fe80::1/64", "2001:db8::5/64"],
            ),
            link("eth1", None, false, &["203.0.113.5/24"]),
            link("veth1234", Some("veth"), true, &[]),
            loopback,
            no_mac,
        ];
        let published = publishable(&links);
        let names: Vec<&str> = published.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "veth1234"]);
        assert_eq!(
            published[0].subnets,
            ["198.51.100.5/24", "2001:db8::5/64"].map(|s| s.parse::<IpNet>().unwrap())
        );
        assert!(!published[0].is_virtual);
        assert!(published[1].is_virtual);
        assert_eq!(announcing_links(&links).len(), 2);
    }

    #[test]
    fn physical_and_vlan_links_are_not_virtual() {
        assert!(!is_virtual(&link("eth0", None, true, &[])));
        assert!(!is_virtual(&link("eth0.100", Some("vlan"), true, &[])));
        assert!(!is_virtual(&link("bond0", Some("bond"), true, &[])));
        assert!(is_virtual(&link("cni0", Some("bridge"), true, &[])));
        assert!(is_virtual(&link("flannel.1", Some("vxlan"), true, &[])));
    }
}
