//! The shipping service's tables. Portable SQL over the kit's database.
//!
//! Every writing transaction starts with a write (claiming the order id, moving a status), so
//! SQLite takes its one write lock before reading and PostgreSQL queues concurrent writers of the
//! same shipment on its row.

use shop_kit::Database;
use shop_kit::db::{Tx, now_rfc3339};

use crate::domain::{
    self, CreateShipment, HistoryEntry, Shipment, ShipmentStatus, TRACKING_RANDOM_BYTES,
};

#[derive(Clone)]
pub struct Store {
    db: Database,
}

pub enum CreateOutcome {
    Created(Shipment),
    /// The order already has a shipment (a retry, or another body); nothing changed. The flag
    /// says whether the stored request equals this one.
    Existing {
        shipment: Shipment,
        same: bool,
    },
}

pub enum Transition {
    Done(Shipment),
    /// Already in the asked-for status: nothing written.
    Unchanged(Shipment),
    /// The table does not allow it from where the shipment stands.
    NotAllowed(Shipment),
    NotFound,
}

fn decode_error(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} is unreadable: {e}").into())
}

/// A shipment as stored; items, address and quote are JSON text.
#[derive(sqlx::FromRow)]
struct ShipmentRow {
    order_id: String,
    user_id: String,
    status: String,
    created_at: String,
    items_count: i64,
    items: String,
    address: String,
    quote: String,
}

/// How many tracking numbers a new shipment tries before its creation fails.
pub const NUMBER_ATTEMPTS: u32 = 3;

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates the order's shipment with a fresh tracking number, its first history entry and a
    /// `shipment.created` outbox row, all in one transaction; or returns the order's existing one.
    pub async fn create(&self, request: &CreateShipment) -> Result<CreateOutcome, sqlx::Error> {
        self.create_numbered(request, || Ok(domain::tracking_number(random_bytes()?)))
            .await
    }

    /// [`Store::create`] with the tracking numbers `next_number` gives. A number that is taken
    /// already (80 random bits make that a one in 10^24 event per pair, but an answer of 500 for
    /// it would be a bug) is replaced by the next one, up to [`NUMBER_ATTEMPTS`] times.
    pub async fn create_numbered(
        &self,
        request: &CreateShipment,
        mut next_number: impl FnMut() -> Result<String, sqlx::Error>,
    ) -> Result<CreateOutcome, sqlx::Error> {
        let mut attempt = 1;
        loop {
            match self.create_with_number(request, &next_number()?).await {
                Err(sqlx::Error::Database(error))
                    if error.is_unique_violation() && attempt < NUMBER_ATTEMPTS =>
                {
                    tracing::warn!(
                        attempt,
                        "a new tracking number was taken already; drawing another"
                    );
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn create_with_number(
        &self,
        request: &CreateShipment,
        tracking_number: &str,
    ) -> Result<CreateOutcome, sqlx::Error> {
        let request = domain::normalised(request);
        let stored_request =
            serde_json::to_string(&request).map_err(|e| decode_error("request", e))?;
        let order_id = request.order_id.to_string();
        let tracking_number = tracking_number.to_owned();
        let at = now_rfc3339();
        let items_count: i64 = request.items.iter().map(|i| i.quantity).sum();
        let mut tx = self.db.begin().await?;
        // The first statement writes: it claims the order id, so concurrent retries of one order
        // queue here (the unique index on PostgreSQL, the write lock on SQLite) and lose.
        let claimed = sqlx::query(
            "INSERT INTO shipments (tracking_number, order_id, user_id, status, items_count, items, \
             address, quote, request, created_at, updated_at) \
             VALUES ($1, $2, $3, 'label_created', $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(&tracking_number)
        .bind(&order_id)
        .bind(request.user_id.to_string())
        .bind(items_count)
        .bind(serde_json::to_string(&request.items).map_err(|e| decode_error("request", e))?)
        .bind(serde_json::to_string(&request.address).map_err(|e| decode_error("request", e))?)
        .bind(serde_json::to_string(&request.quote).map_err(|e| decode_error("request", e))?)
        .bind(&stored_request)
        .bind(&at)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            let (tracking_number, stored): (String, String) = sqlx::query_as(
                "SELECT tracking_number, request FROM shipments WHERE order_id = $1",
            )
            .bind(&order_id)
            .fetch_one(self.db.pool())
            .await?;
            let shipment = self
                .shipment(&tracking_number)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            return Ok(CreateOutcome::Existing {
                shipment,
                same: stored == stored_request,
            });
        }
        Self::add_history(&mut tx, &tracking_number, ShipmentStatus::LabelCreated, &at).await?;
        // The payload carries no name or street: events travel further than the shipment itself.
        let created = shop_contracts::events::SHIPMENT_CREATED;
        let mut event = shop_events::Event::new(
            created.name,
            created.source(),
            created.version,
            serde_json::json!({
                "tracking_number": tracking_number,
                "order_id": order_id,
                "user_id": request.user_id,
                "status": ShipmentStatus::LabelCreated,
                "items_count": items_count,
                "country": request.address.country,
                "quote": request.quote,
            }),
        );
        event.time.clone_from(&at);
        shop_events::outbox::insert(&mut tx, &event).await?;
        tx.commit().await?;
        // What was just written, without reading it back (two statements fewer per checkout).
        Ok(CreateOutcome::Created(Shipment {
            tracking_number,
            order_id,
            user_id: request.user_id.to_string(),
            status: ShipmentStatus::LabelCreated,
            items_count,
            history: vec![HistoryEntry {
                status: ShipmentStatus::LabelCreated,
                at: at.clone(),
            }],
            created_at: at,
            items: request.items,
            address: request.address,
            quote: request.quote,
        }))
    }

    pub async fn shipment(&self, tracking_number: &str) -> Result<Option<Shipment>, sqlx::Error> {
        let row: Option<ShipmentRow> = sqlx::query_as(
            "SELECT order_id, user_id, status, created_at, items_count, items, address, quote \
             FROM shipments WHERE tracking_number = $1",
        )
        .bind(tracking_number)
        .fetch_optional(self.db.reader())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let history: Vec<(String, String)> = sqlx::query_as(
            "SELECT status, at FROM shipment_events WHERE tracking_number = $1 ORDER BY seq",
        )
        .bind(tracking_number)
        .fetch_all(self.db.reader())
        .await?;
        let history = history
            .into_iter()
            .map(|(status, at)| {
                Ok(HistoryEntry {
                    status: parse_status(&status)?,
                    at,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(Shipment {
            tracking_number: tracking_number.to_owned(),
            order_id: row.order_id,
            user_id: row.user_id,
            status: parse_status(&row.status)?,
            items_count: row.items_count,
            items: serde_json::from_str(&row.items).map_err(|e| decode_error("items", e))?,
            address: serde_json::from_str(&row.address).map_err(|e| decode_error("address", e))?,
            quote: serde_json::from_str(&row.quote).map_err(|e| decode_error("quote", e))?,
            history,
            created_at: row.created_at,
        }))
    }

    /// Moves the shipment to `next` when the transition table allows it from its current status.
    pub async fn transition(
        &self,
        tracking_number: &str,
        next: ShipmentStatus,
    ) -> Result<Transition, sqlx::Error> {
        // A concurrent event can move the shipment between reading and the conditional update;
        // then read again and decide anew. Each round is lost only to a move that happened.
        loop {
            let Some(current) = self.shipment(tracking_number).await? else {
                return Ok(Transition::NotFound);
            };
            if current.status == next {
                return Ok(Transition::Unchanged(current));
            }
            if !current.status.may_become(next) {
                return Ok(Transition::NotAllowed(current));
            }
            let at = now_rfc3339();
            let mut tx = self.db.begin().await?;
            let moved = sqlx::query(
                "UPDATE shipments SET status = $1, updated_at = $2 \
                 WHERE tracking_number = $3 AND status = $4",
            )
            .bind(next.as_str())
            .bind(&at)
            .bind(tracking_number)
            .bind(current.status.as_str())
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                tx.rollback().await?;
                continue;
            }
            Self::add_history(&mut tx, tracking_number, next, &at).await?;
            tx.commit().await?;
            return Ok(Transition::Done(
                self.shipment(tracking_number)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?,
            ));
        }
    }

    /// Appends to the history; the caller's transaction already holds the shipment's row (or
    /// SQLite's write lock), so the next sequence number is not raced.
    async fn add_history(
        tx: &mut Tx,
        tracking_number: &str,
        status: ShipmentStatus,
        at: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO shipment_events (tracking_number, seq, status, at) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM shipment_events WHERE tracking_number = $4",
        )
        .bind(tracking_number)
        .bind(status.as_str())
        .bind(at)
        .bind(tracking_number)
        .execute(&mut **tx)
        .await
        .map(|_| ())
    }
}

fn parse_status(text: &str) -> Result<ShipmentStatus, sqlx::Error> {
    ShipmentStatus::parse(text).ok_or_else(|| decode_error("status", format!("{text:?}")))
}

fn random_bytes() -> Result<[u8; TRACKING_RANDOM_BYTES], sqlx::Error> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; TRACKING_RANDOM_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| sqlx::Error::Protocol("the system random source failed".into()))?;
    Ok(bytes)
}
