//! Registry of served resource types (built-in and CRD-defined) and the
//! discovery documents derived from it.

use serde_json::{Value, json};

use super::events::EventApi;

/// What the double knows about one CRD-defined type.
#[derive(Debug, Clone, Default)]
pub struct CustomTypeInfo {
    /// `openAPIV3Schema` of the served version.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns` of the served version.
    pub printer_columns: Vec<Value>,
    /// Name of the CRD that defines the type, to drop the type with it.
    pub crd_name: String,
}

/// One resource type as served at `/api/v1` or `/apis/<group>/<version>`.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub has_status: bool,
    pub custom: Option<CustomTypeInfo>,
}

impl ResourceType {
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
        has_status: bool,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            has_status,
            custom: None,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key under which objects are stored: versions of one type share
    /// storage, and so do core and events.k8s.io Events, as in kube-apiserver.
    pub fn storage_key(&self) -> String {
        if EventApi::of(self).is_some() {
            return "/events".into();
        }
        format!("{}/{}", self.group, self.plural)
    }

    pub fn is_core_event(&self) -> bool {
        self.group.is_empty() && self.plural == "events"
    }

    fn api_resource_entries(&self) -> Vec<Value> {
        let mut entries = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        if self.has_status {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }
}

pub fn builtin_types() -> Vec<ResourceType> {
    let mut types = vec![
        ResourceType::builtin("", "v1", "namespaces", "Namespace", false, &["ns"], true),
        ResourceType::builtin("", "v1", "services", "Service", true, &["svc"], true),
        ResourceType::builtin("", "v1", "nodes", "Node", false, &["no"], true),
        ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
        ResourceType::builtin("", "v1", "secrets", "Secret", true, &[], false),
        ResourceType::builtin("", "v1", "pods", "Pod", true, &["po"], true),
        ResourceType::builtin("", "v1", "events", "Event", true, &["ev"], false),
        ResourceType::builtin("", "v1", "endpoints", "Endpoints", true, &["ep"], false),
        ResourceType::builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        ),
        ResourceType::builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
        ),
        ResourceType::builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
            false,
        ),
        ResourceType::builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
        ),
        // Stored only (no controllers act on them), so manifests that ship
        // them alongside FerroLB's own apply cleanly.
        ResourceType::builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
        ),
        ResourceType::builtin("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
        ),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
        ),
    ];
    for t in &mut types {
        if t.group.is_empty() && matches!(t.plural.as_str(), "services" | "pods") {
            t.categories = vec!["all".into()];
        }
    }
    types
}

/// The set of served types, built-ins first, then CRD-defined ones.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            types: builtin_types(),
        }
    }
}

impl Registry {
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    pub fn find_by_storage_key(&self, key: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.storage_key() == key)
    }

    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// Replaces every type defined by the named CRD with `new_types`.
    pub fn set_custom_types(&mut self, crd_name: &str, new_types: Vec<ResourceType>) {
        self.types.retain(|t| {
            t.custom
                .as_ref()
                .is_none_or(|custom| custom.crd_name != crd_name)
        });
        self.types.extend(new_types);
    }

    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        groups
    }

    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(group, versions)| group_document(&group, &versions))
            .collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    pub fn api_group(&self, group: &str) -> Option<Value> {
        self.groups()
            .into_iter()
            .find(|(g, _)| g == group)
            .map(|(group, versions)| {
                let mut doc = group_document(&group, &versions);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                doc
            })
    }

    pub fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let resources: Vec<Value> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(ResourceType::api_resource_entries)
            .collect();
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

fn group_document(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}
