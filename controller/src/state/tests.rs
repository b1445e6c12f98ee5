use std::collections::BTreeMap;

use ferrolb_crds::IPAddressPoolSpec;
use ferrolb_crds::ip_address_pool::AddressEntry;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;

fn now() -> Timestamp {
    Timestamp::from_second(1_000_000).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn pool(name: &str, created: i64, entries: &[&str]) -> IPAddressPool {
    let mut p = IPAddressPool::new(
        name,
        IPAddressPoolSpec {
            addresses: entries.iter().map(|e| AddressEntry::from(*e)).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    p.metadata.generation = Some(1);
    p
}

fn service(name: &str, created: i64, status: &[&str]) -> Service {
    let mut s = Service::default();
    s.metadata.namespace = Some("shop".into());
    s.metadata.name = Some(name.into());
    s.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    s.spec = Some(ServiceSpec {
        type_: Some("LoadBalancer".into()),
        ip_families: Some(vec!["IPv4".into()]),
        ip_family_policy: Some("SingleStack".into()),
        ports: Some(vec![ServicePort {
            port: 80,
            ..Default::default()
        }]),
        ..Default::default()
    });
    if !status.is_empty() {
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    status
                        .iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ip_mode: Some("VIP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
        s.metadata.annotations = Some(BTreeMap::from([(
            "ferrolb.io/ip-allocated-from-pool".to_owned(),
            "lan".to_owned(),
        )]));
    }
    s
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("shop", name)
}

/// Plays the API server: applies the writes to the cached objects.
fn write_back(state: &mut State, actions: &[Action]) {
    for action in actions {
        match action {
            Action::ServiceStatus { service, addresses } => {
                let mut s = state.service(service).unwrap().clone();
                let ingress = addresses
                    .iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>();
                s.status = Some(ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: (!ingress.is_empty()).then_some(ingress),
                    }),
                    ..Default::default()
                });
                state.apply_service(s);
            }
            Action::ServicePoolAnnotation { service, pool } => {
                let mut s = state.service(service).unwrap().clone();
                let annotations = s.metadata.annotations.get_or_insert_default();
                match pool {
                    Some(p) => {
                        annotations.insert("ferrolb.io/ip-allocated-from-pool".into(), p.clone())
                    }
                    None => annotations.remove("ferrolb.io/ip-allocated-from-pool"),
                };
                state.apply_service(s);
            }
            Action::PoolStatus { pool, status } => state.written_pool_status(pool, status.clone()),
            _ => {}
        }
    }
}

fn settle(state: &mut State) -> Vec<Action> {
    let mut all = Vec::new();
    for _ in 0..5 {
        let actions = state.step(now());
        write_back(state, &actions);
        all.extend(actions);
        if !state.has_work() {
            break;
        }
    }
    all
}

fn events(actions: &[Action]) -> Vec<(String, &'static str, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ServiceEvent {
                service,
                reason,
                message,
                ..
            } => Some((service.name.clone(), *reason, message.clone())),
            _ => None,
        })
        .collect()
}

fn ips_of(state: &State, name: &str) -> Vec<IpAddr> {
    status_addresses(state.service(&key(name)).unwrap())
}

#[test]
fn restart_keeps_every_ip_and_new_services_fill_gaps() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/29"])]);
    state.replace_namespaces(Vec::new());
    state.replace_services(vec![
        service("held-high", 10, &["198.51.100.5"]),
        service("fresh", 5, &[]),
        service("held-low", 20, &["198.51.100.1"]),
    ]);
    let actions = settle(&mut state);
    assert_eq!(ips_of(&state, "held-high"), [ip("198.51.100.5")]);
    assert_eq!(ips_of(&state, "held-low"), [ip("198.51.100.1")]);
    assert_eq!(ips_of(&state, "fresh"), [ip("198.51.100.0")]);
    assert_eq!(
        events(&actions),
        [(
            "fresh".to_owned(),
            reason::IP_ALLOCATED,
            "assigned 198.51.100.0 from pool lan".to_owned()
        )]
    );
    // A re-list (watch reset, 410) changes nothing.
    let services: Vec<Service> = ["held-high", "fresh", "held-low"]
        .iter()
        .map(|n| state.service(&key(n)).unwrap().clone())
        .collect();
    state.replace_services(services);
    let again = settle(&mut state);
    assert!(
        again.iter().all(|a| matches!(a, Action::PoolStatus { .. })),
        "{again:?}"
    );
}

#[test]
fn conflicting_status_claims_go_to_the_older_service() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/29"])]);
    state.replace_services(vec![
        service("newer", 20, &["198.51.100.3"]),
        service("older", 10, &["198.51.100.3"]),
    ]);
    let actions = settle(&mut state);
    assert_eq!(ips_of(&state, "older"), [ip("198.51.100.3")]);
    assert_eq!(ips_of(&state, "newer"), [ip("198.51.100.0")]);
    let newer_events = events(&actions);
    assert!(newer_events.contains(&(
        "newer".to_owned(),
        reason::CLEAR_ASSIGNMENT,
        "cleared 198.51.100.3: 198.51.100.3 is used by shop/older, which does not allow sharing"
            .to_owned()
    )));
}

#[test]
fn a_freed_ip_goes_to_a_waiting_service_promptly() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.7/32"])]);
    state.replace_services(vec![service("first", 1, &[]), service("second", 2, &[])]);
    let actions = settle(&mut state);
    assert!(events(&actions).contains(&(
        "second".to_owned(),
        reason::ALLOCATION_FAILED,
        "no pool that serves this Service has a free IPv4 address".to_owned()
    )));
    let first = state.service(&key("first")).unwrap().clone();
    state.delete_service(&first);
    let actions = settle(&mut state);
    assert_eq!(ips_of(&state, "second"), [ip("198.51.100.7")]);
    assert!(events(&actions).contains(&(
        "second".to_owned(),
        reason::IP_ALLOCATED,
        "assigned 198.51.100.7 from pool lan".to_owned()
    )));
}

#[test]
fn a_service_that_stops_qualifying_loses_ip_and_status() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/30"])]);
    state.replace_services(vec![service("web", 1, &[])]);
    settle(&mut state);
    assert_eq!(ips_of(&state, "web"), [ip("198.51.100.0")]);
    let mut changed = state.service(&key("web")).unwrap().clone();
    changed.spec.as_mut().unwrap().load_balancer_class = Some("other.example/lb".into());
    state.apply_service(changed);
    let actions = settle(&mut state);
    assert!(ips_of(&state, "web").is_empty());
    assert_eq!(
        allocated_from_pool(state.service(&key("web")).unwrap()),
        None
    );
    assert_eq!(events(&actions)[0].1, reason::CLEAR_ASSIGNMENT);
    assert_eq!(
        state.allocator().in_use("lan", IpFamily::IPv4),
        ferrolb_crds::AddressCount::ZERO
    );
}

#[test]
fn other_classes_are_left_alone() {
    let mut state = State::new(Some("ferrolb.io/lb".into()));
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/30"])]);
    let mut foreign = service("foreign", 1, &[]);
    foreign.status = service("x", 1, &["203.0.113.1"]).status;
    state.replace_services(vec![foreign]);
    let actions = settle(&mut state);
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::PoolStatus { .. })),
        "{actions:?}"
    );
}

#[test]
fn impossible_requests_get_a_warning_and_no_ip() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/30"])]);
    let mut s = service("web", 1, &[]);
    s.metadata.annotations = Some(BTreeMap::from([(
        "ferrolb.io/loadBalancerIPs".to_owned(),
        "203.0.113.9".to_owned(),
    )]));
    state.replace_services(vec![s]);
    let actions = settle(&mut state);
    assert_eq!(
        events(&actions),
        [(
            "web".to_owned(),
            reason::ALLOCATION_FAILED,
            "203.0.113.9 is in no pool".to_owned()
        )]
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ServiceEvent { warning: true, .. }))
    );
    assert!(ips_of(&state, "web").is_empty());
}

#[test]
fn shrinking_a_pool_moves_only_the_services_outside_it() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/29"])]);
    state.replace_services(vec![
        service("inside", 1, &["198.51.100.1"]),
        service("outside", 2, &["198.51.100.6"]),
    ]);
    settle(&mut state);
    state.apply_pool(pool("lan", 1, &["198.51.100.0/30"]));
    let actions = settle(&mut state);
    assert_eq!(ips_of(&state, "inside"), [ip("198.51.100.1")]);
    assert_eq!(ips_of(&state, "outside"), [ip("198.51.100.0")]);
    assert!(events(&actions).contains(&(
        "outside".to_owned(),
        reason::CLEAR_ASSIGNMENT,
        "released 198.51.100.6 from pool lan: pool lan no longer contains 198.51.100.6".to_owned()
    )));
}

#[test]
fn a_rename_keeps_the_ip_and_changes_only_the_pool_annotation() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("old", 1, &["198.51.100.0/29"])]);
    state.replace_services(vec![service("web", 1, &[])]);
    settle(&mut state);
    let held = ips_of(&state, "web");
    // The new pool loses the overlap to the old one until the old one goes.
    state.apply_pool(pool("new", 2, &["198.51.100.0/29"]));
    settle(&mut state);
    state.delete_pool(&pool("old", 1, &["198.51.100.0/29"]));
    let actions = settle(&mut state);
    assert_eq!(ips_of(&state, "web"), held);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ServiceStatus { .. }))
    );
    assert!(actions.contains(&Action::ServicePoolAnnotation {
        service: key("web"),
        pool: Some("new".into()),
    }));
    assert_eq!(
        events(&actions),
        [(
            "web".to_owned(),
            reason::POOL_CHANGED,
            "kept 198.51.100.0, now from pool new instead of pool old: pool old was deleted"
                .to_owned()
        )]
    );
}

#[test]
fn pool_status_reports_overlap_and_counts() {
    let mut state = State::new(None);
    state.replace_pools(vec![
        pool("lan", 1, &["198.51.100.0/30"]),
        pool("late", 2, &["198.51.100.2/31", "2001:db8::/64"]),
    ]);
    state.replace_services(vec![service("web", 1, &[])]);
    let actions = settle(&mut state);
    let statuses: BTreeMap<&str, &IPAddressPoolStatus> = actions
        .iter()
        .filter_map(|a| match a {
            Action::PoolStatus { pool, status } => Some((pool.as_str(), status)),
            _ => None,
        })
        .collect();
    let late = statuses["late"];
    assert_eq!(late.conditions[0].reason, "Overlap");
    assert!(late.conditions[0].message.contains("pool lan"));
    assert_eq!(
        late.available.as_deref(),
        Some("IPv4 0, IPv6 18446744073709551616")
    );
    assert_eq!(statuses["lan"].assigned.as_deref(), Some("IPv4 1"));
    // Written once; an unchanged status is not written again.
    assert!(state.step(now()).is_empty(), "no further writes expected");
}

fn pool_events(actions: &[Action]) -> Vec<(String, bool, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PoolEvent {
                pool,
                warning,
                reason,
                ..
            } => Some((pool.clone(), *warning, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pool_in_error_gets_one_warning_and_a_normal_event_once_fixed() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool(
        "lan",
        1,
        &["198.51.100.0/30", "198.51.100.9-198.51.100.1"],
    )]);
    state.replace_services(vec![service("web", 1, &[])]);
    let actions = settle(&mut state);
    assert_eq!(
        pool_events(&actions),
        vec![("lan".to_owned(), true, "InvalidAddresses".to_owned())]
    );
    // The valid entry still serves; nothing of the reversed range is handed out.
    assert_eq!(ips_of(&state, "web"), vec![ip("198.51.100.0")]);

    // A status write that failed is retried without a second event.
    let mut unwritten = state.pool("lan").unwrap().clone();
    unwritten.status = None;
    state.apply_pool(unwritten);
    let retried = settle(&mut state);
    assert!(
        retried
            .iter()
            .any(|a| matches!(a, Action::PoolStatus { .. }))
    );
    assert!(pool_events(&retried).is_empty());

    // A restarted controller reads the condition back and says nothing new.
    let mut restarted = State::new(None);
    restarted.replace_pools(vec![state.pool("lan").unwrap().clone()]);
    restarted.replace_services(vec![state.service(&key("web")).unwrap().clone()]);
    assert!(pool_events(&settle(&mut restarted)).is_empty());

    let mut fixed = state.pool("lan").unwrap().clone();
    fixed.spec.addresses = vec![AddressEntry::from("198.51.100.0/30")];
    fixed.metadata.generation = Some(2);
    state.apply_pool(fixed);
    assert_eq!(
        pool_events(&settle(&mut state)),
        vec![("lan".to_owned(), false, "PoolReady".to_owned())]
    );
    assert!(pool_events(&settle(&mut state)).is_empty());
}

#[test]
fn namespace_labels_decide_restricted_pools() {
    use ferrolb_crds::{LabelSelector, ServiceAllocation};
    let mut team = pool("team", 1, &["203.0.113.0/30"]);
    team.spec.service_allocation = Some(ServiceAllocation {
        namespace_selectors: vec![LabelSelector::from_labels([("team", "edge")])],
        priority: Some(0),
        ..Default::default()
    });
    let mut state = State::new(None);
    state.replace_pools(vec![team, pool("lan", 2, &["198.51.100.0/30"])]);
    let mut shop = Namespace::default();
    shop.metadata.name = Some("shop".into());
    shop.metadata.labels = Some(BTreeMap::from([("team".into(), "edge".into())]));
    state.replace_namespaces(vec![shop.clone()]);
    state.replace_services(vec![service("web", 1, &[])]);
    settle(&mut state);
    assert_eq!(ips_of(&state, "web"), [ip("203.0.113.0")]);
    shop.metadata.labels = Some(BTreeMap::new());
    state.apply_namespace(&shop);
    let actions = settle(&mut state);
    assert_eq!(ips_of(&state, "web"), [ip("198.51.100.0")]);
    assert!(events(&actions).contains(&(
        "web".to_owned(),
        reason::CLEAR_ASSIGNMENT,
        "released 203.0.113.0 from pool team: pool team no longer allows this Service".to_owned()
    )));
}

#[test]
fn our_own_pool_status_writes_do_not_reshuffle_pools() {
    let mut state = State::new(None);
    state.replace_pools(vec![pool("lan", 1, &["198.51.100.0/30"])]);
    state.replace_services(vec![service("web", 1, &[])]);
    settle(&mut state);
    let mut written = state.pool("lan").unwrap().clone();
    written.status = Some(IPAddressPoolStatus::default());
    state.apply_pool(written);
    assert!(!state.pools_changed);
    let mut edited = state.pool("lan").unwrap().clone();
    edited.spec.avoid_buggy_ips = true;
    state.apply_pool(edited);
    assert!(state.pools_changed);
    settle(&mut state);
    // .0 became buggy: the Service moves to the next usable address.
    assert_eq!(ips_of(&state, "web"), [ip("198.51.100.1")]);
}

mod restart {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Create {
            name: u8,
            key: Option<u8>,
            port: u8,
            explicit: Option<u8>,
        },
        Delete(u8),
        /// Type ClusterIP: no longer ours.
        Retype(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..16, prop::option::of(0u8..2), 0u8..3, prop::option::weighted(0.2, 0u8..8))
                .prop_map(|(name, key, port, explicit)| Op::Create { name, key, port, explicit }),
            1 => (0u8..16).prop_map(Op::Delete),
            1 => (0u8..16).prop_map(Op::Retype),
        ]
    }

    fn build(name: u8, key: Option<u8>, port: u8, explicit: Option<u8>) -> Service {
        let mut s = service(&format!("s{name}"), i64::from(name) * 7 % 5, &[]);
        let annotations = s.metadata.annotations.get_or_insert_default();
        if let Some(k) = key {
            annotations.insert("ferrolb.io/allow-shared-ip".into(), format!("k{k}"));
        }
        if let Some(e) = explicit {
            annotations.insert(
                "ferrolb.io/loadBalancerIPs".into(),
                format!("198.51.100.{e}"),
            );
        }
        if let Some(spec) = s.spec.as_mut() {
            if name % 4 == 3 {
                spec.ip_family_policy = Some("PreferDualStack".into());
                spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
            }
            spec.ports = Some(vec![ServicePort {
                port: 80 + i32::from(port),
                ..Default::default()
            }]);
        }
        s
    }

    fn restart_pools() -> Vec<IPAddressPool> {
        vec![
            pool("lan", 1, &["198.51.100.0/29"]),
            pool("v6", 2, &["2001:db8::/126"]),
        ]
    }

    fn snapshot(state: &State) -> BTreeMap<String, Vec<IpAddr>> {
        state
            .services
            .iter()
            .map(|(k, s)| (k.name.clone(), status_addresses(s)))
            .collect()
    }

    proptest! {
        #[test]
        fn a_restart_in_any_list_order_moves_no_ip(ops in prop::collection::vec(op(), 1..60), rotate in 0usize..16) {
            let mut state = State::new(None);
            state.replace_pools(restart_pools());
            state.replace_services(Vec::new());
            settle(&mut state);
            for op in ops {
                match op {
                    Op::Create { name, key, port, explicit } => {
                        let mut fresh = build(name, key, port, explicit);
                        // Keep what the "API server" already holds for an existing Service.
                        if let Some(existing) = state.service(&ServiceKey::new("shop", format!("s{name}"))) {
                            fresh.status = existing.status.clone();
                            if let (Some(a), Some(pool)) = (fresh.metadata.annotations.as_mut(), allocated_from_pool(existing)) {
                                a.insert("ferrolb.io/ip-allocated-from-pool".into(), pool.to_owned());
                            }
                        }
                        state.apply_service(fresh);
                    }
                    Op::Retype(name) => {
                        if let Some(mut existing) = state.service(&ServiceKey::new("shop", format!("s{name}"))).cloned() {
                            if let Some(spec) = existing.spec.as_mut() {
                                spec.type_ = Some("ClusterIP".into());
                            }
                            state.apply_service(existing);
                        }
                    }
                    Op::Delete(name) => {
                        if let Some(existing) = state.service(&ServiceKey::new("shop", format!("s{name}"))).cloned() {
                            state.delete_service(&existing);
                        }
                    }
                }
                settle(&mut state);
            }
            let before = snapshot(&state);
            // No IP is held by two Services that may not share it.
            let mut by_ip: BTreeMap<IpAddr, Vec<&Service>> = BTreeMap::new();
            for s in state.services.values() {
                for ip in status_addresses(s) {
                    by_ip.entry(ip).or_default().push(s);
                }
            }
            for users in by_ip.values().filter(|u| u.len() > 1) {
                let keys: Vec<Option<&String>> = users
                    .iter()
                    .map(|s| s.metadata.annotations.as_ref().and_then(|a| a.get("ferrolb.io/allow-shared-ip")))
                    .collect();
                prop_assert!(keys[0].is_some() && keys.iter().all(|k| *k == keys[0]));
            }
            let mut objects: Vec<Service> = state.services.values().cloned().collect();
            objects.sort_by_key(|s| s.metadata.name.clone());
            let len = objects.len().max(1);
            objects.rotate_left(rotate % len);
            let mut restarted = State::new(None);
            restarted.replace_pools(restart_pools());
            restarted.replace_services(objects);
            let actions = settle(&mut restarted);
            prop_assert_eq!(snapshot(&restarted), before);
            prop_assert!(
                actions.iter().all(|a| matches!(a, Action::PoolStatus { .. } | Action::ServiceEvent { reason: reason::ALLOCATION_FAILED, .. } | Action::AllocationFailure { .. })),
                "{:?}", actions
            );
        }
    }
}
