//! The event tables, owned by this crate rather than by each service's migrations.

use shop_kit::Database;

/// The event tables:
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
