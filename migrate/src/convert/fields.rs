//! The fields of MetalLB objects that FerroLB has too: metadata, service allocation, selectors,
//! interfaces. Each is checked against FerroLB's schema and checks before it is written; a list
//! keeps what passes.

use std::collections::BTreeMap;

use ferrolb_crds::schema::{LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN};
use ferrolb_crds::{InterfaceName, LabelSelector, ServiceAllocation};
use serde_json::Value;

use crate::metallb::{self, Metadata};
use crate::report::{ObjectRef, Outcome, Report, join, quote};
use crate::schema::{CrdSchema, matches};

/// The longest label key: a DNS-subdomain prefix, `/`, and a 63-character name.
const MAX_LABEL_KEY_LENGTH: usize = 317;

/// Annotations that describe how the MetalLB object was managed, not what it configures; copied
/// onto the FerroLB object they would mislead kubectl or Helm.
const MANAGEMENT_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "meta.helm.sh/",
];

fn is_label_key(key: &str) -> bool {
    key.len() <= MAX_LABEL_KEY_LENGTH && matches(LABEL_KEY_PATTERN, key)
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63 && matches(LABEL_VALUE_PATTERN, value)
}

/// The pieces of an object's metadata FerroLB keeps.
pub(super) struct Kept {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
}

pub(super) fn not_readable(object: &ObjectRef, lines: &mut Report, field: &str, error: &str) {
    lines.push(
        object,
        field,
        Outcome::NotCarriedOver,
        format!("does not read as MetalLB's: {error}; the whole object is left out"),
    );
}

pub(super) fn flag(
    object: &ObjectRef,
    field: &str,
    value: Option<bool>,
    lines: &mut Report,
) -> Option<bool> {
    if let Some(value) = value {
        lines.push(object, field, Outcome::Converted, value.to_string());
    }
    value
}

/// Labels and annotations carry over (advertisements select pools by label); what the API
/// server or another tool put on the MetalLB object does not.
pub(super) fn metadata_lines(object: &ObjectRef, metadata: &Metadata, lines: &mut Report) -> Kept {
    let mut labels = BTreeMap::new();
    for (key, value) in &metadata.labels {
        let field = format!("metadata.labels.{key}");
        if !is_label_key(key) || !is_label_value(value) {
            lines.push(
                object,
                field,
                Outcome::NotCarriedOver,
                format!("{value:?} is not a valid label, which the API server refuses"),
            );
            continue;
        }
        lines.push(object, field, Outcome::Converted, format!("{value:?}"));
        labels.insert(key.clone(), value.clone());
    }
    let mut annotations = BTreeMap::new();
    for (key, value) in &metadata.annotations {
        let field = format!("metadata.annotations.{key}");
        if MANAGEMENT_ANNOTATIONS.iter().any(|m| key.starts_with(m)) {
            lines.push(
                object,
                field,
                Outcome::Changed,
                "is left out: it records how the MetalLB object was managed",
            );
            continue;
        }
        lines.push(
            object,
            field,
            Outcome::Converted,
            quote(&Value::from(value.clone())),
        );
        annotations.insert(key.clone(), value.clone());
    }
    if !metadata.owner_references.is_empty() {
        lines.push(
            object,
            "metadata.ownerReferences",
            Outcome::Changed,
            "are left out: they name the owners of the MetalLB object",
        );
    }
    if !metadata.finalizers.is_empty() {
        lines.push(
            object,
            "metadata.finalizers",
            Outcome::Changed,
            format!(
                "{} left out: they belong to whoever set them on the MetalLB object",
                quote(&Value::from(metadata.finalizers.clone()))
            ),
        );
    }
    Kept {
        labels,
        annotations,
    }
}

pub(super) fn convert_allocation(
    object: &ObjectRef,
    allocation: &metallb::ServiceAllocation,
    lines: &mut Report,
) -> Result<Option<ServiceAllocation>, String> {
    let schema = CrdSchema::ip_address_pool();
    let base = "spec.serviceAllocation";
    let priority_field = format!("{base}.priority");
    let priority = match allocation.priority {
        None => None,
        Some(p) if p > 0 => match i32::try_from(p) {
            Ok(p) => {
                lines.push(object, priority_field, Outcome::Converted, p.to_string());
                Some(p)
            }
            Err(_) => {
                lines.push(
                    object,
                    priority_field,
                    Outcome::NotCarriedOver,
                    format!("{p} is larger than FerroLB's largest priority ({}); left unset, so the pool is tried after every pool with a priority", i32::MAX),
                );
                None
            }
        },
        Some(0) => {
            lines.push(
                object,
                priority_field,
                Outcome::Changed,
                "0 is MetalLB's \"no priority\", tried after every pool with a priority; FerroLB says so by leaving it unset (its 0 is tried first)",
            );
            None
        }
        Some(p) => {
            lines.push(
                object,
                priority_field,
                Outcome::Changed,
                format!("{p}: MetalLB treats only priorities above 0 as priorities, FerroLB allows none below 0; left unset (no priority)"),
            );
            None
        }
    };
    let namespaces_field = format!("{base}.namespaces");
    let max = schema.max_items(&namespaces_field).unwrap_or(usize::MAX);
    let mut namespaces: Vec<String> = Vec::new();
    for (index, namespace) in allocation.namespaces.iter().enumerate() {
        let field = format!("{namespaces_field}[{index}]");
        let problems = schema.check(
            "spec.serviceAllocation.namespaces[]",
            &Value::from(namespace.clone()),
        );
        if !problems.is_empty() {
            lines.push(
                object,
                field,
                Outcome::NotCarriedOver,
                format!("{namespace:?} is not a namespace name, so no Service can be in it"),
            );
        } else if namespaces.contains(namespace) {
            lines.push(
                object,
                field,
                Outcome::Changed,
                format!("{namespace:?} is listed twice; written once"),
            );
        } else if namespaces.len() >= max {
            lines.push(
                object,
                field,
                Outcome::NotCarriedOver,
                format!("{namespace:?}: FerroLB's pools list at most {max} namespaces"),
            );
        } else {
            lines.push(object, field, Outcome::Converted, format!("{namespace:?}"));
            namespaces.push(namespace.clone());
        }
    }
    let namespace_selectors = convert_selectors(
        object,
        schema,
        &format!("{base}.namespaceSelectors"),
        &allocation.namespace_selectors,
        lines,
    );
    let service_selectors = convert_selectors(
        object,
        schema,
        &format!("{base}.serviceSelectors"),
        &allocation.service_selectors,
        lines,
    );
    for (field, value) in &allocation.unknown {
        lines.push(
            object,
            join(base, field),
            Outcome::NotCarriedOver,
            format!(
                "{}: FerroLB's serviceAllocation has no such field",
                quote(value)
            ),
        );
    }
    let restricted_namespaces =
        !allocation.namespaces.is_empty() || !allocation.namespace_selectors.is_empty();
    if restricted_namespaces && namespaces.is_empty() && namespace_selectors.is_empty() {
        return Err("every namespace restriction is lost, and without them the pool would serve every namespace; the whole pool is left out".to_owned());
    }
    if !allocation.service_selectors.is_empty() && service_selectors.is_empty() {
        return Err("every service selector is lost, and without them the pool would serve every Service; the whole pool is left out".to_owned());
    }
    let allocation = ServiceAllocation {
        priority,
        namespaces,
        namespace_selectors,
        service_selectors,
    };
    Ok((allocation != ServiceAllocation::default()).then_some(allocation))
}

/// A MetalLB label selector as FerroLB's, if FerroLB can read it with the same meaning.
pub fn convert_selector(
    schema: &CrdSchema,
    items_path: &str,
    raw: &Value,
) -> Result<LabelSelector, String> {
    // FerroLB's type ignores unknown fields; a misspelt "matchLabel" would select everything.
    if let Some(fields) = raw.as_object() {
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "matchLabels" | "matchExpressions"))
        {
            return Err(format!(
                "has a field {unknown:?}, which label selectors do not have"
            ));
        }
        let expressions = fields.get("matchExpressions").and_then(Value::as_array);
        for expression in expressions.into_iter().flatten() {
            if let Some(unknown) = expression.as_object().and_then(|e| {
                e.keys()
                    .find(|k| !matches!(k.as_str(), "key" | "operator" | "values"))
            }) {
                return Err(format!(
                    "has a match expression with a field {unknown:?}, which they do not have"
                ));
            }
        }
    }
    let selector: LabelSelector =
        serde_json::from_value(raw.clone()).map_err(|e| format!("is not a label selector: {e}"))?;
    selector.check().map_err(|e| e.to_string())?;
    if let Some(key) = selector.match_labels.keys().find(|k| !is_label_key(k)) {
        return Err(format!("matches on {key:?}, which is not a label key"));
    }
    let problems = schema.check(
        items_path,
        &serde_json::to_value(&selector).unwrap_or_default(),
    );
    if problems.is_empty() {
        Ok(selector)
    } else {
        Err(problems.join("; "))
    }
}

fn show_selector(selector: &LabelSelector) -> String {
    if selector.is_empty() {
        "{} (selects everything, as in MetalLB)".to_owned()
    } else {
        format!("{:?}", selector.to_string())
    }
}

pub(super) fn convert_selectors(
    object: &ObjectRef,
    schema: &CrdSchema,
    field: &str,
    raw: &[Value],
    lines: &mut Report,
) -> Vec<LabelSelector> {
    convert_selectors_at(object, schema, field, field, raw, lines)
}

/// [`convert_selectors`] for a list whose place in the MetalLB object (`shown_field`, e.g. in the
/// legacy ConfigMap) is not its place in FerroLB's schema (`schema_field`).
pub(super) fn convert_selectors_at(
    object: &ObjectRef,
    schema: &CrdSchema,
    schema_field: &str,
    shown_field: &str,
    raw: &[Value],
    lines: &mut Report,
) -> Vec<LabelSelector> {
    let max = schema.max_items(schema_field).unwrap_or(usize::MAX);
    let items_path = format!("{schema_field}[]");
    let mut selectors: Vec<LabelSelector> = Vec::new();
    for (index, value) in raw.iter().enumerate() {
        let path = format!("{shown_field}[{index}]");
        match convert_selector(schema, &items_path, value) {
            Err(why) => lines.push(
                object,
                path,
                Outcome::NotCarriedOver,
                format!("{} {why}; MetalLB refuses it too", quote(value)),
            ),
            Ok(selector) if selectors.contains(&selector) => lines.push(
                object,
                path,
                Outcome::Changed,
                format!("{} is listed twice; written once", show_selector(&selector)),
            ),
            Ok(selector) if selectors.len() >= max => lines.push(
                object,
                path,
                Outcome::NotCarriedOver,
                format!(
                    "{}: FerroLB takes at most {max} selectors here",
                    show_selector(&selector)
                ),
            ),
            Ok(selector) => {
                lines.push(object, path, Outcome::Converted, show_selector(&selector));
                selectors.push(selector);
            }
        }
    }
    selectors
}

pub(super) fn convert_interfaces(
    object: &ObjectRef,
    raw: &[String],
    lines: &mut Report,
) -> Vec<InterfaceName> {
    let schema = CrdSchema::l2_advertisement();
    let max = schema.max_items("spec.interfaces").unwrap_or(usize::MAX);
    let mut interfaces: Vec<InterfaceName> = Vec::new();
    for (index, name) in raw.iter().enumerate() {
        let path = format!("spec.interfaces[{index}]");
        match InterfaceName::new(name) {
            Err(error) => lines.push(
                object,
                path,
                Outcome::NotCarriedOver,
                format!("{error}: no interface can have it"),
            ),
            Ok(interface) if interfaces.contains(&interface) => lines.push(
                object,
                path,
                Outcome::Changed,
                format!("{name:?} is listed twice; written once"),
            ),
            Ok(_) if interfaces.len() >= max => lines.push(
                object,
                path,
                Outcome::NotCarriedOver,
                format!("{name:?}: FerroLB's L2Advertisements list at most {max} interfaces"),
            ),
            Ok(interface) => {
                lines.push(object, path, Outcome::Converted, format!("{name:?}"));
                interfaces.push(interface);
            }
        }
    }
    interfaces
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn misspelt_selector_fields_are_not_read_as_select_everything() {
        let schema = CrdSchema::l2_advertisement();
        assert!(
            convert_selector(
                schema,
                "spec.nodeSelectors[]",
                &json!({"matchLabel": {"a": "b"}})
            )
            .is_err()
        );
        assert!(
            convert_selector(
                schema,
                "spec.nodeSelectors[]",
                &json!({"matchLabels": {"a": "b"}})
            )
            .is_ok()
        );
    }
}
