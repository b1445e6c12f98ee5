//! CustomResourceDefinitions: turning a CRD into served types, its status
//! conditions, and validating custom resources against the CRD schema
//! (OpenAPI structure, defaults, pruning and `x-kubernetes-validations` CEL).

use serde_json::{Value, json};

use super::cel_cost;
use super::error::Cause;
use super::resources::{CustomTypeInfo, ResourceType};

/// Checks the parts of a CRD spec the double relies on, and its CEL rules:
/// they must compile and stay within kube-apiserver's estimated cost
/// budgets. `old` is the stored CRD on update.
pub fn validate_crd(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::invalid("spec.group", "Required value"));
    }
    if plural.is_empty() {
        causes.push(Cause::invalid("spec.names.plural", "Required value"));
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        causes.push(Cause::invalid("spec.names.kind", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        causes.push(Cause::invalid(
            "spec.scope",
            "Unsupported value: supported values: \"Cluster\", \"Namespaced\"",
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::invalid("spec.versions", "Required value"));
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    causes.extend(cel_cost::crd_causes(crd, old));
    causes
}

/// Served types of a CRD, one per served version.
pub fn types_of(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let kind = text(&names["kind"]);
    let singular = match names["singular"].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => kind.to_lowercase(),
    };
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] != false)
        .map(|version| ResourceType {
            group: text(&spec["group"]),
            version: text(&version["name"]),
            plural: text(&names["plural"]),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced: spec["scope"] != "Cluster",
            short_names: list(&names["shortNames"]),
            categories: list(&names["categories"]),
            has_status: version
                .pointer("/subresources/status")
                .is_some_and(|s| !s.is_null()),
            custom: Some(CustomTypeInfo {
                schema: version.pointer("/schema/openAPIV3Schema").cloned(),
                printer_columns: version["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                crd_name: text(&crd["metadata"]["name"]),
            }),
        })
        .collect()
}

/// Status kube-apiserver reports once a CRD is being served.
pub fn established_status(crd: &Value, now: &str) -> Value {
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": stored,
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value at a field path like `spec.addresses[0]`.
fn value_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            current = current.get(key)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let index: usize = index.trim_end_matches(']').parse().ok()?;
            current = current.get(index)?;
        }
    }
    Some(current)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// OpenAPI structural checks: type, required, enum, bounds; removes fields
/// the schema does not declare unless it preserves unknown fields.
/// What schema admission found besides errors: fields it pruned.
#[derive(Debug, Default)]
struct Findings {
    causes: Vec<Cause>,
    pruned: Vec<String>,
}

fn check_and_prune(schema: &Value, value: &mut Value, path: &str, findings: &mut Findings) {
    let causes = &mut findings.causes;
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !matches!(type_name(value), "integer" | "string") {
            causes.push(Cause::invalid(
                path,
                format!(
                    "Invalid value: \"{}\": must be an integer or a string",
                    type_name(value)
                ),
            ));
        }
        return;
    }
    if let Some(expected) = schema["type"].as_str() {
        let actual = type_name(value);
        let matches = actual == expected || (expected == "number" && actual == "integer");
        if !matches {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
                field: path.into(),
            });
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let options: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                options.join(", ")
            ),
            field: path.into(),
        });
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && number < min
        {
            causes.push(Cause::invalid(
                path,
                format!("Invalid value: {value}: {path} in body should be greater than or equal to {min}"),
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && number > max
        {
            causes.push(Cause::invalid(
                path,
                format!(
                    "Invalid value: {value}: {path} in body should be less than or equal to {max}"
                ),
            ));
        }
    }
    if let (Some(text), Some(max)) = (value.as_str(), schema["maxLength"].as_u64())
        && text.chars().count() as u64 > max
    {
        causes.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {max} bytes"),
            field: path.into(),
        });
    }
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(key) = required.as_str()
                    && !map.contains_key(key)
                {
                    causes.push(Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value".into(),
                        field: child_path(path, key),
                    });
                }
            }
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_schema = properties.and_then(|p| p.get(&key)).or(additional);
                match child_schema {
                    Some(child_schema) => {
                        if let Some(child) = map.get_mut(&key) {
                            check_and_prune(child_schema, child, &child_path(path, &key), findings);
                        }
                    }
                    None if preserve || schema["x-kubernetes-embedded-resource"] == true => {}
                    None => {
                        map.remove(&key);
                        findings.pruned.push(child_path(path, &key));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    check_and_prune(item_schema, item, &format!("{path}[{i}]"), findings);
                }
            }
        }
        _ => {}
    }
}

/// A custom resource as it is stored, and the unknown fields pruned from it.
pub struct Admitted {
    pub object: Value,
    pub pruned_fields: Vec<String>,
}

/// Defaults, prunes and validates a custom resource; returns the object as
/// it is stored, or the causes of a 422.
pub fn admit_custom_resource(
    info: &CustomTypeInfo,
    object: &Value,
    old_object: Option<&Value>,
) -> Result<Admitted, Vec<Cause>> {
    let Some(schema) = &info.schema else {
        return Ok(Admitted {
            object: object.clone(),
            pruned_fields: Vec::new(),
        });
    };
    let mut defaulted = kube_cel::apply_defaults(schema, object);
    let mut findings = Findings::default();
    // apiVersion/kind/metadata are never pruned at the root.
    let mut root_schema = schema.clone();
    if let Some(properties) = root_schema
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})))
        && let Some(properties) = properties.as_object_mut()
    {
        for key in ["apiVersion", "kind", "metadata"] {
            properties.insert(
                key.into(),
                json!({"x-kubernetes-preserve-unknown-fields": true}),
            );
        }
    }
    if let Some(root) = root_schema.as_object_mut() {
        root.remove("type");
        root.remove("required");
    }
    check_and_prune(&root_schema, &mut defaulted, "", &mut findings);
    let Findings {
        mut causes,
        pruned: pruned_fields,
    } = findings;
    if !causes.is_empty() {
        return Err(causes);
    }
    let validator = kube_cel::Validator::new();
    if let Err(errors) = validator.validate(schema, &defaulted, old_object) {
        for error in errors {
            // A rule kube-cel cannot evaluate would be evaluated by
            // kube-apiserver; rejecting valid objects would be worse than
            // not checking that rule.
            if error.kind == kube_cel::ErrorKind::UnsupportedReference {
                continue;
            }
            let field = error.field_path.trim_start_matches('.').to_string();
            let node_type = value_at(&defaulted, &field).map_or("object", type_name);
            causes.push(Cause {
                reason: error
                    .reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "FieldValueInvalid".into()),
                message: format!("Invalid value: \"{node_type}\": {}", error.message),
                field,
            });
        }
        if !causes.is_empty() {
            return Err(causes);
        }
    }
    Ok(Admitted {
        object: defaulted,
        pruned_fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_at_walks_keys_and_indexes() {
        let object = json!({"spec": {"addresses": ["198.51.100.0/24"]}});
        assert_eq!(
            value_at(&object, "spec.addresses[0]"),
            Some(&json!("198.51.100.0/24"))
        );
        assert_eq!(value_at(&object, "spec.missing"), None);
        assert_eq!(value_at(&object, ""), Some(&object));
    }
}
