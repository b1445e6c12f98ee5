//! Events, served as core `v1` and as `events.k8s.io/v1` from one stored
//! object, as kube-apiserver serves them.
//!
//! kube-apiserver has a single Event storage behind both APIs: every request
//! is decoded into its internal Event type, validated there and stored in the
//! core form; reads are encoded back into the API they came through. The
//! double does the same with [`Event`] as the internal type and the core `v1`
//! JSON as the stored form, so both APIs see one object with one uid and one
//! resourceVersion, and field selectors, watches and tables work on either.
//!
//! The mapping is that of `pkg/apis/events/v1` in Kubernetes. Fields with the
//! same name in both APIs (`eventTime`, `series`, `action`, `reason`, `type`,
//! `related`, `reportingInstance`, `metadata`) carry over unchanged; the
//! others are renamed:
//!
//! | events.k8s.io/v1           | core v1              |
//! |----------------------------|----------------------|
//! | `regarding`                | `involvedObject`     |
//! | `note`                     | `message`            |
//! | `reportingController`      | `reportingComponent` |
//! | `deprecatedSource`         | `source`             |
//! | `deprecatedFirstTimestamp` | `firstTimestamp`     |
//! | `deprecatedLastTimestamp`  | `lastTimestamp`      |
//! | `deprecatedCount`          | `count`              |
//!
//! Nothing is derived across: `series` does not fill `count` or
//! `lastTimestamp`, and `reportingController` does not fill `source`. Readers
//! such as `kubectl describe` fall back to `reportingComponent` themselves
//! when `source.component` is empty, and so does the `source` field selector.
//!
//! Everything here is pure: JSON in, JSON or validation causes out.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value, json};

use super::error::Cause;
use super::resources::ResourceType;
use super::validation::qualified_name_problem;

/// The API a request reached Events through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventApi {
    /// `/api/v1/.../events`
    Core,
    /// `/apis/events.k8s.io/v1/.../events`
    EventsV1,
}

impl EventApi {
    /// The Event API served under `group`/`plural`, if that is one.
    pub fn from_group(group: &str, plural: &str) -> Option<Self> {
        match (group, plural) {
            ("", "events") => Some(Self::Core),
            ("events.k8s.io", "events") => Some(Self::EventsV1),
            _ => None,
        }
    }

    /// The Event API a built-in type serves, if it is one.
    pub fn of(rt: &ResourceType) -> Option<Self> {
        if rt.custom.is_some() || rt.version != "v1" {
            return None;
        }
        Self::from_group(&rt.group, &rt.plural)
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Self::Core => "v1",
            Self::EventsV1 => "events.k8s.io/v1",
        }
    }

    fn names(self) -> &'static FieldNames {
        match self {
            Self::Core => &CORE_NAMES,
            Self::EventsV1 => &EVENTS_V1_NAMES,
        }
    }
}

/// JSON names of the fields the two APIs name differently.
struct FieldNames {
    involved_object: &'static str,
    message: &'static str,
    source: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
    reporting_controller: &'static str,
}

const CORE_NAMES: FieldNames = FieldNames {
    involved_object: "involvedObject",
    message: "message",
    source: "source",
    first_timestamp: "firstTimestamp",
    last_timestamp: "lastTimestamp",
    count: "count",
    reporting_controller: "reportingComponent",
};

const EVENTS_V1_NAMES: FieldNames = FieldNames {
    involved_object: "regarding",
    message: "note",
    source: "deprecatedSource",
    first_timestamp: "deprecatedFirstTimestamp",
    last_timestamp: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    reporting_controller: "reportingController",
};

const SHARED_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "reason",
    "type",
    "eventTime",
    "series",
    "action",
    "related",
    "reportingInstance",
];
const REFERENCE_FIELDS: &[&str] = &[
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
];
const SOURCE_FIELDS: &[&str] = &["component", "host"];
const SERIES_FIELDS: &[&str] = &["count", "lastObservedTime"];

/// `ObjectReference`, empty strings for unset fields as in Go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectReference {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub resource_version: String,
    pub field_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSource {
    pub component: String,
    pub host: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSeries {
    pub count: i32,
    /// Microsecond RFC 3339, as served.
    pub last_observed_time: Option<String>,
}

/// kube-apiserver's internal Event: the union of both APIs' fields.
/// Timestamps are kept as the text they are served as (seconds for
/// `firstTimestamp`/`lastTimestamp`, microseconds for `eventTime` and
/// `series.lastObservedTime`), so equal instants compare equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub metadata: Map<String, Value>,
    pub involved_object: ObjectReference,
    pub reason: String,
    pub message: String,
    pub source: EventSource,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub count: i32,
    pub type_: String,
    pub event_time: Option<String>,
    pub series: Option<EventSeries>,
    pub action: String,
    pub related: Option<ObjectReference>,
    pub reporting_controller: String,
    pub reporting_instance: String,
}

impl Event {
    fn namespace(&self) -> &str {
        self.metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A request body decoded, and the fields its API does not have (dropped,
/// as kube-apiserver's decoder drops them, and reported per `fieldValidation`).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub event: Event,
    pub unknown_fields: Vec<String>,
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Go's zero time, which metav1.Time treats as unset.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

const MICRO_TIME_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

fn format_seconds(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn format_micros(ts: Timestamp) -> String {
    let civil = ts.to_zoned(TimeZone::UTC);
    format!(
        "{}.{:06}Z",
        civil.strftime("%Y-%m-%dT%H:%M:%S"),
        civil.subsec_nanosecond() / 1000
    )
}

/// metav1.MicroTime accepts exactly six fractional digits; metav1.Time any
/// RFC 3339 time. Both serialize in UTC, truncated to their precision.
fn parse_time(text: &str, micro: bool) -> Result<Option<String>, String> {
    let bytes = text.as_bytes();
    if micro {
        let six_digits = bytes.get(19) == Some(&b'.')
            && bytes
                .get(20..26)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
            && bytes.get(26).is_some_and(|b| !b.is_ascii_digit());
        if !six_digits {
            return Err(format!(
                "parsing time {text:?} as {MICRO_TIME_LAYOUT:?}: the fraction must have six digits"
            ));
        }
    }
    let ts: Timestamp = text
        .parse()
        .map_err(|e| format!("parsing time {text:?}: {e}"))?;
    if ts.as_second() == GO_ZERO_TIME_SECONDS && ts.subsec_nanosecond() == 0 {
        return Ok(None);
    }
    Ok(Some(if micro {
        format_micros(ts)
    } else {
        format_seconds(ts)
    }))
}

struct Decoder {
    unknown: Vec<String>,
}

impl Decoder {
    fn mismatch(&self, path: &str, found: &Value, go_type: &str) -> String {
        format!(
            "Event in version \"v1\" cannot be handled as a Event: json: cannot unmarshal {} into Go struct field Event.{path} of type {go_type}",
            json_kind(found)
        )
    }

    fn bad_time(&self, path: &str, why: String) -> String {
        format!("Event in version \"v1\" cannot be handled as a Event: {path}: {why}")
    }

    /// An object's fields, recording the ones `known` does not list.
    fn object<'v>(
        &mut self,
        value: Option<&'v Value>,
        path: &str,
        known: &[&str],
        go_type: &str,
    ) -> Result<Option<&'v Map<String, Value>>, String> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => {
                for key in map.keys() {
                    if !known.contains(&key.as_str()) {
                        self.unknown.push(join(path, key));
                    }
                }
                Ok(Some(map))
            }
            Some(other) => Err(self.mismatch(path, other, go_type)),
        }
    }

    fn string(&self, map: &Map<String, Value>, key: &str, path: &str) -> Result<String, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.mismatch(&join(path, key), other, "string")),
        }
    }

    fn int32(&self, map: &Map<String, Value>, key: &str, path: &str) -> Result<i32, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| self.mismatch(&join(path, key), value, "int32")),
        }
    }

    fn time(
        &self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
        micro: bool,
    ) -> Result<Option<String>, String> {
        let full = join(path, key);
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => {
                parse_time(text, micro).map_err(|why| self.bad_time(&full, why))
            }
            Some(other) => {
                let go_type = if micro { "v1.MicroTime" } else { "v1.Time" };
                Err(self.mismatch(&full, other, go_type))
            }
        }
    }

    fn reference(
        &mut self,
        value: Option<&Value>,
        path: &str,
    ) -> Result<Option<ObjectReference>, String> {
        let Some(map) = self.object(value, path, REFERENCE_FIELDS, "v1.ObjectReference")? else {
            return Ok(None);
        };
        Ok(Some(ObjectReference {
            kind: self.string(map, "kind", path)?,
            namespace: self.string(map, "namespace", path)?,
            name: self.string(map, "name", path)?,
            uid: self.string(map, "uid", path)?,
            api_version: self.string(map, "apiVersion", path)?,
            resource_version: self.string(map, "resourceVersion", path)?,
            field_path: self.string(map, "fieldPath", path)?,
        }))
    }

    fn source(&mut self, value: Option<&Value>, path: &str) -> Result<EventSource, String> {
        let Some(map) = self.object(value, path, SOURCE_FIELDS, "v1.EventSource")? else {
            return Ok(EventSource::default());
        };
        Ok(EventSource {
            component: self.string(map, "component", path)?,
            host: self.string(map, "host", path)?,
        })
    }

    fn series(&mut self, value: Option<&Value>) -> Result<Option<EventSeries>, String> {
        let Some(map) = self.object(value, "series", SERIES_FIELDS, "v1.EventSeries")? else {
            return Ok(None);
        };
        Ok(Some(EventSeries {
            count: self.int32(map, "count", "series")?,
            last_observed_time: self.time(map, "lastObservedTime", "series", true)?,
        }))
    }

    fn metadata(&self, value: Option<&Value>) -> Result<Map<String, Value>, String> {
        match value {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(other) => Err(self.mismatch("metadata", other, "v1.ObjectMeta")),
        }
    }
}

/// Decodes an Event written through `api`. `Err` is the message of a 400,
/// as kube-apiserver answers bodies its decoder refuses.
pub fn decode(api: EventApi, body: &Value) -> Result<Decoded, String> {
    let n = api.names();
    let mut known: Vec<&str> = SHARED_FIELDS.to_vec();
    known.extend([
        n.involved_object,
        n.message,
        n.source,
        n.first_timestamp,
        n.last_timestamp,
        n.count,
        n.reporting_controller,
    ]);
    let mut d = Decoder {
        unknown: Vec::new(),
    };
    let top = d
        .object(Some(body), "", &known, "Event")?
        .ok_or_else(|| "the request body must be a JSON or YAML object".to_string())?;
    let event = Event {
        metadata: d.metadata(top.get("metadata"))?,
        involved_object: d
            .reference(top.get(n.involved_object), n.involved_object)?
            .unwrap_or_default(),
        reason: d.string(top, "reason", "")?,
        message: d.string(top, n.message, "")?,
        source: d.source(top.get(n.source), n.source)?,
        first_timestamp: d.time(top, n.first_timestamp, "", false)?,
        last_timestamp: d.time(top, n.last_timestamp, "", false)?,
        count: d.int32(top, n.count, "")?,
        type_: d.string(top, "type", "")?,
        event_time: d.time(top, "eventTime", "", true)?,
        series: d.series(top.get("series"))?,
        action: d.string(top, "action", "")?,
        related: d.reference(top.get("related"), "related")?,
        reporting_controller: d.string(top, n.reporting_controller, "")?,
        reporting_instance: d.string(top, "reportingInstance", "")?,
    };
    let mut unknown_fields = d.unknown;
    unknown_fields.sort();
    Ok(Decoded {
        event,
        unknown_fields,
    })
}

fn put_string(out: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        out.insert(key.into(), json!(value));
    }
}

fn time_value(time: &Option<String>) -> Value {
    time.as_ref().map_or(Value::Null, |t| json!(t))
}

fn reference_value(reference: &ObjectReference) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "kind", &reference.kind);
    put_string(&mut out, "namespace", &reference.namespace);
    put_string(&mut out, "name", &reference.name);
    put_string(&mut out, "uid", &reference.uid);
    put_string(&mut out, "apiVersion", &reference.api_version);
    put_string(&mut out, "resourceVersion", &reference.resource_version);
    put_string(&mut out, "fieldPath", &reference.field_path);
    Value::Object(out)
}

fn source_value(source: &EventSource) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "component", &source.component);
    put_string(&mut out, "host", &source.host);
    Value::Object(out)
}

/// Encodes `event` as `api` serves it. The shape follows Go's JSON encoding
/// of the API types, which clients see from kube-apiserver: `omitempty`
/// drops empty strings, zero counts and nil pointers but never structs, so
/// references and sources are always there (possibly `{}`) and unset
/// timestamps are `null`; core `reportingComponent`/`reportingInstance` have
/// no `omitempty` and are always there.
pub fn encode(api: EventApi, event: &Event) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!(api.api_version()));
    out.insert("metadata".into(), Value::Object(event.metadata.clone()));
    match api {
        EventApi::Core => {
            out.insert(
                "involvedObject".into(),
                reference_value(&event.involved_object),
            );
            put_string(&mut out, "reason", &event.reason);
            put_string(&mut out, "message", &event.message);
            out.insert("source".into(), source_value(&event.source));
            out.insert("firstTimestamp".into(), time_value(&event.first_timestamp));
            out.insert("lastTimestamp".into(), time_value(&event.last_timestamp));
            if event.count != 0 {
                out.insert("count".into(), json!(event.count));
            }
            put_string(&mut out, "type", &event.type_);
            out.insert("eventTime".into(), time_value(&event.event_time));
            if let Some(series) = &event.series {
                let mut value = Map::new();
                if series.count != 0 {
                    value.insert("count".into(), json!(series.count));
                }
                value.insert(
                    "lastObservedTime".into(),
                    time_value(&series.last_observed_time),
                );
                out.insert("series".into(), Value::Object(value));
            }
            put_string(&mut out, "action", &event.action);
            if let Some(related) = &event.related {
                out.insert("related".into(), reference_value(related));
            }
            out.insert(
                "reportingComponent".into(),
                json!(event.reporting_controller),
            );
            out.insert("reportingInstance".into(), json!(event.reporting_instance));
        }
        EventApi::EventsV1 => {
            out.insert("eventTime".into(), time_value(&event.event_time));
            if let Some(series) = &event.series {
                out.insert(
                    "series".into(),
                    json!({"count": series.count,
                           "lastObservedTime": time_value(&series.last_observed_time)}),
                );
            }
            put_string(&mut out, "reportingController", &event.reporting_controller);
            put_string(&mut out, "reportingInstance", &event.reporting_instance);
            put_string(&mut out, "action", &event.action);
            put_string(&mut out, "reason", &event.reason);
            out.insert("regarding".into(), reference_value(&event.involved_object));
            if let Some(related) = &event.related {
                out.insert("related".into(), reference_value(related));
            }
            put_string(&mut out, "note", &event.message);
            put_string(&mut out, "type", &event.type_);
            out.insert("deprecatedSource".into(), source_value(&event.source));
            out.insert(
                "deprecatedFirstTimestamp".into(),
                time_value(&event.first_timestamp),
            );
            out.insert(
                "deprecatedLastTimestamp".into(),
                time_value(&event.last_timestamp),
            );
            if event.count != 0 {
                out.insert("deprecatedCount".into(), json!(event.count));
            }
        }
    }
    Value::Object(out)
}

/// A body written through `api`, in the stored (core) form.
pub struct Incoming {
    pub stored: Value,
    pub unknown_fields: Vec<String>,
}

pub fn to_storage(api: EventApi, body: &Value) -> Result<Incoming, String> {
    let decoded = decode(api, body)?;
    Ok(Incoming {
        stored: encode(EventApi::Core, &decoded.event),
        unknown_fields: decoded.unknown_fields,
    })
}

/// A stored Event as `api` serves it.
pub fn to_api(api: EventApi, stored: &Value) -> Value {
    match (api, decode(EventApi::Core, stored)) {
        (EventApi::EventsV1, Ok(decoded)) => encode(api, &decoded.event),
        // Stored objects are written by `to_storage`, so they decode; the
        // core form is served as stored.
        (_, _) => {
            let mut object = stored.clone();
            object["apiVersion"] = json!(api.api_version());
            object
        }
    }
}

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    }
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause::invalid(field, format!("Invalid value: {value:?}: {detail}"))
}

fn too_long(field: &str, value: &str, limit: usize) -> Option<Cause> {
    (value.len() > limit)
        .then(|| invalid(field, "", &format!("can have at most {limit} characters")))
}

/// Checks every Event passes, through either API. Events without
/// `eventTime` are old-style and only need a consistent namespace; events
/// with it must say who reported what.
fn validate_legacy(api: EventApi, event: &Event) -> Vec<Cause> {
    let mut causes = Vec::new();
    let namespace = event.namespace();
    let referenced = event.involved_object.namespace.as_str();
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            referenced,
            "does not match event.namespace",
        )
    };
    if event.event_time.is_none() {
        let consistent = if referenced.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == referenced
        };
        if !consistent {
            causes.push(mismatch());
        }
        return causes;
    }
    if referenced.is_empty() && namespace != "default" && namespace != "kube-system" {
        causes.push(mismatch());
    }
    // The error names the field as the request's API calls it.
    let controller_field = match api {
        EventApi::Core => "reportingComponent",
        EventApi::EventsV1 => "reportingController",
    };
    if event.reporting_controller.is_empty() {
        causes.push(required(controller_field));
    }
    if let Some(problem) = qualified_name_problem(&event.reporting_controller) {
        causes.push(invalid(
            controller_field,
            &event.reporting_controller,
            &problem,
        ));
    }
    if event.reporting_instance.is_empty() {
        causes.push(required("reportingInstance"));
    }
    causes.extend(too_long(
        "reportingInstance",
        &event.reporting_instance,
        REPORTING_INSTANCE_LIMIT,
    ));
    if event.action.is_empty() {
        causes.push(required("action"));
    }
    causes.extend(too_long("action", &event.action, ACTION_LIMIT));
    if event.reason.is_empty() {
        causes.push(required("reason"));
    }
    causes.extend(too_long("reason", &event.reason, REASON_LIMIT));
    causes.extend(too_long("message", &event.message, NOTE_LIMIT));
    causes
}

fn validate_series(event: &Event) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(series) = &event.series {
        if series.count < 2 {
            causes.push(invalid("series.count", "", "should be at least 2"));
        }
        if series.last_observed_time.is_none() {
            causes.push(required("series.lastObservedTime"));
        }
    }
    causes
}

/// Creation rules. Core `v1` keeps the lax legacy rules for old clients;
/// `events.k8s.io/v1` also wants a new-style Event without the deprecated
/// fields. (Field paths are the internal, core names, as kube-apiserver
/// reports them.) Metadata, including the DNS-subdomain name
/// `events.k8s.io/v1` requires, is checked by the caller.
pub fn validate_create(api: EventApi, event: &Event) -> Vec<Cause> {
    let mut causes = validate_legacy(api, event);
    if api == EventApi::Core {
        return causes;
    }
    causes.extend(validate_series(event));
    if event.event_time.is_none() {
        causes.push(required("eventTime"));
    }
    if event.type_ != "Normal" && event.type_ != "Warning" {
        causes.push(invalid(
            "type",
            "",
            &format!("has invalid value: {}", event.type_),
        ));
    }
    for (set, field) in [
        (event.first_timestamp.is_some(), "firstTimestamp"),
        (event.last_timestamp.is_some(), "lastTimestamp"),
        (event.count != 0, "count"),
        (
            !event.source.component.is_empty() || !event.source.host.is_empty(),
            "source",
        ),
    ] {
        if set {
            causes.push(invalid(field, "", "needs to be unset"));
        }
    }
    causes
}

/// Update rules. Through `events.k8s.io/v1` an Event may only grow its
/// series (and metadata); through core `v1` anything goes that passes the
/// legacy rules.
pub fn validate_update(api: EventApi, new: &Event, old: &Event) -> Vec<Cause> {
    let mut causes = validate_legacy(api, new);
    if api == EventApi::Core {
        return causes;
    }
    if new.series != old.series {
        causes.extend(validate_series(new));
    }
    // Compared as served, so unset and empty are the same, as in Go.
    let (new_json, old_json) = (encode(EventApi::Core, new), encode(EventApi::Core, old));
    for (field, key) in [
        ("involvedObject", "involvedObject"),
        ("reason", "reason"),
        ("message", "message"),
        ("source", "source"),
        ("firstTimestamp", "firstTimestamp"),
        ("lastTimestamp", "lastTimestamp"),
        ("count", "count"),
        ("type", "type"),
        // Kept at microseconds, so sub-microsecond jitter is no change.
        ("eventTime", "eventTime"),
        ("action", "action"),
        ("related", "related"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
    ] {
        let changed = new_json.get(key).unwrap_or(&Value::Null);
        if changed != old_json.get(key).unwrap_or(&Value::Null) {
            causes.push(Cause::invalid(
                field,
                format!("Invalid value: {changed}: field is immutable"),
            ));
        }
    }
    causes
}

/// Validates a stored-form Event about to be written through `api`
/// (`old` for updates).
pub fn validate(api: EventApi, stored: &Value, old: Option<&Value>) -> Vec<Cause> {
    let decode_stored = |value: &Value| decode(EventApi::Core, value).map(|d| d.event);
    let new = match decode_stored(stored) {
        Ok(event) => event,
        Err(message) => return vec![Cause::invalid("", message)],
    };
    match old.map(decode_stored) {
        None => validate_create(api, &new),
        Some(Ok(old)) => validate_update(api, &new, &old),
        Some(Err(message)) => vec![Cause::invalid("", message)],
    }
}

const CORE_FIELD_LABELS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.name",
    "metadata.namespace",
];

/// The core field label a field selector's `label` selects on, as
/// kube-apiserver converts the labels each API accepts; `None` when the
/// API does not support the label (e.g. `involvedObject.name` on
/// `events.k8s.io/v1`, `regarding.name` on core).
pub fn field_label(api: EventApi, label: &str) -> Option<&'static str> {
    let core_label = match api {
        EventApi::Core => label,
        EventApi::EventsV1 => match label {
            "reportingController" => "reportingComponent",
            "reportingComponent" => return None,
            other => match other.strip_prefix("regarding.") {
                Some(field) => {
                    return field_label(EventApi::Core, &format!("involvedObject.{field}"));
                }
                None if other.starts_with("involvedObject.") => return None,
                None => other,
            },
        },
    };
    CORE_FIELD_LABELS.iter().copied().find(|l| *l == core_label)
}

/// The value of a core field label on a stored Event, as kube-apiserver's
/// selectable fields have it: `source` is `source.component`, or the
/// reporting controller for Events that have no source.
pub fn selectable_field(stored: &Value, core_label: &str) -> String {
    let text = |pointer: &str| {
        stored
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match core_label {
        "source" => {
            let component = text("/source/component");
            if component.is_empty() {
                text("/reportingComponent")
            } else {
                component
            }
        }
        label => text(&format!("/{}", label.replace('.', "/"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_style() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "ns"},
            "eventTime": "2026-01-02T03:04:05.123456Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-02T03:09:05.654321Z"},
            "reportingController": "ferrolb.io/controller", "reportingInstance": "ctl-0",
            "action": "Allocate", "reason": "IPAllocated", "type": "Normal",
            "note": "Assigned 198.51.100.7",
            "regarding": {"apiVersion": "v1", "kind": "Service", "name": "web",
                          "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
            "related": {"kind": "IPAddressPool", "name": "lan"},
        })
    }

    fn old_style() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.2", "namespace": "ns"},
            "involvedObject": {"kind": "Service", "name": "web", "namespace": "ns",
                               "fieldPath": "spec.ports{http}"},
            "reason": "Sync", "message": "synced", "type": "Warning",
            "source": {"component": "ferrolb-controller", "host": "node-a"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:05:00Z",
            "count": 4,
        })
    }

    #[test]
    fn events_v1_maps_onto_core_field_by_field() -> Result<(), String> {
        let stored = to_storage(EventApi::EventsV1, &new_style())?.stored;
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"], new_style()["regarding"]);
        assert_eq!(stored["related"], new_style()["related"]);
        assert_eq!(stored["message"], "Assigned 198.51.100.7");
        assert_eq!(stored["reportingComponent"], "ferrolb.io/controller");
        assert_eq!(stored["reportingInstance"], "ctl-0");
        assert_eq!(stored["eventTime"], "2026-01-02T03:04:05.123456Z");
        assert_eq!(stored["series"], new_style()["series"]);
        for same in ["action", "reason", "type"] {
            assert_eq!(stored[same], new_style()[same], "{same}");
        }
        // Nothing is derived from the series or the reporter.
        assert_eq!(stored["source"], json!({}));
        assert!(stored.get("count").is_none());
        assert_eq!(stored["firstTimestamp"], Value::Null);
        assert_eq!(stored["lastTimestamp"], Value::Null);
        for absent in ["note", "regarding", "reportingController"] {
            assert!(stored.get(absent).is_none(), "{absent}");
        }
        Ok(())
    }

    #[test]
    fn core_maps_onto_events_v1_deprecated_fields() -> Result<(), String> {
        let stored = to_storage(EventApi::Core, &old_style())?.stored;
        let served = to_api(EventApi::EventsV1, &stored);
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        assert_eq!(served["regarding"], old_style()["involvedObject"]);
        assert_eq!(served["note"], "synced");
        assert_eq!(served["deprecatedSource"], old_style()["source"]);
        assert_eq!(served["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(served["deprecatedLastTimestamp"], "2026-01-01T00:05:00Z");
        assert_eq!(served["deprecatedCount"], 4);
        assert_eq!(served["eventTime"], Value::Null);
        assert!(served.get("series").is_none());
        // An empty reporter stays empty rather than borrowing the source.
        assert!(served.get("reportingController").is_none());
        for absent in [
            "message",
            "involvedObject",
            "source",
            "count",
            "reportingComponent",
        ] {
            assert!(served.get(absent).is_none(), "{absent}");
        }
        Ok(())
    }

    #[test]
    fn round_trips_are_lossless() -> Result<(), String> {
        for (api, body) in [
            (EventApi::EventsV1, new_style()),
            (EventApi::Core, old_style()),
        ] {
            let stored = to_storage(api, &body)?.stored;
            let served = to_api(api, &stored);
            let again = to_storage(api, &served)?.stored;
            assert_eq!(again, stored, "{api:?}");
        }
        let stored = to_storage(EventApi::EventsV1, &new_style())?.stored;
        let both_ways = to_storage(EventApi::EventsV1, &to_api(EventApi::EventsV1, &stored))?;
        assert_eq!(both_ways.stored, stored);
        assert!(both_ways.unknown_fields.is_empty());
        Ok(())
    }

    #[test]
    fn core_serves_go_shaped_empty_fields() -> Result<(), String> {
        let minimal = json!({"metadata": {"name": "e", "namespace": "default"}, "reason": ""});
        let stored = to_storage(EventApi::Core, &minimal)?.stored;
        assert_eq!(stored["involvedObject"], json!({}));
        assert_eq!(stored["source"], json!({}));
        assert_eq!(stored["reportingComponent"], "");
        assert_eq!(stored["reportingInstance"], "");
        assert_eq!(stored["eventTime"], Value::Null);
        assert!(stored.get("reason").is_none(), "empty strings are omitted");
        let served = to_api(EventApi::EventsV1, &stored);
        assert_eq!(served["regarding"], json!({}));
        assert_eq!(served["deprecatedSource"], json!({}));
        assert_eq!(served["deprecatedFirstTimestamp"], Value::Null);
        Ok(())
    }

    #[test]
    fn other_apis_fields_are_unknown_and_dropped() -> Result<(), String> {
        let mut body = old_style();
        body["note"] = json!("not a core field");
        body["involvedObject"]["bogus"] = json!(1);
        let incoming = to_storage(EventApi::Core, &body)?;
        assert_eq!(
            incoming.unknown_fields,
            vec!["involvedObject.bogus", "note"]
        );
        assert!(incoming.stored.get("note").is_none());
        assert_eq!(incoming.stored["message"], "synced");
        Ok(())
    }

    #[test]
    fn times_are_normalized_and_micro_time_needs_six_digits() -> Result<(), String> {
        let mut body = new_style();
        body["eventTime"] = json!("2026-01-02T05:04:05.123456+02:00");
        body["deprecatedFirstTimestamp"] = json!("2026-01-02T05:04:05.999+02:00");
        let stored = to_storage(EventApi::EventsV1, &body)?.stored;
        assert_eq!(stored["eventTime"], "2026-01-02T03:04:05.123456Z");
        assert_eq!(stored["firstTimestamp"], "2026-01-02T03:04:05Z");
        body["eventTime"] = json!("2026-01-02T03:04:05Z");
        assert!(to_storage(EventApi::EventsV1, &body).is_err());
        body["eventTime"] = json!("0001-01-01T00:00:00.000000Z");
        assert_eq!(
            to_storage(EventApi::EventsV1, &body)?.stored["eventTime"],
            Value::Null
        );
        Ok(())
    }

    #[test]
    fn wrong_json_types_are_refused() {
        for (field, value) in [
            ("note", json!(5)),
            ("deprecatedCount", json!("3")),
            ("deprecatedCount", json!(2.5)),
            ("regarding", json!("web")),
            ("series", json!([])),
            ("metadata", json!("x")),
        ] {
            let mut body = new_style();
            body[field] = value;
            assert!(to_storage(EventApi::EventsV1, &body).is_err(), "{field}");
        }
        assert!(to_storage(EventApi::Core, &json!("x")).is_err());
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    fn event(api: EventApi, body: &Value) -> Result<Event, String> {
        decode(api, body).map(|d| d.event)
    }

    #[test]
    fn events_v1_creation_wants_a_new_style_event() -> Result<(), String> {
        assert!(
            validate_create(
                EventApi::EventsV1,
                &event(EventApi::EventsV1, &new_style())?
            )
            .is_empty()
        );
        let bare = json!({"metadata": {"name": "e", "namespace": "default"}, "reason": "R"});
        let causes = validate_create(EventApi::EventsV1, &event(EventApi::EventsV1, &bare)?);
        assert_eq!(fields(&causes), vec!["eventTime", "type"]);
        let mut deprecated = new_style();
        deprecated["deprecatedCount"] = json!(2);
        deprecated["deprecatedSource"] = json!({"host": "h"});
        deprecated["deprecatedLastTimestamp"] = json!("2026-01-01T00:00:00Z");
        let causes = validate_create(EventApi::EventsV1, &event(EventApi::EventsV1, &deprecated)?);
        assert_eq!(fields(&causes), vec!["lastTimestamp", "count", "source"]);
        let mut unreported = new_style();
        for field in ["reportingController", "reportingInstance", "action"] {
            unreported[field] = Value::Null;
        }
        unreported["regarding"]["namespace"] = Value::Null;
        unreported["series"]["count"] = json!(1);
        let causes = validate_create(EventApi::EventsV1, &event(EventApi::EventsV1, &unreported)?);
        assert_eq!(
            fields(&causes),
            vec![
                "involvedObject.namespace",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "series.count"
            ]
        );
        Ok(())
    }

    #[test]
    fn core_creation_is_lax_unless_the_event_is_new_style() -> Result<(), String> {
        assert!(validate_create(EventApi::Core, &event(EventApi::Core, &old_style())?).is_empty());
        let mut elsewhere = old_style();
        elsewhere["involvedObject"]["namespace"] = json!("other");
        let causes = validate_create(EventApi::Core, &event(EventApi::Core, &elsewhere)?);
        assert_eq!(fields(&causes), vec!["involvedObject.namespace"]);
        let mut half_new = old_style();
        half_new["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
        let causes = validate_create(EventApi::Core, &event(EventApi::Core, &half_new)?);
        assert_eq!(
            fields(&causes),
            vec![
                "reportingComponent",
                "reportingComponent",
                "reportingInstance",
                "action"
            ]
        );
        Ok(())
    }

    #[test]
    fn events_v1_updates_may_only_grow_the_series() -> Result<(), String> {
        let old = event(EventApi::EventsV1, &new_style())?;
        let mut grown = old.clone();
        grown.series = Some(EventSeries {
            count: 4,
            last_observed_time: Some("2026-01-02T03:10:00.000000Z".into()),
        });
        assert!(validate_update(EventApi::EventsV1, &grown, &old).is_empty());
        let mut renoted = old.clone();
        renoted.message = "changed".into();
        renoted.type_ = "Warning".into();
        assert_eq!(
            fields(&validate_update(EventApi::EventsV1, &renoted, &old)),
            vec!["message", "type"]
        );
        assert!(validate_update(EventApi::Core, &renoted, &old).is_empty());
        Ok(())
    }

    #[test]
    fn field_labels_per_api() {
        for (api, label, core) in [
            (
                EventApi::Core,
                "involvedObject.name",
                Some("involvedObject.name"),
            ),
            (
                EventApi::Core,
                "involvedObject.uid",
                Some("involvedObject.uid"),
            ),
            (
                EventApi::Core,
                "reportingComponent",
                Some("reportingComponent"),
            ),
            (EventApi::Core, "source", Some("source")),
            (EventApi::Core, "regarding.name", None),
            (EventApi::Core, "involvedObject.bogus", None),
            (EventApi::Core, "message", None),
            (
                EventApi::EventsV1,
                "regarding.name",
                Some("involvedObject.name"),
            ),
            (
                EventApi::EventsV1,
                "regarding.fieldPath",
                Some("involvedObject.fieldPath"),
            ),
            (
                EventApi::EventsV1,
                "reportingController",
                Some("reportingComponent"),
            ),
            (EventApi::EventsV1, "source", Some("source")),
            (EventApi::EventsV1, "type", Some("type")),
            (EventApi::EventsV1, "metadata.name", Some("metadata.name")),
            (EventApi::EventsV1, "involvedObject.name", None),
            (EventApi::EventsV1, "reportingComponent", None),
            (EventApi::EventsV1, "regarding.bogus", None),
            (EventApi::EventsV1, "note", None),
        ] {
            assert_eq!(field_label(api, label), core, "{api:?} {label}");
        }
    }

    #[test]
    fn source_selects_the_reporter_when_there_is_no_source() -> Result<(), String> {
        let new = to_storage(EventApi::EventsV1, &new_style())?.stored;
        assert_eq!(selectable_field(&new, "source"), "ferrolb.io/controller");
        let old = to_storage(EventApi::Core, &old_style())?.stored;
        assert_eq!(selectable_field(&old, "source"), "ferrolb-controller");
        assert_eq!(selectable_field(&old, "involvedObject.name"), "web");
        assert_eq!(
            selectable_field(&new, "reportingComponent"),
            "ferrolb.io/controller"
        );
        Ok(())
    }
}
