//! The event tables, owned by this crate rather than by each service's migrations.

use shop_kit::Database;

/// The event tables:
/// - `outbox`: events waiting to be relayed (`published_at` NULL until the bus took them), with
///   the producer's trace context (`traceparent`, `tracestate`; NULL outside a trace);
/// - `processed_events`: per consumer, the ids it has applied;
/// - `outbox_deliveries`: on the local bus, which peer has taken which event;
/// - `dead_letters`: on the local bus, the events a consumer gave up on.
pub async fn install_tables(db: &Database) -> Result<(), sqlx::Error> {
    for statement in [
        "CREATE TABLE IF NOT EXISTS outbox (\
            id TEXT PRIMARY KEY, type TEXT NOT NULL, source TEXT NOT NULL, time TEXT NOT NULL, \
            payload TEXT NOT NULL, published_at TEXT, traceparent TEXT, tracestate TEXT)",
        "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (published_at, time)",
        "CREATE TABLE IF NOT EXISTS processed_events (\
            consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at TEXT NOT NULL, \
            PRIMARY KEY (consumer, event_id))",
        // What a consumer forgets once past the retention goes by age.
        "CREATE INDEX IF NOT EXISTS processed_events_by_age ON processed_events (consumer, processed_at)",
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
    add_trace_columns(db).await
}

/// The producer's trace context, added in 2026-12 to outboxes made before (by this crate or by
/// a service's first migration). Portable: SQLite has no `ADD COLUMN IF NOT EXISTS`.
async fn add_trace_columns(db: &Database) -> Result<(), sqlx::Error> {
    for column in ["traceparent", "tracestate"] {
        let probe = format!("SELECT {column} FROM outbox WHERE 1 = 0");
        if sqlx::query(&probe).execute(db.pool()).await.is_ok() {
            continue;
        }
        let added = sqlx::query(&format!("ALTER TABLE outbox ADD COLUMN {column} TEXT"))
            .execute(db.pool())
            .await;
        // Another replica may have added it meanwhile: only a column still missing is an error.
        if let Err(error) = added
            && sqlx::query(&probe).execute(db.pool()).await.is_err()
        {
            return Err(error);
        }
    }
    Ok(())
}
