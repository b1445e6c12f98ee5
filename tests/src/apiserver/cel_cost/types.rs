//! Just enough CEL type checking to cost an expression the way kube-apiserver
//! does: the cost of a call depends on which overload the checker picked
//! (string or list `+`, list or map `[]`), a select costs more on an object
//! than on a `dyn`, and scalars have a known size.
//!
//! Anything this checker does not know is reported as [`CheckError::Unsupported`]
//! rather than guessed: an unknown function costed as cheap would let the
//! double accept a CRD the real server refuses.

use std::collections::HashMap;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue, operators};

use super::sizes::{Decl, DeclKind};

/// A CEL type, with object types pointing at their schema declaration.
#[derive(Debug, Clone, PartialEq)]
pub enum Type<'d> {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    Dyn,
    /// A type parameter not bound yet: the element of an empty list literal.
    Param,
    List(Box<Type<'d>>),
    Map(Box<Type<'d>>, Box<Type<'d>>),
    Object(&'d Decl),
    Ip,
    Cidr,
    Quantity,
    Url,
}

impl<'d> Type<'d> {
    pub fn of_decl(decl: &'d Decl) -> Self {
        match &decl.kind {
            DeclKind::Bool => Type::Bool,
            DeclKind::Int => Type::Int,
            DeclKind::Double => Type::Double,
            DeclKind::String => Type::String,
            DeclKind::Bytes => Type::Bytes,
            DeclKind::Duration => Type::Duration,
            DeclKind::Timestamp => Type::Timestamp,
            DeclKind::Dyn => Type::Dyn,
            DeclKind::List(elem) => Type::List(Box::new(Type::of_decl(elem))),
            DeclKind::Map(value) => {
                Type::Map(Box::new(Type::String), Box::new(Type::of_decl(value)))
            }
            DeclKind::Object(_) => Type::Object(decl),
        }
    }

    /// Types CEL knows the size of without looking at a value.
    pub fn is_scalar(&self) -> bool {
        matches!(
            self,
            Type::Bool | Type::Double | Type::Duration | Type::Int | Type::Timestamp | Type::Uint
        )
    }

    /// A field selection on these costs one unit on top of its operand.
    pub fn select_costs(&self) -> bool {
        matches!(self, Type::Map(..) | Type::Object(_) | Type::Param)
    }

    /// The first type parameter (list element, map key), as the server's
    /// list-element lookups take it.
    pub fn first_param(&self) -> Option<&Type<'d>> {
        match self {
            Type::List(elem) => Some(elem),
            Type::Map(key, _) => Some(key),
            _ => None,
        }
    }

    fn is_loose(&self) -> bool {
        matches!(self, Type::Dyn | Type::Param)
    }

    fn is_number(&self) -> bool {
        matches!(self, Type::Int | Type::Uint | Type::Double)
    }

    /// Whether a value of one type may flow where the other is expected.
    fn fits(&self, other: &Type<'d>) -> bool {
        match (self, other) {
            (a, b) if a.is_loose() || b.is_loose() => true,
            (Type::List(a), Type::List(b)) => a.fits(b),
            (Type::Map(ak, av), Type::Map(bk, bv)) => ak.fits(bk) && av.fits(bv),
            (Type::Object(a), Type::Object(b)) => std::ptr::eq(*a, *b) || a == b,
            (a, b) => a == b,
        }
    }

    /// The more specific of two types that fit each other.
    fn unify(&self, other: &Type<'d>) -> Type<'d> {
        match (self, other) {
            (Type::Param, b) => b.clone(),
            (a, Type::Param) => a.clone(),
            (Type::List(a), Type::List(b)) => Type::List(Box::new(a.unify(b))),
            (Type::Map(ak, av), Type::Map(bk, bv)) => {
                Type::Map(Box::new(ak.unify(bk)), Box::new(av.unify(bv)))
            }
            (a, b) if a == b => a.clone(),
            _ => Type::Dyn,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Type::Bool => "bool".into(),
            Type::Int => "int".into(),
            Type::Uint => "uint".into(),
            Type::Double => "double".into(),
            Type::String => "string".into(),
            Type::Bytes => "bytes".into(),
            Type::Null => "null_type".into(),
            Type::Duration => "google.protobuf.Duration".into(),
            Type::Timestamp => "google.protobuf.Timestamp".into(),
            Type::Dyn => "dyn".into(),
            Type::Param => "_var0".into(),
            Type::List(elem) => format!("list({})", elem.name()),
            Type::Map(k, v) => format!("map({}, {})", k.name(), v.name()),
            Type::Object(_) => "object".into(),
            Type::Ip => "net.IP".into(),
            Type::Cidr => "net.CIDR".into(),
            Type::Quantity => "kubernetes.Quantity".into(),
            Type::Url => "kubernetes.URL".into(),
        }
    }
}

/// Why an expression could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// What kube-apiserver's compiler would report too: the rule is refused.
    Compile(String),
    /// It compiles, but to the wrong type for a rule or messageExpression.
    WrongOutputType(String),
    /// A construct the double does not model; it must not be costed by guess.
    Unsupported(String),
}

/// The checked AST: each expression's type, and for each call the function
/// as the server names it and the overloads that may apply (more than one
/// only where an operand is `dyn`).
#[derive(Debug, Default)]
pub struct Checked<'d> {
    pub types: HashMap<u64, Type<'d>>,
    pub calls: HashMap<u64, (String, Vec<&'static str>)>,
}

impl<'d> Checked<'d> {
    pub fn type_of(&self, id: u64) -> Type<'d> {
        self.types.get(&id).cloned().unwrap_or(Type::Dyn)
    }
}

/// Variables a CRD rule sees: `self` and `oldSelf`, both of the node's type.
pub const RULE_VARIABLES: [&str; 2] = ["self", "oldSelf"];

pub fn check<'d>(expr: &IdedExpr, root: &'d Decl) -> Result<Checked<'d>, CheckError> {
    let mut checker = Checker {
        root,
        scopes: Vec::new(),
        out: Checked::default(),
    };
    checker.check(expr)?;
    Ok(checker.out)
}

struct Checker<'d> {
    root: &'d Decl,
    scopes: Vec<(String, Type<'d>)>,
    out: Checked<'d>,
}

fn no_overload(function: &str, args: &[Type<'_>]) -> CheckError {
    let names: Vec<String> = args.iter().map(Type::name).collect();
    CheckError::Compile(format!(
        "found no matching overload for '{function}' applied to '({})'",
        names.join(", ")
    ))
}

fn unsupported(what: impl Into<String>) -> CheckError {
    CheckError::Unsupported(what.into())
}

impl<'d> Checker<'d> {
    fn lookup(&self, name: &str) -> Option<Type<'d>> {
        if let Some((_, t)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return Some(t.clone());
        }
        RULE_VARIABLES
            .contains(&name)
            .then(|| Type::of_decl(self.root))
    }

    fn check(&mut self, e: &IdedExpr) -> Result<Type<'d>, CheckError> {
        let t = match &e.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(_) => Type::Bool,
                LiteralValue::Bytes(_) => Type::Bytes,
                LiteralValue::Double(_) => Type::Double,
                LiteralValue::Int(_) => Type::Int,
                LiteralValue::Null => Type::Null,
                LiteralValue::String(_) => Type::String,
                LiteralValue::UInt(_) => Type::Uint,
            },
            Expr::Ident(name) => match self.lookup(name) {
                Some(t) => t,
                None => {
                    return Err(CheckError::Compile(format!(
                        "undeclared reference to '{name}' (in container '')"
                    )));
                }
            },
            Expr::Select(select) => {
                let operand = self.check(&select.operand)?;
                let field = &select.field;
                let t = match &operand {
                    Type::Object(decl) => match decl.field(field) {
                        Some(f) => Type::of_decl(f),
                        None => {
                            return Err(CheckError::Compile(format!("undefined field '{field}'")));
                        }
                    },
                    Type::Map(_, value) => (**value).clone(),
                    Type::Dyn | Type::Param => Type::Dyn,
                    other => {
                        return Err(CheckError::Compile(format!(
                            "type '{}' does not support field selection",
                            other.name()
                        )));
                    }
                };
                if select.test { Type::Bool } else { t }
            }
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Err(unsupported("optional list elements"));
                }
                let mut elem = Type::Param;
                for element in &list.elements {
                    let t = self.check(element)?;
                    if !t.fits(&elem) {
                        return Err(CheckError::Compile(format!(
                            "expected type '{}' but found '{}'",
                            elem.name(),
                            t.name()
                        )));
                    }
                    elem = elem.unify(&t);
                }
                Type::List(Box::new(elem))
            }
            Expr::Map(map) => {
                let (mut key, mut value) = (Type::Param, Type::Param);
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err(unsupported("struct fields in a map literal"));
                    };
                    if entry.optional {
                        return Err(unsupported("optional map entries"));
                    }
                    let k = self.check(&entry.key)?;
                    let v = self.check(&entry.value)?;
                    key = key.unify(&k);
                    value = value.unify(&v);
                }
                Type::Map(Box::new(key), Box::new(value))
            }
            Expr::Struct(_) => return Err(unsupported("message construction")),
            Expr::Comprehension(comp) => {
                let range = self.check(&comp.iter_range)?;
                if comp.iter_var2.is_some() {
                    return Err(unsupported("two-variable comprehensions"));
                }
                let iter = match &range {
                    Type::List(elem) => (**elem).clone(),
                    Type::Map(key, _) => (**key).clone(),
                    Type::Dyn | Type::Param => Type::Dyn,
                    other => {
                        return Err(CheckError::Compile(format!(
                            "expression of type '{}' cannot be range of a comprehension (must be list, map, or dynamic)",
                            other.name()
                        )));
                    }
                };
                let init = self.check(&comp.accu_init)?;
                self.scopes.push((comp.accu_var.clone(), init.clone()));
                self.scopes.push((comp.iter_var.clone(), iter));
                let cond = self.check(&comp.loop_cond);
                let step = self.check(&comp.loop_step);
                self.scopes.pop();
                self.scopes.pop();
                cond?;
                let step = step?;
                // map() and filter() start from [] and learn the element
                // type from the step.
                let accu = init.unify(&step);
                self.scopes.push((comp.accu_var.clone(), accu));
                let result = self.check(&comp.result);
                self.scopes.pop();
                result?
            }
            Expr::Call(call) => self.check_call(e.id, call)?,
            Expr::Unspecified => return Err(unsupported("an empty expression")),
        };
        self.out.types.insert(e.id, t.clone());
        Ok(t)
    }

    fn record(&mut self, id: u64, function: &str, overloads: Vec<&'static str>) {
        self.out.calls.insert(id, (function.to_string(), overloads));
    }

    fn check_call(&mut self, id: u64, call: &CallExpr) -> Result<Type<'d>, CheckError> {
        // `ip.isCanonical(x)` parses as a method of an identifier `ip`; the
        // server resolves it as one function name.
        if let Some(target) = &call.target
            && let Expr::Ident(namespace) = &target.expr
            && self.lookup(namespace).is_none()
        {
            let function = format!("{namespace}.{}", call.func_name);
            let args = self.check_args(&call.args)?;
            let (result, overload) = match (function.as_str(), args.as_slice()) {
                ("ip.isCanonical", [Type::String]) => (Type::Bool, "ip_is_canonical"),
                ("strings.quote", [Type::String]) => (Type::String, "strings_quote"),
                (f, _) => return Err(unsupported(format!("function {f}()"))),
            };
            self.record(id, &function, vec![overload]);
            return Ok(result);
        }
        let function = call.func_name.as_str();
        // Before looking at the operands: an unknown function may bind
        // variables of its own (a macro this parser does not expand), which
        // would read as undeclared references.
        let known = if call.target.is_some() {
            KNOWN_METHODS.contains(&function)
        } else {
            KNOWN_FUNCTIONS.contains(&function) || function.starts_with(['_', '!', '-', '@'])
        };
        if !known {
            let kind = if call.target.is_some() {
                "method"
            } else {
                "function"
            };
            return Err(unsupported(format!("{kind} {function}()")));
        }
        let target = match &call.target {
            Some(target) => Some(self.check(target)?),
            None => None,
        };
        let args = self.check_args(&call.args)?;
        let (result, overloads) = match target {
            None => self.global(function, &args)?,
            Some(target) => self.member(function, &target, &args)?,
        };
        self.record(id, function, overloads);
        Ok(result)
    }

    fn check_args(&mut self, args: &[IdedExpr]) -> Result<Vec<Type<'d>>, CheckError> {
        args.iter().map(|a| self.check(a)).collect()
    }

    fn global(
        &self,
        function: &str,
        args: &[Type<'d>],
    ) -> Result<(Type<'d>, Vec<&'static str>), CheckError> {
        use Type as T;
        let one = |t: Type<'d>, o: &'static str| Ok((t, vec![o]));
        let fail = || Err(no_overload(function, args));
        match (function, args) {
            (operators::LOGICAL_NOT, [a]) if a.fits(&T::Bool) => one(T::Bool, "logical_not"),
            (operators::NOT_STRICTLY_FALSE, [a]) if a.fits(&T::Bool) => {
                one(T::Bool, "not_strictly_false")
            }
            (operators::LOGICAL_AND, [a, b]) if a.fits(&T::Bool) && b.fits(&T::Bool) => {
                one(T::Bool, "logical_and")
            }
            (operators::LOGICAL_OR, [a, b]) if a.fits(&T::Bool) && b.fits(&T::Bool) => {
                one(T::Bool, "logical_or")
            }
            (operators::CONDITIONAL, [c, a, b]) if c.fits(&T::Bool) => {
                if !a.fits(b) {
                    return fail();
                }
                one(a.unify(b), "conditional")
            }
            (operators::NEGATE, [a]) if a.is_number() || a.is_loose() => one(a.clone(), "negate"),
            (operators::EQUALS | operators::NOT_EQUALS, [a, b]) => {
                let comparable = a.fits(b)
                    || (a.is_number() && b.is_number())
                    || matches!(a, T::Null)
                    || matches!(b, T::Null);
                if !comparable {
                    return fail();
                }
                let o = if function == operators::EQUALS {
                    "equals"
                } else {
                    "not_equals"
                };
                one(T::Bool, o)
            }
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                [a, b],
            ) => match (a, b) {
                (T::String, T::String) => one(T::Bool, "compare_string"),
                (T::Bytes, T::Bytes) => one(T::Bool, "compare_bytes"),
                (a, b) if a.is_number() && b.is_number() => one(T::Bool, "compare_other"),
                (T::Bool, T::Bool) | (T::Timestamp, T::Timestamp) | (T::Duration, T::Duration) => {
                    one(T::Bool, "compare_other")
                }
                (a, b) if a.is_loose() || b.is_loose() => Ok((
                    T::Bool,
                    vec!["compare_string", "compare_bytes", "compare_other"],
                )),
                _ => fail(),
            },
            (operators::ADD, [a, b]) => match (a, b) {
                (T::String, T::String) => one(T::String, "add_string"),
                (T::Bytes, T::Bytes) => one(T::Bytes, "add_bytes"),
                (T::List(x), T::List(y)) if x.fits(y) => {
                    one(T::List(Box::new(x.unify(y))), "add_list")
                }
                (T::Int, T::Int) | (T::Uint, T::Uint) | (T::Double, T::Double) => {
                    one(a.clone(), "add_number")
                }
                (T::Duration, T::Duration) => one(T::Duration, "add_time"),
                (T::Timestamp, T::Duration) | (T::Duration, T::Timestamp) => {
                    one(T::Timestamp, "add_time")
                }
                (a, b) if a.is_loose() || b.is_loose() => {
                    let concrete = if a.is_loose() { b } else { a };
                    let t = if concrete.is_loose() {
                        T::Dyn
                    } else {
                        concrete.clone()
                    };
                    Ok((
                        t,
                        vec![
                            "add_string",
                            "add_bytes",
                            "add_list",
                            "add_number",
                            "add_time",
                        ],
                    ))
                }
                _ => fail(),
            },
            (
                operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
                [a, b],
            ) => match (a, b) {
                (T::Int, T::Int) | (T::Uint, T::Uint) | (T::Double, T::Double) => {
                    one(a.clone(), "arithmetic")
                }
                (T::Timestamp, T::Timestamp) if function == operators::SUBSTRACT => {
                    one(T::Duration, "arithmetic")
                }
                (T::Timestamp, T::Duration) | (T::Duration, T::Duration)
                    if function == operators::SUBSTRACT =>
                {
                    one(a.clone(), "arithmetic")
                }
                (a, b) if a.is_loose() || b.is_loose() => one(T::Dyn, "arithmetic"),
                _ => fail(),
            },
            (operators::INDEX, [container, index]) => match container {
                T::List(elem) if index.fits(&T::Int) || matches!(index, T::Uint) => {
                    one((**elem).clone(), "index_list")
                }
                T::Map(key, value) if index.fits(key) => one((**value).clone(), "index_map"),
                T::Dyn | T::Param => Ok((T::Dyn, vec!["index_list", "index_map"])),
                _ => fail(),
            },
            (operators::IN, [item, container]) => match container {
                T::List(elem) if item.fits(elem) => one(T::Bool, "in_list"),
                T::Map(key, _) if item.fits(key) => one(T::Bool, "in_map"),
                T::Dyn | T::Param => Ok((T::Bool, vec!["in_list", "in_map"])),
                _ => fail(),
            },
            ("size", [a]) => sized(a).map_or_else(fail, |o| one(T::Int, o)),
            ("matches", [T::String, T::String]) => one(T::Bool, "matches"),
            ("dyn", [_]) => one(T::Dyn, "to_dyn"),
            ("int", [a])
                if convertible(a, &[T::Int, T::Uint, T::Double, T::String, T::Timestamp]) =>
            {
                one(T::Int, "to_int")
            }
            ("uint", [a]) if convertible(a, &[T::Int, T::Uint, T::Double, T::String]) => {
                one(T::Uint, "to_uint")
            }
            ("double", [a]) if convertible(a, &[T::Int, T::Uint, T::Double, T::String]) => {
                one(T::Double, "to_double")
            }
            ("string", [T::Bytes]) => one(T::String, "bytes_to_string"),
            ("string", [a])
                if convertible(
                    a,
                    &[
                        T::Int,
                        T::Uint,
                        T::Double,
                        T::String,
                        T::Bool,
                        T::Timestamp,
                        T::Duration,
                        T::Ip,
                        T::Cidr,
                    ],
                ) =>
            {
                one(T::String, "to_string")
            }
            ("bytes", [T::String]) => one(T::Bytes, "string_to_bytes"),
            ("bytes", [T::Bytes]) => one(T::Bytes, "to_bytes"),
            ("bool", [a]) if convertible(a, &[T::Bool, T::String]) => one(T::Bool, "to_bool"),
            ("duration", [a]) if convertible(a, &[T::String, T::Duration]) => {
                one(T::Duration, "to_duration")
            }
            ("timestamp", [a]) if convertible(a, &[T::String, T::Timestamp, T::Int]) => {
                one(T::Timestamp, "to_timestamp")
            }
            ("ip", [a]) if a.fits(&T::String) => one(T::Ip, "string_to_ip"),
            ("isIP", [a]) if a.fits(&T::String) => one(T::Bool, "is_ip"),
            ("cidr", [a]) if a.fits(&T::String) => one(T::Cidr, "string_to_cidr"),
            ("isCIDR", [a]) if a.fits(&T::String) => one(T::Bool, "is_cidr"),
            ("quantity", [a]) if a.fits(&T::String) => one(T::Quantity, "string_to_quantity"),
            ("isQuantity", [a]) if a.fits(&T::String) => one(T::Bool, "is_quantity"),
            ("url", [a]) if a.fits(&T::String) => one(T::Url, "string_to_url"),
            ("isURL", [a]) if a.fits(&T::String) => one(T::Bool, "is_url"),
            (
                "size" | "matches" | "int" | "uint" | "double" | "string" | "bytes" | "bool"
                | "duration" | "timestamp" | "ip" | "isIP" | "cidr" | "isCIDR" | "quantity"
                | "isQuantity" | "url" | "isURL" | "dyn",
                _,
            ) => fail(),
            _ if function.starts_with('_') || function.starts_with('@') => {
                Err(unsupported(format!("operator {function}")))
            }
            _ => Err(unsupported(format!("function {function}()"))),
        }
    }

    fn member(
        &self,
        function: &str,
        target: &Type<'d>,
        args: &[Type<'d>],
    ) -> Result<(Type<'d>, Vec<&'static str>), CheckError> {
        use Type as T;
        let one = |t: Type<'d>, o: &'static str| Ok((t, vec![o]));
        let mut all = vec![target.clone()];
        all.extend(args.iter().cloned());
        let fail = || Err(no_overload(function, &all));
        let string = matches!(target, T::String);
        let list_elem = match target {
            T::List(elem) => Some((**elem).clone()),
            _ => None,
        };
        match (function, args) {
            ("size", []) => sized(target).map_or_else(fail, |o| one(T::Int, o)),
            ("contains", [a]) if string && a.fits(&T::String) => one(T::Bool, "contains_string"),
            ("startsWith", [a]) if string && a.fits(&T::String) => {
                one(T::Bool, "starts_with_string")
            }
            ("endsWith", [a]) if string && a.fits(&T::String) => one(T::Bool, "ends_with_string"),
            ("matches", [a]) if string && a.fits(&T::String) => one(T::Bool, "matches_string"),
            ("charAt", [a]) if string && a.fits(&T::Int) => one(T::String, "string_char_at"),
            ("indexOf" | "lastIndexOf", [a] | [a, T::Int]) if string && a.fits(&T::String) => {
                one(T::Int, "string_index_of")
            }
            ("lowerAscii" | "upperAscii" | "trim", []) if string => {
                one(T::String, "string_transform")
            }
            ("replace", [a, b] | [a, b, T::Int])
                if string && a.fits(&T::String) && b.fits(&T::String) =>
            {
                one(T::String, "string_replace")
            }
            ("split", [a] | [a, T::Int]) if string && a.fits(&T::String) => {
                one(T::List(Box::new(T::String)), "string_split")
            }
            ("substring", [T::Int] | [T::Int, T::Int]) if string => {
                one(T::String, "string_substring")
            }
            ("format", [T::List(_)]) if string => one(T::String, "string_format"),
            ("find", [a]) if string && a.fits(&T::String) => one(T::String, "find"),
            ("findAll", [a] | [a, T::Int]) if string && a.fits(&T::String) => {
                one(T::List(Box::new(T::String)), "find_all")
            }
            ("join", [] | [T::String])
                if list_elem.as_ref().is_some_and(|e| e.fits(&T::String)) =>
            {
                one(T::String, "list_join")
            }
            ("isSorted", []) if list_elem.is_some() => one(T::Bool, "list_is_sorted"),
            ("sum" | "min" | "max", []) if list_elem.is_some() => {
                one(list_elem.clone().unwrap_or(T::Dyn), "list_fold")
            }
            ("indexOf" | "lastIndexOf", [a]) if list_elem.as_ref().is_some_and(|e| a.fits(e)) => {
                one(T::Int, "list_index_of")
            }
            (
                "getFullYear" | "getMonth" | "getDayOfYear" | "getDayOfMonth" | "getDate"
                | "getDayOfWeek" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds",
                [] | [T::String],
            ) if matches!(target, T::Timestamp | T::Duration) => one(T::Int, "time_accessor"),
            ("family", []) if matches!(target, T::Ip) => one(T::Int, "ip_family"),
            (
                "isUnspecified"
                | "isLoopback"
                | "isLinkLocalMulticast"
                | "isLinkLocalUnicast"
                | "isGlobalUnicast",
                [],
            ) if matches!(target, T::Ip) => one(T::Bool, "ip_accessor"),
            ("containsIP", [T::String]) if matches!(target, T::Cidr) => {
                one(T::Bool, "cidr_contains_ip_string")
            }
            ("containsIP", [T::Ip]) if matches!(target, T::Cidr) => {
                one(T::Bool, "cidr_contains_ip_ip")
            }
            ("containsCIDR", [T::String]) if matches!(target, T::Cidr) => {
                one(T::Bool, "cidr_contains_cidr_string")
            }
            ("containsCIDR", [T::Cidr]) if matches!(target, T::Cidr) => {
                one(T::Bool, "cidr_contains_cidr")
            }
            ("ip", []) if matches!(target, T::Cidr) => one(T::Ip, "cidr_ip"),
            ("masked", []) if matches!(target, T::Cidr) => one(T::Cidr, "cidr_masked"),
            ("prefixLength", []) if matches!(target, T::Cidr) => one(T::Int, "cidr_prefix_length"),
            ("sign" | "asInteger" | "compareTo", _) if matches!(target, T::Quantity) => {
                one(T::Int, "quantity_accessor")
            }
            ("isInteger" | "isGreaterThan" | "isLessThan", _) if matches!(target, T::Quantity) => {
                one(T::Bool, "quantity_accessor")
            }
            ("asApproximateFloat", []) if matches!(target, T::Quantity) => {
                one(T::Double, "quantity_accessor")
            }
            ("add" | "sub", [_]) if matches!(target, T::Quantity) => {
                one(T::Quantity, "quantity_accessor")
            }
            ("getScheme" | "getHost" | "getHostname" | "getPort" | "getEscapedPath", [])
                if matches!(target, T::Url) =>
            {
                one(T::String, "url_accessor")
            }
            ("getQuery", []) if matches!(target, T::Url) => one(
                T::Map(Box::new(T::String), Box::new(T::List(Box::new(T::String)))),
                "url_accessor",
            ),
            _ if target.is_loose() => {
                Err(unsupported(format!("method {function}() on a dyn value")))
            }
            (
                "size" | "contains" | "startsWith" | "endsWith" | "matches" | "charAt" | "indexOf"
                | "lastIndexOf" | "lowerAscii" | "upperAscii" | "trim" | "replace" | "split"
                | "substring" | "join" | "find" | "findAll",
                _,
            ) => fail(),
            _ => Err(unsupported(format!(
                "method {function}() on {}",
                target.name()
            ))),
        }
    }
}

/// Functions and methods (besides operators) the checker knows; a call to
/// any other is unsupported, whatever its operands.
const KNOWN_FUNCTIONS: &[&str] = &[
    "size",
    "matches",
    "dyn",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "duration",
    "timestamp",
    "ip",
    "isIP",
    "cidr",
    "isCIDR",
    "quantity",
    "isQuantity",
    "url",
    "isURL",
];

const KNOWN_METHODS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "format",
    "find",
    "findAll",
    "join",
    "isSorted",
    "sum",
    "min",
    "max",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "family",
    "isUnspecified",
    "isLoopback",
    "isLinkLocalMulticast",
    "isLinkLocalUnicast",
    "isGlobalUnicast",
    "containsIP",
    "containsCIDR",
    "ip",
    "masked",
    "prefixLength",
    "sign",
    "asInteger",
    "compareTo",
    "isInteger",
    "isGreaterThan",
    "isLessThan",
    "asApproximateFloat",
    "add",
    "sub",
    "getScheme",
    "getHost",
    "getHostname",
    "getPort",
    "getEscapedPath",
    "getQuery",
];

fn sized(t: &Type<'_>) -> Option<&'static str> {
    match t {
        Type::String => Some("size_string"),
        Type::Bytes => Some("size_bytes"),
        Type::List(_) => Some("size_list"),
        Type::Map(..) => Some("size_map"),
        Type::Dyn | Type::Param => Some("size_dyn"),
        _ => None,
    }
}

fn convertible(t: &Type<'_>, from: &[Type<'_>]) -> bool {
    t.is_loose() || from.contains(t)
}
