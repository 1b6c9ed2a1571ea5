//! Serving a service: the operational endpoints, the middleware stack, and graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::ServiceConfig;
use crate::context::{REQUEST_ID_HEADER, scope_request_id};
use crate::metrics::{self, Metrics};
use crate::problem::Problem;
use crate::runtime::Runtime;
use crate::tasks::Tasks;

/// A readiness check: `Ok` when the service can do its work (for most, the database answers).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How the kit tells whether a service can do its work (`/readyz`).
pub enum Readiness {
    /// Always ready: nothing it depends on can be missing.
    Always,
    /// Its database answers. While the database's server is known to be down, the service's
    /// own routes also answer `503` at once (see [`crate::db::Database::suspect_outage`]).
    Database(crate::db::Database),
    /// A check of its own.
    Check(ReadyCheck),
}

/// Everything a service hands to the kit to be served.
pub struct Service {
    pub name: &'static str,
    /// The service's own routes.
    pub router: Router,
    /// Served at `/openapi.json`: `ApiDoc::openapi().into()` (finished by the kit).
    pub openapi: crate::openapi::Document,
    pub ready: Readiness,
    /// Its background work (sweepers, relays, ...): running while it is served, stopped after.
    pub tasks: Tasks,
}

/// The OpenAPI document of a service whose routes are not a typed JSON API of its own (the
/// gateway's proxy, the storefront's pages): its title and description only.
pub fn described_openapi(title: &str, description: &str) -> crate::openapi::Document {
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder};
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .description(Some(description))
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .build()
        .into()
}

#[derive(Clone)]
struct Ops {
    ready: ReadyCheck,
    shutting_down: Arc<AtomicBool>,
    openapi: crate::openapi::Document,
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

async fn openapi_document(State(ops): State<Ops>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(&*ops.openapi.get()).expect("a JSON value serialises"),
    )
        .into_response()
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

/// Slots for requests being handled and a count of those waiting for one (see
/// [`crate::config::Admission`]).
#[derive(Clone)]
struct Admitter {
    slots: Option<Arc<tokio::sync::Semaphore>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    limits: crate::config::Admission,
}

impl Admitter {
    fn new(limits: crate::config::Admission) -> Self {
        Self {
            slots: (limits.max_in_flight > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight))),
            queued: Arc::default(),
            limits,
        }
    }
}

/// Handles a request in a free slot, waits a bounded time in a bounded queue for one, or sheds
/// it with `503 overloaded` at once.
async fn admit(State(admitter): State<Admitter>, request: Request, next: Next) -> Response {
    let Some(slots) = &admitter.slots else {
        return next.run(request).await;
    };
    let slot = match slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            let queued = admitter.queued.fetch_add(1, Ordering::AcqRel);
            let waited = if queued < admitter.limits.max_queued {
                tokio::time::timeout(admitter.limits.queue_timeout, slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            admitter.queued.fetch_sub(1, Ordering::AcqRel);
            match waited {
                Some(slot) => slot,
                None => {
                    return Problem::typed(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "the service is at capacity; try again shortly",
                    )
                    .into_response();
                }
            }
        }
    };
    let response = next.run(request).await;
    drop(slot);
    response
}

/// While the database's server is known to be down, answers at once with a `503` (and
/// `Retry-After`) instead of letting the request wait out the pool's acquire timeout; and when a
/// handler's answer says the server may be down, starts the check that finds out.
async fn database_gate(
    State(db): State<crate::db::Database>,
    request: Request,
    next: Next,
) -> Response {
    if db.is_down() {
        return Problem::database_down().into_response();
    }
    let response = next.run(request).await;
    if response
        .extensions()
        .get::<crate::db::DatabaseMayBeDown>()
        .is_some()
    {
        db.suspect_outage();
    }
    response
}

/// While draining, every response asks the client to close its connection. Clients then close
/// their own connections instead of reusing one the server is about to close, which is what
/// would otherwise reset a request sent at the wrong moment.
async fn close_when_draining(
    State(draining): State<Arc<AtomicBool>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A service ready to be served, with its shutdown switch and its background tasks.
pub struct App {
    pub router: Router,
    pub tasks: Tasks,
    shutting_down: Arc<AtomicBool>,
    shutdown_delay: Duration,
    limits: ConnectionLimits,
}

/// What one connection may cost before it is cut off (from [`ServiceConfig`]).
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    max_header_bytes: usize,
}

/// Wraps a service's routes with the operational endpoints and the common middleware.
pub fn app(service: Service, config: &ServiceConfig, metrics: &Metrics) -> App {
    let shutting_down = Arc::new(AtomicBool::new(false));
    let mut routes = service.router;
    let ready = match service.ready {
        Readiness::Always => Arc::new(|| Box::pin(async { Ok(()) }) as _),
        Readiness::Database(db) => {
            routes = routes.layer(middleware::from_fn_with_state(db.clone(), database_gate));
            database_check(db)
        }
        Readiness::Check(check) => check,
    };
    // The service's own routes only: a liveness or readiness probe is never shed. Inside the
    // metrics, so shed requests are counted (as 503s).
    routes = routes.layer(middleware::from_fn_with_state(
        Admitter::new(config.admission),
        admit,
    ));
    let ops = Ops {
        ready,
        shutting_down: shutting_down.clone(),
        openapi: service.openapi,
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
    let router = routes
        .merge(ops_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Innermost first: the deadline and body limit apply to the handler, metrics see the
        // final status, and the request id exists before anything logs.
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            deadline,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        // Before the handler and after the metrics, so refused calls are counted.
        .layer(middleware::from_fn_with_state(
            crate::identity::Guard {
                receiver: service.name,
                key: config.service_key.clone(),
            },
            crate::identity::guard_internal,
        ))
        .layer(middleware::from_fn_with_state(
            metrics.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(scope_request_id))
        .layer(middleware::from_fn_with_state(
            shutting_down.clone(),
            close_when_draining,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| crate::propagation::request_span(request)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    App {
        router,
        tasks: service.tasks,
        shutting_down,
        shutdown_delay: config.shutdown_delay,
        limits: ConnectionLimits {
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
        },
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

/// Serves until `shutdown` resolves; then reports unready and keeps serving for the app's
/// shutdown delay (closing connections after each response), stops accepting, lets in-flight
/// requests finish, and once they have or once `grace` has passed, whichever is first, stops
/// the app's background tasks and returns.
///
/// The accept loop is our own rather than `axum::serve`: that one uses hyper-util's
/// version-sniffing connection, whose graceful shutdown drops a connection that is still reading
/// its first request, resetting a request the client already sent. hyper's HTTP/1 connection
/// finishes such a request instead (see docs/decisions.md).
pub async fn serve_with(
    name: &str,
    listener: TcpListener,
    app: App,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Connection tasks hold a receiver each: when the sender sees none left, all are done.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let router = app.router;
    let tasks = app.tasks;
    let limits = app.limits;
    let shutting_down = app.shutting_down.clone();
    let delay = app.shutdown_delay;
    let service_name = name.to_owned();
    let shutdown = async move {
        shutdown.await;
        shutting_down.store(true, Ordering::Relaxed);
        tracing::info!(service = %service_name, ?delay, "shutting down: unready, closing connections after each response");
        tokio::time::sleep(delay).await;
        tracing::info!(service = %service_name, "no longer accepting; finishing in-flight requests");
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(service = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        serve_connection(stream, peer, router.clone(), stop_rx.clone(), limits);
    }
    // Connections the kernel has completed but we have not accepted yet would be reset when the
    // listener closes; accept and serve every one of them first.
    let listener = listener
        .into_std()
        .context("taking the listener back from tokio")?;
    while let Ok((stream, peer)) = listener.accept() {
        if stream.set_nonblocking(true).is_ok()
            && let Ok(stream) = tokio::net::TcpStream::from_std(stream)
        {
            serve_connection(stream, peer, router.clone(), stop_rx.clone(), limits);
        }
    }
    drop(listener);
    tracing::debug!(
        service = name,
        open_connections = stop_tx.receiver_count() - 1,
        "listener closed"
    );
    let _ = stop_tx.send(());
    drop(stop_rx);
    tokio::select! {
        () = stop_tx.closed() => {},
        () = tokio::time::sleep(grace) => tracing::warn!(service = name, ?grace, "requests still in flight after the grace period; exiting"),
    }
    // After the requests: a request may still have needed them (a relay woken by a commit).
    tasks.stop().await;
    tracing::info!(service = name, "stopped");
    Ok(())
}

/// How long a connection that has not sent its first request yet may take to send it once
/// shutdown has begun. A client that connected just before the listener closed has almost
/// always sent its request already; closing such a connection at once would reset it. (Go's
/// `http.Server.Shutdown` treats new connections the same way.)
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Serves one connection on its own task until it closes, or until `stop` says to finish the
/// request in progress and close.
fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<()>,
    limits: ConnectionLimits,
) {
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        let first_request = Arc::new(tokio::sync::Notify::new());
        let started = first_request.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                started.notify_one();
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
            },
        );
        // A head larger than `max_header_bytes` is answered 431; headers not complete within
        // `header_read_timeout` close the connection (a slow or idle client holds no more).
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::pin!(connection);
        let finished = |result: hyper::Result<()>| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        };
        tokio::select! {
            result = connection.as_mut() => return finished(result),
            _ = stop.changed() => {}
        }
        // `notified` completes at once if a request has started (Notify keeps the permit).
        tokio::select! {
            result = connection.as_mut() => return finished(result),
            () = first_request.notified() => {}
            () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
        }
        connection.as_mut().graceful_shutdown();
        finished(connection.await);
    });
}

/// Binds the runtime's `config.listen` and serves until SIGTERM or Ctrl-C.
pub async fn run<B>(service: Service, runtime: &Runtime<B>) -> Result<()> {
    let (config, metrics) = (&runtime.config, &runtime.metrics);
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

fn database_check(db: crate::db::Database) -> ReadyCheck {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            db.ping()
                .await
                .map_err(|e| format!("database unreachable: {e}"))
        })
    })
}
