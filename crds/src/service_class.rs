//! Which Services FerroLB serves. The controller and the speaker must agree exactly: a Service
//! the controller gives an IP to and the speakers ignore would never be reachable.

use k8s_openapi::api::core::v1::Service;

/// Whether a FerroLB serving `lb_class` (`None`: Services without a class, as MetalLB does by
/// default) handles this Service: type LoadBalancer and exactly that class.
pub fn qualifies(service: &Service, lb_class: Option<&str>) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer")
            && spec.load_balancer_class.as_deref() == lb_class
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn service(type_: Option<&str>, class: Option<&str>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: type_.map(str::to_owned),
                load_balancer_class: class.map(str::to_owned),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn only_load_balancers_of_the_served_class_qualify() {
        assert!(qualifies(&service(Some("LoadBalancer"), None), None));
        assert!(!qualifies(
            &service(Some("LoadBalancer"), Some("x.io/lb")),
            None
        ));
        assert!(qualifies(
            &service(Some("LoadBalancer"), Some("x.io/lb")),
            Some("x.io/lb")
        ));
        assert!(!qualifies(
            &service(Some("LoadBalancer"), None),
            Some("x.io/lb")
        ));
        assert!(!qualifies(
            &service(Some("LoadBalancer"), Some("y.io/lb")),
            Some("x.io/lb")
        ));
        assert!(!qualifies(&service(Some("NodePort"), None), None));
        assert!(!qualifies(&service(None, None), None));
        assert!(!qualifies(&Service::default(), None));
    }
}
