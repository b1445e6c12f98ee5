//! Server-side `meta.k8s.io/v1` Table output, as `kubectl get` asks for it.

use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

use super::resources::ResourceType;

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

struct Column {
    name: String,
    kind: String,
    priority: u64,
    description: String,
    /// JSONPath (CRD printer columns) or a built-in cell function.
    source: CellSource,
}

enum CellSource {
    JsonPath(String),
    BuiltIn(fn(&Value) -> Value),
}

fn builtin(name: &str, kind: &str, priority: u64, cell: fn(&Value) -> Value) -> Column {
    Column {
        name: name.into(),
        kind: kind.into(),
        priority,
        description: String::new(),
        source: CellSource::BuiltIn(cell),
    }
}

fn name_cell(o: &Value) -> Value {
    o["metadata"]["name"].clone()
}

fn age_cell(o: &Value) -> Value {
    json!(age(o["metadata"]["creationTimestamp"].as_str()))
}

/// kubectl's short human duration ("5s", "3m2s", "4h", "12d").
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn age(timestamp: Option<&str>) -> String {
    let Some(parsed) = timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    human_duration(jiff::Timestamp::now().as_second() - parsed.as_second())
}

fn join_strings(values: impl Iterator<Item = String>, empty: &str) -> Value {
    let joined: Vec<String> = values.collect();
    if joined.is_empty() {
        json!(empty)
    } else {
        json!(joined.join(","))
    }
}

fn service_columns() -> Vec<Column> {
    vec![
        builtin("Name", "string", 0, name_cell),
        builtin("Type", "string", 0, |o| o["spec"]["type"].clone()),
        builtin("Cluster-IP", "string", 0, |o| {
            json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>"))
        }),
        builtin("External-IP", "string", 0, |o| {
            let ingress = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .map(str::to_string);
            let external = o["spec"]["externalIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string);
            let all: Vec<String> = ingress.chain(external).collect();
            if all.is_empty() && o["spec"]["type"] == "LoadBalancer" {
                json!("<pending>")
            } else {
                join_strings(all.into_iter(), "<none>")
            }
        }),
        builtin("Port(s)", "string", 0, |o| {
            let ports = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_u64() {
                        Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                });
            join_strings(ports, "<none>")
        }),
        builtin("Age", "string", 0, age_cell),
        builtin("Selector", "string", 1, |o| {
            let selector = o["spec"]["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()));
            join_strings(selector, "<none>")
        }),
    ]
}

fn core_event_columns() -> Vec<Column> {
    vec![
        builtin("Last Seen", "string", 0, |o| {
            let last = o["lastTimestamp"]
                .as_str()
                .or(o["eventTime"].as_str())
                .or(o["metadata"]["creationTimestamp"].as_str());
            json!(age(last))
        }),
        builtin("Type", "string", 0, |o| o["type"].clone()),
        builtin("Reason", "string", 0, |o| o["reason"].clone()),
        builtin("Object", "string", 0, |o| {
            json!(format!(
                "{}/{}",
                o["involvedObject"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase(),
                o["involvedObject"]["name"].as_str().unwrap_or_default()
            ))
        }),
        builtin("Message", "string", 0, |o| o["message"].clone()),
    ]
}

fn columns_for(rt: &ResourceType) -> Vec<Column> {
    if let Some(custom) = &rt.custom
        && !custom.printer_columns.is_empty()
    {
        let mut columns = vec![builtin("Name", "string", 0, name_cell)];
        for c in &custom.printer_columns {
            columns.push(Column {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                kind: c["type"].as_str().unwrap_or("string").to_string(),
                priority: c["priority"].as_u64().unwrap_or(0),
                description: c["description"].as_str().unwrap_or_default().to_string(),
                source: CellSource::JsonPath(
                    c["jsonPath"].as_str().unwrap_or_default().to_string(),
                ),
            });
        }
        return columns;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => service_columns(),
        ("", "events") => core_event_columns(),
        ("", "namespaces") => vec![
            builtin("Name", "string", 0, name_cell),
            builtin("Status", "string", 0, |o| o["status"]["phase"].clone()),
            builtin("Age", "string", 0, age_cell),
        ],
        ("", "configmaps") => vec![
            builtin("Name", "string", 0, name_cell),
            builtin("Data", "integer", 0, |o| {
                json!(
                    o["data"].as_object().map_or(0, |d| d.len())
                        + o["binaryData"].as_object().map_or(0, |d| d.len())
                )
            }),
            builtin("Age", "string", 0, age_cell),
        ],
        ("", "nodes") => vec![
            builtin("Name", "string", 0, name_cell),
            builtin("Status", "string", 0, |o| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "Ready")
                    .is_some_and(|c| c["status"] == "True");
                json!(if ready { "Ready" } else { "NotReady" })
            }),
            builtin("Age", "string", 0, age_cell),
        ],
        ("coordination.k8s.io", "leases") => vec![
            builtin("Name", "string", 0, name_cell),
            builtin("Holder", "string", 0, |o| {
                json!(o["spec"]["holderIdentity"].as_str().unwrap_or_default())
            }),
            builtin("Age", "string", 0, age_cell),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => vec![
            builtin("Name", "string", 0, name_cell),
            builtin("Created At", "date", 0, |o| {
                o["metadata"]["creationTimestamp"].clone()
            }),
        ],
        _ => vec![
            builtin("Name", "string", 0, name_cell),
            builtin("Age", "string", 0, age_cell),
        ],
    }
}

fn jsonpath_cell(object: &Value, path: &str, kind: &str) -> Value {
    let full = if path.starts_with('$') {
        path.to_string()
    } else {
        format!("${path}")
    };
    let found = object
        .query(&full)
        .ok()
        .and_then(|values| values.first().map(|v| (*v).clone()));
    match (found, kind) {
        (None, _) | (Some(Value::Null), _) => Value::Null,
        (Some(Value::String(s)), "date") => json!(age(Some(&s))),
        (Some(Value::String(s)), _) => json!(s),
        (Some(v @ (Value::Number(_) | Value::Bool(_))), _) => v,
        (Some(v), _) => json!(v.to_string()),
    }
}

fn row(columns: &[Column], object: &Value) -> Value {
    let cells: Vec<Value> = columns
        .iter()
        .map(|c| match &c.source {
            CellSource::BuiltIn(cell) => cell(object),
            CellSource::JsonPath(path) => jsonpath_cell(object, path, &c.kind),
        })
        .collect();
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        },
    })
}

/// A Table of `objects`; `list_metadata` is the list's metadata (resourceVersion, continue).
pub fn table(rt: &ResourceType, objects: &[Value], list_metadata: Value) -> Value {
    let columns = columns_for(rt);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            let kind = if c.kind == "date" {
                "string"
            } else {
                c.kind.as_str()
            };
            json!({"name": c.name, "type": kind, "format": format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(&columns, o)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}
