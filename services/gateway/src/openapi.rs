//! The public API as one document: every operation the route table sends to a service, under the
//! path clients call, merged from the services' own documents; and a readable page of it.
//!
//! `merge` is pure (the table and the documents in, the document out); `refresh` fetches the
//! services' documents and swaps the served one when the result changed.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use shop_kit::openapi::{Document, IDENTITY_SCHEME, INTERNAL_EXTENSION};

use crate::domain::RouteTable;
use crate::routes::Snapshot;

/// The scheme clients authenticate with at the gateway.
pub const BEARER_SCHEME: &str = "bearer";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One service's own document, as fetched from it.
pub struct ServiceDocument<'a> {
    pub service: &'a str,
    pub upstream: &'a str,
    pub document: &'a Value,
}

/// The document clients see: each service's public operations the route table routes to that
/// service (never its `/internal` ones, nor paths another route takes, such as `/` for the
/// storefront's pages), with the gateway's own answers added and the Bearer scheme in place of
/// the identity headers the gateway sets.
pub fn merge(table: &RouteTable, documents: &[ServiceDocument]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut tags = Vec::new();
    for doc in documents {
        let own_schemas = doc.document["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        // Two services may name different schemas alike (each has an `Item`): the later one is
        // renamed after its service.
        let renames: HashMap<String, String> = own_schemas
            .iter()
            .filter(|(name, schema)| schemas.get(*name).is_some_and(|s| s != *schema))
            .map(|(name, _)| (name.clone(), format!("{}{name}", title_case(doc.service))))
            .collect();
        let mut document = doc.document.clone();
        rename_refs(&mut document, &renames);
        let mut routed = false;
        if let Some(own_paths) = document["paths"].as_object() {
            for (path, item) in own_paths {
                let to_this_service = table
                    .find(path)
                    .is_some_and(|r| r.upstream == doc.upstream && r.prefix != "/");
                if path.starts_with("/internal/") || !to_this_service || paths.contains_key(path) {
                    continue;
                }
                let mut item = item.clone();
                let operations = item.as_object_mut().into_iter().flat_map(|item| {
                    item.iter_mut()
                        .filter(|(method, _)| METHODS.contains(&method.as_str()))
                        .filter_map(|(_, op)| op.as_object_mut())
                });
                let mut kept = 0;
                for operation in operations {
                    if operation.get(INTERNAL_EXTENSION) == Some(&Value::Bool(true)) {
                        continue;
                    }
                    publish(operation, doc.service);
                    kept += 1;
                }
                if kept > 0 {
                    paths.insert(path.clone(), item);
                    routed = true;
                }
            }
        }
        if !routed {
            continue;
        }
        for (name, schema) in document["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let name = renames.get(name).unwrap_or(name);
            schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
        }
        let description = document["info"]["description"].clone();
        tags.push(json!({ "name": doc.service, "description": description }));
    }
    // Only the schemas the published operations use (the internal APIs' stay out).
    let schemas = reachable(&Value::Object(paths.clone()), &schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "shop public API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Everything a client of the shop can call, through the gateway: \
                merged from the services' own documents and the gateway's route table. Sign in \
                with `POST /api/auth/login` and send `Authorization: Bearer <access_token>`. \
                Errors are `application/problem+json` (RFC 9457). A readable page of this \
                document is at /api/docs.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The `access_token` of `POST /api/auth/login` or \
                        `POST /api/auth/refresh`.",
                },
            },
        },
        "tags": tags,
    })
}

/// One operation as the gateway publishes it.
fn publish(operation: &mut Map<String, Value>, service: &str) {
    if let Some(requirements) = operation.get_mut("security").and_then(Value::as_array_mut) {
        for requirement in requirements.iter_mut() {
            if let Some(requirement) = requirement.as_object_mut()
                && let Some(scopes) = requirement.remove(IDENTITY_SCHEME)
            {
                requirement.insert(BEARER_SCHEME.into(), scopes);
            }
        }
    }
    operation.insert("tags".into(), json!([service]));
    let has_body = operation.contains_key("requestBody");
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    let mut added = vec![
        (
            "401",
            "The Bearer token is malformed, expired or not signed by the shop (a token that is \
             sent must be valid), or the operation needs one.",
        ),
        ("429", "Too many requests from this client; slow down."),
        ("502", "The service answered something unreadable."),
        ("503", "The service is unavailable; try again later."),
        ("504", "The service did not answer in time."),
    ];
    if has_body {
        added.push(("413", "The body is larger than the gateway accepts."));
    }
    for (status, description) in added {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": { shop_kit::problem::PROBLEM_JSON: {
                    "schema": { "$ref": "#/components/schemas/Problem" } } },
            })
        });
    }
}

fn title_case(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The schemas `root` refers to, directly or through other schemas.
fn reachable(root: &Value, schemas: &Map<String, Value>) -> Map<String, Value> {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match child
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        Some(name) if key == "$ref" => out.push(name),
                        _ => refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Map::new();
    let mut pending = Vec::new();
    refs(root, &mut pending);
    while let Some(name) = pending.pop() {
        if found.contains_key(name) {
            continue;
        }
        if let Some(schema) = schemas.get(name) {
            found.insert(name.to_owned(), schema.clone());
            refs(schema, &mut pending);
        }
    }
    found.sort_keys();
    found
}

/// Points every `$ref` to a renamed schema at its new name.
fn rename_refs(value: &mut Value, renames: &HashMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "$ref"
                    && let Some(name) = child
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    && let Some(new) = renames.get(name)
                {
                    *child = json!(format!("#/components/schemas/{new}"));
                } else {
                    rename_refs(child, renames);
                }
            }
            // The renamed schemas themselves move under their new names.
            if let Some(schemas) = map.get_mut("schemas").and_then(Value::as_object_mut) {
                for (old, new) in renames {
                    if let Some(schema) = schemas.remove(old) {
                        schemas.insert(new.clone(), schema);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renames)),
        _ => {}
    }
}

/// Fetches every routed service's document and serves the merged one when it changed. A service
/// that does not answer keeps its last document (or is left out until it answers).
pub async fn refresh(snapshot: &Snapshot, last: &mut HashMap<String, Value>, served: &Document) {
    let mut failed = Vec::new();
    for (service, upstream) in snapshot.table.services() {
        let Some(client) = snapshot.upstream(upstream) else {
            continue;
        };
        match client.get_json::<Value>("/openapi.json").await {
            Ok(document) => {
                last.insert(upstream.to_owned(), document);
            }
            Err(e) => failed.push(format!("{service}: {e}")),
        }
    }
    if !failed.is_empty() {
        tracing::debug!(services = ?failed, "some services' API documents could not be fetched");
    }
    let documents: Vec<_> = snapshot
        .table
        .services()
        .into_iter()
        .filter_map(|(service, upstream)| {
            last.get(upstream).map(|document| ServiceDocument {
                service,
                upstream,
                document,
            })
        })
        .collect();
    let merged = merge(&snapshot.table, &documents);
    if *served.get() != merged {
        served.set(merged);
        tracing::info!(services = documents.len(), "public API document updated");
    }
}

/// The reference page of a merged document: every operation by service, its parameters, body
/// and answers, then every schema. Plain HTML, styled by [`STYLE`], no script.
pub fn reference_page(document: &Value) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let info = &document["info"];
    let title = text(&info["title"]);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/api/docs/style.css\"></head><body>\
         <header><h1>{title} <small>{}</small></h1><p>{}</p>\
         <p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a>.</p></header><nav><ul>",
        text(&info["version"]),
        text(&info["description"])
    );
    let tags: Vec<&Value> = document["tags"].as_array().into_iter().flatten().collect();
    for tag in &tags {
        let name = text(&tag["name"]);
        let _ = write!(page, "<li><a href=\"#{name}\">{name}</a></li>");
    }
    page.push_str("<li><a href=\"#schemas\">schemas</a></li></ul></nav><main>");
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    for tag in &tags {
        let name = tag["name"].as_str().unwrap_or_default();
        let _ = write!(
            page,
            "<section id=\"{0}\"><h2>{0}</h2><p>{1}</p>",
            escape(name),
            text(&tag["description"])
        );
        for (path, item) in &paths {
            for method in METHODS {
                let operation = &item[method];
                let in_tag = operation["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == name));
                if operation.is_object() && in_tag {
                    operation_html(&mut page, method, path, operation);
                }
            }
        }
        page.push_str("</section>");
    }
    page.push_str("<section id=\"schemas\"><h2>Schemas</h2>");
    for (name, schema) in document["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            page,
            "<article id=\"schema-{0}\"><h3>{0}</h3><p>{1}</p>",
            escape(name),
            text(&schema["description"])
        );
        match schema["properties"].as_object() {
            Some(properties) => {
                page.push_str("<table><tr><th>field</th><th>type</th><th>rules</th><th></th></tr>");
                let required = schema["required"].as_array().cloned().unwrap_or_default();
                for (field, property) in properties {
                    let needed = if required.iter().any(|r| r == field) {
                        "required"
                    } else {
                        "optional"
                    };
                    let _ = write!(
                        page,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{needed}{}</td><td>{}</td></tr>",
                        escape(field),
                        type_html(property),
                        rules(property),
                        text(&property["description"])
                    );
                }
                page.push_str("</table>");
            }
            None => {
                let _ = write!(page, "<p>{}{}</p>", type_html(schema), rules(schema));
            }
        }
        page.push_str("</article>");
    }
    page.push_str("</section></main></body></html>");
    page
}

fn operation_html(page: &mut String, method: &str, path: &str, operation: &Value) {
    let secured = operation["security"]
        .as_array()
        .is_some_and(|requirements| {
            !requirements
                .iter()
                .any(|r| r.as_object().is_some_and(Map::is_empty))
        });
    let _ = write!(
        page,
        "<article class=\"operation\"><h3><span class=\"method {method}\">{}</span> <code>{}</code>{}</h3><p>{}</p>",
        method.to_uppercase(),
        escape(path),
        if secured {
            " <span class=\"lock\" title=\"needs a Bearer token\">Bearer</span>"
        } else {
            ""
        },
        text(&operation["summary"]),
    );
    if let Some(description) = operation["description"].as_str() {
        let _ = write!(page, "<p>{}</p>", escape(description));
    }
    if let Some(parameters) = operation["parameters"].as_array() {
        page.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>rules</th><th></th></tr>");
        for p in parameters {
            let needed = if p["required"] == true {
                "required"
            } else {
                "optional"
            };
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{needed}{}</td><td>{}</td></tr>",
                text(&p["name"]),
                text(&p["in"]),
                type_html(&p["schema"]),
                rules(&p["schema"]),
                text(&p["description"])
            );
        }
        page.push_str("</table>");
    }
    if let Some(content) = operation["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                page,
                "<h4>Body</h4><p><code>{}</code>: {}</p>",
                escape(media),
                type_html(&body["schema"])
            );
        }
    }
    page.push_str("<h4>Answers</h4><table>");
    for (status, response) in operation["responses"].as_object().into_iter().flatten() {
        let body = response["content"]
            .as_object()
            .and_then(|c| c.iter().next())
            .map(|(media, b)| format!("<code>{}</code> {}", escape(media), type_html(&b["schema"])))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr><td class=\"status s{}\">{}</td><td>{}</td><td>{body}</td></tr>",
            &status[..1],
            escape(status),
            text(&response["description"])
        );
    }
    page.push_str("</table></article>");
}

/// A schema's type in a few words, linking to a named schema.
fn type_html(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return options
            .iter()
            .map(type_html)
            .collect::<Vec<_>>()
            .join(" or ");
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if schema.is_object() && schema.as_object().is_some_and(|o| !o.is_empty()) => {
            "object".into()
        }
        _ => "any".into(),
    };
    if kind.starts_with("array") {
        return format!("array of {}", type_html(&schema["items"]));
    }
    match schema["format"].as_str() {
        Some(format) => format!("{} ({})", escape(&kind), escape(format)),
        None => escape(&kind),
    }
}

/// A schema's constraints, as ", 1 to 100" and the like.
fn rules(schema: &Value) -> String {
    let mut out = String::new();
    for (key, label) in [
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("minLength", "length at least"),
        ("maxLength", "length at most"),
        ("minItems", "items at least"),
        ("maxItems", "items at most"),
        ("pattern", "matches"),
    ] {
        if let Some(value) = schema.get(key) {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let _ = write!(out, ", {label} <code>{}</code>", escape(&value));
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let shown: Vec<String> = values.iter().take(12).map(text).collect();
        let more = if values.len() > 12 { ", …" } else { "" };
        let _ = write!(out, ", one of <code>{}</code>{more}", shown.join(" "));
    }
    out
}

/// Escaped text, with Markdown's `code` spans as `<code>`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s)
            .split('`')
            .enumerate()
            .map(|(i, part)| {
                if i % 2 == 1 {
                    format!("<code>{part}</code>")
                } else {
                    part.to_owned()
                }
            })
            .collect(),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The reference page's style sheet (served beside it: the page allows no inline style).
pub const STYLE: &str = "\
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d232a;background:#fafafa}\
header,main,nav{max-width:70rem;margin:0 auto;padding:0 1rem}\
header{padding-top:1rem}h1 small{font-size:.5em;color:#66707a}\
nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5rem 1rem}\
section{margin:2rem 0}h2{border-bottom:2px solid #d0d5da;text-transform:capitalize}\
article{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}\
h3{font-size:1.05rem;margin:.3rem 0}h4{margin:.6rem 0 .2rem;font-size:.9rem;color:#4a535c}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
td,th{border-top:1px solid #eef0f2;padding:.25rem .5rem;text-align:left;vertical-align:top}\
code{font:13px ui-monospace,monospace;background:#f3f4f6;padding:0 .2rem;border-radius:3px;word-break:break-all}\
.method{display:inline-block;min-width:4rem;text-align:center;border-radius:4px;color:#fff;font-size:.8rem;padding:.1rem .3rem}\
.get{background:#2f6f9f}.post{background:#2e7d4f}.put{background:#a66a00}.patch{background:#7b5ea7}.delete{background:#b03a2e}\
.lock{font-size:.75rem;border:1px solid #a66a00;color:#a66a00;border-radius:3px;padding:0 .3rem}\
.status{font-weight:600}.s2{color:#2e7d4f}.s4{color:#a66a00}.s5{color:#b03a2e}\
";

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::parse(
            r#"{"routes": [
                {"prefix": "/api/products", "service": "catalog", "upstream": "http://catalog"},
                {"prefix": "/api/stock", "service": "inventory", "upstream": "http://inventory"},
                {"prefix": "/", "service": "storefront", "upstream": "http://storefront"}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn only_routed_public_operations_are_published_with_the_bearer_scheme() {
        let catalog = json!({
            "info": { "description": "Products." },
            "paths": {
                "/api/products": { "post": {
                    "security": [ { "identity": [] } ],
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Item" } } } },
                    "responses": { "201": { "description": "Created" } }
                } },
                "/images/{category}/{file}": { "get": { "responses": {} } }
            },
            "components": { "schemas": { "Item": { "type": "object", "title": "catalog" } } }
        });
        let inventory = json!({
            "paths": {
                "/api/stock/{id}": { "get": { "responses": {
                    "200": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Item" } } } } } } },
                "/internal/reservations": { "post": { "x-internal": true, "responses": {} } }
            },
            "components": { "schemas": {
                "Item": { "type": "object", "title": "inventory" },
                "ReserveRequest": { "type": "object" } } }
        });
        let storefront = json!({ "paths": { "/": { "get": { "responses": {} } } } });
        let merged = merge(
            &table(),
            &[
                ServiceDocument {
                    service: "catalog",
                    upstream: "http://catalog",
                    document: &catalog,
                },
                ServiceDocument {
                    service: "inventory",
                    upstream: "http://inventory",
                    document: &inventory,
                },
                ServiceDocument {
                    service: "storefront",
                    upstream: "http://storefront",
                    document: &storefront,
                },
            ],
        );
        let paths: Vec<_> = merged["paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            paths,
            ["/api/products", "/api/stock/{id}"],
            "no /internal, no unrouted /images, no storefront"
        );
        let post = &merged["paths"]["/api/products"]["post"];
        assert_eq!(post["security"], json!([{ "bearer": [] }]));
        assert_eq!(post["tags"], json!(["catalog"]));
        for status in ["401", "413", "429", "502", "503", "504"] {
            assert!(post["responses"][status].is_object(), "{status}");
        }
        assert!(merged["paths"]["/api/stock/{id}"]["get"]["responses"]["413"].is_null());
        // The two `Item`s differ: inventory's is renamed, and its reference follows.
        assert_eq!(merged["components"]["schemas"]["Item"]["title"], "catalog");
        assert_eq!(
            merged["components"]["schemas"]["InventoryItem"]["title"],
            "inventory"
        );
        assert_eq!(
            merged["paths"]["/api/stock/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/InventoryItem"
        );
        assert_eq!(
            merged["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let schemas: Vec<_> = merged["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            schemas,
            ["InventoryItem", "Item"],
            "only what the published operations use"
        );
        let tags: Vec<_> = merged["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].clone())
            .collect();
        assert_eq!(tags, [json!("catalog"), json!("inventory")]);

        let page = reference_page(&merged);
        assert!(page.contains("<code>/api/stock/{id}</code>"));
        assert!(page.contains("href=\"#schema-InventoryItem\""));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn the_page_escapes_what_the_documents_say() {
        let document = json!({
            "info": { "title": "<t>", "description": "a & b" },
            "paths": {}, "tags": [ { "name": "x", "description": "<img src=x>" } ]
        });
        let page = reference_page(&document);
        assert!(page.contains("&lt;t&gt;") && page.contains("a &amp; b"));
        assert!(!page.contains("<img"));
    }
}
