//! Address entries: what MetalLB read from each, written as FerroLB's parser accepts it.

use ferrolb_crds::addresses::{AddressError, IpRange, parse_entry, parse_ip};
use ferrolb_crds::ip_address_pool::AddressEntry;

use crate::report::{ObjectRef, Outcome, Report};
use crate::schema::CrdSchema;

/// What became of one address entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressOutcome {
    /// FerroLB accepts it as written.
    Kept(IpRange),
    /// FerroLB accepts it written as `written`, with the same addresses as MetalLB used.
    Changed {
        written: String,
        range: IpRange,
        why: String,
    },
    /// FerroLB cannot take it.
    Refused(String),
}

/// Converts one `spec.addresses` entry the way MetalLB read it, into what FerroLB's parser
/// accepts (checked with that parser).
pub fn convert_address(entry: &str) -> AddressOutcome {
    let mut why = Vec::new();
    let trimmed = entry.trim();
    let rewritten = match trimmed.split_once('-') {
        // MetalLB trims each end of a range.
        Some((start, end)) if start != start.trim() || end != end.trim() => {
            why.push(
                "has spaces around the range's dash; MetalLB ignores them, FerroLB refuses them"
                    .to_owned(),
            );
            format!("{}-{}", start.trim(), end.trim())
        }
        _ => trimmed.to_owned(),
    };
    if trimmed != entry && why.is_empty() {
        why.push(if trimmed.contains('-') {
            "has spaces around it; MetalLB ignores them, FerroLB refuses them".to_owned()
        } else {
            "has spaces around it, which MetalLB refused for a CIDR (the pool did not work); FerroLB refuses them too".to_owned()
        });
    }
    match parse_entry(&rewritten) {
        Ok(range) if why.is_empty() => AddressOutcome::Kept(range),
        Ok(range) => AddressOutcome::Changed {
            why: format!("{}: written {:?}", why.join("; "), rewritten),
            written: rewritten,
            range,
        },
        Err(AddressError::HostBitsSet { network, .. }) => {
            let written = network.to_string();
            match parse_entry(&written) {
                Ok(range) => {
                    why.push(format!(
                        "has host bits set; MetalLB uses the whole network, FerroLB requires it written so: {written:?}"
                    ));
                    AddressOutcome::Changed {
                        why: why.join("; "),
                        written,
                        range,
                    }
                }
                Err(error) => AddressOutcome::Refused(refusal(&written, &error)),
            }
        }
        Err(error) => AddressOutcome::Refused(refusal(&rewritten, &error)),
    }
}

fn refusal(entry: &str, error: &AddressError) -> String {
    match error {
        AddressError::Unparsable(_) if parse_ip(entry).is_ok() => {
            let length = if entry.contains(':') { 128 } else { 32 };
            format!(
                "is a single address, which MetalLB refuses too (the pool did not work); write \"{entry}/{length}\""
            )
        }
        AddressError::Unparsable(_) => {
            "is neither a CIDR (198.51.100.0/24, 2001:db8:1::/64) nor a range (198.51.100.10-198.51.100.20) that FerroLB can read".to_owned()
        }
        AddressError::Ipv4Mapped(_) => {
            "is an IPv4-mapped IPv6 address, which FerroLB refuses; write the IPv4 address instead".to_owned()
        }
        AddressError::RangeReversed { start, end } => format!(
            "starts after it ends, which MetalLB refuses too (the pool did not work); write \"{end}-{start}\""
        ),
        AddressError::MixedFamilies { .. } | AddressError::HostBitsSet { .. } => {
            format!("is refused by FerroLB: {error}")
        }
    }
}

/// Address entries, as FerroLB accepts them, with the field each came from.
pub(super) fn convert_addresses(
    object: &ObjectRef,
    field: &str,
    entries: &[String],
    lines: &mut Report,
) -> (Vec<AddressEntry>, Vec<String>) {
    let max = CrdSchema::ip_address_pool()
        .max_items("spec.addresses")
        .unwrap_or(usize::MAX);
    let mut kept: Vec<AddressEntry> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let path = format!("{field}[{index}]");
        let (written, outcome, detail) = match convert_address(entry) {
            AddressOutcome::Kept(_) => (entry.clone(), Outcome::Converted, format!("{entry:?}")),
            AddressOutcome::Changed { written, why, .. } => {
                (written, Outcome::Changed, format!("{entry:?} {why}"))
            }
            AddressOutcome::Refused(why) => {
                lines.push(
                    object,
                    path,
                    Outcome::NotCarriedOver,
                    format!("{entry:?} {why}"),
                );
                continue;
            }
        };
        if let Some(first) = kept.iter().position(|k| k.0 == written) {
            lines.push(
                object,
                path,
                Outcome::Changed,
                format!(
                    "{detail}; the same entry as {}, and FerroLB lists each entry once: written once",
                    fields[first]
                ),
            );
            continue;
        }
        if kept.len() >= max {
            lines.push(
                object,
                path,
                Outcome::NotCarriedOver,
                format!("{entry:?}: FerroLB's pools hold at most {max} entries"),
            );
            continue;
        }
        lines.push(object, path.clone(), outcome, detail);
        kept.push(AddressEntry(written));
        fields.push(path);
    }
    (kept, fields)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn host_bits_are_masked_as_metallb_masks_them() {
        match convert_address("198.51.100.7/24") {
            AddressOutcome::Changed { written, why, .. } => {
                assert_eq!(written, "198.51.100.0/24");
                assert_eq!(
                    why,
                    "has host bits set; MetalLB uses the whole network, FerroLB requires it written so: \"198.51.100.0/24\""
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(convert_address("2001:db8:1::5/64"), AddressOutcome::Changed { written, .. } if written == "2001:db8:1::/64")
        );
    }

    #[test]
    fn spaces_around_a_range_dash_are_trimmed() {
        match convert_address("198.51.100.10 - 198.51.100.20") {
            AddressOutcome::Changed { written, .. } => {
                assert_eq!(written, "198.51.100.10-198.51.100.20")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_ferrolb_cannot_take_is_refused() {
        for entry in [
            "::ffff:198.51.100.1/128",
            "lan",
            "198.51.100.20-198.51.100.10",
            "198.51.100.1-2001:db8::1",
            "198.51.100.7",
            "",
        ] {
            assert!(
                matches!(convert_address(entry), AddressOutcome::Refused(_)),
                "{entry:?}"
            );
        }
        assert!(
            matches!(convert_address("198.51.100.7"), AddressOutcome::Refused(why) if why.contains("198.51.100.7/32"))
        );
    }

    fn ipv4() -> impl Strategy<Value = String> {
        any::<u32>().prop_map(|n| Ipv4Addr::from(n).to_string())
    }

    fn ipv6() -> impl Strategy<Value = String> {
        any::<u128>().prop_map(|n| Ipv6Addr::from(n).to_string())
    }

    fn spaces() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "", " ", "  ", "\t"]).prop_map(str::to_owned)
    }

    /// Entries the way people write them in MetalLB: CIDRs with any prefix length (host bits or
    /// not), ranges with spaces around the dash, and now and then something broken.
    pub(crate) fn metallb_entry() -> impl Strategy<Value = String> {
        prop_oneof![
            (ipv4(), 0u8..=32).prop_map(|(ip, len)| format!("{ip}/{len}")),
            (ipv6(), 0u8..=128).prop_map(|(ip, len)| format!("{ip}/{len}")),
            (ipv4(), spaces(), spaces(), ipv4())
                .prop_map(|(a, s1, s2, b)| format!("{a}{s1}-{s2}{b}")),
            (ipv6(), spaces(), spaces(), ipv6())
                .prop_map(|(a, s1, s2, b)| format!("{a}{s1}-{s2}{b}")),
            (ipv4(), ipv6()).prop_map(|(a, b)| format!("{a}-{b}")),
            ipv4().prop_map(|a| format!("::ffff:{a}/128")),
            "\\PC{0,30}",
        ]
    }

    proptest! {
        #[test]
        fn every_written_entry_is_accepted_by_ferrolbs_parser(entry in metallb_entry()) {
            match convert_address(&entry) {
                AddressOutcome::Kept(range) => prop_assert_eq!(parse_entry(&entry), Ok(range)),
                AddressOutcome::Changed { written, range, .. } => {
                    prop_assert_eq!(parse_entry(&written), Ok(range));
                    prop_assert_ne!(&written, &entry);
                }
                AddressOutcome::Refused(why) => prop_assert!(!why.is_empty()),
            }
        }

        #[test]
        fn a_masked_cidr_holds_the_address_metallb_was_given(ip in ipv4(), len in 0u8..=32) {
            let entry = format!("{ip}/{len}");
            let range = match convert_address(&entry) {
                AddressOutcome::Kept(range) | AddressOutcome::Changed { range, .. } => range,
                AddressOutcome::Refused(why) => return Err(TestCaseError::fail(why)),
            };
            let ip: std::net::IpAddr = ip.parse().unwrap();
            prop_assert!(range.contains(ip));
            prop_assert_eq!(range.len(), ferrolb_crds::AddressCount::new(1u128 << (32 - len)));
        }

        #[test]
        fn trimmed_ranges_keep_their_addresses(a in any::<u32>(), b in any::<u32>(), s1 in spaces(), s2 in spaces()) {
            let (start, end) = (Ipv4Addr::from(a.min(b)), Ipv4Addr::from(a.max(b)));
            let plain = parse_entry(&format!("{start}-{end}")).unwrap();
            match convert_address(&format!("{start}{s1}-{s2}{end}")) {
                AddressOutcome::Kept(range) | AddressOutcome::Changed { range, .. } => prop_assert_eq!(range, plain),
                AddressOutcome::Refused(why) => return Err(TestCaseError::fail(why)),
            }
        }
    }
}
