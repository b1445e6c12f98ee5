//! The double's static CEL cost check against what a real kube-apiserver
//! (v1.36.2) said about the same CRDs (`tests/data/realk8s-cel-costs.json`,
//! a copy of `shared/realk8s/cel-costs.json`), and every CRD of the project
//! estimated, so that a CI run notices a rule a real server would refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::path::PathBuf;

use common::*;
use ferrolb_tests::apiserver::cel_cost::{self, ExpressionKind, SchemaReport, budget};
use ferrolb_tests::apiserver::{ApiServerConfig, ApiServerHandle};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const DATA: &str = "tests/data/realk8s-cel-costs.json";

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(DATA)).unwrap();
    let data: Value = serde_json::from_str(&text).unwrap();
    let cases = data["cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 65);
    cases
}

fn label(case: &Value) -> String {
    let bound = |key: &str| {
        case[key]
            .as_u64()
            .map_or_else(|| "none".to_string(), |n| n.to_string())
    };
    format!(
        "{} (maxLength {}, maxItems {})",
        case["name"].as_str().unwrap(),
        bound("maxLength"),
        bound("maxItems")
    )
}

/// The string item schema of a case, with its one rule.
fn item_schema(case: &Value) -> Value {
    let mut items = json!({"type": "string", "minLength": 1});
    if !case["maxLength"].is_null() {
        items["maxLength"] = case["maxLength"].clone();
    }
    let mut rule = json!({"rule": case["rule"]});
    if !case["messageExpression"].is_null() {
        rule["messageExpression"] = case["messageExpression"].clone();
    }
    items["x-kubernetes-validations"] = json!([rule]);
    items
}

/// The CRD the real server was asked about: `spec.addresses`, an array of
/// those strings.
fn case_crd(case: &Value) -> Value {
    let mut addresses = json!({"type": "array", "items": item_schema(case)});
    if !case["maxItems"].is_null() {
        addresses["maxItems"] = case["maxItems"].clone();
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "probes.cost.example.com"},
        "spec": {
            "group": "cost.example.com",
            "scope": "Namespaced",
            "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"addresses": addresses}}}
            }}}]
        }
    })
}

fn report(case: &Value) -> SchemaReport {
    let mut reports = cel_cost::estimate_crd(&case_crd(case), None);
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

/// The factor our first cause states, as a number (`>100` above 100).
fn first_factor(report: &SchemaReport) -> Option<f64> {
    let cause = report.causes.first()?;
    let cost = if cause.field == report.field {
        report.total.total
    } else {
        report
            .expressions
            .iter()
            .find(|e| e.field == cause.field)?
            .cost
    };
    let limit = if cause.field == report.field {
        budget::PER_SCHEMA_LIMIT
    } else {
        budget::PER_EXPRESSION_LIMIT
    };
    Some(cost as f64 / limit as f64)
}

/// What kubectl prints for a 422 from its causes, flattened onto one line
/// the way the measurements recorded multi-cause messages.
fn kubectl_style(name: &str, causes: &[(String, String)]) -> String {
    match causes {
        [(field, message)] => {
            format!("The CustomResourceDefinition \"{name}\" is invalid: {field}: {message}")
        }
        _ => causes
            .iter()
            .map(|(field, message)| format!("* {field}: {message}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn assert_message_matches(case: &Value, rendered: &str) {
    let real = case["message"].as_str().unwrap_or_default();
    // the measurements cut messages at 600 characters
    assert!(
        rendered.starts_with(real) && (real.len() >= 590 || rendered == real),
        "{}:\n  real: {real}\n  ours: {rendered}",
        label(case)
    );
}

#[test]
fn the_data_copy_is_the_shared_measurement() {
    let shared = repo_root().join("../shared/realk8s/cel-costs.json");
    if let Ok(text) = std::fs::read_to_string(&shared) {
        let copy = std::fs::read_to_string(repo_root().join(DATA)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::from_str::<Value>(&copy).unwrap(),
            "{DATA} differs from {}: copy it again",
            shared.display()
        );
    }
}

/// kube-cel's own estimate (a heuristic: fixed defaults for missing bounds,
/// a 1,000,000 budget, no cardinality) on the same cases, for the record.
#[test]
fn kube_cel_heuristic_agreement_is_measured() {
    let cases = cases();
    let mut agree = 0;
    for case in &cases {
        let schema = kube_cel::compile_schema(&item_schema(case));
        let mut expressions = vec![case["rule"].as_str().unwrap()];
        expressions.extend(case["messageExpression"].as_str());
        let refused = expressions.iter().any(|expression| {
            kube_cel::estimate_rule_cost(expression, &schema)
                .iter()
                .any(|w| w.kind == kube_cel::WarningKind::CostExceeded)
        });
        let accepted = case["accepted"].as_bool().unwrap();
        let same = accepted != refused;
        agree += usize::from(same);
        println!(
            "kube-cel {:8} real {:8} {}",
            if refused { "refuses" } else { "accepts" },
            if accepted { "accepts" } else { "refuses" },
            label(case)
        );
    }
    println!(
        "kube-cel estimate_rule_cost agrees with kube-apiserver on {agree}/{} cases",
        cases.len()
    );
}

#[test]
fn every_measured_case_gets_the_real_verdict_and_factor() {
    let mut worst: f64 = 0.0;
    for case in cases() {
        let report = report(&case);
        let accepted = case["accepted"].as_bool().unwrap();
        let costs: Vec<String> = report
            .expressions
            .iter()
            .map(|e| format!("{} x {} = {}", e.raw, e.cardinality, e.cost))
            .collect();
        println!("{}: {costs:?}", label(&case));
        assert_eq!(
            report.causes.is_empty(),
            accepted,
            "{}: {:?}",
            label(&case),
            report.causes
        );
        if accepted {
            continue;
        }
        let ours = first_factor(&report).unwrap();
        match &case["factor"] {
            Value::String(s) if s == ">100" => {
                assert!(ours > 100.0, "{}: {ours}", label(&case));
                assert!(report.causes[0].message.contains("more than 100x"));
            }
            Value::Number(real) => {
                let real = real.as_f64().unwrap();
                let error = (ours - real).abs() / real;
                worst = worst.max(error);
                assert!(error <= 0.1, "{}: real {real}, ours {ours}", label(&case));
                assert!(
                    report.causes[0]
                        .message
                        .contains(&format!("factor of {real:.1}x")),
                    "{}: {}",
                    label(&case),
                    report.causes[0].message
                );
            }
            other => panic!("{}: no factor in {other}", label(&case)),
        }
        let causes: Vec<(String, String)> = report
            .causes
            .iter()
            .map(|c| (c.field.clone(), c.message.clone()))
            .collect();
        assert_message_matches(&case, &kubectl_style("probes.cost.example.com", &causes));
    }
    println!(
        "largest factor error against the printed factors: {:.2}%",
        worst * 100.0
    );
}

#[tokio::test]
async fn the_double_refuses_what_the_real_server_refuses() {
    let double = ApiServerHandle::start("127.0.0.1:0".parse().unwrap(), ApiServerConfig::default())
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(double.client().unwrap());
    for case in cases() {
        let crd: CustomResourceDefinition = serde_json::from_value(case_crd(&case)).unwrap();
        let created = crds.create(&PostParams::default(), &crd).await;
        if case["accepted"].as_bool().unwrap() {
            assert!(created.is_ok(), "{}: {created:?}", label(&case));
            crds.delete("probes.cost.example.com", &DeleteParams::default())
                .await
                .unwrap();
            continue;
        }
        let err = expect_code(created, 422).unwrap();
        assert_eq!(api_reason(&err), "Invalid", "{}", label(&case));
        let kube::Error::Api(status) = &err else {
            panic!("{}: {err}", label(&case));
        };
        let details = status.details.as_ref().unwrap();
        assert_eq!(details.kind, "CustomResourceDefinition");
        assert_eq!(details.name, "probes.cost.example.com");
        let causes: Vec<(String, String)> = details
            .causes
            .iter()
            .map(|c| (c.field.clone(), c.message.clone()))
            .collect();
        assert!(
            details
                .causes
                .iter()
                .all(|c| c.reason == "FieldValueForbidden"),
            "{}: {causes:?}",
            label(&case)
        );
        for (field, message) in &causes {
            assert!(
                status.message.contains(&format!("{field}: {message}")),
                "{}: {}",
                label(&case),
                status.message
            );
        }
        assert_message_matches(&case, &kubectl_style("probes.cost.example.com", &causes));
    }
}

fn project_crds() -> Vec<(String, Value)> {
    let dir = repo_root().join("config/crds");
    let mut crds: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let crd: Value = serde_saphyr::from_str(&text).unwrap();
            (crd["metadata"]["name"].as_str().unwrap().to_string(), crd)
        })
        .collect();
    crds.sort_by(|a, b| a.0.cmp(&b.0));
    crds
}

/// Every CEL rule of every CRD in config/crds, costed as the server would.
#[test]
fn project_crds_are_estimated_rule_by_rule() {
    let crds = project_crds();
    assert!(crds.len() >= 3);
    for (name, crd) in &crds {
        for report in cel_cost::estimate_crd(crd, None) {
            println!("{name} {}:", report.field);
            for e in &report.expressions {
                let what = match e.kind {
                    ExpressionKind::Rule => "rule",
                    ExpressionKind::MessageExpression => "messageExpression",
                };
                println!(
                    "  {:>26} = {:>20} x {:>7}  {what} at {}",
                    e.cost, e.raw, e.cardinality, e.field
                );
            }
            println!(
                "  total {} of {} allowed; {} cause(s)",
                report.total.total,
                budget::PER_SCHEMA_LIMIT,
                report.causes.len()
            );
            for cause in &report.causes {
                println!("    {}: {}", cause.field, cause.message);
            }
            assert!(
                report
                    .causes
                    .iter()
                    .all(|c| c.reason == "FieldValueForbidden"),
                "{name}: every rule must compile and be modelled: {:?}",
                report.causes
            );
            assert!(
                report.causes.is_empty(),
                "{name} would be refused by kube-apiserver: {:?}",
                report.causes
            );
        }
    }
}

/// Where an IPAddressPool address rule is one the real server was asked about (at the CRD's
/// maxLength and maxItems), the real server accepted it; the rules it refused are gone.
#[test]
fn ipaddresspool_address_rules_are_ones_the_real_server_accepts() {
    let (_, crd) = project_crds()
        .into_iter()
        .find(|(name, _)| name == "ipaddresspools.ferrolb.io")
        .unwrap();
    let items = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["addresses"];
    let rules = items["items"]["x-kubernetes-validations"]
        .as_array()
        .unwrap();
    let cases = cases();
    let mut measured = 0;
    for rule in rules {
        let same = cases.iter().find(|c| {
            c["rule"] == rule["rule"]
                && c["messageExpression"] == rule["messageExpression"]
                && c["maxLength"] == items["items"]["maxLength"]
                && c["maxItems"] == items["maxItems"]
        });
        if let Some(case) = same {
            measured += 1;
            assert_eq!(
                case["accepted"],
                true,
                "{}: refused by the real server",
                label(case)
            );
        }
        // A refusal at bounds no looser than the CRD's would hold for the CRD too.
        let bound = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
        for case in cases
            .iter()
            .filter(|c| c["rule"] == rule["rule"] && c["accepted"] == false)
        {
            let no_looser = bound(&case["maxLength"]) <= bound(&items["items"]["maxLength"])
                && bound(&case["maxItems"]) <= bound(&items["maxItems"]);
            assert!(
                !no_looser,
                "{}: refused at bounds no looser than the CRD's",
                label(case)
            );
        }
    }
    assert!(measured >= 1, "no address rule matches a measured case");
}

fn crd_with_rule(schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.cost.example.com"},
        "spec": {
            "group": "cost.example.com",
            "scope": "Cluster",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": schema}}}}]
        }
    })
}

/// A construct the estimator does not model is refused with a cause that
/// says so, never costed as cheap.
#[test]
fn unmodelled_constructs_fail_loudly() {
    for rule in [
        "sets.contains(self.a, ['x'])",
        "self.a.all(i, v, v != 'x')",
        "self.a.map(x, x).sort() == []",
        "optional.of(self.a).hasValue()",
    ] {
        let crd = crd_with_rule(json!({
            "type": "object",
            "properties": {"a": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 3}}},
            "x-kubernetes-validations": [{"rule": rule}]
        }));
        let causes = cel_cost::crd_causes(&crd, None);
        assert_eq!(causes.len(), 1, "{rule}: {causes:?}");
        assert_eq!(causes[0].reason, "InternalError", "{rule}: {causes:?}");
        assert!(
            causes[0].message.contains("is not modelled"),
            "{rule}: {causes:?}"
        );
        assert_eq!(
            causes[0].field,
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
        );
    }
}

#[test]
fn rules_that_do_not_compile_are_invalid() {
    let schema = |rule: &str, message: Option<&str>| {
        let mut rule = json!({"rule": rule});
        if let Some(m) = message {
            rule["messageExpression"] = json!(m);
        }
        json!({"type": "object", "properties": {"n": {"type": "integer"}},
            "x-kubernetes-validations": [rule]})
    };
    let field = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0]";
    for (rule, message, path, detail) in [
        (
            "self.nonExistingField > 0",
            None,
            "rule",
            "compilation failed: ERROR: <input>: undefined field 'nonExistingField'",
        ),
        (
            "self.n == true",
            None,
            "rule",
            "compilation failed: ERROR: <input>: found no matching overload for '_==_' applied to '(int, bool)'",
        ),
        (
            "self.n +",
            None,
            "rule",
            "compilation failed: ERROR: <input>:1:",
        ),
        (
            "self.n",
            None,
            "rule",
            "}: cel expression must evaluate to a bool",
        ),
        (
            "self.n > 0",
            Some("self.n"),
            "messageExpression",
            "messageExpression must evaluate to a string",
        ),
        (
            "self.n > 0",
            Some("self.x + 'a'"),
            "messageExpression",
            "messageExpression compilation failed: ERROR: <input>: undefined field 'x'",
        ),
    ] {
        let causes = cel_cost::crd_causes(&crd_with_rule(schema(rule, message)), None);
        assert_eq!(causes.len(), 1, "{rule}: {causes:?}");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert_eq!(causes[0].field, format!("{field}.{path}"));
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: apiextensions.ValidationRule{Rule:")
                && causes[0].message.contains(detail),
            "{rule}: {}",
            causes[0].message
        );
    }
}

#[tokio::test]
async fn the_double_refuses_rules_that_do_not_compile_or_are_not_modelled() {
    let double = ApiServerHandle::start("127.0.0.1:0".parse().unwrap(), ApiServerConfig::default())
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(double.client().unwrap());
    for (rule, reason, detail) in [
        (
            "self.nope == 1",
            "FieldValueInvalid",
            "compilation failed: ERROR: <input>: undefined field 'nope'",
        ),
        (
            "sets.contains(self.a, ['x'])",
            "InternalError",
            "function sets.contains() is not modelled",
        ),
    ] {
        let crd = crd_with_rule(json!({"type": "object",
            "properties": {"a": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 3}}},
            "x-kubernetes-validations": [{"rule": rule}]}));
        let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
        let err = expect_code(crds.create(&PostParams::default(), &crd).await, 422).unwrap();
        let kube::Error::Api(status) = &err else {
            panic!("{err}");
        };
        let causes = &status.details.as_ref().unwrap().causes;
        assert_eq!(causes.len(), 1, "{rule}: {causes:?}");
        assert_eq!(causes[0].reason, reason);
        assert_eq!(
            causes[0].field,
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(
            causes[0].message.contains(detail),
            "{rule}: {}",
            causes[0].message
        );
    }
}

/// On update the per-expression limits do not apply to a schema the stored
/// CRD already had; the schema total still does.
#[test]
fn unchanged_schemas_keep_their_rules_on_update() {
    let expensive = crd_with_rule(json!({"type": "array", "maxItems": 64,
        "items": {"type": "string", "x-kubernetes-validations": [{"rule": "isIP(self)"}]}}));
    assert_eq!(cel_cost::crd_causes(&expensive, None).len(), 1);
    assert!(cel_cost::crd_causes(&expensive, Some(&expensive)).is_empty());
    let mut changed = expensive.clone();
    changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["maxItems"] =
        json!(65);
    assert_eq!(cel_cost::crd_causes(&changed, Some(&expensive)).len(), 1);
}

/// Versions with different schemas are checked, and reported, one by one.
#[test]
fn differing_versions_are_reported_per_version() {
    let mut crd = crd_with_rule(json!({"type": "array", "maxItems": 64,
        "items": {"type": "string", "x-kubernetes-validations": [{"rule": "isIP(self)"}]}}));
    let mut v2 = crd["spec"]["versions"][0].clone();
    v2["name"] = json!("v2");
    v2["storage"] = json!(false);
    v2["schema"]["openAPIV3Schema"]["properties"]["spec"]["items"]["maxLength"] = json!(10);
    crd["spec"]["versions"].as_array_mut().unwrap().push(v2);
    let causes = cel_cost::crd_causes(&crd, None);
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].items.x-kubernetes-validations[0].rule"
        ],
        "{causes:?}"
    );
}
