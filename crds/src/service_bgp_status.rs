//! `ServiceBGPStatus`: which peers one node advertises a Service's external IPs to.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::schema::{self, OBJECT_NAME_PATTERN};

/// The ServiceBGPStatus of `service` advertised from `node`: "<service>-<node>", shortened with
/// a hash where that exceeds an object name's 253 characters.
pub fn object_name(service: &str, node: &str) -> String {
    crate::naming::bounded(&format!("{service}-{node}"), 253)
}

/// One per Service and advertising node, in the Service's namespace, owned by the Service (so it
/// goes with the Service) and written by that node's speaker. Several nodes advertise one
/// Service at once (ECMP); each writes its own object, so no two speakers write the same one.
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    plural = "servicebgpstatuses",
    singular = "servicebgpstatus",
    shortname = "bgpstatus",
    category = "ferrolb",
    namespaced,
    status = "ServiceBGPStatusStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Which BGPPeers one node advertises a LoadBalancer Service's external IPs to. Written by that node's speaker.",
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "The advertising node"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".status.serviceName",
        description = "The Service advertised"
    ),
    printcolumn(
        name = "Peers",
        type_ = "string",
        json_path = ".status.peers",
        description = "BGPPeers with an Established session that carry the routes"
    ),
    printcolumn(
        name = "Prefixes",
        type_ = "string",
        json_path = ".status.prefixes",
        description = "The prefixes advertised"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ServiceBGPStatusSpec {}

/// What the advertising speaker reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBGPStatusStatus {
    /// The node that advertises.
    #[schemars(length(max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub node: String,
    /// The Service (in this object's namespace).
    #[schemars(length(max = 63))]
    pub service_name: String,
    /// The BGPPeers the routes are advertised to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "peers_schema")]
    pub peers: Vec<String>,
    /// The prefixes advertised (the Service's IPs, or the aggregates holding them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "prefixes_schema")]
    pub prefixes: Vec<String>,
}

fn peers_schema(_: &mut SchemaGenerator) -> Schema {
    schema::name_list(
        64,
        OBJECT_NAME_PATTERN,
        253,
        "The BGPPeers the routes are advertised to.",
    )
}

fn prefixes_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "maxItems": 2,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 43,
            "x-kubernetes-validations": [schema::rule_with_message_expression(
                "isCIDR(self)",
                "self + ' is not an IP prefix'",
            )],
        },
    }))
}
