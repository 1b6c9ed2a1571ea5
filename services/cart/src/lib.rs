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
use shop_events::{Consumer, Runtime};
use shop_kit::config::env_or;
use shop_kit::{Database, Service, Upstream, UpstreamOptions};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The cart service's own settings, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The catalog, which prices what is put in a cart (`CATALOG_URL`, default the `shop up`
    /// port).
    pub catalog_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            catalog_url: "http://127.0.0.1:8082".into(),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            catalog_url: env_or(
                &ServiceName::Catalog.url_var(),
                &Self::default().catalog_url,
            ),
        })
    }
}

/// Connects, migrates, and returns the service to serve. Carts lose what was bought through the
/// `order.confirmed` events consumed from the runtime's bus.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = open(&runtime.config.database_url).await?;
    let catalog = Upstream::new(
        ServiceName::Catalog.as_str(),
        &settings.catalog_url,
        &UpstreamOptions::from_env()?.reporting_to(&runtime.metrics),
    )?;
    let consumer = Consumer::start(
        &runtime.bus,
        db.clone(),
        &runtime.metrics,
        events::CONSUMER,
        events::handler(),
    )
    .await?;
    let mut service = service(db, catalog);
    service.router = service.router.merge(consumer.routes);
    service.tasks.extend(consumer.tasks);
    Ok(service)
}

/// Connects, runs the migrations and installs the event tables (for the consumer in
/// [`events`]).
pub async fn open(database_url: &str) -> Result<Database> {
    let db = Database::connect_and_migrate(database_url, &MIGRATOR).await?;
    shop_events::install_tables(&db).await?;
    Ok(db)
}

pub fn service(db: Database, catalog: Upstream) -> Service {
    Service {
        name: "cart",
        router: routes::router(routes::AppState {
            store: storage::Store::new(db.clone()),
            catalog,
        }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks: Default::default(),
    }
}
