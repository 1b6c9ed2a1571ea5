//! The cart service: the caller's cart, checked against the catalog.
//!
//! `routes` (HTTP) → `domain` (quantities, totals; no I/O) → `storage` (SQL). The catalog is
//! called through the kit's [`Upstream`](shop_kit::Upstream) client; readiness depends only on
//! the cart's own database, so a catalog outage degrades adding items, not reading the cart.
//! `events` consumes `order.confirmed`: what was bought leaves the cart.

pub mod domain;
pub mod events;
pub mod routes;
pub mod storage;

use anyhow::Result;
use shop_contracts::ServiceName;
use shop_kit::config::env_or;
use shop_kit::events::{Bus, Consumer};
use shop_kit::{Database, Metrics, Service, ServiceConfig, Upstream, UpstreamOptions};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects, migrates, and returns the service to serve. `CATALOG_URL` names the catalog; carts
/// lose what was bought through the `order.confirmed` events consumed from `bus`.
pub async fn build(config: &ServiceConfig, bus: &Bus, _metrics: &Metrics) -> Result<Service> {
    let db = open(&config.database_url).await?;
    let catalog = Upstream::new(
        ServiceName::Catalog.as_str(),
        &env_or(&ServiceName::Catalog.url_var(), "http://127.0.0.1:8082"),
        &UpstreamOptions::from_env()?,
    )?;
    let (routes, consumer) =
        Consumer::start(bus, db.clone(), events::CONSUMER, events::handler()).await?;
    let mut service = service(db, catalog);
    service.router = consumer.attach(service.router.merge(routes));
    Ok(service)
}

/// Connects, runs the migrations and installs the kit's event tables (for the consumer in
/// [`events`]).
pub async fn open(database_url: &str) -> Result<Database> {
    let db = Database::connect_and_migrate(database_url, &MIGRATOR).await?;
    shop_kit::events::install_tables(&db).await?;
    Ok(db)
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
