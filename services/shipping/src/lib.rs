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
use shop_events::{Relay, Runtime};
use shop_kit::{Database, Service};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The shipping service has no settings of its own.
pub type Settings = shop_kit::NoSettings;

/// Connects, migrates, and returns the service to serve.
pub async fn build(runtime: &Runtime, _settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    // Relays `shipment.created` from the outbox while the service runs.
    let relay = Relay::start(runtime, db.clone()).await?;
    let mut service = service(db);
    service.tasks.extend(relay.tasks);
    Ok(service)
}

/// The service over a migrated database.
pub fn service(db: Database) -> Service {
    Service {
        name: "shipping",
        router: routes::router(routes::AppState {
            store: storage::Store::new(db.clone()),
        }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks: Default::default(),
    }
}
