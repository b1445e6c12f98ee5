//! core/v1 Service defaulting, allocation of cluster IPs and node ports, and
//! validation of what a load-balancer controller writes to a Service.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use super::error::Cause;

/// IPv4 service CIDR 203.0.113.128/25 (documentation range).
const IPV4_SERVICE_BASE: u32 = u32::from_be_bytes([203, 0, 113, 128]);
const IPV4_SERVICE_SIZE: u32 = 128;
/// IPv6 service CIDR 2001:db8:ffff::/112 (documentation range).
const IPV6_SERVICE_BASE: u128 = 0x2001_0db8_ffff_0000_0000_0000_0000_0000;
const IPV6_SERVICE_SIZE: u128 = 1 << 16;
pub const NODE_PORT_MIN: u16 = 30000;
pub const NODE_PORT_MAX: u16 = 32767;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    fn name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    fn other(self) -> Self {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }

    fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
}

/// The service IP families a cluster is configured with (kube-apiserver's
/// `--service-cluster-ip-range`), the default family first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceStack {
    /// Single-stack IPv4.
    IPv4,
    /// Single-stack IPv6.
    IPv6,
    /// Dual-stack, IPv4 first (the default family of Services that do not ask).
    #[default]
    DualStack,
    /// Dual-stack, IPv6 first.
    DualStackIPv6Primary,
}

impl ServiceStack {
    pub fn families(self) -> &'static [IpFamily] {
        match self {
            ServiceStack::IPv4 => &[IpFamily::V4],
            ServiceStack::IPv6 => &[IpFamily::V6],
            ServiceStack::DualStack => &[IpFamily::V4, IpFamily::V6],
            ServiceStack::DualStackIPv6Primary => &[IpFamily::V6, IpFamily::V4],
        }
    }

    fn default_family(self) -> IpFamily {
        self.families()[0]
    }

    fn has(self, family: IpFamily) -> bool {
        self.families().contains(&family)
    }

    fn is_dual(self) -> bool {
        self.families().len() == 2
    }
}

impl std::str::FromStr for ServiceStack {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "ipv4" => Ok(ServiceStack::IPv4),
            "ipv6" => Ok(ServiceStack::IPv6),
            "dual" => Ok(ServiceStack::DualStack),
            "dual-ipv6-primary" => Ok(ServiceStack::DualStackIPv6Primary),
            other => Err(format!(
                "{other:?} is not a service stack: ipv4, ipv6, dual or dual-ipv6-primary"
            )),
        }
    }
}

/// Offsets in use inside each service CIDR, and node ports in use.
#[derive(Debug, Default, Clone)]
pub struct ServiceAllocators {
    stack: ServiceStack,
    ipv4_used: BTreeSet<u128>,
    ipv6_used: BTreeSet<u128>,
    node_ports_used: BTreeSet<u16>,
    ipv4_cursor: u128,
    ipv6_cursor: u128,
    node_port_cursor: u16,
}

fn offset_of(ip: &IpAddr) -> Option<(IpFamily, u128)> {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(*v4);
            let offset = n.checked_sub(IPV4_SERVICE_BASE)?;
            (offset > 0 && offset < IPV4_SERVICE_SIZE - 1).then_some((IpFamily::V4, offset as u128))
        }
        IpAddr::V6(v6) => {
            let n = u128::from(*v6);
            let offset = n.checked_sub(IPV6_SERVICE_BASE)?;
            (offset > 0 && offset < IPV6_SERVICE_SIZE - 1).then_some((IpFamily::V6, offset))
        }
    }
}

fn ip_at(family: IpFamily, offset: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(IPV4_SERVICE_BASE + offset as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(IPV6_SERVICE_BASE + offset)),
    }
}

pub fn service_cidr(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "203.0.113.128/25",
        IpFamily::V6 => "2001:db8:ffff::/112",
    }
}

impl ServiceAllocators {
    pub fn new(stack: ServiceStack) -> Self {
        Self {
            stack,
            ..Self::default()
        }
    }

    pub fn stack(&self) -> ServiceStack {
        self.stack
    }

    fn used_mut(&mut self, family: IpFamily) -> (&mut BTreeSet<u128>, &mut u128, u128) {
        match family {
            IpFamily::V4 => (
                &mut self.ipv4_used,
                &mut self.ipv4_cursor,
                IPV4_SERVICE_SIZE as u128,
            ),
            IpFamily::V6 => (
                &mut self.ipv6_used,
                &mut self.ipv6_cursor,
                IPV6_SERVICE_SIZE,
            ),
        }
    }

    fn allocate_ip(&mut self, family: IpFamily) -> Option<IpAddr> {
        if !self.stack.has(family) {
            return None;
        }
        let (used, cursor, size) = self.used_mut(family);
        // Offsets 0 and size-1 are the network and broadcast addresses.
        let usable = size - 2;
        for step in 0..usable {
            let offset = 1 + (*cursor + step) % usable;
            if used.insert(offset) {
                *cursor = offset;
                return Some(ip_at(family, offset));
            }
        }
        None
    }

    fn reserve_ip(&mut self, ip: &IpAddr) -> Result<(), String> {
        if !self.stack.has(IpFamily::of(ip)) {
            return Err(format!(
                "failed to allocate IP {ip}: {} is not configured on this cluster",
                IpFamily::of(ip).name()
            ));
        }
        let Some((family, offset)) = offset_of(ip) else {
            return Err(format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                service_cidr(IpFamily::of(ip))
            ));
        };
        let (used, _, _) = self.used_mut(family);
        if used.insert(offset) {
            Ok(())
        } else {
            Err(format!(
                "failed to allocate IP {ip}: provided IP is already allocated"
            ))
        }
    }

    fn release_ip(&mut self, ip: &IpAddr) {
        if let Some((family, offset)) = offset_of(ip) {
            self.used_mut(family).0.remove(&offset);
        }
    }

    fn allocate_node_port(&mut self) -> Option<u16> {
        let span = NODE_PORT_MAX - NODE_PORT_MIN + 1;
        for step in 0..span {
            let port = NODE_PORT_MIN + (self.node_port_cursor + step) % span;
            if self.node_ports_used.insert(port) {
                self.node_port_cursor = (port - NODE_PORT_MIN + 1) % span;
                return Some(port);
            }
        }
        None
    }

    fn reserve_node_port(&mut self, port: u16) -> Result<(), String> {
        if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&port) {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"
            ));
        }
        if self.node_ports_used.insert(port) {
            Ok(())
        } else {
            Err("provided port is already allocated".into())
        }
    }

    fn release_node_port(&mut self, port: u16) {
        self.node_ports_used.remove(&port);
    }

    pub fn node_ports_in_use(&self) -> usize {
        self.node_ports_used.len()
    }

    pub fn cluster_ips_in_use(&self) -> usize {
        self.ipv4_used.len() + self.ipv6_used.len()
    }
}

/// What a Service holds from the allocators.
#[derive(Debug, Default, PartialEq)]
struct Allocations {
    cluster_ips: Vec<IpAddr>,
    node_ports: Vec<u16>,
}

fn allocations_of(service: &Value) -> Allocations {
    let spec = &service["spec"];
    let cluster_ips = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut node_ports: Vec<u16> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64())
        .filter(|p| *p != 0)
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    if let Some(port) = spec["healthCheckNodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
    {
        node_ports.push(port);
    }
    Allocations {
        cluster_ips,
        node_ports,
    }
}

pub fn release(allocators: &mut ServiceAllocators, service: &Value) {
    let held = allocations_of(service);
    for ip in &held.cluster_ips {
        allocators.release_ip(ip);
    }
    for port in held.node_ports {
        allocators.release_node_port(port);
    }
}

fn service_type(service: &Value) -> &str {
    service["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

fn wants_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => service["spec"]["allocateLoadBalancerNodePorts"]
            .as_bool()
            .unwrap_or(true),
        _ => false,
    }
}

/// Fills the fields kube-apiserver defaults, independent of allocation.
fn apply_static_defaults(service: &mut Value) {
    if !service["spec"].is_object() {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    let service_type = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if spec["healthCheckNodePort"] == 0
        && let Some(map) = spec.as_object_mut()
    {
        map.remove("healthCheckNodePort");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    if service_type != "ExternalName" && spec["internalTrafficPolicy"].is_null() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        if spec["externalTrafficPolicy"].is_null() {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
    } else if let Some(map) = spec.as_object_mut() {
        map.remove("externalTrafficPolicy");
    }
    if service_type == "LoadBalancer" {
        if spec["allocateLoadBalancerNodePorts"].is_null() {
            spec["allocateLoadBalancerNodePorts"] = json!(true);
        }
    } else if let Some(map) = spec.as_object_mut() {
        map.remove("allocateLoadBalancerNodePorts");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        // Non-object entries are left for validate_spec to report.
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            // Protobuf clients send 0 for "unset".
            if port["nodePort"] == 0
                && let Some(map) = port.as_object_mut()
            {
                map.remove("nodePort");
            }
            if port["protocol"].is_null() {
                port["protocol"] = json!("TCP");
            }
            if port["targetPort"].is_null() && service_type != "ExternalName" {
                port["targetPort"] = port["port"].clone();
            }
        }
    }
}

fn validate_spec(service: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &service["spec"];
    let service_type = service_type(service);
    if !matches!(
        service_type,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: \"{service_type}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            field: "spec.type".into(),
        });
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && service_type != "ExternalName" && spec["clusterIP"] != "None" {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "spec.ports".into(),
        });
    }
    for (i, port) in ports.iter().enumerate() {
        if !port.is_object() {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}]"),
                "Invalid value: must be an object",
            ));
            continue;
        }
        let number = port["port"].as_u64().unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
            ));
        }
        let protocol = port["protocol"].as_str().unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!("Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                field: format!("spec.ports[{i}].protocol"),
            });
        }
        if ports.len() > 1 && port["name"].as_str().unwrap_or_default().is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: format!("spec.ports[{i}].name"),
            });
        }
        if !port["nodePort"].is_null() && !matches!(service_type, "NodePort" | "LoadBalancer") {
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: may not be used when `type` is 'ClusterIP'".into(),
                field: format!("spec.ports[{i}].nodePort"),
            });
        }
    }
    for (field, allowed) in [
        ("externalTrafficPolicy", &["Cluster", "Local"][..]),
        ("internalTrafficPolicy", &["Cluster", "Local"][..]),
        ("sessionAffinity", &["None", "ClientIP"][..]),
        (
            "ipFamilyPolicy",
            &["SingleStack", "PreferDualStack", "RequireDualStack"][..],
        ),
    ] {
        if let Some(value) = spec[field].as_str()
            && !allowed.contains(&value)
        {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!("Unsupported value: \"{value}\""),
                field: format!("spec.{field}"),
            });
        }
    }
    if let Some(families) = spec["ipFamilies"].as_array() {
        for (i, family) in families.iter().enumerate() {
            if family.as_str().and_then(IpFamily::parse).is_none() {
                causes.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "Unsupported value: {family}: supported values: \"IPv4\", \"IPv6\""
                    ),
                    field: format!("spec.ipFamilies[{i}]"),
                });
            }
        }
    }
    causes
}

fn family_list(families: &[IpFamily]) -> String {
    let names: Vec<String> = families.iter().map(|f| format!("{:?}", f.name())).collect();
    format!("[]string{{{}}}", names.join(", "))
}

/// Families the Service gets, from ipFamilies, clusterIPs and ipFamilyPolicy, and what the
/// cluster is configured with, in the order kube-apiserver decides them (its
/// `initIPFamilyFields`): an unset policy is RequireDualStack when two families or IPs are
/// given, else SingleStack; a missing family is inferred from the IPs; a family the cluster does
/// not have, or RequireDualStack on a single-stack cluster, is refused; PreferDualStack and
/// RequireDualStack get the second family only where the cluster has it.
fn resolve_families(
    service: &Value,
    stack: ServiceStack,
) -> Result<(Vec<IpFamily>, &'static str), Vec<Cause>> {
    let spec = &service["spec"];
    let mut families: Vec<IpFamily> = spec["ipFamilies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(IpFamily::parse)
        .collect();
    let requested = requested_cluster_ips(service);
    let requested: Vec<&String> = requested.iter().take_while(|ip| *ip != "None").collect();
    let policy = match spec["ipFamilyPolicy"].as_str() {
        Some("RequireDualStack") => "RequireDualStack",
        Some("PreferDualStack") => "PreferDualStack",
        Some(_) => "SingleStack",
        None if families.len() == 2 || requested.len() == 2 => "RequireDualStack",
        None => "SingleStack",
    };
    let mut causes = Vec::new();
    if policy == "SingleStack" && families.len() > 1 {
        causes.push(Cause::invalid(
            "spec.ipFamilies",
            "Invalid value: when spec.ipFamilyPolicy is SingleStack only one family may be given",
        ));
    }
    for (i, text) in requested.iter().enumerate() {
        let Ok(ip) = text.parse::<IpAddr>() else {
            continue;
        };
        if i >= families.len() {
            let family = IpFamily::of(&ip);
            if stack.has(family) {
                families.push(family);
            } else {
                causes.push(Cause::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    format!(
                        "Invalid value: \"{text}\": {} is not configured on this cluster",
                        family.name()
                    ),
                ));
            }
        }
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let headless_without_selector = spec["clusterIP"] == "None"
        && spec["selector"]
            .as_object()
            .is_none_or(|selector| selector.is_empty());
    if headless_without_selector {
        // kube-apiserver lets these name families the cluster lacks: they get no IPs.
        if families.is_empty() {
            families.push(stack.default_family());
        }
        if families.len() < 2 && policy != "SingleStack" {
            families.push(families[0].other());
        }
        return Ok((families, policy));
    }
    if policy == "RequireDualStack" && !stack.is_dual() {
        causes.push(Cause::invalid(
            "spec.ipFamilyPolicy",
            "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
        ));
    }
    for (i, family) in families.iter().enumerate() {
        if !stack.has(*family) {
            causes.push(Cause::invalid(
                format!("spec.ipFamilies[{i}]"),
                format!(
                    "Invalid value: \"{}\": not configured on this cluster",
                    family.name()
                ),
            ));
        }
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    if families.is_empty() {
        families.push(stack.default_family());
    }
    if policy != "SingleStack" && families.len() == 1 && stack.is_dual() {
        families.push(families[0].other());
    }
    if families.len() > 2 {
        return Err(vec![Cause::invalid(
            "spec.ipFamilies",
            format!(
                "Invalid value: {}: may specify no more than two IP families",
                family_list(&families)
            ),
        )]);
    }
    Ok((families, policy))
}

fn requested_cluster_ips(service: &Value) -> Vec<String> {
    let spec = &service["spec"];
    let mut ips: Vec<String> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if ips.is_empty()
        && let Some(ip) = spec["clusterIP"].as_str()
        && !ip.is_empty()
    {
        ips.push(ip.to_string());
    }
    ips
}

/// Assigns cluster IPs and node ports for a new (or newly retyped) Service;
/// everything taken is given back if a later step fails.
fn allocate(allocators: &mut ServiceAllocators, service: &mut Value) -> Result<(), Vec<Cause>> {
    let mut taken = Allocations::default();
    let result = allocate_inner(allocators, service, &mut taken);
    if result.is_err() {
        for ip in &taken.cluster_ips {
            allocators.release_ip(ip);
        }
        for port in &taken.node_ports {
            allocators.release_node_port(*port);
        }
    }
    result
}

fn allocate_inner(
    allocators: &mut ServiceAllocators,
    service: &mut Value,
    taken: &mut Allocations,
) -> Result<(), Vec<Cause>> {
    let service_type = service_type(service).to_string();
    if service_type == "ExternalName" {
        if let Some(spec) = service["spec"].as_object_mut() {
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(field);
            }
        }
        return Ok(());
    }
    let headless = service["spec"]["clusterIP"] == "None";
    let (families, policy) = resolve_families(service, allocators.stack())?;
    let family_names = json!(families.iter().map(|f| f.name()).collect::<Vec<_>>());
    if headless {
        service["spec"]["clusterIPs"] = json!(["None"]);
        service["spec"]["ipFamilies"] = family_names;
        service["spec"]["ipFamilyPolicy"] = json!(policy);
    } else {
        let requested = requested_cluster_ips(service);
        let mut assigned = Vec::new();
        for (i, family) in families.iter().enumerate() {
            let ip = match requested.get(i) {
                Some(text) => {
                    let ip: IpAddr = text.parse().map_err(|_| {
                        vec![Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            format!("Invalid value: \"{text}\": must be a valid IP address"),
                        )]
                    })?;
                    if IpFamily::of(&ip) != *family {
                        return Err(vec![Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            format!(
                                "Invalid value: \"{text}\": expected an {} address",
                                family.name()
                            ),
                        )]);
                    }
                    allocators.reserve_ip(&ip).map_err(|m| {
                        vec![Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            format!("Invalid value: \"{text}\": {m}"),
                        )]
                    })?;
                    ip
                }
                None => allocators.allocate_ip(*family).ok_or_else(|| {
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        format!("Internal error: no {} addresses left", family.name()),
                    )]
                })?,
            };
            taken.cluster_ips.push(ip);
            assigned.push(ip.to_string());
        }
        service["spec"]["clusterIP"] = json!(assigned.first());
        service["spec"]["clusterIPs"] = json!(assigned);
        service["spec"]["ipFamilies"] = family_names;
        service["spec"]["ipFamilyPolicy"] = json!(policy);
    }
    allocate_node_ports(allocators, service, taken)
}

fn allocate_node_ports(
    allocators: &mut ServiceAllocators,
    service: &mut Value,
    taken: &mut Allocations,
) -> Result<(), Vec<Cause>> {
    let wants_ports = wants_node_ports(service);
    let needs_health_port = service_type(service) == "LoadBalancer"
        && service["spec"]["externalTrafficPolicy"] == "Local";
    if let Some(ports) = service["spec"]["ports"].as_array_mut() {
        for (i, port) in ports.iter_mut().enumerate() {
            if !wants_ports || !port.is_object() {
                continue;
            }
            // 0 means "allocate one", as kube-apiserver reads it.
            match port["nodePort"].as_u64().filter(|p| *p != 0) {
                Some(requested) => {
                    let requested = u16::try_from(requested).unwrap_or(0);
                    allocators.reserve_node_port(requested).map_err(|m| {
                        vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {requested}: {m}"),
                        )]
                    })?;
                    taken.node_ports.push(requested);
                }
                None => {
                    let allocated = allocators.allocate_node_port().ok_or_else(|| {
                        vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            "Internal error: no node ports left",
                        )]
                    })?;
                    taken.node_ports.push(allocated);
                    port["nodePort"] = json!(allocated);
                }
            }
        }
    }
    if needs_health_port {
        match service["spec"]["healthCheckNodePort"]
            .as_u64()
            .filter(|p| *p != 0)
        {
            Some(requested) => {
                let requested = u16::try_from(requested).unwrap_or(0);
                allocators.reserve_node_port(requested).map_err(|m| {
                    vec![Cause::invalid(
                        "spec.healthCheckNodePort",
                        format!("Invalid value: {requested}: {m}"),
                    )]
                })?;
                taken.node_ports.push(requested);
            }
            None => {
                let allocated = allocators.allocate_node_port().ok_or_else(|| {
                    vec![Cause::invalid(
                        "spec.healthCheckNodePort",
                        "Internal error: no node ports left",
                    )]
                })?;
                taken.node_ports.push(allocated);
                service["spec"]["healthCheckNodePort"] = json!(allocated);
            }
        }
    }
    Ok(())
}

/// Defaulting, validation and allocation for a Service being created.
pub fn prepare_create(
    allocators: &mut ServiceAllocators,
    service: &mut Value,
) -> Result<(), Vec<Cause>> {
    apply_static_defaults(service);
    let causes = validate_spec(service);
    if !causes.is_empty() {
        return Err(causes);
    }
    allocate(allocators, service)
}

/// Defaulting, validation and re-allocation for a Service being updated.
/// Values the client left empty keep what was allocated (as kube-apiserver's
/// patchAllocatedValues does); a type change drops or adds node ports.
pub fn prepare_update(
    allocators: &mut ServiceAllocators,
    old: &Value,
    service: &mut Value,
) -> Result<(), Vec<Cause>> {
    if !service["spec"].is_object() {
        service["spec"] = json!({});
    }
    let old_type = service_type(old).to_string();
    let new_type = service_type(service).to_string();
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let empty = match &service["spec"][field] {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if empty && !old["spec"][field].is_null() && new_type != "ExternalName" {
            service["spec"][field] = old["spec"][field].clone();
        }
    }
    let old_ips = old["spec"]["clusterIPs"].clone();
    if !old_ips.is_null() && service["spec"]["clusterIPs"] != old_ips && new_type != "ExternalName"
    {
        let old_first = old_ips.get(0);
        let new_first = service["spec"]["clusterIPs"].get(0);
        if old_first != new_first {
            return Err(vec![Cause::invalid(
                "spec.clusterIPs[0]",
                "Invalid value: may not change once set",
            )]);
        }
    }
    if service["spec"]["healthCheckNodePort"].is_null()
        && service["spec"]["externalTrafficPolicy"] == old["spec"]["externalTrafficPolicy"]
        && !old["spec"]["healthCheckNodePort"].is_null()
    {
        service["spec"]["healthCheckNodePort"] = old["spec"]["healthCheckNodePort"].clone();
    }
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let keep_node_ports = matches!(new_type.as_str(), "NodePort" | "LoadBalancer");
    if let Some(ports) = service["spec"]["ports"].as_array_mut() {
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            if !keep_node_ports {
                if let Some(map) = port.as_object_mut() {
                    // kube-apiserver drops node ports when the type no longer needs them.
                    if old_type != new_type {
                        map.remove("nodePort");
                    }
                }
                continue;
            }
            if port["nodePort"].is_null() || port["nodePort"] == 0 {
                let protocol = port["protocol"].as_str().unwrap_or("TCP");
                if let Some(previous) = old_ports.iter().find(|p| {
                    p["port"] == port["port"] && p["protocol"].as_str().unwrap_or("TCP") == protocol
                }) && !previous["nodePort"].is_null()
                {
                    port["nodePort"] = previous["nodePort"].clone();
                }
            }
        }
    }
    if old_type == "LoadBalancer" && new_type != "LoadBalancer" {
        if let Some(spec) = service["spec"].as_object_mut() {
            spec.remove("healthCheckNodePort");
            spec.remove("loadBalancerClass");
        }
        if let Some(status) = service["status"].as_object_mut() {
            status.insert("loadBalancer".into(), json!({}));
        }
    }
    apply_static_defaults(service);
    if new_type != "LoadBalancer"
        && let Some(spec) = service["spec"].as_object_mut()
    {
        spec.remove("healthCheckNodePort");
    }
    let causes = validate_spec(service);
    if !causes.is_empty() {
        return Err(causes);
    }
    // Re-reserve from scratch: release what the old object held, then take
    // what the new one holds, restoring the old holdings if that fails.
    release(allocators, old);
    let mut taken = Allocations::default();
    let mut result = Ok(());
    for ip in allocations_of(service).cluster_ips {
        if let Err(m) = allocators.reserve_ip(&ip) {
            result = Err(vec![Cause::invalid("spec.clusterIPs", m)]);
            break;
        }
        taken.cluster_ips.push(ip);
    }
    if result.is_ok() {
        if let Some(spec) = service["spec"].as_object_mut()
            && new_type != "ExternalName"
            && spec
                .get("clusterIPs")
                .is_none_or(|v| v.as_array().is_none_or(|a| a.is_empty()))
        {
            spec.remove("clusterIP");
        }
        if taken.cluster_ips.is_empty()
            && new_type != "ExternalName"
            && service["spec"]["clusterIP"] != "None"
        {
            result = allocate_inner(allocators, service, &mut taken);
        } else {
            result = allocate_node_ports(allocators, service, &mut taken);
        }
    }
    if result.is_err() {
        for ip in &taken.cluster_ips {
            allocators.release_ip(ip);
        }
        for port in &taken.node_ports {
            allocators.release_node_port(*port);
        }
        let held = allocations_of(old);
        for ip in &held.cluster_ips {
            let _ = allocators.reserve_ip(ip);
        }
        for port in held.node_ports {
            let _ = allocators.reserve_node_port(port);
        }
    }
    result
}

/// A Service that stops being a LoadBalancer loses its load-balancer status,
/// as kube-apiserver clears it on such an update.
pub fn drop_load_balancer_status_if_retyped(old: &Value, service: &mut Value) {
    if service_type(old) == "LoadBalancer"
        && service_type(service) != "LoadBalancer"
        && let Some(status) = service["status"].as_object_mut()
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

/// Validation of `status.loadBalancer`, as kube-apiserver applies it to
/// what load-balancer controllers write.
pub fn validate_status(service: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(ingress) = service.pointer("/status/loadBalancer/ingress") else {
        return causes;
    };
    let Some(entries) = ingress.as_array() else {
        if !ingress.is_null() {
            causes.push(Cause::invalid(
                "status.loadBalancer.ingress",
                "Invalid value: must be a list",
            ));
        }
        return causes;
    };
    let is_load_balancer = service_type(service) == "LoadBalancer";
    if !entries.is_empty() && !is_load_balancer {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: may only be used when `spec.type` is 'LoadBalancer'".into(),
            field: "status.loadBalancer.ingress".into(),
        });
    }
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("status.loadBalancer.ingress[{i}]");
        let ip = entry["ip"].as_str();
        if let Some(ip) = ip
            && ip.parse::<IpAddr>().is_err()
        {
            causes.push(Cause::invalid(
                format!("{field}.ip"),
                format!("Invalid value: \"{ip}\": must be a valid IP address"),
            ));
        }
        if let Some(mode) = entry.get("ipMode").filter(|m| !m.is_null()) {
            if ip.is_none() {
                causes.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: must be specified when `ip` is set".into(),
                    field: format!("{field}.ipMode"),
                });
            } else if !matches!(mode.as_str(), Some("VIP" | "Proxy")) {
                causes.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "Unsupported value: {mode}: supported values: \"Proxy\", \"VIP\""
                    ),
                    field: format!("{field}.ipMode"),
                });
            }
        }
        if let Some(hostname) = entry["hostname"].as_str()
            && hostname.parse::<IpAddr>().is_ok()
        {
            causes.push(Cause::invalid(
                format!("{field}.hostname"),
                format!("Invalid value: \"{hostname}\": must be a DNS name, not an IP address"),
            ));
        }
        for (j, port) in entry["ports"].as_array().into_iter().flatten().enumerate() {
            let number = port["port"].as_u64().unwrap_or(0);
            if !(1..=65535).contains(&number) {
                causes.push(Cause::invalid(
                    format!("{field}.ports[{j}].port"),
                    format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
                ));
            }
            let protocol = port["protocol"].as_str().unwrap_or_default();
            if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                causes.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!("Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                    field: format!("{field}.ports[{j}].protocol"),
                });
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancer_defaults_and_allocations() -> Result<(), Vec<Cause>> {
        let mut allocators = ServiceAllocators::default();
        let mut svc = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80}]}});
        prepare_create(&mut allocators, &mut svc)?;
        assert_eq!(svc["spec"]["clusterIP"], "203.0.113.129");
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert!(svc["spec"]["ports"][0]["nodePort"].as_u64().is_some());
        assert!(svc["spec"]["healthCheckNodePort"].as_u64().is_some());
        assert_eq!(allocators.node_ports_in_use(), 2);
        let old = svc.clone();
        svc["spec"]["type"] = json!("ClusterIP");
        prepare_update(&mut allocators, &old, &mut svc)?;
        assert!(svc["spec"]["ports"][0]["nodePort"].is_null());
        assert_eq!(allocators.node_ports_in_use(), 0);
        assert_eq!(allocators.cluster_ips_in_use(), 1);
        release(&mut allocators, &svc);
        assert_eq!(allocators.cluster_ips_in_use(), 0);
        Ok(())
    }

    #[test]
    fn dual_stack_allocates_both_families() -> Result<(), Vec<Cause>> {
        let mut allocators = ServiceAllocators::default();
        let mut svc = json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 53, "protocol": "UDP"}]}});
        prepare_create(&mut allocators, &mut svc)?;
        assert_eq!(
            svc["spec"]["clusterIPs"],
            json!(["203.0.113.129", "2001:db8:ffff::1"])
        );
        Ok(())
    }

    /// ipFamilies and ipFamilyPolicy after creation, or the refused fields.
    type Defaulted = Result<(Value, Value), Vec<String>>;

    fn defaulted(stack: ServiceStack, spec: Value) -> Defaulted {
        let mut allocators = ServiceAllocators::new(stack);
        let mut svc = json!({"spec": spec});
        svc["spec"]["ports"] = json!([{"port": 80}]);
        prepare_create(&mut allocators, &mut svc)
            .map_err(|causes| causes.into_iter().map(|c| c.field).collect::<Vec<_>>())?;
        Ok((
            svc["spec"]["ipFamilies"].clone(),
            svc["spec"]["ipFamilyPolicy"].clone(),
        ))
    }

    #[test]
    fn families_follow_the_cluster_stack_as_kube_apiserver_defaults_them() {
        use ServiceStack::*;
        let ok = |families: &[&str], policy: &str| Ok((json!(families), json!(policy)));
        let cases: Vec<(ServiceStack, Value, Defaulted)> = vec![
            (IPv4, json!({}), ok(&["IPv4"], "SingleStack")),
            (
                IPv4,
                json!({"ipFamilyPolicy": "PreferDualStack"}),
                ok(&["IPv4"], "PreferDualStack"),
            ),
            (
                IPv4,
                json!({"ipFamilyPolicy": "RequireDualStack"}),
                Err(vec!["spec.ipFamilyPolicy".into()]),
            ),
            (
                IPv4,
                json!({"ipFamilies": ["IPv6"]}),
                Err(vec!["spec.ipFamilies[0]".into()]),
            ),
            (
                IPv4,
                json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}),
                Err(vec!["spec.ipFamilies[1]".into()]),
            ),
            (
                IPv4,
                json!({"clusterIP": "2001:db8:ffff::9"}),
                Err(vec!["spec.clusterIPs[0]".into()]),
            ),
            (IPv6, json!({}), ok(&["IPv6"], "SingleStack")),
            (
                IPv6,
                json!({"ipFamilyPolicy": "PreferDualStack"}),
                ok(&["IPv6"], "PreferDualStack"),
            ),
            (
                IPv6,
                json!({"ipFamilyPolicy": "RequireDualStack"}),
                Err(vec!["spec.ipFamilyPolicy".into()]),
            ),
            (DualStack, json!({}), ok(&["IPv4"], "SingleStack")),
            (
                DualStack,
                json!({"ipFamilyPolicy": "PreferDualStack"}),
                ok(&["IPv4", "IPv6"], "PreferDualStack"),
            ),
            (
                DualStack,
                json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6"]}),
                ok(&["IPv6", "IPv4"], "PreferDualStack"),
            ),
            (
                DualStack,
                json!({"ipFamilies": ["IPv6", "IPv4"]}),
                ok(&["IPv6", "IPv4"], "RequireDualStack"),
            ),
            (
                DualStack,
                json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}),
                ok(&["IPv6"], "SingleStack"),
            ),
            (
                DualStackIPv6Primary,
                json!({}),
                ok(&["IPv6"], "SingleStack"),
            ),
            (
                DualStackIPv6Primary,
                json!({"ipFamilyPolicy": "RequireDualStack"}),
                ok(&["IPv6", "IPv4"], "RequireDualStack"),
            ),
            // Headless without a selector may name families the cluster lacks.
            (
                IPv4,
                json!({"clusterIP": "None", "ipFamilyPolicy": "PreferDualStack"}),
                ok(&["IPv4", "IPv6"], "PreferDualStack"),
            ),
        ];
        for (stack, spec, expected) in cases {
            assert_eq!(defaulted(stack, spec.clone()), expected, "{stack:?} {spec}");
        }
    }

    #[test]
    fn single_stack_clusters_allocate_from_their_family_only() -> Result<(), Vec<Cause>> {
        let mut allocators = ServiceAllocators::new(ServiceStack::IPv6);
        let mut svc = json!({"spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}});
        prepare_create(&mut allocators, &mut svc)?;
        assert_eq!(svc["spec"]["clusterIPs"], json!(["2001:db8:ffff::1"]));
        assert_eq!("ipv6".parse::<ServiceStack>(), Ok(ServiceStack::IPv6));
        assert!("v6".parse::<ServiceStack>().is_err());
        Ok(())
    }

    #[test]
    fn ingress_validation() {
        let svc = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [
            {"ip": "not-an-ip"}, {"hostname": "lb.example", "ipMode": "VIP"}, {"ip": "198.51.100.7", "ipMode": "Other"}]}}});
        let fields: Vec<String> = validate_status(&svc).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec![
                "status.loadBalancer.ingress[0].ip",
                "status.loadBalancer.ingress[1].ipMode",
                "status.loadBalancer.ingress[2].ipMode"
            ]
        );
    }
}
