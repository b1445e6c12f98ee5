//! The static cost of one checked CEL expression, computed the way
//! kube-apiserver's CEL checker does: every literal, identifier, select,
//! call and comprehension gets a worst-case cost range from the sizes it
//! touches, and the expression's cost is the maximum of the whole.
//!
//! Sizes come, in this order, from what the expression itself shows
//! (literals, results of calls whose size is known), from the schema through
//! the path of field names and `@items`/`@values`/`@keys` steps that led to a
//! value, and from scalar types. Anything else is unknown: 0 to u64::MAX.

use std::collections::HashMap;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{Expr, LiteralValue};

use super::library::{self, Sizes};
use super::sizes::Decl;
use super::types::{CheckError, Checked, Type};

pub const STRING_TRAVERSAL: f64 = 0.1;
pub const REGEX_STRING_LENGTH: f64 = 0.25;
const SELECT_AND_IDENT: u64 = 1;
const CONST: u64 = 0;
const LIST_CREATE_BASE: u64 = 10;
const MAP_CREATE_BASE: u64 = 30;
/// kube-apiserver does not charge for `has()` itself (a compatibility
/// choice it made when CEL started to).
const PRESENCE_TEST: u64 = 0;

/// An inclusive range of costs or sizes whose arithmetic saturates at
/// u64::MAX, so that unknown stays unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const UNKNOWN: Range = Range {
        min: 0,
        max: u64::MAX,
    };

    pub fn new(min: u64, max: u64) -> Self {
        Self { min, max }
    }

    pub fn fixed(value: u64) -> Self {
        Self::new(value, value)
    }

    pub fn saturating_add(self, other: Range) -> Self {
        Self::new(
            self.min.saturating_add(other.min),
            self.max.saturating_add(other.max),
        )
    }

    pub fn saturating_mul(self, other: Range) -> Self {
        Self::new(
            self.min.saturating_mul(other.min),
            self.max.saturating_mul(other.max),
        )
    }

    /// Times a per-unit cost, rounded up.
    pub fn scale(self, factor: f64) -> Self {
        Self::new(scale(self.min, factor), scale(self.max, factor))
    }

    pub fn union(self, other: Range) -> Self {
        Self::new(self.min.min(other.min), self.max.max(other.max))
    }
}

/// `x * factor` rounded up, in floating point as the server computes it
/// (so very large sizes lose their low bits the same way), saturating.
pub fn scale(x: u64, factor: f64) -> u64 {
    let xf = x as f64;
    if xf > 0.0 && factor > 0.0 && xf > u64::MAX as f64 / factor {
        return u64::MAX;
    }
    let ceil = (xf * factor).ceil();
    if ceil >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        ceil as u64
    }
}

/// An operand as the library estimator sees it.
#[derive(Debug, Clone)]
pub struct Node<'d> {
    /// Field path from a rule variable; empty where there is none.
    pub path: Vec<String>,
    pub ty: Type<'d>,
    /// The value of an int literal operand.
    pub literal_int: Option<i64>,
    /// The size the coster already knows.
    pub computed: Option<Range>,
}

/// Sizes of list and map elements where a literal or concatenation shows
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntrySize {
    list: bool,
    key: Range,
    value: Range,
}

impl EntrySize {
    fn union(a: Option<EntrySize>, b: Option<EntrySize>) -> Option<EntrySize> {
        let (a, b) = (a?, b?);
        Some(EntrySize {
            list: a.list,
            key: a.key.union(b.key),
            value: a.value.union(b.value),
        })
    }
}

#[derive(Debug, Clone)]
struct Local {
    path: Vec<String>,
    size: Option<Range>,
    entry: Option<EntrySize>,
}

/// Accumulator variables are not rule variables: their paths lead nowhere.
fn is_accumulator(name: &str) -> bool {
    name == "__result__" || name == "@result"
}

/// The worst-case cost range of `expr`, checked against `root` (the
/// declaration of `self`).
pub fn cost(expr: &IdedExpr, checked: &Checked<'_>, root: &Decl) -> Result<Range, CheckError> {
    let mut coster = Coster {
        checked,
        root,
        paths: HashMap::new(),
        locals: HashMap::new(),
        sizes: HashMap::new(),
        entries: HashMap::new(),
    };
    coster.cost(expr)
}

struct Coster<'c, 'd> {
    checked: &'c Checked<'d>,
    root: &'c Decl,
    paths: HashMap<u64, Vec<String>>,
    locals: HashMap<String, Vec<Local>>,
    sizes: HashMap<u64, Range>,
    entries: HashMap<u64, EntrySize>,
}

struct SchemaSizes<'a> {
    root: &'a Decl,
}

impl Sizes for SchemaSizes<'_> {
    fn size(&self, node: &Node<'_>) -> Range {
        if let Some(size) = node.computed {
            return size;
        }
        schema_size(self.root, &node.path).unwrap_or(Range::UNKNOWN)
    }
}

fn schema_size(root: &Decl, path: &[String]) -> Option<Range> {
    if path.is_empty() {
        return None;
    }
    root.size_at(path).map(|max| Range::new(0, max))
}

fn literal_size(e: &IdedExpr) -> Option<Range> {
    let size = match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => s.inner().chars().count() as u64,
        Expr::Literal(LiteralValue::Bytes(b)) => b.inner().len() as u64,
        Expr::Literal(_) => 1,
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        _ => return None,
    };
    Some(Range::fixed(size))
}

impl<'c, 'd> Coster<'c, 'd> {
    fn ty(&self, e: &IdedExpr) -> Type<'d> {
        self.checked.type_of(e.id)
    }

    fn local(&self, name: &str) -> Option<&Local> {
        self.locals.get(name).and_then(|stack| stack.last())
    }

    fn push_local(&mut self, name: &str, local: Local) {
        self.locals.entry(name.to_string()).or_default().push(local);
    }

    fn pop_local(&mut self, name: &str) {
        if let Some(stack) = self.locals.get_mut(name) {
            stack.pop();
        }
    }

    fn path(&self, e: &IdedExpr) -> Vec<String> {
        if let Expr::Ident(name) = &e.expr
            && let Some(local) = self.local(name)
        {
            return local.path.clone();
        }
        self.paths.get(&e.id).cloned().unwrap_or_default()
    }

    fn size(&mut self, e: &IdedExpr) -> Option<Range> {
        if let Some(size) = self.sizes.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = literal_size(e) {
            return Some(size);
        }
        // The schema comes before the type: a field declared without a
        // size (an integer, say) is 0, not the 1 a scalar would be.
        if let Some(size) = schema_size(self.root, &self.path(e)) {
            self.sizes.insert(e.id, size);
            return Some(size);
        }
        if self.ty(e).is_scalar() {
            return Some(Range::fixed(1));
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|l| l.size);
        }
        None
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Range {
        self.size(e).unwrap_or(Range::UNKNOWN)
    }

    fn entry(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(entry) = self.entries.get(&e.id) {
            return Some(*entry);
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|l| l.entry);
        }
        None
    }

    fn set_size(&mut self, e: &IdedExpr, size: Option<Range>) {
        if let Some(size) = size {
            self.sizes.insert(e.id, size);
        }
    }

    fn set_entry(&mut self, e: &IdedExpr, entry: Option<EntrySize>) {
        if let Some(entry) = entry {
            self.entries.insert(e.id, entry);
        }
    }

    fn node(&mut self, e: &IdedExpr) -> Node<'d> {
        let mut path = self.path(e);
        if path.first().is_some_and(|p| is_accumulator(p)) {
            path.clear();
        }
        let literal_int = match &e.expr {
            Expr::Literal(LiteralValue::Int(i)) => Some(*i.inner()),
            _ => None,
        };
        Node {
            path,
            ty: self.ty(e),
            literal_int,
            computed: self.size(e),
        }
    }

    fn cost(&mut self, e: &IdedExpr) -> Result<Range, CheckError> {
        match &e.expr {
            Expr::Literal(_) => Ok(Range::fixed(CONST)),
            Expr::Ident(name) => {
                let path = match self.local(name) {
                    Some(local) => local.path.clone(),
                    None => vec![name.clone()],
                };
                self.paths.insert(e.id, path);
                Ok(Range::fixed(SELECT_AND_IDENT))
            }
            Expr::Select(select) => {
                let operand = self.cost(&select.operand)?;
                if select.test {
                    return Ok(operand.saturating_add(Range::fixed(PRESENCE_TEST)));
                }
                let mut sum = operand;
                if self.ty(&select.operand).select_costs() {
                    sum = sum.saturating_add(Range::fixed(SELECT_AND_IDENT));
                }
                let mut path = self.path(&select.operand);
                path.push(select.field.clone());
                self.paths.insert(e.id, path);
                Ok(sum)
            }
            Expr::Call(call) => {
                if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
                    let arg = &call.args[0];
                    let cost = self.cost(arg)?;
                    let size = self.size(arg);
                    self.set_size(e, size);
                    let entry = self.entry(arg);
                    self.set_entry(e, entry);
                    return Ok(Range::fixed(1).saturating_add(cost));
                }
                let mut arg_costs = Vec::with_capacity(call.args.len());
                let mut arg_nodes = Vec::with_capacity(call.args.len());
                for arg in &call.args {
                    arg_costs.push(self.cost(arg)?);
                    arg_nodes.push(self.node(arg));
                }
                let Some((function, overloads)) = self.checked.calls.get(&e.id) else {
                    return Err(CheckError::Unsupported(format!(
                        "call to {}() the checker did not resolve",
                        call.func_name
                    )));
                };
                let mut sum = Range::default();
                let target = match &call.target {
                    Some(target) => {
                        sum = sum.saturating_add(self.cost(target)?);
                        Some(self.node(target))
                    }
                    None => None,
                };
                let mut function_cost = Range::new(u64::MAX, 0);
                let mut result_size: Option<Range> = None;
                for overload in overloads {
                    let estimate = self.function_cost(
                        e,
                        &call.args,
                        function,
                        overload,
                        target.as_ref(),
                        &arg_nodes,
                        &arg_costs,
                    );
                    function_cost = function_cost.union(estimate.cost);
                    if let Some(size) = estimate.result_size {
                        result_size = Some(match result_size {
                            Some(known) => known.union(size),
                            None => size,
                        });
                    }
                    let step = match *overload {
                        "index_list" => Some("@items"),
                        "index_map" => Some("@values"),
                        _ => None,
                    };
                    if let (Some(step), Some(container)) = (step, call.args.first()) {
                        result_size = self.entry(container).map(|entry| entry.value);
                        let mut path = self.path(container);
                        path.push(step.into());
                        self.paths.insert(e.id, path);
                    }
                    if result_size.is_none() {
                        result_size = self.size(e);
                    }
                }
                self.set_size(e, result_size);
                Ok(sum.saturating_add(function_cost))
            }
            Expr::List(list) => {
                let mut sum = Range::default();
                let mut item = if list.elements.is_empty() {
                    Range::default()
                } else {
                    Range::new(u64::MAX, 0)
                };
                for element in &list.elements {
                    sum = sum.saturating_add(self.cost(element)?);
                    item = item.union(self.size_or_unknown(element));
                }
                self.set_entry(
                    e,
                    Some(EntrySize {
                        list: true,
                        key: Range::fixed(1),
                        value: item,
                    }),
                );
                Ok(sum.saturating_add(Range::fixed(LIST_CREATE_BASE)))
            }
            Expr::Map(map) => {
                let mut sum = Range::default();
                let empty = if map.entries.is_empty() {
                    Range::default()
                } else {
                    Range::new(u64::MAX, 0)
                };
                let (mut key, mut value) = (empty, empty);
                for entry in &map.entries {
                    let kube_cel::cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err(CheckError::Unsupported(
                            "struct fields in a map literal".into(),
                        ));
                    };
                    sum = sum.saturating_add(self.cost(&entry.key)?);
                    sum = sum.saturating_add(self.cost(&entry.value)?);
                    key = key.union(self.size_or_unknown(&entry.key));
                    value = value.union(self.size_or_unknown(&entry.value));
                }
                self.set_entry(
                    e,
                    Some(EntrySize {
                        list: false,
                        key,
                        value,
                    }),
                );
                Ok(sum.saturating_add(Range::fixed(MAP_CREATE_BASE)))
            }
            Expr::Comprehension(comp) => {
                let mut sum = self.cost(&comp.iter_range)?;
                sum = sum.saturating_add(self.cost(&comp.accu_init)?);
                let accu = Local {
                    path: self.path(&comp.accu_init),
                    size: self.size(&comp.accu_init),
                    entry: self.entry(&comp.accu_init),
                };
                self.push_local(&comp.accu_var, accu);
                let range_entry = self.entry(&comp.iter_range);
                let is_list = match range_entry {
                    Some(entry) => entry.list,
                    None => matches!(self.ty(&comp.iter_range), Type::List(_)),
                };
                let (size, step) = if is_list {
                    (range_entry.map(|e| e.value), "@items")
                } else {
                    (range_entry.map(|e| e.key), "@keys")
                };
                let mut path = self.path(&comp.iter_range);
                path.push(step.into());
                self.push_local(
                    &comp.iter_var,
                    Local {
                        path,
                        size,
                        entry: None,
                    },
                );
                let condition = self.cost(&comp.loop_cond);
                let step_cost = self.cost(&comp.loop_step);
                self.pop_local(&comp.iter_var);
                let (condition, step_cost) = (condition?, step_cost?);
                let result = self.cost(&comp.result);
                self.pop_local(&comp.accu_var);
                sum = sum.saturating_add(result?);
                let count = self.size_or_unknown(&comp.iter_range);
                sum = sum.saturating_add(count.saturating_mul(step_cost.saturating_add(condition)));
                match &comp.accu_init.expr {
                    Expr::Literal(_) => {
                        let size = self.size(&comp.accu_init);
                        self.set_size(e, size);
                    }
                    Expr::List(_) | Expr::Map(_) => {
                        self.set_size(e, Some(count));
                        let entry = self.entry(&comp.loop_step);
                        self.set_entry(e, entry);
                    }
                    _ => {}
                }
                Ok(sum)
            }
            Expr::Struct(_) => Err(CheckError::Unsupported("message construction".into())),
            Expr::Unspecified => Err(CheckError::Unsupported("an empty expression".into())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn function_cost(
        &mut self,
        e: &IdedExpr,
        args: &[IdedExpr],
        function: &str,
        overload: &str,
        target: Option<&Node<'d>>,
        arg_nodes: &[Node<'d>],
        arg_costs: &[Range],
    ) -> library::CallEstimate {
        let arg_sum = arg_costs
            .iter()
            .fold(Range::default(), |sum, c| sum.saturating_add(*c));
        let sizes = SchemaSizes { root: self.root };
        if let Some(estimate) =
            library::estimate_call(&sizes, function, overload, target, arg_nodes)
        {
            return library::CallEstimate {
                cost: estimate.cost.saturating_add(arg_sum),
                result_size: estimate.result_size,
            };
        }
        let known = |node: &Node<'_>| node.computed.unwrap_or(Range::UNKNOWN);
        let cost_only = |cost: Range| library::CallEstimate {
            cost,
            result_size: None,
        };
        match overload {
            "string_format" => {
                if let Some(target) = target {
                    return cost_only(
                        known(target)
                            .scale(STRING_TRAVERSAL)
                            .saturating_add(arg_sum),
                    );
                }
            }
            "string_to_bytes" | "bytes_to_string" | "strings_quote" if arg_nodes.len() == 1 => {
                let size = known(&arg_nodes[0]);
                // the server's arithmetic here is plain (wrapping) uint64
                let result = match overload {
                    "string_to_bytes" => Range::new(size.min, size.max.wrapping_mul(4)),
                    "bytes_to_string" => Range::new(size.min / 4, size.max),
                    _ => Range::new(
                        size.min.wrapping_add(2),
                        size.max.wrapping_mul(2).wrapping_add(2),
                    ),
                };
                return library::CallEstimate {
                    cost: size.scale(STRING_TRAVERSAL).saturating_add(arg_sum),
                    result_size: Some(result),
                };
            }
            "starts_with_string" | "ends_with_string" if arg_nodes.len() == 1 => {
                return cost_only(
                    known(&arg_nodes[0])
                        .scale(STRING_TRAVERSAL)
                        .saturating_add(arg_sum),
                );
            }
            "in_list" if arg_nodes.len() == 2 => {
                return cost_only(known(&arg_nodes[1]).scale(1.0).saturating_add(arg_sum));
            }
            "matches_string" => {
                if let (Some(target), [pattern]) = (target, arg_nodes) {
                    let text = known(target)
                        .saturating_add(Range::fixed(1))
                        .scale(STRING_TRAVERSAL);
                    let regex = known(pattern).scale(REGEX_STRING_LENGTH);
                    return cost_only(text.saturating_mul(regex).saturating_add(arg_sum));
                }
            }
            "contains_string" => {
                if let (Some(target), [needle]) = (target, arg_nodes) {
                    let text = known(target).scale(STRING_TRAVERSAL);
                    let needle = known(needle).scale(STRING_TRAVERSAL);
                    return cost_only(text.saturating_mul(needle).saturating_add(arg_sum));
                }
            }
            "logical_and" | "logical_or" if arg_costs.len() == 2 => {
                // short-circuits: never less than the left side alone
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                return cost_only(Range::new(lhs.min, lhs.saturating_add(rhs).max));
            }
            "conditional" if arg_nodes.len() == 3 && args.len() == 3 => {
                let size = known(&arg_nodes[1]).union(known(&arg_nodes[2]));
                let entry = EntrySize::union(self.entry(&args[1]), self.entry(&args[2]));
                self.set_entry(e, entry);
                let cost = arg_costs[0].saturating_add(arg_costs[1].union(arg_costs[2]));
                return library::CallEstimate {
                    cost,
                    result_size: Some(size),
                };
            }
            "add_string" | "add_bytes" | "add_list" if arg_nodes.len() == 2 && args.len() == 2 => {
                let size = known(&arg_nodes[0]).saturating_add(known(&arg_nodes[1]));
                let entry = EntrySize::union(self.entry(&args[0]), self.entry(&args[1]));
                self.set_entry(e, entry);
                let cost = if overload == "add_list" {
                    Range::fixed(1).saturating_add(arg_sum)
                } else {
                    size.scale(STRING_TRAVERSAL).saturating_add(arg_sum)
                };
                return library::CallEstimate {
                    cost,
                    result_size: Some(size),
                };
            }
            "compare_string" | "compare_bytes" | "equals" | "not_equals"
                if arg_nodes.len() == 2 =>
            {
                let smallest_max = known(&arg_nodes[0]).max.min(known(&arg_nodes[1]).max);
                let min = u64::from(smallest_max > 0);
                return cost_only(
                    Range::new(min, smallest_max)
                        .scale(STRING_TRAVERSAL)
                        .saturating_add(arg_sum),
                );
            }
            _ => {}
        }
        cost_only(Range::fixed(1).saturating_add(arg_sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let big = Range::new(u64::MAX - 1, u64::MAX);
        assert_eq!(
            big.saturating_add(Range::fixed(5)),
            Range::new(u64::MAX, u64::MAX)
        );
        assert_eq!(
            big.saturating_mul(Range::fixed(2)),
            Range::new(u64::MAX, u64::MAX)
        );
        assert_eq!(
            Range::fixed(0).saturating_mul(Range::UNKNOWN),
            Range::fixed(0)
        );
        assert_eq!(Range::UNKNOWN.scale(1.0), Range::UNKNOWN);
    }

    #[test]
    fn scaling_rounds_up() {
        assert_eq!(scale(316, 0.1), 32);
        assert_eq!(scale(316, 0.2), 64);
        assert_eq!(scale(1, 0.1), 1);
        assert_eq!(scale(0, 0.1), 0);
        assert_eq!(scale(10, 0.1), 1);
        assert_eq!(scale(3_145_726, 0.1), 314_573);
        assert_eq!(scale(u64::MAX, 0.1), 1_844_674_407_370_955_264);
        assert_eq!(scale(u64::MAX, 10.0), u64::MAX);
    }

    #[test]
    fn union_spans_both() {
        assert_eq!(Range::new(3, 4).union(Range::new(1, 2)), Range::new(1, 4));
        assert_eq!(
            Range::new(u64::MAX, 0).union(Range::new(5, 7)),
            Range::new(5, 7)
        );
    }
}
