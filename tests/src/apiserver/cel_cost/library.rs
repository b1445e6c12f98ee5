//! Costs of the Kubernetes CEL libraries (strings, lists, regex, URLs, IPs,
//! CIDRs, quantities), which kube-apiserver's estimator prices before CEL's
//! own defaults are consulted.

use super::estimate::{Node, REGEX_STRING_LENGTH, Range, STRING_TRAVERSAL};
use super::types::Type;

/// What a library function costs (without its operands) and, where the
/// library knows it, how big its result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEstimate {
    pub cost: Range,
    pub result_size: Option<Range>,
}

impl CallEstimate {
    fn cost(cost: Range) -> Option<Self> {
        Some(Self {
            cost,
            result_size: None,
        })
    }

    fn sized(cost: Range, size: Range) -> Option<Self> {
        Some(Self {
            cost,
            result_size: Some(size),
        })
    }
}

/// Sizes of operands: what the coster computed, else what the schema says
/// about the operand's path, else unknown.
pub trait Sizes {
    fn size(&self, node: &Node<'_>) -> Range;
}

/// Elements of a list operand, with a path into the schema when the list
/// has one, so that an element's maxLength can be found.
fn element_of<'d>(list: &Node<'d>) -> Option<Node<'d>> {
    let elem = list.ty.first_param()?.clone();
    let path = if list.path.is_empty() {
        Vec::new()
    } else {
        let mut path = list.path.clone();
        path.push("@items".into());
        path
    };
    Some(Node {
        path,
        ty: elem,
        literal_int: None,
        computed: None,
    })
}

/// The library's estimate for `function` (with the overload the checker
/// chose), or None where CEL's own rules apply.
pub fn estimate_call(
    sizes: &dyn Sizes,
    function: &str,
    overload: &str,
    target: Option<&Node<'_>>,
    args: &[Node<'_>],
) -> Option<CallEstimate> {
    let one = Range::fixed(1);
    match function {
        "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" => {
            let target = target?;
            match element_of(target) {
                Some(elem) => {
                    // one comparison per element, plus reading the element
                    // where it is a string
                    let mut per_element = one;
                    if matches!(elem.ty, Type::String | Type::Bytes) {
                        per_element =
                            per_element.saturating_add(sizes.size(&elem).scale(STRING_TRAVERSAL));
                    }
                    CallEstimate::cost(sizes.size(target).saturating_mul(per_element))
                }
                None => CallEstimate::cost(sizes.size(target).scale(STRING_TRAVERSAL)),
            }
        }
        "url" if args.len() == 1 => {
            let size = sizes.size(&args[0]);
            CallEstimate::sized(size.scale(STRING_TRAVERSAL), size)
        }
        "lowerAscii" | "upperAscii" | "substring" | "trim" => {
            let size = sizes.size(target?);
            CallEstimate::sized(size.scale(STRING_TRAVERSAL), size)
        }
        "replace" if args.len() >= 2 => {
            let size = sizes.size(target?);
            Some(replace(size, sizes.size(&args[0]), sizes.size(&args[1])))
        }
        "split" => {
            let size = sizes.size(target?);
            // each character its own element, unless a literal limit says
            // fewer; the limit is taken as unsigned, as the server does
            let max = match args.get(1).and_then(|a| a.literal_int) {
                Some(limit) => limit as u64,
                None => size.max,
            };
            CallEstimate::sized(size.scale(2.0 * STRING_TRAVERSAL), Range::new(0, max))
        }
        "join" => {
            let target = target?;
            let list_size = sizes.size(target);
            let mut size = match element_of(target) {
                Some(elem) => list_size.saturating_mul(sizes.size(&elem)),
                None => Range::default(),
            };
            if let Some(separator) = args.first() {
                let separators = Range::new(
                    list_size.min.saturating_sub(1),
                    list_size.max.saturating_sub(1),
                );
                size = size.saturating_add(sizes.size(separator).saturating_mul(separators));
            }
            CallEstimate::sized(size.scale(STRING_TRAVERSAL), size)
        }
        "find" | "findAll" if !args.is_empty() => {
            let size = sizes.size(target?);
            let text = size.saturating_add(Range::fixed(1)).scale(STRING_TRAVERSAL);
            let regex = sizes.size(&args[0]).scale(REGEX_STRING_LENGTH);
            CallEstimate::sized(text.saturating_mul(regex), Range::new(0, size.max))
        }
        // Parsing is one pass over the string. kube-apiserver v1.36 charges
        // it for the global forms too (isIP(self) on an unbounded string is
        // refused there), though older library code only did for methods.
        "cidr" | "isIP" | "isCIDR" | "quantity" | "isQuantity" if !args.is_empty() => {
            CallEstimate::cost(sizes.size(&args[0]).scale(STRING_TRAVERSAL))
        }
        "ip" if overload == "cidr_ip" => CallEstimate::cost(one),
        "ip" if !args.is_empty() => {
            CallEstimate::cost(sizes.size(&args[0]).scale(STRING_TRAVERSAL))
        }
        "ip.isCanonical" if !args.is_empty() => {
            CallEstimate::cost(sizes.size(&args[0]).scale(2.0 * STRING_TRAVERSAL))
        }
        "masked"
        | "prefixLength"
        | "family"
        | "isUnspecified"
        | "isLoopback"
        | "isLinkLocalMulticast"
        | "isLinkLocalUnicast"
        | "isGlobalUnicast" => CallEstimate::cost(one),
        "containsIP" | "containsCIDR" if target.is_some() && !args.is_empty() => {
            // comparing two 4- or 16-byte addresses
            let bytes = Range::new(4, 16);
            let mut cost = bytes.saturating_add(bytes).scale(STRING_TRAVERSAL);
            if function == "containsCIDR" {
                cost = cost
                    .saturating_add(bytes.scale(STRING_TRAVERSAL))
                    .saturating_add(one);
            }
            if matches!(
                overload,
                "cidr_contains_ip_string" | "cidr_contains_cidr_string"
            ) {
                cost = cost.saturating_add(sizes.size(&args[0]).scale(STRING_TRAVERSAL));
            }
            CallEstimate::cost(cost)
        }
        "sign" | "asInteger" | "isInteger" | "asApproximateFloat" | "isGreaterThan"
        | "isLessThan" | "compareTo" | "add" | "sub" | "getScheme" | "getHostname" | "getHost"
        | "getPort" | "getEscapedPath" | "getQuery" => CallEstimate::cost(one),
        "_==_" if args.len() == 2 => {
            let (lhs, rhs) = (&args[0], &args[1]);
            if lhs.ty != rhs.ty {
                return None;
            }
            match lhs.ty {
                Type::Ip | Type::Cidr | Type::Quantity => CallEstimate::cost(one),
                Type::Url => {
                    // the server reads the right-hand size twice
                    let max = rhs.computed.map_or(1, |s| s.max);
                    CallEstimate::cost(Range::new(1, max).scale(STRING_TRAVERSAL))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The cost of `replace` and the size of its result: every match of the
/// shortest possible needle replaced by the longest replacement, and the
/// other way round for the smallest result.
fn replace(size: Range, needle: Range, replacement: Range) -> CallEstimate {
    let mut count = Range::default();
    let mut retained = Range::default();
    if needle.min == 0 {
        count.max = if size.max < u64::MAX {
            size.max + 1
        } else {
            size.max
        };
        retained.max = size.max;
    } else if replacement.max <= needle.min {
        count.max = 0;
        retained.max = size.max;
    } else {
        count.max = (size.max as f64 / needle.min as f64).ceil() as u64;
    }
    if needle.max == 0 {
        count.min = if size.min < u64::MAX {
            size.min + 1
        } else {
            size.min
        };
        retained.min = size.min;
    } else if needle.max <= replacement.min {
        count.min = 0;
        retained.min = size.min;
    } else {
        count.min = (size.min as f64 / needle.max as f64).ceil() as u64;
    }
    let result = count.saturating_mul(replacement).saturating_add(retained);
    CallEstimate {
        cost: size.scale(2.0 * STRING_TRAVERSAL),
        result_size: Some(result),
    }
}
