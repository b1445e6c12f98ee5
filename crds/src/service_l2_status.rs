//! `ServiceL2Status`: where a Service's external IPs are announced, written by the owning speaker.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::l2_advertisement::InterfaceName;
use crate::schema::{self, OBJECT_NAME_PATTERN};

/// Which node announces a Service's external IPs, on which interfaces. Lives in the Service's
/// namespace and is owned by the Service, so it goes when the Service goes.
// Each printcolumn(...) repeats the same keys, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    singular = "servicel2status",
    shortname = "l2status",
    category = "ferrolb",
    namespaced,
    status = "ServiceL2StatusStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Where a LoadBalancer Service's external IPs are announced with ARP/NDP. Written by the speaker that owns them.",
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "The node answering ARP/NDP for the IPs"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".status.serviceName",
        description = "The Service announced"
    ),
    printcolumn(
        name = "IPs",
        type_ = "string",
        json_path = ".status.ips",
        description = "The external IPs announced"
    ),
    printcolumn(
        name = "Interfaces",
        type_ = "string",
        json_path = ".status.interfaces",
        priority = 1,
        description = "Interfaces announced on"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ServiceL2StatusSpec {}

/// What the announcing speaker reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    /// The node that answers ARP/NDP for the Service's IPs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub node: String,
    /// The Service (in this object's namespace) whose IPs are announced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63))]
    pub service_name: String,
    /// The interfaces the node announces on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "interfaces_schema")]
    pub interfaces: Vec<InterfaceName>,
    /// The external IPs announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "ips_schema")]
    pub ips: Vec<String>,
}

fn interfaces_schema(generator: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "items": generator.subschema_for::<InterfaceName>(),
    }))
}

fn ips_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "maxItems": 2,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 39,
            "x-kubernetes-validations": [schema::rule_with_message_expression(
                "isIP(self)",
                "self + ' is not an IP address'",
            )],
        },
    }))
}
