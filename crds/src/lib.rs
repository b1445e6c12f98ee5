//! The FerroLB API (`ferrolb.io/v1beta1`: pools, layer-2 and BGP advertisements, BGP peers and
//! the status objects the speakers write) and the logic both the controller and the speaker need:
//! what pool addresses mean, label selector matching, and the Service annotations.

pub mod address_count;
pub mod addresses;
pub mod annotations;
pub mod bgp_advertisement;
pub mod bgp_peer;
pub mod bgp_session_state;
pub mod cache;
pub mod duration;
#[cfg(feature = "health-server")]
pub mod health_server;
pub mod heartbeat_key;
pub mod ip_address_pool;
pub mod l2_advertisement;
pub mod manifests;
pub mod naming;
pub mod permissions;
pub mod schema;
pub mod selector;
pub mod service_bgp_status;
pub mod service_class;
pub mod service_l2_status;
#[cfg(test)]
mod test_support;

pub use address_count::AddressCount;
pub use addresses::{AddressError, AddressSet, IpFamily, IpRange};
pub use bgp_advertisement::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPAdvertisementStatus, Community,
};
pub use bgp_peer::{BGPPeer, BGPPeerSpec, BGPPeerStatus, BfdSettings, PeerSettings};
pub use bgp_session_state::{BGPSessionState, BGPSessionStateSpec, BGPSessionStateStatus};
pub use ip_address_pool::{
    IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation,
};
pub use l2_advertisement::{
    GratuitousInterval, InterfaceName, L2Advertisement, L2AdvertisementSpec,
};
pub use selector::LabelSelector;
pub use service_bgp_status::{ServiceBGPStatus, ServiceBGPStatusSpec, ServiceBGPStatusStatus};
pub use service_l2_status::{ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus};

/// The API group of FerroLB's resources.
pub const GROUP: &str = "ferrolb.io";
/// The served and stored version.
pub const VERSION: &str = "v1beta1";
