//! Helpers shared by the conformance test files.
#![allow(dead_code)]

use kube::api::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::Value;

/// HTTP code of an API error, if it is one.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The Status reason of an API error.
pub fn api_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.reason.clone(),
        other => format!("not an API error: {other}"),
    }
}

pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Expects `result` to be an API error with `code`.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    code: u16,
) -> anyhow::Result<kube::Error> {
    match result {
        Ok(value) => anyhow::bail!("expected HTTP {code}, got success: {value:?}"),
        Err(err) if api_code(&err) == Some(code) => Ok(err),
        Err(err) => anyhow::bail!("expected HTTP {code}, got {err}"),
    }
}

pub fn dynamic(value: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(value)?)
}

pub fn widget_resource(group: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", "Widget"), "widgets")
}

/// A namespaced CRD `widgets.<group>` with a CEL rule, a default, an enum,
/// a status subresource and printer columns. Each test uses its own group
/// so tests on a shared real cluster do not collide.
pub fn widget_crd(group: &str) -> Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wdg"], "categories": ["ferrolb-test"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-validations": [
                                {"rule": "self.size <= self.maxSize", "message": "size must not exceed maxSize"}
                            ],
                            "properties": {
                                "size": {"type": "integer", "minimum": 0},
                                "maxSize": {"type": "integer", "default": 10},
                                "color": {"type": "string", "enum": ["red", "blue"]}
                            }
                        },
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                    }
                }}
            }]
        }
    })
}

/// A group name unique to one test run.
pub fn unique_group(namespace: &str) -> String {
    format!("{namespace}.ferrolb.test")
}
