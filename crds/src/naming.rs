//! Names and label values derived from other names, kept within Kubernetes' length limits.

/// `name` itself when it has at most `limit` characters; else a prefix and a hash of the whole
/// (stable across releases: FNV-1a), which still starts and ends alphanumerically.
pub fn bounded(name: &str, limit: usize) -> String {
    if name.len() <= limit {
        return name.to_owned();
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let suffix = format!("{hash:016x}");
    let keep = limit.saturating_sub(suffix.len() + 1);
    let prefix = name
        .get(..keep)
        .unwrap_or_default()
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned();
    format!("{prefix}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_stay_and_long_ones_are_cut_with_a_hash() {
        assert_eq!(bounded("node-a", 63), "node-a");
        let long = format!("{}.example-", "n".repeat(70));
        let cut = bounded(&long, 63);
        assert!(cut.len() <= 63);
        assert!(cut.starts_with("nnnn"));
        assert_ne!(cut, bounded(&format!("{long}x"), 63));
        assert_eq!(cut, bounded(&long, 63));
        assert!(cut.chars().last().unwrap().is_ascii_alphanumeric());
    }
}
