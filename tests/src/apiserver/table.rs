//! Server-side `meta.k8s.io/v1` Table output, as `kubectl get` asks for it.

use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

use super::events::{self, EventApi};
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

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn non_empty<'a>(first: &'a str, fallback: &'a str) -> &'a str {
    if first.is_empty() { fallback } else { first }
}

/// When an Event was first seen: `firstTimestamp`, or `eventTime` for
/// events.k8s.io-style Events.
fn event_first_seen(o: &Value) -> String {
    age(o["firstTimestamp"].as_str().or(o["eventTime"].as_str()))
}

/// When an Event was last seen and how often: the series when there is one,
/// else `lastTimestamp`/`count`, a count of 0 meaning a singleton.
fn event_last_seen_and_count(o: &Value) -> (String, i64) {
    if o["series"].is_object() {
        let last = age(o["series"]["lastObservedTime"].as_str());
        return (last, o["series"]["count"].as_i64().unwrap_or_default());
    }
    let last = match o["lastTimestamp"].as_str() {
        Some(t) => age(Some(t)),
        None => event_first_seen(o),
    };
    let count = o["count"].as_i64().unwrap_or_default();
    (last, if count == 0 { 1 } else { count })
}

/// kube-apiserver's Event columns, computed from the core form (both Event
/// APIs print the same table); priority 1 columns are what `-o wide` adds.
fn core_event_columns() -> Vec<Column> {
    vec![
        builtin("Last Seen", "string", 0, |o| {
            json!(event_last_seen_and_count(o).0)
        }),
        builtin("Type", "string", 0, |o| json!(text(o, "/type"))),
        builtin("Reason", "string", 0, |o| json!(text(o, "/reason"))),
        builtin("Object", "string", 0, |o| {
            let kind = text(o, "/involvedObject/kind").to_lowercase();
            let name = text(o, "/involvedObject/name");
            json!(if name.is_empty() {
                kind
            } else {
                format!("{kind}/{name}")
            })
        }),
        builtin("Subobject", "string", 1, |o| {
            json!(text(o, "/involvedObject/fieldPath"))
        }),
        builtin("Source", "string", 1, |o| {
            let component = non_empty(text(o, "/source/component"), text(o, "/reportingComponent"));
            let instance = non_empty(text(o, "/source/host"), text(o, "/reportingInstance"));
            json!(if instance.is_empty() {
                component.to_string()
            } else {
                format!("{component}, {instance}")
            })
        }),
        builtin("Message", "string", 0, |o| {
            json!(text(o, "/message").trim())
        }),
        builtin("First Seen", "string", 1, |o| json!(event_first_seen(o))),
        builtin("Count", "string", 1, |o| {
            json!(event_last_seen_and_count(o).1)
        }),
        builtin("Name", "string", 1, name_cell),
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
        ("", "events") | ("events.k8s.io", "events") => core_event_columns(),
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
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| match EventApi::of(rt) {
            // events.k8s.io Events print from the core form, as the one
            // storage behind both APIs prints them.
            Some(EventApi::EventsV1) => match events::to_storage(EventApi::EventsV1, o) {
                Ok(incoming) => row(&columns, &incoming.stored),
                Err(_) => row(&columns, o),
            },
            _ => row(&columns, o),
        })
        .collect();
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
    fn both_event_apis_print_the_core_columns() {
        let registry = super::super::resources::Registry::default();
        let stored = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "ns"},
            "involvedObject": {"kind": "Service", "name": "web", "fieldPath": "spec"},
            "reason": "IPAllocated", "message": " Assigned ", "type": "Normal",
            "source": {}, "firstTimestamp": null, "lastTimestamp": null,
            "eventTime": "2026-01-02T03:04:05.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-02T03:09:05.000000Z"},
            "reportingComponent": "ferrolb-controller", "reportingInstance": "ctl-0"});
        for (group, object) in [
            ("", stored.clone()),
            ("events.k8s.io", events::to_api(EventApi::EventsV1, &stored)),
        ] {
            let Some(rt) = registry.find(group, "v1", "events") else {
                panic!("no events in {group:?}");
            };
            let table = table(rt, &[object], json!({}));
            let names: Vec<&str> = table["columnDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["priority"] == 0)
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert_eq!(
                names,
                vec!["Last Seen", "Type", "Reason", "Object", "Message"]
            );
            let cells = &table["rows"][0]["cells"];
            assert_eq!(cells[1], "Normal", "{group}");
            assert_eq!(cells[3], "service/web", "{group}");
            assert_eq!(cells[4], "spec", "{group}");
            assert_eq!(cells[5], "ferrolb-controller, ctl-0", "{group}");
            assert_eq!(cells[6], "Assigned", "{group}");
            assert_eq!(cells[8], 3, "{group}");
            assert_eq!(cells[9], "web.1", "{group}");
        }
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}
