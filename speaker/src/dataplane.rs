//! The packet sockets of the interfaces this node announces on: opened and closed as that set
//! changes, each read by its own task so that reading never blocks the runtime, and everything
//! received funnelled into one channel for the speaker's single-threaded state.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv6Addr;
use std::sync::Arc;

use ferrolb_crds::InterfaceName;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::packet::{ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::packet_socket::{MulticastMemberships, PacketSocket, RECEIVE_BUFFER_LEN};

/// Frames waiting for the speaker. Past this, new frames are dropped: an answer that comes late
/// is worth less than keeping up with the ones that follow.
pub const RECEIVE_QUEUE_LEN: usize = 1024;

/// One frame received on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub interface: InterfaceName,
    pub frame: Vec<u8>,
}

struct InterfaceSockets {
    index: u32,
    arp: Arc<PacketSocket>,
    ipv6: Arc<PacketSocket>,
    readers: [JoinHandle<()>; 2],
}

impl Drop for InterfaceSockets {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

pub struct DataPlane {
    interfaces: BTreeMap<InterfaceName, InterfaceSockets>,
    received: mpsc::Sender<Received>,
    memberships: MulticastMemberships,
}

impl DataPlane {
    /// Must be called within a Tokio runtime.
    pub fn new() -> io::Result<(Self, mpsc::Receiver<Received>)> {
        let (sender, receiver) = mpsc::channel(RECEIVE_QUEUE_LEN);
        Ok((
            Self {
                interfaces: BTreeMap::new(),
                received: sender,
                memberships: MulticastMemberships::new()?,
            },
            receiver,
        ))
    }

    /// Listens on exactly the `wanted` interfaces (name and kernel index): opens sockets on new
    /// ones, closes the rest, and reopens any whose index changed (the link was recreated).
    /// Returns the interfaces that could not be opened; they are tried again next time.
    pub fn listen_on(
        &mut self,
        wanted: &BTreeMap<InterfaceName, u32>,
    ) -> Vec<(InterfaceName, io::Error)> {
        self.interfaces
            .retain(|name, sockets| wanted.get(name) == Some(&sockets.index));
        let mut failures = Vec::new();
        for (name, &index) in wanted {
            if self.interfaces.contains_key(name) {
                continue;
            }
            match self.open(name, index) {
                Ok(sockets) => {
                    self.interfaces.insert(name.clone(), sockets);
                }
                Err(error) => failures.push((name.clone(), error)),
            }
        }
        failures
    }

    fn open(&self, name: &InterfaceName, index: u32) -> io::Result<InterfaceSockets> {
        let arp = Arc::new(PacketSocket::open(index, ETHERTYPE_ARP)?);
        let ipv6 = Arc::new(PacketSocket::open(index, ETHERTYPE_IPV6)?);
        let readers = [
            tokio::spawn(read_frames(
                name.clone(),
                arp.clone(),
                self.received.clone(),
            )),
            tokio::spawn(read_frames(
                name.clone(),
                ipv6.clone(),
                self.received.clone(),
            )),
        ];
        Ok(InterfaceSockets {
            index,
            arp,
            ipv6,
            readers,
        })
    }

    pub fn listening(&self) -> BTreeSet<InterfaceName> {
        self.interfaces.keys().cloned().collect()
    }

    /// Joins exactly these solicited-node groups, per interface listened on.
    pub fn join_groups(
        &mut self,
        groups: &BTreeMap<InterfaceName, BTreeSet<Ipv6Addr>>,
    ) -> Vec<io::Error> {
        let wanted = groups
            .iter()
            .filter_map(|(name, groups)| {
                let index = self.interfaces.get(name)?.index;
                Some(groups.iter().map(move |group| (index, *group)))
            })
            .flatten()
            .collect();
        self.memberships.reconcile(&wanted)
    }

    /// Sends a frame we built on `interface`, through the socket of its EtherType.
    pub async fn send(&self, interface: &InterfaceName, frame: &[u8]) -> io::Result<()> {
        let sockets = self.interfaces.get(interface).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("not listening on {interface}"),
            )
        })?;
        let socket = if frame.get(12..14) == Some(&ETHERTYPE_ARP.to_be_bytes()[..]) {
            &sockets.arp
        } else {
            &sockets.ipv6
        };
        socket.send(frame).await
    }
}

async fn read_frames(
    interface: InterfaceName,
    socket: Arc<PacketSocket>,
    sink: mpsc::Sender<Received>,
) {
    let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(len) => {
                let received = Received {
                    interface: interface.clone(),
                    frame: buffer.get(..len).unwrap_or_default().to_vec(),
                };
                match sink.try_send(received) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(%interface, "receive queue full, frame dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // The link was deleted: a new one with this name gets new sockets.
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENXIO | libc::ENODEV)) => {
                tracing::info!(%interface, %error, "interface gone, stopped reading");
                return;
            }
            // Reported once when the link goes down; the socket works again when it comes up.
            Err(error) if error.raw_os_error() == Some(libc::ENETDOWN) => {
                tracing::info!(%interface, "interface went down");
            }
            Err(error) => {
                tracing::warn!(%interface, %error, "reading a frame failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
