//! Label selectors as used in FerroLB objects: the same shape and meaning as Kubernetes'
//! `metav1.LabelSelector`, with schema bounds so the API server can check them, and matching
//! shared by the controller (namespaces, Services) and the speaker (nodes, pools).

use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::schema::{self, LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN};

/// The most match expressions and values a selector may carry (bounds for the API server's
/// CEL cost estimate, and far beyond any real selector).
pub const MAX_EXPRESSIONS: u32 = 32;
pub const MAX_VALUES: u32 = 64;
pub const MAX_MATCH_LABELS: u32 = 32;

/// Selects objects by labels. An empty selector selects everything.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "match_labels_schema")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EXPRESSIONS))]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a selector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = requirement_rules)]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    #[schemars(length(max = 317), regex(pattern = LABEL_KEY_PATTERN))]
    pub key: String,
    #[schemars(schema_with = "operator_schema")]
    pub operator: SelectorOperator,
    /// Values for In and NotIn; must be empty for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "values_schema")]
    pub values: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

fn match_labels_schema(_: &mut SchemaGenerator) -> Schema {
    // Keys are not checked with CEL: the API server cannot bound the length of map keys, so any
    // rule on them is priced as unbounded and the CRD refused. A key that is not a label key
    // simply never matches.
    schema::from_json(json!({
        "type": "object",
        "maxProperties": MAX_MATCH_LABELS,
        "additionalProperties": {
            "type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN,
        },
    }))
}

fn operator_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "string",
        "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
        // Bounded so the API server can price the CEL rule that compares it.
        "maxLength": 12,
    }))
}

fn values_schema(_: &mut SchemaGenerator) -> Schema {
    schema::from_json(json!({
        "type": "array",
        "maxItems": MAX_VALUES,
        "items": { "type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN },
    }))
}

fn requirement_rules(schema: &mut Schema) {
    schema::add_rules(
        schema,
        [schema::rule_with_message_expression(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
            "self.operator in ['In', 'NotIn'] ? 'operator ' + self.operator + ' on ' + self.key + ' needs at least one value' : 'operator ' + self.operator + ' on ' + self.key + ' takes no values'",
        )],
    );
}

/// Why a selector cannot be used (objects that predate the schema, or bypassed it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("operator {operator} on {key} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("operator {operator} on {key} takes no values")]
    UnexpectedValues { key: String, operator: String },
}

impl fmt::Display for SelectorOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelectorOperator::In => "In",
            SelectorOperator::NotIn => "NotIn",
            SelectorOperator::Exists => "Exists",
            SelectorOperator::DoesNotExist => "DoesNotExist",
        })
    }
}

impl LabelSelectorRequirement {
    fn check(&self) -> Result<(), SelectorError> {
        let needs_values = matches!(
            self.operator,
            SelectorOperator::In | SelectorOperator::NotIn
        );
        match (needs_values, self.values.is_empty()) {
            (true, true) => Err(SelectorError::MissingValues {
                key: self.key.clone(),
                operator: self.operator.to_string(),
            }),
            (false, false) => Err(SelectorError::UnexpectedValues {
                key: self.key.clone(),
                operator: self.operator.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// A selector requiring exactly these labels.
    pub fn from_labels<K: Into<String>, V: Into<String>>(
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Checks what the schema checks with CEL, for objects that never passed through it.
    pub fn check(&self) -> Result<(), SelectorError> {
        self.match_expressions.iter().try_for_each(|r| r.check())
    }

    /// Whether an object with these labels is selected. A malformed selector selects nothing,
    /// so a bad object can never widen what is announced.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.check().is_ok()
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// The selector in the query syntax of the `labelSelector` list parameter and `kubectl -l`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                SelectorOperator::In => format!("{} in ({})", r.key, r.values.join(",")),
                SelectorOperator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                SelectorOperator::Exists => r.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// Whether any of the selectors selects the labels; an empty list selects everything.
pub fn any_selects(selectors: &[LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::labels;

    fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = LabelSelector::from_labels([("zone", "a"), ("tier", "edge")]);
        assert!(s.matches(&labels(&[("zone", "a"), ("tier", "edge"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("tier", "edge")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        use SelectorOperator::*;
        let node = labels(&[("zone", "a")]);
        assert!(requirement("zone", In, &["a", "b"]).matches(&node));
        assert!(!requirement("zone", In, &["b"]).matches(&node));
        assert!(!requirement("rack", In, &["a"]).matches(&node));
        assert!(requirement("zone", NotIn, &["b"]).matches(&node));
        assert!(!requirement("zone", NotIn, &["a"]).matches(&node));
        assert!(requirement("rack", NotIn, &["a"]).matches(&node));
        assert!(requirement("zone", Exists, &[]).matches(&node));
        assert!(!requirement("rack", Exists, &[]).matches(&node));
        assert!(requirement("rack", DoesNotExist, &[]).matches(&node));
        assert!(!requirement("zone", DoesNotExist, &[]).matches(&node));
    }

    #[test]
    fn malformed_selectors_select_nothing_and_say_why() {
        use SelectorOperator::*;
        let node = labels(&[("zone", "a")]);
        let s = requirement("zone", NotIn, &[]);
        assert!(!s.matches(&node));
        assert_eq!(
            s.check().unwrap_err().to_string(),
            "operator NotIn on zone needs at least one value"
        );
        let s = requirement("zone", Exists, &["a"]);
        assert!(!s.matches(&node));
        assert_eq!(
            s.check().unwrap_err().to_string(),
            "operator Exists on zone takes no values"
        );
    }

    #[test]
    fn renders_the_query_syntax() {
        let mut s = LabelSelector::from_labels([("app", "web")]);
        s.match_expressions =
            requirement("zone", SelectorOperator::In, &["a", "b"]).match_expressions;
        s.match_expressions
            .extend(requirement("gpu", SelectorOperator::DoesNotExist, &[]).match_expressions);
        assert_eq!(s.to_string(), "app=web,zone in (a,b),!gpu");
    }

    #[test]
    fn a_list_of_selectors_is_an_or() {
        let list = [
            LabelSelector::from_labels([("zone", "a")]),
            LabelSelector::from_labels([("zone", "b")]),
        ];
        assert!(any_selects(&list, &labels(&[("zone", "b")])));
        assert!(!any_selects(&list, &labels(&[("zone", "c")])));
        assert!(any_selects(&[], &labels(&[])));
    }
}
