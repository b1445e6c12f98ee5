//! kube-apiserver's static cost check of a CRD's CEL rules, reproduced.
//!
//! A real server refuses a CustomResourceDefinition whose
//! `x-kubernetes-validations` could cost too much in the worst case: each
//! rule, times the number of times it can run (the product of the
//! `maxItems`/`maxProperties` above it), must stay within
//! [`budget::PER_EXPRESSION_LIMIT`], each messageExpression too (once, not
//! per element), and all of them together within
//! [`budget::PER_SCHEMA_LIMIT`]. Without this the double accepts CRDs that a
//! cluster refuses.
//!
//! The estimate follows the server's: the schema gives each node a CEL
//! declaration with sizes ([`sizes`]), a small type checker picks overloads
//! ([`types`]), and the coster walks the expression ([`estimate`]), pricing
//! the Kubernetes libraries as the server does ([`library`]). Constructs it
//! does not model are refused as internal errors naming what is missing,
//! never costed by guess. Nothing here does I/O.

pub mod budget;
pub mod estimate;
pub mod library;
pub mod sizes;
pub mod types;

use kube_cel::cel::parser::Parser;
use serde_json::Value;

use super::error::Cause;
use budget::SchemaTotal;
use sizes::Decl;
use types::{CheckError, Type};

/// What a CEL expression must evaluate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A rule: bool.
    Rule,
    /// A messageExpression: string.
    Message,
}

/// The worst-case cost of one expression evaluated once against a value
/// declared by `decl` (the server's `MaxCost`).
pub fn expression_cost(source: &str, decl: &Decl, expected: Expected) -> Result<u64, CheckError> {
    // A CRD is input: a parser crash must not take the double down.
    let parsed =
        std::panic::catch_unwind(|| Parser::new().enable_optional_syntax(true).parse(source))
            .map_err(|_| CheckError::Unsupported("an expression the CEL parser crashed on".into()))?
            .map_err(|errors| CheckError::Compile(errors.to_string()))?;
    // cel-go would point at the line and column; the parser here does not
    // say where a type error is.
    let checked = types::check(&parsed, decl).map_err(|err| match err {
        CheckError::Compile(error) => CheckError::Compile(format!("ERROR: <input>: {error}")),
        other => other,
    })?;
    let result = checked.type_of(parsed.id);
    match expected {
        Expected::Rule if result != Type::Bool => {
            return Err(CheckError::WrongOutputType(
                "cel expression must evaluate to a bool".into(),
            ));
        }
        Expected::Message if result != Type::String => {
            return Err(CheckError::WrongOutputType(
                "messageExpression must evaluate to a string".into(),
            ));
        }
        _ => {}
    }
    Ok(estimate::cost(&parsed, &checked, decl)?.max)
}

/// Whether an expression is a rule or a messageExpression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpressionKind {
    Rule,
    MessageExpression,
}

/// One estimated expression of a CRD schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressionCost {
    /// The field path the server reports it under.
    pub field: String,
    pub kind: ExpressionKind,
    pub source: String,
    /// One evaluation.
    pub raw: u64,
    /// How often it can run per object (1 for messageExpressions, which run
    /// only on failure and are counted once).
    pub cardinality: u64,
    /// What counts against the budgets: raw times cardinality.
    pub cost: u64,
}

/// The estimate of one OpenAPI schema of a CRD (the shared one, or one per
/// version when versions differ).
#[derive(Debug, Clone, Default)]
pub struct SchemaReport {
    /// `spec.validation.openAPIV3Schema` or `spec.versions[i].schema.openAPIV3Schema`.
    pub field: String,
    pub expressions: Vec<ExpressionCost>,
    pub total: SchemaTotal,
    /// The causes the server gives for this schema, in its order.
    pub causes: Vec<Cause>,
}

/// The schemas of a v1 CRD as the server validates them: once for all
/// versions when they agree, else once per version.
fn schemas(crd: &Value) -> Vec<(String, &Value, Option<&str>)> {
    let with_schema: Vec<(usize, &Value)> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| (i, &v["schema"]["openAPIV3Schema"]))
        .collect();
    let all_same = with_schema.windows(2).all(|pair| pair[0].1 == pair[1].1);
    if all_same {
        return with_schema
            .first()
            .filter(|(_, s)| s.is_object())
            .map(|(_, s)| ("spec.validation.openAPIV3Schema".to_string(), *s, None))
            .into_iter()
            .collect();
    }
    with_schema
        .into_iter()
        .filter(|(_, s)| s.is_object())
        .map(|(i, s)| {
            let version = crd["spec"]["versions"][i]["name"].as_str();
            (
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                s,
                version,
            )
        })
        .collect()
}

/// Estimates every rule of a CRD and returns the server's verdict per schema.
/// `old` is the stored CRD on update: the per-expression limits do not apply
/// to a schema it already had (the total still does).
pub fn estimate_crd(crd: &Value, old: Option<&Value>) -> Vec<SchemaReport> {
    let old_schemas: Vec<(String, &Value, Option<&str>)> = old.map(schemas).unwrap_or_default();
    schemas(crd)
        .into_iter()
        .map(|(field, schema, version)| {
            let unchanged = old_schemas
                .iter()
                .any(|(old_field, old_schema, old_version)| {
                    *old_schema == schema
                        && (old_field == &field || (version.is_some() && *old_version == version))
                });
            estimate_schema(&field, schema, unchanged)
        })
        .collect()
}

/// The causes of a 422 for CEL rules over budget or not compiling.
pub fn crd_causes(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    estimate_crd(crd, old)
        .into_iter()
        .flat_map(|report| report.causes)
        .collect()
}

fn forbidden(field: &str, detail: impl Into<String>) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {}", detail.into()),
        field: field.into(),
    }
}

fn internal(field: &str, detail: impl Into<String>) -> Cause {
    Cause {
        reason: "InternalError".into(),
        message: format!("Internal error: {}", detail.into()),
        field: field.into(),
    }
}

/// Go's `%#v` of the server's internal ValidationRule, which is how an
/// invalid rule is quoted back.
fn rule_value(rule: &Value) -> String {
    let text = |key: &str| format!("{:?}", rule[key].as_str().unwrap_or_default());
    let pointer = |key: &str, go_type: &str| {
        if rule[key].is_null() {
            format!("({go_type})(nil)")
        } else {
            // Go prints the address; any address will do
            format!("({go_type})(0xc000010000)")
        }
    };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{}, FieldPath:{}, OptionalOldSelf:{}}}",
        text("rule"),
        text("message"),
        text("messageExpression"),
        pointer("reason", "*apiextensions.FieldValueErrorReason"),
        text("fieldPath"),
        pointer("optionalOldSelf", "*bool"),
    )
}

fn unsupported_detail(what: &str) -> String {
    format!(
        "the API server double cannot estimate the cost of this expression: {what} is not \
         modelled (tests/src/apiserver/cel_cost); a real server may refuse it"
    )
}

struct Walk<'a> {
    report: &'a mut SchemaReport,
    suppress_per_expression: bool,
}

impl Walk<'_> {
    /// Children before the node's own rules, as the server walks.
    fn visit(
        &mut self,
        schema: &Value,
        field: &str,
        cardinality: Option<u64>,
        resource_root: bool,
    ) {
        let child_cardinality = cardinality.and_then(|c| {
            element_factor(schema).map(|factor| budget::times_cardinality(c, factor))
        });
        if let Some(props) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            self.visit(
                props,
                &format!("{field}.additionalProperties"),
                child_cardinality,
                embedded(props),
            );
        }
        for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
            self.visit(
                prop,
                &format!("{field}.properties[{name}]"),
                child_cardinality,
                embedded(prop),
            );
        }
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            self.visit(
                items,
                &format!("{field}.items"),
                child_cardinality,
                embedded(items),
            );
        }
        if let Some(rules) = schema["x-kubernetes-validations"].as_array()
            && !rules.is_empty()
        {
            self.rules(schema, rules, field, cardinality, resource_root);
        }
    }

    fn rules(
        &mut self,
        schema: &Value,
        rules: &[Value],
        field: &str,
        cardinality: Option<u64>,
        resource_root: bool,
    ) {
        let Some(decl) = sizes::schema_decl(schema, resource_root) else {
            self.report.causes.push(internal(
                &format!("{field}.x-kubernetes-validations"),
                "internal error: failed to construct type information for \
                 x-kubernetes-validations rules: unable to convert structural schema to CEL \
                 declarations",
            ));
            return;
        };
        let cardinality =
            cardinality.unwrap_or_else(|| budget::unbounded_cardinality(decl.min_serialized_size));
        for (i, rule) in rules.iter().enumerate() {
            let rule_field = format!("{field}.x-kubernetes-validations[{i}].rule");
            let source = rule["rule"].as_str().unwrap_or_default();
            if source.trim().is_empty() {
                continue;
            }
            let outcome = expression_cost(source, &decl, Expected::Rule);
            let raw = *outcome.as_ref().unwrap_or(&0);
            let cost = budget::times_cardinality(raw, cardinality);
            if !self.suppress_per_expression && cost > budget::PER_EXPRESSION_LIMIT {
                self.report.causes.push(forbidden(
                    &rule_field,
                    budget::over_budget(
                        budget::RULE_OVER_BUDGET,
                        cost,
                        budget::PER_EXPRESSION_LIMIT,
                    ),
                ));
            }
            self.report.total.observe(&rule_field, cost);
            self.report.expressions.push(ExpressionCost {
                field: rule_field.clone(),
                kind: ExpressionKind::Rule,
                source: source.to_string(),
                raw,
                cardinality,
                cost,
            });
            match outcome {
                Err(CheckError::Compile(error)) => {
                    self.report.causes.push(Cause::invalid(
                        &rule_field,
                        format!(
                            "Invalid value: {}: compilation failed: {error}",
                            rule_value(rule)
                        ),
                    ));
                    continue;
                }
                Err(CheckError::WrongOutputType(error)) => {
                    self.report.causes.push(Cause::invalid(
                        &rule_field,
                        format!("Invalid value: {}: {error}", rule_value(rule)),
                    ));
                    continue;
                }
                Err(CheckError::Unsupported(what)) => {
                    self.report
                        .causes
                        .push(internal(&rule_field, unsupported_detail(&what)));
                    continue;
                }
                Ok(_) => {}
            }
            let message = rule["messageExpression"].as_str().unwrap_or_default();
            if message.is_empty() {
                continue;
            }
            let message_field = format!("{field}.x-kubernetes-validations[{i}].messageExpression");
            match expression_cost(message, &decl, Expected::Message) {
                Ok(raw) => {
                    if !self.suppress_per_expression && raw > budget::PER_EXPRESSION_LIMIT {
                        self.report.causes.push(forbidden(
                            &message_field,
                            budget::over_budget(
                                budget::MESSAGE_EXPRESSION_OVER_BUDGET,
                                raw,
                                budget::PER_EXPRESSION_LIMIT,
                            ),
                        ));
                    }
                    self.report.total.observe(&message_field, raw);
                    self.report.expressions.push(ExpressionCost {
                        field: message_field,
                        kind: ExpressionKind::MessageExpression,
                        source: message.to_string(),
                        raw,
                        cardinality: 1,
                        cost: raw,
                    });
                }
                Err(CheckError::Compile(error)) => {
                    self.report.causes.push(Cause::invalid(
                        &message_field,
                        format!(
                            "Invalid value: {}: messageExpression compilation failed: {error}",
                            rule_value(rule)
                        ),
                    ));
                }
                Err(CheckError::WrongOutputType(error)) => {
                    self.report.causes.push(Cause::invalid(
                        &message_field,
                        format!("Invalid value: {}: {error}", rule_value(rule)),
                    ));
                }
                Err(CheckError::Unsupported(what)) => {
                    self.report
                        .causes
                        .push(internal(&message_field, unsupported_detail(&what)));
                }
            }
        }
    }
}

fn embedded(schema: &Value) -> bool {
    schema["x-kubernetes-embedded-resource"] == true
}

/// By how much a node multiplies the occurrences of its children: a list
/// or map by its bound (None without one), anything else by 1.
fn element_factor(schema: &Value) -> Option<u64> {
    let bound = |key: &str| {
        schema
            .get(key)
            .and_then(|v| v.as_i64().map(|n| n.max(0) as u64).or_else(|| v.as_u64()))
    };
    match schema["type"].as_str() {
        Some("object") => match schema.get("additionalProperties") {
            Some(props) if !props.is_null() => bound("maxProperties"),
            _ => Some(1),
        },
        Some("array") => bound("maxItems"),
        _ => Some(1),
    }
}

fn estimate_schema(field: &str, schema: &Value, unchanged: bool) -> SchemaReport {
    let mut report = SchemaReport {
        field: field.to_string(),
        ..SchemaReport::default()
    };
    Walk {
        report: &mut report,
        suppress_per_expression: unchanged,
    }
    .visit(schema, field, Some(1), true);
    if report.total.over_limit() {
        let contributors: Vec<Cause> = report
            .total
            .most_expensive
            .iter()
            .map(|(path, _)| forbidden(path, budget::CONTRIBUTED))
            .collect();
        report.causes.extend(contributors);
        report.causes.push(forbidden(
            field,
            budget::over_budget(
                budget::SCHEMA_OVER_BUDGET,
                report.total.total,
                budget::PER_SCHEMA_LIMIT,
            ),
        ));
    }
    report
}

#[cfg(test)]
mod tests;
