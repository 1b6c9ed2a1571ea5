//! The catalog service: products and categories.
//!
//! `routes` (HTTP) → `domain` (rules, the seed; no I/O) → `storage` (SQL, behind the read
//! `cache`); `pictures` draws the product pictures it serves.

pub mod cache;
pub mod domain;
pub mod pictures;
pub mod routes;
pub mod storage;

use std::time::Duration;

use anyhow::Result;
use shop_events::Runtime;
use shop_kit::config::env_parse;
use shop_kit::{Database, Service};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long an answer is kept in memory (`SHOP_CATALOG_CACHE_MS`, default 1,000; 0: not
    /// at all): how late another replica's write may show here. See [`cache`].
    pub cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_millis(1000),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            cache_ttl: Duration::from_millis(env_parse(
                "SHOP_CATALOG_CACHE_MS",
                Self::default().cache_ttl.as_millis() as u64,
            )?),
        })
    }
}

/// Connects, migrates, seeds an empty catalog, and returns the service to serve.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    let store = storage::Store::new(db.clone(), settings.cache_ttl);
    let seeded = store.seed_if_empty().await?;
    if seeded > 0 {
        tracing::info!(products = seeded, "loaded the seed catalog");
    }
    Ok(Service {
        name: "catalog",
        router: routes::router(routes::AppState { store }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks: Default::default(),
    })
}
