//! The gateway's handlers: the proxy for every path the route table names, and aggregate readiness.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shop_kit::context::{REQUEST_ID_HEADER, USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::propagation::{TRACEPARENT, TRACESTATE};
use shop_kit::{Json, Problem, Upstream, UpstreamOptions};

use crate::domain::{self, RouteTable};
use crate::keys::KeyCache;
use crate::rate_limit::{self, ClientLimiter};

/// The route table with a client per upstream, swapped whole on reload.
pub struct Snapshot {
    pub table: RouteTable,
    upstreams: HashMap<String, Upstream>,
}

impl Snapshot {
    /// Builds clients for the table, reusing `previous` ones so breakers and pools survive reloads.
    pub fn new(
        table: RouteTable,
        previous: Option<&Snapshot>,
        options: &UpstreamOptions,
    ) -> anyhow::Result<Self> {
        let mut upstreams = HashMap::new();
        for (service, url) in table.services() {
            let client = match previous.and_then(|p| p.upstreams.get(url)) {
                Some(existing) => existing.clone(),
                None => Upstream::new(service, url, options)?,
            };
            upstreams.insert(url.to_owned(), client);
        }
        Ok(Self { table, upstreams })
    }

    /// The client of the service at `url`.
    pub fn upstream(&self, url: &str) -> Option<&Upstream> {
        self.upstreams.get(url)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Not `service`: that is every metric's constant label, the gateway itself.
    upstream: String,
    status: String,
}

#[derive(Clone)]
pub struct Gateway {
    pub snapshot: Arc<RwLock<Arc<Snapshot>>>,
    pub keys: Arc<KeyCache>,
    /// Per-client quota for the proxied routes; `None` when switched off.
    pub limiter: Option<Arc<ClientLimiter>>,
    pub max_body_bytes: usize,
    pub upstream_responses: Family<UpstreamLabels, Counter>,
    /// The merged public API document, served at `/openapi.json` and as `/api/docs`.
    pub document: shop_kit::openapi::Document,
}

impl Gateway {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("route table lock").clone()
    }
}

pub fn router(gateway: Gateway) -> Router {
    // Every path the gateway does not answer itself goes by the route table: `/api/...` to the
    // services, `/images/...` to the catalog, and, with a `/` route, the rest to the storefront.
    // The kit's own endpoints (/healthz, /readyz, /metrics, /openapi.json) are static routes and
    // win over this catch-all.
    let proxied = Router::new()
        .route("/", axum::routing::any(proxy))
        .route("/{*rest}", axum::routing::any(proxy));
    let proxied = match gateway.limiter.clone() {
        Some(limiter) => rate_limit::per_client(proxied, limiter),
        None => proxied,
    };
    Router::new()
        .route("/readyz/upstreams", get(upstream_readiness))
        .route("/api/docs", get(api_reference))
        .route("/api/docs/style.css", get(api_reference_style))
        .merge(proxied)
        .with_state(gateway)
}

fn bearer_token(request: &Request) -> Option<Result<&str, Problem>> {
    let value = request.headers().get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <access token>`")
            }),
    )
}

async fn proxy(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    match forward(&gw, peer, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn forward(gw: &Gateway, peer: SocketAddr, request: Request) -> Result<Response, Problem> {
    let snapshot = gw.snapshot();
    let route = snapshot
        .table
        .find(request.uri().path())
        .ok_or_else(|| Problem::not_found("no service serves this path"))?;
    let upstream = snapshot
        .upstreams
        .get(&route.upstream)
        .ok_or_else(|| Problem::internal("route without a client"))?;
    // A token that is present must be valid; absent means anonymous, and each service decides
    // whether that is enough.
    let claims = match bearer_token(&request) {
        None => None,
        Some(token) => Some(gw.keys.verify(token?).await?),
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, gw.max_body_bytes)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes",
                    gw.max_body_bytes
                ),
            )
        })?;
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut outbound = upstream.request(parts.method.clone(), path);
    // The request id and the trace context are the kit client's to set (the trace's next hop is
    // the gateway's span, or the incoming context as it came when the gateway exports nothing).
    for (name, value) in &parts.headers {
        if domain::is_forwardable_request_header(name.as_str())
            && name != REQUEST_ID_HEADER
            && name != TRACEPARENT
            && name != TRACESTATE
        {
            outbound = outbound.header(name, value);
        }
    }
    if let Some(claims) = &claims {
        outbound = outbound
            .header(USER_ID_HEADER, &claims.sub)
            .header(USER_ROLES_HEADER, claims.roles.join(","));
    }
    outbound = outbound
        .header("x-forwarded-for", peer.ip().to_string())
        .body(body);
    let result = upstream.send(outbound).await;
    let status = result.as_ref().map_or_else(
        |_| "unavailable".to_owned(),
        |r| r.status().as_u16().to_string(),
    );
    gw.upstream_responses
        .get_or_create(&UpstreamLabels {
            upstream: route.service.clone(),
            status,
        })
        .inc();
    let upstream_response = result.map_err(Problem::from)?;
    let mut response = Response::builder().status(upstream_response.status());
    for (name, value) in upstream_response.headers() {
        if domain::is_forwardable_response_header(name.as_str()) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(upstream_response.bytes_stream()))
        .map_err(Problem::internal)
}

/// The public API's reference page, from the merged document.
async fn api_reference(State(gw): State<Gateway>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        crate::openapi::reference_page(&gw.document.get()),
    )
        .into_response()
}

async fn api_reference_style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        crate::openapi::STYLE,
    )
        .into_response()
}

/// Readiness of every service behind the gateway. The gateway's own `/readyz` does not depend on
/// them: one service down must not take the entry point out of rotation.
async fn upstream_readiness(State(gw): State<Gateway>) -> Response {
    let mut checks = tokio::task::JoinSet::new();
    let snapshot = gw.snapshot();
    for upstream in snapshot.upstreams.values() {
        let upstream = upstream.clone();
        checks.spawn(async move {
            let state = match upstream
                .send(upstream.request(axum::http::Method::GET, "/readyz"))
                .await
            {
                Ok(r) if r.status().is_success() => "ready".to_owned(),
                Ok(r) => format!("not ready ({})", r.status()),
                Err(e) => e.to_string(),
            };
            (upstream.name().to_owned(), state)
        });
    }
    let mut results = std::collections::BTreeMap::new();
    while let Some(Ok((name, state))) = checks.join_next().await {
        results.insert(name, state);
    }
    let all_ready = results.values().all(|s| s == "ready");
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": all_ready, "services": results })),
    )
        .into_response()
}
