//! When Services may share one external IP (`ferrolb.io/allow-shared-ip`).
//!
//! Sharing needs equal non-empty keys, backends traffic can reach the same way (both
//! externalTrafficPolicy Cluster, or both Local with identical selectors, since with Local only
//! nodes with endpoints announce), and no protocol/port pair served twice.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::ServiceKey;
use super::request::AllocationRequest;

/// A protocol and port the Service serves on its external IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub protocol: String,
    pub port: i32,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// How traffic reaching the IP gets to the Service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backend {
    Cluster,
    Local { selector: BTreeMap<String, String> },
}

/// What decides whether a Service can share an IP with others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingProfile {
    /// A non-empty sharing key, or none.
    pub key: Option<String>,
    pub backend: Backend,
    /// Sorted, without duplicates (see [`SharingProfile::normalize_ports`]).
    pub ports: Vec<PortKey>,
}

impl SharingProfile {
    /// A profile that shares with nobody, serving no ports.
    pub fn exclusive() -> Self {
        Self {
            key: None,
            backend: Backend::Cluster,
            ports: Vec::new(),
        }
    }

    pub fn normalize_ports(&mut self) {
        self.ports.sort();
        self.ports.dedup();
    }

    /// A port both profiles serve.
    pub fn common_port<'a>(&'a self, other: &SharingProfile) -> Option<&'a PortKey> {
        self.ports
            .iter()
            .find(|p| other.ports.binary_search(p).is_ok())
    }
}

/// Why a Service cannot use an address another Service holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingConflict {
    #[error("is used by {other}, which does not allow sharing")]
    OtherNotShared { other: ServiceKey },
    #[error("is used by {other} and this Service has no sharing key")]
    NoKey { other: ServiceKey },
    #[error("is used by {other} with a different sharing key")]
    DifferentKey { other: ServiceKey },
    #[error(
        "is used by {other} with a different externalTrafficPolicy or, for Local, a different selector"
    )]
    Backend { other: ServiceKey },
    #[error("is used by {other}, which already serves {port}")]
    Port { other: ServiceKey, port: PortKey },
}

impl SharingConflict {
    pub fn other(&self) -> &ServiceKey {
        match self {
            SharingConflict::OtherNotShared { other }
            | SharingConflict::NoKey { other }
            | SharingConflict::DifferentKey { other }
            | SharingConflict::Backend { other }
            | SharingConflict::Port { other, .. } => other,
        }
    }
}

/// Who uses one address: the requests of its users, which all share key and backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressUse {
    users: Vec<Arc<AllocationRequest>>,
}

impl AddressUse {
    pub fn new(user: Arc<AllocationRequest>) -> Self {
        Self { users: vec![user] }
    }

    /// The sharing key of the address (its users all have it).
    pub fn key(&self) -> Option<&String> {
        self.users.first().and_then(|u| u.sharing.key.as_ref())
    }

    pub fn users(&self) -> impl Iterator<Item = &ServiceKey> {
        self.users.iter().map(|u| &u.service)
    }

    pub fn is_used_by(&self, service: &ServiceKey) -> bool {
        self.users.iter().any(|u| u.service == *service)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether `service` with `profile` may use this address alongside the other users.
    pub fn admits(
        &self,
        service: &ServiceKey,
        profile: &SharingProfile,
    ) -> Result<(), SharingConflict> {
        for other_user in self.users.iter().filter(|u| u.service != *service) {
            let other = other_user.service.clone();
            let theirs = &other_user.sharing;
            let Some(other_key) = &theirs.key else {
                return Err(SharingConflict::OtherNotShared { other });
            };
            let Some(key) = &profile.key else {
                return Err(SharingConflict::NoKey { other });
            };
            if key != other_key {
                return Err(SharingConflict::DifferentKey { other });
            }
            if profile.backend != theirs.backend {
                return Err(SharingConflict::Backend { other });
            }
            if let Some(port) = profile.common_port(theirs) {
                return Err(SharingConflict::Port {
                    other,
                    port: port.clone(),
                });
            }
        }
        Ok(())
    }

    /// Adds a user already admitted, or replaces its request.
    pub fn join(&mut self, user: Arc<AllocationRequest>) {
        match self.users.iter_mut().find(|u| u.service == user.service) {
            Some(existing) => *existing = user,
            None => self.users.push(user),
        }
    }

    /// Removes a user; true when nobody uses the address any more.
    pub fn leave(&mut self, service: &ServiceKey) -> bool {
        self.users.retain(|u| u.service != *service);
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::request::FamilyPolicy;
    use ferrolb_crds::IpFamily;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("shop", name)
    }

    fn profile(key: Option<&str>, backend: Backend, ports: &[(&str, i32)]) -> SharingProfile {
        let mut profile = SharingProfile {
            key: key.map(str::to_owned),
            backend,
            ports: ports
                .iter()
                .map(|(p, n)| PortKey {
                    protocol: p.to_string(),
                    port: *n,
                })
                .collect(),
        };
        profile.normalize_ports();
        profile
    }

    fn user(name: &str, sharing: SharingProfile) -> Arc<AllocationRequest> {
        let mut request =
            AllocationRequest::new(key(name), FamilyPolicy::SingleStack(IpFamily::IPv4));
        request.sharing = sharing;
        Arc::new(request)
    }

    fn local(app: &str) -> Backend {
        Backend::Local {
            selector: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        }
    }

    #[test]
    fn equal_keys_disjoint_ports_share() {
        let used = AddressUse::new(user(
            "web",
            profile(Some("k"), Backend::Cluster, &[("TCP", 80)]),
        ));
        let dns = profile(Some("k"), Backend::Cluster, &[("UDP", 53), ("TCP", 53)]);
        assert_eq!(used.admits(&key("dns"), &dns), Ok(()));
    }

    #[test]
    fn each_incompatibility_is_named() {
        let web = profile(Some("k"), Backend::Cluster, &[("TCP", 80)]);
        let used = AddressUse::new(user("web", web.clone()));
        let cases = [
            (
                profile(None, Backend::Cluster, &[("TCP", 81)]),
                "is used by shop/web and this Service has no sharing key",
            ),
            (
                profile(Some("j"), Backend::Cluster, &[("TCP", 81)]),
                "is used by shop/web with a different sharing key",
            ),
            (
                profile(Some("k"), local("a"), &[("TCP", 81)]),
                "is used by shop/web with a different externalTrafficPolicy or, for Local, a different selector",
            ),
            (
                profile(Some("k"), Backend::Cluster, &[("UDP", 53), ("TCP", 80)]),
                "is used by shop/web, which already serves TCP/80",
            ),
        ];
        for (candidate, message) in cases {
            assert_eq!(
                used.admits(&key("other"), &candidate)
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
        let unshared = AddressUse::new(user("solo", profile(None, Backend::Cluster, &[])));
        assert_eq!(
            unshared.admits(&key("x"), &web).unwrap_err().to_string(),
            "is used by shop/solo, which does not allow sharing"
        );
    }

    #[test]
    fn local_backends_share_only_with_identical_selectors() {
        let used = AddressUse::new(user("a", profile(Some("k"), local("x"), &[("TCP", 80)])));
        assert!(
            used.admits(&key("b"), &profile(Some("k"), local("x"), &[("TCP", 81)]))
                .is_ok()
        );
        assert!(
            used.admits(&key("b"), &profile(Some("k"), local("y"), &[("TCP", 81)]))
                .is_err()
        );
    }

    #[test]
    fn a_sole_user_may_change_its_key_in_place() {
        let mut used = AddressUse::new(user("a", profile(Some("k"), Backend::Cluster, &[])));
        let renamed = profile(Some("new"), Backend::Cluster, &[]);
        assert_eq!(used.admits(&key("a"), &renamed), Ok(()));
        used.join(user("a", renamed));
        assert_eq!(used.key().map(String::as_str), Some("new"));
        assert!(used.leave(&key("a")));
    }
}
