//! FerroLB's own CRD schemas, as generated from `ferrolb-crds`, used as a checker: list bounds,
//! string patterns and lengths are read from the schema the API server enforces instead of being
//! restated here. The schema's CEL rules are not evaluated; what they check (address entries,
//! interface names, selector requirements) is checked with `ferrolb-crds`' own functions.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ferrolb_crds::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use kube::CustomResourceExt;
use regex::Regex;
use serde_json::Value;

/// The `openAPIV3Schema` of one FerroLB CRD.
#[derive(Debug, Clone)]
pub struct CrdSchema {
    root: Value,
}

impl CrdSchema {
    fn of<K: CustomResourceExt>() -> Self {
        let crd = serde_json::to_value(K::crd()).unwrap_or_default();
        let root = crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or_default();
        Self { root }
    }

    pub fn ip_address_pool() -> &'static Self {
        static SCHEMA: OnceLock<CrdSchema> = OnceLock::new();
        SCHEMA.get_or_init(Self::of::<IPAddressPool>)
    }

    pub fn l2_advertisement() -> &'static Self {
        static SCHEMA: OnceLock<CrdSchema> = OnceLock::new();
        SCHEMA.get_or_init(Self::of::<L2Advertisement>)
    }

    pub fn bgp_peer() -> &'static Self {
        static SCHEMA: OnceLock<CrdSchema> = OnceLock::new();
        SCHEMA.get_or_init(Self::of::<BGPPeer>)
    }

    pub fn bgp_advertisement() -> &'static Self {
        static SCHEMA: OnceLock<CrdSchema> = OnceLock::new();
        SCHEMA.get_or_init(Self::of::<BGPAdvertisement>)
    }

    /// The schema at `path`: property names separated by dots, `[]` for a list's items
    /// (`spec.nodeSelectors[]`).
    pub fn at(&self, path: &str) -> Option<&Value> {
        let mut schema = &self.root;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let (name, items) = match part.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (part, false),
            };
            schema = schema.get("properties")?.get(name)?;
            if items {
                schema = schema.get("items")?;
            }
        }
        Some(schema)
    }

    /// `maxItems` of the list at `path`.
    pub fn max_items(&self, path: &str) -> Option<usize> {
        self.at(path)?
            .get("maxItems")?
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
    }

    /// What the schema at `path` refuses in `value`; empty when it accepts it.
    pub fn check(&self, path: &str, value: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        match self.at(path) {
            Some(schema) => check(schema, value, "", &mut problems),
            None => problems.push(format!("FerroLB's schema has no field {path}")),
        }
        problems
    }
}

/// Whether `text` matches `pattern`, a regular expression from FerroLB's schema.
pub fn matches(pattern: &str, text: &str) -> bool {
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    compiled
        .entry(pattern.to_owned())
        .or_insert_with(|| Regex::new(pattern).ok())
        .as_ref()
        .is_some_and(|regex| regex.is_match(text))
}

fn at_path(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

fn check(schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let here = at_path(at);
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        _ => true,
    };
    if !type_ok {
        problems.push(format!(
            "{here}{value} is not of type {}",
            schema["type"].as_str().unwrap_or_default()
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!(
            "{here}{value} is not one of {}",
            Value::from(allowed.clone())
        ));
    }
    match value {
        Value::String(text) => check_string(schema, text, &here, problems),
        Value::Number(number) => {
            let n = number.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                problems.push(format!("{here}{number} is less than {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                problems.push(format!("{here}{number} is more than {max}"));
            }
        }
        Value::Array(items) => check_array(schema, items, at, problems),
        Value::Object(fields) => {
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && fields.len() as u64 > max
            {
                problems.push(format!("{here}more than {max} entries"));
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !fields.contains_key(required) {
                    problems.push(format!("{here}{required} is required"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, field) in fields {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(property), _) | (None, Some(property)) => {
                        check(property, field, &path, problems)
                    }
                    // The API server would prune it; nothing this tool writes has one.
                    (None, None) if properties.is_some() => {
                        problems.push(format!("{path}: not a field of FerroLB's schema"))
                    }
                    (None, None) => {}
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_string(schema: &Value, text: &str, here: &str, problems: &mut Vec<String>) {
    // Kubernetes counts characters, not bytes.
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        problems.push(format!("{here}{text:?} is longer than {max} characters"));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        problems.push(format!("{here}{text:?} is shorter than {min} characters"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !matches(pattern, text)
    {
        problems.push(format!("{here}{text:?} does not match {pattern}"));
    }
}

fn check_array(schema: &Value, items: &[Value], at: &str, problems: &mut Vec<String>) {
    let here = at_path(at);
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        problems.push(format!("{here}more than {max} items"));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        problems.push(format!("{here}fewer than {min} items"));
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        for (index, item) in items.iter().enumerate() {
            if items[..index].contains(item) {
                problems.push(format!("{here}{item} is listed twice"));
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{at}[{index}]"), problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_come_from_ferrolbs_schema() {
        let pools = CrdSchema::ip_address_pool();
        assert_eq!(
            pools.max_items("spec.addresses"),
            Some(ferrolb_crds::ip_address_pool::MAX_ADDRESS_ENTRIES as usize)
        );
        assert!(
            pools
                .max_items("spec.serviceAllocation.namespaces")
                .is_some()
        );
        let advertisements = CrdSchema::l2_advertisement();
        assert!(advertisements.max_items("spec.nodeSelectors").is_some());
        assert!(advertisements.at("spec.interfaces[]").is_some());
        assert_eq!(
            CrdSchema::bgp_peer().max_items("spec.nodeSelectors"),
            Some(16)
        );
        assert_eq!(
            CrdSchema::bgp_advertisement().max_items("spec.communities"),
            Some(ferrolb_crds::bgp_advertisement::MAX_COMMUNITIES as usize)
        );
    }

    #[test]
    fn selectors_are_checked_against_the_label_patterns() {
        let schema = CrdSchema::l2_advertisement();
        let good = json!({"matchLabels": {"zone": "a"},
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]});
        assert_eq!(
            schema.check("spec.nodeSelectors[]", &good),
            Vec::<String>::new()
        );
        let bad_value = json!({"matchLabels": {"zone": "not a value"}});
        assert!(!schema.check("spec.nodeSelectors[]", &bad_value).is_empty());
        let bad_operator =
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]});
        assert!(
            !schema
                .check("spec.nodeSelectors[]", &bad_operator)
                .is_empty()
        );
        let bad_key = json!({"matchExpressions": [{"key": "-a", "operator": "Exists"}]});
        assert!(!schema.check("spec.nodeSelectors[]", &bad_key).is_empty());
    }

    #[test]
    fn whole_specs_are_checked() {
        let schema = CrdSchema::ip_address_pool();
        assert!(
            schema
                .check(
                    "spec",
                    &json!({"addresses": ["198.51.100.0/24"], "autoAssign": true})
                )
                .is_empty()
        );
        let twice = json!({"addresses": ["198.51.100.0/24", "198.51.100.0/24"]});
        assert_eq!(
            schema.check("spec", &twice),
            ["addresses: \"198.51.100.0/24\" is listed twice"]
        );
        assert!(!schema.check("spec", &json!({"addresses": []})).is_empty());
        let negative =
            json!({"addresses": ["198.51.100.0/24"], "serviceAllocation": {"priority": -1}});
        assert!(!schema.check("spec", &negative).is_empty());
        assert!(!schema.check("spec.nothing", &json!(1)).is_empty());
    }
}
