//! The inventory's tables. Portable SQL over the kit's database.
//!
//! Concurrency: every writing transaction starts with a write (so SQLite takes its one write lock
//! before reading anything and never fails to upgrade a read snapshot), and stock rows are always
//! updated in product-id order (so PostgreSQL transactions never deadlock on each other).

use std::time::Duration;

use shop_kit::Database;
use shop_kit::db::{Tx, now_rfc3339, rfc3339};
use time::OffsetDateTime;

use crate::domain::{self, Reservation, ReservationStatus, ReservedItem, Shortfall, StockRecord};

/// A reservation's own row; its lines are in `reservation_lines`.
#[derive(sqlx::FromRow)]
struct ReservationRow {
    status: String,
    expires_at: String,
    created_at: String,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

pub enum ReserveOutcome {
    /// A new hold on every item.
    Created(Reservation),
    /// The order already has a reservation (a retry); nothing changed.
    Existing(Reservation),
    /// Some items are short; nothing is held.
    Short(Vec<Shortfall>),
}

pub enum Transition {
    /// The reservation moved to the asked-for state now.
    Done(Reservation),
    /// It was not in a state to move; here it is as it stands.
    Unchanged(Reservation),
    NotFound,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Units that can be bought now. Holds past their expiry count as free even before the
    /// sweeper has released them.
    pub async fn available(&self, product_id: &str) -> Result<i64, sqlx::Error> {
        let available: Option<i64> = sqlx::query_scalar(
            "SELECT s.on_hand - s.reserved + CAST(COALESCE((SELECT SUM(l.quantity) \
               FROM reservation_lines l JOIN reservations r ON r.order_id = l.order_id \
               WHERE l.product_id = s.product_id AND r.status = 'held' AND r.expires_at <= $1), 0) AS BIGINT) \
             FROM stock s WHERE s.product_id = $2",
        )
        .bind(now_rfc3339())
        .bind(product_id)
        .fetch_optional(self.db.reader())
        .await?;
        Ok(available.unwrap_or(0))
    }

    /// Sets the units on hand. `None` when live reservations hold more than that.
    pub async fn set_on_hand(
        &self,
        product_id: &str,
        on_hand: i64,
    ) -> Result<Option<StockRecord>, sqlx::Error> {
        self.free_expired(Some(&[product_id.to_owned()])).await?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO stock (product_id, on_hand, reserved, updated_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (product_id) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at \
             WHERE stock.reserved <= excluded.on_hand \
             RETURNING on_hand, reserved",
        )
        .bind(product_id)
        .bind(on_hand)
        .bind(now_rfc3339())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|(on_hand, reserved)| StockRecord {
            product_id: product_id.to_owned(),
            on_hand,
            reserved,
            available: on_hand - reserved,
        }))
    }

    pub async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, sqlx::Error> {
        let head: Option<ReservationRow> = sqlx::query_as(
            "SELECT status, expires_at, created_at FROM reservations WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(self.db.reader())
        .await?;
        let Some(row) = head else {
            return Ok(None);
        };
        let lines: Vec<(String, i64)> = sqlx::query_as(
            "SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id",
        )
        .bind(order_id)
        .fetch_all(self.db.reader())
        .await?;
        Self::assemble(order_id, row, lines).map(Some)
    }

    /// A reservation from its row and its lines.
    fn assemble(
        order_id: &str,
        row: ReservationRow,
        lines: Vec<(String, i64)>,
    ) -> Result<Reservation, sqlx::Error> {
        let stored = ReservationStatus::parse(&row.status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown status {:?}", row.status).into())
        })?;
        Ok(Reservation {
            order_id: order_id.to_owned(),
            status: domain::effective_status(stored, &row.expires_at, &now_rfc3339()),
            items: lines
                .into_iter()
                .map(|(product_id, quantity)| ReservedItem {
                    product_id,
                    quantity,
                })
                .collect(),
            expires_at: row.expires_at,
            created_at: row.created_at,
        })
    }

    /// Holds every item for the order, or nothing. `items` must be sorted by product id.
    pub async fn reserve(
        &self,
        order_id: &str,
        items: &[ReservedItem],
        ttl: Duration,
        low_threshold: i64,
    ) -> Result<ReserveOutcome, sqlx::Error> {
        let mut freed_expired = false;
        loop {
            let started = OffsetDateTime::now_utc();
            let created_at = rfc3339(started);
            let expires_at = rfc3339(started + ttl);
            let mut tx = self.db.begin().await?;
            // The first statement writes: it claims the order id (a concurrent retry waits here)
            // and takes SQLite's write lock.
            let claimed = sqlx::query(
                "INSERT INTO reservations (order_id, status, expires_at, created_at, updated_at) \
                 VALUES ($1, 'held', $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(&expires_at)
            .bind(&created_at)
            .bind(&created_at)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                tx.rollback().await?;
                return match self.reservation(order_id).await? {
                    Some(existing) => Ok(ReserveOutcome::Existing(existing)),
                    None => Err(sqlx::Error::RowNotFound),
                };
            }
            let mut short = Vec::new();
            let mut low = Vec::new();
            let mut held = Vec::new();
            for item in items {
                // Check and hold in one statement: the row lock (PostgreSQL) or the write lock
                // (SQLite) makes concurrent holds queue, and each sees the others' holds.
                let after: Option<i64> = sqlx::query_scalar(
                    "UPDATE stock SET reserved = reserved + $1, updated_at = $2 \
                     WHERE product_id = $3 AND on_hand - reserved >= $4 \
                     RETURNING on_hand - reserved",
                )
                .bind(item.quantity)
                .bind(&created_at)
                .bind(&item.product_id)
                .bind(item.quantity)
                .fetch_optional(&mut *tx)
                .await?;
                match after {
                    Some(after) => {
                        if domain::crosses_low(after + item.quantity, after, low_threshold) {
                            low.push((item.product_id.clone(), after));
                        }
                        held.push(item);
                    }
                    None => {
                        let available: Option<i64> = sqlx::query_scalar(
                            "SELECT on_hand - reserved FROM stock WHERE product_id = $1",
                        )
                        .bind(&item.product_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        short.push(Shortfall {
                            product_id: item.product_id.clone(),
                            requested: item.quantity,
                            available: available.unwrap_or(0),
                        });
                    }
                }
            }
            if !short.is_empty() {
                // All or nothing: the holds taken above and the claimed order id go with the
                // rollback.
                tx.rollback().await?;
                // Expired holds never block a sale: when stock is short, those on these products
                // are freed and the hold tried once more. Looked for only then, not before every
                // hold (a statement per checkout); the sweeper frees the rest.
                if !freed_expired {
                    freed_expired = true;
                    let products: Vec<String> =
                        items.iter().map(|i| i.product_id.clone()).collect();
                    if self.free_expired(Some(&products)).await? > 0 {
                        continue;
                    }
                }
                return Ok(ReserveOutcome::Short(short));
            }
            // Every line in one statement: a round trip to the database each was most of a
            // reservation's time. (Not empty: a reservation with no line is refused before this.)
            if !held.is_empty() {
                let values: Vec<String> = (0..held.len())
                    .map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3))
                    .collect();
                let sql = format!(
                    "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES {}",
                    values.join(", ")
                );
                let mut insert = sqlx::query(&sql).bind(order_id);
                for item in &held {
                    insert = insert.bind(&item.product_id).bind(item.quantity);
                }
                insert.execute(&mut *tx).await?;
            }
            for (product_id, available) in low {
                Self::stock_low_event(&mut tx, &product_id, available, low_threshold, &created_at)
                    .await?;
            }
            tx.commit().await?;
            return Ok(ReserveOutcome::Created(Reservation {
                order_id: order_id.to_owned(),
                status: ReservationStatus::Held,
                items: items.to_vec(),
                expires_at,
                created_at,
            }));
        }
    }

    /// Writes `stock.low` to the outbox in the caller's transaction; the events crate's relay publishes it.
    async fn stock_low_event(
        tx: &mut Tx,
        product_id: &str,
        available: i64,
        threshold: i64,
        time: &str,
    ) -> Result<(), sqlx::Error> {
        let stock_low = shop_contracts::events::STOCK_LOW;
        let mut event = shop_events::Event::new(
            stock_low.name,
            stock_low.source(),
            stock_low.version,
            serde_json::json!({
                "product_id": product_id,
                "available": available,
                "threshold": threshold,
            }),
        );
        // The event carries the time of the change it announces.
        time.clone_into(&mut event.time);
        shop_events::outbox::insert(tx, &event).await
    }

    /// The held units leave the warehouse. Only a live (held, unexpired) reservation commits.
    pub async fn commit(&self, order_id: &str) -> Result<Transition, sqlx::Error> {
        let at = now_rfc3339();
        let mut tx = self.db.begin().await?;
        let moved: Option<ReservationRow> = sqlx::query_as(
            "UPDATE reservations SET status = 'committed', updated_at = $1 \
             WHERE order_id = $2 AND status = 'held' AND expires_at > $3 \
             RETURNING status, expires_at, created_at",
        )
        .bind(&at)
        .bind(order_id)
        .bind(&at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = moved else {
            tx.rollback().await?;
            return self.unchanged(order_id).await;
        };
        let lines = Self::lines(&mut tx, order_id).await?;
        for (product_id, quantity) in &lines {
            sqlx::query(
                "UPDATE stock SET on_hand = on_hand - $1, reserved = reserved - $2, updated_at = $3 \
                 WHERE product_id = $4",
            )
            .bind(quantity)
            .bind(quantity)
            .bind(&at)
            .bind(product_id)
            .execute(&mut *tx)
            .await?;
        }
        // The answer comes from the transaction's own rows: a read after the commit could fail
        // (the database gone a moment later) and turn a commit that stands into an error.
        let committed = Self::assemble(order_id, row, lines)?;
        tx.commit().await?;
        Ok(Transition::Done(committed))
    }

    /// Gives a held reservation's units back (expired or not).
    pub async fn release(&self, order_id: &str) -> Result<Transition, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let Some(released) = Self::free_in(&mut tx, order_id, "released", None).await? else {
            tx.rollback().await?;
            return self.unchanged(order_id).await;
        };
        tx.commit().await?;
        Ok(Transition::Done(released))
    }

    /// Frees holds past their expiry: all of them (the sweeper), or those touching `products`
    /// (when a new hold finds their stock short, so expired holds never block a sale). Returns
    /// how many it freed.
    pub async fn free_expired(&self, products: Option<&[String]>) -> Result<usize, sqlx::Error> {
        let at = now_rfc3339();
        let order_ids: Vec<String> =
            match products {
                None => sqlx::query_scalar(
                    "SELECT order_id FROM reservations WHERE status = 'held' AND expires_at <= $1 \
                     ORDER BY expires_at LIMIT 500",
                )
                .bind(&at)
                .fetch_all(self.db.reader())
                .await?,
                Some(products) => {
                    let placeholders: Vec<String> =
                        (0..products.len()).map(|i| format!("${}", i + 2)).collect();
                    let sql = format!(
                        "SELECT DISTINCT r.order_id FROM reservations r \
                     JOIN reservation_lines l ON l.order_id = r.order_id \
                     WHERE r.status = 'held' AND r.expires_at <= $1 AND l.product_id IN ({})",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar(&sql).bind(&at);
                    for p in products {
                        query = query.bind(p);
                    }
                    query.fetch_all(self.db.reader()).await?
                }
            };
        let mut freed = 0;
        for order_id in order_ids {
            // One transaction each, conditional on the hold still being held and expired: a
            // concurrent commit, release or sweep of the same reservation makes this a no-op.
            let mut tx = self.db.begin().await?;
            if Self::free_in(&mut tx, &order_id, "expired", Some(&at))
                .await?
                .is_some()
            {
                tx.commit().await?;
                freed += 1;
            } else {
                tx.rollback().await?;
            }
        }
        Ok(freed)
    }

    /// Moves a held reservation to `status` and gives its units back; `expired_by` limits it to
    /// holds expired at that time. The reservation as it is now, or `None` when it was not (or no
    /// longer) held.
    async fn free_in(
        tx: &mut Tx,
        order_id: &str,
        status: &str,
        expired_by: Option<&str>,
    ) -> Result<Option<Reservation>, sqlx::Error> {
        let at = now_rfc3339();
        let held = "UPDATE reservations SET status = $1, updated_at = $2 \
                    WHERE order_id = $3 AND status = 'held'";
        let returning = "RETURNING status, expires_at, created_at";
        let moved: Option<ReservationRow> = match expired_by {
            Some(by) => {
                sqlx::query_as(&format!("{held} AND expires_at <= $4 {returning}"))
                    .bind(status)
                    .bind(&at)
                    .bind(order_id)
                    .bind(by)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            None => {
                sqlx::query_as(&format!("{held} {returning}"))
                    .bind(status)
                    .bind(&at)
                    .bind(order_id)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        let Some(row) = moved else {
            return Ok(None);
        };
        let lines = Self::lines(tx, order_id).await?;
        for (product_id, quantity) in &lines {
            sqlx::query(
                "UPDATE stock SET reserved = reserved - $1, updated_at = $2 WHERE product_id = $3",
            )
            .bind(quantity)
            .bind(&at)
            .bind(product_id)
            .execute(&mut **tx)
            .await?;
        }
        Self::assemble(order_id, row, lines).map(Some)
    }

    async fn lines(tx: &mut Tx, order_id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id",
        )
        .bind(order_id)
        .fetch_all(&mut **tx)
        .await
    }

    async fn unchanged(&self, order_id: &str) -> Result<Transition, sqlx::Error> {
        Ok(match self.reservation(order_id).await? {
            Some(r) => Transition::Unchanged(r),
            None => Transition::NotFound,
        })
    }

    /// Gives every seeded catalog product stock when the inventory is empty. Replicas racing to
    /// seed insert the same rows; the conflict clause makes the loser's inserts no-ops.
    pub async fn seed_if_empty(&self, product_ids: &[String]) -> anyhow::Result<usize> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock")
            .fetch_one(self.db.pool())
            .await?;
        if count > 0 {
            return Ok(0);
        }
        let at = now_rfc3339();
        let mut tx = self.db.begin().await?;
        for id in product_ids {
            sqlx::query(
                "INSERT INTO stock (product_id, on_hand, reserved, updated_at) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (product_id) DO NOTHING",
            )
            .bind(id)
            .bind(domain::SEED_ON_HAND)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(product_ids.len())
    }
}
