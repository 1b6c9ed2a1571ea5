//! Events between services: written to a transactional outbox with the change they announce,
//! relayed to a bus, delivered at least once, applied once.
//!
//! - [`Event`]: the envelope every event travels in (`id`, `type`, `source`, `time`, `data`);
//!   `data` is a JSON object whose `version` field is its schema version.
//! - [`outbox`]: the producer's side. [`outbox::insert`] writes an event in the caller's
//!   transaction, so the event exists exactly when the change it announces does.
//! - [`consume`]: the consumer's side. A [`consume::Handler`] applies one event inside a
//!   transaction in which the crate also records the event's id, so a redelivered event is
//!   skipped.
//!
//! - [`Relay`]: started by a producing service; relays its outbox to the bus.
//! - [`Consumer`]: started by a consuming service; runs a [`consume::Handler`] for every event.
//! - [`Bus`]: NATS JetStream (`NATS_URL`), the local bus (`SHOP_EVENT_PEERS`), or none.
//! - [`Runtime`]: the kit's runtime context with this crate's bus, what every service's
//!   `build` takes.
//!
//! # Wiring a service
//!
//! ```ignore
//! // main: one bus per process, from the environment.
//! let runtime = Runtime::from_env("order", Bus::from_env().await?)?;
//!
//! // A producer, in `build`, after its migrations:
//! let relay = Relay::start(runtime, db.clone()).await?;
//! service.tasks.extend(relay.tasks);
//!
//! // A consumer:
//! let consumer = Consumer::start(&runtime.bus, db.clone(), "notification", MyHandler).await?;
//! service.router = service.router.merge(consumer.routes);
//! service.tasks.extend(consumer.tasks);
//! ```
//!
//! The relay's and consumer's tasks become the service's own
//! ([`shop_kit::Tasks`]): they run while it is served and stop with it. On the local bus, every
//! producer lists every consumer in `SHOP_EVENT_PEERS`
//! (`notification=http://127.0.0.1:8088,...`); the names are the consumer names. Tuning: see
//! [`EventOptions`]. Details: `docs/events.md`.
//!
//! The crate owns its tables ([`install_tables`]). [`Relay::start`] and [`Consumer::start`]
//! create them, so a service that starts either needs no call of its own; `shop migrate` calls
//! it so the schema is complete before the first start, and tests call it for a service they
//! build without a relay or consumer. `CREATE TABLE IF NOT EXISTS` keeps it idempotent and
//! compatible with the services whose first migration already created `outbox` with the same
//! columns.
//!
//! # Layout
//!
//! No two modules use each other: `event`, `bus` and `schema` use no other module; `outbox` and
//! `consume` use `event`; the bus-specific leaves `local` and `nats` use those; `relay` and
//! `consumer` dispatch to the leaves. This file only declares and re-exports.

pub mod bus;
pub mod consume;
mod consumer;
mod event;
pub mod local;
pub mod nats;
pub mod outbox;
pub mod relay;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use bus::{Bus, EventOptions, Peer};
pub use consumer::{Consumer, forget_processed_before};
pub use event::Event;
pub use relay::{Relay, Waker};
pub use schema::install_tables;

/// What every service's `build` takes: its configuration, this process's bus and its metrics.
pub type Runtime = shop_kit::Runtime<Bus>;
