//! The gateway: the shop's single entry point.
//!
//! `domain` (the route table, pure) → `keys` (token verification against the user service's JWKS)
//! → `rate_limit` (the per-client layer) → `openapi` (the merged public API document and its
//! page) → `routes` (the proxy, aggregate readiness, the API reference).

pub mod domain;
pub mod keys;
pub mod openapi;
pub mod rate_limit;
pub mod routes;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::family::Family;
use shop_contracts::ServiceName;
use shop_events::Runtime;
use shop_kit::config::{env_or, env_parse};
use shop_kit::{Service, Tasks, Upstream, UpstreamOptions};

use crate::domain::RouteTable;
use crate::routes::{Gateway, Snapshot};

/// Where the route table comes from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// A JSON file, re-read when it changes (a mounted ConfigMap in Kubernetes).
    File(PathBuf),
    /// Fixed JSON, from `SHOP_ROUTES`.
    Inline(String),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub routes: RouteSource,
    pub reload_every: Duration,
    /// The user service, whose JWKS verifies tokens (`USER_URL`).
    pub user_url: String,
    /// Requests per second per client address; 0 switches the limit off.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// How often the services' API documents are fetched again and merged.
    pub openapi_every: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let routes = match (
            std::env::var(shop_contracts::env::ROUTES_FILE),
            std::env::var("SHOP_ROUTES"),
        ) {
            (Ok(path), _) if !path.is_empty() => RouteSource::File(path.into()),
            (_, Ok(json)) if !json.is_empty() => RouteSource::Inline(json),
            _ => bail!(
                "the gateway needs a route table: set SHOP_ROUTES_FILE (a JSON file) or SHOP_ROUTES (JSON)"
            ),
        };
        Ok(Self {
            routes,
            reload_every: Duration::from_millis(env_parse("SHOP_ROUTES_RELOAD_MS", 2_000)?),
            user_url: env_or(&ServiceName::User.url_var(), "http://127.0.0.1:8081"),
            rate_limit_per_second: env_parse("SHOP_RATE_LIMIT_PER_SECOND", 200)?,
            rate_limit_burst: env_parse("SHOP_RATE_LIMIT_BURST", 400)?,
            openapi_every: Duration::from_millis(env_parse("SHOP_OPENAPI_REFRESH_MS", 10_000)?),
        })
    }
}

fn read_routes(source: &RouteSource) -> Result<(String, RouteTable)> {
    let raw = match source {
        RouteSource::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the route table {}", path.display()))?,
        RouteSource::Inline(json) => json.clone(),
    };
    let table = RouteTable::parse(&raw)?;
    Ok((raw, table))
}

/// Applies the route table at `source` when its text differs from `current_raw`.
fn reload_routes(
    source: &RouteSource,
    current_raw: &mut String,
    snapshot: &RwLock<Arc<Snapshot>>,
    options: &UpstreamOptions,
) -> Result<()> {
    let (raw, table) =
        read_routes(source).context("route table not reloaded; keeping the previous one")?;
    if raw == *current_raw {
        return Ok(());
    }
    let previous = snapshot.read().expect("route table lock").clone();
    let next = Snapshot::new(table, Some(&previous), options).context("route table not applied")?;
    tracing::info!(routes = next.table.routes.len(), "route table reloaded");
    *snapshot.write().expect("route table lock") = Arc::new(next);
    *current_raw = raw;
    Ok(())
}

/// Loads the route table and the token keys, and returns the service to serve.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let (config, metrics) = (&runtime.config, &runtime.metrics);
    // The routes' clients report their breakers; the key cache's does not, as its upstream
    // (user) is also a route's, and one series would mix two breakers.
    let options = UpstreamOptions::from_env()?.reporting_to(metrics);
    // A proxied request may take as long as the gateway gives any request (its
    // SHOP_REQUEST_TIMEOUT_MS, as every service does): each service bounds its own work and
    // answers 503 past it, so cutting the wait shorter would answer 504 for requests the service
    // still carries out (a checkout whose saga waits on a slow payment).
    let route_options = UpstreamOptions {
        request_timeout: config.request_timeout,
        ..options.clone()
    };
    let (mut current_raw, table) = read_routes(&settings.routes)?;
    tracing::info!(routes = table.routes.len(), "route table loaded");
    let snapshot = Arc::new(RwLock::new(Arc::new(Snapshot::new(
        table,
        None,
        &route_options,
    )?)));

    let keys = Arc::new(keys::KeyCache::new(Upstream::new(
        "user",
        &settings.user_url,
        &UpstreamOptions {
            metrics: None,
            ..options.clone()
        },
    )?));
    if let Err(e) = keys.refresh().await {
        // Not fatal: the gateway serves anonymous traffic and fetches keys on first use.
        tracing::warn!(error = %e, "token keys not loaded yet");
    }

    let limiter = NonZeroU32::new(settings.rate_limit_per_second).map(|rate| {
        let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(rate);
        Arc::new(RateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ))
    });
    let document = shop_kit::server::described_openapi(
        "shop public API",
        "Merged from the services' documents once they answer.",
    );
    let upstream_responses = Family::default();
    metrics.register(
        "gateway_upstream_responses",
        "Responses from upstream services, by upstream and status (`unavailable`: none came)",
        upstream_responses.clone(),
    );

    let gateway = Gateway {
        snapshot: snapshot.clone(),
        keys: keys.clone(),
        limiter: limiter.clone(),
        max_body_bytes: config.max_body_bytes,
        upstream_responses,
        document: document.clone(),
    };

    let mut tasks = Tasks::new();
    // The public API document: the services' documents, merged by the current route table.
    let (merging, served) = (snapshot.clone(), document.clone());
    let last = Arc::new(tokio::sync::Mutex::new(std::collections::HashMap::new()));
    tasks.spawn_every(
        tokio::time::interval(settings.openapi_every),
        "merging the services' API documents",
        move || {
            let (snapshot, served, last) = (
                merging.read().expect("route table lock").clone(),
                served.clone(),
                last.clone(),
            );
            async move {
                openapi::refresh(&snapshot, &mut *last.lock().await, &served).await;
                anyhow::Ok(())
            }
        },
    );
    // Reload the route table when its file changes.
    let (reload_source, reloading) = (settings.routes.clone(), snapshot.clone());
    tasks.spawn_every(
        tokio::time::interval(settings.reload_every),
        "reloading the route table",
        move || {
            std::future::ready(reload_routes(
                &reload_source,
                &mut current_raw,
                &reloading,
                &route_options,
            ))
        },
    );
    // Every 150 reloads: refresh the token keys, and let the rate limiter forget idle clients.
    let upkeep_every = settings.reload_every * 150;
    tasks.spawn_every(
        tokio::time::interval_at(tokio::time::Instant::now() + upkeep_every, upkeep_every),
        "refreshing the token keys",
        move || {
            let (keys, limiter) = (keys.clone(), limiter.clone());
            async move {
                if let Some(limiter) = &limiter {
                    limiter.retain_recent();
                }
                keys.refresh().await.map(|_| ())
            }
        },
    );

    let ready_snapshot = gateway.snapshot.clone();
    Ok(Service {
        name: "gateway",
        router: routes::router(gateway),
        openapi: document,
        ready: shop_kit::server::Readiness::Check(Arc::new(move || {
            let empty = ready_snapshot
                .read()
                .expect("route table lock")
                .table
                .routes
                .is_empty();
            Box::pin(async move {
                if empty {
                    Err("the route table is empty".into())
                } else {
                    Ok(())
                }
            })
        })),
        tasks,
    })
}
