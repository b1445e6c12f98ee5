//! Building blocks for the OpenAPI schemas of the CRDs.
//!
//! Validation lives in the schema so the API server rejects bad objects at `kubectl apply` time.
//! Every list and string a CEL rule looks at is bounded (`maxItems`, `maxLength`): the API server
//! estimates the worst-case cost of each rule from those bounds and refuses CRDs without them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Value, json};

/// A CEL rule with a fixed message.
pub fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// A CEL rule whose message is itself a CEL expression, so it can quote the offending value.
pub fn rule_with_message_expression(rule: &str, message_expression: &str) -> Value {
    json!({ "rule": rule, "messageExpression": message_expression })
}

/// Turns a JSON object literal into a schema.
pub fn from_json(value: Value) -> Schema {
    Schema::try_from(value).unwrap_or_default()
}

/// Adds CEL rules to a derived schema (for `#[schemars(transform = ...)]`).
pub fn add_rules(schema: &mut Schema, rules: impl IntoIterator<Item = Value>) {
    let object = schema.ensure_object();
    let entry = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = entry {
        list.extend(rules);
    }
}

/// A DNS-1123 subdomain, as Kubernetes object names are (pools, namespaces are labels but fit).
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 label, as namespace names are.
pub const NAMESPACE_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A label value: empty, or at most 63 characters starting and ending alphanumeric.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

/// A list of object names with no duplicates.
pub fn name_list(max_items: u32, pattern: &str, max_length: u32, description: &str) -> Schema {
    from_json(json!({
        "type": "array",
        "description": description,
        "maxItems": max_items,
        "x-kubernetes-list-type": "set",
        "items": { "type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern },
    }))
}

/// A list of status conditions keyed by type, with the item schema inline so the list-map
/// markers sit beside a concrete item schema.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut items = generator.subschema_for::<Condition>();
    if let Some(reference) = items
        .get("$ref")
        .and_then(|r| r.as_str())
        .map(str::to_owned)
    {
        let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
        if let Some(definition) = generator.definitions().get(&name) {
            items = from_json(definition.clone());
        }
    }
    from_json(json!({
        "type": "array",
        "maxItems": 8,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": items,
    }))
}
