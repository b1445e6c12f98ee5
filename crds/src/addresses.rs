//! What the addresses of an `IPAddressPool` mean: parsing each entry exactly as the CRD schema
//! accepts it, and the resulting address set (membership, overlap, exact counts).
//!
//! Addresses are handled as `u128` per family so that IPv4 and IPv6 share one code path and ranges
//! never need to be enumerated.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::address_count::AddressCount;

/// An address family, spelled as Kubernetes spells `ipFamilies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    pub const BOTH: [IpFamily; 2] = [IpFamily::IPv4, IpFamily::IPv6];

    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// The highest address of the family as a number.
    pub const fn max_value(self) -> u128 {
        match self {
            IpFamily::IPv4 => u32::MAX as u128,
            IpFamily::IPv6 => u128::MAX,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    /// The address with the given number; `value` must not exceed [`IpFamily::max_value`].
    pub fn address(self, value: u128) -> IpAddr {
        match self {
            IpFamily::IPv4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
            IpFamily::IPv6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    /// Parses the spelling used in `spec.ipFamilies`.
    pub fn from_kubernetes(name: &str) -> Option<Self> {
        match name {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address as a number within its family.
pub fn address_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// IPv4 addresses ending in .0 or .255, which some old clients and routers mishandle
/// (`spec.avoidBuggyIPs`). IPv6 has no such addresses.
pub fn is_buggy(ip: IpAddr) -> bool {
    is_buggy_value(IpFamily::of(ip), address_value(ip))
}

/// [`is_buggy`] for an address given as its number within its family, as the allocator keeps
/// them.
pub fn is_buggy_value(family: IpFamily, value: u128) -> bool {
    family == IpFamily::IPv4 && matches!(value % 256, 0 | 255)
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    family: IpFamily,
    start: u128,
    end: u128,
}

impl IpRange {
    /// A range from `start` to `end` inclusive, both of one family and in order.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, AddressError> {
        let family = IpFamily::of(start);
        if family != IpFamily::of(end) {
            return Err(AddressError::MixedFamilies {
                start: start.to_string(),
                end: end.to_string(),
            });
        }
        let (s, e) = (address_value(start), address_value(end));
        if s > e {
            return Err(AddressError::RangeReversed {
                start: start.to_string(),
                end: end.to_string(),
            });
        }
        Ok(Self {
            family,
            start: s,
            end: e,
        })
    }

    pub fn from_net(net: IpNet) -> Self {
        Self {
            family: IpFamily::of(net.addr()),
            start: address_value(net.network()),
            end: address_value(net.broadcast()),
        }
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }
    pub fn start(&self) -> IpAddr {
        self.family.address(self.start)
    }
    pub fn end(&self) -> IpAddr {
        self.family.address(self.end)
    }
    pub fn start_value(&self) -> u128 {
        self.start
    }
    pub fn end_value(&self) -> u128 {
        self.end
    }

    pub fn len(&self) -> AddressCount {
        AddressCount::inclusive_range(self.start, self.end)
    }

    /// Never true: a range holds at least one address. Present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        IpFamily::of(ip) == self.family && (self.start..=self.end).contains(&address_value(ip))
    }

    /// The lowest address both ranges hold.
    pub fn first_common(&self, other: &IpRange) -> Option<IpAddr> {
        if self.family != other.family {
            return None;
        }
        let start = self.start.max(other.start);
        (start <= self.end.min(other.end)).then(|| self.family.address(start))
    }

    /// How many IPv4 addresses ending in .0 or .255 the range holds (0 for IPv6).
    pub fn buggy_count(&self) -> AddressCount {
        if self.family == IpFamily::IPv6 {
            return AddressCount::ZERO;
        }
        // Count values ≡ r (mod 256) in [start, end] for r in {0, 255}.
        let congruent = |r: u128| -> u128 {
            let upto = |x: u128| -> u128 {
                // numbers in [0, x] congruent to r
                if x < r { 0 } else { (x - r) / 256 + 1 }
            };
            upto(self.end)
                - if self.start == 0 {
                    0
                } else {
                    upto(self.start - 1)
                }
        };
        AddressCount::new(congruent(0) + congruent(255))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start())
        } else {
            write!(f, "{}-{}", self.start(), self.end())
        }
    }
}

/// Why an address entry, or an address in a request, is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "{0} is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20)"
    )]
    Unparsable(String),
    #[error("{0} is an IPv4-mapped IPv6 address; write the IPv4 address instead")]
    Ipv4Mapped(String),
    #[error("{given} has host bits set; write the network address of the prefix: {network}")]
    HostBitsSet { given: String, network: IpNet },
    #[error(
        "range start {start} and end {end} are of different families; write one range per family"
    )]
    MixedFamilies { start: String, end: String },
    #[error("range start {start} is after its end {end}; write {end}-{start}")]
    RangeReversed { start: String, end: String },
}

impl AddressError {
    /// Whether the CRD schema refuses this at `kubectl apply`. The API server's CEL cost budget
    /// does not afford comparing two addresses, so a reversed range reaches the controller, which
    /// reports it on the pool instead.
    pub fn refused_at_apply(&self) -> bool {
        !matches!(self, AddressError::RangeReversed { .. })
    }

    /// What the schema's own message says for this error: the controller's message, up to the
    /// details CEL cannot compute within its budget (the network address of a prefix).
    pub fn schema_message(&self) -> Option<String> {
        match self {
            AddressError::HostBitsSet { given, .. } => Some(format!(
                "{given} has host bits set; write the network address of the prefix"
            )),
            AddressError::RangeReversed { .. } => None,
            other => Some(other.to_string()),
        }
    }
}

/// Parses one IP address the way the Kubernetes CEL `ip()` function does: no zones, no leading
/// zeros, and no IPv4-mapped or IPv4-compatible IPv6 forms.
pub fn parse_ip(text: &str) -> Result<IpAddr, AddressError> {
    if text.contains(':') && text.contains('.') {
        return Err(AddressError::Ipv4Mapped(text.to_owned()));
    }
    text.parse::<IpAddr>()
        .map_err(|_| AddressError::Unparsable(text.to_owned()))
}

/// Parses one `spec.addresses` entry: a CIDR without host bits, or `start-end`.
pub fn parse_entry(entry: &str) -> Result<IpRange, AddressError> {
    if entry
        .split('-')
        .any(|part| part.contains(':') && part.contains('.'))
    {
        return Err(AddressError::Ipv4Mapped(entry.to_owned()));
    }
    if let Some((addr, prefix)) = entry.split_once('/') {
        // The schema allows only decimal prefix lengths; `IpNet` agrees, but be explicit.
        if prefix.is_empty()
            || !prefix.bytes().all(|b| b.is_ascii_digit())
            || (prefix.len() > 1 && prefix.starts_with('0'))
        {
            return Err(AddressError::Unparsable(entry.to_owned()));
        }
        parse_ip(addr).map_err(|_| AddressError::Unparsable(entry.to_owned()))?;
        let net: IpNet = entry
            .parse()
            .map_err(|_| AddressError::Unparsable(entry.to_owned()))?;
        if net.trunc() != net {
            return Err(AddressError::HostBitsSet {
                given: entry.to_owned(),
                network: net.trunc(),
            });
        }
        return Ok(IpRange::from_net(net));
    }
    let mut parts = entry.split('-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(start_text), Some(end_text), None) => {
            let unparsable = |_| AddressError::Unparsable(entry.to_owned());
            let start = parse_ip(start_text).map_err(unparsable)?;
            let end = parse_ip(end_text).map_err(unparsable)?;
            // Quote the addresses as written, as the schema's messages do.
            IpRange::new(start, end).map_err(|error| match error {
                AddressError::MixedFamilies { .. } => AddressError::MixedFamilies {
                    start: start_text.to_owned(),
                    end: end_text.to_owned(),
                },
                AddressError::RangeReversed { .. } => AddressError::RangeReversed {
                    start: start_text.to_owned(),
                    end: end_text.to_owned(),
                },
                other => other,
            })
        }
        _ => Err(AddressError::Unparsable(entry.to_owned())),
    }
}

/// The addresses of a pool: sorted, merged ranges per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    /// Sorted by start, disjoint and not adjacent; IPv4 ranges before IPv6 ranges.
    ranges: Vec<IpRange>,
}

impl AddressSet {
    /// The union of the given ranges (entries of one pool may overlap or touch).
    pub fn from_ranges(ranges: impl IntoIterator<Item = IpRange>) -> Self {
        let mut sorted: Vec<IpRange> = ranges.into_iter().collect();
        sorted.sort();
        let mut merged: Vec<IpRange> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                Some(last)
                    if last.family == range.family
                        && (last.end == u128::MAX || range.start <= last.end + 1) =>
                {
                    last.end = last.end.max(range.end);
                }
                _ => merged.push(range),
            }
        }
        Self { ranges: merged }
    }

    /// Parses every entry; the errors of all bad entries are returned together.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, Vec<AddressError>> {
        let (ranges, errors): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .map(parse_entry)
            .partition(Result::is_ok);
        if errors.is_empty() {
            Ok(Self::from_ranges(ranges.into_iter().flatten()))
        } else {
            Err(errors.into_iter().filter_map(Result::err).collect())
        }
    }

    pub fn ranges(&self) -> &[IpRange] {
        &self.ranges
    }

    pub fn ranges_of(&self, family: IpFamily) -> impl Iterator<Item = &IpRange> {
        self.ranges.iter().filter(move |r| r.family == family)
    }

    pub fn has_family(&self, family: IpFamily) -> bool {
        self.ranges_of(family).next().is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether some address of `net` is in the set.
    pub fn overlaps(&self, net: IpNet) -> bool {
        let net = IpRange::from_net(net);
        self.ranges.iter().any(|range| {
            range.family == net.family && range.start <= net.end && net.start <= range.end
        })
    }

    /// Membership in O(log n).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let probe = (IpFamily::of(ip), address_value(ip));
        let after = self
            .ranges
            .partition_point(|r| (r.family, r.start) <= probe);
        after > 0 && self.ranges[after - 1].contains(ip)
    }

    /// The lowest address held by both sets, if any.
    pub fn first_common(&self, other: &AddressSet) -> Option<IpAddr> {
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (&self.ranges[i], &other.ranges[j]);
            if let Some(ip) = a.first_common(b) {
                return Some(ip);
            }
            if (a.family, a.end) < (b.family, b.end) {
                i += 1;
            } else {
                j += 1;
            }
        }
        None
    }

    /// These addresses minus `other`'s.
    pub fn difference(&self, other: &AddressSet) -> AddressSet {
        let mut out = Vec::new();
        for range in &self.ranges {
            let mut cursor = Some(range.start);
            for cut in other.ranges_of(range.family) {
                let Some(start) = cursor else { break };
                if cut.end < start || cut.start > range.end {
                    continue;
                }
                if cut.start > start {
                    out.push(IpRange {
                        family: range.family,
                        start,
                        end: cut.start - 1,
                    });
                }
                cursor = if cut.end >= range.end {
                    None
                } else {
                    Some(cut.end + 1)
                };
            }
            if let Some(start) = cursor {
                out.push(IpRange {
                    family: range.family,
                    start,
                    end: range.end,
                });
            }
        }
        AddressSet { ranges: out }
    }

    /// Exact number of addresses of a family.
    pub fn count(&self, family: IpFamily) -> AddressCount {
        self.ranges_of(family)
            .try_fold(AddressCount::ZERO, |sum, r| sum.checked_add(r.len()))
            .unwrap_or(AddressCount::ALL_IPV6)
    }

    /// Exact number of addresses of a family that can be handed out, given `avoidBuggyIPs`.
    pub fn usable_count(&self, family: IpFamily, avoid_buggy_ips: bool) -> AddressCount {
        let total = self.count(family);
        if !avoid_buggy_ips {
            return total;
        }
        let buggy = self.ranges_of(family).fold(AddressCount::ZERO, |sum, r| {
            sum.checked_add(r.buggy_count()).unwrap_or(sum)
        });
        total.saturating_sub(buggy)
    }
}

impl fmt::Display for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_set_overlaps_the_subnets_that_share_an_address_with_it() {
        let set = AddressSet::parse(["198.51.100.10-198.51.100.20", "2001:db8:1::/120"]).unwrap();
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        assert!(set.overlaps(net("198.51.100.0/24")));
        assert!(set.overlaps(net("198.51.100.20/32")));
        assert!(set.overlaps(net("198.51.100.16/29")));
        assert!(!set.overlaps(net("198.51.100.0/29")));
        assert!(!set.overlaps(net("198.51.100.21/32")));
        assert!(!set.overlaps(net("203.0.113.0/24")));
        assert!(set.overlaps(net("2001:db8:1::/64")));
        assert!(!set.overlaps(net("2001:db8:2::/64")));
        // The same numbers in the other family are not the same addresses.
        assert!(
            !AddressSet::parse(["0.0.0.0/8"])
                .unwrap()
                .overlaps(net("::/104"))
        );
    }

    #[test]
    fn parses_cidrs_and_ranges_of_both_families() {
        let r = parse_entry("198.51.100.0/24").unwrap();
        assert_eq!(
            (r.start(), r.end()),
            (ip("198.51.100.0"), ip("198.51.100.255"))
        );
        let r = parse_entry("198.51.100.10-198.51.100.20").unwrap();
        assert_eq!(r.len(), AddressCount::new(11));
        let r = parse_entry("2001:db8:1::/64").unwrap();
        assert_eq!(r.len(), AddressCount::new(1 << 64));
        let r = parse_entry("2001:db8:1::10-2001:db8:1::1f").unwrap();
        assert_eq!(r.len(), AddressCount::new(16));
        let r = parse_entry("198.51.100.7/32").unwrap();
        assert_eq!(r.len(), AddressCount::new(1));
    }

    #[test]
    fn rejects_what_the_schema_rejects_with_the_same_reasons() {
        assert_eq!(
            parse_entry("198.51.100.9-198.51.100.1")
                .unwrap_err()
                .to_string(),
            "range start 198.51.100.9 is after its end 198.51.100.1; write 198.51.100.1-198.51.100.9"
        );
        assert!(matches!(
            parse_entry("198.51.100.1-2001:db8:1::1"),
            Err(AddressError::MixedFamilies { .. })
        ));
        assert!(matches!(
            parse_entry("::ffff:198.51.100.1/128"),
            Err(AddressError::Ipv4Mapped(_))
        ));
        assert!(matches!(
            parse_entry("::ffff:198.51.100.1-::ffff:198.51.100.9"),
            Err(AddressError::Ipv4Mapped(_))
        ));
        assert_eq!(
            parse_entry("198.51.100.7/24").unwrap_err().to_string(),
            "198.51.100.7/24 has host bits set; write the network address of the prefix: 198.51.100.0/24"
        );
        for bad in [
            "",
            "198.51.100.0",
            "198.51.100.0/33",
            "198.51.100.0/+4",
            "198.51.100.0/",
            "198.51.100.0/024",
            "198.51.100.01/32",
            "fe80::1%eth0/128",
            "198.51.100.1-198.51.100.2-198.51.100.3",
            "198.51.100.1 - 198.51.100.2",
            "-198.51.100.1",
            "lan",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn set_merges_overlapping_and_adjacent_entries() {
        let set = AddressSet::parse([
            "198.51.100.0/25",
            "198.51.100.128-198.51.100.200",
            "198.51.100.100-198.51.100.110",
            "2001:db8:1::/120",
        ])
        .unwrap();
        assert_eq!(set.ranges().len(), 2);
        assert_eq!(set.count(IpFamily::IPv4), AddressCount::new(201));
        assert_eq!(set.count(IpFamily::IPv6), AddressCount::new(256));
        assert!(set.contains(ip("198.51.100.200")));
        assert!(!set.contains(ip("198.51.100.201")));
        assert!(set.contains(ip("2001:db8:1::ff")));
        assert!(!set.contains(ip("2001:db8:1::100")));
    }

    #[test]
    fn buggy_addresses_are_counted_exactly() {
        let set = AddressSet::parse(["198.51.100.0/24", "203.0.113.255-203.0.113.255"]).unwrap();
        assert_eq!(
            set.usable_count(IpFamily::IPv4, true),
            AddressCount::new(254)
        );
        assert_eq!(
            set.usable_count(IpFamily::IPv4, false),
            AddressCount::new(257)
        );
        assert!(is_buggy(ip("198.51.100.0")) && is_buggy(ip("198.51.100.255")));
        assert!(!is_buggy(ip("2001:db8:1::ff")));
        assert!(is_buggy_value(IpFamily::IPv4, 0x0100) && is_buggy_value(IpFamily::IPv4, 0x01ff));
        assert!(!is_buggy_value(IpFamily::IPv4, 0x0101));
        assert!(!is_buggy_value(IpFamily::IPv6, 0xff));
        let whole = AddressSet::parse(["0.0.0.0/0"]).unwrap();
        assert_eq!(
            whole.usable_count(IpFamily::IPv4, true),
            AddressCount::new((1u128 << 32) - 2 * (1 << 24))
        );
    }

    #[test]
    fn whole_ipv6_space_is_one_exact_count() {
        let set = AddressSet::parse(["::/1", "8000::/1"]).unwrap();
        assert_eq!(set.count(IpFamily::IPv6), AddressCount::ALL_IPV6);
        assert_eq!(set.ranges().len(), 1);
    }

    #[test]
    fn overlap_and_difference() {
        let a = AddressSet::parse(["198.51.100.0/24", "2001:db8:1::/64"]).unwrap();
        let b = AddressSet::parse(["198.51.100.128/25"]).unwrap();
        assert_eq!(a.first_common(&b), Some(ip("198.51.100.128")));
        let rest = a.difference(&b);
        assert_eq!(
            rest.to_string(),
            "198.51.100.0-198.51.100.127, 2001:db8:1::-2001:db8:1:0:ffff:ffff:ffff:ffff"
        );
        let c = AddressSet::parse(["203.0.113.0/24"]).unwrap();
        assert_eq!(a.first_common(&c), None);
    }

    fn small_ranges() -> impl Strategy<Value = Vec<(u128, u128)>> {
        prop::collection::vec((0u128..2000, 0u128..50), 0..12)
            .prop_map(|v| v.into_iter().map(|(s, l)| (s, s + l)).collect())
    }

    fn to_set(ranges: &[(u128, u128)]) -> AddressSet {
        AddressSet::from_ranges(ranges.iter().map(|&(s, e)| IpRange {
            family: IpFamily::IPv6,
            start: s,
            end: e,
        }))
    }

    proptest! {
        #[test]
        fn set_agrees_with_brute_force(a in small_ranges(), b in small_ranges(), probe in 0u128..2100) {
            let (sa, sb) = (to_set(&a), to_set(&b));
            let in_a = |x: u128| a.iter().any(|&(s, e)| (s..=e).contains(&x));
            let in_b = |x: u128| b.iter().any(|&(s, e)| (s..=e).contains(&x));
            let addr = IpFamily::IPv6.address(probe);
            prop_assert_eq!(sa.contains(addr), in_a(probe));
            prop_assert_eq!(sa.difference(&sb).contains(addr), in_a(probe) && !in_b(probe));
            let brute_count = (0..2100).filter(|&x| in_a(x)).count();
            prop_assert_eq!(sa.count(IpFamily::IPv6), AddressCount::from(brute_count));
            let brute_common = (0..2100).find(|&x| in_a(x) && in_b(x));
            prop_assert_eq!(sa.first_common(&sb), brute_common.map(|x| IpFamily::IPv6.address(x)));
        }

        #[test]
        fn buggy_count_agrees_with_brute_force(start in 0u128..5000, len in 0u128..1000) {
            let r = IpRange { family: IpFamily::IPv4, start, end: start + len };
            let brute = (start..=start + len).filter(|x| matches!(x % 256, 0 | 255)).count();
            prop_assert_eq!(r.buggy_count(), AddressCount::from(brute));
        }

        #[test]
        fn parse_entry_never_panics(s in "\\PC{0,80}") {
            let _ = parse_entry(&s);
        }
    }
}
