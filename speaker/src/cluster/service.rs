//! LoadBalancer Services and the nodes holding their endpoints.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::election::{ServiceFacts, ServiceId};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A LoadBalancer Service with at least one external IP in its status, with the nodes that hold
/// a ready or serving endpoint of it among `slices` (the caller passes the Service's slices;
/// others are ignored). None for other Services.
pub fn service_facts(service: &Service, slices: &[EndpointSlice]) -> Option<ServiceFacts> {
    let mut facts = load_balancer(service)?;
    facts.endpoint_nodes = slices
        .iter()
        .filter(|slice| slice_service(slice).as_ref() == Some(&facts.id))
        .flat_map(endpoint_nodes)
        .collect();
    Some(facts)
}

/// [`service_facts`] without the endpoints (`endpoint_nodes` empty).
pub fn load_balancer(service: &Service) -> Option<ServiceFacts> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let id = ServiceId {
        namespace: service.metadata.namespace.as_deref()?.into(),
        name: service.metadata.name.as_deref()?.into(),
    };
    let mut ips: Vec<IpAddr> = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return None;
    }
    Some(ServiceFacts {
        id,
        ips,
        local_traffic_policy: spec.external_traffic_policy.as_deref() == Some("Local"),
        endpoint_nodes: BTreeSet::new(),
    })
}

/// The nodes holding a ready or serving endpoint in `slice`.
pub fn endpoint_nodes(slice: &EndpointSlice) -> BTreeSet<String> {
    slice
        .endpoints
        .iter()
        .filter(|endpoint| {
            // The API says a missing condition means true for both.
            let conditions = endpoint.conditions.as_ref();
            conditions.and_then(|c| c.ready).unwrap_or(true)
                || conditions.and_then(|c| c.serving).unwrap_or(true)
        })
        .filter_map(|endpoint| endpoint.node_name.clone())
        .collect()
}

/// The Service an EndpointSlice belongs to.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceId> {
    Some(ServiceId {
        namespace: slice.metadata.namespace.as_deref()?.into(),
        name: slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .as_str()
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use kube::api::ObjectMeta;

    use super::*;

    fn service(type_: &str, policy: &str, ips: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                external_traffic_policy: Some(policy.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ips.iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        }
    }

    fn endpoint(node: &str, ready: Option<bool>, serving: Option<bool>) -> Endpoint {
        Endpoint {
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating: None,
            }),
            ..Default::default()
        }
    }

    fn slice(service: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            endpoints,
            ..Default::default()
        }
    }

    #[test]
    fn load_balancer_ips_come_from_the_status() {
        let facts = service_facts(
            &service(
                "LoadBalancer",
                "Cluster",
                &["2001:db8::7", "198.51.100.7", "not-an-ip"],
            ),
            &[],
        )
        .unwrap();
        let expected: Vec<IpAddr> = vec![
            "198.51.100.7".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ];
        assert_eq!(facts.ips, expected);
        assert!(!facts.local_traffic_policy);
        assert!(service_facts(&service("ClusterIP", "Cluster", &["198.51.100.7"]), &[]).is_none());
        assert!(service_facts(&service("LoadBalancer", "Cluster", &[]), &[]).is_none());
    }

    #[test]
    fn endpoint_nodes_are_those_with_ready_or_serving_endpoints_of_this_service() {
        let slices = [
            slice(
                "web",
                vec![
                    endpoint("node-ready", Some(true), Some(true)),
                    endpoint("node-terminating", Some(false), Some(true)),
                    endpoint("node-unknown", None, None),
                    endpoint("node-down", Some(false), Some(false)),
                ],
            ),
            slice(
                "other",
                vec![endpoint("node-other", Some(true), Some(true))],
            ),
        ];
        let facts = service_facts(
            &service("LoadBalancer", "Local", &["198.51.100.7"]),
            &slices,
        )
        .unwrap();
        assert!(facts.local_traffic_policy);
        assert_eq!(
            facts.endpoint_nodes,
            ["node-ready", "node-terminating", "node-unknown"]
                .map(String::from)
                .into()
        );
    }
}
