//! Serving a service: the operational endpoints, the middleware stack, and graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::ServiceConfig;
use crate::context::{REQUEST_ID_HEADER, scope_request_id};
use crate::metrics::{self, Metrics};
use crate::problem::Problem;

/// A readiness check: `Ok` when the service can do its work (for most, the database answers).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Everything a service hands to the kit to be served.
pub struct Service {
    pub name: &'static str,
    /// The service's own routes.
    pub router: Router,
    pub openapi: utoipa::openapi::OpenApi,
    pub ready: ReadyCheck,
}

#[derive(Clone)]
struct Ops {
    ready: ReadyCheck,
    shutting_down: Arc<AtomicBool>,
    openapi: Arc<serde_json::Value>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ops): State<Ops>) -> Response {
    if ops.shutting_down.load(Ordering::Relaxed) {
        return Problem::unavailable("shutting down").into_response();
    }
    match (ops.ready)().await {
        Ok(()) => "ready".into_response(),
        Err(reason) => Problem::unavailable(reason).into_response(),
    }
}

async fn openapi_document(State(ops): State<Ops>) -> Json<serde_json::Value> {
    Json((*ops.openapi).clone())
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not accept that method",
    )
}

/// Bounds the time spent on one request, answering 503 rather than leaving the caller waiting.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "deadline-exceeded",
            "the request took too long to handle",
        )
        .into_response(),
    }
}

/// A service ready to be served, with its shutdown switch.
pub struct App {
    pub router: Router,
    shutting_down: Arc<AtomicBool>,
}

/// Wraps a service's routes with the operational endpoints and the common middleware.
pub fn app(service: Service, config: &ServiceConfig, metrics: &Metrics) -> App {
    let shutting_down = Arc::new(AtomicBool::new(false));
    let openapi = serde_json::to_value(&service.openapi).expect("an OpenAPI document serialises");
    let ops = Ops {
        ready: service.ready,
        shutting_down: shutting_down.clone(),
        openapi: Arc::new(openapi),
    };
    let ops_routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_document))
        .with_state(ops)
        .route(
            "/metrics",
            get(metrics::handler).with_state(metrics.clone()),
        );
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let router = service
        .router
        .merge(ops_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Innermost first: the deadline and body limit apply to the handler, metrics see the
        // final status, and the request id exists before anything logs.
        .layer(middleware::from_fn_with_state(config.request_timeout, deadline))
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(metrics.clone(), metrics::track))
        .layer(middleware::from_fn(scope_request_id))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    App {
        router,
        shutting_down,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish, and
/// returns once they have or once `grace` has passed, whichever is first.
pub async fn serve_with(
    name: &str,
    listener: TcpListener,
    app: App,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let shutting_down = app.shutting_down.clone();
    let service_name = name.to_owned();
    let server = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        shutting_down.store(true, Ordering::Relaxed);
        tracing::info!(service = %service_name, "shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    });
    let drain_limit = async move {
        if stop_rx.wait_for(|stopping| *stopping).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = drain_limit => tracing::warn!(service = name, ?grace, "requests still in flight after the grace period; exiting"),
    }
    tracing::info!(service = name, "stopped");
    Ok(())
}

/// Binds `config.listen` and serves until SIGTERM or Ctrl-C.
pub async fn run(service: Service, config: &ServiceConfig, metrics: &Metrics) -> Result<()> {
    let name = service.name;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("{name}: cannot listen on {}", config.listen))?;
    tracing::info!(service = name, address = %config.listen, "listening");
    let app = app(service, config, metrics);
    serve_with(
        name,
        listener,
        app,
        config.shutdown_grace,
        shutdown_signal(),
    )
    .await
}

/// The readiness check most services use: the database answers.
pub fn database_ready(db: crate::db::Database) -> ReadyCheck {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            db.ping()
                .await
                .map_err(|e| format!("database unreachable: {e}"))
        })
    })
}
