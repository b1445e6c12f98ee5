//! What happened to each MetalLB field: converted as it was, changed on the way, or not carried
//! over. Every entry names the MetalLB object and the field, so the user can find it in their own
//! manifests.

use std::fmt;

use ferrolb_crds::annotations::{ACCEPTED_PREFIXES, ServiceAnnotation};
use serde_json::Value;

/// The longest value quoted in a line; longer ones are cut.
const MAX_QUOTED: usize = 120;

/// A MetalLB object as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Carried over with the same meaning and spelling.
    Converted,
    /// Carried over with the same meaning, written differently (or with a meaning the user should
    /// know has shifted, such as a new name).
    Changed,
    /// Lost: FerroLB has no equivalent, or would refuse it.
    NotCarriedOver,
    /// Not part of MetalLB's configuration, or a remark; changes nothing.
    Note,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Converted => "converted",
            Outcome::Changed => "changed",
            Outcome::NotCarriedOver => "not carried over",
            Outcome::Note => "note",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub object: ObjectRef,
    /// Path of the field within the MetalLB object (`spec.addresses[1]`); empty for the object
    /// as a whole.
    pub field: String,
    /// What was found and what became of it, starting with the value where there is one.
    pub detail: String,
    pub outcome: Outcome,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.object)?;
        match (self.field.is_empty(), self.detail.is_empty()) {
            (false, false) => write!(f, "{} {}", self.field, self.detail)?,
            (false, true) => f.write_str(&self.field)?,
            (true, _) => f.write_str(&self.detail)?,
        }
        write!(f, " ({})", self.outcome.as_str())
    }
}

/// What the FerroLB output holds, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub pools: usize,
    pub advertisements: usize,
    pub peers: usize,
    pub bgp_advertisements: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn push(
        &mut self,
        object: &ObjectRef,
        field: impl Into<String>,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        self.entries.push(Entry {
            object: object.clone(),
            field: field.into(),
            detail: detail.into(),
            outcome,
        });
    }

    pub fn extend(&mut self, other: Report) {
        self.entries.extend(other.entries);
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.entries.iter().filter(|e| e.outcome == outcome).count()
    }

    /// Whether everything of MetalLB's configuration made it into the output.
    pub fn complete(&self) -> bool {
        self.count(Outcome::NotCarriedOver) == 0
    }

    /// The report lines, then a summary.
    pub fn render(&self, written: Written) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            out.push_str(&entry.to_string());
            out.push('\n');
        }
        out.push_str(&summary(self, written));
        out
    }
}

/// `base.key`, or `key` alone at the top.
pub fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

/// A value as it appears in a line: JSON, with secrets left out and long values cut.
pub fn quote(value: &Value) -> String {
    let text = serde_json::to_string(&redacted(value)).unwrap_or_default();
    if text.chars().count() > MAX_QUOTED {
        let cut: String = text.chars().take(MAX_QUOTED).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// A field's value as it appears in a line: [`quote`], or nothing at all for a password.
pub fn quote_field(key: &str, value: &Value) -> String {
    if is_secret(key) {
        "(value not shown)".to_owned()
    } else {
        quote(value)
    }
}

/// BGP passwords must not end up in a terminal or a CI log.
fn is_secret(key: &str) -> bool {
    key.eq_ignore_ascii_case("password")
}

fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if is_secret(k) {
                        Value::String("(not shown)".to_owned())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

fn summary(report: &Report, written: Written) -> String {
    let mut out = format!(
        "Summary: wrote {}, {}, {} and {}; {}, {} changed, {} not carried over.\n",
        plural(written.pools, "IPAddressPool", "IPAddressPools"),
        plural(
            written.advertisements,
            "L2Advertisement",
            "L2Advertisements"
        ),
        plural(written.peers, "BGPPeer", "BGPPeers"),
        plural(
            written.bgp_advertisements,
            "BGPAdvertisement",
            "BGPAdvertisements"
        ),
        plural(
            report.count(Outcome::Converted),
            "field converted",
            "fields converted"
        ),
        report.count(Outcome::Changed),
        report.count(Outcome::NotCarriedOver),
    );
    let keys: Vec<String> = ServiceAnnotation::ALL
        .iter()
        .map(|a| format!("{}{}", ACCEPTED_PREFIXES[1], a.suffix()))
        .collect();
    let legacy = ACCEPTED_PREFIXES[2];
    out.push_str(&format!(
        "Services need no change: FerroLB reads MetalLB's annotations {} and their {legacy} forms.\n",
        keys.join(", ")
    ));
    if !report.complete() {
        out.push_str(
            "Some of MetalLB's configuration was not carried over (lines marked \"not carried over\"); review them before removing MetalLB.\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_object_field_and_outcome() {
        let object = ObjectRef::new("IPAddressPool", Some("metallb-system"), "lan");
        let mut report = Report::default();
        report.push(
            &object,
            "spec.addresses[1]",
            Outcome::Changed,
            "\"198.51.100.7/24\" has host bits set",
        );
        report.push(&object, "", Outcome::NotCarriedOver, "has no addresses");
        let text = report.render(Written::default());
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "IPAddressPool metallb-system/lan: spec.addresses[1] \"198.51.100.7/24\" has host bits set (changed)"
            )
        );
        assert_eq!(
            lines.next(),
            Some("IPAddressPool metallb-system/lan: has no addresses (not carried over)")
        );
        assert!(text.contains("Services need no change"));
        assert!(text.contains("metallb.io/address-pool"));
        assert!(!report.complete());
    }

    #[test]
    fn passwords_are_never_quoted() {
        let spec = serde_json::json!({
            "myASN": 64500,
            "password": "hunter2",
            "nodeSelectors": [{"matchLabels": {"password": "x"}}]
        });
        let quoted = quote(&spec);
        assert!(
            !quoted.contains("hunter2") && !quoted.contains("\"x\""),
            "{quoted}"
        );
        assert!(quoted.contains("\"myASN\":64500"), "{quoted}");
        assert_eq!(
            quote_field("Password", &serde_json::json!("hunter2")),
            "(value not shown)"
        );
        assert_eq!(quote_field("peerASN", &serde_json::json!(1)), "1");
    }

    #[test]
    fn long_values_are_cut() {
        let long = Value::String("x".repeat(500));
        assert!(quote(&long).chars().count() <= MAX_QUOTED + 1);
    }

    #[test]
    fn objects_without_namespace_show_only_the_name() {
        let object = ObjectRef::new("L2Advertisement", None, "all");
        assert_eq!(object.to_string(), "L2Advertisement all");
    }
}
