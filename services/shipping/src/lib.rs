//! The shipping service: quotes from a rate table, shipments with tracking numbers and a status
//! history.
//!
//! `routes` (HTTP) → `domain` (the rate table, validation, transitions, what tracking shows to
//! whom; no I/O) → `storage` (SQL). A shipment is created once per order id (the saga's retries get
//! the same one) and its `shipment.created` event is written to the outbox in the same
//! transaction.

pub mod domain;
pub mod routes;
pub mod storage;

use anyhow::Result;
use shop_kit::events::{Bus, Relay};
use shop_kit::{Database, Metrics, Service, ServiceConfig};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects, migrates, and returns the service to serve.
pub async fn build(config: &ServiceConfig, bus: &Bus, metrics: &Metrics) -> Result<Service> {
    let db = Database::connect_and_migrate(&config.database_url, &MIGRATOR).await?;
    // Relays `shipment.created` from the outbox for as long as the router lives.
    let relay = Relay::start(bus, db.clone(), metrics).await?;
    let mut service = service(db);
    service.router = relay.attach(service.router);
    Ok(service)
}

/// The service over a migrated database.
pub fn service(db: Database) -> Service {
    Service {
        name: "shipping",
        router: routes::router(routes::AppState {
            store: storage::Store::new(db.clone()),
        }),
        openapi: routes::ApiDoc::openapi(),
        ready: shop_kit::server::database_ready(db),
    }
}
