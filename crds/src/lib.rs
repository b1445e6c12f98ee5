//! The FerroLB API (`ferrolb.io/v1beta1`) and the logic both the controller and the speaker need:
//! what pool addresses mean, label selector matching, and the Service annotations.

pub mod address_count;
pub mod addresses;
pub mod annotations;
pub mod cache;
#[cfg(feature = "health-server")]
pub mod health_server;
pub mod heartbeat_key;
pub mod ip_address_pool;
pub mod l2_advertisement;
pub mod manifests;
pub mod permissions;
pub mod schema;
pub mod selector;
pub mod service_class;
pub mod service_l2_status;
#[cfg(test)]
mod test_support;

pub use address_count::AddressCount;
pub use addresses::{AddressError, AddressSet, IpFamily, IpRange};
pub use ip_address_pool::{
    IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation,
};
pub use l2_advertisement::{
    GratuitousInterval, InterfaceName, L2Advertisement, L2AdvertisementSpec,
};
pub use selector::LabelSelector;
pub use service_l2_status::{ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus};

/// The API group of FerroLB's resources.
pub const GROUP: &str = "ferrolb.io";
/// The served and stored version.
pub const VERSION: &str = "v1beta1";
