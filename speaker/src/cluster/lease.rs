//! The speakers' Leases: `ferrolb-speaker-<node>` in the speakers' namespace, held by the node
//! name, carrying the node's interfaces in an annotation.

use k8s_openapi::api::coordination::v1::Lease;

use crate::election::node_interfaces::{
    INTERFACES_ANNOTATION, PublishedInterface, parse_annotation,
};

pub const LEASE_PREFIX: &str = "ferrolb-speaker-";

/// The name of `node`'s Lease.
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

/// What one speaker Lease says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseObservation {
    pub node: String,
    /// The resourceVersion: a new one is a renewal.
    pub version: String,
    /// The node holds it (holderIdentity is the node name); false once given up.
    pub held: bool,
    /// The published interfaces; empty when the annotation is missing or unreadable, which
    /// makes the node no candidate rather than guessing where it could announce.
    pub interfaces: Vec<PublishedInterface>,
    /// Why the annotation could not be read, to report it.
    pub interfaces_error: Option<String>,
}

/// Reads a speaker Lease; None for other Leases in the namespace or ones without a version.
pub fn observe(lease: &Lease) -> Option<LeaseObservation> {
    let node = lease.metadata.name.as_deref()?.strip_prefix(LEASE_PREFIX)?;
    if node.is_empty() {
        return None;
    }
    let version = lease.metadata.resource_version.clone()?;
    let held = lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        == Some(node);
    let annotation = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(INTERFACES_ANNOTATION));
    let (interfaces, interfaces_error) = match annotation.map(|text| parse_annotation(text)) {
        Some(Ok(interfaces)) => (interfaces, None),
        Some(Err(error)) => (
            Vec::new(),
            Some(format!("{INTERFACES_ANNOTATION}: {error}")),
        ),
        None => (
            Vec::new(),
            Some(format!("{INTERFACES_ANNOTATION} is missing")),
        ),
    };
    Some(LeaseObservation {
        node: node.to_owned(),
        version,
        held,
        interfaces,
        interfaces_error,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn lease(name: &str, holder: Option<&str>, annotation: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some("42".into()),
                annotations: annotation
                    .map(|text| [(INTERFACES_ANNOTATION.to_string(), text.to_string())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_held_speaker_lease_yields_its_node_and_interfaces() {
        let text = r#"[{"name":"eth0","mac":"02:00:00:00:00:01","subnets":["198.51.100.5/24"]}]"#;
        let seen = observe(&lease("ferrolb-speaker-node-a", Some("node-a"), Some(text))).unwrap();
        assert_eq!(seen.node, "node-a");
        assert_eq!(seen.version, "42");
        assert!(seen.held);
        assert_eq!(seen.interfaces.len(), 1);
        assert_eq!(seen.interfaces_error, None);
        assert_eq!(lease_name("node-a"), "ferrolb-speaker-node-a");
    }

    #[test]
    fn released_foreign_and_unreadable_leases() {
        let released = observe(&lease("ferrolb-speaker-node-a", None, Some("[]"))).unwrap();
        assert!(!released.held);
        let impostor =
            observe(&lease("ferrolb-speaker-node-a", Some("node-b"), Some("[]"))).unwrap();
        assert!(!impostor.held);
        assert_eq!(observe(&lease("ferrolb-controller", Some("x"), None)), None);
        assert_eq!(observe(&lease("ferrolb-speaker-", Some(""), None)), None);
        let garbled = observe(&lease("ferrolb-speaker-node-a", Some("node-a"), Some("{"))).unwrap();
        assert!(garbled.interfaces.is_empty());
        assert!(garbled.interfaces_error.is_some());
        let bare = observe(&lease("ferrolb-speaker-node-a", Some("node-a"), None)).unwrap();
        assert!(bare.interfaces_error.unwrap().contains("missing"));
    }
}
