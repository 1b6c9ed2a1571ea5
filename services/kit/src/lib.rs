//! The service kit: what every shop service needs, written once.
//!
//! - [`config`]: configuration from the environment.
//! - [`telemetry`]: JSON logs through `tracing`.
//! - [`metrics`]: Prometheus `/metrics` with per-route request counts and latencies.
//! - [`problem`]: RFC 9457 `application/problem+json` errors and request validation.
//! - [`extract`]: axum extractors whose rejections are problems too.
//! - [`idempotency`]: the `Idempotency-Key` header's rule and problems, request fingerprints.
//! - [`identity`]: service identity on the internal APIs (tokens signed with the installation's
//!   key, checked against who may call what).
//! - [`context`]: request ids and the caller's identity, carried across services.
//! - [`auth`]: the access-token claims (the contracts'), re-exported.
//! - [`money`]: amounts in minor units with an ISO 4217 currency (the contracts'), re-exported.
//! - [`page`]: the opaque keyset cursor of list endpoints.
//! - [`db`]: sqlx over SQLite or PostgreSQL, with migrations.
//! - [`client`]: calls to other services with timeouts, retry budget and circuit breaker.
//! - [`openapi`]: the finishing pass over a service's OpenAPI document (the kit's own statuses).
//! - [`server`]: `/healthz`, `/readyz`, `/openapi.json`, the middleware stack, graceful shutdown.
//! - [`runtime`]: what every service is built from (`build(&runtime, settings)`).
//! - [`tasks`]: a service's background tasks, stopped with it.
//!
//! The events between services (outbox, relays, buses, consumers) stand on the kit in their own
//! crate, `shop-events`.

pub mod client;
pub mod config;
pub mod context;
pub mod db;
pub mod extract;
pub mod idempotency;
pub mod identity;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod propagation;
pub mod runtime;
pub mod server;
pub mod tasks;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Upstream, UpstreamError, UpstreamOptions};
pub use config::ServiceConfig;
pub use context::Caller;
pub use db::{Database, now_rfc3339};
pub use extract::{Json, Path, Query};
pub use identity::{Identity, ServiceKey};
pub use metrics::Metrics;
pub use money::Money;
pub use problem::{ApiResult, FieldError, Problem, Validator};
pub use runtime::{NoSettings, Runtime};
pub use server::Service;
pub use tasks::Tasks;
pub mod auth;
