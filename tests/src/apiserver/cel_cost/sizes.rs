//! The declared shape of CEL's `self`: what kube-apiserver derives from an
//! OpenAPI schema node before compiling its rules (its `DeclType`). The cost
//! estimator only ever asks two things of it: the CEL type of a path and the
//! largest size a value at that path can have.

use std::collections::BTreeMap;

use serde_json::Value;

use super::budget::MAX_REQUEST_SIZE_BYTES;

// Smallest and largest JSON renderings kube-apiserver assumes per format; the
// quotes count, as they do in a request body.
const MIN_STRING_SIZE: u64 = 2;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_NUMBER_SIZE: u64 = 1;
const MIN_DURATION_SIZE_JSON: u64 = 3;
const MAX_DURATION_SIZE_JSON: u64 = 32;
const JSON_DATE_SIZE: u64 = 12;
const MIN_DATETIME_SIZE_JSON: u64 = 21;
const MAX_DATETIME_SIZE_JSON: u64 = 32;

/// What a schema node holds, as CEL sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum DeclKind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`: typed only at run time.
    Dyn,
    List(Box<Decl>),
    /// Keys are always strings in an OpenAPI map.
    Map(Box<Decl>),
    /// Fields by their CEL (escaped) names.
    Object(BTreeMap<String, Decl>),
}

/// One schema node: its kind, its largest size (characters, bytes, items or
/// properties: what CEL's `size()` would return) and the fewest bytes it
/// takes in JSON, which bounds how often it can repeat in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decl {
    pub kind: DeclKind,
    pub max_elements: u64,
    pub min_serialized_size: u64,
}

impl Decl {
    fn simple(kind: DeclKind, min_serialized_size: u64) -> Self {
        Self {
            kind,
            max_elements: 0,
            min_serialized_size,
        }
    }

    /// The element of a list or the value of a map.
    pub fn elem(&self) -> Option<&Decl> {
        match &self.kind {
            DeclKind::List(elem) | DeclKind::Map(elem) => Some(elem),
            _ => None,
        }
    }

    pub fn field(&self, name: &str) -> Option<&Decl> {
        match &self.kind {
            DeclKind::Object(fields) => fields.get(name),
            _ => None,
        }
    }

    /// The size kube-apiserver's size estimator gives a value reached from
    /// the rule's variable by `path` (field names, `@items`, `@values`,
    /// `@keys`). Its first element names the variable and is skipped without
    /// looking at it, the way the server does: so an iteration variable over
    /// a list the rule built itself (its path is just `@items`) gets the
    /// size of `self`. That is why `self.split('-')` elements are bounded.
    pub fn size_at(&self, path: &[String]) -> Option<u64> {
        let mut node = self;
        for step in path.iter().skip(1) {
            node = match step.as_str() {
                "@items" | "@values" => node.elem()?,
                "@keys" => match &node.kind {
                    DeclKind::Map(_) => &MAP_KEY,
                    _ => return None,
                },
                name => node.field(name)?,
            };
        }
        Some(node.max_elements)
    }
}

/// Map keys: the server's plain string declaration, which carries no size
/// bound of its own (so 0, not unknown).
static MAP_KEY: Decl = Decl {
    kind: DeclKind::String,
    max_elements: 0,
    min_serialized_size: MIN_STRING_SIZE,
};

fn non_negative(value: &Value) -> Option<u64> {
    value
        .as_i64()
        .map(|v| v.max(0) as u64)
        .or_else(|| value.as_u64())
        .or_else(|| value.as_f64().map(|v| v.max(0.0) as u64))
}

fn max_length(schema: &Value) -> Option<u64> {
    schema.get("maxLength").and_then(non_negative)
}

/// The longest string a request can carry, for a string without maxLength.
fn max_string_length_per_request(schema: &Value) -> u64 {
    if schema["x-kubernetes-int-or-string"] == true {
        return MAX_REQUEST_SIZE_BYTES - 2;
    }
    match schema["format"].as_str() {
        Some("duration") => MAX_DURATION_SIZE_JSON,
        Some("date") => JSON_DATE_SIZE,
        Some("date-time") => MAX_DATETIME_SIZE_JSON,
        _ => MAX_REQUEST_SIZE_BYTES - 2,
    }
}

/// maxLength counts characters; the server reasons in bytes, and one
/// character is at most four of them.
fn elements_from_max_length(max: u64) -> u64 {
    max.saturating_mul(4)
}

/// The CEL declaration of a schema node, or None where the server exposes
/// nothing to CEL (no type, or an array/map of such). `resource_root` is
/// true at the root of the resource and of embedded resources, where
/// apiVersion, kind and metadata.name/generateName always exist.
pub fn schema_decl(schema: &Value, resource_root: bool) -> Option<Decl> {
    if schema["x-kubernetes-int-or-string"] == true {
        let mut dyn_decl = Decl::simple(DeclKind::Dyn, 1);
        dyn_decl.max_elements = match max_length(schema) {
            Some(max) => elements_from_max_length(max),
            None => max_string_length_per_request(schema),
        };
        return Some(dyn_decl);
    }
    let with_meta;
    let schema = if resource_root {
        with_meta = with_type_and_object_meta(schema);
        &with_meta
    } else {
        schema
    };
    match schema["type"].as_str()? {
        "array" => {
            let items = schema.get("items").filter(|i| i.is_object())?;
            let item = schema_decl(items, embedded(items))?;
            let max_items = match schema.get("maxItems").and_then(non_negative) {
                Some(max) => max,
                None => (MAX_REQUEST_SIZE_BYTES - 2) / (item.min_serialized_size + 1),
            };
            Some(Decl {
                kind: DeclKind::List(Box::new(item)),
                max_elements: max_items,
                min_serialized_size: 2,
            })
        }
        "object" => {
            if let Some(props) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let value = schema_decl(props, embedded(props))?;
                let max_properties = match schema.get("maxProperties").and_then(non_negative) {
                    Some(max) => max,
                    // a key of at least "" plus colon, comma and the value
                    None => (MAX_REQUEST_SIZE_BYTES - 2) / (value.min_serialized_size + 6),
                };
                return Some(Decl {
                    kind: DeclKind::Map(Box::new(value)),
                    max_elements: max_properties,
                    min_serialized_size: 2,
                });
            }
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut fields = BTreeMap::new();
            let mut min_size = 2; // {}
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                let Some(field) = schema_decl(prop, embedded(prop)) else {
                    continue;
                };
                // Defaulted fields are filled in by the server, so they do
                // not make the smallest request any bigger.
                if required.contains(&name.as_str()) && prop.get("default").is_none() {
                    min_size += name.len() as u64 + field.min_serialized_size + 4;
                }
                if let Some(escaped) = escape(name) {
                    fields.insert(escaped, field);
                }
            }
            Some(Decl {
                kind: DeclKind::Object(fields),
                max_elements: 0,
                min_serialized_size: min_size,
            })
        }
        "string" => {
            let format = schema["format"].as_str();
            let (kind, min) = match format {
                Some("byte") => (DeclKind::Bytes, MIN_STRING_SIZE),
                Some("duration") => (DeclKind::Duration, MIN_DURATION_SIZE_JSON),
                Some("date") => (DeclKind::Timestamp, JSON_DATE_SIZE),
                Some("date-time") => (DeclKind::Timestamp, MIN_DATETIME_SIZE_JSON),
                _ => (DeclKind::String, MIN_STRING_SIZE),
            };
            let max_elements = match (&kind, max_length(schema)) {
                // formats that parse into durations and timestamps ignore
                // maxLength; bytes count bytes, not characters
                (DeclKind::Duration | DeclKind::Timestamp, _) => {
                    max_string_length_per_request(schema)
                }
                (DeclKind::Bytes, Some(max)) => max,
                (_, Some(max)) => elements_from_max_length(max),
                (DeclKind::String, None) => match schema["enum"].as_array() {
                    Some(values) if !values.is_empty() => values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|v| v.len() as u64)
                        .max()
                        .unwrap_or(0),
                    _ => max_string_length_per_request(schema),
                },
                (_, None) => max_string_length_per_request(schema),
            };
            Some(Decl {
                kind,
                max_elements,
                min_serialized_size: min,
            })
        }
        "boolean" => Some(Decl::simple(DeclKind::Bool, MIN_BOOL_SIZE)),
        "number" => Some(Decl::simple(DeclKind::Double, MIN_NUMBER_SIZE)),
        "integer" => Some(Decl::simple(DeclKind::Int, MIN_NUMBER_SIZE)),
        _ => None,
    }
}

fn embedded(schema: &Value) -> bool {
    schema["x-kubernetes-embedded-resource"] == true
}

/// The root of a resource always has apiVersion, kind, metadata.name and
/// metadata.generateName; the server substitutes plain string schemas for
/// them (and a metadata holding only those two) unless all are declared.
fn with_type_and_object_meta(schema: &Value) -> Value {
    let props = &schema["properties"];
    let is = |v: &Value, t: &str| v["type"] == t;
    if props.is_object()
        && is(&props["kind"], "string")
        && is(&props["apiVersion"], "string")
        && is(&props["metadata"], "object")
        && is(&props["metadata"]["properties"]["name"], "string")
        && is(&props["metadata"]["properties"]["generateName"], "string")
    {
        return schema.clone();
    }
    let mut result = schema.clone();
    let string = serde_json::json!({"type": "string"});
    if let Some(object) = result.as_object_mut() {
        let props = object
            .entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(props) = props.as_object_mut() {
            props.insert("kind".into(), string.clone());
            props.insert("apiVersion".into(), string.clone());
            props.insert(
                "metadata".into(),
                serde_json::json!({"type": "object", "properties": {
                    "name": string.clone(), "generateName": string}}),
            );
        }
    }
    result
}

const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL identifier kube-apiserver exposes a property under, or None for
/// a property name CEL cannot reach (such properties are left out).
pub fn escape(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    if first.is_ascii_digit() {
        return None;
    }
    if CEL_RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_sized_from_max_length_enum_or_the_request() {
        let bounded = schema_decl(&json!({"type": "string", "maxLength": 79}), false);
        assert_eq!(bounded.map(|d| d.max_elements), Some(316));
        let unbounded = schema_decl(&json!({"type": "string"}), false);
        assert_eq!(unbounded.map(|d| d.max_elements), Some(3_145_726));
        let enumerated = schema_decl(&json!({"type": "string", "enum": ["In", "NotIn"]}), false);
        assert_eq!(enumerated.map(|d| d.max_elements), Some(5));
        let both = schema_decl(
            &json!({"type": "string", "maxLength": 12, "enum": ["In"]}),
            false,
        );
        assert_eq!(both.map(|d| d.max_elements), Some(48));
        let duration = schema_decl(&json!({"type": "string", "format": "duration"}), false);
        assert_eq!(
            duration.map(|d| (d.kind, d.max_elements)),
            Some((DeclKind::Duration, 32))
        );
    }

    #[test]
    fn arrays_and_maps_without_bounds_are_bounded_by_the_request() {
        let list = schema_decl(
            &json!({"type": "array", "items": {"type": "string", "maxLength": 5}}),
            false,
        );
        assert_eq!(list.map(|d| d.max_elements), Some((3_145_728 - 2) / 3));
        let map = schema_decl(
            &json!({"type": "object", "additionalProperties": {"type": "integer"}}),
            false,
        );
        assert_eq!(map.map(|d| d.max_elements), Some((3_145_728 - 2) / 7));
        let object = schema_decl(
            &json!({"type": "object", "required": ["key", "op"], "properties": {
                "key": {"type": "string"}, "op": {"type": "string", "default": "In"}}}),
            false,
        );
        assert_eq!(object.map(|d| d.min_serialized_size), Some(2 + 3 + 2 + 4));
    }

    #[test]
    fn resource_roots_always_have_names() {
        let root = schema_decl(&json!({"type": "object"}), true);
        let root = root.as_ref();
        assert!(
            root.and_then(|r| r.field("metadata")?.field("name"))
                .is_some()
        );
        assert!(root.and_then(|r| r.field("apiVersion")).is_some());
    }

    #[test]
    fn paths_skip_their_variable() {
        let decl = schema_decl(
            &json!({"type": "object", "properties": {"values": {"type": "array", "maxItems": 3,
                "items": {"type": "string", "maxLength": 2}}}}),
            false,
        );
        let decl = decl.as_ref();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            decl.and_then(|d| d.size_at(&path(&["self", "values"]))),
            Some(3)
        );
        assert_eq!(
            decl.and_then(|d| d.size_at(&path(&["x", "values", "@items"]))),
            Some(8)
        );
        assert_eq!(decl.and_then(|d| d.size_at(&path(&["@items"]))), Some(0));
        assert_eq!(decl.and_then(|d| d.size_at(&path(&["self", "nope"]))), None);
    }

    #[test]
    fn property_names_are_escaped_like_the_server() {
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(
            escape("a-b.c/d").as_deref(),
            Some("a__dash__b__dot__c__slash__d")
        );
        assert_eq!(escape("x__y").as_deref(), Some("x__underscores__y"));
        assert_eq!(escape("1x"), None);
        assert_eq!(escape("a b"), None);
    }
}
