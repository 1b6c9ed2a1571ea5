//! The finishing pass over a service's OpenAPI document: what the kit itself answers, written
//! down where the handlers' annotations cannot know it.
//!
//! Every handler runs behind the kit's extractors and middleware, so every operation can also
//! answer with the statuses those produce: a body that is not JSON (400), too large (413), sent
//! without `Content-Type: application/json` (415) or of the wrong shape (422); a malformed path
//! id (404); a bad query string (400); no caller identity (401); the deadline or an unavailable
//! database (503). This pass adds them from the operation's own shape, so the document cannot
//! drift from the kit, and gives every error the one body it really has: `application/problem+json`.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value, json};
use utoipa::PartialSchema;

use crate::context::USER_ID_HEADER;
use crate::problem::{FieldError, PROBLEM_JSON, Problem};

/// The name of the security scheme of operations that need the caller's identity.
pub const IDENTITY_SCHEME: &str = "identity";
/// The extension that marks an operation as internal (service to service, never routed by the
/// gateway).
pub const INTERNAL_EXTENSION: &str = "x-internal";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A service's document as `/openapi.json` serves it. Fixed for most services (a finished
/// utoipa document, see [`finish`]); the gateway replaces its merged one as the services' change.
#[derive(Clone, Debug)]
pub struct Document(Arc<RwLock<Arc<Value>>>);

impl Document {
    pub fn new(document: Value) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(document))))
    }

    /// The document as it is now.
    pub fn get(&self) -> Arc<Value> {
        self.0.read().expect("document lock").clone()
    }

    /// Serves `document` from now on.
    pub fn set(&self, document: Value) {
        *self.0.write().expect("document lock") = Arc::new(document);
    }
}

impl From<utoipa::openapi::OpenApi> for Document {
    fn from(document: utoipa::openapi::OpenApi) -> Self {
        Self::new(finish(&document))
    }
}

/// The finished JSON document of `doc`: see the module's documentation.
pub fn finish(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).expect("an OpenAPI document serialises");
    let mut uses_identity = false;
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for method in METHODS {
                if let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) {
                    uses_identity |= finish_operation(path, operation);
                }
            }
        }
    }
    let components = doc
        .as_object_mut()
        .expect("an OpenAPI document is an object")
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("components is an object");
    let schemas = components
        .entry("schemas")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("schemas is an object");
    schemas.insert("Problem".into(), schema_of::<Problem>());
    schemas.insert("FieldError".into(), schema_of::<FieldError>());
    if uses_identity {
        components
            .entry("securitySchemes")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("securitySchemes is an object")
            .insert(
                IDENTITY_SCHEME.into(),
                json!({
                    "type": "apiKey",
                    "in": "header",
                    "name": USER_ID_HEADER,
                    "description": "The caller's user id, set by the gateway after it verified the \
                        Bearer access token (and stripped from what clients send); the roles go in \
                        `x-shop-user-roles`, comma-separated. Clients call the gateway with \
                        `Authorization: Bearer <token>` instead.",
                }),
            );
    }
    doc
}

fn schema_of<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).expect("a schema serialises")
}

/// Adds the kit's statuses and the problem bodies to one operation; says whether it needs the
/// caller's identity.
fn finish_operation(path: &str, operation: &mut Map<String, Value>) -> bool {
    let mut statuses: Vec<(&str, &str)> = Vec::new();
    if operation.contains_key("requestBody") {
        statuses.extend([
            ("400", "The body is not valid JSON."),
            ("413", "The body is larger than the service accepts."),
            ("415", "The body was not sent as `application/json`."),
            ("422", "The body breaks a rule; `errors` names each field."),
        ]);
    }
    let parameters = operation
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let located = |place: &str| {
        parameters
            .iter()
            .any(|p| p.get("in").and_then(Value::as_str) == Some(place))
    };
    if located("query") {
        statuses.extend([
            ("400", "A query parameter is malformed."),
            ("422", "A query parameter breaks a rule; `errors` names it."),
        ]);
    }
    if path.contains('{') {
        statuses.push(("404", "No such resource (or its id is malformed)."));
    }
    let needs_identity = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| {
            requirements
                .iter()
                .any(|r| r.get(IDENTITY_SCHEME).is_some())
        });
    if needs_identity {
        statuses.push((
            "401",
            "No caller identity (sign in first), or a malformed one.",
        ));
    }
    statuses.push((
        "503",
        "The service (or one it needs) is unavailable or took too long; try again later.",
    ));

    if path.starts_with("/internal/") {
        // The service identity the kit's middleware checks (crate::identity).
        statuses.extend([
            (
                "401",
                "No valid service token in the `shop-service-token` header (missing, forged, expired, or made for another service).",
            ),
            ("403", "The calling service may not call this operation."),
        ]);
        operation.insert(INTERNAL_EXTENSION.into(), Value::Bool(true));
        let tags = operation.entry("tags").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut()
            && !tags.iter().any(|t| t == "internal")
        {
            tags.push(json!("internal"));
        }
    }

    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    for (status, description) in statuses {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "description": description }));
    }
    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else {
            continue;
        };
        let code: u16 = status.parse().unwrap_or(0);
        let description = response.entry("description").or_insert_with(|| json!(""));
        if description.as_str().is_none_or(str::is_empty) {
            *description = json!(
                http::StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Response")
            );
        }
        if code >= 400 {
            // The annotation's schema stays (a problem with more members, such as a declined
            // payment's `code`); the media type is what the kit really sends.
            let schema = response
                .get_mut("content")
                .and_then(Value::as_object_mut)
                .and_then(|content| content.values_mut().find_map(|m| m.get_mut("schema")))
                .map(Value::take)
                .unwrap_or_else(|| json!({ "$ref": "#/components/schemas/Problem" }));
            response.insert(
                "content".into(),
                json!({ PROBLEM_JSON: { "schema": schema } }),
            );
        }
    }
    needs_identity
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(paths: Value) -> utoipa::openapi::OpenApi {
        serde_json::from_value(json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "1" },
            "paths": paths,
        }))
        .unwrap()
    }

    #[test]
    fn errors_are_problems_and_the_kits_statuses_are_added() {
        let doc = finish(&document(json!({
            "/api/things/{id}": { "put": {
                "requestBody": { "content": { "application/json": { "schema": { "type": "object" } } } },
                "security": [ { "identity": [] } ],
                "responses": {
                    "200": { "description": "" },
                    "402": { "description": "declined", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Declined" } } } },
                    "409": { "description": "taken" }
                }
            } }
        })));
        let operation = &doc["paths"]["/api/things/{id}"]["put"];
        let responses = operation["responses"].as_object().unwrap();
        let mut statuses: Vec<_> = responses.keys().map(String::as_str).collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [
                "200", "400", "401", "402", "404", "409", "413", "415", "422", "503"
            ]
        );
        assert_eq!(responses["200"]["description"], "OK");
        assert_eq!(responses["409"]["description"], "taken");
        for status in ["401", "409", "422", "503"] {
            assert_eq!(
                responses[status]["content"][PROBLEM_JSON]["schema"]["$ref"],
                "#/components/schemas/Problem"
            );
            assert!(
                responses[status]["content"]
                    .get("application/json")
                    .is_none()
            );
        }
        assert_eq!(
            responses["402"]["content"][PROBLEM_JSON]["schema"]["$ref"],
            "#/components/schemas/Declined",
            "an annotated problem schema is kept"
        );
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"][IDENTITY_SCHEME]["name"],
            USER_ID_HEADER
        );
        assert!(operation.get(INTERNAL_EXTENSION).is_none());
    }

    #[test]
    fn internal_operations_are_marked_and_plain_ones_get_only_what_applies() {
        let doc = finish(&document(json!({
            "/internal/ping": { "get": { "responses": { "200": { "description": "pong" } } } }
        })));
        let operation = &doc["paths"]["/internal/ping"]["get"];
        assert_eq!(operation[INTERNAL_EXTENSION], true);
        assert_eq!(operation["tags"], json!(["internal"]));
        let mut statuses: Vec<_> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        statuses.sort_unstable();
        assert_eq!(statuses, ["200", "401", "403", "503"]);
        assert!(doc["components"].get("securitySchemes").is_none());
    }
}
