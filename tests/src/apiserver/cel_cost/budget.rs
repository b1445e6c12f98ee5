//! kube-apiserver's limits on estimated CEL cost and how it words going
//! over them.

use std::fmt::Write as _;

/// The largest request body kube-apiserver accepts; every unbounded size is
/// derived from it.
pub const MAX_REQUEST_SIZE_BYTES: u64 = 3_145_728;

/// One rule (times the number of times it can run) or one messageExpression.
pub const PER_EXPRESSION_LIMIT: u64 = 10_000_000;

/// All rules and messageExpressions of one OpenAPI schema together.
pub const PER_SCHEMA_LIMIT: u64 = 100_000_000;

/// Only expressions costing at least this much are named as contributing to
/// a schema over its limit, and at most [`MOST_EXPENSIVE_NAMED`] of them.
pub const CONTRIBUTOR_THRESHOLD: u64 = PER_SCHEMA_LIMIT / 100;
pub const MOST_EXPENSIVE_NAMED: usize = 4;

/// How often a rule can run when some enclosing list or map has no bound:
/// as many times as its smallest JSON form (plus a comma) fits in a request.
pub fn unbounded_cardinality(min_serialized_size: u64) -> u64 {
    MAX_REQUEST_SIZE_BYTES / (min_serialized_size + 1)
}

/// Cost times cardinality, pinned at u64::MAX instead of wrapping.
pub fn times_cardinality(cost: u64, cardinality: u64) -> u64 {
    cost.saturating_mul(cardinality)
}

/// `6.2x`, `1.500000x` or `more than 100x`: the server prints six decimals
/// below 1.5 so that a small overshoot never reads as "1.0x".
pub fn factor_text(cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    }
}

/// The detail of a Forbidden cause for an expression or schema over budget.
pub fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "{what} exceeds budget by factor of {} (try simplifying the rule, or adding maxItems, \
         maxProperties, and maxLength where arrays, maps, and strings are declared)",
        factor_text(cost, limit)
    );
    text
}

pub const RULE_OVER_BUDGET: &str = "estimated rule cost";
pub const MESSAGE_EXPRESSION_OVER_BUDGET: &str = "estimated messageExpression cost";
pub const SCHEMA_OVER_BUDGET: &str =
    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema";
pub const CONTRIBUTED: &str =
    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema";

/// The running total of one schema and its most expensive expressions.
#[derive(Debug, Default, Clone)]
pub struct SchemaTotal {
    pub total: u64,
    /// Field paths and costs, most expensive first.
    pub most_expensive: Vec<(String, u64)>,
}

impl SchemaTotal {
    pub fn observe(&mut self, path: &str, cost: u64) {
        self.total = self.total.saturating_add(cost);
        if cost < CONTRIBUTOR_THRESHOLD {
            return;
        }
        self.most_expensive.push((path.to_string(), cost));
        // Ties keep the order they were seen in (the server's sort is not
        // stable, so it promises no order for them).
        self.most_expensive
            .sort_by_key(|(_, cost)| std::cmp::Reverse(*cost));
        self.most_expensive.truncate(MOST_EXPENSIVE_NAMED);
    }

    pub fn over_limit(&self) -> bool {
        self.total > PER_SCHEMA_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_are_worded_like_the_server() {
        assert_eq!(factor_text(62_000_000, PER_EXPRESSION_LIMIT), "6.2x");
        assert_eq!(factor_text(15_000_000, PER_EXPRESSION_LIMIT), "1.5x");
        assert_eq!(factor_text(14_999_999, PER_EXPRESSION_LIMIT), "1.500000x");
        assert_eq!(factor_text(10_000_001, PER_EXPRESSION_LIMIT), "1.000000x");
        assert_eq!(factor_text(1_000_000_000, PER_EXPRESSION_LIMIT), "100.0x");
        assert_eq!(
            factor_text(1_000_000_001, PER_EXPRESSION_LIMIT),
            "more than 100x"
        );
        assert_eq!(factor_text(u64::MAX, PER_SCHEMA_LIMIT), "more than 100x");
        // %.1f rounds the exact binary value, as Go's does
        assert_eq!(factor_text(20_132_736, PER_EXPRESSION_LIMIT), "2.0x");
        assert_eq!(factor_text(34_603_008, PER_EXPRESSION_LIMIT), "3.5x");
    }

    #[test]
    fn messages_match_the_server_text() {
        assert_eq!(
            over_budget(RULE_OVER_BUDGET, 62_000_000, PER_EXPRESSION_LIMIT),
            "estimated rule cost exceeds budget by factor of 6.2x (try simplifying the rule, or \
             adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are \
             declared)"
        );
    }

    #[test]
    fn cardinality_saturates_and_falls_back_to_the_request_size() {
        assert_eq!(unbounded_cardinality(2), 1_048_576);
        assert_eq!(times_cardinality(u64::MAX / 2, 3), u64::MAX);
        assert_eq!(times_cardinality(0, u64::MAX), 0);
    }

    #[test]
    fn totals_name_at_most_four_expensive_expressions() {
        let mut total = SchemaTotal::default();
        total.observe("a", CONTRIBUTOR_THRESHOLD - 1);
        for (i, cost) in [5, 9, 7, 6, 8].iter().enumerate() {
            total.observe(&format!("e{i}"), cost * CONTRIBUTOR_THRESHOLD);
        }
        let names: Vec<&str> = total
            .most_expensive
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(names, ["e1", "e4", "e2", "e3"]);
        assert!(!total.over_limit());
        total.observe("huge", u64::MAX);
        assert_eq!(total.total, u64::MAX);
        assert!(total.over_limit());
    }
}
