//! Write semantics shared by every type: create, update (main resource and
//! status subresource), delete with finalizers, namespace and owner cascades,
//! generation bumps, and the type-specific admission hooks.

use serde_json::{Value, json};

use super::crd;
use super::error::{ApiError, ApiResult, Cause};
use super::events::{self, EventApi};
use super::resources::ResourceType;
use super::service;
use super::store::{StoreState, meta_str};
use super::validation::{NameRule, validate_metadata};

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix(state: &mut StoreState) -> String {
    // kube-apiserver's alphabet for generateName suffixes: no vowels, no 0/1/3.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uid = state.new_uid();
    let seed = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    }) ^ jiff::Timestamp::now().as_nanosecond() as u64;
    (0..5)
        .map(|i| ALPHABET[((seed >> (i * 8)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn name_rule(rt: &ResourceType) -> NameRule {
    if EventApi::of(rt) == Some(EventApi::Core) {
        return NameRule::PathSegment;
    }
    if rt.group.is_empty() && matches!(rt.plural.as_str(), "services" | "namespaces") {
        NameRule::Label
    } else {
        NameRule::Subdomain
    }
}

fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&rt.kind, &rt.group, name, causes)
}

fn ensure_object(body: &Value) -> ApiResult<()> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ))
    }
}

/// Whether kube-apiserver keeps `metadata.generation` for the type: custom resources, CRDs and
/// the workload-like built-ins do; most core types (Services, ConfigMaps, Namespaces, Nodes,
/// Leases, Events, ...) carry none.
fn has_generation(rt: &ResourceType) -> bool {
    rt.custom.is_some()
        || matches!(
            (rt.group.as_str(), rt.plural.as_str()),
            ("apiextensions.k8s.io", "customresourcedefinitions")
                | ("apps", _)
                | ("batch", _)
                | ("discovery.k8s.io", "endpointslices")
                | ("", "pods")
        )
}

/// The object kube-apiserver compares to decide whether `generation` moves:
/// `spec` when the type has one, else everything but metadata and status.
fn generation_subject(object: &Value) -> Value {
    if let Some(spec) = object.get("spec") {
        return spec.clone();
    }
    let mut rest = object.as_object().cloned().unwrap_or_default();
    for key in ["metadata", "status", "apiVersion", "kind"] {
        rest.remove(key);
    }
    Value::Object(rest)
}

/// Drops a namespaced type's status on create, as kube-apiserver's
/// PrepareForCreate does for the types that have a status subresource.
fn reset_status_on_create(rt: &ResourceType, object: &mut Value) {
    if !rt.has_status {
        return;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => object["status"] = json!({"phase": "Active"}),
        ("", "services") => object["status"] = json!({"loadBalancer": {}}),
        ("", "nodes") | ("", "pods") => {}
        _ => {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
    }
}

/// Standard base64 with padding, as Kubernetes JSON carries bytes.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Secrets: `stringData` is write-only and folds into base64 `data`.
fn fold_secret_string_data(rt: &ResourceType, object: &mut Value) {
    if !(rt.group.is_empty() && rt.plural == "secrets") {
        return;
    }
    let Some(string_data) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in string_data.as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        object["data"][key] = json!(base64_encode(text.as_bytes()));
    }
}

/// The `fieldValidation` query parameter: what to do about fields a custom
/// resource's schema does not declare (they are pruned either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Per-request admission settings, and the warnings admission produced
/// (sent back as `Warning` headers).
#[derive(Debug, Default)]
pub struct Admission {
    pub field_validation: FieldValidation,
    pub warnings: Vec<String>,
    /// The object is the result of a merge, JSON or strategic patch: kube-apiserver reports a
    /// strict-validation failure of a patch as 422 on the field `patch`, not as a 400 decoding
    /// error of the body.
    pub patched: bool,
}

/// Fields the type does not have, dropped from `object`, reported as `fieldValidation` asks:
/// not at all, as warnings, or as an error. kube-apiserver checks a patch after applying it, so
/// a patch is refused with 422 on the field `patch`, a body with a 400 decoding error.
fn screen_unknown_fields(
    admission: &mut Admission,
    unknown_fields: &[String],
    object: &Value,
) -> ApiResult<()> {
    let unknown = unknown_fields
        .iter()
        .map(|field| format!("unknown field \"{field}\""));
    match admission.field_validation {
        FieldValidation::Ignore => Ok(()),
        FieldValidation::Warn => {
            admission.warnings.extend(unknown);
            Ok(())
        }
        FieldValidation::Strict => {
            let unknown: Vec<String> = unknown.collect();
            if unknown.is_empty() {
                return Ok(());
            }
            let problem = format!("strict decoding error: {}", unknown.join(", "));
            if admission.patched {
                return Err(ApiError::invalid(
                    "",
                    "",
                    "",
                    vec![Cause::invalid(
                        "patch",
                        format!("Invalid value: {:?}: {problem}", object.to_string()),
                    )],
                ));
            }
            Err(ApiError::bad_request(problem))
        }
    }
}

fn custom_admission(
    state: &StoreState,
    rt: &ResourceType,
    object: &Value,
    old: Option<&Value>,
    admission: &mut Admission,
) -> ApiResult<Value> {
    let Some(info) = &rt.custom else {
        return Ok(object.clone());
    };
    // Look up the current definition: the caller's copy may predate a CRD update.
    let info = state
        .registry
        .find(&rt.group, &rt.version, &rt.plural)
        .and_then(|t| t.custom.clone())
        .unwrap_or_else(|| info.clone());
    let admitted = crd::admit_custom_resource(&info, object, old)
        .map_err(|causes| invalid(rt, meta_str(object, "name"), causes))?;
    screen_unknown_fields(admission, &admitted.pruned_fields, object)?;
    Ok(admitted.object)
}

/// Events arrive in either API's form and are kept in the core form, as
/// kube-apiserver keeps them; fields the API does not have are dropped, and
/// reported as `fieldValidation` asks.
fn event_to_storage(api: EventApi, object: &Value, admission: &mut Admission) -> ApiResult<Value> {
    let incoming = events::to_storage(api, object).map_err(ApiError::bad_request)?;
    screen_unknown_fields(admission, &incoming.unknown_fields, object)?;
    Ok(incoming.stored)
}

fn validate_event(
    rt: &ResourceType,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let Some(api) = EventApi::of(rt) else {
        return Ok(());
    };
    let causes = events::validate(api, object, old);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(rt, name, causes))
    }
}

pub fn create(
    state: &mut StoreState,
    rt: &ResourceType,
    namespace: &str,
    mut object: Value,
    admission: &mut Admission,
) -> ApiResult<Value> {
    ensure_object(&object)?;
    object["apiVersion"] = json!(rt.api_version());
    object["kind"] = json!(rt.kind);
    if let Some(api) = EventApi::of(rt) {
        object = event_to_storage(api, &object, admission)?;
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    if rt.namespaced {
        let body_namespace = meta_str(&object, "namespace");
        if !body_namespace.is_empty() && body_namespace != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if state.get("/namespaces", "", namespace).is_none() {
            return Err(ApiError::not_found("", "namespaces", namespace));
        }
        object["metadata"]["namespace"] = json!(namespace);
    } else if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("namespace");
    }
    if meta_str(&object, "name").is_empty() {
        let prefix = meta_str(&object, "generateName").to_string();
        if prefix.is_empty() {
            return Err(invalid(
                rt,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        let name = format!("{prefix}{}", random_suffix(state));
        object["metadata"]["name"] = json!(name);
    }
    let name = meta_str(&object, "name").to_string();
    let causes = validate_metadata(&object, name_rule(rt));
    if !causes.is_empty() {
        return Err(invalid(rt, &name, causes));
    }
    validate_event(rt, &name, &object, None)?;
    if state
        .get(&rt.storage_key(), namespace_of(rt, namespace), &name)
        .is_some()
    {
        return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
    }
    let uid = state.new_uid();
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if has_generation(rt) {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
        for transient in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            metadata.remove(transient);
        }
    }
    reset_status_on_create(rt, &mut object);
    fold_secret_string_data(rt, &mut object);
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => service::prepare_create(&mut state.allocators, &mut object)
            .map_err(|causes| invalid(rt, &name, causes))?,
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let causes = crd::validate_crd(&object, None);
            if !causes.is_empty() {
                return Err(invalid(rt, &name, causes));
            }
            object["status"] = crd::established_status(&object, &now_rfc3339());
            state
                .registry
                .set_custom_types(&name, crd::types_of(&object));
        }
        _ => object = custom_admission(state, rt, &object, None, admission)?,
    }
    let created = state.put(&rt.storage_key(), object);
    if rt.group.is_empty() && rt.plural == "namespaces" {
        populate_namespace(state, &name);
    }
    Ok(created)
}

/// What kube-controller-manager puts in every new namespace at once: the `default`
/// ServiceAccount and the `kube-root-ca.crt` ConfigMap. Tests and components meet them on every
/// real cluster, so they are here too.
fn populate_namespace(state: &mut StoreState, namespace: &str) {
    const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
    let objects = [
        ("serviceaccounts", json!({"metadata": {"name": "default"}})),
        (
            "configmaps",
            // The double serves plain HTTP: there is no CA, so the bundle is empty.
            json!({"metadata": {"name": "kube-root-ca.crt",
                                "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                   "data": {"ca.crt": ""}}),
        ),
    ];
    for (plural, object) in objects {
        if let Some(rt) = state.registry.find("", "v1", plural).cloned() {
            let _ = create(state, &rt, namespace, object, &mut Admission::default());
        }
    }
}

fn namespace_of<'a>(rt: &ResourceType, namespace: &'a str) -> &'a str {
    if rt.namespaced { namespace } else { "" }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTarget {
    Main,
    Status,
}

pub fn update(
    state: &mut StoreState,
    rt: &ResourceType,
    namespace: &str,
    name: &str,
    mut object: Value,
    target: WriteTarget,
    admission: &mut Admission,
) -> ApiResult<Value> {
    ensure_object(&object)?;
    let namespace = namespace_of(rt, namespace);
    let storage_key = rt.storage_key();
    let Some(old) = state.get(&storage_key, namespace, name).cloned() else {
        return Err(ApiError::not_found(&rt.group, &rt.plural, name));
    };
    let body_name = meta_str(&object, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let requested_rv = meta_str(&object, "resourceVersion");
    if !requested_rv.is_empty() && requested_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let body_uid = meta_str(&object, "uid");
    if !body_uid.is_empty() && body_uid != meta_str(&old, "uid") {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "Precondition failed: UID in precondition does not match the UID in object",
        ));
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    if target == WriteTarget::Status {
        let mut merged = old.clone();
        merged["status"] = object.get("status").cloned().unwrap_or(Value::Null);
        if merged["status"].is_null()
            && let Some(map) = merged.as_object_mut()
        {
            map.remove("status");
        }
        object = merged;
    } else if rt.has_status {
        match old.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    object["apiVersion"] = json!(rt.api_version());
    object["kind"] = json!(rt.kind);
    if let Some(api) = EventApi::of(rt) {
        object = event_to_storage(api, &object, admission)?;
    }
    for immutable in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old["metadata"].get(immutable) {
            Some(value) => object["metadata"][immutable] = value.clone(),
            None => {
                if let Some(metadata) = object["metadata"].as_object_mut() {
                    metadata.remove(immutable);
                }
            }
        }
    }
    // An Event's name was checked on create, by the rule of the API it was
    // created through; the other API must still be able to update it.
    let rule = if EventApi::of(rt).is_some() {
        NameRule::PathSegment
    } else {
        name_rule(rt)
    };
    let causes = validate_metadata(&object, rule);
    if !causes.is_empty() {
        return Err(invalid(rt, name, causes));
    }
    validate_event(rt, name, &object, Some(&old))?;
    fold_secret_string_data(rt, &mut object);
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => {
            if target == WriteTarget::Main {
                service::drop_load_balancer_status_if_retyped(&old, &mut object);
            }
            let causes = service::validate_status(&object);
            if !causes.is_empty() {
                return Err(invalid(rt, name, causes));
            }
            if target == WriteTarget::Main {
                service::prepare_update(&mut state.allocators, &old, &mut object)
                    .map_err(|causes| invalid(rt, name, causes))?;
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") if target == WriteTarget::Main => {
            let causes = crd::validate_crd(&object, Some(&old));
            if !causes.is_empty() {
                return Err(invalid(rt, name, causes));
            }
            object["status"] = crd::established_status(&object, &now_rfc3339());
            state
                .registry
                .set_custom_types(name, crd::types_of(&object));
        }
        _ => object = custom_admission(state, rt, &object, Some(&old), admission)?,
    }
    if !has_generation(rt) {
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("generation");
        }
    } else if generation_subject(&object) != generation_subject(&old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
    }
    if object == old {
        return Ok(old);
    }
    let deleting = !old["metadata"]["deletionTimestamp"].is_null();
    let finalizers_left = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if deleting && !finalizers_left {
        state.put(&storage_key, object);
        return remove_now(state, rt, namespace, name);
    }
    Ok(state.put(&storage_key, object))
}

/// Options of a delete request that change what happens.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub orphan_dependents: bool,
}

pub fn delete(
    state: &mut StoreState,
    rt: &ResourceType,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> ApiResult<Value> {
    let namespace = namespace_of(rt, namespace);
    let storage_key = rt.storage_key();
    let Some(mut object) = state.get(&storage_key, namespace, name).cloned() else {
        return Err(ApiError::not_found(&rt.group, &rt.plural, name));
    };
    if let Some(uid) = &options.precondition_uid
        && uid != meta_str(&object, "uid")
    {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&object, "uid")
            ),
        ));
    }
    if let Some(rv) = &options.precondition_resource_version
        && rv != meta_str(&object, "resourceVersion")
    {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let has_finalizers = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if object["metadata"]["deletionTimestamp"].is_null() {
            object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return Ok(state.put(&storage_key, object));
        }
        return Ok(object);
    }
    if options.orphan_dependents {
        return state
            .remove(&storage_key, namespace, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name));
    }
    remove_now(state, rt, namespace, name)
}

/// Removes an object whose finalizers are done, then cascades: service
/// allocations, a CRD's resources, a namespace's contents, and dependents
/// found through ownerReferences (background propagation).
fn remove_now(
    state: &mut StoreState,
    rt: &ResourceType,
    namespace: &str,
    name: &str,
) -> ApiResult<Value> {
    let Some(removed) = state.remove(&rt.storage_key(), namespace, name) else {
        return Err(ApiError::not_found(&rt.group, &rt.plural, name));
    };
    let mut doomed: Vec<(String, String, String)> = Vec::new();
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => service::release(&mut state.allocators, &removed),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let group = removed["spec"]["group"].as_str().unwrap_or_default();
            let plural = removed["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default();
            let key = format!("{group}/{plural}");
            doomed.extend(state.list(&key, None).map(|o| {
                (
                    key.clone(),
                    meta_str(o, "namespace").to_string(),
                    meta_str(o, "name").to_string(),
                )
            }));
            // The resources go first, while their type is still known.
            for (key, ns, object_name) in std::mem::take(&mut doomed) {
                state.remove(&key, &ns, &object_name);
            }
            state.registry.set_custom_types(name, Vec::new());
        }
        ("", "namespaces") => {
            doomed.extend(
                state
                    .all_objects()
                    .filter(|(_, o)| meta_str(o, "namespace") == name)
                    .map(|(key, o)| {
                        (
                            key.clone(),
                            name.to_string(),
                            meta_str(o, "name").to_string(),
                        )
                    }),
            );
        }
        _ => {}
    }
    let uid = meta_str(&removed, "uid").to_string();
    doomed.extend(
        state
            .all_objects()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .map(|(key, o)| {
                (
                    key.clone(),
                    meta_str(o, "namespace").to_string(),
                    meta_str(o, "name").to_string(),
                )
            }),
    );
    for (key, ns, dependent) in doomed {
        let Some(dependent_type) = state.registry.find_by_storage_key(&key).cloned() else {
            state.remove(&key, &ns, &dependent);
            continue;
        };
        // A dependent already gone (e.g. through another owner) is fine.
        let _ = delete(
            state,
            &dependent_type,
            &ns,
            &dependent,
            &DeleteOptions::default(),
        );
    }
    Ok(removed)
}

/// Pre-creates the namespaces every cluster has.
pub fn seed(state: &mut StoreState) {
    let namespaces = state.registry.find("", "v1", "namespaces").cloned();
    if let Some(rt) = namespaces {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = create(
                state,
                &rt,
                "",
                json!({"metadata": {"name": name}}),
                &mut Admission::default(),
            );
        }
    }
}

/// Converts a stored object to the version a request asked for. Versions
/// of one type share storage and differ only in `apiVersion` here, except
/// Events, which are converted field by field (see [`events`]).
pub fn as_version(rt: &ResourceType, mut object: Value) -> Value {
    if EventApi::of(rt) == Some(EventApi::EventsV1) {
        return events::to_api(EventApi::EventsV1, &object);
    }
    object["apiVersion"] = json!(rt.api_version());
    object
}

#[cfg(test)]
mod tests {
    use super::base64_encode;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"value"), "dmFsdWU=");
    }
}
