//! Between Kubernetes Services and the allocator: which Services are ours, what they request,
//! what their status already says, and the patches that write assignments back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::IpFamily;
use ferrolb_crds::addresses::parse_ip;
use ferrolb_crds::annotations::{IP_ALLOCATED_FROM_POOL, ServiceAnnotation};
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::allocator::{
    AllocationRequest, Backend, FamilyPolicy, PortKey, ServiceKey, SharingProfile,
};

/// The ingress ipMode FerroLB writes: traffic arrives with the external IP as destination.
pub const IP_MODE_VIP: &str = "VIP";

/// Why a Service's request cannot be served. Messages go into Warning events as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("both {annotation} and spec.loadBalancerIP are set; keep only {annotation}")]
    AnnotationAndSpec { annotation: String },
    #[error("{source_name}: {text:?} is not an IP address")]
    Unparsable { source_name: String, text: String },
    #[error("{source_name} holds two {family} addresses; at most one per family")]
    TwoOfOneFamily {
        source_name: String,
        family: IpFamily,
    },
    #[error("{source_name}: {ip} is {family}, but the Service's ipFamilies are {families}")]
    WrongFamily {
        source_name: String,
        ip: IpAddr,
        family: IpFamily,
        families: String,
    },
    #[error(
        "{source_name}: a RequireDualStack Service must request one IPv4 and one IPv6 address, or none"
    )]
    DualStackNeedsBoth { source_name: String },
    #[error("{0} is set but empty")]
    EmptyPool(String),
    #[error("spec.ipFamilies holds {0:?}, which is not IPv4 or IPv6")]
    UnknownFamily(String),
    #[error("spec.ipFamilyPolicy {0:?} is not SingleStack, PreferDualStack or RequireDualStack")]
    UnknownFamilyPolicy(String),
}

pub use ferrolb_crds::service_class::qualifies;

pub fn service_key(service: &Service) -> Option<ServiceKey> {
    Some(ServiceKey::new(
        service.metadata.namespace.clone()?,
        service.metadata.name.clone()?,
    ))
}

fn family_policy(service: &Service, requested: &[IpAddr]) -> Result<FamilyPolicy, RequestError> {
    let spec = service.spec.as_ref();
    let families: Vec<IpFamily> = spec
        .and_then(|s| s.ip_families.as_ref())
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    IpFamily::from_kubernetes(n)
                        .ok_or_else(|| RequestError::UnknownFamily(n.clone()))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    // The API server always fills ipFamilies; without it, the request or IPv4 decides.
    let primary = families
        .first()
        .copied()
        .or_else(|| requested.first().map(|&ip| IpFamily::of(ip)))
        .unwrap_or(IpFamily::IPv4);
    match spec.and_then(|s| s.ip_family_policy.as_deref()) {
        None | Some("SingleStack") => Ok(FamilyPolicy::SingleStack(primary)),
        // On a single-stack cluster the API server gives a PreferDualStack Service one family:
        // an address of the other would be one kube-proxy never programs.
        Some("PreferDualStack") if families.len() == 1 => Ok(FamilyPolicy::SingleStack(primary)),
        Some("PreferDualStack") => Ok(FamilyPolicy::PreferDualStack { primary }),
        Some("RequireDualStack") => Ok(FamilyPolicy::RequireDualStack { primary }),
        Some(other) => Err(RequestError::UnknownFamilyPolicy(other.to_owned())),
    }
}

fn requested_addresses(
    service: &Service,
    annotations: &BTreeMap<String, String>,
) -> Result<(Vec<IpAddr>, String), RequestError> {
    let annotation = ServiceAnnotation::LoadBalancerIps
        .lookup(annotations)
        .filter(|a| !a.value.is_empty());
    let spec_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .map(str::trim)
        .filter(|ip| !ip.is_empty());
    let (text, source_name) = match (annotation, spec_ip) {
        (Some(a), Some(_)) => {
            return Err(RequestError::AnnotationAndSpec {
                annotation: a.key.to_owned(),
            });
        }
        (Some(a), None) => (a.value, a.key.to_owned()),
        (None, Some(ip)) => (ip, "spec.loadBalancerIP".to_owned()),
        (None, None) => return Ok((Vec::new(), String::new())),
    };
    let mut addresses: Vec<IpAddr> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip = parse_ip(part).map_err(|_| RequestError::Unparsable {
            source_name: source_name.clone(),
            text: part.to_owned(),
        })?;
        if addresses
            .iter()
            .any(|&a| IpFamily::of(a) == IpFamily::of(ip))
        {
            return Err(RequestError::TwoOfOneFamily {
                source_name,
                family: IpFamily::of(ip),
            });
        }
        addresses.push(ip);
    }
    Ok((addresses, source_name))
}

/// Translates a Service into what it asks the allocator for.
pub fn allocation_request(
    service: &Service,
    key: ServiceKey,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<AllocationRequest, RequestError> {
    let empty = BTreeMap::new();
    let annotations = service.metadata.annotations.as_ref().unwrap_or(&empty);
    let (addresses, source_name) = requested_addresses(service, annotations)?;
    let families = family_policy(service, &addresses)?;
    // Requested IPs must be of the families the Service has; without ipFamilies, the policy decides.
    let declared: Vec<IpFamily> = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .map(|names| {
            names
                .iter()
                .filter_map(|n| IpFamily::from_kubernetes(n))
                .collect()
        })
        .unwrap_or_default();
    let allowed: Vec<IpFamily> = if declared.is_empty() {
        families
            .choices()
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect()
    } else {
        declared
    };
    for &ip in &addresses {
        if !allowed.contains(&IpFamily::of(ip)) {
            return Err(RequestError::WrongFamily {
                source_name,
                ip,
                family: IpFamily::of(ip),
                families: allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    if matches!(families, FamilyPolicy::RequireDualStack { .. }) && addresses.len() == 1 {
        return Err(RequestError::DualStackNeedsBoth { source_name });
    }
    let pool = match ServiceAnnotation::AddressPool.lookup(annotations) {
        Some(a) if a.value.is_empty() => return Err(RequestError::EmptyPool(a.key.to_owned())),
        Some(a) => Some(a.value.to_owned()),
        None => None,
    };
    let spec = service.spec.as_ref();
    let key_value = ServiceAnnotation::AllowSharedIp
        .lookup(annotations)
        .map(|a| a.value.to_owned())
        .filter(|v| !v.is_empty());
    let backend = match spec.and_then(|s| s.external_traffic_policy.as_deref()) {
        Some("Local") => Backend::Local {
            selector: spec.and_then(|s| s.selector.clone()).unwrap_or_default(),
        },
        _ => Backend::Cluster,
    };
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| PortKey {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                    port: p.port,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sharing = SharingProfile {
        key: key_value,
        backend,
        ports,
    };
    sharing.normalize_ports();
    Ok(AllocationRequest {
        service: key,
        namespace_labels: namespace_labels.clone(),
        service_labels: service.metadata.labels.clone().unwrap_or_default(),
        families,
        addresses,
        pool,
        sharing,
    })
}

/// The IPs in the Service's status (entries that are not IPs, such as hostnames, are skipped).
pub fn status_addresses(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the status already says exactly this (same IPs in order, all VIP, nothing else).
pub fn status_is(service: &Service, addresses: &[IpAddr]) -> bool {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    ingress.len() == addresses.len()
        && ingress.iter().zip(addresses).all(|(entry, ip)| {
            entry.ip.as_deref() == Some(ip.to_string().as_str())
                && entry.ip_mode.as_deref() == Some(IP_MODE_VIP)
                && entry.hostname.is_none()
                && entry.ports.is_none()
        })
}

/// Merge patch for the status subresource: exactly these IPs, or none.
pub fn status_patch(addresses: &[IpAddr]) -> Value {
    if addresses.is_empty() {
        return json!({"status": {"loadBalancer": {"ingress": null}}});
    }
    let ingress: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": IP_MODE_VIP}))
        .collect();
    json!({"status": {"loadBalancer": {"ingress": ingress}}})
}

/// The pool annotation currently on the Service.
pub fn allocated_from_pool(service: &Service) -> Option<&str> {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IP_ALLOCATED_FROM_POOL))
        .map(String::as_str)
}

/// Merge patch setting (or, with `None`, removing) the pool annotation.
pub fn pool_annotation_patch(pool: Option<&str>) -> Value {
    json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: pool}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };

    fn service(annotations: &[(&str, &str)], spec: ServiceSpec) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some("shop".into());
        s.metadata.name = Some("web".into());
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s.spec = Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ..spec
        });
        s
    }

    fn families(policy: &str, families: &[&str]) -> ServiceSpec {
        ServiceSpec {
            ip_family_policy: Some(policy.into()),
            ip_families: Some(families.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        }
    }

    fn request(s: &Service) -> Result<AllocationRequest, RequestError> {
        allocation_request(s, service_key(s).unwrap(), &BTreeMap::new())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn class_and_type_decide_who_is_ours() {
        let mut s = service(&[], ServiceSpec::default());
        assert!(qualifies(&s, None));
        assert!(!qualifies(&s, Some("ferrolb")));
        s.spec.as_mut().unwrap().load_balancer_class = Some("ferrolb".into());
        assert!(qualifies(&s, Some("ferrolb")));
        assert!(!qualifies(&s, None));
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(!qualifies(&s, Some("ferrolb")));
    }

    #[test]
    fn annotations_with_aliases_become_the_request() {
        let mut spec = families("RequireDualStack", &["IPv6", "IPv4"]);
        spec.external_traffic_policy = Some("Local".into());
        spec.selector = Some(BTreeMap::from([("app".into(), "web".into())]));
        spec.ports = Some(vec![ServicePort {
            port: 53,
            protocol: Some("UDP".into()),
            ..Default::default()
        }]);
        let s = service(
            &[
                (
                    "metallb.universe.tf/loadBalancerIPs",
                    "198.51.100.7, 2001:db8::7",
                ),
                ("metallb.io/address-pool", "lan"),
                ("ferrolb.io/allow-shared-ip", "dns"),
            ],
            spec,
        );
        let r = request(&s).unwrap();
        assert_eq!(r.addresses, [ip("198.51.100.7"), ip("2001:db8::7")]);
        assert_eq!(r.pool.as_deref(), Some("lan"));
        assert_eq!(
            r.families,
            FamilyPolicy::RequireDualStack {
                primary: IpFamily::IPv6
            }
        );
        assert_eq!(r.sharing.key.as_deref(), Some("dns"));
        assert!(matches!(r.sharing.backend, Backend::Local { .. }));
        assert_eq!(r.sharing.ports.len(), 1);
    }

    #[test]
    fn impossible_requests_are_named() {
        let v4 = || families("SingleStack", &["IPv4"]);
        let cases: Vec<(Service, &str)> = vec![
            (
                service(
                    &[("ferrolb.io/loadBalancerIPs", "198.51.100.7")],
                    ServiceSpec {
                        load_balancer_ip: Some("198.51.100.8".into()),
                        ..v4()
                    },
                ),
                "both ferrolb.io/loadBalancerIPs and spec.loadBalancerIP are set; keep only ferrolb.io/loadBalancerIPs",
            ),
            (
                service(&[("ferrolb.io/loadBalancerIPs", "198.51.100.300")], v4()),
                "ferrolb.io/loadBalancerIPs: \"198.51.100.300\" is not an IP address",
            ),
            (
                service(
                    &[("metallb.io/loadBalancerIPs", "198.51.100.7,198.51.100.8")],
                    v4(),
                ),
                "metallb.io/loadBalancerIPs holds two IPv4 addresses; at most one per family",
            ),
            (
                service(&[("ferrolb.io/loadBalancerIPs", "2001:db8::1")], v4()),
                "ferrolb.io/loadBalancerIPs: 2001:db8::1 is IPv6, but the Service's ipFamilies are IPv4",
            ),
            (
                service(
                    &[("ferrolb.io/loadBalancerIPs", "2001:db8::1")],
                    families("RequireDualStack", &["IPv4", "IPv6"]),
                ),
                "ferrolb.io/loadBalancerIPs: a RequireDualStack Service must request one IPv4 and one IPv6 address, or none",
            ),
            (
                service(&[("ferrolb.io/address-pool", " ")], v4()),
                "ferrolb.io/address-pool is set but empty",
            ),
        ];
        for (s, message) in cases {
            assert_eq!(request(&s).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn only_the_families_in_ip_families_are_allocated() {
        for (spec, expected) in [
            (
                families("PreferDualStack", &["IPv4"]),
                FamilyPolicy::SingleStack(IpFamily::IPv4),
            ),
            (
                families("PreferDualStack", &["IPv6"]),
                FamilyPolicy::SingleStack(IpFamily::IPv6),
            ),
            (
                families("PreferDualStack", &["IPv6", "IPv4"]),
                FamilyPolicy::PreferDualStack {
                    primary: IpFamily::IPv6,
                },
            ),
            (
                families("SingleStack", &["IPv6"]),
                FamilyPolicy::SingleStack(IpFamily::IPv6),
            ),
        ] {
            let s = service(&[], spec.clone());
            assert_eq!(request(&s).unwrap().families, expected, "{spec:?}");
        }
        let single_v4 = service(
            &[("ferrolb.io/loadBalancerIPs", "2001:db8::7")],
            families("PreferDualStack", &["IPv4"]),
        );
        assert_eq!(
            request(&single_v4).unwrap_err().to_string(),
            "ferrolb.io/loadBalancerIPs: 2001:db8::7 is IPv6, but the Service's ipFamilies are IPv4"
        );
    }

    #[test]
    fn deprecated_spec_field_still_works() {
        let s = service(
            &[],
            ServiceSpec {
                load_balancer_ip: Some("198.51.100.9".into()),
                ..families("SingleStack", &["IPv4"])
            },
        );
        assert_eq!(request(&s).unwrap().addresses, [ip("198.51.100.9")]);
    }

    #[test]
    fn status_round_trip() {
        let addresses = [ip("198.51.100.7"), ip("2001:db8::7")];
        let patch = status_patch(&addresses);
        assert_eq!(
            patch,
            json!({"status": {"loadBalancer": {"ingress": [
                {"ip": "198.51.100.7", "ipMode": "VIP"},
                {"ip": "2001:db8::7", "ipMode": "VIP"}
            ]}}})
        );
        let mut s = service(&[], ServiceSpec::default());
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    addresses
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
        assert_eq!(status_addresses(&s), addresses);
        assert!(status_is(&s, &addresses));
        assert!(!status_is(&s, &addresses[..1]));
        assert_eq!(
            status_patch(&[]),
            json!({"status": {"loadBalancer": {"ingress": null}}})
        );
        assert_eq!(
            pool_annotation_patch(None),
            json!({"metadata": {"annotations": {"ferrolb.io/ip-allocated-from-pool": null}}})
        );
    }
}
