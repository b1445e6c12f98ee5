use std::collections::BTreeMap;

use ferrolb_crds::{AddressSet, LabelSelector, ServiceAllocation};
use proptest::prelude::*;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn pool(name: &str, entries: &[&str]) -> PoolConfig {
    PoolConfig::new(name, AddressSet::parse(entries.iter().copied()).unwrap())
}

fn v4(name: &str) -> AllocationRequest {
    AllocationRequest::new(
        ServiceKey::new("shop", name),
        FamilyPolicy::SingleStack(IpFamily::IPv4),
    )
}

fn shared(name: &str, key: &str, ports: &[i32]) -> AllocationRequest {
    let mut request = v4(name);
    request.sharing = SharingProfile {
        key: Some(key.to_owned()),
        backend: Backend::Cluster,
        ports: ports
            .iter()
            .map(|&port| PortKey {
                protocol: "TCP".into(),
                port,
            })
            .collect(),
    };
    request
}

fn addresses(result: &Result<Assignment, AllocationError>) -> Vec<IpAddr> {
    result
        .as_ref()
        .map(|a| a.addresses.clone())
        .unwrap_or_default()
}

#[test]
fn lowest_free_address_first_and_release_then_allocate_reuses() {
    let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/30"])]);
    for (name, expected) in [
        ("a", "198.51.100.0"),
        ("b", "198.51.100.1"),
        ("c", "198.51.100.2"),
    ] {
        assert_eq!(addresses(&allocator.allocate(&v4(name))), [ip(expected)]);
    }
    allocator.release(&ServiceKey::new("shop", "b"));
    assert_eq!(
        addresses(&allocator.allocate(&v4("d"))),
        [ip("198.51.100.1")]
    );
    allocator.allocate(&v4("e")).unwrap();
    assert_eq!(
        allocator.allocate(&v4("f")).unwrap_err().to_string(),
        "no pool that serves this Service has a free IPv4 address"
    );
    assert_eq!(
        allocator.in_use("lan", IpFamily::IPv4),
        AddressCount::new(4)
    );
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut lan = pool("lan", &["198.51.100.254-198.51.101.1"]);
    lan.avoid_buggy_ips = true;
    let mut allocator = Allocator::new([lan]);
    let got: Vec<IpAddr> = ["a", "b", "c"]
        .iter()
        .flat_map(|n| addresses(&allocator.allocate(&v4(n))))
        .collect();
    assert_eq!(got, [ip("198.51.100.254"), ip("198.51.101.1")]);
    let mut request = v4("d");
    request.addresses = vec![ip("198.51.100.255")];
    assert_eq!(
        allocator.allocate(&request).unwrap_err().to_string(),
        "198.51.100.255 ends in .0 or .255 and pool lan avoids such addresses"
    );
}

#[test]
fn pools_are_tried_in_a_deterministic_order_and_auto_assign_false_only_on_request() {
    let mut manual = pool("a-manual", &["198.51.100.0/32"]);
    manual.auto_assign = false;
    let mut prioritized = pool("z-prio", &["203.0.113.9/32"]);
    prioritized.service_allocation = Some(ServiceAllocation {
        priority: Some(5),
        ..Default::default()
    });
    let general = pool("b-general", &["203.0.113.1/32"]);
    let mut allocator = Allocator::new([manual, prioritized, general]);
    assert_eq!(
        addresses(&allocator.allocate(&v4("a"))),
        [ip("203.0.113.9")]
    );
    assert_eq!(
        addresses(&allocator.allocate(&v4("b"))),
        [ip("203.0.113.1")]
    );
    assert!(allocator.allocate(&v4("c")).is_err());
    let mut named = v4("d");
    named.pool = Some("a-manual".into());
    let assignment = allocator.allocate(&named).unwrap();
    assert_eq!(assignment.addresses, [ip("198.51.100.0")]);
    assert_eq!(&*assignment.pool, "a-manual");
}

#[test]
fn a_named_pool_gets_no_fallback_and_errors_name_it() {
    let mut allocator = Allocator::new([
        pool("lan", &["198.51.100.1/32"]),
        pool("wan", &["203.0.113.0/24"]),
        pool("v6", &["2001:db8::/120"]),
    ]);
    let mut first = v4("a");
    first.pool = Some("lan".into());
    allocator.allocate(&first).unwrap();
    let mut second = v4("b");
    second.pool = Some("lan".into());
    assert_eq!(
        allocator.allocate(&second).unwrap_err().to_string(),
        "pool lan has no free IPv4 address"
    );
    second.pool = Some("v6".into());
    assert_eq!(
        allocator.allocate(&second).unwrap_err().to_string(),
        "pool v6 has no IPv4 addresses"
    );
    second.pool = Some("nope".into());
    assert_eq!(
        allocator.allocate(&second).unwrap_err().to_string(),
        "pool nope does not exist"
    );
}

#[test]
fn requested_addresses_are_checked_precisely() {
    let mut restricted = pool("team", &["203.0.113.0/25"]);
    restricted.service_allocation = Some(ServiceAllocation {
        namespaces: vec!["team".into()],
        ..Default::default()
    });
    let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/24"]), restricted]);
    let with = |ips: &[&str], pool: Option<&str>| {
        let mut r = v4("x");
        r.addresses = ips.iter().map(|s| ip(s)).collect();
        r.pool = pool.map(str::to_owned);
        r
    };
    let cases = [
        (
            with(&["198.51.100.7"], Some("team")),
            "198.51.100.7 is not in pool team",
        ),
        (
            with(&["203.0.113.200"], None),
            "203.0.113.200 is in no pool",
        ),
        (
            with(&["203.0.113.7"], None),
            "pool team does not allow Services in namespace shop with these labels",
        ),
        (
            with(&["2001:db8::1"], None),
            "2001:db8::1 is IPv6, which this Service's ipFamilies do not allow",
        ),
    ];
    for (request, message) in cases {
        assert_eq!(
            allocator.allocate(&request).unwrap_err().to_string(),
            message
        );
    }
    let ok = allocator
        .allocate(&with(&["198.51.100.7"], Some("lan")))
        .unwrap();
    assert_eq!(ok.addresses, [ip("198.51.100.7")]);
    let mut other = with(&["198.51.100.7"], None);
    other.service.name = "y".into();
    assert_eq!(
        allocator.allocate(&other).unwrap_err().to_string(),
        "198.51.100.7 is used by shop/x, which does not allow sharing"
    );
}

#[test]
fn sharing_needs_equal_keys_and_distinct_ports() {
    let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/24"])]);
    let web = allocator.allocate(&shared("web", "k", &[80])).unwrap();
    let api = allocator.allocate(&shared("api", "k", &[443])).unwrap();
    assert_eq!(web.addresses, api.addresses);
    let clash = allocator.allocate(&shared("clash", "k", &[80])).unwrap();
    assert_ne!(clash.addresses, web.addresses);
    let other_key = allocator.allocate(&shared("other", "j", &[8080])).unwrap();
    assert_ne!(other_key.addresses, web.addresses);
    let mut explicit = shared("explicit", "j", &[9090]);
    explicit.addresses = web.addresses.clone();
    assert_eq!(
        allocator.allocate(&explicit).unwrap_err().to_string(),
        "198.51.100.0 is used by shop/web with a different sharing key"
    );
    // A shared address stays while one user remains.
    allocator.release(&ServiceKey::new("shop", "web"));
    assert_eq!(
        allocator.users_of(ip("198.51.100.0")).map(|(_, u)| u.len()),
        Some(1)
    );
    assert_eq!(
        allocator.in_use("lan", IpFamily::IPv4),
        AddressCount::new(3)
    );
}

#[test]
fn a_sole_user_changes_its_key_in_place_but_a_sharer_moves() {
    let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/24"])]);
    let solo = allocator.allocate(&shared("solo", "k", &[80])).unwrap();
    let outcome = allocator.reconcile(&shared("solo", "renamed", &[80]));
    assert_eq!(outcome.cleared, None);
    assert_eq!(addresses(&outcome.outcome), solo.addresses);
    let pair = allocator
        .allocate(&shared("pair", "renamed", &[81]))
        .unwrap();
    assert_eq!(pair.addresses, solo.addresses);
    let outcome = allocator.reconcile(&shared("pair", "other", &[81]));
    let (_, reason) = outcome.cleared.unwrap();
    assert_eq!(
        reason,
        "sharing no longer allowed: 198.51.100.0 is used by shop/solo with a different sharing key"
    );
    assert_eq!(addresses(&outcome.outcome), [ip("198.51.100.1")]);
}

fn dual(name: &str, policy: FamilyPolicy) -> AllocationRequest {
    AllocationRequest::new(ServiceKey::new("shop", name), policy)
}

#[test]
fn dual_stack_policies() {
    use IpFamily::*;
    let mut allocator = Allocator::new([
        pool("a-v4only", &["198.51.100.0/24"]),
        pool("b-dual", &["203.0.113.0/31", "2001:db8::/127"]),
        pool("c-v6only", &["2001:db8:1::/120"]),
    ]);
    let require = allocator
        .allocate(&dual("r", FamilyPolicy::RequireDualStack { primary: IPv6 }))
        .unwrap();
    assert_eq!(&*require.pool, "b-dual");
    assert_eq!(require.addresses, [ip("2001:db8::"), ip("203.0.113.0")]);
    let prefer = allocator
        .allocate(&dual("p", FamilyPolicy::PreferDualStack { primary: IPv4 }))
        .unwrap();
    assert_eq!(prefer.addresses, [ip("203.0.113.1"), ip("2001:db8::1")]);
    // The dual pool is full: PreferDualStack falls back to the primary family, then the other.
    let fallback = allocator
        .allocate(&dual("q", FamilyPolicy::PreferDualStack { primary: IPv4 }))
        .unwrap();
    assert_eq!(fallback.addresses, [ip("198.51.100.0")]);
    assert_eq!(
        allocator
            .allocate(&dual("s", FamilyPolicy::RequireDualStack { primary: IPv4 }))
            .unwrap_err()
            .to_string(),
        "no pool that serves this Service has free IPv4 and IPv6 addresses"
    );
    let single6 = allocator
        .allocate(&dual("t", FamilyPolicy::SingleStack(IPv6)))
        .unwrap();
    assert_eq!(single6.addresses, [ip("2001:db8:1::")]);
}

#[test]
fn prefer_dual_stack_takes_the_other_family_when_the_primary_has_none() {
    let mut allocator = Allocator::new([pool("v6", &["2001:db8::/120"])]);
    let got = allocator
        .allocate(&dual(
            "p",
            FamilyPolicy::PreferDualStack {
                primary: IpFamily::IPv4,
            },
        ))
        .unwrap();
    assert_eq!(got.addresses, [ip("2001:db8::")]);
}

#[test]
fn assignments_survive_unrelated_pool_changes_and_fall_when_their_pool_shrinks() {
    let mut allocator = Allocator::new([
        pool("lan", &["198.51.100.0/24"]),
        pool("wan", &["203.0.113.0/24"]),
    ]);
    let a = allocator.allocate(&v4("a")).unwrap();
    let mut b_request = v4("b");
    b_request.addresses = vec![ip("198.51.100.200")];
    allocator.allocate(&b_request).unwrap();
    let dropped = allocator
        .set_pools([
            pool("lan", &["198.51.100.0/25"]),
            pool("extra", &["203.0.113.0/24"]),
        ])
        .dropped;
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].1, "pool lan no longer contains 198.51.100.200");
    assert_eq!(allocator.assignment(&a.request.service), Some(&a));
    let dropped = allocator
        .set_pools([pool("extra", &["203.0.113.0/24"])])
        .dropped;
    assert_eq!(dropped[0].1, "pool lan was deleted");
    assert_eq!(
        allocator.in_use("extra", IpFamily::IPv4),
        AddressCount::ZERO
    );
}

#[test]
fn a_renamed_pool_takes_over_the_addresses_of_the_deleted_one() {
    let mut allocator = Allocator::new([pool("old", &["198.51.100.0/29"])]);
    let a = allocator.allocate(&v4("a")).unwrap();
    let b = allocator.allocate(&v4("b")).unwrap();
    let changes = allocator.set_pools([pool("new", &["198.51.100.0/29"])]);
    assert!(changes.dropped.is_empty());
    assert_eq!(changes.rehomed.len(), 2);
    assert_eq!(&*changes.rehomed[0].from, "old");
    assert_eq!(changes.rehomed[0].reason, "pool old was deleted");
    for held in [&a, &b] {
        let now = allocator.assignment(&held.request.service).unwrap();
        assert_eq!(now.addresses, held.addresses);
        assert_eq!(&*now.pool, "new");
    }
    assert_eq!(
        allocator.in_use("new", IpFamily::IPv4),
        AddressCount::new(2)
    );
    // The next allocation does not hand out a re-homed address.
    assert_eq!(
        addresses(&allocator.allocate(&v4("c"))),
        [ip("198.51.100.2")]
    );
}

#[test]
fn a_split_keeps_addresses_in_the_pool_that_now_covers_them() {
    let mut allocator = Allocator::new([pool("whole", &["198.51.100.0/30"])]);
    for name in ["a", "b", "c"] {
        allocator.allocate(&v4(name)).unwrap();
    }
    let changes = allocator.set_pools([
        pool("whole", &["198.51.100.0/32"]),
        pool("rest", &["198.51.100.1-198.51.100.3"]),
    ]);
    assert!(changes.dropped.is_empty());
    let moved: Vec<&str> = changes
        .rehomed
        .iter()
        .map(|r| r.assignment.request.service.name.as_str())
        .collect();
    assert_eq!(moved, ["b", "c"]);
    assert_eq!(
        changes.rehomed[0].reason,
        "pool whole no longer contains 198.51.100.1"
    );
    let a = allocator.assignment(&ServiceKey::new("shop", "a")).unwrap();
    assert_eq!(
        (&*a.pool, a.addresses.clone()),
        ("whole", vec![ip("198.51.100.0")])
    );
    let c = allocator.assignment(&ServiceKey::new("shop", "c")).unwrap();
    assert_eq!(
        (&*c.pool, c.addresses.clone()),
        ("rest", vec![ip("198.51.100.2")])
    );
}

#[test]
fn re_homing_follows_the_rules_of_a_fresh_allocation() {
    let mut allocator = Allocator::new([pool("old", &["198.51.100.0/29"])]);
    let pinned = {
        let mut request = v4("pinned");
        request.pool = Some("old".into());
        request
    };
    let explicit = {
        let mut request = v4("explicit");
        request.addresses = vec![ip("198.51.100.5")];
        request
    };
    allocator.allocate(&v4("auto")).unwrap();
    allocator.allocate(&pinned).unwrap();
    allocator.allocate(&explicit).unwrap();
    allocator.allocate(&v4("other-namespace")).unwrap();
    let mut manual = pool("manual", &["198.51.100.0/29"]);
    manual.auto_assign = false;
    manual.service_allocation = Some(ServiceAllocation {
        namespaces: vec!["shop".into()],
        ..Default::default()
    });
    let changes = allocator.set_pools([manual]);
    let rehomed: Vec<&str> = changes
        .rehomed
        .iter()
        .map(|r| r.assignment.request.service.name.as_str())
        .collect();
    // Only the explicit request may use a pool that does not auto-assign; the pinned one asked
    // for the old pool by name.
    assert_eq!(rehomed, ["explicit"]);
    let mut dropped: Vec<&str> = changes
        .dropped
        .iter()
        .map(|(a, _)| a.request.service.name.as_str())
        .collect();
    dropped.sort();
    assert_eq!(dropped, ["auto", "other-namespace", "pinned"]);
}

#[test]
fn a_pool_that_stops_allowing_the_service_takes_its_address_back() {
    let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/24"])]);
    allocator.allocate(&v4("a")).unwrap();
    let mut lan = pool("lan", &["198.51.100.0/24"]);
    lan.service_allocation = Some(ServiceAllocation {
        service_selectors: vec![LabelSelector::from_labels([("expose", "lan")])],
        ..Default::default()
    });
    let dropped = allocator.set_pools([lan]).dropped;
    assert_eq!(dropped[0].1, "pool lan no longer allows this Service");
}

#[test]
fn restore_keeps_valid_status_and_rejects_conflicts_deterministically() {
    let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/24"])]);
    let older = ExistingAssignment {
        request: v4("older"),
        addresses: vec![ip("198.51.100.9")],
        created: Some(100),
    };
    let newer = ExistingAssignment {
        request: v4("newer"),
        addresses: vec![ip("198.51.100.9")],
        created: Some(200),
    };
    let results = allocator.restore_all(vec![newer, older]);
    assert_eq!(results[0].0.name, "older");
    assert!(results[0].1.is_ok());
    assert_eq!(
        results[1].1.as_ref().unwrap_err().to_string(),
        "198.51.100.9 is used by shop/older, which does not allow sharing"
    );
    // Replayed before anything new: a new Service cannot take a restored address.
    assert_eq!(
        addresses(&allocator.allocate(&v4("fresh"))),
        [ip("198.51.100.0")]
    );
}

// ---- property tests ----

#[derive(Debug, Clone)]
struct SvcSpec {
    name: u8,
    key: Option<u8>,
    port: u8,
    local: bool,
    explicit: Option<u8>,
    pool: Option<u8>,
    policy: u8,
}

fn svc_strategy() -> impl Strategy<Value = SvcSpec> {
    (
        0u8..24,
        prop::option::of(0u8..3),
        0u8..4,
        any::<bool>(),
        prop::option::weighted(0.2, 0u8..12),
        prop::option::weighted(0.2, 0u8..4),
        prop::sample::select(vec![0u8, 0, 0, 1, 2, 3]),
    )
        .prop_map(|(name, key, port, local, explicit, pool, policy)| SvcSpec {
            name,
            key,
            port,
            local,
            explicit,
            pool,
            policy,
        })
}

const POOL_NAMES: [&str; 4] = ["p0", "p1", "p2", "p3-dual"];

fn prop_pools() -> Vec<PoolConfig> {
    let mut p1 = pool("p1", &["198.51.100.8/30"]);
    p1.service_allocation = Some(ServiceAllocation {
        namespaces: vec!["ns1".into()],
        priority: Some(1),
        ..Default::default()
    });
    let mut p2 = pool("p2", &["198.51.100.255-198.51.101.1"]);
    p2.avoid_buggy_ips = true;
    let dual = pool("p3-dual", &["203.0.113.0/31", "2001:db8::/127"]);
    vec![pool("p0", &["198.51.100.0/30"]), p1, p2, dual]
}

fn prop_request(spec: &SvcSpec) -> AllocationRequest {
    let namespace = if spec.name.is_multiple_of(2) {
        "ns0"
    } else {
        "ns1"
    };
    let mut request = AllocationRequest::new(
        ServiceKey::new(namespace, format!("s{}", spec.name)),
        match spec.policy {
            0 => FamilyPolicy::SingleStack(IpFamily::IPv4),
            1 => FamilyPolicy::SingleStack(IpFamily::IPv6),
            2 => FamilyPolicy::PreferDualStack {
                primary: IpFamily::IPv6,
            },
            _ => FamilyPolicy::RequireDualStack {
                primary: IpFamily::IPv4,
            },
        },
    );
    request.sharing = SharingProfile {
        key: spec.key.map(|k| format!("k{k}")),
        backend: if spec.local {
            Backend::Local {
                selector: BTreeMap::from([("app".to_owned(), "x".to_owned())]),
            }
        } else {
            Backend::Cluster
        },
        ports: [PortKey {
            protocol: "TCP".into(),
            port: i32::from(spec.port),
        }]
        .into(),
    };
    if let Some(n) = spec.explicit {
        let base = [
            "198.51.100.0",
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.8",
            "198.51.100.9",
            "198.51.100.10",
            "198.51.100.11",
            "198.51.100.255",
            "198.51.101.0",
            "198.51.101.1",
            "2001:db8::1",
        ];
        request.addresses = vec![ip(base[usize::from(n)])];
    }
    request.pool = spec.pool.map(|p| POOL_NAMES[usize::from(p)].to_owned());
    request
}

/// Every invariant the allocator promises, checked from the assignments alone.
fn check_invariants(allocator: &Allocator) -> Result<(), TestCaseError> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&Assignment>> = BTreeMap::new();
    for (key, assignment) in allocator.assignments() {
        prop_assert_eq!(key, &assignment.request.service);
        let pool = allocator.pool(&assignment.pool);
        prop_assert!(pool.is_some());
        let pool = pool.unwrap();
        for &ip in &assignment.addresses {
            prop_assert!(pool.addresses.contains(ip), "{ip} outside {}", pool.name);
            prop_assert!(
                !(pool.avoid_buggy_ips && ferrolb_crds::addresses::is_buggy(ip)),
                "buggy {ip}"
            );
            by_ip.entry(ip).or_default().push(assignment);
        }
        let r = &assignment.request;
        prop_assert!(pool.allows(&r.service.namespace, &r.namespace_labels, &r.service_labels));
        let families: Vec<IpFamily> = assignment
            .addresses
            .iter()
            .map(|&ip| IpFamily::of(ip))
            .collect();
        prop_assert!(
            r.families.accepts(&families),
            "{:?} for {:?}",
            families,
            r.families
        );
        if families.contains(&r.families.primary()) {
            prop_assert_eq!(families[0], r.families.primary(), "primary family first");
        }
    }
    for (ip, users) in &by_ip {
        for (i, a) in users.iter().enumerate() {
            for b in &users[i + 1..] {
                let (pa, pb) = (&a.request.sharing, &b.request.sharing);
                prop_assert!(pa.key.is_some() && pa.key == pb.key, "{ip}: keys differ");
                prop_assert_eq!(&pa.backend, &pb.backend);
                prop_assert!(pa.common_port(pb).is_none(), "{ip}: ports overlap");
            }
        }
        let (_, users_index) = allocator.users_of(*ip).unwrap();
        prop_assert_eq!(users_index.len(), users.len());
    }
    for pool in allocator.pools() {
        for family in IpFamily::BOTH {
            let distinct = by_ip
                .keys()
                .filter(|ip| IpFamily::of(**ip) == family && pool.addresses.contains(**ip))
                .count();
            prop_assert_eq!(
                allocator.in_use(&pool.name, family),
                AddressCount::from(distinct)
            );
        }
    }
    Ok(())
}

fn snapshot(allocator: &Allocator) -> BTreeMap<ServiceKey, (String, Vec<IpAddr>)> {
    allocator
        .assignments()
        .map(|(k, a)| (k.clone(), (a.pool.to_string(), a.addresses.clone())))
        .collect()
}

proptest! {
    #[test]
    fn random_operations_keep_every_invariant(
        ops in prop::collection::vec((any::<bool>(), svc_strategy()), 1..80),
        shrink in any::<bool>(),
    ) {
        let mut allocator = Allocator::new(prop_pools());
        for (release, spec) in &ops {
            let request = prop_request(spec);
            if *release {
                allocator.release(&request.service);
            } else {
                let _ = allocator.reconcile(&request);
            }
            check_invariants(&allocator)?;
        }
        if shrink {
            let mut pools = prop_pools();
            pools[0].addresses = AddressSet::parse(["198.51.100.1/32"]).unwrap();
            pools[2].service_allocation = Some(ServiceAllocation {
                namespaces: vec!["ns0".into()],
                ..Default::default()
            });
            let before: Vec<(ServiceKey, Vec<IpAddr>)> = allocator
                .assignments()
                .map(|(k, a)| (k.clone(), a.addresses.clone()))
                .collect();
            let changes = allocator.set_pools(pools);
            check_invariants(&allocator)?;
            // Every assignment either kept its exact addresses (in place or re-homed) or was
            // dropped with a reason; none changed its addresses.
            for (key, addresses) in before {
                match allocator.assignment(&key) {
                    Some(now) => prop_assert_eq!(&now.addresses, &addresses),
                    None => prop_assert!(
                        changes.dropped.iter().any(|(a, _)| a.request.service == key)
                    ),
                }
            }
            for moved in &changes.rehomed {
                prop_assert_ne!(&*moved.from, &*moved.assignment.pool);
                prop_assert!(moved.assignment.request.pool.is_none());
            }
        }
    }

    #[test]
    fn re_homing_into_a_pool_covering_the_old_range_keeps_every_address(
        specs in prop::collection::vec(svc_strategy(), 1..40),
    ) {
        let mut allocator = Allocator::new(prop_pools());
        for spec in &specs {
            let mut request = prop_request(spec);
            // A Service that names its pool is pinned; this property is about those that do not.
            request.pool = None;
            let _ = allocator.reconcile(&request);
        }
        let before: Vec<(ServiceKey, Vec<IpAddr>)> = allocator
            .assignments()
            .map(|(k, a)| (k.clone(), a.addresses.clone()))
            .collect();
        // Every pool renamed, with the same addresses and rules.
        let renamed: Vec<PoolConfig> = prop_pools()
            .into_iter()
            .map(|mut p| {
                p.name = format!("{}-renamed", p.name);
                p
            })
            .collect();
        let changes = allocator.set_pools(renamed);
        check_invariants(&allocator)?;
        prop_assert!(changes.dropped.is_empty(), "{:?}", changes.dropped);
        for (key, addresses) in before {
            let now = allocator.assignment(&key);
            prop_assert_eq!(now.map(|a| &a.addresses), Some(&addresses));
        }
    }

    #[test]
    fn release_then_allocate_reuses_the_address(
        specs in prop::collection::vec(svc_strategy(), 1..30),
        victim in any::<prop::sample::Index>(),
    ) {
        let mut allocator = Allocator::new([pool("lan", &["198.51.100.0/28"])]);
        let mut held = Vec::new();
        for (i, _) in specs.iter().enumerate() {
            if let Ok(a) = allocator.allocate(&v4(&format!("s{i}"))) {
                held.push(a);
            }
        }
        prop_assume!(!held.is_empty());
        let victim = victim.get(&held).clone();
        allocator.release(&victim.request.service);
        let again = allocator.allocate(&v4("newcomer")).unwrap();
        prop_assert_eq!(again.addresses, victim.addresses);
    }

    #[test]
    fn restore_does_not_depend_on_replay_order(
        specs in prop::collection::vec(svc_strategy(), 1..40),
        seed in any::<u64>(),
    ) {
        // Build a legitimate state, then also claims that conflict with it.
        let mut original = Allocator::new(prop_pools());
        for spec in &specs {
            let _ = original.reconcile(&prop_request(spec));
        }
        let existing: Vec<ExistingAssignment> = original
            .assignments()
            .map(|(_, a)| ExistingAssignment {
                request: (*a.request).clone(),
                addresses: a.addresses.clone(),
                created: Some(i64::from(a.request.service.name.len() as u8 % 3)),
            })
            .collect();
        let mut conflicting = existing.clone();
        for (i, e) in conflicting.iter_mut().enumerate() {
            e.request.service.name = format!("impostor{i}");
            e.request.sharing.key = None;
            e.created = None;
        }
        let mut replay: Vec<ExistingAssignment> = existing.iter().cloned().chain(conflicting).collect();
        let mut forward = Allocator::new(prop_pools());
        forward.restore_all(replay.clone());
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..replay.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            replay.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut shuffled = Allocator::new(prop_pools());
        shuffled.restore_all(replay);
        prop_assert_eq!(snapshot(&forward), snapshot(&shuffled));
        check_invariants(&shuffled)?;
        // The legitimate holders keep exactly what they had.
        let restored = snapshot(&shuffled);
        for (key, held) in snapshot(&original) {
            prop_assert_eq!(restored.get(&key), Some(&held));
        }
    }
}
