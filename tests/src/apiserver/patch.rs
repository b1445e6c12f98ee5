//! Patch application: JSON merge patch, JSON patch, an approximation of
//! strategic merge patch, and the merge step of server-side apply.
//!
//! Strategic merge patch differs from kube-apiserver on purpose: instead of the
//! Go struct tags, a fixed table maps list field names to their merge keys (see
//! [`list_merge_key`]); lists not in the table are replaced as in JSON merge
//! patch. The directives `$patch: delete|replace` (in maps and list items),
//! `$deleteFromPrimitiveList/<field>`, `$retainKeys` and `$setElementOrder/<field>` are
//! honoured, and merged lists come out in kube-apiserver's order (see [`merge_keyed_list`]).

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut result = target.clone();
    json_patch::merge(&mut result, patch);
    result
}

pub fn json_patch(target: &Value, patch: &Value) -> ApiResult<Value> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    let mut result = target.clone();
    // kube-apiserver answers a failed `test` (or a bad path) with 422.
    json_patch::patch(&mut result, &operations).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })?;
    Ok(result)
}

/// Merge keys of the list fields FerroLB and its tests patch strategically.
/// `None` means the list is atomic (replaced as a whole).
fn list_merge_key(field: &str, first_item: Option<&Value>) -> Option<&'static [&'static str]> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        "conditions" => Some(&["type"]),
        "ownerReferences" => Some(&["uid"]),
        "addresses" => Some(&["type"]),
        "ports" => {
            // Container ports merge on containerPort, service ports on port.
            let container_port = first_item.and_then(|i| i.get("containerPort")).is_some();
            if container_port {
                Some(&["containerPort", "protocol"])
            } else {
                Some(&["port", "protocol"])
            }
        }
        _ => None,
    }
}

/// Lists of scalars that strategic merge patch treats as sets.
fn is_scalar_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn items_match(a: &Value, b: &Value, keys: &[&str]) -> bool {
    let mut compared = false;
    for key in keys {
        match (a.get(*key), b.get(*key)) {
            (Some(x), Some(y)) => {
                compared = true;
                if x != y {
                    return false;
                }
            }
            // protocol defaults to TCP; a missing value matches the default
            (None, Some(v)) | (Some(v), None) if *key == "protocol" => {
                if v != "TCP" {
                    return false;
                }
            }
            (None, None) => {}
            _ => return false,
        }
    }
    compared
}

pub fn strategic_merge_patch(target: &Value, patch: &Value) -> Value {
    strategic_merge_value(Some(target), patch, "")
}

fn strategic_merge_value(target: Option<&Value>, patch: &Value, field: &str) -> Value {
    strategic_merge_in_order(target, patch, field, None)
}

/// `order` is the patch's `$setElementOrder/<field>` list, if it has one.
fn strategic_merge_in_order(
    target: Option<&Value>,
    patch: &Value,
    field: &str,
    order: Option<&[Value]>,
) -> Value {
    match patch {
        Value::Object(patch_map) => {
            if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replaced = patch_map.clone();
                replaced.remove("$patch");
                return strip_directives(Value::Object(replaced));
            }
            let mut result = match target {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            if let Some(Value::Array(retain)) = patch_map.get("$retainKeys") {
                let retain: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
                result.retain(|k, _| retain.contains(&k.as_str()));
            }
            for (key, patch_value) in patch_map {
                if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
                    continue;
                }
                if let Some(list_field) = key.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(existing)), Value::Array(remove)) =
                        (result.get_mut(list_field), patch_value)
                    {
                        existing.retain(|v| !remove.contains(v));
                    }
                    continue;
                }
                if patch_value.is_null() {
                    result.remove(key);
                    continue;
                }
                let order = patch_map
                    .get(&format!("$setElementOrder/{key}"))
                    .and_then(Value::as_array)
                    .map(Vec::as_slice);
                let merged = strategic_merge_in_order(result.get(key), patch_value, key, order);
                result.insert(key.clone(), merged);
            }
            Value::Object(result)
        }
        Value::Array(patch_items) => {
            let existing = match target {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            };
            if patch_items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Value::Array(
                    patch_items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .map(strip_directives)
                        .collect(),
                );
            }
            if is_scalar_set(field) {
                let mut merged = existing;
                for item in patch_items {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
                return Value::Array(merged);
            }
            let Some(keys) = list_merge_key(field, patch_items.first().or(existing.first())) else {
                return strip_directives(patch.clone());
            };
            Value::Array(merge_keyed_list(&existing, patch_items, keys, order))
        }
        other => other.clone(),
    }
}

/// Merges a list whose items are matched by `keys`, and orders the result as kube-apiserver
/// does: the patch's items in the patch's order (or `$setElementOrder`'s), with the items only
/// the server had slotted back in before the first patch item that came after them on the
/// server. A new item therefore goes before the server's items, not after them.
fn merge_keyed_list(
    existing: &[Value],
    patch_items: &[Value],
    keys: &[&str],
    order: Option<&[Value]>,
) -> Vec<Value> {
    let mut merged = existing.to_vec();
    for item in patch_items {
        let position = merged.iter().position(|e| items_match(e, item, keys));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                merged.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let updated = strategic_merge_value(Some(&merged[i]), item, "");
                merged[i] = updated;
            }
            (None, false) => merged.push(strip_directives(item.clone())),
        }
    }
    let order = order.unwrap_or(patch_items);
    let position_in =
        |list: &[Value], item: &Value| list.iter().position(|o| items_match(o, item, keys));
    let (mut from_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position_in(order, item).is_some());
    from_patch.sort_by_key(|item| position_in(order, item));
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let (mut server, mut patched) = (
        server_only.into_iter().peekable(),
        from_patch.into_iter().peekable(),
    );
    loop {
        let take_server = match (server.peek(), patched.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(s), Some(p)) => matches!(
                (position_in(existing, s), position_in(existing, p)),
                (Some(a), Some(b)) if a < b
            ),
        };
        let next = if take_server {
            server.next()
        } else {
            patched.next()
        };
        out.extend(next);
    }
    out
}

fn strip_directives(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_lists_by_key() {
        let target = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}],
            "selector": {"a": "b"}}, "metadata": {"finalizers": ["x"]}});
        let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]},
            "metadata": {"finalizers": ["y"]}});
        let merged = strategic_merge_patch(&target, &patch);
        assert_eq!(
            merged["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "name": "http", "targetPort": 8080}, {"port": 443}])
        );
        assert_eq!(merged["metadata"]["finalizers"], json!(["x", "y"]));
        // Without $setElementOrder a new item goes first, as on kube-apiserver.
        let added = json!({"spec": {"ports": [{"name": "https", "port": 8443}]}});
        let with_new = strategic_merge_patch(&merged, &added);
        let ports: Vec<&Value> = with_new["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["port"])
            .collect();
        assert_eq!(ports, [&json!(8443), &json!(80), &json!(443)]);
        // An item the patch changes keeps its place among the server's items.
        let changed = json!({"spec": {"ports": [{"port": 443, "name": "https"}]}});
        assert_eq!(
            strategic_merge_patch(&merged, &changed)["spec"]["ports"][1]["name"],
            "https"
        );
        let delete = json!({"spec": {"ports": [{"port": 80, "$patch": "delete"}]}});
        assert_eq!(
            strategic_merge_patch(&merged, &delete)["spec"]["ports"],
            json!([{"port": 443}])
        );
    }

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let target = json!({"a": 1});
        let patch = json!([{"op": "test", "path": "/a", "value": 2}]);
        assert_eq!(
            json_patch(&target, &patch).map_err(|e| e.code).err(),
            Some(422)
        );
    }
}
