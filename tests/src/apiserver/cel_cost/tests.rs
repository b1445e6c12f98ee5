//! Costs of single expressions, worked out by hand from the server's rules.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::estimate::{Range, scale};
use super::sizes::schema_decl;
use super::*;

fn decl(schema: Value) -> Decl {
    schema_decl(&schema, false).unwrap_or_else(|| panic!("no decl for {schema}"))
}

fn string_decl(max_length: Option<u64>) -> Decl {
    let mut schema = json!({"type": "string", "minLength": 1});
    if let Some(max) = max_length {
        schema["maxLength"] = json!(max);
    }
    decl(schema)
}

fn cost_of(expression: &str, decl: &Decl, expected: Expected) -> u64 {
    match expression_cost(expression, decl, expected) {
        Ok(cost) => cost,
        Err(err) => panic!("{expression}: {err:?}"),
    }
}

fn rule_cost(rule: &str, decl: &Decl) -> u64 {
    cost_of(rule, decl, Expected::Rule)
}

fn selector() -> Decl {
    decl(
        json!({"type": "object", "required": ["key", "operator"], "properties": {
            "key": {"type": "string", "maxLength": 317},
            "operator": {"type": "string", "maxLength": 12, "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            "values": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 63}},
            "count": {"type": "integer"}
        }}),
    )
}

#[test]
fn traversals_of_a_bounded_string() {
    let decl = string_decl(Some(79));
    // self (1) + ceil(316 * 0.1)
    assert_eq!(rule_cost("isIP(self)", &decl), 33);
    // self (1) + ceil(316 * 0.1) * ceil(1 * 0.1)
    assert_eq!(rule_cost("self.contains(':')", &decl), 33);
    // 1 + (33 + 33): && adds no cost of its own
    assert_eq!(
        rule_cost("!(self.contains(':') && self.contains('.'))", &decl),
        67
    );
    // self (1) + ceil((316 + 1) * 0.1) * ceil(48 characters * 0.25)
    assert_eq!(
        rule_cost(
            "self.matches('^[0-9a-fA-F:.]+(/[0-9]{1,3})?(-[0-9a-fA-F:.]+)?$')",
            &decl
        ),
        1 + 32 * 12
    );
}

#[test]
fn split_elements_are_as_long_as_self() {
    let decl = string_decl(Some(79));
    // split: 1 + ceil(316 * 0.2) = 65; per element (316 of them):
    // condition 3, step 1 + 33 + 33; result 1
    assert_eq!(
        rule_cost(
            "self.split('-').exists(part, part.contains(':') && part.contains('.'))",
            &decl
        ),
        65 + 1 + 316 * (3 + 67)
    );
    // an index of a split list has self's size too
    assert_eq!(rule_cost("isIP(self.split('-')[0])", &decl), 65 + 1 + 32);
}

#[test]
fn presence_tests_are_free_and_selects_on_objects_cost_one() {
    let decl = selector();
    // self (1), has() itself 0
    assert_eq!(rule_cost("has(self.values)", &decl), 1);
    // self (1) + select (1), size 1 + 2, > 1 + 3
    assert_eq!(rule_cost("size(self.values) > 0", &decl), 4);
    // in: the list's size (2) + operands 2 + 10
    assert_eq!(rule_cost("self.operator in ['In', 'NotIn']", &decl), 14);
    assert_eq!(
        rule_cost(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
            &decl
        ),
        20
    );
}

#[test]
fn schema_sizes_win_over_scalar_sizes() {
    let decl = selector();
    // an integer field is sized 0 by the schema, so == costs nothing but
    // its operands (2); a literal is sized 1
    assert_eq!(rule_cost("self.count == 1", &decl), 2);
    // a computed int (size()) is a scalar of size 1: ceil(0.1) = 1
    assert_eq!(rule_cost("size(self.key) == 1", &decl), 1 + 3);
}

#[test]
fn comprehensions_over_fields_use_the_item_schema() {
    let decl = selector();
    // range 2; per item (64): condition 2, step 1 + (1 + ceil(252*0.1)*1)
    assert_eq!(
        rule_cost("self.values.all(v, v.contains('x'))", &decl),
        2 + 1 + 64 * (2 + 1 + 1 + 26)
    );
    // exists_one: condition true (0), step ?: = pred 2 + max(1 + 1, 1),
    // result @result == 1: 2
    assert_eq!(
        rule_cost("self.values.exists_one(v, v == 'x')", &decl),
        2 + 2 + 64 * 4
    );
    assert!(rule_cost("self.values.map(v, v + 'x').exists(w, w == 'y')", &decl) > 0);
    assert!(rule_cost("self.values.filter(v, v != '').size() < 3", &decl) > 0);
}

#[test]
fn values_of_unknown_size_make_concatenation_unbounded() {
    let decl = string_decl(Some(79));
    let cost = cost_of(
        "self + ' has host bits set; write ' + string(cidr(self).masked())",
        &decl,
        Expected::Message,
    );
    assert!(cost > 100 * budget::PER_EXPRESSION_LIMIT, "{cost}");
    // string(int) has no known size either
    assert!(rule_cost("cidr(self + '/' + string(1)).containsIP(self)", &decl) > u64::MAX / 100);
    // the same type on both sides of == is one unit for IPs and CIDRs
    assert_eq!(
        rule_cost("cidr(self).masked() == cidr(self)", &decl),
        1 + 1 + 33 + 33
    );
}

#[test]
fn other_schema_shapes() {
    let duration = decl(json!({"type": "string", "maxLength": 32}));
    assert_eq!(
        rule_cost(
            "duration(self) >= duration('1s') && duration(self) <= duration('1h')",
            &duration
        ),
        8
    );
    let labels = decl(json!({"type": "object", "maxProperties": 4,
        "additionalProperties": {"type": "string", "maxLength": 10}}));
    // range 1, result 1; per key (4): condition 2, step 1 + (index 3,
    // size 4, < 5)
    assert_eq!(
        rule_cost("self.all(k, self[k].size() < 10)", &labels),
        1 + 1 + 4 * (2 + 6)
    );
    let int_or_string = decl(json!({"x-kubernetes-int-or-string": true, "maxLength": 5}));
    assert_eq!(int_or_string.max_elements, 20);
    assert_eq!(rule_cost("int(self) > 0", &int_or_string), 3);
}

#[test]
fn rules_and_messages_must_have_their_types() {
    let decl = selector();
    assert!(matches!(
        expression_cost("self.key", &decl, Expected::Rule),
        Err(CheckError::WrongOutputType(_))
    ));
    assert!(matches!(
        expression_cost("self.key == 'x'", &decl, Expected::Message),
        Err(CheckError::WrongOutputType(_))
    ));
    assert!(matches!(
        expression_cost("self.nope == 'x'", &decl, Expected::Rule),
        Err(CheckError::Compile(e)) if e.contains("undefined field 'nope'")
    ));
    assert!(matches!(
        expression_cost("self.key.frobnicate()", &decl, Expected::Rule),
        Err(CheckError::Unsupported(_))
    ));
}

proptest! {
    #[test]
    fn range_arithmetic_never_wraps(a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
        let x = Range::new(a.min(b), a.max(b));
        let y = Range::fixed(c);
        let sum = x.saturating_add(y);
        prop_assert!(sum.max >= x.max && sum.max >= c);
        prop_assert_eq!(u128::from(sum.max), (u128::from(x.max) + u128::from(c)).min(u128::from(u64::MAX)));
        let product = x.saturating_mul(y);
        prop_assert_eq!(u128::from(product.max), (u128::from(x.max) * u128::from(c)).min(u128::from(u64::MAX)));
        let union = x.union(y);
        prop_assert!(union.min <= x.min && union.max >= x.max);
    }

    #[test]
    fn scaling_rounds_up_and_saturates(x in any::<u64>(), factor in 0.01f64..4.0) {
        let scaled = scale(x, factor);
        let exact = x as f64 * factor;
        if exact < 18_446_744_073_709_551_616.0 {
            prop_assert!(scaled as f64 >= exact.floor());
            prop_assert!((scaled as f64) < exact + 1.0 + exact * 1e-15);
        } else {
            prop_assert_eq!(scaled, u64::MAX);
        }
    }

    #[test]
    fn small_integers_scale_exactly(x in 0u64..1_000_000) {
        // ceil(x / 10), the way traversal costs come out for string sizes
        prop_assert_eq!(scale(x, 0.1), x.div_ceil(10));
        prop_assert_eq!(scale(x, 0.25), x.div_ceil(4));
    }

    #[test]
    fn factors_are_worded_by_size(cost in 10_000_001u64..2_000_000_000) {
        let text = budget::factor_text(cost, budget::PER_EXPRESSION_LIMIT);
        let factor = cost as f64 / 1e7;
        if factor > 100.0 {
            prop_assert_eq!(text, "more than 100x");
        } else if factor < 1.5 {
            prop_assert_eq!(text.len(), "1.000000x".len());
        } else {
            prop_assert!(text.ends_with('x') && text.split('.').nth(1).map(str::len) == Some(2));
        }
    }
}
