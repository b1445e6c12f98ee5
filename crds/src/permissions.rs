//! The Kubernetes API access of each component: the one list from which the RBAC manifests are
//! generated and against which the components' API use is checked, so the two cannot drift.

/// Namespace FerroLB runs in.
pub const SYSTEM_NAMESPACE: &str = "ferrolb-system";

/// Where a permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace, or a cluster-scoped resource (a ClusterRole).
    Cluster,
    /// Only FerroLB's own namespace (a Role in `ferrolb-system`).
    SystemNamespace,
}

/// Verbs on one resource (or subresource, `services/status`) of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// "" for the core group.
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Only these objects (empty: every object). `create` cannot be limited this way.
    pub resource_names: &'static [&'static str],
    /// Why the component needs it, written into the generated manifest as a comment.
    pub reason: &'static str,
}

/// A FerroLB component and its API access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// Used for the ServiceAccount, roles and bindings: `ferrolb-<name>`.
    pub name: &'static str,
    pub permissions: &'static [Permission],
}

impl Component {
    pub fn account_name(&self) -> String {
        format!("ferrolb-{}", self.name)
    }

    /// Whether the component may use `verb` on `resource` of `api_group` in `namespace`
    /// (`None` for cluster-scoped resources or all namespaces).
    pub fn allows(
        &self,
        api_group: &str,
        resource: &str,
        verb: &str,
        namespace: Option<&str>,
    ) -> bool {
        self.permissions.iter().any(|p| {
            p.api_group == api_group
                && p.resource == resource
                && p.verbs.contains(&verb)
                && match p.scope {
                    Scope::Cluster => true,
                    Scope::SystemNamespace => namespace == Some(SYSTEM_NAMESPACE),
                }
        })
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE_STATUS: &[&str] = &["patch", "update"];
const EVENTS: Permission = Permission {
    api_group: "events.k8s.io",
    resource: "events",
    verbs: &["create"],
    scope: Scope::Cluster,
    resource_names: &[],
    // Repeats are suppressed before they are sent, not folded into a series, so no patch.
    reason: "events on Services (what was assigned, announced or refused, and why) and on Nodes (heartbeats that fail authentication)",
};

pub const CONTROLLER: Component = Component {
    name: "controller",
    permissions: &[
        Permission {
            api_group: "",
            resource: "services",
            verbs: &["get", "list", "watch", "patch"],
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "watch LoadBalancer Services; patch writes the ip-allocated-from-pool annotation",
        },
        Permission {
            api_group: "",
            resource: "services/status",
            verbs: WRITE_STATUS,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "write status.loadBalancer.ingress",
        },
        Permission {
            api_group: "",
            resource: "namespaces",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "namespace labels for serviceAllocation.namespaceSelectors",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "ipaddresspools",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "the pools to allocate from",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "ipaddresspools/status",
            verbs: WRITE_STATUS,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "pool counts and Ready condition",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgppeers",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "check BGPPeers for what the schema cannot (duplicates, objects older than a rule)",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgppeers/status",
            verbs: WRITE_STATUS,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "a BGPPeer's Ready condition",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgpadvertisements",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "check BGPAdvertisements against the pools and peers they name",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgpadvertisements/status",
            verbs: WRITE_STATUS,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "a BGPAdvertisement's Ready condition",
        },
        EVENTS,
        Permission {
            api_group: "coordination.k8s.io",
            resource: "leases",
            verbs: &["get", "create", "patch"],
            scope: Scope::SystemNamespace,
            resource_names: &[],
            reason: "leader election between controller replicas",
        },
        Permission {
            api_group: "",
            resource: "secrets",
            verbs: &["create"],
            scope: Scope::SystemNamespace,
            resource_names: &[],
            reason: "create the speakers' heartbeat key Secret with a random key when it is missing",
        },
        Permission {
            api_group: "",
            resource: "secrets",
            verbs: &["get"],
            scope: Scope::SystemNamespace,
            resource_names: &[crate::heartbeat_key::SECRET_NAME],
            reason: "whether the heartbeat key Secret exists and is usable",
        },
    ],
};

pub const SPEAKER: Component = Component {
    name: "speaker",
    permissions: &[
        Permission {
            api_group: "",
            resource: "services",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "the external IPs to announce",
        },
        Permission {
            api_group: "discovery.k8s.io",
            resource: "endpointslices",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "externalTrafficPolicy Local: only nodes with a ready endpoint announce",
        },
        Permission {
            api_group: "",
            resource: "nodes",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "node labels for nodeSelectors, the exclude label and NetworkUnavailable",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "ipaddresspools",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "which pool an IP belongs to",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "l2advertisements",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "which pools to announce, from which nodes and interfaces",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "servicel2statuses",
            verbs: &["get", "list", "watch", "create", "delete"],
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "say where each Service is announced; remove stale ones",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "servicel2statuses/status",
            verbs: WRITE_STATUS,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "node, interfaces and IPs of an announcement",
        },
        EVENTS,
        Permission {
            api_group: "coordination.k8s.io",
            resource: "leases",
            verbs: &["get", "list", "watch", "create", "update", "delete"],
            scope: Scope::SystemNamespace,
            resource_names: &[],
            reason: "per-node registrations: which speakers run, with their interfaces (liveness travels in heartbeats)",
        },
        Permission {
            api_group: "",
            resource: "secrets",
            verbs: READ,
            scope: Scope::SystemNamespace,
            resource_names: &[crate::heartbeat_key::SECRET_NAME],
            reason: "the cluster key that authenticates heartbeats (only that Secret)",
        },
        Permission {
            api_group: "",
            resource: "secrets",
            verbs: &["get"],
            scope: Scope::SystemNamespace,
            resource_names: &[],
            reason: "BGP passwords: the Secrets BGPPeers name, each read by name (never listed)",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgppeers",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "the routers to peer with, from which nodes",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgpadvertisements",
            verbs: READ,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "which pools to advertise over BGP, to which peers, with which communities",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgpsessionstates",
            verbs: &["get", "list", "watch", "create", "delete"],
            scope: Scope::SystemNamespace,
            resource_names: &[],
            reason: "one object per node and BGP peer: the session's state and last error",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "bgpsessionstates/status",
            verbs: WRITE_STATUS,
            scope: Scope::SystemNamespace,
            resource_names: &[],
            reason: "state, last error, advertised prefixes and BFD state of a session",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "servicebgpstatuses",
            verbs: &["get", "list", "watch", "create", "delete"],
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "say which nodes advertise each Service to which peers; remove stale ones",
        },
        Permission {
            api_group: "ferrolb.io",
            resource: "servicebgpstatuses/status",
            verbs: WRITE_STATUS,
            scope: Scope::Cluster,
            resource_names: &[],
            reason: "peers and prefixes of a Service's advertisement from a node",
        },
    ],
};

pub const COMPONENTS: [Component; 2] = [CONTROLLER, SPEAKER];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_scoped_permissions_stop_at_the_system_namespace() {
        assert!(SPEAKER.allows(
            "coordination.k8s.io",
            "leases",
            "update",
            Some(SYSTEM_NAMESPACE)
        ));
        assert!(!SPEAKER.allows("coordination.k8s.io", "leases", "update", Some("default")));
        assert!(!SPEAKER.allows("coordination.k8s.io", "leases", "update", None));
        assert!(CONTROLLER.allows("", "services/status", "patch", Some("shop")));
        assert!(!CONTROLLER.allows("", "services", "delete", Some("shop")));
        assert!(!SPEAKER.allows("", "services/status", "patch", Some("shop")));
        // Secrets: the speaker reads one, in FerroLB's namespace only.
        assert!(SPEAKER.allows("", "secrets", "watch", Some(SYSTEM_NAMESPACE)));
        assert!(!SPEAKER.allows("", "secrets", "get", Some("default")));
        assert!(!SPEAKER.allows("", "secrets", "create", Some(SYSTEM_NAMESPACE)));
        assert!(CONTROLLER.allows("", "secrets", "create", Some(SYSTEM_NAMESPACE)));
        assert!(!CONTROLLER.allows("", "secrets", "list", Some(SYSTEM_NAMESPACE)));
    }

    #[test]
    fn no_duplicate_resources_and_no_wildcards() {
        for component in COMPONENTS {
            let mut seen = std::collections::BTreeSet::new();
            for p in component.permissions {
                assert!(seen.insert((
                    p.api_group,
                    p.resource,
                    p.scope == Scope::Cluster,
                    p.resource_names
                )));
                assert!(!p.verbs.is_empty());
                // The API server cannot limit create to names that do not exist yet.
                assert!(p.resource_names.is_empty() || !p.verbs.contains(&"create"));
                assert!(!p.verbs.contains(&"*") && p.resource != "*");
            }
        }
    }
}
