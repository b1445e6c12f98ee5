//! Service annotations FerroLB reads and writes.
//!
//! Services written for MetalLB keep working: each key FerroLB reads is also accepted under the
//! `metallb.io/` and legacy `metallb.universe.tf/` prefixes. When a Service carries more than one
//! spelling, the `ferrolb.io/` one wins, then `metallb.io/`, then `metallb.universe.tf/`.

use std::collections::BTreeMap;

/// Requested external IPs: a comma-separated list, at most one per family.
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
/// The one pool to allocate from (autoAssign is ignored; no fallback to other pools).
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// Sharing key: Services with equal keys may share an external IP.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Written by the controller: the pool the Service's IPs came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";

/// Prefixes accepted for the keys FerroLB reads, strongest first.
pub const ACCEPTED_PREFIXES: [&str; 3] = ["ferrolb.io/", "metallb.io/", "metallb.universe.tf/"];

/// An annotation FerroLB reads from Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceAnnotation {
    LoadBalancerIps,
    AddressPool,
    AllowSharedIp,
}

impl ServiceAnnotation {
    pub const ALL: [ServiceAnnotation; 3] = [
        ServiceAnnotation::LoadBalancerIps,
        ServiceAnnotation::AddressPool,
        ServiceAnnotation::AllowSharedIp,
    ];

    /// The part after the prefix, shared by FerroLB and MetalLB.
    pub fn suffix(self) -> &'static str {
        match self {
            ServiceAnnotation::LoadBalancerIps => "loadBalancerIPs",
            ServiceAnnotation::AddressPool => "address-pool",
            ServiceAnnotation::AllowSharedIp => "allow-shared-ip",
        }
    }

    /// FerroLB's own key.
    pub fn key(self) -> &'static str {
        match self {
            ServiceAnnotation::LoadBalancerIps => LOAD_BALANCER_IPS,
            ServiceAnnotation::AddressPool => ADDRESS_POOL,
            ServiceAnnotation::AllowSharedIp => ALLOW_SHARED_IP,
        }
    }

    /// The value of this annotation and the key it was found under, honouring precedence.
    /// Surrounding whitespace is not part of a value.
    pub fn lookup(self, annotations: &BTreeMap<String, String>) -> Option<AnnotationValue<'_>> {
        ACCEPTED_PREFIXES.iter().find_map(|prefix| {
            let key = format!("{prefix}{}", self.suffix());
            annotations
                .get_key_value(key.as_str())
                .map(|(key, value)| AnnotationValue {
                    key: key.as_str(),
                    value: value.trim(),
                })
        })
    }
}

/// An annotation value with the key it came from, so messages can name what the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationValue<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::labels as annotations;

    #[test]
    fn ferrolb_key_wins_over_metallb_aliases() {
        let a = annotations(&[
            ("metallb.universe.tf/address-pool", "legacy"),
            ("metallb.io/address-pool", "metallb"),
            ("ferrolb.io/address-pool", "ours"),
        ]);
        let found = ServiceAnnotation::AddressPool.lookup(&a).unwrap();
        assert_eq!(found.value, "ours");
        assert_eq!(found.key, ADDRESS_POOL);
    }

    #[test]
    fn metallb_io_wins_over_universe_tf() {
        let a = annotations(&[
            ("metallb.universe.tf/allow-shared-ip", "old"),
            ("metallb.io/allow-shared-ip", " new "),
        ]);
        let found = ServiceAnnotation::AllowSharedIp.lookup(&a).unwrap();
        assert_eq!(
            (found.key, found.value),
            ("metallb.io/allow-shared-ip", "new")
        );
    }

    #[test]
    fn legacy_alias_alone_is_accepted() {
        let a = annotations(&[("metallb.universe.tf/loadBalancerIPs", "198.51.100.7")]);
        assert_eq!(
            ServiceAnnotation::LoadBalancerIps.lookup(&a).unwrap().value,
            "198.51.100.7"
        );
        assert_eq!(ServiceAnnotation::AddressPool.lookup(&a), None);
    }

    #[test]
    fn own_keys_use_the_accepted_prefix_and_suffix() {
        for a in ServiceAnnotation::ALL {
            assert_eq!(a.key(), format!("{}{}", ACCEPTED_PREFIXES[0], a.suffix()));
        }
    }
}
