//! Which pools a Service may get addresses from without naming one, in the order they are tried.
//!
//! Deterministic where MetalLB picks at random between equal pools: pools whose
//! serviceAllocation matches the Service come first by priority (lower first, unset last), ties by
//! name; then auto-assign pools without serviceAllocation, by name.

use std::collections::BTreeMap;

use ferrolb_crds::{AddressSet, ServiceAllocation};

/// A pool as the allocator uses it: its effective addresses (overlaps with older pools removed).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub addresses: AddressSet,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub service_allocation: Option<ServiceAllocation>,
}

impl PoolConfig {
    /// An auto-assign pool for everyone.
    pub fn new(name: impl Into<String>, addresses: AddressSet) -> Self {
        Self {
            name: name.into(),
            addresses,
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        }
    }

    /// Whether a Service in `namespace` with these labels may hold addresses of this pool.
    pub fn allows(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        service_labels: &BTreeMap<String, String>,
    ) -> bool {
        self.service_allocation
            .as_ref()
            .is_none_or(|a| a.allows(namespace, namespace_labels, service_labels))
    }

    fn priority(&self) -> Option<i32> {
        self.service_allocation.as_ref().and_then(|a| a.priority)
    }
}

/// The pools to try for automatic allocation, best first.
pub fn automatic_candidates<'a>(
    pools: impl IntoIterator<Item = &'a PoolConfig>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    service_labels: &BTreeMap<String, String>,
) -> Vec<&'a PoolConfig> {
    let mut matching = Vec::new();
    let mut general = Vec::new();
    for pool in pools.into_iter().filter(|p| p.auto_assign) {
        match &pool.service_allocation {
            Some(allocation) => {
                if allocation.allows(namespace, namespace_labels, service_labels) {
                    matching.push(pool);
                }
            }
            None => general.push(pool),
        }
    }
    // Unset priority sorts after every number: (false, n) < (true, 0).
    matching.sort_by(|a, b| {
        let rank = |p: &PoolConfig| (p.priority().is_none(), p.priority().unwrap_or(0));
        rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name))
    });
    general.sort_by(|a, b| a.name.cmp(&b.name));
    matching.extend(general);
    matching
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::LabelSelector;

    fn pool(name: &str, allocation: Option<ServiceAllocation>, auto_assign: bool) -> PoolConfig {
        PoolConfig {
            auto_assign,
            service_allocation: allocation,
            ..PoolConfig::new(
                name,
                AddressSet::parse(["198.51.100.0/24"]).unwrap_or_default(),
            )
        }
    }

    fn priority(p: Option<i32>) -> Option<ServiceAllocation> {
        Some(ServiceAllocation {
            priority: p,
            ..Default::default()
        })
    }

    #[test]
    fn matching_pools_by_priority_then_name_then_general_pools_by_name() {
        let pools = [
            pool("zz-general", None, true),
            pool("aa-general", None, true),
            pool("unset", priority(None), true),
            pool("b-prio-1", priority(Some(1)), true),
            pool("a-prio-1", priority(Some(1)), true),
            pool("prio-0", priority(Some(0)), true),
            pool("manual", None, false),
            pool("manual-prio", priority(Some(0)), false),
        ];
        let none = BTreeMap::new();
        let names: Vec<&str> = automatic_candidates(&pools, "shop", &none, &none)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "prio-0",
                "a-prio-1",
                "b-prio-1",
                "unset",
                "aa-general",
                "zz-general"
            ]
        );
    }

    #[test]
    fn pools_that_do_not_match_are_left_out() {
        let restricted = ServiceAllocation {
            namespaces: vec!["shop".into()],
            service_selectors: vec![LabelSelector::from_labels([("expose", "lan")])],
            ..Default::default()
        };
        let pools = [pool("lan", Some(restricted), true)];
        let none = BTreeMap::new();
        let lan = BTreeMap::from([("expose".to_owned(), "lan".to_owned())]);
        assert_eq!(automatic_candidates(&pools, "shop", &none, &lan).len(), 1);
        assert!(automatic_candidates(&pools, "shop", &none, &none).is_empty());
        assert!(automatic_candidates(&pools, "web", &none, &lan).is_empty());
    }
}
