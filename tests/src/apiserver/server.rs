//! HTTP routing and request handling.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Shared;
use super::apply;
use super::error::{ApiError, ApiResult};
use super::events::EventApi;
use super::objects::{self, Admission, DeleteOptions, FieldValidation, WriteTarget, now_rfc3339};
use super::patch;
use super::protobuf;
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{EventType, StoreState, StoredEvent, meta_str};
use super::table;

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { handle(shared, method, uri, headers, body).await }
        },
    )
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds admission warnings as `Warning` headers, which kubectl prints.
fn with_warnings(mut response: Response<Body>, admission: &Admission) -> Response<Body> {
    for warning in &admission.warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn error_response(err: &ApiError) -> Response<Body> {
    let mut response = json_response(err.code, &err.status_body());
    if let Some(seconds) = err.retry_after_seconds
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn lock_state(shared: &Shared) -> std::sync::MutexGuard<'_, StoreState> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request for objects of one type.
#[derive(Debug, Clone)]
struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    Health,
    OpenApiV2,
    OpenApiV3,
    Metrics,
    Counters,
    Resource(ResourcePath),
    NotFound,
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Route {
    let owned = |s: &&str| s.to_string();
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        group: group.into(),
        version: version.into(),
        plural: rest[0].into(),
        namespace,
        name: rest.get(1).map(owned),
        subresource: rest.get(2).map(owned),
    })
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["metrics"] => Route::Metrics,
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3,
        ["debug", "counters"] => Route::Counters,
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::ResourceList(String::new(), "v1".into()),
        ["api", "v1", rest @ ..] => parse_resource_path("", "v1", rest),
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::ResourceList(group.to_string(), version.to_string()),
        ["apis", group, version, rest @ ..] => parse_resource_path(group, version, rest),
        _ => Route::NotFound,
    }
}

fn not_found_route() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn query_params(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn verb_of(method: &Method, path: &ResourcePath, params: &HashMap<String, String>) -> &'static str {
    let watch = params
        .get("watch")
        .is_some_and(|w| matches!(w.as_str(), "true" | "1"));
    match (method.as_str(), path.name.is_some()) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let params = query_params(&uri);
    match route(uri.path()) {
        Route::Version => json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-ferrolb-double",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                "platform": "linux/amd64"}),
        ),
        Route::Health => {
            let mut response = Response::new(Body::from("ok"));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        // kubectl validates against OpenAPI when it can download it. An
        // empty v3 index and an empty (zero-byte protobuf) v2 document carry
        // no schemas, so kubectl skips schema validation.
        Route::OpenApiV3 => json_response(200, &json!({"paths": {}})),
        Route::OpenApiV2 => {
            let mut response = Response::new(Body::empty());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Route::Metrics => {
            let mut response = Response::new(Body::from(shared.counters.render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        Route::Counters => {
            let counts: Vec<Value> = shared
                .counters
                .snapshot()
                .into_iter()
                .map(|((verb, resource), count)| json!({"verb": verb, "resource": resource, "count": count}))
                .collect();
            json_response(200, &json!({ "counters": counts }))
        }
        // Answering discovery in the legacy format (content type
        // application/json) makes kubectl fall back from aggregated discovery.
        Route::CoreVersions => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.address.to_string()}]}),
        ),
        Route::Groups => json_response(200, &lock_state(&shared).registry.api_group_list()),
        Route::Group(group) => match lock_state(&shared).registry.api_group(&group) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&not_found_route()),
        },
        Route::ResourceList(group, version) => {
            match lock_state(&shared)
                .registry
                .api_resource_list(&group, &version)
            {
                Some(doc) => json_response(200, &doc),
                None => error_response(&not_found_route()),
            }
        }
        Route::NotFound => error_response(&not_found_route()),
        Route::Resource(path) => {
            let verb = verb_of(&method, &path, &params);
            let resource = match &path.subresource {
                Some(sub) => format!("{}/{sub}", path.plural),
                None => path.plural.clone(),
            };
            shared.counters.record(verb, &resource);
            let latency = shared.faults.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if let Some(err) = shared.faults.error_for(verb, &resource) {
                return error_response(&err);
            }
            let request = Request {
                verb,
                path,
                params,
                headers,
                body,
            };
            match handle_resource(&shared, request) {
                Ok(reply) => reply,
                Err(err) => error_response(&err),
            }
        }
    }
}

struct Request {
    verb: &'static str,
    path: ResourcePath,
    params: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn wants_table(&self) -> bool {
        table::wants_table(self.header(header::ACCEPT))
    }

    fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or_default()
    }

    fn content_type(&self) -> String {
        self.header(header::CONTENT_TYPE)
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_lowercase()
    }

    fn body_value(&self) -> ApiResult<Value> {
        let content_type = self.content_type();
        if content_type == "application/vnd.kubernetes.protobuf"
            && protobuf::is_protobuf(&self.body)
        {
            return protobuf::decode(&self.body);
        }
        if content_type.contains("yaml") {
            let text = std::str::from_utf8(&self.body)
                .map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
            return serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
        }
        if !content_type.is_empty() && !content_type.contains("json") {
            return Err(ApiError::unsupported_media_type(&content_type));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }

    fn admission(&self) -> ApiResult<Admission> {
        let field_validation = match self.param("fieldValidation") {
            None | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of Ignore, Warn or Strict, got {other}"
                )));
            }
        };
        Ok(Admission {
            field_validation,
            warnings: Vec::new(),
            patched: false,
        })
    }

    fn target(&self) -> ApiResult<WriteTarget> {
        match self.path.subresource.as_deref() {
            None => Ok(WriteTarget::Main),
            Some("status") => Ok(WriteTarget::Status),
            Some(other) => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({other})"),
            )),
        }
    }
}

fn handle_resource(shared: &Arc<Shared>, request: Request) -> ApiResult<Response<Body>> {
    let rt = {
        let state = lock_state(shared);
        state
            .registry
            .find(
                &request.path.group,
                &request.path.version,
                &request.path.plural,
            )
            .cloned()
    }
    .ok_or_else(not_found_route)?;
    if request.path.namespace.is_some() && !rt.namespaced {
        return Err(not_found_route());
    }
    if rt.namespaced
        && request.path.namespace.is_none()
        && !matches!(request.verb, "list" | "watch")
    {
        return Err(not_found_route());
    }
    if let Some(sub) = &request.path.subresource
        && !(sub == "status" && rt.has_status)
    {
        return Err(not_found_route());
    }
    if request.param("dryRun").is_some() {
        // Refusing is safer than writing for real when a client asked not to.
        return Err(ApiError::bad_request(
            "dryRun is not supported by the API server double",
        ));
    }
    match request.verb {
        "get" => get(shared, &rt, &request),
        "list" => list(shared, &rt, &request),
        "watch" => watch(shared, &rt, &request),
        "create" => {
            if request.path.name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "POST is not allowed on a named object",
                ));
            }
            let body = request.body_value()?;
            let mut admission = request.admission()?;
            let mut state = lock_state(shared);
            let created =
                objects::create(&mut state, &rt, request.namespace(), body, &mut admission)?;
            let created = objects::as_version(&rt, created);
            Ok(with_warnings(json_response(201, &created), &admission))
        }
        "update" => {
            let body = request.body_value()?;
            let target = request.target()?;
            let mut admission = request.admission()?;
            let mut state = lock_state(shared);
            if EventApi::of(&rt).is_some()
                && state
                    .get(&rt.storage_key(), request.namespace(), request.name())
                    .is_none()
            {
                return create_on_update(&mut state, &rt, &request, body, &mut admission);
            }
            let updated = objects::update(
                &mut state,
                &rt,
                request.namespace(),
                request.name(),
                body,
                target,
                &mut admission,
            )?;
            let updated = objects::as_version(&rt, updated);
            Ok(with_warnings(json_response(200, &updated), &admission))
        }
        "patch" => patch_object(shared, &rt, &request),
        "delete" => {
            let options = delete_options(&request)?;
            let mut state = lock_state(shared);
            let deleted = objects::delete(
                &mut state,
                &rt,
                request.namespace(),
                request.name(),
                &options,
            )?;
            Ok(json_response(200, &objects::as_version(&rt, deleted)))
        }
        "deletecollection" => {
            let selectors = Selectors::from_request(&rt, &request)?;
            let options = delete_options(&request)?;
            let mut state = lock_state(shared);
            let names: Vec<(String, String)> = state
                .list(&rt.storage_key(), request.path.namespace.as_deref())
                .filter(|o| selectors.matches(o))
                .map(|o| {
                    (
                        meta_str(o, "namespace").to_string(),
                        meta_str(o, "name").to_string(),
                    )
                })
                .collect();
            let mut deleted = Vec::new();
            for (namespace, name) in names {
                if let Ok(object) = objects::delete(&mut state, &rt, &namespace, &name, &options) {
                    deleted.push(objects::as_version(&rt, object));
                }
            }
            let rv = state.current_resource_version().to_string();
            Ok(json_response(
                200,
                &list_document(&rt, deleted, json!({"resourceVersion": rv})),
            ))
        }
        _ => Err(ApiError::method_not_allowed("method not allowed")),
    }
}

/// Events may be created by a PUT (kube-apiserver's event strategy allows
/// create on update); the URL names the new Event.
fn create_on_update(
    state: &mut StoreState,
    rt: &ResourceType,
    request: &Request,
    mut body: Value,
    admission: &mut Admission,
) -> ApiResult<Response<Body>> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
    if !body_name.is_empty() && body_name != request.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            request.name()
        )));
    }
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    body["metadata"]["name"] = json!(request.name());
    let created = objects::create(state, rt, request.namespace(), body, admission)?;
    let created = objects::as_version(rt, created);
    Ok(with_warnings(json_response(201, &created), admission))
}

fn delete_options(request: &Request) -> ApiResult<DeleteOptions> {
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = request
        .param("propagationPolicy")
        .map(str::to_string)
        .or_else(|| body["propagationPolicy"].as_str().map(str::to_string));
    let orphan = policy.as_deref() == Some("Orphan") || body["orphanDependents"] == true;
    Ok(DeleteOptions {
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        precondition_resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        orphan_dependents: orphan,
    })
}

fn get(shared: &Shared, rt: &ResourceType, request: &Request) -> ApiResult<Response<Body>> {
    let state = lock_state(shared);
    let namespace = if rt.namespaced {
        request.namespace()
    } else {
        ""
    };
    let object = state
        .get(&rt.storage_key(), namespace, request.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, request.name()))?;
    let object = objects::as_version(rt, object);
    if request.wants_table() {
        let metadata = json!({"resourceVersion": meta_str(&object, "resourceVersion")});
        return Ok(json_response(200, &table::table(rt, &[object], metadata)));
    }
    Ok(json_response(200, &object))
}

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn from_request(rt: &ResourceType, request: &Request) -> ApiResult<Self> {
        Ok(Self {
            labels: LabelSelector::parse(request.param("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(
                request.param("fieldSelector").unwrap_or_default(),
                &rt.group,
                &rt.plural,
            )?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

fn list_document(rt: &ResourceType, items: Vec<Value>, metadata: Value) -> Value {
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

/// Continue tokens name the last (namespace, name) returned, hex-encoded.
fn encode_continue(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    let invalid = || ApiError::bad_request("continue key is not valid");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (namespace, name) = text.split_once('/').ok_or_else(invalid)?;
    Ok((namespace.to_string(), name.to_string()))
}

fn list(shared: &Shared, rt: &ResourceType, request: &Request) -> ApiResult<Response<Body>> {
    let selectors = Selectors::from_request(rt, request)?;
    let limit = match request.param("limit") {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {text}")))?,
        None => 0,
    };
    let after = request.param("continue").map(decode_continue).transpose()?;
    let state = lock_state(shared);
    let mut matching = state
        .list(&rt.storage_key(), request.path.namespace.as_deref())
        .filter(|o| {
            after.as_ref().is_none_or(|(ns, name)| {
                (meta_str(o, "namespace"), meta_str(o, "name")) > (ns.as_str(), name.as_str())
            })
        })
        .filter(|o| selectors.matches(o));
    let mut items: Vec<Value> = Vec::new();
    let mut more = false;
    for object in matching.by_ref() {
        if limit > 0 && items.len() == limit {
            more = true;
            break;
        }
        items.push(objects::as_version(rt, object.clone()));
    }
    let remaining = if more { matching.count() + 1 } else { 0 };
    let mut metadata = json!({"resourceVersion": state.current_resource_version().to_string()});
    if more && let Some(last) = items.last() {
        metadata["continue"] = json!(encode_continue(
            meta_str(last, "namespace"),
            meta_str(last, "name")
        ));
        metadata["remainingItemCount"] = json!(remaining);
    }
    if request.wants_table() {
        return Ok(json_response(200, &table::table(rt, &items, metadata)));
    }
    Ok(json_response(200, &list_document(rt, items, metadata)))
}

fn patch_object(
    shared: &Shared,
    rt: &ResourceType,
    request: &Request,
) -> ApiResult<Response<Body>> {
    let content_type = request.content_type();
    let target = request.target()?;
    if content_type == "application/apply-patch+yaml" {
        return apply_object(shared, rt, request, target);
    }
    let patch_body: Value = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut state = lock_state(shared);
    let namespace = if rt.namespaced {
        request.namespace()
    } else {
        ""
    };
    let live = state
        .get(&rt.storage_key(), namespace, request.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, request.name()))?;
    // Patches apply to the object as the request's version serves it.
    let live = objects::as_version(rt, live);
    let patched = match content_type.as_str() {
        "application/merge-patch+json" => patch::merge_patch(&live, &patch_body),
        "application/json-patch+json" => patch::json_patch(&live, &patch_body)?,
        "application/strategic-merge-patch+json" => {
            if rt.custom.is_some() {
                return Err(ApiError::unsupported_media_type(&content_type));
            }
            patch::strategic_merge_patch(&live, &patch_body)
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let mut admission = request.admission()?;
    admission.patched = true;
    let updated = objects::update(
        &mut state,
        rt,
        namespace,
        request.name(),
        patched,
        target,
        &mut admission,
    )?;
    let updated = objects::as_version(rt, updated);
    Ok(with_warnings(json_response(200, &updated), &admission))
}

fn apply_object(
    shared: &Shared,
    rt: &ResourceType,
    request: &Request,
    target: WriteTarget,
) -> ApiResult<Response<Body>> {
    let manager = request.param("fieldManager").ok_or_else(|| {
        ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set")
    })?;
    let text = std::str::from_utf8(&request.body)
        .map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
    let applied: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    let applied_name = applied["metadata"]["name"].as_str().unwrap_or_default();
    if !applied_name.is_empty() && applied_name != request.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({applied_name}) does not match the name on the URL ({})",
            request.name()
        )));
    }
    let fields = apply::fields_of(&applied);
    let mut admission = request.admission()?;
    let api_version = rt.api_version();
    let mut state = lock_state(shared);
    let namespace = if rt.namespaced {
        request.namespace()
    } else {
        ""
    };
    let live = state
        .get(&rt.storage_key(), namespace, request.name())
        .cloned()
        .map(|live| objects::as_version(rt, live));
    let (code, stored) = match live {
        None => {
            if target == WriteTarget::Status {
                return Err(ApiError::not_found(&rt.group, &rt.plural, request.name()));
            }
            let mut object = applied.clone();
            if !object["metadata"].is_object() {
                object["metadata"] = json!({});
            }
            object["metadata"]["name"] = json!(request.name());
            apply::record_manager(&mut object, manager, &api_version, fields, &now_rfc3339());
            (
                201,
                objects::create(&mut state, rt, namespace, object, &mut admission)?,
            )
        }
        Some(live) => {
            let mut object = apply::apply_to(&live, &applied, manager);
            apply::record_manager(&mut object, manager, &api_version, fields, &now_rfc3339());
            (
                200,
                objects::update(
                    &mut state,
                    rt,
                    namespace,
                    request.name(),
                    object,
                    target,
                    &mut admission,
                )?,
            )
        }
    };
    let stored = objects::as_version(rt, stored);
    Ok(with_warnings(json_response(code, &stored), &admission))
}

/// What a watch sends for one stored event, after selector filtering:
/// changes that move an object in or out of the selection become ADDED or
/// DELETED, as kube-apiserver reports them.
fn translate_event(event: &StoredEvent, selectors: &Selectors) -> Option<EventType> {
    let now = selectors.matches(&event.object);
    match event.event_type {
        EventType::Added | EventType::Deleted => now.then_some(event.event_type),
        EventType::Modified => {
            let before = event
                .previous
                .as_ref()
                .is_some_and(|p| selectors.matches(p));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }
}

struct WatchStream {
    rt: ResourceType,
    namespace: Option<String>,
    selectors: Selectors,
    as_table: bool,
    columns_sent: bool,
    bookmarks: bool,
    last_resource_version: u64,
    sender: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

impl WatchStream {
    fn frame(value: &Value) -> Bytes {
        let mut bytes = serde_json::to_vec(value).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn render(&mut self, event_type: &str, object: Value) -> Bytes {
        let object = if self.as_table && event_type != "BOOKMARK" && event_type != "ERROR" {
            let metadata = json!({"resourceVersion": meta_str(&object, "resourceVersion")});
            let mut rendered = table::table(&self.rt, &[object], metadata);
            if self.columns_sent {
                rendered["columnDefinitions"] = json!([]);
            }
            self.columns_sent = true;
            rendered
        } else {
            object
        };
        Self::frame(&json!({"type": event_type, "object": object}))
    }

    async fn send(&mut self, event_type: &str, object: Value) -> bool {
        let frame = self.render(event_type, object);
        self.deliver(event_type, frame).await
    }

    /// Sends one frame and counts it in [`Shared::watch_events`].
    async fn deliver(&mut self, event_type: &str, frame: Bytes) -> bool {
        let sent = self.sender.send(frame).await.is_ok();
        if sent {
            self.shared.watch_events.record(event_type, &self.rt.plural);
        }
        sent
    }

    fn bookmark_object(&self, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": self.last_resource_version.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": metadata})
    }

    async fn send_stored(&mut self, event: &StoredEvent) -> bool {
        self.last_resource_version = self.last_resource_version.max(event.resource_version);
        if event.storage_key != self.rt.storage_key() {
            return true;
        }
        if let Some(ns) = &self.namespace
            && *ns != event.namespace
        {
            return true;
        }
        match translate_event(event, &self.selectors) {
            Some(kind)
                if kind == event.event_type
                    && !self.as_table
                    && event.object["apiVersion"] == self.rt.api_version().as_str() =>
            {
                self.deliver(kind.as_str(), event.frame()).await
            }
            Some(kind) => {
                let object = objects::as_version(&self.rt, event.object.clone());
                self.send(kind.as_str(), object).await
            }
            None => true,
        }
    }

    async fn send_gone(&mut self, message: &str) {
        let status = ApiError::gone(message).status_body();
        let _ = self.send("ERROR", status).await;
    }
}

fn gone_message(requested: u64, oldest: u64) -> String {
    format!("too old resource version: {requested} ({oldest})")
}

fn watch(shared: &Arc<Shared>, rt: &ResourceType, request: &Request) -> ApiResult<Response<Body>> {
    let selectors = Selectors::from_request(rt, request)?;
    let mut selectors_for_name = selectors;
    if let Some(name) = &request.path.name {
        // GET .../name?watch=true is a watch with a name field selector.
        let by_name =
            FieldSelector::parse(&format!("metadata.name={name}"), &rt.group, &rt.plural)?;
        selectors_for_name = Selectors {
            labels: selectors_for_name.labels,
            fields: by_name,
        };
    }
    let requested_rv = match request.param("resourceVersion") {
        None | Some("0") => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {text}")))?,
        ),
    };
    let send_initial = request.flag("sendInitialEvents");
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (sender, mut receiver) = mpsc::channel::<Bytes>(1024);
    let stream = WatchStream {
        rt: rt.clone(),
        namespace: request.path.namespace.clone(),
        selectors: selectors_for_name,
        as_table: request.wants_table(),
        columns_sent: false,
        bookmarks: request.flag("allowWatchBookmarks"),
        last_resource_version: 0,
        sender,
        shared: shared.clone(),
    };
    let forced_gone = shared.faults.take_forced_gone();
    let (initial, start) = {
        let state = lock_state(shared);
        let start = match (forced_gone, requested_rv, send_initial) {
            (true, _, _) => None,
            (false, Some(rv), false) => state.watch_from(rv),
            (false, _, _) => state.watch_from(state.current_resource_version()),
        };
        // Without a resourceVersion (or with sendInitialEvents) a watch
        // starts with the current state as ADDED events.
        let initial: Vec<Value> = if start.is_some() && (requested_rv.is_none() || send_initial) {
            state
                .list(&rt.storage_key(), request.path.namespace.as_deref())
                .filter(|o| stream.selectors.matches(o))
                .map(|o| objects::as_version(rt, o.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let oldest = state.compacted_resource_version();
        (initial, start.ok_or((requested_rv.unwrap_or(0), oldest)))
    };
    let closer = shared.faults.watch_closer();
    let bookmark_interval = shared.config.bookmark_interval;
    tokio::spawn(async move {
        run_watch(
            stream,
            initial,
            start,
            send_initial,
            closer,
            bookmark_interval,
            timeout,
        )
        .await;
    });
    let body_stream = futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|frame| frame.map(Ok::<Bytes, Infallible>))
    });
    let mut response = Response::new(Body::from_stream(body_stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Ok(response)
}

async fn run_watch(
    mut stream: WatchStream,
    initial: Vec<Value>,
    start: Result<super::store::WatchStart, (u64, u64)>,
    send_initial: bool,
    mut closer: tokio::sync::watch::Receiver<u64>,
    bookmark_interval: Duration,
    timeout: Duration,
) {
    let start = match start {
        Ok(start) => start,
        Err((requested, oldest)) => {
            stream.send_gone(&gone_message(requested, oldest)).await;
            return;
        }
    };
    stream.last_resource_version = start.current_resource_version;
    for object in initial {
        if !stream.send("ADDED", object).await {
            return;
        }
    }
    if send_initial {
        let bookmark = stream.bookmark_object(true);
        if !stream.send("BOOKMARK", bookmark).await {
            return;
        }
    }
    for event in &start.replay {
        if !stream.send_stored(event).await {
            return;
        }
    }
    let mut receiver = start.receiver;
    closer.borrow_and_update();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmark_tick = tokio::time::interval(bookmark_interval);
    bookmark_tick.tick().await;
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Ok(event) => {
                    if !stream.send_stored(&event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow to keep up: like kube-apiserver, end the watch so
                    // the client re-lists.
                    let message = gone_message(stream.last_resource_version, stream.last_resource_version);
                    stream.send_gone(&message).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = bookmark_tick.tick(), if stream.bookmarks => {
                // Drain what is already queued so the bookmark never runs ahead
                // of an event this watch has not sent yet.
                while let Ok(event) = receiver.try_recv() {
                    if !stream.send_stored(&event).await {
                        return;
                    }
                }
                let bookmark = stream.bookmark_object(false);
                if !stream.send("BOOKMARK", bookmark).await {
                    return;
                }
            }
            _ = closer.changed() => return,
            _ = &mut deadline => return,
            _ = stream.sender.closed() => return,
        }
    }
}
