//! The producer's side: events written in the same transaction as the change.

use super::Event;
use crate::db::Tx;

/// Writes `event` to the outbox in the caller's transaction. The relay publishes it after commit;
/// a rollback takes it away with the change.
pub async fn insert(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (id, type, source, time, payload) VALUES ($1, $2, $3, $4, $5)")
        .bind(event.id.to_string())
        .bind(&event.kind)
        .bind(&event.source)
        .bind(&event.time)
        .bind(event.data.to_string())
        .execute(&mut **tx)
        .await
        .map(|_| ())
}
