//! From IPAddressPool objects to the pools the allocator uses, with each pool's Ready condition.
//!
//! Pools are judged oldest first (ties by name): a pool whose addresses overlap an older pool's
//! keeps only the addresses no older pool claims and is reported Ready=False, reason Overlap.
//! Nothing in a pool can stop the controller: anything wrong ends up in the condition.

use ferrolb_crds::ip_address_pool::{FamilyCounts, condition};
use ferrolb_crds::{AddressSet, IPAddressPool, IPAddressPoolStatus, IpFamily, LabelSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::allocator::{Allocator, PoolConfig};

/// The Ready condition of a pool, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What the controller makes of one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolAssessment {
    pub name: String,
    pub generation: Option<i64>,
    /// The pool's addresses as written, when they parse.
    pub declared: Option<AddressSet>,
    /// What the allocator may use; `None` when the addresses do not parse.
    pub config: Option<PoolConfig>,
    pub readiness: Readiness,
}

fn creation_order(pool: &IPAddressPool) -> (Option<Timestamp>, String) {
    (
        pool.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pool.metadata.name.clone().unwrap_or_default(),
    )
}

fn selector_problem(pool: &IPAddressPool) -> Option<String> {
    let allocation = pool.spec.service_allocation.as_ref()?;
    let check = |kind: &str, selectors: &[LabelSelector]| {
        selectors.iter().find_map(|s| {
            s.check()
                .err()
                .map(|e| format!("serviceAllocation.{kind}: {e}"))
        })
    };
    check("namespaceSelectors", &allocation.namespace_selectors)
        .or_else(|| check("serviceSelectors", &allocation.service_selectors))
}

/// The entries of a pool that are in error, each named by its index with the fix; and the set
/// the other entries make up.
fn parse_addresses(pool: &IPAddressPool) -> (AddressSet, Vec<String>) {
    let mut problems = Vec::new();
    let mut valid = Vec::new();
    for (index, entry) in pool.spec.addresses.iter().enumerate() {
        match entry.parse() {
            Ok(_) => valid.push(entry.0.as_str()),
            Err(error) => problems.push(format!("spec.addresses[{index}]: {error}")),
        }
    }
    // Every entry left parses on its own, so the set does too.
    let set = AddressSet::parse(valid).unwrap_or_default();
    (set, problems)
}

/// Judges every pool. The result is in creation order.
///
/// An entry in error contributes no address, but it does not take the pool's other entries down
/// with it: the Services holding their addresses keep them while the user fixes the entry.
pub fn assess(pools: &[IPAddressPool]) -> Vec<PoolAssessment> {
    let mut ordered: Vec<&IPAddressPool> = pools.iter().collect();
    // `None` timestamps (objects not yet persisted) sort first; they never occur from a real list.
    ordered.sort_by_key(|p| creation_order(p));
    let mut claimed: Vec<(String, AddressSet)> = Vec::new();
    let mut out = Vec::with_capacity(ordered.len());
    for pool in ordered {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let generation = pool.metadata.generation;
        let (declared, problems) = parse_addresses(pool);
        let mut effective = declared.clone();
        let mut overlap: Option<String> = None;
        for (other_name, other_set) in &claimed {
            if let Some(common) = effective.first_common(other_set) {
                overlap.get_or_insert_with(|| {
                    format!(
                        "addresses overlap pool {other_name} (first common address {common}); the overlapping addresses are not used"
                    )
                });
                effective = effective.difference(other_set);
            }
        }
        claimed.push((name.clone(), declared.clone()));
        let readiness = if !problems.is_empty() {
            let consequence = if problems.len() == pool.spec.addresses.len() {
                "no address of this pool is assigned until they are fixed"
            } else {
                "the addresses of these entries are not assigned; the other entries are in use"
            };
            let mut message = format!("{}. {consequence}", problems.join(". "));
            if let Some(overlap) = &overlap {
                message.push_str(". Also: ");
                message.push_str(overlap);
            }
            Readiness {
                ready: false,
                reason: condition::REASON_INVALID_ADDRESSES,
                message,
            }
        } else if let Some(message) = overlap {
            Readiness {
                ready: false,
                reason: condition::REASON_OVERLAP,
                message,
            }
        } else if let Some(message) = selector_problem(pool) {
            Readiness {
                ready: false,
                reason: condition::REASON_INVALID_SELECTOR,
                message: format!("{message}; the selector matches nothing"),
            }
        } else {
            Readiness {
                ready: true,
                reason: condition::REASON_VALID,
                message: format!("addresses {declared}"),
            }
        };
        out.push(PoolAssessment {
            config: Some(PoolConfig {
                name: name.clone(),
                addresses: effective,
                auto_assign: pool.spec.auto_assign,
                avoid_buggy_ips: pool.spec.avoid_buggy_ips,
                service_allocation: pool.spec.service_allocation.clone(),
            }),
            name,
            generation,
            declared: Some(declared),
            readiness,
        });
    }
    out
}

/// The status the pool should have. `previous` keeps the condition's transition time when the
/// condition did not change, so rewriting an unchanged status is a no-op.
pub fn desired_status(
    assessment: &PoolAssessment,
    allocator: &Allocator,
    previous: Option<&IPAddressPoolStatus>,
    now: Timestamp,
) -> IPAddressPoolStatus {
    let mut status = IPAddressPoolStatus {
        observed_generation: assessment.generation,
        ..Default::default()
    };
    let mut assigned = FamilyCounts::default();
    let mut available = FamilyCounts::default();
    if let (Some(declared), Some(config)) = (&assessment.declared, &assessment.config) {
        for family in IpFamily::BOTH {
            if !declared.has_family(family) {
                continue;
            }
            let in_use = allocator.in_use(&assessment.name, family);
            let usable = config
                .addresses
                .usable_count(family, config.avoid_buggy_ips);
            let free = usable.saturating_sub(in_use);
            match family {
                IpFamily::IPv4 => {
                    assigned.ipv4 = Some(in_use);
                    available.ipv4 = Some(free);
                }
                IpFamily::IPv6 => {
                    assigned.ipv6 = Some(in_use);
                    available.ipv6 = Some(free);
                }
            }
        }
    }
    status.set_counts(assigned, available);
    let readiness = &assessment.readiness;
    let status_text = if readiness.ready { "True" } else { "False" };
    let previous_condition =
        previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == condition::READY));
    let last_transition_time = match previous_condition {
        Some(c) if c.status == status_text => c.last_transition_time.clone(),
        _ => Time(now),
    };
    status.conditions = vec![Condition {
        type_: condition::READY.to_owned(),
        status: status_text.to_owned(),
        reason: readiness.reason.to_owned(),
        message: readiness.message.clone(),
        observed_generation: assessment.generation,
        last_transition_time,
    }];
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::AddressCount;
    use ferrolb_crds::IPAddressPoolSpec;
    use ferrolb_crds::ip_address_pool::AddressEntry;
    use ferrolb_crds::selector::{LabelSelectorRequirement, SelectorOperator};

    fn pool(name: &str, created_second: i64, entries: &[&str]) -> IPAddressPool {
        let mut p = IPAddressPool::new(
            name,
            IPAddressPoolSpec {
                addresses: entries.iter().map(|e| AddressEntry::from(*e)).collect(),
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created_second).unwrap()));
        p.metadata.generation = Some(3);
        p
    }

    #[test]
    fn the_later_pool_of_an_overlapping_pair_is_not_ready_and_loses_the_overlap() {
        let pools = [
            pool("newer", 200, &["198.51.100.128/25", "203.0.113.0/24"]),
            pool("older", 100, &["198.51.100.0/24"]),
        ];
        let assessed = assess(&pools);
        assert_eq!(assessed[0].name, "older");
        assert!(assessed[0].readiness.ready);
        let newer = &assessed[1];
        assert_eq!(newer.readiness.reason, "Overlap");
        assert_eq!(
            newer.readiness.message,
            "addresses overlap pool older (first common address 198.51.100.128); the overlapping addresses are not used"
        );
        let usable = &newer.config.as_ref().unwrap().addresses;
        assert_eq!(usable.to_string(), "203.0.113.0-203.0.113.255");
    }

    #[test]
    fn equal_creation_times_are_ordered_by_name() {
        let pools = [
            pool("b", 100, &["198.51.100.0/24"]),
            pool("a", 100, &["198.51.100.0/25"]),
        ];
        let assessed = assess(&pools);
        assert_eq!(assessed[1].name, "b");
        assert!(assessed[1].readiness.message.contains("pool a"));
    }

    #[test]
    fn invalid_addresses_and_selectors_are_reported_not_fatal() {
        let mut bad_selector = pool("sel", 50, &["2001:db8::/64"]);
        bad_selector.spec.service_allocation = Some(ferrolb_crds::ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_expressions: vec![LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: SelectorOperator::In,
                    values: vec![],
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let pools = [pool("bad", 10, &["198.51.100.7/24", "lan"]), bad_selector];
        let assessed = assess(&pools);
        assert_eq!(assessed[0].readiness.reason, "InvalidAddresses");
        assert_eq!(
            assessed[0].readiness.message,
            "spec.addresses[0]: 198.51.100.7/24 has host bits set; write the network address of the prefix: 198.51.100.0/24. \
             spec.addresses[1]: lan is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20). \
             no address of this pool is assigned until they are fixed"
        );
        let config = assessed[0].config.as_ref().unwrap();
        assert!(config.addresses.is_empty());
        assert_eq!(assessed[1].readiness.reason, "InvalidSelector");
    }

    #[test]
    fn an_entry_in_error_takes_only_its_own_addresses_out() {
        let pools = [pool(
            "mixed",
            10,
            &[
                "198.51.100.0/28",
                "198.51.100.40-198.51.100.32",
                "2001:db8:1::/120",
            ],
        )];
        let assessed = assess(&pools);
        let readiness = &assessed[0].readiness;
        assert!(!readiness.ready);
        assert_eq!(readiness.reason, "InvalidAddresses");
        assert_eq!(
            readiness.message,
            "spec.addresses[1]: range start 198.51.100.40 is after its end 198.51.100.32; write 198.51.100.32-198.51.100.40. \
             the addresses of these entries are not assigned; the other entries are in use"
        );
        let usable = &assessed[0].config.as_ref().unwrap().addresses;
        assert_eq!(
            usable.to_string(),
            "198.51.100.0-198.51.100.15, 2001:db8:1::-2001:db8:1::ff"
        );
    }

    #[test]
    fn status_counts_are_exact_for_huge_ipv6_pools() {
        let pools = [pool("big", 1, &["198.51.100.0/24", "2001:db8::/48"])];
        let assessed = assess(&pools);
        let mut allocator = Allocator::new(assessed.iter().filter_map(|a| a.config.clone()));
        let request = crate::allocator::AllocationRequest::new(
            crate::allocator::ServiceKey::new("shop", "web"),
            crate::allocator::FamilyPolicy::RequireDualStack {
                primary: IpFamily::IPv6,
            },
        );
        allocator.allocate(&request).unwrap();
        let now = Timestamp::from_second(1000).unwrap();
        let status = desired_status(&assessed[0], &allocator, None, now);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            status.available_ipv6.unwrap().0,
            AddressCount::new((1u128 << 80) - 1)
        );
        assert_eq!(status.assigned.as_deref(), Some("IPv4 1, IPv6 1"));
        assert_eq!(status.conditions[0].status, "True");
        let later = desired_status(
            &assessed[0],
            &allocator,
            Some(&status),
            Timestamp::from_second(2000).unwrap(),
        );
        assert_eq!(later, status);
    }
}
