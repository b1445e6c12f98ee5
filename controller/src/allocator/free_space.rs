//! Finding the lowest free address of one pool family in O(log n) without scanning the pool.
//!
//! Allocated addresses are kept as maximal runs of unavailable addresses (`start → end`). An
//! address is unavailable when it is allocated or, with `avoidBuggyIPs`, ends in .0 or .255.
//! Runs separated only by such buggy addresses are merged, so after jumping over one run the
//! next candidate is free after skipping at most two buggy addresses.

use std::collections::BTreeMap;

use ferrolb_crds::{IpFamily, IpRange};

/// Unavailable addresses of one family of one pool, as merged runs.
#[derive(Debug, Clone)]
pub struct FreeSpace {
    family: IpFamily,
    avoid_buggy: bool,
    runs: BTreeMap<u128, u128>,
}

pub use ferrolb_crds::addresses::is_buggy_value;

impl FreeSpace {
    pub fn new(family: IpFamily, avoid_buggy: bool) -> Self {
        Self {
            family,
            avoid_buggy,
            runs: BTreeMap::new(),
        }
    }

    fn skipped(&self, value: u128) -> bool {
        self.avoid_buggy && is_buggy_value(self.family, value)
    }

    /// Whether every address of `first..=last` is skipped (true when the span is empty).
    fn only_skipped(&self, first: u128, last: u128) -> bool {
        if first > last {
            return true;
        }
        // Buggy addresses come in pairs (.255, .0) at most, so a longer gap always holds a free one.
        last - first < 2 && (first..=last).all(|v| self.skipped(v))
    }

    fn run_containing(&self, value: u128) -> Option<(u128, u128)> {
        self.runs
            .range(..=value)
            .next_back()
            .filter(|&(_, &end)| end >= value)
            .map(|(&start, &end)| (start, end))
    }

    /// Marks `value` as allocated.
    pub fn insert(&mut self, value: u128) {
        if self.run_containing(value).is_some() {
            return;
        }
        let mut start = value;
        let mut end = value;
        if let Some((&left_start, &left_end)) = self.runs.range(..value).next_back()
            && self.only_skipped(left_end + 1, value - 1)
        {
            start = left_start;
        }
        if let Some(after) = value.checked_add(1)
            && let Some((&right_start, &right_end)) = self.runs.range(after..).next()
            && self.only_skipped(after, right_start - 1)
        {
            self.runs.remove(&right_start);
            end = right_end;
        }
        self.runs.insert(start, end);
    }

    /// Marks `value` as free again.
    pub fn remove(&mut self, value: u128) {
        let Some((start, end)) = self.run_containing(value) else {
            return;
        };
        if self.skipped(value) {
            return;
        }
        self.runs.remove(&start);
        if start < value {
            self.runs.insert(start, value - 1);
        }
        if value < end {
            self.runs.insert(value + 1, end);
        }
    }

    /// The lowest address of `ranges` (sorted, of this family) that is neither allocated nor skipped.
    pub fn lowest_free<'a>(&self, ranges: impl IntoIterator<Item = &'a IpRange>) -> Option<u128> {
        for range in ranges {
            let mut candidate = range.start_value();
            while candidate <= range.end_value() {
                if self.skipped(candidate) {
                    candidate = candidate.checked_add(1)?;
                    continue;
                }
                match self.run_containing(candidate) {
                    Some((_, end)) => candidate = end.checked_add(1)?,
                    None => return Some(candidate),
                }
            }
        }
        None
    }

    /// Number of runs, for memory accounting in tests.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::AddressSet;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> u128 {
        u128::from(u32::from_be_bytes([a, b, c, d]))
    }

    fn set(entries: &[&str]) -> AddressSet {
        AddressSet::parse(entries.iter().copied()).unwrap()
    }

    #[test]
    fn lowest_free_skips_allocated_runs() {
        let pool = set(&["198.51.100.0/30", "203.0.113.8/30"]);
        let mut space = FreeSpace::new(IpFamily::IPv4, false);
        let lowest = |s: &FreeSpace| s.lowest_free(pool.ranges_of(IpFamily::IPv4));
        assert_eq!(lowest(&space), Some(v4(198, 51, 100, 0)));
        for d in 0..4 {
            space.insert(v4(198, 51, 100, d));
        }
        assert_eq!(space.run_count(), 1);
        assert_eq!(lowest(&space), Some(v4(203, 0, 113, 8)));
        space.remove(v4(198, 51, 100, 2));
        assert_eq!(lowest(&space), Some(v4(198, 51, 100, 2)));
        assert_eq!(space.run_count(), 2);
    }

    #[test]
    fn avoid_buggy_merges_runs_across_dot_255_and_dot_0() {
        let pool = set(&["198.51.100.0/23"]);
        let mut space = FreeSpace::new(IpFamily::IPv4, true);
        for d in 1..=254 {
            space.insert(v4(198, 51, 100, d));
        }
        space.insert(v4(198, 51, 101, 1));
        assert_eq!(space.run_count(), 1);
        assert_eq!(
            space.lowest_free(pool.ranges_of(IpFamily::IPv4)),
            Some(v4(198, 51, 101, 2))
        );
    }

    #[test]
    fn top_of_ipv6_space_does_not_overflow() {
        let pool = set(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"]);
        let mut space = FreeSpace::new(IpFamily::IPv6, false);
        space.insert(u128::MAX - 1);
        assert_eq!(
            space.lowest_free(pool.ranges_of(IpFamily::IPv6)),
            Some(u128::MAX)
        );
        space.insert(u128::MAX);
        assert_eq!(space.lowest_free(pool.ranges_of(IpFamily::IPv6)), None);
    }

    proptest! {
        #[test]
        fn agrees_with_brute_force(
            ops in prop::collection::vec((any::<bool>(), 0u128..600), 0..200),
            avoid in any::<bool>(),
        ) {
            let range = IpRange::new(
                IpFamily::IPv4.address(v4(198, 51, 100, 0) + 3),
                IpFamily::IPv4.address(v4(198, 51, 100, 0) + 560),
            ).unwrap();
            let base = v4(198, 51, 100, 0);
            let mut space = FreeSpace::new(IpFamily::IPv4, avoid);
            let mut allocated = BTreeSet::new();
            for (insert, offset) in ops {
                let value = base + offset;
                if insert {
                    space.insert(value);
                    allocated.insert(value);
                } else {
                    space.remove(value);
                    allocated.remove(&value);
                }
                let brute = (range.start_value()..=range.end_value())
                    .find(|v| !(allocated.contains(v) || (avoid && is_buggy_value(IpFamily::IPv4, *v))));
                prop_assert_eq!(space.lowest_free([&range]), brute);
            }
        }
    }
}
