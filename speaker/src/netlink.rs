//! This node's links and addresses, followed through rtnetlink: a dump to start from and an
//! event whenever either changes.
//!
//! Events only say "something changed"; the caller dumps again. Dumps are cheap at a node's
//! scale, and re-reading the whole state can never drift the way applying deltas can.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use futures::StreamExt;
use futures::TryStreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage};
use rtnetlink::{MulticastGroup, new_connection, new_multicast_connection};

use crate::interfaces::LinkState;
use crate::packet::MacAddr;

type Events = UnboundedReceiver<(
    netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
    netlink_sys::SocketAddr,
)>;

pub struct LinkMonitor {
    handle: rtnetlink::Handle,
    events: Events,
}

impl LinkMonitor {
    /// Subscribes to link and address changes and opens a connection for dumps. Must be called
    /// within a Tokio runtime, which drives both connections.
    pub fn open() -> io::Result<Self> {
        let (events_connection, _, events) = new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])?;
        tokio::spawn(events_connection);
        let (connection, handle, _) = new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle, events })
    }

    /// Every link with its addresses, as they are now. Because the subscription is opened
    /// first, a change racing with the dump still arrives as an event afterwards.
    pub async fn links(&self) -> Result<Vec<LinkState>, rtnetlink::Error> {
        let mut links: BTreeMap<u32, LinkState> = BTreeMap::new();
        let mut link_messages = self.handle.link().get().execute();
        while let Some(message) = link_messages.try_next().await? {
            let link = link_state(&message);
            links.insert(link.index, link);
        }
        let mut address_messages = self.handle.address().get().execute();
        while let Some(message) = address_messages.try_next().await? {
            if let Some((index, address)) = address_of(&message)
                && let Some(link) = links.get_mut(&index)
            {
                link.addresses.push(address);
            }
        }
        Ok(links.into_values().collect())
    }

    /// Waits for the next link or address change, then drains the changes already queued so a
    /// burst costs one dump. False once the subscription has closed.
    pub async fn changed(&mut self) -> bool {
        if self.events.next().await.is_none() {
            return false;
        }
        while self.events.try_recv().is_ok() {}
        true
    }
}

/// A link message as a [`LinkState`] (without addresses).
pub fn link_state(message: &LinkMessage) -> LinkState {
    let flags = message.header.flags;
    let mut link = LinkState {
        index: message.header.index,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
        ethernet_with_arp: message.header.link_layer_type == LinkLayerType::Ether
            && !flags.contains(LinkFlags::Noarp),
        ..Default::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

/// The interface index and address with prefix of an address message. IFA_LOCAL is the
/// interface's own IPv4 address (IFA_ADDRESS is the peer's on point-to-point links); IPv6 has
/// only IFA_ADDRESS.
pub fn address_of(message: &AddressMessage) -> Option<(u32, IpNet)> {
    let find = |local: bool| -> Option<IpAddr> {
        message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Local(ip) if local => Some(*ip),
                AddressAttribute::Address(ip) if !local => Some(*ip),
                _ => None,
            })
    };
    let ip = find(true).or_else(|| find(false))?;
    let net = IpNet::new(ip, message.header.prefix_len).ok()?;
    Some((message.header.index, net))
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::InfoKind;

    use super::*;

    #[test]
    fn link_messages_become_link_states() {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message.header.link_layer_type = LinkLayerType::Ether;
        message.header.flags = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        message.attributes = vec![
            LinkAttribute::IfName("veth0".into()),
            LinkAttribute::Address(vec![0x02, 0, 0, 0, 0, 0x07]),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let link = link_state(&message);
        assert_eq!(link.index, 7);
        assert_eq!(link.name, "veth0");
        assert_eq!(link.mac, Some(MacAddr([0x02, 0, 0, 0, 0, 0x07])));
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert!(link.up && link.ethernet_with_arp);

        message.header.flags = LinkFlags::Up | LinkFlags::Noarp;
        message.attributes.truncate(1);
        let link = link_state(&message);
        assert!(!link.up, "no carrier");
        assert!(!link.ethernet_with_arp);
        assert_eq!(link.mac, None);
    }

    #[test]
    fn address_messages_prefer_the_local_address() {
        let mut message = AddressMessage::default();
        message.header.index = 3;
        message.header.prefix_len = 24;
        message.attributes = vec![
            AddressAttribute::Address("198.51.100.1".parse().unwrap()),
            AddressAttribute::Local("198.51.100.5".parse().unwrap()),
        ];
        assert_eq!(
            address_of(&message),
            Some((3, "198.51.100.5/24".parse().unwrap()))
        );
        message.header.prefix_len = 64;
        message.attributes = vec![AddressAttribute::Address("2001:db8::5".parse().unwrap())];
        assert_eq!(
            address_of(&message),
            Some((3, "2001:db8::5/64".parse().unwrap()))
        );
        message.header.prefix_len = 200;
        assert_eq!(address_of(&message), None, "impossible prefix length");
        message.attributes.clear();
        assert_eq!(address_of(&message), None);
    }
}
