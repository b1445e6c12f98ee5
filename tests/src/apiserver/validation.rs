//! Object metadata validation: names, label and annotation syntax and sizes.

use serde_json::Value;

use super::error::Cause;

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// kube-apiserver bounds the whole name, not its dot-separated parts: a 64-character part is
/// fine in a subdomain, unlike in a label.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Qualified name: `[prefix/]name`, name up to 63 characters of
/// `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub(super) fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let valid_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !valid_chars || !valid_ends {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    None
}

fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    qualified_name_problem(value).map(|_| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into()
    })
}

/// Which name rule a type follows.
#[derive(Debug, Clone, Copy)]
pub enum NameRule {
    Subdomain,
    /// Services and namespaces: DNS-1035 / DNS-1123 label.
    Label,
    /// Only what a URL path segment can carry: core `v1` Events, whose
    /// strategy leaves names to the generic check.
    PathSegment,
}

fn path_segment_problem(name: &str) -> Option<&'static str> {
    match name {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        _ if name.contains('/') => Some("may not contain '/'"),
        _ if name.contains('%') => Some("may not contain '%'"),
        _ => None,
    }
}

pub fn validate_metadata(object: &Value, name_rule: NameRule) -> Vec<Cause> {
    let mut causes = Vec::new();
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    let valid_name = match name_rule {
        NameRule::Subdomain => is_dns_subdomain(name),
        NameRule::Label => is_dns_label(name),
        // It has messages of its own, pushed next.
        NameRule::PathSegment => true,
    };
    if matches!(name_rule, NameRule::PathSegment)
        && let Some(problem) = path_segment_problem(name)
    {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": {problem}"),
        ));
    }
    if !valid_name {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        ));
    }
    if let Some(labels) = metadata["labels"].as_object() {
        for (key, value) in labels {
            if let Some(problem) = qualified_name_problem(key) {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    format!("Invalid value: \"{key}\": {problem}"),
                ));
            }
            match value.as_str() {
                Some(v) => {
                    if let Some(problem) = label_value_problem(v) {
                        causes.push(Cause::invalid(
                            "metadata.labels",
                            format!("Invalid value: \"{v}\": {problem}"),
                        ));
                    }
                }
                None => causes.push(Cause::invalid(
                    "metadata.labels",
                    format!("Invalid value: {value}: label values must be strings"),
                )),
            }
        }
    }
    if let Some(annotations) = metadata["annotations"].as_object() {
        let mut total = 0usize;
        for (key, value) in annotations {
            if let Some(problem) = qualified_name_problem(&key.to_lowercase()) {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    format!("Invalid value: \"{key}\": {problem}"),
                ));
            }
            total += key.len() + value.as_str().map(str::len).unwrap_or(0);
            if !value.is_string() {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    format!("Invalid value: {value}: annotation values must be strings"),
                ));
            }
        }
        if total > MAX_ANNOTATIONS_BYTES {
            causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
                field: "metadata.annotations".into(),
            });
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_bad_keys_and_values() {
        let ok = json!({"metadata": {"name": "web-1", "labels": {"app.kubernetes.io/name": "web"},
            "annotations": {"example.com/x": "anything goes here!"}}});
        assert!(validate_metadata(&ok, NameRule::Subdomain).is_empty());
        let bad = json!({"metadata": {"name": "Web_1", "labels": {"-bad": "x", "ok": "not ok!"},
            "annotations": {"bad key": "v"}}});
        assert_eq!(validate_metadata(&bad, NameRule::Subdomain).len(), 4);
        let long_part = json!({"metadata": {"name": format!("{}.example", "a".repeat(70))}});
        assert!(validate_metadata(&long_part, NameRule::Subdomain).is_empty());
        assert_eq!(validate_metadata(&long_part, NameRule::Label).len(), 1);
        let huge = json!({"metadata": {"name": "a", "annotations": {"k": "x".repeat(MAX_ANNOTATIONS_BYTES)}}});
        assert_eq!(validate_metadata(&huge, NameRule::Subdomain).len(), 1);
    }
}
