//! FerroLB names for MetalLB objects: cluster-wide, where MetalLB's were per namespace.

use std::collections::{BTreeSet, HashMap, HashSet};

use ferrolb_crds::schema::OBJECT_NAME_PATTERN;

use crate::schema::matches;

/// The longest Kubernetes object name.
pub(super) const MAX_NAME_LENGTH: usize = 253;

/// FerroLB names for objects that had a namespace in MetalLB, in input order. A name used in
/// one namespace only is kept; a name used in several becomes `<namespace>-<name>`; a name still
/// taken then gets `-2`, `-3`, … (names kept as they were are served first).
pub fn cluster_names(wanted: &[(Option<String>, String)]) -> Vec<String> {
    let mut namespaces_by_name: HashMap<&str, BTreeSet<Option<&str>>> = HashMap::new();
    for (namespace, name) in wanted {
        namespaces_by_name
            .entry(name)
            .or_default()
            .insert(namespace.as_deref());
    }
    let candidates: Vec<String> = wanted
        .iter()
        .map(|(namespace, name)| match namespace {
            Some(namespace) if namespaces_by_name[name.as_str()].len() > 1 => {
                fit(&format!("{namespace}-{name}"), "")
            }
            _ => name.clone(),
        })
        .collect();
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| (candidates[i] != wanted[i].1, i));
    let mut taken = HashSet::new();
    let mut names = vec![String::new(); wanted.len()];
    for i in order {
        let mut name = candidates[i].clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = fit(&candidates[i], &format!("-{n}"));
            n += 1;
        }
        taken.insert(name.clone());
        names[i] = name;
    }
    names
}

/// `base` + `suffix` within the longest object name, without a dangling `-` or `.`.
pub(super) fn fit(base: &str, suffix: &str) -> String {
    let room = MAX_NAME_LENGTH.saturating_sub(suffix.len());
    let mut base: String = base.chars().take(room).collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// A legacy pool name as a Kubernetes object name: lower case, other characters become `-`.
pub fn object_name(name: &str) -> String {
    let mapped: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let name = fit(trimmed, "");
    if is_object_name(&name) {
        name
    } else {
        // Only dots and dashes in odd places are left to go wrong.
        let dashes: String = name
            .split('.')
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        if is_object_name(&dashes) {
            dashes
        } else {
            "pool".to_owned()
        }
    }
}

pub(super) fn is_object_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LENGTH && matches(OBJECT_NAME_PATTERN, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_made_unique_deterministically() {
        let wanted = |list: &[(Option<&str>, &str)]| -> Vec<(Option<String>, String)> {
            list.iter()
                .map(|(n, m)| (n.map(str::to_owned), (*m).to_owned()))
                .collect()
        };
        assert_eq!(
            cluster_names(&wanted(&[
                (Some("a"), "lan"),
                (Some("b"), "lan"),
                (Some("a"), "dmz")
            ])),
            ["a-lan", "b-lan", "dmz"]
        );
        // A renamed pool does not take a name someone already has.
        assert_eq!(
            cluster_names(&wanted(&[
                (Some("a"), "lan"),
                (Some("b"), "lan"),
                (Some("x"), "a-lan")
            ])),
            ["a-lan-2", "b-lan", "a-lan"]
        );
        assert_eq!(object_name("My_Pool"), "my-pool");
        assert_eq!(object_name("__"), "pool");
    }

    proptest! {
        #[test]
        fn cluster_names_are_unique_and_valid(
            wanted in prop::collection::vec((prop::option::of("[a-c]{1,2}"), "[a-c]{1,3}"), 0..12)
        ) {
            let names = cluster_names(&wanted);
            let unique: HashSet<_> = names.iter().collect();
            prop_assert_eq!(unique.len(), names.len());
            for name in &names {
                prop_assert!(is_object_name(name), "{}", name);
            }
            prop_assert_eq!(cluster_names(&wanted), names);
        }
    }
}
