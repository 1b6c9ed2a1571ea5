//! Events between services: written to a transactional outbox with the change they announce,
//! relayed to a bus, delivered at least once, applied once.
//!
//! - [`Event`]: the envelope every event travels in (`id`, `type`, `source`, `time`, `data`);
//!   `data` is a JSON object whose `version` field is its schema version.
//! - [`outbox`]: the producer's side. [`outbox::insert`] writes an event in the caller's
//!   transaction, so the event exists exactly when the change it announces does.
//! - [`consume`]: the consumer's side. A [`consume::Handler`] applies one event inside a
//!   transaction in which the kit also records the event's id, so a redelivered event is skipped.
//!
//! - [`Relay`]: started by a producing service; relays its outbox to the bus.
//! - [`Consumer`]: started by a consuming service; runs a [`consume::Handler`] for every event.
//! - [`Bus`]: NATS JetStream (`NATS_URL`), the local bus (`SHOP_EVENT_PEERS`), or none.
//!
//! # Wiring a service
//!
//! ```ignore
//! // main: one bus per process, from the environment.
//! let bus = shop_kit::events::Bus::from_env().await?;
//!
//! // A producer, in `build`, after its migrations:
//! let relay = events::Relay::start(&bus, db.clone(), metrics).await?;
//! let router = relay.attach(routes::router(state));
//!
//! // A consumer:
//! let (event_routes, consumer) = events::Consumer::start(&bus, db.clone(), "notification", MyHandler).await?;
//! let router = consumer.attach(routes::router(state).merge(event_routes));
//! ```
//!
//! The guards ([`Running`]) stop their tasks when dropped; `attach` hands them to the router so
//! they live exactly as long as the service. A service that both produces and consumes merges
//! the guards: `relay.merge(consumer).attach(router)`. On the local bus, every producer lists
//! every consumer in `SHOP_EVENT_PEERS` (`notification=http://127.0.0.1:8088,...`); the names
//! are the consumer names. Tuning: see [`EventOptions`]. Details: `docs/events.md`.
//!
//! The kit owns its tables ([`install_tables`]). [`Relay::start`] and [`Consumer::start`] create
//! them, so a service that starts either needs no call of its own; `shop migrate` calls it so the
//! schema is complete before the first start, and tests call it for a service they build without
//! a relay or consumer. `CREATE TABLE IF NOT EXISTS` keeps it idempotent and compatible with the
//! services whose first migration already created `outbox` with the same columns.

pub mod bus;
pub mod consume;
mod consumer;
pub mod local;
pub mod nats;
pub mod outbox;
pub mod relay;
mod running;

pub use bus::{Bus, EventOptions, Peer};
pub use consumer::Consumer;
pub use relay::Relay;
pub use running::{Running, Waker};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::Database;

/// One event, as stored in the outbox and as sent over the bus (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (UUID v7); consumers deduplicate by it.
    pub id: Uuid,
    /// What happened, `<entity>.<verb>` (`order.confirmed`, `stock.low`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The service that wrote it.
    pub source: String,
    /// When the change was made (RFC 3339, UTC).
    pub time: String,
    /// The event's own fields; `data.version` is the schema version of this type.
    pub data: serde_json::Value,
}

impl Event {
    /// A new event of schema `version`. `data` must serialize to a JSON object; `version` is
    /// added to it.
    pub fn new(kind: &str, source: &str, version: u32, data: impl Serialize) -> Self {
        let mut data = serde_json::to_value(data).expect("event data serializes to JSON");
        match &mut data {
            serde_json::Value::Object(fields) => {
                fields.insert("version".into(), version.into());
            }
            other => panic!("event data must be a JSON object, not {other}"),
        }
        Self {
            id: crate::context::new_id(),
            kind: kind.to_owned(),
            source: source.to_owned(),
            time: crate::db::now_rfc3339(),
            data,
        }
    }

    /// The schema version of `data` (0 when it has none).
    pub fn version(&self) -> u64 {
        self.data
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    }

    /// Reads `data` as the consumer's type for this event.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

/// The kit's event tables:
/// - `outbox`: events waiting to be relayed (`published_at` NULL until the bus took them);
/// - `processed_events`: per consumer, the ids it has applied;
/// - `outbox_deliveries`: on the local bus, which peer has taken which event;
/// - `dead_letters`: on the local bus, the events a consumer gave up on.
pub async fn install_tables(db: &Database) -> Result<(), sqlx::Error> {
    for statement in [
        "CREATE TABLE IF NOT EXISTS outbox (\
            id TEXT PRIMARY KEY, type TEXT NOT NULL, source TEXT NOT NULL, time TEXT NOT NULL, \
            payload TEXT NOT NULL, published_at TEXT)",
        "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (published_at, time)",
        "CREATE TABLE IF NOT EXISTS processed_events (\
            consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at TEXT NOT NULL, \
            PRIMARY KEY (consumer, event_id))",
        "CREATE TABLE IF NOT EXISTS outbox_deliveries (\
            event_id TEXT NOT NULL, peer TEXT NOT NULL, delivered_at TEXT NOT NULL, \
            PRIMARY KEY (event_id, peer))",
        "CREATE TABLE IF NOT EXISTS dead_letters (\
            consumer TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, \
            error TEXT NOT NULL, attempts BIGINT NOT NULL, dead_at TEXT NOT NULL, \
            PRIMARY KEY (consumer, event_id))",
    ] {
        sqlx::query(statement).execute(db.pool()).await?;
    }
    Ok(())
}
