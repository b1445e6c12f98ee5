//! Label and field selector parsing and matching.

use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::events::{self, EventApi};

#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` query parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_value_set(raw: &str, whole: &str) -> ApiResult<Vec<String>> {
    let raw = raw.trim();
    let inner = raw
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: {whole}")))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_label_key(key: &str, whole: &str) -> ApiResult<String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key \"{key}\" in \"{whole}\""
        )))
    }
}

impl LabelSelector {
    pub fn parse(input: &str) -> ApiResult<Self> {
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let requirement = if let Some(key) = part.strip_prefix('!') {
                LabelRequirement::NotExists(check_label_key(key.trim(), part)?)
            } else if let Some((key, value)) = part.split_once("!=") {
                LabelRequirement::NotEquals(check_label_key(key.trim(), part)?, value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                LabelRequirement::Equals(check_label_key(key.trim(), part)?, value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                LabelRequirement::Equals(check_label_key(key.trim(), part)?, value.trim().into())
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                LabelRequirement::NotIn(
                    check_label_key(key.trim(), part)?,
                    parse_value_set(rest, part)?,
                )
            } else if let Some((key, rest)) = part.split_once(" in ") {
                LabelRequirement::In(
                    check_label_key(key.trim(), part)?,
                    parse_value_set(rest, part)?,
                )
            } else {
                LabelRequirement::Exists(check_label_key(part, part)?)
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FieldRequirement {
    path: String,
    value: String,
    negated: bool,
}

/// A parsed `fieldSelector` query parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
    /// Selects stored Events, whose field labels are those of the core form.
    events: bool,
}

/// Field labels kube-apiserver supports beyond metadata.name/namespace.
fn supported_field(plural: &str, group: &str, path: &str) -> bool {
    if matches!(path, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match (group, plural) {
        ("", "pods") => matches!(
            path,
            "spec.nodeName" | "status.phase" | "spec.restartPolicy"
        ),
        ("", "secrets") => path == "type",
        ("", "namespaces") => path == "status.phase",
        _ => false,
    }
}

impl FieldSelector {
    pub fn parse(input: &str, group: &str, plural: &str) -> ApiResult<Self> {
        let event_api = EventApi::from_group(group, plural);
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let (path, value, negated) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let path = path.trim();
            let unsupported =
                || ApiError::bad_request(format!("field label not supported: {path}"));
            // Both Event APIs select on the stored core form, so their
            // labels become core ones, as kube-apiserver converts them.
            let path = match event_api {
                Some(api) => events::field_label(api, path).ok_or_else(unsupported)?,
                None if supported_field(plural, group, path) => path,
                None => return Err(unsupported()),
            };
            requirements.push(FieldRequirement {
                path: path.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self {
            requirements,
            events: event_api.is_some(),
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = if self.events {
                events::selectable_field(object, &r.path)
            } else {
                let pointer = format!("/{}", r.path.replace('.', "/"));
                match object.pointer(&pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                }
            };
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn label_selector_operators() -> ApiResult<()> {
        let obj = labelled(json!({"app": "web", "tier": "front"}));
        for (selector, expected) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing,app=web", true),
            ("missing notin (x)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(selector)?.matches(&obj),
                expected,
                "{selector}"
            );
        }
        Ok(())
    }

    #[test]
    fn field_selector_on_events() -> ApiResult<()> {
        let event = json!({"metadata": {"name": "e1", "namespace": "ns"},
            "involvedObject": {"name": "svc", "kind": "Service"}});
        let selector = FieldSelector::parse(
            "involvedObject.name=svc,involvedObject.kind=Service",
            "",
            "events",
        )?;
        assert!(selector.matches(&event));
        assert!(FieldSelector::parse("spec.foo=1", "", "services").is_err());
        Ok(())
    }

    #[test]
    fn events_k8s_io_selectors_select_on_the_stored_core_form() -> ApiResult<()> {
        let stored = json!({"metadata": {"name": "e1", "namespace": "ns"},
            "involvedObject": {"name": "svc", "kind": "Service"},
            "source": {}, "reportingComponent": "ferrolb.io/controller"});
        for selector in [
            "regarding.name=svc,regarding.kind=Service",
            "reportingController=ferrolb.io/controller",
            "source=ferrolb.io/controller",
            "metadata.name=e1",
        ] {
            let parsed = FieldSelector::parse(selector, "events.k8s.io", "events")?;
            assert!(parsed.matches(&stored), "{selector}");
        }
        assert!(
            !FieldSelector::parse("regarding.name=other", "events.k8s.io", "events")?
                .matches(&stored)
        );
        assert!(
            FieldSelector::parse("involvedObject.name=svc", "events.k8s.io", "events").is_err()
        );
        assert!(FieldSelector::parse("regarding.name=svc", "", "events").is_err());
        assert!(
            FieldSelector::parse("source=ferrolb.io/controller", "", "events")?.matches(&stored)
        );
        Ok(())
    }
}
