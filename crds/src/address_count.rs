//! Exact address counts for any pool size.
//!
//! A pool can span all 2^128 IPv6 addresses, one more than `u128` holds, so counts carry a 129th
//! bit. Counts are written to status as decimal strings because JSON numbers in Kubernetes are
//! 64-bit and an IPv6 /48 alone holds 2^80 addresses.

use std::fmt;
use std::str::FromStr;

/// A count of addresses in `0..=2^128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AddressCount {
    /// Set only for exactly 2^128 (then `low` is 0).
    full: bool,
    low: u128,
}

impl AddressCount {
    pub const ZERO: Self = Self {
        full: false,
        low: 0,
    };
    /// Every IPv6 address.
    pub const ALL_IPV6: Self = Self { full: true, low: 0 };

    pub const fn new(count: u128) -> Self {
        Self {
            full: false,
            low: count,
        }
    }

    /// The number of addresses in the inclusive range `start..=end` (`start <= end`).
    pub const fn inclusive_range(start: u128, end: u128) -> Self {
        let span = end - start;
        match span.checked_add(1) {
            Some(low) => Self { full: false, low },
            None => Self::ALL_IPV6,
        }
    }

    /// The count as a `u128`, or `None` for 2^128.
    pub const fn as_u128(self) -> Option<u128> {
        if self.full { None } else { Some(self.low) }
    }

    pub const fn is_zero(self) -> bool {
        !self.full && self.low == 0
    }

    /// Sum, or `None` past 2^128 (which no set of distinct addresses can reach).
    pub fn checked_add(self, other: Self) -> Option<Self> {
        match (self.full, other.full) {
            (true, _) if other.is_zero() => Some(self),
            (_, true) if self.is_zero() => Some(other),
            (true, _) | (_, true) => None,
            (false, false) => match self.low.checked_add(other.low) {
                Some(low) => Some(Self { full: false, low }),
                None => {
                    let wrapped = self.low.wrapping_add(other.low);
                    (wrapped == 0).then_some(Self::ALL_IPV6)
                }
            },
        }
    }

    /// Difference, or `None` when `other` is larger (a count never goes negative).
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        if other > self {
            return None;
        }
        if self.full {
            if other.is_zero() {
                return Some(self);
            }
            // 2^128 - other, with 0 < other < 2^128.
            return Some(Self::new(0u128.wrapping_sub(other.low)));
        }
        Some(Self::new(self.low - other.low))
    }

    /// Difference clamped at zero, for "available = total - assigned" where assigned addresses are
    /// always inside the total.
    pub fn saturating_sub(self, other: Self) -> Self {
        self.checked_sub(other).unwrap_or(Self::ZERO)
    }
}

impl From<u128> for AddressCount {
    fn from(value: u128) -> Self {
        Self::new(value)
    }
}

impl From<usize> for AddressCount {
    fn from(value: usize) -> Self {
        Self::new(value as u128)
    }
}

impl fmt::Display for AddressCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.full {
            f.write_str("340282366920938463463374607431768211456")
        } else {
            write!(f, "{}", self.low)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address count (a decimal number from 0 to 2^128)")]
pub struct ParseAddressCountError(String);

impl FromStr for AddressCount {
    type Err = ParseAddressCountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::ALL_IPV6.to_string() {
            return Ok(Self::ALL_IPV6);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseAddressCountError(s.to_owned()));
        }
        s.parse::<u128>()
            .map(Self::new)
            .map_err(|_| ParseAddressCountError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_ipv6_space_is_counted_exactly() {
        let all = AddressCount::inclusive_range(0, u128::MAX);
        assert_eq!(all, AddressCount::ALL_IPV6);
        assert_eq!(all.to_string(), "340282366920938463463374607431768211456");
        assert_eq!(all.as_u128(), None);
        assert_eq!(
            all.checked_sub(AddressCount::new(1)),
            Some(AddressCount::new(u128::MAX))
        );
        assert_eq!(all.checked_add(AddressCount::new(1)), None);
    }

    #[test]
    fn two_halves_of_ipv6_add_up_to_all() {
        let half = AddressCount::new(1u128 << 127);
        assert_eq!(half.checked_add(half), Some(AddressCount::ALL_IPV6));
    }

    #[test]
    fn a_slash_48_is_two_to_the_eighty() {
        let slash48 = AddressCount::inclusive_range(0, (1u128 << 80) - 1);
        assert_eq!(slash48.to_string(), "1208925819614629174706176");
    }

    #[test]
    fn counts_never_go_negative() {
        assert_eq!(AddressCount::new(3).checked_sub(AddressCount::new(4)), None);
        assert_eq!(
            AddressCount::new(3).saturating_sub(AddressCount::new(4)),
            AddressCount::ZERO
        );
    }

    #[test]
    fn parse_rejects_signs_and_noise() {
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            " 1",
            "340282366920938463463374607431768211457",
        ] {
            assert!(bad.parse::<AddressCount>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(n in any::<u128>()) {
            let count = AddressCount::new(n);
            prop_assert_eq!(count.to_string().parse::<AddressCount>(), Ok(count));
        }

        #[test]
        fn add_then_sub_is_identity(a in any::<u128>(), b in any::<u128>()) {
            let (a, b) = (AddressCount::new(a), AddressCount::new(b));
            if let Some(sum) = a.checked_add(b) {
                prop_assert_eq!(sum.checked_sub(b), Some(a));
                prop_assert!(sum >= a && sum >= b);
            }
        }
    }
}
