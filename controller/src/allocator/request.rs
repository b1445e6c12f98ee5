//! What a Service asks the allocator for, and why an allocation can fail.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::IpFamily;

use super::ServiceKey;
use super::sharing::{SharingConflict, SharingProfile};

/// Which families a Service gets addresses of (`ipFamilyPolicy` with `ipFamilies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPolicy {
    SingleStack(IpFamily),
    /// Both families from one pool if some pool has both, else the primary, else the other.
    PreferDualStack {
        primary: IpFamily,
    },
    /// Both families from one pool, or nothing.
    RequireDualStack {
        primary: IpFamily,
    },
}

impl FamilyPolicy {
    pub fn primary(self) -> IpFamily {
        match self {
            FamilyPolicy::SingleStack(family)
            | FamilyPolicy::PreferDualStack { primary: family }
            | FamilyPolicy::RequireDualStack { primary: family } => family,
        }
    }

    /// Whether an assignment of exactly these families satisfies the policy.
    pub fn accepts(self, families: &[IpFamily]) -> bool {
        let mut sorted = families.to_vec();
        sorted.sort();
        let distinct = {
            let mut d = sorted.clone();
            d.dedup();
            d.len() == sorted.len()
        };
        distinct
            && match self {
                FamilyPolicy::SingleStack(family) => sorted == [family],
                FamilyPolicy::PreferDualStack { .. } => !sorted.is_empty(),
                FamilyPolicy::RequireDualStack { .. } => sorted.len() == 2,
            }
    }

    /// The family sets to try, best first.
    pub fn choices(self) -> &'static [&'static [IpFamily]] {
        use IpFamily::{IPv4, IPv6};
        match self {
            FamilyPolicy::SingleStack(IPv4) => &[&[IPv4]],
            FamilyPolicy::SingleStack(IPv6) => &[&[IPv6]],
            FamilyPolicy::RequireDualStack { primary: IPv4 } => &[&[IPv4, IPv6]],
            FamilyPolicy::RequireDualStack { primary: IPv6 } => &[&[IPv6, IPv4]],
            FamilyPolicy::PreferDualStack { primary: IPv4 } => &[&[IPv4, IPv6], &[IPv4], &[IPv6]],
            FamilyPolicy::PreferDualStack { primary: IPv6 } => &[&[IPv6, IPv4], &[IPv6], &[IPv4]],
        }
    }
}

/// Everything the allocator needs to know about one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest {
    pub service: ServiceKey,
    pub namespace_labels: BTreeMap<String, String>,
    pub service_labels: BTreeMap<String, String>,
    pub families: FamilyPolicy,
    /// Requested addresses, at most one per family, each of a family the Service has.
    pub addresses: Vec<IpAddr>,
    /// The one pool the Service asked for.
    pub pool: Option<String>,
    pub sharing: SharingProfile,
}

impl AllocationRequest {
    /// A plain request: any pool, no sharing, no specific address.
    pub fn new(service: ServiceKey, families: FamilyPolicy) -> Self {
        Self {
            service,
            namespace_labels: BTreeMap::new(),
            service_labels: BTreeMap::new(),
            families,
            addresses: Vec::new(),
            pool: None,
            sharing: SharingProfile::exclusive(),
        }
    }
}

/// Why no address (or not the requested one) was assigned. Messages go into events as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("pool {0} does not exist")]
    UnknownPool(String),
    #[error("pool {pool} does not allow Services in namespace {namespace} with these labels")]
    PoolNotAllowed { pool: String, namespace: String },
    #[error("pool {pool} has no {family} addresses")]
    PoolLacksFamily { pool: String, family: IpFamily },
    #[error("pool {pool} has no free {family} address")]
    PoolExhausted { pool: String, family: IpFamily },
    #[error("no pool that serves this Service has a free {family} address")]
    NoFreeAddress { family: IpFamily },
    #[error("no pool that serves this Service has free IPv4 and IPv6 addresses")]
    NoFreeDualStack,
    #[error("no pool serves this Service: none matches it and none auto-assigns")]
    NoPool,
    #[error("{ip} is not in pool {pool}")]
    OutsideNamedPool { ip: IpAddr, pool: String },
    #[error("{ip} is in no pool")]
    OutsideEveryPool { ip: IpAddr },
    #[error("{first} and {second} are in different pools ({first_pool}, {second_pool})")]
    DifferentPools {
        first: IpAddr,
        first_pool: String,
        second: IpAddr,
        second_pool: String,
    },
    #[error("{ip} ends in .0 or .255 and pool {pool} avoids such addresses")]
    BuggyAddress { ip: IpAddr, pool: String },
    #[error("{ip} {conflict}")]
    InUse {
        ip: IpAddr,
        conflict: SharingConflict,
    },
    #[error("{ip} is {family}, which this Service's ipFamilies do not allow")]
    WrongFamily { ip: IpAddr, family: IpFamily },
    #[error("requested addresses do not satisfy the Service's ipFamilyPolicy")]
    FamiliesNotSatisfied,
    #[error("the Service holds {held} but asks for {wanted}")]
    NotRequested { held: String, wanted: String },
}

impl AllocationError {
    /// A short label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            AllocationError::UnknownPool(_) => "unknown_pool",
            AllocationError::PoolNotAllowed { .. } | AllocationError::NoPool => "not_allowed",
            AllocationError::PoolLacksFamily { .. }
            | AllocationError::WrongFamily { .. }
            | AllocationError::FamiliesNotSatisfied => "family",
            AllocationError::NotRequested { .. } => "invalid_request",
            AllocationError::PoolExhausted { .. }
            | AllocationError::NoFreeAddress { .. }
            | AllocationError::NoFreeDualStack => "exhausted",
            AllocationError::OutsideNamedPool { .. }
            | AllocationError::OutsideEveryPool { .. }
            | AllocationError::DifferentPools { .. }
            | AllocationError::BuggyAddress { .. } => "invalid_request",
            AllocationError::InUse { .. } => "conflict",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_accept_the_right_family_sets() {
        use IpFamily::*;
        assert!(FamilyPolicy::SingleStack(IPv4).accepts(&[IPv4]));
        assert!(!FamilyPolicy::SingleStack(IPv4).accepts(&[IPv6]));
        assert!(!FamilyPolicy::SingleStack(IPv4).accepts(&[IPv4, IPv6]));
        let prefer = FamilyPolicy::PreferDualStack { primary: IPv6 };
        assert!(prefer.accepts(&[IPv4]) && prefer.accepts(&[IPv6, IPv4]));
        assert!(!prefer.accepts(&[]) && !prefer.accepts(&[IPv4, IPv4]));
        let require = FamilyPolicy::RequireDualStack { primary: IPv4 };
        assert!(require.accepts(&[IPv6, IPv4]) && !require.accepts(&[IPv4]));
        assert_eq!(
            prefer.choices(),
            &[&[IPv6, IPv4][..], &[IPv6][..], &[IPv4][..]][..]
        );
    }
}
