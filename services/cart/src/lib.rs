//! The cart service: the caller's cart, checked against the catalog.
//!
//! `routes` (HTTP) → `domain` (quantities, totals; no I/O) → `storage` (SQL). The catalog is
//! called through the kit's [`Upstream`](shop_kit::Upstream) client; readiness depends only on
//! the cart's own database, so a catalog outage degrades adding items, not reading the cart.

pub mod domain;
pub mod routes;
pub mod storage;

use anyhow::Result;
use shop_kit::config::env_or;
use shop_kit::{Database, Metrics, Service, ServiceConfig, Upstream, UpstreamOptions};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects, migrates, and returns the service to serve. `CATALOG_URL` names the catalog.
pub async fn build(config: &ServiceConfig, _metrics: &Metrics) -> Result<Service> {
    let db = Database::connect_and_migrate(&config.database_url, &MIGRATOR).await?;
    let catalog = Upstream::new(
        "catalog",
        &env_or("CATALOG_URL", "http://127.0.0.1:8082"),
        &UpstreamOptions::from_env()?,
    )?;
    Ok(service(db, catalog))
}

pub fn service(db: Database, catalog: Upstream) -> Service {
    Service {
        name: "cart",
        router: routes::router(routes::AppState {
            store: storage::Store::new(db.clone()),
            catalog,
        }),
        openapi: routes::ApiDoc::openapi(),
        ready: shop_kit::server::database_ready(db),
    }
}
