//! Nodes as the election sees them.

use k8s_openapi::api::core::v1::Node;

use crate::election::NodeFacts;
use crate::election::node_interfaces::PublishedInterface;

/// The node's facts, with the interfaces its speaker published. None for a Node without a name.
pub fn node_facts(node: &Node, interfaces: Vec<PublishedInterface>) -> Option<NodeFacts> {
    let name = node.metadata.name.clone()?;
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        });
    Some(NodeFacts {
        name,
        labels: node.metadata.labels.clone().unwrap_or_default(),
        network_unavailable,
        interfaces,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn node(conditions: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                labels: Some([("zone".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status)| NodeCondition {
                            type_: type_.to_string(),
                            status: status.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn network_unavailable_only_when_true() {
        let facts = node_facts(&node(&[("Ready", "True")]), vec![]).unwrap();
        assert!(!facts.network_unavailable);
        assert_eq!(facts.labels.get("zone").map(String::as_str), Some("a"));
        for status in ["False", "Unknown"] {
            let facts = node_facts(&node(&[("NetworkUnavailable", status)]), vec![]).unwrap();
            assert!(!facts.network_unavailable, "{status}");
        }
        let facts = node_facts(&node(&[("NetworkUnavailable", "True")]), vec![]).unwrap();
        assert!(facts.network_unavailable);
        assert!(node_facts(&Node::default(), vec![]).is_none());
    }
}
