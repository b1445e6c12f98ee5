//! Server-side apply, approximated.
//!
//! Differences from kube-apiserver, on purpose:
//! - The applied configuration is merged into the live object with the
//!   strategic-merge rules of [`super::patch`] (list merge keys from a fixed
//!   table), not with the structured-merge-diff type schema.
//! - Ownership is tracked per manager as the set of map keys it applied
//!   (lists are owned whole). Re-applying without a field this manager
//!   applied before removes that field. Other managers' `Update` entries are
//!   not recorded, so there are never ownership conflicts: `force` is
//!   accepted and changes nothing.

use serde_json::{Map, Value, json};

use super::patch::strategic_merge_patch;

/// `fieldsV1` for an applied configuration: `f:<key>` for each map key.
pub fn fields_of(applied: &Value) -> Value {
    match applied {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind"))
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (format!("f:{k}"), fields_of_child(v)))
                .collect(),
        ),
        _ => json!({}),
    }
}

fn fields_of_child(value: &Value) -> Value {
    match value {
        Value::Object(_) => fields_of(value),
        _ => json!({}),
    }
}

/// Removes from `object` the fields present in `previous` (this manager's
/// last applied field set) that the new applied configuration dropped.
fn remove_dropped(object: &mut Value, previous: &Value, applied: &Value) {
    let (Some(previous), Some(target)) = (previous.as_object(), object.as_object_mut()) else {
        return;
    };
    for (field, previous_children) in previous {
        let Some(key) = field.strip_prefix("f:") else {
            continue;
        };
        match applied.get(key) {
            None => {
                target.remove(key);
            }
            Some(applied_child) if applied_child.is_object() => {
                if let Some(child) = target.get_mut(key) {
                    remove_dropped(child, previous_children, applied_child);
                }
            }
            Some(_) => {}
        }
    }
}

fn previous_fields(object: &Value, manager: &str) -> Value {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["manager"] == manager && entry["operation"] == "Apply")
        .map(|entry| entry["fieldsV1"].clone())
        .unwrap_or_else(|| json!({}))
}

/// Records `manager` as the Apply owner of `fields` in `object`'s managedFields.
pub fn record_manager(
    object: &mut Value,
    manager: &str,
    api_version: &str,
    fields: Value,
    now: &str,
) {
    let subresource_free_entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    let mut entries: Vec<Value> = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Apply"));
    entries.push(subresource_free_entry);
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]["managedFields"] = Value::Array(entries);
}

/// The object after `manager` applies `applied` to `live`.
pub fn apply_to(live: &Value, applied: &Value, manager: &str) -> Value {
    let previous = previous_fields(live, manager);
    let mut merged = strategic_merge_patch(live, applied);
    remove_dropped(&mut merged, &previous, applied);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reapply_removes_dropped_fields() {
        let mut live = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}});
        let first = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}});
        record_manager(&mut live, "me", "v1", fields_of(&first), "now");
        let second = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let merged = apply_to(&live, &second, "me");
        assert_eq!(merged["metadata"]["labels"], json!({"x": "1"}));
    }
}
