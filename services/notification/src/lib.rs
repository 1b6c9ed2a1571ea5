//! The notification service: the messages the shop sends, made from its events.
//!
//! `events` (the consumer: each event → one message recorded in the consumer's transaction) →
//! `domain` (parsing the event data, rendering the text, money; no I/O) → `storage` (SQL);
//! `sender` sends recorded messages afterwards through a pluggable [`sender::Sender`];
//! `routes` shows each user theirs (`GET /api/notifications`).
//!
//! Wiring it to an event runner: open the database with [`open`], give the runner
//! [`handler`] under the consumer name [`events::CONSUMER`] (it reads the types
//! `shop_contracts::events::read_by` lists for it), and
//! serve [`service`] over the same database.

pub mod domain;
pub mod events;
pub mod routes;
pub mod sender;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use shop_events::{Consumer, Runtime};
use shop_kit::config::{env_or, env_parse};
use shop_kit::{Database, Service, Tasks};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub use events::NotificationHandler;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which [`sender::Sender`] delivers messages (`NOTIFICATION_SENDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SenderKind {
    /// One structured log line per message (the default).
    #[default]
    Log,
    /// Record only; messages are marked `skipped`.
    None,
}

impl SenderKind {
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "log" => Ok(Self::Log),
            "none" => Ok(Self::None),
            other => bail!("NOTIFICATION_SENDER={other:?} is not valid: use log or none"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub sender: SenderKind,
    /// How often recorded messages are looked for and sent (`NOTIFICATION_SEND_INTERVAL_MS`,
    /// default 500).
    pub send_interval: Duration,
    /// Where `stock.low` messages go (`SHOP_ADMIN_EMAILS`, comma-separated); empty: recorded,
    /// never sent.
    pub admin_emails: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sender: SenderKind::Log,
            send_interval: Duration::from_millis(500),
            admin_emails: Vec::new(),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let sender = SenderKind::parse(&env_or("NOTIFICATION_SENDER", "log"))?;
        let send_interval = Duration::from_millis(env_parse("NOTIFICATION_SEND_INTERVAL_MS", 500)?);
        ensure!(
            !send_interval.is_zero(),
            "NOTIFICATION_SEND_INTERVAL_MS must be above 0"
        );
        let admin_emails = env_or("SHOP_ADMIN_EMAILS", "")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            sender,
            send_interval,
            admin_emails,
        })
    }

    fn sender(&self) -> Arc<dyn sender::Sender> {
        match self.sender {
            SenderKind::Log => Arc::new(sender::LogSender),
            SenderKind::None => Arc::new(sender::NoSender),
        }
    }
}

/// Connects, runs the migrations and installs the event tables.
pub async fn open(database_url: &str) -> Result<Database> {
    let db = Database::connect_and_migrate(database_url, &MIGRATOR).await?;
    shop_events::install_tables(&db).await?;
    Ok(db)
}

/// Connects, migrates, and returns the service to serve, consuming the shop's events from the
/// runtime's bus while it runs.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = open(&runtime.config.database_url).await?;
    let consumer = Consumer::start(
        &runtime.bus,
        db.clone(),
        &runtime.metrics,
        events::CONSUMER,
        handler(&settings),
    )
    .await?;
    let mut service = service(db, settings);
    service.router = service.router.merge(consumer.routes);
    service.tasks.extend(consumer.tasks);
    Ok(service)
}

/// The event consumer, for `shop_events::consume::apply(&db, events::CONSUMER, &handler, &event)`.
pub fn handler(settings: &Settings) -> NotificationHandler {
    NotificationHandler::new(&settings.admin_emails)
}

/// The service over an opened database, its dispatcher sending with the configured sender.
pub fn service(db: Database, settings: Settings) -> Service {
    let sender = settings.sender();
    service_with_sender(db, sender, settings.send_interval)
}

/// The service with a sender of the caller's choosing (an e-mail gateway; a test double).
pub fn service_with_sender(
    db: Database,
    sender: Arc<dyn sender::Sender>,
    send_interval: Duration,
) -> Service {
    let store = storage::Store::new(db.clone());
    let mut tasks = Tasks::new();
    let sending = store.clone();
    // The dispatcher: its first pass one interval after start, as every later one.
    tasks.spawn_every(
        tokio::time::interval_at(tokio::time::Instant::now() + send_interval, send_interval),
        "sending notifications",
        move || {
            let (store, sender) = (sending.clone(), sender.clone());
            async move { sender::send_due(&store, sender.as_ref()).await.map(|_| ()) }
        },
    );
    Service {
        name: "notification",
        router: routes::router(routes::AppState { store }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_is_named_log_or_none() {
        assert_eq!(SenderKind::parse("log").unwrap(), SenderKind::Log);
        assert_eq!(SenderKind::parse(" none ").unwrap(), SenderKind::None);
        let err = SenderKind::parse("smtp").unwrap_err().to_string();
        assert!(err.contains("NOTIFICATION_SENDER") && err.contains("log or none"));
    }
}
