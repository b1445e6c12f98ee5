//! What a speaker publishes in its Lease about the interfaces it can announce on, so that every
//! speaker can judge every node's candidacy from the same data.
//!
//! The annotation [`INTERFACES_ANNOTATION`] on `ferrolb-speaker-<node>` holds a JSON array of
//! [`PublishedInterface`], one per interface that is up, for example
//! `[{"name":"eth0","mac":"02:00:00:00:00:01","subnets":["198.51.100.5/24"]}]`.

use ferrolb_crds::InterfaceName;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::packet::MacAddr;

pub const INTERFACES_ANNOTATION: &str = "ferrolb.io/interfaces";

/// One interface that is up on a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct PublishedInterface {
    pub name: InterfaceName,
    /// Announcements from it carry this MAC; conflict detection counts it as a FerroLB MAC.
    pub mac: MacAddr,
    /// A bridge, veth, tunnel or other software interface: not used for announcing unless an
    /// L2Advertisement names it or its subnet holds the IP.
    #[serde(
        default,
        rename = "virtual",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_virtual: bool,
    /// The interface's addresses with their prefix lengths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<IpNet>,
}

/// Reads the annotation, sorted by name with duplicate names dropped (first kept), so that
/// nodes that list the same interfaces in another order are judged the same.
pub fn parse_annotation(text: &str) -> Result<Vec<PublishedInterface>, serde_json::Error> {
    let mut interfaces: Vec<PublishedInterface> = serde_json::from_str(text)?;
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces.dedup_by(|later, earlier| later.name == earlier.name);
    Ok(interfaces)
}

pub fn render_annotation(interfaces: &[PublishedInterface]) -> String {
    let mut sorted = interfaces.to_vec();
    sorted.sort();
    // Serializing plain strings and lists cannot fail.
    serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_round_trips_in_a_canonical_order() {
        let eth1 = PublishedInterface {
            name: InterfaceName::new("eth1").unwrap(),
            mac: "02:00:00:00:00:02".parse().unwrap(),
            is_virtual: false,
            subnets: vec!["2001:db8::5/64".parse().unwrap()],
        };
        let eth0 = PublishedInterface {
            name: InterfaceName::new("eth0").unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            is_virtual: true,
            subnets: vec!["198.51.100.5/24".parse().unwrap()],
        };
        let text = render_annotation(&[eth1.clone(), eth0.clone()]);
        assert_eq!(
            text,
            r#"[{"name":"eth0","mac":"02:00:00:00:00:01","virtual":true,"subnets":["198.51.100.5/24"]},{"name":"eth1","mac":"02:00:00:00:00:02","subnets":["2001:db8::5/64"]}]"#
        );
        assert_eq!(parse_annotation(&text).unwrap(), vec![eth0, eth1]);
    }

    #[test]
    fn bad_annotations_are_errors_not_panics() {
        for bad in [
            "",
            "{}",
            r#"[{"name":"eth0"}]"#,
            r#"[{"name":"a/b","mac":"02:00:00:00:00:01"}]"#,
            r#"[{"name":"eth0","mac":"nope"}]"#,
            r#"[{"name":"eth0","mac":"02:00:00:00:00:01","subnets":["198.51.100.5"]}]"#,
        ] {
            assert!(parse_annotation(bad).is_err(), "{bad:?}");
        }
    }
}
